//! The repository conformance suite against `SqlRepository` on SQLite (a fresh file per test)
//! and on Postgres (a fresh database per test, from the fixture order of the design contract).

mod rows;

use std::sync::Arc;

use flag_conformance::repository::StoredRows;
use flag_conformance::{SharedRepository, repository_suite};
use flag_fixtures::{PostgresDatabase, ScratchDir, WithFixture};
use flag_sql::SqlRepository;
use rows::SqlRows;

/// A repository on a fresh SQLite file, and the file's URL.
async fn sqlite_store() -> (SharedRepository, String) {
    let directory = ScratchDir::new().unwrap_or_else(|error| panic!("scratch directory: {error}"));
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("flags.db").display()
    );
    let repository = SqlRepository::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    (Arc::new(WithFixture::new(repository, directory)), url)
}

/// A repository on a fresh Postgres database, and the database's URL.
async fn postgres_store() -> (SharedRepository, String) {
    let database = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let url = database.url().to_owned();
    let repository = SqlRepository::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    (Arc::new(WithFixture::new(repository, database)), url)
}

/// The repository with the rows behind it.
fn with_rows(
    (repository, url): (SharedRepository, String),
) -> (SharedRepository, Arc<dyn StoredRows>) {
    (repository, Arc::new(SqlRows(url)))
}

repository_suite!(
    sqlite,
    || async { sqlite_store().await.0 },
    stored_rows: || async { with_rows(sqlite_store().await) }
);
repository_suite!(
    postgres,
    || async { postgres_store().await.0 },
    stored_rows: || async { with_rows(postgres_store().await) }
);
