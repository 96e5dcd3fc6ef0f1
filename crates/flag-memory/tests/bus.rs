//! `LocalBus` passes the whole bus suite, and the suite has teeth: deliberately broken buses each
//! fail it, named by the property that caught them, while a correct bus that subscribes per
//! environment passes it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flag_conformance::{BusCapabilities, BusMedium, SharedBus, SharedMedium, bus, bus_suite};
use flag_core::{BusError, BusEvent, Environment, InvalidationBus, Revision, async_trait};
use flag_memory::LocalBus;
use tokio::sync::broadcast;

/// One process: every bus opened is a clone of one `LocalBus`; an interruption is a simulated
/// loss and restore.
#[derive(Debug, Default)]
struct LocalMedium {
    bus: LocalBus,
}

#[async_trait]
impl BusMedium for LocalMedium {
    async fn open(&self) -> SharedBus {
        Arc::new(self.bus.clone())
    }

    async fn interrupt(&self) -> Result<(), String> {
        self.bus.lose();
        self.bus.restore();
        Ok(())
    }
}

bus_suite!(
    local,
    || async { Arc::new(LocalMedium::default()) as SharedMedium },
    IN_PROCESS
);

/// What a bus inside one process declares: one subscription covers everything, and everything
/// happens within microseconds (a second of patience is plenty, even on a loaded machine).
const IN_PROCESS: BusCapabilities = BusCapabilities {
    max_watched: None,
    patience: Duration::from_secs(1),
};

/// A receiver of the events of `source` that `keep` accepts, forwarded by a task.
fn filtered(
    mut source: broadcast::Receiver<BusEvent>,
    keep: impl Fn(&BusEvent) -> bool + Send + 'static,
) -> broadcast::Receiver<BusEvent> {
    let (sender, receiver) = broadcast::channel(flag_core::BUS_CAPACITY);
    tokio::spawn(async move {
        while let Ok(event) = source.recv().await {
            if keep(&event) && sender.send(event).is_err() {
                return;
            }
        }
    });
    receiver
}

/// A bus over a `LocalBus` that subscribes per environment: `watch` records the environment
/// (at most `limit` of them, unless it is `unbounded`), `is_watching` says yes for recorded ones,
/// and, when `confirms_late`, deliveries of an environment only start 50 ms after it said yes.
#[derive(Debug)]
struct PerEnvironment {
    inner: LocalBus,
    limit: usize,
    unbounded: bool,
    confirms_late: bool,
    watched: Arc<Mutex<HashMap<Environment, Instant>>>,
}

#[async_trait]
impl InvalidationBus for PerEnvironment {
    fn backend(&self) -> &'static str {
        "per-environment"
    }
    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        self.inner.publish(env, revision).await
    }
    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        let watched = Arc::clone(&self.watched);
        let late = self.confirms_late;
        filtered(self.inner.subscribe(), move |event| match event {
            BusEvent::Invalidated { environment, .. } => watched
                .lock()
                .unwrap()
                .get(environment)
                .is_some_and(|since| !late || since.elapsed() >= Duration::from_millis(50)),
            _ => true,
        })
    }
    fn is_live(&self) -> bool {
        self.inner.is_live()
    }
    fn is_watching(&self, env: &Environment) -> bool {
        self.is_live() && self.watched.lock().unwrap().contains_key(env)
    }
    fn watch(&self, env: &Environment) {
        let mut watched = self.watched.lock().unwrap();
        if self.unbounded || watched.len() < self.limit {
            watched.entry(env.clone()).or_insert_with(Instant::now);
        }
    }
}

/// A medium of `PerEnvironment` buses on one `LocalBus`, each bus watching on its own.
#[derive(Debug, Default)]
struct PerEnvironmentMedium {
    bus: LocalBus,
    unbounded: bool,
    confirms_late: bool,
}

const LIMIT: usize = 8;

#[async_trait]
impl BusMedium for PerEnvironmentMedium {
    async fn open(&self) -> SharedBus {
        Arc::new(PerEnvironment {
            inner: self.bus.clone(),
            limit: LIMIT,
            unbounded: self.unbounded,
            confirms_late: self.confirms_late,
            watched: Arc::default(),
        })
    }

    async fn interrupt(&self) -> Result<(), String> {
        self.bus.lose();
        self.bus.restore();
        Ok(())
    }
}

/// Buses that never hear what they publish themselves: each has a channel of its own, and a
/// publish goes to every other bus's channel.
#[derive(Debug, Default)]
struct DeafMedium {
    channels: Arc<Mutex<Vec<broadcast::Sender<BusEvent>>>>,
}

