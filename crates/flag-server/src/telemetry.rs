//! OpenTelemetry: traces and metrics exported over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or a signal's own `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set; nothing is built, and nothing sent, otherwise.
//!
//! - **Traces.** One server span per request (`tracking`), a child span per cache, repository
//!   and bus call (`flag_core::Traced`, wired in only while exporting), and one span per flag
//!   evaluated, named `feature_flag.evaluation` and carrying the feature-flag semantic
//!   conventions: `feature_flag.key`, `feature_flag.result.variant`,
//!   `feature_flag.result.reason` (lower case, as the conventions spell the reasons),
//!   `feature_flag.provider.name` and, on an error, `error.type`. A W3C `traceparent` on the
//!   request makes its span a child of the caller's trace.
//! - **Metrics.** `http.server.request.duration` (seconds, by method, route template and status),
//!   and observable counters read from the service's own counters at each export:
//!   `flag.cache.requests` (by `result`), `flag.repository.reads`, `flag.stale_answers`, and,
//!   with `FLAG_EVALUATION_METRICS=on`, `feature_flag.evaluations` (by environment, flag, variant
//!   and reason).
//! - **The standard variables apply**: `OTEL_SERVICE_NAME` (default `flag-server`),
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//!   `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`; `OTEL_SDK_DISABLED=true`
//!   turns it all off and `OTEL_TRACES_EXPORTER=none` / `OTEL_METRICS_EXPORTER=none` one signal.
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` may only be `http/protobuf`: any other value refuses to start.
//!
//! Why a collector can never slow a request: spans are queued (at most `OTEL_BSP_MAX_QUEUE_SIZE`,
//! the rest dropped) and metrics read, then both exported from the SDK's own threads with a
//! blocking client, never on the runtime that answers requests. At exit the export is flushed
//! for at most [`FLUSH_AT_EXIT`], so a stalled collector does not hold a shutdown either.
//!
//! Why spans cost nothing while not exporting: without an exporter the binary's log filters are
//! global and pass events only, so `tracing` marks every span's call site as never enabled, and
//! making one is a load and a branch. (With per-layer filters, which exporting needs, each span
//! is asked for as it is made: an A/B of `wrk` rounds measured that at about 8 % of a request
//! when nothing was exported, so the binary builds one subscriber or the other.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderMap;
use flag_core::{ErrorCode, Evaluation, EvaluationError, Reason, ServiceError};
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::state::AppState;

/// How long the exit waits for the last export.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// The name the spans and the resource give this service unless `OTEL_SERVICE_NAME` says.
const SERVICE_NAME: &str = "flag-server";

/// Why telemetry cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A standard variable holds a value this server does not take.
    #[error("{variable}={value:?}: {why}")]
    Setting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        why: &'static str,
    },
    /// The exporter could not be built (an endpoint that is not a URL, for example).
    #[error("building the OTLP {signal} exporter: {message}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's message.
        message: String,
    },
}

/// The exporting providers: present only while `OTEL_EXPORTER_OTLP_*ENDPOINT` is set.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

/// The `http.server.request.duration` histogram, once metrics are exported.
static REQUEST_DURATION: OnceLock<Histogram<f64>> = OnceLock::new();

/// The W3C trace-context propagator, once traces are exported.
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

/// Whether traces are exported: set once at start.
static TRACING: AtomicBool = AtomicBool::new(false);

impl Telemetry {
    /// The providers the process environment asks for, or `None` when it asks for none.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        Self::from_lookup(|name| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        })
    }

    /// As [`Telemetry::from_env`], reading variables through `variable`.
    fn from_lookup(
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        if variable("OTEL_SDK_DISABLED")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Some(value) = variable(name)
                && value.trim() != "http/protobuf"
            {
                return Err(TelemetryError::Setting {
                    variable: name,
                    value,
                    why: "only http/protobuf (OTLP over HTTP, port 4318) is built in",
                });
            }
        }
        let general = variable("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let wanted = |signal: &str, exporter: &str| {
            let endpoint = general || variable(signal).is_some();
            let off = variable(exporter).is_some_and(|value| value.trim() == "none");
            endpoint && !off
        };
        let traces = wanted("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER");
        let metrics = wanted(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_METRICS_EXPORTER",
        );
        if !traces && !metrics {
            return Ok(None);
        }
        // The exporters' client speaks https:// with rustls on the ring provider (as rediss://
        // and the webhooks do); it must be installed before a client is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resource = resource(&variable);
        let tracer = traces
            .then(|| {
                let exporter = SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
                    .map_err(|error| TelemetryError::Exporter {
                        signal: "traces",
                        message: error.to_string(),
                    })?;
                Ok(SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build())
            })
            .transpose()?;
        let meter = metrics
            .then(|| {
                let exporter = MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
                    .map_err(|error| TelemetryError::Exporter {
                        signal: "metrics",
                        message: error.to_string(),
                    })?;
                Ok(SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource.clone())
                    .build())
            })
            .transpose()?;
        if tracer.is_some() {
            let _ = PROPAGATOR.set(TraceContextPropagator::new());
            TRACING.store(true, Ordering::Relaxed);
        }
        if let Some(meter) = &meter {
            let _ = REQUEST_DURATION.set(
                meter
                    .meter(SERVICE_NAME)
                    .f64_histogram("http.server.request.duration")
                    .with_unit("s")
                    .with_description("Duration of HTTP server requests.")
                    .with_boundaries(crate::metrics::BUCKETS.to_vec())
                    .build(),
            );
        }
        Ok(Some(Self { tracer, meter }))
    }

    /// Whether spans are exported (then the ports are wrapped in `flag_core::Traced`).
    pub fn traces(&self) -> bool {
        self.tracer.is_some()
    }

    /// The `tracing` layer that turns this crate's and the adapters' spans into OpenTelemetry
    /// spans, or `None` when traces are not exported.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let tracer = self.tracer.as_ref()?.tracer(SERVICE_NAME);
        let ours = Targets::new()
            .with_target("flag_server", LevelFilter::INFO)
            .with_target("flag_core", LevelFilter::INFO)
            .with_target("flag_sql", LevelFilter::INFO)
            .with_target("flag_redis", LevelFilter::INFO)
            .with_target("flag_memory", LevelFilter::INFO)
            .with_target("flag_file", LevelFilter::INFO);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_filter(ours),
        )
    }

    /// Registers the observable counters read from `state` at each export.
    pub fn observe(&self, state: &AppState) {
        let Some(provider) = &self.meter else {
            return;
        };
        observe(&provider.meter(SERVICE_NAME), state);
    }

    /// Flushes and stops both exporters, waiting at most [`FLUSH_AT_EXIT`].
    pub fn shutdown(self) {
        let (done, finished) = std::sync::mpsc::channel();
        // The SDK's shutdown blocks until its threads end, which a stalled collector holds up to
        // the export timeout: it runs on a thread of its own that exit does not wait for.
        let spawned = std::thread::Builder::new()
            .name("otel-shutdown".into())
            .spawn(move || {
                if let Some(tracer) = self.tracer
                    && let Err(error) = tracer.shutdown()
                {
                    tracing::warn!(%error, "flushing spans at exit");
                }
                if let Some(meter) = self.meter
                    && let Err(error) = meter.shutdown()
                {
                    tracing::warn!(%error, "flushing metrics at exit");
                }
                let _ = done.send(());
            });
        if spawned.is_ok() && finished.recv_timeout(FLUSH_AT_EXIT).is_err() {
            tracing::warn!("the OTLP collector did not take the last export in time; exiting");
        }
    }
}

/// The resource: the standard variables' attributes, with `flag-server` as the service's name
/// unless they name it.
fn resource(variable: &impl Fn(&str) -> Option<String>) -> Resource {
    let named = variable("OTEL_SERVICE_NAME").is_some()
        || variable("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|attributes| attributes.contains("service.name="));
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// The observable instruments over the service's counters.
fn observe(meter: &Meter, state: &AppState) {
    let service = state.service.clone();
    let backend = service.cache_backend();
    let _ = meter
        .u64_observable_counter("flag.cache.requests")
        .with_description("Cache reads, by result.")
        .with_callback(move |observer| {
            let metrics = service.metrics();
            for (result, value) in [
                ("hit", metrics.cache_hits),
                ("miss", metrics.cache_misses),
                ("absent", metrics.cache_absent),
                ("error", metrics.cache_errors),
            ] {
                observer.observe(
                    value,
                    &[
                        KeyValue::new("flag.cache.backend", backend),
                        KeyValue::new("result", result),
                    ],
                );
            }
        })
        .build();
    let service = state.service.clone();
    let _ = meter
        .u64_observable_counter("flag.repository.reads")
        .with_description("Reads that reached the repository (the database).")
        .with_callback(move |observer| observer.observe(service.metrics().repository_reads, &[]))
        .build();
    let service = state.service.clone();
    let _ = meter
        .u64_observable_counter("flag.stale_answers")
        .with_description(
            "Reads answered from last-known-good flags because cache and database both failed.",
        )
        .with_callback(move |observer| observer.observe(service.metrics().stale_answers, &[]))
        .build();
    if let Some(counts) = &state.evaluation_counts {
        let counts = Arc::clone(counts);
        let _ = meter
            .u64_observable_counter("feature_flag.evaluations")
            .with_description("Flag evaluations, by environment, flag, variant and reason.")
            .with_callback(move |observer| {
                // Every counted flag: a deleted flag's series stays at its last count here (the
                // callback cannot wait for the store to say which flags still exist).
                for series in counts.series(|_, _| true) {
                    observer.observe(
                        series.count,
                        &[
                            KeyValue::new("flag.environment", series.environment.to_string()),
                            KeyValue::new("feature_flag.key", series.flag.to_string()),
                            KeyValue::new("feature_flag.result.variant", series.variant),
                            KeyValue::new("feature_flag.result.reason", reason(series.reason)),
                        ],
                    );
                }
            })
            .build();
    }
}

/// Records one answered request in `http.server.request.duration`, when metrics are exported.
pub(crate) fn record_request(
    route: &'static str,
    method: &'static str,
    status: u16,
    took: Duration,
) {
    if let Some(histogram) = REQUEST_DURATION.get() {
        histogram.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }
}

/// The span of one request to `route`: a server span, the child of the trace the request's
/// `traceparent` names, if any.
pub(crate) fn request_span(method: &'static str, route: &'static str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if !span.is_disabled()
        && let Some(propagator) = PROPAGATOR.get()
    {
        let parent = propagator.extract_with_context(&Context::new(), &Headers(headers));
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the status a request was answered with on its span.
pub(crate) fn answered(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Whether the current request's trace is sampled (and traces are exported at all): a request
/// that will not be exported gets no evaluation spans (with 100 flags in a bulk request, most of
/// what tracing it would cost) and no store-call spans (`flag_core::Traced::when`).
pub fn sampled() -> bool {
    TRACING.load(Ordering::Relaxed) && Span::current().context().span().span_context().is_sampled()
}

/// The span of one flag's evaluation, its result recorded by [`evaluated_one`] (disabled when
/// the request is not sampled).
pub(crate) fn evaluation_span(key: &str) -> Span {
    if !sampled() {
        return Span::none();
    }
    tracing::info_span!(
        "feature_flag.evaluation",
        feature_flag.key = key,
        feature_flag.provider.name = SERVICE_NAME,
        feature_flag.result.variant = tracing::field::Empty,
        feature_flag.result.reason = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records a single evaluation's outcome on its span.
pub(crate) fn evaluated_one(span: &Span, outcome: &Result<Evaluation, ServiceError>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(evaluation) => evaluated(span, evaluation),
        Err(ServiceError::Evaluation(error)) => failed(span, error.code()),
        Err(_) => failed(span, ErrorCode::General),
    }
}

/// One span per flag of a bulk evaluation, made after the evaluation (it is one synchronous pass
/// over the snapshot), so each carries its flag's outcome.
pub(crate) fn evaluated_all(results: &[Result<Evaluation, EvaluationError>]) {
    if !sampled() {
        return;
    }
    for result in results {
        let key = match result {
            Ok(evaluation) => evaluation.key(),
            Err(error) => error.key(),
        };
        let span = evaluation_span(key.as_str());
        if span.is_disabled() {
            return;
        }
        match result {
            Ok(evaluation) => evaluated(&span, evaluation),
            Err(error) => failed(&span, error.code()),
        }
    }
}

/// Records an evaluation's variant and reason on its span.
fn evaluated(span: &Span, evaluation: &Evaluation) {
    span.record("feature_flag.result.variant", evaluation.variant());
    span.record("feature_flag.result.reason", reason(evaluation.reason()));
}

/// Records a failed evaluation on its span: reason `error`, and the code as `error.type`.
fn failed(span: &Span, code: ErrorCode) {
    span.record("feature_flag.result.reason", "error");
    span.record("error.type", error_type(code));
}

/// An OpenFeature error code as the semantic conventions spell `error.type`.
fn error_type(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::ParseError => "parse_error",
        ErrorCode::TargetingKeyMissing => "targeting_key_missing",
        ErrorCode::InvalidContext => "invalid_context",
        ErrorCode::FlagNotFound => "flag_not_found",
        _ => "general",
    }
}

/// A reason as the semantic conventions spell it.
fn reason(reason: Reason) -> &'static str {
    match reason {
        Reason::Static => "static",
        Reason::Default => "default",
        Reason::TargetingMatch => "targeting_match",
        Reason::Split => "split",
        Reason::Disabled => "disabled",
        Reason::Cached => "cached",
        Reason::Error => "error",
        _ => "unknown",
    }
}

/// Request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn nothing_is_built_without_an_endpoint_or_when_disabled() {
        assert!(Telemetry::from_lookup(lookup(&[])).unwrap().is_none());
        assert!(
            Telemetry::from_lookup(lookup(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ]))
            .unwrap()
            .is_none()
        );
        assert!(
            Telemetry::from_lookup(lookup(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_METRICS_EXPORTER", "none"),
            ]))
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn another_protocol_is_refused_with_its_name() {
        let error = Telemetry::from_lookup(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .err()
        .unwrap();
        assert!(
            error
                .to_string()
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\""),
            "{error}"
        );
    }
}
