//! Malformed input at every endpoint: malformed JSON, wrong types, huge and Unicode keys, bad
//! environment names, odd headers and oversized bodies. Whatever arrives, the answer is never a
//! `5xx`, every error carries a JSON body in its API's shape, the server stays up, and data it
//! was not asked to change stays as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use flag_server::routes::ROUTES;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Backend, TestServer};

/// Path segments: valid ones, the contract's bad environment names, huge, Unicode and random.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("production".to_owned()),
        Just("staging".to_owned()),
        Just("flag-a".to_owned()),
        Just("*".to_owned()),
        Just(":".to_owned()),
        Just("{".to_owned()),
        Just(String::new()),
        Just("a".repeat(64)),
        Just("a".repeat(65)),
        Just("k".repeat(129)),
        Just("k".repeat(5_000)),
        Just("__meta".to_owned()),
        Just("Production".to_owned()),
        Just("prod.eu".to_owned()),
        Just("ünïcödé-🚩".to_owned()),
        Just("..".to_owned()),
        Just("%00".to_owned()),
        "\\PC{0,24}",
    ]
}

/// Percent-encodes what may not stand in a path as is; keeps `:`, `*` and the like raw.
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char);
            }
            b':' | b'*' | b'@' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'+' | b',' | b';'
            | b'=' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A request line: mostly a route's own method on its template with the parameters filled from
/// `segment`, sometimes any method, sometimes a path no route has.
fn request_line() -> impl Strategy<Value = (&'static str, String)> {
    let fill = |template: &str, env: &str, key: &str| {
        template
            .replace("{env}", &encode(env))
            .replace("{key}", &encode(key))
    };
    prop_oneof![
        8 => (proptest::sample::select(ROUTES.to_vec()), segment(), segment())
            .prop_map(move |((method, template), env, key)| (method, fill(template, &env, &key))),
        1 => (method(), proptest::sample::select(ROUTES.to_vec()), segment(), segment())
            .prop_map(move |(method, (_, template), env, key)| (method, fill(template, &env, &key))),
        1 => (method(), proptest::collection::vec(segment(), 0..5)).prop_map(|(method, segments)| {
            let encoded: Vec<String> = segments.iter().map(|segment| encode(segment)).collect();
            (method, format!("/{}", encoded.join("/")))
        }),
    ]
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("context".to_owned()),
                    Just("targetingKey".to_owned()),
                    Just("enabled".to_owned()),
                    Just("variants".to_owned()),
                    Just("rules".to_owned()),
                    Just("rollout".to_owned()),
                    Just("defaultVariant".to_owned()),
                    Just("prerequisites".to_owned()),
                    Just("bucketBy".to_owned()),
                    Just("included".to_owned()),
                    Just("excluded".to_owned()),
                    Just("operator".to_owned()),
                    Just("attribute".to_owned()),
                    Just("value".to_owned()),
                    "\\PC{0,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A request body whose `Debug` (what proptest prints for a failing case) is cut short.
#[derive(Clone)]
struct Body(String);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({} bytes)", shorten(&self.0), self.0.len())
    }
}

/// The first 200 characters.
fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Request bodies: nothing, broken JSON, JSON of the wrong shape, plausible flags and contexts,
/// deep nesting, and (rarely) more than 1 MiB.
fn body() -> impl Strategy<Value = Body> {
    let text = prop_oneof![
        3 => Just(String::new()),
        2 => Just("{not json".to_owned()),
        1 => Just("\u{feff}{}".to_owned()),
        1 => Just("{\"context\":{}}garbage".to_owned()),
        1 => Just(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
        1 => Just(format!("{{\"context\":{{\"targetingKey\":\"{}\"}}}}", "ü".repeat(100_000))),
        1 => Just("x".repeat((1 << 20) + 1)),
        4 => json_value().prop_map(|value| value.to_string()),
        4 => json_value().prop_map(|context| json!({"context": context}).to_string()),
        3 => (any::<bool>(), json_value(), json_value()).prop_map(|(enabled, variants, rules)| {
            json!({"enabled": enabled, "variants": variants, "rules": rules}).to_string()
        }),
        2 => (any::<bool>(), "\\PC{0,16}").prop_map(|(enabled, description)| {
            json!({"enabled": enabled, "description": description, "metadata": {"ü": "🚩"}}).to_string()
        }),
        3 => (operator(), json_value(), json_value(), json_value()).prop_map(
            |(operator, attribute, value, bucket_by)| {
                json!({"enabled": true, "bucketBy": bucket_by,
                       "prerequisites": [{"flag": "keep", "variants": [value.clone()]}],
                       "rules": [{"conditions": [{"attribute": attribute, "operator": operator, "value": value}],
                                  "rollout": [{"variant": "on", "weight": 1}]}]})
                .to_string()
            }
        ),
        2 => (operator(), json_value(), json_value(), json_value()).prop_map(
            |(operator, included, value, excluded)| {
                json!({"included": included, "excluded": excluded,
                       "rules": [{"conditions": [{"attribute": "a", "operator": operator, "value": value}]}]})
                .to_string()
            }
        ),
        1 => "\\PC{0,64}",
    ];
    text.prop_map(Body)
}

/// Operators, the new ones weighted up, with a few that do not exist.
fn operator() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("semver_gte".to_owned()),
        Just("semver_caret".to_owned()),
        Just("matches".to_owned()),
        Just("in_segment".to_owned()),
        Just("not_in_segment".to_owned()),
        Just("equals".to_owned()),
        Just("in".to_owned()),
        Just("like".to_owned()),
        "\\PC{0,10}",
    ]
}

