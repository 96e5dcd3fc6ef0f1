//! `RedisCache` `get`, `get_flag` and `set` for environments of 10, 100 and 1,000 flags, against
//! a real `redis-server` (the one in `REDIS_URL`, else one started here).
//!
//! `scripts/bench-redis.sh` runs this next to `redis-benchmark` (HGET / HGETALL on the same hashes)
//! and prints the ratios: how much of each call is Redis and how much is us.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark harness

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flag_conformance::generation_snapshot;
use flag_core::{Environment, FeatureFlagCache, FlagKey};
use flag_fixtures::RedisServer;
use flag_redis::RedisCache;

const SIZES: [usize; 3] = [10, 100, 1_000];
const TTL: Duration = Duration::from_secs(3_600);

fn benchmarks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = runtime
        .block_on(RedisServer::shared())
        .unwrap_or_else(|error| panic!("{error}"));
    // A fixed prefix, so that redis-benchmark can address the same hashes afterwards.
    let prefix = std::env::var("BENCH_KEY_PREFIX").unwrap_or_else(|_| "bench".to_owned());
    let cache = RedisCache::builder(endpoint.url)
        .key_prefix(prefix)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut group = c.benchmark_group("redis");
    for size in SIZES {
        let env = Environment::parse(&format!("bench-{size}")).unwrap();
        let snapshot = Arc::new(generation_snapshot(1, size, 1));
        runtime
            .block_on(cache.set(&env, Arc::clone(&snapshot), TTL))
            .unwrap();
        let probe = FlagKey::parse("flag-00000").unwrap();

        group.bench_with_input(BenchmarkId::new("get", size), &size, |b, _| {
            b.to_async(&runtime)
                .iter(|| async { cache.get(&env).await.unwrap() });
        });
        group.bench_with_input(BenchmarkId::new("get_flag", size), &size, |b, _| {
            b.to_async(&runtime)
                .iter(|| async { cache.get_flag(&env, &probe).await.unwrap() });
        });
        group.bench_with_input(BenchmarkId::new("set", size), &size, |b, _| {
            b.to_async(&runtime)
                .iter(|| async { cache.set(&env, Arc::clone(&snapshot), TTL).await.unwrap() });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benchmarks
}
criterion_main!(benches);
