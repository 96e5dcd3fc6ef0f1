//! `LocalBus`: the invalidation bus inside one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flag_core::{
    BUS_CAPACITY, BusError, BusEvent, Environment, InvalidationBus, Revision, async_trait,
};
use tokio::sync::broadcast;

/// A bus inside one process: every publish reaches every subscriber of this bus (and of its
/// clones, which share it) at once. For several caches in one process and for tests;
/// [`LocalBus::lose`] and [`LocalBus::restore`] simulate a subscription outage.
#[derive(Debug, Clone)]
pub struct LocalBus {
    sender: broadcast::Sender<BusEvent>,
    live: Arc<AtomicBool>,
}

impl LocalBus {
    /// A bus with no subscriber yet.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BUS_CAPACITY).0,
            live: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Simulates a lost subscription: subscribers get [`BusEvent::Lost`] and publishes are
    /// dropped until [`LocalBus::restore`].
    pub fn lose(&self) {
        self.live.store(false, Ordering::SeqCst);
        let _ = self.sender.send(BusEvent::Lost);
    }

    /// Ends a simulated outage: subscribers get [`BusEvent::Restored`].
    pub fn restore(&self) {
        self.live.store(true, Ordering::SeqCst);
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
        self.live.load(Ordering::SeqCst)
    }
}
