//! Flags as files over HTTP: export an environment as one document, import one (JSON or YAML)
//! as one transaction, and copy flags with the segments they need between environments.
//!
//! Decisions:
//! - The document is `{"environment", "revision", "flags": [...], "segments": [...]}`, flags and
//!   segments as the API shows them (with `version` and `updatedAt`, which an import ignores), by
//!   key. YAML is the same document (`Accept: application/yaml` on export; `Content-Type:
//!   application/yaml`, or `text/yaml`, `application/x-yaml`, on import).
//! - Import: `?mode=merge` (default) or `replace`, `?dryRun=true`, `If-Match: "<revision>"`
//!   (`412 version_conflict` when the environment is at another revision). An invalid document
//!   is `400 validation_failed` with `problems: [{path, message}]`, every one of them, and
//!   changes nothing. An import that changes nothing bumps no revision.
//! - Copy (`POST /v1/environments/{env}/copy` with `{"from", "keys"}`, every flag of `from` when
//!   `keys` is absent) imports, in merge mode, the flags and every segment they refer to; a
//!   prerequisite flag is not copied along (it is a flag with its own rollout), so one missing in
//!   the target is a problem of the copy.
//! - Unknown query parameters are ignored, as in every other route.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flag_core::{
    Actor, Environment, FeatureFlag, FeatureFlagService, FlagKey, ImportDiff, ImportMode,
    ImportProblem, ImportRequest, Imported, KeyChanges, Precondition, RepositoryError, Revision,
    Segment, ServiceError, read_document,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{EnvironmentPath, PathParams, environment, precondition, query_pairs};
use crate::auth::Admin;
use crate::errors::{ApiError, ApiErrorBody};
use crate::openapi::MANAGEMENT;
use crate::state::{AppState, MAX_DOCUMENT_BYTES};

/// `/v1/environments/{env}/export`, `/import` and `/copy`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(import))
        .routes(routes!(copy))
}

/// An environment as one document.
#[derive(Serialize, ToSchema)]
pub struct EnvironmentDocument<'a> {
    /// The environment exported.
    pub environment: &'a Environment,
    /// Its revision when read.
    pub revision: Revision,
    /// Its flags, by key.
    pub flags: Vec<&'a FeatureFlag>,
    /// Its segments, by key.
    pub segments: Vec<&'a Segment>,
}

/// An environment document as an import reads it (the schema only: `read_document` reads the
/// body, so that every problem is answered with its path).
#[derive(ToSchema)]
#[schema(as = ImportDocument)]
#[expect(dead_code, reason = "only its schema is used")]
struct ImportDocument {
    /// Informational (an export names its environment); ignored.
    environment: Option<String>,
    /// Informational (an export names its revision; `If-Match` is the check); ignored.
    #[schema(minimum = 0)]
    revision: Option<i64>,
    /// The flags, each with its `key`.
    flags: Option<Vec<KeyedFlag>>,
    /// The segments, each with its `key`.
    segments: Option<Vec<KeyedSegment>>,
}

/// What an import reads: an environment document, or a flagd flag file (`flags` an object by
/// key), of which the subset that maps exactly is imported and the rest refused with its path.
struct ImportBody;

impl PartialSchema for ImportBody {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name("ImportDocument"))
            .item(flagd_document())
            .into()
    }
}

impl ToSchema for ImportBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("ImportDocument".to_owned(), ImportDocument::schema()));
        <ImportDocument as ToSchema>::schemas(schemas);
    }
}

/// A flagd flag file, as flagd's own schema describes it (what import reads of it is in
/// `docs/flags-as-files.md`).
fn flagd_document() -> RefOr<Schema> {
    let object = || ObjectBuilder::new().schema_type(Type::Object);
    let strings = || object().additional_properties(Some(String::schema()));
    let flag = object()
        .property(
            "state",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["ENABLED", "DISABLED"])),
        )
        .required("state")
        .property(
            "variants",
            object()
                .min_properties(Some(1))
                .additional_properties(Some(AdditionalProperties::FreeForm(true))),
        )
        .required("variants")
        .property("defaultVariant", String::schema())
        .property(
            "targeting",
            object().additional_properties(Some(AdditionalProperties::FreeForm(true))),
        )
        .property("metadata", strings())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    object()
        .description(Some(
            "A flagd flag file: `{\"flags\": {\"<key>\": {\"state\", \"variants\", \"defaultVariant\", \"targeting\"}}, \"$evaluators\": {...}}`. Flags whose targeting maps exactly are imported; the rest is refused with its path (`flags.<key>.targeting...`).",
        ))
        .property("$schema", String::schema())
        .property("flags", object().additional_properties(Some(flag)))
        .required("flags")
        .property(
            "$evaluators",
            object().additional_properties(Some(AdditionalProperties::FreeForm(true))),
        )
        .property("metadata", strings())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// A flag definition with its `key` (which a PUT body may leave to the path).
