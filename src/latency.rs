//! Latency distributions for operators: HTTP request and PSP call durations as Prometheus
//! histograms (prometheus-client), appended to `/metrics` after the hand-written counters.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One HTTP answer: the route template (never the raw path, which may hold ids), the method
/// and the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

/// One PSP call, retries included: what was asked and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PspLabels {
    operation: &'static str,
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The gateway's histograms.
pub struct Latency {
    registry: Registry,
    http: Histograms<HttpLabels>,
    psp: Histograms<PspLabels>,
}

fn http_buckets() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn psp_buckets() -> Histogram {
    // 10 ms to ~40 s (a PSP call with its retries).
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

impl Default for Latency {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tonegate");
        let http: Histograms<HttpLabels> = Family::new_with_constructor(http_buckets);
        let psp: Histograms<PspLabels> = Family::new_with_constructor(psp_buckets);
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests, headers in to response headers out (event streams: until they start)",
            http.clone(),
        );
        registry.register(
            "psp_call_duration_seconds",
            "PSP calls (tokenize, charge, find_payment) with their retries",
            psp.clone(),
        );
        Latency {
            registry,
            http,
            psp,
        }
    }
}

impl Latency {
    /// Records one HTTP answer.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
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

    /// The histograms in the Prometheus text format (without OpenMetrics' `# EOF`, as they
    /// follow other metrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match out.strip_suffix("# EOF\n") {
            Some(body) => body.to_string(),
            None => out,
        }
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

    #[test]
    fn observations_land_in_their_buckets_by_label() {
        let l = Latency::default();
        l.observe_http("/healthz", "GET", 200, Duration::from_micros(700));
        l.observe_http("/healthz", "GET", 200, Duration::from_millis(3));
        l.observe_psp("charge", "ok", Duration::from_millis(250));
        let text = l.encode();
        assert!(!text.contains("# EOF"), "{text}");
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
}
