//! `TieredCache`: an in-process L1 in front of a shared L2, kept coherent across instances by an
//! invalidation bus. Itself a [`FeatureFlagCache`], so the service cannot tell it from any other.
//!
//! - Reads: L1 first; on a miss, L2, and the answer fills L1 for the shorter of the L1 TTL and
//!   what L2 says the entry has left to live (so L1 never outlives L2's TTL; an L2 that cannot
//!   tell fills nothing).
//! - `set`: L2, then L1 when L2 stored it. `invalidate`: L2, then L1, then a publish on the bus;
//!   a failed publish is an error, so the service retries the invalidation.
//! - Every instance drops its L1 entry when an invalidation arrives on the bus (L1 keeps the
//!   revision, so a fill that read L2 before the change cannot store its older snapshot).
//! - While the subscription is lost, L1 is bypassed and dropped whole, and dropped whole again
//!   when the subscription comes back: messages may have been missed in between. A fill that
//!   began before a drop is not stored.
//! - A bus that subscribes per environment (sharded pub/sub) is asked to watch an environment the
//!   first time L2 answers it; L1 keeps nothing of an environment until the bus says its
//!   invalidations arrive, checked before L2 is read, so no invalidation can fall in between.
//! - Concurrent L1 misses on one environment share one L2 read ([`SingleFlight`]): when a large
//!   environment's L1 entry expires under load, one request reads and decodes it from L2 while
//!   the others wait for that answer, instead of each fetching megabytes at once (which ran into
//!   the L2 timeout and opened the service's circuit). An invalidation lets go of the read in
//!   progress, so readers after it read L2 again.
//! - The L1 TTL bounds staleness if everything else fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flag_core::async_trait;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use flag_core::{
    BusEvent, CacheError, DynFeatureFlagCache, DynInvalidationBus, Environment,
    EnvironmentSnapshot, FeatureFlagCache, FlagKey, FlagLookup, Revision, SetOutcome, SingleFlight,
    TierStatus,
};

/// The L1 TTL when none is configured: five seconds.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(5);

/// An in-process L1 over a shared L2, invalidated across instances through a bus.
#[derive(Debug, Clone)]
pub struct TieredCache {
    inner: Arc<Tiers>,
}

#[derive(Debug)]
struct Tiers {
    l1: Arc<DynFeatureFlagCache>,
    l2: Arc<DynFeatureFlagCache>,
    bus: Arc<DynInvalidationBus>,
    l1_ttl: Duration,
    /// L1 serves only while the bus subscription is established.
    subscribed: AtomicBool,
    /// Bumped whenever L1 is dropped whole; a fill that began before a bump is not stored.
    epoch: AtomicU64,
    /// How many times the bus reported its subscription lost.
    losses: AtomicU64,
    /// Environments L1 may hold, with the newest revision it was given for each.
    held: Mutex<HashMap<Environment, Revision>>,
    /// L2 reads in progress after L1 misses, shared by the readers that missed together.
    l2_reads: SingleFlight<L2Answer>,
}

/// What an L2 read answers.
type L2Answer = Result<Option<Arc<EnvironmentSnapshot>>, CacheError>;

impl TieredCache {
    /// Starts a tiered cache (and its bus listener, which ends when the bus closes or the cache is
    /// dropped). Call it inside a Tokio runtime, which runs the listener task.
    pub fn start(
        l1: Arc<DynFeatureFlagCache>,
        l2: Arc<DynFeatureFlagCache>,
        bus: Arc<DynInvalidationBus>,
        l1_ttl: Duration,
    ) -> Self {
        // Subscribe before reading the state, so no change between the two goes unseen.
        let events = bus.subscribe();
        let inner = Arc::new(Tiers {
            subscribed: AtomicBool::new(bus.is_live()),
            l1,
            l2,
            bus,
            l1_ttl,
            epoch: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            held: Mutex::default(),
            l2_reads: SingleFlight::default(),
        });
        tokio::spawn(listen(Arc::downgrade(&inner), events));
        Self { inner }
    }

    /// Whether L1 is serving (the bus subscription is established).
    pub fn l1_serving(&self) -> bool {
        self.inner.serving()
    }

    /// How many times the bus subscription was lost since start (each loss dropped L1 whole).
    pub fn subscription_losses(&self) -> u64 {
        self.inner.losses.load(Ordering::SeqCst)
    }
}

/// Applies bus events to L1 until the bus closes or the cache is gone.
async fn listen(
    tiers: std::sync::Weak<Tiers>,
    mut events: tokio::sync::broadcast::Receiver<BusEvent>,
) {
    loop {
        let event = events.recv().await;
        let Some(tiers) = tiers.upgrade() else {
            return;
        };
        match event {
            Ok(BusEvent::Invalidated {
                environment,
                revision,
            }) => {
                debug!(%environment, %revision, "invalidation received");
                tiers.l2_reads.detach(&environment);
                let _ = tiers.l1.invalidate(&environment, revision).await;
            }
            Ok(BusEvent::Lost) => {
                warn!(
                    "invalidation subscription lost: bypassing and dropping the in-process cache"
                );
                tiers.subscribed.store(false, Ordering::SeqCst);
                tiers.losses.fetch_add(1, Ordering::SeqCst);
                tiers.drop_l1().await;
            }
            Ok(BusEvent::Restored) => {
                // Messages sent while it was lost are gone: start L1 over.
                tiers.drop_l1().await;
                tiers.subscribed.store(true, Ordering::SeqCst);
                debug!("invalidation subscription restored");
            }
            Err(RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "fell behind the invalidation bus: dropping the in-process cache"
                );
                tiers.drop_l1().await;
            }
            Err(RecvError::Closed) => {
                tiers.subscribed.store(false, Ordering::SeqCst);
                tiers.drop_l1().await;
                return;
            }
        }
    }
}

