//! The management API of segments: the same shapes, `ETag`s, preconditions, audit rows and
//! error codes as flags (see `admin`), under `/v1/environments/{env}/segments`.
//!
//! A segment write bumps its environment's revision and reaches caches, other instances and
//! event streams exactly as a flag write does. Deleting a segment that a flag refers to is
//! `409 in_use`, naming the flags; a flag naming a missing segment is `400 validation_failed`.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flag_core::{
    Environment, Precondition, RepositoryError, Revision, Segment, SegmentDocument, SegmentKey,
    ServiceError,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{
    EnvironmentPath, PathParams, definition, environment, precondition, version_tag,
};
use crate::auth::Admin;
use crate::errors::{ApiError, ApiErrorBody};
use crate::openapi::MANAGEMENT;
use crate::state::AppState;

/// `/v1/environments/{env}/segments...` routes.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_segments))
        .routes(routes!(get_segment, put_segment, delete_segment))
}

/// The path of a segment's routes, as sent.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SegmentPath {
    /// The environment.
    #[param(value_type = Environment, inline)]
    env: String,
    /// The segment's key.
    #[param(value_type = SegmentKey, inline)]
    key: String,
}

/// The answer of `GET /v1/environments/{env}/segments`.
#[derive(Serialize, ToSchema)]
struct SegmentList<'a> {
    /// The environment listed.
    environment: Environment,
    /// Its revision when read.
    revision: Revision,
    /// Its segments, by key.
    segments: Vec<&'a Segment>,
}

fn segment_key(name: &str) -> Result<SegmentKey, ApiError> {
    SegmentKey::parse(name).map_err(|error| ApiError::invalid_request(error.to_string()))
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/segments",
    tag = MANAGEMENT,
    operation_id = "listSegments",
    summary = "Every segment of an environment, as stored.",
    params(EnvironmentPath),
    responses(
        (status = 200, description = "The segments (none for an environment never written).", body = SegmentList),
        (status = 400, description = "An invalid environment name (`invalid_request`).", body = ApiErrorBody),
    )
)]
async fn list_segments(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
) -> Result<Response, ApiError> {
    let env = environment(&path.env)?;
    let snapshot = state.service.stored_flags(&env).await?;
    let answer = SegmentList {
        environment: env,
        revision: snapshot.revision(),
        segments: snapshot.segments().map(|segment| &**segment).collect(),
    };
    Ok(axum::Json(answer).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/segments/{key}",
    tag = MANAGEMENT,
    operation_id = "getSegment",
    summary = "One segment, as stored.",
    params(SegmentPath),
    responses(
        (
            status = 200,
            description = "The segment.",
            body = Segment,
            headers(("ETag" = String, description = "The segment's version, quoted: `\"3\"`."))
        ),
        (status = 400, description = "An invalid environment or key (`invalid_request`).", body = ApiErrorBody),
        (status = 404, description = "No such segment, or a path that is not UTF-8 (`not_found`).", body = ApiErrorBody),
    )
)]
async fn get_segment(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<SegmentPath>,
) -> Result<Response, ApiError> {
    let (env, key) = (environment(&path.env)?, segment_key(&path.key)?);
    let segment = state
        .service
        .stored_segment(&env, &key)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("segment {key} not found in environment {env}"))
        })?;
    Ok((
        [(header::ETAG, version_tag(segment.version()))],
        axum::Json(segment),
    )
        .into_response())
}

#[utoipa::path(
    put,
    path = "/v1/environments/{env}/segments/{key}",
    tag = MANAGEMENT,
    operation_id = "putSegment",
    summary = "Create or replace a segment.",
    params(
        SegmentPath,
        (
            "If-Match" = Option<String>,
            Header,
            nullable = false,
            pattern = r#"^(\*|(W/)?"?[0-9]{1,19}"?)$"#,
            description = "`\"<version>\"` (`W/` and quotes optional): replace only that version; \
                           `*`: replace only an existing segment. `412` when it does not hold, \
                           `400` when it is neither."
        ),
        (
            "If-None-Match" = Option<String>,
            Header,
            nullable = false,
            pattern = r"^\*$",
            description = "`*`: create only; `412` when the segment exists."
        ),
    ),
    request_body = SegmentDocument,
    responses(
        (
            status = 200,
            description = "Replaced.",
            body = Segment,
            headers(("ETag" = String, description = "The segment's new version, quoted."))
        ),
        (
            status = 201,
            description = "Created.",
            body = Segment,
            headers(("ETag" = String, description = "The segment's version, quoted: `\"1\"`."))
        ),
        (
            status = 400,
            description = "An invalid environment, key or precondition header, a body that is not \
                           JSON (`invalid_request`), or not a valid segment (`validation_failed`).",
            body = ApiErrorBody
        ),
        (
            status = 409,
            description = "Creating the segment's environment would exceed `FLAG_MAX_ENVIRONMENTS` \
                           (`limit_exceeded`); the flags are read from a file (`read_only`).",
            body = ApiErrorBody
        ),
        (
            status = 412,
            description = "`If-Match` names another version or a missing segment, or \
                           `If-None-Match: *` and the segment exists (`version_conflict`).",
            body = ApiErrorBody
        ),
    )
)]
async fn put_segment(
    admin: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<SegmentPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| ApiError::unreadable_body(&rejection))?;
    let (env, key) = (environment(&path.env)?, segment_key(&path.key)?);
    let document: SegmentDocument = definition(&body, "segment")?;
    let segment = Segment::from_definition(&key, document).map_err(ApiError::invalid_definition)?;
    let upserted = state
        .service
        .upsert_segment(&env, segment, precondition(&headers)?, &admin.actor)
        .await?;
    let status = if upserted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::ETAG, version_tag(upserted.segment.version()))],
        axum::Json(upserted.segment),
    )
        .into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/environments/{env}/segments/{key}",
    tag = MANAGEMENT,
    operation_id = "deleteSegment",
    summary = "Delete a segment that no flag refers to.",
    params(
        SegmentPath,
        (
            "If-Match" = Option<String>,
            Header,
            nullable = false,
            pattern = r#"^(\*|(W/)?"?[0-9]{1,19}"?)$"#,
            description = "`\"<version>\"` (`W/` and quotes optional): delete only that version; \
                           `*`: the segment must exist. `412` when it does not hold, `400` when it \
                           is neither."
        ),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "An invalid environment, key or `If-Match` (`invalid_request`).", body = ApiErrorBody),
        (status = 404, description = "No such segment, or a path that is not UTF-8 (`not_found`).", body = ApiErrorBody),
        (status = 409, description = "Flags refer to the segment (`in_use`); the message names them. The flags are read from a file (`read_only`).", body = ApiErrorBody),
        (
            status = 412,
            description = "`If-Match` names another version, or `*` and no such segment (`version_conflict`).",
            body = ApiErrorBody
        ),
    )
)]
async fn delete_segment(
    admin: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<SegmentPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (env, key) = (environment(&path.env)?, segment_key(&path.key)?);
    let precondition = precondition(&headers)?;
    match state
        .service
        .delete_segment(&env, &key, precondition, &admin.actor)
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        // `If-Match: *` asks that the segment exist, as for flags.
        Err(ServiceError::Repository(RepositoryError::SegmentNotFound { .. }))
            if precondition == Precondition::Exists =>
        {
            Err(ApiError::from(ServiceError::Repository(
                RepositoryError::SegmentVersionConflict {
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
