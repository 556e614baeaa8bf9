//! `tonegate detect` (design.md contract 1) and `tonegate mask` on the fixtures, and their
//! errors on bad input.

use crate::common;

use common::*;
use std::io::Write;

#[test]
fn card_entry_fixtures_decode_to_exactly_their_keys_with_timing() {
    for name in ["card_entry", "card_entry_amex"] {
        let wav = fixture(&format!("audio/{name}.wav"));
        let out = tonegate(&["detect", wav.to_str().unwrap()]);
        assert!(out.status.success());
        assert!(out.stderr.is_empty(), "nothing but keys may be printed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let truth: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("audio/{name}.json"))).unwrap(),
        )
        .unwrap();
        let want = truth["digits"].as_array().unwrap();
        let got: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["digit"], w["digit"]);
            // Exactly the three contract fields.
            assert_eq!(g.as_object().unwrap().len(), 3);
            for f in ["start_ms", "end_ms"] {
                let d = g[f].as_i64().unwrap() - w[f].as_i64().unwrap();
                assert!(d.abs() <= 10, "{name} {f} off by {d} ms");
            }
        }
    }
}

#[test]
fn speech_fixtures_hold_no_key() {
    for name in ["speech_en", "speech_multi"] {
        assert_eq!(
            detect_keys(&fixture(&format!("speech/{name}.wav"))),
            "",
            "{name}"
        );
    }
}

#[test]
fn multimon_ng_agrees_on_the_unmasked_fixture() {
    // The control for the masking tests: the independent decoder does hear these keys.
    let heard = multimon_keys(&fixture("audio/card_entry.wav"));
    let mut want = truth_keys(&fixture("audio/card_entry.json"));
    want.retain(|c| c != '#');
    let mut heard_no_hash = heard.clone();
    heard_no_hash.retain(|c| c != '#');
    // multimon-ng may repeat a long key; every key must appear in order.
    let mut it = heard_no_hash.chars();
    assert!(
        want.chars().all(|c| it.any(|h| h == c)),
        "multimon-ng heard {heard:?}"
    );
}

#[test]
fn masked_card_entry_is_silent_to_both_decoders_at_lookahead_one() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["silence", "noise", "beep"] {
        let out = dir.path().join(format!("masked_{mode}.wav"));
        let r = tonegate(&[
            "mask",
            fixture("audio/card_entry.wav").to_str().unwrap(),
            out.to_str().unwrap(),
            "--mode",
            mode,
            "--lookahead",
            "1",
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(summary["keys"], 26, "the masker still hears every key");
        assert_eq!(detect_keys(&out), "", "tonegate detect on {mode}");
        assert_eq!(multimon_keys(&out), "", "multimon-ng on {mode}");
    }
}

#[test]
fn speech_is_almost_never_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (mut frames, mut masked) = (0u64, 0u64);
    for name in ["speech_en", "speech_multi"] {
        let out = dir.path().join("m.wav");
        let r = tonegate(&[
            "mask",
            fixture(&format!("speech/{name}.wav")).to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        let s: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        frames += s["frames"].as_u64().unwrap();
        masked += s["masked"].as_u64().unwrap();
    }
    assert!(frames > 3000);
    assert!(
        masked * 100 <= frames,
        "{masked} of {frames} speech frames masked"
    );
}

fn expect_error(file: &std::path::Path, needle: &str) {
    let out = tonegate(&["detect", file.to_str().unwrap()]);
    assert!(!out.status.success(), "should fail for {needle}");
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "stderr {err:?} should mention {needle:?}"
    );
}

fn write_wav(path: &std::path::Path, channels: u16, rate: u32, bits: u16, float: bool) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..1600 {
        match (float, bits) {
            (true, _) => w.write_sample(0.0f32).unwrap(),
            (false, 8) => w.write_sample((i % 100) as i8).unwrap(),
            _ => w.write_sample((i % 100) as i16).unwrap(),
        }
    }
    w.finalize().unwrap();
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    expect_error(&p("missing.wav"), "cannot read");

    std::fs::write(p("text.wav"), "this is not audio").unwrap();
    expect_error(&p("text.wav"), "not a valid WAV");

    std::fs::write(p("empty.wav"), "").unwrap();
    expect_error(&p("empty.wav"), "not a valid WAV");

    write_wav(&p("stereo.wav"), 2, 8000, 16, false);
    expect_error(&p("stereo.wav"), "channel count is 2");

    write_wav(&p("16k.wav"), 1, 16000, 16, false);
    expect_error(&p("16k.wav"), "sample rate is 16000 Hz");

    write_wav(&p("8bit.wav"), 1, 8000, 8, false);
    expect_error(&p("8bit.wav"), "sample size is 8 bits");

    write_wav(&p("float.wav"), 1, 8000, 32, true);
    expect_error(&p("float.wav"), "floating point");

    // A good file cut short in its data chunk.
    write_wav(&p("good.wav"), 1, 8000, 16, false);
    let bytes = std::fs::read(p("good.wav")).unwrap();
    let mut f = std::fs::File::create(p("truncated.wav")).unwrap();
    f.write_all(&bytes[..bytes.len() - 1001]).unwrap();
    drop(f);
    expect_error(&p("truncated.wav"), "truncated");

    // The untouched file is fine and silent.
    assert_eq!(detect_keys(&p("good.wav")), "");
}

#[test]
fn help_and_bad_arguments() {
    let out = tonegate(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "detect", "mask"] {
        assert!(text.contains(cmd), "help lists {cmd}");
    }
    let out = tonegate(&["mask", "a.wav", "b.wav", "--lookahead", "7"]);
    assert!(!out.status.success());
}

#[test]
fn mask_refuses_no_lookahead_unless_told_it_is_unsafe_and_takes_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out_wav = dir.path().join("m.wav");
    let input = fixture("audio/card_entry.wav");
    let (i, o) = (input.to_str().unwrap(), out_wav.to_str().unwrap());
    let out = tonegate(&["mask", i, o, "--lookahead", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--unsafe-no-lookahead"));
    assert!(!out_wav.exists());
    let out = tonegate(&["mask", i, o, "--lookahead", "0", "--unsafe-no-lookahead"]);
    assert!(out.status.success());
    for mode in ["silence", "noise", "comfort_noise", "beep"] {
        let out = tonegate(&["mask", i, o, "--mode", mode]);
        assert!(out.status.success(), "--mode {mode}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(summary["masked"].as_u64().unwrap() > 0, "{mode}: {summary}");
        assert_eq!(
            summary["guarded"], 0,
            "{mode}: the masker left nothing for the guard"
        );
        assert_eq!(detect_keys(&out_wav), "", "{mode}");
    }
}
