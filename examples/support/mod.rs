//! What the load tools share: a `tonegate serve` child on loopback with a load-sized config,
//! and readings of its CPU time, open files and memory from /proc.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// User + system CPU seconds of a process.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Open file descriptors of a process.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Resident memory of a process, MiB.
pub fn resident_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A `tonegate serve` child this tool started; SIGTERM (then kill) when dropped.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Its base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

/// Starts `binary` on the shipped config sized for `calls` calls on `engine`, with `edit`
/// applied to the config table last.
pub fn start_gateway(
    binary: &str,
    calls: usize,
    engine: &str,
    edit: impl FnOnce(&mut toml::Table) -> anyhow::Result<()>,
) -> anyhow::Result<Gateway> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("load.toml");
    let shipped =
        std::fs::read_to_string("config/tonegate.toml").context("run from the project root")?;
    let mut t: toml::Table = toml::from_str(&shipped)?;
    t["server"]["listen"] = toml::Value::String("127.0.0.1:0".into());
    t["store"]["sqlite_path"] =
        toml::Value::String(dir.path().join("load.db").display().to_string());
    let relay = t["relay"].as_table_mut().context("[relay]")?;
    relay.insert("port_min".into(), toml::Value::Integer(20000));
    relay.insert(
        "port_max".into(),
        toml::Value::Integer(20000 + (calls as i64) * 4 + 100),
    );
    relay.insert("max_calls".into(), toml::Value::Integer(calls as i64 + 10));
    // One client drives every call here: it may hold them all.
    relay.insert(
        "max_calls_per_client".into(),
        toml::Value::Integer(calls as i64 + 10),
    );
    relay.insert("engine".into(), toml::Value::String(engine.into()));
    t["log"]["level"] = toml::Value::String("warn,tonegate::server=info".into());
    edit(&mut t)?;
    std::fs::write(&cfg, toml::to_string(&t)?)?;
    let mut child = Command::new(binary)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {binary} (cargo build --release first)"))?;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        anyhow::ensure!(Instant::now() < deadline, "gateway did not start");
        let line = lines.next().context("gateway exited")??;
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()?;
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(Gateway {
        child,
        addr,
        _dir: dir,
    })
}

/// The `q` quantile of sorted nanosecond samples, in ms.
pub fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1e6
}
