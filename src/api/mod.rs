//! HTTP surface: shared state, errors, authentication, and the router.

mod admin;
mod auth;
pub use auth::CredentialGuard;
mod field_schema;
mod globalpci;
mod idempotency;
mod metrics;
mod openapi;
mod pages;
pub use pages::UiTokens;
mod psp_webhook;
mod relay;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Authority, Principal, Scope};
use crate::config::Config;
use crate::relay::Relay;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The configuration the gateway runs with.
    pub config: Arc<Config>,
    /// OAuth2 clients and token keys.
    pub authority: Arc<Authority>,
    /// The RTP relay.
    pub relay: Relay,
    /// Payment sessions.
    pub sessions: crate::session::Sessions,
    /// The built-in sandbox PSP (shared by every sandbox account).
    pub sandbox: Arc<crate::psp::sandbox::SandboxPsp>,
    /// Tokens of open agent payment UIs.
    pub ui_tokens: pages::UiTokens,
    /// The ng control protocol service, when `[ng] listen` is set.
    pub ng: Option<Arc<crate::ng::NgService>>,
    /// The fallback number's SIP endpoint, when `[sip] listen` is set.
    pub sip: Option<Arc<crate::sip::SipService>>,
    /// Set to `true` when the gateway begins to shut down (event streams end).
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// The token endpoint's throttle and argon2 slots.
    pub credentials: Arc<CredentialGuard>,
    /// HTTP connections closed at once because the connection cap was reached.
    pub http_refused: Arc<std::sync::atomic::AtomicU64>,
    /// HTTP connections closed to make room at the cap (idle or not yet sending a request).
    pub http_evicted: Arc<std::sync::atomic::AtomicU64>,
    /// The SMS outbox, when it is the provider (the admin listing shows its messages).
    pub outbox: Option<Arc<crate::session::outbox::Outbox>>,
    /// Request and PSP-call duration histograms.
    pub latency: Arc<crate::latency::Latency>,
    /// Idempotency-Keys (hashed) whose create is being answered now: a second request with
    /// one meanwhile is 409.
    pub idempotency_in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Wall-clock time: the system's, or (development, `server.adjustable_clock`) one the
    /// admin API moves forward.
    pub clock: crate::clock::Clock,
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi_document() -> serde_json::Value {
    openapi::document()
}

/// Builds the gateway's HTTP router: every route, or with `[server.internal]` set everything
/// but `/metrics` and `/admin/v1/*` (those are then on [`internal_router`] only, and answered
/// 404 here).
pub fn router(state: AppState) -> Router {
    let public = Router::new()
        .route("/healthz", get(healthz))
        .merge(auth::routes())
        .merge(relay::routes())
        .merge(globalpci::routes())
        .merge(openapi::routes())
        .merge(pages::routes())
        .merge(psp_webhook::routes());
    let app = if state.config.server.internal.is_some() {
        public
    } else {
        public.merge(operator_routes(&state))
    };
    layered(app, state)
}

/// The internal listener's router: `/healthz`, `/metrics` and the admin API.
pub fn internal_router(state: AppState) -> Router {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .merge(operator_routes(&state));
    layered(app, state)
}

/// What only operators use: metrics and the admin API.
fn operator_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(admin::routes())
        .merge(admin::clock_routes(state))
        .merge(metrics::routes(state))
}

/// The fallback and the layers every listener has.
fn layered(app: Router<AppState>, state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    app.fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(state.config.server.request_timeout_s),
        ))
        // Outside the timeout, so a request cut off by it is timed and logged too.
        .layer(axum::middleware::from_fn_with_state(
            state.latency.clone(),
            observe,
        ))
        // In production the pages are only ever reached over HTTPS (at the TLS front):
        // browsers are told to keep it that way.
        .layer(tower::util::option_layer(
            (state.config.server.mode == crate::config::ServerMode::Production).then(|| {
                tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static("max-age=31536000; includeSubDomains"),
                )
            }),
        ))
        .with_state(state)
}

/// The request-id header: taken from the client when it is safe to log, else made here, and
/// echoed on the response.
const REQUEST_ID: &str = "x-request-id";

