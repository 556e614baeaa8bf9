//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture path under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// Runs the `tonegate` binary with `args`.
pub fn tonegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("running tonegate")
}

/// Keys printed by `tonegate detect FILE`, as a string; panics unless it exits 0.
pub fn detect_keys(file: &Path) -> String {
    let out = tonegate(&["detect", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "detect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_keys(&String::from_utf8(out.stdout).unwrap())
}

/// Digits from `tonegate detect` JSON lines.
pub fn parse_keys(stdout: &str) -> String {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["digit"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Keys multimon-ng (Debian, an independent decoder) hears in a WAV file, in order.
///
/// multimon-ng reads raw 22.05 kHz audio, so sox resamples first. Panics if either tool is
/// missing: `scripts/test` installs them.
pub fn multimon_keys(file: &Path) -> String {
    let mut sox = Command::new("sox")
        .args([
            file.to_str().unwrap(),
            "-t",
            "raw",
            "-r",
            "22050",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sox is needed (scripts/test installs it)");
    let out = Command::new("multimon-ng")
        .args(["-q", "-c", "-a", "DTMF", "-t", "raw", "-"])
        .stdin(sox.stdout.take().unwrap())
        .output()
        .expect("multimon-ng is needed (scripts/test installs it)");
    assert!(
        sox.wait().expect("waiting for sox").success(),
        "sox failed on {}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("DTMF: "))
        .filter_map(|k| k.chars().next())
        .collect()
}

/// Keys listed in a fixture's JSON truth file.
pub fn truth_keys(json: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["keys"].as_str().unwrap().to_string()
}
