//! `tonegate demo` runs both flows end to end and exits 0 (issue 8; CI runs it).

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_passes_every_check() {
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonegate"))
        .args(["demo", "--out", out.path().to_str().unwrap()])
        .current_dir(common::root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("12 of 12 checks passed"), "{stdout}");
    assert!(!stdout.contains('\u{2717}'), "{stdout}");
    assert!(
        !stdout.contains("4242424242424242"),
        "the demo never prints the card"
    );
    // The recording it names exists and holds no key.
    let wav = out.path().join("agent-leg.wav");
    assert!(wav.exists());
    assert_eq!(common::detect_keys(&wav), "");
    assert_eq!(common::multimon_keys(&wav), "");
}