/// What was true when an L2 read or write began.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    /// L1's epoch then: a drop since means the answer may be older than the drop.
    epoch: u64,
    /// Whether the bus delivered the environment's invalidations then.
    watching: bool,
}

impl Tiers {
    /// Drops every environment L1 may hold.
    async fn drop_l1(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.l2_reads.detach_all();
        let held: Vec<(Environment, Revision)> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (env, revision) in held {
            let _ = self.l1.invalidate(&env, revision).await;
        }
    }

    fn serving(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// Taken before reading or writing L2: what a fill with L2's answer must know.
    fn ticket(&self, env: &Environment) -> Ticket {
        Ticket {
            epoch: self.epoch.load(Ordering::SeqCst),
            watching: self.bus.is_watching(env),
        }
    }

    /// Puts `snapshot` in L1 for `ttl`, unless L1 was dropped since the ticket was taken, is
    /// bypassed, or `env` was not watched then (in which case the bus is asked to watch it).
    async fn fill_l1(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
        ticket: Ticket,
    ) {
        if !ticket.watching {
            self.bus.watch(env);
            return;
        }
        let epoch = ticket.epoch;
        if ttl.is_zero() || !self.serving() || self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let revision = snapshot.revision();
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let known = held.entry(env.clone()).or_default();
            *known = (*known).max(revision);
        }
        let _ = self.l1.set(env, snapshot, ttl).await;
        // A drop that ran while this fill was being stored may have missed it: drop it again.
        if self.epoch.load(Ordering::SeqCst) != epoch {
            let _ = self.l1.invalidate(env, revision).await;
        }
    }

    /// L2's snapshot of `env` after an L1 miss, read once for every reader that missed meanwhile.
    async fn read_after_miss(&self, env: &Environment) -> L2Answer {
        self.l2_reads.share(env, || self.read_through_l2(env)).await
    }

    /// L2's snapshot of `env`, filling L1 with it.
    async fn read_through_l2(&self, env: &Environment) -> L2Answer {
        let ticket = self.ticket(env);
        let Some((snapshot, remaining)) = self.l2.get_with_ttl(env).await? else {
            return Ok(None);
        };
        if let Some(remaining) = remaining {
            self.fill_l1(
                env,
                Arc::clone(&snapshot),
                remaining.min(self.l1_ttl),
                ticket,
            )
            .await;
        }
        Ok(Some(snapshot))
    }
}

#[async_trait]
impl FeatureFlagCache for TieredCache {
    fn backend(&self) -> &'static str {
        "tiered"
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        let tiers = &self.inner;
        if tiers.serving()
            && let Ok(Some(snapshot)) = tiers.l1.get(env).await
        {
            return Ok(Some(snapshot));
        }
        tiers.read_after_miss(env).await
    }

    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        let tiers = &self.inner;
        if tiers.serving() {
            match tiers.l1.get_flag(env, key).await {
                Ok(FlagLookup::Miss) | Err(_) => {}
                Ok(found) => return Ok(found),
            }
        }
        Ok(match tiers.read_after_miss(env).await? {
            Some(snapshot) => snapshot.lookup(key.as_str()),
            None => FlagLookup::Miss,
        })
    }

    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        let tiers = &self.inner;
        let ticket = tiers.ticket(env);
        let outcome = tiers.l2.set(env, Arc::clone(&snapshot), ttl).await?;
        if outcome == SetOutcome::Stored {
            tiers
                .fill_l1(env, snapshot, ttl.min(tiers.l1_ttl), ticket)
                .await;
        }
        Ok(outcome)
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        let tiers = &self.inner;
        tiers.l2.invalidate(env, revision).await?;
        let _ = tiers.l1.invalidate(env, revision).await;
        crate::announced::announce(&*tiers.bus, env, revision).await
    }

    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        // What L1 has left is not what L2 has left; ask L2, which knows.
        let tiers = &self.inner;
        let ticket = tiers.ticket(env);
        let found = tiers.l2.get_with_ttl(env).await?;
        if let Some((snapshot, Some(remaining))) = &found {
            tiers
                .fill_l1(
                    env,
                    Arc::clone(snapshot),
                    (*remaining).min(tiers.l1_ttl),
                    ticket,
                )
                .await;
        }
        Ok(found)
    }

    /// L2's health is the tiered cache's: L1 only ever holds what L2 answered.
    async fn ping(&self) -> Result<(), CacheError> {
        self.inner.l2.ping().await
    }

    /// Asked of L2 alone: neither L1 nor the bus's watch set learns the name.
    async fn holds_environment(&self, env: &Environment) -> Result<bool, CacheError> {
        self.inner.l2.holds_environment(env).await
    }

    fn tier_status(&self) -> Option<TierStatus> {
        Some(TierStatus {
            l1_serving: self.l1_serving(),
            subscription_losses: self.subscription_losses(),
        })
    }
}
