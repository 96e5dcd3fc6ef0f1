//! The two error bodies of the API, each built in this one place: the management API's
//! `{"error": {"code", "message"}}` ([`ApiError`]) and OFREP's `{"errorCode", "errorDetails"}`
//! (with `key` for single-flag evaluations, [`OfrepError`]), and how each API tells a service
//! failure or an unreadable body.

use std::borrow::Cow;

use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use flag_core::{ErrorCode, EvaluationError, RepositoryError, ServiceError};
use serde::Serialize;
use utoipa::ToSchema;

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

/// The management API's error codes, as the design contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorCode {
    /// A malformed request: a path segment, header or body that is not what the route takes.
    InvalidRequest,
    /// A body of the wrong shape, or a flag that breaks a rule.
    ValidationFailed,
    /// No token, or the wrong one.
    Unauthorized,
    /// A token that may not do this.
    Forbidden,
    /// No such flag, environment or route.
    NotFound,
    /// `If-Match` or `If-None-Match` does not hold.
    VersionConflict,
    /// The environment still holds flags.
    InUse,
    /// The write would exceed `FLAG_MAX_FLAGS` or `FLAG_MAX_ENVIRONMENTS`.
    LimitExceeded,
    /// The repository takes no writes.
    ReadOnly,
    /// The body is over the limit.
    PayloadTooLarge,
    /// The body did not arrive in time.
    RequestTimeout,
    /// A store is unavailable, the request timed out or too many are in flight.
    Unavailable,
    /// A fault of the server itself.
    Internal,
}

/// The management API's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiError)]
pub(crate) struct ApiErrorBody<'a> {
    /// What went wrong.
    error: ApiErrorDetail<'a>,
}

/// What went wrong, for programs (`code`) and for people (`message`), and for a definition
/// that breaks a rule, where (`field`, so an editor can show the message beside it).
#[derive(Serialize, ToSchema)]
pub(crate) struct ApiErrorDetail<'a> {
    /// Stable: programs branch on it.
    code: ApiErrorCode,
    /// For people; its wording may change.
    message: &'a str,
    /// The field of the definition the message is about, as a path such as
    /// `rules[0].conditions[1].value` (`validation_failed` only, when one field is to blame).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// Every problem of an imported document, each with its path in the document
    /// (`validation_failed` of an import only).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    problems: &'a [flag_core::ImportProblem],
}

/// A single-flag evaluation that failed (the answer of `/ofrep/v1/evaluate/flags/{key}`, and a
/// bulk answer's entry for one flag).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EvaluationFailure)]
pub(crate) struct FlagFailure<'a> {
    /// The flag asked for.
    pub(crate) key: &'a str,
    /// Why it failed.
    pub(crate) error_code: ErrorCode,
    /// For people.
    pub(crate) error_details: Cow<'a, str>,
}

/// A bulk evaluation that failed as a whole.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BulkEvaluationFailure)]
pub(crate) struct Failure<'a> {
    /// Why it failed.
    error_code: ErrorCode,
    /// For people.
    error_details: &'a str,
}

/// The name of the error schema of `path`'s answers, as [`ApiError`] and [`OfrepError`] build
/// them: single-flag OFREP errors carry `key`, bulk ones do not, management ones are nested.
pub(crate) fn error_schema(path: &str) -> &'static str {
    if path.starts_with(SINGLE_FLAG_PREFIX) {
        "EvaluationFailure"
    } else if is_ofrep(path) {
        "BulkEvaluationFailure"
    } else {
        "ApiError"
    }
}

