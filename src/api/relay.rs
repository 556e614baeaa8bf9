//! Relay control (design.md contract 4), bearer token with scope `relay`:
//! `POST /relay/v1/calls`, `POST /relay/v1/calls/{id}/secure`, `GET` and `DELETE
//! /relay/v1/calls/{id}`, and `GET /relay/v1/calls` to list them.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tonegate_dsp::G711Law;

use super::{ApiError, ApiJson, AppState, Authed};
use crate::auth::Scope;
use crate::relay::{NewCall, RelayError};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/relay/v1/calls", post(create).get(list))
        .route("/relay/v1/calls/{id}", get(show).delete(remove))
        .route("/relay/v1/calls/{id}/secure", post(secure))
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::Exhausted(why) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "relay_exhausted", why)
            }
            RelayError::UnknownCall => ApiError::not_found("call"),
            RelayError::Invalid(m) => ApiError::bad_request(m),
            RelayError::Engine(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "relay_unavailable", m)
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegRequest {
    remote: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    call_guid: String,
    codec: String,
    #[serde(default)]
    telephone_event_pt: Option<u8>,
    caller: LegRequest,
    agent: LegRequest,
    #[serde(default)]
    rtcp_mux: bool,
    /// Bind IPv6 ports when no remote is given.
    #[serde(default)]
    ipv6: bool,
}

fn parse_remote(leg: &str, r: &Option<String>) -> Result<Option<SocketAddr>, ApiError> {
    match r {
        None => Ok(None),
        Some(s) => s.parse::<SocketAddr>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "{leg}.remote must be \"ip:port\" or null, got {s:?}"
            ))
        }),
    }
}

async fn create(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Scope::Relay)?;
    let law = match req.codec.to_ascii_uppercase().as_str() {
        "PCMU" => G711Law::Ulaw,
        "PCMA" => G711Law::Alaw,
        other => {
            return Err(ApiError::bad_request(format!(
                "codec must be PCMU or PCMA, got {other:?}"
            )))
        }
    };
    if let Some(pt) = req.telephone_event_pt {
        if !(96..=127).contains(&pt) {
            return Err(ApiError::bad_request(
                "telephone_event_pt must be a dynamic payload type (96-127)",
            ));
        }
    }
    let info = state.relay.create_call(NewCall {
        call_guid: req.call_guid,
        law,
        event_pt: req.telephone_event_pt,
        caller_remote: parse_remote("caller", &req.caller.remote)?,
        agent_remote: parse_remote("agent", &req.agent.remote)?,
        rtcp_mux: req.rtcp_mux,
        ipv6: req.ipv6,
        masking: None,
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": info.id,
            "call_guid": info.call_guid,
            "caller": { "local": info.caller.local.to_string() },
            "agent": { "local": info.agent.local.to_string() },
        })),
    ))
}

async fn list(State(state): State<AppState>, auth: Authed) -> Result<impl IntoResponse, ApiError> {
    auth.require(Scope::Relay)?;
    Ok(Json(json!({ "calls": state.relay.list() })))
}

async fn show(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Scope::Relay)?;
    state
        .relay
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("call"))
}

async fn remove(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(Scope::Relay)?;
    state.relay.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecureRequest {
    enabled: bool,
}

async fn secure(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SecureRequest>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Scope::Relay)?;
    let info = state.relay.set_secure(&id, req.enabled).await?;
    Ok(Json(info))
}
