//! Every route of the gateway as an operation: what it takes, what it answers.

use super::*;

pub(super) fn api() -> OpenApi {
    use crate::api::admin::{Outbox, RelayAudit, Webhooks};
    use crate::api::auth::OAuthError;
    use crate::api::globalpci::{
        AgentCreated, DigitalCreated, Messaging, Redacted, SelfServiceCreated, SessionAnswer,
        SessionList, SessionMessage,
    };
    use crate::api::pages::{AgentAnswer, Reset};
    use crate::api::relay::{Call, CallCreated, Calls};
    use crate::api::{Health, Problem};
    use crate::auth::IssuedToken;
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
    let issued = named::<IssuedToken>(&mut token.schemas);
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
            .json::<SessionAnswer>("200", "The session")
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
        let op = Op::new(summary).authed("globalpci").path_param("id");
        // `submit` answers the session; the others say, too, what they did.
        let op = if action == "submit" {
            op.json::<SessionAnswer>("200", "The session")
        } else {
            op.json::<SessionMessage>("200", "The session, and what was done")
        };
        doc.add(
            &["/globalpci/v1/session/{id}/", action].concat(),
            Post,
            op.shared("400", "BadPath")
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
        .json::<SessionMessage>("200", "The session, and what was done")
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
            .last_event_id()
            .answer(
                "200",
                text(
                    "Server-sent events, each with `id:` its number in the session's log: the \
                     log from the start (or after `Last-Event-ID`), then live updates",
                    "text/event-stream",
                ),
            )
            .answer(
                "204",
                ResponseBuilder::new()
                    .description("Resumed after the last event of a finished session: nothing more will come")
                    .build(),
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
                .json::<AgentAnswer>(
                    "200",
                    "The session, and its outcome in words once it has one",
                )
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
    named::<Problem>(&mut schemas);
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
