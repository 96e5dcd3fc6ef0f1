//! The read path: the cache first, the repository on a miss (one read shared by concurrent
//! misses, and the cache filled with it), last-known-good when the repository fails, and never a
//! snapshot older than a write this service made.

use std::sync::{Arc, PoisonError};

use tracing::{debug, warn};

use super::{FeatureFlagService, Inner, ServiceError, lock};
use crate::cache::{CacheError, SetOutcome};
use crate::evaluation::{Evaluation, Reason};
use crate::flag::FeatureFlag;
use crate::names::{Environment, FlagKey};
use crate::repository::RepositoryError;
use crate::snapshot::{EnvironmentSnapshot, FlagLookup, Revision};

/// Whether an answer came from the stores now or from the last-known-good snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freshness {
    Current,
    LastKnownGood,
}

impl Freshness {
    /// `evaluation`, with the reason `CACHED` when it came from the last-known-good snapshot.
    pub(super) fn mark(self, evaluation: Evaluation) -> Evaluation {
        match self {
            Freshness::Current => evaluation,
            Freshness::LastKnownGood => evaluation.with_reason(Reason::Cached),
        }
    }
}

/// How often a read retries when a fill it joined turned out older than a write it must see.
const MAX_LOAD_ATTEMPTS: usize = 3;

impl FeatureFlagService {
    /// The snapshot of `env` and where it came from.
    pub(super) async fn snapshot_with_freshness(
        &self,
        env: &Environment,
    ) -> Result<(Arc<EnvironmentSnapshot>, Freshness), ServiceError> {
        let inner = &self.inner;
        if !self.exists(env).await? {
            return Ok((inner.catalog.nothing(), Freshness::Current));
        }
        let floor = inner.floor(env);
        if let Some(snapshot) = inner.oversized.fresh(env, floor) {
            return Ok((snapshot, Freshness::Current));
        }
        if inner.breaker.is_open() {
            return self.without_cache(env, floor).await;
        }
        let fill = match inner.cache.get(env).await {
            Ok(Some(snapshot)) if snapshot.revision() >= floor => {
                inner.counters.cache_hits.increment();
                inner.last_good.confirm(env, &snapshot);
                return Ok((snapshot, Freshness::Current));
            }
            Ok(_) => {
                inner.counters.cache_misses.increment();
                true
            }
            Err(error) => inner.cache_failed_read(env, &error),
        };
        self.load_or_last_good(env, floor, fill).await
    }

