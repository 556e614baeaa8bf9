//! localstripe (PyPI), a Stripe-compatible PSP, started on a free loopback port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::gateway::http;

/// localstripe on a free loopback port; killed on drop.
pub struct LocalStripe {
    child: Child,
    pub url: String,
}

impl LocalStripe {
    pub fn start() -> LocalStripe {
        let bin = std::env::var("TONEGATE_LOCALSTRIPE")
            .ok()
            .unwrap_or_else(|| {
                super::root()
                    .join(".venv/bin/localstripe")
                    .display()
                    .to_string()
            });
        assert!(
            std::path::Path::new(&bin).exists(),
            "localstripe not found at {bin}: run scripts/test, which installs it"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            // --from-scratch: never load the state file every localstripe shares in /tmp.
            .args(["--port", &port.to_string(), "--from-scratch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http()
            .get(format!("{url}/v1/customers"))
            .basic_auth("sk_test_x", Some(""))
            .send()
            .is_err()
        {
            assert!(Instant::now() < deadline, "localstripe did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        LocalStripe { child, url }
    }

    /// PaymentIntents localstripe holds for a session (by metadata), every page of them.
    pub fn payment_intents_for(&self, session: &str) -> usize {
        let mut count = 0;
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let mut url = format!("{}/v1/payment_intents?limit=100", self.url);
            if let Some(a) = &after {
                url += &format!("&starting_after={a}");
            }
            let v: Value = http()
                .get(url)
                .basic_auth("sk_test_x", Some(""))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let page = v["data"].as_array().unwrap();
            count += page
                .iter()
                .filter(|pi| pi["metadata"]["sessionId"] == session)
                .count();
            if v["has_more"] != true || page.is_empty() {
                return count;
            }
            after = page.last().unwrap()["id"].as_str().map(str::to_string);
        }
        panic!("more than 100 pages of payment intents");
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
