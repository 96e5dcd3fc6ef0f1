//! The invalidation bus port: how server instances tell each other that an environment changed,
//! so that each can drop its in-process copy within milliseconds instead of waiting for a TTL.

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

/// Publishes and receives environment invalidations between server instances, shared as
/// `Arc<dyn InvalidationBus>`.
///
/// A bus delivers at most once and may lose messages while its subscription is down; it says so
/// with [`BusEvent::Lost`] and [`BusEvent::Restored`], and a receiver that falls behind by more
/// than [`BUS_CAPACITY`] events gets `RecvError::Lagged`. Whoever relies on a bus must treat all
/// three as "anything may have changed".
///
/// A bus may subscribe per environment (Redis Cluster's sharded pub/sub): then an environment's
/// invalidations are heard only once [`InvalidationBus::watch`] asked for them and
/// [`InvalidationBus::is_watching`] says they arrive; nothing of an unwatched environment may be
/// kept.
///
/// # Contract
///
/// Every adapter obeys these rules on a *medium* (one Redis, one process, ...) on which any
/// number of buses are opened, as server instances do; `flag-conformance`'s bus suite proves
/// each of them (the property that does so is named after the rule).
///
/// 1. **A publish reaches every subscriber.** Once buses are live and watching an environment,
///    one publish of it through any of them reaches every receiver of every one of them, the
///    publishing bus's own receivers included, exactly once and with the revision published.
///    (proven by `publish_reaches_every_subscriber`)
/// 2. **A loss is followed by a restore.** When the subscription breaks, receivers get
///    [`BusEvent::Lost`] and `is_live` (and every `is_watching`) turns false; the bus connects
///    again by itself, subscribes to every environment it watched, and only then sends
///    [`BusEvent::Restored`] with `is_live` true again; publishes after that arrive.
///    (proven by `a_loss_is_followed_by_a_restore`)
/// 3. **`watch` is idempotent and bounded.** Watching an environment again changes nothing (one
///    delivery per publish still); a bus that subscribes per environment watches at most the
///    number it declares and ignores the rest (they are never watched, so never kept); a bus whose
///    one subscription covers everything watches every environment while live.
///    (proven by `watch_is_idempotent_and_bounded`)
/// 4. **A watched environment is delivered.** `is_watching(env)` never says yes before the
///    subscription that carries `env` is confirmed, and while it says yes every publish of `env`
///    on the medium reaches this bus's receivers. (proven by `a_watched_environment_is_delivered`)
/// 5. **Failures are values.** A publish that cannot be sent is a [`BusError`] within the
///    adapter's timeout, never a panic or a hang. (proven by each adapter's fault tests)
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

/// The trait object a tiered cache holds.
pub type DynInvalidationBus = dyn InvalidationBus;

macro_rules! forward_bus {
    ($wrapper:ty) => {
        #[async_trait]
        impl<T: InvalidationBus + ?Sized> InvalidationBus for $wrapper {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }

            async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
                (**self).publish(env, revision).await
            }

            fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
                (**self).subscribe()
            }

            fn is_live(&self) -> bool {
                (**self).is_live()
            }

            fn is_watching(&self, env: &Environment) -> bool {
                (**self).is_watching(env)
            }

            fn watch(&self, env: &Environment) {
                (**self).watch(env)
            }
        }
    };
}

forward_bus!(std::sync::Arc<T>);
forward_bus!(Box<T>);

/// How many events a receiver may fall behind before it is told it lagged.
pub const BUS_CAPACITY: usize = 4096;
