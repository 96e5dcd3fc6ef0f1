//! The repository conformance suite against `SqlRepository` on SQLite (a fresh file per test)
//! and on Postgres (a fresh database per test, from the fixture order of the design contract).

use std::sync::Arc;

use flag_conformance::{SharedRepository, repository_suite};
use flag_fixtures::{PostgresDatabase, ScratchDir, WithFixture};
use flag_sql::SqlRepository;

async fn sqlite() -> SharedRepository {
    let directory = ScratchDir::new().unwrap_or_else(|error| panic!("scratch directory: {error}"));
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("flags.db").display()
    );
    let repository = SqlRepository::connect(url)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    Arc::new(WithFixture::new(repository, directory))
}

async fn postgres() -> SharedRepository {
    let database = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let repository = SqlRepository::connect(database.url())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    Arc::new(WithFixture::new(repository, database))
}

repository_suite!(sqlite, sqlite);
repository_suite!(postgres, postgres);
