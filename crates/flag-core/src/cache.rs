//! The cache port: environment-scoped snapshots with a TTL and revisions that never go back.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::names::{Environment, FlagKey};
use crate::snapshot::{EnvironmentSnapshot, FlagLookup, Revision};

/// A cache of whole environment snapshots, shared as `Arc<dyn FeatureFlagCache>`.
///
/// # Contract
///
/// Every adapter obeys these rules; `flag-conformance` proves each of them (the property that
/// does so is named after the rule).
///
/// 1. **TTL to the millisecond.** A read that ends before `set_started + ttl - slack` hits; a
///    read that begins after `set_ended + ttl + slack` misses, where `slack` is the adapter's
///    declared allowance (a few ms at most). A zero TTL is [`CacheError::ZeroTtl`].
///    (proven by `ttl_is_honoured`, `zero_ttl_is_rejected`)
/// 2. **Atomic sets.** A concurrent reader sees the old snapshot or the new one, never a mix;
///    two racing `set`s leave exactly one of them. (proven by `set_is_atomic`, `racing_sets_leave_one`)
/// 3. **Empty environments are cacheable.** `set(env, empty)` then `get(env)` is a hit with no
///    flags. (proven by `empty_environment_is_cacheable`)
/// 4. **Revisions never go back.** A `set` whose revision is older than the cached one, or older
///    than the last `invalidate`, answers [`SetOutcome::Stale`] and changes nothing. An equal
///    revision replaces. (proven by `revision_never_goes_back`, `stale_set_after_invalidate`)
/// 5. **Environments are isolated.** Nothing done to one is visible in another; look-alike names
///    (`prod` / `prod-eu`) never collide. (proven by `environments_are_isolated`)
/// 6. **Failures are values.** A backend fault is a [`CacheError`] returned within the adapter's
///    configured timeout, never a panic or a hang. (proven by each adapter's fault tests)
/// 7. **`get_flag` agrees with `get`.** [`FlagLookup::Hit`] when the cached snapshot has the
///    flag, [`FlagLookup::Absent`] when the environment is cached without it, [`FlagLookup::Miss`]
///    when the environment is not cached. (proven by `get_flag_agrees_with_get`)
/// 8. **`get_with_ttl` never promises more than `get` serves.** It answers what `get` would, and
///    the time it reports left, counted from when the call began, ends no later than the entry's
///    TTL plus the slack: a layer in front of this cache that keeps an answer for that long never
///    outlives it. Reporting less, or `None` (cannot tell), is allowed.
///    (proven by `get_with_ttl_never_outlives_get`)
/// 9. **Round trips.** Maximum-length and Unicode keys, large values and a 10,000-flag
///    environment come back exactly as stored.
///    (proven by `unusual_keys_and_values_round_trip`, `large_environment_round_trips`)
///
/// The model test (`model_test`) drives random sequences of every operation against a reference
/// model of rules 1 to 8 at once.
///
/// Health and status are provided methods, so the server asks the port and never knows the
/// adapter: [`Self::ping`] for readiness, [`Self::tier_status`] for a layered cache's metrics.
///
/// # Why `#[async_trait]`
///
/// The port must be object-safe (the server picks the backend at run time from configuration),
/// and native `async fn` in traits is not yet `dyn`-compatible. `#[async_trait]` costs one boxed
/// future per call, tens of nanoseconds, against a Redis round trip of tens of microseconds or an
/// HTTP request of the same order; a blanket `dyn` shim over native futures would save that box
/// at the price of two traits per port. We will revisit it if a profile ever shows the box.
#[async_trait]
pub trait FeatureFlagCache: Send + Sync + fmt::Debug {
    /// A short, stable name of the backend (`memory`, `redis`, ...) for metrics and logs.
    fn backend(&self) -> &'static str;

    /// The whole cached snapshot of `env`, or `None` on a miss.
    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError>;

    /// One flag of `env`: hit, absent from a cached environment, or a miss.
    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError>;

    /// Replaces the whole of `env` atomically for `ttl`, unless a newer revision is known.
    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError>;

    /// Drops `env` and remembers `revision`, so a later `set` of an older revision is stale.
    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError>;

