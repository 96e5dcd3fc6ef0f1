//! The OpenFeature Remote Evaluation Protocol: single and bulk evaluation.
//!
//! Every handler takes [`Client`], so OFREP needs a client token when `FLAG_CLIENT_TOKENS` is set.
//! Decisions where the protocol leaves room: a flag key outside the key grammar (or not UTF-8) is
//! `404 FLAG_NOT_FOUND` (no such flag can exist); an invalid `X-Environment` is `400 GENERAL`;
//! a body over `FLAG_MAX_CONTEXT_BYTES` is `413 GENERAL`; a store outage is `503 GENERAL`; every
//! single-flag error body carries `key`, whatever the error (the OFREP schema requires it). The
//! bulk `ETag` is derived from the environment, its revision and the request body as sent (see
//! [`etag`]): two users never share a `304`, and a `304` is answered without parsing the body.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use flag_core::{
    Environment, ErrorCode, Evaluation, EvaluationContext, FlagKey, Reason, Revision, ServiceError,
    murmur3_x86_32,
};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Client;
use crate::errors::{Failure, FlagFailure, OfrepError};
use crate::openapi::OFREP;
use crate::state::AppState;
use crate::streams::EventStream;
use crate::telemetry;

/// `POST /ofrep/v1/evaluate/flags/{key}` and `POST /ofrep/v1/evaluate/flags`, reading bodies
/// of at most `max_context_bytes`.
pub(crate) fn router(max_context_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(evaluate_one))
        .routes(routes!(evaluate_all))
        .layer(DefaultBodyLimit::max(max_context_bytes))
}

/// An evaluation request, the shape [`context`] reads (by hand, so that a body that is not JSON
/// is told from a `context` that is wrong).
#[derive(ToSchema)]
#[schema(description = "The user to evaluate for.")]
#[expect(
    dead_code,
    reason = "only its schema is used: the body is parsed by `context`"
)]
struct EvaluationRequest {
    /// The user's attributes.
    context: EvaluationContext,
}

/// The request's `context`, from the body's bytes.
///
/// A well-formed request is read straight into the context's attributes (no map of the whole
/// body, no `context` key to allocate); anything else is read again by [`tell_context_error`],
/// which says exactly what is wrong, so both give the same answers.
pub(crate) fn parse_context(body: &[u8]) -> Result<EvaluationContext, OfrepError> {
    // One UTF-8 check of the whole body, rather than one per string as `from_slice` makes.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(ContextOnly(Some(context))) = serde_json::from_str(text)
    {
        return Ok(context);
    }
    tell_context_error(body)
}

/// An evaluation request's `context` object (the last one, as a JSON map keeps it), every other
/// member skipped; reading fails on anything but an object whose `context` is an object.
struct ContextOnly(Option<EvaluationContext>);

impl<'de> Deserialize<'de> for ContextOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = ContextOnly;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("an object with a `context` object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<ContextOnly, A::Error> {
                let mut context = None;
                while let Some(member) = members.next_key::<Member>()? {
                    match member {
                        Member::Context => context = Some(members.next_value()?),
                        Member::Other => {
                            members.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ContextOnly(context))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// A member name of an evaluation request: `context` or another.
enum Member {
    Context,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Member;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a member name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Member, E> {
                Ok(if name == "context" {
                    Member::Context
                } else {
                    Member::Other
                })
            }
        }
        deserializer.deserialize_identifier(Name)
    }
}

/// The error of a body [`parse_context`] could not read, or its context if it can be read after
/// all.
fn tell_context_error(body: &[u8]) -> Result<EvaluationContext, OfrepError> {
    let request: Value = serde_json::from_slice(body).map_err(|error| {
        OfrepError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ParseError,
            format!("body is not JSON: {error}"),
        )
    })?;
    let Value::Object(mut request) = request else {
        return Err(OfrepError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ParseError,
            "body must be a JSON object with a `context`",
        ));
    };
    let Some(Value::Object(attributes)) = request.remove("context") else {
        return Err(OfrepError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidContext,
            "`context` must be present and a JSON object",
        ));
    };
    EvaluationContext::from_map(attributes).map_err(|error| {
        OfrepError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidContext,
            error.to_string(),
        )
    })
}

