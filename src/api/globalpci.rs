//! The GlobalPCI session API (design.md contract 5), field names exactly as the seed documents
//! write them; bearer token with scope `globalpci`. Every path works with and without a
//! trailing slash.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, AppState, Authed};
use crate::auth::{Principal, Scope};
use crate::session::model::{Session, SessionKind, SessionState};
use crate::session::{PaymentData, SessionError};
use tonegate_session::view::SessionView;

pub(super) fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for (path, kind) in [
        ("/globalpci/v1/selfservicesession", SessionKind::SelfService),
        (
            "/globalpci/v1/digitalselfservicesession",
            SessionKind::Digital,
        ),
        ("/globalpci/v1/agentsession", SessionKind::Agent),
    ] {
        let handler = move |state: State<AppState>,
                            auth: Authed,
                            headers: HeaderMap,
                            body: ApiJson<CreateBody>| {
            create(state, auth, headers, body, kind)
        };
        r = r
            .route(path, post(handler))
            .route(&format!("{path}/"), post(handler));
    }
    r.route("/globalpci/v1/sessions", get(list))
        .route("/globalpci/v1/sessions/", get(list))
        .route("/globalpci/v1/session/{id}", get(show))
        .route("/globalpci/v1/session/{id}/", get(show))
        .route("/globalpci/v1/session/{id}/cancel", post(cancel))
        .route("/globalpci/v1/session/{id}/cancel/", post(cancel))
        .route("/globalpci/v1/session/{id}/submit", post(submit))
        .route("/globalpci/v1/session/{id}/submit/", post(submit))
        .route("/globalpci/v1/session/{id}/release", post(release))
        .route("/globalpci/v1/session/{id}/release/", post(release))
        .route("/globalpci/v1/session/{id}/recapture", post(recapture))
        .route("/globalpci/v1/session/{id}/recapture/", post(recapture))
        .route("/globalpci/v1/session/{id}/reissue", post(reissue))
        .route("/globalpci/v1/session/{id}/reissue/", post(reissue))
        .route("/globalpci/v1/session/{id}/messaging", post(messaging))
        .route("/globalpci/v1/applepay/response", post(apple_response))
        .route("/globalpci/v1/redact", post(redact))
        .route("/globalpci/v1/redact/", post(redact))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RedactBody {
    /// Free text (a transcript, a note).
    text: String,
}

/// Masks card numbers in free text (chat transcripts, notes), keeping the last four.
async fn redact(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(body): ApiJson<RedactBody>,
) -> Result<Json<Redacted>, ApiError> {
    client(&state, auth)?;
    // Linear, but a full body is milliseconds of work: off the async workers.
    let text =
        tokio::task::spawn_blocking(move || crate::card::redact::redact_card_numbers(&body.text))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "redaction failed",
                )
            })?;
    Ok(Json(Redacted { text }))
}

/// `redact`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Redacted {
    /// The text with every card number masked but its last four.
    text: String,
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let msg = e.to_string();
        match e {
            // An account that does not exist is not found; one that exists but is not this
            // client's is forbidden (clients are configured by the operator, who knows both).
            SessionError::UnknownAccount(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_account", msg)
                    .field("AccountConfigurationId")
            }
            SessionError::AccountNotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "account_not_allowed", msg)
                    .field("AccountConfigurationId")
            }
            SessionError::MissingField(f) => {
                ApiError::new(StatusCode::BAD_REQUEST, "missing_field", msg).field(f)
            }
            SessionError::InvalidField(f, _) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", msg).field(f)
            }
            SessionError::NotFound => ApiError::not_found("session"),
            SessionError::WrongState { .. } | SessionError::Illegal(_) => {
                ApiError::new(StatusCode::CONFLICT, "wrong_state", msg)
            }
            SessionError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            SessionError::AttemptsExhausted { .. } => {
                ApiError::new(StatusCode::CONFLICT, "attempts_exhausted", msg)
            }
            SessionError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", msg)
            }
            SessionError::NodeUnavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_unavailable", msg)
            }
            SessionError::Store(e) => {
                tracing::error!(error = %e, "session store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the session store failed",
                )
            }
        }
    }
}

