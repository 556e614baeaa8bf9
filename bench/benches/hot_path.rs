//! The audio hot path, per 20 ms frame (160 samples): G.711 decode and encode, the Goertzel
//! bank against the `goertzel-filter` crate (the baseline), the detector on speech and on
//! keys, the masker, and the whole decode → detect/mask → encode step; plus the detector's
//! throughput over a whole speech recording. One packet through a call's media logic is
//! `tonegate-media`'s `relay_packet` bench.
//!
//!     cargo bench -p tonegate-bench --bench hot_path
//!
//! Ratios worth reading: `goertzel/bank` vs `goertzel/goertzel_filter_crate` (same frame, same
//! eight frequencies), and `detector/speech_file` in audio-seconds per second (elements are
//! samples: divide by 8000) against spandsp's `spandsp_detect F.wav --bench N`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "../../dsp/tests/baseline/mod.rs"]
mod baseline;
use baseline::{bin_exact_argument, nearest_bin};
use tonegate_dsp::goertzel::{BlockTerms, GoertzelBank};
use tonegate_dsp::key::{COL_HZ, ROW_HZ};
use tonegate_dsp::{DtmfDetector, G711Law, Masker, MaskingMode, FRAME_SAMPLES};

mod fixtures;
use fixtures::{load, ulaw_payloads};

/// The frames of a recording, cycled through one per iteration.
struct Frames {
    frames: Vec<[i16; FRAME_SAMPLES]>,
    next: usize,
}

impl Frames {
    fn new(samples: &[i16]) -> Self {
        let frames = samples
            .chunks_exact(FRAME_SAMPLES)
            .map(|c| c.try_into().unwrap())
            .collect();
        Frames { frames, next: 0 }
    }
    fn next(&mut self) -> &[i16; FRAME_SAMPLES] {
        let f = &self.frames[self.next];
        self.next = (self.next + 1) % self.frames.len();
        f
    }
}

fn g711(c: &mut Criterion) {
    let speech = load("speech/speech_en.wav");
    let frame: [i16; FRAME_SAMPLES] = speech[8000..8000 + FRAME_SAMPLES].try_into().unwrap();
    let mut codes = [0u8; FRAME_SAMPLES];
    G711Law::Ulaw.encode_into(&frame, &mut codes);
    let mut g = c.benchmark_group("g711");
    g.throughput(Throughput::Elements(FRAME_SAMPLES as u64));
    g.bench_function("ulaw_decode_frame", |b| {
        let mut out = [0i16; FRAME_SAMPLES];
        b.iter(|| G711Law::Ulaw.decode_into(black_box(&codes), &mut out))
    });
    g.bench_function("ulaw_encode_frame", |b| {
        let mut out = [0u8; FRAME_SAMPLES];
        b.iter(|| G711Law::Ulaw.encode_into(black_box(&frame), &mut out))
    });
    g.bench_function("alaw_encode_frame", |b| {
        let mut out = [0u8; FRAME_SAMPLES];
        b.iter(|| G711Law::Alaw.encode_into(black_box(&frame), &mut out))
    });
    g.finish();
}

fn goertzel(c: &mut Criterion) {
    let speech = load("speech/speech_en.wav");
    let frame: Vec<f32> = speech[8000..8000 + FRAME_SAMPLES]
        .iter()
        .map(|&s| s as f32)
        .collect();
    let mut g = c.benchmark_group("goertzel");
    g.throughput(Throughput::Elements(FRAME_SAMPLES as u64));
    let mut freqs = [0f32; 8];
    freqs[..4].copy_from_slice(&ROW_HZ);
    freqs[4..].copy_from_slice(&COL_HZ);
    let bank = GoertzelBank::new(freqs, 8000.0);
    // Eight frequencies over one 160-sample frame, as four 40-sample blocks (the detector's use).
    g.bench_function("bank", |b| {
        let mut out = [BlockTerms::default(); 4];
        b.iter(|| bank.run::<4, 40>(black_box(&frame), &mut out))
    });
    // The same eight frequencies over the same frame with the goertzel-filter crate.
    let x64: Vec<f64> = frame.iter().map(|&v| v as f64).collect();
    let args: Vec<f64> = freqs
        .iter()
        .map(|&f| bin_exact_argument(nearest_bin(f, FRAME_SAMPLES), FRAME_SAMPLES))
        .collect();
    g.bench_function("goertzel_filter_crate", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for &a in &args {
                sum += goertzel_filter::dft_power(black_box(&x64), a);
            }
            sum
        })
    });
    g.finish();
}

