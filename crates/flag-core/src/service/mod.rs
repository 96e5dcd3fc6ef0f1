//! `FeatureFlagService`: reads through the cache, writes through the repository.
//!
//! This module is the service's public API; `read_through` is the read path, `catalog` knows
//! which environments exist, [`crate::SingleFlight`] shares concurrent repository reads, `invalidation`
//! retries failed invalidations, `last_good` keeps what to answer when the stores fail, `changes`
//! tells followers of an environment's newest revision,
//! `breaker` stops calling a cache that is out, and `copies` keeps in-process copies of
//! snapshots the cache cannot hold (too large, or the cache is out).
//!
//! Guarantees, each proven by a test (in `tests/service.rs` unless named):
//! - **Environments that do not exist cost nothing.** A read of an environment that has never
//!   had a write (or was removed) is answered as empty at revision 0 without a cache entry, a
//!   last-known-good entry, a single-flight entry or a repository read per request: the catalog
//!   lists the repository at most once a second for names it does not know, after asking a
//!   shared cache whether another instance left a mark (`catalog.rs` unit tests,
//!   `flag-server/tests/flood.rs`). Writes are refused past [`Limits`].
//! - **Single flight.** Concurrent cache misses on one environment cause one repository read.
//! - **A cache never fails a read.** A cache error is logged and counted, and the read is
//!   answered from the repository. A cache that is down or slow is not asked to store the result;
//!   one that answered with unreadable data (`CacheError::Corrupt`) is refilled, which replaces it.
//! - **Read-your-writes, whatever the cache does.** Once a write has returned, every later read
//!   through this service sees it: the service remembers the newest revision it wrote per
//!   environment and treats an older cached snapshot as a miss, and a write detaches any fill
//!   that was in flight before it, so no later reader can join a pre-write fill. This holds even
//!   when the cache's invalidation failed.
//! - **Writes finish whole.** Once a write has been handed to the repository, the commit and every
//!   step after it (the read floor, detaching fills, the invalidation) run on a task of their
//!   own, so a caller that stops waiting (a client that hung up, a request that timed out) never
//!   leaves a write committed but unseen by later reads; it may only miss the answer
//!   (`flag-server/tests/writes.rs` cuts writes short over real sockets).
//! - **Invalidations are retried.** A failed invalidation after a write is retried in the
//!   background with exponential backoff until it succeeds or the cache TTL has passed (after
//!   which the stale entry has expired anyway). One retry task per environment at most.
//! - **A cache outage costs one timeout.** The first call that fails with an outage opens a
//!   circuit: reads stop calling the cache and are answered through in-process copies read from
//!   the repository at most once per environment per outage refresh interval (default 1 s), with
//!   read-your-writes kept; a background probe closes the circuit when the cache answers again.
//!   Warnings are rate-limited to a line a second.
//! - **Changes are announced.** Every environment someone follows ([`FeatureFlagService::watch_changes`],
//!   for event streams) has the newest revision this instance knows of: its own writes at once,
//!   other instances' through a bus or a revision check ([`FeatureFlagService::follow_changes`],
//!   `changes.rs`); a bulk read after an event is never older than the event's revision when the
//!   repository has it ([`FeatureFlagService::bulk_after_event`]).
//! - **Last-known-good survives restarts** when a directory is given
//!   ([`ServiceBuilder::last_good_dir`]): snapshots are written there atomically by a background
//!   task and read back at start (`archive.rs`).
//! - **Last-known-good.** When the cache cannot answer and the repository fails, reads are
//!   answered from the newest snapshot this service served for the environment, as long as the
//!   stores confirmed it less than the stale-if-error bound ago (default 24 h, zero turns it
//!   off); evaluations then carry the reason `CACHED` and the answers are counted. Single-flag
//!   reads served from the cache only see a revision, so when that revision is newer than the
//!   kept snapshot the whole snapshot is fetched from the cache in the background.

