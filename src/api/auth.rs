//! `POST /auth/connect/token`: OAuth2 client credentials (RFC 6749 §4.4), form-encoded, with
//! the client in the body or in HTTP Basic (§2.3.1).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::auth::throttle::{LoginThrottle, ThrottleLimits};
use crate::auth::verified::VerifiedSecrets;
use crate::auth::{check_secret, AuthError, Secret};

/// Largest token request body: a form with an id, a secret and scopes fits many times over.
const TOKEN_BODY_LIMIT: usize = 8 * 1024;
/// How long a token request waits for a free argon2 slot before it is told to come back.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/auth/connect/token",
        post(token).layer(DefaultBodyLimit::max(TOKEN_BODY_LIMIT)),
    )
}

/// What stands between a token request and the secret check: the cache of recently verified
/// secrets (checked first: the right secret is answered at once, whatever else floods in),
/// the failure throttle, and a few hashing threads for argon2, so that guessing neither
/// stalls the async workers (and the calls on them) nor runs without bound.
pub struct CredentialGuard {
    verified: Mutex<VerifiedSecrets>,
    throttle: Mutex<LoginThrottle>,
    slots: tokio::sync::Semaphore,
    hashers: crate::auth::hash_pool::HashPool,
    started: Instant,
    /// Requests answered 429 by the throttle.
    pub throttled: AtomicU64,
    /// Requests answered 503 because every argon2 slot stayed busy.
    pub busy: AtomicU64,
}

