//! The relay's settings (`[relay]` in the gateway's TOML, checked when the gateway loads its
//! configuration) and the calls' masking policy.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// When a call's caller → agent keys are masked.
///
/// `call` is the default because it is the only policy that cannot be defeated by timing:
/// keys pressed before a session links to the call, between two captures ("let's try another
/// card") or after a declined payment are masked too, and nobody can turn masking off.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DtmfMasking {
    /// Every key, for the whole life of the call, from its first packet.
    #[default]
    Call,
    /// From the moment a session links to the call (or secure mode is asked for) until it is
    /// released explicitly, or the call ends.
    Session,
}

/// What masked audio frames are replaced with.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MaskingSetting {
    /// Digital silence.
    Silence,
    /// Comfort noise at `comfort_noise_dbm0`.
    ComfortNoise,
    /// A uniform 1 kHz beep.
    Beep,
}

/// RTP relay settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// IPv4 address relay ports are bound on.
    pub bind_ipv4: Ipv4Addr,
    /// IPv6 address relay ports are bound on (calls whose remote is IPv6, or that ask).
    pub bind_ipv6: Ipv6Addr,
    /// Lowest relay port (RTP ports are even, RTCP the odd one above).
    pub port_min: u16,
    /// Highest relay port.
    pub port_max: u16,
    /// A call with no packet on either leg for this long is removed.
    pub media_timeout_s: u64,
    /// Most concurrent calls.
    pub max_calls: usize,
    /// Most live calls one client (ng calls: `[ng] owner`) may hold, so no tenant can take
    /// every port; 0 = automatic: three quarters of what the port range and `max_calls` allow.
    pub max_calls_per_client: usize,
    /// Secure-mode look-ahead in 20 ms units of audio (1-3), whatever the packet size.
    pub lookahead_frames: usize,
    /// Allows `lookahead_frames = 0`, which lets tone onsets reach the agent before they can
    /// be recognised. For measurements only.
    pub unsafe_no_lookahead: bool,
    /// Masking policy of calls that belong to no account (see [`DtmfMasking`]).
    pub dtmf_masking: DtmfMasking,
    /// Secure mode cannot be turned off within this many seconds of the last key.
    pub secure_hold_off_s: u64,
    /// Replacement for masked frames.
    pub masking: MaskingSetting,
    /// Comfort-noise level, dBm0.
    pub comfort_noise_dbm0: f32,
    /// What consumed telephone-events become on the agent leg: `"drop"`, or a key (`"A"`)
    /// sent in their place so agent equipment sees "a key" but never which.
    pub telephone_event_replacement: String,
    /// Follow a remote whose address changes instead of dropping its packets.
    pub relatch: bool,
    /// How datagrams move: io_uring workers, a tokio task per call, or the best available.
    pub engine: RelayEngine,
    /// io_uring worker threads; 0 picks half the cores (at least one).
    pub workers: usize,
}

/// The relay's IO engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayEngine {
    /// io_uring where the kernel allows it, else tokio.
    Auto,
    /// io_uring worker threads: receives and sends batched across calls (Linux 6.0+).
    IoUring,
    /// One tokio task per call: portable, one system call per datagram.
    Tokio,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            bind_ipv4: Ipv4Addr::LOCALHOST,
            bind_ipv6: Ipv6Addr::LOCALHOST,
            port_min: 30000,
            port_max: 39999,
            media_timeout_s: 60,
            max_calls: 10_000,
            max_calls_per_client: 0,
            lookahead_frames: 1,
            unsafe_no_lookahead: false,
            dtmf_masking: DtmfMasking::Call,
            secure_hold_off_s: 10,
            masking: MaskingSetting::Silence,
            comfort_noise_dbm0: -55.0,
            telephone_event_replacement: "drop".into(),
            relatch: false,
            engine: RelayEngine::Auto,
            workers: 0,
        }
    }
}

impl RelayConfig {
    /// Calls the port range and `max_calls` allow on one address family (each leg takes an
    /// even port and the odd one above it).
    pub fn call_capacity(&self) -> usize {
        let min = self.port_min + (self.port_min & 1);
        let pairs = usize::from(self.port_max.saturating_sub(min).div_ceil(2));
        (pairs / 2).min(self.max_calls)
    }

    /// The most live calls one client may hold, if anything short of the whole capacity
    /// limits it: `max_calls_per_client`, or three quarters of the capacity (a quarter is
    /// kept for everyone else; a range too small to share has no automatic limit).
    pub fn per_client_limit(&self) -> Option<usize> {
        if self.max_calls_per_client > 0 {
            return Some(self.max_calls_per_client);
        }
        let cap = self.call_capacity();
        let reserve = cap / 4;
        (reserve > 0).then_some(cap - reserve)
    }

    /// The masking mode these settings describe.
    pub fn masking_mode(&self) -> tonegate_dsp::MaskingMode {
        match self.masking {
            MaskingSetting::Silence => tonegate_dsp::MaskingMode::Silence,
            MaskingSetting::ComfortNoise => tonegate_dsp::MaskingMode::ComfortNoise {
                level_dbm0: self.comfort_noise_dbm0,
            },
            MaskingSetting::Beep => tonegate_dsp::MaskingMode::Beep,
        }
    }

    /// The telephone-event replacement these settings describe.
    pub fn event_replacement(&self) -> Option<crate::media::EventReplacement> {
        let s = self.telephone_event_replacement.trim();
        if s.eq_ignore_ascii_case("drop") {
            return Some(crate::media::EventReplacement::Drop);
        }
        let mut chars = s.chars();
        match (
            chars.next().and_then(tonegate_dsp::DtmfKey::from_char),
            chars.next(),
        ) {
            (Some(k), None) => Some(crate::media::EventReplacement::FixedKey(k)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_may_hold_three_quarters_of_the_capacity_unless_configured() {
        let cfg = RelayConfig::default();
        // 30000-39999: 5000 even ports, two legs a call.
        assert_eq!(cfg.call_capacity(), 2500);
        assert_eq!(cfg.per_client_limit(), Some(1875));
        let small = RelayConfig {
            port_min: 31000,
            port_max: 31003,
            ..RelayConfig::default()
        };
        assert_eq!(small.call_capacity(), 1);
        assert_eq!(small.per_client_limit(), None, "too small to share");
        let capped = RelayConfig {
            max_calls: 100,
            ..RelayConfig::default()
        };
        assert_eq!(capped.per_client_limit(), Some(75));
        let set = RelayConfig {
            max_calls_per_client: 7,
            ..RelayConfig::default()
        };
        assert_eq!(set.per_client_limit(), Some(7));
    }
}
