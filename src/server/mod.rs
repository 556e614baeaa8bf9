//! The running gateway: binds the HTTP listener and serves until asked to stop.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::api::AppState;
use crate::auth::{Authority, Client, Secret};
use crate::config::Config;
use std::collections::HashMap;

use crate::config::PspKind;
use crate::psp::sandbox::SandboxPsp;
use crate::psp::stripe::StripePsp;
use crate::psp::Psp;
use crate::relay::Relay;
use crate::session::store::{PgStore, SqliteStore};
use crate::session::Sessions;

pub mod control;
mod idle;
pub mod per_address;
pub mod table;
pub mod tls;
pub use idle::IdleIo;

/// Serves the gateway on the configured address as the process signals direct (see
/// [`Signals`]): SIGTERM drains, a second SIGTERM or SIGINT stops at once, SIGHUP reloads the
/// TLS certificate.
pub async fn serve(config: Config, signals: Signals) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding HTTP listener on {}", config.server.listen))?;
    let state = build_state(with_public_url(&listener, config)?)?;
    run(listener, state, std::future::pending(), Some(signals)).await
}

/// Serves on an already bound listener until `shutdown` completes (tests bind port 0 and
/// read the address back).
pub async fn serve_on(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = build_state(with_public_url(&listener, config)?)?;
    serve_state(listener, state, shutdown).await
}

/// `config` with its public URL defaulted to where `listener` listens.
fn with_public_url(listener: &TcpListener, mut config: Config) -> anyhow::Result<Config> {
    if config.server.public_url.is_none() {
        // Links point where the server actually listens (the configured port may be 0).
        let addr = listener.local_addr().context("reading listener address")?;
        config.server.public_url = Some(format!("{}://{addr}", config.server.scheme()));
    }
    Ok(config)
}

/// Serves prepared state on a bound listener until `shutdown` completes, then drains
/// in-flight requests and returns (in-process tests keep a handle on the state).
pub async fn serve_state(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run(listener, state, shutdown, None).await
}