/// One evaluation as OFREP shows it, borrowed from the shared flag: serializing it copies no
/// variant value and no metadata.
#[derive(Serialize, ToSchema)]
#[schema(as = EvaluationSuccess, description = "A flag's evaluation.")]
pub(crate) struct Success<'a> {
    /// The flag evaluated.
    #[schema(value_type = FlagKey)]
    key: &'a FlagKey,
    /// The variant's value: any JSON but `null` (integers stay integers).
    #[schema(value_type = Value)]
    value: &'a Value,
    /// Why this variant was served.
    #[schema(value_type = Reason)]
    reason: &'static str,
    /// The variant served.
    variant: &'a str,
    /// The flag's metadata.
    metadata: Metadata<'a>,
}

impl<'a> Success<'a> {
    pub(crate) fn of(evaluation: &'a Evaluation) -> Self {
        Self {
            key: evaluation.key(),
            value: evaluation.value(),
            reason: evaluation.reason().as_str(),
            variant: evaluation.variant(),
            metadata: Metadata(evaluation),
        }
    }
}

/// The flag's metadata plus `flagVersion` (which wins over a user entry of that name).
struct Metadata<'a>(&'a Evaluation);

impl PartialSchema for Metadata<'_> {
    fn schema() -> RefOr<Schema> {
        let version = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .description(Some("The flag's version."));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("The flag's metadata (strings) plus `flagVersion`."))
            .property("flagVersion", version)
            .required("flagVersion")
            .additional_properties(Some(AdditionalProperties::RefOr(
                ObjectBuilder::new().schema_type(Type::String).into(),
            )))
            .into()
    }
}

impl ToSchema for Metadata<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "EvaluationMetadata".into()
    }
}

impl Serialize for Metadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.0.metadata() {
            if name != "flagVersion" {
                map.serialize_entry(name, value)?;
            }
        }
        map.serialize_entry("flagVersion", &self.0.flag_version())?;
        map.end()
    }
}

/// A bulk answer: `{"flags": [...], "eventStreams": [...], "metadata": {...}}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BulkEvaluationSuccess, description = "Every flag of the environment, evaluated.")]
// Only its schema is used: `evaluate_all` writes the same shape into the body itself.
struct Bulk<'a> {
    /// Every flag of the environment, in key order.
    flags: Vec<BulkEntry<'a>>,
    /// Where to hear of the environment's changes (OFREP ADR-0008).
    event_streams: Vec<EventStream>,
    /// The flag set's environment and revision.
    metadata: FlagSetMetadata<'a>,
}

/// What a bulk answer says of the flag set it evaluated.
#[derive(Serialize, ToSchema)]
struct FlagSetMetadata<'a> {
    /// The environment evaluated.
    #[schema(value_type = String)]
    environment: &'a Environment,
    /// Its revision: the `etag` its stream's events carry.
    #[schema(minimum = 0)]
    revision: u64,
}

/// A revision a client heard of from an event stream, from the bulk request's `flagConfigEtag`
/// (an event's `etag`, which is the revision) or `flagConfigLastModified` (a time: only says that
/// something newer than this instance holds may exist). Values that cannot be read are ignored:
/// they only ever make an answer fresher.
fn claimed_revision(query: Option<&str>) -> Option<Option<Revision>> {
    let query = query?;
    let mut claim = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "flagConfigEtag" => {
                let value = value.trim_matches(|c| c == '"' || c == ' ');
                if let Ok(revision) = value.parse::<u64>() {
                    return Some(Some(Revision(revision)));
                }
            }
            "flagConfigLastModified" if !value.is_empty() => claim = Some(None),
            _ => {}
        }
    }
    claim
}

