//! Flags as files over a real socket, on the embedded default and on Redis + Postgres: export
//! (JSON and YAML), import (merge, replace, dry run, `If-Match`, every problem with its path),
//! copy between environments with the segments the flags need, and evaluations that see an
//! import at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use rstest::rstest;
use serde_json::{Value, json};
use support::{Backend, TestServer};

const STAGING: &str = "/v1/environments/staging";
const PRODUCTION: &str = "/v1/environments/production";

async fn seed(server: &TestServer) {
    let beta = server
        .admin(
            "PUT",
            &format!("{STAGING}/segments/beta"),
            &[],
            r#"{"included": ["u1"]}"#,
        )
        .await;
    assert_eq!(beta.status, 201, "{}", beta.body);
    for (key, body) in [
        ("plain", json!({"enabled": true})),
        (
            "targeted",
            json!({"enabled": true, "defaultVariant": "off", "rules": [
                {"conditions": [{"operator": "in_segment", "value": "beta"}], "variant": "on"}]}),
        ),
    ] {
        let put = server
            .admin(
                "PUT",
                &format!("{STAGING}/flags/{key}"),
                &[],
                &body.to_string(),
            )
            .await;
        assert_eq!(put.status, 201, "{}", put.body);
    }
}

#[rstest]
#[tokio::test]
async fn an_export_imports_elsewhere_as_one_change(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    seed(&server).await;
    let exported = server
        .admin("GET", &format!("{STAGING}/export"), &[], "")
        .await;
    assert_eq!(exported.status, 200);
    assert_eq!(exported.header("content-type"), Some("application/json"));
    let document = exported.json();
    assert_eq!(document["environment"], json!("staging"));
    assert_eq!(document["revision"], json!(3));
    let keys: Vec<&str> = document["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|flag| flag["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["plain", "targeted"]);
    assert_eq!(document["segments"][0]["key"], json!("beta"));

    // Before: production does not exist; OFREP knows nothing there.
    assert_eq!(
        server.evaluate("production", "targeted", "u1").await["errorCode"],
        json!("FLAG_NOT_FOUND")
    );
    let dry = server
        .admin(
            "PUT",
            &format!("{PRODUCTION}/import?dryRun=true"),
            &[],
            &exported.body,
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(
        dry.json(),
        json!({"environment": "production", "revision": 0, "dryRun": true, "applied": false,
               "created": ["plain", "targeted"], "updated": [], "deleted": [], "unchanged": [],
               "segments": {"created": ["beta"], "updated": [], "deleted": [], "unchanged": []}})
    );
    let environments = server
        .admin("GET", "/v1/environments", &[], "")
        .await
        .json();
    assert_eq!(
        environments["environments"].as_array().unwrap().len(),
        1,
        "a dry run creates nothing"
    );

    let imported = server
        .admin(
            "PUT",
            &format!("{PRODUCTION}/import"),
            &[("If-Match", "\"0\"")],
            &exported.body,
        )
        .await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(imported.json()["revision"], json!(1), "one revision bump");
    assert_eq!(imported.json()["applied"], json!(true));
    // Seen by the very next evaluation.
    let served = server.evaluate("production", "targeted", "u1").await;
    assert_eq!(
        (&served["variant"], &served["reason"]),
        (&json!("on"), &json!("TARGETING_MATCH"))
    );
    // Audited: one entry per flag and segment, at the import's revision.
    let log = server
        .admin("GET", &format!("{PRODUCTION}/audit"), &[], "")
        .await
        .json();
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(
        entries
            .iter()
            .all(|entry| entry["revision"] == json!(1) && entry["action"] == json!("create"))
    );

    // Again: nothing changes, nothing bumps; a stale If-Match is refused.
    let again = server
        .admin("PUT", &format!("{PRODUCTION}/import"), &[], &exported.body)
        .await
        .json();
    assert_eq!(
        (&again["applied"], &again["revision"], &again["unchanged"]),
        (&json!(false), &json!(1), &json!(["plain", "targeted"]))
    );
    let stale = server
        .admin(
            "PUT",
            &format!("{PRODUCTION}/import"),
            &[("If-Match", "\"0\"")],
            &exported.body,
        )
        .await;
    assert_eq!(
        (stale.status, stale.code()),
        (412, json!("version_conflict"))
    );
}

#[rstest]
#[tokio::test]
async fn yaml_goes_both_ways_and_replace_deletes_the_rest(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    seed(&server).await;
    let yaml = server
        .admin(
            "GET",
            &format!("{STAGING}/export"),
            &[("Accept", "application/yaml")],
            "",
        )
        .await;
    assert_eq!(yaml.header("content-type"), Some("application/yaml"));
    assert!(yaml.body.contains("environment: staging"), "{}", yaml.body);
    // Production holds a flag of its own that the document does not.
    server
        .put("production", "legacy", json!({"enabled": true}))
        .await;
    let replaced = server
        .admin(
            "PUT",
            &format!("{PRODUCTION}/import?mode=replace"),
            &[("Content-Type", "application/yaml")],
            &yaml.body,
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(replaced.json()["deleted"], json!(["legacy"]));
    assert_eq!(
        server.evaluate("production", "legacy", "u1").await["errorCode"],
        json!("FLAG_NOT_FOUND")
    );
    let listed = server
        .admin("GET", &format!("{PRODUCTION}/flags"), &[], "")
        .await
        .json();
    assert_eq!(listed["flags"].as_array().unwrap().len(), 2);
}

/// flagd's own sample file (YAML) imports over HTTP and OFREP clients get flagd's answers; a
/// file with flags that do not map is refused whole, each flag at its path.
#[tokio::test]
async fn flagd_files_import_and_answer_as_flagd() {
    let server = TestServer::start(Backend::Embedded).await;
    let vectors = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../flag-core/tests/vectors/flagd"
    );
    let sample =
        std::fs::read_to_string(format!("{vectors}/samples/example_flags.flagd.yaml")).unwrap();
    let imported = server
        .admin(
            "PUT",
            "/v1/environments/flagd/import",
            &[("Content-Type", "application/yaml")],
            &sample,
        )
        .await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(imported.json()["created"].as_array().unwrap().len(), 8);
    let ask = |key: &'static str, context: Value| {
        let server = &server;
        async move {
            server
                .request(
                    "POST",
                    &format!("/ofrep/v1/evaluate/flags/{key}"),
                    &[("X-Environment", "flagd")],
                    &json!({ "context": context }).to_string(),
                )
                .await
                .json()
        }
    };
    let yellow = ask("isColorYellow", json!({"color": "yellow"})).await;
    assert_eq!(
        (&yellow["value"], &yellow["reason"]),
        (&json!(true), &json!("TARGETING_MATCH"))
    );
    let fib = ask("fibAlgo", json!({"email": "ann@example.com"})).await;
    assert_eq!(
        (&fib["value"], &fib["reason"]),
        (&json!("recursive"), &json!("DEFAULT"))
    );
    let header = ask(
        "headerColor",
        json!({"targetingKey": "t", "email": "ann@faas.com"}),
    )
    .await;
    assert_eq!(header["reason"], json!("SPLIT"), "{header}");
    // The testbed holds flags that do not map: nothing is imported, every one is named.
    let testbed = std::fs::read_to_string(format!("{vectors}/testbed/testkit-flags.json")).unwrap();
    let refused = server
        .admin("PUT", "/v1/environments/testbed/import", &[], &testbed)
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (400, json!("validation_failed")),
        "{}",
        refused.body
    );
    let problems = refused.json()["error"]["problems"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        problems
            .iter()
            .any(|problem| problem["path"] == "flags.disabled-boolean-flag.state")
    );
    assert!(
        problems.iter().any(
            |problem| problem["path"] == "flags.fractional-flag.targeting.fractional[0].cat[1]"
        )
    );
    let listed = server
        .admin("GET", "/v1/environments/testbed/flags", &[], "")
        .await;
    assert_eq!(listed.json()["flags"], json!([]), "{}", listed.body);
}

