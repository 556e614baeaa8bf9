//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, built with utoipa.
//! `tests/gateway/openapi.rs` keeps it in step with the router (every documented operation answers;
//! every route is documented), and `tests/gateway/schemathesis.rs` fuzzes a live gateway against it:
//! every status code, content type, header and input constraint the gateway enforces is
//! stated here.
//!
//! What is derived, and what is written here:
//!
//! - Request bodies and query strings are derived (`ToSchema`, `IntoParams`) from the types the
//!   handlers read, so their fields, names (serde renames), optionality (`Option`,
//!   `#[serde(default)]`) and `additionalProperties: false` (`deny_unknown_fields`) follow the
//!   code. What a handler checks after reading a body (not blank, lengths, ranges, patterns) is
//!   stated by `#[schema(...)]` attributes on the field. So are the session model's enums and
//!   `PaymentResult`.
//! - Answers: most handlers write their JSON with `json!`, so there is no type to derive from.
//!   The structs in [`answers`] describe them (they are never built); so do the mirrors of
//!   types that other modules serialize (`relay::CallInfo`, `auth::IssuedToken`).
//!   schemathesis checks every answer the gateway gives against these schemas.
//! - Operations are built with utoipa's builders by [`Op`], not with `#[utoipa::path]`: most of
//!   an operation's answers come from the shared extractors it uses — `Authed` (401, 403),
//!   `ApiJson` (400, 413, 415) — and the timeout layer (408), which an attribute on the handler
//!   would not see; `Op` adds them when the operation says it uses that extractor, as the
//!   hand-written document did. (`#[utoipa::path]` would also have to sit on stand-in
//!   functions: several handlers are closures registered in a loop, each under two paths.)
//! - The shared answers (`components/responses`), the security schemes and `PaymentData` (a
//!   free-form map that `PaymentData::from_value` checks) are built here.
//! - utoipa 5 cannot state two things, added to the serialized document by [`document`]:
//!   `required: true` on a response header (its `Header` has no such field, and without it
//!   schemathesis does not check that `Retry-After` and `Cache-Control` are sent), and
//!   reusable headers (`components/headers`; the headers are stated inline instead).

use std::collections::BTreeMap;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ComponentsBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes,
    SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required,
};
use utoipa::{IntoParams, ToSchema};

use super::field_schema::{one_of, schema_ref, string};
use super::{admin, globalpci, pages, relay, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

/// The whole document, as served.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(api()).expect("the OpenAPI document serializes");
    require_headers(&mut doc);
    name_operations(&mut doc);
    doc["webhooks"] = webhooks();
    doc
}

/// Each operation's `operationId` (what generated clients name their functions) and tag (how
/// they group them), by method and path. A test checks every operation has one, each once.
const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    ("get", "/healthz", "getHealth", "operations"),
    ("get", "/metrics", "getMetrics", "operations"),
    ("get", "/openapi.json", "getOpenApiDocument", "operations"),
    ("post", "/auth/connect/token", "issueToken", "auth"),
    (
        "post",
        "/globalpci/v1/selfservicesession/",
        "createSelfServiceSession",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/digitalselfservicesession/",
        "createDigitalSession",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/agentsession/",
        "createAgentSession",
        "sessions",
    ),
    ("get", "/globalpci/v1/sessions", "listSessions", "sessions"),
    (
        "get",
        "/globalpci/v1/session/{id}",
        "getSession",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/session/{id}/cancel",
        "cancelSession",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/session/{id}/submit",
        "submitSession",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/session/{id}/release",
        "releaseSession",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/session/{id}/recapture",
        "recaptureSession",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/session/{id}/reissue",
        "reissueSessionLink",
        "sessions",
    ),
    (
        "post",
        "/globalpci/v1/session/{id}/messaging",
        "getMessagingPayloads",
        "messaging",
    ),
    (
        "post",
        "/globalpci/v1/applepay/response",
        "acceptApplePayResponse",
        "messaging",
    ),
    ("post", "/globalpci/v1/redact", "redactText", "redaction"),
    ("get", "/admin/v1/outbox", "listOutbox", "admin"),
    (
        "get",
        "/admin/v1/webhooks",
        "listUndeliveredWebhooks",
        "admin",
    ),
    ("get", "/admin/v1/audit/relay", "listRelayAudit", "admin"),
    ("get", "/pay/agent/{id}", "getAgentPaymentPage", "pages"),
    (
        "get",
        "/pay/agent/{id}/events",
        "streamAgentPaymentEvents",
        "pages",
    ),
    (
        "post",
        "/pay/agent/{id}/reset",
        "resetAgentPaymentField",
        "pages",
    ),
    (
        "post",
        "/pay/agent/{id}/submit",
        "submitAgentPayment",
        "pages",
    ),
    (
        "post",
        "/pay/agent/{id}/cancel",
        "cancelAgentPayment",
        "pages",
    ),
    (
        "post",
        "/pay/agent/{id}/recapture",
        "recaptureAgentPayment",
        "pages",
    ),
    ("get", "/pay/link/{token}", "getHostedPaymentPage", "pages"),
    ("post", "/pay/link/{token}", "payHostedPaymentPage", "pages"),
    (
        "get",
        "/pay/link/{token}/return",
        "returnFromChallenge",
        "pages",
    ),
    (
        "post",
        "/pay/link/{token}/wallet",
        "startWalletCheckout",
        "pages",
    ),
    (
        "get",
        "/pay/link/{token}/wallet/done",
        "returnFromWalletCheckout",
        "pages",
    ),
    (
        "get",
        "/pay/link/{token}/wallet/cancel",
        "cancelWalletCheckout",
        "pages",
    ),
    (
        "post",
        "/psp/v1/webhook/{account}",
        "receivePspWebhook",
        "psp",
    ),
    ("get", "/sandbox/3ds/{id}", "getSandboxChallenge", "psp"),
    ("post", "/sandbox/3ds/{id}", "answerSandboxChallenge", "psp"),
    ("get", "/sandbox/checkout/{id}", "getSandboxCheckout", "psp"),
    (
        "post",
        "/sandbox/checkout/{id}",
        "answerSandboxCheckout",
        "psp",
    ),
    ("post", "/relay/v1/calls", "createRelayCall", "relay"),
    ("get", "/relay/v1/calls", "listRelayCalls", "relay"),
    ("get", "/relay/v1/calls/{id}", "getRelayCall", "relay"),
    ("delete", "/relay/v1/calls/{id}", "deleteRelayCall", "relay"),
    (
        "post",
        "/relay/v1/calls/{id}/secure",
        "setRelayCallSecure",
        "relay",
    ),
];

