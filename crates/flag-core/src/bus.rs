//! The invalidation bus port: how server instances tell each other that an environment changed,
//! so that each can drop its in-process copy within milliseconds instead of waiting for a TTL.
//!
//! A bus delivers at most once and may lose messages while its subscription is down; it says so
//! with [`BusEvent::Lost`] and [`BusEvent::Restored`], and a receiver that falls behind gets
//! `RecvError::Lagged`. Whoever relies on it must treat both as "anything may have changed".
//!
//! A bus may subscribe per environment (Redis Cluster's sharded pub/sub): then an environment's
//! invalidations are heard only once [`InvalidationBus::watch`] asked for them and
//! [`InvalidationBus::is_watching`] says they arrive; nothing of an unwatched environment may be
//! kept.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::names::Environment;
use crate::snapshot::Revision;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// `environment` changed: anything cached of it older than `revision` is stale.
    Invalidated {
        /// The environment that changed.
        environment: Environment,
        /// The revision of the change.
        revision: Revision,
    },
    /// The subscription was lost: invalidations sent from now on may be missed.
    Lost,
    /// The subscription is back; what was sent while it was lost is gone.
    Restored,
}

/// A bus operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus's backend cannot be reached.
    #[error("invalidation bus unavailable: {message}")]
    Unavailable {
        /// What the backend said.
        message: String,
    },
    /// The backend did not answer in time.
    #[error("invalidation bus timed out after {after:?}")]
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
}

/// Publishes and receives environment invalidations between server instances.
#[async_trait]
pub trait InvalidationBus: Send + Sync + fmt::Debug {
    /// A short, stable name of the backend (`local`, `redis`, ...) for metrics and logs.
    fn backend(&self) -> &'static str;

    /// Tells every subscriber (this process's included) that `env` changed at `revision`.
    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError>;

    /// A receiver of every event from now on.
    fn subscribe(&self) -> broadcast::Receiver<BusEvent>;

    /// Whether the subscription is established now (events report every later change).
    fn is_live(&self) -> bool;

    /// Whether invalidations of `env` reach this process now, so that a copy of it may be kept.
    /// A bus whose one subscription covers every environment answers [`Self::is_live`].
    fn is_watching(&self, _env: &Environment) -> bool {
        self.is_live()
    }

    /// Asks for `env`'s invalidations from now on, for a bus that subscribes per environment
    /// (sharded pub/sub); subscribing happens in the background, and [`Self::is_watching`] says
    /// when it is done. A no-op for a bus whose one subscription covers everything.
    fn watch(&self, _env: &Environment) {}
}

/// The trait object the tiered cache holds.
pub type DynInvalidationBus = dyn InvalidationBus;

/// How many events a receiver may fall behind before it is told it lagged.
pub const BUS_CAPACITY: usize = 4096;

/// A bus inside one process: every publish reaches every subscriber of this bus at once. For
/// tests, and for several caches in one process; [`LocalBus::lose`] and [`LocalBus::restore`]
/// simulate a subscription outage.
#[derive(Debug, Clone)]
pub struct LocalBus {
    sender: broadcast::Sender<BusEvent>,
    live: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LocalBus {
    /// A bus with no subscriber yet.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BUS_CAPACITY).0,
            live: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// Simulates a lost subscription: subscribers get [`BusEvent::Lost`] and publishes are
    /// dropped until [`LocalBus::restore`].
    pub fn lose(&self) {
        self.live.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = self.sender.send(BusEvent::Lost);
    }

    /// Ends a simulated outage: subscribers get [`BusEvent::Restored`].
    pub fn restore(&self) {
        self.live.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.sender.send(BusEvent::Restored);
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl InvalidationBus for LocalBus {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        if self.is_live() {
            // No subscriber is not an error: nobody holds anything to drop.
            let _ = self.sender.send(BusEvent::Invalidated {
                environment: env.clone(),
                revision,
            });
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.sender.subscribe()
    }

    fn is_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::SeqCst)
    }
}