mod archive;
mod breaker;
mod catalog;
mod changes;
mod copies;
mod invalidation;
mod last_good;
mod read_through;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::audit::{AuditCursor, AuditPage, AuditQuery};
use crate::cache::{CacheError, DynFeatureFlagCache, TierStatus};
use crate::context::EvaluationContext;
use crate::evaluation::{Evaluation, EvaluationError, Scope};
use crate::explanation::Explanation;
use crate::flag::FeatureFlag;
use crate::fnv::FnvBuildHasher;
use crate::import::{ImportRequest, Imported};
use crate::metrics::{Counters, ServiceMetrics};
use crate::names::{Actor, Environment, FlagKey, SegmentKey};
use crate::repository::{
    Deleted, DynFeatureFlagRepository, OutboxEntry, Precondition, RepositoryError, Upserted,
    UpsertedSegment,
};
use crate::segment::Segment;
use crate::snapshot::{EnvironmentSnapshot, EnvironmentSummary, Revision};

use crate::single_flight::SingleFlight;
use breaker::{Breaker, Quiet};
use catalog::Catalog;
pub use catalog::RELIST_EVERY;
use changes::ChangeFeed;
use copies::{Copies, OVERSIZED_REFRESH};
use invalidation::PendingInvalidations;
pub use invalidation::RetryPolicy;
use last_good::LastKnownGood;

/// The cache TTL used when none is configured: five minutes.
pub const DEFAULT_TTL: Duration = Duration::from_millis(300_000);

/// How long an in-process copy of an environment is served while the cache is out, when none is
/// configured: one second (`FLAG_OUTAGE_REFRESH_MS`).
pub const DEFAULT_OUTAGE_REFRESH: Duration = Duration::from_secs(1);

/// How long last-known-good snapshots may be served when none is configured: 24 hours.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads, evaluates and writes flags, keeping the cache coherent with the repository.
///
/// Cheap to clone: clones share one state.
#[derive(Debug, Clone)]
pub struct FeatureFlagService {
    inner: Arc<Inner>,
}

/// A service configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceConfigError {
    /// The cache TTL is zero.
    #[error("the cache TTL must be greater than zero")]
    ZeroTtl,
    /// The last-known-good directory cannot be created or read.
    #[error("the last-known-good directory {path} cannot be used: {message}")]
    LastGoodDir {
        /// The directory.
        path: String,
        /// What the system said.
        message: String,
    },
}

/// How many environments may exist, and flags each may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Environments that may exist (`FLAG_MAX_ENVIRONMENTS`, 1,000 by default).
    pub max_environments: usize,
    /// Flags one environment may hold (`FLAG_MAX_FLAGS`, 10,000 by default).
    pub max_flags: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_environments: 1_000,
            max_flags: 10_000,
        }
    }
}

/// A write that would take the service past one of its [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// Creating the environment would exceed `max_environments`.
    #[error(
        "environment {environment} cannot be created: {limit} environments exist, the most allowed"
    )]
    Environments {
        /// The environment the write would create.
        environment: Environment,
        /// The limit.
        limit: usize,
    },
    /// Creating the flag would exceed `max_flags` in its environment.
    #[error(
        "flag {key} cannot be created: environment {environment} holds {limit} flags, the most allowed"
    )]
    Flags {
        /// The environment.
        environment: Environment,
        /// The flag the write would create.
        key: FlagKey,
        /// The limit.
        limit: usize,
    },
}

/// A service call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The flag could not be evaluated (not found, no targeting key, ...).
    #[error(transparent)]
    Evaluation(#[from] EvaluationError),
    /// The repository failed or refused the write.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// An explicit cache operation failed (reads never fail because of the cache).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The write would exceed a limit; nothing was written.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The task running a write stopped before it finished (the runtime shut down, or a bug
    /// panicked); the write may or may not have been committed.
    #[error("the write stopped before it finished: {0}")]
    WriteInterrupted(String),
}

/// Every flag of an environment evaluated for one context.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkEvaluation {
    /// The revision of the snapshot evaluated.
    pub revision: Revision,
    /// One result per flag, in key order.
    pub results: Vec<Result<Evaluation, EvaluationError>>,
}