// The body of the three session-creating routes. Its schema (doc comments are its descriptions)
// also states what `create` checks after reading it: the account is required and not blank;
// `openapi.rs` adds that a self-service session needs a `CallGuid`.
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateBody {
    /// A configured account this client may use (404 unknown_account otherwise, 403
    /// account_not_allowed); not blank.
    #[serde(rename = "AccountConfigurationId")]
    #[schema(
        value_type = String,
        min_length = 1,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    account: Option<String>,
    /// The call's id (voice sessions; required, not blank, for self-service): at most 128
    /// characters once trimmed.
    #[serde(rename = "CallGuid")]
    #[schema(max_length = 128)]
    call_guid: Option<String>,
    // Read by `PaymentData::from_value`: its schema is built in `openapi.rs`.
    #[serde(rename = "PaymentData")]
    #[schema(schema_with = super::field_schema::payment_data_field)]
    payment_data: Option<Value>,
}

/// The principal, with its client record.
fn client(state: &AppState, auth: Authed) -> Result<(Principal, crate::auth::Client), ApiError> {
    let p = auth.require(Scope::Globalpci)?;
    let c = state
        .authority
        .client(&p.client_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "client no longer exists",
            )
        })?;
    Ok((p, c))
}

async fn create(
    State(state): State<AppState>,
    auth: Authed,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
    kind: SessionKind,
) -> Result<axum::response::Response, ApiError> {
    let (_, client) = client(&state, auth)?;
    let claim = super::idempotency::claim(&state, &headers, &client.id, kind.as_str())?;
    let request_hash = super::idempotency::request_hash(&json!({
        "AccountConfigurationId": body.account,
        "CallGuid": body.call_guid,
        "PaymentData": body.payment_data,
    }));
    if let Some(c) = &claim {
        if let Some(answer) = c.replay(&state, &request_hash)? {
            let mut r = Json(answer).into_response();
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(r);
        }
    }
    let account = body
        .account
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| {
            ApiError::from(SessionError::MissingField("AccountConfigurationId".into()))
        })?;
    let call_guid = body
        .call_guid
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty());
    if kind == SessionKind::SelfService && call_guid.is_none() {
        return Err(SessionError::MissingField("CallGuid".into()).into());
    }
    // Characters, as the message and the schema's maxLength say (not bytes of UTF-8).
    if call_guid.as_ref().is_some_and(|g| g.chars().count() > 128) {
        return Err(SessionError::InvalidField(
            "CallGuid".into(),
            "longer than 128 characters".into(),
        )
        .into());
    }
    let data = PaymentData::from_value(body.payment_data).map_err(SessionError::from)?;
    let created = state
        .sessions
        .create(kind, &client, &account, call_guid, data)
        .await?;
    let s = &created.session;
    let message = if created.existing {
        "Existing session returned"
    } else {
        "Session created"
    };
    let session_id = &s.id;
    let out = match kind {
        SessionKind::SelfService => serde_json::to_value(SelfServiceCreated {
            session_id,
            message,
            dtmf_fallback_number: state
                .config
                .account(&s.account_id)
                .map(|a| a.dtmf_fallback_number.as_str())
                .unwrap_or_default(),
            dtmf_link_id: s.dtmf_link_id.as_deref(),
        }),
        SessionKind::Agent => serde_json::to_value(AgentCreated {
            session_id,
            message,
            payment_ui_url: format!("{}/pay/agent/{}", state.config.public_url(), s.id),
            payment_ui_credentials: UiCredentials {
                session_id,
                access_code: created.ui_secret.as_deref(),
            },
        }),
        SessionKind::Digital => serde_json::to_value(DigitalCreated {
            session_id,
            message,
        }),
    }
    .expect("a created session's answer serializes");
    // A `Value`: the same answer is kept, sealed, for an idempotent replay.
    if let Some(c) = &claim {
        c.keep(&state, &request_hash, &s.id, &out);
    }
    Ok((StatusCode::OK, Json(out)).into_response())
}

/// A self-service session's `create` answer.
#[derive(Serialize, ToSchema)]
pub(super) struct SelfServiceCreated<'a> {
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    /// `Session created`, or `Existing session returned` (the live one for this call).
    #[serde(rename = "Message")]
    message: &'a str,
    /// The number a caller rings to key the card (the account's `dtmf_fallback_number`).
    #[serde(rename = "dtmfFallbackNumber")]
    dtmf_fallback_number: &'a str,
    /// The short id a caller keys there to find this session.
    #[serde(rename = "dtmfLinkId")]
    #[schema(required)]
    dtmf_link_id: Option<&'a str>,
}

