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
//! - Answers are derived too: each handler returns a struct (`Serialize` + `ToSchema`) that
//!   sits beside it (`SessionAnswer`, `SessionMessage`, `AgentAnswer`, `Health`, the problem
//!   `Problem`, …), so what is documented is what is sent. A session in any of them is the
//!   session crate's `SessionView`, the one the result webhook and the agent stream send.
//!   `auth::IssuedToken` derives its own; `relay::CallInfo` has a mirror beside the relay
//!   handlers (the relay crate does not depend on utoipa). schemathesis checks every answer
//!   the gateway gives against these schemas.
//! - Operations are built with utoipa's builders by [`Op`], not with `#[utoipa::path]`: most of
//!   an operation's answers come from the shared extractors it uses — `Authed` (401, 403),
//!   `ApiJson` (400, 413, 415) — and the timeout layer (408), which an attribute on the handler
//!   would not see; `Op` adds them when the operation says it uses that extractor, as the
//!   hand-written document did. (`#[utoipa::path]` would also have to sit on stand-in
//!   functions: several handlers are closures registered in a loop, each under two paths.)
//! - The shared answers (`components/responses`), the security schemes, `PaymentData` (a
//!   free-form map that `PaymentData::from_value` checks) and the result webhook's body
//!   (`webhooks`: the `SessionView` inside a `WebhookEvent`, its fields stated flat) are built
//!   here.
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
pub(super) const OPERATIONS: &[(&str, &str, &str, &str)] = &[
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
pub(super) const TAGS: &[(&str, &str)] = &[
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
pub(super) fn name_operations(doc: &mut Value) {
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
pub(super) fn webhooks() -> Value {
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
pub(super) const REQUIRED_HEADERS: [&str; 2] = ["Retry-After", "Cache-Control"];

pub(super) fn require_headers(doc: &mut Value) {
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
pub(super) type Schemas = BTreeMap<String, RefOr<Schema>>;

/// `PaymentData` and its values, as `PaymentData::from_value` (session/payment_data.rs) checks
/// them: a map, not a type with fields.
pub(super) fn payment_data_schemas() -> [(&'static str, Schema); 2] {
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
pub(super) fn self_service_body(schemas: &mut Schemas) -> RefOr<Schema> {
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
pub(super) fn inline<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let mut refs = Vec::new();
    T::schemas(&mut refs);
    schemas.extend(refs);
    T::schema()
}

/// A reference to `T`, whose schema (and those it refers to) go into `schemas`.
pub(super) fn named<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let schema = inline::<T>(schemas);
    schemas.insert(T::name().into_owned(), schema);
    schema_ref(&T::name())
}

mod operations;
mod paths;
mod responses;

use operations::{Doc, Op};
use paths::api;
use responses::*;
