//! The API for the people who run flags, over a real socket on the embedded default and on
//! Redis + Postgres: named admin tokens as the actors of writes, the audit log with its pages
//! and definitions, and the explainer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use rstest::rstest;
use serde_json::{Value, json};
use support::{Backend, TestServer};

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.admin_tokens = Some(vec![format!("alice:{ALICE}"), format!("bob:{BOB}")]);
    })
    .await
}

async fn as_token(
    server: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> support::Reply {
    let bearer = format!("Bearer {token}");
    server
        .request(method, path, &[("Authorization", bearer.as_str())], body)
        .await
}

#[rstest]
#[tokio::test]
async fn every_write_is_audited_under_the_name_of_its_token(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = start(backend).await;
    let flag = "/v1/environments/production/flags/checkout";
    let segment = "/v1/environments/production/segments/beta";
    assert_eq!(
        as_token(&server, ALICE, "PUT", flag, "{}").await.status,
        201
    );
    let updated = as_token(&server, BOB, "PUT", flag, r#"{"enabled": true}"#).await;
    assert_eq!(updated.status, 200);
    // The unnamed FLAG_ADMIN_TOKEN still works, as `admin`.
    let segment_written = server
        .admin("PUT", segment, &[], r#"{"included": ["u1"]}"#)
        .await;
    assert_eq!(segment_written.status, 201, "{}", segment_written.body);
    assert_eq!(
        as_token(&server, ALICE, "DELETE", flag, "").await.status,
        204
    );
    // A refused write leaves no entry.
    let refused = as_token(&server, BOB, "DELETE", flag, "").await;
    assert_eq!(refused.status, 404);

    let log = server
        .admin("GET", "/v1/environments/production/audit", &[], "")
        .await;
    assert_eq!(log.status, 200, "{}", log.body);
    let log = log.json();
    let told: Vec<String> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            format!(
                "{} {} {} {} {}->{} r{}",
                entry["actor"].as_str().unwrap(),
                entry["action"].as_str().unwrap(),
                entry["kind"].as_str().unwrap(),
                entry["key"].as_str().unwrap(),
                entry["oldVersion"],
                entry["newVersion"],
                entry["revision"],
            )
        })
        .collect();
    assert_eq!(
        told,
        [
            "alice delete flag checkout 2->null r4",
            "admin create segment beta null->1 r3",
            "bob update flag checkout 1->2 r2",
            "alice create flag checkout null->1 r1",
        ]
    );
    assert_eq!(log["next"], Value::Null);
    let update = &log["entries"][2];
    assert_eq!(update["before"]["enabled"], json!(false));
    assert_eq!(update["after"]["enabled"], json!(true));
    assert_eq!(update["after"]["version"], json!(2));
    assert_eq!(log["entries"][3]["before"], Value::Null);
    assert_eq!(log["entries"][0]["after"], Value::Null);
    assert!(
        log["entries"][0]["at"]
            .as_str()
            .unwrap()
            .parse::<String>()
            .unwrap()
            .contains('T'),
        "at is RFC 3339"
    );

    // By key, two at a time.
    let first = server
        .admin(
            "GET",
            "/v1/environments/production/audit?key=checkout&limit=2",
            &[],
            "",
        )
        .await
        .json();
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let next = first["next"].as_str().unwrap().to_owned();
    let second = server
        .admin(
            "GET",
            &format!("/v1/environments/production/audit?key=checkout&limit=2&before={next}"),
            &[],
            "",
        )
        .await
        .json();
    assert_eq!(second["entries"].as_array().unwrap().len(), 1);
    assert_eq!(second["entries"][0]["action"], json!("create"));
    assert_eq!(second["next"], Value::Null);

    // An environment never written has an empty log.
    let empty = server
        .admin("GET", "/v1/environments/staging/audit", &[], "")
        .await;
    assert_eq!(
        (empty.status, empty.json()),
        (200, json!({"entries": [], "next": null}))
    );
}

#[rstest]
#[case("limit=0")]
#[case("limit=501")]
#[case("limit=x")]
#[case("before=-1")]
#[case("before=abc")]
#[case("key=__meta")]
#[tokio::test]
async fn an_audit_query_out_of_bounds_is_a_400(#[case] query: &str) {
    let server = start(Backend::Embedded).await;
    let answer = server
        .admin(
            "GET",
            &format!("/v1/environments/production/audit?{query}"),
            &[],
            "",
        )
        .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, json!("invalid_request")),
        "{query}: {}",
        answer.body
    );
}