fn detector(c: &mut Criterion) {
    let speech = load("speech/speech_en.wav");
    let keys = load("audio/card_entry.wav");
    let mut g = c.benchmark_group("detector");
    g.throughput(Throughput::Elements(FRAME_SAMPLES as u64));
    for (name, samples) in [("frame_speech", &speech), ("frame_card_entry", &keys)] {
        let mut frames = Frames::new(samples);
        let mut det = DtmfDetector::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                det.process(black_box(frames.next()));
                while det.poll_key().is_some() {}
            })
        });
    }
    g.throughput(Throughput::Elements(speech.len() as u64));
    g.sample_size(20);
    g.bench_function("speech_file", |b| {
        b.iter(|| {
            let mut det = DtmfDetector::new();
            for f in speech.chunks(FRAME_SAMPLES) {
                det.process(f);
                while det.poll_key().is_some() {}
            }
            det.flush();
        })
    });
    g.finish();
}

fn masker(c: &mut Criterion) {
    let keys = load("audio/card_entry.wav");
    let speech = load("speech/speech_en.wav");
    let mut g = c.benchmark_group("masker");
    g.throughput(Throughput::Elements(FRAME_SAMPLES as u64));
    // Detect (capture and presence tests) and decide, filling replacement audio where told
    // (silence and beep modes), on keys and on speech.
    for (name, mode, input) in [
        ("frame_silence", MaskingMode::Silence, &keys),
        ("frame_beep", MaskingMode::Beep, &keys),
        ("frame_speech", MaskingMode::Silence, &speech),
    ] {
        let mut frames = Frames::new(input);
        let mut m = Masker::new(mode, 1).unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        g.bench_function(name, |b| {
            b.iter(|| {
                m.push(black_box(frames.next()));
                while let Some(v) = m.poll_verdict() {
                    if v.replace {
                        m.fill_replacement(&mut out);
                    }
                }
                while m.poll_key().is_some() {}
            })
        });
    }
    // The independent output guard on one outgoing frame.
    let mut frames = Frames::new(&speech);
    let mut guard = tonegate_dsp::OutputGuard::new();
    g.bench_function("output_guard_frame", |b| {
        b.iter(|| black_box(guard.check(black_box(frames.next()))))
    });
    // The relay's whole per-packet audio work: μ-law payload in, masked μ-law payload out.
    let payloads = ulaw_payloads(&keys);
    let n = payloads.len();
    let mut i = 0;
    let mut m = Masker::new(MaskingMode::Beep, 1).unwrap();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut fill = [0i16; FRAME_SAMPLES];
    let mut out = [0u8; FRAME_SAMPLES];
    g.bench_function("decode_detect_mask_encode", |b| {
        b.iter(|| {
            G711Law::Ulaw.decode_into(black_box(&payloads[i]), &mut pcm);
            m.push(&pcm);
            while let Some(v) = m.poll_verdict() {
                if v.replace {
                    m.fill_replacement(&mut fill);
                    G711Law::Ulaw.encode_into(&fill, &mut out);
                }
            }
            black_box(&out);
            while m.poll_key().is_some() {}
            i = (i + 1) % n;
        })
    });
    g.finish();
}

criterion_group!(benches, g711, goertzel, detector, masker);
criterion_main!(benches);
