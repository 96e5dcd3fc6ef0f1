//! OFREP evaluation and the operations endpoints, driven over a real socket; every test runs on
//! the embedded default (SQLite + memory) and on Redis + Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use rstest::rstest;
use serde_json::{Value, json};
use support::{Backend, Reply, TestServer, request};

async fn evaluate(server: &TestServer, key: &str, body: Value) -> Reply {
    server
        .request(
            "POST",
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            &[],
            &body.to_string(),
        )
        .await
}

#[rstest]
#[tokio::test]
async fn flags_of_every_type_evaluate_with_their_reason_and_metadata(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server
        .put(
            "production",
            "dark-mode",
            json!({"enabled": true, "metadata": {"owner": "web"}}),
        )
        .await;
    server.put("production", "theme", json!({"enabled": true, "variants": {"a": "blue", "b": "red"}, "defaultVariant": "b", "offVariant": "a"})).await;
    server.put("production", "limits", json!({"enabled": true, "variants": {"small": 10, "big": 2.5}, "defaultVariant": "small", "offVariant": "big"})).await;
    server.put("production", "config", json!({"enabled": true, "variants": {"x": {"depth": [1, {"k": true}]}, "off": false}, "defaultVariant": "x"})).await;
    server
        .put("production", "old", json!({"enabled": false}))
        .await;

    let reply = evaluate(
        &server,
        "dark-mode",
        json!({"context": {"targetingKey": "u1"}}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"key": "dark-mode", "value": true, "reason": "STATIC", "variant": "on", "metadata": {"owner": "web", "flagVersion": 1}})
    );
    assert_eq!(
        evaluate(&server, "theme", json!({"context": {}}))
            .await
            .json()["value"],
        json!("red")
    );
    let limits = evaluate(&server, "limits", json!({"context": {}})).await;
    assert!(
        limits.body.contains("\"value\":10"),
        "integers stay integers: {}",
        limits.body
    );
    assert_eq!(
        evaluate(&server, "config", json!({"context": {}}))
            .await
            .json()["value"],
        json!({"depth": [1, {"k": true}]})
    );
    let old = evaluate(&server, "old", json!({"context": {}}))
        .await
        .json();
    assert_eq!(
        (
            old["value"].clone(),
            old["reason"].clone(),
            old["variant"].clone()
        ),
        (json!(false), json!("DISABLED"), json!("off"))
    );
}

#[rstest]
#[tokio::test]
async fn rules_and_rollouts_follow_the_context(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server
        .put(
            "production",
            "beta",
            json!({"enabled": true, "defaultVariant": "off", "rules": [
                {"conditions": [{"attribute": "email", "operator": "ends_with", "value": "@example.com"}], "variant": "on"},
                {"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}],
                 "rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 0}]}
            ]}),
        )
        .await;
    let staff = evaluate(
        &server,
        "beta",
        json!({"context": {"targetingKey": "u", "email": "a@example.com"}}),
    )
    .await
    .json();
    assert_eq!(
        (staff["value"].clone(), staff["reason"].clone()),
        (json!(true), json!("TARGETING_MATCH"))
    );
    let pro = evaluate(
        &server,
        "beta",
        json!({"context": {"targetingKey": "u", "plan": "pro"}}),
    )
    .await
    .json();
    assert_eq!(
        (pro["value"].clone(), pro["reason"].clone()),
        (json!(true), json!("SPLIT"))
    );
    let other = evaluate(&server, "beta", json!({"context": {"targetingKey": "u"}}))
        .await
        .json();
    assert_eq!(
        (other["value"].clone(), other["reason"].clone()),
        (json!(false), json!("DEFAULT"))
    );
    let anonymous = evaluate(&server, "beta", json!({"context": {"plan": "pro"}})).await;
    assert_eq!(anonymous.status, 400);
    assert_eq!(
        anonymous.json()["errorCode"],
        json!("TARGETING_KEY_MISSING")
    );
}

#[rstest]
#[tokio::test]
async fn errors_carry_their_code_and_details(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server
        .put("production", "exists", json!({"enabled": true}))
        .await;
    let cases: Vec<(Reply, u16, &str)> = vec![
        (
            evaluate(&server, "missing", json!({"context": {}})).await,
            404,
            "FLAG_NOT_FOUND",
        ),
        (
            evaluate(&server, "__bad", json!({"context": {}})).await,
            404,
            "FLAG_NOT_FOUND",
        ),
        (
            server
                .request("POST", "/ofrep/v1/evaluate/flags/exists", &[], "{not json")
                .await,
            400,
            "PARSE_ERROR",
        ),
        (
            evaluate(&server, "exists", json!({})).await,
            400,
            "INVALID_CONTEXT",
        ),
        (
            evaluate(&server, "exists", json!({"context": "user"})).await,
            400,
            "INVALID_CONTEXT",
        ),
        (
            evaluate(&server, "exists", json!({"context": {"targetingKey": 5}})).await,
            400,
            "INVALID_CONTEXT",
        ),
        (
            server
                .request(
                    "POST",
                    "/ofrep/v1/evaluate/flags/exists",
                    &[("X-Environment", "Prod*")],
                    r#"{"context":{}}"#,
                )
                .await,
            400,
            "GENERAL",
        ),
    ];
    for (reply, status, code) in cases {
        assert_eq!(reply.status, status, "{}", reply.body);
        let body = reply.json();
        assert_eq!(body["errorCode"], json!(code), "{body}");
        assert!(
            body["errorDetails"]
                .as_str()
                .is_some_and(|details| !details.is_empty()),
            "{body}"
        );
    }
}

#[rstest]
#[tokio::test]
async fn the_environment_comes_from_the_header_or_the_default(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server
        .put("production", "f", json!({"enabled": true}))
        .await;
    server.put("staging", "f", json!({"enabled": false})).await;
    assert_eq!(
        evaluate(&server, "f", json!({"context": {}})).await.json()["value"],
        json!(true)
    );
    let staging = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags/f",
            &[("X-Environment", "staging")],
            r#"{"context":{}}"#,
        )
        .await;
    assert_eq!(staging.json()["value"], json!(false));
}