    /// One flag of `env` (`None`: absent) and where it came from.
    pub(super) async fn find_flag_with_freshness(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<(Option<Arc<FeatureFlag>>, Freshness), ServiceError> {
        let inner = &self.inner;
        if !self.exists(env).await? {
            return Ok((None, Freshness::Current));
        }
        let floor = inner.floor(env);
        if let Some(snapshot) = inner.oversized.fresh(env, floor) {
            return Ok((snapshot.flag(key.as_str()).cloned(), Freshness::Current));
        }
        if inner.breaker.is_open() {
            let (snapshot, freshness) = self.without_cache(env, floor).await?;
            return Ok((snapshot.flag(key.as_str()).cloned(), freshness));
        }
        let fill = match inner.cache.get_flag(env, key).await {
            Ok(FlagLookup::Hit { flag, revision }) if revision >= floor => {
                inner.counters.cache_hits.increment();
                self.keep_up(env, revision);
                return Ok((Some(flag), Freshness::Current));
            }
            Ok(FlagLookup::Absent { revision }) if revision >= floor => {
                inner.counters.cache_absent.increment();
                self.keep_up(env, revision);
                return Ok((None, Freshness::Current));
            }
            Ok(_) => {
                inner.counters.cache_misses.increment();
                true
            }
            Err(error) => inner.cache_failed_read(env, &error),
        };
        let (snapshot, freshness) = self.load_or_last_good(env, floor, fill).await?;
        Ok((snapshot.flag(key.as_str()).cloned(), freshness))
    }

    /// Whether `env` exists: known to the catalog, marked in a shared cache, or listed by the
    /// repository (listed at most once per interval, whatever the number of unknown names).
    pub(super) async fn exists(&self, env: &Environment) -> Result<bool, ServiceError> {
        let inner = &self.inner;
        if inner.catalog.knows(env) {
            return Ok(true);
        }
        if !inner.breaker.is_open() {
            match inner.cache.holds_environment(env).await {
                Ok(true) => {
                    inner.catalog.learn(env);
                    return Ok(true);
                }
                Ok(false) => {}
                Err(error) => {
                    inner.counters.cache_errors.increment();
                    inner.cache_outage(&error);
                    debug!(%env, %error, "cache could not tell whether an environment exists");
                }
            }
        }
        Ok(inner
            .catalog
            .exists_after_listing(env, || inner.list_environments())
            .await?)
    }

    /// After a single-flag cache read at `revision`: keeps the last-known-good snapshot in step,
    /// fetching the whole snapshot from the cache in the background when it is behind.
    fn keep_up(&self, env: &Environment, revision: Revision) {
        let inner = &self.inner;
        if inner.last_good.confirm_revision(env, revision) || !inner.last_good.start_catch_up(env) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            inner.last_good.end_catch_up(env);
            return;
        };
        let inner = Arc::clone(inner);
        let env = env.clone();
        runtime.spawn(async move {
            if let Ok(Some(snapshot)) = inner.cache.get(&env).await {
                inner.last_good.confirm(&env, &snapshot);
            }
            inner.last_good.end_catch_up(&env);
        });
    }

    /// The snapshot of `env` while the cache's circuit is open: this instance's in-process copy
    /// while it is younger than the outage refresh interval, else a repository read (shared by
    /// concurrent readers) that becomes the copy.
    async fn without_cache(
        &self,
        env: &Environment,
        floor: Revision,
    ) -> Result<(Arc<EnvironmentSnapshot>, Freshness), ServiceError> {
        let inner = &self.inner;
        inner.breaker.bypassed();
        inner.counters.cache_fallbacks.increment();
        if let Some(snapshot) = inner.outage_copies.fresh(env, floor) {
            return Ok((snapshot, Freshness::Current));
        }
        self.load_or_last_good(env, floor, false).await
    }

    /// [`Self::load`], or the last-known-good snapshot when the repository fails or rests. While
    /// the cache's circuit is open, what the repository answered becomes the in-process copy.
    async fn load_or_last_good(
        &self,
        env: &Environment,
        floor: Revision,
        fill: bool,
    ) -> Result<(Arc<EnvironmentSnapshot>, Freshness), ServiceError> {
        let inner = &self.inner;
        let last_good = inner.last_good.consult(env);
        if let Some(snapshot) = last_good.resting_answer(floor) {
            inner.counters.stale_answers.increment();
            return Ok((snapshot, Freshness::LastKnownGood));
        }
        match self.load(env, floor, fill).await {
            Ok(snapshot) => {
                last_good.answered(&snapshot);
                if inner.breaker.is_open() {
                    inner.outage_copies.keep(env, Arc::clone(&snapshot));
                }
                Ok((snapshot, Freshness::Current))
            }
            Err(error) => {
                let outage = matches!(&error, ServiceError::Repository(error) if error.is_outage());
                let Some(snapshot) = last_good.failed(outage) else {
                    return Err(error);
                };
                inner.counters.stale_answers.increment();
                if let Some(held_back) = inner.quiet.permit() {
                    warn!(%env, revision = %snapshot.revision(), %error, held_back,
                        "cache and repository failed; answering from the last-known-good snapshot");
                }
                Ok((snapshot, Freshness::LastKnownGood))
            }
        }
    }

