//! How long a snapshot read of a 1,000-flag environment takes on SQLite (a file) and Postgres
//! (the one in `DATABASE_URL`, else a server started here).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark harness

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flag_conformance::flag_with_value;
use flag_core::{Environment, FeatureFlagRepository, Precondition};
use flag_fixtures::{PostgresDatabase, ScratchDir};
use flag_sql::SqlRepository;
use serde_json::json;

const FLAGS: usize = 1_000;

async fn seeded(url: &str, env: &Environment) -> SqlRepository {
    let repository = SqlRepository::connect(url).await.unwrap();
    for index in 0..FLAGS {
        let flag = flag_with_value(
            &format!("flag-{index:05}"),
            json!({"index": index, "color": "blue"}),
        );
        repository
            .upsert(env, flag, Precondition::None, &flag_core::Actor::system())
            .await
            .unwrap();
    }
    repository
}

fn snapshot_reads(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let env = Environment::parse("bench").unwrap();
    let directory = ScratchDir::new().unwrap();
    let sqlite_url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("bench.db").display()
    );
    let database = runtime
        .block_on(PostgresDatabase::create())
        .unwrap_or_else(|error| panic!("{error}"));

    let mut group = c.benchmark_group("snapshot_1000_flags");
    for (name, url) in [
        ("sqlite", sqlite_url.as_str()),
        ("postgres", database.url()),
    ] {
        let repository = runtime.block_on(seeded(url, &env));
        assert_eq!(
            runtime.block_on(repository.snapshot(&env)).unwrap().len(),
            FLAGS
        );
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| async { repository.snapshot(&env).await.unwrap() });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = snapshot_reads
}
criterion_main!(benches);
