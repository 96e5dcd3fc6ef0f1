//! Starting during a database outage, over real sockets: an instance whose database refuses
//! every connection still starts, serves what the shared Redis holds, says `200 degraded`, refuses
//! writes with `503`, and once the database answers connects, migrates and serves writes with no
//! restart. A database behind a small TCP proxy of the test's own is "down" while the proxy
//! closes every connection it accepts, and partitioned (no reset, nothing carried) while a
//! stalling proxy holds every byte: reads keep being answered from Redis, a write ends within the
//! database bound with a `503`, and everything works again when the partition heals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Backend, TestServer};

/// A TCP proxy to `target` that closes every connection while `open` is false.
async fn proxy(target: SocketAddr, open: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !open.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    address
}

/// `url` with its `host:port` replaced by `address`.
fn through(url: &str, address: SocketAddr) -> (String, SocketAddr) {
    let (scheme_and_user, rest) = url.split_once('@').unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let target: SocketAddr = host.replace("localhost", "127.0.0.1").parse().unwrap();
    (format!("{scheme_and_user}@{address}/{path}"), target)
}

const FLAG: &str = "/v1/environments/production/flags/kill-switch";
const EVALUATE: &str = "/ofrep/v1/evaluate/flags/kill-switch";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_while_the_database_is_down_serves_the_cache_then_connects() {
    // A first instance writes the flag and warms Redis.
    let first = TestServer::start(Backend::RedisPostgres).await;
    let written = first.admin("PUT", FLAG, &[], r#"{"enabled": true}"#).await;
    assert_eq!(written.status, 201, "{}", written.body);
    let warm = first
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(warm.json()["value"], json!(true));

    // The second starts on the same Redis, with its database refusing every connection.
    let open = Arc::new(AtomicBool::new(false));
    let (_, target) = through(&first.config.database_url, "127.0.0.1:1".parse().unwrap());
    let address = proxy(target, Arc::clone(&open)).await;
    let (url, _) = through(&first.config.database_url, address);
    let (redis_url, prefix) = (
        first.config.redis_url.clone(),
        first.config.redis_key_prefix.clone(),
    );
    let second = TestServer::start_with(Backend::RedisPostgres, move |config| {
        config.database_url = url;
        config.redis_url = redis_url;
        config.redis_key_prefix = prefix;
    })
    .await;

    let served = second
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(served.json()["value"], json!(true));
    let ready = second.request("GET", "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()),
        (
            200,
            json!({"status": "degraded", "repository": "unavailable", "cache": "ok"})
        )
    );
    let refused = second
        .admin("PUT", FLAG, &[], r#"{"enabled": false}"#)
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.code(), json!("unavailable"));

    // The database comes back: the instance connects by itself.
    open.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = second.request("GET", "/readyz", &[], "").await;
        if ready.json()["status"] == json!("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "never connected: {}", ready.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let flipped = second
        .admin("PUT", FLAG, &[], r#"{"enabled": false}"#)
        .await;
    assert_eq!(flipped.status, 200, "{}", flipped.body);
    let served = second
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(served.json()["value"], json!(false));
}

#[tokio::test]
async fn an_embedded_instance_without_its_database_is_unready_not_crashed() {
    // SQLite cannot be "down"; a Postgres URL nothing listens on can.
    let server = TestServer::start_with(Backend::Embedded, |config| {
        config.database_url = "postgres://postgres@127.0.0.1:1/none".to_owned();
    })
    .await;
    let ready = server.request("GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["status"], json!("unready"));
    let evaluation = server
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(evaluation.status, 503, "{}", evaluation.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_in_a_full_outage_serves_its_last_known_good_flags_from_disk() {
    let kept = flag_fixtures::ScratchDir::new().unwrap();
    let directory = kept.path().join("last-good");
    {
        let dir = directory.clone();
        let first = TestServer::start_with(Backend::Embedded, move |config| {
            config.last_good_dir = Some(dir);
        })
        .await;
        let written = first.admin("PUT", FLAG, &[], r#"{"enabled": true}"#).await;
        assert_eq!(written.status, 201, "{}", written.body);
        let served = first
            .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
            .await;
        assert_eq!(served.json()["value"], json!(true));
        let file = directory.join("production.json");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !file.exists() {
            assert!(Instant::now() < deadline, "the snapshot was never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Restarted with the database out and an in-process (empty) cache.
    let dir = directory.clone();
    let second = TestServer::start_with(Backend::Embedded, move |config| {
        config.database_url = "postgres://postgres@127.0.0.1:1/none".to_owned();
        config.last_good_dir = Some(dir);
    })
    .await;
    let served = second
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(
        (
            served.json()["value"].clone(),
            served.json()["reason"].clone()
        ),
        (json!(true), json!("CACHED"))
    );
    let ready = second.request("GET", "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, json!("degraded"))
    );
}

/// Copies `from` to `to`, holding every byte while `cut` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            return;
        }
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy to `target` that, while `cut` is set, forwards nothing in either direction and
/// holds every connection open: a partition without resets.
async fn stalling_proxy(target: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cut = Arc::clone(&cut);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    pump(client_read, server_write, Arc::clone(&cut)),
                    pump(server_read, client_write, cut),
                );
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_the_database_without_resets_is_survived_and_healed() {
    let cut = Arc::new(AtomicBool::new(false));
    let seed = TestServer::start(Backend::RedisPostgres).await;
    let (_, target) = through(&seed.config.database_url, "127.0.0.1:1".parse().unwrap());
    let address = stalling_proxy(target, Arc::clone(&cut)).await;
    let (url, _) = through(&seed.config.database_url, address);
    let (redis_url, prefix) = (
        seed.config.redis_url.clone(),
        seed.config.redis_key_prefix.clone(),
    );
    let server = TestServer::start_with(Backend::RedisPostgres, move |config| {
        config.database_url = url;
        config.redis_url = redis_url;
        config.redis_key_prefix = prefix;
    })
    .await;
    let written = server.admin("PUT", FLAG, &[], r#"{"enabled": true}"#).await;
    assert_eq!(written.status, 201, "{}", written.body);
    let served = server
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(served.json()["value"], json!(true));

    cut.store(true, Ordering::SeqCst);
    // Reads are answered from Redis at once; a write ends within the database's bound (5 s) with
    // a clear 503, and readiness says degraded, all with no answer from the database.
    support::assert_cut_off_from_the_database(&server, FLAG, EVALUATE).await;

    cut.store(false, Ordering::SeqCst);
    support::write_once_healed(&server, FLAG, Duration::from_secs(15)).await;
    let served = server
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(served.json()["value"], json!(false));
}
