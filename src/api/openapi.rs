//! `GET /openapi.json`: the OpenAPI 3.1 description of every route. `tests/openapi.rs` keeps it
//! in step with the router (every documented operation answers; every route is documented), and
//! `tests/schemathesis.rs` fuzzes a live gateway against it: every status code, content type,
//! header and input constraint the gateway enforces is stated here.
//!
//! Hand-written rather than derived (utoipa) for now: most answers come from shared extractors
//! and error types whose statuses a derive would not see.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

/// A reference to a shared response in `components/responses`.
fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// A success answer with a JSON body.
fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// An answer with a body of `content_type` (a page, a stream, plain text).
fn ok_text(description: &str, content_type: &str) -> Value {
    json!({ "description": description, "content": { content_type: { "schema": { "type": "string" } } } })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An operation: `summary`, the OAuth2 `scope` it needs (401 without a valid token, 403 without
/// the scope), its JSON `body` schema (read by `ApiJson`: JSON errors for a malformed or
/// mistyped body, 400, an oversized one, 413, or a wrong content type, 415), and its
/// `responses` besides those that follow from the body and scope. Every route can answer 408
/// when a request outlives `server.request_timeout_s`.
fn op(summary: &str, scope: Option<&str>, body: Option<Value>, responses: Value) -> Value {
    let mut rs: Map<String, Value> = responses.as_object().cloned().unwrap_or_default();
    rs.entry("408").or_insert_with(|| r("Timeout"));
    if body.is_some() {
        rs.entry("400").or_insert_with(|| r("BadRequest"));
        rs.entry("413").or_insert_with(|| r("PayloadTooLarge"));
        rs.entry("415").or_insert_with(|| r("UnsupportedMediaType"));
    }
    let mut o = json!({ "summary": summary });
    if let Some(s) = scope {
        o["security"] = json!([{ "oauth2": [s] }]);
        rs.entry("401").or_insert_with(|| r("Unauthorized"));
        rs.entry("403").or_insert_with(|| r("Forbidden"));
    }
    if let Some(b) = body {
        o["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": b } } });
    }
    o["responses"] = Value::Object(rs);
    o
}

