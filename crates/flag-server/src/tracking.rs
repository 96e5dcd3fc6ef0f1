//! The layer in front of every route: a request still running after the timeout is answered
//! `503` (`Retry-After: 1`) in its API's error shape, and every answer is recorded in the metrics
//! under its route's template.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flag_core::ErrorCode;

use crate::errors::{ApiError, OfrepError};
use crate::metrics::HttpMetrics;
use crate::routes::ROUTES;

/// What the tracking layer needs: small, so cloning it per request costs one reference count.
#[derive(Clone)]
pub(crate) struct Tracking {
    pub(crate) metrics: Arc<HttpMetrics>,
    pub(crate) timeout: Duration,
}

/// Answers `503` when the request outlives the timeout, and records every answer.
pub(crate) async fn track(
    State(tracking): State<Tracking>,
    request: Request,
    next: Next,
) -> Response {
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
        OfrepError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::General, message)
            .into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).into_response()
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
