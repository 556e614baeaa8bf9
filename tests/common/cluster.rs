//! Three `tonegate serve` nodes on one PostgreSQL database, as the node tests (sessions) and
//! the cluster call through Kamailio (calls) run them: A, B and C, one signing key, one
//! webhook receiver.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::gateway::http;
use super::serve::{dev_token, serve_config, HookReceiver, Serve};
use super::KeyingLeg;

/// The cluster's one signing key (base64 of 32 bytes), as every node of a cluster needs.
pub const CLUSTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A node's config: the PSP tests' accounts, webhooks to `hook`, the store at `url`, named
/// `name`, beating every second and counting a node dead after three without a beat; the
/// tables of `extra` (TOML, e.g. an `[ng]` listener) added.
pub fn node_config(
    dir: &std::path::Path,
    hook: &str,
    url: &str,
    name: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = serve_config(dir, "http://127.0.0.1:9", hook);
    let mut cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["store"]
        .as_table_mut()
        .unwrap()
        .insert("postgres_url".into(), url.into());
    let cluster: toml::Table = toml::from_str(&format!(
        "node = \"{name}\"\nheartbeat_s = 1\ndead_after_s = 3"
    ))
    .unwrap();
    cfg.insert("cluster".into(), cluster.into());
    // Keys of `extra`'s tables join the shipped ones (an `[ng] listen` keeps `[ng] owner`).
    let extra: toml::Table = toml::from_str(extra).unwrap();
    for (name, value) in extra {
        match (cfg.get_mut(&name), value) {
            (Some(toml::Value::Table(have)), toml::Value::Table(add)) => have.extend(add),
            (_, value) => {
                cfg.insert(name, value);
            }
        }
    }
    // One signing key for the cluster, as README asks: a token any node issued works on all.
    if let Some(auth) = cfg.get_mut("auth").and_then(|a| a.as_table_mut()) {
        auth.insert("signing_key".into(), CLUSTER_KEY.into());
    } else {
        let auth: toml::Table =
            toml::from_str(&format!("signing_key = \"{CLUSTER_KEY}\"")).unwrap();
        cfg.insert("auth".into(), auth.into());
    }
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    path
}

