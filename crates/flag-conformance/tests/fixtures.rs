//! The fixtures start real services, isolate tests from each other and clean up after them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::time::Duration;

use flag_conformance::fixtures::{PostgresDatabase, RedisProcess, RedisServer, Source};
use sqlx::{Connection, PgConnection};

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

async fn count_tables(url: &str, name: &str) -> i64 {
    let mut connection = PgConnection::connect(url).await.unwrap();
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = $1")
            .bind(name)
            .fetch_one(&mut connection)
            .await
            .unwrap();
    connection.close().await.unwrap();
    count
}

#[tokio::test]
async fn each_postgres_fixture_is_a_database_of_its_own() {
    let first = PostgresDatabase::create().await.unwrap();
    let second = PostgresDatabase::create().await.unwrap();
    assert_ne!(first.url(), second.url());
    let mut connection = PgConnection::connect(first.url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE only_here (id int)")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    assert_eq!(count_tables(first.url(), "only_here").await, 1);
    assert_eq!(count_tables(second.url(), "only_here").await, 0);
}

#[tokio::test]
async fn an_own_postgres_server_starts_stops_and_restarts() {
    let database = PostgresDatabase::on_own_server().await.unwrap();
    assert_eq!(database.source(), Source::Binary);
    assert_eq!(count_tables(database.url(), "nothing").await, 0);
    let server = database.server().unwrap();
    server.kill();
    assert!(PgConnection::connect(database.url()).await.is_err());
    server.restart().await.unwrap();
    assert_eq!(count_tables(database.url(), "nothing").await, 0);
}
