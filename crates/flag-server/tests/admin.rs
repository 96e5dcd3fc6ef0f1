//! The management API over a real socket: auth, shapes, optimistic concurrency, validation,
//! limits, and a write being visible to the very next evaluation; every test runs on the
//! embedded default (SQLite + memory) and on Redis + Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use rstest::rstest;
use serde_json::json;
use support::{Backend, TestServer};

#[rstest]
#[tokio::test]
async fn every_route_needs_the_admin_token(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    for (method, path) in [
        ("GET", "/v1/environments"),
        ("GET", "/v1/environments/production/flags"),
        ("GET", "/v1/environments/production/flags/f"),
        ("PUT", "/v1/environments/production/flags/f"),
        ("DELETE", "/v1/environments/production/flags/f"),
        ("POST", "/v1/environments/production/cache/invalidate"),
    ] {
        let none = server.request(method, path, &[], "{}").await;
        assert_eq!(
            (none.status, none.code()),
            (401, json!("unauthorized")),
            "{method} {path}"
        );
        let wrong = server
            .request(method, path, &[("Authorization", "Bearer nope")], "{}")
            .await;
        assert_eq!(wrong.status, 401, "{method} {path}");
    }
}

#[rstest]
#[tokio::test]
async fn create_read_replace_delete_with_versions_and_etags(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let path = "/v1/environments/production/flags/new-checkout";
    let created = server
        .admin(
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

    let again = server
        .admin("PUT", path, &[("If-None-Match", "*")], "{}")
        .await;
    assert_eq!(
        (again.status, again.code()),
        (412, json!("version_conflict"))
    );

    // GET-edit-PUT round trip: server-set fields are accepted and ignored.
    let fetched = server.admin("GET", path, &[], "").await;
    assert_eq!(fetched.header("etag"), Some("\"1\""));
    let mut edited = fetched.json();
    edited["enabled"] = json!(false);
    let replaced = server
        .admin("PUT", path, &[("If-Match", "\"1\"")], &edited.to_string())
        .await;
    assert_eq!(
        (replaced.status, replaced.header("etag")),
        (200, Some("\"2\"")),
        "{}",
        replaced.body
    );
    let stale = server
        .admin("PUT", path, &[("If-Match", "\"1\"")], "{}")
        .await;
    assert_eq!(
        (stale.status, stale.code()),
        (412, json!("version_conflict"))
    );

    // The very next evaluation sees the write.
    let evaluation = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags/new-checkout",
            &[],
            r#"{"context":{}}"#,
        )
        .await;
    assert_eq!(evaluation.json()["reason"], json!("DISABLED"));

    let listed = server
        .admin("GET", "/v1/environments/production/flags", &[], "")
        .await
        .json();
    assert_eq!(
        (listed["environment"].clone(), listed["revision"].clone()),
        (json!("production"), json!(2))
    );
    assert_eq!(listed["flags"].as_array().unwrap().len(), 1);
    let environments = server
        .admin("GET", "/v1/environments", &[], "")
        .await
        .json();
    assert_eq!(
        environments,
        json!({"environments": [{"name": "production", "revision": 2, "flagCount": 1}]})
    );

    assert_eq!(
        server
            .admin("DELETE", path, &[("If-Match", "\"1\"")], "")
            .await
            .status,
        412
    );
    assert_eq!(
        server
            .admin("DELETE", path, &[("If-Match", "\"2\"")], "")
            .await
            .status,
        204
    );
    let gone = server.admin("DELETE", path, &[], "").await;
    assert_eq!((gone.status, gone.code()), (404, json!("not_found")));
    assert_eq!(server.admin("GET", path, &[], "").await.status, 404);
    let empty = server
        .admin("GET", "/v1/environments/staging/flags", &[], "")
        .await
        .json();
    assert_eq!(
        empty,
        json!({"environment": "staging", "revision": 0, "flags": []})
    );
}

