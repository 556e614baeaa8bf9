//! Several nodes: two `tonegate serve` processes on one PostgreSQL database. A session created
//! on one is read and cancelled on the other, live link ids are unique across both, and each
//! result webhook goes out once while both run the webhook worker.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use crate::common::gateway::http;
use crate::psp::{dev_token, serve_config, HookReceiver, Serve};

/// A node's config: this file's accounts, webhooks to `hook`, the store at `url`.
fn node_config(dir: &std::path::Path, hook: &str, url: &str) -> std::path::PathBuf {
    let path = serve_config(dir, "http://127.0.0.1:9", hook);
    let mut cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["store"]
        .as_table_mut()
        .unwrap()
        .insert("postgres_url".into(), url.into());
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    path
}

fn send(r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn two_nodes_on_one_postgresql_share_sessions_link_ids_and_webhooks() {
    let Some(url) = common::postgres::database() else {
        return;
    };
    let hook = HookReceiver::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Serve::start(&node_config(da.path(), &hook.url, &url));
    let b = Serve::start(&node_config(db.path(), &hook.url, &url));
    let (ta, tb) = (dev_token(&a.1, "globalpci"), dev_token(&b.1, "globalpci"));

    // Created on A; read and cancelled on B; A sees it cancelled.
    let (s, v) = send(
        http()
            .post(format!("{}/globalpci/v1/selfservicesession/", a.1))
            .bearer_auth(&ta)
            .json(
                &json!({"AccountConfigurationId": "dev-account", "CallGuid": "guid-node-a",
                          "PaymentData": {"amount": "1.00"}}),
            ),
    );
    assert_eq!(s, 200, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let (s, v) = send(
        http()
            .get(format!("{}/globalpci/v1/session/{id}", b.1))
            .bearer_auth(&tb),
    );
    assert_eq!(
        (s, v["sessionState"].as_str()),
        (200, Some("Created")),
        "{v}"
    );
    let (s, v) = send(
        http()
            .post(format!("{}/globalpci/v1/session/{id}/cancel", b.1))
            .bearer_auth(&tb),
    );
    assert!((200..300).contains(&s), "{s}: {v}");
    let (_, v) = send(
        http()
            .get(format!("{}/globalpci/v1/session/{id}", a.1))
            .bearer_auth(&ta),
    );
    assert_eq!(v["sessionState"], "Cancelled", "{v}");

    // Self-service sessions created on both nodes at once: every live link id is different.
    let created: Vec<(String, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..24)
            .map(|i| {
                let (base, tok) = if i % 2 == 0 { (&a.1, &ta) } else { (&b.1, &tb) };
                sc.spawn(move || {
                    let (s, v) = send(
                        http()
                            .post(format!("{base}/globalpci/v1/selfservicesession/"))
                            .bearer_auth(tok)
                            .json(&json!({"AccountConfigurationId": "dev-account",
                                          "CallGuid": format!("guid-many-{i}"),
                                          "PaymentData": {"amount": "1.00"}})),
                    );
                    assert_eq!(s, 200, "{v}");
                    (
                        v["sessionId"].as_str().unwrap().to_string(),
                        v["dtmfLinkId"].as_str().unwrap().to_string(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let links: HashSet<&String> = created.iter().map(|(_, l)| l).collect();
    assert_eq!(links.len(), created.len(), "{created:?}");

    // Each cancelled on the node that did not create it; both nodes' workers race for the
    // webhooks: every session's result arrives once, under one event id.
    for (i, (sid, _)) in created.iter().enumerate() {
        let (base, tok) = if i % 2 == 0 { (&b.1, &tb) } else { (&a.1, &ta) };
        let (s, v) = send(
            http()
                .post(format!("{base}/globalpci/v1/session/{sid}/cancel"))
                .bearer_auth(tok),
        );
        assert!((200..300).contains(&s), "{s}: {v}");
    }
    let mut all: Vec<&str> = created.iter().map(|(s, _)| s.as_str()).collect();
    all.push(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = hook.seen.lock().unwrap().clone();
        let arrived: HashSet<&str> = seen
            .iter()
            .filter_map(|(_, v)| v["sessionId"].as_str())
            .collect();
        if all.iter().all(|s| arrived.contains(s)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks missing: {} of {}",
            arrived.len(),
            all.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Delivered and recorded so (nothing left to retry), then counted.
    for s in &all {
        a.wait_webhooks_delivered(s);
    }
    let seen = hook.seen.lock().unwrap().clone();
    let mut per_session: HashMap<String, Vec<String>> = HashMap::new();
    for (event, v) in &seen {
        per_session
            .entry(v["sessionId"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(event.clone());
    }
    for s in &all {
        assert_eq!(per_session[*s].len(), 1, "{s}: {:?}", per_session[*s]);
    }
}
