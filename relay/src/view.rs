//! What the relay shows of its calls: views of a call, its legs and counters, the totals,
//! new-call notices and audit records (never keys), and what a new call is set up with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::Serialize;
use tonegate_dsp::{G711Law, MaskingMode};

use crate::config::DtmfMasking;
use crate::media::{CallCounters, RemoteRule};

/// A change to a call's control state, for the audit trail (never key values).
#[derive(Debug, Clone)]
pub struct RelayAudit {
    /// Relay call id.
    pub call_id: String,
    /// The platform's call id.
    pub call_guid: String,
    /// The client that owns the call.
    pub owner: String,
    /// Who did it: `client:<id>`, `admin:<id>`, `session:<id>`, `gateway`.
    pub actor: String,
    /// What: `create`, `secure_on`, `secure_off`, `secure_off_refused`, `delete`, `read`,
    /// `list`.
    pub action: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// Receives [`RelayAudit`] records (the server writes them to the store).
pub type AuditSink = Arc<dyn Fn(RelayAudit) + Send + Sync>;

/// What to set up for a new call.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// The call's id in the contact-centre platform (sessions find calls by it).
    pub call_guid: String,
    /// Audio codec.
    pub law: G711Law,
    /// telephone-event payload type, if negotiated.
    pub event_pt: Option<u8>,
    /// Where the caller's RTP may come from (learned within that from its first packet).
    pub caller_remote: RemoteRule,
    /// Where the agent's RTP may come from.
    pub agent_remote: RemoteRule,
    /// RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// Bind IPv6 ports even though no remote says so.
    pub ipv6: bool,
    /// Masking mode for this call (else the relay's default).
    pub masking: Option<MaskingMode>,
    /// The client creating the call: its owner.
    pub owner: String,
    /// The account the call belongs to, if known.
    pub account: Option<String>,
    /// When the call's keys are masked.
    pub policy: DtmfMasking,
}

/// Public view of a call (counters, never keys).
#[derive(Debug, Clone, Serialize)]
pub struct CallInfo {
    /// Relay call id.
    pub id: String,
    /// The platform's call id.
    pub call_guid: String,
    /// `PCMU` or `PCMA`.
    pub codec: &'static str,
    /// Whether secure mode is on.
    pub secure: bool,
    /// Whether keys are listened for outside secure mode (a caller keying a `dtmfLinkId`).
    pub listening: bool,
    /// The masking policy: `call` or `session`.
    pub dtmf_masking: &'static str,
    /// The account the call belongs to, if known.
    pub account: Option<String>,
    /// Caller leg.
    pub caller: LegInfo,
    /// Agent leg.
    pub agent: LegInfo,
    /// RTCP shares the RTP port.
    pub rtcp_mux: bool,
    /// Seconds since the Unix epoch when the call was set up.
    pub created_at: u64,
    /// Counters.
    pub counters: CounterSnapshot,
}

/// One leg's addresses.
#[derive(Debug, Clone, Serialize)]
pub struct LegInfo {
    /// Our RTP address for this leg.
    pub local: SocketAddr,
    /// The remote, once known.
    pub remote: Option<SocketAddr>,
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// RTP packets received from the caller.
    pub caller_rtp_in: u64,
    /// RTP packets received from the agent.
    pub agent_rtp_in: u64,
    /// RTP packets sent to the caller.
    pub caller_rtp_out: u64,
    /// RTP packets sent to the agent.
    pub agent_rtp_out: u64,
    /// RTP packets missing from the caller's sequence.
    pub caller_rtp_lost: u64,
    /// RTP packets missing from the agent's sequence.
    pub agent_rtp_lost: u64,
    /// Bytes received (both legs).
    pub bytes_in: u64,
    /// Bytes sent (both legs).
    pub bytes_out: u64,
    /// RTCP packets relayed.
    pub rtcp: u64,
    /// Malformed datagrams dropped.
    pub malformed: u64,
    /// Datagrams from an address other than the latched one, dropped.
    pub foreign_source: u64,
    /// Datagrams dropped because the other leg's address is unknown.
    pub no_destination: u64,
    /// Addresses learned or followed.
    pub latch_events: u64,
    /// Audio frames masked.
    pub frames_masked: u64,
    /// telephone-event packets consumed.
    pub events_consumed: u64,
    /// Packets dropped in secure mode as not inspectable.
    pub uninspectable: u64,
    /// Keys captured (a count only).
    pub keys_captured: u64,
    /// Keys that arrived both ways and were delivered once.
    pub duplicate_keys: u64,
    /// Audio frames the output guard replaced after the masker let them through.
    pub guard_replaced: u64,
    /// Datagrams dropped because the send would have blocked.
    pub send_dropped: u64,
}

