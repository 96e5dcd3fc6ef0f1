//! `TieredCache` with `MemoryCache` as both tiers and a `LocalBus`: the whole conformance suite,
//! and the tiered behaviour itself — invalidations crossing instances, a lost subscription, the
//! L1 TTL bound, and a bus that subscribes per environment (as sharded pub/sub does).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flag_conformance::{CacheCapabilities, SharedCache, cache_suite, generation_snapshot};
use flag_core::{
    BusError, BusEvent, CacheError, Environment, EnvironmentSnapshot, FeatureFlagCache, FlagKey,
    FlagLookup, InvalidationBus, Revision, SetOutcome, TierStatus, async_trait,
};
use flag_memory::{LocalBus, MemoryCache, TTL_SLACK, TieredCache};
use tokio::sync::{Semaphore, broadcast};

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
async fn the_port_reports_whether_l1_serves_and_how_often_the_subscription_was_lost() {
    let bus = LocalBus::new();
    let cache: Arc<dyn FeatureFlagCache> = Arc::new(tiered_over(
        Arc::new(MemoryCache::new()),
        &bus,
        Duration::from_secs(5),
    ));
    let status = || {
        cache
            .tier_status()
            .expect("a tiered cache reports its tiers")
    };
    assert_eq!(
        status(),
        TierStatus {
            l1_serving: true,
            subscription_losses: 0
        }
    );
    bus.lose();
    eventually("L1 bypassed", async || !status().l1_serving).await;
    assert_eq!(status().subscription_losses, 1);
    bus.restore();
    eventually("L1 serving again", async || status().l1_serving).await;
    assert_eq!(status().subscription_losses, 1);
    // An in-process L2 always answers, so the tiered cache does.
    cache.ping().await.unwrap();
    assert_eq!(
        MemoryCache::new().tier_status(),
        None,
        "one layer has no tiers"
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

/// A bus that subscribes per environment, as sharded pub/sub does: an environment is watched
/// only once asked for (`watch`) and then confirmed by the test (`confirm`), or, with
/// `confirm_right_after_a_miss`, confirmed the moment a check found it unwatched (as if the
/// subscription completed while the caller went on to read L2).
#[derive(Debug, Default)]
struct PerEnvironmentBus {
    inner: LocalBus,
    asked: Mutex<HashSet<Environment>>,
    confirmed: Mutex<HashSet<Environment>>,
    confirm_right_after_a_miss: bool,
}

impl PerEnvironmentBus {
    fn asked_for(&self, env: &Environment) -> bool {
        self.asked.lock().unwrap().contains(env)
    }

    fn confirm(&self, env: &Environment) {
        self.confirmed.lock().unwrap().insert(env.clone());
    }
}

#[async_trait]
impl InvalidationBus for PerEnvironmentBus {
    fn backend(&self) -> &'static str {
        "per-environment"
    }

    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        self.inner.publish(env, revision).await
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.inner.subscribe()
    }

    fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    fn is_watching(&self, env: &Environment) -> bool {
        let mut confirmed = self.confirmed.lock().unwrap();
        let watching = confirmed.contains(env);
        if !watching && self.confirm_right_after_a_miss {
            confirmed.insert(env.clone());
        }
        self.is_live() && watching
    }

    fn watch(&self, env: &Environment) {
        self.asked.lock().unwrap().insert(env.clone());
    }
}

fn tiered_per_environment(l2: &Arc<MemoryCache>, bus: &Arc<PerEnvironmentBus>) -> TieredCache {
    TieredCache::start(
        Arc::new(MemoryCache::new()),
        l2.clone(),
        bus.clone(),
        Duration::from_secs(60),
    )
}