/// One entry of a bulk answer: an evaluation, or that flag's error.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only its schema is used")]
enum BulkEntry<'a> {
    Evaluated(Success<'a>),
    Failed(FlagFailure<'a>),
}

#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags/{key}",
    tag = OFREP,
    operation_id = "evaluateFlag",
    summary = "Evaluate one flag for a context.",
    params(
        (
            "key" = String,
            Path,
            description = "The flag's key; a key outside the key grammar answers `404 FLAG_NOT_FOUND`."
        ),
        Client,
    ),
    request_body = EvaluationRequest,
    responses(
        (status = 200, description = "The evaluation.", body = Success),
        (
            status = 400,
            description = "A body that is not JSON (`PARSE_ERROR`), a missing or wrong `context` \
                           (`INVALID_CONTEXT`), a rollout without `targetingKey` \
                           (`TARGETING_KEY_MISSING`), or an invalid `X-Environment` (`GENERAL`).",
            body = FlagFailure
        ),
        (status = 404, description = "No such flag (`FLAG_NOT_FOUND`).", body = FlagFailure),
        (
            status = 500,
            description = "The stored flag cannot be read (`GENERAL`); the environment's other \
                           flags are served.",
            body = FlagFailure
        ),
    )
)]
async fn evaluate_one(
    client: Client,
    State(state): State<AppState>,
    uri: Uri,
    key: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    let Ok(Path(key)) = key else {
        // Only a path that is not UTF-8 gets here: no flag can have its key.
        return Err(OfrepError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::FlagNotFound,
            "the flag key in the path is not UTF-8; no flag can have it",
        )
        .about(&uri));
    };
    let body = body.map_err(|rejection| {
        OfrepError::unreadable_body(&rejection, state.max_context_bytes).for_key(&key)
    })?;
    evaluate_one_of(&state, &client.environment, &key, &body).await
}

/// The answer to a single-flag evaluation of `key` in `env` for the request body `body`, once
/// the client is authenticated and the body read (by the route's extractors, or by the fast
/// path).
pub(crate) async fn evaluate_one_of(
    state: &AppState,
    env: &Environment,
    key: &str,
    body: &[u8],
) -> Result<Response, OfrepError> {
    let context = parse_context(body).map_err(|error| error.for_key(key))?;
    let Ok(flag_key) = FlagKey::parse(key) else {
        return Err(OfrepError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::FlagNotFound,
            "no flag can have this key",
        )
        .for_key(key));
    };
    let span = telemetry::evaluation_span(key);
    let evaluated = state
        .service
        .evaluate(env, &flag_key, &context)
        .instrument(span.clone())
        .await;
    telemetry::evaluated_one(&span, &evaluated);
    let evaluation = match evaluated {
        Ok(evaluation) => evaluation,
        Err(error) => {
            if let (Some(counts), ServiceError::Evaluation(failed)) =
                (&state.evaluation_counts, &error)
                && failed.code() != ErrorCode::FlagNotFound
            {
                counts.record_error(env, &flag_key);
            }
            return Err(OfrepError::from(error).for_key(key));
        }
    };
    if let Some(counts) = &state.evaluation_counts {
        counts.record(env, &evaluation);
    }
    let mut body = Vec::with_capacity(ENTRY_BYTES);
    write_success(&mut body, &evaluation);
    Ok(json_answer(body))
}

#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags",
    tag = OFREP,
    operation_id = "evaluateAllFlags",
    summary = "Evaluate every flag of the environment for a context.",
    params(
        Client,
        (
            "If-None-Match" = Option<String>,
            Header,
            nullable = false,
            description = "An `ETag` of an earlier answer: `304` while the environment's revision \
                           and the context are unchanged."
        ),
        (
            "flagConfigEtag" = Option<String>,
            Query,
            description = "The `etag` of the stream event that triggered this request: the answer \
                           is never older than that revision (other values are ignored)."
        ),
        (
            "flagConfigLastModified" = Option<String>,
            Query,
            description = "The `lastModified` of the stream event that triggered this request."
        ),
    ),
    request_body = EvaluationRequest,
    responses(
        (
            status = 200,
            description = "Every flag, each evaluated or with its own error.",
            body = Bulk,
            headers(("ETag" = String, description = "Changes with the environment's revision and the context."))
        ),
        (
            status = 304,
            description = "`If-None-Match` names the current answer.",
            headers(("ETag" = String, description = "The current answer's tag."))
        ),
        (
            status = 400,
            description = "A body that is not JSON (`PARSE_ERROR`), a missing or wrong `context` \
                           (`INVALID_CONTEXT`), or an invalid `X-Environment` (`GENERAL`).",
            body = Failure
        ),
    )
)]
async fn evaluate_all(
    client: Client,
    State(state): State<AppState>,
    IfNoneMatch(presented): IfNoneMatch,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    let body =
        body.map_err(|rejection| OfrepError::unreadable_body(&rejection, state.max_context_bytes))?;
    evaluate_all_of(
        &state,
        &client.environment,
        presented.as_ref(),
        query.as_deref(),
        &body,
    )
    .await
}

