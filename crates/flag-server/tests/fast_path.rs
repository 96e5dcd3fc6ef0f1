//! The OFREP fast path answers exactly as the router does: the same requests, valid and not, sent
//! over real sockets to one server with the fast path (`App::new`) and one without it
//! (`App::from(router(..))`), both on the same service, get the same statuses, headers and
//! bodies, and are counted the same in `flag_http_requests_total`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::sync::Arc;

use flag_server::app::{App, router};
use flag_server::metrics::HttpMetrics;
use flag_server::state::AppState;
use serde_json::json;
use support::{Backend, Reply, TestServer, request};

/// The context most requests send.
const CONTEXT: &str = r#"{"context":{"targetingKey":"user-1","plan":"pro"}}"#;

/// One request of the comparison: method, path, headers, body.
type Sent = (&'static str, String, Vec<(&'static str, String)>, String);

fn post(path: &str, headers: &[(&'static str, &str)], body: &str) -> Sent {
    (
        "POST",
        path.to_owned(),
        headers
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect(),
        body.to_owned(),
    )
}

/// A reply without the headers that differ between two answers given at different times.
fn comparable(reply: &Reply) -> (u16, Vec<(String, String)>, String) {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| name != "date")
        .cloned()
        .collect();
    headers.sort();
    (reply.status, headers, reply.body.clone())
}

/// The `flag_http_requests_total` samples of the OFREP evaluation routes.
async fn evaluation_counts(address: std::net::SocketAddr) -> Vec<String> {
    let reply = request(address, "GET", "/metrics", &[], "").await;
    let mut counts: Vec<String> = reply
        .body
        .lines()
        .filter(|line| {
            line.starts_with("flag_http_requests_total")
                && line.contains("route=\"/ofrep/v1/evaluate")
        })
        .map(str::to_owned)
        .collect();
    counts.sort();
    counts
}

#[tokio::test]
async fn the_fast_path_answers_and_counts_exactly_as_the_router() {
    let fast = TestServer::start_with(Backend::Embedded, |config| {
        config.client_tokens = Some(vec![
            "every-secret".to_owned(),
            "staging:staging-secret".to_owned(),
        ]);
        config.cors_origins = Some(vec!["http://app.test".to_owned()]);
        config.max_context_bytes = 512;
    })
    .await;
    fast.put("production", "on-flag", json!({"enabled": true}))
        .await;
    fast.put(
        "production",
        "rollout",
        json!({
            "enabled": true,
            "variants": {"a": 1, "b": 2},
            "defaultVariant": "a",
            "offVariant": "a",
            "rollout": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]
        }),
    )
    .await;
    fast.put(
        "production",
        "ruled",
        json!({
            "enabled": true,
            "defaultVariant": "off",
            "rules": [{"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}], "variant": "on"}]
        }),
    )
    .await;

    // The same service behind the router alone, with metrics of its own.
    let routed_state = AppState {
        http_metrics: Arc::new(HttpMetrics::default()),
        ..fast.state.clone()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let routed = listener.local_addr().unwrap();
    tokio::spawn(flag_server::serve::serve(
        listener,
        App::from(router(routed_state)),
        flag_server::wiring::connection_limits(&fast.config).unwrap(),
        std::future::pending(),
    ));

    let token = "Bearer every-secret";
    let auth: &[(&str, &str)] = &[("Authorization", token)];
    let single = "/ofrep/v1/evaluate/flags/on-flag";
    let bulk = "/ofrep/v1/evaluate/flags";
    let bulk_answer = request(fast.address, "POST", bulk, auth, CONTEXT).await;
    assert_eq!(bulk_answer.status, 200);
    let etag = bulk_answer.header("etag").unwrap().to_owned();
    let big = format!(
        r#"{{"context":{{"targetingKey":"user-1","pad":"{}"}}}}"#,
        "x".repeat(600)
    );
    let sent: Vec<Sent> = vec![
        post(single, auth, CONTEXT),
        post("/ofrep/v1/evaluate/flags/ruled", auth, CONTEXT),
        post("/ofrep/v1/evaluate/flags/rollout", auth, CONTEXT),
        post(
            "/ofrep/v1/evaluate/flags/rollout",
            auth,
            r#"{"context":{"plan":"pro"}}"#,
        ),
        post("/ofrep/v1/evaluate/flags/missing", auth, CONTEXT),
        post("/ofrep/v1/evaluate/flags/Not_A_Key!", auth, CONTEXT),
        post("/ofrep/v1/evaluate/flags/%6Fn-flag", auth, CONTEXT),
        post(single, auth, "not json"),
        post(single, auth, "[]"),
        post(single, auth, r#"{"context":7}"#),
        post(single, auth, r#"{"context":{"targetingKey":7}}"#),
        post(single, auth, ""),
        post(single, &[], CONTEXT),
        post(single, &[("Authorization", "Bearer wrong")], CONTEXT),
        post(single, &[("X-API-Key", "every-secret")], CONTEXT),
        post(
            single,
            &[("Authorization", token), ("X-Environment", "Bad Env")],
            CONTEXT,
        ),
        post(
            single,
            &[("Authorization", "Bearer staging-secret")],
            CONTEXT,
        ),
        post(
            single,
            &[
                ("Authorization", "Bearer staging-secret"),
                ("X-Environment", "production"),
            ],
            CONTEXT,
        ),
        post(single, auth, &big),
        post(
            single,
            &[("Authorization", token), ("Origin", "http://app.test")],
            CONTEXT,
        ),
        post(
            single,
            &[("Authorization", token), ("Origin", "http://other.test")],
            CONTEXT,
        ),
        post(bulk, auth, CONTEXT),
        post(
            bulk,
            &[("Authorization", token), ("If-None-Match", &etag)],
            CONTEXT,
        ),
        post(
            bulk,
            &[("Authorization", token), ("If-None-Match", "\"other\"")],
            CONTEXT,
        ),
        post(
            bulk,
            &[("Authorization", token), ("If-None-Match", &etag)],
            r#"{"context":{"targetingKey":"user-2"}}"#,
        ),
        post("/ofrep/v1/evaluate/flags?flagConfigEtag=1", auth, CONTEXT),
        post(bulk, auth, "{"),
        post(bulk, auth, r#"{"context":[]}"#),
        post(bulk, &[], CONTEXT),
        post(bulk, auth, &big),
        post("/ofrep/v1/evaluate/flags/", auth, CONTEXT),
        (
            "GET",
            single.to_owned(),
            vec![("Authorization", token.to_owned())],
            String::new(),
        ),
    ];
    for (method, path, headers, body) in &sent {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let through_fast = request(fast.address, method, path, &headers, body).await;
        let through_router = request(routed, method, path, &headers, body).await;
        assert_eq!(
            comparable(&through_fast),
            comparable(&through_router),
            "{method} {path} {headers:?} {body}"
        );
    }

    // The bulk request sampled for its ETag went to the fast server only.
    let mut fast_counts = evaluation_counts(fast.address).await;
    let routed_counts = evaluation_counts(routed).await;
    let sampled = fast_counts
        .iter()
        .position(|line| {
            line.contains("route=\"/ofrep/v1/evaluate/flags\"") && line.contains("status=\"200\"")
        })
        .expect("bulk 200s are counted");
    let (series, count) = fast_counts[sampled].rsplit_once(' ').unwrap();
    let count: u64 = count.parse().unwrap();
    fast_counts[sampled] = format!("{series} {}", count - 1);
    assert_eq!(fast_counts, routed_counts);
    assert!(
        routed_counts.len() >= 8,
        "the comparison covers many statuses: {routed_counts:?}"
    );
}
