//! The workspace's crate graph is the data path: the sans-IO crates depend on no IO library.

use std::process::Command;

/// What none of the sans-IO crates may pull in, directly or through another crate.
const IO_CRATES: &[&str] = &[
    "tokio", "axum", "hyper", "reqwest", "rusqlite", "mio", "tower",
];

#[test]
fn sans_io_crates_depend_on_no_io_library() {
    for krate in ["tonegate-dsp", "tonegate-media", "tonegate-card"] {
        let out = Command::new(env!("CARGO"))
            .args([
                "tree",
                "-e",
                "normal",
                "--prefix",
                "none",
                "--offline",
                "-p",
                krate,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("running cargo tree");
        assert!(
            out.status.success(),
            "cargo tree -p {krate}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            tree.contains(krate),
            "{krate} is not in its own tree: {tree}"
        );
        for line in tree.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            assert!(
                !IO_CRATES.contains(&name),
                "{krate} depends on {name}:\n{tree}"
            );
        }
    }
}

/// The per-crate bans on clocks and thread RNGs are in place (clippy reads each crate's
/// clippy.toml; `cargo clippy --workspace -- -D warnings` enforces them).
#[test]
fn sans_io_crates_ban_clocks_and_thread_rngs() {
    for dir in ["dsp", "media", "card"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(dir)
            .join("clippy.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for banned in [
            "std::time::Instant::now",
            "std::time::SystemTime::now",
            "rand::thread_rng",
        ] {
            assert!(text.contains(banned), "{path:?} does not ban {banned}");
        }
    }
}