    /// Loads `env` from the repository, sharing the read with concurrent callers.
    async fn load(
        &self,
        env: &Environment,
        floor: Revision,
        fill: bool,
    ) -> Result<Arc<EnvironmentSnapshot>, ServiceError> {
        let inner = &self.inner;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let snapshot = inner.flights.share(env, || inner.fetch(env, fill)).await?;
            if snapshot.revision() >= floor || attempt >= MAX_LOAD_ATTEMPTS {
                if snapshot.revision() < floor {
                    warn!(%env, revision = %snapshot.revision(), %floor,
                        "repository returned a revision older than one this server wrote");
                }
                return Ok(snapshot);
            }
            // The fill we joined began before a write that this read must see; read again.
        }
    }
}

impl Inner {
    /// The newest revision this service wrote to `env`: nothing older may be served.
    pub(super) fn floor(&self, env: &Environment) -> Revision {
        self.floors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(env)
            .copied()
            .unwrap_or_default()
    }

    /// Records a write of `env` at `revision`.
    pub(super) fn raise_floor(&self, env: &Environment, revision: Revision) {
        let mut floors = self.floors.write().unwrap_or_else(PoisonError::into_inner);
        let floor = floors.entry(env.clone()).or_default();
        *floor = (*floor).max(revision);
    }

    /// Counts and logs a failed cache read; answers whether the cache should be refilled.
    ///
    /// Unreadable data in a working cache is replaced by the fill that follows; a cache that is
    /// down or slow is not asked to store anything (that would only add its timeout to the read).
    fn cache_failed_read(self: &Arc<Self>, env: &Environment, error: &CacheError) -> bool {
        self.counters.cache_errors.increment();
        self.counters.cache_fallbacks.increment();
        if self.cache_outage(error) {
            return false;
        }
        let refill = matches!(error, CacheError::Corrupt { .. });
        if let Some(held_back) = self.quiet.permit() {
            warn!(%env, backend = self.cache.backend(), %error, refill, held_back,
                "cache read failed; answering from the repository");
        }
        refill
    }

    /// Counts and logs, once per flag version, the stored flags of `snapshot` that could not be
    /// read (their stand-ins answer a `GENERAL` error; the rest of the environment is served).
    fn note_unreadable(&self, env: &Environment, snapshot: &EnvironmentSnapshot) {
        for flag in snapshot.flags() {
            let Some(reason) = flag.unreadable_reason() else {
                continue;
            };
            let first = lock(&self.unreadable_seen).insert((
                env.clone(),
                flag.key().clone(),
                flag.version(),
            ));
            if first {
                self.counters.unreadable_flags.increment();
                warn!(%env, key = %flag.key(), version = flag.version(), reason,
                    "a stored flag cannot be read: it answers an error; its environment's other \
                     flags are served; writing it again replaces it");
            }
        }
    }

    /// One repository read, and the cache fill that follows it.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        env: &Environment,
        fill: bool,
    ) -> Result<Arc<EnvironmentSnapshot>, RepositoryError> {
        self.counters.repository_reads.increment();
        let snapshot = Arc::new(self.repository.snapshot(env).await?);
        self.note_unreadable(env, &snapshot);
        if fill {
            match self.cache.set(env, Arc::clone(&snapshot), self.ttl).await {
                Ok(SetOutcome::Stored) => {
                    self.counters.fills_stored.increment();
                    debug!(%env, revision = %snapshot.revision(), "cache filled");
                }
                Ok(SetOutcome::Stale) => {
                    self.counters.fills_stale.increment();
                    debug!(%env, revision = %snapshot.revision(), "cache fill refused as stale");
                }
                Err(CacheError::TooLarge { size, limit }) => {
                    self.counters.fills_too_large.increment();
                    debug!(%env, size, limit, "snapshot too large for the cache; kept in process");
                    self.oversized.keep(env, Arc::clone(&snapshot));
                }
                Err(error) => {
                    self.counters.cache_errors.increment();
                    if !self.cache_outage(&error)
                        && let Some(held_back) = self.quiet.permit()
                    {
                        warn!(%env, backend = self.cache.backend(), %error, held_back,
                            "cache fill failed");
                    }
                }
            }
        }
        Ok(snapshot)
    }
}