    /// [`get`](Self::get), with how long the entry has left to live when the backend can tell
    /// (`None` when it cannot). A layer in front of this cache uses it never to outlive it.
    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        Ok(self.get(env).await?.map(|snapshot| (snapshot, None)))
    }

    /// Succeeds when the backend answers, for readiness checks; an in-process cache always does.
    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    /// Whether the cache holds anything for `env`, a snapshot or the mark an invalidation leaves:
    /// a sign, in a cache shared by several instances, that another one wrote to `env`. The
    /// service asks it about names it does not know before it lists the repository; nothing is
    /// stored by asking. `false` (the provided answer) means "cannot tell": an in-process cache
    /// only holds what this instance's own reads and writes put there, which the service knows.
    async fn holds_environment(&self, env: &Environment) -> Result<bool, CacheError> {
        let _ = env;
        Ok(false)
    }

    /// How the in-process layer of a layered cache is doing, for metrics; `None` for a cache of
    /// one layer.
    fn tier_status(&self) -> Option<TierStatus> {
        None
    }
}

/// The trait object the service and server hold.
pub type DynFeatureFlagCache = dyn FeatureFlagCache;

/// What a layered cache (an in-process layer kept fresh by an invalidation bus) tells of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierStatus {
    /// Whether the in-process layer answers reads (its bus subscription is established).
    pub l1_serving: bool,
    /// How many times the subscription was lost since start (each loss drops the layer whole).
    pub subscription_losses: u64,
}

/// What `set` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The snapshot replaced the environment.
    Stored,
    /// A newer revision is cached or was invalidated; nothing changed.
    Stale,
}

/// A cache failure; the service answers from the repository instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The backend did not answer within the configured timeout.
    #[error("cache call timed out after {}ms", after.as_millis())]
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// The backend cannot be reached (refused, closed, reconnecting).
    #[error("cache backend unavailable: {message}")]
    Unavailable {
        /// What the backend or client said.
        message: String,
    },
    /// The backend holds data this adapter cannot read (edited by hand, another version).
    #[error("cache data for environment {environment} is corrupt: {message}")]
    Corrupt {
        /// The environment whose entry is unreadable.
        environment: Environment,
        /// What is wrong with it.
        message: String,
    },
    /// `set` was given a TTL of zero.
    #[error("cache TTL must be greater than zero")]
    ZeroTtl,
    /// The snapshot is larger than the backend accepts.
    #[error("snapshot of {size} bytes exceeds the backend's limit of {limit} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The backend's limit.
        limit: usize,
    },
    /// Any other backend failure.
    #[error("cache backend error: {message}")]
    Backend {
        /// What the backend said.
        message: String,
    },
}

impl CacheError {
    /// Whether the backend is down or unreachable (a timeout, a refused or broken connection),
    /// as opposed to a call it refused or data it holds: what opens the service's circuit.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            CacheError::Timeout { .. } | CacheError::Unavailable { .. }
        )
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CacheError::Timeout { .. }
                | CacheError::Unavailable { .. }
                | CacheError::Backend { .. }
        )
    }
}

macro_rules! forward_cache {
    ($wrapper:ty) => {
        #[async_trait]
        impl<T: FeatureFlagCache + ?Sized> FeatureFlagCache for $wrapper {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }

            async fn get(
                &self,
                env: &Environment,
            ) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
                (**self).get(env).await
            }

            async fn get_flag(
                &self,
                env: &Environment,
                key: &FlagKey,
            ) -> Result<FlagLookup, CacheError> {
                (**self).get_flag(env, key).await
            }

            async fn set(
                &self,
                env: &Environment,
                snapshot: Arc<EnvironmentSnapshot>,
                ttl: Duration,
            ) -> Result<SetOutcome, CacheError> {
                (**self).set(env, snapshot, ttl).await
            }

            async fn invalidate(
                &self,
                env: &Environment,
                revision: Revision,
            ) -> Result<(), CacheError> {
                (**self).invalidate(env, revision).await
            }

            async fn get_with_ttl(
                &self,
                env: &Environment,
            ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
                (**self).get_with_ttl(env).await
            }

            async fn ping(&self) -> Result<(), CacheError> {
                (**self).ping().await
            }

            async fn holds_environment(&self, env: &Environment) -> Result<bool, CacheError> {
                (**self).holds_environment(env).await
            }

            fn tier_status(&self) -> Option<TierStatus> {
                (**self).tier_status()
            }
        }
    };
}

forward_cache!(Arc<T>);
forward_cache!(Box<T>);
