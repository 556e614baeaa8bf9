//! The workspace's crate graph is the data path: the sans-IO crates depend on no IO library,
//! the relay on no HTTP, database or gateway crate, and no crate has a module cycle.

use std::process::Command;

/// What none of the sans-IO crates may pull in, directly or through another crate.
const IO_CRATES: &[&str] = &[
    "tokio", "axum", "hyper", "reqwest", "rusqlite", "mio", "tower",
];

/// The crates `krate` depends on at run time, directly or not (`cargo tree -e normal`), by
/// name; its own name first.
fn normal_deps(krate: &str) -> Vec<String> {
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
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some(krate),
        "{krate} is not first in its own tree: {names:?}"
    );
    names
}

#[test]
fn sans_io_crates_depend_on_no_io_library() {
    // (`tonegate-interaction` is not one: it runs an ApiInteraction's HTTP requests itself.)
    for krate in [
        "tonegate-dsp",
        "tonegate-media",
        "tonegate-card",
        "tonegate-session",
        "tonegate-ng",
    ] {
        let deps = normal_deps(krate);
        for name in &deps {
            assert!(
                !IO_CRATES.contains(&name.as_str()),
                "{krate} depends on {name}: {deps:?}"
            );
        }
    }
}

#[test]
fn the_relay_depends_on_the_media_core_and_no_http_database_or_gateway() {
    // dsp <- media <- relay <- gateway: the relay moves datagrams (tokio, io_uring) and knows
    // nothing of HTTP, SQLite, sessions or card capture.
    let deps = normal_deps("tonegate-relay");
    for needed in ["tonegate-media", "tonegate-dsp", "tokio"] {
        assert!(deps.iter().any(|d| d == needed), "no {needed}: {deps:?}");
    }
    assert_depends_on_none(
        "tonegate-relay",
        &deps,
        &[
            "tonegate",
            "tonegate-card",
            "tonegate-interaction",
            "axum",
            "hyper",
            "reqwest",
            "rusqlite",
            "tower",
        ],
    );
}

/// Fails naming the first of `banned` in `krate`'s `deps`.
fn assert_depends_on_none(krate: &str, deps: &[String], banned: &[&str]) {
    for banned in banned {
        assert!(
            !deps.iter().any(|d| d == banned),
            "{krate} depends on {banned}: {deps:?}"
        );
    }
}

/// The per-crate bans on clocks and thread RNGs are in place (clippy reads each crate's
/// clippy.toml; `cargo clippy --workspace -- -D warnings` enforces them).
#[test]
fn sans_io_crates_ban_clocks_and_thread_rngs() {
    for dir in ["dsp", "media", "card", "session", "ng"] {
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

#[test]
fn the_ng_protocol_crate_stands_alone() {
    // The protocol knows nothing of the relay, the media core or the gateway: the gateway's ng
    // module carries its commands out.
    let deps = normal_deps("tonegate-ng");
    assert_depends_on_none(
        "tonegate-ng",
        &deps,
        &[
            "tonegate",
            "tonegate-relay",
            "tonegate-media",
            "tonegate-card",
        ],
    );
}

#[test]
fn unsafe_is_denied_everywhere_and_forbidden_where_no_crate_needs_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let workspace = read("Cargo.toml");
    let lints = workspace
        .split("[workspace.lints.rust]")
        .nth(1)
        .unwrap_or("");
    assert!(
        lints.contains("unsafe_code = \"deny\""),
        "the workspace does not deny unsafe code"
    );
    for dir in [
        ".",
        "dsp",
        "media",
        "relay",
        "card",
        "interaction",
        "session",
        "ng",
        "bench",
    ] {
        let manifest = read(&format!("{dir}/Cargo.toml"));
        let own = manifest.split("\n[lints]").nth(1).unwrap_or("");
        assert!(
            own.trim_start().starts_with("workspace = true"),
            "{dir}/Cargo.toml does not take the workspace lints"
        );
    }
    // Crates with no `unsafe` at all forbid it, so no allow can creep in.
    for dir in ["dsp", "media", "interaction", "session", "ng", "bench"] {
        assert!(
            read(&format!("{dir}/src/lib.rs")).contains("#![forbid(unsafe_code)]"),
            "{dir}/src/lib.rs does not forbid unsafe code"
        );
    }
}

/// The modules of one crate (`src` directory) and which refer to which: `crate::a::b` paths
/// and `super::` paths, in code outside `#[cfg(test)]` sections and comments.
struct ModuleGraph {
    /// Module path ("session::store") to the module paths it refers to.
    edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl ModuleGraph {
    fn of(src: &std::path::Path) -> ModuleGraph {
        let mut files = Vec::new();
        let mut dirs = vec![src.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let module_of = |p: &std::path::Path| -> String {
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            parts.join("::")
        };
        let modules: std::collections::BTreeSet<String> =
            files.iter().map(|f| module_of(f)).collect();
        // The longest module that `path` (segments from the crate root) names.
        let resolve = |path: &[&str]| -> Option<String> {
            (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m))
        };
        let mut edges: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> =
            Default::default();
        for f in &files {
            let me = module_of(f);
            let text = std::fs::read_to_string(f).unwrap();
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap())
                .collect::<Vec<_>>()
                .join("\n");
            let own: Vec<&str> = if me.is_empty() {
                vec![]
            } else {
                me.split("::").collect()
            };
            let is_dir_module = f.file_stem().is_some_and(|s| s == "mod");
            // `super` from a file `a/b.rs` is `a`; from `a/b/mod.rs` it is also `a`.
            let parent: Vec<&str> = own[..own.len().saturating_sub(1)].to_vec();
            let _ = is_dir_module;
            for (prefix, base) in [("crate::", vec![]), ("super::", parent)] {
                for (i, _) in code.match_indices(prefix) {
                    if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                        continue;
                    }
                    let rest = &code[i + prefix.len()..];
                    // A group: `crate::{a::x, b}` names each of its members.
                    let members: Vec<&str> = match rest.strip_prefix('{') {
                        Some(g) => g[..g.find('}').unwrap_or(0)].split(',').collect(),
                        None => vec![rest],
                    };
                    for m in members {
                        let segs: Vec<&str> = m
                            .trim()
                            .split("::")
                            .map(|s| {
                                s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                                    .next()
                                    .unwrap()
                            })
                            .take_while(|s| !s.is_empty())
                            .collect();
                        let mut path = base.clone();
                        path.extend(segs);
                        if let Some(target) = resolve(&path) {
                            if target != me {
                                edges.entry(me.clone()).or_default().insert(target);
                            }
                        }
                    }
                }
            }
        }
        ModuleGraph { edges }
    }

    /// Edges between the children of `parent` ("" for the crate root's modules), each child
    /// standing for everything below it; references to `parent` itself are left out.
    fn level(
        &self,
        parent: &str,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        let child = |m: &str| -> Option<String> {
            let rest = if parent.is_empty() {
                m
            } else {
                m.strip_prefix(parent)?.strip_prefix("::")?
            };
            let first = rest.split("::").next().filter(|s| !s.is_empty())?;
            Some(if parent.is_empty() {
                first.to_string()
            } else {
                format!("{parent}::{first}")
            })
        };
        let mut out: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> =
            Default::default();
        for (from, tos) in &self.edges {
            let Some(a) = child(from) else { continue };
            for to in tos {
                if let Some(b) = child(to).filter(|b| *b != a) {
                    out.entry(a.clone()).or_default().insert(b);
                }
            }
        }
        out
    }
}

