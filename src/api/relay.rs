//! Relay control (design.md contract 4), bearer token with scope `relay`:
//! `POST /relay/v1/calls`, `POST /relay/v1/calls/{id}/secure`, `GET` and `DELETE
//! /relay/v1/calls/{id}`, and `GET /relay/v1/calls` to list them.
//!
//! A call belongs to the client that created it: for any other client it does not exist (404,
//! not in the list). A token with scope `admin` sees and ends every call, and each such use is
//! in the audit trail.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonegate_dsp::G711Law;
use utoipa::openapi::schema::Schema;
use utoipa::ToSchema;

use super::{ApiError, ApiJson, AppState, Authed};
use crate::auth::{Principal, Scope};
use crate::media::RemoteRule;
use crate::relay::{Access, CallInfo, NewCall, RelayError};

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
            e @ RelayError::OverQuota(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "relay_quota", e.to_string())
            }
            RelayError::Engine(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "relay_unavailable", m)
            }
            RelayError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        }
    }
}

/// A call the relay would not set up. While the gateway drains: 503 `draining`. Every 503
/// carries `Retry-After`: a retry through a load balancer lands on another node, and here
/// ports and call slots free up as calls end.
fn refused(state: &AppState, e: RelayError) -> ApiError {
    let e = match e {
        RelayError::Exhausted(_) if state.relay.is_draining() => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            format!(
                "node {} is draining: it takes no new calls (live ones carry on until they end); \
                 set the call up on another node",
                state.config.cluster.node
            ),
        ),
        e => ApiError::from(e),
    };
    if e.status == StatusCode::SERVICE_UNAVAILABLE {
        e.retry_after(1)
    } else {
        e
    }
}

// Doc comments here are the schema's descriptions in /openapi.json; its constraints are what
// `create` and `parse_remote` check after reading the body.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LegRequest {
    // See `parse_remote`: its pattern is assembled in `openapi.rs`.
    #[schema(schema_with = super::field_schema::remote)]
    remote: Option<String>,
}

// Serialize: an Idempotency-Key's request hash is taken over the request as read.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    /// The platform's call id: not blank, at most 128 characters; one live call per call_guid
    /// and client.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    call_guid: String,
    /// PCMU or PCMA (any case).
    #[schema(pattern = "^[Pp][Cc][Mm][AaUu]$")]
    codec: String,
    /// The RFC 4733 telephone-event payload type: dynamic (96-127).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 96, maximum = 127)]
    telephone_event_pt: Option<u8>,
    caller: LegRequest,
    agent: LegRequest,
    /// RTCP shares the RTP port.
    #[serde(default)]
    rtcp_mux: bool,
    /// Bind IPv6 ports when no remote is given.
    #[serde(default)]
    ipv6: bool,
    /// The account (AccountConfigurationId) the call belongs to; sets its dtmf_masking policy.
    /// 404 for an unknown account, 403 for one this client may not use. Without it, a client
    /// allowed exactly one account uses that one.
    #[serde(default)]
    account: Option<String>,
}

/// A whole number as JSON Schema reads one: `108`, or `108.0` (a number whose fraction is zero
/// is an integer there), so no schema-valid body is refused for its spelling. The value is not
/// echoed in the error: whatever was sent could be a card number.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=255.0).contains(f))
                .map(|f| f as u64)
        })
        .and_then(|v| u8::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expected a whole number from 0 to 255"))
}

/// How a relay route's caller may see calls: as the owner of its own (scope `relay`), or every
/// call (scope `admin`).
fn access(p: &Principal) -> Result<Access<'_>, ApiError> {
    if p.has(Scope::Admin) {
        Ok(Access::Admin(&p.client_id))
    } else if p.has(Scope::Relay) {
        Ok(Access::Owner(&p.client_id))
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "this route needs a token with scope relay (or admin)",
        ))
    }
}

