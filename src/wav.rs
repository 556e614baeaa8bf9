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
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| WavError::Io {
        path: shown.clone(),
        source,
    })?;
    // The file opened: whatever hound cannot make sense of is not a usable WAV.
    let reader =
        hound::WavReader::new(std::io::BufReader::new(file)).map_err(|e| WavError::NotWav {
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
    let declared = reader.len() as usize;
    let samples: Result<Vec<i16>, _> = reader.into_samples::<i16>().collect();
    let samples = samples.map_err(|e| WavError::Truncated {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if samples.len() != declared {
        return Err(WavError::Truncated {
            path: shown,
            reason: format!(
                "header declares {declared} samples, found {}",
                samples.len()
            ),
        });
    }
    Ok(samples)
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
