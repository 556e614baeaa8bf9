//! HTTP surface: the router and its shared state.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// Builds the gateway's HTTP router.
pub fn router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}