/// The tags' descriptions, in the order generated documentation shows them.
const TAGS: &[(&str, &str)] = &[
    ("sessions", "GlobalPCI payment sessions (scope globalpci)"),
    (
        "messaging",
        "Digital sessions offered in messaging conversations (scope globalpci)",
    ),
    (
        "redaction",
        "Masking card numbers in free text (scope globalpci)",
    ),
    ("relay", "RTP relay control (scope relay)"),
    ("auth", "OAuth2 tokens"),
    ("admin", "Operator routes (scope admin)"),
    (
        "pages",
        "The agent payment UI and the hosted payment page (browsers)",
    ),
    (
        "psp",
        "The PSP's webhooks, and the sandbox PSP's challenge and checkout pages",
    ),
    ("operations", "Health, metrics and this document"),
];

/// Sets `operationId` and `tags` on each operation, from [`OPERATIONS`] (an operation missing
/// there is named from its method and path, and the OpenAPI test fails on it).
fn name_operations(doc: &mut Value) {
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            for (method, op) in item.as_object_mut().into_iter().flatten() {
                let Some(op) = op.as_object_mut() else {
                    continue;
                };
                let known = OPERATIONS
                    .iter()
                    .find(|(m, p, _, _)| m == method && p == path);
                let (id, tag) = match known {
                    Some((_, _, id, tag)) => (id.to_string(), *tag),
                    None => (
                        format!("{method}{}", path.replace(['/', '{', '}', '.'], "_")),
                        "unnamed",
                    ),
                };
                op.insert("operationId".into(), Value::String(id));
                op.insert("tags".into(), serde_json::json!([tag]));
            }
        }
    }
    doc["tags"] = TAGS
        .iter()
        .map(|(name, description)| serde_json::json!({ "name": name, "description": description }))
        .collect();
}

/// The result webhook (`notify.rs`, `Session::webhook_event`), as OpenAPI 3.1 `webhooks`: what
/// tonegate POSTs to an account's `webhook_url` when a session ends.
fn webhooks() -> Value {
    let header = |description: &str, schema: Value| serde_json::json!({ "name": "", "in": "header", "required": true, "description": description, "schema": schema });
    let mut params = Vec::new();
    for (name, description, schema) in [
        (
            "X-Tonegate-Signature",
            "v1= and the hex HMAC-SHA256 of \"{X-Tonegate-Timestamp}.{body}\" keyed with the \
             account's webhook_secret",
            serde_json::json!({ "type": "string", "pattern": "^v1=[0-9a-f]{64}$" }),
        ),
        (
            "X-Tonegate-Timestamp",
            "Unix seconds when this try was signed (reject old ones)",
            serde_json::json!({ "type": "string", "pattern": "^[0-9]+$" }),
        ),
        (
            "X-Tonegate-Event-Id",
            "The same on every try of one event: deduplicate on it",
            serde_json::json!({ "type": "string" }),
        ),
    ] {
        let mut p = header(description, schema);
        p["name"] = Value::String(name.into());
        params.push(p);
    }
    serde_json::json!({
        "sessionEnded": {
            "post": {
                "operationId": "sessionEnded",
                "tags": ["sessions"],
                "summary": "A session ended (Completed, Declined, Failed, Cancelled or Expired); \
                            retried 1 s doubling to hourly for store.webhook_retry_s until a 2xx",
                "parameters": params,
                "requestBody": {
                    "required": true,
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "description": "The event: its id and type, and the session's state, amount and result (masked PAN, brand, PSP references; never card data)",
                        "required": ["eventId", "type", "createdAt", "sessionId", "sessionState", "sessionType", "currency"],
                        "properties": {
                            "eventId": { "type": "string" },
                            "type": { "type": "string", "enum": ["session.completed", "session.declined", "session.failed", "session.cancelled", "session.expired"] },
                            "createdAt": { "type": "integer" },
                            "sessionId": { "type": "string" },
                            "sessionState": { "$ref": "#/components/schemas/SessionState" },
                            "sessionType": { "$ref": "#/components/schemas/SessionKind" },
                            "currency": { "type": "string" },
                            "amount": { "type": "string" },
                            "merchantTxnRef": { "type": "string" }
                        },
                        "additionalProperties": true
                    } } }
                },
                "responses": {
                    "2XX": { "description": "Received: not sent again" },
                    "default": { "description": "Not received: tried again later" }
                }
            }
        }
    })
}

/// Response headers the gateway always sends where the document states them. utoipa 5's
/// `Header` has no `required` (the OpenAPI Header Object has), so it is set on the serialized
/// document: schemathesis checks that a required header is there.
const REQUIRED_HEADERS: [&str; 2] = ["Retry-After", "Cache-Control"];