/// The snapshot of one environment, read for a bulk evaluation.
#[derive(Debug, Clone)]
pub struct BulkSnapshot {
    snapshot: Arc<EnvironmentSnapshot>,
    freshness: read_through::Freshness,
}

impl BulkSnapshot {
    /// The revision of the snapshot.
    pub fn revision(&self) -> Revision {
        self.snapshot.revision()
    }

    /// Evaluates every flag for `context` (reason `CACHED` when the snapshot is last-known-good),
    /// within one [`Scope`]: one evaluation time, and each prerequisite evaluated once.
    pub fn evaluate(&self, context: &EvaluationContext) -> BulkEvaluation {
        let scope = Scope::new(&self.snapshot);
        let results = self
            .snapshot
            .flags_marking_prerequisites()
            .map(|(flag, prerequisite)| {
                Evaluation::within_own(Arc::clone(flag), prerequisite, context, &scope)
                    .map(|e| self.freshness.mark(e))
            })
            .collect();
        BulkEvaluation {
            revision: self.snapshot.revision(),
            results,
        }
    }
}

/// Builds a [`FeatureFlagService`] with a non-default TTL or retry policy.
#[derive(Debug)]
pub struct ServiceBuilder {
    repository: Arc<DynFeatureFlagRepository>,
    cache: Arc<DynFeatureFlagCache>,
    ttl: Duration,
    retry: RetryPolicy,
    stale_if_error: Duration,
    outage_refresh: Duration,
    last_good_dir: Option<std::path::PathBuf>,
    limits: Limits,
}

impl ServiceBuilder {
    /// How many environments may exist and flags each may hold.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long after the stores last confirmed it a snapshot may be served while they fail;
    /// zero turns last-known-good off.
    #[must_use]
    pub fn stale_if_error(mut self, bound: Duration) -> Self {
        self.stale_if_error = bound;
        self
    }

    /// How long a filled snapshot stays in the cache.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an in-process copy of an environment is served while the cache is out, before
    /// the repository is read again.
    #[must_use]
    pub fn outage_refresh(mut self, refresh: Duration) -> Self {
        self.outage_refresh = refresh;
        self
    }

    /// A directory where last-known-good snapshots are also written, and read back at start
    /// (must be called within a Tokio runtime's context: the writing runs on it).
    #[must_use]
    pub fn last_good_dir(mut self, directory: impl Into<std::path::PathBuf>) -> Self {
        self.last_good_dir = Some(directory.into());
        self
    }

    /// How failed invalidations are retried.
    #[must_use]
    pub fn invalidation_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The service, or why the configuration cannot work.
    pub fn build(self) -> Result<FeatureFlagService, ServiceConfigError> {
        if self.ttl.is_zero() {
            return Err(ServiceConfigError::ZeroTtl);
        }
        let archive = match &self.last_good_dir {
            None => None,
            Some(directory) => Some(archive::Archive::open(directory).map_err(|error| {
                ServiceConfigError::LastGoodDir {
                    path: directory.display().to_string(),
                    message: error.to_string(),
                }
            })?),
        };
        let (archive, restored) = match archive {
            Some((archive, restored)) => (Some(archive), restored),
            None => (None, Vec::new()),
        };
        let service = self.assemble(archive);
        let mut kept = 0;
        for snapshot in restored {
            let env = snapshot.environment.clone();
            if service.inner.last_good.restore(snapshot) {
                service.inner.catalog.learn(&env);
                kept += 1;
            }
        }
        if kept > 0 {
            tracing::info!(
                environments = kept,
                "last-known-good snapshots read back from disk"
            );
        }
        Ok(service)
    }

