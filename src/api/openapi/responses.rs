//! The answers every operation shares (errors, rate limits, timeouts) and the security
//! schemes.

use super::*;

/// A response with a body of `schema` as `content_type`.
pub(super) fn answer(
    description: &str,
    content_type: &str,
    schema: impl Into<RefOr<Schema>>,
) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            content_type,
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// A response with a text body (a page, a stream, plain text).
pub(super) fn text(description: &str, content_type: &str) -> Response {
    answer(description, content_type, string())
}

/// The content type of an `ApiError` (RFC 9457).
pub(super) const PROBLEM: &str = "application/problem+json";

/// An `ApiError` (problem details).
pub(super) fn error(description: &str) -> Response {
    answer(description, PROBLEM, schema_ref("Error"))
}

/// The answers many routes share (`components/responses`): those of the shared extractors
/// (`Authed`, `ApiJson`, axum's `Path`, `Query` and `Json`), of the error types (`ApiError`
/// from `SessionError` and `RelayError`), and of the timeout layer.
pub(super) fn shared_responses() -> Vec<(&'static str, Response)> {
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

pub(super) fn shared(name: &str) -> RefOr<Response> {
    Ref::from_response_name(name).into()
}

pub(super) fn security_schemes() -> Vec<(&'static str, SecurityScheme)> {
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