#[rstest]
#[tokio::test]
async fn bad_input_is_a_clear_4xx(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let server = &server;
    let put = |path: &'static str, body: String| async move {
        server.admin("PUT", path, &[], &body).await
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

#[rstest]
#[tokio::test]
async fn explicit_cache_invalidation_answers_the_revision(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server
        .admin("PUT", "/v1/environments/production/flags/f", &[], "{}")
        .await;
    let reply = server
        .admin(
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

/// `If-Match: *` is checked inside the write's own transaction: a PUT carrying it and a plain PUT
/// sent at the same moment both succeed, one after the other, where a read of the version
/// followed by a conditional write would let the plain PUT slip in between and fail the first.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_any_never_races_a_concurrent_write(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let path = "/v1/environments/production/flags/contended";
    assert_eq!(server.admin("PUT", path, &[], "{}").await.status, 201);
    for round in 0..25u64 {
        let (any, plain) = tokio::join!(
            server.admin(
                "PUT",
                path,
                &[("If-Match", "*")],
                r#"{"description": "any"}"#
            ),
            server.admin("PUT", path, &[], r#"{"description": "plain"}"#),
        );
        assert_eq!(
            (any.status, plain.status),
            (200, 200),
            "round {round}: {} / {}",
            any.body,
            plain.body
        );
        let mut versions = [
            any.json()["version"].clone(),
            plain.json()["version"].clone(),
        ];
        versions.sort_by_key(|version| version.as_u64());
        assert_eq!(versions, [json!(2 + 2 * round), json!(3 + 2 * round)]);
    }

    // On a missing flag, `If-Match: *` fails as a precondition, and creates nothing.
    let missing = "/v1/environments/production/flags/missing";
    let put = server
        .admin("PUT", missing, &[("If-Match", "*")], "{}")
        .await;
    assert_eq!((put.status, put.code()), (412, json!("version_conflict")));
    let delete = server
        .admin("DELETE", missing, &[("If-Match", "*")], "")
        .await;
    assert_eq!(
        (delete.status, delete.code()),
        (412, json!("version_conflict"))
    );
    assert_eq!(server.admin("GET", missing, &[], "").await.status, 404);
    let deleted = server.admin("DELETE", path, &[("If-Match", "*")], "").await;
    assert_eq!(deleted.status, 204);
}

#[rstest]
#[tokio::test]
async fn environments_and_flags_are_capped_and_empty_environments_can_be_removed(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start_with(backend, |config| {
        config.max_environments = 2;
        config.max_flags = 2;
    })
    .await;
    let put = |env: &'static str, key: &'static str| {
        let server = &server;
        async move {
            server
                .admin(
                    "PUT",
                    &format!("/v1/environments/{env}/flags/{key}"),
                    &[],
                    r#"{"enabled": true}"#,
                )
                .await
        }
    };
    assert_eq!(put("one", "a").await.status, 201);
    assert_eq!(put("one", "b").await.status, 201);
    let third_flag = put("one", "c").await;
    assert_eq!(
        (third_flag.status, third_flag.code()),
        (409, json!("limit_exceeded"))
    );
    assert_eq!(
        put("one", "a").await.status,
        200,
        "replacing is not creating"
    );
    assert_eq!(put("two", "a").await.status, 201);
    let third_env = put("three", "a").await;
    assert_eq!(
        (third_env.status, third_env.code()),
        (409, json!("limit_exceeded"))
    );

    // Removing: only an empty environment, and then its place is free.
    let busy = server
        .admin("DELETE", "/v1/environments/two", &[], "")
        .await;
    assert_eq!((busy.status, busy.code()), (409, json!("in_use")));
    let missing = server
        .admin("DELETE", "/v1/environments/never", &[], "")
        .await;
    assert_eq!((missing.status, missing.code()), (404, json!("not_found")));
    let deleted = server
        .admin("DELETE", "/v1/environments/two/flags/a", &[], "")
        .await;
    assert_eq!(deleted.status, 204);
    let removed = server
        .admin("DELETE", "/v1/environments/two", &[], "")
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    let listed = server
        .admin("GET", "/v1/environments", &[], "")
        .await
        .json();
    let names: Vec<&str> = listed["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|environment| environment["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one"]);
    let gone = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            &[("X-Environment", "two")],
            r#"{"context":{}}"#,
        )
        .await;
    assert_eq!(
        (gone.status, gone.json()["flags"].clone()),
        (200, json!([]))
    );
    assert_eq!(
        put("three", "a").await.status,
        201,
        "the freed place is taken"
    );
    let again = server
        .admin("DELETE", "/v1/environments/two", &[], "")
        .await;
    assert_eq!(again.status, 404);
}
