//! The application: shared state, the route table, and one router made of the per-area routers
//! behind one layer that times out slow requests and records every answer in the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use flag_core::{Environment, FeatureFlagService, TieredCache};
use flag_redis::RedisCache;
use serde_json::json;

use crate::admin::ApiError;
use crate::metrics::HttpMetrics;
use crate::{admin, ofrep, ops};

/// The largest request body accepted: 1 MiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How long a request may take when the configuration does not say.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Every route the API serves, as `(method, path template)`: the metrics' route labels and the
/// OpenAPI document are both checked against this table.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/ofrep/v1/evaluate/flags/{key}"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("GET", "/v1/environments"),
    ("GET", "/v1/environments/{env}/flags"),
    ("GET", "/v1/environments/{env}/flags/{key}"),
    ("PUT", "/v1/environments/{env}/flags/{key}"),
    ("DELETE", "/v1/environments/{env}/flags/{key}"),
    ("POST", "/v1/environments/{env}/cache/invalidate"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

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
    /// The tiered cache, when that is the backend, for its metrics.
    pub tiered: Option<TieredCache>,
    /// The bearer token of the management API.
    pub admin_token: Arc<str>,
    /// Request counts and latencies.
    pub http_metrics: Arc<HttpMetrics>,
    /// How long a request may take before it is answered `503`.
    pub request_timeout: Duration,
}

impl AppState {
    /// A state with the defaults of everything but the service, the default environment and the
    /// admin token.
    pub fn new(
        service: FeatureFlagService,
        default_environment: Environment,
        admin_token: Arc<str>,
    ) -> Self {
        Self {
            service,
            default_environment,
            client_tokens: None,
            redis: None,
            tiered: None,
            admin_token,
            http_metrics: Arc::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let tracking = Tracking {
        metrics: state.http_metrics.clone(),
        timeout: state.request_timeout,
    };
    Router::new()
        .merge(ofrep::router())
        .merge(admin::router())
        .merge(ops::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(tracking, track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// What the tracking layer needs: small, so cloning it per request costs one reference count.
#[derive(Clone)]
struct Tracking {
    metrics: Arc<HttpMetrics>,
    timeout: Duration,
}

/// Answers `503` when the request outlives the timeout, and records every answer.
async fn track(State(tracking): State<Tracking>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |matched| route_label(matched.as_str()));
    let method = method_label(request.method());
    let response = match tokio::time::timeout(tracking.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => timed_out(route, tracking.timeout),
    };
    let took = started.elapsed();
    let status = response.status().as_u16();
    tracking.metrics.record(route, method, status, took);
    tracing::debug!(route, method, status, micros = took.as_micros(), "answered");
    response
}

/// The route's template from [`ROUTES`], as a `'static` label.
fn route_label(matched: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(_, template)| *template == matched)
        .map_or("other", |(_, template)| template)
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `503` in the shape of the route's API (OFREP or management).
fn timed_out(route: &str, timeout: Duration) -> Response {
    tracing::warn!(route, ?timeout, "request timed out");
    let message = format!("the request took longer than {} ms", timeout.as_millis());
    let mut response = if route.starts_with("/ofrep/") {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"errorCode": "GENERAL", "errorDetails": message})),
        )
            .into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).into_response()
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Unmatched routes: `404` with the management API's error shape.
async fn not_found(method: Method, uri: Uri) -> Response {
    let body = json!({"error": {"code": "not_found", "message": format!("no route for {method} {}", uri.path())}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// A known path with a method it does not serve: `405` with the management API's error shape.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        format!("{} does not answer {method}", uri.path()),
    )
    .into_response()
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