/// Serves until `shutdown` completes, a drain ends, or `signals` say stop.
async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    signals: Option<Signals>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading listener address")?;
    let relay = state.relay.clone();
    state.sessions.start().context("starting sessions")?;
    let ng_task = match (&state.ng, state.config.ng.listen) {
        (Some(ng), Some(at)) => {
            let socket = tokio::net::UdpSocket::bind(at)
                .await
                .with_context(|| format!("binding the ng listener on {at}"))?;
            tracing::info!(addr = %socket.local_addr().unwrap_or(at), "ng control protocol listening (udp)");
            Some(tokio::spawn(crate::ng::listen(socket, ng.clone())))
        }
        _ => None,
    };
    let sip_task = match (&state.sip, state.config.sip.listen) {
        (Some(sip), Some(at)) => {
            let (udp, tcp) = crate::sip::bind(at)
                .await
                .with_context(|| format!("binding the SIP listener on {at}"))?;
            tracing::info!(addr = %udp.local_addr().unwrap_or(at), "SIP (the fallback number) listening (udp, tcp)");
            let sip_tls = match state.config.sip.tls_listen {
                Some(at) => {
                    let files = (state.config.sip.tls.as_ref())
                        .or(state.config.server.tls.as_ref())
                        .context("sip.tls_listen without a certificate")?;
                    let (acceptor, _) = tls::acceptor(files)?;
                    let l = TcpListener::bind(at)
                        .await
                        .with_context(|| format!("binding the SIP TLS listener on {at}"))?;
                    tracing::info!(addr = %l.local_addr().unwrap_or(at), "SIP (the fallback number) listening (tls)");
                    Some((l, acceptor))
                }
                None => None,
            };
            Some(tokio::spawn(sip.clone().run(udp, tcp, sip_tls)))
        }
        _ => None,
    };
    let (tls, certificate) = match &state.config.server.tls {
        Some(t) => {
            let (acceptor, certificate) = tls::acceptor(t)?;
            (Some(acceptor), Some(certificate))
        }
        None => (None, None),
    };
    let scheme = state.config.server.scheme();
    let node = &state.config.cluster.node;
    tracing::info!(%addr, %node, public_url = %state.config.public_url(), "tonegate listening on {scheme}://{addr}");
    let limits = HttpLimits::from_config(&state.config);
    // The operators' listener, when configured: plain HTTP, stopping when the public one does.
    let internal = match state.config.server.internal.as_ref().map(|i| i.listen) {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the internal listener on {at}"))?;
            tracing::info!(addr = %l.local_addr().unwrap_or(at), "internal listener (/metrics, /admin/v1) on http://{}", l.local_addr().unwrap_or(at));
            let app = crate::api::internal_router(state.clone());
            let mut stopped = state.shutdown.subscribe();
            let st = state.clone();
            Some(tokio::spawn(async move {
                let stop = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                serve_http(l, None, &st, app, limits, stop, || {}).await
            }))
        }
        None => None,
    };
    let drain = control::Drain::default();
    let control_task = match &state.config.server.control_socket {
        Some(path) => {
            let l = control::bind(path)?;
            tracing::info!(path = %path.display(), "control socket (tonegate ctl) listening");
            Some(control::spawn(
                l,
                path.clone(),
                state.clone(),
                drain.clone(),
                certificate.clone(),
            ))
        }
        None => None,
    };
    // Every listener is bound (HTTP before this function, ng, internal, control): ready.
    control::ready();
    let drained = drain.clone().finished(state.clone());
    let (stop_now, stopped_now) = tokio::sync::oneshot::channel();
    let signal_task = signals
        .map(|s| tokio::spawn(s.obey(drain.clone(), state.clone(), certificate.clone(), stop_now)));
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = drained => {}
            Ok(()) = stopped_now => {}
        }
    };
    let stopping = state.shutdown.clone();
    let sessions = state.sessions.clone();
    let payment_drain = std::time::Duration::from_secs(state.config.server.payment_drain_s);
    let app = crate::api::router(state.clone());
    serve_http(listener, tls, &state, app, limits, shutdown, move || {
        control::stopping();
        // Event streams end now, so the drain need not wait for its deadline.
        let _ = stopping.send(true);
    })
    .await;
    if let Some(t) = control_task {
        let _ = t.await;
    }
    if let Some(t) = internal {
        let _ = t.await;
    }
    if let Some(t) = ng_task {
        t.abort();
    }
    // Stopping already: further signals change nothing (as before drains existed).
    if let Some(t) = signal_task {
        t.abort();
    }
    // Captures end and payments finish before the calls go.
    let report = sessions.shut_down(payment_drain).await;
    if report.payments_unfinished > 0 {
        tracing::warn!(
            captures_stopped = report.captures_stopped,
            payments_running = report.payments_running,
            payments_unfinished = report.payments_unfinished,
            "payments still at the PSP at the deadline; a restart marks them Failed (check the PSP)"
        );
    } else {
        tracing::info!(
            captures_stopped = report.captures_stopped,
            payments_finished = report.payments_running,
            "sessions stopped"
        );
    }
    // The fallback number's callers hear a BYE (answered, or not, within a bound) rather
    // than silence, now that their captures have ended.
    if let (Some(mut t), Some(sip)) = (sip_task, &state.sip) {
        sip.stop();
        let bound = crate::sip::STOP_WAIT + std::time::Duration::from_secs(1);
        if tokio::time::timeout(bound, &mut t).await.is_err() {
            t.abort();
        }
    }
    relay.stop_all();
    tracing::info!("tonegate stopped");
    Ok(())
}

/// The HTTP server's limits (see `[server]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Headers must arrive within this of connecting or of starting them.
    pub header_timeout: std::time::Duration,
    /// A connection with nothing moving for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections at once from one address (IPv6: one /64); 0: no limit. Trusted
    /// proxies are not held to it.
    pub max_connections_per_address: usize,
    /// How long connections get to finish after shutdown begins.
    pub drain: std::time::Duration,
}