    fn assemble(self, archive: Option<archive::Archive>) -> FeatureFlagService {
        FeatureFlagService {
            inner: Arc::new(Inner {
                repository: self.repository,
                cache: self.cache,
                ttl: self.ttl,
                retry: self.retry,
                flights: SingleFlight::default(),
                floors: RwLock::default(),
                invalidations: PendingInvalidations::default(),
                last_good: LastKnownGood::archived(self.stale_if_error, archive),
                catalog: Catalog::default(),
                oversized: Copies::new(OVERSIZED_REFRESH),
                outage_copies: Copies::new(self.outage_refresh),
                breaker: Breaker::default(),
                changes: ChangeFeed::default(),
                writes: tokio::sync::watch::Sender::new(0),
                quiet: Quiet::default(),
                unreadable_seen: Mutex::default(),
                limits: self.limits,
                counters: Counters::default(),
            }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    repository: Arc<DynFeatureFlagRepository>,
    cache: Arc<DynFeatureFlagCache>,
    ttl: Duration,
    retry: RetryPolicy,
    /// Repository reads in progress, one per environment, joined by concurrent misses.
    flights: SingleFlight<Result<Arc<EnvironmentSnapshot>, RepositoryError>>,
    /// The newest revision this service wrote per environment: nothing older may be served.
    floors: RwLock<HashMap<Environment, Revision, FnvBuildHasher>>,
    /// Environments whose invalidation failed, with the revision still to invalidate.
    invalidations: PendingInvalidations,
    /// What to serve when the cache cannot answer and the repository fails.
    last_good: LastKnownGood,
    /// The environments that exist.
    catalog: Catalog,
    /// Snapshots the cache refused as too large, served from process memory.
    oversized: Copies,
    /// Snapshots read while the cache's circuit is open, served from process memory.
    outage_copies: Copies,
    /// Whether reads skip the cache, which is out.
    breaker: Breaker,
    /// The newest revision of each followed environment, for event streams.
    changes: ChangeFeed,
    /// How many writes this instance has made or been told of: what wakes outbox deliveries.
    writes: tokio::sync::watch::Sender<u64>,
    /// The rate limit of warnings about stores that fail.
    quiet: Quiet,
    /// The unreadable stored flags (environment, key, version) already counted and logged.
    unreadable_seen: Mutex<std::collections::HashSet<(Environment, FlagKey, u64)>>,
    limits: Limits,
    counters: Counters,
}

/// Locks a mutex, carrying on after a panic elsewhere: every map here stays consistent
/// between statements, so a poisoned lock holds usable data.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FeatureFlagService {
    /// A service with the default TTL (five minutes) and retry policy.
    pub fn new(repository: Arc<DynFeatureFlagRepository>, cache: Arc<DynFeatureFlagCache>) -> Self {
        Self::builder(repository, cache).assemble(None)
    }

    /// A builder for a service with another TTL or retry policy.
    pub fn builder(
        repository: Arc<DynFeatureFlagRepository>,
        cache: Arc<DynFeatureFlagCache>,
    ) -> ServiceBuilder {
        ServiceBuilder {
            repository,
            cache,
            ttl: DEFAULT_TTL,
            retry: RetryPolicy::default(),
            stale_if_error: DEFAULT_STALE_IF_ERROR,
            outage_refresh: DEFAULT_OUTAGE_REFRESH,
            last_good_dir: None,
            limits: Limits::default(),
        }
    }

    /// The cache TTL in use.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The cache backend's name.
    pub fn cache_backend(&self) -> &'static str {
        self.inner.cache.backend()
    }

    /// The repository backend's name.
    pub fn repository_backend(&self) -> &'static str {
        self.inner.repository.backend()
    }

    /// The counters so far.
    pub fn metrics(&self) -> ServiceMetrics {
        self.inner.counters.snapshot()
    }

    // ----- reads through the cache -------------------------------------------------------------

    /// The current snapshot of `env`, from the cache or (on a miss) the repository; the
    /// last-known-good one when both fail.
    pub async fn snapshot(
        &self,
        env: &Environment,
    ) -> Result<Arc<EnvironmentSnapshot>, ServiceError> {
        Ok(self.snapshot_with_freshness(env).await?.0)
    }

    /// One flag of `env`, from the cache or (on a miss) the repository; `None` if absent.
    pub async fn find_flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<Arc<FeatureFlag>>, ServiceError> {
        Ok(self.find_flag_with_freshness(env, key).await?.0)
    }