#[rstest]
#[tokio::test]
async fn bulk_evaluation_has_per_flag_errors_and_per_user_etags(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server
        .put("production", "a", json!({"enabled": true}))
        .await;
    server
        .put(
            "production",
            "b",
            json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}]}),
        )
        .await;
    let bulk = |context: Value, etag: Option<String>| {
        let address = server.address;
        async move {
            let headers: Vec<(&str, String)> = etag
                .into_iter()
                .map(|etag| ("If-None-Match", etag))
                .collect();
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            request(
                address,
                "POST",
                "/ofrep/v1/evaluate/flags",
                &headers,
                &json!({"context": context}).to_string(),
            )
            .await
        }
    };
    let anonymous = bulk(json!({}), None).await;
    assert_eq!(anonymous.status, 200);
    let flags = anonymous.json()["flags"].clone();
    assert_eq!(flags[0]["key"], json!("a"));
    assert_eq!(flags[0]["value"], json!(true));
    assert_eq!(
        flags[1],
        json!({"key": "b", "errorCode": "TARGETING_KEY_MISSING", "errorDetails": flags[1]["errorDetails"]})
    );

    let alice = bulk(json!({"targetingKey": "alice"}), None).await;
    let alice_etag = alice.header("etag").unwrap().to_owned();
    let bob_etag = bulk(json!({"targetingKey": "bob"}), None)
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    assert_ne!(alice_etag, bob_etag, "two users never share an ETag");
    let again = bulk(json!({"targetingKey": "alice"}), Some(alice_etag.clone())).await;
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    let bob_with_alices = bulk(json!({"targetingKey": "bob"}), Some(alice_etag.clone())).await;
    assert_eq!(bob_with_alices.status, 200);
    // The tag covers the body as sent: the same context spelled otherwise is answered in full,
    // and a malformed body presenting a valid tag is still refused.
    let with_tag = [("If-None-Match", alice_etag.as_str())];
    let path = "/ofrep/v1/evaluate/flags";
    let respaced = request(
        server.address,
        "POST",
        path,
        &with_tag,
        r#"{ "context": { "targetingKey": "alice" } }"#,
    )
    .await;
    assert_eq!(respaced.status, 200, "{}", respaced.body);
    assert_eq!(respaced.json()["flags"], alice.json()["flags"]);
    let malformed = request(server.address, "POST", path, &with_tag, "{\"context\":").await;
    assert_eq!(
        (malformed.status, malformed.json()["errorCode"].clone()),
        (400, json!("PARSE_ERROR"))
    );
    server
        .put("production", "a", json!({"enabled": false}))
        .await;
    let after_write = bulk(json!({"targetingKey": "alice"}), Some(alice_etag)).await;
    assert_eq!(after_write.status, 200, "a write changes the ETag");
}

#[rstest]
#[tokio::test]
async fn client_tokens_guard_ofrep_when_configured(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start_with(backend, |config| {
        config.client_tokens = Some(vec!["t1".to_owned(), "t2".to_owned()]);
    })
    .await;
    server
        .put("production", "f", json!({"enabled": true}))
        .await;
    let body = r#"{"context":{}}"#;
    let path = "/ofrep/v1/evaluate/flags/f";
    let denied = server.request("POST", path, &[], body).await;
    assert_eq!(denied.status, 401);
    assert!(denied.json()["errorCode"].is_string() && denied.json()["errorDetails"].is_string());
    assert_eq!(
        server
            .request("POST", path, &[("Authorization", "Bearer t0")], body)
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .request("POST", path, &[("Authorization", "Bearer t2")], body)
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .request("POST", path, &[("X-API-Key", "t1")], body)
            .await
            .status,
        200
    );
}

#[rstest]
#[tokio::test]
async fn operations_endpoints_and_unknown_routes(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let health = server.request("GET", "/healthz", &[], "").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );
    let ready = server.request("GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.json(),
        json!({"status": "ready", "repository": "ok", "cache": "ok"})
    );
    let unknown = server.request("GET", "/nope", &[], "").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], json!("not_found"));
}