/// A digital session's `create` answer.
#[derive(Serialize, ToSchema)]
pub(super) struct DigitalCreated<'a> {
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    #[serde(rename = "Message")]
    message: &'a str,
}

/// An agent session's `create` answer.
#[derive(Serialize, ToSchema)]
pub(super) struct AgentCreated<'a> {
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    #[serde(rename = "Message")]
    message: &'a str,
    /// The agent's payment screen.
    #[serde(rename = "paymentUiUrl")]
    payment_ui_url: String,
    #[serde(rename = "paymentUiCredentials")]
    #[schema(inline)]
    payment_ui_credentials: UiCredentials<'a>,
}

/// What opens the agent's payment screen once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UiCredentials<'a> {
    session_id: &'a str,
    #[schema(value_type = String)]
    access_code: Option<&'a str>,
}

/// The query of `GET /globalpci/v1/sessions` (doc comments are the parameters' descriptions).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Sessions for this call
    #[serde(rename = "CallGuid")]
    call_guid: Option<String>,
    /// Sessions with this merchant reference
    #[serde(rename = "merchantTxnRef")]
    merchant_txn_ref: Option<String>,
    /// Sessions in this state
    state: Option<SessionState>,
    /// Created at or after (Unix seconds)
    #[serde(rename = "createdFrom")]
    #[param(value_type = Option<u64>, format = "uint64", maximum = 9007199254740991_u64)]
    created_from: Option<u64>,
    /// Created before (Unix seconds)
    #[serde(rename = "createdTo")]
    #[param(value_type = Option<u64>, format = "uint64", maximum = 9007199254740991_u64)]
    created_to: Option<u64>,
    /// Most sessions per page (1-100, default 20)
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u8>,
    /// `nextCursor` of the previous page: the creation time and id of its last session (any
    /// such position is a valid starting point)
    #[param(pattern = r"^[0-9]{1,18}\.[0-9A-Za-z-]{1,64}$")]
    cursor: Option<String>,
}

/// The most sessions one page holds.
const MAX_PAGE: usize = 100;
/// The largest time filter (2^53 - 1: what any JSON client reads exactly).
const MAX_TIME: u64 = 9_007_199_254_740_991;

/// A client's own sessions, newest first, filtered; a page at a time (`nextCursor` while
/// there are more).
async fn list(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<ListQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let (p, _) = client(&state, auth)?;
    let limit = usize::from(q.limit.unwrap_or(20));
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-100").field("limit"));
    }
    // Times as the schema states them: JSON's exact integers.
    for (name, t) in [("createdFrom", q.created_from), ("createdTo", q.created_to)] {
        if t.is_some_and(|t| t > MAX_TIME) {
            return Err(
                ApiError::bad_request(format!("{name} must be at most {MAX_TIME}")).field(name),
            );
        }
    }
    // A keyset position, not a secret: "<createdAt>.<sessionId>" of the previous page's last.
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(
            c.split_once('.')
                .filter(|(t, id)| {
                    (1..=18).contains(&t.len())
                        && (1..=64).contains(&id.len())
                        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .and_then(|(t, id)| Some((t.parse::<u64>().ok()?, id.to_string())))
                .ok_or_else(|| {
                    ApiError::bad_request("cursor must be a nextCursor: <createdAt>.<sessionId>")
                        .field("cursor")
                })?,
        ),
    };
    // Stored ids and references have card-number-like runs masked: so are the filters.
    let redact = |v: &Option<String>| {
        v.as_deref()
            .map(|s| crate::card::redact::redact_card_numbers(s.trim()))
    };
    let filter = crate::session::store::SessionFilter {
        call_guid: redact(&q.call_guid),
        merchant_txn_ref: redact(&q.merchant_txn_ref),
        state: q.state,
        created_from: q.created_from,
        created_to: q.created_to,
        after,
        limit: limit + 1,
    };
    let mut found = state
        .sessions
        .store()
        .list(&p.client_id, &filter)
        .map_err(SessionError::from)?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next_cursor = match (more, found.last()) {
        (true, Some(last)) => Some(format!("{}.{}", last.created_at, last.id)),
        _ => None,
    };
    let sessions = found.into_iter().map(SessionAnswer::from).collect();
    Ok(Json(SessionList {
        sessions,
        next_cursor,
    }))
}

