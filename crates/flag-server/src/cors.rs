//! CORS for the OFREP routes and their event streams only (never `/v1`, `/metrics` or the
//! operations routes): `FLAG_CORS_ORIGINS` lists the origins whose browsers may call them.
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is answered
//! `204` here, before authentication (a preflight never carries a token), with the exact headers
//! of the design contract; every other answer to an allowed origin carries
//! `Access-Control-Allow-Origin` (the origin itself, with `Vary: Origin`, also when `*` is
//! configured) and exposes `ETag`. An origin not listed gets no CORS header, and its preflight is
//! answered as any `OPTIONS` is (`405`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::errors::is_ofrep;

/// The origins allowed, from `FLAG_CORS_ORIGINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Every origin (`*`).
    Any,
    /// These origins, compared exactly (scheme, host and port, as browsers send them).
    Listed(Vec<String>),
}

impl CorsOrigins {
    /// The origins of `FLAG_CORS_ORIGINS`' entries (blank ones skipped; a trailing `/` dropped);
    /// `None` when none is left (no CORS headers at all).
    pub fn parse(entries: &[String]) -> Option<Self> {
        let listed: Vec<String> = entries
            .iter()
            .map(|entry| entry.trim().trim_end_matches('/').to_owned())
            .filter(|entry| !entry.is_empty())
            .collect();
        if listed.iter().any(|entry| entry == "*") {
            return Some(Self::Any);
        }
        (!listed.is_empty()).then_some(Self::Listed(listed))
    }

    /// The request's origin, when it is allowed.
    fn allowed<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let allowed = match self {
            Self::Any => true,
            Self::Listed(listed) => origin
                .to_str()
                .is_ok_and(|origin| listed.iter().any(|entry| entry == origin)),
        };
        allowed.then_some(origin)
    }
}

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "authorization, content-type, if-none-match, x-api-key, x-environment",
);
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static("ETag");

/// The CORS layer: acts on OFREP paths only.
pub(crate) async fn cors(
    State(origins): State<std::sync::Arc<CorsOrigins>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(origin) = Some(&*origins)
        .filter(|_| is_ofrep(request.uri().path()))
        .and_then(|origins| origins.allowed(request.headers()))
        .cloned()
    else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        response
    } else {
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_and_matched_exactly() {
        let listed = |entries: &[&str]| {
            CorsOrigins::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(listed(&[]), None);
        assert_eq!(listed(&[" ", ""]), None);
        assert_eq!(listed(&["https://a.example", "*"]), Some(CorsOrigins::Any));
        let origins = listed(&["https://a.example/", " http://localhost:3000"]).unwrap();
        let with = |origin: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            origins.allowed(&headers).is_some()
        };
        assert!(with("https://a.example"));
        assert!(with("http://localhost:3000"));
        assert!(!with("https://a.example.evil"));
        assert!(!with("http://localhost:3001"));
        assert!(origins.allowed(&HeaderMap::new()).is_none());
    }
}
