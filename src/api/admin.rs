//! Operator routes (scope `admin`): `GET /admin/v1/outbox`, the SMS outbox.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, Authed};
use crate::auth::Scope;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/admin/v1/outbox", get(outbox))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn outbox(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<Limit>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Scope::Admin)?;
    let messages = state
        .sessions
        .store()
        .outbox(q.limit.unwrap_or(100).min(1000))
        .map_err(crate::session::SessionError::from)?;
    Ok(Json(json!({ "messages": messages })))
}
