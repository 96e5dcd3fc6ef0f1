//! The OpenFeature Remote Evaluation Protocol: single and bulk evaluation.
//!
//! Every handler takes [`Client`], so OFREP needs a client token when `FLAG_CLIENT_TOKENS` is set.
//! Decisions where the protocol leaves room: a flag key outside the key grammar (or not UTF-8) is
//! `404 FLAG_NOT_FOUND` (no such flag can exist); an invalid `X-Environment` is `400 GENERAL`;
//! a body over `FLAG_MAX_CONTEXT_BYTES` is `413 GENERAL`; a store outage is `503 GENERAL`; every
//! single-flag error body carries `key`, whatever the error (the OFREP schema requires it). The bulk `ETag` is derived from the environment, its revision
//! and the request's context (JSON objects are key-sorted, so equal contexts hash equally): two
//! users never share a `304`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use flag_core::{Environment, ErrorCode, Evaluation, EvaluationContext, FlagKey, murmur3_x86_32};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::Client;
use crate::errors::OfrepError;
use crate::state::AppState;

/// `POST /ofrep/v1/evaluate/flags/{key}` and `POST /ofrep/v1/evaluate/flags`, reading bodies
/// of at most `max_context_bytes`.
pub(crate) fn router(max_context_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        .layer(DefaultBodyLimit::max(max_context_bytes))
}

/// The request's `context`, from a body that could be read.
fn context(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<EvaluationContext, OfrepError> {
    let body = body.map_err(|rejection| OfrepError::unreadable_body(&rejection, limit))?;
    let request: Value = serde_json::from_slice(&body).map_err(|error| {
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
#[derive(Serialize)]
struct Success<'a> {
    key: &'a FlagKey,
    value: &'a Value,
    reason: &'static str,
    variant: &'a str,
    metadata: Metadata<'a>,
}

impl<'a> Success<'a> {
    fn of(evaluation: &'a Evaluation) -> Self {
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

/// A bulk answer: `{"flags": [...]}`.
#[derive(Serialize)]
struct Bulk<'a> {
    flags: Vec<BulkEntry<'a>>,
}

/// One entry of a bulk answer: an evaluation, or that flag's error.
#[derive(Serialize)]
#[serde(untagged)]
enum BulkEntry<'a> {
    Evaluated(Success<'a>),
    Failed {
        key: &'a FlagKey,
        #[serde(rename = "errorCode")]
        error_code: &'static str,
        #[serde(rename = "errorDetails")]
        error_details: String,
    },
}

async fn evaluate_one(
    client: Client,
    State(state): State<AppState>,
    uri: Uri,
    key: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    let env = client.environment;
    let Ok(Path(key)) = key else {
        // Only a path that is not UTF-8 gets here: no flag can have its key.
        return Err(OfrepError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::FlagNotFound,
            "the flag key in the path is not UTF-8; no flag can have it",
        )
        .about(&uri));
    };
    let context = context(body, state.max_context_bytes).map_err(|error| error.for_key(&key))?;
    let Ok(flag_key) = FlagKey::parse(&key) else {
        return Err(OfrepError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::FlagNotFound,
            "no flag can have this key",
        )
        .for_key(&key));
    };
    let evaluation = state
        .service
        .evaluate(&env, &flag_key, &context)
        .await
        .map_err(|error| OfrepError::from(error).for_key(&key))?;
    Ok(axum::Json(Success::of(&evaluation)).into_response())
}

async fn evaluate_all(
    client: Client,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OfrepError> {
    let env = client.environment;
    let context = context(body, state.max_context_bytes)?;
    let bulk = state.service.evaluate_all(&env, &context).await?;
    let etag = etag(&env, bulk.revision.get(), context.attributes());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|presented| presented.split(',').any(|tag| tag.trim() == etag));
    let etag_header =
        HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    let flags: Vec<BulkEntry<'_>> = bulk
        .results
        .iter()
        .map(|result| match result {
            Ok(evaluation) => BulkEntry::Evaluated(Success::of(evaluation)),
            Err(error) => BulkEntry::Failed {
                key: error.key(),
                error_code: error.code().as_str(),
                error_details: error.to_string(),
            },
        })
        .collect();
    Ok(([(header::ETAG, etag_header)], axum::Json(Bulk { flags })).into_response())
}

/// `"<revision>-<64-bit hash of env and context>"`.
fn etag(env: &Environment, revision: u64, context: &Map<String, Value>) -> String {
    // serde_json maps are key-sorted, so equal contexts serialize to equal text.
    let context = serde_json::to_string(context).unwrap_or_default();
    let canonical = format!("{env}\u{0}{context}");
    let low = murmur3_x86_32(canonical.as_bytes(), 0);
    let high = murmur3_x86_32(canonical.as_bytes(), 0x9747_b28c);
    format!("\"{revision}-{high:08x}{low:08x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_by_user_revision_and_environment() {
        let env = Environment::parse("production").unwrap();
        let other = Environment::parse("staging").unwrap();
        let alice: Map<String, Value> =
            serde_json::from_str(r#"{"targetingKey":"alice"}"#).unwrap();
        let bob: Map<String, Value> = serde_json::from_str(r#"{"targetingKey":"bob"}"#).unwrap();
        assert_eq!(etag(&env, 1, &alice), etag(&env, 1, &alice));
        assert_ne!(etag(&env, 1, &alice), etag(&env, 1, &bob));
        assert_ne!(etag(&env, 1, &alice), etag(&env, 2, &alice));
        assert_ne!(etag(&env, 1, &alice), etag(&other, 1, &alice));
    }
}