#[tokio::test]
async fn an_invalid_document_answers_every_problem_and_changes_nothing() {
    let server = TestServer::start(Backend::Embedded).await;
    server
        .put("production", "kept", json!({"enabled": true}))
        .await;
    for (body, paths) in [
        (
            json!({"flags": [{"enabled": true}, {"key": "b", "rollout": [{"variant": "zz", "weight": 1}]}, {"key": "__x"}]}),
            vec![
                "flags[0].key",
                "flags[1].rollout[0].variant",
                "flags[2].key",
            ],
        ),
        (
            json!({"flags": [
                {"key": "c", "rules": [{"conditions": [{"operator": "in_segment", "value": "nope"}], "variant": "on"}]},
                {"key": "d", "prerequisites": [{"flag": "missing", "variants": ["on"]}]}]}),
            vec![
                "flags[0].rules[0].conditions[0].value",
                "flags[1].prerequisites[0].flag",
            ],
        ),
        (
            // Both kinds at once: an item that cannot be read, and a reference of one that can.
            json!({"flags": [
                {"enabled": true},
                {"key": "e", "rules": [{"conditions": [{"operator": "in_segment", "value": "nope"}], "variant": "on"}]}]}),
            vec!["flags[0].key", "flags[1].rules[0].conditions[0].value"],
        ),
        (
            json!({"flags": {"a": {"state": "ENABLED"}}}),
            vec!["flags.a.variants"],
        ),
        (json!({"flags": [], "extra": 1}), vec!["extra"]),
        (json!([1]), vec!["$"]),
    ] {
        let refused = server
            .admin(
                "PUT",
                &format!("{PRODUCTION}/import?mode=replace"),
                &[],
                &body.to_string(),
            )
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, json!("validation_failed")),
            "{body}: {}",
            refused.body
        );
        let found: Vec<String> = refused.json()["error"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|problem| problem["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(found, paths, "{body}");
    }
    let not_json = server
        .admin("PUT", &format!("{PRODUCTION}/import"), &[], "{")
        .await;
    assert_eq!(not_json.status, 400);
    for query in ["mode=all", "dryRun=maybe"] {
        let refused = server
            .admin("PUT", &format!("{PRODUCTION}/import?{query}"), &[], "{}")
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, json!("invalid_request")),
            "{query}"
        );
    }
    let listed = server
        .admin("GET", &format!("{PRODUCTION}/flags"), &[], "")
        .await
        .json();
    assert_eq!(listed["revision"], json!(1), "nothing was written");
}