/// The answer to a bulk evaluation of `env` for the request body `body`, with the request's
/// `If-None-Match` and query, once the client is authenticated and the body read (by the
/// route's extractors, or by the fast path).
pub(crate) async fn evaluate_all_of(
    state: &AppState,
    env: &Environment,
    presented: Option<&HeaderValue>,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, OfrepError> {
    let presented = presented.and_then(|value| value.to_str().ok());
    // Without a tag to match, a malformed body is told before the store is asked (a 400 beats a
    // 503 during an outage); with one, parsing waits until the tag is known not to match.
    let context = match presented {
        None => Some(parse_context(body)?),
        Some(_) => None,
    };
    let snapshot = match claimed_revision(query) {
        None => state.service.bulk(env).await?,
        Some(claim) => state.service.bulk_after_event(env, claim).await?,
    };
    let revision = snapshot.revision();
    let etag = etag(env, revision.get(), body);
    let etag_header =
        HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    // Decided before the body is parsed or any flag evaluated: a 304 costs a snapshot lookup and
    // a hash of the body as sent.
    if presented.is_some_and(|presented| presented.split(',').any(|tag| tag.trim() == etag)) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    let context = match context {
        Some(context) => context,
        None => parse_context(body)?,
    };
    let bulk = snapshot.evaluate(&context);
    telemetry::evaluated_all(&bulk.results);
    if let Some(counts) = &state.evaluation_counts {
        for result in &bulk.results {
            match result {
                Ok(evaluation) => counts.record(env, evaluation),
                // Every flag of a bulk answer exists: its errors are its own.
                Err(error) => counts.record_error(env, error.key()),
            }
        }
    }
    // The shape of `Bulk`, written straight into the body: each flag's entry is copied from its
    // rendering (made once per flag, variant and reason), not serialized again.
    let mut body = Vec::with_capacity(bulk.results.len() * ENTRY_BYTES + 256);
    body.extend_from_slice(b"{\"flags\":[");
    for (index, result) in bulk.results.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        match result {
            Ok(evaluation) => write_success(&mut body, evaluation),
            Err(error) => write_json(
                &mut body,
                &FlagFailure {
                    key: error.key().as_str(),
                    error_code: error.code(),
                    error_details: error.to_string().into(),
                },
            ),
        }
    }
    body.extend_from_slice(b"],\"eventStreams\":");
    write_json(&mut body, &state.streams.advertised(env));
    body.extend_from_slice(b",\"metadata\":");
    write_json(
        &mut body,
        &FlagSetMetadata {
            environment: env,
            revision: revision.get(),
        },
    );
    body.push(b'}');
    let mut answer = json_answer(body);
    answer.headers_mut().insert(header::ETAG, etag_header);
    Ok(answer)
}

/// About the size of one evaluation's JSON, to size answer buffers once.
const ENTRY_BYTES: usize = 160;

/// Appends one evaluation's JSON, copied from its rendering (made on first use).
fn write_success(out: &mut Vec<u8>, evaluation: &Evaluation) {
    let rendered = evaluation.rendered(|| {
        let mut rendering = Vec::with_capacity(ENTRY_BYTES);
        write_json(&mut rendering, &Success::of(evaluation));
        rendering
    });
    match rendered {
        Some(bytes) => out.extend_from_slice(bytes),
        None => write_json(out, &Success::of(evaluation)),
    }
}