struct KeyedFlag;

/// A segment definition with its `key`.
struct KeyedSegment;

/// `definition` with `key` required.
fn keyed(definition: &str) -> RefOr<Schema> {
    AllOfBuilder::new()
        .item(Ref::from_schema_name(definition))
        .item(ObjectBuilder::new().required("key"))
        .into()
}

impl PartialSchema for KeyedFlag {
    fn schema() -> RefOr<Schema> {
        keyed("FlagDefinition")
    }
}

impl ToSchema for KeyedFlag {}

impl PartialSchema for KeyedSegment {
    fn schema() -> RefOr<Schema> {
        keyed("SegmentDefinition")
    }
}

impl ToSchema for KeyedSegment {}

/// What an import or a copy did (or, for a dry run, would do).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportAnswer<'a> {
    /// The environment imported into.
    pub environment: &'a Environment,
    /// Its revision afterwards.
    pub revision: Revision,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether anything was written.
    pub applied: bool,
    /// Flags that did not exist.
    pub created: &'a [String],
    /// Flags whose definition changed.
    pub updated: &'a [String],
    /// Flags deleted (`mode=replace`).
    pub deleted: &'a [String],
    /// Flags already as the document has them.
    pub unchanged: &'a [String],
    /// The same for segments.
    pub segments: &'a KeyChanges,
}

impl<'a> ImportAnswer<'a> {
    /// The answer for `imported` into `environment`.
    pub fn of(environment: &'a Environment, imported: &'a Imported, dry_run: bool) -> Self {
        let ImportDiff { flags, segments } = &imported.diff;
        Self {
            environment,
            revision: imported.revision,
            dry_run,
            applied: imported.applied,
            created: &flags.created,
            updated: &flags.updated,
            deleted: &flags.deleted,
            unchanged: &flags.unchanged,
            segments,
        }
    }
}

/// Whether a media type is YAML.
fn is_yaml(media_type: Option<&HeaderValue>) -> bool {
    media_type
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("yaml"))
}

/// The document of `env` as stored now.
pub fn render_document(
    environment: &Environment,
    snapshot: &flag_core::EnvironmentSnapshot,
    yaml: bool,
) -> Result<Vec<u8>, String> {
    let mut flags: Vec<&FeatureFlag> = snapshot.flags().map(AsRef::as_ref).collect();
    flags.sort_by(|a, b| a.key().cmp(b.key()));
    let mut segments: Vec<&Segment> = snapshot.segments().map(AsRef::as_ref).collect();
    segments.sort_by(|a, b| a.key().cmp(b.key()));
    let document = EnvironmentDocument {
        environment,
        revision: snapshot.revision(),
        flags,
        segments,
    };
    if yaml {
        serde_yaml::to_string(&document)
            .map(String::into_bytes)
            .map_err(|error| error.to_string())
    } else {
        serde_json::to_vec_pretty(&document).map_err(|error| error.to_string())
    }
}

/// Why a document was not imported.
#[derive(Debug)]
pub enum ImportFailure {
    /// The document: every problem, each with its path.
    Document(Vec<ImportProblem>),
    /// The service refused or failed otherwise (a conflict, a limit, an outage).
    Service(ServiceError),
}

impl From<ImportFailure> for ApiError {
    fn from(failure: ImportFailure) -> Self {
        match failure {
            ImportFailure::Document(problems) => ApiError::invalid_document(problems),
            ImportFailure::Service(error) => error.into(),
        }
    }
}

