//! The layer in front of every route: it times requests out, tells a slow client from a slow
//! server, and records every answer in the metrics under its route's template, abandoned
//! requests included.
//!
//! - A request still running after the timeout is answered in its API's error shape: `408` when
//!   its body had not fully arrived (the client is slow), else `503` with `Retry-After: 1`.
//! - A request whose client went away before the answer (the connection closed, so the request's
//!   future was dropped, or its body broke off) is recorded with `status="499"`, nginx's code for
//!   it.
//! - The API routes (OFREP evaluation and management) are admitted here too: past
//!   `FLAG_MAX_IN_FLIGHT` of them in flight, one more is answered `503` with `Retry-After: 1` at
//!   once instead of queueing. The operations routes (`/healthz`, `/readyz`, `/metrics`,
//!   `/openapi.json`) and the event streams (bounded by `FLAG_MAX_STREAMS`) are not counted, so
//!   probes answer under overload.
//!
//! Admission lives in this layer rather than in a tower layer of its own because every layer
//! the router applies is cloned and boxed once per request: one layer instead of three (tower's
//! load shedding and concurrency limit) is measurably cheaper on the hot path, and a
//! `try_acquire` on a semaphore allocates nothing where tower's limit allocates its acquire
//! future on every clone.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flag_core::ErrorCode;
use tokio::sync::Semaphore;
use tracing::{Instrument, Span};

use crate::arrival::Arrival;
use crate::errors::{ApiError, ApiErrorCode, OfrepError, is_ofrep};
use crate::metrics::HttpMetrics;
use crate::routes::ROUTES;
use crate::telemetry;

/// The status recorded for requests their client abandoned.
pub(crate) const ABANDONED: u16 = 499;

/// What the tracking layer needs: small, so cloning it per request costs one reference count.
#[derive(Clone)]
pub(crate) struct Tracking {
    pub(crate) metrics: Arc<HttpMetrics>,
    pub(crate) timeout: Duration,
    /// One permit per API request in flight (`FLAG_MAX_IN_FLIGHT`).
    pub(crate) in_flight: Arc<Semaphore>,
}

impl Tracking {
    /// Tracking with room for `max_in_flight` API requests at once.
    pub(crate) fn new(metrics: Arc<HttpMetrics>, timeout: Duration, max_in_flight: usize) -> Self {
        Self {
            metrics,
            timeout,
            in_flight: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
        }
    }
}

/// Whether requests to the route `template` count against `FLAG_MAX_IN_FLIGHT`: OFREP
/// evaluation and management, not the probes, metrics, the document or the event streams.
fn is_admitted_route(template: &str) -> bool {
    template.starts_with("/ofrep/v1/evaluate") || template.starts_with("/v1/")
}

/// Answers `408`/`503` when the request outlives the timeout, and records every answer.
pub(crate) async fn track(
    State(tracking): State<Tracking>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |matched| route_label(matched.as_str()));
    let method = method_label(request.method());
    let uri = request.uri().clone();
    let span = telemetry::request_span(method, route, request.headers());
    let (request, arrival) = Arrival::of(request);
    tracking
        .around(route, method, &uri, &arrival, span, next.run(request))
        .await
}

impl Tracking {
    /// `answer`, the answer to a request to `route` (a template of [`ROUTES`]) whose body is
    /// `arrival`: admitted, timed out and recorded as this module says, within the request's
    /// `span` (`telemetry::request_span`). The router's layer and the OFREP fast path
    /// (`fast_path`) both answer through here.
    pub(crate) async fn around(
        &self,
        route: &'static str,
        method: &'static str,
        uri: &Uri,
        arrival: &Arrival,
        span: Span,
        answer: impl Future<Output = Response>,
    ) -> Response {
        let mut record = Record {
            metrics: &self.metrics,
            route,
            method,
            started: Instant::now(),
            answered: false,
            span,
        };
        let _admitted = if is_admitted_route(route) {
            match Arc::clone(&self.in_flight).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::debug!(path = uri.path(), "request shed");
                    let response = unavailable(
                        uri,
                        "too many requests in flight; retry in a second".to_owned(),
                    );
                    record.answered(response.status().as_u16());
                    return response;
                }
            }
        } else {
            None
        };
        let answer = answer.instrument(record.span.clone());
        let response = match tokio::time::timeout(self.timeout, answer).await {
            Ok(response) => response,
            Err(_) => timed_out(uri, self.timeout, !arrival.pending()),
        };
        // An answer to a client that went away while sending its body reaches no one.
        let status = if arrival.broken() {
            ABANDONED
        } else {
            response.status().as_u16()
        };
        record.answered(status);
        response
    }
}

/// One request's entry in the metrics, written when it is answered or, if the client goes away
/// first, when it is dropped.
struct Record<'a> {
    metrics: &'a HttpMetrics,
    route: &'static str,
    method: &'static str,
    started: Instant,
    answered: bool,
    /// The request's span (disabled unless traces are exported).
    span: Span,
}

impl Record<'_> {
    fn answered(&mut self, status: u16) {
        self.answered = true;
        let took = self.started.elapsed();
        self.metrics.record(self.route, self.method, status, took);
        telemetry::record_request(self.route, self.method, status, took);
        telemetry::answered(&self.span, status);
        tracing::debug!(
            route = self.route,
            method = self.method,
            status,
            micros = took.as_micros(),
            "answered"
        );
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.answered(ABANDONED);
        }
    }
}

/// The route's template from [`ROUTES`], as a `'static` label.
fn route_label(matched: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(_, template)| *template == matched)
        .map_or("other", |(_, template)| template)
}

/// The method's label in the metrics.
pub(crate) fn method_label(method: &Method) -> &'static str {
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

/// `408` (the body was still arriving) or `503` (the server was slow), in the route's shape.
fn timed_out(uri: &Uri, timeout: Duration, body_arrived: bool) -> Response {
    let took = timeout.as_millis();
    if !body_arrived {
        tracing::debug!(path = uri.path(), ?timeout, "request body too slow");
        let message = format!("the request body did not arrive within {took} ms");
        return if is_ofrep(uri.path()) {
            OfrepError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::General, message)
                .about(uri)
                .into_response()
        } else {
            ApiError::request_timeout(message).into_response()
        };
    }
    tracing::warn!(path = uri.path(), ?timeout, "request timed out");
    let message = format!("the request took longer than {took} ms");
    unavailable(uri, message)
}

/// `503` with `Retry-After: 1` in the shape of the API of `uri` (OFREP or management).
pub(crate) fn unavailable(uri: &Uri, message: String) -> Response {
    let mut response = if is_ofrep(uri.path()) {
        OfrepError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::General, message)
            .about(uri)
            .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::Unavailable,
            message,
        )
        .into_response()
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_evaluation_and_management_routes_count_against_the_in_flight_cap() {
        let admitted: Vec<&str> = ROUTES
            .iter()
            .map(|(_, template)| *template)
            .filter(|template| is_admitted_route(template))
            .collect();
        let expected: Vec<&str> = ROUTES
            .iter()
            .map(|(_, template)| *template)
            .filter(|template| {
                !matches!(
                    *template,
                    "/ofrep/v1/events/{env}"
                        | "/healthz"
                        | "/readyz"
                        | "/metrics"
                        | "/openapi.json"
                )
            })
            .collect();
        assert_eq!(admitted, expected);
        assert!(admitted.contains(&"/ofrep/v1/evaluate/flags"));
        assert!(admitted.contains(&"/v1/environments"));
    }
}
