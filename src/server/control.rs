//! The local control socket `tonegate ctl` talks to, the drain it can start, and systemd's
//! notifications (readiness, watchdog, stopping).
//!
//! The socket is a Unix socket (`server.control_socket`, mode 0660): who may open it may
//! operate the gateway, so its file permissions (and its directory's) are the access control,
//! and the peer's uid, read from the kernel (`SO_PEERCRED`), is the actor in the audit trail.
//! No token to hand out or leak, and nothing reachable from the network. Its routes are
//! operator commands, not the integrators' HTTP API, so they are not in `/openapi.json`.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::api::{ApiError, ApiJson, AppState};
use crate::relay::{Access, CallInfo};

/// Changes the log filter at run time (installed by `serve` once logging is set up); the
/// error says why a filter was refused.
pub type FilterSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static LOG_FILTER: OnceLock<FilterSetter> = OnceLock::new();

/// Lets `tonegate ctl log-level` change the running log filter through `set`.
pub fn install_log_filter(set: FilterSetter) {
    let _ = LOG_FILTER.set(set);
}

/// Tells systemd (where it started us with `Type=notify`) something; a no-op elsewhere.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Every listener is bound: systemd may consider the service started. Also starts the
/// watchdog pings when the unit asks for them (`WatchdogSec=`): they come from the runtime
/// that serves requests, so a wedged runtime stops them and systemd restarts the service.
pub fn ready() {
    notify(&[sd_notify::NotifyState::Ready]);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        // Twice per period, as sd_watchdog_enabled(3) advises.
        let every = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// The gateway is stopping (a drain or a shutdown began).
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// Who started a drain, and when it must end.
#[derive(Clone)]
pub struct Drain {
    started: Arc<watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            started: Arc::new(watch::channel(false).0),
        }
    }
}

impl Drain {
    /// Starts the drain: the relay refuses new calls, `/healthz` answers 503 `draining`,
    /// systemd hears STOPPING=1. Live calls carry on.
    pub fn start(&self, state: &AppState) {
        state.relay.start_draining();
        if !self.started.send_replace(true) {
            stopping();
            tracing::warn!(
                calls = state.relay.totals().calls_active,
                deadline_s = state.config.server.drain_calls_s,
                "draining: no new calls; the gateway stops when the last call ends"
            );
        }
    }

    /// Completes once a drain has started and then every relay call has ended, or
    /// `server.drain_calls_s` has passed since it started.
    pub async fn finished(self, state: AppState) {
        let mut started = self.started.subscribe();
        let _ = started.wait_for(|s| *s).await;
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(state.config.server.drain_calls_s);
        // What stopping takes once the drain ends, and a margin: systemd's stop timeout is
        // pushed that far ahead at every tick, so TimeoutStopSec= need not cover the drain.
        let s = &state.config.server;
        let after = Duration::from_secs(s.drain_timeout_s + s.payment_drain_s + 15);
        let after_us = u32::try_from(after.as_micros()).unwrap_or(u32::MAX);
        // Calls end on their own (BYE, media timeout, an operator): a count once a second is
        // all this needs.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(after_us)]);
                    if state.relay.totals().calls_active == 0 {
                        tracing::info!("drained: no calls left");
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        calls = state.relay.totals().calls_active,
                        "drain deadline (server.drain_calls_s) reached with calls still live: stopping"
                    );
                    return;
                }
            }
        }
    }
}

/// Binds the control socket at `path` with mode 0660. A socket file left by a gateway that
/// died is replaced; one a live gateway answers on is an error, as is any other file there.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "control socket {}: a file that is not a socket is in the way",
            path.display()
        );
        anyhow::ensure!(
            std::os::unix::net::UnixStream::connect(path).is_err(),
            "control socket {}: another gateway is listening on it",
            path.display()
        );
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the control socket's mode ({})", path.display()))?;
    Ok(listener)
}

/// Serves the control routes on `listener` until shutdown begins, then removes the socket.
pub fn spawn(
    listener: UnixListener,
    path: PathBuf,
    state: AppState,
    drain: Drain,
    certificate: Option<Arc<super::tls::Certificate>>,
) -> tokio::task::JoinHandle<()> {
    let app = routes(state.clone(), drain, certificate);
    let mut stopped = state.shutdown.subscribe();
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::pin!(stop);
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a control connection failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = &mut stop => break,
            };
            let peer = Peer {
                uid: stream.peer_cred().map(|c| c.uid()).ok(),
            };
            tracing::debug!(actor = %peer.actor(), "control connection");
            let svc =
                hyper_util::service::TowerToHyperService::new(app.clone().layer(Extension(peer)));
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, svc)
                    .await;
            });
        }
        let _ = std::fs::remove_file(&path);
    })
}

/// Who is on the other end of a control connection.
#[derive(Clone, Copy)]
struct Peer {
    uid: Option<u32>,
}

impl Peer {
    /// The actor named in the audit trail.
    fn actor(self) -> String {
        match self.uid {
            Some(uid) => format!("ctl:uid={uid}"),
            None => "ctl".into(),
        }
    }
}

#[derive(Clone)]
struct Control {
    app: AppState,
    drain: Drain,
    node: Arc<str>,
    certificate: Option<Arc<super::tls::Certificate>>,
}