impl HttpLimits {
    /// The configured limits; the connection cap is held to a quarter of the open-file limit
    /// so that relay sockets always have theirs.
    pub fn from_config(c: &Config) -> Self {
        let files = crate::relay::open_file_limit().unwrap_or(u64::MAX);
        let cap = (c.server.max_connections as u64).min((files / 4).max(16)) as usize;
        if cap < c.server.max_connections {
            tracing::warn!(
                max_connections = c.server.max_connections,
                open_files = files,
                "HTTP connections capped at {cap}: a quarter of the open-file limit (the rest is for relay sockets)"
            );
        }
        HttpLimits {
            header_timeout: std::time::Duration::from_secs(c.server.header_timeout_s),
            idle_timeout: std::time::Duration::from_secs(c.server.idle_timeout_s),
            max_connections: cap,
            // Unset: a sixteenth of the cap in force, so four hosts cannot hold every slot.
            max_connections_per_address: c
                .server
                .max_connections_per_address
                .unwrap_or((cap / 16).max(1)),
            drain: std::time::Duration::from_secs(c.server.drain_timeout_s),
        }
    }
}

/// Accepts connections on `listener` and serves `app` over them until `shutdown`, with
/// hyper's header-read timeout, an idle timeout ([`IdleIo`]), a cap on open connections (at
/// it, a new connection evicts the quietest one with no request in flight, see [`table`];
/// when every one has a request in flight the new one is closed at once and counted), a cap
/// per address (trusted proxies exempt), and a drain deadline: `on_shutdown` runs when
/// shutdown begins, and connections still open after `limits.drain` are cut. With `tls`, every
/// connection is TLS; its handshake must finish within the header timeout.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: &AppState,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce(),
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use std::sync::atomic::Ordering::Relaxed;
    use tower::ServiceExt;
    let refused = state.http_refused.clone();
    let evicted = state.http_evicted.clone();
    let trusted = state.config.server.trusted_proxies.clone();
    let table = table::ConnTable::new(limits.max_connections);
    let per_address = per_address::PerAddress::new(limits.max_connections_per_address);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or similar: back off a little, keep serving.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Over the address's cap the connection is closed at once: cheaper than any answer.
        // A trusted proxy carries many clients, so it is not held to one address's share.
        let address_slot = if trusted.contains(peer.ip()) {
            None
        } else {
            match per_address.admit(peer.ip()) {
                Some(s) => Some(s),
                None => {
                    refused.fetch_add(1, Relaxed);
                    drop(stream);
                    continue;
                }
            }
        };
        let slot = match table.admit() {
            table::Admission::Admitted(s) => s,
            table::Admission::Evicted(s) => {
                evicted.fetch_add(1, Relaxed);
                s
            }
            table::Admission::Refused => {
                refused.fetch_add(1, Relaxed);
                drop((stream, address_slot));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let activity = slot.activity();
        let slot_id = slot.id();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            // In flight from its headers until its response body ends: such a connection is
            // never evicted.
            let busy = activity.begin();
            let answer = svc.clone().oneshot(req.map(axum::body::Body::new));
            async move {
                let r = answer.await?;
                Ok::<_, std::convert::Infallible>(r.map(|b| table::Guarded::wrap(b, busy)))
            }
        });
        let io = IdleIo::new(stream, limits.header_timeout, limits.idle_timeout);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let abort = conns.spawn(async move {
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(tls) => {
                    // A client that never finishes its handshake is cut like a slow header.
                    if let Ok(Ok(io)) =
                        tokio::time::timeout(limits.header_timeout, tls.accept(io)).await
                    {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                }
            }
            drop((slot, address_slot));
        });
        table.set_abort(slot_id, abort);
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    on_shutdown();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain) => {
            tracing::warn!(open = conns.len(), "connections still open at the drain deadline: closed");
        }
    }
    conns.shutdown().await;
}

/// A sink for the relay's audit records: a thread of its own writes them to the store, so the
/// relay never waits on the database.
fn relay_audit_writer(
    store: Arc<dyn crate::session::store::SessionStore>,
    clock: crate::clock::Clock,
) -> crate::relay::AuditSink {
    let (tx, rx) = std::sync::mpsc::channel::<crate::relay::RelayAudit>();
    std::thread::Builder::new()
        .name("relay-audit".into())
        .spawn(move || {
            for e in rx {
                let record = crate::session::store::RelayAuditRecord {
                    at: clock.unix_now(),
                    call_id: e.call_id,
                    call_guid: e.call_guid,
                    owner: e.owner,
                    actor: e.actor,
                    action: e.action.to_string(),
                    reason: e.reason,
                };
                if let Err(err) = store.relay_audit_add(&record) {
                    tracing::error!(error = %err, "writing the relay audit trail failed");
                }
            }
        })
        .expect("starting the relay audit thread");
    Arc::new(move |e| {
        let _ = tx.send(e);
    })
}

