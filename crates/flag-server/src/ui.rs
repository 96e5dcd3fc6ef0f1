//! The web UI at `/ui/`: a page, a script, a style sheet and an icon, compiled into the binary
//! (`include_str!`), so `cargo run` is all it takes and nothing is fetched from another host.
//!
//! Decisions:
//! - **No build step.** The UI is one hand-written ES module over the DOM (no framework, no
//!   bundler, no npm), because the server must build and run without Node, and a committed
//!   bundle would need a check that it matches its sources; what is served is what is in
//!   `crates/flag-server/ui/`, reviewable as it is.
//! - **A strict `Content-Security-Policy`** on every answer: scripts, styles, images and
//!   requests from this origin only, no inline script or style, no framing, no `<base>`; plus
//!   `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! - The UI speaks the management API with the admin token the person typed, which the page
//!   keeps in `sessionStorage` (per tab, gone when the tab closes) and sends as `Authorization`,
//!   never in a URL. The assets themselves need no token: they hold no data.
//! - These routes are outside the API: not in the OpenAPI document, not counted in the HTTP
//!   metrics, not subject to `FLAG_MAX_IN_FLIGHT` (they are a few static answers).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::errors::ApiError;

/// The policy every UI answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The UI's files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../ui/favicon.svg"),
    ),
];

/// `/ui`, `/ui/` and `/ui/{asset}`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("") }))
        .route(
            "/ui/{asset}",
            get(|Path(name): Path<String>| async move { asset(&name) }),
        )
}

/// The asset `name` with the UI's headers, or the API's `404`.
fn asset(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(file, _, _)| *file == name) else {
        return ApiError::not_found(format!("the UI has no file {name:?}")).into_response();
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        *body,
    )
        .into_response()
}