fn require_headers(doc: &mut Value) {
    let mut responses: Vec<&mut Value> = Vec::new();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                if let Some(rs) = op.get_mut("responses").and_then(Value::as_object_mut) {
                    responses.extend(rs.values_mut());
                }
            }
        }
    }
    for response in responses {
        for name in REQUIRED_HEADERS {
            if let Some(h) = response
                .get_mut("headers")
                .and_then(|hs| hs.get_mut(name))
                .and_then(Value::as_object_mut)
            {
                h.insert("required".into(), Value::Bool(true));
            }
        }
    }
}

// ------------------------------------------------------------------ schemas built here

/// Named schemas, for `components/schemas`.
type Schemas = BTreeMap<String, RefOr<Schema>>;

/// `PaymentData` and its values, as `PaymentData::from_value` (session/payment_data.rs) checks
/// them: a map, not a type with fields.
fn payment_data_schemas() -> [(&'static str, Schema); 2] {
    let value = || schema_ref("PaymentValue");
    // A seed key, with an example value (beside a `$ref` only in an `allOf`: utoipa's `Ref`
    // carries no examples).
    let example = |e: &str| -> Schema {
        AllOfBuilder::new()
            .item(value())
            .examples([e])
            .build()
            .into()
    };
    let data = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Non-sensitive payment data. Seed keys as written; unknown keys are kept as \
             metadata. Values are strings (at most 1024 bytes of UTF-8), numbers, booleans or \
             null; at most 64 keys, each 1-64 bytes. The account's mandatory keys must be \
             present and not blank. `currency` is an ISO 4217 code (default: the account's); \
             `amount` is decimal text with at most that currency's decimals (JPY 1000, GBP \
             49.99, KWD 12.345), anything else is a 400 naming the field.",
        ))
        .max_properties(Some(64))
        .property_names(Some(string().min_length(Some(1)).max_length(Some(64))))
        .property("cardholderName", value())
        .property("cardholderPostCode", value())
        .property("cardholder Address", value())
        .property("merchantTxnRef", value())
        .property("amount", example("124.99"))
        .property("currency", example("GBP"))
        .property("CustomerPhoneNumber", example("+447700900123"))
        .additional_properties(Some(value()))
        .build();
    let payment_value = AnyOfBuilder::new()
        .description(Some(
            "A PaymentData value: a string of at most 1024 bytes (UTF-8), a number, a boolean \
             or null",
        ))
        .item(string().max_length(Some(1024)))
        .item(ObjectBuilder::new().schema_type(SchemaType::from_iter([
            Type::Number,
            Type::Boolean,
            Type::Null,
        ])))
        .build();
    [
        ("PaymentData", data.into()),
        ("PaymentValue", payment_value.into()),
    ]
}

/// A self-service session's body: `CreateBody`, where `create` also requires a `CallGuid` (not
/// blank) for that kind.
fn self_service_body(schemas: &mut Schemas) -> RefOr<Schema> {
    let mut body = inline::<globalpci::CreateBody>(schemas);
    let RefOr::T(Schema::Object(o)) = &mut body else {
        unreachable!("a struct's schema is an object");
    };
    let Some(RefOr::T(Schema::Object(account))) = o.properties.get("AccountConfigurationId") else {
        unreachable!("CreateBody has an AccountConfigurationId");
    };
    let not_blank = account.pattern.clone();
    o.required.push("CallGuid".into());
    o.properties.insert(
        "CallGuid".into(),
        string()
            .pattern(not_blank)
            .min_length(Some(1))
            .max_length(Some(128))
            .description(Some(
                "The call's id: not blank, at most 128 characters once trimmed.",
            ))
            .into(),
    );
    body
}

/// `T`'s schema inline; the named schemas it refers to go into `schemas`.
fn inline<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let mut refs = Vec::new();
    T::schemas(&mut refs);
    schemas.extend(refs);
    T::schema()
}

/// A reference to `T`, whose schema (and those it refers to) go into `schemas`.
fn named<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let schema = inline::<T>(schemas);
    schemas.insert(T::name().into_owned(), schema);
    schema_ref(&T::name())
}

/// The answers that handlers write with `json!` (and two types of other modules that
/// the API serializes), as schemas. Never built: they describe, and schemathesis checks each
/// answer against them. Doc comments are the schemas' descriptions.
#[allow(dead_code)]
mod answers {
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
}

// ------------------------------------------------------------------ shared answers