#[tokio::test]
async fn the_audit_log_and_the_explainer_need_an_admin_token() {
    let server = start(Backend::Embedded).await;
    for (method, path) in [
        ("GET", "/v1/environments/production/audit"),
        ("POST", "/v1/environments/production/flags/f/explain"),
    ] {
        let none = server.request(method, path, &[], "{}").await;
        assert_eq!((none.status, none.code()), (401, json!("unauthorized")));
        let client = as_token(&server, "alice", method, path, "{}").await;
        assert_eq!(client.status, 401, "a token's name is not its secret");
    }
}

#[tokio::test]
async fn named_tokens_that_cannot_be_told_apart_refuse_to_start() {
    let config = |tokens: &[&str]| {
        let mut config = support::default_config();
        config.admin_tokens = Some(tokens.iter().map(|token| token.to_string()).collect());
        config
    };
    for (tokens, says) in [
        (&["alice"][..], "name:token"),
        (&["Alice:x"][..], "actor"),
        (&["alice:"][..], "empty"),
        (&["alice:x", "alice:y"][..], "twice"),
        (&["alice:x", "bob:x"][..], "also another"),
        (&["admin:x"][..], "twice"),
    ] {
        let error = flag_server::wiring::state_from(&config(tokens))
            .await
            .expect_err("started");
        let message = format!("{error:#}");
        assert!(
            message.contains("FLAG_ADMIN_TOKENS"),
            "{tokens:?}: {message}"
        );
        assert!(message.contains(says), "{tokens:?}: {message}");
    }
}

