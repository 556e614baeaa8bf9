//! `GET /metrics`: Prometheus text exposition. Counts only; never a key, never a card digit.
//!
//! Everything comes from one prometheus-client [`Registry`], built with the router: the
//! latency histograms ([`crate::latency`]) and [`Counts`], a collector that reads the totals
//! the relay, the sessions, the token endpoint, the card memory and the ng listener already
//! keep, at scrape time (so nothing on the relay's packet path changes, and nothing is counted
//! twice).
//!
//! prometheus-client writes OpenMetrics text: a counter's `# HELP`/`# TYPE` lines name its
//! family (`tonegate_relay_calls_created`) and its sample carries `_total`
//! (`tonegate_relay_calls_created_total`, the name the hand-written exposition had). The body
//! is served as `text/plain; version=0.0.4`, as before and as `/openapi.json` says, without
//! OpenMetrics' `# EOF`: Prometheus reads it either way (the TYPE lines only feed metadata).

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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
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
            // A gauge of 1 labelled with the engine, not prometheus-client's `Info` type: that
            // writes `# TYPE … info`, which the 0.0.4 text format this is served as has not.
            let labels = [("engine", t.engine)];
            let mut family = e.encode_descriptor(
                "relay_engine_info",
                "The relay's IO engine.",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(1u64).encode(family.encode_family(&labels)?)?;
        }
        gauge(
            e,
            "relay_calls_active",
            "Relay calls running now.",
            t.calls_active,
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
        counter(
            e,
            "card_memory_heap_fallbacks",
            "Card-digit buffers that had to use ordinary memory (the locked region was full or missing).",
            m.heap_fallbacks,
        )?;
        let l = state.sessions.link_counters();
        {
            let mut family = e.encode_descriptor(
                "link_attempts",
                "dtmfLinkId tries keyed on calls, by outcome.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (result, v) in [
                ("linked", &l.linked),
                ("bad_check_digit", &l.bad_check),
                ("not_found", &l.not_found),
                ("rate_limited", &l.rate_limited),
            ] {
                ConstCounter::new(load(v)).encode(family.encode_family(&[("result", result)])?)?;
            }
        }
        counter(
            e,
            "link_calls_limited",
            "Calls that used up their link-id tries.",
            load(&l.call_limit),
        )?;
        counter(
            e,
            "link_sessions_locked",
            "Sessions locked for linking by id after failed tries.",
            load(&l.sessions_locked),
        )?;
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
        Ok(())
    }
}
