//! `MemoryCache`: the in-process implementation of [`FeatureFlagCache`], on moka.
//!
//! Each environment is one moka entry holding an `Arc` of its snapshot, its revision and the
//! instant it expires. Reads clone two `Arc`s and take no lock of ours; `set` and `invalidate`
//! decide against the current entry inside moka's per-key `and_compute_with`, so the revision
//! rule and the replacement are one atomic step per environment.
//!
//! Decisions:
//! - **TTL is exact.** Every read compares the entry's own expiry instant with the clock, so a TTL
//!   is honoured to the millisecond whatever moka's eviction timing; moka's per-entry expiry only
//!   reclaims the memory afterwards. Declared slack: 1 ms.
//! - **Tombstones.** `invalidate` replaces the entry with a tombstone that remembers the revision
//!   (the larger of the given one and the one cached) for [`MemoryCacheBuilder::tombstone_ttl`]
//!   (default 10 minutes, far longer than any fill takes), so a slow fill of an older revision
//!   is refused. An expired entry remembers nothing.
//! - **Bounded.** At most [`MemoryCacheBuilder::max_environments`] environments (default 10,000)
//!   are kept; beyond that moka evicts the least useful, which is only a future miss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flag_core::{
    CacheError, Environment, EnvironmentSnapshot, FeatureFlagCache, FlagKey, FlagLookup,
    FnvBuildHasher, Revision, SetOutcome, async_trait,
};
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};

/// The TTL slack this adapter declares to the conformance suite.
pub const TTL_SLACK: Duration = Duration::from_millis(1);

/// One environment's cache entry: a snapshot, or a tombstone left by `invalidate`.
#[derive(Debug, Clone)]
struct Slot {
    snapshot: Option<Arc<EnvironmentSnapshot>>,
    revision: Revision,
    expires_at: Instant,
}

impl Slot {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// Tells moka to drop each slot when it expires.
struct SlotExpiry;

impl Expiry<Environment, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _: &Environment,
        slot: &Arc<Slot>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(slot.expires_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &Environment,
        slot: &Arc<Slot>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.expires_at.saturating_duration_since(updated_at))
    }
}

/// An in-process cache of environment snapshots.
#[derive(Clone)]
pub struct MemoryCache {
    /// Keyed with FNV: only existing environments are stored (a client's junk name is looked up,
    /// never added), and SipHash was a tenth of a lookup.
    slots: Cache<Environment, Arc<Slot>, FnvBuildHasher>,
    tombstone_ttl: Duration,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("environments", &self.slots.entry_count())
            .field("tombstone_ttl", &self.tombstone_ttl)
            .finish()
    }
}

/// Configures a [`MemoryCache`].
#[derive(Debug, Clone)]
pub struct MemoryCacheBuilder {
    max_environments: u64,
    tombstone_ttl: Duration,
}

impl Default for MemoryCacheBuilder {
    fn default() -> Self {
        Self {
            max_environments: 10_000,
            tombstone_ttl: Duration::from_secs(600),
        }
    }
}

impl MemoryCacheBuilder {
    /// How many environments are kept at most.
    #[must_use]
    pub fn max_environments(mut self, max: u64) -> Self {
        self.max_environments = max;
        self
    }

    /// How long an invalidation's revision is remembered.
    #[must_use]
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// The cache.
    pub fn build(self) -> MemoryCache {
        MemoryCache {
            slots: Cache::builder()
                .max_capacity(self.max_environments)
                .expire_after(SlotExpiry)
                .build_with_hasher(FnvBuildHasher::default()),
            tombstone_ttl: self.tombstone_ttl,
        }
    }
}

impl MemoryCache {
    /// A builder with the defaults (10,000 environments, 10-minute tombstones).
    pub fn builder() -> MemoryCacheBuilder {
        MemoryCacheBuilder::default()
    }

    /// A cache with the defaults.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// The live slot of `env`, if any.
    async fn live_slot(&self, env: &Environment) -> Option<Arc<Slot>> {
        let slot = self.slots.get(env).await?;
        slot.is_live(Instant::now()).then_some(slot)
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl FeatureFlagCache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        Ok(self
            .live_slot(env)
            .await
            .and_then(|slot| slot.snapshot.clone()))
    }

    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        let now = Instant::now();
        Ok(self.slots.get(env).await.and_then(|slot| {
            let remaining = slot.expires_at.checked_duration_since(now)?;
            let snapshot = slot.snapshot.clone()?;
            (!remaining.is_zero()).then_some((snapshot, Some(remaining)))
        }))
    }

    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        let Some(snapshot) = self
            .live_slot(env)
            .await
            .and_then(|slot| slot.snapshot.clone())
        else {
            return Ok(FlagLookup::Miss);
        };
        Ok(snapshot.lookup(key.as_str()))
    }

    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        if ttl.is_zero() {
            return Err(CacheError::ZeroTtl);
        }
        let revision = snapshot.revision();
        let result = self
            .slots
            .entry(env.clone())
            .and_compute_with(|current| {
                let now = Instant::now();
                let newer_known = current
                    .map(|entry| entry.into_value())
                    .is_some_and(|slot| slot.is_live(now) && slot.revision > revision);
                let op = if newer_known {
                    Op::Nop
                } else {
                    Op::Put(Arc::new(Slot {
                        snapshot: Some(snapshot),
                        revision,
                        // An absurd TTL saturates instead of overflowing the clock.
                        expires_at: now
                            .checked_add(ttl)
                            .unwrap_or(now + Duration::from_secs(365 * 86_400)),
                    }))
                };
                std::future::ready(op)
            })
            .await;
        Ok(match result {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => SetOutcome::Stored,
            _ => SetOutcome::Stale,
        })
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        let tombstone_ttl = self.tombstone_ttl;
        self.slots
            .entry(env.clone())
            .and_compute_with(|current| {
                let now = Instant::now();
                let known = current
                    .map(|entry| entry.into_value())
                    .filter(|slot| slot.is_live(now))
                    .map_or(Revision::ZERO, |slot| slot.revision);
                std::future::ready(Op::Put(Arc::new(Slot {
                    snapshot: None,
                    revision: known.max(revision),
                    expires_at: now + tombstone_ttl,
                })))
            })
            .await;
        Ok(())
    }
}
