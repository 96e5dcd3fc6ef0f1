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

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flag_core::{
    Environment, EnvironmentSummary, FeatureFlag, FlagDocument, FlagKey, Precondition,
    RepositoryError, Revision, ServiceError,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::errors::{ApiError, ApiErrorBody, ApiErrorCode};
use crate::openapi::MANAGEMENT;
use crate::state::AppState;

/// `/v1/...` routes.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_environments))
        .routes(routes!(delete_environment))
        .routes(routes!(list_flags))
        .routes(routes!(get_flag, put_flag, delete_flag))
        .routes(routes!(invalidate))
}

/// The path of an environment's routes, as sent (names are parsed by the handler, so an invalid
/// one is a `400`, not the router's `404`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct EnvironmentPath {
    /// The environment.
    #[param(value_type = Environment, inline)]
    pub(crate) env: String,
}

/// The path of a flag's routes, as sent.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct FlagPath {
    /// The environment.
    #[param(value_type = Environment, inline)]
    env: String,
    /// The flag's key.
    #[param(value_type = FlagKey, inline)]
    key: String,
}

/// The answer of `GET /v1/environments`.
#[derive(Serialize, ToSchema)]
struct EnvironmentList {
    /// Every environment that exists, by name.
    environments: Vec<EnvironmentSummary>,
}

/// The answer of `GET /v1/environments/{env}/flags`.
#[derive(Serialize, ToSchema)]
struct FlagList<'a> {
    /// The environment listed.
    environment: Environment,
    /// Its revision when read.
    revision: Revision,
    /// Its flags, by key.
    flags: Vec<&'a FeatureFlag>,
}

/// The answer of `POST /v1/environments/{env}/cache/invalidate`.
#[derive(Serialize, ToSchema)]
struct Invalidated {
    /// The environment whose cached snapshot was dropped.
    environment: Environment,
    /// Its revision now.
    revision: Revision,
}

/// Path parameters; a path the router cannot decode (not UTF-8) is a JSON `404 not_found`.
pub(crate) struct PathParams<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(ApiError::not_found(format!(
                "no route for {}: {}",
                parts.uri.path(),
                rejection.body_text()
            ))),
        }
    }
}

/// The `name=value` pairs of a query string, values percent-decoded (`+` as a space), in order.
pub(crate) fn query_pairs(raw: Option<&str>) -> impl Iterator<Item = (&str, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            (name, value)
        })
}

pub(crate) fn environment(name: &str) -> Result<Environment, ApiError> {
    Environment::parse(name).map_err(|error| ApiError::invalid_request(error.to_string()))
}

fn flag_key(name: &str) -> Result<FlagKey, ApiError> {
    FlagKey::parse(name).map_err(|error| ApiError::invalid_request(error.to_string()))
}

pub(crate) fn version_tag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

#[utoipa::path(
    get,
    path = "/v1/environments",
    tag = MANAGEMENT,
    operation_id = "listEnvironments",
    summary = "Every environment, with its revision and number of flags.",
    responses((status = 200, description = "The environments.", body = EnvironmentList))
)]
async fn list_environments(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let environments = state.service.environments().await?;
    Ok(axum::Json(EnvironmentList { environments }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/flags",
    tag = MANAGEMENT,
    operation_id = "listFlags",
    summary = "Every flag of an environment, as stored.",
    params(EnvironmentPath),
    responses(
        (status = 200, description = "The flags (none for an environment never written).", body = FlagList),
        (status = 400, description = "An invalid environment name (`invalid_request`).", body = ApiErrorBody),
    )
)]
async fn list_flags(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
) -> Result<Response, ApiError> {
    let env = environment(&path.env)?;
    let snapshot = state.service.stored_flags(&env).await?;
    let answer = FlagList {
        environment: env,
        revision: snapshot.revision(),
        flags: snapshot.flags().map(|flag| &**flag).collect(),
    };
    Ok(axum::Json(answer).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/flags/{key}",
    tag = MANAGEMENT,
    operation_id = "getFlag",
    summary = "One flag, as stored.",
    params(FlagPath),
    responses(
        (
            status = 200,
            description = "The flag.",
            body = FeatureFlag,
            headers(("ETag" = String, description = "The flag's version, quoted: `\"3\"`."))
        ),
        (status = 400, description = "An invalid environment or key (`invalid_request`).", body = ApiErrorBody),
        (status = 404, description = "No such flag, or a path that is not UTF-8 (`not_found`).", body = ApiErrorBody),
    )
)]
async fn get_flag(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<FlagPath>,
) -> Result<Response, ApiError> {
    let (env, key) = (environment(&path.env)?, flag_key(&path.key)?);
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

/// A PUT body as the loose document of a `what` (flag, segment): not JSON is
/// `invalid_request`, JSON of the wrong shape `validation_failed`.
pub(crate) fn definition<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let code = if error.is_data() {
            ApiErrorCode::ValidationFailed
        } else {
            ApiErrorCode::InvalidRequest
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("invalid {what} definition: {error}"),
        )
    })
}

