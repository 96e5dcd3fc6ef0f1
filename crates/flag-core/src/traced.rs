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
pub struct Traced<T: ?Sized> {
    inner: Arc<T>,
    /// Whether the current call is worth a span (for example: its trace is sampled).
    wanted: fn() -> bool,
}

impl<T: ?Sized> Traced<T> {
    /// Wraps `inner`: a span for every call made within another span.
    pub fn new(inner: Arc<T>) -> Self {
        Self::when(inner, || true)
    }

    /// Wraps `inner`: a span for the calls made within another span while `wanted` says so (the
    /// binary passes "the request's trace is sampled": a span nobody will export still costs
    /// its making).
    pub fn when(inner: Arc<T>, wanted: fn() -> bool) -> Self {
        Self { inner, wanted }
    }
}

/// Runs `call` in a client span named `operation`, about `env` when there is one, marking the
/// span as failed when the call fails.
async fn traced<R, E: fmt::Debug>(
    wanted: fn() -> bool,
    operation: &'static str,
    backend: &'static str,
    env: Option<&Environment>,
    call: impl Future<Output = Result<R, E>>,
) -> Result<R, E> {
    // Only calls made for something traced (a request) are spans: background work (polls,
    // probes, refreshes) would otherwise start a trace of its own every second.
    if tracing::Span::current().is_none() || !wanted() {
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
        self.inner.backend()
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        traced(
            self.wanted,
            "cache.get",
            self.backend(),
            Some(env),
            self.inner.get(env),
        )
        .await
    }

    async fn get_flag(&self, env: &Environment, key: &FlagKey) -> Result<FlagLookup, CacheError> {
        traced(
            self.wanted,
            "cache.get_flag",
            self.backend(),
            Some(env),
            self.inner.get_flag(env, key),
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
            self.wanted,
            "cache.set",
            self.backend(),
            Some(env),
            self.inner.set(env, snapshot, ttl),
        )
        .await
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        traced(
            self.wanted,
            "cache.invalidate",
            self.backend(),
            Some(env),
            self.inner.invalidate(env, revision),
        )
        .await
    }

    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        traced(
            self.wanted,
            "cache.get_with_ttl",
            self.backend(),
            Some(env),
            self.inner.get_with_ttl(env),
        )
        .await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        traced(
            self.wanted,
            "cache.ping",
            self.backend(),
            None,
            self.inner.ping(),
        )
        .await
    }

    async fn holds_environment(&self, env: &Environment) -> Result<bool, CacheError> {
        traced(
            self.wanted,
            "cache.holds_environment",
            self.backend(),
            Some(env),
            self.inner.holds_environment(env),
        )
        .await
    }

    fn tier_status(&self) -> Option<TierStatus> {
        self.inner.tier_status()
    }
}

#[async_trait]
impl<T: FeatureFlagRepository + ?Sized> FeatureFlagRepository for Traced<T> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        traced(
            self.wanted,
            "repository.snapshot",
            self.backend(),
            Some(env),
            self.inner.snapshot(env),
        )
        .await
    }

    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        traced(
            self.wanted,
            "repository.revision",
            self.backend(),
            Some(env),
            self.inner.revision(env),
        )
        .await
    }

    async fn flag_count(&self, env: &Environment) -> Result<u64, RepositoryError> {
        traced(
            self.wanted,
            "repository.flag_count",
            self.backend(),
            Some(env),
            self.inner.flag_count(env),
        )
        .await
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        traced(
            self.wanted,
            "repository.flag",
            self.backend(),
            Some(env),
            self.inner.flag(env, key),
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
            self.wanted,
            "repository.upsert",
            self.backend(),
            Some(env),
            self.inner.upsert(env, flag, precondition, actor),
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
            self.wanted,
            "repository.delete",
            self.backend(),
            Some(env),
            self.inner.delete(env, key, precondition, actor),
        )
        .await
    }

    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        traced(
            self.wanted,
            "repository.segment",
            self.backend(),
            Some(env),
            self.inner.segment(env, key),
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
            self.wanted,
            "repository.upsert_segment",
            self.backend(),
            Some(env),
            self.inner.upsert_segment(env, segment, precondition, actor),
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
            self.wanted,
            "repository.delete_segment",
            self.backend(),
            Some(env),
            self.inner.delete_segment(env, key, precondition, actor),
        )
        .await
    }

    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        traced(
            self.wanted,
            "repository.audit",
            self.backend(),
            Some(env),
            self.inner.audit(env, query),
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
            self.wanted,
            "repository.import",
            self.backend(),
            Some(env),
            self.inner.import(env, request, actor),
        )
        .await
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        traced(
            self.wanted,
            "repository.environments",
            self.backend(),
            None,
            self.inner.environments(),
        )
        .await
    }

    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        traced(
            self.wanted,
            "repository.delete_environment",
            self.backend(),
            Some(env),
            self.inner.delete_environment(env),
        )
        .await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        traced(
            self.wanted,
            "repository.ping",
            self.backend(),
            None,
            self.inner.ping(),
        )
        .await
    }

    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
        traced(
            self.wanted,
            "repository.outbox_follow",
            self.backend(),
            None,
            self.inner.outbox_follow(receiver),
        )
        .await
    }

    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, RepositoryError> {
        traced(
            self.wanted,
            "repository.outbox_pending",
            self.backend(),
            None,
            self.inner.outbox_pending(receiver, limit),
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
            self.wanted,
            "repository.outbox_delivered",
            self.backend(),
            Some(env),
            self.inner.outbox_delivered(receiver, env, position),
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
            self.wanted,
            "repository.outbox_hold",
            self.backend(),
            None,
            self.inner.outbox_hold(receiver, holder, now_ms, for_ms),
        )
        .await
    }
}

#[async_trait]
impl<T: InvalidationBus + ?Sized> InvalidationBus for Traced<T> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        traced(
            self.wanted,
            "bus.publish",
            self.backend(),
            Some(env),
            self.inner.publish(env, revision),
        )
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.inner.subscribe()
    }

    fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    fn is_watching(&self, env: &Environment) -> bool {
        self.inner.is_watching(env)
    }

    fn watch(&self, env: &Environment) {
        self.inner.watch(env)
    }
}