/// A leg's `remote`: `"ip:port"` (exactly that), `"ip"` (that host, any port),
/// `"ip:lo-hi"` (that host, a port range, its ends in either order; IPv6 as `"[ip]:lo-hi"`), or
/// null (learned from the first packet from anywhere). The leg latches only within what it
/// names. Media never goes to a multicast, broadcast or unspecified address, nor to port 0:
/// such a remote is a 400 (and schema-invalid: `field_schema::remote`).
fn parse_remote(leg: &str, r: &Option<String>) -> Result<RemoteRule, ApiError> {
    let rule = parse_rule(leg, r)?;
    let port_zero = matches!(rule, RemoteRule::Exact(a) if a.port() == 0);
    if port_zero
        || rule
            .ip()
            .is_some_and(|ip| !crate::media::is_unicast_host(ip))
    {
        return Err(ApiError::bad_request(format!(
            "{leg}.remote must be a unicast address with a port above 0 (not multicast, \
             broadcast or unspecified)"
        )));
    }
    Ok(rule)
}

fn parse_rule(leg: &str, r: &Option<String>) -> Result<RemoteRule, ApiError> {
    let Some(s) = r else {
        return Ok(RemoteRule::Any);
    };
    // The input is not echoed: whatever was sent here could be a card number.
    let bad = || {
        ApiError::bad_request(format!(
            "{leg}.remote must be \"ip:port\", \"ip\", \"ip:lo-hi\" or null"
        ))
    };
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(RemoteRule::Exact(a));
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(RemoteRule::Host(ip));
    }
    let (host, ports) = s.rsplit_once(':').ok_or_else(bad)?;
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map_err(|_| bad())?;
    let (lo, hi) = ports.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        lo.parse::<u16>().map_err(|_| bad())?,
        hi.parse::<u16>().map_err(|_| bad())?,
    );
    if a == 0 || b == 0 {
        return Err(bad());
    }
    // The ends in either order: "5000-4000" can only mean 4000-5000, and a JSON Schema pattern
    // cannot state an order, so taking both keeps every schema-valid remote acceptable.
    Ok(RemoteRule::Ports(ip, a.min(b), a.max(b)))
}

async fn create(
    State(state): State<AppState>,
    auth: Authed,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let p = auth.require(Scope::Relay)?;
    let claim = super::idempotency::claim(&state, &headers, &p.client_id, "relay_call")?;
    let request_hash =
        super::idempotency::request_hash(&serde_json::to_value(&req).unwrap_or_default());
    if let Some(c) = &claim {
        if let Some(answer) = c.replay(&state, &request_hash)? {
            return Ok((StatusCode::CREATED, Json(answer)));
        }
    }
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
    let client = state.authority.client(&p.client_id).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "unknown client")
    })?;
    let account = match req.account {
        Some(a) => {
            if state.config.account(&a).is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_account",
                    format!("no account {a:?}"),
                )
                .field("account"));
            }
            if !client.may_use_account(&a) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "account_not_allowed",
                    format!("account {a:?} is not an account this client may use"),
                )
                .field("account"));
            }
            Some(a)
        }
        None => match client.accounts.as_slice() {
            [only] if only != "*" => Some(only.clone()),
            _ => None,
        },
    };
    let policy = account
        .as_deref()
        .and_then(|a| state.config.account(a))
        .map(|a| a.dtmf_masking)
        .unwrap_or(state.config.relay.dtmf_masking);
    let created = state.relay.create_call(NewCall {
        // Where a call id enters: a card number in it never reaches the audit trail or logs
        // (sessions mask theirs the same way, so the two still match).
        call_guid: crate::card::redact::redact_card_numbers(&req.call_guid),
        law,
        event_pt: req.telephone_event_pt,
        caller_remote: parse_remote("caller", &req.caller.remote)?,
        agent_remote: parse_remote("agent", &req.agent.remote)?,
        rtcp_mux: req.rtcp_mux,
        ipv6: req.ipv6,
        masking: None,
        owner: p.client_id.clone(),
        account,
        policy,
    });
    let info = created.map_err(|e| refused(&state, e))?;
    let out = serde_json::to_value(CallCreated {
        id: info.id.clone(),
        call_guid: info.call_guid,
        secure: info.secure,
        dtmf_masking: info.dtmf_masking,
        caller: LocalLeg {
            local: info.caller.local.to_string(),
        },
        agent: LocalLeg {
            local: info.agent.local.to_string(),
        },
    })
    .expect("a new call's answer serializes");
    // A `Value`: the same answer is kept, sealed, for an idempotent replay.
    if let Some(c) = &claim {
        c.keep(&state, &request_hash, &info.id, &out);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// `create`'s answer: the new call's id and where to send its media.
#[derive(Serialize, ToSchema)]
pub(super) struct CallCreated {
    id: String,
    call_guid: String,
    secure: bool,
    #[schema(schema_with = dtmf_masking)]
    dtmf_masking: &'static str,
    caller: LocalLeg,
    agent: LocalLeg,
}

/// A new call's leg: the gateway's address for it.
#[derive(Serialize, ToSchema)]
pub(super) struct LocalLeg {
    local: String,
}

async fn list(State(state): State<AppState>, auth: Authed) -> Result<Json<Calls>, ApiError> {
    let p = auth.0;
    Ok(Json(Calls {
        calls: state.relay.list(access(&p)?),
    }))
}

/// `list`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Calls {
    #[schema(value_type = Vec<Call>)]
    calls: Vec<CallInfo>,
}

