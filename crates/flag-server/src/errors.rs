//! The two error bodies of the API, each built in this one place: the management API's
//! `{"error": {"code", "message"}}` ([`ApiError`]) and OFREP's `{"errorCode", "errorDetails"}`
//! (with `key` for single-flag evaluations, [`OfrepError`]), and how each API tells a service
//! failure or an unreadable body.

use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use flag_core::{ErrorCode, EvaluationError, RepositoryError, ServiceError};
use serde_json::{Value, json};

use crate::auth::CHALLENGE;
use crate::state::MAX_BODY_BYTES;

/// The path of single-flag evaluations, up to the key.
const SINGLE_FLAG_PREFIX: &str = "/ofrep/v1/evaluate/flags/";

/// Whether `path` belongs to OFREP (whose errors have OFREP's shape).
pub(crate) fn is_ofrep(path: &str) -> bool {
    path.starts_with("/ofrep/")
}

/// Adds the headers a status needs: `WWW-Authenticate: Bearer` on every `401`.
fn challenge(status: StatusCode, mut response: Response) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, CHALLENGE);
    }
    response
}

/// A management API error: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 invalid_request`.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// `404 not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `408 request_timeout`: the body did not arrive in time.
    pub(crate) fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// A body that could not be read: `413 payload_too_large` past the limit, else `400`.
    pub(crate) fn unreadable_body(rejection: &BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request bodies are limited to {} MiB", MAX_BODY_BYTES >> 20),
            )
        } else {
            Self::invalid_request(rejection.body_text())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        challenge(self.status, (self.status, axum::Json(body)).into_response())
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Repository(RepositoryError::NotFound { environment, key }) => {
                ApiError::not_found(format!("flag {key} not found in environment {environment}"))
            }
            ServiceError::Repository(RepositoryError::VersionConflict { current, .. }) => {
                ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "version_conflict",
                    match current {
                        Some(version) => format!("the flag is at version {version}"),
                        None => "the flag does not exist".to_owned(),
                    },
                )
            }
            ServiceError::Repository(RepositoryError::EnvironmentNotFound { environment }) => {
                ApiError::not_found(format!("environment {environment} not found"))
            }
            ServiceError::Repository(error @ RepositoryError::EnvironmentInUse { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "in_use", error.to_string())
            }
            ServiceError::Limit(limit) => {
                ApiError::new(StatusCode::CONFLICT, "limit_exceeded", limit.to_string())
            }
            other => {
                tracing::warn!(error = %other, "management call failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the flag store is unavailable; retry later",
                )
            }
        }
    }
}

/// An OFREP error: status, code and details, and the flag key for single evaluations.
#[derive(Debug)]
pub(crate) struct OfrepError {
    status: StatusCode,
    code: ErrorCode,
    details: String,
    key: Option<String>,
}

impl OfrepError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, details: impl Into<String>) -> Self {
        Self {
            status,
            code,
            details: details.into(),
            key: None,
        }
    }

    /// The same error, about the flag `key` (single evaluations carry it).
    pub(crate) fn for_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// The same error, about the flag of `uri` when it is a single-flag evaluation (whose error
    /// bodies must carry `key`), its key percent-decoded as the router decodes it.
    pub(crate) fn about(self, uri: &Uri) -> Self {
        match single_flag_key(uri.path()) {
            Some(key) => self.for_key(&key),
            None => self,
        }
    }

    /// A failed evaluation: `404` for a missing flag, `400` for the others.
    pub(crate) fn evaluation(error: &EvaluationError) -> Self {
        let status = match error {
            EvaluationError::FlagNotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string()).for_key(error.key().as_str())
    }

    /// A body that could not be read: `413 GENERAL` past `limit` bytes, else `400 PARSE_ERROR`.
    pub(crate) fn unreadable_body(rejection: &BytesRejection, limit: usize) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                status,
                ErrorCode::General,
                format!("evaluation request bodies are limited to {limit} bytes"),
            );
        }
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ParseError,
            rejection.body_text(),
        )
    }
}

impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        let mut body = json!({"errorCode": self.code.as_str(), "errorDetails": self.details});
        if let Some(key) = self.key {
            body["key"] = Value::String(key);
        }
        challenge(self.status, (self.status, axum::Json(body)).into_response())
    }
}

impl From<ServiceError> for OfrepError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Evaluation(error) => OfrepError::evaluation(&error),
            other => {
                tracing::warn!(error = %other, "evaluation failed: flag store unavailable");
                OfrepError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::General,
                    "the flag store is unavailable; retry later",
                )
            }
        }
    }
}

/// The key of a single-flag evaluation path, percent-decoded (lossily: a key that is not UTF-8
/// cannot exist, and its error still names what was asked).
fn single_flag_key(path: &str) -> Option<String> {
    let raw = path.strip_prefix(SINGLE_FLAG_PREFIX)?;
    if raw.is_empty() || raw.contains('/') {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::single_flag_key;

    #[test]
    fn single_flag_keys_are_read_from_the_path() {
        assert_eq!(
            single_flag_key("/ofrep/v1/evaluate/flags/a.b").as_deref(),
            Some("a.b")
        );
        assert_eq!(
            single_flag_key("/ofrep/v1/evaluate/flags/a%20b").as_deref(),
            Some("a b")
        );
        assert_eq!(
            single_flag_key("/ofrep/v1/evaluate/flags/%FF").as_deref(),
            Some("\u{fffd}")
        );
        assert_eq!(single_flag_key("/ofrep/v1/evaluate/flags"), None);
        assert_eq!(single_flag_key("/ofrep/v1/evaluate/flags/"), None);
        assert_eq!(single_flag_key("/v1/environments/x/flags/a"), None);
    }
}
