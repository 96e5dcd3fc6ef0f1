//! The repository suite against the reference `InMemoryRepository`, and proof that it catches
//! a repository that ignores preconditions, forgets to bump revisions, or answers `revision`
//! apart from `snapshot`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;

use flag_conformance::repository::StoredRows;
use flag_conformance::{SharedRepository, repository, repository_suite};
use flag_core::{
    Actor, AuditPage, AuditQuery, Deleted, Environment, EnvironmentSnapshot, EnvironmentSummary,
    FeatureFlag, FeatureFlagRepository, FlagKey, ImportRequest, Imported, InMemoryRepository,
    Precondition, RepositoryError, Revision, Segment, SegmentKey, Upserted, UpsertedSegment,
    async_trait,
};

repository_suite!(
    in_memory,
    || async { Arc::new(InMemoryRepository::new()) as SharedRepository },
    stored_rows: || async {
        let repository = Arc::new(InMemoryRepository::new());
        (
            Arc::clone(&repository) as SharedRepository,
            Arc::new(InMemoryRows(repository)) as Arc<dyn StoredRows>,
        )
    }
);

/// The reference repository's "rows": what a stored definition reads as.
struct InMemoryRows(Arc<InMemoryRepository>);

#[async_trait]
impl StoredRows for InMemoryRows {
    async fn replace_definition(
        &self,
        env: &Environment,
        key: &FlagKey,
        definition: &str,
    ) -> Result<(), String> {
        if self.0.replace_stored_definition(env, key, definition) {
            Ok(())
        } else {
            Err(format!("{env}/{key} was never written"))
        }
    }
}

/// Writes whatever the precondition says, reports revision 1 for every write, or answers
/// `revision` from a cache of its own that no write updates.
#[derive(Debug, Default)]
struct Careless {
    inner: Arc<InMemoryRepository>,
    ignore_preconditions: bool,
    frozen_revision: bool,
    revision_behind_snapshot: bool,
    /// Fails a whole snapshot for one unreadable row, as a strict decoder would.
    strict_reads: bool,
    /// Leaves segments out of snapshots, as a store that reads only its flags table would.
    snapshots_without_segments: bool,
    /// Answers a refused delete as done, as a store that checks no references would.
    deletes_whatever_is_used: bool,
    /// Records every write under one name, as a store that ignores the actor it is given would.
    audit_without_actors: bool,
    /// Pages by offset from the newest entry, as a store that ignores the cursor would.
    audit_ignoring_the_cursor: bool,
    /// Imports whatever the environment's revision, as a store that ignores `If-Match` would.
    imports_ignoring_the_revision: bool,
    /// Keeps no mark of what was delivered, as an outbox that forgets its cursor would.
    outbox_without_marks: bool,
    /// Answers the pending writes newest first, as an outbox ordered by the wrong column would.
    outbox_newest_first: bool,
    /// Gives the right to deliver to whoever asks, as an outbox without a hold would.
    outbox_hold_for_all: bool,
}

impl Careless {
    fn careless_delete(
        &self,
        refused: Result<Deleted, RepositoryError>,
    ) -> Result<Deleted, RepositoryError> {
        match refused {
            Err(RepositoryError::Reference(_)) if self.deletes_whatever_is_used => Ok(Deleted {
                version: 1,
                revision: Revision(0),
            }),
            other => other,
        }
    }
}

#[async_trait]
impl FeatureFlagRepository for Careless {
    fn backend(&self) -> &'static str {
        "careless"
    }
    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        let snapshot = self.inner.snapshot(env).await?;
        if self.strict_reads
            && snapshot
                .flags()
                .any(|flag| flag.unreadable_reason().is_some())
        {
            return Err(RepositoryError::Corrupt {
                message: "a row could not be read".into(),
            });
        }
        if self.snapshots_without_segments {
            return Ok(EnvironmentSnapshot::from_shared(
                snapshot.revision(),
                snapshot.flags().cloned(),
            )
            .unwrap());
        }
        if self.frozen_revision && !snapshot.is_empty() {
            return Ok(
                EnvironmentSnapshot::from_shared(Revision(1), snapshot.flags().cloned()).unwrap(),
            );
        }
        Ok(snapshot)
    }
    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        let revision = self.inner.revision(env).await?;
        if self.revision_behind_snapshot {
            return Ok(Revision(revision.get().saturating_sub(1)));
        }
        Ok(revision)
    }
    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        self.inner.flag(env, key).await
    }
    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Upserted, RepositoryError> {
        let precondition = if self.ignore_preconditions {
            Precondition::None
        } else {
            precondition
        };
        self.inner.upsert(env, flag, precondition, actor).await
    }
    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        let precondition = if self.ignore_preconditions {
            Precondition::None
        } else {
            precondition
        };
        let deleted = self.inner.delete(env, key, precondition, actor).await;
        self.careless_delete(deleted)
    }
    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        self.inner.segment(env, key).await
    }
    async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError> {
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
        let deleted = self
            .inner
            .delete_segment(env, key, precondition, actor)
            .await;
        self.careless_delete(deleted)
    }
    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        let mut query = query.clone();
        if self.audit_ignoring_the_cursor {
            query.before = None;
        }
        let mut page = self.inner.audit(env, &query).await?;
        if self.audit_without_actors {
            for entry in &mut page.entries {
                entry.actor = "flag-server".to_owned();
            }
        }
        Ok(page)
    }

    async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, RepositoryError> {
        let mut request = request;
        if self.imports_ignoring_the_revision {
            request.expected_revision = None;
        }
        self.inner.import(env, request, actor).await
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        self.inner.environments().await
    }
    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        self.inner.delete_environment(env).await
    }
    async fn ping(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
        self.inner.outbox_follow(receiver).await
    }

    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<flag_core::OutboxEntry>, RepositoryError> {
        let mut pending = self.inner.outbox_pending(receiver, limit).await?;
        if self.outbox_newest_first {
            pending.reverse();
        }
        Ok(pending)
    }

    async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: flag_core::AuditCursor,
    ) -> Result<(), RepositoryError> {
        if self.outbox_without_marks {
            return Ok(());
        }
        self.inner.outbox_delivered(receiver, env, position).await
    }

    async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        let held = self
            .inner
            .outbox_hold(receiver, holder, now_ms, for_ms)
            .await?;
        Ok(held || self.outbox_hold_for_all)
    }
}

