//! The application: one router made of the per-area routers (`ofrep`, `admin`, `ops`) behind
//! the tracking layer and the body limit, with JSON answers for unknown routes and methods.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};

use crate::errors::ApiError;
use crate::state::{AppState, MAX_BODY_BYTES};
use crate::tracking::{Tracking, track};
use crate::{admin, ofrep, ops};

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

/// Unmatched routes: `404` with the management API's error shape.
async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::not_found(format!("no route for {method} {}", uri.path())).into_response()
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