/// Imports `document` (as JSON) into `env`: what HTTP and the command line share. When some
/// items cannot be read as definitions, the others are still checked (a dry run) so that every
/// problem is answered at once, each with its path in the document.
pub async fn import_document(
    service: &FeatureFlagService,
    env: &Environment,
    document: &Value,
    mode: ImportMode,
    expected_revision: Option<Revision>,
    dry_run: bool,
    actor: &Actor,
) -> Result<Imported, ImportFailure> {
    let (contents, mut problems) = read_document(document);
    let request = |dry_run: bool, expected_revision: Option<Revision>| ImportRequest {
        flags: contents.flags.clone(),
        segments: contents.segments.clone(),
        mode,
        expected_revision,
        dry_run,
        max_flags: None,
    };
    if !problems.is_empty() {
        if let Err(ServiceError::Repository(RepositoryError::InvalidImport { problems: more })) =
            service.import(env, request(true, None), actor).await
        {
            problems.extend(more.into_iter().map(|problem| contents.locate(problem)));
        }
        return Err(ImportFailure::Document(problems));
    }
    match service
        .import(env, request(dry_run, expected_revision), actor)
        .await
    {
        Ok(imported) => Ok(imported),
        Err(ServiceError::Repository(RepositoryError::InvalidImport { problems })) => {
            Err(ImportFailure::Document(
                problems
                    .into_iter()
                    .map(|problem| contents.locate(problem))
                    .collect(),
            ))
        }
        Err(error) => Err(ImportFailure::Service(error)),
    }
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/export",
    tag = MANAGEMENT,
    operation_id = "exportEnvironment",
    summary = "The environment's flags and segments as one document (JSON, or YAML with `Accept: application/yaml`).",
    params(EnvironmentPath),
    responses(
        (status = 200, description = "The document (empty lists for an environment never written).", body = EnvironmentDocument),
        (status = 400, description = "An invalid environment name (`invalid_request`).", body = ApiErrorBody),
    )
)]
async fn export(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let env = environment(&path.env)?;
    let snapshot = state.service.stored_flags(&env).await?;
    let yaml = is_yaml(headers.get(header::ACCEPT));
    let body = render_document(&env, &snapshot, yaml).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::errors::ApiErrorCode::Internal,
            error,
        )
    })?;
    let content_type = if yaml {
        "application/yaml"
    } else {
        "application/json"
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

/// The query of an import, as documented (read by [`import_query`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "only its document is used: `import_query` reads the query"
)]
struct ImportParams {
    /// `merge` (default): add and replace what the document holds; `replace`: also delete what
    /// it does not hold.
    #[param(pattern = "^(merge|replace)$")]
    mode: Option<String>,
    /// `true`: answer what would change, change nothing.
    #[param(pattern = "^(true|false)$")]
    #[serde(rename = "dryRun")]
    dry_run: Option<String>,
}

/// The mode and dry-run flag of `raw` (a query string).
fn import_query(raw: Option<&str>) -> Result<(ImportMode, bool), ApiError> {
    let (mut mode, mut dry_run) = (ImportMode::Merge, false);
    for (name, value) in query_pairs(raw) {
        match (name, value.as_str()) {
            ("mode", "merge") => mode = ImportMode::Merge,
            ("mode", "replace") => mode = ImportMode::Replace,
            ("mode", other) => {
                return Err(ApiError::invalid_request(format!(
                    "mode must be merge or replace, not {other:?}"
                )));
            }
            ("dryRun", "true") => dry_run = true,
            ("dryRun", "false") => dry_run = false,
            ("dryRun", other) => {
                return Err(ApiError::invalid_request(format!(
                    "dryRun must be true or false, not {other:?}"
                )));
            }
            _ => {}
        }
    }
    Ok((mode, dry_run))
}

#[utoipa::path(
    put,
    path = "/v1/environments/{env}/import",
    tag = MANAGEMENT,
    operation_id = "importEnvironment",
    summary = "Import a document of flags and segments (JSON or YAML) as one transaction.",
    params(
        EnvironmentPath,
        ImportParams,
        (
            "If-Match" = Option<String>,
            Header,
            nullable = false,
            pattern = r#"^(\*|(W/)?"?[0-9]{1,19}"?)$"#,
            description = "`\"<revision>\"`: import only if the environment is at that revision (`412` otherwise)."
        ),
    ),
    request_body(
        description = "An environment document, as `export` answers it: `{\"flags\": [...], \"segments\": [...]}`, or a flagd flag file; JSON, or YAML with `Content-Type: application/yaml`.",
        content(
            (ImportBody = "application/json"),
            (ImportBody = "application/yaml"),
        )
    ),
    responses(
        (status = 200, description = "What was (or, for a dry run, would be) created, updated, deleted and left unchanged.", body = ImportAnswer),
        (status = 400, description = "An invalid environment, query or `If-Match` (`invalid_request`), or a document that cannot be imported (`validation_failed`, with every problem and its path).", body = ApiErrorBody),
        (status = 409, description = "The import would create an environment past `FLAG_MAX_ENVIRONMENTS` (`limit_exceeded`); the flags are read from a file (`read_only`).", body = ApiErrorBody),
        (status = 412, description = "`If-Match` names another revision (`version_conflict`).", body = ApiErrorBody),
    )
)]
async fn import(
    admin: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::unreadable_body_within(&rejection, MAX_DOCUMENT_BYTES))?;
    let env = environment(&path.env)?;
    let (mode, dry_run) = import_query(raw.as_deref())?;
    let expected_revision = match precondition(&headers)? {
        Precondition::Version(revision) => Some(Revision(revision)),
        _ => None,
    };
    let yaml = is_yaml(headers.get(header::CONTENT_TYPE));
    let document = flag_file::parse_document(&body, yaml)
        .map_err(|problem| ApiError::invalid_document(vec![problem]))?;
    let imported = import_document(
        &state.service,
        &env,
        &document,
        mode,
        expected_revision,
        dry_run,
        &admin.actor,
    )
    .await?;
    Ok(axum::Json(ImportAnswer::of(&env, &imported, dry_run)).into_response())
}

