//! [`Traced`]: any port (cache, repository or bus) with a `tracing` span around each of its
//! calls made within another span (a request's), so a request's trace shows the store calls it
//! made, how long each took and which failed. Calls made outside any span (background polls,
//! probes and refreshes) are not traced: each would be a trace of its own.
//!
//! A decorator rather than spans inside the service: the service's paths stay as they are, and
//! the binary wraps the ports only while spans are exported (OpenTelemetry), so the hot path
//! carries no span at all otherwise. Each span is named `<port>.<operation>` (`cache.get_flag`,
//! `repository.snapshot`, `bus.publish`) through `otel.name`, is a client span, and carries the
//! adapter (`flag.backend`), the environment (`flag.environment`) and, on failure,
//! `error.type` (the error's kind) with an error status.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::audit::{AuditCursor, AuditPage, AuditQuery};
use crate::bus::{BusError, BusEvent, InvalidationBus};
use crate::cache::{CacheError, FeatureFlagCache, SetOutcome, TierStatus};
use crate::flag::FeatureFlag;
use crate::import::{ImportRequest, Imported};
use crate::names::{Actor, Environment, FlagKey, SegmentKey};
use crate::repository::{
    Deleted, FeatureFlagRepository, OutboxEntry, Precondition, RepositoryError, Upserted,
    UpsertedSegment,
};
use crate::segment::Segment;
use crate::snapshot::{EnvironmentSnapshot, EnvironmentSummary, FlagLookup, Revision};

/// A port whose every call runs in a span of its own.
#[derive(Debug)]
pub struct Traced<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Traced<T> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        Self(inner)
    }
}

/// Runs `call` in a client span named `operation`, about `env` when there is one, marking the
/// span as failed when the call fails.
async fn traced<R, E: fmt::Debug>(
    operation: &'static str,
    backend: &'static str,
    env: Option<&Environment>,
    call: impl Future<Output = Result<R, E>>,
) -> Result<R, E> {
    // Only calls made for something traced (a request) are spans: background work (polls,
    // probes, refreshes) would otherwise start a trace of its own every second.
    if tracing::Span::current().is_none() {
        return call.await;
    }
    let span = tracing::info_span!(
        "port call",
        otel.name = operation,
        otel.kind = "client",
        flag.backend = backend,
        flag.environment = env.map(Environment::as_str),
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let outcome = call.instrument(span.clone()).await;
    if let Err(error) = &outcome
        && !span.is_disabled()
    {
        let kind = format!("{error:?}");
        let kind = kind.split([' ', '(', '{']).next().unwrap_or_default();
        span.record("error.type", kind);
        span.record("otel.status_code", "ERROR");
    }
    outcome
}

#[async_trait]
impl<T: FeatureFlagCache + ?Sized> FeatureFlagCache for Traced<T> {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        traced("cache.get", self.backend(), Some(env), self.0.get(env)).await
    }

    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        traced(
            "cache.get_flag",
            self.backend(),
            Some(env),
            self.0.get_flag(env, key),
        )
        .await
    }

    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        traced(
            "cache.set",
            self.backend(),
            Some(env),
            self.0.set(env, snapshot, ttl),
        )
        .await
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        traced(
            "cache.invalidate",
            self.backend(),
            Some(env),
            self.0.invalidate(env, revision),
        )
        .await
    }

    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        traced(
            "cache.get_with_ttl",
            self.backend(),
            Some(env),
            self.0.get_with_ttl(env),
        )
        .await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        traced("cache.ping", self.backend(), None, self.0.ping()).await
    }

    async fn holds_environment(&self, env: &Environment) -> Result<bool, CacheError> {
        traced(
            "cache.holds_environment",
            self.backend(),
            Some(env),
            self.0.holds_environment(env),
        )
        .await
    }

    fn tier_status(&self) -> Option<TierStatus> {
        self.0.tier_status()
    }
}

#[async_trait]
impl<T: FeatureFlagRepository + ?Sized> FeatureFlagRepository for Traced<T> {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }

    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        traced(
            "repository.snapshot",
            self.backend(),
            Some(env),
            self.0.snapshot(env),
        )
        .await
    }

    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        traced(
            "repository.revision",
            self.backend(),
            Some(env),
            self.0.revision(env),
        )
        .await
    }

    async fn flag_count(&self, env: &Environment) -> Result<u64, RepositoryError> {
        traced(
            "repository.flag_count",
            self.backend(),
            Some(env),
            self.0.flag_count(env),
        )
        .await
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        traced(
            "repository.flag",
            self.backend(),
            Some(env),
            self.0.flag(env, key),
        )
        .await
    }

    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Upserted, RepositoryError> {
        traced(
            "repository.upsert",
            self.backend(),
            Some(env),
            self.0.upsert(env, flag, precondition, actor),
        )
        .await
    }

    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        traced(
            "repository.delete",
            self.backend(),
            Some(env),
            self.0.delete(env, key, precondition, actor),
        )
        .await
    }

    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        traced(
            "repository.segment",
            self.backend(),
            Some(env),
            self.0.segment(env, key),
        )
        .await
    }

    async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError> {
        traced(
            "repository.upsert_segment",
            self.backend(),
            Some(env),
            self.0.upsert_segment(env, segment, precondition, actor),
        )
        .await
    }

    async fn delete_segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        traced(
            "repository.delete_segment",
            self.backend(),
            Some(env),
            self.0.delete_segment(env, key, precondition, actor),
        )
        .await
    }

    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        traced(
            "repository.audit",
            self.backend(),
            Some(env),
            self.0.audit(env, query),
        )
        .await
    }

    async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, RepositoryError> {
        traced(
            "repository.import",
            self.backend(),
            Some(env),
            self.0.import(env, request, actor),
        )
        .await
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        traced(
            "repository.environments",
            self.backend(),
            None,
            self.0.environments(),
        )
        .await
    }

    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        traced(
            "repository.delete_environment",
            self.backend(),
            Some(env),
            self.0.delete_environment(env),
        )
        .await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        traced("repository.ping", self.backend(), None, self.0.ping()).await
    }

    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
        traced(
            "repository.outbox_follow",
            self.backend(),
            None,
            self.0.outbox_follow(receiver),
        )
        .await
    }

    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, RepositoryError> {
        traced(
            "repository.outbox_pending",
            self.backend(),
            None,
            self.0.outbox_pending(receiver, limit),
        )
        .await
    }

    async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: AuditCursor,
    ) -> Result<(), RepositoryError> {
        traced(
            "repository.outbox_delivered",
            self.backend(),
            Some(env),
            self.0.outbox_delivered(receiver, env, position),
        )
        .await
    }

    async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        traced(
            "repository.outbox_hold",
            self.backend(),
            None,
            self.0.outbox_hold(receiver, holder, now_ms, for_ms),
        )
        .await
    }
}

#[async_trait]
impl<T: InvalidationBus + ?Sized> InvalidationBus for Traced<T> {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }

    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        traced(
            "bus.publish",
            self.backend(),
            Some(env),
            self.0.publish(env, revision),
        )
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.0.subscribe()
    }

    fn is_live(&self) -> bool {
        self.0.is_live()
    }

    fn is_watching(&self, env: &Environment) -> bool {
        self.0.is_watching(env)
    }

    fn watch(&self, env: &Environment) {
        self.0.watch(env)
    }
}