    /// Evaluates one flag of `env` for `context` (reason `CACHED` when answered from the
    /// last-known-good snapshot).
    pub async fn evaluate(
        &self,
        env: &Environment,
        key: &FlagKey,
        context: &EvaluationContext,
    ) -> Result<Evaluation, ServiceError> {
        let (flag, freshness) = self.find_flag_with_freshness(env, key).await?;
        let flag = flag.ok_or_else(|| EvaluationError::FlagNotFound { key: key.clone() })?;
        if !flag.needs_environment() {
            return Ok(freshness.mark(Evaluation::of(flag, context)?));
        }
        // Prerequisites and segments are read from one snapshot of the environment, the one
        // the flag is evaluated in (for an in-process cache, the snapshot the flag came from).
        let (snapshot, freshness) = self.snapshot_with_freshness(env).await?;
        let flag = snapshot
            .flag(key.as_str())
            .cloned()
            .ok_or_else(|| EvaluationError::FlagNotFound { key: key.clone() })?;
        let scope = Scope::new(&snapshot);
        Ok(freshness.mark(Evaluation::within(flag, context, &scope)?))
    }

    /// Evaluates one flag of `env` for `context` as [`Self::evaluate`] does, explaining each
    /// step (see [`crate::explain`]): the answer, or the evaluation's own error, with why.
    pub async fn explain(
        &self,
        env: &Environment,
        key: &FlagKey,
        context: &EvaluationContext,
    ) -> Result<(Result<Evaluation, EvaluationError>, Explanation), ServiceError> {
        let (snapshot, freshness) = self.snapshot_with_freshness(env).await?;
        let flag = snapshot
            .flag(key.as_str())
            .cloned()
            .ok_or_else(|| EvaluationError::FlagNotFound { key: key.clone() })?;
        let scope = Scope::new(&snapshot);
        let explained = crate::explanation::explain(&flag, context, &scope);
        let answer = explained
            .result
            .map(|resolution| freshness.mark(Evaluation::resolved(Arc::clone(&flag), resolution)));
        Ok((answer, explained.explanation))
    }

    /// Evaluates every flag of `env` for `context`; per-flag failures sit in the results.
    pub async fn evaluate_all(
        &self,
        env: &Environment,
        context: &EvaluationContext,
    ) -> Result<BulkEvaluation, ServiceError> {
        Ok(self.bulk(env).await?.evaluate(context))
    }

    /// The snapshot a bulk evaluation of `env` evaluates, so that its revision can be looked at
    /// before any flag is evaluated (a `304` costs no evaluation).
    pub async fn bulk(&self, env: &Environment) -> Result<BulkSnapshot, ServiceError> {
        let (snapshot, freshness) = self.snapshot_with_freshness(env).await?;
        Ok(BulkSnapshot {
            snapshot,
            freshness,
        })
    }

    /// [`Self::bulk`] for a client that heard of a change on an event stream (perhaps another
    /// instance's): `claimed` is the revision the event announced (`None`: a change of unknown
    /// revision). The snapshot is never older than a claimed revision the repository has,
    /// whatever this instance's cache holds; a claim this instance has not heard of costs at most
    /// one check per environment per 100 ms, shared by concurrent claimers: one repository read,
    /// or two when a read already in flight began before the claimed change.
    pub async fn bulk_after_event(
        &self,
        env: &Environment,
        claimed: Option<Revision>,
    ) -> Result<BulkSnapshot, ServiceError> {
        self.catch_up_to(env, claimed).await;
        self.bulk(env).await
    }

    /// Whether reads could be answered from last-known-good snapshots now (for readiness).
    pub fn can_serve_last_known_good(&self) -> bool {
        self.inner.last_good.can_serve()
    }

    // ----- reads of the source of truth --------------------------------------------------------

    /// Every stored flag of `env`, read from the repository (management reads bypass the cache).
    pub async fn stored_flags(
        &self,
        env: &Environment,
    ) -> Result<EnvironmentSnapshot, ServiceError> {
        self.inner.counters.repository_reads.increment();
        Ok(self.inner.repository.snapshot(env).await?)
    }