/// A response with a body of `schema` as `content_type`.
fn answer(description: &str, content_type: &str, schema: impl Into<RefOr<Schema>>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            content_type,
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// A response with a text body (a page, a stream, plain text).
fn text(description: &str, content_type: &str) -> Response {
    answer(description, content_type, string())
}

/// The content type of an `ApiError` (RFC 9457).
const PROBLEM: &str = "application/problem+json";

/// An `ApiError` (problem details).
fn error(description: &str) -> Response {
    answer(description, PROBLEM, schema_ref("Error"))
}

/// The answers many routes share (`components/responses`): those of the shared extractors
/// (`Authed`, `ApiJson`, axum's `Path`, `Query` and `Json`), of the error types (`ApiError`
/// from `SessionError` and `RelayError`), and of the timeout layer.
fn shared_responses() -> Vec<(&'static str, Response)> {
    let json_or_plain = ResponseBuilder::new()
        .description(
            "The request is invalid (JSON: the message says how), or the path is not UTF-8 \
             (plain text)",
        )
        .content(
            PROBLEM,
            ContentBuilder::new()
                .schema(Some(schema_ref("Error")))
                .build(),
        )
        .content(
            "text/plain",
            ContentBuilder::new().schema(Some(string())).build(),
        )
        .build();
    let unauthorized = ResponseBuilder::new()
        .description("The token is missing, invalid or expired")
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new().schema(string()).build(),
        )
        .content(
            PROBLEM,
            ContentBuilder::new()
                .schema(Some(schema_ref("Error")))
                .build(),
        )
        .build();
    vec![
        (
            "BadRequest",
            error("The request is invalid: the message says how"),
        ),
        (
            "BadPath",
            text("The path is not UTF-8 once percent-decoded", "text/plain"),
        ),
        (
            "BadQuery",
            text(
                "The query string could not be read (a value of the wrong type, or a parameter \
                 not accepted)",
                "text/plain",
            ),
        ),
        ("BadRequestOrPath", json_or_plain),
        (
            "IdempotencyKeyReused",
            error("The Idempotency-Key was used before with another body (idempotency_key_reused)"),
        ),
        (
            "BadQueryOrCursor",
            ResponseBuilder::new()
                .description(
                    "The query string could not be read (plain text), or a value is refused \
                     (problem details naming it)",
                )
                .content(
                    PROBLEM,
                    ContentBuilder::new()
                        .schema(Some(schema_ref("Error")))
                        .build(),
                )
                .content(
                    "text/plain",
                    ContentBuilder::new().schema(Some(string())).build(),
                )
                .build(),
        ),
        (
            "BadRequestPlain",
            text("Malformed JSON, or a path that is not UTF-8", "text/plain"),
        ),
        ("Unauthorized", unauthorized),
        (
            "Forbidden",
            error(
                "The token lacks the scope (insufficient_scope), or the client may not use the \
                 account",
            ),
        ),
        ("NotFound", error("No such resource for this client")),
        (
            "Conflict",
            error("The resource is not in a state that allows this: the message says why"),
        ),
        (
            "Timeout",
            Response::new("The request took longer than server.request_timeout_s (no body)"),
        ),
        (
            "PayloadTooLarge",
            error("The body is larger than server.max_body_bytes"),
        ),
        (
            "PayloadTooLargePlain",
            text("The body is larger than the route accepts", "text/plain"),
        ),
        (
            "UnsupportedMediaType",
            error("The body is not sent as Content-Type: application/json"),
        ),
        (
            "UnsupportedMediaTypePlain",
            text(
                "The body is not sent with the content type the route reads",
                "text/plain",
            ),
        ),
        (
            "UnprocessablePlain",
            text("The JSON body does not match the schema", "text/plain"),
        ),
        (
            "Unavailable",
            error("The gateway cannot do it now (out of relay ports or calls, or shutting down)"),
        ),
        ("Page", text("A page", "text/html")),
    ]
}

fn shared(name: &str) -> RefOr<Response> {
    Ref::from_response_name(name).into()
}

fn security_schemes() -> Vec<(&'static str, SecurityScheme)> {
    let scopes = Scopes::from_iter([
        ("globalpci", "GlobalPCI sessions"),
        ("relay", "Relay control"),
        ("admin", "Operator routes"),
    ]);
    vec![
        (
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::new([Flow::ClientCredentials(
                ClientCredentials::new("/auth/connect/token", scopes),
            )])),
        ),
        (
            "uiToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The agent payment UI's token (in the page it serves)"))
                    .build(),
            ),
        ),
        (
            "uiTokenQuery",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The agent payment UI's token",
            ))),
        ),
    ]
}

// ------------------------------------------------------------------ operations

/// An operation being described. Its answers are those given with [`Op::answer`], and those
/// of the extractors it says it uses, unless given: [`Op::authed`] adds `Authed`'s 401 and 403,
/// [`Op::api_json`] `ApiJson`'s 400, 413 and 415, and every operation can answer 408 (the
/// timeout layer, for a request that outlives `server.request_timeout_s`).
struct Op {
    op: OperationBuilder,
    responses: BTreeMap<String, RefOr<Response>>,
    authed: bool,
    api_json: bool,
    schemas: Schemas,
}

impl Op {
    fn new(summary: &str) -> Op {
        Op {
            op: OperationBuilder::new().summary(Some(summary)),
            responses: BTreeMap::new(),
            authed: false,
            api_json: false,
            schemas: Schemas::new(),
        }
    }

    /// `Authed` with `require(scope)` (or the relay's `access`): 401 without a valid token,
    /// 403 without the scope.
    fn authed(mut self, scope: &str) -> Op {
        self.op = self
            .op
            .security(SecurityRequirement::new("oauth2", [scope]));
        self.authed = true;
        self
    }

    /// A token the handler checks itself (the agent payment UI's): security scheme `scheme`.
    fn ui_token(mut self, scheme: &str) -> Op {
        self.op = self
            .op
            .security(SecurityRequirement::new::<_, [&str; 0], &str>(scheme, []));
        self
    }

    /// The body, read by `ApiJson<T>`: JSON errors for a malformed or mistyped body (400), an
    /// oversized one (413) or a wrong content type (415).
    fn api_json<T: ToSchema>(mut self) -> Op {
        let schema = inline::<T>(&mut self.schemas);
        self.api_json_as(schema)
    }

    /// A body read by `ApiJson`, whose schema says more than its type's.
    fn api_json_as(mut self, schema: RefOr<Schema>) -> Op {
        self.api_json = true;
        self.body("application/json", schema)
    }

    /// A body of `T` as `content_type`, read another way (axum's `Json` or `Form`: errors in
    /// plain text).
    fn body_of<T: ToSchema>(mut self, content_type: &str) -> Op {
        let schema = inline::<T>(&mut self.schemas);
        self.body(content_type, schema)
    }

