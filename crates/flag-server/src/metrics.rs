//! HTTP metrics, and `/metrics`: the Prometheus text exposition of them and of the service's
//! counters.
//!
//! Series are keyed by `(route, method, status)` where the route is the route's template (from
//! [`crate::routes::ROUTES`], so a label never carries a user's flag key or environment) or
//! `unmatched`. A request's series is found under a read lock; the write lock is taken only the
//! first time a combination is seen, so steady traffic never serializes on it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flag_core::{FnvBuildHasher, ServiceMetrics, TierStatus};

/// Upper bounds of the latency histogram's buckets, in seconds: 50 µs to 10 s.
pub(crate) const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// `(route template, method, status)`.
type SeriesKey = (&'static str, &'static str, u16);

/// Request counts and latency histograms of the HTTP API. The series are hashed with FNV: their
/// keys are the server's own labels (route templates, methods, statuses), never a client's text.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    series: RwLock<HashMap<SeriesKey, Arc<Series>, FnvBuildHasher>>,
}

/// One series: a latency histogram (whose total count is the request count).
#[derive(Debug, Default)]
struct Series {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Series {
    /// Counts one request that took `took`.
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl HttpMetrics {
    /// Records one answered request.
    pub fn record(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        let key = (route, method, status);
        {
            let series = self
                .series
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(series) = series.get(&key) {
                series.observe(took);
                return;
            }
        }
        self.series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .observe(took);
    }

    fn sorted(&self) -> Vec<(SeriesKey, Arc<Series>)> {
        let mut all: Vec<_> = self
            .series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(key, series)| (*key, series.clone()))
            .collect();
        all.sort_by_key(|(key, _)| *key);
        all
    }
}

/// What `/metrics` shows besides the HTTP series.
pub(crate) struct Exposition<'a> {
    pub(crate) http: &'a HttpMetrics,
    pub(crate) service: ServiceMetrics,
    pub(crate) cache_backend: &'static str,
    pub(crate) repository_backend: &'static str,
    /// The tiered cache's state, when that is the backend.
    pub(crate) tiered: Option<TierStatus>,
    /// Whether reads skip the cache because it is out.
    pub(crate) circuit_open: bool,
    /// How many event streams are open.
    pub(crate) streams_open: usize,
    /// How the flags file's reloads went, when flags are read from one.
    pub(crate) flags_file: Option<flag_file::FileStats>,
    /// The per-flag evaluation series, when `FLAG_EVALUATION_METRICS=on`.
    pub(crate) evaluations: Option<&'a [flag_core::EvaluationSeries]>,
    /// The change webhooks' counts, when `FLAG_WEBHOOKS` names receivers.
    pub(crate) webhooks: Option<Vec<crate::webhooks::ReceiverCounts>>,
}

