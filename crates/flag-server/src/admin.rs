//! The management API: environments, flags (with optimistic concurrency) and cache invalidation.
//!
//! Every handler takes [`Admin`], so every route needs `Authorization: Bearer <admin token>`.
//! Errors are `{"error": {"code", "message"}}` with the codes of the design contract.
//! Decisions: an invalid environment or key in the path is `400 invalid_request`; a body that is
//! not JSON is `invalid_request`, JSON of the wrong shape (unknown field, wrong type) or a flag
//! that breaks a rule is `validation_failed`; an unparsable `If-Match` is `400 invalid_request`
//! (the OpenAPI document states its format, so a client sending another is told so rather than
//! told of a conflict); `If-Match: *` requires the flag to exist, checked in the write's own
//! transaction. `DELETE /v1/environments/{env}` removes an environment without flags (`409
//! in_use` while it holds any); its revision is kept, so writing it again continues from there.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use flag_core::{
    Environment, FeatureFlag, FlagDocument, FlagKey, Precondition, RepositoryError, ServiceError,
};
use serde_json::json;

use crate::auth::Admin;
use crate::errors::ApiError;
use crate::state::AppState;

/// `/v1/...` routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/environments", get(list_environments))
        .route("/v1/environments/{env}", delete(delete_environment))
        .route("/v1/environments/{env}/flags", get(list_flags))
        .route(
            "/v1/environments/{env}/flags/{key}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route("/v1/environments/{env}/cache/invalidate", post(invalidate))
}

/// Path parameters; a path the router cannot decode (not UTF-8) is a JSON `404 not_found`.
struct Segments<T>(T);

impl<T, S> FromRequestParts<S> for Segments<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Segments(value)),
            Err(rejection) => Err(ApiError::not_found(format!(
                "no route for {}: {}",
                parts.uri.path(),
                rejection.body_text()
            ))),
        }
    }
}

fn environment(name: &str) -> Result<Environment, ApiError> {
    Environment::parse(name).map_err(|error| ApiError::invalid_request(error.to_string()))
}

fn flag_key(name: &str) -> Result<FlagKey, ApiError> {
    FlagKey::parse(name).map_err(|error| ApiError::invalid_request(error.to_string()))
}

fn version_tag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

async fn list_environments(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let environments = state.service.environments().await?;
    Ok(axum::Json(json!({"environments": environments})).into_response())
}

async fn list_flags(
    _: Admin,
    State(state): State<AppState>,
    Segments(env): Segments<String>,
) -> Result<Response, ApiError> {
    let env = environment(&env)?;
    let snapshot = state.service.stored_flags(&env).await?;
    let flags: Vec<&FeatureFlag> = snapshot.flags().map(|flag| &**flag).collect();
    Ok(
        axum::Json(json!({"environment": env, "revision": snapshot.revision(), "flags": flags}))
            .into_response(),
    )
}

async fn get_flag(
    _: Admin,
    State(state): State<AppState>,
    Segments((env, key)): Segments<(String, String)>,
) -> Result<Response, ApiError> {
    let (env, key) = (environment(&env)?, flag_key(&key)?);
    let flag = state
        .service
        .stored_flag(&env, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("flag {key} not found in environment {env}")))?;
    Ok((
        [(header::ETAG, version_tag(flag.version()))],
        axum::Json(flag),
    )
        .into_response())
}

/// The precondition the request's `If-Match` / `If-None-Match` headers ask for.
fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    // A malformed `If-Match` is refused whatever else the request carries.
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|value| {
            let text = value.to_str().unwrap_or_default().trim();
            if text == "*" {
                return Ok(Precondition::Exists);
            }
            text.strip_prefix("W/")
                .unwrap_or(text)
                .trim_matches('"')
                .parse()
                .map(Precondition::Version)
                .map_err(|_| {
                    ApiError::invalid_request("If-Match must be a version such as \"3\", or *")
                })
        })
        .transpose()?;
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        if value.as_bytes() != b"*" {
            return Err(ApiError::invalid_request(
                "If-None-Match on a write must be *",
            ));
        }
        if if_match.is_some() {
            return Err(ApiError::invalid_request(
                "a write takes If-Match or If-None-Match, not both",
            ));
        }
        return Ok(Precondition::Absent);
    }
    Ok(if_match.unwrap_or(Precondition::None))
}

async fn put_flag(
    _: Admin,
    State(state): State<AppState>,
    Segments((env, key)): Segments<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| ApiError::unreadable_body(&rejection))?;
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
    let upserted = state
        .service
        .upsert(&env, flag, precondition(&headers)?)
        .await?;
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
    _: Admin,
    State(state): State<AppState>,
    Segments((env, key)): Segments<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (env, key) = (environment(&env)?, flag_key(&key)?);
    let precondition = precondition(&headers)?;
    match state.service.delete(&env, &key, precondition).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        // `If-Match: *` asks that the flag exist: a missing one fails the precondition, as it
        // does for a PUT.
        Err(ServiceError::Repository(RepositoryError::NotFound { .. }))
            if precondition == Precondition::Exists =>
        {
            Err(ApiError::from(ServiceError::Repository(
                RepositoryError::VersionConflict {
                    environment: env,
                    key,
                    expected: precondition,
                    current: None,
                },
            )))
        }
        Err(error) => Err(error.into()),
    }
}

async fn delete_environment(
    _: Admin,
    State(state): State<AppState>,
    Segments(env): Segments<String>,
) -> Result<Response, ApiError> {
    let env = environment(&env)?;
    state.service.delete_environment(&env).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn invalidate(
    _: Admin,
    State(state): State<AppState>,
    Segments(env): Segments<String>,
) -> Result<Response, ApiError> {
    let env = environment(&env)?;
    let revision = state.service.invalidate_cache(&env).await?;
    Ok(axum::Json(json!({"environment": env, "revision": revision})).into_response())
}
