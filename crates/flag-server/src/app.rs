//! The application: one router made of the per-area routers (`ofrep`, `admin`, `ops`) behind
//! the tracking layer and the body limits, with JSON answers for unknown routes and methods, and
//! in front of it the OFREP evaluation fast path (`fast_path`), tracked by the same layer.
//!
//! The tracking layer also admits the API routes (OFREP and management) under
//! `FLAG_MAX_IN_FLIGHT`, shedding the rest with `503` (the `tracking` module says why there).
//!
//! Every layer here is applied to each route and cloned with it on every request, so the hot
//! path carries as few as possible: the OpenAPI document is a process-wide value, not a request
//! extension, and the management routes carry their own body limit.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use flag_core::ErrorCode;
use tower::Service;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::arrival::Arrival;
use crate::errors::{ApiError, ApiErrorCode, OfrepError, is_ofrep};
use crate::fast_path::FastPath;
use crate::openapi::{ApiDoc, complete};
use crate::state::{AppState, MAX_BODY_BYTES, MAX_DOCUMENT_BYTES};
use crate::tracking::{Tracking, track};
use crate::{admin, audit, explain, ofrep, ops, segments, streams, transfer};

/// The whole HTTP API as served: the router, with OFREP evaluation served by the fast path in
/// front of it (`fast_path` says when).
#[derive(Clone)]
pub struct App(Arc<Served>);

/// What [`App`] shares between clones: the router and, unless built from a bare router, the
/// fast path.
struct Served {
    router: Router,
    fast_path: Option<FastPath>,
}

impl App {
    /// The whole HTTP API of `state`, OFREP evaluation on the fast path.
    pub fn new(state: AppState) -> Self {
        let tracking = tracking_of(&state);
        let fast_path = FastPath::new(state.clone(), tracking.clone());
        Self(Arc::new(Served {
            router: routed(state, tracking),
            fast_path: Some(fast_path),
        }))
    }

    /// The answer to `request`, whose body `arrival` watches.
    pub(crate) async fn answer(&self, request: Request, arrival: Arrival) -> Response {
        let mut request = match &self.0.fast_path {
            Some(fast_path) => match fast_path.serve(request, &arrival).await {
                Ok(response) => return response,
                Err(request) => request,
            },
            None => request,
        };
        arrival.attach(&mut request);
        let mut router = self.0.router.clone();
        match router.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Every request through `router` (no fast path).
impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self(Arc::new(Served {
            router,
            fast_path: None,
        }))
    }
}

/// The tracking of `state`'s requests: one per application, so both paths share its permits.
fn tracking_of(state: &AppState) -> Tracking {
    Tracking::new(
        state.http_metrics.clone(),
        state.request_timeout,
        state.max_in_flight,
    )
}

/// The whole HTTP API as a router, every request routed (what [`App`] falls back to).
pub fn router(state: AppState) -> Router {
    let tracking = tracking_of(&state);
    routed(state, tracking)
}

/// The router of `state`, tracked by `tracking`.
fn routed(state: AppState, tracking: Tracking) -> Router {
    let routes = described(state.max_context_bytes)
        .0
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(tracking, track))
        // After the tracking layer: static files, outside the API's metrics and admission.
        .merge(crate::ui::router());
    // Outside routing, so that a preflight is answered before the router's 405; absent (no cost
    // per request) when no origin is allowed.
    let routes = match state.cors.clone() {
        Some(origins) => routes.layer(middleware::from_fn_with_state(origins, crate::cors::cors)),
        None => routes,
    };
    routes.with_state(state)
}

/// The OpenAPI document of every route [`router`] serves (`GET /openapi.json` answers it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    described(0).1
}

/// Every route with its document: OFREP evaluation, the event streams, management and the
/// operations routes, reading OFREP bodies of at most `max_context_bytes`.
fn described(max_context_bytes: usize) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ofrep::router(max_context_bytes))
        .merge(streams::router())
        .merge(
            admin::router()
                .merge(segments::router())
                .merge(audit::router())
                .merge(explain::router())
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        // A whole environment in one body: an export of FLAG_MAX_FLAGS flags must import back.
        .merge(transfer::router().layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES)))
        .merge(ops::router())
        .split_for_parts();
    (routes, complete(document))
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