    /// A required body of `schema` as `content_type`.
    fn body(mut self, content_type: &str, schema: RefOr<Schema>) -> Op {
        self.op = self.op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    content_type,
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build(),
        ));
        self
    }

    /// A path parameter (`Path<String>`). Its value must be UTF-8 once percent-decoded, or
    /// the router answers 400 in plain text (`BadPath`).
    fn path_param(mut self, name: &str) -> Op {
        self.op = self.op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(string())),
        );
        self
    }

    /// The optional `Idempotency-Key` header of a create (`idempotency.rs`).
    fn idempotency_key(mut self) -> Op {
        self.op = self.op.parameter(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Retry-safe creates: the same key with the same body answers the first \
                     answer again (24 h); another body is 422",
                ))
                .schema(Some(
                    string()
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[!-~]+$")),
                )),
        );
        self
    }

    /// The query string, read by `Query<T>`.
    fn query<T: IntoParams>(mut self) -> Op {
        let params: Vec<Parameter> = T::into_params(|| Some(ParameterIn::Query));
        self.op = self.op.parameters(Some(params));
        self
    }

    fn answer(mut self, status: &str, response: impl Into<RefOr<Response>>) -> Op {
        self.responses.insert(status.into(), response.into());
        self
    }

    /// A shared answer (`components/responses`).
    fn shared(self, status: &str, name: &str) -> Op {
        self.answer(status, shared(name))
    }

    /// A JSON answer: a reference to `T`'s schema.
    fn json<T: ToSchema>(mut self, status: &str, description: &str) -> Op {
        let schema = named::<T>(&mut self.schemas);
        self.answer(status, answer(description, "application/json", schema))
    }

    /// A JSON answer: `T`'s schema inline.
    fn json_inline<T: ToSchema>(mut self, status: &str, description: &str) -> Op {
        let schema = inline::<T>(&mut self.schemas);
        self.answer(status, answer(description, "application/json", schema))
    }

    fn build(mut self) -> (Operation, Schemas) {
        let mut implied = vec![("408", "Timeout")];
        if self.api_json {
            implied.extend([
                ("400", "BadRequest"),
                ("413", "PayloadTooLarge"),
                ("415", "UnsupportedMediaType"),
            ]);
        }
        if self.authed {
            implied.extend([("401", "Unauthorized"), ("403", "Forbidden")]);
        }
        for (status, name) in implied {
            self.responses
                .entry(status.into())
                .or_insert_with(|| shared(name));
        }
        let responses = ResponsesBuilder::new()
            .responses_from_iter(self.responses)
            .build();
        (self.op.responses(responses).build(), self.schemas)
    }
}

/// The paths, and the schemas their operations name.
#[derive(Default)]
struct Doc {
    paths: Paths,
    schemas: Schemas,
}

impl Doc {
    fn add(&mut self, path: &str, method: HttpMethod, op: Op) {
        let (op, schemas) = op.build();
        self.schemas.extend(schemas);
        self.paths.add_path_operation(path, vec![method], op);
    }
}

