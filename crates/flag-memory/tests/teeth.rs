//! Proof that the cache conformance suite has teeth: deliberately broken wrappers around
//! `MemoryCache` each fail it, and the test names the property that caught each one. (The bus
//! suite's teeth are in `bus.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flag_conformance::model::{ModelConfig, check_against_model};
use flag_conformance::{CacheCapabilities, SharedCache, Violation, cache};
use flag_core::{
    CacheError, Environment, EnvironmentSnapshot, FeatureFlagCache, FlagKey, FlagLookup, Revision,
    SetOutcome, async_trait,
};
use flag_memory::{MemoryCache, TTL_SLACK};

const CAPABILITIES: CacheCapabilities = CacheCapabilities {
    ttl_slack: TTL_SLACK,
    max_value_bytes: None,
};

/// Runs the whole suite (the model test with 64 cases) and returns the names of the properties
/// that caught the adapter.
fn caught_by<C: FeatureFlagCache + 'static>(make: fn() -> C) -> Vec<&'static str> {
    let factory = move || async move { Arc::new(make()) as SharedCache };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut violations: Vec<Violation> = runtime.block_on(cache::check_all(factory, CAPABILITIES));
    drop(runtime);
    let model = ModelConfig {
        cases: 64,
        max_operations: 24,
    };
    if let Err(violation) = check_against_model(factory, CAPABILITIES, model) {
        violations.push(violation);
    }
    flag_conformance::caught_by(&violations)
}

fn assert_caught(caught: &[&str], by: &[&str]) {
    for property in by {
        assert!(
            caught.contains(property),
            "{property} did not catch it; caught by {caught:?}"
        );
    }
}

#[test]
fn the_real_adapter_passes() {
    assert_eq!(caught_by(MemoryCache::new), Vec::<&str>::new());
}

/// Stores every snapshot whatever its revision: the inner cache only ever sees revision 0, and
/// the real revision is put back on the way out.
#[derive(Debug, Default)]
struct IgnoresRevisions {
    inner: MemoryCache,
    real: Mutex<HashMap<Environment, Revision>>,
}

fn at_revision(snapshot: &EnvironmentSnapshot, revision: Revision) -> Arc<EnvironmentSnapshot> {
    Arc::new(EnvironmentSnapshot::from_shared(revision, snapshot.flags().cloned()).unwrap())
}

impl IgnoresRevisions {
    fn real(&self, env: &Environment) -> Revision {
        self.real
            .lock()
            .unwrap()
            .get(env)
            .copied()
            .unwrap_or_default()
    }
}

#[async_trait]
impl FeatureFlagCache for IgnoresRevisions {
    fn backend(&self) -> &'static str {
        "ignores-revisions"
    }
    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        let real = self.real(env);
        Ok(self
            .inner
            .get(env)
            .await?
            .map(|snapshot| at_revision(&snapshot, real)))
    }
    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        let real = self.real(env);
        Ok(match self.inner.get_flag(env, key).await? {
            FlagLookup::Hit { flag, .. } => FlagLookup::Hit {
                flag,
                revision: real,
            },
            FlagLookup::Absent { .. } => FlagLookup::Absent { revision: real },
            FlagLookup::Miss => FlagLookup::Miss,
        })
    }
    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        let outcome = self
            .inner
            .set(env, at_revision(&snapshot, Revision::ZERO), ttl)
            .await?;
        self.real
            .lock()
            .unwrap()
            .insert(env.clone(), snapshot.revision());
        Ok(outcome)
    }
    async fn invalidate(&self, env: &Environment, _: Revision) -> Result<(), CacheError> {
        self.inner.invalidate(env, Revision::ZERO).await
    }
}

#[test]
fn ignoring_revisions_is_caught() {
    let caught = caught_by(IgnoresRevisions::default);
    assert_caught(
        &caught,
        &[
            "revision_never_goes_back",
            "stale_set_after_invalidate",
            "model_test",
        ],
    );
}

