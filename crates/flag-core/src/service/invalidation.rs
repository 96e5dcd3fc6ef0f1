//! Invalidations after writes, and their retries.
//!
//! A write invalidates the environment in the cache at the write's revision. When that fails the
//! invalidation is retried in the background with exponential backoff until it succeeds or the
//! cache TTL has passed (after which the stale entry has expired anyway). There is at most one
//! retry task per environment: a newer write that also fails to invalidate hands its revision to
//! the task already running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Inner, lock};
use crate::names::Environment;
use crate::snapshot::Revision;

/// How failed invalidations are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry; it doubles after each failure.
    pub first_delay: Duration,
    /// The longest wait between two retries.
    pub max_delay: Duration,
    /// When to give up; `None` gives up once the cache TTL has passed.
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            give_up_after: None,
        }
    }
}

/// Environments whose invalidation failed, with the revision still to invalidate.
#[derive(Debug, Default)]
pub(super) struct PendingInvalidations {
    pending: Mutex<HashMap<Environment, Revision>>,
}

impl Inner {
    /// Invalidates `env` at `revision`, retrying in the background when that fails.
    pub(super) async fn invalidate_after_write(
        self: &Arc<Self>,
        env: &Environment,
        revision: Revision,
    ) {
        if self.breaker.is_open() {
            // The cache is out: the retry task invalidates once the probe finds it back.
            self.schedule_invalidation_retry(env, revision);
            return;
        }
        if let Err(error) = self.cache.invalidate(env, revision).await {
            self.counters.cache_errors.increment();
            let outage = self.cache_outage(&error);
            if !outage && let Some(held_back) = self.quiet.permit() {
                warn!(%env, %revision, backend = self.cache.backend(), %error, held_back,
                    "cache invalidation failed; retrying in the background");
            }
            self.schedule_invalidation_retry(env, revision);
        }
    }

    fn schedule_invalidation_retry(self: &Arc<Self>, env: &Environment, revision: Revision) {
        {
            let mut pending = lock(&self.invalidations.pending);
            if let Some(target) = pending.get_mut(env) {
                // A retry task for this environment is running; it will pick the newer revision up.
                *target = (*target).max(revision);
                return;
            }
            pending.insert(env.clone(), revision);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let inner = Arc::clone(self);
                let env = env.clone();
                runtime.spawn(async move { inner.retry_invalidation(env).await });
            }
            Err(_) => {
                lock(&self.invalidations.pending).remove(env);
                self.counters.invalidations_abandoned.increment();
                error!(%env, %revision, "no Tokio runtime to retry a failed invalidation; the TTL bounds staleness");
            }
        }
    }

    /// Tries every pending invalidation once now (at shutdown, when the retry tasks would die
    /// with the process); answers how many environments are still pending.
    pub(super) async fn flush_invalidations(&self) -> usize {
        let pending: Vec<(Environment, Revision)> = lock(&self.invalidations.pending)
            .iter()
            .map(|(env, revision)| (env.clone(), *revision))
            .collect();
        let mut left = 0;
        for (env, target) in pending {
            self.counters.invalidation_retries.increment();
            match self.cache.invalidate(&env, target).await {
                Ok(()) => {
                    self.landed(&env, target);
                    info!(%env, revision = %target, "pending cache invalidation flushed at shutdown");
                }
                Err(error) => {
                    self.counters.cache_errors.increment();
                    left += 1;
                    warn!(%env, revision = %target, %error, "pending cache invalidation failed at shutdown");
                }
            }
        }
        left
    }

    /// The invalidation of `env` at `target` succeeded: it is no longer pending, unless a newer
    /// write's failed meanwhile (answers whether it was the one pending).
    fn landed(&self, env: &Environment, target: Revision) -> bool {
        let mut pending = lock(&self.invalidations.pending);
        let was_pending = pending.get(env) == Some(&target);
        if was_pending {
            pending.remove(env);
        }
        was_pending
    }

    async fn retry_invalidation(self: Arc<Self>, env: Environment) {
        let deadline = Instant::now() + self.retry.give_up_after.unwrap_or(self.ttl);
        let mut delay = self.retry.first_delay;
        loop {
            tokio::time::sleep(delay).await;
            let Some(target) = lock(&self.invalidations.pending).get(&env).copied() else {
                return;
            };
            if self.breaker.is_open() && Instant::now() < deadline {
                // Not worth a timeout: the probe closes the circuit when the cache is back.
                delay = self.retry.first_delay;
                continue;
            }
            self.counters.invalidation_retries.increment();
            match self.cache.invalidate(&env, target).await {
                Ok(()) => {
                    if self.landed(&env, target) {
                        info!(%env, revision = %target, "cache invalidation succeeded on retry");
                        return;
                    }
                    // A newer write failed to invalidate meanwhile: go on with its revision.
                    delay = self.retry.first_delay;
                }
                Err(error) => {
                    self.counters.cache_errors.increment();
                    if Instant::now() >= deadline {
                        lock(&self.invalidations.pending).remove(&env);
                        self.counters.invalidations_abandoned.increment();
                        error!(%env, revision = %target, %error,
                            "giving up on cache invalidation; entries expire with their TTL");
                        return;
                    }
                    if let Some(held_back) = self.quiet.permit() {
                        warn!(%env, revision = %target, %error, held_back,
                            "cache invalidation retry failed");
                    }
                    delay = (delay * 2).min(self.retry.max_delay);
                }
            }
        }
    }
}
