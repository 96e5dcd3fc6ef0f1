//! Segments, prerequisites and the new condition kinds over a real socket: management routes
//! with their versions, `ETag`s and error codes, reference rules, and OFREP answers that use
//! them, on the embedded default (SQLite + memory) and on Redis + Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use rstest::rstest;
use serde_json::{Value, json};
use support::{Backend, TestServer};

const SEGMENT: &str = "/v1/environments/production/segments/beta";

async fn evaluate(server: &TestServer, key: &str, context: Value) -> Value {
    let reply = server
        .request(
            "POST",
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            &[],
            &json!({"context": context}).to_string(),
        )
        .await;
    let mut answer = reply.json();
    answer["status"] = json!(reply.status);
    answer
}

async fn revision(server: &TestServer) -> u64 {
    let listed = server
        .admin("GET", "/v1/environments/production/segments", &[], "")
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.json()["revision"].as_u64().unwrap()
}

#[rstest]
#[tokio::test]
async fn segments_are_managed_like_flags(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let unauthorized = server.request("GET", SEGMENT, &[], "").await;
    assert_eq!(unauthorized.status, 401);
    let body = json!({"description": "testers", "included": ["b", "a", "a"],
                      "rules": [{"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}]}]});
    let created = server
        .admin("PUT", SEGMENT, &[("If-None-Match", "*")], &body.to_string())
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("etag"), Some("\"1\""));
    let segment = created.json();
    assert_eq!(segment["key"], json!("beta"));
    assert_eq!(segment["included"], json!(["a", "b"]), "a sorted set");
    assert_eq!(segment["version"], json!(1));
    assert_eq!(revision(&server).await, 1);

    // GET-edit-PUT with the version it read.
    let fetched = server.admin("GET", SEGMENT, &[], "").await;
    assert_eq!(fetched.header("etag"), Some("\"1\""));
    let mut edited = fetched.json();
    edited["excluded"] = json!(["c"]);
    let replaced = server
        .admin(
            "PUT",
            SEGMENT,
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
    let stale = server
        .admin(
            "PUT",
            SEGMENT,
            &[("If-Match", "\"1\"")],
            &edited.to_string(),
        )
        .await;
    assert_eq!(
        (stale.status, stale.code()),
        (412, json!("version_conflict"))
    );
    assert_eq!(revision(&server).await, 2, "a refused write bumps nothing");

    let listed = server
        .admin("GET", "/v1/environments/production/segments", &[], "")
        .await;
    assert_eq!(listed.json()["segments"].as_array().unwrap().len(), 1);
    assert_eq!(listed.json()["environment"], json!("production"));

    for (body, field) in [
        (json!({"includd": []}), "unknown field"),
        (
            json!({"rules": [{"conditions": [{"operator": "in_segment", "value": "beta"}]}]}),
            "cannot refer to segments",
        ),
        (json!({"included": [""]}), "must not be empty"),
        (json!({"key": "other"}), "does not match"),
    ] {
        let refused = server.admin("PUT", SEGMENT, &[], &body.to_string()).await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, json!("validation_failed")),
            "{body}"
        );
        assert!(refused.body.contains(field), "{}", refused.body);
    }
    let bad_key = server
        .admin("PUT", "/v1/environments/production/segments/_x", &[], "{}")
        .await;
    assert_eq!(
        (bad_key.status, bad_key.code()),
        (400, json!("invalid_request"))
    );

    // An environment holding a segment is in use.
    let remove = server
        .admin("DELETE", "/v1/environments/production", &[], "")
        .await;
    assert_eq!((remove.status, remove.code()), (409, json!("in_use")));

    let deleted = server
        .admin("DELETE", SEGMENT, &[("If-Match", "\"2\"")], "")
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let gone = server.admin("GET", SEGMENT, &[], "").await;
    assert_eq!((gone.status, gone.code()), (404, json!("not_found")));
    let again = server.admin("DELETE", SEGMENT, &[], "").await;
    assert_eq!(again.status, 404);
    let must_exist = server
        .admin("DELETE", SEGMENT, &[("If-Match", "*")], "")
        .await;
    assert_eq!(must_exist.status, 412);
}

#[rstest]
#[tokio::test]
async fn flags_use_segments_and_a_segment_change_is_seen_at_once(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let flag = json!({"enabled": true, "defaultVariant": "off",
                      "rules": [{"conditions": [{"operator": "in_segment", "value": "beta"}], "variant": "on"}]});
    let orphan = server
        .admin(
            "PUT",
            "/v1/environments/production/flags/checkout",
            &[],
            &flag.to_string(),
        )
        .await;
    assert_eq!(
        (orphan.status, orphan.code()),
        (400, json!("validation_failed"))
    );
    assert!(
        orphan.body.contains("segment beta does not exist"),
        "{}",
        orphan.body
    );

    server
        .admin(
            "PUT",
            SEGMENT,
            &[],
            &json!({"included": ["ana"]}).to_string(),
        )
        .await;
    let written = server
        .admin(
            "PUT",
            "/v1/environments/production/flags/checkout",
            &[],
            &flag.to_string(),
        )
        .await;
    assert_eq!(written.status, 201, "{}", written.body);

    let ana = evaluate(&server, "checkout", json!({"targetingKey": "ana"})).await;
    assert_eq!(
        (ana["value"].clone(), ana["reason"].clone()),
        (json!(true), json!("TARGETING_MATCH"))
    );
    let bo = evaluate(&server, "checkout", json!({"targetingKey": "bo"})).await;
    assert_eq!(bo["value"], json!(false));

    // Editing the segment changes the next answer, through whatever cache is in front.
    server
        .admin(
            "PUT",
            SEGMENT,
            &[],
            &json!({"included": ["bo"]}).to_string(),
        )
        .await;
    let bo = evaluate(&server, "checkout", json!({"targetingKey": "bo"})).await;
    assert_eq!(
        bo["value"],
        json!(true),
        "the segment change is seen by the next read"
    );
    let bulk = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            &[],
            r#"{"context": {"targetingKey": "ana"}}"#,
        )
        .await;
    assert_eq!(
        bulk.json()["flags"][0]["value"],
        json!(false),
        "{}",
        bulk.body
    );

    let in_use = server.admin("DELETE", SEGMENT, &[], "").await;
    assert_eq!((in_use.status, in_use.code()), (409, json!("in_use")));
    assert!(in_use.body.contains("checkout"), "{}", in_use.body);
}

#[rstest]
#[tokio::test]
async fn prerequisites_gate_flags_and_keep_their_references(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let put = |key: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .admin(
                    "PUT",
                    &format!("/v1/environments/production/flags/{key}"),
                    &[],
                    &body.to_string(),
                )
                .await
        }
    };
    let needs_base = json!({"enabled": true, "variants": {"new": "n", "old": "o"}, "defaultVariant": "new",
                            "offVariant": "old", "prerequisites": [{"flag": "base", "variants": ["on"]}]});
    let missing = put("dependent", needs_base.clone()).await;
    assert_eq!(
        (missing.status, missing.code()),
        (400, json!("validation_failed"))
    );
    put("base", json!({"enabled": true, "defaultVariant": "off",
                       "rules": [{"conditions": [{"attribute": "app", "operator": "semver_gte", "value": "v2.0.0"}], "variant": "on"}]}))
        .await;
    assert_eq!(put("dependent", needs_base).await.status, 201);

    let new_app = evaluate(&server, "dependent", json!({"app": "2.1.0"})).await;
    assert_eq!(
        (new_app["value"].clone(), new_app["reason"].clone()),
        (json!("n"), json!("STATIC"))
    );
    let old_app = evaluate(&server, "dependent", json!({"app": "1.9.9"})).await;
    assert_eq!(
        (old_app["value"].clone(), old_app["reason"].clone()),
        (json!("o"), json!("DISABLED"))
    );

    let cycle = put(
        "base",
        json!({"enabled": true, "prerequisites": [{"flag": "dependent", "variants": ["new"]}]}),
    )
    .await;
    assert_eq!(
        (cycle.status, cycle.code()),
        (400, json!("validation_failed"))
    );
    assert!(cycle.body.contains("cycle"), "{}", cycle.body);
    let in_use = server
        .admin("DELETE", "/v1/environments/production/flags/base", &[], "")
        .await;
    assert_eq!((in_use.status, in_use.code()), (409, json!("in_use")));
    assert!(in_use.body.contains("dependent"), "{}", in_use.body);

    // Bulk answers both from one snapshot.
    let bulk = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            &[],
            r#"{"context": {"app": "3.0.0"}}"#,
        )
        .await;
    let flags = bulk.json()["flags"].clone();
    assert_eq!(flags[0]["key"], json!("base"));
    assert_eq!(flags[1]["value"], json!("n"), "{}", bulk.body);
}

