//! `tonegate demo`: the gateway with its embedded defaults, and both voice flows played against
//! it on loopback by a simulated caller keying a card as in-band audio.
//!
//! Self-service runs the way an IVR would run it, through the `ApiInteraction` definitions in
//! `config/interactions/`. Agent-assisted prints the payment-UI URL, records the agent leg to a
//! WAV and checks it for keys. Every step is a check; the exit status says whether all passed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tonegate_dsp::{DtmfDetector, G711Law};

use crate::config::Config;
use crate::interaction::{run_plan, Interaction, InteractionRunner, Variables};
use crate::media::rtp::{write_packet, RtpHeader};

/// The card the simulated caller keys (the sandbox PSP approves 4242…).
const CARD_KEYS: &str = "4242424242424242#1230#737";

struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            println!("  \u{2713} {what}");
        } else {
            self.failed += 1;
            println!("  \u{2717} {what}");
        }
    }
}

/// Runs the demo with the configuration at `config_path`; `out` receives the agent-leg WAV.
pub fn run(config_path: &Path, out: &Path) -> anyhow::Result<bool> {
    let mut config = Config::load(config_path)
        .context("the demo uses the shipped config; run it from the project root")?;
    let data = tempfile::tempdir().context("temporary directory")?;
    config.server.listen = "127.0.0.1:0".parse().expect("address");
    config.server.public_url = None;
    config.store.sqlite_path = data.path().join("demo.db");
    let client = config
        .auth
        .clients
        .iter()
        .find(|c| c.secret.is_some())
        .cloned()
        .context("the demo needs a client with a plain secret (the development client)")?;
    let account = config
        .accounts
        .first()
        .cloned()
        .context("the demo needs an account")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = Instant::now();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.server.public_url = Some(format!("http://{addr}"));
        let state = crate::server::build_state(config)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::serve_state(listener, state, async {
            let _ = stop_rx.await;
        }));
        let base = format!("http://{addr}");
        println!(
            "tonegate demo: gateway on {base} (sandbox PSP, SQLite in a temporary directory)\n"
        );
        let mut report = Report {
            passed: 0,
            failed: 0,
        };
        let secret = client.secret.clone().unwrap_or_default();
        let ctx = Ctx {
            base: base.clone(),
            client_id: client.id.clone(),
            secret,
            account: account.id.clone(),
            http: reqwest::Client::new(),
        };
        println!("Self-service call (IVR, no agent):");
        if let Err(e) = self_service(&ctx, &mut report).await {
            report.check(false, &format!("self-service flow stopped: {e:#}"));
        }
        println!("\nAgent-assisted call:");
        if let Err(e) = agent_assisted(&ctx, out, &mut report).await {
            report.check(false, &format!("agent-assisted flow stopped: {e:#}"));
        }
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        println!(
            "\n{} of {} checks passed in {:.1} s",
            report.passed,
            report.passed + report.failed,
            started.elapsed().as_secs_f64()
        );
        Ok::<bool, anyhow::Error>(report.failed == 0)
    })
}

struct Ctx {
    base: String,
    client_id: String,
    secret: String,
    account: String,
    http: reqwest::Client,
}

