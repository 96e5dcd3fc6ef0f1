//! The audit log as an API: `GET /v1/environments/{env}/audit`, an environment's writes newest
//! first, a page at a time.
//!
//! Decisions: `limit` is 1 to 500 (default 50) and `before` is the `next` of the previous page,
//! an opaque string of digits; a value outside either, or a `key` outside the key grammar, is
//! `400 invalid_request`. `key` selects the writes of the flag and of the segment of that name
//! (each entry says its `kind`). An environment never written has an empty log, as it has an
//! empty flag list. Unknown query parameters are ignored, as in every other route.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use flag_core::{AuditCursor, AuditEntry, AuditQuery, DEFAULT_AUDIT_PAGE, FlagKey, MAX_AUDIT_PAGE};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{EnvironmentPath, PathParams, environment, query_pairs};
use crate::auth::Admin;
use crate::errors::{ApiError, ApiErrorBody};
use crate::openapi::MANAGEMENT;
use crate::state::AppState;

/// `/v1/environments/{env}/audit`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit))
}

/// The query of an audit page, as documented (read by [`query`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "only its document is used: `query` reads the query string"
)]
struct AuditParams {
    /// Only writes of the flag or segment of this key.
    #[param(value_type = Option<FlagKey>, inline)]
    key: Option<String>,
    /// At most this many entries (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u16>,
    /// Only writes older than this position: the `next` of the previous page.
    #[param(pattern = r"^[0-9]{1,19}$")]
    before: Option<String>,
}

/// One page of the audit log.
#[derive(Serialize, ToSchema)]
struct AuditList {
    /// The writes, newest first.
    entries: Vec<AuditEntry>,
    /// The `before` of the next page; `null` on the last page.
    #[schema(pattern = r"^[0-9]{1,19}$")]
    next: Option<String>,
}

/// The page `raw` (a query string) asks for.
fn query(raw: Option<&str>) -> Result<AuditQuery, ApiError> {
    let mut query = AuditQuery::default();
    for (name, value) in query_pairs(raw) {
        match name {
            "key" => {
                let key = FlagKey::parse(&value)
                    .map_err(|error| ApiError::invalid_request(error.to_string()))?;
                query.key = Some(key.as_str().to_owned());
            }
            "limit" => {
                query.limit = value
                    .parse::<u16>()
                    .ok()
                    .filter(|limit| (1..=MAX_AUDIT_PAGE).contains(limit))
                    .ok_or_else(|| {
                        ApiError::invalid_request(format!(
                            "limit must be a whole number from 1 to {MAX_AUDIT_PAGE} \
                             (default {DEFAULT_AUDIT_PAGE})"
                        ))
                    })?;
            }
            "before" => {
                let cursor: AuditCursor =
                    value
                        .parse()
                        .map_err(|error: flag_core::AuditCursorError| {
                            ApiError::invalid_request(error.to_string())
                        })?;
                query.before = Some(cursor);
            }
            _ => {}
        }
    }
    Ok(query)
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/audit",
    tag = MANAGEMENT,
    operation_id = "listAudit",
    summary = "The environment's writes, newest first, with who made them and the definitions before and after.",
    params(EnvironmentPath, AuditParams),
    responses(
        (status = 200, description = "A page of writes (none for an environment never written).", body = AuditList),
        (status = 400, description = "An invalid environment, key, `limit` or `before` (`invalid_request`).", body = ApiErrorBody),
    )
)]
async fn audit(
    _: Admin,
    State(state): State<AppState>,
    PathParams(path): PathParams<EnvironmentPath>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let env = environment(&path.env)?;
    let query = query(raw.as_deref())?;
    let page = state.service.audit(&env, &query).await?;
    Ok(axum::Json(AuditList {
        entries: page.entries,
        next: page.next.map(|cursor| cursor.to_string()),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_read_with_its_defaults() {
        let read = query(None).unwrap();
        assert_eq!(read, AuditQuery::default());
        let read = query(Some("key=new%2Dcheckout&limit=2&before=17&other=x")).unwrap();
        assert_eq!(read.key.as_deref(), Some("new-checkout"));
        assert_eq!(read.limit, 2);
        assert_eq!(read.before, Some(AuditCursor(17)));
    }

    #[test]
    fn a_query_out_of_bounds_is_refused() {
        for bad in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=ten",
            "limit=",
            "before=-3",
            "before=abc",
            "before=",
            "key=__meta",
            "key=",
        ] {
            assert!(query(Some(bad)).is_err(), "{bad} accepted");
        }
    }
}