#[derive(Debug)]
struct DeafToItself {
    own: usize,
    channels: Arc<Mutex<Vec<broadcast::Sender<BusEvent>>>>,
}

#[async_trait]
impl InvalidationBus for DeafToItself {
    fn backend(&self) -> &'static str {
        "deaf-to-itself"
    }
    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        for (index, channel) in self.channels.lock().unwrap().iter().enumerate() {
            if index != self.own {
                let _ = channel.send(BusEvent::Invalidated {
                    environment: env.clone(),
                    revision,
                });
            }
        }
        Ok(())
    }
    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.channels.lock().unwrap()[self.own].subscribe()
    }
    fn is_live(&self) -> bool {
        true
    }
}

#[async_trait]
impl BusMedium for DeafMedium {
    async fn open(&self) -> SharedBus {
        let mut channels = self.channels.lock().unwrap();
        channels.push(broadcast::channel(flag_core::BUS_CAPACITY).0);
        Arc::new(DeafToItself {
            own: channels.len() - 1,
            channels: Arc::clone(&self.channels),
        })
    }

    async fn interrupt(&self) -> Result<(), String> {
        for channel in self.channels.lock().unwrap().iter() {
            let _ = channel.send(BusEvent::Lost);
            let _ = channel.send(BusEvent::Restored);
        }
        Ok(())
    }
}

/// A `LocalBus` whose receivers never hear `Restored`.
#[derive(Debug)]
struct ForgetsToRestore {
    inner: LocalBus,
}

#[async_trait]
impl InvalidationBus for ForgetsToRestore {
    fn backend(&self) -> &'static str {
        "forgets-to-restore"
    }
    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        self.inner.publish(env, revision).await
    }
    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        filtered(self.inner.subscribe(), |event| *event != BusEvent::Restored)
    }
    fn is_live(&self) -> bool {
        self.inner.is_live()
    }
}

#[derive(Debug, Default)]
struct ForgetfulMedium {
    bus: LocalBus,
}

#[async_trait]
impl BusMedium for ForgetfulMedium {
    async fn open(&self) -> SharedBus {
        Arc::new(ForgetsToRestore {
            inner: self.bus.clone(),
        })
    }

    async fn interrupt(&self) -> Result<(), String> {
        self.bus.lose();
        self.bus.restore();
        Ok(())
    }
}

/// Runs the whole bus suite on media from `medium` and returns the names of the properties that
/// caught the bus.
async fn caught_by(
    medium: fn() -> SharedMedium,
    capabilities: BusCapabilities,
) -> Vec<&'static str> {
    let violations = bus::check_all(|| async move { medium() }, capabilities).await;
    flag_conformance::caught_by(&violations)
}

const PER_ENVIRONMENT: BusCapabilities = BusCapabilities {
    max_watched: Some(LIMIT),
    ..IN_PROCESS
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_subscribes_per_environment_within_its_limit_passes() {
    let caught = caught_by(
        || Arc::new(PerEnvironmentMedium::default()),
        PER_ENVIRONMENT,
    )
    .await;
    assert_eq!(caught, Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_deaf_to_its_own_publishes_is_caught() {
    let caught = caught_by(|| Arc::new(DeafMedium::default()), IN_PROCESS).await;
    assert!(
        caught.contains(&"publish_reaches_every_subscriber"),
        "{caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_never_says_restored_is_caught() {
    let caught = caught_by(|| Arc::new(ForgetfulMedium::default()), IN_PROCESS).await;
    assert!(
        caught.contains(&"a_loss_is_followed_by_a_restore"),
        "{caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_watches_past_its_limit_is_caught() {
    let caught = caught_by(
        || {
            Arc::new(PerEnvironmentMedium {
                unbounded: true,
                ..PerEnvironmentMedium::default()
            })
        },
        PER_ENVIRONMENT,
    )
    .await;
    assert!(
        caught.contains(&"watch_is_idempotent_and_bounded"),
        "{caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_says_it_watches_before_it_does_is_caught() {
    let caught = caught_by(
        || {
            Arc::new(PerEnvironmentMedium {
                confirms_late: true,
                ..PerEnvironmentMedium::default()
            })
        },
        PER_ENVIRONMENT,
    )
    .await;
    assert!(
        caught.contains(&"a_watched_environment_is_delivered"),
        "{caught:?}"
    );
}
