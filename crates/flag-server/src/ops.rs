//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics::Exposition;
use crate::state::AppState;

/// The OpenAPI 3 document of every route, served as written.
const OPENAPI: &str = include_str!("openapi.json");

/// How long a readiness probe waits for each store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = Exposition {
        http: &state.http_metrics,
        service: state.service.metrics(),
        cache_backend: state.service.cache_backend(),
        repository_backend: state.service.repository_backend(),
        tiered: state.service.cache_tier_status(),
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

/// The OpenAPI document.
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// The process is alive.
async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `200` while the repository answers (`degraded` when the cache does not), `200 degraded` while
/// it fails but last-known-good flags can still be served, else `503`.
async fn readyz(State(state): State<AppState>) -> Response {
    let (repository, cache) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, state.service.ping_repository()),
        tokio::time::timeout(PROBE_TIMEOUT, state.service.ping_cache()),
    );
    let repository_ok = matches!(repository, Ok(Ok(())));
    let cache_ok = matches!(cache, Ok(Ok(())));
    let (status, word) = match (repository_ok, cache_ok) {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (false, _) if state.service.can_serve_last_known_good() => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unready"),
    };
    let shown = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body =
        json!({"status": word, "repository": shown(repository_ok), "cache": shown(cache_ok)});
    (status, axum::Json(body)).into_response()
}