/// Headers: with or without the admin token, odd environments, preconditions and content types.
fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let authorization = prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {ADMIN_TOKEN}"))),
        Just(Some(format!("Bearer {ADMIN_TOKEN}"))),
        Just(Some(format!("Bearer {ADMIN_TOKEN}"))),
        Just(Some("Bearer wrong".to_owned())),
        Just(Some("Basic abc".to_owned())),
    ];
    let environment = prop_oneof![
        3 => Just(None),
        1 => Just(Some("staging".to_owned())),
        1 => Just(Some("*".to_owned())),
        1 => Just(Some("a".repeat(65))),
        1 => Just(Some(String::new())),
        1 => Just(Some("{prod}".to_owned())),
    ];
    let precondition = prop_oneof![
        3 => Just(None),
        1 => Just(Some(("If-Match", "\"1\"".to_owned()))),
        1 => Just(Some(("If-Match", "*".to_owned()))),
        1 => Just(Some(("If-Match", "not-a-version".to_owned()))),
        1 => Just(Some(("If-Match", "\"99999999999999999999999\"".to_owned()))),
        1 => Just(Some(("If-None-Match", "*".to_owned()))),
        1 => Just(Some(("If-None-Match", "\"abc\"".to_owned()))),
    ];
    let content_type = prop_oneof![
        Just(None),
        Just(Some("text/plain".to_owned())),
        Just(Some("application/x-www-form-urlencoded".to_owned())),
    ];
    (authorization, environment, precondition, content_type).prop_map(
        |(authorization, environment, precondition, content_type)| {
            let mut headers = Vec::new();
            if let Some(value) = authorization {
                headers.push(("Authorization", value));
            }
            if let Some(value) = environment {
                headers.push(("X-Environment", value));
            }
            if let Some((name, value)) = precondition {
                headers.push((name, value));
            }
            if let Some(value) = content_type {
                headers.push(("Content-Type", value));
            }
            headers
        },
    )
}

fn method() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"])
}

/// The environment and flag the generated requests never name: it must survive them all.
const KEPT_ENV: &str = "kept";

/// Checks one answer: below 500, and an error carries a JSON body of its API's shape.
fn check(method: &str, path: &str, status: u16, body: &str) -> Result<(), TestCaseError> {
    let path = shorten(path);
    let shown = shorten(body);
    prop_assert!(status < 500, "{method} {path} -> {status} {shown}");
    if status >= 400 {
        let parsed: Value = serde_json::from_str(body).map_err(|error| {
            TestCaseError::fail(format!("{method} {path} -> {status}: {error}: {shown:?}"))
        })?;
        let shaped = parsed["errorCode"].is_string() && parsed["errorDetails"].is_string()
            || parsed["error"]["code"].is_string() && parsed["error"]["message"].is_string();
        prop_assert!(shaped, "{method} {path} -> {status} {shown}");
    }
    Ok(())
}

fn run(backend: Backend, cases: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::start(backend));
    let kept = json!({"enabled": true, "variants": {"a": "kept-value", "b": "x"}, "defaultVariant": "a", "offVariant": "b"});
    runtime.block_on(server.put(KEPT_ENV, "keep", kept));

    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(request_line(), headers(), body()),
            |((method, path), headers, body)| {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(name, value)| (*name, value.as_str()))
                    .collect();
                let reply = runtime.block_on(server.request(method, &path, &headers, &body.0));
                check(method, &path, reply.status, &reply.body)
            },
        )
        .unwrap();

    runtime.block_on(async {
        let health = server.request("GET", "/healthz", &[], "").await;
        assert_eq!(health.status, 200);
        let kept = server
            .request(
                "POST",
                "/ofrep/v1/evaluate/flags/keep",
                &[("X-Environment", KEPT_ENV)],
                r#"{"context":{}}"#,
            )
            .await;
        assert_eq!(kept.json()["value"], json!("kept-value"), "{}", kept.body);
        assert_eq!(server.metric("flag_invalidation_retries_total").await, 0.0);
    });
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

#[test]
fn no_malformed_request_gets_a_5xx_on_the_embedded_default() {
    run(Backend::Embedded, cases(384));
}

#[test]
fn no_malformed_request_gets_a_5xx_on_redis_and_postgres() {
    run(Backend::RedisPostgres, cases(128));
}

#[tokio::test]
async fn an_oversized_body_is_a_413_wherever_a_body_is_read() {
    let server = TestServer::start(Backend::Embedded).await;
    let huge = format!("{{\"context\":{{\"x\":\"{}\"}}}}", "x".repeat(1 << 20));
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for (method, template) in ROUTES {
        let path = template
            .replace("{env}", "production")
            .replace("{key}", "f");
        let reply = server
            .request(method, &path, &[("Authorization", bearer.as_str())], &huge)
            .await;
        check(method, &path, reply.status, &reply.body).unwrap();
        // An event stream (GET) reads no body; every PUT and OFREP POST reads one. Import and
        // copy read whole documents, up to 32 MiB (below).
        let document = path.ends_with("/import") || path.ends_with("/copy");
        let reads_body = *method == "PUT" || (*method == "POST" && path.starts_with("/ofrep/"));
        if reads_body && !document {
            assert_eq!(reply.status, 413, "{method} {path}: {}", reply.body);
        }
        if document {
            assert_ne!(reply.status, 413, "{method} {path}: {}", reply.body);
        }
    }
    let larger = format!("{{\"flags\":[],\"x\":\"{}\"}}", "x".repeat(32 << 20));
    for (method, path) in [
        ("PUT", "/v1/environments/production/import"),
        ("POST", "/v1/environments/production/copy"),
    ] {
        let reply = server
            .request(method, path, &[("Authorization", bearer.as_str())], &larger)
            .await;
        assert_eq!(reply.status, 413, "{method} {path}: {}", reply.body);
    }
}