impl CredentialGuard {
    /// A guard with the throttle `limits`, `slots` concurrent argon2 checks, and verified
    /// secrets remembered for `verified_for` after their last use.
    pub fn new(
        limits: ThrottleLimits,
        slots: usize,
        verified_for: Duration,
    ) -> std::io::Result<Self> {
        Ok(CredentialGuard {
            verified: Mutex::new(VerifiedSecrets::new(verified_for)),
            throttle: Mutex::new(LoginThrottle::new(limits)),
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            hashers: crate::auth::hash_pool::HashPool::new(slots)?,
            started: Instant::now(),
            throttled: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, LoginThrottle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, VerifiedSecrets> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `given` against `secret`: plain secrets at once, argon2 on one of the hashing
    /// threads. `None` when none came free in time.
    async fn verify(&self, secret: &Secret, given: &str) -> Option<bool> {
        match secret {
            Secret::Plain(_) => Some(check_secret(secret, given)),
            Secret::Argon2(_) => {
                let _slot = tokio::time::timeout(HASH_QUEUE_WAIT, self.slots.acquire())
                    .await
                    .ok()?
                    .ok()?;
                let (secret, given) = (secret.clone(), given.to_string());
                self.hashers
                    .run(move || check_secret(&secret, &given))
                    .await
            }
        }
    }
}

/// An RFC 6749 §5.2 error
#[derive(Serialize, ToSchema)]
pub(super) struct OAuthError<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// A 429 or 503 with `Retry-After` whole seconds.
fn come_back_later(status: StatusCode, after: Duration, description: &str) -> Response {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    let mut r = (
        status,
        Json(OAuthError {
            error: "temporarily_unavailable",
            error_description: description,
        }),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.max(1).to_string()).expect("digits"),
    );
    r
}

/// An RFC 6749 §5.2 error response.
fn oauth_error(e: AuthError, basic: bool) -> Response {
    let description = match e {
        AuthError::InvalidClient => "client authentication failed",
        AuthError::InvalidRequest => "grant_type is required",
        AuthError::InvalidScope => "requested scope is unknown or not allowed for this client",
        AuthError::UnsupportedGrantType => "only client_credentials is supported",
        AuthError::InvalidGrant => "invalid grant",
        AuthError::InvalidToken => "invalid token",
    };
    oauth_error_saying(e, description, basic)
}

/// An RFC 6749 §5.2 error response for `e`, described as `description`.
fn oauth_error_saying(e: AuthError, description: &str, basic: bool) -> Response {
    let status = match e {
        AuthError::InvalidClient | AuthError::InvalidToken => StatusCode::UNAUTHORIZED,
        AuthError::InvalidRequest
        | AuthError::InvalidScope
        | AuthError::UnsupportedGrantType
        | AuthError::InvalidGrant => StatusCode::BAD_REQUEST,
    };
    let mut r = (
        status,
        Json(OAuthError {
            error: &e.to_string(),
            error_description: description,
        }),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if e == AuthError::InvalidClient {
        let challenge = if basic {
            "Basic realm=\"tonegate\""
        } else {
            "Bearer"
        };
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    r
}

async fn token(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    // Throttled by the client's address: the TCP peer, or behind a trusted proxy the client
    // it names in X-Forwarded-For.
    let peer = peer
        .map(|p| p.0 .0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let addr = state.config.server.trusted_proxies.client(
        peer,
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    // Form-encoded per RFC 6749; a body with no Content-Type at all is read as a form too
    // (IVR data connectors send one that way).
    let form_ok = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(v) => v.starts_with("application/x-www-form-urlencoded"),
    };
    if !form_ok {
        return oauth_error_saying(
            AuthError::InvalidRequest,
            "use Content-Type: application/x-www-form-urlencoded",
            false,
        );
    }
    let mut grant_type = None;
    let mut client_id = None;
    let mut client_secret = None;
    let mut scope = None;
    for (k, v) in form_urlencoded_pairs(&body) {
        match k.as_str() {
            "grant_type" => grant_type = Some(v),
            "client_id" => client_id = Some(v),
            "client_secret" => client_secret = Some(v),
            "scope" => scope = Some(v),
            _ => {}
        }
    }
    // HTTP Basic: client_id:client_secret, each form-urlencoded (RFC 6749 §2.3.1).
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(i, p)| (decode_component(i), decode_component(p)))
        });
    let used_basic = basic.is_some();
    if let Some((i, p)) = basic {
        client_id = Some(i);
        client_secret = Some(p);
    }
    let (id, secret) = match state.authority.check_request(
        grant_type.as_deref(),
        client_id.as_deref(),
        client_secret.as_deref(),
    ) {
        Ok(v) => v,
        Err(e) => return oauth_error(e, used_basic),
    };
    let guard = &state.credentials;
    let known = state.authority.client(id).is_some();
    // A secret verified recently is answered before the throttle and argon2: guesses flooding
    // in for the same id from the same address neither lock it out nor queue it.
    if known && guard.verified().check(id, secret, guard.now()) {
        return issue(&state, id, scope.as_deref(), used_basic);
    }
    if let Err(t) = guard.throttle().check(id, addr, guard.now()) {
        guard.throttled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(client = %id, %addr, "token request throttled");
        return come_back_later(
            StatusCode::TOO_MANY_REQUESTS,
            t.retry_after,
            "too many failed token requests: retry later",
        );
    }
    let Some(ok) = guard.verify(state.authority.secret_for(id), secret).await else {
        guard.busy.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(client = %id, "token request turned away: every secret-check slot is busy");
        return come_back_later(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(1),
            "the gateway is busy checking credentials: retry shortly",
        );
    };
    if !(ok && known) {
        guard.throttle().failed(id, addr, guard.now());
        tracing::info!(client = %id, %addr, "token refused: invalid client");
        return oauth_error(AuthError::InvalidClient, used_basic);
    }
    guard.verified().remember(id, secret, guard.now());
    issue(&state, id, scope.as_deref(), used_basic)
}

/// Issues a token to `id`, whose secret has been checked.
fn issue(state: &AppState, id: &str, scope: Option<&str>, used_basic: bool) -> Response {
    match state.authority.issue(id, scope, state.clock.unix_now()) {
        Ok(t) => {
            tracing::info!(client = %id, scope = %t.scope, "token issued");
            let mut r = Json(t).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::info!(client = %id, error = %e, "token refused");
            oauth_error(e, used_basic)
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into pairs (empty on garbage).
pub(crate) fn form_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(body).unwrap_or_default()
}

fn decode_component(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_bodies() {
        let p = form_urlencoded_pairs(
            "grant_type=client_credentials&scope=globalpci+relay&client_secret=a%2Bb%3D&x",
        );
        assert_eq!(p[0], ("grant_type".into(), "client_credentials".into()));
        assert_eq!(p[1], ("scope".into(), "globalpci relay".into()));
        assert_eq!(p[2], ("client_secret".into(), "a+b=".into()));
        assert_eq!(p[3], ("x".into(), "".into()));
        assert_eq!(decode_component("%41b%2B"), "Ab+");
    }
}
