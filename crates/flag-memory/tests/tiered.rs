//! `TieredCache` with `MemoryCache` as both tiers and a `LocalBus`: the whole conformance suite,
//! and the tiered behaviour itself — invalidations crossing instances, a lost subscription, the
//! L1 TTL bound.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use flag_conformance::{CacheCapabilities, SharedCache, cache_suite, generation_snapshot};
use flag_core::{Environment, FeatureFlagCache, LocalBus, Revision, SetOutcome, TieredCache};
use flag_memory::{MemoryCache, TTL_SLACK};

fn tiered_over(l2: Arc<MemoryCache>, bus: &LocalBus, l1_ttl: Duration) -> TieredCache {
    TieredCache::start(
        Arc::new(MemoryCache::new()),
        l2,
        Arc::new(bus.clone()),
        l1_ttl,
    )
}

cache_suite!(
    tiered_memory,
    || async {
        Arc::new(tiered_over(
            Arc::new(MemoryCache::new()),
            &LocalBus::new(),
            Duration::from_secs(5),
        )) as SharedCache
    },
    CacheCapabilities {
        // L1 entries end when L2's do: the remaining time is read from L2 with the snapshot.
        ttl_slack: TTL_SLACK * 2,
        max_value_bytes: None,
    }
);

const TTL: Duration = Duration::from_secs(60);

fn production() -> Environment {
    Environment::parse("production").unwrap()
}

/// Polls `condition` for up to a second.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_through_one_instance_drops_the_l1_of_the_others() {
    let (l2, bus) = (Arc::new(MemoryCache::new()), LocalBus::new());
    let a = tiered_over(l2.clone(), &bus, Duration::from_secs(60));
    let b = tiered_over(l2.clone(), &bus, Duration::from_secs(60));
    let env = production();
    let first = Arc::new(generation_snapshot(1, 3, 1));
    assert_eq!(
        a.set(&env, first.clone(), TTL).await.unwrap(),
        SetOutcome::Stored
    );
    // b fills its L1 from L2.
    assert_eq!(b.get(&env).await.unwrap().unwrap().revision(), Revision(1));
    // Behind b's back, L2 changes without a message: b's L1 keeps answering revision 1...
    l2.invalidate(&env, Revision(2)).await.unwrap();
    l2.set(&env, Arc::new(generation_snapshot(2, 3, 2)), TTL)
        .await
        .unwrap();
    assert_eq!(b.get(&env).await.unwrap().unwrap().revision(), Revision(1));
    // ...until an invalidation goes through a: then b reads L2 again.
    a.invalidate(&env, Revision(3)).await.unwrap();
    l2.set(&env, Arc::new(generation_snapshot(3, 3, 3)), TTL)
        .await
        .unwrap();
    eventually("b dropped its L1 entry", async || {
        b.get(&env).await.unwrap().map(|s| s.revision()) == Some(Revision(3))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_bypasses_l1_and_drops_it_and_never_serves_stale_after() {
    let (l2, bus) = (Arc::new(MemoryCache::new()), LocalBus::new());
    let cache = tiered_over(l2.clone(), &bus, Duration::from_secs(60));
    let env = production();
    cache
        .set(&env, Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    assert!(cache.l1_serving());
    bus.lose();
    eventually("L1 bypassed", async || !cache.l1_serving()).await;
    // A change made while the subscription is down (its message is lost)...
    l2.invalidate(&env, Revision(2)).await.unwrap();
    l2.set(&env, Arc::new(generation_snapshot(2, 3, 2)), TTL)
        .await
        .unwrap();
    // ...is read from L2 at once, and after the subscription is back as well.
    assert_eq!(
        cache.get(&env).await.unwrap().unwrap().revision(),
        Revision(2)
    );
    bus.restore();
    eventually("L1 serving again", async || cache.l1_serving()).await;
    assert_eq!(
        cache.get(&env).await.unwrap().unwrap().revision(),
        Revision(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l1_ttl_bounds_staleness_when_every_message_is_lost() {
    let (l2, bus) = (Arc::new(MemoryCache::new()), LocalBus::new());
    let l1_ttl = Duration::from_millis(100);
    let cache = tiered_over(l2.clone(), &bus, l1_ttl);
    let env = production();
    cache
        .set(&env, Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    // L2 changes with no message at all.
    l2.invalidate(&env, Revision(2)).await.unwrap();
    l2.set(&env, Arc::new(generation_snapshot(2, 3, 2)), TTL)
        .await
        .unwrap();
    let changed = Instant::now();
    tokio::time::sleep(l1_ttl + TTL_SLACK * 2).await;
    let seen = cache.get(&env).await.unwrap().unwrap().revision();
    assert_eq!(
        seen,
        Revision(2),
        "still stale {:?} after the change",
        changed.elapsed()
    );
}
