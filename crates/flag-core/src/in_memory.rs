//! `InMemoryRepository`: the repository port in process memory, for tests and examples.
//!
//! It keeps the whole contract of [`FeatureFlagRepository`] (versions, revisions, optimistic
//! concurrency, listing) under one lock, so it doubles as the reference the repository
//! conformance suite is checked against. It is not durable: everything is lost with the process.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::{AuditAction, AuditCursor, AuditEntry, AuditKind, AuditPage, AuditQuery};
use crate::flag::FeatureFlag;
use crate::import::{ImportRequest, Imported, plan_import};
use crate::names::{Actor, Environment, FlagKey, SegmentKey};
use crate::references::References;
use crate::repository::{
    Deleted, FeatureFlagRepository, OutboxEntry, Precondition, RepositoryError, Upserted,
    UpsertedSegment,
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
    /// The audit log, oldest first; an entry's position is its index + 1.
    log: Vec<AuditEntry>,
}

/// What a write tells the audit log, beside the actor and the revision.
struct Change<'a> {
    kind: AuditKind,
    key: &'a str,
    old_version: Option<u64>,
    new_version: Option<u64>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
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

    /// Bumps the revision and appends the write's audit entry, as one step (the lock is held).
    fn record(&mut self, change: Change<'_>, actor: &Actor) -> Revision {
        let revision = self.bump();
        self.append(change, actor, revision);
        revision
    }

    /// Appends a write's audit entry at `revision` (an import's writes share one).
    fn append(&mut self, change: Change<'_>, actor: &Actor, revision: Revision) {
        let at = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.log.push(AuditEntry {
            position: AuditCursor(self.log.len() as u64 + 1),
            at,
            actor: actor.to_string(),
            action: AuditAction::of(change.old_version, change.new_version),
            kind: change.kind,
            key: change.key.to_owned(),
            old_version: change.old_version,
            new_version: change.new_version,
            revision,
            before: change.before,
            after: change.after,
        });
    }
}

/// A stored definition as the audit log keeps it.
fn definition<T: serde::Serialize>(stored: &T) -> Option<serde_json::Value> {
    serde_json::to_value(stored).ok()
}

/// A non-durable repository held in memory.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    environments: Mutex<BTreeMap<Environment, EnvironmentState>>,
    /// The outboxes by receiver (rule 15); locked after `environments` when both are.
    outboxes: Mutex<BTreeMap<String, Outbox>>,
}

