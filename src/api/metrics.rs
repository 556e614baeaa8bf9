//! `GET /metrics`: Prometheus text exposition. Counts only; never a key, never a card digit.
//!
//! Everything comes from one prometheus-client [`Registry`], built with the router: the
//! latency histograms ([`crate::latency`]), [`Counts`], a collector that reads the totals
//! the relay, the sessions, the token endpoint, the card memory and the ng listener already
//! keep, at scrape time (so nothing on the relay's packet path changes, and nothing is counted
//! twice), the build and the process (`process_*`, as every Prometheus client names them).
//!
//! prometheus-client writes OpenMetrics text, where a counter's `# HELP`/`# TYPE` lines name
//! the family without `_total`. The body is served as the Prometheus text format
//! (`text/plain; version=0.0.4`), where they name the sample, `_total` included, or the
//! counter reads as untyped: [`text_format`] rewrites those lines (`promtool check metrics`
//! is clean; a test runs it).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::AppState;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let registry = Arc::new(registry(state));
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { metrics(&registry) }
        }),
    )
}

/// The gateway's registry: the counts first, then the histograms (two sub-registries with the
/// same prefix, so the exposition keeps that order: a registry writes its own metrics before
/// its collectors).
fn registry(state: &AppState) -> Registry {
    let mut root = Registry::default();
    root.register_collector(Box::new(Process));
    root.sub_registry_with_prefix("tonegate")
        .register_collector(Box::new(Counts(state.clone())));
    let histograms = root.sub_registry_with_prefix("tonegate");
    state.latency.register(histograms);
    histograms.register_collector(Box::new(RelayLatency(state.relay.clone())));
    if let Some(ng) = &state.ng {
        ng.latency().register(histograms);
    }
    root
}

fn metrics(registry: &Registry) -> impl IntoResponse {
    let mut out = String::new();
    // Writing to a String cannot fail; a collector here returns no error of its own.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, registry);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text_format(&out),
    )
}

/// OpenMetrics text as the Prometheus text format: a counter's `# HELP` and `# TYPE` name its
/// `_total` sample; `# UNIT` and `# EOF`, which that format has not, are left out.
fn text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 1024);
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            // prometheus-client writes HELP, then TYPE.
            let counter = lines.peek().is_some_and(|next| {
                next.strip_prefix("# TYPE ")
                    .and_then(|t| t.strip_prefix(name))
                    == Some(" counter")
            });
            if counter {
                out.push_str("# HELP ");
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        } else if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"))
        {
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str("_total counter\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

// `/proc` files the process collector reads (constants: no call site looks like a route).
const PROC_STAT: &str = "/proc/stat";
const PROC_SELF_STAT: &str = "/proc/self/stat";
const PROC_SELF_FD: &str = "/proc/self/fd";

/// `process_*`: CPU time, memory, files and start time, read from `/proc/self` at each scrape
/// (the names Prometheus's own clients use, so stock dashboards and alerts find them).
#[derive(Debug)]
struct Process;

/// What the process collector reads once: clock ticks per second, the page size and the
/// process's start time (Unix seconds).
struct ProcessConstants {
    ticks: f64,
    page: f64,
    start_time: Option<f64>,
}

#[allow(unsafe_code)] // sysconf through libc (std has no safe wrapper)
fn process_constants() -> &'static ProcessConstants {
    static CONSTANTS: std::sync::OnceLock<ProcessConstants> = std::sync::OnceLock::new();
    CONSTANTS.get_or_init(|| {
        // SAFETY: sysconf reads a system constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as f64,
            )
        };
        let boot = std::fs::read_to_string(PROC_STAT).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let mut buf = [0u8; 1024];
        let started = read_proc(PROC_SELF_STAT, &mut buf)
            .and_then(|stat| stat_field(stat, 19))
            .and_then(|v| v.parse::<f64>().ok());
        ProcessConstants {
            ticks,
            page,
            start_time: boot.zip(started).map(|(b, s)| b + s / ticks),
        }
    })
}