/// Replaces L2's entry behind the tiered cache's back (no message on any bus).
async fn change_behind_its_back(l2: &MemoryCache, env: &Environment, revision: u64) {
    l2.invalidate(env, Revision(revision)).await.unwrap();
    l2.set(
        env,
        Arc::new(generation_snapshot(revision, 3, revision)),
        TTL,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_an_unwatched_environment_is_kept_and_l2_answering_it_asks_to_watch_it() {
    let (l2, bus) = (
        Arc::new(MemoryCache::new()),
        Arc::new(PerEnvironmentBus::default()),
    );
    let cache = tiered_per_environment(&l2, &bus);
    let env = production();
    let revision = async || cache.get(&env).await.unwrap().unwrap().revision();
    cache
        .set(&env, Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    assert!(bus.asked_for(&env), "storing it did not ask to watch it");
    // Not watched yet: every read is L2's.
    change_behind_its_back(&l2, &env, 2).await;
    assert_eq!(revision().await, Revision(2));
    change_behind_its_back(&l2, &env, 3).await;
    assert_eq!(revision().await, Revision(3));
    // Watched: the next read is kept, and L1 answers it from then on.
    bus.confirm(&env);
    assert_eq!(revision().await, Revision(3));
    change_behind_its_back(&l2, &env, 4).await;
    assert_eq!(revision().await, Revision(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_began_before_its_environment_was_watched_is_not_kept() {
    let l2 = Arc::new(MemoryCache::new());
    let bus = Arc::new(PerEnvironmentBus {
        confirm_right_after_a_miss: true,
        ..PerEnvironmentBus::default()
    });
    let cache = tiered_per_environment(&l2, &bus);
    let env = production();
    change_behind_its_back(&l2, &env, 1).await;
    // The watch is confirmed while this read is in flight: its answer is served, not kept (an
    // invalidation sent before the confirmation would have been missed).
    assert_eq!(
        cache.get(&env).await.unwrap().unwrap().revision(),
        Revision(1)
    );
    assert!(bus.is_watching(&env));
    change_behind_its_back(&l2, &env, 2).await;
    assert_eq!(
        cache.get(&env).await.unwrap().unwrap().revision(),
        Revision(2)
    );
}

/// A real `MemoryCache` as L2 that counts the snapshot reads it is asked for and holds each
/// answer until the test opens its gate: reads that overlap can be made to overlap.
#[derive(Debug)]
struct GatedL2 {
    inner: MemoryCache,
    reads: AtomicUsize,
    gate: Semaphore,
}

impl GatedL2 {
    fn closed() -> Self {
        Self {
            inner: MemoryCache::new(),
            reads: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

#[async_trait]
impl FeatureFlagCache for GatedL2 {
    fn backend(&self) -> &'static str {
        "gated"
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        Ok(self.get_with_ttl(env).await?.map(|(snapshot, _)| snapshot))
    }

    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        self.inner.get_flag(env, key).await
    }

    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        self.inner.set(env, snapshot, ttl).await
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        self.inner.invalidate(env, revision).await
    }

    /// Reads the entry first, then waits at the gate: the answer is what L2 held when the read
    /// began.
    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.get_with_ttl(env).await;
        let _passed = self.gate.acquire().await.unwrap();
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_miss_l1_together_share_one_l2_read() {
    let l2 = Arc::new(GatedL2::closed());
    let bus = LocalBus::new();
    let cache = Arc::new(TieredCache::start(
        Arc::new(MemoryCache::new()),
        l2.clone(),
        Arc::new(bus.clone()),
        Duration::from_secs(60),
    ));
    let env = production();
    l2.inner
        .set(&env, Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    let key = FlagKey::parse("flag-00001").unwrap();
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let (cache, env, key) = (cache.clone(), env.clone(), key.clone());
            tokio::spawn(async move { cache.get_flag(&env, &key).await })
        })
        .collect();
    eventually("the first reader reached L2", async || l2.reads() == 1).await;
    // Give the other readers time to arrive while the read is held.
    tokio::time::sleep(Duration::from_millis(50)).await;
    l2.open();
    for reader in readers {
        let lookup = reader.await.unwrap().unwrap();
        assert!(
            matches!(
                lookup,
                FlagLookup::Hit {
                    revision: Revision(1),
                    ..
                }
            ),
            "{lookup:?}"
        );
    }
    assert_eq!(l2.reads(), 1, "readers that missed together read L2 each");
    // L1 holds it now: nothing more reaches L2.
    cache.get(&env).await.unwrap().unwrap();
    assert_eq!(l2.reads(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_after_an_invalidation_does_not_join_the_l2_read_that_began_before_it() {
    let l2 = Arc::new(GatedL2::closed());
    let bus = LocalBus::new();
    let tiered = |l2: Arc<GatedL2>| {
        Arc::new(TieredCache::start(
            Arc::new(MemoryCache::new()),
            l2,
            Arc::new(bus.clone()),
            Duration::from_secs(60),
        ))
    };
    let (reader, writer) = (tiered(l2.clone()), tiered(l2.clone()));
    let env = production();
    l2.inner
        .set(&env, Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    let read = |cache: Arc<TieredCache>, env: Environment| {
        tokio::spawn(async move { cache.get(&env).await.unwrap().unwrap().revision() })
    };
    let early = read(reader.clone(), env.clone());
    eventually("the early read reached L2", async || l2.reads() == 1).await;
    // A write through the other instance: L2 changes and the invalidation goes out on the bus.
    writer.invalidate(&env, Revision(2)).await.unwrap();
    l2.inner
        .set(&env, Arc::new(generation_snapshot(2, 3, 2)), TTL)
        .await
        .unwrap();
    // Once the reader has heard it, a new read starts its own L2 read (the gate holds both).
    let mut late = Vec::new();
    eventually(
        "a reader after the invalidation read L2 itself",
        async || {
            late.push(read(reader.clone(), env.clone()));
            tokio::time::sleep(Duration::from_millis(5)).await;
            l2.reads() >= 2
        },
    )
    .await;
    l2.open();
    assert_eq!(early.await.unwrap(), Revision(1));
    let last = late.pop().unwrap();
    assert_eq!(
        last.await.unwrap(),
        Revision(2),
        "the reader joined a read older than the invalidation"
    );
}
