//! A gateway running in the test process, on loopback, with a handle on its state.
#![allow(dead_code)]

use std::net::SocketAddr;

use tonegate::api::AppState;
use tonegate::config::Config;

thread_local! {
    /// The relay engine gateways started on this thread use (else the config's `auto`).
    static ENGINE: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `test` with gateways on relay engine `engine` ("io_uring" or "tokio"). Where the
/// kernel has no working io_uring, the io_uring run fails under `TONEGATE_REQUIRE_TOOLS` (a
/// full run must prove both engines), and otherwise says loudly that it skipped.
pub fn with_engine(engine: &'static str, test: fn()) {
    if engine == "io_uring" && !tonegate::relay::io_uring_available() {
        super::skip(
            "io_uring engine",
            "the kernel refuses io_uring here (io_uring_setup failed or is disabled); this \
             test ran on the tokio engine only",
        );
        return;
    }
    ENGINE.set(Some(engine));
    test();
    ENGINE.set(None);
}

/// The engine [`with_engine`] set for this thread, if any.
pub fn engine() -> Option<&'static str> {
    ENGINE.get()
}

/// The development client in `config/tonegate.toml`.
pub const DEV_CLIENT: (&str, &str) = ("tonegate-dev", "tonegate-dev-secret");

pub struct Gateway {
    pub addr: SocketAddr,
    /// `https` when the config has `[server.tls]`.
    pub scheme: &'static str,
    /// An HTTP client for it (with TLS: trusting the configured certificate only).
    pub client: reqwest::blocking::Client,
    /// Holds the gateway's database (and anything else it writes).
    pub dir: std::sync::Arc<tempfile::TempDir>,
    pub state: AppState,
    pub runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Gateway {
    /// Starts a gateway from the shipped config with `overrides` (TOML) merged on top, HTTP on
    /// a free loopback port.
    pub fn start(overrides: &str) -> Gateway {
        Self::start_in(std::sync::Arc::new(tempfile::tempdir().unwrap()), overrides)
    }

    /// As [`start`](Self::start), keeping its database in `dir` (a restart test reuses it).
    pub fn start_in(dir: std::sync::Arc<tempfile::TempDir>, overrides: &str) -> Gateway {
        let shipped = std::fs::read_to_string(super::root().join("config/tonegate.toml")).unwrap();
        let mut base: toml::Table = toml::from_str(&shipped).unwrap();
        let extra: toml::Table = toml::from_str(overrides).unwrap();
        merge(&mut base, extra);
        if let Some(engine) = ENGINE.get() {
            base.entry("relay")
                .or_insert(toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap()
                .insert("engine".into(), toml::Value::String(engine.into()));
        }
        base.entry("server")
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap()
            .insert("listen".into(), toml::Value::String("127.0.0.1:0".into()));
        let db = dir.path().join("tonegate.db").display().to_string();
        base.entry("store")
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap()
            .insert("sqlite_path".into(), toml::Value::String(db));
        // As if the file sat beside the shipped one: its relative paths mean the same.
        let config = Config::parse(
            &toml::to_string(&base).unwrap(),
            &super::root().join("config/test.toml"),
        )
        .unwrap();
        // Bind first, so links in SMS and UI URLs name the real port.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bound = probe.local_addr().unwrap();
        probe.set_nonblocking(true).unwrap();
        let mut config = config;
        let scheme = config.server.scheme();
        let client = match &config.server.tls {
            None => http(),
            Some(tls) => {
                let pem = std::fs::read(&tls.cert_file).unwrap();
                reqwest::blocking::Client::builder()
                    .timeout(std::time::Duration::from_secs(20))
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                    .build()
                    .unwrap()
            }
        };
        config.server.public_url = Some(format!("{scheme}://{bound}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = runtime.block_on(async { tonegate::server::build_state(config).unwrap() });
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(probe).unwrap()
        };
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let st = state.clone();
        runtime.spawn(async move {
            tonegate::server::serve_state(listener, st, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
            let _ = done_tx.send(());
        });
        Gateway {
            addr,
            scheme,
            client,
            dir,
            state,
            runtime,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Moves the gateway's clock `secs` forward through `POST /admin/v1/clock` (the gateway
    /// must be started with `[server] adjustable_clock = true`): expiries pass without a sleep.
    #[allow(dead_code)] // not every test binary has expiries
    pub fn advance_clock(&self, secs: u64) {
        let tok = self.token("admin");
        let (s, v) = post(
            self,
            &tok,
            "/admin/v1/clock",
            &serde_json::json!({ "advance_s": secs }),
        );
        assert_eq!(s, 200, "advancing the clock: {v}");
    }

    /// A bearer token for the development client with `scope`.
    pub fn token(&self, scope: &str) -> String {
        self.token_for(DEV_CLIENT, scope)
    }

    /// A bearer token for a client.
    pub fn token_for(&self, client: (&str, &str), scope: &str) -> String {
        let r = self
            .client
            .post(self.url("/auth/connect/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client.0),
                ("client_secret", client.1),
                ("scope", scope),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "token request failed");
        r.json::<serde_json::Value>().unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Gateway {
    /// Begins a graceful shutdown, as SIGTERM does.
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Waits (up to `limit`) for the server to finish shutting down; true if it did.
    pub fn wait_stopped(&mut self, limit: std::time::Duration) -> bool {
        match self.done.take() {
            Some(d) => d.recv_timeout(limit).is_ok(),
            None => true,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = d.recv_timeout(std::time::Duration::from_secs(10));
        }
    }
}

fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// POSTs `body` as JSON with bearer `tok`: the status and the JSON answer (null if the body is
/// empty; a body that is not JSON panics).
pub fn post(
    gw: &Gateway,
    tok: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = gw
        .client
        .post(gw.url(path))
        .bearer_auth(tok)
        .json(body)
        .send()
        .unwrap();
    answer(r)
}

/// GETs `path` with bearer `tok`: the status and the JSON answer (as [`post`]).
pub fn get(gw: &Gateway, tok: &str, path: &str) -> (u16, serde_json::Value) {
    let r = gw.client.get(gw.url(path)).bearer_auth(tok).send().unwrap();
    answer(r)
}

/// The status and the JSON body of `r` (null when the body is empty). Panics with the body
/// when it is not JSON: an HTML or text error page must not read as "every field absent".
fn answer(r: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    if text.is_empty() {
        return (status, serde_json::Value::Null);
    }
    match serde_json::from_str(&text) {
        Ok(v) => (status, v),
        Err(e) => panic!("status {status}: the body is not JSON ({e}): {text}"),
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Polls session `id` until it is in `state`; panics after 20 s, saying what it last was.
pub fn wait_state(gw: &Gateway, tok: &str, id: &str, state: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (s, v) = get(gw, tok, &format!("/globalpci/v1/session/{id}"));
        if v["sessionState"] == state {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session {id} never reached {state} in 20 s: status {s}, last seen {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
