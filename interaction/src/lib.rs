//! The `ApiInteraction` engine: run the data-connector definitions an IVR platform runs
//! (seed 002) exactly as it would — substitute `$(Variables)`, make the HTTP call, put the
//! status code and mapped response fields into variables — alone or as a call plan
//! (authorize → start session → poll status).

// No `unsafe` here, ever (the workspace denies it; this crate forbids even an allow).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod definition;
mod locate;
pub mod template;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

pub use definition::{DataType, DefinitionError, Interaction, ResponseType};
use template::Context;

/// The variable set a call plan runs over.
pub type Variables = BTreeMap<String, Value>;

/// Why an interaction could not run.
#[derive(Debug, Error)]
pub enum InteractionError {
    /// The definition is not valid.
    #[error("definition: {0}")]
    Definition(#[from] DefinitionError),
    /// A `$(Name)` with no value.
    #[error("variable {0:?} is not set")]
    MissingVariable(String),
    /// A template that cannot be rendered safely.
    #[error("template: {0}")]
    Template(String),
    /// The request could not be made or timed out.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The URL (with variables filled in).
        url: String,
        /// Timeout, connection refused, bad URL, …
        reason: String,
    },
    /// The response body is not of the declared `<Type>`.
    #[error("response is not {expected}: {reason}")]
    Body {
        /// The declared type.
        expected: &'static str,
        /// Details.
        reason: String,
    },
    /// A located value does not convert to its `<DataType>`.
    #[error("field {destination} (locator {locator}): {reason}")]
    Field {
        /// The destination variable.
        destination: String,
        /// The locator.
        locator: String,
        /// What was wrong.
        reason: String,
    },
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// HTTP status.
    pub status: u16,
    /// Destinations set.
    pub set: Vec<String>,
    /// Locators not found in the response (their destinations were left as they were).
    pub missing: Vec<String>,
}

/// Names whose values are never printed.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("secret")
        || n.contains("password")
        || n.contains("token")
        || n.ends_with("accesscode")
}

/// Variables for display: secrets replaced by `***`.
pub fn masked(vars: &Variables) -> Variables {
    vars.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                if is_secret(k) {
                    Value::String("***".into())
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

/// Largest response body read, bytes.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Runs definitions over HTTP.
pub struct InteractionRunner {
    http: reqwest::Client,
}

impl InteractionRunner {
    /// A runner with a per-request `timeout` that follows at most `redirects` redirects.
    pub fn new(timeout: Duration, redirects: usize) -> InteractionRunner {
        let policy = if redirects == 0 {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::limited(redirects)
        };
        InteractionRunner {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(policy)
                .build()
                .expect("reqwest client"),
        }
    }

    /// Runs one definition over `vars`, writing the status and mapped fields back into them.
    pub async fn run(
        &self,
        def: &Interaction,
        vars: &mut Variables,
    ) -> Result<RunReport, InteractionError> {
        let url = template::render(&def.url, vars, Context::Url)?;
        let mut headers = Vec::new();
        for (k, v) in &def.headers {
            headers.push((k.clone(), template::render(v, vars, Context::Header)?));
        }
        let declared = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_ascii_lowercase());
        // The seed's authorize definition sends a form body with no Content-Type: infer one.
        let trimmed = def.body.trim_start();
        let (ctx, inferred) = match declared.as_deref() {
            Some(ct) if ct.contains("json") => (Context::JsonBody, None),
            Some(ct) if ct.contains("x-www-form-urlencoded") => (Context::FormBody, None),
            Some(_) => (Context::RawBody, None),
            None if def.body.is_empty() => (Context::RawBody, None),
            None if trimmed.starts_with('{') || trimmed.starts_with('[') => {
                (Context::JsonBody, Some("application/json"))
            }
            None if trimmed.contains('=') => {
                (Context::FormBody, Some("application/x-www-form-urlencoded"))
            }
            None => (Context::RawBody, Some("text/plain")),
        };
        let body = template::render(&def.body, vars, ctx)?;
        let method = reqwest::Method::from_bytes(def.method.as_bytes())
            .map_err(|e| InteractionError::Template(e.to_string()))?;
        let mut req = self.http.request(method, &url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        if let Some(ct) = inferred {
            req = req.header("content-type", ct);
        }
        if !def.body.is_empty() {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| InteractionError::Http {
            url: url.clone(),
            reason: if e.is_timeout() {
                "timed out".into()
            } else if e.is_connect() {
                "could not connect".into()
            } else if e.is_builder() {
                "invalid URL".into()
            } else {
                e.to_string()
            },
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| InteractionError::Http {
            url: url.clone(),
            reason: format!("reading the response: {e}"),
        })?;
        let text =
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_RESPONSE_BYTES)]).into_owned();
        let mut report = RunReport {
            status,
            set: Vec::new(),
            missing: Vec::new(),
        };
        // The status code goes to its destination whatever it is.
        if let Some(d) = &def.response_code_destination {
            vars.insert(d.clone(), Value::from(status));
            report.set.push(d.clone());
        }
        if def.fields.is_empty() {
            return Ok(report);
        }
        let json =
            match def.response_type {
                ResponseType::Json if text.trim().is_empty() => Some(Value::Null),
                ResponseType::Json => Some(serde_json::from_str::<Value>(&text).map_err(|e| {
                    InteractionError::Body {
                        expected: "JSON",
                        reason: e.to_string(),
                    }
                })?),
                _ => None,
            };
        for f in &def.fields {
            let found: Option<Value> = match def.response_type {
                ResponseType::Json => json
                    .as_ref()
                    .and_then(|j| locate::json_path(j, &f.locator))
                    .cloned(),
                ResponseType::Xml => locate::xml_path(&text, &f.locator)
                    .map_err(|reason| InteractionError::Body {
                        expected: "XML",
                        reason,
                    })?
                    .map(Value::String),
                ResponseType::Text => Some(Value::String(text.clone())),
            };
            match found {
                None | Some(Value::Null) => report.missing.push(f.locator.clone()),
                Some(v) => {
                    let converted = locate::convert(&v, f.data_type).map_err(|reason| {
                        InteractionError::Field {
                            destination: f.destination.clone(),
                            locator: f.locator.clone(),
                            reason,
                        }
                    })?;
                    vars.insert(f.destination.clone(), converted);
                    report.set.push(f.destination.clone());
                }
            }
        }
        Ok(report)
    }
}

