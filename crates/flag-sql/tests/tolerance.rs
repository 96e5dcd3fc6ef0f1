//! Rollbacks: a database that a newer release migrated is accepted by this one, on both
//! databases, and the rows such a release wrote are read as the conformance property on tolerant
//! reads demands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod rows;

use std::sync::Arc;

use flag_conformance::SharedRepository;
use flag_conformance::repository::stored_rows_are_read_tolerantly;
use flag_fixtures::{PostgresDatabase, ScratchDir};
use flag_sql::SqlRepository;
use rows::SqlRows;
use sqlx::Connection;

/// Records a migration this release does not have, as a newer release's connect would.
async fn apply_newer_migration(url: &str) {
    let mut connection = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'a newer release', TRUE, $1, 0)",
    )
    .bind(vec![0_u8; 48])
    .execute(&mut connection)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_database_a_newer_release_migrated_is_accepted_on_both_databases() {
    sqlx::any::install_default_drivers();
    let directory = ScratchDir::new().unwrap();
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("newer.db").display()
    );
    let postgres = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    for url in [sqlite.as_str(), postgres.url()] {
        drop(SqlRepository::connect(url).await.unwrap());
        apply_newer_migration(url).await;
        let repository = SqlRepository::connect(url)
            .await
            .unwrap_or_else(|error| panic!("an older release refused the database: {error}"));
        let repository: SharedRepository = Arc::new(repository);
        stored_rows_are_read_tolerantly(&repository, &SqlRows(url.to_owned()))
            .await
            .unwrap_or_else(|violation| panic!("{violation}"));
    }
}
