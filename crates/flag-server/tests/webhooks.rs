//! Change webhooks over real sockets, to a receiver of this test's own: every write delivered
//! once, signed, in revision order per environment (SQLite and Postgres); a receiver that fails,
//! stalls and comes back; a change given up after its retry window; one delivery for two
//! instances sharing a database; and a SIGKILL between the commit and the delivery that still
//! delivers after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flag_server::webhooks::signature;
use serde_json::{Value, json};
use support::{Backend, Running, TestServer, request};

/// What the receiver answers now.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Stall,
}

/// One request the receiver took.
#[derive(Clone, Debug)]
struct Arrival {
    body: Value,
    raw: Vec<u8>,
    headers: HeaderMap,
    /// What it was answered (`None`: stalled).
    answered: Option<u16>,
}

#[derive(Default)]
struct Log {
    arrivals: Vec<Arrival>,
    /// Answers to give, first to last, before falling back to `then`.
    script: Vec<Answer>,
}

/// A webhook receiver on a free port of 127.0.0.1.
#[derive(Clone)]
struct Receiver {
    url: String,
    log: Arc<Mutex<Log>>,
    then: Arc<Mutex<Answer>>,
}

type Shared = (Arc<Mutex<Log>>, Arc<Mutex<Answer>>);

async fn take(State((log, then)): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let answer = {
        let mut log = log.lock().unwrap();
        let answer = if log.script.is_empty() {
            *then.lock().unwrap()
        } else {
            log.script.remove(0)
        };
        log.arrivals.push(Arrival {
            body: serde_json::from_slice(&body).expect("a JSON body"),
            raw: body.to_vec(),
            headers,
            answered: match answer {
                Answer::Status(code) => Some(code),
                Answer::Stall => None,
            },
        });
        answer
    };
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
        Answer::Stall => std::future::pending().await,
    }
}