#[rstest]
#[tokio::test]
async fn the_explainer_answers_as_ofrep_does_and_says_why(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = start(backend).await;
    server
        .admin(
            "PUT",
            "/v1/environments/production/segments/beta",
            &[],
            r#"{"included": ["u1"]}"#,
        )
        .await;
    let flag = json!({"enabled": true, "defaultVariant": "off", "rules": [
        {"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}], "variant": "on"},
        {"conditions": [{"operator": "in_segment", "value": "beta"}],
         "rollout": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}
    ]});
    let put = server
        .admin(
            "PUT",
            "/v1/environments/production/flags/checkout",
            &[],
            &flag.to_string(),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.body);
    let body = r#"{"context": {"targetingKey": "u1", "plan": "free"}}"#;
    let explained = server
        .admin(
            "POST",
            "/v1/environments/production/flags/checkout/explain",
            &[],
            body,
        )
        .await;
    assert_eq!(explained.status, 200, "{}", explained.body);
    let explained = explained.json();
    let ofrep = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags/checkout",
            &[("Content-Type", "application/json")],
            body,
        )
        .await
        .json();
    for field in ["key", "value", "variant", "reason", "metadata"] {
        assert_eq!(explained[field], ofrep[field], "{field}");
    }
    let why = &explained["explanation"];
    assert_eq!(
        why["rules"][0]["conditions"][0]["outcome"],
        json!("no_match")
    );
    assert_eq!(why["rules"][1]["matched"], json!(true));
    assert_eq!(
        why["rules"][1]["conditions"][0]["segment"]["decidedBy"],
        json!("included")
    );
    assert_eq!(why["split"]["rule"], json!(1));
    let bucket = why["split"]["bucket"].as_f64().unwrap();
    assert!((0.0..100.0).contains(&bucket));
    let slot = why["split"]["slot"].as_u64().unwrap() as usize;
    assert_eq!(
        why["split"]["slots"][slot]["variant"], ofrep["variant"],
        "the slot the bucket fell in is the variant served"
    );

    // An evaluation error is explained too; a missing flag or a bad body is refused.
    let split = json!({"enabled": true, "rules": [
        {"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}], "variant": "off"}],
        "rollout": [{"variant": "on", "weight": 1}]});
    server
        .admin(
            "PUT",
            "/v1/environments/production/flags/split",
            &[],
            &split.to_string(),
        )
        .await;
    let no_key = server
        .admin(
            "POST",
            "/v1/environments/production/flags/split/explain",
            &[],
            r#"{"context": {"plan": 3}}"#,
        )
        .await;
    assert_eq!(no_key.status, 200, "{}", no_key.body);
    let no_key = no_key.json();
    assert_eq!(
        (&no_key["key"], &no_key["errorCode"]),
        (&json!("split"), &json!("TARGETING_KEY_MISSING"))
    );
    assert_eq!(
        no_key["explanation"]["rules"][0]["conditions"][0]["outcome"],
        json!("wrong_type")
    );
    let missing = server
        .admin(
            "POST",
            "/v1/environments/production/flags/nope/explain",
            &[],
            r#"{"context": {}}"#,
        )
        .await;
    assert_eq!((missing.status, missing.code()), (404, json!("not_found")));
    for bad in ["not json", r#"{"context": 3}"#, "{}"] {
        let refused = server
            .admin(
                "POST",
                "/v1/environments/production/flags/checkout/explain",
                &[],
                bad,
            )
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, json!("invalid_request")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn the_ui_is_served_by_the_binary_with_a_strict_policy() {
    let server = start(Backend::Embedded).await;
    let redirect = server.request("GET", "/ui", &[], "").await;
    assert_eq!(
        (redirect.status, redirect.header("location")),
        (308, Some("/ui/"))
    );
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let answer = server.request("GET", path, &[], "").await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(
            answer.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        let policy = answer.header("content-security-policy").unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        // Nothing names another host: no absolute URL at all (the SVG's namespace aside).
        let without_namespace = answer.body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !without_namespace.contains("http://") && !without_namespace.contains("https://"),
            "{path} names another host"
        );
    }
    let page = server.request("GET", "/ui/", &[], "").await.body;
    assert!(
        !page.contains("<script>") && !page.contains(" style="),
        "no inline script or style"
    );
    let missing = server.request("GET", "/ui/secrets.txt", &[], "").await;
    assert_eq!((missing.status, missing.code()), (404, json!("not_found")));
    // The UI is not an API route: no CORS, and the OFREP and management routes are unchanged.
    assert!(
        server.request("GET", "/openapi.json", &[], "").await.json()["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|path| !path.starts_with("/ui"))
    );
}

#[tokio::test]
async fn a_refused_definition_names_its_field() {
    let server = start(Backend::Embedded).await;
    for (body, field) in [
        (
            json!({"rules": [{"conditions": [{"attribute": "a", "operator": "matches", "value": "("}], "variant": "on"}]}),
            "rules[0].conditions[0].value",
        ),
        (
            json!({"rules": [{"conditions": [{"operator": "in_segment", "value": "nope"}], "variant": "on"}]}),
            "rules[0].conditions[0].value",
        ),
        (
            json!({"rollout": [{"variant": "on", "weight": "x"}]}),
            "rollout[0].weight",
        ),
        (
            json!({"prerequisites": [{"flag": "missing", "variants": ["on"]}]}),
            "prerequisites[0].flag",
        ),
    ] {
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
            (400, json!("validation_failed")),
            "{body}"
        );
        assert_eq!(refused.json()["error"]["field"], json!(field), "{body}");
    }
    // Other errors name no field.
    let missing = server
        .admin("GET", "/v1/environments/production/flags/nope", &[], "")
        .await;
    assert_eq!(missing.json()["error"].get("field"), None);
}

#[tokio::test]
async fn an_explainer_body_over_the_management_limit_is_a_413() {
    let server = start(Backend::Embedded).await;
    server
        .put("production", "f", json!({"enabled": true}))
        .await;
    let huge = format!(r#"{{"context": {{"blob": "{}"}}}}"#, "x".repeat(2 << 20));
    let refused = server
        .admin(
            "POST",
            "/v1/environments/production/flags/f/explain",
            &[],
            &huge,
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (413, json!("payload_too_large"))
    );
}
