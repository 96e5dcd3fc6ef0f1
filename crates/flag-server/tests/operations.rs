//! `/metrics` and `/openapi.json` over a real socket: the counters follow the traffic, and the
//! OpenAPI document describes exactly the routes the router serves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::collections::BTreeSet;

use flag_server::routes::ROUTES;
use rstest::rstest;
use serde_json::{Value, json};
use support::{Backend, TestServer};

const EVALUATE: &str = "/ofrep/v1/evaluate/flags/{key}";

#[rstest]
#[tokio::test]
async fn metrics_count_requests_by_route_and_cache_results_by_backend(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let cache = match backend {
        Backend::Embedded => "memory",
        Backend::RedisPostgres => "redis",
    };
    server
        .put("production", "f", json!({"enabled": true}))
        .await;
    let body = r#"{"context":{}}"#;
    for _ in 0..3 {
        let reply = server
            .request("POST", "/ofrep/v1/evaluate/flags/f", &[], body)
            .await;
        assert_eq!(reply.status, 200);
    }
    let missing = server
        .request("POST", "/ofrep/v1/evaluate/flags/nope", &[], body)
        .await;
    assert_eq!(missing.status, 404);
    server.request("GET", "/no/such/route", &[], "").await;

    let reply = server.request("GET", "/metrics", &[], "").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    let ok = format!("{{route=\"{EVALUATE}\",method=\"POST\",status=\"200\"}}");
    let not_found = format!("{{route=\"{EVALUATE}\",method=\"POST\",status=\"404\"}}");
    assert_eq!(
        server
            .metric(&format!("flag_http_requests_total{ok}"))
            .await,
        3.0
    );
    assert_eq!(
        server
            .metric(&format!("flag_http_requests_total{not_found}"))
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("flag_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric(&format!(
                "flag_http_request_duration_seconds_count{{route=\"{EVALUATE}\",method=\"POST\",status=\"200\"}}"
            ))
            .await,
        3.0
    );
    // The first evaluation missed and filled; the other three reads (two of `f`, one of `nope`,
    // which finds the environment without the flag) hit the cache.
    let result =
        |name: &str| format!("flag_cache_requests_total{{backend=\"{cache}\",result=\"{name}\"}}");
    assert_eq!(server.metric(&result("miss")).await, 1.0);
    assert_eq!(server.metric(&result("hit")).await, 2.0);
    assert_eq!(server.metric(&result("absent")).await, 1.0);
    assert_eq!(server.metric(&result("error")).await, 0.0);
    assert_eq!(
        server
            .metric(&format!(
                "flag_cache_fallbacks_total{{backend=\"{cache}\"}}"
            ))
            .await,
        0.0
    );
    assert_eq!(
        server
            .metric("flag_cache_fills_total{outcome=\"stored\"}")
            .await,
        1.0
    );
    assert!(server.metric("flag_repository_reads_total").await >= 1.0);
    assert_eq!(server.metric("flag_invalidation_retries_total").await, 0.0);

    // No label ever carries a user's flag key or environment.
    let text = server.request("GET", "/metrics", &[], "").await.body;
    for line in text.lines().filter(|line| line.contains("route=\"")) {
        let route = line
            .split("route=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(
            route == "unmatched" || ROUTES.iter().any(|(_, template)| *template == route),
            "{line}"
        );
    }
}

/// `{param}` segments filled with values every route accepts.
fn concrete(template: &str) -> String {
    template
        .replace("{env}", "production")
        .replace("{key}", "some-flag")
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_served_routes() {
    let server = TestServer::start(Backend::Embedded).await;
    let reply = server.request("GET", "/openapi.json", &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let document = reply.json();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.")),
        "{}",
        document["openapi"]
    );

    let methods = ["get", "put", "post", "delete", "patch"];
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(methods.contains(&method.as_str()), "{method} {path}");
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, table, "the document and the route table differ");

    // Every documented operation is served (a token-less request is still routed: it answers
    // anything but the router's 404 or 405), and every other method on its path is a JSON 405.
    for (method, template) in ROUTES {
        let path = concrete(template);
        let reply = server
            .request(method, &path, &[], r#"{"context":{}}"#)
            .await;
        let unrouted =
            reply.status == 405 || (reply.status == 404 && reply.body.contains("no route for"));
        assert!(
            !unrouted,
            "{method} {path}: {} {}",
            reply.status, reply.body
        );
        for other in methods.iter().map(|m| m.to_uppercase()) {
            if table.contains(&(other.clone(), (*template).to_owned())) {
                continue;
            }
            let reply = server.request(&other, &path, &[], "").await;
            assert_eq!(reply.status, 405, "{other} {path}: {}", reply.body);
            // In the shape of the path's API.
            if path.starts_with("/ofrep/") {
                assert_eq!(reply.json()["errorCode"], json!("GENERAL"));
            } else {
                assert_eq!(reply.code(), json!("invalid_request"));
            }
        }
    }

    // Every `$ref` resolves inside the document.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (name, inner) in map {
                    match (name.as_str(), inner) {
                        ("$ref", Value::String(target)) => found.push(target),
                        _ => refs(inner, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').unwrap();
        assert!(
            document.pointer(pointer).is_some(),
            "dangling $ref {target}"
        );
    }

    // The documented error codes are the contract's.
    let detail = &document["components"]["schemas"]["ApiError"]["properties"]["error"]["$ref"];
    assert_eq!(detail, "#/components/schemas/ApiErrorDetail");
    let code = &document["components"]["schemas"]["ApiErrorDetail"]["properties"]["code"]["$ref"];
    assert_eq!(code, "#/components/schemas/ApiErrorCode");
    let codes = &document["components"]["schemas"]["ApiErrorCode"]["enum"];
    assert_eq!(
        codes,
        &json!([
            "invalid_request",
            "validation_failed",
            "unauthorized",
            "forbidden",
            "not_found",
            "version_conflict",
            "in_use",
            "limit_exceeded",
            "read_only",
            "payload_too_large",
            "request_timeout",
            "unavailable",
            "internal"
        ])
    );
}