/// The longest client request id kept (longer ones are replaced).
const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` when it is 1-128 characters of `A-Z a-z 0-9 - _ . : = + / @`
/// and holds nothing like a card number (it goes into every log line); else a new random one.
fn request_id(headers: &axum::http::HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=MAX_REQUEST_ID).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:=+/@".contains(&b))
                && crate::card::redact::redact_card_numbers(v) == *v
        });
    match given {
        Some(v) => v.to_string(),
        None => format!("{:032x}", rand::random::<u128>()),
    }
}

/// Per request: a tracing span carrying its request id (so every log line of the request
/// names it), the id echoed in `X-Request-Id`, the duration into
/// `http_request_duration_seconds`, and one access-log line — method, route template, status,
/// duration; never the path's ids, the query string or a body.
async fn observe(
    axum::extract::State(latency): axum::extract::State<Arc<crate::latency::Latency>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = crate::latency::method_label(req.method().as_str());
    let id = request_id(req.headers());
    let span = tracing::info_span!("request", request_id = %id);
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    latency.observe_http(&route, method, status, took);
    span.in_scope(|| {
        tracing::info!(
            target: "tonegate::access",
            method = %method,
            route = %route,
            status,
            // Whole microseconds over 1000 print as written (0.049), never as float noise
            // (0.049654000000000004) that reads like a long number.
            duration_ms = took.as_micros() as f64 / 1000.0,
            "request"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// 200 `ok`; 503 `draining` once a drain began, so load balancers send new calls elsewhere.
async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let draining = state.relay.is_draining();
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let word = if draining { "draining" } else { "ok" };
    (
        status,
        Json(Health {
            status: word,
            version: env!("CARGO_PKG_VERSION"),
            node: state.config.cluster.node.clone(),
        }),
    )
        .into_response()
}

/// `healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(schema_with = health_status)]
    status: &'static str,
    version: &'static str,
    /// The node (`[cluster] node`)
    node: String,
}

fn health_status() -> utoipa::openapi::schema::Schema {
    field_schema::one_of(&["ok", "draining"])
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// An error answered as RFC 9457 problem details (`application/problem+json`): `type`,
/// `title`, `status`, `detail`, plus the stable `error` code, the `message` (the detail, for
/// clients written before) and, where one field is at fault, its name in `field`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    www_authenticate: Option<&'static str>,
    retry_after_s: Option<u32>,
}

impl ApiError {
    /// An error with a status, a stable machine code and a human message (card numbers in it
    /// masked: messages may quote what a client sent).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: crate::card::redact::redact_card_numbers(&message.into()),
            field: None,
            www_authenticate: None,
            retry_after_s: None,
        }
    }

    /// Asks the client to try again after `seconds` (`Retry-After`).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// Names the request field (body member, header or query parameter) at fault.
    pub fn field(mut self, name: impl Into<String>) -> Self {
        self.field = Some(crate::card::redact::redact_card_numbers(&name.into()));
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    fn unauthorized(message: &str) -> Self {
        ApiError {
            www_authenticate: Some("Bearer error=\"invalid_token\""),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `about:blank`: the title is the status's own phrase; `error` tells the cases apart.
        let body = Problem {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.message,
            error: self.code,
            message: &self.message,
            field: self.field.as_deref(),
        };
        let mut r = (self.status, Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(v) = self.www_authenticate {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// An RFC 9457 problem: a stable code (`error`), what went wrong (`detail`, also as
/// `message`), and the request field at fault where there is one (`field`)
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct Problem<'a> {
    /// `about:blank`: the title is the HTTP status's phrase
    #[serde(rename = "type")]
    #[schema(schema_with = about_blank)]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// The stable machine code (`not_found`, `invalid_field`, …)
    error: &'a str,
    message: &'a str,
    /// The body member, header or parameter at fault
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    field: Option<&'a str>,
}

fn about_blank() -> utoipa::openapi::schema::Schema {
    field_schema::one_of(&["about:blank"])
}

/// A request authenticated by a valid bearer token.
pub struct Authed(pub Principal);

impl Authed {
    /// The principal, if its token carries `scope`; 403 otherwise.
    pub fn require(self, scope: Scope) -> Result<Principal, ApiError> {
        if self.0.has(scope) {
            Ok(self.0)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this route needs a token with scope {}", scope.as_str()),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| ApiError::unauthorized("Authorization must be a Bearer token"))?;
        state
            .authority
            .verify(token.trim(), state.clock.unix_now())
            .map(Authed)
            .map_err(|_| ApiError::unauthorized("token is invalid or expired"))
    }
}

/// The member a JSON data error names: axum writes serde's path first
/// (`Failed to deserialize the JSON body into the target type: PaymentData.amount: …`); a
/// missing member is named in serde's message (`missing field `x``).
fn data_error_field(text: &str) -> Option<String> {
    let rest = text.split_once("target type: ")?.1;
    if let Some(m) = rest.split_once("missing field `") {
        return m.1.split_once('`').map(|(f, _)| f.to_string());
    }
    if let Some(m) = rest.split_once("unknown field `") {
        return m.1.split_once('`').map(|(f, _)| f.to_string());
    }
    let (path, _) = rest.split_once(": ")?;
    (!path.is_empty() && path != "." && !path.contains(' ')).then(|| path.to_string())
}

/// A JSON body, with clear JSON errors for a wrong content type, malformed JSON or an
/// oversized body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(format!(
                "malformed JSON: {}",
                e.body_text()
            ))),
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                let err = ApiError::bad_request(format!("invalid request: {text}"));
                Err(match data_error_field(&text) {
                    Some(f) => err.field(f),
                    None => err,
                })
            }
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is too large",
                ))
            }
            Err(e) => Err(ApiError::new(e.status(), "bad_request", e.body_text())),
        }
    }
}
