//! The repository port: the source of truth for flags and segments, with versions and revisions.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::audit::{AuditCursor, AuditEntry, AuditPage, AuditQuery};
use crate::flag::FeatureFlag;
use crate::import::{ImportProblem, ImportRequest, Imported};
use crate::names::{Actor, Environment, FlagKey, SegmentKey};
use crate::references::ReferenceError;
use crate::segment::Segment;
use crate::snapshot::{EnvironmentSnapshot, EnvironmentSummary, Revision};

/// Durable flag storage, shared as `Arc<dyn FeatureFlagRepository>`.
///
/// # Contract
///
/// Every adapter obeys these rules; `flag-conformance`'s repository suite proves each of them
/// (the property that does so is named after the rule).
///
/// 1. **Versions.** A flag's first write stores version 1; every later write of it stores the
///    previous version + 1, and returns the stored flag with its version and `updated_at`.
///    (proven by `versions_start_at_one_and_grow`)
/// 2. **Revisions.** Every successful write (upsert or delete) in an environment bumps that
///    environment's revision by exactly 1 in the same transaction; a failed write bumps nothing;
///    `snapshot` returns the flags and the revision of one consistent state, and `revision` the
///    same revision without the flags. An environment never written is at revision 0 with no
///    flags. (proven by `revisions_bump_once_per_write`)
/// 3. **Optimistic concurrency.** A [`Precondition`] is checked inside the write's transaction
///    ([`Precondition::check`] is the rule); a failed one is
///    [`RepositoryError::VersionConflict`] carrying the current version, and changes nothing.
///    Concurrent read-modify-write cycles never lose an update.
///    (proven by `optimistic_concurrency_is_enforced`, `concurrent_writers_never_lose_updates`)
/// 4. **Deletes.** Deleting a missing flag is [`RepositoryError::NotFound`] and bumps nothing.
///    A re-created flag starts again at version 1. (proven by `deletes_remove_and_restart_versions`)
/// 5. **Isolation.** Nothing done in one environment is visible in another.
///    (proven by `environments_are_isolated`)
/// 6. **Listing.** `environments` lists every environment that has had a write, by name, with its
///    revision and current flag count (0 after its last flag was deleted).
///    (proven by `environments_are_listed`)
/// 7. **Environment removal.** `delete_environment` of an environment holding flags is
///    [`RepositoryError::EnvironmentInUse`] and changes nothing; of one that is not listed,
///    [`RepositoryError::EnvironmentNotFound`]; otherwise it is no longer listed, its revision is
///    bumped once, and a later write continues from that revision (never back to 1).
///    (proven by `environments_are_removed_only_when_empty`)
/// 8. **Round trips.** Maximum-length keys, Unicode and large values come back exactly as
///    written, and `ping` answers while the store does.
///    (proven by `unusual_flags_round_trip`, `ping_answers`)
/// 9. **Failures are values.** An unreachable store is [`RepositoryError::Unavailable`] or
///    [`RepositoryError::Timeout`] within the adapter's timeout, never a hang.
///    (proven by each adapter's fault tests)
/// 10. **Tolerant reads.** A stored flag with fields this release does not know (written by a
///     newer release) is read with them ignored; one that cannot be read at all is read as
///     [`FeatureFlag::unreadable`] (same key and version), in `snapshot`, `flag` and the listing
///     alike, and never hides another flag; writing it again replaces it.
///     (proven by `stored_rows_are_read_tolerantly`)
/// 11. **Segments.** Segments follow rules 1 to 5 and 8 as flags do, in the same revision
///     sequence: `snapshot` carries them with the flags of the same state, and a segment write
///     bumps the revision exactly like a flag write. An environment holding segments is in use
///     (rule 7). (proven by `segments_are_versioned_with_the_environment`)
/// 12. **References.** Inside the write's transaction, a flag write whose conditions name a
///     missing segment, or whose prerequisites name a missing flag, make a cycle or a chain
///     longer than 8 links, and a delete of a flag or segment that another flag refers to, are
///     [`RepositoryError::Reference`] ([`crate::References`] is the rule) and change nothing.
///     (proven by `references_are_kept_by_every_write`)
/// 13. **Audit.** Every successful write appends one entry to its environment's audit log in
///     its own transaction (a refused write appends none): the `actor` it was given, the action,
///     kind, key, versions, revision, and the definitions before and after as stored. `audit`
///     answers them newest first, filtered by key, `limit` at a time, with a cursor that pages
///     through without repeating or skipping an entry while writes go on.
///     (proven by `every_write_is_audited_with_its_actor`)
/// 14. **Imports.** `import` decides with [`crate::plan_import`] against the environment as its
///     transaction sees it, checks `expected_revision` first
///     ([`RepositoryError::RevisionConflict`]), answers every problem at once
///     ([`RepositoryError::InvalidImport`]) and changes nothing then; otherwise, unless it is a
///     dry run or changes nothing, it writes and deletes what the plan says with one revision
///     bump, versions as rule 1 says, and one audit entry per changed flag or segment (rule 13).
///     (proven by `imports_are_one_transaction`)
/// 15. **Outbox.** The audit log is the outbox of change notifications (it is written in each
///     write's own transaction, so a committed write is never missing from it). After
///     `outbox_follow(receiver)`, `outbox_pending` answers every write committed since, each
///     once until `outbox_delivered` marks it (and everything before it in its environment), in
///     commit order within each environment (so in revision order), whatever other environments
///     do; receivers are independent of each other; a durable repository keeps the marks across
///     restarts. Writes committed before the receiver was followed are never pending.
///     `outbox_hold` gives the right to deliver to one holder at a time until it expires.
///     (proven by `the_outbox_holds_every_committed_write_until_delivered`)
#[async_trait]
pub trait FeatureFlagRepository: Send + Sync + fmt::Debug {
    /// A short, stable name of the backend (`sqlite`, `postgres`, ...) for metrics and logs.
    fn backend(&self) -> &'static str;