    /// One stored flag of `env`, read from the repository.
    pub async fn stored_flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, ServiceError> {
        self.inner.counters.repository_reads.increment();
        Ok(self.inner.repository.flag(env, key).await?)
    }

    /// One stored segment of `env`, read from the repository.
    pub async fn stored_segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, ServiceError> {
        self.inner.counters.repository_reads.increment();
        Ok(self.inner.repository.segment(env, key).await?)
    }

    /// A page of `env`'s audit log, newest first, read from the repository.
    pub async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, ServiceError> {
        self.inner.counters.repository_reads.increment();
        Ok(self.inner.repository.audit(env, query).await?)
    }

    /// Every environment that has had a write.
    pub async fn environments(&self) -> Result<Vec<EnvironmentSummary>, ServiceError> {
        Ok(self.inner.list_environments().await?)
    }

    /// Succeeds while the repository answers.
    pub async fn ping_repository(&self) -> Result<(), ServiceError> {
        Ok(self.inner.repository.ping().await?)
    }

    /// Succeeds while the cache answers (an in-process cache always does); fails at once while
    /// its circuit is open.
    pub async fn ping_cache(&self) -> Result<(), ServiceError> {
        if self.cache_circuit_open() {
            return Err(CacheError::Unavailable {
                message: "circuit open: the cache failed and has not answered a probe since".into(),
            }
            .into());
        }
        Ok(self.inner.cache.ping().await?)
    }

    /// Whether reads skip the cache because it is out (until a probe finds it back).
    pub fn cache_circuit_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// How the in-process layer of a layered cache is doing; `None` for a cache of one layer.
    pub fn cache_tier_status(&self) -> Option<TierStatus> {
        self.inner.cache.tier_status()
    }

    // ----- writes ------------------------------------------------------------------------------

    /// Creates or replaces a flag, then invalidates the cache of `env`.
    pub async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Upserted, ServiceError> {
        self.check_limits(env, flag.key()).await?;
        let repository = Arc::clone(&self.inner.repository);
        let (target, actor) = (env.clone(), actor.clone());
        self.write_to_the_end(env, async move {
            let upserted = repository
                .upsert(&target, flag, precondition, &actor)
                .await?;
            Ok((Some(upserted.revision), upserted))
        })
        .await
    }

    /// Deletes a flag, then invalidates the cache of `env`.
    pub async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, ServiceError> {
        let repository = Arc::clone(&self.inner.repository);
        let (target, key, actor) = (env.clone(), key.clone(), actor.clone());
        self.write_to_the_end(env, async move {
            let deleted = repository
                .delete(&target, &key, precondition, &actor)
                .await?;
            Ok((Some(deleted.revision), deleted))
        })
        .await
    }

    /// Creates or replaces a segment, then invalidates the cache of `env` (a segment change
    /// reaches every cache and stream as a flag change does).
    pub async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<UpsertedSegment, ServiceError> {
        self.check_environment_limit(env).await?;
        let repository = Arc::clone(&self.inner.repository);
        let (target, actor) = (env.clone(), actor.clone());
        self.write_to_the_end(env, async move {
            let upserted = repository
                .upsert_segment(&target, segment, precondition, &actor)
                .await?;
            Ok((Some(upserted.revision), upserted))
        })
        .await
    }

    /// Deletes a segment no flag refers to, then invalidates the cache of `env`.
    pub async fn delete_segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, ServiceError> {
        let repository = Arc::clone(&self.inner.repository);
        let (target, key, actor) = (env.clone(), key.clone(), actor.clone());
        self.write_to_the_end(env, async move {
            let deleted = repository
                .delete_segment(&target, &key, precondition, &actor)
                .await?;
            Ok((Some(deleted.revision), deleted))
        })
        .await
    }