#[rstest]
#[tokio::test]
async fn a_copy_brings_the_segments_its_flags_need(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    seed(&server).await;
    let copied = server
        .admin(
            "POST",
            &format!("{PRODUCTION}/copy"),
            &[],
            r#"{"from": "staging", "keys": ["targeted"]}"#,
        )
        .await;
    assert_eq!(copied.status, 200, "{}", copied.body);
    assert_eq!(copied.json()["created"], json!(["targeted"]));
    assert_eq!(copied.json()["segments"]["created"], json!(["beta"]));
    assert_eq!(
        server.evaluate("production", "targeted", "u1").await["variant"],
        json!("on")
    );
    assert_eq!(
        server.evaluate("production", "plain", "u1").await["errorCode"],
        json!("FLAG_NOT_FOUND"),
        "only the keys asked for"
    );
    // All of them, as a dry run: only `plain` is new.
    let all = server
        .admin(
            "POST",
            &format!("{PRODUCTION}/copy?dryRun=true"),
            &[],
            r#"{"from": "staging"}"#,
        )
        .await
        .json();
    assert_eq!(
        (&all["created"], &all["unchanged"]),
        (&json!(["plain"]), &json!(["targeted"]))
    );
    for (body, status) in [
        (r#"{"from": "staging", "keys": ["nope"]}"#, 400),
        (r#"{"from": "Not An Env"}"#, 400),
        (r#"{"keys": []}"#, 400),
        (r#"{"from": "staging", "other": 1}"#, 400),
    ] {
        let refused = server
            .admin("POST", &format!("{PRODUCTION}/copy"), &[], body)
            .await;
        assert_eq!(refused.status, status, "{body}: {}", refused.body);
    }
}

/// The command line, against the database directly: import a file, export it back, refuse a
/// document with its problems (exit status 1, each problem with its path).
#[test]
fn the_command_line_imports_and_exports_files() {
    let directory = flag_fixtures::ScratchDir::new().unwrap();
    let database = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("flags.db").display()
    );
    let run = |arguments: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flag-server"))
            .args(arguments)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &database)
            .env("CACHE_BACKEND", "memory")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let document = directory.path().join("flags.json");
    std::fs::write(
        &document,
        json!({"flags": [{"key": "a", "enabled": true},
                         {"key": "b", "rules": [{"conditions": [{"operator": "in_segment", "value": "s"}], "variant": "on"}]}],
               "segments": [{"key": "s", "included": ["u1"]}]})
        .to_string(),
    )
    .unwrap();
    let file = document.to_str().unwrap();
    let dry = run(&["import", "--env", "staging", file, "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        (&dry["applied"], &dry["created"]),
        (&json!(false), &json!(["a", "b"]))
    );
    let imported = run(&["import", "--env", "staging", file]);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let imported: Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(
        (&imported["applied"], &imported["revision"]),
        (&json!(true), &json!(1))
    );

    let yaml = directory.path().join("staging.yaml");
    let exported = run(&[
        "export",
        "--env",
        "staging",
        "--out",
        yaml.to_str().unwrap(),
    ]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(text.starts_with("environment: staging"), "{text}");
    // The export imports back as it is: nothing changes.
    let again = run(&[
        "import",
        "--env",
        "staging",
        yaml.to_str().unwrap(),
        "--mode",
        "replace",
    ]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (&again["applied"], &again["unchanged"]),
        (&json!(false), &json!(["a", "b"]))
    );
    let to_stdout = run(&["export", "--env", "staging"]);
    let to_stdout: Value = serde_json::from_slice(&to_stdout.stdout).unwrap();
    assert_eq!(to_stdout["revision"], json!(1));

    let bad = directory.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"flags": [{"key": "x", "prerequisites": [{"flag": "nope", "variants": ["on"]}]}, {"enabled": true}]}"#,
    )
    .unwrap();
    let refused = run(&["import", "--env", "staging", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("flags[1].key"), "{said}");
}

/// A document is a whole environment: past the 1 MiB of a flag's body, up to 32 MiB.
#[tokio::test]
async fn a_document_may_be_larger_than_a_flag_body() {
    let server = TestServer::start(Backend::Embedded).await;
    let large = json!({"flags": [{"key": "a", "description": "x".repeat(3 << 19)}]}).to_string();
    assert!(large.len() > 1 << 20);
    let imported = server
        .admin("PUT", &format!("{PRODUCTION}/import"), &[], &large)
        .await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    let too_large = format!(
        "{{\"flags\": [], \"environment\": \"{}\"}}",
        "x".repeat(33 << 20)
    );
    let refused = server
        .admin("PUT", &format!("{PRODUCTION}/import"), &[], &too_large)
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (413, json!("payload_too_large"))
    );
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("32 MiB")
    );
}