impl Ctx {
    async fn token(&self, scope: &str) -> anyhow::Result<String> {
        let v: Value = self
            .http
            .post(format!("{}/auth/connect/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.client_id),
                ("client_secret", &self.secret),
                ("scope", scope),
            ])
            .send()
            .await?
            .json()
            .await?;
        Ok(v["access_token"]
            .as_str()
            .context("no access_token")?
            .to_string())
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?
            .json()
            .await?)
    }

    async fn get(&self, token: &str, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?)
    }

    async fn relay_call(
        &self,
        call_guid: &str,
        caller: SocketAddr,
        agent: Option<SocketAddr>,
    ) -> anyhow::Result<(String, SocketAddr)> {
        let tok = self.token("relay").await?;
        let v = self
            .post(&tok, "/relay/v1/calls", json!({"call_guid": call_guid, "codec": "PCMU", "caller": {"remote": caller.to_string()}, "agent": {"remote": agent.map(|a| a.to_string())}}))
            .await?;
        let id = v["id"]
            .as_str()
            .with_context(|| format!("relay call refused: {v}"))?
            .to_string();
        Ok((
            id,
            v["caller"]["local"]
                .as_str()
                .context("no caller.local")?
                .parse()?,
        ))
    }

    async fn wait_state(
        &self,
        token: &str,
        id: &str,
        want: &str,
        secs: u64,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self
                .get(token, &format!("/globalpci/v1/session/{id}"))
                .await?;
            if v["sessionState"] == want || Instant::now() > deadline {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn definition(name: &str) -> anyhow::Result<(String, Interaction)> {
    let path = PathBuf::from("config/interactions").join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((
        name.to_string(),
        Interaction::parse(&text).with_context(|| path.display().to_string())?,
    ))
}

/// Sends the caller's keys as 20 ms PCMU packets (ten times faster than real time: the relay
/// does not care) and returns how many packets went.
async fn key_card(
    sock: &UdpSocket,
    to: SocketAddr,
    keys: &str,
    seed: u32,
) -> anyhow::Result<usize> {
    let signal = tonegate_dsp::generator::human_keying(keys, seed, Some(30.0));
    let mut pkt = [0u8; 172];
    let mut payload = [0u8; 160];
    let frames = signal.samples.chunks_exact(160);
    let n = frames.len();
    for (i, f) in frames.enumerate() {
        G711Law::Ulaw.encode_into(f, &mut payload);
        let len = write_packet(
            &mut pkt,
            0,
            i == 0,
            i as u16,
            (i * 160) as u32,
            0xDE30,
            &payload,
        );
        sock.send_to(&pkt[..len], to).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(n)
}

async fn self_service(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut vars = Variables::new();
    for (k, v) in [
        ("BaseUrl", ctx.base.as_str()),
        ("ClientId", ctx.client_id.as_str()),
        ("ClientSecret", ctx.secret.as_str()),
        ("AccountConfigurationId", ctx.account.as_str()),
        ("CallGuid", "demo-ivr-call"),
        ("CardholderName", "Ada Lovelace"),
        ("CardholderPostCode", "SW1A 1AA"),
        ("CardholderAddress", "10 Downing Street"),
        ("MerchantTxnRef", "DEMO-IVR-1"),
        ("Amount", "19.99"),
    ] {
        vars.insert(k.into(), json!(v));
    }
    let engine = InteractionRunner::new(Duration::from_secs(10), 0);
    let steps = vec![
        definition("authorize.xml")?,
        definition("selfservicesession.xml")?,
    ];
    run_plan(&engine, &steps, &mut vars, None, |_, _, _| {}).await?;
    let id = vars
        .get("GlobalPCI|SessionId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    report.check(
        vars["AuthorizeResponseCode"] == 200,
        "IVR authorized with authorize.xml (OAuth2 client credentials)",
    );
    report.check(
        !id.is_empty(),
        &format!(
            "session {id} created with selfservicesession.xml (dtmfLinkId {})",
            vars.get("PCIPal|DtmfLinkId")
                .and_then(Value::as_str)
                .unwrap_or("-")
        ),
    );
    let caller = UdpSocket::bind("127.0.0.1:0").await?;
    let (call, relay) = ctx
        .relay_call("demo-ivr-call", caller.local_addr()?, None)
        .await?;
    let tok = ctx.token("globalpci").await?;
    let v = ctx.wait_state(&tok, &id, "Capturing", 10).await?;
    report.check(
        v["sessionState"] == "Capturing",
        &format!("call {call} bridged through the relay: secure mode on, capture started"),
    );
    // The caller hears the first prompt before keying.
    let mut buf = [0u8; 2048];
    let heard = tokio::time::timeout(Duration::from_secs(5), caller.recv_from(&mut buf))
        .await
        .is_ok();
    report.check(
        heard,
        "caller hears \"Please enter your card number…\" as RTP",
    );
    key_card(&caller, relay, CARD_KEYS, 1).await?;
    let v = ctx.wait_state(&tok, &id, "Completed", 20).await?;
    let relay_tok = ctx.token("relay").await?;
    let c = ctx
        .get(&relay_tok, &format!("/relay/v1/calls/{call}"))
        .await?;
    let keyed = CARD_KEYS.len() as u64;
    report.check(
        c["counters"]["keys_captured"].as_u64() == Some(keyed),
        &format!("caller keyed PAN#, MMYY#, CVV as in-band DTMF: {} of {keyed} keys captured (never logged)", c["counters"]["keys_captured"]),
    );
    report.check(
        v["sessionState"] == "Completed",
        &format!(
            "payment approved by the sandbox PSP: {} {}",
            v["maskedPan"].as_str().unwrap_or("-"),
            v["pspTransactionId"].as_str().unwrap_or("-")
        ),
    );
    let status = vec![definition("sessionstatus.xml")?];
    run_plan(
        &engine,
        &status,
        &mut vars,
        Some(&crate::interaction::Poll::session_state(
            Duration::from_millis(200),
            Duration::from_secs(10),
        )),
        |_, _, _| {},
    )
    .await?;
    report.check(
        vars["GlobalPCI|SessionState"] == "Completed",
        "IVR polled sessionstatus.xml: GlobalPCI|SessionState = Completed",
    );
    Ok(())
}

async fn agent_assisted(ctx: &Ctx, out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let tok = ctx.token("globalpci").await?;
    let v = ctx
        .post(&tok, "/globalpci/v1/agentsession/", json!({"AccountConfigurationId": ctx.account, "CallGuid": "demo-agent-call",
            "PaymentData": {"cardholderName": "Ada Lovelace", "merchantTxnRef": "DEMO-AGENT-1", "amount": "42.00"}}))
        .await?;
    let Some(id) = v["sessionId"].as_str().map(str::to_string) else {
        bail!("agent session refused: {v}")
    };
    let ui = format!(
        "{}?code={}",
        v["paymentUiUrl"].as_str().unwrap_or(""),
        v["paymentUiCredentials"]["accessCode"]
            .as_str()
            .unwrap_or("")
    );
    report.check(
        true,
        &format!("agent session {id} created; payment UI for the agent's desktop:\n      {ui}"),
    );
    let caller = UdpSocket::bind("127.0.0.1:0").await?;
    let agent = UdpSocket::bind("127.0.0.1:0").await?;
    let (_call, relay) = ctx
        .relay_call(
            "demo-agent-call",
            caller.local_addr()?,
            Some(agent.local_addr()?),
        )
        .await?;
    let v = ctx.wait_state(&tok, &id, "Capturing", 10).await?;
    report.check(
        v["sessionState"] == "Capturing",
        "call bridged: secure mode on for the caller → agent direction",
    );
    // Record the agent leg while the caller keys.
    let recorder = tokio::spawn(async move {
        let mut audio: Vec<i16> = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), agent.recv_from(&mut buf)).await
        {
            if let Ok(h) = RtpHeader::parse(&buf[..n]) {
                if h.payload_type == 0 {
                    let at = h.timestamp as usize;
                    let payload = &buf[h.payload_start..h.payload_end];
                    if audio.len() < at + payload.len() {
                        audio.resize(at + payload.len(), 0);
                    }
                    G711Law::Ulaw.decode_into(payload, &mut audio[at..at + payload.len()]);
                }
            }
        }
        audio
    });
    let sent = key_card(&caller, relay, CARD_KEYS, 2).await?;
    let audio = recorder.await?;
    let v = ctx.wait_state(&tok, &id, "ReadyToSubmit", 10).await?;
    report.check(
        v["sessionState"] == "ReadyToSubmit",
        "every field valid: session ReadyToSubmit, waiting for the agent's \"Submit payment\"",
    );
    let wav = out.join("agent-leg.wav");
    crate::wav::write_pcm8k(&wav, &audio)?;
    let mut det = DtmfDetector::new();
    det.process(&audio);
    det.flush();
    let keys_heard = std::iter::from_fn(|| det.poll_key()).count();
    report.check(
        audio.len() >= sent * 150 && keys_heard == 0,
        &format!(
            "agent leg checked for keys: {keys_heard} heard in {:.1} s of audio ({})",
            audio.len() as f64 / 8000.0,
            wav.display()
        ),
    );
    let v = ctx
        .post(
            &tok,
            &format!("/globalpci/v1/session/{id}/submit"),
            json!({}),
        )
        .await?;
    report.check(
        v["sessionState"] == "Completed",
        &format!(
            "agent submitted; approved: {} {}",
            v["maskedPan"].as_str().unwrap_or("-"),
            v["pspTransactionId"].as_str().unwrap_or("-")
        ),
    );
    Ok(())
}