    /// Imports a document of flags and segments into `env` as one write (see
    /// [`crate::plan_import`]), then invalidates the cache of `env` when it changed anything. A
    /// dry run only reads. The import may not leave more than `max_flags` flags.
    pub async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, ServiceError> {
        let mut request = request;
        request.max_flags = Some(self.inner.limits.max_flags);
        if request.dry_run {
            self.inner.counters.repository_reads.increment();
            return Ok(self.inner.repository.import(env, request, actor).await?);
        }
        self.check_environment_limit(env).await?;
        let repository = Arc::clone(&self.inner.repository);
        let (target, actor) = (env.clone(), actor.clone());
        self.write_to_the_end(env, async move {
            let imported = repository.import(&target, request, &actor).await?;
            Ok((imported.applied.then_some(imported.revision), imported))
        })
        .await
    }

    /// Removes `env`, which must hold no flags and no segments, then invalidates its cache; it no
    /// longer counts against `max_environments`.
    pub async fn delete_environment(&self, env: &Environment) -> Result<Revision, ServiceError> {
        let repository = Arc::clone(&self.inner.repository);
        let target = env.clone();
        let revision = self
            .write_to_the_end(env, async move {
                let revision = repository.delete_environment(&target).await?;
                Ok((Some(revision), revision))
            })
            .await?;
        self.inner.catalog.forget(env);
        Ok(revision)
    }