/// A management API error: `{"error": {"code", "message"}}` (and `field`, see
/// [`ApiErrorDetail`]).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ApiErrorCode,
    message: String,
    field: Option<String>,
    problems: Vec<flag_core::ImportProblem>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            problems: Vec::new(),
        }
    }

    /// `400 validation_failed` for a document that cannot be imported, with every problem.
    pub(crate) fn invalid_document(problems: Vec<flag_core::ImportProblem>) -> Self {
        let message = match problems.as_slice() {
            [one] => format!("{}: {}", one.path, one.message),
            many => format!("the document has {} problems (see problems)", many.len()),
        };
        Self {
            problems,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::ValidationFailed,
                message,
            )
        }
    }

    /// `400 invalid_request`.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            message,
        )
    }

    /// `404 not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ApiErrorCode::NotFound, message)
    }

    /// `400 validation_failed`: a definition that breaks a rule, naming the field.
    pub(crate) fn invalid_definition(error: flag_core::ValidationError) -> Self {
        let field = (!error.field().is_empty()).then(|| error.field().to_owned());
        Self {
            field,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::ValidationFailed,
                error.to_string(),
            )
        }
    }

    /// `408 request_timeout`: the body did not arrive in time.
    pub(crate) fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ApiErrorCode::RequestTimeout,
            message,
        )
    }

    /// A body that could not be read: `413 payload_too_large` past the limit, else `400`.
    pub(crate) fn unreadable_body(rejection: &BytesRejection) -> Self {
        Self::unreadable_body_within(rejection, MAX_BODY_BYTES)
    }

    /// [`Self::unreadable_body`] for a route whose bodies are limited to `limit` bytes.
    pub(crate) fn unreadable_body_within(rejection: &BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiErrorCode::PayloadTooLarge,
                format!("request bodies are limited to {} MiB", limit >> 20),
            )
        } else {
            Self::invalid_request(rejection.body_text())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                problems: &self.problems,
            },
        };
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
                    ApiErrorCode::VersionConflict,
                    match current {
                        Some(version) => format!("the flag is at version {version}"),
                        None => "the flag does not exist".to_owned(),
                    },
                )
            }
            ServiceError::Repository(RepositoryError::SegmentNotFound { environment, key }) => {
                ApiError::not_found(format!(
                    "segment {key} not found in environment {environment}"
                ))
            }
            ServiceError::Repository(RepositoryError::SegmentVersionConflict {
                current, ..
            }) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                ApiErrorCode::VersionConflict,
                match current {
                    Some(version) => format!("the segment is at version {version}"),
                    None => "the segment does not exist".to_owned(),
                },
            ),
            ServiceError::Repository(RepositoryError::Reference(refused)) => {
                if refused.is_in_use() {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        ApiErrorCode::InUse,
                        refused.to_string(),
                    )
                } else {
                    ApiError {
                        field: refused.field().map(str::to_owned),
                        ..ApiError::new(
                            StatusCode::BAD_REQUEST,
                            ApiErrorCode::ValidationFailed,
                            refused.to_string(),
                        )
                    }
                }
            }
            ServiceError::Repository(error @ RepositoryError::RevisionConflict { .. }) => {
                ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    ApiErrorCode::VersionConflict,
                    error.to_string(),
                )
            }
            ServiceError::Repository(RepositoryError::InvalidImport { problems }) => {
                ApiError::invalid_document(problems)
            }
            ServiceError::Repository(error @ RepositoryError::ReadOnly { .. }) => ApiError::new(
                StatusCode::CONFLICT,
                ApiErrorCode::ReadOnly,
                error.to_string(),
            ),
            ServiceError::Repository(RepositoryError::EnvironmentNotFound { environment }) => {
                ApiError::not_found(format!("environment {environment} not found"))
            }
            ServiceError::Repository(error @ RepositoryError::EnvironmentInUse { .. }) => {
                ApiError::new(StatusCode::CONFLICT, ApiErrorCode::InUse, error.to_string())
            }
            ServiceError::Limit(limit) => ApiError::new(
                StatusCode::CONFLICT,
                ApiErrorCode::LimitExceeded,
                limit.to_string(),
            ),
            other => {
                tracing::warn!(error = %other, "management call failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ApiErrorCode::Unavailable,
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
    /// What went wrong, for people.
    pub(crate) fn details(&self) -> &str {
        &self.details
    }

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
            // Stored data this server cannot read: its fault, not the request's.
            EvaluationError::Unreadable { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string()).for_key(error.key().as_str())
    }

    /// `413`: an evaluation request body over `limit` bytes (`FLAG_MAX_CONTEXT_BYTES`).
    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::General,
            format!("evaluation request bodies are limited to {limit} bytes"),
        )
    }

    /// A body that could not be read: `413 GENERAL` past `limit` bytes, else `400 PARSE_ERROR`.
    pub(crate) fn unreadable_body(rejection: &BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::body_too_large(limit);
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
        let answer = match &self.key {
            Some(key) => axum::Json(FlagFailure {
                key,
                error_code: self.code,
                error_details: Cow::Borrowed(&self.details),
            })
            .into_response(),
            None => axum::Json(Failure {
                error_code: self.code,
                error_details: &self.details,
            })
            .into_response(),
        };
        challenge(self.status, (self.status, answer).into_response())
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
