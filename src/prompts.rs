//! IVR prompt sets: `config/prompts/<set>/<name>.wav` (8 kHz mono 16-bit, made by
//! `config/prompts/make.sh`), loaded once at start-up. Accounts choose a set (`prompts = "en"`).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::media::Clip;

/// Every prompt a self-service call may hear.
pub const PROMPT_NAMES: [&str; 12] = [
    "enter_card_number",
    "invalid_card",
    "enter_expiry",
    "expired_card",
    "enter_security_code",
    "enter_postcode",
    "invalid_entry",
    "processing",
    "approved",
    "declined",
    "too_many_attempts",
    "goodbye",
];

/// `[prompts]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptConfig {
    /// Directory holding one subdirectory per prompt set.
    pub dir: std::path::PathBuf,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            // Beside the config file (relative paths are resolved against its directory).
            dir: "prompts".into(),
        }
    }
}

/// Loaded prompt sets.
#[derive(Debug, Default)]
pub struct Prompts {
    sets: HashMap<String, HashMap<String, Clip>>,
}

impl Prompts {
    /// Loads every set under `dir` (a missing directory gives no prompts, with a warning).
    pub fn load(dir: &Path) -> anyhow::Result<Prompts> {
        use anyhow::Context;
        let mut sets = HashMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::warn!(dir = %dir.display(), "no prompt directory: self-service calls will be silent");
            return Ok(Prompts { sets });
        };
        for entry in entries.flatten() {
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut set = HashMap::new();
            for p in PROMPT_NAMES {
                let path = entry.path().join(format!("{p}.wav"));
                if path.exists() {
                    let samples = crate::wav::read_pcm8k(&path)
                        .with_context(|| format!("prompt {}", path.display()))?;
                    set.insert(p.to_string(), Clip::from(samples));
                }
            }
            sets.insert(name, set);
        }
        Ok(Prompts { sets })
    }

    /// A prompt from a set (falling back to `en`).
    pub fn get(&self, set: &str, name: &str) -> Option<Clip> {
        self.sets
            .get(set)
            .and_then(|s| s.get(name))
            .or_else(|| self.sets.get("en").and_then(|s| s.get(name)))
            .cloned()
    }

    /// Names of the loaded sets.
    pub fn sets(&self) -> Vec<&str> {
        self.sets.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sets_are_complete() {
        let p =
            Prompts::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts")).unwrap();
        for set in ["en", "de"] {
            for name in PROMPT_NAMES {
                assert!(
                    p.sets.get(set).is_some_and(|s| s.contains_key(name)),
                    "{set}/{name}"
                );
            }
        }
        assert!(p.get("fr", "goodbye").is_some(), "falls back to en");
    }
}