    /// Runs `write` and every step after it (floor, detaching fills, invalidation) on a task of
    /// its own, so a caller that stops waiting (a client that hung up, a request that timed out)
    /// cannot leave a committed write unseen by the next read: once handed to the repository, a
    /// write finishes whole, or fails whole in the repository. `write` answers the revision it
    /// committed, or `None` when it committed nothing (an import that changed nothing), which
    /// needs no step after it.
    async fn write_to_the_end<T: Send + 'static>(
        &self,
        env: &Environment,
        write: impl Future<Output = Result<(Option<Revision>, T), RepositoryError>> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let inner = Arc::clone(&self.inner);
        let env = env.clone();
        let finish = async move {
            let (revision, written) = write.await?;
            if let Some(revision) = revision {
                inner.after_write(&env, revision).await;
            }
            Ok(written)
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No Tokio runtime to detach onto (another executor): run in place.
            return finish.await;
        };
        // The task carries the caller's span, so a trace shows the write's store calls inside
        // the request that asked for it.
        runtime
            .spawn(tracing::Instrument::instrument(
                finish,
                tracing::Span::current(),
            ))
            .await
            .unwrap_or_else(|error| Err(ServiceError::WriteInterrupted(error.to_string())))
    }

    /// Refuses a write of `key` in `env` that would create an environment or a flag past the
    /// limits. Replacing a flag costs one point read; creating one in a known environment also
    /// counts its flags in the repository (not a snapshot read, which would make filling an
    /// environment of n flags cost n²); only a write to an environment this instance does not
    /// know lists the repository. Checked before the write, so writers racing for the last
    /// free places (or instances whose caches lag) can overshoot by their number.
    async fn check_limits(&self, env: &Environment, key: &FlagKey) -> Result<(), ServiceError> {
        let inner = &self.inner;
        let limits = inner.limits;
        let flags_full = |count: usize| count >= limits.max_flags;
        if !inner.catalog.knows(env) {
            let environments = inner.list_environments().await?;
            match environments.iter().find(|summary| summary.name == *env) {
                None if environments.len() >= limits.max_environments => {
                    return Err(LimitExceeded::Environments {
                        environment: env.clone(),
                        limit: limits.max_environments,
                    }
                    .into());
                }
                None => return Ok(()),
                Some(summary)
                    if !flags_full(usize::try_from(summary.flag_count).unwrap_or(usize::MAX)) =>
                {
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        inner.counters.repository_reads.increment();
        if inner.repository.flag(env, key).await?.is_some() {
            return Ok(());
        }
        inner.counters.repository_reads.increment();
        let count = inner.repository.flag_count(env).await?;
        if !flags_full(usize::try_from(count).unwrap_or(usize::MAX)) {
            return Ok(());
        }
        Err(LimitExceeded::Flags {
            environment: env.clone(),
            key: key.clone(),
            limit: limits.max_flags,
        }
        .into())
    }

    /// Refuses a write that would create an environment past `max_environments`.
    async fn check_environment_limit(&self, env: &Environment) -> Result<(), ServiceError> {
        let inner = &self.inner;
        if inner.catalog.knows(env) {
            return Ok(());
        }
        let environments = inner.list_environments().await?;
        if environments.len() >= inner.limits.max_environments
            && !environments.iter().any(|summary| summary.name == *env)
        {
            return Err(LimitExceeded::Environments {
                environment: env.clone(),
                limit: inner.limits.max_environments,
            }
            .into());
        }
        Ok(())
    }

    /// Tells the service that the repository changed `env` by itself, now at `revision` (a flags
    /// file reloaded): what follows a write through the service follows it too (the cache
    /// invalidated, other instances and event streams told).
    pub async fn repository_changed(&self, env: &Environment, revision: Revision) {
        self.inner.after_write(env, revision).await;
    }

    /// A receiver that changes after each write this instance makes or is told of
    /// ([`Self::repository_changed`]): what wakes deliveries from the outbox at once (writes of
    /// other instances are found by polling the outbox).
    pub fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.writes.subscribe()
    }

    /// Starts keeping the outbox of `receiver` (the repository's rule 15).
    pub async fn outbox_follow(&self, receiver: &str) -> Result<(), ServiceError> {
        Ok(self.inner.repository.outbox_follow(receiver).await?)
    }

    /// Up to `limit` writes not yet delivered to `receiver`, in commit order per environment.
    pub async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, ServiceError> {
        Ok(self
            .inner
            .repository
            .outbox_pending(receiver, limit)
            .await?)
    }

    /// Marks `receiver`'s outbox delivered up to `position` in `env`.
    pub async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: AuditCursor,
    ) -> Result<(), ServiceError> {
        Ok(self
            .inner
            .repository
            .outbox_delivered(receiver, env, position)
            .await?)
    }

    /// Takes or renews the right to deliver `receiver`'s outbox (see the repository's
    /// `outbox_hold`).
    pub async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, ServiceError> {
        Ok(self
            .inner
            .repository
            .outbox_hold(receiver, holder, now_ms, for_ms)
            .await?)
    }

    /// Tries every invalidation still being retried once now, for a process about to exit;
    /// answers how many environments are still pending (their entries expire with the TTL).
    pub async fn flush_invalidations(&self) -> usize {
        self.inner.flush_invalidations().await
    }

    /// Drops `env` from the cache at its current revision, so the next read refills it.
    pub async fn invalidate_cache(&self, env: &Environment) -> Result<Revision, ServiceError> {
        if !self.exists(env).await? {
            // Nothing of it can be cached, and no mark is left for a name that does not exist.
            return Ok(Revision::default());
        }
        self.inner.counters.repository_reads.increment();
        let revision = self.inner.repository.revision(env).await?;
        self.inner.flights.detach(env);
        if let Err(error) = self.inner.cache.invalidate(env, revision).await {
            self.inner.counters.cache_errors.increment();
            return Err(error.into());
        }
        Ok(revision)
    }
}

impl Inner {
    /// Every environment, listed by the repository (and added to the catalog).
    async fn list_environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        self.counters.repository_reads.increment();
        let environments = self.repository.environments().await?;
        self.catalog.add_listed(&environments);
        Ok(environments)
    }

    async fn after_write(self: &Arc<Self>, env: &Environment, revision: Revision) {
        self.catalog.learn(env);
        self.oversized.drop_copy(env);
        self.outage_copies.drop_copy(env);
        // The repository just answered for `env`: its reads stop resting it.
        self.last_good.repository_answered(env);
        self.raise_floor(env, revision);
        self.flights.detach(env);
        self.changes.announce(env, revision);
        self.writes
            .send_modify(|writes| *writes = writes.wrapping_add(1));
        self.invalidate_after_write(env, revision).await;
    }
}
