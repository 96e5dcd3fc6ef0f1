//! `AnnouncedCache`: any cache whose invalidations are also published on an invalidation bus, so
//! that other instances hear of every write (their event streams tell browsers) even when no
//! in-process layer needs the bus to stay coherent.

use std::sync::Arc;
use std::time::Duration;

use flag_core::{
    CacheError, DynFeatureFlagCache, DynInvalidationBus, Environment, EnvironmentSnapshot,
    FeatureFlagCache, FlagKey, FlagLookup, Revision, SetOutcome, TierStatus, async_trait,
};

/// A cache that publishes each invalidation on a bus after the cache took it; a publish that
/// fails is an invalidation that failed, so the service retries it (as [`crate::TieredCache`]
/// does). Everything else is the inner cache's.
#[derive(Clone)]
pub struct AnnouncedCache {
    cache: Arc<DynFeatureFlagCache>,
    bus: Arc<DynInvalidationBus>,
}

impl AnnouncedCache {
    /// `cache`, announcing its invalidations on `bus`.
    pub fn new(cache: Arc<DynFeatureFlagCache>, bus: Arc<DynInvalidationBus>) -> Self {
        Self { cache, bus }
    }
}

/// Publishes `env`'s invalidation at `revision` on `bus`; a publish that fails is the
/// invalidation's failure, so that the service retries it.
pub(crate) async fn announce(
    bus: &DynInvalidationBus,
    env: &Environment,
    revision: Revision,
) -> Result<(), CacheError> {
    bus.publish(env, revision)
        .await
        .map_err(|error| CacheError::Unavailable {
            message: format!("invalidation not published to other instances: {error}"),
        })
}

impl std::fmt::Debug for AnnouncedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnouncedCache")
            .field("cache", &self.cache)
            .field("bus", &self.bus.backend())
            .finish()
    }
}

#[async_trait]
impl FeatureFlagCache for AnnouncedCache {
    fn backend(&self) -> &'static str {
        self.cache.backend()
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        self.cache.get(env).await
    }

    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        self.cache.get_flag(env, key).await
    }

    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        self.cache.set(env, snapshot, ttl).await
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        self.cache.invalidate(env, revision).await?;
        announce(&*self.bus, env, revision).await
    }

    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        self.cache.get_with_ttl(env).await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.cache.ping().await
    }

    async fn holds_environment(&self, env: &Environment) -> Result<bool, CacheError> {
        self.cache.holds_environment(env).await
    }

    fn tier_status(&self) -> Option<TierStatus> {
        self.cache.tier_status()
    }
}
