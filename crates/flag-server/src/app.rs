//! The application: one router made of the per-area routers (`ofrep`, `admin`, `ops`) behind
//! the tracking layer and the body limits, with JSON answers for unknown routes and methods.
//!
//! The API routes (OFREP and management) sit behind tower's global concurrency limit with load
//! shedding: past `FLAG_MAX_IN_FLIGHT` requests in flight, one more is answered `503` with
//! `Retry-After: 1` at once instead of queueing. The operations routes (`/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`) are outside that limit, so probes answer under overload.

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use flag_core::ErrorCode;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::errors::{ApiError, ApiErrorCode, OfrepError, is_ofrep};
use crate::openapi::{ApiDoc, Document, complete};
use crate::state::{AppState, MAX_BODY_BYTES};
use crate::tracking::{Tracking, track, unavailable};
use crate::{admin, ofrep, ops, streams};

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let tracking = Tracking {
        metrics: state.http_metrics.clone(),
        timeout: state.request_timeout,
    };
    let shedding = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(shed))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(state.max_in_flight));
    let (routes, document) = described(state.max_context_bytes, |api| {
        api.route_layer(shedding.clone())
    });
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(tracking, track));
    // Outside routing, so that a preflight is answered before the router's 405; absent (no cost
    // per request) when no origin is allowed.
    let routes = match state.cors.clone() {
        Some(origins) => routes.layer(middleware::from_fn_with_state(origins, crate::cors::cors)),
        None => routes,
    };
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(Extension(Document::new(&document)))
        .with_state(state)
}

/// The OpenAPI document of every route [`router`] serves (`GET /openapi.json` answers it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    described(0, |api| api).1
}

/// Every route with its document: the API routes (OFREP and management, wrapped by `api`, where
/// the concurrency limit goes), the event streams, and the operations routes, reading OFREP
/// bodies of at most `max_context_bytes`.
fn described(
    max_context_bytes: usize,
    api: impl Fn(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>,
) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    // Event streams stay outside the in-flight limit: they are held for hours, and bounded by
    // FLAG_MAX_STREAMS instead.
    let (routes, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api(ofrep::router(max_context_bytes)))
        .merge(streams::router())
        .merge(api(admin::router()))
        .merge(ops::router())
        .split_for_parts();
    (routes, complete(document))
}

/// A request refused because too many are in flight.
async fn shed(uri: Uri, error: BoxError) -> Response {
    tracing::debug!(path = uri.path(), %error, "request shed");
    unavailable(
        &uri,
        "too many requests in flight; retry in a second".to_owned(),
    )
}

/// Unmatched routes: `404` with the management API's error shape.
async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::not_found(format!("no route for {method} {}", uri.path())).into_response()
}

/// A known path with a method it does not serve: `405` in the shape of the path's API.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("{} does not answer {method}", uri.path());
    if is_ofrep(uri.path()) {
        OfrepError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::General, message)
            .about(&uri)
            .into_response()
    } else {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ApiErrorCode::InvalidRequest,
            message,
        )
        .into_response()
    }
}