/// Builds the shared state from a checked configuration.
pub fn build_state(config: Config) -> anyhow::Result<AppState> {
    use base64::Engine;
    let clients = config
        .auth
        .clients
        .iter()
        .map(|c| Client {
            id: c.id.clone(),
            secret: match (&c.secret, &c.secret_hash) {
                (_, Some(h)) => Secret::Argon2(h.clone()),
                (Some(p), None) => Secret::Plain(p.clone()),
                (None, None) => unreachable!("config validation requires a secret"),
            },
            scopes: c.scopes.clone(),
            accounts: c.accounts.clone(),
        })
        .collect();
    let key = match &config.auth.signing_key {
        Some(k) => base64::engine::general_purpose::STANDARD
            .decode(k)
            .context("auth.signing_key")?,
        None => {
            use rand::RngCore;
            let mut k = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            k
        }
    };
    let authority = Authority::new(clients, key, config.auth.token_lifetime_s);
    for id in authority.plain_secret_clients() {
        tracing::warn!(client = %id, "client {id} uses a plain development secret: replace it with secret_hash (see README, \"Replacing the development client\")");
    }
    let store: Arc<dyn crate::session::store::SessionStore> = match &config.store.postgres_url {
        Some(url) => {
            let pg = PgStore::open(url).context("store.postgres_url")?;
            tracing::info!("session store: PostgreSQL (shared)");
            Arc::new(pg)
        }
        None => Arc::new(SqliteStore::open(&config.store.sqlite_path)?),
    };
    // One sandbox serves every sandbox account (tests reach it through the state).
    let sandbox = Arc::new(SandboxPsp::new());
    let mut psps: HashMap<String, Arc<dyn Psp>> = HashMap::new();
    for a in &config.accounts {
        let psp: Arc<dyn Psp> = match a.psp {
            PspKind::Sandbox => sandbox.clone(),
            PspKind::Stripe => Arc::new(
                StripePsp::new(
                    a.stripe_base_url.as_deref().unwrap_or_default(),
                    a.stripe_secret_key.as_deref().unwrap_or_default(),
                )
                .with_context(|| format!("account {}: Stripe client", a.id))?,
            ),
        };
        psps.insert(a.id.clone(), psp);
    }
    let clock = if config.server.adjustable_clock {
        tracing::warn!("server.adjustable_clock: the admin API can move this gateway's clock forward (development only)");
        crate::clock::Clock::adjustable()
    } else {
        crate::clock::Clock::system()
    };
    let relay = Relay::with_wall_clock(config.relay.clone(), Arc::new(clock.clone()))
        .context("starting the relay")?;
    tracing::info!(engine = relay.engine(), "relay ready");
    let config = Arc::new(config);
    relay.set_audit(relay_audit_writer(store.clone(), clock.clone()));
    let outbox = (config.sms.provider != "twilio").then(|| {
        let show_links = config.server.mode == crate::config::ServerMode::Development;
        Arc::new(crate::session::outbox::Outbox::new(
            store.clone(),
            show_links,
            clock.clone(),
        ))
    });
    let sms: Arc<dyn crate::sms::SmsSender> = match &outbox {
        Some(o) => o.clone(),
        None => Arc::new(crate::sms::Twilio::new(config.sms.clone())),
    };
    let prompts = Arc::new(crate::prompts::Prompts::load(&config.prompts.dir)?);
    let latency = Arc::new(crate::latency::Latency::default());
    let sessions = Sessions::new(
        store,
        config.clone(),
        crate::session::SessionServices {
            relay: relay.clone(),
            psps,
            sms,
            prompts,
            latency: latency.clone(),
            clock: clock.clone(),
        },
    );
    let ng = config.ng.listen.map(|_| {
        let clients = &config.auth.clients;
        // The ng calls' account: as configured, else the owner's only one.
        let account = config.ng.account.clone().or_else(|| {
            match clients
                .iter()
                .find(|c| c.id == config.ng.owner)
                .map(|c| c.accounts.as_slice())
            {
                Some([only]) if only != "*" => Some(only.clone()),
                _ => None,
            }
        });
        let policy = account
            .as_deref()
            .and_then(|a| config.account(a))
            .map(|a| a.dtmf_masking)
            .unwrap_or(config.relay.dtmf_masking);
        Arc::new(crate::ng::NgService::new(
            relay.clone(),
            config.ng.clone(),
            account,
            policy,
            config.relay.masking_mode(),
            clock.clone(),
        ))
    });
    let sip = config.sip.listen.map(|_| {
        Arc::new(crate::sip::SipService::new(
            config.clone(),
            relay.clone(),
            sessions.clone(),
        ))
    });
    let credentials = Arc::new(
        crate::api::CredentialGuard::new(
            config.auth.throttle_limits(),
            config.auth.hash_permits(),
            std::time::Duration::from_secs(config.auth.verified_secret_cache_s),
        )
        .context("starting the password-hashing threads")?,
    );
    Ok(AppState {
        config,
        ui_tokens: crate::api::UiTokens::new(authority.derive_key(b"agent ui token")),
        authority: Arc::new(authority),
        relay,
        sessions,
        sandbox,
        ng,
        sip,
        shutdown: Arc::new(tokio::sync::watch::channel(false).0),
        credentials,
        http_refused: Default::default(),
        http_evicted: Default::default(),
        outbox,
        latency,
        idempotency_in_flight: Default::default(),
        clock,
    })
}

