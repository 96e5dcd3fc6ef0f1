//! Durability and outages: acknowledged SQLite writes survive SIGKILL mid-stream; the same pool
//! survives a Postgres restart; an unreachable database fails fast with a clear error; every
//! write leaves its audit row in the same transaction.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flag_conformance::flag_with_value;
use flag_core::{
    Actor, AuditQuery, Environment, FeatureFlag, FeatureFlagRepository, FlagKey, Precondition,
    RepositoryError, Revision, Segment, SegmentKey,
};
use flag_fixtures::{PostgresDatabase, ScratchDir};
use flag_sql::{SqlError, SqlRepository};
use serde_json::json;

/// Set in the child process of the crash test: the database it streams writes into.
const CHILD_DATABASE: &str = "FLAG_SQL_CRASH_CHILD_DATABASE";
const ACKNOWLEDGED_BEFORE_KILL: usize = 150;

fn env() -> Environment {
    Environment::parse("durable").unwrap()
}

fn numbered(index: usize) -> FeatureFlag {
    flag_with_value(&format!("f-{index:05}"), json!(index))
}

/// The child: writes one new flag after another, printing `ack <n>` once write n has committed,
/// until it is killed.
async fn stream_writes_until_killed(url: &str) {
    let repository = SqlRepository::connect(url).await.unwrap();
    let mut stdout = std::io::stdout();
    for index in 0.. {
        repository
            .upsert(
                &env(),
                numbered(index),
                Precondition::None,
                &Actor::system(),
            )
            .await
            .unwrap();
        writeln!(stdout, "ack {index}").unwrap();
        stdout.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sqlite_writes_survive_sigkill() {
    if let Ok(url) = std::env::var(CHILD_DATABASE) {
        stream_writes_until_killed(&url).await;
        return;
    }
    let directory = ScratchDir::new().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("crash.db").display()
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_sqlite_writes_survive_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DATABASE, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(index) = line.strip_prefix("ack ") {
            acknowledged = index.parse::<usize>().unwrap() + 1;
            if acknowledged >= ACKNOWLEDGED_BEFORE_KILL {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the writer only acknowledged {acknowledged} writes"
        );
    }
    child.kill().unwrap(); // SIGKILL, mid-stream: the next write may be half-way through
    child.wait().unwrap();
    assert!(
        acknowledged >= ACKNOWLEDGED_BEFORE_KILL,
        "the writer died after {acknowledged} writes"
    );

    let repository = SqlRepository::connect(&url).await.unwrap();
    let snapshot = repository.snapshot(&env()).await.unwrap();
    for index in 0..acknowledged {
        assert!(
            snapshot.flag(&format!("f-{index:05}")).is_some(),
            "acknowledged write {index} is lost"
        );
    }
    let committed = snapshot.len();
    // At most the one write in flight at the kill committed without being acknowledged.
    assert!(
        (acknowledged..=acknowledged + 1).contains(&committed),
        "{committed} flags for {acknowledged} acks"
    );
    assert_eq!(
        snapshot.revision(),
        Revision(committed as u64),
        "revision = committed writes"
    );
}

async fn eventually<T>(call: impl AsyncFn() -> Result<T, RepositoryError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) if Instant::now() > deadline => panic!("still failing after 30s: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pool_survives_a_postgres_restart() {
    let database = PostgresDatabase::on_own_server()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let timeout = Duration::from_secs(2);
    let repository = SqlRepository::builder(database.url())
        .timeout(timeout)
        .connect()
        .await
        .unwrap();
    repository
        .upsert(&env(), numbered(1), Precondition::None, &Actor::system())
        .await
        .unwrap();

    let server = database.server().unwrap();
    server.kill();
    let started = Instant::now();
    let down = repository.snapshot(&env()).await;
    assert!(
        matches!(
            down,
            Err(RepositoryError::Unavailable { .. } | RepositoryError::Timeout { .. })
        ),
        "a read with the database down answered {down:?}"
    );
    let write = repository
        .upsert(&env(), numbered(2), Precondition::None, &Actor::system())
        .await;
    assert!(
        matches!(
            write,
            Err(RepositoryError::Unavailable { .. } | RepositoryError::Timeout { .. })
        ),
        "{write:?}"
    );
    assert!(
        started.elapsed() < 2 * timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    server.restart().await.unwrap();
    let back = eventually(async || repository.snapshot(&env()).await).await;
    assert_eq!(back.len(), 1, "the committed write survived the restart");
    repository
        .upsert(&env(), numbered(2), Precondition::None, &Actor::system())
        .await
        .unwrap();
    assert_eq!(
        repository.snapshot(&env()).await.unwrap().revision(),
        Revision(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_fast_and_says_where() {
    let started = Instant::now();
    let result = SqlRepository::builder("postgres://app:secret@127.0.0.1:1/flags")
        .timeout(Duration::from_secs(1))
        .connect()
        .await;
    let Err(error @ SqlError::Connect { .. }) = result else {
        panic!("connecting to nothing answered {result:?}");
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let message = error.to_string();
    assert!(
        message.contains("127.0.0.1:1") && !message.contains("secret"),
        "{message}"
    );
    assert!(
        SqlRepository::connect("mysql://localhost/flags")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_audited_with_its_versions_and_revision() {
    let directory = ScratchDir::new().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("audit.db").display()
    );
    let repository = SqlRepository::builder(url).connect().await.unwrap();
    let tester = Actor::parse("tester").unwrap();
    let key = FlagKey::parse("audited").unwrap();
    let flag = || FeatureFlag::from_definition_json(&key, "{}").unwrap();
    repository
        .upsert(&env(), flag(), Precondition::Absent, &tester)
        .await
        .unwrap();
    repository
        .upsert(&env(), flag(), Precondition::Version(1), &tester)
        .await
        .unwrap();
    assert!(
        repository
            .upsert(&env(), flag(), Precondition::Version(1), &tester)
            .await
            .is_err()
    );
    repository
        .delete(&env(), &key, Precondition::Version(2), &tester)
        .await
        .unwrap();

    // Segment writes are audited the same way, apart from flags of the same key; a delete
    // refused because a flag uses the segment leaves no row either.
    let segment_key = SegmentKey::parse("audited").unwrap();
    let segment = || Segment::from_definition_json(&segment_key, "{}").unwrap();
    let system = Actor::system();
    repository
        .upsert_segment(&env(), segment(), Precondition::Absent, &system)
        .await
        .unwrap();
    repository
        .upsert_segment(&env(), segment(), Precondition::Version(1), &system)
        .await
        .unwrap();
    let user = FlagKey::parse("user").unwrap();
    let uses = r#"{"rules": [{"conditions": [{"operator": "in_segment", "value": "audited"}], "variant": "on"}]}"#;
    repository
        .upsert(
            &env(),
            FeatureFlag::from_definition_json(&user, uses).unwrap(),
            Precondition::None,
            &system,
        )
        .await
        .unwrap();
    assert!(
        repository
            .delete_segment(&env(), &segment_key, Precondition::None, &system)
            .await
            .is_err()
    );
    repository
        .delete(&env(), &user, Precondition::None, &system)
        .await
        .unwrap();
    repository
        .delete_segment(&env(), &segment_key, Precondition::Version(2), &system)
        .await
        .unwrap();

    let query = AuditQuery {
        key: Some("audited".to_owned()),
        ..AuditQuery::default()
    };
    let page = repository.audit(&env(), &query).await.unwrap();
    let summary: Vec<String> = page
        .entries
        .iter()
        .map(|entry| {
            format!(
                "{} {} {:?}->{:?} r{} by {}",
                entry.kind.as_str(),
                entry.action.as_str(),
                entry.old_version,
                entry.new_version,
                entry.revision.get(),
                entry.actor
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "segment delete Some(2)->None r8 by flag-server",
            "segment update Some(1)->Some(2) r5 by flag-server",
            "segment create None->Some(1) r4 by flag-server",
            "flag delete Some(2)->None r3 by tester",
            "flag update Some(1)->Some(2) r2 by tester",
            "flag create None->Some(1) r1 by tester",
        ],
        "newest first, refused writes left no row"
    );
    assert_eq!(page.next, None);
    // The definitions before and after, as stored.
    let update = &page.entries[4];
    assert_eq!(update.before.as_ref().unwrap()["version"], 1);
    assert_eq!(update.after.as_ref().unwrap()["version"], 2);
    let delete = &page.entries[3];
    assert_eq!(delete.before.as_ref().unwrap()["key"], "audited");
    assert_eq!(delete.after, None);
    assert_eq!(page.entries[5].before, None);
}