/// The version an `If-Match` entity tag names: the documented `^(W/)?"?[0-9]{1,19}"?$`, read
/// exactly (no sign, no second quote), so what the document calls invalid is refused.
fn version_tag_value(text: &str) -> Option<u64> {
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text.strip_prefix('"').unwrap_or(text);
    let digits = text.strip_suffix('"').unwrap_or(text);
    let plain = (1..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| digits.parse().ok()).flatten()
}

/// The precondition the request's `If-Match` / `If-None-Match` headers ask for.
pub(crate) fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    // A malformed `If-Match` is refused whatever else the request carries.
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|value| {
            let text = value.to_str().unwrap_or_default().trim();
            if text == "*" {
                return Ok(Precondition::Exists);
            }
            version_tag_value(text)
                .map(Precondition::Version)
                .ok_or_else(|| {
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

#[utoipa::path(
    put,
    path = "/v1/environments/{env}/flags/{key}",
    tag = MANAGEMENT,
    operation_id = "putFlag",
    summary = "Create or replace a flag.",
    params(
        FlagPath,
        (
            "If-Match" = Option<String>,
            Header,
            nullable = false,
            pattern = r#"^(\*|(W/)?"?[0-9]{1,19}"?)$"#,
            description = "`\"<version>\"` (`W/` and quotes optional): replace only that version; \
                           `*`: replace only an existing flag. `412` when it does not hold, `400` \
                           when it is neither."
        ),
        (
            "If-None-Match" = Option<String>,
            Header,
            nullable = false,
            pattern = r"^\*$",
            description = "`*`: create only; `412` when the flag exists."
        ),
    ),
    request_body = FlagDocument,
    responses(
        (
            status = 200,
            description = "Replaced.",
            body = FeatureFlag,
            headers(("ETag" = String, description = "The flag's new version, quoted."))
        ),
        (
            status = 201,
            description = "Created.",
            body = FeatureFlag,
            headers(("ETag" = String, description = "The flag's version, quoted: `\"1\"`."))
        ),
        (
            status = 400,
            description = "An invalid environment, key or precondition header, a body that is not \
                           JSON (`invalid_request`), or not a valid flag (`validation_failed`).",
            body = ApiErrorBody
        ),
        (
            status = 409,
            description = "Creating the flag (or its environment) would exceed `FLAG_MAX_FLAGS` or \
                           `FLAG_MAX_ENVIRONMENTS` (`limit_exceeded`); the flags are read from a \
                           file (`read_only`).",
            body = ApiErrorBody
        ),
        (
            status = 412,
            description = "`If-Match` names another version or a missing flag, or `If-None-Match: *` \
                           and the flag exists (`version_conflict`).",
            body = ApiErrorBody
        ),
    )
)]
async fn put_flag(
    admin: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<FlagPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| ApiError::unreadable_body(&rejection))?;
    let (env, key) = (environment(&path.env)?, flag_key(&path.key)?);
    let document: FlagDocument = definition(&body, "flag")?;
    let flag =
        FeatureFlag::from_definition(&key, document).map_err(ApiError::invalid_definition)?;
    let upserted = state
        .service
        .upsert(&env, flag, precondition(&headers)?, &admin.actor)
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

#[utoipa::path(
    delete,
    path = "/v1/environments/{env}/flags/{key}",
    tag = MANAGEMENT,
    operation_id = "deleteFlag",
    summary = "Delete a flag.",
    params(
        FlagPath,
        (
            "If-Match" = Option<String>,
            Header,
            nullable = false,
            pattern = r#"^(\*|(W/)?"?[0-9]{1,19}"?)$"#,
            description = "`\"<version>\"` (`W/` and quotes optional): delete only that version; \
                           `*`: the flag must exist. `412` when it does not hold, `400` when it is \
                           neither."
        ),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "An invalid environment, key or `If-Match` (`invalid_request`).", body = ApiErrorBody),
        (status = 404, description = "No such flag, or a path that is not UTF-8 (`not_found`).", body = ApiErrorBody),
        (status = 409, description = "Another flag lists it as a prerequisite (`in_use`); the flags are read from a file (`read_only`).", body = ApiErrorBody),
        (
            status = 412,
            description = "`If-Match` names another version, or `*` and no such flag (`version_conflict`).",
            body = ApiErrorBody
        ),
    )
)]
async fn delete_flag(
    admin: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<FlagPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (env, key) = (environment(&path.env)?, flag_key(&path.key)?);
    let precondition = precondition(&headers)?;
    match state
        .service
        .delete(&env, &key, precondition, &admin.actor)
        .await
    {
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

#[utoipa::path(
    delete,
    path = "/v1/environments/{env}",
    tag = MANAGEMENT,
    operation_id = "deleteEnvironment",
    summary = "Remove an environment that holds no flags.",
    params(EnvironmentPath),
    responses(
        (status = 204, description = "Removed; writing it again continues from its revision."),
        (status = 400, description = "An invalid environment name (`invalid_request`).", body = ApiErrorBody),
        (status = 404, description = "No such environment, or a path that is not UTF-8 (`not_found`).", body = ApiErrorBody),
        (status = 409, description = "The environment still holds flags (`in_use`); the flags are read from a file (`read_only`).", body = ApiErrorBody),
    )
)]
async fn delete_environment(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
) -> Result<Response, ApiError> {
    let env = environment(&path.env)?;
    state.service.delete_environment(&env).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/environments/{env}/cache/invalidate",
    tag = MANAGEMENT,
    operation_id = "invalidateCache",
    summary = "Drop the environment's cached snapshot on every instance.",
    params(EnvironmentPath),
    responses(
        (status = 200, description = "Dropped; the next read fills from the database.", body = Invalidated),
        (status = 400, description = "An invalid environment name (`invalid_request`).", body = ApiErrorBody),
    )
)]
async fn invalidate(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
) -> Result<Response, ApiError> {
    let environment = environment(&path.env)?;
    let revision = state.service.invalidate_cache(&environment).await?;
    Ok(axum::Json(Invalidated {
        environment,
        revision,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use proptest::string::string_regex;
    use proptest::test_runner::TestRunner;

    use super::*;

    /// The pattern the OpenAPI document gives the header `name` of the operation `id`.
    fn documented_pattern(id: &str, name: &str) -> String {
        let document = serde_json::to_value(crate::app::openapi()).unwrap();
        let operation = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .find(|operation| operation["operationId"] == id)
            .unwrap()
            .clone();
        let parameter = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == name)
            .unwrap()
            .clone();
        parameter["schema"]["pattern"].as_str().unwrap().to_owned()
    }

    fn with_if_match(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn every_if_match_the_document_allows_is_understood() {
        for id in ["putFlag", "deleteFlag"] {
            let pattern = documented_pattern(id, "If-Match");
            let unanchored = pattern.trim_start_matches('^').trim_end_matches('$');
            let values = string_regex(unanchored).unwrap();
            TestRunner::default()
                .run(&values, |value| {
                    let parsed = precondition(&with_if_match(&value));
                    proptest::prop_assert!(parsed.is_ok(), "{id}: {value:?} refused");
                    Ok(())
                })
                .unwrap();
        }
    }

    #[test]
    fn an_if_match_the_document_calls_invalid_is_refused() {
        for value in [
            "+3",
            "\"\"3\"\"",
            "W/W/3",
            "3 4",
            "-1",
            "",
            "**",
            "abc",
            "12345678901234567890",
        ] {
            assert!(
                precondition(&with_if_match(value)).is_err(),
                "{value:?} accepted"
            );
        }
        assert_eq!(
            precondition(&with_if_match("W/\"3\"")).unwrap(),
            Precondition::Version(3)
        );
        assert_eq!(
            precondition(&with_if_match("*")).unwrap(),
            Precondition::Exists
        );
    }
}