#[rstest]
#[tokio::test]
async fn new_condition_kinds_are_checked_at_write_time_and_answer_over_ofrep(
    #[values(Backend::Embedded)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    for (condition, message) in [
        (
            json!({"attribute": "app", "operator": "semver_gt", "value": "1.2"}),
            "not a semantic version",
        ),
        (
            json!({"attribute": "email", "operator": "matches", "value": "(a"}),
            "invalid regular expression",
        ),
        (
            json!({"attribute": "$today", "operator": "gt", "value": 1}),
            "reserved",
        ),
    ] {
        let body = json!({"rules": [{"conditions": [condition], "variant": "on"}]});
        let refused = server
            .admin(
                "PUT",
                "/v1/environments/production/flags/f",
                &[],
                &body.to_string(),
            )
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, json!("validation_failed"))
        );
        assert!(refused.body.contains(message), "{}", refused.body);
    }
    let body = json!({"enabled": true, "defaultVariant": "off", "bucketBy": "companyId",
                      "rules": [{"conditions": [{"attribute": "email", "operator": "matches", "value": "@corp\\.com$"},
                                                {"attribute": "$now", "operator": "gt", "value": 1_600_000_000}],
                                 "rollout": [{"variant": "on", "weight": 1}]}]});
    let written = server
        .admin(
            "PUT",
            "/v1/environments/production/flags/f",
            &[],
            &body.to_string(),
        )
        .await;
    assert_eq!(written.status, 201, "{}", written.body);
    let corp = evaluate(&server, "f", json!({"email": "a@corp.com", "companyId": 7})).await;
    assert_eq!(
        (corp["value"].clone(), corp["reason"].clone()),
        (json!(true), json!("SPLIT"))
    );
    let no_company = evaluate(
        &server,
        "f",
        json!({"email": "a@corp.com", "targetingKey": "u"}),
    )
    .await;
    assert_eq!(no_company["status"], json!(400));
    assert_eq!(no_company["errorCode"], json!("TARGETING_KEY_MISSING"));
    assert!(
        no_company["errorDetails"]
            .as_str()
            .unwrap()
            .contains("companyId")
    );
    let other = evaluate(&server, "f", json!({"email": "a@other.com", "$now": 0})).await;
    assert_eq!(other["value"], json!(false));
}

