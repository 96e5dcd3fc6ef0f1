//! What a hostile or careless client meets at the edges, over real sockets: scoped client tokens,
//! the auth scheme in any case, `WWW-Authenticate` on every `401`, `key` in every single-flag
//! OFREP error, JSON answers for paths that are not UTF-8, the OFREP body limit, and shedding
//! past the in-flight cap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use rstest::rstest;
use serde_json::json;
use support::{Backend, TestServer};

const CONTEXT: &str = r#"{"context":{"targetingKey":"u"}}"#;

async fn scoped_server(backend: Backend) -> TestServer {
    let server = TestServer::start_with(backend, |config| {
        config.client_tokens = Some(vec![
            "everywhere".to_owned(),
            "staging|dev:stage-token".to_owned(),
            "production:prod-token".to_owned(),
        ]);
    })
    .await;
    for env in ["production", "staging", "dev"] {
        server.put(env, "f", json!({"enabled": true})).await;
    }
    server
}

#[rstest]
#[tokio::test]
async fn client_tokens_are_scoped_to_their_environments(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = scoped_server(backend).await;
    let path = "/ofrep/v1/evaluate/flags/f";
    let ask = |token: &'static str, env: Option<&'static str>| {
        let server = &server;
        async move {
            let bearer = format!("bearer {token}");
            let mut headers = vec![("Authorization", bearer)];
            if let Some(env) = env {
                headers.push(("X-Environment", env.to_owned()));
            }
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            server.request("POST", path, &headers, CONTEXT).await
        }
    };
    assert_eq!(ask("everywhere", Some("dev")).await.status, 200);
    assert_eq!(ask("stage-token", Some("staging")).await.status, 200);
    assert_eq!(ask("stage-token", Some("dev")).await.status, 200);
    let forbidden = ask("stage-token", Some("production")).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.json()["key"], "f");
    assert_eq!(forbidden.json()["errorCode"], "GENERAL");
    // Without X-Environment: a two-environment token falls back to the default (production),
    // which it may not read; a one-environment token selects its own.
    assert_eq!(ask("stage-token", None).await.status, 403);
    assert_eq!(ask("prod-token", None).await.status, 200);
    let bulk = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            &[("X-API-Key", "prod-token"), ("X-Environment", "staging")],
            CONTEXT,
        )
        .await;
    assert_eq!(bulk.status, 403);
}

#[rstest]
#[tokio::test]
async fn every_401_carries_the_bearer_challenge_and_the_scheme_is_case_insensitive(
    #[values(Backend::Embedded)] backend: Backend,
) {
    let server = scoped_server(backend).await;
    let single = server
        .request("POST", "/ofrep/v1/evaluate/flags/f", &[], CONTEXT)
        .await;
    assert_eq!(single.status, 401);
    assert_eq!(single.header("www-authenticate"), Some("Bearer"));
    assert_eq!(single.json()["key"], "f", "{}", single.body);
    let bulk = server
        .request("POST", "/ofrep/v1/evaluate/flags", &[], CONTEXT)
        .await;
    assert_eq!(bulk.status, 401);
    assert_eq!(bulk.header("www-authenticate"), Some("Bearer"));
    let admin = server.request("GET", "/v1/environments", &[], "").await;
    assert_eq!(admin.status, 401);
    assert_eq!(admin.header("www-authenticate"), Some("Bearer"));
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let authorization = format!("{scheme} {}", support::ADMIN_TOKEN);
        let reply = server
            .request(
                "GET",
                "/v1/environments",
                &[("Authorization", &authorization)],
                "",
            )
            .await;
        assert_eq!(reply.status, 200, "{scheme}");
    }
    let wrong_length = server
        .request(
            "GET",
            "/v1/environments",
            &[("Authorization", "Bearer admin-secret-and-more")],
            "",
        )
        .await;
    assert_eq!(wrong_length.status, 401);
}

#[rstest]
#[tokio::test]
async fn every_single_flag_error_carries_its_key(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server
        .put(
            "production",
            "rollout",
            json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}]}),
        )
        .await;
    let path = "/ofrep/v1/evaluate/flags/rollout";
    // (headers, body, status, errorCode)
    type Case = (Vec<(&'static str, &'static str)>, String, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![("X-Environment", "Not Valid")],
            CONTEXT.to_owned(),
            400,
            "GENERAL",
        ),
        (vec![], "not json".to_owned(), 400, "PARSE_ERROR"),
        (
            vec![],
            r#"{"context": 3}"#.to_owned(),
            400,
            "INVALID_CONTEXT",
        ),
        (
            vec![],
            r#"{"context": {}}"#.to_owned(),
            400,
            "TARGETING_KEY_MISSING",
        ),
        (
            vec![],
            format!(
                r#"{{"context":{{"targetingKey":"{}"}}}}"#,
                "x".repeat(70_000)
            ),
            413,
            "GENERAL",
        ),
    ];
    for (headers, body, status, code) in cases {
        let reply = server.request("POST", path, &headers, &body).await;
        assert_eq!(reply.status, status, "{}", reply.body);
        let json = reply.json();
        assert_eq!(json["errorCode"], code, "{json}");
        assert_eq!(json["key"], "rollout", "{json}");
        assert!(json["errorDetails"].is_string(), "{json}");
    }
    let wrong_method = server.request("GET", path, &[], "").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["key"], "rollout");
    let missing = server
        .request("POST", "/ofrep/v1/evaluate/flags/nope", &[], CONTEXT)
        .await;
    assert_eq!(
        (missing.status, missing.json()["key"].clone()),
        (404, json!("nope"))
    );
}

