//! Latency distributions for operators: HTTP request, PSP call and ng request durations as
//! Prometheus histograms (prometheus-client). `/metrics` (`api/metrics.rs`) registers them in
//! its registry after the counters.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One HTTP answer: the route template (never the raw path, which may hold ids), the method
/// (one of a fixed set, anything else `other`) and the status code. Every value comes from a
/// bounded set, so no request can add label values of its own making.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

/// The `method` label for a request method: the standard ones by name, any other `other`
/// (extension methods are made up by whoever sends them).
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// One PSP call, retries included: what was asked and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PspLabels {
    operation: &'static str,
    outcome: &'static str,
}

/// One ng request: the command (a fixed set, anything else `other`) and how it ended. Both
/// are `&'static str`, so a call id or any other request text cannot become a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NgLabels {
    command: &'static str,
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The HTTP and PSP histograms (shared by the API and the sessions).
pub struct Latency {
    http: Histograms<HttpLabels>,
    psp: Histograms<PspLabels>,
}

/// The ng request histogram, kept by the ng service with its counters.
pub struct NgLatency {
    requests: Histograms<NgLabels>,
}

fn http_buckets() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn psp_buckets() -> Histogram {
    // 10 ms to ~40 s (a PSP call with its retries).
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

fn ng_buckets() -> Histogram {
    // 50 µs to ~1.6 s (a request is answered in well under a millisecond; an offer sets up
    // relay ports).
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            http: Family::new_with_constructor(http_buckets),
            psp: Family::new_with_constructor(psp_buckets),
        }
    }
}

impl Default for NgLatency {
    fn default() -> Self {
        NgLatency {
            requests: Family::new_with_constructor(ng_buckets),
        }
    }
}

impl Latency {
    /// Adds the histograms to `registry` (they stay shared: observations after this show).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests, headers in to response headers out (event streams: until they start)",
            self.http.clone(),
        );
        registry.register(
            "psp_call_duration_seconds",
            "PSP calls (tokenize, create_payment, charge, find_payment) with their retries",
            self.psp.clone(),
        );
    }

    /// Records one HTTP answer. `route` must be a route template or a fixed word (the router
    /// passes its matched path, else `unmatched`); the method is mapped by [`method_label`].
    pub fn observe_http(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method_label(method),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// Records one PSP call (`outcome`: `ok`, `declined` or `error`).
    pub fn observe_psp(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        self.psp
            .get_or_create(&PspLabels { operation, outcome })
            .observe(took.as_secs_f64());
    }
}

impl NgLatency {
    /// Adds the histogram to `registry` (it stays shared).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ng_request_duration_seconds",
            "ng requests, datagram in to reply ready, by command and outcome (retransmissions \
             answered from the reply cache are not timed: ng_retransmissions_total counts them)",
            self.requests.clone(),
        );
    }

    /// Records one ng request (`command`: one of a fixed set or `other`; `outcome`: `ok` or
    /// `error`).
    pub fn observe(&self, command: &'static str, outcome: &'static str, took: Duration) {
        self.requests
            .get_or_create(&NgLabels { command, outcome })
            .observe(took.as_secs_f64());
    }
}

/// How a PSP call ended, for the histogram's `outcome` label.
pub fn psp_outcome<T>(r: &Result<T, crate::psp::PspError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(crate::psp::PspError::Declined { .. }) => "declined",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::with_prefix("tonegate");
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn observations_land_in_their_buckets_by_label() {
        let l = Latency::default();
        l.observe_http("/healthz", "GET", 200, Duration::from_micros(700));
        l.observe_http("/healthz", "GET", 200, Duration::from_millis(3));
        l.observe_psp("charge", "ok", Duration::from_millis(250));
        let text = encode(|r| l.register(r));
        assert!(
            text.contains("# TYPE tonegate_http_request_duration_seconds histogram"),
            "{text}"
        );
        let count = text
            .lines()
            .find(|l| {
                l.starts_with("tonegate_http_request_duration_seconds_count{")
                    && l.contains("route=\"/healthz\"")
                    && l.contains("status=\"200\"")
            })
            .unwrap_or_else(|| panic!("{text}"));
        assert!(count.ends_with(" 2"), "{count}");
        // 0.7 ms falls in the 1 ms bucket, 3 ms does not.
        let le_1ms = text
            .lines()
            .find(|l| {
                l.contains("http_request_duration_seconds_bucket") && l.contains("le=\"0.001\"")
            })
            .unwrap();
        assert!(le_1ms.ends_with(" 1"), "{le_1ms}");
        assert!(
            text.contains(
                "tonegate_psp_call_duration_seconds_count{operation=\"charge\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let l = Latency::default();
        for i in 0..100 {
            l.observe_http("unmatched", &format!("X{i}"), 404, Duration::from_micros(5));
        }
        l.observe_http("unmatched", "PATCH", 404, Duration::from_micros(5));
        let text = encode(|r| l.register(r));
        let counts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tonegate_http_request_duration_seconds_count{"))
            .collect();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(
            counts
                .iter()
                .any(|l| l.contains("method=\"other\"") && l.ends_with(" 100")),
            "{counts:?}"
        );
        assert!(!text.contains("X1"), "{text}");
    }

    #[test]
    fn ng_requests_are_counted_by_command_and_outcome() {
        let ng = NgLatency::default();
        ng.observe("offer", "ok", Duration::from_micros(80));
        ng.observe("offer", "ok", Duration::from_millis(2));
        ng.observe("other", "error", Duration::from_micros(10));
        let text = encode(|r| ng.register(r));
        assert!(
            text.contains("# TYPE tonegate_ng_request_duration_seconds histogram"),
            "{text}"
        );
        let count = |labels: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "tonegate_ng_request_duration_seconds_count{{{labels}}} "
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_else(|| panic!("{labels}: {text}"))
                .to_string()
        };
        assert_eq!(count("command=\"offer\",outcome=\"ok\""), "2");
        assert_eq!(count("command=\"other\",outcome=\"error\""), "1");
        // 80 µs is in the 100 µs bucket, 2 ms is not.
        assert!(text.contains(
            "tonegate_ng_request_duration_seconds_bucket{le=\"0.0001\",command=\"offer\",outcome=\"ok\"} 1"
        ), "{text}");
    }
}
