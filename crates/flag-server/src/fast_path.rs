//! OFREP evaluation served straight from the connection, in front of the router: the two routes
//! every SDK calls on every request or page, answered by the same handler code through the same
//! tracking (admission, timeout, metrics) without the router's matching, boxed layers, per-route
//! state clones and extractors.
//!
//! Why: on a single-flag request the router's machinery (matching, URL parameters, the
//! middleware's boxed `Next`, cloning `AppState` for `State`, moving large futures) cost about as
//! much as evaluating the flag (`docs/performance.md`).
//!
//! A request is taken here only when the router would do nothing more than what is done here;
//! anything else goes to the router, which stays the reference:
//! - `POST /ofrep/v1/evaluate/flags` or `POST /ofrep/v1/evaluate/flags/{key}` with a key that
//!   needs no decoding (no `%`) and is one path segment;
//! - a `Content-Length` within `FLAG_MAX_CONTEXT_BYTES` and no `Transfer-Encoding` (the router
//!   answers the `413`s and reads chunked bodies);
//! - no `Origin` header while CORS is configured (the CORS layer answers those).
//!
//! A test sends the same requests, valid and not, to a server with and one without this path and
//! requires the same statuses, headers, bodies and metrics.

use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flag_core::ErrorCode;
use http_body::Body as _;

use crate::arrival::Arrival;
use crate::auth::Client;
use crate::errors::OfrepError;
use crate::ofrep::{evaluate_all_of, evaluate_one_of};
use crate::state::AppState;
use crate::telemetry;
use crate::tracking::Tracking;

/// The bulk evaluation route; single flags are under it, one segment deeper.
const BULK: &str = "/ofrep/v1/evaluate/flags";

/// The single-flag route's template, as the metrics label it.
const SINGLE_TEMPLATE: &str = "/ofrep/v1/evaluate/flags/{key}";

/// What the fast path needs: the state the handlers read and the tracking the router's layer
/// uses (the same in-flight permits, so `FLAG_MAX_IN_FLIGHT` counts both paths).
#[derive(Clone)]
pub(crate) struct FastPath {
    state: AppState,
    tracking: Tracking,
}

/// An evaluation route the fast path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evaluation {
    /// One flag, whose key starts at this byte of the path.
    One { key_from: usize },
    /// Every flag of the environment.
    All,
}

impl FastPath {
    /// The fast path for `state`, tracked by `tracking`.
    pub(crate) fn new(state: AppState, tracking: Tracking) -> Self {
        Self { state, tracking }
    }

    /// Serves `request` if it is one the fast path takes (see the module), else hands it back.
    pub(crate) async fn serve(
        &self,
        request: Request,
        arrival: &Arrival,
    ) -> Result<Response, Request> {
        let Some(route) = route_of(
            &request,
            self.state.max_context_bytes,
            self.state.cors.is_some(),
        ) else {
            return Err(request);
        };
        let (mut parts, body) = request.into_parts();
        let template = match route {
            Evaluation::One { .. } => SINGLE_TEMPLATE,
            Evaluation::All => BULK,
        };
        let uri = parts.uri.clone();
        let span = telemetry::request_span("POST", template, &parts.headers);
        // Boxed where it is made: the tracking moves its future several times (into the timeout,
        // into hyper's slot), and a pointer moves where the whole state machine (evaluation and
        // cache lookup included) was copied each time (about 1,500 instructions a request).
        let answer = Box::pin(async {
            let client = match Client::from_request_parts(&mut parts, &self.state).await {
                Ok(client) => client,
                Err(error) => return error.into_response(),
            };
            let limit = self.state.max_context_bytes;
            let answered = match route {
                Evaluation::One { key_from } => {
                    let key = parts.uri.path().get(key_from..).unwrap_or_default();
                    match read(body, limit).await {
                        Ok(body) => {
                            evaluate_one_of(&self.state, &client.environment, key, &body).await
                        }
                        Err(error) => Err(error.for_key(key)),
                    }
                }
                Evaluation::All => match read(body, limit).await {
                    Ok(body) => {
                        evaluate_all_of(
                            &self.state,
                            &client.environment,
                            parts.headers.get(header::IF_NONE_MATCH),
                            parts.uri.query(),
                            &body,
                        )
                        .await
                    }
                    Err(error) => Err(error),
                },
            };
            answered.unwrap_or_else(IntoResponse::into_response)
        });
        Ok(self
            .tracking
            .around(template, "POST", &uri, arrival, span, answer)
            .await)
    }
}

