//! Reading and writing 8 kHz mono 16-bit WAV files (hound), with clear errors.

use std::path::Path;

use thiserror::Error;

/// Why a WAV file cannot be used.
#[derive(Debug, Error)]
pub enum WavError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Not a RIFF/WAVE file, or its header is damaged.
    #[error("{path} is not a valid WAV file: {reason}")]
    NotWav {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// A header field is outside what the detector accepts.
    #[error("{path}: {what} is {found}, need {need}")]
    Unsupported {
        /// The file.
        path: String,
        /// Which property.
        what: &'static str,
        /// What the file has.
        found: String,
        /// What is required.
        need: &'static str,
    },
    /// The data chunk ends before its declared length.
    #[error("{path} is truncated: {reason}")]
    Truncated {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
}

/// Reads a mono 16-bit 8 kHz PCM WAV file.
pub fn read_pcm8k(path: &Path) -> Result<Vec<i16>, WavError> {
    let mut reader = Pcm8kReader::open(path)?;
    let mut samples = vec![0i16; reader.remaining()];
    let mut at = 0;
    while at < samples.len() {
        at += reader.read(&mut samples[at..])?;
    }
    Ok(samples)
}

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 1 << 16;

/// A mono 16-bit 8 kHz PCM WAV file, read in chunks.
///
/// hound parses and checks the header; the samples are then read in 64 KiB blocks and
/// converted in bulk. hound's per-sample iterator made reading a file cost twice as much as
/// detecting the keys in it (`tonegate detect` on an hour of speech: 0.48× spandsp's whole
/// command with it, several times faster without it; see the README).
pub struct Pcm8kReader {
    path: String,
    /// Data bytes hound's buffered reader had already read past the header.
    leftover: std::io::Cursor<Vec<u8>>,
    file: std::fs::File,
    remaining: usize,
    bytes: Vec<u8>,
}

impl Pcm8kReader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Pcm8kReader, WavError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| WavError::Io {
            path: shown.clone(),
            source,
        })?;
        // The file opened: whatever hound cannot make sense of is not a usable WAV.
        let reader = hound::WavReader::new(std::io::BufReader::with_capacity(READ_CHUNK, file))
            .map_err(|e| WavError::NotWav {
                path: shown.clone(),
                reason: match e {
                    hound::Error::IoError(_) => "the file ends inside the header".into(),
                    other => other.to_string(),
                },
            })?;
        let spec = reader.spec();
        let unsupported = |what, found: String, need| WavError::Unsupported {
            path: shown.clone(),
            what,
            found,
            need,
        };
        if spec.channels != 1 {
            return Err(unsupported(
                "channel count",
                spec.channels.to_string(),
                "1 (mono)",
            ));
        }
        if spec.sample_format != hound::SampleFormat::Int {
            return Err(unsupported(
                "sample format",
                "floating point".into(),
                "16-bit integer PCM",
            ));
        }
        if spec.bits_per_sample != 16 {
            return Err(unsupported(
                "sample size",
                format!("{} bits", spec.bits_per_sample),
                "16 bits",
            ));
        }
        if spec.sample_rate != 8000 {
            return Err(unsupported(
                "sample rate",
                format!("{} Hz", spec.sample_rate),
                "8000 Hz (resample first, e.g. `sox IN.wav -r 8000 OUT.wav`)",
            ));
        }
        let remaining = reader.len() as usize;
        // hound stops right at the start of the data chunk; what its buffer holds beyond that
        // is data. The rest is read straight from the file, one copy per block.
        let buffered = reader.into_inner();
        let leftover = std::io::Cursor::new(buffered.buffer().to_vec());
        Ok(Pcm8kReader {
            path: shown,
            leftover,
            file: buffered.into_inner(),
            remaining,
            bytes: Vec::with_capacity(READ_CHUNK),
        })
    }

    /// Samples the header declares that have not been read yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Reads up to `out.len()` samples (at most 32 Ki at a time); 0 once all are read. A file
    /// shorter than its header declares is an error.
    pub fn read(&mut self, out: &mut [i16]) -> Result<usize, WavError> {
        use std::io::Read;
        let n = out.len().min(self.remaining).min(READ_CHUNK / 2);
        if n == 0 {
            return Ok(0);
        }
        self.bytes.resize(n * 2, 0);
        let from_buffer = self.leftover.read(&mut self.bytes).unwrap_or(0);
        if let Err(e) = self.file.read_exact(&mut self.bytes[from_buffer..]) {
            return Err(WavError::Truncated {
                path: self.path.clone(),
                reason: match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => format!(
                        "header declares {} more samples than the file holds",
                        self.remaining
                    ),
                    _ => e.to_string(),
                },
            });
        }
        for (o, b) in out.iter_mut().zip(self.bytes.chunks_exact(2)) {
            *o = i16::from_le_bytes([b[0], b[1]]);
        }
        self.remaining -= n;
        Ok(n)
    }
}

/// Writes samples as a mono 16-bit 8 kHz PCM WAV file.
pub fn write_pcm8k(path: &Path, samples: &[i16]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    let mut i16w = w.get_i16_writer(samples.len() as u32);
    for &s in samples {
        i16w.write_sample(s);
    }
    i16w.flush()?;
    w.finalize()
}