/// Rounds every TTL up to whole seconds, as a backend with second-resolution `EXPIRE` would.
#[derive(Debug, Default)]
struct RoundsTtlUp {
    inner: MemoryCache,
}

#[async_trait]
impl FeatureFlagCache for RoundsTtlUp {
    fn backend(&self) -> &'static str {
        "rounds-ttl-up"
    }
    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        self.inner.get(env).await
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
        let seconds = if ttl.is_zero() {
            0
        } else {
            ttl.as_millis().div_ceil(1000) as u64
        };
        self.inner
            .set(env, snapshot, Duration::from_secs(seconds))
            .await
    }
    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        self.inner.invalidate(env, revision).await
    }
}

#[test]
fn rounding_ttl_up_to_seconds_is_caught() {
    let caught = caught_by(RoundsTtlUp::default);
    assert_caught(&caught, &["ttl_is_honoured", "model_test"]);
}

/// Writes a snapshot in two steps (half of its flags first), so a reader can see a mix.
#[derive(Debug, Default)]
struct PartialDuringSet {
    inner: MemoryCache,
}

#[async_trait]
impl FeatureFlagCache for PartialDuringSet {
    fn backend(&self) -> &'static str {
        "partial-during-set"
    }
    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        self.inner.get(env).await
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
        if let Some(current) = self.inner.get(env).await?
            && snapshot.len() > 1
        {
            // Half new flags, half old ones: what a field-by-field writer exposes mid-write.
            let half = snapshot.len() / 2;
            let mixed = snapshot.flags().take(half).cloned().chain(
                current
                    .flags()
                    .filter(|flag| snapshot.flag(flag.key().as_str()).is_some())
                    .skip(half)
                    .cloned(),
            );
            let mixed = EnvironmentSnapshot::from_shared(snapshot.revision(), mixed).unwrap();
            self.inner.set(env, Arc::new(mixed), ttl).await?;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        self.inner.set(env, snapshot, ttl).await
    }
    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        self.inner.invalidate(env, revision).await
    }
}

#[test]
fn a_partial_snapshot_during_set_is_caught() {
    let caught = caught_by(PartialDuringSet::default);
    assert_caught(&caught, &["set_is_atomic"]);
}

/// Keys environments by their first four characters, so look-alikes share an entry.
#[derive(Debug, Default)]
struct LeaksBetweenEnvironments {
    inner: MemoryCache,
}

fn truncated(env: &Environment) -> Environment {
    Environment::parse(&env.as_str()[..env.as_str().len().min(4)]).unwrap()
}

#[async_trait]
impl FeatureFlagCache for LeaksBetweenEnvironments {
    fn backend(&self) -> &'static str {
        "leaks-between-environments"
    }
    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        self.inner.get(&truncated(env)).await
    }
    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        self.inner.get_flag(&truncated(env), key).await
    }
    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        self.inner.set(&truncated(env), snapshot, ttl).await
    }
    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        self.inner.invalidate(&truncated(env), revision).await
    }
}

#[test]
fn leaking_between_environments_is_caught() {
    let caught = caught_by(LeaksBetweenEnvironments::default);
    assert_caught(&caught, &["environments_are_isolated", "model_test"]);
}

/// Reports twice the time an entry has left, and a second more: a layer in front of it that
/// keeps what it read for that long would serve it after it expired.
#[derive(Debug, Default)]
struct OverReportsTtl {
    inner: MemoryCache,
}

#[async_trait]
impl FeatureFlagCache for OverReportsTtl {
    fn backend(&self) -> &'static str {
        "over-reports-ttl"
    }
    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        self.inner.get(env).await
    }
    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        Ok(self
            .inner
            .get_with_ttl(env)
            .await?
            .map(|(snapshot, remaining)| {
                (
                    snapshot,
                    remaining.map(|left| left * 2 + Duration::from_secs(1)),
                )
            }))
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
}

#[test]
fn over_reporting_the_time_left_is_caught() {
    let caught = caught_by(OverReportsTtl::default);
    assert_caught(&caught, &["get_with_ttl_never_outlives_get", "model_test"]);
}
