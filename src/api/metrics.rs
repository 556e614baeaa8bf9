//! `GET /metrics`: Prometheus text exposition. Counts only; never a key, never a card digit.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let t = state.relay.totals();
    let c = t.counters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP tonegate_relay_engine_info The relay's IO engine.\n# TYPE tonegate_relay_engine_info gauge\ntonegate_relay_engine_info{{engine=\"{}\"}} 1",
        t.engine
    );
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP tonegate_{name} {help}\n# TYPE tonegate_{name} {kind}\ntonegate_{name} {value}"
        );
    };
    metric(
        "relay_calls_active",
        "gauge",
        "Relay calls running now.",
        t.calls_active,
    );
    metric(
        "relay_calls_created_total",
        "counter",
        "Relay calls set up.",
        t.calls_created,
    );
    metric(
        "relay_calls_timed_out_total",
        "counter",
        "Relay calls removed after media silence.",
        t.calls_timed_out,
    );
    metric(
        "relay_calls_refused_total",
        "counter",
        "Relay call set-ups refused (ports or call limit).",
        t.calls_refused,
    );
    metric(
        "relay_call_faults_total",
        "counter",
        "Relay calls stopped because their media processing failed (the others go on).",
        t.call_faults,
    );
    metric(
        "relay_worker_failures_total",
        "counter",
        "io_uring relay workers that failed and were replaced (their calls moved).",
        t.worker_failures,
    );
    metric(
        "relay_rtp_packets_in_total",
        "counter",
        "RTP packets received (both legs).",
        c.caller_rtp_in + c.agent_rtp_in,
    );
    metric(
        "relay_rtp_packets_out_total",
        "counter",
        "RTP packets sent (both legs).",
        c.caller_rtp_out + c.agent_rtp_out,
    );
    metric(
        "relay_bytes_in_total",
        "counter",
        "Bytes received.",
        c.bytes_in,
    );
    metric(
        "relay_bytes_out_total",
        "counter",
        "Bytes sent.",
        c.bytes_out,
    );
    metric(
        "relay_rtcp_packets_total",
        "counter",
        "RTCP packets relayed.",
        c.rtcp,
    );
    metric(
        "relay_dropped_malformed_total",
        "counter",
        "Malformed datagrams dropped.",
        c.malformed,
    );
    metric(
        "relay_dropped_foreign_source_total",
        "counter",
        "Datagrams from unlatched sources dropped.",
        c.foreign_source,
    );
    metric(
        "relay_dropped_no_destination_total",
        "counter",
        "Datagrams dropped for want of a destination.",
        c.no_destination,
    );
    metric(
        "relay_dropped_send_total",
        "counter",
        "Datagrams dropped because the send would block.",
        c.send_dropped,
    );
    metric(
        "relay_latch_events_total",
        "counter",
        "Remote addresses learned or followed.",
        c.latch_events,
    );
    metric(
        "relay_frames_masked_total",
        "counter",
        "Audio frames replaced by masking.",
        c.frames_masked,
    );
    metric(
        "relay_events_consumed_total",
        "counter",
        "telephone-event packets consumed in secure mode.",
        c.events_consumed,
    );
    metric(
        "relay_uninspectable_total",
        "counter",
        "Packets dropped in secure mode as not inspectable.",
        c.uninspectable,
    );
    metric(
        "relay_keys_captured_total",
        "counter",
        "Keys captured in secure mode (a count only).",
        c.keys_captured,
    );
    metric(
        "relay_duplicate_keys_total",
        "counter",
        "Keys received both in-band and as events, delivered once.",
        c.duplicate_keys,
    );
    metric(
        "relay_guard_replaced_total",
        "counter",
        "Frames the output guard replaced after masking let them through (should stay 0).",
        c.guard_replaced,
    );
    let _ = writeln!(
        out,
        "# HELP tonegate_http_connections_refused_total HTTP connections closed at once: the connection cap was reached.\n# TYPE tonegate_http_connections_refused_total counter\ntonegate_http_connections_refused_total {}",
        state.http_refused.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP tonegate_token_requests_throttled_total Token requests answered 429 after repeated failures.\n# TYPE tonegate_token_requests_throttled_total counter\ntonegate_token_requests_throttled_total {}\n# HELP tonegate_token_requests_busy_total Token requests answered 503: every secret-check slot stayed busy.\n# TYPE tonegate_token_requests_busy_total counter\ntonegate_token_requests_busy_total {}",
        state.credentials.throttled.load(std::sync::atomic::Ordering::Relaxed),
        state.credentials.busy.load(std::sync::atomic::Ordering::Relaxed)
    );
    let m = crate::card::memory::stats();
    let _ = writeln!(
        out,
        "# HELP tonegate_card_memory_locked Whether card digits live in memory locked against swap (1) or not (0: raise RLIMIT_MEMLOCK).\n# TYPE tonegate_card_memory_locked gauge\ntonegate_card_memory_locked {}\n# HELP tonegate_card_memory_slots_in_use Card-digit buffers held now.\n# TYPE tonegate_card_memory_slots_in_use gauge\ntonegate_card_memory_slots_in_use {}\n# HELP tonegate_card_memory_heap_fallbacks_total Card-digit buffers that had to use ordinary memory (the locked region was full or missing).\n# TYPE tonegate_card_memory_heap_fallbacks_total counter\ntonegate_card_memory_heap_fallbacks_total {}",
        u8::from(m.locked),
        m.in_use,
        m.heap_fallbacks
    );
    let l = state.sessions.link_counters();
    let r = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP tonegate_link_attempts_total dtmfLinkId tries keyed on calls, by outcome.\n# TYPE tonegate_link_attempts_total counter"
    );
    for (result, v) in [
        ("linked", r(&l.linked)),
        ("bad_check_digit", r(&l.bad_check)),
        ("not_found", r(&l.not_found)),
        ("rate_limited", r(&l.rate_limited)),
    ] {
        let _ = writeln!(
            out,
            "tonegate_link_attempts_total{{result=\"{result}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP tonegate_link_calls_limited_total Calls that used up their link-id tries.\n# TYPE tonegate_link_calls_limited_total counter\ntonegate_link_calls_limited_total {}\n# HELP tonegate_link_sessions_locked_total Sessions locked for linking by id after failed tries.\n# TYPE tonegate_link_sessions_locked_total counter\ntonegate_link_sessions_locked_total {}",
        r(&l.call_limit),
        r(&l.sessions_locked)
    );
    if let Some(ng) = &state.ng {
        let n = ng.counters();
        for (name, help, v) in [
            (
                "ng_requests_total",
                "ng requests answered, retransmissions included.",
                r(&n.requests),
            ),
            (
                "ng_retransmissions_total",
                "ng retransmissions answered from the reply cache.",
                r(&n.retransmissions),
            ),
            ("ng_errors_total", "ng error replies.", r(&n.errors)),
            (
                "ng_malformed_total",
                "Datagrams on the ng port that were not ng requests.",
                r(&n.malformed),
            ),
            (
                "ng_unknown_keys_total",
                "ng request keys tonegate ignores.",
                r(&n.unknown_keys),
            ),
            (
                "ng_refused_offers_total",
                "ng offers refused because masking could not be guaranteed.",
                r(&n.refused_offers),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP tonegate_{name} {help}\n# TYPE tonegate_{name} counter\ntonegate_{name} {v}"
            );
        }
    }
    out.push_str(&state.latency.encode());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
