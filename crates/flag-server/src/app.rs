//! The application: shared state, and one router made of the per-area routers.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flag_core::{Environment, FeatureFlagService};
use flag_redis::RedisCache;
use serde_json::json;

use crate::admin::ApiError;
use crate::{admin, ofrep, ops};

/// The largest request body accepted: 1 MiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Reads, evaluations and writes.
    pub service: FeatureFlagService,
    /// The environment of requests without `X-Environment`.
    pub default_environment: Environment,
    /// Tokens OFREP clients must present; `None` leaves OFREP open.
    pub client_tokens: Option<Arc<[String]>>,
    /// The Redis cache, when there is one, for readiness checks.
    pub redis: Option<RedisCache>,
    /// The bearer token of the management API.
    pub admin_token: Arc<str>,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ofrep::router())
        .merge(admin::router())
        .merge(ops::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Unmatched routes: `404` with the management API's error shape.
async fn not_found(method: Method, uri: Uri) -> Response {
    let body = json!({"error": {"code": "not_found", "message": format!("no route for {method} {}", uri.path())}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// A body that could not be read: `413` past the limit, else `400`.
pub(crate) fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request bodies are limited to 1 MiB",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            rejection.body_text(),
        )
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