/// Polling of the last definition of a plan.
#[derive(Debug, Clone)]
pub struct Poll {
    /// The variable that holds the state.
    pub variable: String,
    /// Values that end the polling.
    pub terminal: Vec<String>,
    /// Between polls.
    pub interval: Duration,
    /// Give up after.
    pub timeout: Duration,
}

impl Poll {
    /// Polls `GlobalPCI|SessionState` until a terminal session state.
    pub fn session_state(interval: Duration, timeout: Duration) -> Poll {
        Poll {
            variable: "GlobalPCI|SessionState".into(),
            terminal: ["Completed", "Declined", "Failed", "Expired", "Cancelled"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            interval,
            timeout,
        }
    }
}

/// Why a plan stopped early.
#[derive(Debug, Error)]
pub enum PlanError {
    /// Step `step` (0-based) failed.
    #[error("step {step} ({name}): {source}")]
    Step {
        /// Which definition.
        step: usize,
        /// Its name (file).
        name: String,
        /// What went wrong.
        source: InteractionError,
    },
    /// Polling reached its timeout without a terminal value.
    #[error("polling {variable} timed out after {seconds} s (last value {last})")]
    PollTimeout {
        /// The polled variable.
        variable: String,
        /// The timeout.
        seconds: u64,
        /// Its last value.
        last: String,
    },
}

/// Runs named definitions in order over one variable set; with `poll`, repeats the last one
/// until its variable holds a terminal value. `progress` hears about each step.
pub async fn run_plan(
    engine: &InteractionRunner,
    steps: &[(String, Interaction)],
    vars: &mut Variables,
    poll: Option<&Poll>,
    mut progress: impl FnMut(usize, &str, &RunReport),
) -> Result<(), PlanError> {
    for (i, (name, def)) in steps.iter().enumerate() {
        let is_last = i + 1 == steps.len();
        let start = tokio::time::Instant::now();
        loop {
            let report = engine
                .run(def, vars)
                .await
                .map_err(|source| PlanError::Step {
                    step: i,
                    name: name.clone(),
                    source,
                })?;
            progress(i, name, &report);
            let Some(p) = poll.filter(|_| is_last) else {
                break;
            };
            let value = vars
                .get(&p.variable)
                .map(template::text_of)
                .unwrap_or_default();
            if p.terminal.contains(&value) {
                break;
            }
            if start.elapsed() >= p.timeout {
                return Err(PlanError::PollTimeout {
                    variable: p.variable.clone(),
                    seconds: p.timeout.as_secs(),
                    last: value,
                });
            }
            tokio::time::sleep(p.interval).await;
        }
    }
    Ok(())
}
