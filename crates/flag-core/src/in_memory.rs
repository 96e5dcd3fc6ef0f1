//! `InMemoryRepository`: the repository port in process memory, for tests and examples.
//!
//! It keeps the whole contract of [`FeatureFlagRepository`] (versions, revisions, optimistic
//! concurrency, listing) under one lock, so it doubles as the reference the repository
//! conformance suite is checked against. It is not durable: everything is lost with the process.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::flag::FeatureFlag;
use crate::names::{Environment, FlagKey, SegmentKey};
use crate::references::References;
use crate::repository::{
    Deleted, FeatureFlagRepository, Precondition, RepositoryError, Upserted, UpsertedSegment,
};
use crate::segment::Segment;
use crate::snapshot::{EnvironmentSnapshot, EnvironmentSummary, Revision};

#[derive(Debug, Default, Clone)]
struct EnvironmentState {
    revision: Revision,
    flags: BTreeMap<FlagKey, FeatureFlag>,
    segments: BTreeMap<SegmentKey, Segment>,
    /// Removed by `delete_environment`; kept for its revision.
    removed: bool,
}

impl EnvironmentState {
    fn references(&self) -> References {
        let mut references = References::new();
        self.flags
            .values()
            .for_each(|flag| references.add_flag(flag));
        self.segments
            .keys()
            .for_each(|key| references.add_segment(key.clone()));
        references
    }

    fn bump(&mut self) -> Revision {
        self.revision = Revision(self.revision.get() + 1);
        self.removed = false;
        self.revision
    }
}

/// A non-durable repository held in memory.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    environments: Mutex<BTreeMap<Environment, EnvironmentState>>,
}

impl InMemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the stored flag `key` of `env` with what `definition` (a flag's JSON) reads as,
    /// the way a database row is read: fields this release does not know are ignored, and a
    /// definition that cannot be read becomes the flag's unreadable stand-in at the same version.
    /// For tests of tolerant reads; answers whether the flag was there.
    pub fn replace_stored_definition(
        &self,
        env: &Environment,
        key: &FlagKey,
        definition: &str,
    ) -> bool {
        let mut environments = self.lock();
        let Some(stored) = environments
            .get_mut(env)
            .and_then(|state| state.flags.get_mut(key))
        else {
            return false;
        };
        *stored = serde_json::from_str::<FeatureFlag>(definition).unwrap_or_else(|error| {
            FeatureFlag::unreadable(
                key.clone(),
                stored.version(),
                stored.updated_at(),
                error.to_string(),
            )
        });
        true
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Environment, EnvironmentState>> {
        self.environments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl FeatureFlagRepository for InMemoryRepository {
    fn backend(&self) -> &'static str {
        "in-memory"
    }

    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        let environments = self.lock();
        let Some(state) = environments.get(env) else {
            return Ok(EnvironmentSnapshot::empty(Revision::ZERO));
        };
        let corrupt = |message: String| RepositoryError::Corrupt { message };
        EnvironmentSnapshot::new(state.revision, state.flags.values().cloned())
            .map_err(|error| corrupt(error.to_string()))?
            .with_segments(state.segments.values().cloned())
            .map_err(|error| corrupt(error.to_string()))
    }

    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        Ok(self
            .lock()
            .get(env)
            .map_or(Revision::ZERO, |state| state.revision))
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        Ok(self
            .lock()
            .get(env)
            .and_then(|state| state.flags.get(key).cloned()))
    }

    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
    ) -> Result<Upserted, RepositoryError> {
        let mut environments = self.lock();
        let current = environments
            .get(env)
            .and_then(|state| state.flags.get(flag.key()))
            .map(FeatureFlag::version);
        precondition.check(env, flag.key(), current)?;
        let state = environments.entry(env.clone()).or_default();
        state.references().check_flag_write(&flag)?;
        state.bump();
        let stored = flag.stored_as(current.unwrap_or(0) + 1, OffsetDateTime::now_utc());
        state.flags.insert(stored.key().clone(), stored.clone());
        Ok(Upserted {
            flag: stored,
            revision: state.revision,
            created: current.is_none(),
        })
    }

    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
    ) -> Result<Deleted, RepositoryError> {
        let mut environments = self.lock();
        let not_found = || RepositoryError::NotFound {
            environment: env.clone(),
            key: key.clone(),
        };
        let state = environments.get_mut(env).ok_or_else(not_found)?;
        let current = state
            .flags
            .get(key)
            .map(FeatureFlag::version)
            .ok_or_else(not_found)?;
        precondition.check(env, key, Some(current))?;
        state.references().check_flag_delete(key)?;
        state.flags.remove(key);
        Ok(Deleted {
            version: current,
            revision: state.bump(),
        })
    }

    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        Ok(self
            .lock()
            .get(env)
            .and_then(|state| state.segments.get(key).cloned()))
    }

    async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
    ) -> Result<UpsertedSegment, RepositoryError> {
        let mut environments = self.lock();
        let current = environments
            .get(env)
            .and_then(|state| state.segments.get(segment.key()))
            .map(Segment::version);
        precondition.check_segment(env, segment.key(), current)?;
        let state = environments.entry(env.clone()).or_default();
        let revision = state.bump();
        let stored = segment.stored_as(current.unwrap_or(0) + 1, OffsetDateTime::now_utc());
        state.segments.insert(stored.key().clone(), stored.clone());
        Ok(UpsertedSegment {
            segment: stored,
            revision,
            created: current.is_none(),
        })
    }

    async fn delete_segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
        precondition: Precondition,
    ) -> Result<Deleted, RepositoryError> {
        let mut environments = self.lock();
        let not_found = || RepositoryError::SegmentNotFound {
            environment: env.clone(),
            key: key.clone(),
        };
        let state = environments.get_mut(env).ok_or_else(not_found)?;
        let current = state
            .segments
            .get(key)
            .map(Segment::version)
            .ok_or_else(not_found)?;
        precondition.check_segment(env, key, Some(current))?;
        state.references().check_segment_delete(key)?;
        state.segments.remove(key);
        Ok(Deleted {
            version: current,
            revision: state.bump(),
        })
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(_, state)| !state.removed)
            .map(|(name, state)| EnvironmentSummary {
                name: name.clone(),
                revision: state.revision,
                flag_count: state.flags.len() as u64,
            })
            .collect())
    }

    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        let mut environments = self.lock();
        let state = environments
            .get_mut(env)
            .filter(|state| !state.removed)
            .ok_or_else(|| RepositoryError::EnvironmentNotFound {
                environment: env.clone(),
            })?;
        if !state.flags.is_empty() || !state.segments.is_empty() {
            return Err(RepositoryError::EnvironmentInUse {
                environment: env.clone(),
                flags: state.flags.len() as u64,
                segments: state.segments.len() as u64,
            });
        }
        state.removed = true;
        state.revision = Revision(state.revision.get() + 1);
        Ok(state.revision)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}
