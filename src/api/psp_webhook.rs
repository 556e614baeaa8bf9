//! `POST /psp/v1/webhook/{account}`: the PSP's signed webhooks (a wallet payment made on its
//! hosted checkout). Fail closed: an account without `psp_webhook_secret` has no endpoint
//! (404), a body over [`MAX_BODY`] is refused (413), and only a request whose
//! `Stripe-Signature` verifies under that secret within the timestamp tolerance is read (400
//! otherwise). The body is never logged.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::psp::webhook::{parse_event, verify, PspEvent, MAX_BODY};
use crate::session::SessionError;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/psp/v1/webhook/{account}", post(psp_webhook))
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, why.to_string()).into_response()
}

async fn psp_webhook(
    State(state): State<AppState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let secret = state
        .config
        .account(&account)
        .and_then(|a| a.psp_webhook_secret.clone())
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no webhook endpoint for this account",
        );
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = verify(&secret, signature, &bytes, state.clock.unix_now()) {
        tracing::warn!(account = %account, reason = %e, "PSP webhook refused");
        return refuse(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let ev = match parse_event(&bytes) {
        Ok(PspEvent::CheckoutPaid(ev)) => ev,
        Ok(PspEvent::Other(kind)) => {
            tracing::debug!(account = %account, kind = %kind, "PSP webhook ignored");
            return Json(json!({"received": true, "changed": false})).into_response();
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match state.sessions.checkout_paid(&account, &ev).await {
        Ok(changed) => {
            tracing::info!(account = %account, session = %ev.session_id, event = %ev.event_id, changed, "PSP webhook: checkout paid");
            Json(json!({"received": true, "changed": changed})).into_response()
        }
        // Signed, but for no session of this account: nothing a retry would change.
        Err(SessionError::NotFound) => {
            tracing::error!(account = %account, event = %ev.event_id, "PSP webhook for a session this account does not have");
            Json(json!({"received": true, "changed": false})).into_response()
        }
        Err(e) => {
            tracing::error!(account = %account, event = %ev.event_id, error = %e, "PSP webhook could not be applied; the PSP will retry");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}
