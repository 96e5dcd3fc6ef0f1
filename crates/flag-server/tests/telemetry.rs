//! OpenTelemetry export, end to end: the real binary exports to an OTLP/HTTP receiver of this
//! test's own (the protobuf decoded with `opentelemetry-proto`'s types), and the spans, their
//! attributes and parents, and the metrics are checked as a collector would receive them. A
//! collector that refuses connections, or accepts them and never answers, costs requests
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use support::{Running, request};

/// What the receiver does with an export.
#[derive(Clone, Copy, PartialEq)]
enum Collector {
    /// Takes it and answers `200`.
    Answers,
    /// Reads it and never answers.
    Stalls,
}

/// What the receiver took.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<ExportMetricsServiceRequest>,
    /// Exports that arrived, answered or not.
    arrivals: usize,
}

/// An OTLP/HTTP receiver on a free port of 127.0.0.1.
struct Receiver {
    endpoint: String,
    received: Arc<Mutex<Received>>,
}

impl Receiver {
    async fn start(behaviour: Collector) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = (Arc::clone(&received), behaviour);
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, received }
    }

    /// Waits (up to 20 s) until `found` holds of what was received.
    async fn until<T>(&self, what: &str, found: impl Fn(&Received) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(value) = found(&self.received.lock().unwrap()) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "the collector never received {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type Shared = (Arc<Mutex<Received>>, Collector);

async fn traces(State((received, behaviour)): State<Shared>, body: Bytes) -> Vec<u8> {
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    {
        let mut received = received.lock().unwrap();
        received.arrivals += 1;
        for resource in export.resource_spans {
            for scope in resource.scope_spans {
                received.spans.extend(scope.spans);
            }
        }
    }
    if behaviour == Collector::Stalls {
        std::future::pending::<()>().await;
    }
    Vec::new()
}

async fn metrics(State((received, behaviour)): State<Shared>, body: Bytes) -> Vec<u8> {
    let export = ExportMetricsServiceRequest::decode(body).expect("an OTLP metrics export");
    {
        let mut received = received.lock().unwrap();
        received.arrivals += 1;
        received.metrics.push(export);
    }
    if behaviour == Collector::Stalls {
        std::future::pending::<()>().await;
    }
    Vec::new()
}

/// An attribute's value as text (strings as they are, integers in decimal).
fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|pair| pair.key == key)?
        .value
        .as_ref()?;
    match value {
        AnyValue {
            value: Some(any_value::Value::StringValue(text)),
            ..
        } => Some(text.clone()),
        AnyValue {
            value: Some(any_value::Value::IntValue(number)),
            ..
        } => Some(number.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The binary exporting to `endpoint`, quickly (spans every 100 ms, metrics every 500 ms).
fn exporting_to(endpoint: &str, extra: &[(&str, &str)]) -> Running {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10000"),
        ("FLAG_EVALUATION_METRICS", "on"),
    ];
    env.extend_from_slice(extra);
    Running::start(&env)
}

const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-secret");

/// Creates `key`: on, `red` for everyone, `blue` for `vip` users.
async fn create_flag(server: &Running, key: &str) {
    let flag = json!({
        "enabled": true,
        "variants": {"red": "red", "blue": "blue"},
        "defaultVariant": "red",
        "offVariant": "red",
        "rules": [{"conditions": [{"attribute": "tier", "operator": "equals", "value": "vip"}], "variant": "blue"}],
    });
    let reply = request(
        server.socket(),
        "PUT",
        &format!("/v1/environments/production/flags/{key}"),
        &[ADMIN],
        &flag.to_string(),
    )
    .await;
    assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_spans_carry_the_feature_flag_conventions_inside_the_callers_trace() {
    let collector = Receiver::start(Collector::Answers).await;
    let server = exporting_to(
        &collector.endpoint,
        &[("OTEL_SERVICE_NAME", "flags-under-test")],
    );
    create_flag(&server, "banner").await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let single = request(
        server.socket(),
        "POST",
        "/ofrep/v1/evaluate/flags/banner",
        &[("traceparent", traceparent.as_str())],
        &json!({"context": {"targetingKey": "u-1", "tier": "vip"}}).to_string(),
    )
    .await;
    assert_eq!(single.status, 200, "{}", single.body);
    assert_eq!(single.json()["variant"], "blue");
    // A caller that does not sample its trace: nothing of this request is exported.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = format!("00-{unsampled_trace}-b7ad6b7169203331-00");
    let quiet = request(
        server.socket(),
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[("traceparent", unsampled.as_str())],
        &json!({"context": {"targetingKey": "u-3"}}).to_string(),
    )
    .await;
    assert_eq!(quiet.status, 200, "{}", quiet.body);
    let missing = request(
        server.socket(),
        "POST",
        "/ofrep/v1/evaluate/flags/no-such-flag",
        &[],
        &json!({"context": {"targetingKey": "u-1"}}).to_string(),
    )
    .await;
    assert_eq!(missing.status, 404);
    let bulk = request(
        server.socket(),
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[],
        &json!({"context": {"targetingKey": "u-2"}}).to_string(),
    )
    .await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);

    // The single evaluation: a span with the conventions' attributes, child of the request's
    // server span, which is the child of the caller's span in the caller's trace.
    let (evaluation, request_span) = collector
        .until(
            "the single evaluation's span and its request's span",
            |received| {
                let evaluation = received.spans.iter().find(|span| {
                    span.name == "feature_flag.evaluation"
                        && hex(&span.trace_id) == trace_id
                        && attribute(&span.attributes, "feature_flag.key").as_deref()
                            == Some("banner")
                })?;
                let parent = received
                    .spans
                    .iter()
                    .find(|span| span.span_id == evaluation.parent_span_id)?;
                Some((evaluation.clone(), parent.clone()))
            },
        )
        .await;
    assert_eq!(
        attribute(&evaluation.attributes, "feature_flag.result.variant").as_deref(),
        Some("blue")
    );
    assert_eq!(
        attribute(&evaluation.attributes, "feature_flag.result.reason").as_deref(),
        Some("targeting_match")
    );
    assert_eq!(request_span.name, "POST /ofrep/v1/evaluate/flags/{key}");
    assert_eq!(hex(&request_span.parent_span_id), caller_span);
    assert_eq!(request_span.kind, 2, "a server span (SPAN_KIND_SERVER)");
    assert_eq!(
        attribute(&request_span.attributes, "http.route").as_deref(),
        Some("/ofrep/v1/evaluate/flags/{key}")
    );
    assert_eq!(
        attribute(&request_span.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );

    // The store calls the request made are its children: the first evaluation missed the cache
    // and read the repository.
    let children = collector
        .until("the request's store calls", |received| {
            let names: Vec<String> = received
                .spans
                .iter()
                .filter(|span| {
                    span.trace_id == request_span.trace_id && span.name != "feature_flag.evaluation"
                })
                .filter(|span| span.span_id != request_span.span_id)
                .map(|span| span.name.clone())
                .collect();
            (names.iter().any(|name| name.starts_with("cache."))
                && names.iter().any(|name| name == "repository.snapshot"))
            .then_some(names)
        })
        .await;
    assert!(
        children
            .iter()
            .all(|name| name.starts_with("cache.") || name.starts_with("repository.")),
        "{children:?}"
    );

    // A missing flag: reason `error`, `error.type` as the conventions spell the code.
    let failed = collector
        .until("the missing flag's span", |received| {
            received
                .spans
                .iter()
                .find(|span| {
                    attribute(&span.attributes, "feature_flag.key").as_deref()
                        == Some("no-such-flag")
                })
                .cloned()
        })
        .await;
    assert_eq!(
        attribute(&failed.attributes, "feature_flag.result.reason").as_deref(),
        Some("error")
    );
    assert_eq!(
        attribute(&failed.attributes, "error.type").as_deref(),
        Some("flag_not_found")
    );

    // The bulk evaluation: one span per flag, under the bulk request's span.
    let bulk_span = collector
        .until("the bulk evaluation's span", |received| {
            let request = received
                .spans
                .iter()
                .find(|span| span.name == "POST /ofrep/v1/evaluate/flags")?;
            received
                .spans
                .iter()
                .find(|span| {
                    span.name == "feature_flag.evaluation" && span.parent_span_id == request.span_id
                })
                .cloned()
        })
        .await;
    assert_eq!(
        attribute(&bulk_span.attributes, "feature_flag.key").as_deref(),
        Some("banner")
    );
    assert_eq!(
        attribute(&bulk_span.attributes, "feature_flag.result.variant").as_deref(),
        Some("red")
    );
    assert_eq!(
        attribute(&bulk_span.attributes, "feature_flag.result.reason").as_deref(),
        Some("default")
    );

    // Metrics: the request duration histogram by route, and the evaluation counts, under the
    // service's configured name.
    let (routes, evaluations) = collector
        .until("the request duration and evaluation metrics", |received| {
            let mut routes = HashMap::new();
            let mut evaluations = 0;
            for export in &received.metrics {
                for resource in &export.resource_metrics {
                    let named = resource.resource.as_ref().and_then(|resource| {
                        attribute(&resource.attributes, "service.name")
                    });
                    assert_eq!(named.as_deref(), Some("flags-under-test"));
                    for scope in &resource.scope_metrics {
                        for metric in &scope.metrics {
                            use opentelemetry_proto::tonic::metrics::v1::metric::Data;
                            match (&metric.name[..], &metric.data) {
                                ("http.server.request.duration", Some(Data::Histogram(histogram))) => {
                                    for point in &histogram.data_points {
                                        if let (Some(route), Some(status)) = (
                                            attribute(&point.attributes, "http.route"),
                                            attribute(&point.attributes, "http.response.status_code"),
                                        ) {
                                            routes.insert((route, status), point.count);
                                        }
                                    }
                                }
                                ("feature_flag.evaluations", Some(Data::Sum(sum))) => {
                                    // Cumulative: each export holds every count so far.
                                    let mut banner = 0;
                                    for point in &sum.data_points {
                                        if attribute(&point.attributes, "feature_flag.key").as_deref() == Some("banner") {
                                            use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
                                            if let Some(Value::AsInt(count)) = point.value {
                                                banner += count;
                                            }
                                        }
                                    }
                                    evaluations = evaluations.max(banner);
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            let single = |status: &str| {
                routes
                    .get(&("/ofrep/v1/evaluate/flags/{key}".to_owned(), status.to_owned()))
                    .is_some_and(|count| *count >= 1)
            };
            (single("200") && single("404") && evaluations >= 2)
                .then_some((routes, evaluations))
        })
        .await;
    assert!(
        !collector
            .received
            .lock()
            .unwrap()
            .spans
            .iter()
            .any(|span| hex(&span.trace_id) == unsampled_trace),
        "an unsampled request was exported"
    );
    assert!(
        routes.contains_key(&("/ofrep/v1/evaluate/flags".to_owned(), "200".to_owned())),
        "{routes:?}"
    );
    assert!(evaluations >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_postgres_and_bus_calls_are_spans_of_their_request() {
    let collector = Receiver::start(Collector::Answers).await;
    let redis = flag_fixtures::RedisServer::shared()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let database = flag_fixtures::PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let server = exporting_to(
        &collector.endpoint,
        &[
            ("DATABASE_URL", database.url()),
            ("REDIS_URL", &redis.url),
            ("REDIS_KEY_PREFIX", &redis.key_prefix),
        ],
    );
    create_flag(&server, "banner").await;
    let reply = request(
        server.socket(),
        "POST",
        "/ofrep/v1/evaluate/flags/banner",
        &[],
        &json!({"context": {"targetingKey": "u-1"}}).to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The write: its request span holds the database write and the invalidation, which is
    // published on the bus.
    let (write, children) = collector
        .until("the write's store calls", |received| {
            let write = received
                .spans
                .iter()
                .find(|span| span.name == "PUT /v1/environments/{env}/flags/{key}")?;
            let children: Vec<(String, Option<String>)> = received
                .spans
                .iter()
                .filter(|span| span.trace_id == write.trace_id && span.span_id != write.span_id)
                .map(|span| {
                    (
                        span.name.clone(),
                        attribute(&span.attributes, "flag.backend"),
                    )
                })
                .collect();
            let has = |name: &str| children.iter().any(|(child, _)| child == name);
            (has("repository.upsert") && has("bus.publish")).then(|| (write.clone(), children))
        })
        .await;
    assert_eq!(write.kind, 2);
    assert!(
        children.contains(&("repository.upsert".to_owned(), Some("postgres".to_owned()))),
        "{children:?}"
    );
    assert!(
        children
            .iter()
            .any(|(name, backend)| name == "bus.publish" && backend.as_deref() == Some("redis")),
        "{children:?}"
    );
    // The evaluation read Redis.
    collector
        .until("the evaluation's Redis read", |received| {
            let evaluation = received
                .spans
                .iter()
                .find(|span| span.name == "POST /ofrep/v1/evaluate/flags/{key}")?;
            received
                .spans
                .iter()
                .any(|span| {
                    span.trace_id == evaluation.trace_id
                        && span.name.starts_with("cache.")
                        && attribute(&span.attributes, "flag.backend").as_deref() == Some("redis")
                        && attribute(&span.attributes, "flag.environment").as_deref()
                            == Some("production")
                })
                .then_some(())
        })
        .await;
}

/// Requests answered while the collector is `collector`: every one succeeds, none waits for the
/// export (each well under the export's 10 s timeout).
async fn requests_go_on(server: &Running) {
    for round in 0..200 {
        let started = Instant::now();
        let reply = request(
            server.socket(),
            "POST",
            "/ofrep/v1/evaluate/flags/banner",
            &[],
            &json!({"context": {"targetingKey": format!("u-{round}")}}).to_string(),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {round} waited {:?} for the collector",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_costs_requests_nothing() {
    let collector = Receiver::start(Collector::Stalls).await;
    let server = exporting_to(&collector.endpoint, &[]);
    create_flag(&server, "banner").await;
    // An export is under way and will not be answered...
    collector
        .until("an export", |received| {
            (received.arrivals > 0).then_some(())
        })
        .await;
    // ...and requests are served as ever, spans queued or dropped behind it.
    requests_go_on(&server).await;
    // A shutdown does not wait on it for longer than the flush bound.
    let started = Instant::now();
    server.terminate();
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "exit took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_requests_nothing() {
    // A port nothing listens on: every export is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = exporting_to(&endpoint, &[]);
    create_flag(&server, "banner").await;
    requests_go_on(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_refuses_to_start_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flag-server"))
        .env_clear()
        .env("FLAG_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", "sqlite::memory:")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{stderr}");
}
