//! In-crate fakes for the service tests: a contract-abiding cache that fails on command, and an
//! in-memory repository that counts its reads and can be made slow or held at a gate.
//!
//! Real adapters are proven by `flag-conformance`; these exist to inject faults and timing.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flag_core::{
    Actor, AuditPage, AuditQuery, CacheError, Deleted, Environment, EnvironmentSnapshot,
    EnvironmentSummary, FeatureFlag, FeatureFlagCache, FeatureFlagRepository, FlagKey, FlagLookup,
    ImportRequest, Imported, InMemoryRepository, Precondition, RepositoryError, Revision, Segment,
    SegmentKey, SetOutcome, Upserted, UpsertedSegment, async_trait,
};
use serde_json::json;
use tokio::sync::Semaphore;

pub fn env(name: &str) -> Environment {
    Environment::parse(name).unwrap()
}

pub fn key(name: &str) -> FlagKey {
    FlagKey::parse(name).unwrap()
}

/// A flag definition from JSON, as a PUT body would give it.
pub fn flag(name: &str, body: serde_json::Value) -> FeatureFlag {
    FeatureFlag::from_definition_json(&key(name), &body.to_string()).unwrap()
}

/// An enabled boolean flag serving `value`.
pub fn boolean(name: &str, value: bool) -> FeatureFlag {
    flag(
        name,
        json!({"enabled": true, "defaultVariant": if value { "on" } else { "off" }}),
    )
}

// ----- cache ------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct CacheEntry {
    snapshot: Option<(Arc<EnvironmentSnapshot>, Instant)>,
    /// The newest revision seen by set or invalidate.
    revision: Revision,
}

/// A cache that follows the port's contract, with switches that make each operation fail.
#[derive(Debug, Default)]
pub struct FakeCache {
    entries: Mutex<HashMap<Environment, CacheEntry>>,
    pub fail_reads: AtomicBool,
    /// Reads answer `CacheError::Corrupt` (until the next successful set).
    pub corrupt_reads: AtomicBool,
    pub fail_sets: AtomicBool,
    /// How many upcoming invalidations fail; `u32::MAX` for all of them.
    pub failing_invalidations: AtomicU32,
    pub reads: AtomicU64,
    /// Pings, which fail while reads do.
    pub pings: AtomicU64,
    pub sets: AtomicU64,
    pub invalidations: AtomicU64,
    pub last_ttl: Mutex<Option<Duration>>,
}

impl FakeCache {
    fn fault() -> CacheError {
        CacheError::Unavailable {
            message: "injected fault".into(),
        }
    }

    /// The newest revision the cache has seen for `env` (set or invalidated).
    pub fn known_revision(&self, env: &Environment) -> Revision {
        self.entries
            .lock()
            .unwrap()
            .get(env)
            .map(|entry| entry.revision)
            .unwrap_or_default()
    }

    /// The cached snapshot, ignoring faults (for assertions).
    pub fn peek(&self, env: &Environment) -> Option<Arc<EnvironmentSnapshot>> {
        let entries = self.entries.lock().unwrap();
        let (snapshot, expires) = entries.get(env)?.snapshot.as_ref()?;
        (Instant::now() < *expires).then(|| Arc::clone(snapshot))
    }

    /// Puts a snapshot in directly, bypassing revision rules (to simulate a stale leftover).
    pub fn plant(&self, env: &Environment, snapshot: EnvironmentSnapshot) {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.entry(env.clone()).or_default();
        entry.revision = snapshot.revision();
        entry.snapshot = Some((
            Arc::new(snapshot),
            Instant::now() + Duration::from_secs(3600),
        ));
    }

    fn read(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(Self::fault());
        }
        if self.corrupt_reads.load(Ordering::SeqCst) {
            return Err(CacheError::Corrupt {
                environment: env.clone(),
                message: "injected garbage".into(),
            });
        }
        Ok(self.peek(env))
    }
}

#[async_trait]
impl FeatureFlagCache for FakeCache {
    fn backend(&self) -> &'static str {
        "fake"
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        self.read(env)
    }

    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        Ok(match self.read(env)? {
            None => FlagLookup::Miss,
            Some(snapshot) => snapshot.lookup(key.as_str()),
        })
    }

    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        *self.last_ttl.lock().unwrap() = Some(ttl);
        if ttl.is_zero() {
            return Err(CacheError::ZeroTtl);
        }
        if self.fail_sets.load(Ordering::SeqCst) {
            return Err(Self::fault());
        }
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.entry(env.clone()).or_default();
        if snapshot.revision() < entry.revision {
            return Ok(SetOutcome::Stale);
        }
        entry.revision = snapshot.revision();
        entry.snapshot = Some((snapshot, Instant::now() + ttl));
        self.corrupt_reads.store(false, Ordering::SeqCst);
        Ok(SetOutcome::Stored)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.pings.fetch_add(1, Ordering::SeqCst);
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(Self::fault());
        }
        Ok(())
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        let failing = self.failing_invalidations.load(Ordering::SeqCst);
        if failing > 0 {
            if failing != u32::MAX {
                self.failing_invalidations.fetch_sub(1, Ordering::SeqCst);
            }
            // A refusal, not an outage: the circuit stays closed, so retries are what is tested.
            return Err(CacheError::Backend {
                message: "injected invalidation failure".into(),
            });
        }
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.entry(env.clone()).or_default();
        entry.revision = entry.revision.max(revision);
        entry.snapshot = None;
        Ok(())
    }
}

