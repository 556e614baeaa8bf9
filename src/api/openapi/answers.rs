//! The answers that handlers write with `json!` (and two types of other modules that
//! the API serializes), as schemas. Never built: they describe, and schemathesis checks each
//! answer against them. Doc comments are the schemas' descriptions.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::openapi::schema::Schema;
use utoipa::ToSchema;

use crate::session::model::{PaymentResult, SessionKind, SessionState};

// `ApiError`.
/// An RFC 9457 problem: a stable code (`error`), what went wrong (`detail`, also as
/// `message`), and the request field at fault where there is one (`field`)
#[derive(ToSchema)]
pub struct Error {
    /// `about:blank`: the title is the HTTP status's phrase
    #[serde(rename = "type")]
    #[schema(schema_with = about_blank)]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The stable machine code (`not_found`, `invalid_field`, …)
    pub error: String,
    pub message: String,
    /// The body member, header or parameter at fault
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub field: Option<String>,
}

fn about_blank() -> Schema {
    super::one_of(&["about:blank"])
}

/// An RFC 6749 §5.2 error
#[derive(ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

// `auth::IssuedToken`.
#[derive(ToSchema)]
pub struct Token {
    pub access_token: String,
    #[schema(schema_with = bearer)]
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}

fn bearer() -> Schema {
    super::one_of(&["Bearer"])
}

// `healthz` in `mod.rs`.
#[derive(ToSchema)]
pub struct Health {
    #[schema(schema_with = ok)]
    pub status: String,
    pub version: String,
    /// The node (`[cluster] node`)
    pub node: String,
}

fn ok() -> Schema {
    super::one_of(&["ok", "draining"])
}

// `session_json` in `globalpci.rs`, and the `Message` (or `releasedCalls`) some routes add.
/// A session's state and, once finished, its result (no card data)
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub session_id: String,
    pub session_state: SessionState,
    pub session_type: SessionKind,
    pub account_configuration_id: String,
    pub currency: String,
    pub created_at: u64,
    pub expires_at: u64,
    /// Major units, with exactly the currency's ISO 4217 decimals (JPY 1000, GBP 49.99, KWD 12.345)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub merchant_txn_ref: Option<String>,
    #[serde(rename = "CallGuid", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub call_guid: Option<String>,
    #[serde(rename = "Message", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub message: Option<String>,
    /// The relay calls the session released (`release` only)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>)]
    pub released_calls: Option<Vec<String>>,
    #[serde(flatten)]
    pub result: PaymentResult,
}

// `create` in `globalpci.rs`, for each kind.
#[derive(ToSchema)]
pub struct SelfServiceCreated {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "dtmfFallbackNumber")]
    pub dtmf_fallback_number: String,
    #[serde(rename = "dtmfLinkId")]
    #[schema(required)]
    pub dtmf_link_id: Option<String>,
}

#[derive(ToSchema)]
pub struct DigitalCreated {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    #[serde(rename = "Message")]
    pub message: String,
}

#[derive(ToSchema)]
pub struct AgentCreated {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "paymentUiUrl")]
    pub payment_ui_url: String,
    #[serde(rename = "paymentUiCredentials")]
    #[schema(inline)]
    pub payment_ui_credentials: UiCredentials,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UiCredentials {
    pub session_id: String,
    pub access_code: String,
}

// `messaging` in `globalpci.rs`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Messaging {
    pub session_id: String,
    pub payment_url: String,
    /// A Genesys Cloud message with a button attachment
    #[schema(value_type = Object)]
    pub genesys: Value,
    /// Apple Messages for Business: a BusinessChatMessage and a ConnectorPaymentRequest
    pub apple_business_chat: Vec<Value>,
}

// `redact` in `globalpci.rs`.
#[derive(ToSchema)]
pub struct Redacted {
    pub text: String,
}

// `agent_reset` in `pages/agent.rs`.
#[derive(ToSchema)]
pub struct Reset {
    pub reset: bool,
    #[schema(schema_with = super::super::field_schema::capture_field)]
    pub field: String,
}

// `relay::CallInfo`: its codec, policy and legs as the relay writes them.
/// A relayed call: its legs and counters, never keys
#[derive(ToSchema)]
pub struct Call {
    pub id: String,
    pub call_guid: String,
    #[schema(schema_with = codec)]
    pub codec: String,
    pub secure: bool,
    /// Keys are listened for outside secure mode (a caller keying a `dtmfLinkId`)
    pub listening: bool,
    #[schema(schema_with = dtmf_masking)]
    pub dtmf_masking: String,
    #[schema(required)]
    pub account: Option<String>,
    pub caller: CallLeg,
    pub agent: CallLeg,
    pub rtcp_mux: bool,
    pub created_at: u64,
    #[schema(value_type = Object)]
    pub counters: Value,
}

fn codec() -> Schema {
    super::one_of(&["PCMU", "PCMA"])
}

fn dtmf_masking() -> Schema {
    super::one_of(&["call", "session"])
}

// `relay::LegInfo`.
#[derive(ToSchema)]
pub struct CallLeg {
    pub local: String,
    #[schema(required)]
    pub remote: Option<String>,
}

// A new call's leg, as `create` in `relay.rs` writes it.
#[derive(ToSchema)]
pub struct LocalLeg {
    pub local: String,
}

// `create` in `relay.rs`.
#[derive(ToSchema)]
pub struct CallCreated {
    pub id: String,
    pub call_guid: String,
    pub secure: bool,
    #[schema(schema_with = dtmf_masking)]
    pub dtmf_masking: String,
    pub caller: LocalLeg,
    pub agent: LocalLeg,
}

// `list` in `globalpci.rs`.
#[derive(ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
    /// Where the next page starts (absent on the last page)
    #[serde(rename = "nextCursor", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub next_cursor: Option<String>,
}

// `list` in `relay.rs`.
#[derive(ToSchema)]
pub struct Calls {
    pub calls: Vec<Call>,
}

// The admin listings (`admin.rs`).
#[derive(ToSchema)]
pub struct Outbox {
    pub messages: Vec<Value>,
}

#[derive(ToSchema)]
pub struct Webhooks {
    pub webhooks: Vec<Value>,
}

#[derive(ToSchema)]
pub struct RelayAudit {
    pub records: Vec<Value>,
}
