//! The explainer as an API: `POST /v1/environments/{env}/flags/{key}/explain` with an OFREP
//! request body answers what OFREP would answer for that context, plus `explanation`: the
//! prerequisites with their answers, each rule with each condition's outcome, and the bucket a
//! rollout placed the context in (see `flag_core::explain`, which runs the evaluation engine
//! itself, so the explanation cannot disagree with the answer).
//!
//! Decisions: it is a management route (admin token), because an explanation shows the flag's
//! rules, which OFREP never does. An evaluation that fails (no targeting key for a rollout, an
//! unreadable flag) is still a `200`: the explanation of why it failed is the point, and the
//! answer carries OFREP's `errorCode` and `errorDetails` where a success carries `value`. A
//! missing flag is `404 not_found`; a body that is not an OFREP request is `400
//! invalid_request`. The environment's snapshot is read as evaluations read it (through the
//! cache), so the explanation is of what clients are served now.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use flag_core::{EvaluationError, Explanation, FlagKey, ServiceError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{PathParams, environment};
use crate::auth::Admin;
use crate::errors::{ApiError, ApiErrorBody, OfrepError};
use crate::ofrep::{Success, parse_context};
use crate::openapi::MANAGEMENT;
use crate::state::AppState;

/// `/v1/environments/{env}/flags/{key}/explain`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(explain))
}

/// The path of the explainer, as sent.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ExplainPath {
    /// The environment.
    #[param(value_type = flag_core::Environment, inline)]
    env: String,
    /// The flag's key.
    #[param(value_type = FlagKey, inline)]
    key: String,
}

/// An explainer request: the OFREP evaluation request.
#[derive(Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "only its schema is used: the body is read by `parse_context`"
)]
struct ExplainRequest {
    /// The user's attributes.
    context: Map<String, Value>,
}

/// The OFREP answer with its explanation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
// Only its schema is used: the answer is built as JSON from the evaluation.
struct ExplainAnswer {
    /// The flag evaluated.
    key: FlagKey,
    /// The variant's value (absent when the evaluation failed).
    #[schema(value_type = Option<Value>)]
    value: Option<Value>,
    /// The variant served (absent when the evaluation failed).
    variant: Option<String>,
    /// Why it was served (absent when the evaluation failed).
    reason: Option<flag_core::Reason>,
    /// The flag's metadata plus `flagVersion` (absent when the evaluation failed).
    metadata: Option<Map<String, Value>>,
    /// Why the evaluation failed, as OFREP says it.
    error_code: Option<flag_core::ErrorCode>,
    /// For people.
    error_details: Option<String>,
    /// Why: the steps of the evaluation.
    explanation: Explanation,
}

#[utoipa::path(
    post,
    path = "/v1/environments/{env}/flags/{key}/explain",
    tag = MANAGEMENT,
    operation_id = "explainFlag",
    summary = "Evaluate a flag for a context as OFREP would, and say why.",
    params(ExplainPath),
    request_body = ExplainRequest,
    responses(
        (status = 200, description = "The answer (or the evaluation's error) with its explanation.", body = ExplainAnswer),
        (status = 400, description = "An invalid environment or key, or a body that is not an OFREP request (`invalid_request`).", body = ApiErrorBody),
        (status = 404, description = "No such flag (`not_found`).", body = ApiErrorBody),
    )
)]
async fn explain(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<ExplainPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| ApiError::unreadable_body(&rejection))?;
    let env = environment(&path.env)?;
    let key =
        FlagKey::parse(&path.key).map_err(|error| ApiError::invalid_request(error.to_string()))?;
    let context = parse_context(&body)
        .map_err(|error| ApiError::invalid_request(error.details().to_owned()))?;
    let (answer, explanation) = match state.service.explain(&env, &key, &context).await {
        Ok(explained) => explained,
        Err(ServiceError::Evaluation(EvaluationError::FlagNotFound { .. })) => {
            return Err(ApiError::not_found(format!(
                "flag {key} not found in environment {env}"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    // Serializing these cannot fail (string keys, JSON values); a failure would show as null.
    let mut shown = match &answer {
        Ok(evaluation) => serde_json::to_value(Success::of(evaluation)).unwrap_or_default(),
        Err(error) => serde_json::json!({
            "key": key.as_str(),
            "errorCode": error.code(),
            "errorDetails": OfrepError::evaluation(error).details(),
        }),
    };
    if let Value::Object(members) = &mut shown {
        members.insert(
            "explanation".to_owned(),
            serde_json::to_value(&explanation).unwrap_or_default(),
        );
    }
    Ok(axum::Json(shown).into_response())
}
