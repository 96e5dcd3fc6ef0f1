//! The management API: environments, flags (with optimistic concurrency) and cache invalidation.
//!
//! Every route needs `Authorization: Bearer <admin token>` (compared in constant time, never
//! logged). Errors are `{"error": {"code", "message"}}` with the codes of the design contract.
//! Decisions: an invalid environment or key in the path is `400 invalid_request`; a body that is
//! not JSON is `invalid_request`, JSON of the wrong shape (unknown field, wrong type) or a flag
//! that breaks a rule is `validation_failed`; an unparsable `If-Match` is `412` like a stale one;
//! `If-Match: *` requires the flag to exist.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flag_core::{
    Environment, FeatureFlag, FlagDocument, FlagKey, Precondition, RepositoryError, ServiceError,
};
use serde_json::json;

use crate::app::{AppState, constant_time_eq};

/// `/v1/...` routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/environments", get(list_environments))
        .route("/v1/environments/{env}/flags", get(list_flags))
        .route(
            "/v1/environments/{env}/flags/{key}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route("/v1/environments/{env}/cache/invalidate", post(invalidate))
}

/// A management API error.
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Repository(RepositoryError::NotFound { environment, key }) => {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("flag {key} not found in environment {environment}"),
                )
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

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(state.admin_token.as_bytes(), presented.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required (Authorization: Bearer <token>)",
        ))
    }
}

fn environment(name: &str) -> Result<Environment, ApiError> {
    Environment::parse(name).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            error.to_string(),
        )
    })
}

fn flag_key(name: &str) -> Result<FlagKey, ApiError> {
    FlagKey::parse(name).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            error.to_string(),
        )
    })
}

fn version_tag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

async fn list_environments(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let environments = state.service.environments().await?;
    Ok(axum::Json(json!({"environments": environments})).into_response())
}

async fn list_flags(
    State(state): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let env = environment(&env)?;
    let snapshot = state.service.stored_flags(&env).await?;
    let flags: Vec<&FeatureFlag> = snapshot.flags().map(|flag| &**flag).collect();
    Ok(
        axum::Json(json!({"environment": env, "revision": snapshot.revision(), "flags": flags}))
            .into_response(),
    )
}

async fn get_flag(
    State(state): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (env, key) = (environment(&env)?, flag_key(&key)?);
    let flag = state
        .service
        .stored_flag(&env, &key)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("flag {key} not found in environment {env}"),
            )
        })?;
    Ok((
        [(header::ETAG, version_tag(flag.version()))],
        axum::Json(flag),
    )
        .into_response())
}

/// The precondition the request's `If-Match` / `If-None-Match` headers ask for.
async fn precondition(
    state: &AppState,
    env: &Environment,
    key: &FlagKey,
    headers: &HeaderMap,
) -> Result<Precondition, ApiError> {
    let conflict =
        |message: &str| ApiError::new(StatusCode::PRECONDITION_FAILED, "version_conflict", message);
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        return if value.as_bytes() == b"*" {
            Ok(Precondition::Absent)
        } else {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "If-None-Match on a write must be *",
            ))
        };
    }
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(Precondition::None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        let current = state.service.stored_flag(env, key).await?;
        return current
            .map(|flag| Precondition::Version(flag.version()))
            .ok_or_else(|| conflict("If-Match: * but the flag does not exist"));
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Precondition::Version)
        .map_err(|_| conflict("If-Match must be a version such as \"3\""))
}

async fn put_flag(
    State(state): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = body.map_err(crate::app::body_error)?;
    let (env, key) = (environment(&env)?, flag_key(&key)?);
    let document: FlagDocument = serde_json::from_slice(&body).map_err(|error| {
        let code = if error.is_data() {
            "validation_failed"
        } else {
            "invalid_request"
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("invalid flag definition: {error}"),
        )
    })?;
    let flag = FeatureFlag::from_definition(&key, document).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            error.to_string(),
        )
    })?;
    let precondition = precondition(&state, &env, &key, &headers).await?;
    let upserted = state.service.upsert(&env, flag, precondition).await?;
    let status = if upserted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::ETAG, version_tag(upserted.flag.version()))],
        axum::Json(upserted.flag),
    )
        .into_response())
}

async fn delete_flag(
    State(state): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (env, key) = (environment(&env)?, flag_key(&key)?);
    let precondition = precondition(&state, &env, &key, &headers).await?;
    state.service.delete(&env, &key, precondition).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn invalidate(
    State(state): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let env = environment(&env)?;
    let revision = state.service.invalidate_cache(&env).await?;
    Ok(axum::Json(json!({"environment": env, "revision": revision})).into_response())
}