/// Sends a request: its status and JSON body (`null` when it has none).
pub fn send(r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Three nodes on one database, each in its own directory (kept alive with them).
pub struct Cluster {
    /// The database's URL.
    pub url: String,
    /// The accounts' webhook receiver.
    pub hook: HookReceiver,
    /// A, B and C.
    pub nodes: Vec<Serve>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the three nodes; `None` (skipped, loudly) without PostgreSQL.
    pub fn start() -> Option<Cluster> {
        Self::start_with(|_| String::new())
    }

    /// As [`start`](Self::start), node `i`'s config with the tables of `extra(i)` added.
    pub fn start_with(extra: impl Fn(usize) -> String) -> Option<Cluster> {
        Self::of(&["node-a", "node-b", "node-c"], extra)
    }

    /// Nodes named `names`, in that order, node `i`'s config with `extra(i)` added.
    pub fn of(names: &[&str], extra: impl Fn(usize) -> String) -> Option<Cluster> {
        let url = super::postgres::database()?;
        let hook = HookReceiver::start();
        let dirs: Vec<_> = names.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let nodes = names
            .iter()
            .zip(&dirs)
            .enumerate()
            .map(|(i, (name, d))| {
                Serve::start(&node_config(d.path(), &hook.url, &url, name, &extra(i)))
            })
            .collect();
        Some(Cluster {
            url,
            hook,
            nodes,
            _dirs: dirs,
        })
    }

    /// Node `i`'s base URL.
    pub fn base(&self, i: usize) -> &str {
        &self.nodes[i].1
    }

    /// An agent session for `guid` created on node `on`: its id and the screen's access code.
    pub fn agent_session(&self, on: usize, guid: &str) -> (String, String) {
        let (s, v) = send(
            http()
                .post(format!("{}/globalpci/v1/agentsession", self.base(on)))
                .bearer_auth(dev_token(self.base(on), "globalpci"))
                .json(
                    &json!({"AccountConfigurationId": "dev-account", "CallGuid": guid,
                              "PaymentData": {"amount": "12.00", "merchantTxnRef": guid}}),
                ),
        );
        assert_eq!(s, 200, "{v}");
        (
            v["sessionId"].as_str().unwrap().to_string(),
            v["paymentUiCredentials"]["accessCode"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// A self-service session created on node `on` for the IVR's call `guid`: its id and
    /// `dtmfLinkId`.
    pub fn self_service_session(&self, on: usize, guid: &str) -> (String, String) {
        let (s, v) = send(
            http()
                .post(format!("{}/globalpci/v1/selfservicesession", self.base(on)))
                .bearer_auth(dev_token(self.base(on), "globalpci"))
                .json(
                    &json!({"AccountConfigurationId": "dev-account", "CallGuid": guid,
                              "PaymentData": {"amount": "7.50", "merchantTxnRef": guid}}),
                ),
        );
        assert_eq!(s, 200, "{v}");
        (
            v["sessionId"].as_str().unwrap().to_string(),
            v["dtmfLinkId"].as_str().unwrap().to_string(),
        )
    }

    /// Opens the agent's payment screen on node `on`: the page's UI token.
    pub fn open_screen(&self, on: usize, id: &str, code: &str) -> String {
        let page = http()
            .get(format!("{}/pay/agent/{id}?code={code}", self.base(on)))
            .send()
            .unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().unwrap();
        let at = page
            .find("data-token=\"")
            .expect("the page carries its token")
            + 12;
        page[at..at + page[at..].find('"').unwrap()].to_string()
    }

    /// A relay call for `guid` on node `on`: the caller's keying leg (the agent leg's socket
    /// kept open alongside).
    pub fn call(&self, on: usize, guid: &str) -> (KeyingLeg, UdpSocket) {
        let (_, caller, agent) = self.call_with_id(on, guid);
        (caller, agent)
    }

    /// As [`call`](Self::call), with the relay call's id first.
    pub fn call_with_id(&self, on: usize, guid: &str) -> (String, KeyingLeg, UdpSocket) {
        let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
        let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (s, v) = send(
            http()
                .post(format!("{}/relay/v1/calls", self.base(on)))
                .bearer_auth(dev_token(self.base(on), "relay"))
                .json(&json!({"call_guid": guid, "codec": "PCMU",
                              "caller": {"remote": caller.local_addr().unwrap().to_string()},
                              "agent": {"remote": agent.local_addr().unwrap().to_string()}})),
        );
        assert_eq!(s, 201, "{v}");
        let relay = v["caller"]["local"].as_str().unwrap().parse().unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        (id, KeyingLeg::new(caller, relay), agent)
    }

    /// Relay call `call`'s counters on node `on`.
    pub fn call_counters(&self, on: usize, call: &str) -> Value {
        let (s, v) = send(
            http()
                .get(format!("{}/relay/v1/calls/{call}", self.base(on)))
                .bearer_auth(dev_token(self.base(on), "relay")),
        );
        assert_eq!(s, 200, "{v}");
        v["counters"].clone()
    }

    /// Polls node `on` until relay call `call` has detected at least `n` keys (at most 30 s).
    pub fn wait_keys(&self, on: usize, call: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = self.call_counters(on, call);
            if c["keys_captured"].as_u64().unwrap_or(0) >= n {
                return;
            }
            assert!(Instant::now() < deadline, "fewer than {n} keys: {c}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The session as node `on` reports it (the IVR's status poll).
    pub fn status(&self, on: usize, id: &str) -> Value {
        send(
            http()
                .get(format!("{}/globalpci/v1/session/{id}", self.base(on)))
                .bearer_auth(dev_token(self.base(on), "globalpci")),
        )
        .1
    }

    /// Polls node `on` until session `id` is in `state` (at most 30 s).
    pub fn wait_state(&self, on: usize, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.status(on, id);
            if v["sessionState"] == state {
                return v;
            }
            assert!(Instant::now() < deadline, "never {state}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An agent-screen button on node `on`.
    pub fn press(&self, on: usize, id: &str, token: &str, what: &str, body: Value) -> (u16, Value) {
        send(
            http()
                .post(format!("{}/pay/agent/{id}/{what}", self.base(on)))
                .bearer_auth(token)
                .json(&body),
        )
    }
}
