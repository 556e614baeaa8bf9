//! `tonegate ctl`: the operator's command line for a running gateway, over its local control
//! socket (see `server::control`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

/// Where the packaged gateway's control socket is (`RuntimeDirectory=tonegate`).
pub const DEFAULT_SOCKET: &str = "/run/tonegate/ctl.sock";

/// Largest answer read from the gateway.
const MAX_ANSWER: usize = 16 << 20;

/// `tonegate ctl` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's control socket (server.control_socket).
    #[arg(long, env = "TONEGATE_CTL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the gateway's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// One operator command.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// List the live calls: id, owner, age, node, secure, codec, packets, loss.
    List,
    /// Show one call: its legs and every counter (never keys).
    Show {
        /// The relay call id.
        // Ids are base64url: one may begin with '-', which is not an option here.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// End one call now (its ports close; the audit trail names you).
    Terminate {
        /// The relay call id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Totals: live calls, the call limit, calls set up and refused, packets.
    Totals,
    /// Set the call limit (new calls beyond it are refused; live ones carry on).
    MaxCalls {
        /// 1 to relay.max_calls in the config.
        n: usize,
    },
    /// Start a drain: no new calls, /healthz answers 503 "draining"; the gateway stops when
    /// the last call ends (or after server.drain_calls_s).
    Drain,
    /// Set the log filter, e.g. "debug" or "info,tonegate::relay=debug".
    LogLevel {
        /// A tracing filter.
        level: String,
    },
    /// Read the TLS certificate and key files again, as SIGHUP does: new connections get
    /// them, open ones carry on; files that do not load leave the old pair in service.
    ReloadTls,
}

/// Runs one command against the gateway and prints its answer.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let (method, path, body) = match &args.command {
        CtlCommand::List => ("GET", "/v1/calls".to_string(), None),
        CtlCommand::Show { id } => ("GET", format!("/v1/calls/{}", encode(id)), None),
        CtlCommand::Terminate { id } => ("DELETE", format!("/v1/calls/{}", encode(id)), None),
        CtlCommand::Totals => ("GET", "/v1/totals".into(), None),
        CtlCommand::MaxCalls { n } => (
            "POST",
            "/v1/max-calls".into(),
            Some(json!({ "max_calls": n })),
        ),
        CtlCommand::Drain => ("POST", "/v1/drain".into(), None),
        CtlCommand::LogLevel { level } => (
            "POST",
            "/v1/log-level".into(),
            Some(json!({ "level": level })),
        ),
        CtlCommand::ReloadTls => ("POST", "/v1/reload-tls".into(), None),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let answer = runtime.block_on(request(&args.socket, method, &path, body))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match &args.command {
        CtlCommand::List => print_calls(&answer),
        CtlCommand::Terminate { id } => println!("call {id} terminated"),
        CtlCommand::Drain => println!(
            "draining: no new calls; {} live call(s) may run up to {} s, then the gateway stops",
            answer["calls_active"], answer["deadline_s"]
        ),
        CtlCommand::MaxCalls { n } => println!("max calls set to {n}"),
        CtlCommand::LogLevel { level } => println!("log filter set to {level}"),
        CtlCommand::ReloadTls => println!(
            "TLS certificate reloaded: {} (valid until {})",
            answer["subject"].as_str().unwrap_or_default(),
            answer["not_after"].as_str().unwrap_or_default()
        ),
        CtlCommand::Show { .. } | CtlCommand::Totals => print_fields(&answer, ""),
    }
    Ok(())
}

/// A call id as one URL path segment.
fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends one request over the control socket; the answer's JSON, or an error that says why.
async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| connect_error(socket, e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .with_context(|| format!("talking to the gateway at {}", socket.display()))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "tonegate")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("the gateway at {} did not answer", socket.display()))?;
    let status = resp.status();
    let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the gateway's answer: {e}"))?
        .to_bytes();
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).context("the gateway's answer is not JSON")?
    };
    if !status.is_success() {
        // Whatever error format the API uses: its human text, else its code.
        let why = ["message", "detail", "title", "error"]
            .iter()
            .find_map(|k| value[k].as_str())
            .unwrap_or("no reason given");
        anyhow::bail!("the gateway refused: {why} (HTTP {})", status.as_u16());
    }
    Ok(value)
}

/// What a failed connect means to an operator.
fn connect_error(socket: &Path, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::*;
    let at = socket.display();
    match e.kind() {
        NotFound | ConnectionRefused => anyhow::anyhow!(
            "no gateway at {at} (is tonegate running with server.control_socket = {at:?}? \
             --socket or TONEGATE_CTL_SOCKET name another)"
        ),
        PermissionDenied => anyhow::anyhow!(
            "permission denied on {at}: run as the gateway's user or a member of its group"
        ),
        _ => anyhow::anyhow!("cannot connect to {at}: {e}"),
    }
}

/// The `list` table.
fn print_calls(answer: &Value) {
    let empty = Vec::new();
    let calls = answer["calls"].as_array().unwrap_or(&empty);
    if calls.is_empty() {
        println!("no calls");
        return;
    }
    println!(
        "{:<22}  {:<16}  {:>6}  {:<12}  {:<6}  {:<5}  {:>9}  {:>6}",
        "ID", "OWNER", "AGE", "NODE", "SECURE", "CODEC", "PACKETS", "LOSS"
    );
    for c in calls {
        let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
        println!(
            "{:<22}  {:<16}  {:>6}  {:<12}  {:<6}  {:<5}  {:>9}  {:>5.1}%",
            s("id"),
            s("owner"),
            age(c["age_s"].as_u64().unwrap_or(0)),
            s("node"),
            if c["secure"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            s("codec"),
            c["packets_in"].as_u64().unwrap_or(0),
            c["loss_percent"].as_f64().unwrap_or(0.0),
        );
    }
}

/// Seconds as `1h02m`, `3m05s` or `42s`.
fn age(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `key: value` lines, nested objects as `outer.inner`.
fn print_fields(v: &Value, prefix: &str) {
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Object(_) => print_fields(v, &name),
                Value::String(s) => println!("{name}: {s}"),
                Value::Null => println!("{name}: -"),
                other => println!("{name}: {other}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn a_call_id_that_begins_with_a_hyphen_is_an_id_not_an_option() {
        for verb in ["show", "terminate"] {
            let cli = Cli::try_parse_from(["ctl", verb, "-_Gdj9ddsZAhbJh6oHz7OF"])
                .unwrap_or_else(|e| panic!("ctl {verb}: {e}"));
            let id = match cli.args.command {
                CtlCommand::Show { id } | CtlCommand::Terminate { id } => id,
                other => panic!("parsed as {other:?}"),
            };
            assert_eq!(id, "-_Gdj9ddsZAhbJh6oHz7OF");
        }
    }
}