/// Appends `value` as JSON. Nothing written here can fail to serialize (string keys, JSON
/// values), and writing into a `Vec` cannot fail either.
fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    let _ = serde_json::to_writer(out, value);
}

/// A `200` answer with the JSON `body`.
fn json_answer(body: Vec<u8>) -> Response {
    let mut answer = Response::new(axum::body::Body::from(body));
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    answer
}

/// The request's `If-None-Match`, if any: the one header the bulk handler reads (taking the
/// whole `HeaderMap` would copy every header of every request).
struct IfNoneMatch(Option<HeaderValue>);

impl<S: Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}

/// `"<revision>-<64-bit hash of env and the body as sent>"`.
///
/// The body as sent rather than the parsed context: a `304` then needs no parsing at all. A tag
/// can only match bytes that were answered `200` before (validity depends on the bytes alone, not
/// on the revision), and a context sent with its keys in another order or other spacing gets a
/// `200` instead of a `304`, never someone else's answer.
fn etag(env: &Environment, revision: u64, body: &[u8]) -> String {
    use std::fmt::Write as _;
    // The environment's hash seeds the body's: no buffer to join them in, on a path every bulk
    // request takes, `304`s included.
    let low = murmur3_x86_32(body, murmur3_x86_32(env.as_str().as_bytes(), 0));
    let high = murmur3_x86_32(body, murmur3_x86_32(env.as_str().as_bytes(), 0x9747_b28c));
    let mut tag = String::with_capacity(40);
    // Writing into a String cannot fail.
    let _ = write!(
        tag,
        "\"{revision}-{:016x}\"",
        (u64::from(high) << 32) | u64::from(low)
    );
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_straight_into_the_context_agrees_with_telling_errors() {
        let bodies: &[&str] = &[
            r#"{"context":{"targetingKey":"alice","plan":"pro","n":1.5,"tags":["a"]}}"#,
            r#"{"other":[1,{"context":2}],"context":{"targetingKey":"bob"},"more":null}"#,
            r#"{"context":{"a":1},"context":{"b":2}}"#,
            r#"{"context":{"a":1},"context":3}"#,
            r#"{"context":3,"context":{"b":2}}"#,
            r#"{"cont\u0065xt":{"escaped":"name"}}"#,
            r#"{"context":{"targetingKey":7}}"#,
            r#"{"context":{}}"#,
            r#"{"context":null}"#,
            r#"{"context":[]}"#,
            r#"{}"#,
            r#"[]"#,
            r#""context""#,
            r#"{"context":{"a":1}} trailing"#,
            r#"{"context":{"a":1}"#,
            "",
        ];
        for body in bodies {
            let read = format!("{:?}", parse_context(body.as_bytes()));
            let told = format!("{:?}", tell_context_error(body.as_bytes()));
            assert_eq!(read, told, "{body}");
        }
        let context = parse_context(bodies[2].as_bytes()).unwrap();
        assert!(
            context.attribute("a").is_none(),
            "the last `context` counts"
        );
        assert_eq!(context.attribute("b"), Some(&Value::from(2)));
        let escaped = parse_context(bodies[5].as_bytes()).unwrap();
        assert_eq!(escaped.attribute("escaped"), Some(&Value::from("name")));
    }

    #[test]
    fn etags_differ_by_user_revision_and_environment() {
        let env = Environment::parse("production").unwrap();
        let other = Environment::parse("staging").unwrap();
        let alice: &[u8] = br#"{"context":{"targetingKey":"alice"}}"#;
        let bob: &[u8] = br#"{"context":{"targetingKey":"bob"}}"#;
        assert_eq!(etag(&env, 1, alice), etag(&env, 1, alice));
        assert_ne!(etag(&env, 1, alice), etag(&env, 1, bob));
        assert_ne!(etag(&env, 1, alice), etag(&env, 2, alice));
        assert_ne!(etag(&env, 1, alice), etag(&other, 1, alice));
    }
}
