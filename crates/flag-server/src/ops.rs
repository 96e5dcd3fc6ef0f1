//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::Exposition;
use crate::openapi::{Document, OPERATIONS};
use crate::state::AppState;

/// How long a readiness probe waits for each store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
struct Liveness {
    /// Always `ok`.
    status: Alive,
}

/// The only state a process that answers can be in.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Alive {
    Ok,
}

/// The answer of `/readyz`.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready`; `degraded` while a store fails but answers can still be given; else `unready`.
    status: ReadinessStatus,
    /// Whether the repository answered the probe.
    repository: StoreStatus,
    /// Whether the cache answered the probe.
    cache: StoreStatus,
}

/// Whether the instance should get traffic.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ReadinessStatus {
    Ready,
    Degraded,
    Unready,
}

/// How one store answered its probe.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum StoreStatus {
    Ok,
    Unavailable,
}

impl StoreStatus {
    fn of(ok: bool) -> Self {
        if ok { Self::Ok } else { Self::Unavailable }
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = OPERATIONS,
    operation_id = "metrics",
    summary = "Prometheus text exposition.",
    responses((status = 200, description = "Counters and histograms.", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let evaluations = match &state.evaluation_counts {
        Some(counts) => Some(evaluation_series(&state, counts).await),
        None => None,
    };
    let text = Exposition {
        http: &state.http_metrics,
        service: state.service.metrics(),
        cache_backend: state.service.cache_backend(),
        repository_backend: state.service.repository_backend(),
        tiered: state.service.cache_tier_status(),
        circuit_open: state.service.cache_circuit_open(),
        streams_open: state.streams.open(),
        flags_file: state
            .flags_file
            .as_ref()
            .map(flag_file::FileRepository::stats),
        evaluations: evaluations.as_deref(),
        webhooks: state.webhooks.as_ref().map(|webhooks| webhooks.counts()),
    }
    .render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = OPERATIONS,
    operation_id = "openapi",
    summary = "This document.",
    responses((status = 200, description = "OpenAPI 3.1.", body = Object))
)]
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Document::served().json(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = OPERATIONS,
    operation_id = "health",
    summary = "The process is alive.",
    responses((status = 200, description = "Alive.", body = Liveness))
)]
async fn healthz() -> Response {
    axum::Json(Liveness { status: Alive::Ok }).into_response()
}

/// `200` while the repository answers (`degraded` when the cache does not), `200 degraded` while
/// it fails but a shared cache answers or last-known-good flags can still be served, else `503`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = OPERATIONS,
    operation_id = "ready",
    summary = "Whether the stores answer.",
    responses(
        (
            status = 200,
            description = "`ready`, or `degraded` when the cache fails (reads fall back to the \
                           database) or the database fails while last-known-good flags can be served.",
            body = Readiness
        ),
        (status = 503, description = "`unready`: the database does not answer.", body = Readiness),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let (repository, cache) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, state.service.ping_repository()),
        tokio::time::timeout(PROBE_TIMEOUT, state.service.ping_cache()),
    );
    let repository_ok = matches!(repository, Ok(Ok(())));
    let cache_ok = matches!(cache, Ok(Ok(())));
    let (code, status) = match (repository_ok, cache_ok) {
        (true, true) => (StatusCode::OK, ReadinessStatus::Ready),
        (true, false) => (StatusCode::OK, ReadinessStatus::Degraded),
        // A shared cache that answers holds what other instances (or this one) put there.
        (false, true) if state.shared_cache => (StatusCode::OK, ReadinessStatus::Degraded),
        (false, _) if state.service.can_serve_last_known_good() => {
            (StatusCode::OK, ReadinessStatus::Degraded)
        }
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, ReadinessStatus::Unready),
    };
    let body = Readiness {
        status,
        repository: StoreStatus::of(repository_ok),
        cache: StoreStatus::of(cache_ok),
    };
    (code, axum::Json(body)).into_response()
}

/// The per-flag evaluation series, without the flags that no longer exist (their series stop).
/// An environment whose flags cannot be read now keeps its series.
async fn evaluation_series(
    state: &AppState,
    counts: &flag_core::EvaluationCounts,
) -> Vec<flag_core::EvaluationSeries> {
    let mut existing = std::collections::HashMap::new();
    for env in counts.environments() {
        if let Ok(snapshot) = state.service.snapshot(&env).await {
            existing.insert(env, snapshot);
        }
    }
    counts.series(|env, key| {
        existing
            .get(env)
            .is_none_or(|snapshot| snapshot.flag(key.as_str()).is_some())
    })
}