// `CallInfo` and `LegInfo` as the relay serializes them. A mirror, stated here: the relay
// crate does not depend on utoipa (it serves no HTTP; `tests/gateway/crate_graph.rs` keeps
// it off the gateway's crates), so it cannot derive the schema itself.
/// A relayed call: its legs and counters, never keys
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Call {
    id: String,
    call_guid: String,
    #[schema(schema_with = codec)]
    codec: String,
    secure: bool,
    /// Keys are listened for outside secure mode (a caller keying a `dtmfLinkId`)
    listening: bool,
    #[schema(schema_with = dtmf_masking)]
    dtmf_masking: String,
    #[schema(required)]
    account: Option<String>,
    caller: CallLeg,
    agent: CallLeg,
    rtcp_mux: bool,
    created_at: u64,
    #[schema(value_type = Object)]
    counters: Value,
}

/// `LegInfo`'s mirror.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CallLeg {
    local: String,
    #[schema(required)]
    remote: Option<String>,
}

fn codec() -> Schema {
    super::field_schema::one_of(&["PCMU", "PCMA"])
}

fn dtmf_masking() -> Schema {
    super::field_schema::one_of(&["call", "session"])
}

async fn show(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<CallInfo>, ApiError> {
    let p = auth.0;
    state
        .relay
        .get(&id, access(&p)?)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("call"))
}

async fn remove(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = auth.0;
    let closing = state.relay.delete(&id, access(&p)?)?;
    // Answer once the call's ports can be bound again (the engine closes its sockets on its
    // own thread), so a create right after a delete finds them free; bounded, as a stuck
    // engine must not hold the answer.
    if !closing.closed(Duration::from_secs(2)).await {
        tracing::warn!(call = %id, "relay call deleted; its sockets were not closed within 2 s");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SecureRequest {
    /// On: hold secure mode; off: release it.
    enabled: bool,
}

/// On: the owner holds secure mode. Off: an explicit release, refused with 409 and the reason
/// while the account masks the whole call, a capture is live, or a key was pressed within the
/// hold-off.
async fn secure(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SecureRequest>,
) -> Result<Json<CallInfo>, ApiError> {
    let p = auth.0;
    let info = state
        .relay
        .request_secure(&id, access(&p)?, req.enabled)
        .await?;
    Ok(Json(info))
}
