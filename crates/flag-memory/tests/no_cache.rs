//! `NoCache` holds nothing (so it deliberately fails the cache suite): every read misses, every
//! fill is accepted and dropped, a zero TTL is refused like any cache refuses it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use flag_conformance::generation_snapshot;
use flag_core::{
    CacheError, Environment, FeatureFlagCache, FlagKey, FlagLookup, Revision, SetOutcome,
};
use flag_memory::NoCache;

#[tokio::test]
async fn every_read_misses_and_every_fill_is_dropped() {
    let cache = NoCache;
    let env = Environment::parse("production").unwrap();
    let snapshot = Arc::new(generation_snapshot(3, 2, 1));
    assert_eq!(
        cache
            .set(&env, snapshot, Duration::from_secs(60))
            .await
            .unwrap(),
        SetOutcome::Stored
    );
    assert_eq!(cache.get(&env).await.unwrap(), None);
    assert_eq!(cache.get_with_ttl(&env).await.unwrap(), None);
    let key = FlagKey::parse("flag-00000").unwrap();
    assert_eq!(cache.get_flag(&env, &key).await.unwrap(), FlagLookup::Miss);
    cache.invalidate(&env, Revision(4)).await.unwrap();
    cache.ping().await.unwrap();
    assert_eq!(cache.backend(), "none");
    assert_eq!(cache.tier_status(), None);
}

#[tokio::test]
async fn a_zero_ttl_is_refused() {
    let env = Environment::parse("production").unwrap();
    let snapshot = Arc::new(generation_snapshot(1, 1, 1));
    assert_eq!(
        NoCache.set(&env, snapshot, Duration::ZERO).await,
        Err(CacheError::ZeroTtl)
    );
}
