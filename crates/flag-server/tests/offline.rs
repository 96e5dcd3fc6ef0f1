//! Offline mode over a real socket: `DATABASE_URL=file://…` serves every environment of a flags
//! file, every write answers `409 read_only`, a changed file reaches evaluations at once (through
//! the in-process cache and through Redis), and an invalid file keeps the last valid one,
//! counted in `/metrics`. The binary itself serves a relative `file://` path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::path::Path;
use std::time::Duration;

use flag_fixtures::ScratchDir;
use rstest::rstest;
use serde_json::json;
use support::{Backend, Running, TestServer};

fn flags_file(checkout_on: bool) -> String {
    format!(
        "environments:
  production:
    flags:
      - key: checkout
        enabled: {checkout_on}
        variants: {{on: true, off: false}}
        defaultVariant: on
        offVariant: off
      - key: banner
        enabled: true
        variants: {{blue: '#00f', red: '#f00'}}
        defaultVariant: blue
        offVariant: blue
        rules:
          - conditions: [{{operator: in_segment, value: beta}}]
            variant: red
    segments:
      - key: beta
        included: [u1]
  staging:
    flags:
      - key: checkout
        enabled: true
"
    )
}

/// Replaces `path` as a deployment would: a new file renamed into place.
fn replace(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 10 s");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flags_file_is_served_read_only_and_followed(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let directory = ScratchDir::new().unwrap();
    let path = directory.path().join("flags.yaml");
    std::fs::write(&path, flags_file(false)).unwrap();
    let server = TestServer::start_with(backend, |config| {
        config.database_url = format!("file://{}", path.display());
        // Only the watcher can make the test's deadlines.
        config.file_poll_ms = 3_600_000;
    })
    .await;

    // Every environment of the file, segments included.
    assert_eq!(
        server.evaluate("production", "checkout", "u1").await["value"],
        json!(false)
    );
    assert_eq!(
        server.evaluate("production", "banner", "u1").await["value"],
        json!("#f00")
    );
    assert_eq!(
        server.evaluate("staging", "checkout", "u1").await["value"],
        json!(true)
    );
    let listed = server.admin("GET", "/v1/environments", &[], "").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json()["environments"].as_array().unwrap().len(),
        2,
        "{}",
        listed.body
    );

    // Every write: 409 read_only, naming the file.
    let production = "/v1/environments/production";
    for (method, path, body) in [
        (
            "PUT",
            format!("{production}/flags/new"),
            r#"{"enabled": true}"#,
        ),
        ("DELETE", format!("{production}/flags/checkout"), ""),
        (
            "PUT",
            format!("{production}/segments/beta"),
            r#"{"included": []}"#,
        ),
        ("DELETE", format!("{production}/segments/beta"), ""),
        ("PUT", format!("{production}/import"), r#"{"flags": []}"#),
        (
            "POST",
            format!("{production}/copy"),
            r#"{"from": "staging"}"#,
        ),
        ("DELETE", "/v1/environments/staging".to_owned(), ""),
    ] {
        let refused = server.admin(method, &path, &[], body).await;
        assert_eq!(
            (refused.status, refused.code()),
            (409, json!("read_only")),
            "{method} {path}: {}",
            refused.body
        );
        assert!(refused.body.contains("flags.yaml"), "{}", refused.body);
    }
    // Reads work as ever: export, audit (empty: nothing is written here).
    let export = server
        .admin("GET", &format!("{production}/export"), &[], "")
        .await;
    assert_eq!(export.json()["flags"].as_array().unwrap().len(), 2);
    let audit = server
        .admin("GET", &format!("{production}/audit"), &[], "")
        .await;
    assert_eq!(audit.json()["entries"], json!([]), "{}", audit.body);

    // A changed file reaches evaluations (through the cache, Redis's included) at once.
    let bulk = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            &[("X-Environment", "production")],
            r#"{"context": {"targetingKey": "u2"}}"#,
        )
        .await;
    let etag = bulk.header("etag").unwrap().to_owned();
    replace(&path, &flags_file(true));
    eventually("the changed file is served", async || {
        server.evaluate("production", "checkout", "u1").await["value"] == json!(true)
    })
    .await;
    let bulk = server
        .request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            &[("X-Environment", "production"), ("If-None-Match", &etag)],
            r#"{"context": {"targetingKey": "u2"}}"#,
        )
        .await;
    assert_eq!(bulk.status, 200, "a new revision, a new ETag");
    assert_eq!(
        server
            .metric("flag_file_reloads_total{outcome=\"applied\"}")
            .await,
        2.0
    );
    assert_eq!(server.metric("flag_file_valid").await, 1.0);

    // An invalid file: counted, logged, and the last valid one stays.
    replace(
        &path,
        "environments:\n  production:\n    flags:\n      - key: checkout\n        defaultVariant: nowhere\n",
    );
    eventually("the invalid file is counted", async || {
        server
            .metric("flag_file_reloads_total{outcome=\"rejected\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(server.metric("flag_file_valid").await, 0.0);
    assert_eq!(
        server.evaluate("production", "checkout", "u1").await["value"],
        json!(true)
    );
    assert_eq!(
        server.evaluate("staging", "checkout", "u1").await["value"],
        json!(true)
    );
}

/// The binary on a relative `file://` path in its working directory, a flagd file there.
#[test]
fn the_binary_serves_a_flagd_file_by_a_relative_url() {
    let directory = ScratchDir::new().unwrap();
    let flagd =
        include_str!("../../flag-core/tests/vectors/flagd/samples/example_flags.flagd.json");
    std::fs::write(directory.path().join("flags.flagd.json"), flagd).unwrap();
    let mut server = Running::start_in(directory, &[("DATABASE_URL", "file://flags.flagd.json")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address: std::net::SocketAddr = server.address.parse().unwrap();
    let answer = runtime.block_on(support::request(
        address,
        "POST",
        "/ofrep/v1/evaluate/flags/isColorYellow",
        &[],
        r#"{"context": {"color": "yellow"}}"#,
    ));
    assert_eq!(answer.json()["value"], json!(true), "{}", answer.body);
    let ready = runtime.block_on(support::request(address, "GET", "/readyz", &[], ""));
    assert_eq!(ready.status, 200, "{}", ready.body);
    server.terminate();
    let _ = server.child.wait();
}
