//! Per-flag evaluation counts (`FLAG_EVALUATION_METRICS=on`) over a real socket: single and bulk
//! evaluations counted by variant and reason, errors of existing flags under `ERROR`, unknown
//! keys never a series, counts that keep growing across cache refills, a deleted flag's series
//! gone; and nothing at all when off (the default).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use flag_server::config::Switch;
use rstest::rstest;
use serde_json::json;
use support::{Backend, TestServer};

fn series(flag: &str, variant: &str, reason: &str) -> String {
    format!(
        "flag_evaluations_total{{environment=\"production\",flag=\"{flag}\",variant=\"{variant}\",reason=\"{reason}\"}}"
    )
}

async fn single(server: &TestServer, key: &str, context: serde_json::Value) -> u16 {
    server
        .request(
            "POST",
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            &[("X-Environment", "production")],
            &json!({ "context": context }).to_string(),
        )
        .await
        .status
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_are_counted_per_flag_variant_and_reason(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start_with(backend, |config| {
        config.evaluation_metrics = Switch::On;
    })
    .await;
    server
        .put(
            "production",
            "checkout",
            json!({"enabled": true, "defaultVariant": "off", "rules": [
                {"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}], "variant": "on"}]}),
        )
        .await;
    server
        .put(
            "production",
            "split",
            json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}]}),
        )
        .await;

    for _ in 0..3 {
        assert_eq!(
            single(&server, "checkout", json!({"plan": "pro"})).await,
            200
        );
    }
    assert_eq!(
        single(&server, "checkout", json!({"plan": "free"})).await,
        200
    );
    // A rollout without a targeting key: an error of an existing flag.
    single(&server, "split", json!({})).await;
    // Keys that do not exist are never a series, however many.
    for junk in 0..20 {
        assert_eq!(
            single(&server, &format!("junk-{junk}"), json!({})).await,
            404
        );
    }
    let bulk = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            &[("X-Environment", "production")],
            r#"{"context": {"targetingKey": "u1", "plan": "pro"}}"#,
        )
        .await;
    assert_eq!(bulk.status, 200);

    assert_eq!(
        server
            .metric(&series("checkout", "on", "TARGETING_MATCH"))
            .await,
        4.0
    );
    assert_eq!(
        server.metric(&series("checkout", "off", "DEFAULT")).await,
        1.0
    );
    assert_eq!(server.metric(&series("split", "on", "SPLIT")).await, 1.0);
    assert_eq!(server.metric(&series("split", "", "ERROR")).await, 1.0);
    let text = server.request("GET", "/metrics", &[], "").await.body;
    assert!(!text.contains("junk-"), "{text}");

    // A refill holds new flag objects: the counts go on from where they were.
    let invalidated = server
        .admin(
            "POST",
            "/v1/environments/production/cache/invalidate",
            &[],
            "",
        )
        .await;
    assert_eq!(invalidated.status, 200, "{}", invalidated.body);
    assert_eq!(
        single(&server, "checkout", json!({"plan": "pro"})).await,
        200
    );
    assert_eq!(
        server
            .metric(&series("checkout", "on", "TARGETING_MATCH"))
            .await,
        5.0
    );

    // A deleted flag's series stop.
    let deleted = server
        .admin("DELETE", "/v1/environments/production/flags/split", &[], "")
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let text = server.request("GET", "/metrics", &[], "").await.body;
    assert!(!text.contains("flag=\"split\""), "{text}");
    assert!(text.contains("flag=\"checkout\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_no_evaluation_series_at_all() {
    let server = TestServer::start(Backend::Embedded).await;
    server
        .put("production", "checkout", json!({"enabled": true}))
        .await;
    assert_eq!(single(&server, "checkout", json!({})).await, 200);
    let text = server.request("GET", "/metrics", &[], "").await.body;
    assert!(!text.contains("flag_evaluations_total"), "{text}");
}
