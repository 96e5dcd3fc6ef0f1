//! Tolerant reads on both databases: a row written by a newer release, whose definition holds
//! fields this release does not know (during a rolling deploy), is read with them ignored, by the
//! snapshot, the point read and the listing alike.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use flag_conformance::flag_with_value;
use flag_core::{Environment, FeatureFlagRepository, FlagKey, Precondition};
use flag_fixtures::{PostgresDatabase, ScratchDir};
use flag_sql::SqlRepository;
use serde_json::{Value, json};
use sqlx::Connection;

/// Writes a flag, rewrites its stored definition as a newer release would (extra fields at
/// every level), and reads it back through `repository`.
async fn newer_rows_are_read(repository: &SqlRepository, url: &str) {
    let env = Environment::parse("rolling").unwrap();
    let key = FlagKey::parse("kill-switch").unwrap();
    let written = repository
        .upsert(
            &env,
            flag_with_value("kill-switch", json!(true)),
            Precondition::None,
        )
        .await
        .unwrap()
        .flag;
    let mut newer: Value = serde_json::to_value(&written).unwrap();
    newer["schedule"] = json!({"from": "2027-01-01T00:00:00Z"});
    newer["rules"] = json!([{
        "conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"], "negate": false}],
        "variant": written.default_variant(),
        "bucketBy": "companyId"
    }]);
    let mut connection = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("UPDATE flags SET definition = $1 WHERE environment = $2 AND key = $3")
        .bind(newer.to_string())
        .bind(env.as_str())
        .bind(key.as_str())
        .execute(&mut connection)
        .await
        .unwrap();

    let snapshot = repository.snapshot(&env).await.unwrap();
    let read = snapshot.flag("kill-switch").unwrap();
    assert_eq!(read.rules().len(), 1);
    assert_eq!(read.version(), written.version());
    let point = repository.flag(&env, &key).await.unwrap().unwrap();
    assert_eq!(&point, &**read);
    assert_eq!(repository.environments().await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_rows_of_a_newer_release_are_read() {
    sqlx::any::install_default_drivers();
    let directory = ScratchDir::new().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("rolling.db").display()
    );
    let repository = SqlRepository::connect(&url).await.unwrap();
    newer_rows_are_read(&repository, &url).await;
}

#[tokio::test]
async fn postgres_rows_of_a_newer_release_are_read() {
    sqlx::any::install_default_drivers();
    let database = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let repository = SqlRepository::connect(database.url()).await.unwrap();
    newer_rows_are_read(&repository, database.url()).await;
}

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
        newer_rows_are_read(&repository, url).await;
    }
}

/// Damages one stored row, then reads its environment: the other flags are served, the damaged
/// one is its unreadable stand-in, and writing it again replaces it.
async fn a_damaged_row_is_isolated(repository: &SqlRepository, url: &str) {
    let env = Environment::parse("damaged").unwrap();
    for name in ["broken", "fine"] {
        repository
            .upsert(&env, flag_with_value(name, json!(name)), Precondition::None)
            .await
            .unwrap();
    }
    let mut connection = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("UPDATE flags SET definition = '{not json' WHERE environment = $1 AND key = $2")
        .bind(env.as_str())
        .bind("broken")
        .execute(&mut connection)
        .await
        .unwrap();

    let snapshot = repository.snapshot(&env).await.unwrap();
    assert_eq!(snapshot.len(), 2);
    assert!(snapshot.flag("fine").unwrap().unreadable_reason().is_none());
    let broken = snapshot.flag("broken").unwrap();
    assert!(broken.unreadable_reason().is_some(), "{broken:?}");
    assert_eq!(broken.version(), 1);
    let key = FlagKey::parse("broken").unwrap();
    let point = repository.flag(&env, &key).await.unwrap().unwrap();
    assert!(point.unreadable_reason().is_some());
    // The API shows it with its error.
    let shown = serde_json::to_value(&point).unwrap();
    assert!(shown["error"].as_str().is_some(), "{shown}");

    let replaced = repository
        .upsert(
            &env,
            flag_with_value("broken", json!("fixed")),
            Precondition::Version(1),
        )
        .await
        .unwrap();
    assert_eq!(replaced.flag.version(), 2);
    let snapshot = repository.snapshot(&env).await.unwrap();
    assert!(
        snapshot
            .flag("broken")
            .unwrap()
            .unreadable_reason()
            .is_none()
    );
}

#[tokio::test]
async fn a_damaged_row_is_isolated_to_its_flag_on_both_databases() {
    sqlx::any::install_default_drivers();
    let directory = ScratchDir::new().unwrap();
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("damaged.db").display()
    );
    let postgres = PostgresDatabase::create()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    for url in [sqlite.as_str(), postgres.url()] {
        let repository = SqlRepository::connect(url).await.unwrap();
        a_damaged_row_is_isolated(&repository, url).await;
    }
}