impl CounterSnapshot {
    pub(crate) fn of(c: &CallCounters, send_dropped: u64) -> Self {
        let r = |a: &AtomicU64| a.load(Relaxed);
        CounterSnapshot {
            caller_rtp_in: r(&c.rtp_in[0]),
            agent_rtp_in: r(&c.rtp_in[1]),
            caller_rtp_out: r(&c.rtp_out[0]),
            agent_rtp_out: r(&c.rtp_out[1]),
            caller_rtp_lost: r(&c.rtp_lost[0]),
            agent_rtp_lost: r(&c.rtp_lost[1]),
            bytes_in: r(&c.bytes_in[0]) + r(&c.bytes_in[1]),
            bytes_out: r(&c.bytes_out[0]) + r(&c.bytes_out[1]),
            rtcp: r(&c.rtcp),
            malformed: r(&c.malformed),
            foreign_source: r(&c.foreign_source),
            no_destination: r(&c.no_destination),
            latch_events: r(&c.latch_events),
            frames_masked: r(&c.frames_masked),
            events_consumed: r(&c.events_consumed),
            uninspectable: r(&c.uninspectable),
            keys_captured: r(&c.keys_captured),
            duplicate_keys: r(&c.duplicate_keys),
            guard_replaced: r(&c.guard_replaced),
            send_dropped,
        }
    }

    pub(crate) fn add(&mut self, o: &CounterSnapshot) {
        self.caller_rtp_in += o.caller_rtp_in;
        self.agent_rtp_in += o.agent_rtp_in;
        self.caller_rtp_out += o.caller_rtp_out;
        self.agent_rtp_out += o.agent_rtp_out;
        self.caller_rtp_lost += o.caller_rtp_lost;
        self.agent_rtp_lost += o.agent_rtp_lost;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.rtcp += o.rtcp;
        self.malformed += o.malformed;
        self.foreign_source += o.foreign_source;
        self.no_destination += o.no_destination;
        self.latch_events += o.latch_events;
        self.frames_masked += o.frames_masked;
        self.events_consumed += o.events_consumed;
        self.uninspectable += o.uninspectable;
        self.keys_captured += o.keys_captured;
        self.duplicate_keys += o.duplicate_keys;
        self.guard_replaced += o.guard_replaced;
        self.send_dropped += o.send_dropped;
    }
}

/// Totals over the relay's life.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RelayTotals {
    /// The IO engine: `io_uring` or `tokio`.
    pub engine: &'static str,
    /// Calls running now.
    pub calls_active: u64,
    /// Calls set up since start.
    pub calls_created: u64,
    /// Calls removed for media silence.
    pub calls_timed_out: u64,
    /// Call set-ups refused for lack of ports, the call limit or a client's limit.
    pub calls_refused: u64,
    /// Calls stopped because their media processing failed.
    pub call_faults: u64,
    /// io_uring workers that failed and were replaced.
    pub worker_failures: u64,
    /// Calls running now with secure mode applied.
    pub calls_secure: u64,
    /// RTP/RTCP port pairs the range holds on one address.
    pub port_pairs: u64,
    /// Port pairs handed out on the busiest address.
    pub port_pairs_used: u64,
    /// Counters summed over live and ended calls.
    pub counters: CounterSnapshot,
}

/// A call was set up (sessions link to calls by `call_guid`).
#[derive(Debug, Clone)]
pub struct CallNotice {
    /// Relay call id.
    pub id: String,
    /// The platform's call id.
    pub call_guid: String,
    /// The client that created the call.
    pub owner: String,
}