/// One receiver's place in each environment's audit log.
#[derive(Debug, Default)]
struct Outbox {
    /// Per environment, the last position delivered (or, before any, the log's length when the
    /// receiver was followed); 0 for environments first written later.
    delivered: BTreeMap<Environment, u64>,
    /// Who may deliver, until when (Unix ms).
    holder: Option<(String, u64)>,
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
        actor: &Actor,
    ) -> Result<Upserted, RepositoryError> {
        let mut environments = self.lock();
        let existing = environments
            .get(env)
            .and_then(|state| state.flags.get(flag.key()));
        let current = existing.map(FeatureFlag::version);
        let before = existing.and_then(definition);
        precondition.check(env, flag.key(), current)?;
        let state = environments.entry(env.clone()).or_default();
        state.references().check_flag_write(&flag)?;
        let stored = flag.stored_as(current.unwrap_or(0) + 1, OffsetDateTime::now_utc());
        let change = Change {
            kind: AuditKind::Flag,
            key: stored.key().as_str(),
            old_version: current,
            new_version: Some(stored.version()),
            before,
            after: definition(&stored),
        };
        state.record(change, actor);
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
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        let mut environments = self.lock();
        let not_found = || RepositoryError::NotFound {
            environment: env.clone(),
            key: key.clone(),
        };
        let state = environments.get_mut(env).ok_or_else(not_found)?;
        let existing = state.flags.get(key).ok_or_else(not_found)?;
        let (current, before) = (existing.version(), definition(existing));
        precondition.check(env, key, Some(current))?;
        state.references().check_flag_delete(key)?;
        state.flags.remove(key);
        let change = Change {
            kind: AuditKind::Flag,
            key: key.as_str(),
            old_version: Some(current),
            new_version: None,
            before,
            after: None,
        };
        Ok(Deleted {
            version: current,
            revision: state.record(change, actor),
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
        actor: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError> {
        let mut environments = self.lock();
        let existing = environments
            .get(env)
            .and_then(|state| state.segments.get(segment.key()));
        let current = existing.map(Segment::version);
        let before = existing.and_then(definition);
        precondition.check_segment(env, segment.key(), current)?;
        let state = environments.entry(env.clone()).or_default();
        let stored = segment.stored_as(current.unwrap_or(0) + 1, OffsetDateTime::now_utc());
        let change = Change {
            kind: AuditKind::Segment,
            key: stored.key().as_str(),
            old_version: current,
            new_version: Some(stored.version()),
            before,
            after: definition(&stored),
        };
        let revision = state.record(change, actor);
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
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        let mut environments = self.lock();
        let not_found = || RepositoryError::SegmentNotFound {
            environment: env.clone(),
            key: key.clone(),
        };
        let state = environments.get_mut(env).ok_or_else(not_found)?;
        let existing = state.segments.get(key).ok_or_else(not_found)?;
        let (current, before) = (existing.version(), definition(existing));
        precondition.check_segment(env, key, Some(current))?;
        state.references().check_segment_delete(key)?;
        state.segments.remove(key);
        let change = Change {
            kind: AuditKind::Segment,
            key: key.as_str(),
            old_version: Some(current),
            new_version: None,
            before,
            after: None,
        };
        Ok(Deleted {
            version: current,
            revision: state.record(change, actor),
        })
    }

    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        let environments = self.lock();
        let Some(state) = environments.get(env) else {
            return Ok(AuditPage::default());
        };
        let page_size = query.page_size();
        let newest_first = state
            .log
            .iter()
            .rev()
            .filter(|entry| query.before.is_none_or(|before| entry.position < before))
            .filter(|entry| query.key.as_deref().is_none_or(|key| entry.key == key))
            .take(page_size + 1)
            .cloned()
            .collect();
        Ok(AuditPage::from_newest_first(newest_first, page_size))
    }

    async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, RepositoryError> {
        let mut environments = self.lock();
        let stored = environments.get(env);
        let current = stored.map_or(Revision::ZERO, |state| state.revision);
        if let Some(expected) = request.expected_revision
            && expected != current
        {
            return Err(RepositoryError::RevisionConflict {
                environment: env.clone(),
                expected,
                current,
            });
        }
        let flags: Vec<FeatureFlag> = stored
            .map(|state| state.flags.values().cloned().collect())
            .unwrap_or_default();
        let segments: Vec<Segment> = stored
            .map(|state| state.segments.values().cloned().collect())
            .unwrap_or_default();
        let plan = plan_import(&flags, &segments, &request)
            .map_err(|problems| RepositoryError::InvalidImport { problems })?;
        if request.dry_run || !plan.diff.changes_anything() {
            return Ok(Imported {
                diff: plan.diff,
                revision: current,
                applied: false,
            });
        }
        let state = environments.entry(env.clone()).or_default();
        let revision = state.bump();
        let now = OffsetDateTime::now_utc();
        for flag in plan.flag_writes {
            let existing = state.flags.get(flag.key());
            let old_version = existing.map(FeatureFlag::version);
            let before = existing.and_then(definition);
            let stored = flag.stored_as(old_version.unwrap_or(0) + 1, now);
            let change = Change {
                kind: AuditKind::Flag,
                key: stored.key().as_str(),
                old_version,
                new_version: Some(stored.version()),
                before,
                after: definition(&stored),
            };
            state.append(change, actor, revision);
            state.flags.insert(stored.key().clone(), stored);
        }
        for key in &plan.flag_deletes {
            if let Some(removed) = state.flags.remove(key) {
                let change = Change {
                    kind: AuditKind::Flag,
                    key: key.as_str(),
                    old_version: Some(removed.version()),
                    new_version: None,
                    before: definition(&removed),
                    after: None,
                };
                state.append(change, actor, revision);
            }
        }
        for segment in plan.segment_writes {
            let existing = state.segments.get(segment.key());
            let old_version = existing.map(Segment::version);
            let before = existing.and_then(definition);
            let stored = segment.stored_as(old_version.unwrap_or(0) + 1, now);
            let change = Change {
                kind: AuditKind::Segment,
                key: stored.key().as_str(),
                old_version,
                new_version: Some(stored.version()),
                before,
                after: definition(&stored),
            };
            state.append(change, actor, revision);
            state.segments.insert(stored.key().clone(), stored);
        }
        for key in &plan.segment_deletes {
            if let Some(removed) = state.segments.remove(key) {
                let change = Change {
                    kind: AuditKind::Segment,
                    key: key.as_str(),
                    old_version: Some(removed.version()),
                    new_version: None,
                    before: definition(&removed),
                    after: None,
                };
                state.append(change, actor, revision);
            }
        }
        Ok(Imported {
            diff: plan.diff,
            revision,
            applied: true,
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

    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
        let environments = self.lock();
        let mut outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
        outboxes
            .entry(receiver.to_owned())
            .or_insert_with(|| Outbox {
                delivered: environments
                    .iter()
                    .map(|(env, state)| (env.clone(), state.log.len() as u64))
                    .collect(),
                holder: None,
            });
        Ok(())
    }

    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, RepositoryError> {
        let environments = self.lock();
        let outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(outbox) = outboxes.get(receiver) else {
            return Ok(Vec::new());
        };
        let pending = environments.iter().flat_map(|(env, state)| {
            let delivered = outbox.delivered.get(env).copied().unwrap_or(0);
            let from = usize::try_from(delivered).unwrap_or(usize::MAX);
            state.log.iter().skip(from).map(|entry| OutboxEntry {
                environment: env.clone(),
                entry: entry.clone(),
            })
        });
        Ok(pending.take(limit).collect())
    }

    async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: AuditCursor,
    ) -> Result<(), RepositoryError> {
        let mut outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outbox) = outboxes.get_mut(receiver) {
            let delivered = outbox.delivered.entry(env.clone()).or_insert(0);
            *delivered = (*delivered).max(position.0);
        }
        Ok(())
    }

    async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        let mut outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(outbox) = outboxes.get_mut(receiver) else {
            return Ok(false);
        };
        let free = match &outbox.holder {
            None => true,
            Some((current, until)) => current == holder || *until < now_ms,
        };
        if free {
            outbox.holder = Some((holder.to_owned(), now_ms.saturating_add(for_ms)));
        }
        Ok(free)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}
