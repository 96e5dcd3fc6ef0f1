//! Writes cut short, over real sockets: a PUT whose request times out (`FLAG_REQUEST_TIMEOUT_MS`
//! of 3 ms) or whose client hangs up at any moment is either fully applied (stored and served)
//! or not applied at all; never committed in the database while evaluations keep serving the
//! version before it.
//!
//! Each round writes over HTTP, then reads through the server's own service (no request timeout
//! on the reads): the version evaluations serve must catch up with the stored one within
//! [`SETTLE`], where a write whose invalidation was lost would keep the old one for the whole
//! cache TTL (5 minutes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::time::{Duration, Instant};

use flag_core::{Environment, EvaluationContext, FlagKey};
use rstest::rstest;
use support::{ADMIN_TOKEN, Backend, TestServer};
use tokio::io::AsyncWriteExt;

/// How long a write cut short may take to finish behind the client's back.
const SETTLE: Duration = Duration::from_secs(2);

const PATH: &str = "/v1/environments/production/flags/kill-switch";

fn names() -> (Environment, FlagKey) {
    (
        Environment::parse("production").unwrap(),
        FlagKey::parse("kill-switch").unwrap(),
    )
}

/// Waits until evaluations serve at least the stored version; `false` when they still serve an
/// older one after [`SETTLE`].
async fn served_catches_up(server: &TestServer) -> bool {
    let (env, key) = names();
    let started = Instant::now();
    loop {
        let stored = server
            .service()
            .stored_flag(&env, &key)
            .await
            .unwrap()
            .map_or(0, |flag| flag.version());
        let served = server
            .service()
            .evaluate(&env, &key, &EvaluationContext::new())
            .await
            .map_or(0, |evaluation| evaluation.flag_version());
        if served >= stored {
            return true;
        }
        if started.elapsed() > SETTLE {
            eprintln!("stored version {stored}, served version {served}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn body(round: usize) -> String {
    format!(r#"{{"enabled": {}}}"#, round.is_multiple_of(2))
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_cut_short_by_the_request_timeout_are_never_invisible(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start_with(backend, |config| config.request_timeout_ms = 2).await;
    let (mut timed_out, mut answered, mut mismatches) = (0, 0, 0);
    // At least 200 writes, and on until a few were cut short: on a fast machine a SQLite write
    // may take less than the timeout for hundreds in a row.
    for round in 0..2_000 {
        if round >= 200 && timed_out >= 5 {
            break;
        }
        let reply = server.admin("PUT", PATH, &[], &body(round)).await;
        match reply.status {
            200 | 201 => answered += 1,
            503 => timed_out += 1,
            other => panic!("PUT answered {other}: {}", reply.body),
        }
        if !served_catches_up(&server).await {
            mismatches += 1;
        }
    }
    eprintln!("{answered} writes answered, {timed_out} timed out, {mismatches} mismatches");
    assert!(
        timed_out > 0,
        "no write timed out: the test did not cut any short"
    );
    assert_eq!(mismatches, 0, "writes stored but not served");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_client_hangs_up_are_never_invisible(
    #[values(Backend::Embedded, Backend::RedisPostgres)] backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut mismatches = 0;
    for round in 0..120 {
        let body = body(round);
        let request = format!(
            "PUT {PATH} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        // Hang up at a different moment each round: at once, then every 50 µs up to 6 ms, which
        // covers reading the request, the repository's transaction and what follows it.
        tokio::time::sleep(Duration::from_micros(50 * (round as u64 % 120))).await;
        drop(stream);
        if !served_catches_up(&server).await {
            mismatches += 1;
        }
    }
    assert_eq!(mismatches, 0, "writes stored but not served");
}