#[rstest]
#[tokio::test]
async fn paths_that_are_not_utf8_get_json_404s_in_their_apis_shape(
    #[values(Backend::Embedded)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let single = server
        .request("POST", "/ofrep/v1/evaluate/flags/%FF%FE", &[], CONTEXT)
        .await;
    assert_eq!(single.status, 404, "{}", single.body);
    assert_eq!(single.header("content-type"), Some("application/json"));
    assert_eq!(single.json()["errorCode"], "FLAG_NOT_FOUND");
    assert!(single.json()["key"].is_string());
    for (method, path) in [
        ("GET", "/v1/environments/%FF/flags"),
        ("GET", "/v1/environments/production/flags/%C3%28"),
        ("PUT", "/v1/environments/production/flags/%FF"),
    ] {
        let reply = server.admin(method, path, &[], "{}").await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
        assert_eq!(reply.code(), "not_found");
    }
}

#[tokio::test]
async fn past_the_in_flight_cap_requests_are_shed_at_once_and_probes_still_answer() {
    // A cap of one, held by a request whose body never finishes arriving.
    let server = TestServer::start_with(Backend::Embedded, |config| {
        config.max_in_flight = 1;
    })
    .await;
    let mut holder = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut holder,
        b"POST /ofrep/v1/evaluate/flags HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let shed = server
        .request("POST", "/ofrep/v1/evaluate/flags/f", &[], CONTEXT)
        .await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(shed.json()["key"], "f");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "shedding must not queue"
    );
    let admin = server.admin("GET", "/v1/environments", &[], "").await;
    assert_eq!((admin.status, admin.code()), (503, json!("unavailable")));
    assert_eq!(server.request("GET", "/healthz", &[], "").await.status, 200);
    assert_eq!(server.request("GET", "/readyz", &[], "").await.status, 200);
    drop(holder);
}

#[tokio::test]
async fn an_environment_too_large_for_redis_is_served_in_process_without_a_read_per_request() {
    let server = TestServer::start_with(Backend::RedisPostgres, |config| {
        config.redis_max_snapshot_bytes = 4_096;
    })
    .await;
    let big = "x".repeat(8_192);
    server
        .put(
            "big",
            "f",
            json!({"enabled": true, "variants": {"on": big, "off": ""}}),
        )
        .await;
    server.put("small", "f", json!({"enabled": true})).await;
    let evaluate_f = |env: &'static str| {
        let server = &server;
        async move {
            server
                .request(
                    "POST",
                    "/ofrep/v1/evaluate/flags/f",
                    &[("X-Environment", env)],
                    CONTEXT,
                )
                .await
        }
    };
    let reads_before = server.metric("flag_repository_reads_total").await;
    for _ in 0..50 {
        let reply = evaluate_f("big").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["variant"], "on");
    }
    let reads = server.metric("flag_repository_reads_total").await - reads_before;
    assert!(reads <= 3.0, "{reads} repository reads for 50 evaluations");
    assert!(server.metric("flag_cache_too_large_total").await >= 1.0);
    // The small environment is cached in Redis as usual; the big one is not there at all.
    let small = evaluate_f("small").await;
    assert_eq!(small.status, 200);
    let cache = flag_redis::RedisCache::builder(server.config.redis_url.clone().unwrap())
        .key_prefix(server.config.redis_key_prefix.clone())
        .build()
        .unwrap();
    use flag_core::FeatureFlagCache;
    let env = |name: &str| flag_core::Environment::parse(name).unwrap();
    assert!(cache.get(&env("small")).await.unwrap().is_some());
    assert!(cache.get(&env("big")).await.unwrap().is_none());
    // A write to the big environment is seen by the very next read.
    server
        .put(
            "big",
            "f",
            json!({"enabled": false, "variants": {"on": "x".repeat(8_192), "off": ""}}),
        )
        .await;
    let after = evaluate_f("big").await;
    assert_eq!(after.json()["reason"], "DISABLED");
}
