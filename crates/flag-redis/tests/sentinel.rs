//! `RedisCache` through Redis Sentinel: the master is found through the Sentinel, and the data
//! lands on it in the documented layout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use flag_conformance::generation_snapshot;
use flag_core::{Environment, FeatureFlagCache, FlagKey, FlagLookup, Revision, SetOutcome};
use flag_fixtures::RedisSentinel;
use flag_redis::RedisCache;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_url_reaches_the_master() {
    let sentinel = RedisSentinel::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let cache = RedisCache::builder(sentinel.url())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let env = Environment::parse("production").unwrap();
    let snapshot = generation_snapshot(3, 4, 1);
    assert_eq!(
        cache
            .set(&env, Arc::new(snapshot.clone()), Duration::from_secs(60))
            .await
            .unwrap(),
        SetOutcome::Stored
    );
    assert_eq!(cache.get(&env).await.unwrap().as_deref(), Some(&snapshot));
    let hit = cache
        .get_flag(&env, &FlagKey::parse("flag-00001").unwrap())
        .await
        .unwrap();
    assert!(
        matches!(
            hit,
            FlagLookup::Hit {
                revision: Revision(3),
                ..
            }
        ),
        "{hit:?}"
    );
    // The hash is on the master the Sentinel names.
    let exists = sentinel
        .master()
        .command("EXISTS feature_flags:{production}")
        .await
        .unwrap();
    assert_eq!(exists, ":1");
    cache.invalidate(&env, Revision(4)).await.unwrap();
    assert_eq!(cache.get(&env).await.unwrap(), None);
}
