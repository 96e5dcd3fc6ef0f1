//! The management API over a real socket: auth, shapes, optimistic concurrency, validation,
//! limits, and a write being visible to the very next evaluation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::sync::Arc;

use flag_core::{Environment, FeatureFlagService, InMemoryRepository};
use flag_memory::MemoryCache;
use flag_server::app::{AppState, router};
use serde_json::json;
use support::{Reply, request};

const TOKEN: &str = "admin-secret";

async fn start() -> std::net::SocketAddr {
    let service = FeatureFlagService::new(
        Arc::new(InMemoryRepository::new()),
        Arc::new(MemoryCache::new()),
    );
    let state = AppState {
        service,
        default_environment: Environment::parse("production").unwrap(),
        client_tokens: None,
        redis: None,
        admin_token: TOKEN.into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    address
}

async fn admin(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Reply {
    let bearer = format!("Bearer {TOKEN}");
    let mut headers = vec![
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request(address, method, path, &headers, body).await
}

#[tokio::test]
async fn every_route_needs_the_admin_token() {
    let address = start().await;
    for (method, path) in [
        ("GET", "/v1/environments"),
        ("GET", "/v1/environments/production/flags"),
        ("GET", "/v1/environments/production/flags/f"),
        ("PUT", "/v1/environments/production/flags/f"),
        ("DELETE", "/v1/environments/production/flags/f"),
        ("POST", "/v1/environments/production/cache/invalidate"),
    ] {
        let none = request(address, method, path, &[], "{}").await;
        assert_eq!(
            (none.status, none.code()),
            (401, json!("unauthorized")),
            "{method} {path}"
        );
        let wrong = request(
            address,
            method,
            path,
            &[("Authorization", "Bearer nope")],
            "{}",
        )
        .await;
        assert_eq!(wrong.status, 401, "{method} {path}");
    }
}

#[tokio::test]
async fn create_read_replace_delete_with_versions_and_etags() {
    let address = start().await;
    let path = "/v1/environments/production/flags/new-checkout";
    let created = admin(
        address,
        "PUT",
        path,
        &[("If-None-Match", "*")],
        r#"{"enabled": true, "description": "v1"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.json()["version"], json!(1));
    assert_eq!(created.json()["key"], json!("new-checkout"));

    let again = admin(address, "PUT", path, &[("If-None-Match", "*")], "{}").await;
    assert_eq!(
        (again.status, again.code()),
        (412, json!("version_conflict"))
    );

    // GET-edit-PUT round trip: server-set fields are accepted and ignored.
    let fetched = admin(address, "GET", path, &[], "").await;
    assert_eq!(fetched.header("etag"), Some("\"1\""));
    let mut edited = fetched.json();
    edited["enabled"] = json!(false);
    let replaced = admin(
        address,
        "PUT",
        path,
        &[("If-Match", "\"1\"")],
        &edited.to_string(),
    )
    .await;
    assert_eq!(
        (replaced.status, replaced.header("etag")),
        (200, Some("\"2\"")),
        "{}",
        replaced.body
    );
    let stale = admin(address, "PUT", path, &[("If-Match", "\"1\"")], "{}").await;
    assert_eq!(
        (stale.status, stale.code()),
        (412, json!("version_conflict"))
    );

    // The very next evaluation sees the write.
    let evaluation = request(
        address,
        "POST",
        "/ofrep/v1/evaluate/flags/new-checkout",
        &[],
        r#"{"context":{}}"#,
    )
    .await;
    assert_eq!(evaluation.json()["reason"], json!("DISABLED"));

    let listed = admin(address, "GET", "/v1/environments/production/flags", &[], "")
        .await
        .json();
    assert_eq!(
        (listed["environment"].clone(), listed["revision"].clone()),
        (json!("production"), json!(2))
    );
    assert_eq!(listed["flags"].as_array().unwrap().len(), 1);
    let environments = admin(address, "GET", "/v1/environments", &[], "")
        .await
        .json();
    assert_eq!(
        environments,
        json!({"environments": [{"name": "production", "revision": 2, "flagCount": 1}]})
    );

    assert_eq!(
        admin(address, "DELETE", path, &[("If-Match", "\"1\"")], "")
            .await
            .status,
        412
    );
    assert_eq!(
        admin(address, "DELETE", path, &[("If-Match", "\"2\"")], "")
            .await
            .status,
        204
    );
    let gone = admin(address, "DELETE", path, &[], "").await;
    assert_eq!((gone.status, gone.code()), (404, json!("not_found")));
    assert_eq!(admin(address, "GET", path, &[], "").await.status, 404);
    let empty = admin(address, "GET", "/v1/environments/staging/flags", &[], "")
        .await
        .json();
    assert_eq!(
        empty,
        json!({"environment": "staging", "revision": 0, "flags": []})
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx() {
    let address = start().await;
    let put = |path: &'static str, body: String| async move {
        admin(address, "PUT", path, &[], &body).await
    };
    let cases = [
        (
            put("/v1/environments/production/flags/f", "{not json".into()).await,
            "invalid_request",
        ),
        (
            put(
                "/v1/environments/production/flags/f",
                r#"{"enabeld": true}"#.into(),
            )
            .await,
            "validation_failed",
        ),
        (
            put(
                "/v1/environments/production/flags/f",
                r#"{"enabled": "yes"}"#.into(),
            )
            .await,
            "validation_failed",
        ),
        (
            put(
                "/v1/environments/production/flags/f",
                r#"{"key": "other"}"#.into(),
            )
            .await,
            "validation_failed",
        ),
        (
            put(
                "/v1/environments/production/flags/f",
                r#"{"defaultVariant": "blue"}"#.into(),
            )
            .await,
            "validation_failed",
        ),
        (
            put(
                "/v1/environments/production/flags/f",
                r#"{"rollout": [{"variant": "on", "weight": -1}]}"#.into(),
            )
            .await,
            "validation_failed",
        ),
        (
            put("/v1/environments/Prod*/flags/f", "{}".into()).await,
            "invalid_request",
        ),
        (
            put("/v1/environments/production/flags/__meta", "{}".into()).await,
            "invalid_request",
        ),
        (
            put(
                "/v1/environments/production/flags/f",
                format!("{{\"description\": \"{}\"}}", "x".repeat(1 << 20)),
            )
            .await,
            "payload_too_large",
        ),
    ];
    for (reply, code) in cases {
        assert!(
            (400..500).contains(&reply.status),
            "{} {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.code(), json!(code), "{}", reply.body);
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty())
        );
    }
    let too_large = put(
        "/v1/environments/production/flags/f",
        "x".repeat((1 << 20) + 1),
    )
    .await;
    assert_eq!(too_large.status, 413);
}

#[tokio::test]
async fn explicit_cache_invalidation_answers_the_revision() {
    let address = start().await;
    admin(
        address,
        "PUT",
        "/v1/environments/production/flags/f",
        &[],
        "{}",
    )
    .await;
    let reply = admin(
        address,
        "POST",
        "/v1/environments/production/cache/invalidate",
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"environment": "production", "revision": 1})
    );
}