/// A segment written through one `tiered` instance reaches another's in-process layer through
/// the Redis bus, as a flag write does: the other instance's next answers change within the
/// in-process TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_change_reaches_another_tiered_instance() {
    let redis = flag_fixtures::RedisServer::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let data = flag_fixtures::ScratchDir::new().unwrap();
    let database = format!(
        "sqlite://{}?mode=rwc",
        data.path().join("flags.db").display()
    );
    let env = [
        ("CACHE_BACKEND", "tiered"),
        ("REDIS_URL", redis.url()),
        ("REDIS_KEY_PREFIX", redis.key_prefix()),
        ("DATABASE_URL", database.as_str()),
        ("RUST_LOG", "warn"),
    ];
    let writer = support::Running::start_in(flag_fixtures::ScratchDir::new().unwrap(), &env);
    let reader = support::Running::start_in(flag_fixtures::ScratchDir::new().unwrap(), &env);
    let bearer = [("Authorization", "Bearer admin-secret")];
    let write = |path: &'static str, body: Value| {
        let address = writer.socket();
        async move {
            let reply = support::request(address, "PUT", path, &bearer, &body.to_string()).await;
            assert!(reply.status == 200 || reply.status == 201, "{}", reply.body);
        }
    };
    let ana = || async {
        let reply = support::request(
            reader.socket(),
            "POST",
            "/ofrep/v1/evaluate/flags/checkout",
            &[],
            r#"{"context": {"targetingKey": "ana"}}"#,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["value"].clone()
    };
    write(SEGMENT, json!({"included": ["bo"]})).await;
    write(
        "/v1/environments/production/flags/checkout",
        json!({"enabled": true, "defaultVariant": "off",
               "rules": [{"conditions": [{"operator": "in_segment", "value": "beta"}], "variant": "on"}]}),
    )
    .await;
    // Warm the reader's in-process layer (its environment watched, its snapshot kept).
    for _ in 0..20 {
        assert_eq!(ana().await, json!(false));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    write(SEGMENT, json!({"included": ["ana"]})).await;
    let written = std::time::Instant::now();
    while ana().await != json!(true) {
        assert!(
            written.elapsed() < flag_memory::DEFAULT_L1_TTL,
            "the segment change was not seen by the other instance within the in-process TTL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    println!(
        "segment change seen by the other instance after {:?}",
        written.elapsed()
    );
}
