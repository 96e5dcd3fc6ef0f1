//! The route table: every route the API serves, as the metrics label it and the OpenAPI
//! document describes it.

/// Every route the API serves, as `(method, path template)`: the metrics' route labels and the
/// OpenAPI document are both checked against this table.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/ofrep/v1/evaluate/flags/{key}"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("GET", "/ofrep/v1/events/{env}"),
    ("GET", "/v1/environments"),
    ("DELETE", "/v1/environments/{env}"),
    ("GET", "/v1/environments/{env}/flags"),
    ("GET", "/v1/environments/{env}/flags/{key}"),
    ("PUT", "/v1/environments/{env}/flags/{key}"),
    ("DELETE", "/v1/environments/{env}/flags/{key}"),
    ("GET", "/v1/environments/{env}/segments"),
    ("GET", "/v1/environments/{env}/segments/{key}"),
    ("PUT", "/v1/environments/{env}/segments/{key}"),
    ("DELETE", "/v1/environments/{env}/segments/{key}"),
    ("POST", "/v1/environments/{env}/cache/invalidate"),
    ("GET", "/v1/environments/{env}/audit"),
    ("POST", "/v1/environments/{env}/flags/{key}/explain"),
    ("GET", "/v1/environments/{env}/export"),
    ("PUT", "/v1/environments/{env}/import"),
    ("POST", "/v1/environments/{env}/copy"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];
