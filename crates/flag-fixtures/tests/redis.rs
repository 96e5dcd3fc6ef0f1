//! The Redis fixtures start real servers, isolate tests from each other and clean up after them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::time::Duration;

use flag_fixtures::{RedisProcess, RedisServer, Source};

#[tokio::test]
async fn a_redis_fixture_gives_each_test_its_own_prefix() {
    let first = RedisServer::start().await.unwrap();
    let second = RedisServer::start().await.unwrap();
    assert_ne!(first.key_prefix(), second.key_prefix());
    assert!(first.url().starts_with("redis://"), "{}", first.url());
}

#[tokio::test]
async fn a_redis_binary_answers_and_dies_with_its_fixture() {
    let server = RedisServer::from_binary().await.unwrap();
    assert_eq!(server.source(), Source::Binary);
    let process = server.process().unwrap();
    assert_eq!(process.command("PING").await.unwrap(), "+PONG");
    let port = process.port();
    drop(server);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "redis-server on {port} outlived its fixture"
    );
}

#[tokio::test]
async fn a_redis_process_can_be_paused_killed_and_restarted() {
    let redis = RedisProcess::spawn(&[]).await.unwrap();
    assert_eq!(redis.command("SET k v").await.unwrap(), "+OK");

    redis.pause().unwrap();
    let paused = tokio::time::timeout(Duration::from_secs(5), redis.command("PING"))
        .await
        .unwrap();
    assert!(paused.is_err(), "a paused server answered: {paused:?}");
    redis.resume().unwrap();
    assert_eq!(redis.command("PING").await.unwrap(), "+PONG");

    redis.kill();
    assert!(redis.command("PING").await.is_err());
    redis.restart().await.unwrap();
    assert_eq!(redis.command("PING").await.unwrap(), "+PONG");
    // A restarted server is a new, empty one.
    assert_eq!(redis.command("EXISTS k").await.unwrap(), ":0");
}