impl Exposition<'_> {
    /// The Prometheus text format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render_http(&mut out);
        self.render_service(&mut out);
        self.render_tiered(&mut out);
        self.render_flags_file(&mut out);
        self.render_evaluations(&mut out);
        self.render_webhooks(&mut out);
        out
    }

    fn render_webhooks(&self, out: &mut String) {
        let Some(receivers) = &self.webhooks else {
            return;
        };
        header(
            out,
            "flag_webhook_attempts_total",
            "counter",
            "Webhook delivery attempts, by receiver (scheme, host and port) and outcome: delivered (2xx), failed (another answer), unreachable (no answer in FLAG_WEBHOOK_TIMEOUT_MS).",
        );
        for counts in receivers {
            for (outcome, value) in [
                ("delivered", counts.delivered),
                ("failed", counts.failed),
                ("unreachable", counts.unreachable),
            ] {
                let _ = writeln!(
                    out,
                    "flag_webhook_attempts_total{{receiver=\"{}\",outcome=\"{outcome}\"}} {value}",
                    label(&counts.receiver)
                );
            }
        }
        header(
            out,
            "flag_webhook_abandoned_total",
            "counter",
            "Changes given up after FLAG_WEBHOOK_RETRY_MS of failed attempts, by receiver.",
        );
        for counts in receivers {
            let _ = writeln!(
                out,
                "flag_webhook_abandoned_total{{receiver=\"{}\"}} {}",
                label(&counts.receiver),
                counts.abandoned
            );
        }
        header(
            out,
            "flag_webhook_backlog",
            "gauge",
            "Changes read from the outbox and not yet delivered, by receiver (at most 100 are read at once).",
        );
        for counts in receivers {
            let _ = writeln!(
                out,
                "flag_webhook_backlog{{receiver=\"{}\"}} {}",
                label(&counts.receiver),
                counts.backlog
            );
        }
    }

    fn render_evaluations(&self, out: &mut String) {
        let Some(evaluations) = self.evaluations else {
            return;
        };
        header(
            out,
            "flag_evaluations_total",
            "counter",
            "Evaluations served, per flag, variant and reason (FLAG_EVALUATION_METRICS=on; an evaluation error of an existing flag has variant \"\" and reason ERROR).",
        );
        for series in evaluations {
            let _ = writeln!(
                out,
                "flag_evaluations_total{{environment=\"{}\",flag=\"{}\",variant=\"{}\",reason=\"{}\"}} {}",
                label(series.environment.as_str()),
                label(series.flag.as_str()),
                label(&series.variant),
                series.reason.as_str(),
                series.count
            );
        }
    }

    fn render_flags_file(&self, out: &mut String) {
        let Some(stats) = &self.flags_file else {
            return;
        };
        header(
            out,
            "flag_file_reloads_total",
            "counter",
            "Reloads of the flags file: applied (a new valid file served) or rejected (unreadable or invalid; the last valid one stays).",
        );
        for (outcome, value) in [("applied", stats.applied), ("rejected", stats.rejected)] {
            let _ = writeln!(
                out,
                "flag_file_reloads_total{{outcome=\"{outcome}\"}} {value}"
            );
        }
        header(
            out,
            "flag_file_valid",
            "gauge",
            "1 when the flags file on disk is the one served, 0 while its last reload was rejected.",
        );
        let _ = writeln!(
            out,
            "flag_file_valid {}",
            u8::from(stats.last_error.is_none())
        );
    }

    fn render_tiered(&self, out: &mut String) {
        let Some(tiered) = self.tiered else {
            return;
        };
        header(
            out,
            "flag_tiered_l1_serving",
            "gauge",
            "1 while the in-process layer answers; 0 while its invalidation subscription is down and reads go to Redis.",
        );
        let _ = writeln!(
            out,
            "flag_tiered_l1_serving {}",
            u8::from(tiered.l1_serving)
        );
        header(
            out,
            "flag_tiered_subscription_losses_total",
            "counter",
            "Times the invalidation subscription was lost (each drops the in-process layer whole).",
        );
        let _ = writeln!(
            out,
            "flag_tiered_subscription_losses_total {}",
            tiered.subscription_losses
        );
    }

    fn render_http(&self, out: &mut String) {
        let series = self.http.sorted();
        header(
            out,
            "flag_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for ((route, method, status), one) in &series {
            let _ = writeln!(
                out,
                "flag_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {}",
                one.count.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "flag_http_request_duration_seconds",
            "histogram",
            "Time from request to response head, by route template, method and status.",
        );
        for ((route, method, status), one) in &series {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&one.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "flag_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += one.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "flag_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            let sum = Duration::from_nanos(one.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
            let _ = writeln!(
                out,
                "flag_http_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "flag_http_request_duration_seconds_count{{{labels}}} {cumulative}"
            );
        }
    }

    fn render_service(&self, out: &mut String) {
        let backend = self.cache_backend;
        let metrics = &self.service;
        header(
            out,
            "flag_cache_requests_total",
            "counter",
            "Cache reads, by backend and result.",
        );
        for (result, value) in [
            ("hit", metrics.cache_hits),
            ("miss", metrics.cache_misses),
            ("absent", metrics.cache_absent),
            ("error", metrics.cache_errors),
        ] {
            let _ = writeln!(
                out,
                "flag_cache_requests_total{{backend=\"{backend}\",result=\"{result}\"}} {value}"
            );
        }
        header(
            out,
            "flag_cache_fallbacks_total",
            "counter",
            "Reads answered from the repository because the cache failed.",
        );
        let _ = writeln!(
            out,
            "flag_cache_fallbacks_total{{backend=\"{backend}\"}} {}",
            metrics.cache_fallbacks
        );
        header(
            out,
            "flag_cache_fills_total",
            "counter",
            "Cache fills after a miss, by outcome (stale: a newer revision was already known).",
        );
        for (outcome, value) in [
            ("stored", metrics.fills_stored),
            ("stale", metrics.fills_stale),
        ] {
            let _ = writeln!(
                out,
                "flag_cache_fills_total{{outcome=\"{outcome}\"}} {value}"
            );
        }
        for (name, help, value) in [
            (
                "flag_repository_reads_total",
                "Reads that reached the repository (the database).",
                metrics.repository_reads,
            ),
            (
                "flag_invalidation_retries_total",
                "Repeated attempts at a cache invalidation that failed after a write.",
                metrics.invalidation_retries,
            ),
            (
                "flag_invalidations_abandoned_total",
                "Invalidations given up after retrying for a whole cache TTL.",
                metrics.invalidations_abandoned,
            ),
            (
                "flag_cache_too_large_total",
                "Cache fills refused because the snapshot is larger than the cache accepts \
                 (REDIS_MAX_SNAPSHOT_BYTES); those environments are served in process.",
                metrics.fills_too_large,
            ),
            (
                "flag_unreadable_flags_total",
                "Stored flags that could not be read (each version counted once): each answers a \
                 GENERAL error, its environment's other flags are served.",
                metrics.unreadable_flags,
            ),
            (
                "flag_stale_answers_total",
                "Reads answered from last-known-good flags because cache and database both failed.",
                metrics.stale_answers,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            out,
            "flag_cache_circuit_open",
            "gauge",
            "1 while reads skip the cache because it is out (until a probe finds it back), else 0.",
        );
        let _ = writeln!(
            out,
            "flag_cache_circuit_open{{backend=\"{backend}\"}} {}",
            u8::from(self.circuit_open)
        );
        header(
            out,
            "flag_event_streams_open",
            "gauge",
            "OFREP event streams open now (at most FLAG_MAX_STREAMS).",
        );
        let _ = writeln!(out, "flag_event_streams_open {}", self.streams_open);
        header(
            out,
            "flag_build_info",
            "gauge",
            "Always 1; the labels tell the version and the stores in use.",
        );
        let _ = writeln!(
            out,
            "flag_build_info{{version=\"{}\",cache=\"{backend}\",repository=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            self.repository_backend
        );
    }
}

/// A label value as the text format writes it: backslash, double quote and line feed escaped.
fn label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    std::borrow::Cow::Owned(escaped)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counts_agree() {
        let http = HttpMetrics::default();
        let route = "/ofrep/v1/evaluate/flags/{key}";
        http.record(route, "POST", 200, Duration::from_micros(30));
        http.record(route, "POST", 200, Duration::from_micros(700));
        http.record(route, "POST", 200, Duration::from_secs(20));
        http.record(route, "POST", 404, Duration::from_micros(30));
        let text = Exposition {
            http: &http,
            service: ServiceMetrics::default(),
            cache_backend: "memory",
            repository_backend: "sqlite",
            tiered: None,
            circuit_open: false,
            streams_open: 0,
            flags_file: None,
            evaluations: None,
            webhooks: None,
        }
        .render();
        assert!(
            !text.contains("flag_tiered_"),
            "tiered metrics without tiered"
        );
        let labels = format!("route=\"{route}\",method=\"POST\",status=\"200\"");
        for expected in [
            format!("flag_http_requests_total{{{labels}}} 3"),
            format!("flag_http_request_duration_seconds_bucket{{{labels},le=\"0.00005\"}} 1"),
            format!("flag_http_request_duration_seconds_bucket{{{labels},le=\"0.001\"}} 2"),
            format!("flag_http_request_duration_seconds_bucket{{{labels},le=\"10\"}} 2"),
            format!("flag_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3"),
            format!("flag_http_request_duration_seconds_count{{{labels}}} 3"),
            "flag_http_requests_total{route=\"/ofrep/v1/evaluate/flags/{key}\",method=\"POST\",status=\"404\"} 1".to_owned(),
            "flag_cache_requests_total{backend=\"memory\",result=\"hit\"} 0".to_owned(),
            "flag_cache_fills_total{outcome=\"stale\"} 0".to_owned(),
        ] {
            assert!(text.contains(&expected), "missing {expected} in\n{text}");
        }
        let sum_line = text
            .lines()
            .find(|line| {
                line.starts_with(&format!(
                    "flag_http_request_duration_seconds_sum{{{labels}}}"
                ))
            })
            .unwrap();
        let sum: f64 = sum_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((sum - 20.00073).abs() < 1e-9, "{sum}");
    }
}
