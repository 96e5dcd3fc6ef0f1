//! The Postgres fixtures give each test a database of its own, and a server of its own on demand.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use flag_fixtures::{PostgresDatabase, Source};
use sqlx::{Connection, PgConnection};

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