    /// Every flag of `env` with the environment's revision.
    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError>;

    /// The revision of `env` alone (what `snapshot` would carry), for callers that need no flags;
    /// the provided method reads the whole snapshot, and adapters answer it more cheaply.
    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        Ok(self.snapshot(env).await?.revision())
    }

    /// How many flags `env` holds (0 for an environment never written), for the limit check of a
    /// create; the provided method reads the whole snapshot, and adapters answer it more cheaply.
    async fn flag_count(&self, env: &Environment) -> Result<u64, RepositoryError> {
        Ok(u64::try_from(self.snapshot(env).await?.len()).unwrap_or(u64::MAX))
    }

    /// One flag of `env`, if it exists.
    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError>;

    /// Creates or replaces a flag, if `precondition` holds.
    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Upserted, RepositoryError>;

    /// Deletes a flag, if it exists and `precondition` holds.
    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError>;

    /// One segment of `env`, if it exists.
    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError>;

    /// Creates or replaces a segment, if `precondition` holds.
    async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError>;

    /// Deletes a segment, if it exists, no flag refers to it and `precondition` holds.
    async fn delete_segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError>;

    /// A page of `env`'s audit log, newest first (rule 13).
    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError>;

    /// Imports a document of flags and segments into `env` as one transaction (rule 14).
    async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, RepositoryError>;

    /// Every environment that has had a write, ordered by name.
    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError>;

    /// Removes `env`, which must hold no flags and no segments, and answers its revision after
    /// the removal.
    /// The revision is kept, so an environment written again later continues from it.
    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError>;

    /// Succeeds when the store answers; for readiness checks.
    async fn ping(&self) -> Result<(), RepositoryError>;

    /// Starts keeping an outbox for `receiver` (an opaque name of at most 64 bytes): every write
    /// committed from now on is pending for it until marked delivered. Idempotent: a receiver
    /// already followed keeps its place, across restarts in a durable repository (rule 15). A
    /// repository that takes no writes has nothing ever pending.
    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError>;

    /// Up to `limit` writes committed since `receiver` was followed and not yet marked delivered
    /// to it, in commit order within each environment (rule 15).
    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, RepositoryError>;

    /// Marks the write at `position` of `env`, and every earlier one of `env`, delivered to
    /// `receiver`. A position at or before one already marked changes nothing.
    async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: AuditCursor,
    ) -> Result<(), RepositoryError>;

    /// Takes or renews the right to deliver `receiver`'s outbox for `holder` until
    /// `now_ms + for_ms` (Unix milliseconds), so that of several instances sharing the store one
    /// delivers; answers whether `holder` has it. The right is free when unheld or expired.
    async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError>;
}

/// One committed write waiting in a receiver's outbox: the environment and its audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The environment written.
    pub environment: Environment,
    /// The write, as the audit log holds it (its `position` is the outbox's cursor).
    pub entry: AuditEntry,
}

/// The trait object the service and server hold.
pub type DynFeatureFlagRepository = dyn FeatureFlagRepository;

/// A condition a write needs to hold, checked in the write's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Write whatever is stored.
    #[default]
    None,
    /// Write only if the flag exists at exactly this version (HTTP `If-Match`).
    Version(u64),
    /// Write only if the flag does not exist (HTTP `If-None-Match: *`).
    Absent,
    /// Write only if the flag exists, at any version (HTTP `If-Match: *`).
    Exists,
}