/// The evaluation route of `request`, when the fast path can serve it exactly as the router
/// would, given the largest body and whether CORS is configured.
fn route_of(request: &Request, max_context_bytes: usize, cors: bool) -> Option<Evaluation> {
    if request.method() != Method::POST {
        return None;
    }
    let route = match request.uri().path().strip_prefix(BULK)? {
        "" => Evaluation::All,
        rest => {
            let key = rest.strip_prefix('/')?;
            if key.is_empty() || key.contains(['/', '%']) {
                return None;
            }
            Evaluation::One {
                key_from: BULK.len() + 1,
            }
        }
    };
    let headers = request.headers();
    if headers.contains_key(header::TRANSFER_ENCODING)
        || (cors && headers.contains_key(header::ORIGIN))
    {
        return None;
    }
    let length: usize = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (length <= max_context_bytes).then_some(route)
}

/// The request body, whose `Content-Length` is within `limit`. Reading it fails only when the
/// client goes away while sending it (answered as the router's body extractor answers it, and
/// recorded as abandoned). A body that arrived in one piece is kept as it is, not copied.
async fn read(mut body: Body, limit: usize) -> Result<Bytes, OfrepError> {
    // The first piece as it came; a copy of everything only once a second piece arrives.
    let mut whole = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|error| {
            OfrepError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ParseError,
                format!("Failed to buffer the request body: {error}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let read = match &mut joined {
            Some(joined) => {
                joined.extend_from_slice(&data);
                joined.len()
            }
            None if whole.is_empty() => {
                whole = data;
                whole.len()
            }
            None => {
                let mut copy = Vec::with_capacity(whole.len() + data.len());
                copy.extend_from_slice(&whole);
                copy.extend_from_slice(&data);
                joined.insert(copy).len()
            }
        };
        if read > limit {
            // hyper holds a body to its `Content-Length`, which was within the limit; kept for
            // the day a body arrives some other way.
            return Err(OfrepError::body_too_large(limit));
        }
    }
    Ok(joined.map_or(whole, Bytes::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_taken_only_when_the_router_would_add_nothing() {
        // Only what `route` reads matters here: the state's limit and CORS setting.
        let request = |method: Method, path: &str, headers: &[(&str, &str)]| {
            let mut builder = Request::builder().method(method).uri(path);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(Body::empty()).unwrap()
        };
        let routed = |path: &str, headers: &[(&str, &str)]| {
            super::route_of(&request(Method::POST, path, headers), 100, false)
        };
        let sized = [("content-length", "10")];
        assert_eq!(
            routed("/ofrep/v1/evaluate/flags", &sized),
            Some(Evaluation::All)
        );
        assert_eq!(
            routed("/ofrep/v1/evaluate/flags/a-key?x=1", &sized),
            Some(Evaluation::One { key_from: 25 })
        );
        for path in [
            "/ofrep/v1/evaluate/flags/",
            "/ofrep/v1/evaluate/flags/a/b",
            "/ofrep/v1/evaluate/flags/a%20b",
            "/ofrep/v1/evaluate/flagsx",
            "/ofrep/v1/evaluate/flags//",
            "/v1/environments",
        ] {
            assert_eq!(routed(path, &sized), None, "{path}");
        }
        let path = "/ofrep/v1/evaluate/flags";
        assert_eq!(routed(path, &[]), None, "no Content-Length");
        assert_eq!(routed(path, &[("content-length", "101")]), None);
        assert_eq!(
            routed(path, &[("content-length", "100")]),
            Some(Evaluation::All)
        );
        assert_eq!(routed(path, &[("content-length", "x")]), None);
        assert_eq!(
            routed(
                path,
                &[("content-length", "10"), ("transfer-encoding", "chunked")]
            ),
            None
        );
        let get = request(Method::GET, path, &sized);
        assert_eq!(super::route_of(&get, 100, false), None);
        let from_browser = request(Method::POST, path, &[sized[0], ("origin", "https://a.b")]);
        assert_eq!(super::route_of(&from_browser, 100, true), None);
        assert_eq!(
            super::route_of(&from_browser, 100, false),
            Some(Evaluation::All)
        );
    }
}