fn routes(
    app: AppState,
    drain: Drain,
    certificate: Option<Arc<super::tls::Certificate>>,
) -> axum::Router {
    let node: Arc<str> = app.config.cluster.node.as_str().into();
    Router::new()
        .route("/v1/calls", get(list))
        .route("/v1/calls/{id}", get(show).delete(terminate))
        .route("/v1/totals", get(totals))
        .route("/v1/max-calls", post(max_calls))
        .route("/v1/drain", post(drain_now))
        .route("/v1/log-level", post(log_level))
        .route("/v1/reload-tls", post(reload_tls))
        .fallback(|| async { ApiError::not_found("control command") })
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .with_state(Control {
            app,
            drain,
            node,
            certificate,
        })
}

/// A call as `ctl list` shows it: who, how old, where, and its packet counts and loss.
fn summary(c: &Control, info: &CallInfo, owner: Option<String>) -> serde_json::Value {
    let k = &info.counters;
    let received = k.caller_rtp_in + k.agent_rtp_in;
    let lost = k.caller_rtp_lost + k.agent_rtp_lost;
    let expected = received + lost;
    json!({
        "id": info.id,
        "call_guid": info.call_guid,
        "owner": owner,
        "account": info.account,
        "node": &*c.node,
        "age_s": c.app.clock.unix_now().saturating_sub(info.created_at),
        "secure": info.secure,
        "codec": info.codec,
        "packets_in": received,
        "packets_out": k.caller_rtp_out + k.agent_rtp_out,
        "packets_lost": lost,
        "loss_percent": if expected == 0 { 0.0 } else { lost as f64 * 100.0 / expected as f64 },
    })
}

async fn list(
    State(c): State<Control>,
    Extension(peer): Extension<Peer>,
) -> Json<serde_json::Value> {
    let actor = peer.actor();
    let calls: Vec<_> = c
        .app
        .relay
        .list(Access::Admin(&actor))
        .iter()
        .map(|i| summary(&c, i, c.app.relay.owner(&i.id)))
        .collect();
    Json(json!({ "calls": calls }))
}

async fn show(
    State(c): State<Control>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = peer.actor();
    let info = c
        .app
        .relay
        .get(&id, Access::Admin(&actor))
        .ok_or_else(|| ApiError::not_found("call"))?;
    let mut v = summary(&c, &info, c.app.relay.owner(&id));
    v["dtmf_masking"] = json!(info.dtmf_masking);
    v["caller"] = json!(info.caller);
    v["agent"] = json!(info.agent);
    v["counters"] = json!(info.counters);
    Ok(Json(v))
}

async fn terminate(
    State(c): State<Control>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let closing = c.app.relay.delete(&id, Access::Admin(&peer.actor()))?;
    tracing::warn!(call = %id, actor = %peer.actor(), "call terminated by an operator");
    // As the relay API does: answer once the ports are free again, bounded.
    let _ = closing.closed(Duration::from_secs(2)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn totals(State(c): State<Control>) -> Json<serde_json::Value> {
    let t = c.app.relay.totals();
    Json(json!({
        "node": &*c.node,
        "engine": t.engine,
        "calls_active": t.calls_active,
        "max_calls": c.app.relay.max_calls(),
        "draining": c.app.relay.is_draining(),
        "calls_created": t.calls_created,
        "calls_refused": t.calls_refused,
        "calls_timed_out": t.calls_timed_out,
        "call_faults": t.call_faults,
        "counters": t.counters,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxCalls {
    max_calls: usize,
}

async fn max_calls(
    State(c): State<Control>,
    Extension(peer): Extension<Peer>,
    ApiJson(m): ApiJson<MaxCalls>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.app.relay.set_max_calls(m.max_calls)?;
    tracing::warn!(max_calls = m.max_calls, actor = %peer.actor(), "call limit changed by an operator");
    Ok(Json(json!({ "max_calls": m.max_calls })))
}

async fn drain_now(
    State(c): State<Control>,
    Extension(peer): Extension<Peer>,
) -> impl IntoResponse {
    tracing::warn!(actor = %peer.actor(), "drain started by an operator");
    c.drain.start(&c.app);
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "draining": true,
            "calls_active": c.app.relay.totals().calls_active,
            "deadline_s": c.app.config.server.drain_calls_s,
        })),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevel {
    level: String,
}

async fn log_level(
    Extension(peer): Extension<Peer>,
    ApiJson(l): ApiJson<LogLevel>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let set = LOG_FILTER.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this gateway's log filter cannot be changed at run time",
        )
    })?;
    if l.level.len() > 512 {
        return Err(ApiError::bad_request(
            "a log filter has at most 512 characters",
        ));
    }
    set(&l.level).map_err(ApiError::bad_request)?;
    tracing::warn!(level = %l.level, actor = %peer.actor(), "log filter changed by an operator");
    Ok(Json(json!({ "level": l.level })))
}

/// As SIGHUP does: reads the TLS certificate and key files again.
async fn reload_tls(
    State(c): State<Control>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let certificate = c.certificate.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this gateway has no [server.tls] to reload",
        )
    })?;
    tracing::warn!(actor = %peer.actor(), "TLS reload asked by an operator");
    let l = super::reload_certificate(certificate, &c.node).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tls_not_reloaded",
            format!("still serving the certificate loaded before: {e:#}"),
        )
    })?;
    Ok(Json(
        json!({ "subject": l.subject, "not_after": l.not_after }),
    ))
}