/// `list`'s answer: a page of sessions.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionList {
    sessions: Vec<SessionAnswer>,
    /// Where the next page starts (absent on the last page)
    #[serde(rename = "nextCursor", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    next_cursor: Option<String>,
}

/// A session as the API answers it: its [`SessionView`] (what the webhook and the agent's
/// screen show too) and what only its client sees.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(description = "A session's state and, once finished, its result (no card data)")]
pub(in crate::api) struct SessionAnswer {
    #[serde(flatten)]
    view: SessionView,
    account_configuration_id: String,
    /// Unix seconds.
    created_at: u64,
    /// Unix seconds after which a live session expires.
    expires_at: u64,
    /// The call's id (voice sessions).
    #[serde(rename = "CallGuid", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    call_guid: Option<String>,
}

impl From<Session> for SessionAnswer {
    fn from(s: Session) -> SessionAnswer {
        SessionAnswer {
            view: SessionView::of(&s),
            account_configuration_id: s.account_id,
            created_at: s.created_at,
            expires_at: s.expires_at,
            call_guid: s.call_guid,
        }
    }
}

impl SessionAnswer {
    /// With what the action did, in words.
    fn said(self, message: &'static str) -> SessionMessage {
        SessionMessage {
            session: self,
            message,
            released_calls: None,
        }
    }
}

/// The answer of an action on a session: the session and what the action did.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionMessage {
    #[serde(flatten)]
    session: SessionAnswer,
    /// What the action did, in words.
    #[serde(rename = "Message")]
    message: &'static str,
    /// The relay calls the session released (`release` only)
    #[serde(rename = "releasedCalls", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>)]
    released_calls: Option<Vec<String>>,
}