impl Receiver {
    async fn start(then: Answer) -> Self {
        let log = Arc::new(Mutex::new(Log::default()));
        let then = Arc::new(Mutex::new(then));
        let app = Router::new()
            .route("/hooks/secret-path", post(take))
            .with_state((Arc::clone(&log), Arc::clone(&then)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/secret-path",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, log, then }
    }

    fn answer(&self, answer: Answer) {
        *self.then.lock().unwrap() = answer;
    }

    fn script(&self, answers: &[Answer]) {
        self.log.lock().unwrap().script.extend_from_slice(answers);
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.log.lock().unwrap().arrivals.clone()
    }

    /// The bodies answered 2xx, in arrival order.
    fn delivered(&self) -> Vec<Value> {
        self.arrivals()
            .into_iter()
            .filter(|arrival| {
                arrival
                    .answered
                    .is_some_and(|code| (200..300).contains(&code))
            })
            .map(|arrival| arrival.body)
            .collect()
    }

    /// Waits (up to `within`) until `done` holds of the arrivals.
    async fn until(&self, what: &str, within: Duration, done: impl Fn(&[Arrival]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.arrivals()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never got {what}; it got {:#?}",
                self.arrivals()
                    .iter()
                    .map(|arrival| (&arrival.body["id"], &arrival.body["text"], arrival.answered))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn until_delivered(&self, count: usize, within: Duration) {
        self.until(&format!("{count} deliveries"), within, |arrivals| {
            arrivals
                .iter()
                .filter(|arrival| arrival.answered.is_some_and(|code| code < 300))
                .count()
                >= count
        })
        .await;
    }
}

const SECRET: &str = "webhook-secret";

async fn server_for(
    backend: Backend,
    receiver: &Receiver,
    adjust: impl FnOnce(&mut flag_server::config::Config),
) -> TestServer {
    let url = receiver.url.clone();
    TestServer::start_with(backend, move |config| {
        config.webhooks = Some(vec![url]);
        config.webhook_secret = Some(SECRET.to_owned());
        adjust(config);
    })
    .await
}

/// A PUT of flag `key` in `env`, answered 200 or 201.
async fn put_flag(server: &TestServer, env: &str, key: &str, enabled: bool) {
    let reply = server
        .admin(
            "PUT",
            &format!("/v1/environments/{env}/flags/{key}"),
            &[],
            &json!({"enabled": enabled}).to_string(),
        )
        .await;
    assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
}

/// Waits (up to 15 s) until the `/metrics` sample `series` is at least 1.
async fn until_metric(server: &TestServer, series: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric(series).await < 1.0 {
        assert!(Instant::now() < deadline, "{series} never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each environment's revisions in delivery order.
fn revisions_by_environment(bodies: &[Value]) -> HashMap<String, Vec<u64>> {
    let mut revisions: HashMap<String, Vec<u64>> = HashMap::new();
    for body in bodies {
        revisions
            .entry(body["environment"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["revision"].as_u64().unwrap());
    }
    revisions
}

#[rstest::rstest]
#[case::sqlite(Backend::Embedded)]
#[case::postgres(Backend::RedisPostgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_delivered_once_signed_and_in_revision_order(#[case] backend: Backend) {
    let receiver = Receiver::start(Answer::Status(204)).await;
    let server = server_for(backend, &receiver, |_| {}).await;

    put_flag(&server, "production", "checkout", false).await;
    put_flag(&server, "production", "checkout", true).await;
    let segment = server
        .admin(
            "PUT",
            "/v1/environments/production/segments/beta",
            &[],
            &json!({"rules": []}).to_string(),
        )
        .await;
    assert!(matches!(segment.status, 200 | 201), "{}", segment.body);
    put_flag(&server, "staging", "checkout", true).await;
    let deleted = server
        .admin(
            "DELETE",
            "/v1/environments/production/flags/checkout",
            &[],
            "",
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    // Concurrent writers of one environment.
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let address = server.address;
            tokio::spawn(async move {
                for round in 0..5 {
                    let reply = request(
                        address,
                        "PUT",
                        &format!("/v1/environments/staging/flags/w{writer}-{round}"),
                        &[("Authorization", "Bearer admin-secret")],
                        &json!({"enabled": true}).to_string(),
                    )
                    .await;
                    assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    let expected = 5 + 20;
    receiver
        .until_delivered(expected, Duration::from_secs(20))
        .await;
    // Nothing more comes: each change once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let arrivals = receiver.arrivals();
    assert_eq!(
        arrivals.len(),
        expected,
        "each change exactly once when all is well"
    );

    for arrival in &arrivals {
        let signed = arrival.headers["x-flag-signature"].to_str().unwrap();
        assert_eq!(signed, signature(SECRET.as_bytes(), &arrival.raw));
        assert_eq!(arrival.headers["content-type"], "application/json");
        assert_eq!(
            arrival.headers["x-flag-delivery"].to_str().unwrap(),
            arrival.body["id"].as_str().unwrap()
        );
        assert_eq!(arrival.body["actor"], "admin");
    }
    let bodies: Vec<Value> = arrivals
        .iter()
        .map(|arrival| arrival.body.clone())
        .collect();
    for (environment, revisions) in revisions_by_environment(&bodies) {
        let mut sorted = revisions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            revisions, sorted,
            "{environment}: revision order, each once"
        );
    }
    let production: Vec<(&str, &str, &str, Value, Value)> = bodies
        .iter()
        .filter(|body| body["environment"] == "production")
        .map(|body| {
            (
                body["kind"].as_str().unwrap(),
                body["key"].as_str().unwrap(),
                body["action"].as_str().unwrap(),
                body["oldVersion"].clone(),
                body["newVersion"].clone(),
            )
        })
        .collect();
    assert_eq!(
        production,
        [
            ("flag", "checkout", "create", Value::Null, json!(1)),
            ("flag", "checkout", "update", json!(1), json!(2)),
            ("segment", "beta", "create", Value::Null, json!(1)),
            ("flag", "checkout", "delete", json!(2), Value::Null),
        ]
    );
    let update = bodies
        .iter()
        .find(|body| body["action"] == "update")
        .unwrap();
    assert_eq!(
        update["text"],
        format!(
            "admin updated flag checkout in production (version 1 → 2, revision {})",
            update["revision"]
        )
    );
    assert_eq!(update["before"]["enabled"], false);
    assert_eq!(update["after"]["enabled"], true);
    assert!(update["at"].as_str().unwrap().ends_with('Z'));

    let receiver_label = receiver.url.split("/hooks").next().unwrap().to_owned();
    assert_eq!(
        server
            .metric(&format!(
                "flag_webhook_attempts_total{{receiver=\"{receiver_label}\",outcome=\"delivered\"}}"
            ))
            .await,
        expected as f64
    );
    let metrics = server.request("GET", "/metrics", &[], "").await.body;
    assert!(
        !metrics.contains("secret-path"),
        "a receiver's path is never shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_in_order_and_every_attempt_counted() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    receiver.script(&[
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(404),
    ]);
    let server = server_for(Backend::Embedded, &receiver, |_| {}).await;
    put_flag(&server, "production", "first", true).await;
    put_flag(&server, "production", "second", true).await;

    // 0.5 + 1 + 2 s of backoff (each ±20 %), then both in order.
    receiver.until_delivered(2, Duration::from_secs(15)).await;
    let arrivals = receiver.arrivals();
    let keys: Vec<(&str, Option<u16>)> = arrivals
        .iter()
        .map(|arrival| (arrival.body["key"].as_str().unwrap(), arrival.answered))
        .collect();
    assert_eq!(
        keys,
        [
            ("first", Some(500)),
            ("first", Some(503)),
            ("first", Some(404)),
            ("first", Some(200)),
            ("second", Some(200)),
        ],
        "the first change is retried until delivered, and the second waits for it"
    );
    let ids: Vec<&Value> = arrivals[..4]
        .iter()
        .map(|arrival| &arrival.body["id"])
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] == pair[1]),
        "one delivery id for every attempt"
    );
    let label = receiver.url.split("/hooks").next().unwrap().to_owned();
    let attempts = |outcome: &'static str| {
        let series =
            format!("flag_webhook_attempts_total{{receiver=\"{label}\",outcome=\"{outcome}\"}}");
        let server = &server;
        async move { server.metric(&series).await }
    };
    assert_eq!(attempts("failed").await, 3.0);
    assert_eq!(attempts("delivered").await, 2.0);
    assert_eq!(attempts("unreachable").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_never_delays_writes_and_gets_everything_when_it_comes_back() {
    let receiver = Receiver::start(Answer::Stall).await;
    let server = server_for(Backend::Embedded, &receiver, |config| {
        config.webhook_timeout_ms = 300;
    })
    .await;
    put_flag(&server, "production", "flag-0", true).await;
    receiver
        .until(
            "a first (stalled) attempt",
            Duration::from_secs(10),
            |arrivals| !arrivals.is_empty(),
        )
        .await;
    // Writes go on while deliveries hang.
    for index in 1..20 {
        let started = Instant::now();
        put_flag(&server, "production", &format!("flag-{index}"), true).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "write {index} waited {:?} for the receiver",
            started.elapsed()
        );
    }
    let label = receiver.url.split("/hooks").next().unwrap().to_owned();
    until_metric(
        &server,
        &format!("flag_webhook_attempts_total{{receiver=\"{label}\",outcome=\"unreachable\"}}"),
    )
    .await;
    receiver.answer(Answer::Status(200));
    receiver.until_delivered(20, Duration::from_secs(20)).await;
    let delivered: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|body| body["key"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|index| format!("flag-{index}")).collect();
    assert_eq!(delivered, expected, "every change, once each, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_given_up_after_its_retry_window() {
    let receiver = Receiver::start(Answer::Status(500)).await;
    let server = server_for(Backend::Embedded, &receiver, |config| {
        config.webhook_retry_ms = 1_500;
    })
    .await;
    put_flag(&server, "production", "doomed", true).await;
    let label = receiver.url.split("/hooks").next().unwrap().to_owned();
    until_metric(
        &server,
        &format!("flag_webhook_abandoned_total{{receiver=\"{label}\"}}"),
    )
    .await;
    receiver.answer(Answer::Status(200));
    put_flag(&server, "production", "later", true).await;
    receiver.until_delivered(1, Duration::from_secs(10)).await;
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0]["key"], "later",
        "the given-up change is not sent again"
    );
    assert!(
        receiver.arrivals().len() >= 3,
        "the doomed change was tried with backoff first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_database_deliver_each_change_once() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let first = server_for(Backend::RedisPostgres, &receiver, |_| {}).await;
    let shared = first.config.clone();
    let second = TestServer::start_with(Backend::Embedded, move |config| {
        *config = shared;
    })
    .await;
    for index in 0..10 {
        let server = if index % 2 == 0 { &first } else { &second };
        put_flag(server, "production", &format!("flag-{index}"), true).await;
    }
    receiver.until_delivered(10, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let keys: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|body| body["key"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..10).map(|index| format!("flag-{index}")).collect();
    assert_eq!(
        keys, expected,
        "one delivery per change, in order, from either instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_between_commit_and_delivery_still_delivers_after_restart() {
    let receiver = Receiver::start(Answer::Stall).await;
    let environment = [
        ("FLAG_WEBHOOKS", receiver.url.as_str()),
        ("FLAG_WEBHOOK_SECRET", SECRET),
    ];
    let mut server = Running::start(&environment);
    let reply = request(
        server.socket(),
        "PUT",
        "/v1/environments/production/flags/survivor",
        &[("Authorization", "Bearer admin-secret")],
        &json!({"enabled": true}).to_string(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    // The write is committed and its delivery under way, unanswered: kill the process there.
    receiver
        .until("the stalled attempt", Duration::from_secs(10), |arrivals| {
            !arrivals.is_empty()
        })
        .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let stalled_id = receiver.arrivals()[0].body["id"].clone();

    receiver.answer(Answer::Status(200));
    let directory = std::mem::replace(
        &mut server.directory,
        flag_fixtures::ScratchDir::new().unwrap(),
    );
    drop(server);
    let _restarted = Running::start_in(directory, &environment);
    // Delivered once the killed process's hold on the receiver expires.
    receiver.until_delivered(1, Duration::from_secs(30)).await;
    let delivered = receiver.delivered();
    assert_eq!(delivered[0]["id"], stalled_id);
    assert_eq!(delivered[0]["key"], "survivor");
    let arrival = receiver
        .arrivals()
        .into_iter()
        .find(|arrival| arrival.answered == Some(200))
        .unwrap();
    assert_eq!(
        arrival.headers["x-flag-signature"].to_str().unwrap(),
        signature(SECRET.as_bytes(), &arrival.raw)
    );
}