/// A cycle in `g`, if there is one.
fn find_cycle(
    g: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        done: &mut std::collections::BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = Default::default();
    g.keys()
        .find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
}

#[test]
fn no_crate_has_a_module_cycle() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in [
        "src",
        "dsp/src",
        "media/src",
        "relay/src",
        "card/src",
        "interaction/src",
        "ng/src",
    ] {
        let graph = ModuleGraph::of(&root.join(src));
        // Every directory module's children, and the crate's top-level modules.
        let mut parents: Vec<String> = vec![String::new()];
        parents.extend(graph.edges.keys().flat_map(|m| {
            let parts: Vec<&str> = m.split("::").collect();
            (1..parts.len()).map(move |n| parts[..n].join("::"))
        }));
        parents.sort();
        parents.dedup();
        for p in &parents {
            let level = graph.level(p);
            if let Some(c) = find_cycle(&level) {
                panic!("{src}: modules in a cycle: {}", c.join(" -> "));
            }
        }
    }
}

#[test]
fn the_module_check_finds_a_cycle() {
    // The check above must see the kind of cycle the gateway had (sms -> session -> sms).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("session")).unwrap();
    std::fs::write(
        dir.path().join("lib.rs"),
        "pub mod session;\npub mod sms;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("session/mod.rs"),
        "pub mod store;\nuse crate::sms::SmsSender;\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("session/store.rs"), "pub struct Store;\n").unwrap();
    std::fs::write(
        dir.path().join("sms.rs"),
        "use crate::{psp, session::store::Store};\n",
    )
    .unwrap();
    let graph = ModuleGraph::of(dir.path());
    let c = find_cycle(&graph.level("")).expect("a cycle");
    assert!(
        c.contains(&"sms".to_string()) && c.contains(&"session".to_string()),
        "{c:?}"
    );
    // Without the back edge: none.
    std::fs::write(dir.path().join("sms.rs"), "use crate::psp;\n").unwrap();
    assert_eq!(find_cycle(&ModuleGraph::of(dir.path()).level("")), None);
}

/// Every `.rs` file under `dir`, `target` and hidden folders left out.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    dirs.push(p);
                }
            } else if name.ends_with(".rs") {
                files.push(p);
            }
        }
    }
    files
}

/// The files whose code (comments left out) names the card crate's `egress` module.
fn egress_users(root: &std::path::Path) -> Vec<String> {
    let mut users: Vec<String> = rust_files(root)
        .into_iter()
        .filter(|f| {
            let code: String = std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap())
                .collect();
            code.contains("egress")
        })
        .map(|f| f.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    users.sort();
    users
}

#[test]
fn card_digits_leave_only_through_the_psp_adapters() {
    // The card crate keeps every digit accessor private, so `card::egress` is the only way to
    // turn a card into bytes; this says who may use it: the card crate itself and the two PSP
    // adapters, nothing else (not the API, the sessions, the relay, a test or a bench; this
    // file names it only to look for it).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let outside: Vec<String> = egress_users(root)
        .into_iter()
        .filter(|f| !f.starts_with("card/src/") && f != "tests/gateway/crate_graph.rs")
        .collect();
    assert_eq!(outside, ["src/psp/sandbox.rs", "src/psp/stripe.rs"]);
}

#[test]
fn the_egress_check_sees_a_new_user() {
    let dir = std::env::temp_dir().join(format!("tonegate-egress-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src/api")).unwrap();
    std::fs::write(
        dir.join("src/api/pages.rs"),
        "// egress in a comment is fine\nfn f() {}\n",
    )
    .unwrap();
    assert!(egress_users(&dir).is_empty());
    std::fs::write(
        dir.join("src/api/pages.rs"),
        "use crate::card::egress::pan_is; // sneaking a look\n",
    )
    .unwrap();
    assert_eq!(egress_users(&dir), ["src/api/pages.rs"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
