//! Operations endpoints: liveness and readiness.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;

/// How long a readiness probe waits for each store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`, `GET /readyz`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is alive.
async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `200` while the repository answers (`degraded` when the cache does not), else `503`.
async fn readyz(State(state): State<AppState>) -> Response {
    let repository = tokio::time::timeout(PROBE_TIMEOUT, state.service.ping_repository()).await;
    let repository_ok = matches!(repository, Ok(Ok(())));
    let cache_ok = match &state.redis {
        None => true,
        Some(redis) => redis.ping().await.is_ok(),
    };
    let (status, word) = match (repository_ok, cache_ok) {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unready"),
    };
    let shown = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body =
        json!({"status": word, "repository": shown(repository_ok), "cache": shown(cache_ok)});
    (status, axum::Json(body)).into_response()
}