/// A path parameter. Its value must be UTF-8 once percent-decoded, or the router answers 400 in
/// plain text (see `BadPath`).
fn id_param(name: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// Unicode `White_Space` (what Rust's `str::trim` removes), as a regular-expression class: a
/// value that must not be blank matches `NOT_BLANK`.
const NOT_BLANK: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// A relay leg's `remote` (see `parse_remote` in `relay.rs`): `ip:port`, `[ipv6]:port`, `ip`,
/// `[ipv6]`, or `ip:lo-hi` / `[ipv6]:lo-hi` with 1 ≤ lo ≤ hi.
fn remote_pattern() -> String {
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let v4 = format!("{octet}(\\.{octet}){{3}}");
    let h = "[0-9a-fA-F]{1,4}";
    let v6 = format!(
        "(({h}:){{7}}{h}|({h}:){{1,7}}:|({h}:){{1,6}}:{h}|({h}:){{1,5}}(:{h}){{1,2}}|({h}:){{1,4}}(:{h}){{1,3}}|({h}:){{1,3}}(:{h}){{1,4}}|({h}:){{1,2}}(:{h}){{1,5}}|{h}:(:{h}){{1,6}}|:((:{h}){{1,7}}|:))"
    );
    let port =
        "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)";
    let nz_port =
        "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
    let host = format!("({v4}|\\[{v6}\\])");
    format!("^({v4}|{v6}|\\[{v6}\\]|{host}:{port}|{host}:{nz_port}-{nz_port})$")
}

/// The whole document.
pub fn document() -> Value {
    let not_blank = NOT_BLANK;
    let session_create = json!({
        "type": "object",
        "required": ["AccountConfigurationId"],
        "properties": {
            "AccountConfigurationId": {
                "type": "string", "pattern": not_blank, "minLength": 1,
                "description": "A configured account this client may use (400 unknown_account otherwise, 403 account_not_allowed); not blank."
            },
            "CallGuid": {
                "type": ["string", "null"], "maxLength": 128,
                "description": "The call's id (voice sessions; required, not blank, for self-service): at most 128 characters once trimmed."
            },
            "PaymentData": { "anyOf": [schema("PaymentData"), { "type": "null" }] }
        }
    });
    let self_service_create = {
        let mut s = session_create.clone();
        s["required"] = json!(["AccountConfigurationId", "CallGuid"]);
        s["properties"]["CallGuid"] = json!({
            "type": "string", "pattern": not_blank, "minLength": 1, "maxLength": 128,
            "description": "The call's id: not blank, at most 128 characters once trimmed."
        });
        s
    };
    // A session operation's answers: the session, or 404 (no such session for this client),
    // 409 (the session is not in a state that allows it), 503 (the gateway is shutting down).
    let session_answers = |ok: Value| json!({ "200": ok, "400": r("BadPath"), "404": r("NotFound"), "409": r("Conflict"), "503": r("Unavailable") });
    let created = |extra: Value| {
        let mut s = json!({ "type": "object", "required": ["sessionId", "Message"], "properties": {
            "sessionId": { "type": "string" }, "Message": { "type": "string" } } });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            s["properties"][&k] = v;
            s["required"].as_array_mut().unwrap().push(json!(k));
        }
        json!({
            "200": ok_json("The session (a new one, or the live one for this call: Message says which)", s),
            "403": r("Forbidden"),
            "409": r("Conflict"),
            "503": r("Unavailable"),
        })
    };
    let mut paths = Map::new();
    let mut add = |path: &str, method: &str, mut o: Value, params: Option<Value>| {
        if let Some(p) = params {
            o["parameters"] = p;
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[method] = o;
    };
    add(
        "/healthz",
        "get",
        op(
            "Liveness",
            None,
            None,
            json!({ "200": ok_json("Alive", json!({ "type": "object", "required": ["status", "version"],
                "properties": { "status": { "const": "ok" }, "version": { "type": "string" } } })) }),
        ),
        None,
    );
    add(
        "/metrics",
        "get",
        op(
            "Prometheus metrics (counts only, never card data)",
            None,
            None,
            json!({ "200": ok_text("Prometheus text exposition format 0.0.4", "text/plain") }),
        ),
        None,
    );
    add(
        "/openapi.json",
        "get",
        op(
            "This document",
            None,
            None,
            json!({ "200": ok_json("OpenAPI 3.1", json!({ "type": "object" })) }),
        ),
        None,
    );
    let mut token = op(
        "OAuth2 client credentials (RFC 6749 §4.4); client in the body or HTTP Basic. A body with \
         no Content-Type at all is read as a form too; any other content type is 400.",
        None,
        None,
        json!({
            "200": {
                "description": "A bearer token",
                "headers": { "Cache-Control": { "$ref": "#/components/headers/NoStore" } },
                "content": { "application/json": { "schema": schema("Token") } }
            },
            "400": {
                "description": "invalid_request, invalid_scope or unsupported_grant_type (RFC 6749 §5.2); a body that is not UTF-8 in plain text",
                "content": { "application/json": { "schema": schema("OAuthError") }, "text/plain": { "schema": { "type": "string" } } }
            },
            "401": {
                "description": "invalid_client",
                "headers": { "WWW-Authenticate": { "schema": { "type": "string" } } },
                "content": { "application/json": { "schema": schema("OAuthError") } }
            },
            "413": r("PayloadTooLargePlain"),
            "429": {
                "description": "Too many failed token requests from this address or for this client",
                "headers": { "Retry-After": { "$ref": "#/components/headers/RetryAfter" } },
                "content": { "application/json": { "schema": schema("OAuthError") } }
            },
            "503": {
                "description": "Every secret-check slot stayed busy",
                "headers": { "Retry-After": { "$ref": "#/components/headers/RetryAfter" } },
                "content": { "application/json": { "schema": schema("OAuthError") } }
            }
        }),
    );
    token["requestBody"] = json!({ "required": true, "content": { "application/x-www-form-urlencoded": { "schema": {
        "type": "object", "required": ["grant_type"],
        "properties": { "grant_type": { "const": "client_credentials" }, "scope": { "type": "string" },
                        "client_id": { "type": "string" }, "client_secret": { "type": "string" } } } } } });
    add("/auth/connect/token", "post", token, None);
    add(
        "/globalpci/v1/selfservicesession/",
        "post",
        op(
            "Start an IVR self-service session → sessionId, dtmfFallbackNumber, dtmfLinkId, Message",
            Some("globalpci"),
            Some(self_service_create),
            created(json!({ "dtmfFallbackNumber": { "type": "string" }, "dtmfLinkId": { "type": ["string", "null"] } })),
        ),
        None,
    );
    add(
        "/globalpci/v1/digitalselfservicesession/",
        "post",
        op(
            "Start a digital session (SMS link; PaymentData.CustomerPhoneNumber in E.164) → sessionId, Message",
            Some("globalpci"),
            Some(session_create.clone()),
            created(json!({})),
        ),
        None,
    );
    add(
        "/globalpci/v1/agentsession/",
        "post",
        op(
            "Start an agent-assisted session → sessionId, paymentUiUrl, paymentUiCredentials, Message",
            Some("globalpci"),
            Some(session_create),
            created(json!({
                "paymentUiUrl": { "type": "string" },
                "paymentUiCredentials": { "type": "object", "required": ["sessionId", "accessCode"],
                    "properties": { "sessionId": { "type": "string" }, "accessCode": { "type": "string" } } }
            })),
        ),
        None,
    );
    add(
        "/globalpci/v1/session/{id}",
        "get",
        op(
            "Session state (sessionState) and, once finished, the result",
            Some("globalpci"),
            None,
            json!({ "200": ok_json("The session", schema("Session")), "400": r("BadPath"), "404": r("NotFound") }),
        ),
        Some(id_param("id")),
    );
    for (path, summary) in [
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
    ] {
        add(
            &["/globalpci/v1/session/{id}/", path].concat(),
            "post",
            op(
                summary,
                Some("globalpci"),
                None,
                session_answers(ok_json("The session", schema("Session"))),
            ),
            Some(id_param("id")),
        );
    }
    add(
        "/globalpci/v1/session/{id}/messaging",
        "post",
        op(
            "Messaging payloads for a digital session: Genesys button message and Apple ConnectorPaymentRequest (issues a fresh link)",
            Some("globalpci"),
            Some(json!({ "type": "object", "properties": {
                "conversationId": { "type": ["string", "null"] }, "channelType": { "type": ["string", "null"] } } })),
            json!({
                "200": ok_json("The payloads", json!({ "type": "object",
                    "required": ["sessionId", "paymentUrl", "genesys", "appleBusinessChat"],
                    "properties": { "sessionId": { "type": "string" }, "paymentUrl": { "type": "string" },
                        "genesys": { "type": "object" }, "appleBusinessChat": { "type": "array" } } })),
                "400": r("BadRequestOrPath"),
                "404": r("NotFound"),
                "409": r("Conflict"),
            }),
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
            json!({
                "200": ok_json("The session", schema("Session")),
                "404": r("NotFound"),
                "409": r("Conflict"),
                "503": r("Unavailable"),
            }),
        ),
        None,
    );
    let limit = json!({ "name": "limit", "in": "query", "required": false,
        "description": "Most entries (default 100, at most 1000 are returned)",
        "schema": { "type": "integer", "minimum": 0, "maximum": u64::MAX } });
    for (path, summary, key, params) in [
        (
            "/admin/v1/outbox",
            "The SMS outbox (embedded provider), newest first",
            "messages",
            json!([limit]),
        ),
        (
            "/admin/v1/webhooks",
            "Result webhooks not delivered: pending with their next try, and given up",
            "webhooks",
            json!([limit]),
        ),
        (
            "/admin/v1/audit/relay",
            "Relay calls' audit trail: created, read, secured, released, ended (no other query parameter is accepted)",
            "records",
            json!([{ "name": "call", "in": "query", "required": false, "description": "One call's records only",
                     "schema": { "type": "string" } }, limit]),
        ),
    ] {
        add(
            path,
            "get",
            op(
                summary,
                Some("admin"),
                None,
                json!({
                    "200": ok_json("The list", json!({ "type": "object", "required": [key],
                        "properties": { key: { "type": "array" } } })),
                    "400": r("BadQuery"),
                }),
            ),
            Some(params),
        );
    }
    let ui_token = json!([{ "uiToken": [] }]);
    let mut agent_page = op(
        "Agent payment UI (HTML); ?code= the one-time access code",
        None,
        None,
        json!({
            "200": r("Page"),
            "400": r("BadQuery"),
            "403": { "description": "The link is not valid or was used (a page)", "content": { "text/html": { "schema": { "type": "string" } } } },
        }),
    );
    agent_page["parameters"] = json!([{ "name": "code", "in": "query", "required": false, "schema": { "type": "string" } }]);
    add("/pay/agent/{id}", "get", agent_page, Some(id_param("id")));
    let mut events = op(
        "Agent payment UI live updates (text/event-stream)",
        None,
        None,
        json!({
            "200": ok_text("Server-sent events: the session's state, then live updates", "text/event-stream"),
            "400": r("BadQuery"),
            "401": r("Unauthorized"),
        }),
    );
    events["security"] = json!([{ "uiTokenQuery": [] }]);
    add(
        "/pay/agent/{id}/events",
        "get",
        events,
        Some(id_param("id")),
    );
    // The agent UI's own calls read their body with axum's `Json` (errors in plain text), and
    // check the UI token only after the body was read.
    let mut reset = op(
        "Agent UI: reset a capture field",
        None,
        None,
        json!({
            "200": ok_json("Whether the field was reset", json!({ "type": "object", "required": ["reset", "field"],
                "properties": { "reset": { "type": "boolean" }, "field": { "type": "string" } } })),
            "400": r("BadRequestPlain"),
            "401": r("Unauthorized"),
            "404": r("NotFound"),
            "409": r("Conflict"),
            "413": r("PayloadTooLargePlain"),
            "415": r("UnsupportedMediaTypePlain"),
            "422": r("UnprocessablePlain"),
            "503": r("Unavailable"),
        }),
    );
    reset["security"] = ui_token.clone();
    reset["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "required": ["field"], "properties": { "field": { "enum": ["pan", "expiry", "cvv", "postcode"] } } } } } });
    add("/pay/agent/{id}/reset", "post", reset, Some(id_param("id")));
    let mut agent_submit = op(
        "Agent UI: submit the payment",
        None,
        None,
        json!({
            "200": ok_json("The session", schema("Session")),
            "400": r("BadPath"),
            "401": r("Unauthorized"),
            "404": r("NotFound"),
            "409": r("Conflict"),
            "503": r("Unavailable"),
        }),
    );
    agent_submit["security"] = ui_token;
    add(
        "/pay/agent/{id}/submit",
        "post",
        agent_submit,
        Some(id_param("id")),
    );
    let link_gone = json!({ "description": "The link expired, was used or replaced, or its payment is closed (a page)",
        "content": { "text/html": { "schema": { "type": "string" } } } });
    let link_unknown = json!({ "description": "No such payment link (a page)",
        "content": { "text/html": { "schema": { "type": "string" } } } });
    add(
        "/pay/link/{token}",
        "get",
        op(
            "Hosted payment page (HTML) for a one-time payment link",
            None,
            None,
            json!({ "200": r("Page"), "400": r("BadPath"), "404": link_unknown.clone(), "410": link_gone.clone() }),
        ),
        Some(id_param("token")),
    );
    let mut link_pay = op(
        "Hosted payment page form submission: the outcome as a page",
        None,
        None,
        json!({
            "200": r("Page"),
            "400": r("BadPath"),
            "404": link_unknown,
            "410": link_gone,
            "413": r("PayloadTooLargePlain"),
            "415": r("UnsupportedMediaTypePlain"),
            "422": { "description": "The card was not valid (the form again, with the errors), or the form could not be read (plain text)",
                "content": { "text/html": { "schema": { "type": "string" } }, "text/plain": { "schema": { "type": "string" } } } },
        }),
    );
    link_pay["requestBody"] = json!({ "required": true, "content": { "application/x-www-form-urlencoded": { "schema": {
        "type": "object", "properties": { "number": { "type": "string" }, "expiry": { "type": "string" },
            "cvc": { "type": "string" }, "postcode": { "type": "string" } } } } } });
    add(
        "/pay/link/{token}",
        "post",
        link_pay,
        Some(id_param("token")),
    );
    add(
        "/globalpci/v1/redact",
        "post",
        op(
            "Mask card numbers in free text, keeping the last four",
            Some("globalpci"),
            Some(
                json!({ "type": "object", "required": ["text"], "additionalProperties": false,
                "properties": { "text": { "type": "string" } } }),
            ),
            json!({ "200": ok_json("The text, masked", json!({ "type": "object", "required": ["text"],
                "properties": { "text": { "type": "string" } } })) }),
        ),
        None,
    );
    let leg = json!({ "type": "object", "additionalProperties": false, "properties": { "remote": {
        "anyOf": [{ "type": "string", "pattern": remote_pattern() }, { "type": "null" }],
        "description": "ip:port (exactly), ip (that host, any port), ip:lo-hi (a port range, 1 ≤ lo ≤ hi; IPv6 in brackets), or null to learn it from the first packet" } } });
    let new_call = json!({
        "type": "object", "required": ["call_guid", "codec", "caller", "agent"], "additionalProperties": false,
        "properties": {
            "call_guid": { "type": "string", "pattern": not_blank, "minLength": 1, "maxLength": 128,
                "description": "The platform's call id: not blank, at most 128 characters; one live call per call_guid and client" },
            "codec": { "type": "string", "pattern": "^[Pp][Cc][Mm][AaUu]$", "description": "PCMU or PCMA (any case)" },
            "telephone_event_pt": { "type": ["integer", "null"], "minimum": 96, "maximum": 127 },
            "caller": leg.clone(),
            "agent": leg,
            "rtcp_mux": { "type": "boolean" },
            "ipv6": { "type": "boolean" },
            "account": { "type": ["string", "null"], "description": "AccountConfigurationId the call belongs to (sets its dtmf_masking policy); 400 unless a configured account this client may use" }
        }
    });
    add(
        "/relay/v1/calls",
        "post",
        op(
            "Set up a relayed call → 201 {id, caller.local, agent.local}; 409 for a call_guid \
             already relayed; 503 when out of ports or calls",
            Some("relay"),
            Some(new_call),
            json!({
                "201": ok_json("The call", json!({ "type": "object",
                    "required": ["id", "call_guid", "secure", "dtmf_masking", "caller", "agent"],
                    "properties": { "id": { "type": "string" }, "call_guid": { "type": "string" },
                        "secure": { "type": "boolean" }, "dtmf_masking": { "enum": ["call", "session"] },
                        "caller": schema("LocalLeg"), "agent": schema("LocalLeg") } })),
                "409": r("Conflict"),
                "503": r("Unavailable"),
            }),
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
            json!({ "200": ok_json("The calls", json!({ "type": "object", "required": ["calls"],
                "properties": { "calls": { "type": "array", "items": schema("Call") } } })) }),
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
            json!({ "200": ok_json("The call", schema("Call")), "400": r("BadPath"), "404": r("NotFound") }),
        ),
        Some(id_param("id")),
    );
    add(
        "/relay/v1/calls/{id}",
        "delete",
        op(
            "End a call and free its ports",
            Some("relay"),
            None,
            json!({ "204": { "description": "Ended" }, "400": r("BadPath"), "404": r("NotFound"),
                    "409": r("Conflict"), "503": r("Unavailable") }),
        ),
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
                json!({ "type": "object", "required": ["enabled"], "additionalProperties": false,
                "properties": { "enabled": { "type": "boolean" } } }),
            ),
            json!({ "200": ok_json("The call", schema("Call")), "400": r("BadRequestOrPath"),
                    "404": r("NotFound"), "409": r("Conflict"), "503": r("Unavailable") }),
        ),
        Some(id_param("id")),
    );
    let error = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": schema("Error") } } });
    let plain = |description: &str| json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } });
    let json_or_plain = |description: &str| {
        json!({ "description": description, "content": {
            "application/json": { "schema": schema("Error") }, "text/plain": { "schema": { "type": "string" } } } })
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tonegate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Secure-capture gateway for contact-centre card payments: GlobalPCI session API, relay control, OAuth2. Paths also work without the trailing slash shown. Any route can answer 408 (no body) when a request takes longer than server.request_timeout_s."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "oauth2": { "type": "oauth2", "flows": { "clientCredentials": {
                    "tokenUrl": "/auth/connect/token",
                    "scopes": { "globalpci": "GlobalPCI sessions", "relay": "Relay control", "admin": "Operator routes" } } } },
                "uiToken": { "type": "http", "scheme": "bearer", "description": "The agent payment UI's token (in the page it serves)" },
                "uiTokenQuery": { "type": "apiKey", "in": "query", "name": "token", "description": "The agent payment UI's token" }
            },
            "headers": {
                "RetryAfter": { "required": true, "description": "Whole seconds to wait", "schema": { "type": "string", "pattern": "^[1-9][0-9]*$" } },
                "NoStore": { "required": true, "schema": { "const": "no-store" } }
            },
            "schemas": {
                "PaymentData": {
                    "type": "object",
                    "description": "Non-sensitive payment data. Seed keys as written; unknown keys are kept as metadata. Values are strings (at most 1024 bytes of UTF-8), numbers, booleans or null; at most 64 keys, each 1-64 bytes. The account's mandatory keys must be present and not blank.",
                    "maxProperties": 64,
                    "propertyNames": { "minLength": 1, "maxLength": 64 },
                    "properties": {
                        "cardholderName": schema("PaymentValue"),
                        "cardholderPostCode": schema("PaymentValue"),
                        "cardholder Address": schema("PaymentValue"),
                        "merchantTxnRef": schema("PaymentValue"),
                        "amount": { "$ref": "#/components/schemas/PaymentValue", "examples": ["124.99"] },
                        "currency": { "$ref": "#/components/schemas/PaymentValue", "examples": ["GBP"] },
                        "CustomerPhoneNumber": { "$ref": "#/components/schemas/PaymentValue", "examples": ["+447700900123"] }
                    },
                    "additionalProperties": schema("PaymentValue")
                },
                "PaymentValue": {
                    "description": "A PaymentData value: a string of at most 1024 bytes (UTF-8), a number, a boolean or null",
                    "anyOf": [{ "type": "string", "maxLength": 1024 }, { "type": ["number", "boolean", "null"] }]
                },
                "Session": {
                    "type": "object",
                    "description": "A session's state and, once finished, its result (no card data)",
                    "required": ["sessionId", "sessionState", "sessionType", "accountConfigurationId", "currency", "createdAt", "expiresAt"],
                    "properties": {
                        "sessionId": { "type": "string" }, "sessionState": { "type": "string" },
                        "sessionType": { "type": "string" }, "accountConfigurationId": { "type": "string" },
                        "currency": { "type": "string" }, "createdAt": { "type": "integer" }, "expiresAt": { "type": "integer" },
                        "amount": { "type": "string" }, "merchantTxnRef": schema("PaymentValue"), "CallGuid": { "type": "string" },
                        "Message": { "type": "string" }
                    }
                },
                "LocalLeg": { "type": "object", "required": ["local"], "properties": { "local": { "type": "string" } } },
                "Call": {
                    "type": "object",
                    "description": "A relayed call: its legs and counters, never keys",
                    "required": ["id", "call_guid", "codec", "secure", "dtmf_masking", "caller", "agent", "rtcp_mux", "created_at", "counters"],
                    "properties": {
                        "id": { "type": "string" }, "call_guid": { "type": "string" }, "codec": { "enum": ["PCMU", "PCMA"] },
                        "secure": { "type": "boolean" }, "dtmf_masking": { "enum": ["call", "session"] },
                        "account": { "type": ["string", "null"] },
                        "caller": schema("LocalLeg"), "agent": schema("LocalLeg"),
                        "rtcp_mux": { "type": "boolean" }, "created_at": { "type": "integer" }, "counters": { "type": "object" }
                    }
                },
                "Token": {
                    "type": "object", "required": ["access_token", "token_type", "expires_in", "scope"],
                    "properties": { "access_token": { "type": "string" }, "token_type": { "const": "Bearer" },
                        "expires_in": { "type": "integer" }, "scope": { "type": "string" } }
                },
                "OAuthError": {
                    "type": "object", "required": ["error", "error_description"],
                    "properties": { "error": { "type": "string" }, "error_description": { "type": "string" } }
                },
                "Error": {
                    "type": "object", "required": ["error", "message"],
                    "properties": { "error": { "type": "string" }, "message": { "type": "string" } }
                }
            },
            "responses": {
                "BadRequest": error("The request is invalid: the message says how"),
                "BadPath": plain("The path is not UTF-8 once percent-decoded"),
                "BadQuery": plain("The query string could not be read (a value of the wrong type, or a parameter not accepted)"),
                "BadRequestOrPath": json_or_plain("The request is invalid (JSON: the message says how), or the path is not UTF-8 (plain text)"),
                "BadRequestPlain": plain("Malformed JSON, or a path that is not UTF-8"),
                "Unauthorized": {
                    "description": "The token is missing, invalid or expired",
                    "headers": { "WWW-Authenticate": { "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": schema("Error") } }
                },
                "Forbidden": error("The token lacks the scope (insufficient_scope), or the client may not use the account"),
                "NotFound": error("No such resource for this client"),
                "Conflict": error("The resource is not in a state that allows this: the message says why"),
                "Timeout": { "description": "The request took longer than server.request_timeout_s (no body)" },
                "PayloadTooLarge": error("The body is larger than server.max_body_bytes"),
                "PayloadTooLargePlain": plain("The body is larger than the route accepts"),
                "UnsupportedMediaType": error("The body is not sent as Content-Type: application/json"),
                "UnsupportedMediaTypePlain": plain("The body is not sent with the content type the route reads"),
                "UnprocessablePlain": plain("The JSON body does not match the schema"),
                "Unavailable": error("The gateway cannot do it now (out of relay ports or calls, or shutting down)"),
                "Page": ok_text("A page", "text/html")
            }
        }
    })
}
