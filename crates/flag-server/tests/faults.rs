//! Faults injected under a running server: Redis killed and brought back, Redis frozen past the
//! request timeout. The server keeps answering from Postgres, says so in `/readyz` and
//! `/metrics`, and heals without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::time::{Duration, Instant};

use flag_fixtures::{PostgresDatabase, RedisProcess};
use flag_server::config::CacheBackend;
use serde_json::json;
use support::{Backend, TestServer};

const BODY: &str = r#"{"context":{"targetingKey":"u1"}}"#;
const FALLBACKS: &str = "flag_cache_fallbacks_total{backend=\"redis\"}";
const FILLS: &str = "flag_cache_fills_total{outcome=\"stored\"}";

async fn value_of(server: &TestServer, key: &str) -> serde_json::Value {
    let reply = server
        .request(
            "POST",
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            &[],
            BODY,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["value"].clone()
}

async fn own_redis() -> RedisProcess {
    RedisProcess::spawn(&[])
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

const CIRCUIT: &str = "flag_cache_circuit_open{backend=\"redis\"}";

#[tokio::test]
async fn redis_killed_while_serving_falls_back_to_the_database_and_refills_when_back() {
    let redis = own_redis().await;
    let url = redis.url();
    let server = TestServer::start_with(Backend::RedisPostgres, |config| {
        config.redis_url = Some(url);
        config.redis_key_prefix = "feature_flags".to_owned();
    })
    .await;
    let flag = |colour: &str| {
        json!({"enabled": true, "variants": {"blue": "blue", "red": "red"}, "defaultVariant": colour, "offVariant": "blue"})
            .to_string()
    };
    let path = "/v1/environments/production/flags/colour";
    assert_eq!(
        server.admin("PUT", path, &[], &flag("blue")).await.status,
        201
    );
    assert_eq!(value_of(&server, "colour").await, json!("blue"));
    assert_eq!(
        redis.command("EXISTS feature_flags:{production}").await,
        Ok(":1".to_owned()),
        "the first evaluation filled Redis"
    );
    let fallbacks_before = server.metric(FALLBACKS).await;

    redis.kill();
    for _ in 0..20 {
        assert_eq!(value_of(&server, "colour").await, json!("blue"));
    }
    let ready = server.request("GET", "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()),
        (
            200,
            json!({"status": "degraded", "repository": "ok", "cache": "unavailable"})
        )
    );
    assert!(
        server.metric(FALLBACKS).await >= fallbacks_before + 20.0,
        "every evaluation during the outage is a counted fallback"
    );
    // The outage cost one failed call: the circuit opened, and the other reads skipped Redis.
    let errors = server
        .metric("flag_cache_requests_total{backend=\"redis\",result=\"error\"}")
        .await;
    assert!((1.0..=3.0).contains(&errors), "{errors} failed cache calls");
    assert_eq!(server.metric(CIRCUIT).await, 1.0);
    // A write during the outage lands in the database and is read back from it at once.
    let replaced = server.admin("PUT", path, &[], &flag("red")).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(value_of(&server, "colour").await, json!("red"));

    redis.restart().await.unwrap();
    let fills_before = server.metric(FILLS).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Whatever the cache's state, the answer is the last write.
        assert_eq!(value_of(&server, "colour").await, json!("red"));
        let filled = server.metric(FILLS).await > fills_before;
        let cached = redis.command("EXISTS feature_flags:{production}").await == Ok(":1".into());
        if filled && cached {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache did not fill again after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reads are cache hits again, and still the last write.
    let hits = "flag_cache_requests_total{backend=\"redis\",result=\"hit\"}";
    let hits_before = server.metric(hits).await;
    assert_eq!(value_of(&server, "colour").await, json!("red"));
    assert_eq!(server.metric(hits).await, hits_before + 1.0);
    let ready = server.request("GET", "/readyz", &[], "").await;
    assert_eq!(ready.json()["status"], json!("ready"));
    assert_eq!(server.metric(CIRCUIT).await, 0.0);
}

#[tokio::test]
async fn a_request_that_outlives_the_timeout_is_a_503_in_its_api_shape() {
    let redis = own_redis().await;
    let url = redis.url();
    let server = TestServer::start_with(Backend::RedisPostgres, |config| {
        config.redis_url = Some(url);
        config.redis_timeout_ms = 2_000;
        config.request_timeout_ms = 200;
    })
    .await;
    server
        .put("production", "f", json!({"enabled": true}))
        .await;
    redis.pause().unwrap();
    let started = Instant::now();
    let reply = server
        .request("POST", "/ofrep/v1/evaluate/flags/f", &[], BODY)
        .await;
    let took = started.elapsed();
    redis.resume().unwrap();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["errorCode"], json!("GENERAL"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(
        took < Duration::from_millis(1_500),
        "answered after {took:?}"
    );
    let invalidation = {
        redis.pause().unwrap();
        let reply = server
            .admin(
                "POST",
                "/v1/environments/production/cache/invalidate",
                &[],
                "",
            )
            .await;
        redis.resume().unwrap();
        reply
    };
    assert_eq!(
        (invalidation.status, invalidation.code()),
        (503, json!("unavailable"))
    );
    assert_eq!(
        server
            .metric(
                "flag_http_requests_total{route=\"/ofrep/v1/evaluate/flags/{key}\",method=\"POST\",status=\"503\"}"
            )
            .await,
        1.0
    );
    // Once Redis answers again, so does the server.
    assert_eq!(value_of(&server, "f").await, json!(true));
}

#[rstest::rstest]
#[tokio::test]
async fn with_redis_and_postgres_both_down_evaluations_answer_cached_and_writes_fail_clearly(
    #[values(CacheBackend::Redis, CacheBackend::Tiered)] cache: CacheBackend,
) {
    let redis = own_redis().await;
    let database = PostgresDatabase::on_own_server()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let (redis_url, database_url) = (redis.url(), database.url().to_owned());
    let start = |stale_if_error_ms: u64| {
        let (redis_url, database_url) = (redis_url.clone(), database_url.clone());
        TestServer::start_with(Backend::RedisPostgres, move |config| {
            config.redis_url = Some(redis_url);
            config.database_url = database_url;
            config.cache_backend = Some(cache);
            config.stale_if_error_ms = stale_if_error_ms;
            config.request_timeout_ms = 20_000;
        })
    };
    let server = start(86_400_000).await;
    let strict = start(0).await;
    let colour = json!({"enabled": true, "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red", "offVariant": "blue"});
    let path = "/v1/environments/production/flags/colour";
    assert_eq!(
        server
            .admin("PUT", path, &[], &colour.to_string())
            .await
            .status,
        201
    );
    let split = json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}]});
    let split_path = "/v1/environments/production/flags/split";
    assert_eq!(
        server
            .admin("PUT", split_path, &[], &split.to_string())
            .await
            .status,
        201
    );
    let expected_split = value_of(&server, "split").await;
    assert_eq!(value_of(&server, "colour").await, json!("red"));
    assert_eq!(value_of(&strict, "colour").await, json!("red"));
    let bulk = server
        .request("POST", "/ofrep/v1/evaluate/flags", &[], BODY)
        .await;
    assert_eq!(bulk.status, 200);

    redis.kill();
    database.server().unwrap().kill();

    // A tiered server answers from its in-process layer until it notices the lost subscription
    // (then drops the layer): the value is right either way, the reason says where it came from.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = server
            .request("POST", "/ofrep/v1/evaluate/flags/colour", &[], BODY)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["value"], json!("red"));
        if reply.json()["reason"] == json!("CACHED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never answered from last-known-good"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..5 {
        let reply = server
            .request("POST", "/ofrep/v1/evaluate/flags/colour", &[], BODY)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer = reply.json();
        assert_eq!(
            (answer["value"].clone(), answer["reason"].clone()),
            (json!("red"), json!("CACHED"))
        );
    }
    let split_now = server
        .request("POST", "/ofrep/v1/evaluate/flags/split", &[], BODY)
        .await
        .json();
    assert_eq!(
        (split_now["value"].clone(), split_now["reason"].clone()),
        (expected_split, json!("CACHED")),
        "the same user keeps the same bucket"
    );
    let bulk = server
        .request("POST", "/ofrep/v1/evaluate/flags", &[], BODY)
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    assert!(
        bulk.json()["flags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|flag| flag["reason"] == json!("CACHED")),
        "{}",
        bulk.body
    );
    let ready = server.request("GET", "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, json!("degraded"))
    );
    assert!(server.metric("flag_stale_answers_total").await >= 7.0);

    let write = server.admin("PUT", path, &[], &colour.to_string()).await;
    assert_eq!(
        (write.status, write.code()),
        (503, json!("unavailable")),
        "{}",
        write.body
    );
    // FLAG_STALE_IF_ERROR_MS=0 turns last-known-good off: the outage is a 503.
    let strict_reply = strict
        .request("POST", "/ofrep/v1/evaluate/flags/colour", &[], BODY)
        .await;
    assert_eq!(strict_reply.status, 503, "{}", strict_reply.body);
    assert_eq!(strict.request("GET", "/readyz", &[], "").await.status, 503);
}