async fn show(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<SessionAnswer>, ApiError> {
    let (p, _) = client(&state, auth)?;
    let s = state.sessions.get(&p.client_id, &id)?;
    Ok(Json(SessionAnswer::from(s)))
}

async fn cancel(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<SessionMessage>, ApiError> {
    let (p, _) = client(&state, auth)?;
    let s = state.sessions.cancel(&p.client_id, &id).await?;
    Ok(Json(SessionAnswer::from(s).said("Session cancelled")))
}

/// Releases the session's hold on its call's secure mode (after its capture is over).
async fn release(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<SessionMessage>, ApiError> {
    let (p, _) = client(&state, auth)?;
    let calls = state.sessions.release(&p.client_id, &id).await?;
    let s = state.sessions.get(&p.client_id, &id)?;
    let mut answer = SessionAnswer::from(s).said(if calls.is_empty() {
        "Session held no call"
    } else {
        "Session released its call"
    });
    answer.released_calls = Some(calls);
    Ok(Json(answer))
}

async fn submit(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<SessionAnswer>, ApiError> {
    let (p, _) = client(&state, auth)?;
    // Ownership first: another client's session is 404, not 409.
    state.sessions.get(&p.client_id, &id)?;
    let s = state
        .sessions
        .submit(&id, &format!("client:{}", p.client_id))
        .await?;
    Ok(Json(SessionAnswer::from(s)))
}

/// Asks for the card again on the same call after a decline or a failure (agent sessions),
/// while the account's `payment_attempts` last.
async fn recapture(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<SessionMessage>, ApiError> {
    let (p, _) = client(&state, auth)?;
    let s = state
        .sessions
        .recapture(&p.client_id, &id, &format!("client:{}", p.client_id))
        .await?;
    Ok(Json(SessionAnswer::from(s).said("Capture restarted")))
}

async fn reissue(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<SessionMessage>, ApiError> {
    let (p, _) = client(&state, auth)?;
    let s = state.sessions.reissue_link(&p.client_id, &id).await?;
    Ok(Json(SessionAnswer::from(s).said("New payment link sent")))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessagingBody {
    conversation_id: Option<String>,
    channel_type: Option<String>,
}

/// Payloads that offer a digital session's payment inside a messaging conversation: a
/// Genesys Cloud message with a button attachment (seed 000), and an Apple Messages for
/// Business `BusinessChatMessage` + `ConnectorPaymentRequest` (seed 003) whose
/// `requestIdentifier` is the session id. Each call issues a fresh link; earlier ones stop.
async fn messaging(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<MessagingBody>,
) -> Result<Json<Messaging>, ApiError> {
    let (p, _) = client(&state, auth)?;
    let (s, url) = state.sessions.new_link(&p.client_id, &id)?;
    let account = state
        .config
        .account(&s.account_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("account"))?;
    let amount = s
        .amount()
        .map(|a| a.decimal().to_string())
        .unwrap_or_else(|| "0".into());
    let label = if account.name.is_empty() {
        "Payment".to_string()
    } else {
        account.name.clone()
    };
    let reference = s.merchant_txn_ref.clone().unwrap_or_else(|| s.id.clone());
    let mut genesys = json!({
        "type": "chat",
        "channelType": b.channel_type.unwrap_or_else(|| "webchat".into()),
        "body": {
            "text": format!("Please complete your payment of {amount} {} for {reference} using the secure link below.", s.currency),
            "attachments": [{ "type": "button", "title": "Complete Payment Securely", "url": url }]
        }
    });
    if let Some(c) = b.conversation_id {
        genesys["conversationId"] = json!(c);
    }
    let apple = vec![
        json!({ "type": "BusinessChatMessage", "receivedMessage": { "style": "icon", "title": label, "subtitle": format!("Pay {amount} {}", s.currency) } }),
        json!({ "type": "ConnectorPaymentRequest", "requestIdentifier": s.id, "apple": { "data": { "version": "1.0", "requestIdentifier": s.id, "payment": {
            "paymentRequest": {
                "applePay": {
                    "merchantIdentifier": account.apple_merchant_identifier,
                    "merchantCapabilities": ["supports3DS", "supportsCredit", "supportsDebit"],
                    "supportedNetworks": ["amex", "visa", "mastercard", "discover", "jcb"]
                },
                "lineItems": [{ "label": reference, "amount": amount, "type": "final" }],
                "total": { "label": label, "amount": amount, "type": "final" },
                "currencyCode": s.currency,
                "requiredBillingContactFields": ["postalAddress"]
            },
            "endpoints": { "fallbackUrl": url }
        } } } }),
    ];
    Ok(Json(Messaging {
        session_id: s.id,
        payment_url: url,
        genesys,
        apple_business_chat: apple,
    }))
}

/// `messaging`'s answer. The payloads are the platforms' own formats, passed on as they are.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Messaging {
    session_id: String,
    /// The fresh payment link.
    payment_url: String,
    /// A Genesys Cloud message with a button attachment
    #[schema(value_type = Object)]
    genesys: Value,
    /// Apple Messages for Business: a BusinessChatMessage and a ConnectorPaymentRequest
    apple_business_chat: Vec<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConnectorPaymentResponse {
    /// `ConnectorPaymentResponse` (400 otherwise).
    #[serde(rename = "type")]
    #[schema(schema_with = super::field_schema::connector_payment_response)]
    kind: String,
    status: bool,
    request_identifier: String,
}

/// A `ConnectorPaymentResponse` from the messaging platform. The session changes only after
/// the PSP confirms a successful payment of the session's amount: the response alone proves
/// nothing.
async fn apple_response(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(r): ApiJson<ConnectorPaymentResponse>,
) -> Result<Json<SessionMessage>, ApiError> {
    let (p, _) = client(&state, auth)?;
    if r.kind != "ConnectorPaymentResponse" {
        return Err(ApiError::bad_request(
            "type must be ConnectorPaymentResponse",
        ));
    }
    let s = state.sessions.get(&p.client_id, &r.request_identifier)?;
    if !r.status {
        return Ok(Json(
            SessionAnswer::from(s).said("The customer did not complete the payment"),
        ));
    }
    let s = state
        .sessions
        .confirm_external_payment(&s.id, "apple-pay")
        .await?;
    Ok(Json(
        SessionAnswer::from(s).said("Payment confirmed with the PSP"),
    ))
}