impl Precondition {
    /// Whether the precondition holds for a flag stored at `current` (`None`: no such flag).
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::Version(expected) => current == Some(expected),
            Precondition::Absent => current.is_none(),
            Precondition::Exists => current.is_some(),
        }
    }

    /// `Ok` when the precondition holds for the segment `key` of `env` stored at `current`,
    /// else the [`RepositoryError::SegmentVersionConflict`] a repository answers.
    pub fn check_segment(
        self,
        env: &Environment,
        key: &SegmentKey,
        current: Option<u64>,
    ) -> Result<(), RepositoryError> {
        if self.holds(current) {
            return Ok(());
        }
        Err(RepositoryError::SegmentVersionConflict {
            environment: env.clone(),
            key: key.clone(),
            expected: self,
            current,
        })
    }

    /// `Ok` when the precondition holds for `key` of `env` stored at `current`, else the
    /// [`RepositoryError::VersionConflict`] a repository answers.
    pub fn check(
        self,
        env: &Environment,
        key: &FlagKey,
        current: Option<u64>,
    ) -> Result<(), RepositoryError> {
        if self.holds(current) {
            return Ok(());
        }
        Err(RepositoryError::VersionConflict {
            environment: env.clone(),
            key: key.clone(),
            expected: self,
            current,
        })
    }
}

/// A successful upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    /// The flag as stored, with its new version and timestamp.
    pub flag: FeatureFlag,
    /// The environment's revision after the write.
    pub revision: Revision,
    /// Whether the flag did not exist before.
    pub created: bool,
}

/// A successful segment upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsertedSegment {
    /// The segment as stored, with its new version and timestamp.
    pub segment: Segment,
    /// The environment's revision after the write.
    pub revision: Revision,
    /// Whether the segment did not exist before.
    pub created: bool,
}

/// A successful delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The version the flag had when it was deleted.
    pub version: u64,
    /// The environment's revision after the write.
    pub revision: Revision,
}

/// A repository failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// The flag does not exist.
    #[error("flag {key} not found in environment {environment}")]
    NotFound {
        /// The environment.
        environment: Environment,
        /// The flag.
        key: FlagKey,
    },
    /// The precondition did not hold; nothing was written.
    #[error(
        "version conflict on flag {key} in {environment}: expected {expected:?}, current version {current:?}"
    )]
    VersionConflict {
        /// The environment.
        environment: Environment,
        /// The flag.
        key: FlagKey,
        /// What the writer required.
        expected: Precondition,
        /// The stored version, `None` when the flag does not exist.
        current: Option<u64>,
    },
    /// The segment does not exist.
    #[error("segment {key} not found in environment {environment}")]
    SegmentNotFound {
        /// The environment.
        environment: Environment,
        /// The segment.
        key: SegmentKey,
    },
    /// The precondition on a segment did not hold; nothing was written.
    #[error(
        "version conflict on segment {key} in {environment}: expected {expected:?}, current version {current:?}"
    )]
    SegmentVersionConflict {
        /// The environment.
        environment: Environment,
        /// The segment.
        key: SegmentKey,
        /// What the writer required.
        expected: Precondition,
        /// The stored version, `None` when the segment does not exist.
        current: Option<u64>,
    },
    /// The write would break a reference between flags and segments; nothing was written.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// An import's `If-Match` named another revision; nothing was written.
    #[error("environment {environment} is at revision {current}, not {expected}")]
    RevisionConflict {
        /// The environment.
        environment: Environment,
        /// The revision the writer required.
        expected: Revision,
        /// The environment's revision.
        current: Revision,
    },
    /// An import's document cannot be applied; nothing was written.
    #[error("the document cannot be imported: {}", problems.iter().map(|problem| format!("{}: {}", problem.path, problem.message)).collect::<Vec<_>>().join("; "))]
    InvalidImport {
        /// Every problem, with its path in the document.
        problems: Vec<ImportProblem>,
    },
    /// The environment does not exist (it was never written, or was removed).
    #[error("environment {environment} not found")]
    EnvironmentNotFound {
        /// The environment.
        environment: Environment,
    },
    /// The environment still holds flags or segments, so it cannot be removed.
    #[error(
        "environment {environment} holds {flags} flags and {segments} segments; delete them first"
    )]
    EnvironmentInUse {
        /// The environment.
        environment: Environment,
        /// How many flags it holds.
        flags: u64,
        /// How many segments it holds.
        segments: u64,
    },
    /// The repository takes no writes (its source is a file); nothing was written.
    #[error(
        "the flags are read from {source_name}, which this server does not write; change it there"
    )]
    ReadOnly {
        /// What the flags are read from (a file's path).
        source_name: String,
    },
    /// The store did not answer within the configured timeout.
    #[error("repository call timed out after {}ms", after.as_millis())]
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// The store cannot be reached.
    #[error("repository unavailable: {message}")]
    Unavailable {
        /// What the driver said.
        message: String,
    },
    /// A stored row cannot be read back as a valid flag.
    #[error("repository holds corrupt data: {message}")]
    Corrupt {
        /// What is wrong.
        message: String,
    },
    /// Any other store failure.
    #[error("repository error: {message}")]
    Backend {
        /// What the driver said.
        message: String,
    },
}

