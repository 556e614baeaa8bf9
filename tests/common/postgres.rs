//! A real PostgreSQL server for the tests (Debian's `postgresql` package): one per test process,
//! started on first use in a temporary directory on a free loopback port, as the unprivileged
//! user `nobody` when the tests run as root (CI does; PostgreSQL refuses root), and a fresh
//! database per test. The server is stopped by the kernel when the test process ends: it is
//! started with a parent-death signal (SIGINT: a fast shutdown) from a thread that never ends.
//!
//! `initdb` runs once per machine into a cached template (`/tmp/tonegate-pg-template-*`,
//! under a lock); each process copies it, which is much faster than `initdb`.
//!
//! `TONEGATE_TEST_POSTGRES_URL` (a server on which the URL's user may create databases) is used
//! instead when set: `scripts/test` starts one server for its whole run and sets it, so test
//! processes start none. Without PostgreSQL the caller skips loudly (`common::skip`, which fails
//! under `TONEGATE_REQUIRE_TOOLS=1`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server this process uses: a base URL without a database name.
fn server() -> Option<&'static str> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("TONEGATE_TEST_POSTGRES_URL") {
                return Some(url.trim_end_matches('/').to_string());
            }
            let Some(bin) = bindir() else {
                super::skip(
                    "PostgreSQL",
                    "initdb and postgres are not installed (Debian's postgresql package; scripts/test installs it)",
                );
                return None;
            };
            Some(start(&bin))
        })
        .as_deref()
}

/// A fresh, empty database on the tests' server, as a `postgresql://` URL; `None` (skipped,
/// loudly) where PostgreSQL is missing.
pub fn database() -> Option<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = server()?;
    // Unique on a server shared by a whole run, where a later test process may get an earlier
    // one's pid: the time of the call tells them apart.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "t_{}_{started}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    exec(
        &format!("{base}/postgres"),
        &format!("CREATE DATABASE {name}"),
    );
    Some(format!("{base}/{name}"))
}

/// A client of the database at `url`, with the runtime that drives its connection.
fn connect(url: &str) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the tests' PostgreSQL");
        tokio::spawn(conn);
        client
    });
    (rt, client)
}

/// Runs `sql` on the database at `url` (what the store's API cannot do: a test's setup).
pub fn exec(url: &str, sql: &str) {
    let (rt, client) = connect(url);
    rt.block_on(client.batch_execute(sql)).unwrap();
}

/// A transaction held open on a database (e.g. a table lock), until released or dropped.
pub struct Held {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

/// Begins a transaction on `url`'s database, runs `sql` in it, and holds it open.
pub fn hold(url: &str, sql: &str) -> Held {
    let (rt, client) = connect(url);
    rt.block_on(client.batch_execute(&format!("BEGIN; {sql}")))
        .unwrap();
    Held { rt, client }
}

impl Held {
    /// Commits the transaction (what it locked is free again).
    pub fn release(self) {
        self.rt
            .block_on(self.client.batch_execute("COMMIT"))
            .unwrap();
    }
}

/// Runs one statement on the database at `url`: the rows it changed, or the server's error
/// (its message, as the server said it).
pub fn try_exec(url: &str, sql: &str) -> Result<usize, String> {
    let (rt, client) = connect(url);
    rt.block_on(client.execute(sql, &[]))
        .map(|n| n as usize)
        .map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string())
        })
}

/// Every row of every table of `url`'s database, as text (`table: col=value, …` per row): what
/// a test scans for card data.
pub fn dump(url: &str) -> String {
    let (rt, client) = connect(url);
    rt.block_on(async {
        let tables = client
            .query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
                &[],
            )
            .await
            .unwrap();
        let mut out = String::new();
        for t in tables {
            let name: String = t.get(0);
            // Each row as its JSON text: every column, whatever its type.
            for r in client
                .query(&format!("SELECT row_to_json(x)::text FROM {name} x"), &[])
                .await
                .unwrap()
            {
                out.push_str(&format!("{name}: {}\n", r.get::<_, String>(0)));
            }
        }
        out
    })
}

/// The newest installed PostgreSQL's binaries.
fn bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TONEGATE_PG_BINDIR") {
        return Some(d.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// Who runs the server: `nobody` when we are root, else ourselves.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: getpwnam with a NUL-terminated name; the entry is read at once, before any other
    // call that could reuse its static storage.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!pw.is_null(), "no user nobody to run PostgreSQL as");
    // SAFETY: non-null, checked above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// The cached `initdb` output for `bin`, made once per machine.
fn template(bin: &Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    let version = bin
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("x")
        .to_string();
    let dir = PathBuf::from(format!("/tmp/tonegate-pg-template-{version}"));
    let lock = std::fs::File::create(format!("/tmp/tonegate-pg-template-{version}.lock")).unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` drops.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if !dir.join("PG_VERSION").exists() {
        let tmp = PathBuf::from(format!("{}.{}", dir.display(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).unwrap();
        chown(&tmp);
        let out = as_server_user(&mut Command::new(bin.join("initdb")))
            .args([
                "-U",
                "tonegate",
                "--auth=trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&tmp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    }
    dir
}

/// Removes the directories of test processes that are gone (one killed before its server's
/// shell could clean up).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tonegate-pg-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Starts this process's server; its URL.
fn start(bin: &Path) -> String {
    let template = template(bin);
    remove_stale();
    let dir = PathBuf::from(format!("/tmp/tonegate-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    chown(&dir);
    let data = dir.join("data");
    let copied = as_server_user(&mut Command::new("cp"))
        .arg("-a")
        .arg(&template)
        .arg(&data)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the PostgreSQL template failed");
    // A free TCP port on loopback, from the ports this process claims (not the relay's range).
    let port = loop {
        let p = super::claimed_port(26000..27000, 1);
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            break p;
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let bin = bin.to_path_buf();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    // A shell (as the server's user) runs the server and removes its directory once it has
    // stopped. The shell's parent-death signal fires when the thread that started it ends:
    // this one waits on it for the rest of the process. The signal makes the shell stop the
    // server by its pid (SIGINT: a fast shutdown).
    std::thread::spawn(move || {
        const SCRIPT: &str = r#"pg="$1"; shift; dir="$1"; shift
"$pg" "$@" & pid=$!
trap 'kill -INT $pid' INT TERM
wait $pid; wait $pid
rm -rf "$dir""#;
        let mut cmd = Command::new("sh");
        as_server_user(&mut cmd)
            .args(["-c", SCRIPT, "sh"])
            .arg(bin.join("postgres"))
            .arg(&dir)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Test data: durability is not wanted, speed is.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it runs after the uid change (std applies
        // uid/gid before pre_exec closures), so the exec of sh keeps it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting postgres");
        tx.send(child.id()).unwrap();
        let _ = child.wait();
        // Stay alive (see above) even if the server ended early.
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().unwrap();
    let base = format!("postgresql://tonegate@127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let up = rt.block_on(async {
            tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
                .await
                .is_ok()
        });
        if up {
            return base;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL (pid {pid}) did not accept connections within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
