//! The tool's options and their limits.

use anyhow::{bail, Context};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Mixed,
    Shared,
    Hold,
}

pub struct Args {
    pub mode: Mode,
    pub method_flood: u64,
    pub per_address: Option<i64>,
    pub calls: usize,
    pub seconds: u64,
    pub idle: usize,
    pub bad_tokens: u64,
    pub sessions: u64,
    pub attack_addresses: usize,
    pub engine: String,
    pub binary: String,
}

pub fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        mode: Mode::Mixed,
        method_flood: 0,
        per_address: None,
        calls: 500,
        seconds: 15,
        idle: 5000,
        bad_tokens: 200,
        sessions: 20,
        attack_addresses: 1,
        engine: "io_uring".into(),
        binary: "target/release/tonegate".into(),
    };
    let mut it = std::env::args().skip(1);
    let (mut idle_set, mut addresses_set) = (false, false);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--calls" => a.calls = v()?.parse()?,
            "--seconds" => a.seconds = v()?.parse()?,
            "--idle" => {
                a.idle = v()?.parse()?;
                idle_set = true;
            }
            "--mode" => {
                a.mode = match v()?.as_str() {
                    "mixed" => Mode::Mixed,
                    "shared" => Mode::Shared,
                    "hold" => Mode::Hold,
                    m => bail!("--mode must be mixed, shared or hold, got {m}"),
                }
            }
            "--method-flood" => a.method_flood = v()?.parse()?,
            "--per-address" => a.per_address = Some(v()?.parse()?),
            "--bad-tokens" => a.bad_tokens = v()?.parse()?,
            "--sessions" => a.sessions = v()?.parse()?,
            "--attack-addresses" => {
                a.attack_addresses = v()?.parse()?;
                addresses_set = true;
            }
            "--engine" => a.engine = v()?,
            "--binary" => a.binary = v()?,
            "-h" | "--help" => {
                println!(
                    "hostile_load [--mode mixed|shared|hold] [--calls N] [--seconds S] [--idle N] \
                     [--bad-tokens N/s] [--sessions N/s] [--attack-addresses N] \
                     [--method-flood N] [--per-address N] [--engine io_uring|tokio] [--binary PATH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    match a.mode {
        Mode::Shared if !idle_set => a.idle = 0,
        Mode::Hold => {
            if !idle_set {
                a.idle = 4000;
            }
            if !addresses_set {
                a.attack_addresses = 4;
            }
            a.bad_tokens = 0;
        }
        _ => {}
    }
    anyhow::ensure!(
        a.method_flood <= 100_000,
        "--method-flood must be at most 100000"
    );
    anyhow::ensure!((1..=5000).contains(&a.calls), "--calls must be 1-5000");
    anyhow::ensure!((1..=300).contains(&a.seconds), "--seconds must be 1-300");
    anyhow::ensure!(a.idle <= 20_000, "--idle must be at most 20000");
    anyhow::ensure!(a.bad_tokens <= 2000, "--bad-tokens must be at most 2000/s");
    anyhow::ensure!(a.sessions <= 200, "--sessions must be at most 200/s");
    anyhow::ensure!(
        (1..=200).contains(&a.attack_addresses),
        "--attack-addresses must be 1-200"
    );
    anyhow::ensure!(
        a.engine == "io_uring" || a.engine == "tokio",
        "--engine must be io_uring or tokio"
    );
    Ok(a)
}
