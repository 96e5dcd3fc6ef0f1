//! A stored flag that cannot be read affects that flag only, over real sockets: its single
//! evaluation is a `500 GENERAL` (with its key), bulk evaluation serves every other flag with a
//! per-flag error for it, management lists it with an `error`, it is counted once, and writing
//! it again replaces it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use flag_core::time::OffsetDateTime;
use flag_core::{Environment, FeatureFlag, FlagKey, Precondition};
use serde_json::json;
use support::{Backend, TestServer};

#[tokio::test]
async fn an_unreadable_stored_flag_affects_that_flag_only() {
    let server = TestServer::start(Backend::Embedded).await;
    let production = Environment::parse("production").unwrap();
    server
        .put("production", "fine", json!({"enabled": true}))
        .await;
    // What a repository hands over for a row it cannot read (stored, and read back, as such).
    server
        .service()
        .upsert(
            &production,
            FeatureFlag::unreadable(
                FlagKey::parse("broken").unwrap(),
                0,
                OffsetDateTime::UNIX_EPOCH,
                "expected value at line 1 column 2",
            ),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    let body = r#"{"context":{"targetingKey":"u"}}"#;
    for _ in 0..3 {
        let broken = server
            .request("POST", "/ofrep/v1/evaluate/flags/broken", &[], body)
            .await;
        assert_eq!(broken.status, 500, "{}", broken.body);
        assert_eq!(broken.json()["errorCode"], json!("GENERAL"));
        assert_eq!(broken.json()["key"], json!("broken"));
    }
    let fine = server
        .request("POST", "/ofrep/v1/evaluate/flags/fine", &[], body)
        .await;
    assert_eq!(fine.status, 200, "{}", fine.body);

    let bulk = server
        .request("POST", "/ofrep/v1/evaluate/flags", &[], body)
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    let flags = bulk.json()["flags"].clone();
    assert_eq!(flags[0]["key"], json!("broken"));
    assert_eq!(flags[0]["errorCode"], json!("GENERAL"));
    assert_eq!(flags[1]["key"], json!("fine"));
    assert_eq!(flags[1]["value"], json!(true));

    let listed = server
        .admin("GET", "/v1/environments/production/flags", &[], "")
        .await;
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert!(listed["flags"][0]["error"].as_str().is_some(), "{listed}");
    assert!(listed["flags"][1].get("error").is_none(), "{listed}");
    assert_eq!(server.metric("flag_unreadable_flags_total").await, 1.0);

    let fixed = server
        .admin(
            "PUT",
            "/v1/environments/production/flags/broken",
            &[],
            r#"{"enabled": true}"#,
        )
        .await;
    assert_eq!(fixed.status, 200, "{}", fixed.body);
    let broken = server
        .request("POST", "/ofrep/v1/evaluate/flags/broken", &[], body)
        .await;
    assert_eq!(broken.status, 200, "{}", broken.body);
    // A definition may not claim the server's `error`.
    let refused = server
        .admin(
            "PUT",
            "/v1/environments/production/flags/broken",
            &[],
            r#"{"error": "made up"}"#,
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
}