/// The process signals that steer a running gateway, their handlers registered (so a signal
/// that comes during start-up is not fatal).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// One signal, as the gateway reads it.
enum Signalled {
    Term,
    Int,
    Hup,
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP handlers now. Call inside the runtime.
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            hup: signal(SignalKind::hangup()).context("handling SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Signalled {
        tokio::select! {
            _ = self.term.recv() => Signalled::Term,
            _ = self.int.recv() => Signalled::Int,
            _ = self.hup.recv() => Signalled::Hup,
        }
    }

    /// Acts on signals until one says stop at once, then sends on `stop`: SIGTERM starts the
    /// drain `tonegate ctl drain` starts (no new calls, live ones carry on); a second SIGTERM,
    /// or SIGINT at any time, stops at once; SIGHUP reloads the TLS certificate.
    async fn obey(
        mut self,
        drain: control::Drain,
        state: AppState,
        certificate: Option<Arc<tls::Certificate>>,
        stop: tokio::sync::oneshot::Sender<()>,
    ) {
        let node = state.config.cluster.node.clone();
        let mut terms = 0;
        loop {
            match self.next().await {
                Signalled::Hup => match &certificate {
                    Some(c) => {
                        let _ = reload_certificate(c, &node);
                    }
                    None => tracing::info!(%node, "SIGHUP: no [server.tls] to reload"),
                },
                Signalled::Term if terms == 0 => {
                    terms += 1;
                    tracing::warn!(%node, "SIGTERM: draining (a second SIGTERM, or SIGINT, stops at once)");
                    drain.start(&state);
                }
                s => {
                    let which = if matches!(s, Signalled::Int) {
                        "SIGINT"
                    } else {
                        "SIGTERM again"
                    };
                    tracing::warn!(%node, calls = state.relay.totals().calls_active, "{which}: stopping now");
                    let _ = stop.send(());
                    return;
                }
            }
        }
    }
}

/// Reloads the TLS certificate (SIGHUP, `tonegate ctl reload-tls`), logging what serves now.
pub fn reload_certificate(c: &tls::Certificate, node: &str) -> anyhow::Result<tls::Loaded> {
    let result = c.reload();
    match &result {
        Ok(l) => {
            tracing::info!(%node, subject = %l.subject, not_after = %l.not_after, "TLS certificate reloaded: new connections get it")
        }
        Err(e) => {
            tracing::error!(%node, error = format!("{e:#}"), "TLS certificate not reloaded: still serving the one loaded before")
        }
    }
    result
}