/// Reads a small `/proc` file into `buf` (no allocation).
fn read_proc<'a>(path: &str, buf: &'a mut [u8]) -> Option<&'a str> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).ok()? {
            0 => break,
            k => n += k,
        }
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// Field `i` of `/proc/self/stat` counted from the one after the command name (which may hold
/// spaces): 0 is the state, 11 utime, 12 stime, 19 starttime, 20 vsize, 21 rss.
fn stat_field(stat: &str, i: usize) -> Option<&str> {
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(i)
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let k = process_constants();
        let mut buf = [0u8; 1024];
        if let Some(stat) = read_proc(PROC_SELF_STAT, &mut buf) {
            let num = |i| {
                stat_field(stat, i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            one(
                e,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                ConstCounter::new((num(11) + num(12)) / k.ticks),
            )?;
            one(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                ConstGauge::new(num(20)),
            )?;
            one(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                ConstGauge::new(num(21) * k.page),
            )?;
        }
        if let Ok(fds) = std::fs::read_dir(PROC_SELF_FD) {
            gauge(
                e,
                "process_open_fds",
                "Number of open file descriptors.",
                fds.count() as u64,
            )?;
        }
        if let Ok(max) = crate::relay::open_file_limit() {
            gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        if let Some(t) = k.start_time {
            one(
                e,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                ConstGauge::new(t),
            )?;
        }
        Ok(())
    }
}

/// The relay's added-latency histogram: its engine loops count into buckets of their own,
/// without a lock (see `relay/added_latency.rs`); merged here, when scraped.
#[derive(Debug)]
struct RelayLatency(crate::relay::Relay);

impl Collector for RelayLatency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.added_latency();
        encoder
            .encode_descriptor(
                "relay_added_latency_seconds",
                "Time a datagram spends in the relay, from the engine having it to its forwarded copy going to the kernel",
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.sum_seconds(),
                s.count(),
                &s.buckets(),
                None,
            )
    }
}

/// The counters and gauges, read from the gateway's own totals when scraped.
struct Counts(AppState);

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counts")
    }
}

/// Writes one metric family of one unlabelled sample.
fn one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    one(encoder, name, help, ConstCounter::new(v))
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    one(encoder, name, help, ConstGauge::new(v))
}

