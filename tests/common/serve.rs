//! `tonegate serve` as a child process (the binary as an operator runs it), a result-webhook
//! receiver, and the config and tokens those tests use: shared by the PSP tests, the node
//! tests on PostgreSQL and the cluster call through Kamailio.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::gateway::http;

/// The accounts the PSP and node tests run with: `dev-account` (the sandbox), `stripe-account`
/// (Stripe at `stripe_url`), `stripe-down` (a PSP that never answers); result webhooks to
/// `webhook` where given.
pub fn accounts(stripe_url: &str, webhook: Option<&str>) -> String {
    let hook = webhook
        .map(|u| format!("webhook_url = \"{u}\"\nwebhook_secret = \"whsec_test\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[[accounts]]
id = "dev-account"
mandatory = ["amount"]
{hook}
[[accounts]]
id = "stripe-account"
psp = "stripe"
stripe_base_url = "{stripe_url}"
stripe_secret_key = "sk_test_tonegate"
mandatory = ["amount"]
{hook}
[[accounts]]
id = "stripe-down"
psp = "stripe"
stripe_base_url = "http://127.0.0.1:9"
stripe_secret_key = "sk_test_tonegate"
"#
    )
}

/// Records result webhooks it accepts: (event id, body); while `down`, answers 503 and
/// counts the refusals.
pub struct HookReceiver {
    /// Where tonegate posts (`http://127.0.0.1:P/hook`).
    pub url: String,
    /// Every webhook accepted: its `X-Tonegate-Event-Id` and body.
    pub seen: Arc<Mutex<Vec<(String, Value)>>>,
    /// While set, every delivery is refused with 503.
    pub down: Arc<std::sync::atomic::AtomicBool>,
    /// How many deliveries were refused.
    pub refused: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl HookReceiver {
    /// Starts the receiver on a free loopback port.
    pub fn start() -> HookReceiver {
        use axum::http::{HeaderMap, StatusCode};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let (s2, d2, r2) = (seen.clone(), down.clone(), refused.clone());
        let receiver = move |headers: HeaderMap, body: String| {
            let (seen, down, refused) = (s2.clone(), d2.clone(), r2.clone());
            async move {
                if down.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let id = headers
                    .get("x-tonegate-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let v = serde_json::from_str(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((id, v));
                StatusCode::OK
            }
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        rt.spawn(async move {
            axum::serve(
                listener,
                axum::Router::new().route("/hook", axum::routing::post(receiver)),
            )
            .await
            .unwrap();
        });
        HookReceiver {
            url,
            seen,
            down,
            refused,
            _rt: rt,
        }
    }
}

/// The shipped config with this file's accounts (Stripe at `stripe_url`, webhooks to `hook`),
/// on a free loopback port, its database in `dir`; returns the config file's path.
pub fn serve_config(dir: &std::path::Path, stripe_url: &str, hook: &str) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string("config/tonegate.toml").unwrap();
    let mut cfg: toml::Table = toml::from_str(&shipped).unwrap();
    let extra: toml::Table = toml::from_str(&accounts(stripe_url, Some(hook))).unwrap();
    cfg.insert("accounts".into(), extra["accounts"].clone());
    cfg["server"]["listen"] = "127.0.0.1:0".into();
    cfg["store"]["sqlite_path"] = dir.join("t.db").display().to_string().into();
    let path = dir.join("t.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    path
}

/// A token for the development client from the gateway at `base`.
pub fn dev_token(base: &str, scope: &str) -> String {
    let v: Value = http()
        .post(format!("{base}/auth/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tonegate-dev"),
            ("client_secret", "tonegate-dev-secret"),
            ("scope", scope),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// A `tonegate serve` child this test started (its URL, every line it logged); killed if the
/// test ends first.
pub struct Serve(
    pub std::process::Child,
    pub String,
    pub Arc<Mutex<Vec<String>>>,
);

impl Serve {
    /// Starts `tonegate serve --config CONFIG` and waits for its listening line.
    pub fn start(config: &std::path::Path) -> Serve {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tonegate"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let logs: Arc<Mutex<Vec<String>>> = Default::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            assert!(Instant::now() < deadline, "no listening line");
            let Some(line) = lines.next() else {
                panic!("gateway exited: {}", logs.lock().unwrap().join("\n"));
            };
            let line = line.unwrap();
            logs.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Serve(child, format!("http://{addr}"), logs)
    }

    /// Waits until the gateway lists no undelivered webhook for session `id`: every webhook it
    /// queued for the session is delivered and recorded so, so counting what arrived is final.
    pub fn wait_webhooks_delivered(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pending: Value = http()
                .get(format!("{}/admin/v1/webhooks", self.1))
                .bearer_auth(dev_token(&self.1, "admin"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let listed = pending["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["sessionId"] == id);
            if !listed {
                return;
            }
            assert!(Instant::now() < deadline, "still undelivered: {pending}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The payment link texted for session `id` (from the development outbox listing).
    pub fn link_for(&self, id: &str) -> String {
        let outbox: Value = http()
            .get(format!("{}/admin/v1/outbox", self.1))
            .bearer_auth(dev_token(&self.1, "admin"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let body = outbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["sessionId"] == id)
            .unwrap_or_else(|| panic!("no SMS for {id}: {outbox}"))["body"]
            .as_str()
            .unwrap()
            .to_string();
        body[body.find("http").unwrap()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