/// A copy between environments.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CopyRequest {
    /// The environment to copy from.
    #[schema(value_type = Environment)]
    from: String,
    /// The flags to copy; every flag of `from` when absent.
    #[schema(value_type = Option<Vec<FlagKey>>)]
    keys: Option<Vec<String>>,
}

#[utoipa::path(
    post,
    path = "/v1/environments/{env}/copy",
    tag = MANAGEMENT,
    operation_id = "copyFlags",
    summary = "Copy flags, with the segments they need, from another environment into this one.",
    params(EnvironmentPath, ImportParams),
    request_body = CopyRequest,
    responses(
        (status = 200, description = "What was (or, for a dry run, would be) created, updated and left unchanged here.", body = ImportAnswer),
        (status = 400, description = "An invalid environment, body or key (`invalid_request`), or flags that cannot be copied, such as one whose prerequisite this environment lacks (`validation_failed`, with every problem).", body = ApiErrorBody),
        (status = 409, description = "The copy would create an environment past `FLAG_MAX_ENVIRONMENTS` (`limit_exceeded`); the flags are read from a file (`read_only`).", body = ApiErrorBody),
    )
)]
async fn copy(
    admin: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::unreadable_body_within(&rejection, MAX_DOCUMENT_BYTES))?;
    let env = environment(&path.env)?;
    let (_, dry_run) = import_query(raw.as_deref())?;
    let request: CopyRequest = serde_json::from_slice(&body)
        .map_err(|error| ApiError::invalid_request(format!("not a copy request: {error}")))?;
    let from = environment(&request.from)?;
    let source = state.service.stored_flags(&from).await?;
    let flags: Vec<FeatureFlag> = match &request.keys {
        None => source.flags().map(|flag| (**flag).clone()).collect(),
        Some(keys) => {
            let mut chosen = Vec::with_capacity(keys.len());
            let mut problems = Vec::new();
            for (index, key) in keys.iter().enumerate() {
                match source.flag(key) {
                    Some(flag) => chosen.push((**flag).clone()),
                    None => problems.push(ImportProblem::new(
                        format!("keys[{index}]"),
                        format!("{from} has no flag {key:?}"),
                    )),
                }
            }
            if !problems.is_empty() {
                return Err(ApiError::invalid_document(problems));
            }
            chosen
        }
    };
    let needed: BTreeSet<&flag_core::SegmentKey> =
        flags.iter().flat_map(FeatureFlag::segments).collect();
    let segments: Vec<Segment> = source
        .segments()
        .filter(|segment| needed.contains(segment.key()))
        .map(|segment| (**segment).clone())
        .collect();
    let import = ImportRequest {
        flags,
        segments,
        mode: ImportMode::Merge,
        expected_revision: None,
        dry_run,
        max_flags: None,
    };
    let imported = state.service.import(&env, import, &admin.actor).await?;
    Ok(axum::Json(ImportAnswer::of(&env, &imported, dry_run)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_query_is_read_or_refused() {
        assert_eq!(import_query(None).unwrap(), (ImportMode::Merge, false));
        assert_eq!(
            import_query(Some("mode=replace&dryRun=true&x=1")).unwrap(),
            (ImportMode::Replace, true)
        );
        assert!(import_query(Some("mode=all")).is_err());
        assert!(import_query(Some("dryRun=yes")).is_err());
    }
}