/// Writes one family of samples that differ by one label (a bounded set of values).
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    counter: bool,
    samples: &[(&str, u64)],
) -> std::fmt::Result {
    use prometheus_client::metrics::MetricType;
    let kind = if counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    };
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for &(value, v) in samples {
        let labels = [(label, value)];
        if counter {
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        } else {
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

impl Collector for Counts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let state = &self.0;
        let e = &mut encoder;
        let t = state.relay.totals();
        let c = t.counters;
        {
            // Gauges of 1 labelled with what they describe, not prometheus-client's `Info`
            // type: that writes `# TYPE … info`, which the 0.0.4 text format has not.
            let labels = [
                ("version", env!("CARGO_PKG_VERSION")),
                ("arch", std::env::consts::ARCH),
                (
                    "profile",
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    },
                ),
            ];
            let mut family = e.encode_descriptor(
                "build_info",
                "The running tonegate build (always 1).",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(1u64).encode(family.encode_family(&labels)?)?;
            let mut family = e.encode_descriptor(
                "node_info",
                "This node's name, [cluster] node (always 1).",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            let node = [("node", state.config.cluster.node.as_str())];
            ConstGauge::new(1u64).encode(family.encode_family(&node)?)?;
        }
        family(
            e,
            "relay_engine_info",
            "The relay's IO engine.",
            "engine",
            false,
            &[(t.engine, 1)],
        )?;
        gauge(
            e,
            "relay_calls_active",
            "Relay calls running now.",
            t.calls_active,
        )?;
        family(
            e,
            "relay_calls",
            "Relay calls running now, by whether secure mode (masking) is applied.",
            "mode",
            false,
            &[
                ("secure", t.calls_secure),
                ("plain", t.calls_active.saturating_sub(t.calls_secure)),
            ],
        )?;
        gauge(
            e,
            "relay_calls_max",
            "The most relay calls this gateway takes (relay.max_calls).",
            state.config.relay.max_calls as u64,
        )?;
        family(
            e,
            "relay_port_pairs",
            "RTP/RTCP port pairs of the relay range on its busiest address, used and free.",
            "state",
            false,
            &[
                ("used", t.port_pairs_used),
                ("free", t.port_pairs.saturating_sub(t.port_pairs_used)),
            ],
        )?;
        for (name, help, v) in [
            (
                "relay_calls_created",
                "Relay calls set up.",
                t.calls_created,
            ),
            (
                "relay_calls_timed_out",
                "Relay calls removed after media silence.",
                t.calls_timed_out,
            ),
            (
                "relay_calls_refused",
                "Relay call set-ups refused (ports or call limit).",
                t.calls_refused,
            ),
            (
                "relay_call_faults",
                "Relay calls stopped because their media processing failed (the others go on).",
                t.call_faults,
            ),
            (
                "relay_worker_failures",
                "io_uring relay workers that failed and were replaced (their calls moved).",
                t.worker_failures,
            ),
            (
                "relay_rtp_packets_in",
                "RTP packets received (both legs).",
                c.caller_rtp_in + c.agent_rtp_in,
            ),
            (
                "relay_rtp_packets_out",
                "RTP packets sent (both legs).",
                c.caller_rtp_out + c.agent_rtp_out,
            ),
            ("relay_bytes_in", "Bytes received.", c.bytes_in),
            ("relay_bytes_out", "Bytes sent.", c.bytes_out),
            ("relay_rtcp_packets", "RTCP packets relayed.", c.rtcp),
            (
                "relay_dropped_malformed",
                "Malformed datagrams dropped.",
                c.malformed,
            ),
            (
                "relay_dropped_foreign_source",
                "Datagrams from unlatched sources dropped.",
                c.foreign_source,
            ),
            (
                "relay_dropped_no_destination",
                "Datagrams dropped for want of a destination.",
                c.no_destination,
            ),
            (
                "relay_dropped_send",
                "Datagrams dropped because the send would block.",
                c.send_dropped,
            ),
            (
                "relay_latch_events",
                "Remote addresses learned or followed.",
                c.latch_events,
            ),
            (
                "relay_frames_masked",
                "Audio frames replaced by masking.",
                c.frames_masked,
            ),
            (
                "relay_events_consumed",
                "telephone-event packets consumed in secure mode.",
                c.events_consumed,
            ),
            (
                "relay_uninspectable",
                "Packets dropped in secure mode as not inspectable.",
                c.uninspectable,
            ),
            (
                "relay_keys_captured",
                "Keys captured in secure mode (a count only).",
                c.keys_captured,
            ),
            (
                "relay_duplicate_keys",
                "Keys received both in-band and as events, delivered once.",
                c.duplicate_keys,
            ),
            (
                "relay_guard_replaced",
                "Frames the output guard replaced after masking let them through (should stay 0).",
                c.guard_replaced,
            ),
            (
                "http_connections_refused",
                "HTTP connections closed at once: their address was at its cap, or every connection slot held a request in flight.",
                load(&state.http_refused),
            ),
            (
                "http_connections_evicted",
                "HTTP connections closed to make room at the connection cap (idle, or not yet sending a request; least recently active first).",
                load(&state.http_evicted),
            ),
            (
                "token_requests_throttled",
                "Token requests answered 429 after repeated failures.",
                load(&state.credentials.throttled),
            ),
            (
                "token_requests_busy",
                "Token requests answered 503: every secret-check slot stayed busy.",
                load(&state.credentials.busy),
            ),
        ] {
            counter(e, name, help, v)?;
        }
        let m = crate::card::memory::stats();
        gauge(
            e,
            "card_memory_locked",
            "Whether card digits live in memory locked against swap (1) or not (0: raise RLIMIT_MEMLOCK).",
            u64::from(m.locked),
        )?;
        gauge(
            e,
            "card_memory_slots_in_use",
            "Card-digit buffers held now.",
            m.in_use as u64,
        )?;
        gauge(
            e,
            "card_memory_slots",
            "Card-digit buffers the locked region holds.",
            (m.bytes / crate::card::memory::SLOT_BYTES) as u64,
        )?;
        counter(
            e,
            "card_memory_heap_fallbacks",
            "Card-digit buffers that had to use ordinary memory (the locked region was full or missing).",
            m.heap_fallbacks,
        )?;
        let l = state.sessions.link_counters();
        family(
            e,
            "link_attempts",
            "dtmfLinkId tries keyed on calls, by outcome.",
            "result",
            true,
            &[
                ("linked", load(&l.linked)),
                ("bad_check_digit", load(&l.bad_check)),
                ("not_found", load(&l.not_found)),
                ("rate_limited", load(&l.rate_limited)),
            ],
        )?;
        counter(
            e,
            "link_calls_limited",
            "Calls that used up their link-id tries.",
            load(&l.call_limit),
        )?;
        let w = state.sessions.event_writer();
        counter(
            e,
            "agent_events_written",
            "Agent-screen updates the event writer stored.",
            load(&w.written),
        )?;
        counter(
            e,
            "agent_events_coalesced",
            "Agent-screen updates superseded by a later one of their session while the writer's queue was full.",
            load(&w.coalesced),
        )?;
        counter(
            e,
            "agent_event_write_failures",
            "Event-writer batches that failed to store and were tried again.",
            load(&w.write_failures),
        )?;
        counter(
            e,
            "link_sessions_locked",
            "Sessions locked for linking by id after failed tries.",
            load(&l.sessions_locked),
        )?;
        sessions(e, &state.sessions, state.clock.unix_now())?;
        if let Some(ng) = &state.ng {
            let n = ng.counters();
            for (name, help, v) in [
                (
                    "ng_requests",
                    "ng requests answered, retransmissions included.",
                    &n.requests,
                ),
                (
                    "ng_retransmissions",
                    "ng retransmissions answered from the reply cache.",
                    &n.retransmissions,
                ),
                ("ng_errors", "ng error replies.", &n.errors),
                (
                    "ng_malformed",
                    "Datagrams on the ng port that were not ng requests.",
                    &n.malformed,
                ),
                (
                    "ng_unknown_keys",
                    "ng request keys tonegate ignores.",
                    &n.unknown_keys,
                ),
                (
                    "ng_refused_offers",
                    "ng offers refused because masking could not be guaranteed.",
                    &n.refused_offers,
                ),
                (
                    "ng_dropped_foreign_source",
                    "Datagrams on the ng port from sources outside [ng] allow, dropped unanswered.",
                    &n.dropped_foreign,
                ),
            ] {
                counter(e, name, help, load(v))?;
            }
            gauge(
                e,
                "ng_reply_cache_bytes",
                "Bytes the ng reply cache keeps for retransmissions (cookies and replies).",
                ng.reply_cache_bytes() as u64,
            )?;
        }
        if let Some(sip) = &state.sip {
            let n = sip.counters();
            let c = n.counts();
            for (name, help, v) in [
                ("sip_requests", "SIP requests received on the fallback number, retransmissions included.", c.requests),
                ("sip_calls_answered", "Fallback-number calls answered (200 to an INVITE).", c.answered),
                ("sip_calls_not_found", "INVITEs to no account's fallback number (404).", c.not_found),
                ("sip_calls_not_acceptable", "INVITEs whose media tonegate cannot inspect (488).", c.not_acceptable),
                ("sip_calls_busy", "INVITEs refused at relay.max_calls, the ports or sip.invites_per_second (503).", c.busy),
                ("sip_calls_hung_up", "Fallback-number calls tonegate ended after the payment (BYE or REFER).", c.hung_up),
                ("sip_session_refreshes", "Session refreshes tonegate sent as the refresher (UPDATE or re-INVITE, RFC 4028).", c.refreshes),
                ("sip_sessions_expired", "Fallback-number calls ended because the session timer ran out or tonegate's refresh failed.", c.expired),
                ("sip_malformed", "SIP messages that could not be read (400, or dropped).", c.malformed),
                ("sip_too_large", "SIP messages over the size limits (513, or dropped).", c.too_large),
                ("sip_bad_method", "SIP requests with a method the fallback number does not take (405, 501).", c.bad_method),
                ("sip_dropped_foreign_source", "SIP datagrams and connections from outside [sip] allow, dropped unanswered.", load(&n.dropped_foreign)),
                ("sip_dropped_overload", "SIP datagrams and connections dropped because the endpoint was behind.", load(&n.dropped_overload)),
            ] {
                counter(e, name, help, v)?;
            }
            gauge(
                e,
                "sip_calls",
                "Fallback-number calls up now.",
                load(&n.live_calls),
            )?;
        }
        Ok(())
    }
}

/// Live sessions by state (from the store), payments by outcome, and the webhook queue.
fn sessions(
    e: &mut DescriptorEncoder,
    sessions: &crate::session::Sessions,
    now: u64,
) -> std::fmt::Result {
    let o = sessions.outcomes();
    family(
        e,
        "payments",
        "Payments that left Submitting since start, by outcome.",
        "outcome",
        true,
        &[
            ("completed", load(&o.payments_completed)),
            ("declined", load(&o.payments_declined)),
            ("failed", load(&o.payments_failed)),
        ],
    )?;
    counter(
        e,
        "webhooks_delivered",
        "Result webhooks delivered since start.",
        load(&o.webhooks_delivered),
    )?;
    counter(
        e,
        "webhooks_given_up",
        "Result webhooks given up after store.webhook_retry_s since start.",
        load(&o.webhooks_given_up),
    )?;
    // A store that cannot answer leaves these out (the scrape still succeeds): an absent
    // series is what alerts on `absent()` look for.
    match sessions.store().live_counts() {
        Ok(counts) => {
            let samples: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            family(
                e,
                "sessions_live",
                "Sessions not yet ended, by state (shared store: every node's).",
                "state",
                false,
                &samples,
            )?;
        }
        Err(err) => tracing::warn!(error = %err, "metrics: counting live sessions failed"),
    }
    match sessions.store().webhook_backlog() {
        Ok((pending, oldest)) => {
            gauge(
                e,
                "webhooks_pending",
                "Result webhooks waiting for delivery (shared store: every node's).",
                pending,
            )?;
            gauge(
                e,
                "webhooks_oldest_pending_age_seconds",
                "Age of the oldest result webhook waiting for delivery (0: none).",
                oldest.map_or(0, |t| now.saturating_sub(t)),
            )?;
        }
        Err(err) => tracing::warn!(error = %err, "metrics: reading the webhook queue failed"),
    }
    Ok(())
}
