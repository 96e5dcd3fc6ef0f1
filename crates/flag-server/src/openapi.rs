//! The OpenAPI document, made from the code: each handler's `#[utoipa::path]` is registered with
//! its route by `utoipa-axum` (a route cannot be served without being described, nor described
//! at another path), the bodies' schemas are derived from the very types the handlers serialize
//! and parse (`flag-core`'s flag and definition types among them), and [`complete`] adds what the
//! layers and extractors add to every operation of an area, so no handler repeats it:
//!
//! | area | security | answers added |
//! |---|---|---|
//! | OFREP (`/ofrep/...`, handlers take `Client`) | none, or a client token | `401` with `WWW-Authenticate`, `403`, `405`, `503` with `Retry-After` |
//! | management (`/v1/...`, handlers take `Admin`) | the admin token | `401` with `WWW-Authenticate`, `503` with `Retry-After`, `404` for a path that is not UTF-8 (where it has parameters) |
//! | either, with a request body | | `408` (body too slow), `413` (body too large) |
//!
//! Each added answer uses the error schema its area's errors are built with
//! ([`crate::errors::error_schema`]).

use axum::body::Bytes;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Components, Content, HeaderBuilder, Ref, Response, ResponseBuilder};

use crate::errors::{error_schema, is_ofrep};

/// The tag of evaluation operations.
pub(crate) const OFREP: &str = "OFREP";
/// The tag of management operations.
pub(crate) const MANAGEMENT: &str = "Management";
/// The tag of health, readiness, metrics and the document.
pub(crate) const OPERATIONS: &str = "Operations";

const ADMIN_TOKEN: &str = "adminToken";
const CLIENT_BEARER: &str = "clientBearer";
const CLIENT_API_KEY: &str = "clientApiKey";

/// What the document says of itself; title and version come from the crate.
#[derive(OpenApi)]
#[openapi(
    info(
        description = "Feature flags stored in SQL, served through a pluggable cache. Evaluation \
                       is the OpenFeature Remote Evaluation Protocol (OFREP); management is a \
                       small JSON API under `/v1` that needs the admin token."
    ),
    tags(
        (name = OFREP, description = "Evaluation for applications (OpenFeature Remote Evaluation Protocol)."),
        (name = MANAGEMENT, description = "Flags and environments; every route needs `Authorization: Bearer <admin token>`."),
        (name = OPERATIONS, description = "Health, readiness, metrics and this document."),
    )
)]
pub(crate) struct ApiDoc;

/// The document as served: its JSON, made once per process (it depends on the code only).
pub(crate) struct Document(Bytes);

/// The served document, made on first use.
static SERVED: std::sync::OnceLock<Document> = std::sync::OnceLock::new();

impl Document {
    /// The document of [`crate::app::openapi`], as served.
    pub(crate) fn served() -> &'static Self {
        SERVED.get_or_init(|| Self::new(&crate::app::openapi()))
    }

    /// The JSON of `document`.
    pub(crate) fn new(document: &utoipa::openapi::OpenApi) -> Self {
        let json = serde_json::to_vec(document).unwrap_or_else(|error| {
            // Unreachable with string-keyed maps; an empty document beats a failed start.
            tracing::error!(%error, "the OpenAPI document could not be serialized");
            b"{}".to_vec()
        });
        Self(Bytes::from(json))
    }

    /// The JSON, shared.
    pub(crate) fn json(&self) -> Bytes {
        self.0.clone()
    }
}

/// The router's document with the security schemes and, on every operation, the security and
/// answers its area's layers and extractors add.
pub(crate) fn complete(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let components = document.components.get_or_insert_with(Components::new);
    components.add_security_scheme(ADMIN_TOKEN, bearer("`FLAG_ADMIN_TOKEN`."));
    components.add_security_scheme(
        CLIENT_BEARER,
        bearer("One of `FLAG_CLIENT_TOKENS` (only when set)."),
    );
    components.add_security_scheme(
        CLIENT_API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "One of `FLAG_CLIENT_TOKENS` (only when set).",
        ))),
    );
    for (path, item) in &mut document.paths.paths {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            describe_layers(path, operation);
        }
    }
    document
}

fn bearer(description: &str) -> SecurityScheme {
    SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(description))
            .build(),
    )
}

/// Adds the security and the answers the layers of `path`'s area give to `operation` (an answer
/// the handler describes itself is kept).
fn describe_layers(path: &str, operation: &mut Operation) {
    let ofrep = is_ofrep(path);
    if ofrep {
        operation.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new(CLIENT_BEARER, Vec::<String>::new()),
            SecurityRequirement::new(CLIENT_API_KEY, Vec::<String>::new()),
        ]);
    } else if path.starts_with("/v1/") {
        operation.security = Some(vec![SecurityRequirement::new(
            ADMIN_TOKEN,
            Vec::<String>::new(),
        )]);
    } else {
        return;
    }
    let mut added = vec![
        (
            "401",
            with_header(
                error(
                    path,
                    if ofrep {
                        "`FLAG_CLIENT_TOKENS` is set and the request carries none of them \
                         (`GENERAL`)."
                    } else {
                        "Missing or wrong admin token (`unauthorized`)."
                    },
                ),
                "WWW-Authenticate",
                "Always `Bearer`.",
                Some("Bearer"),
            ),
        ),
        (
            "503",
            with_header(
                error(
                    path,
                    "A store is unavailable, the request ran past `FLAG_REQUEST_TIMEOUT_MS`, or \
                     more than `FLAG_MAX_IN_FLIGHT` requests are in flight (`unavailable`, \
                     OFREP `GENERAL`).",
                ),
                "Retry-After",
                "Seconds to wait: `1`.",
                None,
            ),
        ),
    ];
    if ofrep {
        added.push((
            "403",
            error(
                path,
                "The client token is valid for other environments only (`GENERAL`).",
            )
            .build(),
        ));
        added.push((
            "405",
            error(path, "Only POST is answered (`GENERAL`).").build(),
        ));
    }
    if !ofrep && path.contains('{') {
        added.push((
            "404",
            error(path, "A path that is not UTF-8 (`not_found`).").build(),
        ));
    }
    if operation.request_body.is_some() {
        added.push((
            "408",
            error(
                path,
                "The body did not arrive within `FLAG_REQUEST_TIMEOUT_MS` (`request_timeout`, \
                 OFREP `GENERAL`).",
            )
            .build(),
        ));
        added.push((
            "413",
            error(
                path,
                if ofrep {
                    "The body is over `FLAG_MAX_CONTEXT_BYTES` (`GENERAL`)."
                } else {
                    "The body is over 1 MiB (`payload_too_large`)."
                },
            )
            .build(),
        ));
    }
    for (status, response) in added {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(response.into());
    }
}

/// A JSON answer in the error schema of `path`'s area.
fn error(path: &str, description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name(error_schema(path)))),
    )
}

/// `response` with the string header `name`, limited to `only` when given.
fn with_header(
    response: ResponseBuilder,
    name: &str,
    description: &str,
    only: Option<&str>,
) -> Response {
    let mut schema = ObjectBuilder::new().schema_type(Type::String);
    if let Some(value) = only {
        schema = schema.enum_values(Some([value]));
    }
    response
        .header(
            name,
            HeaderBuilder::new()
                .schema(Some(schema))
                .description(Some(description))
                .build(),
        )
        .build()
}
