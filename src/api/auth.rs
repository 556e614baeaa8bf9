//! `POST /auth/connect/token`: OAuth2 client credentials (RFC 6749 §4.4), form-encoded, with
//! the client in the body or in HTTP Basic (§2.3.1).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;

use super::{unix_now, AppState};
use crate::auth::AuthError;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/auth/connect/token", post(token))
}

/// An RFC 6749 §5.2 error response.
fn oauth_error(e: AuthError, basic: bool) -> Response {
    let (status, description) = match e {
        AuthError::InvalidClient => (StatusCode::UNAUTHORIZED, "client authentication failed"),
        AuthError::InvalidRequest => (StatusCode::BAD_REQUEST, "grant_type is required"),
        AuthError::InvalidScope => (
            StatusCode::BAD_REQUEST,
            "requested scope is unknown or not allowed for this client",
        ),
        AuthError::UnsupportedGrantType => (
            StatusCode::BAD_REQUEST,
            "only client_credentials is supported",
        ),
        AuthError::InvalidGrant => (StatusCode::BAD_REQUEST, "invalid grant"),
        AuthError::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid token"),
    };
    let mut r = (
        status,
        Json(json!({ "error": e.to_string(), "error_description": description })),
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

async fn token(State(state): State<AppState>, headers: HeaderMap, body: String) -> Response {
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
        let mut r = oauth_error(AuthError::InvalidRequest, false);
        *r.body_mut() = axum::body::Body::from(
            json!({"error": "invalid_request", "error_description": "use Content-Type: application/x-www-form-urlencoded"}).to_string(),
        );
        return r;
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
    match state.authority.grant(
        grant_type.as_deref(),
        client_id.as_deref(),
        client_secret.as_deref(),
        scope.as_deref(),
        unix_now(),
    ) {
        Ok(t) => {
            tracing::info!(client = %client_id.as_deref().unwrap_or(""), scope = %t.scope, "token issued");
            let mut r = Json(t).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::info!(client = %client_id.as_deref().unwrap_or(""), error = %e, "token refused");
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