impl RepositoryError {
    /// Whether the store is down or slow (as opposed to the request being refused).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            RepositoryError::Timeout { .. } | RepositoryError::Unavailable { .. }
        )
    }
}

macro_rules! forward_repository {
    ($wrapper:ty) => {
        #[async_trait]
        impl<T: FeatureFlagRepository + ?Sized> FeatureFlagRepository for $wrapper {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }

            async fn snapshot(
                &self,
                env: &Environment,
            ) -> Result<EnvironmentSnapshot, RepositoryError> {
                (**self).snapshot(env).await
            }

            async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
                (**self).revision(env).await
            }

            async fn flag_count(&self, env: &Environment) -> Result<u64, RepositoryError> {
                (**self).flag_count(env).await
            }

            async fn flag(
                &self,
                env: &Environment,
                key: &FlagKey,
            ) -> Result<Option<FeatureFlag>, RepositoryError> {
                (**self).flag(env, key).await
            }

            async fn upsert(
                &self,
                env: &Environment,
                flag: FeatureFlag,
                precondition: Precondition,
                actor: &Actor,
            ) -> Result<Upserted, RepositoryError> {
                (**self).upsert(env, flag, precondition, actor).await
            }

            async fn delete(
                &self,
                env: &Environment,
                key: &FlagKey,
                precondition: Precondition,
                actor: &Actor,
            ) -> Result<Deleted, RepositoryError> {
                (**self).delete(env, key, precondition, actor).await
            }

            async fn segment(
                &self,
                env: &Environment,
                key: &SegmentKey,
            ) -> Result<Option<Segment>, RepositoryError> {
                (**self).segment(env, key).await
            }

            async fn upsert_segment(
                &self,
                env: &Environment,
                segment: Segment,
                precondition: Precondition,
                actor: &Actor,
            ) -> Result<UpsertedSegment, RepositoryError> {
                (**self)
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
                (**self).delete_segment(env, key, precondition, actor).await
            }

            async fn audit(
                &self,
                env: &Environment,
                query: &AuditQuery,
            ) -> Result<AuditPage, RepositoryError> {
                (**self).audit(env, query).await
            }

            async fn import(
                &self,
                env: &Environment,
                request: ImportRequest,
                actor: &Actor,
            ) -> Result<Imported, RepositoryError> {
                (**self).import(env, request, actor).await
            }

            async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
                (**self).environments().await
            }

            async fn delete_environment(
                &self,
                env: &Environment,
            ) -> Result<Revision, RepositoryError> {
                (**self).delete_environment(env).await
            }

            async fn ping(&self) -> Result<(), RepositoryError> {
                (**self).ping().await
            }

            async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
                (**self).outbox_follow(receiver).await
            }

            async fn outbox_pending(
                &self,
                receiver: &str,
                limit: usize,
            ) -> Result<Vec<OutboxEntry>, RepositoryError> {
                (**self).outbox_pending(receiver, limit).await
            }

            async fn outbox_delivered(
                &self,
                receiver: &str,
                env: &Environment,
                position: AuditCursor,
            ) -> Result<(), RepositoryError> {
                (**self).outbox_delivered(receiver, env, position).await
            }

            async fn outbox_hold(
                &self,
                receiver: &str,
                holder: &str,
                now_ms: u64,
                for_ms: u64,
            ) -> Result<bool, RepositoryError> {
                (**self).outbox_hold(receiver, holder, now_ms, for_ms).await
            }
        }
    };
}

forward_repository!(std::sync::Arc<T>);
forward_repository!(Box<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_hold_as_their_headers_say() {
        assert!(Precondition::None.holds(None) && Precondition::None.holds(Some(4)));
        assert!(Precondition::Version(3).holds(Some(3)));
        assert!(!Precondition::Version(3).holds(Some(4)));
        assert!(!Precondition::Version(3).holds(None));
        assert!(Precondition::Absent.holds(None));
        assert!(!Precondition::Absent.holds(Some(1)));
        assert!(Precondition::Exists.holds(Some(1)));
        assert!(!Precondition::Exists.holds(None));
    }

    #[test]
    fn a_failed_check_names_what_was_expected_and_what_is_stored() {
        let env = Environment::parse("production").unwrap();
        let key = FlagKey::parse("checkout").unwrap();
        assert_eq!(
            Precondition::Exists.check(&env, &key, None),
            Err(RepositoryError::VersionConflict {
                environment: env.clone(),
                key: key.clone(),
                expected: Precondition::Exists,
                current: None,
            })
        );
        assert_eq!(Precondition::Version(2).check(&env, &key, Some(2)), Ok(()));
    }
}
