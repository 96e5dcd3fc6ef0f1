//! OFREP evaluation and the operations endpoints, driven over a real socket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;

use flag_core::{
    Environment, FeatureFlag, FeatureFlagService, FlagKey, InMemoryRepository, Precondition,
};
use flag_memory::MemoryCache;
use flag_server::app::{AppState, router};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server on a free loopback port, and the service behind it (to seed flags).
struct Server {
    address: std::net::SocketAddr,
    service: FeatureFlagService,
}

async fn start(client_tokens: Option<&[&str]>) -> Server {
    let service = FeatureFlagService::new(
        Arc::new(InMemoryRepository::new()),
        Arc::new(MemoryCache::new()),
    );
    let state = AppState {
        service: service.clone(),
        default_environment: Environment::parse("production").unwrap(),
        client_tokens: client_tokens.map(|tokens| tokens.iter().map(|t| (*t).to_owned()).collect()),
        redis: None,
        admin_token: "admin-secret".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    Server { address, service }
}

impl Server {
    async fn put(&self, env: &str, key: &str, body: Value) {
        let key = FlagKey::parse(key).unwrap();
        let flag = FeatureFlag::from_definition_json(&key, &body.to_string()).unwrap();
        self.service
            .upsert(&Environment::parse(env).unwrap(), flag, Precondition::None)
            .await
            .unwrap();
    }
}

/// A response: status, headers (lower-case names) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection.
async fn request(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn evaluate(server: &Server, key: &str, body: Value) -> Reply {
    request(
        server.address,
        "POST",
        &format!("/ofrep/v1/evaluate/flags/{key}"),
        &[],
        &body.to_string(),
    )
    .await
}

#[tokio::test]
async fn flags_of_every_type_evaluate_with_their_reason_and_metadata() {
    let server = start(None).await;
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

#[tokio::test]
async fn rules_and_rollouts_follow_the_context() {
    let server = start(None).await;
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

#[tokio::test]
async fn errors_carry_their_code_and_details() {
    let server = start(None).await;
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
            request(
                server.address,
                "POST",
                "/ofrep/v1/evaluate/flags/exists",
                &[],
                "{not json",
            )
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
            request(
                server.address,
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

#[tokio::test]
async fn the_environment_comes_from_the_header_or_the_default() {
    let server = start(None).await;
    server
        .put("production", "f", json!({"enabled": true}))
        .await;
    server.put("staging", "f", json!({"enabled": false})).await;
    assert_eq!(
        evaluate(&server, "f", json!({"context": {}})).await.json()["value"],
        json!(true)
    );
    let staging = request(
        server.address,
        "POST",
        "/ofrep/v1/evaluate/flags/f",
        &[("X-Environment", "staging")],
        r#"{"context":{}}"#,
    )
    .await;
    assert_eq!(staging.json()["value"], json!(false));
}

#[tokio::test]
async fn bulk_evaluation_has_per_flag_errors_and_per_user_etags() {
    let server = start(None).await;
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
    server
        .put("production", "a", json!({"enabled": false}))
        .await;
    let after_write = bulk(json!({"targetingKey": "alice"}), Some(alice_etag)).await;
    assert_eq!(after_write.status, 200, "a write changes the ETag");
}

#[tokio::test]
async fn client_tokens_guard_ofrep_when_configured() {
    let server = start(Some(&["t1", "t2"])).await;
    server
        .put("production", "f", json!({"enabled": true}))
        .await;
    let body = r#"{"context":{}}"#;
    let path = "/ofrep/v1/evaluate/flags/f";
    let denied = request(server.address, "POST", path, &[], body).await;
    assert_eq!(denied.status, 401);
    assert!(denied.json()["errorCode"].is_string() && denied.json()["errorDetails"].is_string());
    assert_eq!(
        request(
            server.address,
            "POST",
            path,
            &[("Authorization", "Bearer t0")],
            body
        )
        .await
        .status,
        401
    );
    assert_eq!(
        request(
            server.address,
            "POST",
            path,
            &[("Authorization", "Bearer t2")],
            body
        )
        .await
        .status,
        200
    );
    assert_eq!(
        request(server.address, "POST", path, &[("X-API-Key", "t1")], body)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn operations_endpoints_and_unknown_routes() {
    let server = start(None).await;
    let health = request(server.address, "GET", "/healthz", &[], "").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );
    let ready = request(server.address, "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.json(),
        json!({"status": "ready", "repository": "ok", "cache": "ok"})
    );
    let unknown = request(server.address, "GET", "/nope", &[], "").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], json!("not_found"));
}
