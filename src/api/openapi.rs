//! `GET /openapi.json`: the OpenAPI 3.1 description of every route. `tests/openapi.rs` keeps it
//! in step with the router (every documented operation answers; every route is documented).

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

fn op(summary: &str, scope: Option<&str>, body: Option<Value>, ok: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            ok: { "description": "Success" },
            "400": { "$ref": "#/components/responses/Error" },
            "401": { "$ref": "#/components/responses/Error" },
            "403": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" },
        }
    });
    if let Some(s) = scope {
        o["security"] = json!([{ "oauth2": [s] }]);
    }
    if let Some(b) = body {
        o["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": b } } });
    }
    o
}

fn id_param(name: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// The whole document.
pub fn document() -> Value {
    let session_create = json!({
        "type": "object",
        "required": ["AccountConfigurationId"],
        "properties": {
            "AccountConfigurationId": { "type": "string" },
            "CallGuid": { "type": "string", "description": "The call's id (voice sessions; required for self-service)." },
            "PaymentData": { "$ref": "#/components/schemas/PaymentData" }
        }
    });
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, method: &str, mut o: Value, params: Option<Value>| {
        if let Some(p) = params {
            o["parameters"] = p;
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[method] = o;
    };
    add("/healthz", "get", op("Liveness", None, None, "200"), None);
    add(
        "/metrics",
        "get",
        op(
            "Prometheus metrics (counts only, never card data)",
            None,
            None,
            "200",
        ),
        None,
    );
    add(
        "/openapi.json",
        "get",
        op("This document", None, None, "200"),
        None,
    );
    let mut token = op(
        "OAuth2 client credentials (RFC 6749 §4.4); client in the body or HTTP Basic",
        None,
        None,
        "200",
    );
    token["requestBody"] = json!({ "required": true, "content": { "application/x-www-form-urlencoded": { "schema": {
        "type": "object", "required": ["grant_type"],
        "properties": { "grant_type": { "const": "client_credentials" }, "scope": { "type": "string" },
                        "client_id": { "type": "string" }, "client_secret": { "type": "string" } } } } } });
    add("/auth/connect/token", "post", token, None);
    add(
        "/globalpci/v1/selfservicesession/",
        "post",
        op("Start an IVR self-service session → sessionId, dtmfFallbackNumber, dtmfLinkId, Message", Some("globalpci"), Some(session_create.clone()), "200"),
        None,
    );
    add(
        "/globalpci/v1/digitalselfservicesession/",
        "post",
        op("Start a digital session (SMS link; PaymentData.CustomerPhoneNumber in E.164) → sessionId, Message", Some("globalpci"), Some(session_create.clone()), "200"),
        None,
    );
    add(
        "/globalpci/v1/agentsession/",
        "post",
        op("Start an agent-assisted session → sessionId, paymentUiUrl, paymentUiCredentials, Message", Some("globalpci"), Some(session_create), "200"),
        None,
    );
    add(
        "/globalpci/v1/session/{id}",
        "get",
        op(
            "Session state (sessionState) and, once finished, the result",
            Some("globalpci"),
            None,
            "200",
        ),
        Some(id_param("id")),
    );
    add(
        "/globalpci/v1/session/{id}/cancel",
        "post",
        op(
            "Cancel a live session (409 if it is not live)",
            Some("globalpci"),
            None,
            "200",
        ),
        Some(id_param("id")),
    );
    add(
        "/globalpci/v1/session/{id}/submit",
        "post",
        op(
            "Send the captured card to the PSP (agent sessions)",
            Some("globalpci"),
            None,
            "200",
        ),
        Some(id_param("id")),
    );
    add(
        "/globalpci/v1/session/{id}/release",
        "post",
        op(
            "Release the session's hold on its call's secure mode once its capture is over \
             (409 while capturing or within the hold-off after the last key)",
            Some("globalpci"),
            None,
            "200",
        ),
        Some(id_param("id")),
    );
    add(
        "/globalpci/v1/session/{id}/reissue",
        "post",
        op(
            "Send a new payment link for a live digital session (the old link stops working)",
            Some("globalpci"),
            None,
            "200",
        ),
        Some(id_param("id")),
    );
    add(
        "/globalpci/v1/session/{id}/messaging",
        "post",
        op(
            "Messaging payloads for a digital session: Genesys button message and Apple ConnectorPaymentRequest (issues a fresh link); body {conversationId?, channelType?}",
            Some("globalpci"),
            None,
            "200",
        ),
        Some(id_param("id")),
    );
    add(
        "/globalpci/v1/applepay/response",
        "post",
        op(
            "Accept a ConnectorPaymentResponse; the session completes only if the PSP confirms the payment",
            Some("globalpci"),
            Some(json!({ "type": "object", "required": ["type", "status", "requestIdentifier"], "properties": {
                "type": { "const": "ConnectorPaymentResponse" }, "status": { "type": "boolean" }, "requestIdentifier": { "type": "string" } } })),
            "200",
        ),
        None,
    );
    add(
        "/admin/v1/outbox",
        "get",
        op(
            "The SMS outbox (embedded provider), newest first",
            Some("admin"),
            None,
            "200",
        ),
        None,
    );
    add(
        "/admin/v1/webhooks",
        "get",
        op(
            "Result webhooks not delivered: pending with their next try, and given up (?limit=)",
            Some("admin"),
            None,
            "200",
        ),
        None,
    );
    add(
        "/admin/v1/audit/relay",
        "get",
        op(
            "Relay calls' audit trail: created, read, secured, released, ended (?call=, ?limit=)",
            Some("admin"),
            None,
            "200",
        ),
        None,
    );
    let page_op = |s: &str| op(s, None, None, "200");
    add(
        "/pay/agent/{id}",
        "get",
        page_op("Agent payment UI (HTML); ?code= the one-time access code"),
        Some(id_param("id")),
    );
    add(
        "/pay/agent/{id}/events",
        "get",
        page_op("Agent payment UI live updates (text/event-stream); ?token= the UI token"),
        Some(id_param("id")),
    );
    add(
        "/pay/agent/{id}/reset",
        "post",
        page_op("Agent UI: reset a capture field (Bearer UI token)"),
        Some(id_param("id")),
    );
    add(
        "/pay/agent/{id}/submit",
        "post",
        page_op("Agent UI: submit the payment (Bearer UI token)"),
        Some(id_param("id")),
    );
    add(
        "/pay/link/{token}",
        "get",
        page_op("Hosted payment page (HTML) for a one-time payment link"),
        Some(id_param("token")),
    );
    add(
        "/pay/link/{token}",
        "post",
        page_op("Hosted payment page form submission (form-encoded)"),
        Some(id_param("token")),
    );
    add(
        "/globalpci/v1/redact",
        "post",
        op(
            "Mask card numbers in free text, keeping the last four",
            Some("globalpci"),
            Some(
                json!({ "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } }),
            ),
            "200",
        ),
        None,
    );
    let new_call = json!({
        "type": "object", "required": ["call_guid", "codec", "caller", "agent"],
        "properties": {
            "call_guid": { "type": "string" },
            "codec": { "enum": ["PCMU", "PCMA"] },
            "telephone_event_pt": { "type": ["integer", "null"], "minimum": 96, "maximum": 127 },
            "caller": { "type": "object", "properties": { "remote": { "type": ["string", "null"], "description": "ip:port (exactly), ip (that host, any port), ip:lo-hi (a port range), or null to learn it from the first packet" } } },
            "agent": { "type": "object", "properties": { "remote": { "type": ["string", "null"] } } },
            "rtcp_mux": { "type": "boolean" },
            "ipv6": { "type": "boolean" },
            "account": { "type": "string", "description": "AccountConfigurationId the call belongs to (sets its dtmf_masking policy)" }
        }
    });
    add(
        "/relay/v1/calls",
        "post",
        op(
            "Set up a relayed call → 201 {id, caller.local, agent.local}; 409 for a call_guid \
             already relayed; 503 when out of ports",
            Some("relay"),
            Some(new_call),
            "201",
        ),
        None,
    );
    add(
        "/relay/v1/calls",
        "get",
        op(
            "List the caller's relayed calls (every call with scope admin; counters, never keys)",
            Some("relay"),
            None,
            "200",
        ),
        None,
    );
    add(
        "/relay/v1/calls/{id}",
        "get",
        op(
            "A call's legs and counters (never keys); 404 for another client's call",
            Some("relay"),
            None,
            "200",
        ),
        Some(id_param("id")),
    );
    add(
        "/relay/v1/calls/{id}",
        "delete",
        op("End a call and free its ports", Some("relay"), None, "204"),
        Some(id_param("id")),
    );
    add(
        "/relay/v1/calls/{id}/secure",
        "post",
        op(
            "Hold secure mode (masking) on, or release it: 409 with the reason under policy \
             call, while a capture is live, or within the hold-off after a key",
            Some("relay"),
            Some(
                json!({ "type": "object", "required": ["enabled"], "properties": { "enabled": { "type": "boolean" } } }),
            ),
            "200",
        ),
        Some(id_param("id")),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tonegate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Secure-capture gateway for contact-centre card payments: GlobalPCI session API, relay control, OAuth2. Paths also work without the trailing slash shown."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "oauth2": { "type": "oauth2", "flows": { "clientCredentials": {
                    "tokenUrl": "/auth/connect/token",
                    "scopes": { "globalpci": "GlobalPCI sessions", "relay": "Relay control", "admin": "Operator routes" } } } }
            },
            "schemas": {
                "PaymentData": {
                    "type": "object",
                    "description": "Non-sensitive payment data. Seed keys as written; unknown keys are kept as metadata. Values are strings, numbers or booleans.",
                    "properties": {
                        "cardholderName": { "type": "string" },
                        "cardholderPostCode": { "type": "string" },
                        "cardholder Address": { "type": "string" },
                        "merchantTxnRef": { "type": "string" },
                        "amount": { "type": "string", "examples": ["124.99"] },
                        "currency": { "type": "string", "examples": ["GBP"] },
                        "CustomerPhoneNumber": { "type": "string", "examples": ["+447700900123"] }
                    },
                    "additionalProperties": { "type": ["string", "number", "boolean"] }
                },
                "Error": { "type": "object", "properties": { "error": { "type": "string" }, "message": { "type": "string" } } }
            },
            "responses": {
                "Error": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        }
    })
}
