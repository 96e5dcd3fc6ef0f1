//! A flood of evaluations in environments that do not exist, against the real binary: resident
//! memory stays where it was, the repository is not read per request, nothing is left in Redis,
//! and real environments (including one created after the flood) keep answering.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::net::SocketAddr;
use std::time::Instant;

use flag_fixtures::{PostgresDatabase, RedisProcess};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod support;

use support::{Running, metric, request};

/// How many junk requests each flood sends (a debug build answers them in about half a minute).
const JUNK_REQUESTS: usize = 200_000;

/// The keep-alive connections the flood is spread over.
const CONNECTIONS: usize = 8;

/// Sends `count` evaluations (single and bulk, alternately), each in a distinct junk
/// environment numbered from `first`, over keep-alive connections; answers the statuses seen.
async fn flood(address: SocketAddr, first: usize, count: usize) -> Vec<u16> {
    let per_connection = count / CONNECTIONS;
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..CONNECTIONS {
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let (reader, mut writer) = stream.into_split();
            let mut reader = BufReader::new(reader);
            let mut statuses = Vec::with_capacity(per_connection);
            let body = r#"{"context":{"targetingKey":"u"}}"#;
            for index in 0..per_connection {
                let number = first + connection * per_connection + index;
                let path = if number.is_multiple_of(2) {
                    "/ofrep/v1/evaluate/flags/f"
                } else {
                    "/ofrep/v1/evaluate/flags"
                };
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: t\r\nX-Environment: junk-{number}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                writer.write_all(head.as_bytes()).await.unwrap();
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
                let mut length = 0usize;
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut answer = vec![0u8; length];
                reader.read_exact(&mut answer).await.unwrap();
                statuses.push(status);
            }
            statuses
        });
    }
    let mut statuses = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        statuses.extend(joined.unwrap());
    }
    statuses
}

async fn put(address: SocketAddr, env: &str, key: &str) {
    let reply = request(
        address,
        "PUT",
        &format!("/v1/environments/{env}/flags/{key}"),
        &[("Authorization", "Bearer admin-secret")],
        r#"{"enabled": true}"#,
    )
    .await;
    assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
}

async fn evaluate(address: SocketAddr, env: &str, key: &str) -> u16 {
    request(
        address,
        "POST",
        &format!("/ofrep/v1/evaluate/flags/{key}"),
        &[("X-Environment", env)],
        r#"{"context":{"targetingKey":"u"}}"#,
    )
    .await
    .status
}

/// Floods `server`, asserting what the contract promises; `dbsize` reads the Redis key count
/// when there is a Redis.
async fn junk_leaves_nothing_behind(server: &Running, dbsize: Option<&RedisProcess>) {
    let address = server.socket();
    put(address, "production", "f").await;
    assert_eq!(evaluate(address, "production", "f").await, 200);
    // Warm the allocator and the connection paths before measuring.
    flood(address, 0, 8_000).await;
    let reads_before = metric(address, "flag_repository_reads_total").await;
    let keys_before = match dbsize {
        Some(redis) => Some(redis.command("DBSIZE").await.unwrap()),
        None => None,
    };
    let resident_before = server.memory_kb("VmRSS");
    let started = Instant::now();
    let statuses = flood(address, 1_000_000, JUNK_REQUESTS).await;
    let took = started.elapsed();
    let resident_after = server.memory_kb("VmRSS");
    let reads = metric(address, "flag_repository_reads_total").await - reads_before;
    eprintln!(
        "{JUNK_REQUESTS} junk requests in {took:?}: resident {resident_before} kB -> \
         {resident_after} kB, {reads} repository reads"
    );
    assert!(
        statuses.iter().all(|status| matches!(status, 200 | 404)),
        "junk environments answer 404 (single) or 200 (bulk)"
    );
    assert!(
        resident_after < resident_before + 10 * 1024,
        "resident memory grew from {resident_before} kB to {resident_after} kB"
    );
    assert!(
        reads < JUNK_REQUESTS as f64 / 100.0,
        "{reads} repository reads for {JUNK_REQUESTS} junk requests"
    );
    if let (Some(redis), Some(before)) = (dbsize, keys_before) {
        assert_eq!(
            redis.command("DBSIZE").await.unwrap(),
            before,
            "junk left keys in Redis"
        );
    }
    // Real environments still answer, and one created now is seen by the very next read.
    assert_eq!(evaluate(address, "production", "f").await, 200);
    put(address, "created-after", "g").await;
    assert_eq!(evaluate(address, "created-after", "g").await, 200);
}

/// A Redis of the test's own (so `DBSIZE` counts only what the server wrote) and a database.
async fn shared_stores() -> (RedisProcess, PostgresDatabase) {
    let redis = RedisProcess::spawn(&[])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let database = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    (redis, database)
}

#[tokio::test]
async fn junk_environments_leave_nothing_behind_on_the_embedded_default() {
    let server = Running::start(&[]);
    junk_leaves_nothing_behind(&server, None).await;
}

#[tokio::test]
async fn junk_environments_leave_nothing_behind_on_tiered_redis_and_postgres() {
    let (redis, database) = shared_stores().await;
    let server = Running::start(&[
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", &redis.url()),
        ("CACHE_BACKEND", "tiered"),
    ]);
    junk_leaves_nothing_behind(&server, Some(&redis)).await;
}

#[tokio::test]
async fn an_environment_created_on_one_instance_is_seen_by_the_next_read_on_another() {
    let (redis, database) = shared_stores().await;
    let env = [
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", &redis.url()),
        ("CACHE_BACKEND", "redis"),
    ];
    let (one, other) = (Running::start(&env), Running::start(&env));
    for round in 0..5 {
        // `other` was asked about the name just before, so its listing is fresh: only the mark
        // the write left in Redis can tell it.
        let name = format!("new-{round}");
        assert_eq!(evaluate(other.socket(), &name, "f").await, 404);
        put(one.socket(), &name, "f").await;
        assert_eq!(
            evaluate(other.socket(), &name, "f").await,
            200,
            "round {round}"
        );
    }
}

#[tokio::test]
async fn junk_environments_never_reach_a_cluster_instances_watch_set() {
    let cluster = flag_fixtures::RedisCluster::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let database = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let server = Running::start(&[
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", cluster.url()),
        ("CACHE_BACKEND", "tiered"),
    ]);
    let address = server.socket();
    put(address, "production", "f").await;
    assert_eq!(evaluate(address, "production", "f").await, 200);
    // More junk names than the 1,024 environments a Cluster instance may watch.
    let statuses = flood(address, 0, 3_000).await;
    assert!(statuses.iter().all(|status| matches!(status, 200 | 404)));
    let channels = cluster
        .command_on_every_node("PUBSUB SHARDCHANNELS")
        .await
        .unwrap()
        .join("\n");
    assert!(
        channels.contains("production"),
        "the real environment is watched (the check can see a watch): {channels}"
    );
    assert!(
        !channels.contains("junk-"),
        "junk names were watched: {channels}"
    );
}
