//! `NoCache`: a cache that holds nothing (`CACHE_BACKEND=none`), so every read goes to the
//! repository.

use std::sync::Arc;
use std::time::Duration;

use flag_core::{
    CacheError, Environment, EnvironmentSnapshot, FeatureFlagCache, FlagKey, FlagLookup, Revision,
    SetOutcome, async_trait,
};

/// A cache that holds nothing: every read misses and every fill is dropped. It deliberately does
/// not pass the conformance suite (nothing is ever cached); it exists to run without a cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

#[async_trait]
impl FeatureFlagCache for NoCache {
    fn backend(&self) -> &'static str {
        "none"
    }

    async fn get(&self, _: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        Ok(None)
    }

    async fn get_flag(&self, _: &Environment, _: &FlagKey) -> Result<FlagLookup, CacheError> {
        Ok(FlagLookup::Miss)
    }

    async fn set(
        &self,
        _: &Environment,
        _: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        if ttl.is_zero() {
            return Err(CacheError::ZeroTtl);
        }
        Ok(SetOutcome::Stored)
    }

    async fn invalidate(&self, _: &Environment, _: Revision) -> Result<(), CacheError> {
        Ok(())
    }
}