async fn caught_by(make: fn() -> Careless) -> Vec<&'static str> {
    let violations =
        repository::check_all(|| async move { Arc::new(make()) as SharedRepository }).await;
    flag_conformance::caught_by(&violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_passes() {
    let violations =
        repository::check_all(|| async { Arc::new(InMemoryRepository::new()) as SharedRepository })
            .await;
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignoring_preconditions_is_caught() {
    let caught = caught_by(|| Careless {
        ignore_preconditions: true,
        ..Careless::default()
    })
    .await;
    for property in [
        "optimistic_concurrency_is_enforced",
        "concurrent_writers_never_lose_updates",
    ] {
        assert!(
            caught.contains(&property),
            "{property} did not catch it: {caught:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_does_not_move_is_caught() {
    let caught = caught_by(|| Careless {
        frozen_revision: true,
        ..Careless::default()
    })
    .await;
    for property in [
        "revisions_bump_once_per_write",
        "revisions_and_versions_follow_the_source",
    ] {
        assert!(
            caught.contains(&property),
            "{property} did not catch it: {caught:?}"
        );
    }
}

/// A repository declared read-only that takes writes anyway is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_repository_that_takes_writes_is_caught() {
    let repository: SharedRepository = Arc::new(InMemoryRepository::new());
    let source: flag_conformance::source::SharedSource = Arc::new(
        flag_conformance::source::ImportSource::new(Arc::clone(&repository)),
    );
    let violation = flag_conformance::source::writes_are_refused(&repository, &source)
        .await
        .expect_err("writes were taken");
    assert!(
        violation.to_string().contains("not ReadOnly"),
        "{violation}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_disagrees_with_the_snapshot_is_caught() {
    let caught = caught_by(|| Careless {
        revision_behind_snapshot: true,
        ..Careless::default()
    })
    .await;
    assert!(
        caught.contains(&"revisions_bump_once_per_write"),
        "{caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_that_hides_its_environment_is_caught() {
    let careless = Arc::new(Careless {
        strict_reads: true,
        ..Careless::default()
    });
    let rows = InMemoryRows(Arc::clone(&careless.inner));
    let violation =
        repository::stored_rows_are_read_tolerantly(&(careless as SharedRepository), &rows)
            .await
            .expect_err("a snapshot failing for one damaged row passed");
    assert_eq!(
        flag_conformance::caught_by(&[violation]),
        ["stored_rows_are_read_tolerantly"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_without_segments_are_caught() {
    let caught = caught_by(|| Careless {
        snapshots_without_segments: true,
        ..Careless::default()
    })
    .await;
    assert!(
        caught.contains(&"segments_are_versioned_with_the_environment"),
        "{caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_what_is_referred_to_is_caught() {
    let caught = caught_by(|| Careless {
        deletes_whatever_is_used: true,
        ..Careless::default()
    })
    .await;
    assert_eq!(caught, ["references_are_kept_by_every_write"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_without_actors_is_caught() {
    let caught = caught_by(|| Careless {
        audit_without_actors: true,
        ..Careless::default()
    })
    .await;
    assert!(
        caught.contains(&"every_write_is_audited_with_its_actor"),
        "{caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_cursor_that_is_ignored_is_caught() {
    let caught = caught_by(|| Careless {
        audit_ignoring_the_cursor: true,
        ..Careless::default()
    })
    .await;
    assert_eq!(caught, ["every_write_is_audited_with_its_actor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_ignores_if_match_is_caught() {
    let caught = caught_by(|| Careless {
        imports_ignoring_the_revision: true,
        ..Careless::default()
    })
    .await;
    assert_eq!(caught, ["imports_are_one_transaction"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_careless_outbox_is_caught() {
    let outboxes: [fn() -> Careless; 3] = [
        || Careless {
            outbox_without_marks: true,
            ..Careless::default()
        },
        || Careless {
            outbox_newest_first: true,
            ..Careless::default()
        },
        || Careless {
            outbox_hold_for_all: true,
            ..Careless::default()
        },
    ];
    for make in outboxes {
        let caught = caught_by(make).await;
        assert_eq!(
            caught,
            ["the_outbox_holds_every_committed_write_until_delivered"]
        );
    }
}
