//! tonegate's criterion benchmarks live in `benches/`; this crate has no code of its own. It is a
//! workspace member apart from `dsp`, `media` and `card` so that `scripts/test` (which excludes
//! it) never builds criterion. Run: `cargo bench -p tonegate-bench --bench hot_path`
//! (or `relay_packet`, `redact`).

// No `unsafe` here, ever (the workspace denies it; this crate forbids even an allow).
#![forbid(unsafe_code)]
