//! Operator routes (scope `admin`): `GET /admin/v1/outbox`, the SMS outbox; `GET
//! /admin/v1/webhooks`, result webhooks not delivered;
//! `GET /admin/v1/audit/relay`, who created, read, secured, released or ended relay calls;
//! and, only on a development gateway started with `server.adjustable_clock`,
//! `POST /admin/v1/clock`, which moves its wall clock forward for tests of expiries (not in
//! `/openapi.json`: no gateway an integrator meets has it).

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, AppState, Authed};
use crate::auth::Scope;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/outbox", get(outbox))
        .route("/admin/v1/webhooks", get(webhooks))
        .route("/admin/v1/audit/relay", get(relay_audit))
}

/// `POST /admin/v1/clock` where the clock is adjustable; nothing otherwise (a 404).
pub(super) fn clock_routes(state: &AppState) -> Router<AppState> {
    if state.clock.is_adjustable() {
        Router::new().route("/admin/v1/clock", post(advance_clock))
    } else {
        Router::new()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    /// Seconds to move the clock forward (at most a year a call).
    advance_s: u64,
}

/// Moves the gateway's clock forward; answers the new time and the total skew.
async fn advance_clock(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(a): ApiJson<Advance>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Scope::Admin)?;
    let skew = state
        .clock
        .advance(a.advance_s)
        .map_err(|e| ApiError::new(axum::http::StatusCode::CONFLICT, "conflict", e.to_string()))?;
    tracing::warn!(
        advance_s = a.advance_s,
        skew_s = skew,
        "clock moved forward"
    );
    Ok(Json(
        json!({ "now": state.clock.unix_now(), "skew_s": skew }),
    ))
}

// Doc comments on the fields are the query parameters' descriptions in /openapi.json.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Limit {
    /// Most entries (default 100, at most 1000 are returned)
    // Any u64 reads (a usize; more is a 400): utoipa's format for a u64 would be int64.
    #[param(value_type = Option<u64>, format = "uint64", maximum = 18446744073709551615_u64)]
    limit: Option<usize>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// One call's records only
    call: Option<String>,
    /// Most entries (default 100, at most 1000 are returned)
    #[param(value_type = Option<u64>, format = "uint64", maximum = 18446744073709551615_u64)]
    limit: Option<usize>,
}

async fn relay_audit(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<AuditQuery>,
) -> Result<Json<RelayAudit>, ApiError> {
    auth.require(Scope::Admin)?;
    let records = state
        .sessions
        .store()
        .relay_audit(q.call.as_deref(), q.limit.unwrap_or(100).min(1000))
        .map_err(crate::session::SessionError::from)?;
    Ok(Json(RelayAudit { records }))
}

// The store's records serialize themselves; their schemas are free-form objects (the store
// has no schema of its own to derive).
/// `relay_audit`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct RelayAudit {
    #[schema(value_type = Vec<Object>)]
    records: Vec<crate::session::store::RelayAuditRecord>,
}

/// `webhooks`' answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Webhooks {
    #[schema(value_type = Vec<Object>)]
    webhooks: Vec<crate::session::store::WebhookDelivery>,
}

/// `outbox`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Outbox {
    #[schema(value_type = Vec<Object>)]
    messages: Vec<crate::session::store::OutboxMessage>,
}

/// Result webhooks not delivered: pending (with their next try) and given up.
async fn webhooks(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<Limit>,
) -> Result<Json<Webhooks>, ApiError> {
    auth.require(Scope::Admin)?;
    let webhooks = state
        .sessions
        .store()
        .webhooks_undelivered(q.limit.unwrap_or(100).min(1000))
        .map_err(crate::session::SessionError::from)?;
    Ok(Json(Webhooks { webhooks }))
}

async fn outbox(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<Limit>,
) -> Result<Json<Outbox>, ApiError> {
    auth.require(Scope::Admin)?;
    let mut messages = state
        .sessions
        .store()
        .outbox(q.limit.unwrap_or(100).min(1000))
        .map_err(crate::session::SessionError::from)?;
    // Stored with link tokens redacted; development shows the text as sent while it is held.
    if let Some(outbox) = &state.outbox {
        let now = state.clock.unix_now();
        for m in &mut messages {
            if let Some(body) = outbox.as_sent(m.seq, now) {
                m.body = body;
            }
        }
    }
    Ok(Json(Outbox { messages }))
}