// ----- repository -------------------------------------------------------------------------------

/// The in-memory repository with faults: it counts snapshot reads and can fail, be slowed, or
/// hold reads at a gate after they captured their data (a fill that read before a write and
/// returns after it).
#[derive(Debug)]
pub struct FakeRepository {
    inner: InMemoryRepository,
    pub snapshot_reads: AtomicU64,
    pub fail: AtomicBool,
    /// Delay of every snapshot read, in ms.
    pub snapshot_delay_ms: AtomicU64,
    /// When set, snapshot reads capture their data, then wait for a permit before returning it.
    pub hold_snapshots: AtomicBool,
    pub gate: Semaphore,
    /// How long an upsert waits after it committed before it answers, in ms (the time between
    /// a database's commit and its reply reaching the service).
    pub upsert_reply_delay_ms: AtomicU64,
    /// Snapshot reads of this environment fail with this error.
    pub failing_environment: Mutex<Option<(Environment, RepositoryError)>>,
}

impl Default for FakeRepository {
    fn default() -> Self {
        Self {
            inner: InMemoryRepository::new(),
            snapshot_reads: AtomicU64::new(0),
            fail: AtomicBool::new(false),
            snapshot_delay_ms: AtomicU64::new(0),
            hold_snapshots: AtomicBool::new(false),
            gate: Semaphore::new(0),
            upsert_reply_delay_ms: AtomicU64::new(0),
            failing_environment: Mutex::new(None),
        }
    }
}

impl FakeRepository {
    fn check(&self) -> Result<(), RepositoryError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(RepositoryError::Unavailable {
                message: "injected fault".into(),
            })
        } else {
            Ok(())
        }
    }

    /// Writes `flag` straight to the repository, as another instance would.
    pub async fn write_behind_the_service(&self, env: &Environment, flag: FeatureFlag) -> Revision {
        self.inner
            .upsert(env, flag, Precondition::None, &flag_core::Actor::system())
            .await
            .unwrap()
            .revision
    }

    pub fn reads(&self) -> u64 {
        self.snapshot_reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl FeatureFlagRepository for FakeRepository {
    fn backend(&self) -> &'static str {
        "fake"
    }

    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        self.snapshot_reads.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        if let Some((failing, error)) = &*self.failing_environment.lock().unwrap()
            && failing == env
        {
            return Err(error.clone());
        }
        let snapshot = self.inner.snapshot(env).await?;
        let delay = self.snapshot_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.hold_snapshots.load(Ordering::SeqCst) {
            self.gate.acquire().await.unwrap().forget();
        }
        Ok(snapshot)
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        self.check()?;
        self.inner.flag(env, key).await
    }

    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Upserted, RepositoryError> {
        self.check()?;
        let upserted = self.inner.upsert(env, flag, precondition, actor).await;
        let delay = self.upsert_reply_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        upserted
    }

    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        self.check()?;
        self.inner.delete(env, key, precondition, actor).await
    }

    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        self.check()?;
        self.inner.segment(env, key).await
    }

    async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError> {
        self.check()?;
        self.inner
            .upsert_segment(env, segment, precondition, actor)
            .await
    }

    async fn delete_segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        self.check()?;
        self.inner
            .delete_segment(env, key, precondition, actor)
            .await
    }

    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        self.check()?;
        self.inner.audit(env, query).await
    }

    async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, RepositoryError> {
        self.check()?;
        self.inner.import(env, request, actor).await
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        self.check()?;
        self.inner.environments().await
    }

    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        self.check()?;
        self.inner.delete_environment(env).await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        self.check()
    }
    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
        self.check()?;
        self.inner.outbox_follow(receiver).await
    }

    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<flag_core::OutboxEntry>, RepositoryError> {
        self.check()?;
        self.inner.outbox_pending(receiver, limit).await
    }

    async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: flag_core::AuditCursor,
    ) -> Result<(), RepositoryError> {
        self.check()?;
        self.inner.outbox_delivered(receiver, env, position).await
    }

    async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        self.check()?;
        self.inner
            .outbox_hold(receiver, holder, now_ms, for_ms)
            .await
    }
}
