//! Writes the generated audio fixtures the tests use into `fixtures/audio/`.
//!
//!     cargo run --example make_fixtures
//!
//! Each WAV (8 kHz mono 16-bit) comes with a JSON truth file listing its keys and their
//! positions in ms. The speech fixtures are made separately by `fixtures/speech/make.sh`.

use std::path::Path;

use serde_json::json;
use tonegate_dsp::generator::{human_keying, KeyedSignal};

fn write(dir: &Path, name: &str, s: &KeyedSignal, about: &str) -> anyhow::Result<()> {
    tonegate::wav::write_pcm8k(&dir.join(format!("{name}.wav")), &s.samples)?;
    let keys: Vec<_> = s
        .keys
        .iter()
        .map(|k| json!({"digit": k.key.as_char().to_string(), "start_ms": k.range.start / 8, "end_ms": k.range.end / 8}))
        .collect();
    let truth = json!({ "about": about, "keys": s.key_string(), "digits": keys, "seconds": s.samples.len() as f64 / 8000.0 });
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&truth)? + "\n",
    )?;
    println!(
        "wrote {name}.wav ({:.1} s, {} keys)",
        s.samples.len() as f64 / 8000.0,
        s.keys.len()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio");
    std::fs::create_dir_all(&dir)?;
    write(
        &dir,
        "card_entry",
        &human_keying("4242424242424242#1230#737#", 20261122, Some(25.0)),
        "PAN#, MMYY#, CVV# keyed at human pace over a line with white noise 25 dB below a -10 dBm0 key",
    )?;
    write(
        &dir,
        "card_entry_amex",
        &human_keying("378282246310005#0931#1234#", 7, Some(20.0)),
        "Amex PAN (15 digits) with a 4-digit CVV, noise 20 dB below a -10 dBm0 key",
    )?;
    Ok(())
}