fn api() -> OpenApi {
    use answers::*;
    use HttpMethod::{Delete, Get, Post};

    let mut doc = Doc::default();
    doc.add(
        "/healthz",
        Get,
        Op::new("Liveness; 503 while the node drains (SIGTERM or `tonegate ctl drain`)")
            .json_inline::<Health>("200", "Alive")
            .json_inline::<Health>(
                "503",
                "Draining: live calls carry on, new ones go to another node",
            ),
    );
    doc.add(
        "/metrics",
        Get,
        Op::new("Prometheus metrics (counts only, never card data)").answer(
            "200",
            text("Prometheus text exposition format 0.0.4", "text/plain"),
        ),
    );
    doc.add(
        "/openapi.json",
        Get,
        Op::new("This document").answer(
            "200",
            answer(
                "OpenAPI 3.1",
                "application/json",
                ObjectBuilder::new().schema_type(Type::Object),
            ),
        ),
    );

    // The token endpoint reads its form by hand (`auth.rs`): no type to derive from.
    let token_form = ObjectBuilder::new()
        .schema_type(Type::Object)
        .required("grant_type")
        .property("grant_type", one_of(&["client_credentials"]))
        .property("scope", string())
        .property("client_id", string())
        .property("client_secret", string())
        .build();
    let retry_after = || {
        HeaderBuilder::new()
            .description(Some("Whole seconds to wait"))
            .schema(string().pattern(Some("^[1-9][0-9]*$")))
            .build()
    };
    let oauth_error = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref("OAuthError")))
                .build(),
        )
    };
    let mut token = Op::new(
        "OAuth2 client credentials (RFC 6749 §4.4); client in the body or HTTP Basic. A body with \
         no Content-Type at all is read as a form too; any other content type is 400.",
    )
    .body("application/x-www-form-urlencoded", token_form.into())
    .answer(
        "400",
        oauth_error(
            "invalid_request, invalid_scope or unsupported_grant_type (RFC 6749 §5.2); a body \
             that is not UTF-8 in plain text",
        )
        .content(
            "text/plain",
            ContentBuilder::new().schema(Some(string())).build(),
        )
        .build(),
    )
    .answer(
        "401",
        oauth_error("invalid_client")
            .header(
                "WWW-Authenticate",
                HeaderBuilder::new().schema(string()).build(),
            )
            .build(),
    )
    .shared("413", "PayloadTooLargePlain")
    .answer(
        "429",
        oauth_error("Too many failed token requests from this address or for this client")
            .header("Retry-After", retry_after())
            .build(),
    )
    .answer(
        "503",
        oauth_error("Every secret-check slot stayed busy")
            .header("Retry-After", retry_after())
            .build(),
    );
    let issued = named::<Token>(&mut token.schemas);
    token = token.answer(
        "200",
        ResponseBuilder::new()
            .description("A bearer token")
            .header(
                "Cache-Control",
                HeaderBuilder::new().schema(one_of(&["no-store"])).build(),
            )
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(issued)).build(),
            )
            .build(),
    );
    doc.add("/auth/connect/token", Post, token);

    // Creating a session: the session (a new one, or the live one for this call), or 403
    // (account_not_allowed), 409, 503 (shutting down).
    fn created<T: ToSchema>(op: Op) -> Op {
        op.idempotency_key()
            .json_inline::<T>(
                "200",
                "The session (a new one, or the live one for this call: Message says which; \
                 with an Idempotency-Key used before with this body, the first answer again)",
            )
            .shared("403", "Forbidden")
            .shared("404", "NotFound")
            .shared("409", "Conflict")
            .shared("422", "IdempotencyKeyReused")
            .shared("503", "Unavailable")
    }
    let mut self_service = Op::new(
        "Start an IVR self-service session → sessionId, dtmfFallbackNumber, dtmfLinkId, Message",
    )
    .authed("globalpci");
    let body = self_service_body(&mut self_service.schemas);
    self_service = self_service.api_json_as(body);
    doc.add(
        "/globalpci/v1/selfservicesession/",
        Post,
        created::<SelfServiceCreated>(self_service),
    );
    doc.add(
        "/globalpci/v1/digitalselfservicesession/",
        Post,
        created::<DigitalCreated>(
            Op::new(
                "Start a digital session (SMS link; PaymentData.CustomerPhoneNumber in E.164) → \
                 sessionId, Message",
            )
            .authed("globalpci")
            .api_json::<globalpci::CreateBody>(),
        ),
    );
    doc.add(
        "/globalpci/v1/agentsession/",
        Post,
        created::<AgentCreated>(
            Op::new(
                "Start an agent-assisted session → sessionId, paymentUiUrl, \
                 paymentUiCredentials, Message",
            )
            .authed("globalpci")
            .api_json::<globalpci::CreateBody>(),
        ),
    );
    doc.add(
        "/globalpci/v1/sessions",
        Get,
        Op::new(
            "The client's sessions, newest first, filtered by CallGuid, merchantTxnRef, state \
             and creation time; a page at a time (pass nextCursor as cursor)",
        )
        .authed("globalpci")
        .query::<globalpci::ListQuery>()
        .json_inline::<SessionList>("200", "A page of sessions")
        .shared("400", "BadQueryOrCursor"),
    );
    doc.add(
        "/globalpci/v1/session/{id}",
        Get,
        Op::new("Session state (sessionState) and, once finished, the result")
            .authed("globalpci")
            .path_param("id")
            .json::<Session>("200", "The session")
            .shared("400", "BadPath")
            .shared("404", "NotFound"),
    );
    // A session action's answers: the session, or 404 (no such session for this client), 409
    // (the session is not in a state that allows it), 503 (the gateway is shutting down).
    for (action, summary) in [
        ("cancel", "Cancel a live session (409 if it is not live)"),
        (
            "submit",
            "Send the captured card to the PSP (agent sessions)",
        ),
        (
            "release",
            "Release the session's hold on its call's secure mode once its capture is over \
             (409 while capturing or within the hold-off after the last key)",
        ),
        (
            "reissue",
            "Send a new payment link for a live digital session (the old link stops working)",
        ),
        (
            "recapture",
            "Ask for the card again on the same call after a decline or a failure (agent \
             sessions; 409 attempts_exhausted once the account's payment_attempts are used)",
        ),
    ] {
        doc.add(
            &["/globalpci/v1/session/{id}/", action].concat(),
            Post,
            Op::new(summary)
                .authed("globalpci")
                .path_param("id")
                .json::<Session>("200", "The session")
                .shared("400", "BadPath")
                .shared("404", "NotFound")
                .shared("409", "Conflict")
                .shared("503", "Unavailable"),
        );
    }
    doc.add(
        "/globalpci/v1/session/{id}/messaging",
        Post,
        Op::new(
            "Messaging payloads for a digital session: Genesys button message and Apple \
             ConnectorPaymentRequest (issues a fresh link)",
        )
        .authed("globalpci")
        .path_param("id")
        .api_json::<globalpci::MessagingBody>()
        .json_inline::<Messaging>("200", "The payloads")
        .shared("400", "BadRequestOrPath")
        .shared("404", "NotFound")
        .shared("409", "Conflict"),
    );
    doc.add(
        "/globalpci/v1/applepay/response",
        Post,
        Op::new(
            "Accept a ConnectorPaymentResponse; the session completes only if the PSP confirms \
             the payment",
        )
        .authed("globalpci")
        .api_json::<globalpci::ConnectorPaymentResponse>()
        .json::<Session>("200", "The session")
        .shared("404", "NotFound")
        .shared("409", "Conflict")
        .shared("503", "Unavailable"),
    );
    doc.add(
        "/globalpci/v1/redact",
        Post,
        Op::new("Mask card numbers in free text, keeping the last four")
            .authed("globalpci")
            .api_json::<globalpci::RedactBody>()
            .json_inline::<Redacted>("200", "The text, masked"),
    );

    doc.add(
        "/admin/v1/outbox",
        Get,
        Op::new("The SMS outbox (embedded provider), newest first")
            .authed("admin")
            .query::<admin::Limit>()
            .json_inline::<Outbox>("200", "The list")
            .shared("400", "BadQuery"),
    );
    doc.add(
        "/admin/v1/webhooks",
        Get,
        Op::new("Result webhooks not delivered: pending with their next try, and given up")
            .authed("admin")
            .query::<admin::Limit>()
            .json_inline::<Webhooks>("200", "The list")
            .shared("400", "BadQuery"),
    );
    doc.add(
        "/admin/v1/audit/relay",
        Get,
        Op::new(
            "Relay calls' audit trail: created, read, secured, released, ended (no other query \
             parameter is accepted)",
        )
        .authed("admin")
        .query::<admin::AuditQuery>()
        .json_inline::<RelayAudit>("200", "The list")
        .shared("400", "BadQuery"),
    );

    // The agent payment UI. Its own calls read their body with axum's `Json` (errors in plain
    // text), and check the UI token only after the body was read.
    doc.add(
        "/pay/agent/{id}",
        Get,
        Op::new("Agent payment UI (HTML); ?code= the one-time access code")
            .path_param("id")
            .query::<pages::CodeQuery>()
            .shared("200", "Page")
            .shared("400", "BadQuery")
            .answer(
                "403",
                text("The link is not valid or was used (a page)", "text/html"),
            ),
    );
    doc.add(
        "/pay/agent/{id}/events",
        Get,
        Op::new("Agent payment UI live updates (text/event-stream)")
            .ui_token("uiTokenQuery")
            .path_param("id")
            .answer(
                "200",
                text(
                    "Server-sent events: the session's state, then live updates",
                    "text/event-stream",
                ),
            )
            .shared("400", "BadQuery")
            .shared("401", "Unauthorized"),
    );
    doc.add(
        "/pay/agent/{id}/reset",
        Post,
        Op::new("Agent UI: reset a capture field")
            .ui_token("uiToken")
            .path_param("id")
            .body_of::<pages::ResetBody>("application/json")
            .json_inline::<Reset>("200", "Whether the field was reset")
            .shared("400", "BadRequestPlain")
            .shared("401", "Unauthorized")
            .shared("404", "NotFound")
            .shared("409", "Conflict")
            .shared("413", "PayloadTooLargePlain")
            .shared("415", "UnsupportedMediaTypePlain")
            .shared("422", "UnprocessablePlain")
            .shared("503", "Unavailable"),
    );
    for (action, summary) in [
        ("submit", "Agent UI: submit the payment"),
        (
            "cancel",
            "Agent UI: cancel the payment (as the API's cancel)",
        ),
        (
            "recapture",
            "Agent UI: ask for the card again after a decline or a failure",
        ),
    ] {
        doc.add(
            &["/pay/agent/{id}/", action].concat(),
            Post,
            Op::new(summary)
                .ui_token("uiToken")
                .path_param("id")
                .json::<Session>("200", "The session")
                .shared("400", "BadPath")
                .shared("401", "Unauthorized")
                .shared("404", "NotFound")
                .shared("409", "Conflict")
                .shared("503", "Unavailable"),
        );
    }

    // The hosted payment page.
    let link_unknown = || text("No such payment link (a page)", "text/html");
    let link_gone = || {
        text(
            "The link expired, was used or replaced, or its payment is closed (a page)",
            "text/html",
        )
    };
    doc.add(
        "/pay/link/{token}",
        Get,
        Op::new("Hosted payment page (HTML) for a one-time payment link")
            .path_param("token")
            .shared("200", "Page")
            .shared("400", "BadPath")
            .answer("404", link_unknown())
            .answer("410", link_gone()),
    );
    doc.add(
        "/pay/link/{token}",
        Post,
        Op::new("Hosted payment page form submission: the outcome as a page")
            .path_param("token")
            .body_of::<pages::CardForm>("application/x-www-form-urlencoded")
            .shared("200", "Page")
            .shared("400", "BadPath")
            .answer("404", link_unknown())
            .answer("410", link_gone())
            .shared("413", "PayloadTooLargePlain")
            .shared("415", "UnsupportedMediaTypePlain")
            .answer(
                "422",
                ResponseBuilder::new()
                    .description(
                        "The card was not valid (the form again, with the errors), or the form \
                         could not be read (plain text)",
                    )
                    .content(
                        "text/html",
                        ContentBuilder::new().schema(Some(string())).build(),
                    )
                    .content(
                        "text/plain",
                        ContentBuilder::new().schema(Some(string())).build(),
                    )
                    .build(),
            ),
    );

    doc.add(
        "/pay/link/{token}/return",
        Get,
        Op::new(
            "Hosted payment page: back from a 3-D Secure challenge; the PSP is asked how the \
             payment stands (a page: the result, or the form to try again)",
        )
        .path_param("token")
        .query::<pages::ReturnQuery>()
        .shared("200", "Page")
        .shared("400", "BadQuery")
        .answer("404", link_unknown())
        .answer("410", link_gone()),
    );
    doc.add(
        "/pay/link/{token}/wallet",
        Post,
        Op::new(
            "Hosted payment page: pay with a wallet (Apple Pay, Google Pay) on the PSP's hosted \
             checkout (a page that continues there)",
        )
        .path_param("token")
        .shared("200", "Page")
        .answer("404", link_unknown())
        .answer("410", link_gone()),
    );
    for (path, what) in [
        ("/pay/link/{token}/wallet/done", "paid"),
        ("/pay/link/{token}/wallet/cancel", "backed out"),
    ] {
        doc.add(
            path,
            Get,
            Op::new(&format!(
                "Hosted payment page: back from the PSP's hosted checkout, {what} (a page)"
            ))
            .path_param("token")
            .shared("200", "Page")
            .answer("404", link_unknown())
            .answer("410", link_gone()),
        );
    }
    doc.add(
        "/psp/v1/webhook/{account}",
        Post,
        Op::new(
            "The PSP's signed webhooks for an account (Stripe's event object, Stripe-Signature \
             header); 64 KiB at most",
        )
        .path_param("account")
        .answer(
            "200",
            text("Received (JSON: received, changed)", "application/json"),
        )
        .answer(
            "400",
            text("Unsigned, forged or stale, or not an event", "text/plain"),
        )
        .answer(
            "404",
            text("The account has no PSP webhook secret", "text/plain"),
        )
        .answer("413", text("The body is too large", "text/plain"))
        .answer(
            "503",
            text("Not applied now; the PSP retries", "text/plain"),
        ),
    );
    // The sandbox PSP's stand-ins for a bank's challenge and the PSP's hosted checkout.
    let sandbox_gone = || text("Nothing waits there (a page)", "text/html");
    for (path, what) in [
        ("/sandbox/3ds/{id}", "3-D Secure challenge"),
        ("/sandbox/checkout/{id}", "wallet checkout"),
    ] {
        doc.add(
            path,
            Get,
            Op::new(&format!("Sandbox PSP: the simulated {what} (a page)"))
                .path_param("id")
                .shared("200", "Page")
                .answer("404", sandbox_gone()),
        );
    }
    doc.add(
        "/sandbox/3ds/{id}",
        Post,
        Op::new("Sandbox PSP: approve or fail the challenge; 303 to the return URL")
            .path_param("id")
            .body_of::<pages::ChallengeAnswer>("application/x-www-form-urlencoded")
            .answer("303", text("To the return URL", "text/plain"))
            .answer(
                "400",
                text("Neither approve nor fail (a page)", "text/html"),
            )
            .answer("404", sandbox_gone())
            .shared("415", "UnsupportedMediaTypePlain")
            .shared("422", "UnprocessablePlain"),
    );
    doc.add(
        "/sandbox/checkout/{id}",
        Post,
        Op::new(
            "Sandbox PSP: pay with a wallet (the signed webhook goes to the gateway) or cancel; \
             303 to the success or cancel URL",
        )
        .path_param("id")
        .body_of::<pages::CheckoutAnswer>("application/x-www-form-urlencoded")
        .answer("303", text("To the success or cancel URL", "text/plain"))
        .answer("400", text("No such choice (a page)", "text/html"))
        .answer("404", sandbox_gone())
        .shared("415", "UnsupportedMediaTypePlain")
        .shared("422", "UnprocessablePlain"),
    );

    doc.add(
        "/relay/v1/calls",
        Post,
        Op::new(
            "Set up a relayed call → 201 {id, caller.local, agent.local}; 409 for a call_guid \
             the client already relays; 429 when the client holds relay.max_calls_per_client \
             live calls; 503 when out of ports or calls",
        )
        .authed("relay")
        .api_json::<relay::CreateRequest>()
        .idempotency_key()
        .json_inline::<CallCreated>(
            "201",
            "The call (with an Idempotency-Key used before with this body, the first answer again)",
        )
        .shared("404", "NotFound")
        .shared("409", "Conflict")
        .shared("422", "IdempotencyKeyReused")
        .answer(
            "429",
            error("The client holds as many live calls as relay.max_calls_per_client allows"),
        )
        .answer(
            "503",
            ResponseBuilder::from(error(
                "Out of ports or calls, or the node is draining (error `draining`): try again \
                 (through a load balancer, on another node)",
            ))
            .header("Retry-After", retry_after())
            .build(),
        ),
    );
    doc.add(
        "/relay/v1/calls",
        Get,
        Op::new(
            "List the caller's relayed calls (every call with scope admin; counters, never keys)",
        )
        .authed("relay")
        .json_inline::<Calls>("200", "The calls"),
    );
    doc.add(
        "/relay/v1/calls/{id}",
        Get,
        Op::new("A call's legs and counters (never keys); 404 for another client's call")
            .authed("relay")
            .path_param("id")
            .json::<Call>("200", "The call")
            .shared("400", "BadPath")
            .shared("404", "NotFound"),
    );
    doc.add(
        "/relay/v1/calls/{id}",
        Delete,
        Op::new("End a call and free its ports")
            .authed("relay")
            .path_param("id")
            .answer("204", Response::new("Ended"))
            .shared("400", "BadPath")
            .shared("404", "NotFound")
            .shared("409", "Conflict")
            .shared("503", "Unavailable"),
    );
    doc.add(
        "/relay/v1/calls/{id}/secure",
        Post,
        Op::new(
            "Hold secure mode (masking) on, or release it: 409 with the reason under policy \
             call, while a capture is live, or within the hold-off after a key",
        )
        .authed("relay")
        .path_param("id")
        .api_json::<relay::SecureRequest>()
        .json::<Call>("200", "The call")
        .shared("400", "BadRequestOrPath")
        .shared("404", "NotFound")
        .shared("409", "Conflict")
        .shared("503", "Unavailable"),
    );

    let mut schemas = doc.schemas;
    for (name, schema) in payment_data_schemas() {
        schemas.insert(name.into(), schema.into());
    }
    // Referenced by the shared answers.
    named::<Error>(&mut schemas);
    named::<OAuthError>(&mut schemas);
    let components = security_schemes()
        .into_iter()
        .fold(
            ComponentsBuilder::new()
                .schemas_from_iter(schemas)
                .responses_from_iter(shared_responses()),
            |c, (name, scheme)| c.security_scheme(name, scheme),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("tonegate")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Secure-capture gateway for contact-centre card payments: GlobalPCI session \
                     API, relay control, OAuth2. Paths also work without the trailing slash \
                     shown. Any route can answer 408 (no body) when a request takes longer than \
                     server.request_timeout_s.",
                )),
        )
        .paths(doc.paths)
        .components(Some(components))
        .build()
}
