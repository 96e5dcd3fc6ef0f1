//! A repository that is still connecting: what a server starts on when the database is down, so
//! an autoscale or restart during a database outage serves what the cache (or persisted
//! last-known-good) holds instead of crash-looping.
//!
//! [`DeferredSqlRepository::start`] connects (and migrates) on a task of its own, retrying with a
//! backoff from 250 ms doubling to 5 s; until it is connected, every call answers
//! `RepositoryError::Unavailable` at once, naming the last connection error; from then on every
//! call is the connected [`SqlRepository`]'s.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use flag_core::{
    Actor, AuditCursor, AuditPage, AuditQuery, Deleted, Environment, EnvironmentSnapshot,
    EnvironmentSummary, FeatureFlag, FeatureFlagRepository, FlagKey, ImportRequest, Imported,
    OutboxEntry, Precondition, RepositoryError, Revision, Segment, SegmentKey, Upserted,
    UpsertedSegment, async_trait,
};

use crate::connection::{Backend, SqlRepositoryBuilder};
use crate::repository::SqlRepository;

/// The first wait before connecting again.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// A [`SqlRepository`] being connected in the background.
#[derive(Debug)]
pub struct DeferredSqlRepository {
    backend: &'static str,
    connected: Arc<OnceLock<SqlRepository>>,
    last_error: Arc<Mutex<String>>,
}

impl DeferredSqlRepository {
    /// Starts connecting with `builder` (on the current Tokio runtime); `first_error` is why the
    /// caller's own attempt failed, told until the next attempt.
    pub fn start(builder: SqlRepositoryBuilder, first_error: String) -> Self {
        let backend = Backend::of(&builder.url).map_or("sql", Backend::name);
        let connected = Arc::new(OnceLock::new());
        let last_error = Arc::new(Mutex::new(first_error));
        let (slot, error) = (Arc::clone(&connected), Arc::clone(&last_error));
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            loop {
                tokio::time::sleep(wait).await;
                match builder.clone().connect().await {
                    Ok(repository) => {
                        tracing::info!("connected to the database");
                        let _ = slot.set(repository);
                        return;
                    }
                    Err(failure) => {
                        tracing::warn!(error = %failure, retry_in_ms = wait.as_millis() as u64,
                            "database still unreachable");
                        *error.lock().unwrap_or_else(PoisonError::into_inner) = failure.to_string();
                        wait = (wait * 2).min(LAST_RETRY);
                    }
                }
            }
        });
        Self {
            backend,
            connected,
            last_error,
        }
    }

    /// Whether the database is connected (and migrated) by now.
    pub fn is_connected(&self) -> bool {
        self.connected.get().is_some()
    }

    fn repository(&self) -> Result<&SqlRepository, RepositoryError> {
        self.connected
            .get()
            .ok_or_else(|| RepositoryError::Unavailable {
                message: format!(
                    "not connected to the database yet: {}",
                    self.last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                ),
            })
    }
}

#[async_trait]
impl FeatureFlagRepository for DeferredSqlRepository {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        self.repository()?.snapshot(env).await
    }

    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        self.repository()?.revision(env).await
    }

    async fn flag_count(&self, env: &Environment) -> Result<u64, RepositoryError> {
        self.repository()?.flag_count(env).await
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        self.repository()?.flag(env, key).await
    }

    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Upserted, RepositoryError> {
        self.repository()?
            .upsert(env, flag, precondition, actor)
            .await
    }

    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        self.repository()?
            .delete(env, key, precondition, actor)
            .await
    }

    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        self.repository()?.segment(env, key).await
    }

    async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError> {
        self.repository()?
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
        self.repository()?
            .delete_segment(env, key, precondition, actor)
            .await
    }

    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        self.repository()?.audit(env, query).await
    }

    async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, RepositoryError> {
        self.repository()?.import(env, request, actor).await
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        self.repository()?.environments().await
    }

    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        self.repository()?.delete_environment(env).await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        self.repository()?.ping().await
    }

    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
        self.repository()?.outbox_follow(receiver).await
    }

    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, RepositoryError> {
        self.repository()?.outbox_pending(receiver, limit).await
    }

    async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: AuditCursor,
    ) -> Result<(), RepositoryError> {
        self.repository()?
            .outbox_delivered(receiver, env, position)
            .await
    }

    async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        self.repository()?
            .outbox_hold(receiver, holder, now_ms, for_ms)
            .await
    }
}
