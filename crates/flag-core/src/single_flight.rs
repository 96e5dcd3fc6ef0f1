//! Single flight: concurrent reads of one environment share one read of the store behind.
//!
//! A flight is one read of one environment in progress. The first reader starts it, readers
//! arriving while it runs join it and get its answer; when it lands it is forgotten, so the next
//! read starts another. [`SingleFlight::detach`] lets go of the flight in progress: readers
//! arriving afterwards start a new one instead of joining a read that began before a change.
//! The service shares its repository reads this way, the tiered cache its L2 reads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OnceCell;

use crate::names::Environment;

type Flight<T> = OnceCell<T>;

/// The reads in progress, one per environment, each answering a `T`.
#[derive(Debug)]
pub struct SingleFlight<T> {
    flying: Mutex<HashMap<Environment, Arc<Flight<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flying: Mutex::default(),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// The answer of the flight of `env`: joined when one is in progress, else started with
    /// `read`. A reader that is cancelled leaves the flight to the others (the next one runs
    /// its own `read` if the cancelled one was running it).
    pub async fn share<F, Fut>(&self, env: &Environment, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let flight = Arc::clone(self.flying().entry(env.clone()).or_default());
        let boarded = Boarded {
            flights: self,
            env,
            flight,
        };
        boarded.flight.get_or_init(read).await.clone()
    }

    /// Lets go of the flight in progress on `env`, so that readers arriving from now on start a
    /// new one.
    pub fn detach(&self, env: &Environment) {
        self.flying().remove(env);
    }

    /// Lets go of every flight in progress.
    pub fn detach_all(&self) {
        self.flying().clear();
    }

    /// How many environments have a flight in progress.
    pub fn len(&self) -> usize {
        self.flying().len()
    }

    /// Whether no flight is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> SingleFlight<T> {
    fn flying(&self) -> MutexGuard<'_, HashMap<Environment, Arc<Flight<T>>>> {
        // The map stays consistent whatever panicked while holding it: every change is one call.
        self.flying.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets a flight that landed, or one that every reader abandoned (their requests were
    /// cancelled), unless a newer one already took its place.
    fn land(&self, env: &Environment, flight: &Arc<Flight<T>>) {
        let mut flying = self.flying();
        let Some(current) = flying.get(env) else {
            return;
        };
        // The map's reference and the caller's: nobody else waits on an unfinished flight.
        let abandoned = Arc::strong_count(flight) <= 2;
        if Arc::ptr_eq(current, flight) && (flight.initialized() || abandoned) {
            flying.remove(env);
        }
    }
}

/// A reader on a flight: when it gets off, landed or cancelled, the flight may be forgotten.
struct Boarded<'a, T> {
    flights: &'a SingleFlight<T>,
    env: &'a Environment,
    flight: Arc<Flight<T>>,
}

impl<T> Drop for Boarded<'_, T> {
    fn drop(&mut self) {
        self.flights.land(self.env, &self.flight);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_flight_every_reader_abandoned_is_forgotten() {
        let flights = SingleFlight::<u32>::default();
        let env = Environment::parse("production").unwrap();
        let never = flights.share(&env, std::future::pending);
        // Two readers on the flight, both cancelled.
        let joined = flights.share(&env, std::future::pending);
        let cancelled = tokio::time::timeout(Duration::from_millis(10), async {
            tokio::join!(never, joined)
        })
        .await;
        assert!(cancelled.is_err());
        assert_eq!(flights.len(), 0, "an abandoned flight stayed");
        assert_eq!(flights.share(&env, || async { 7 }).await, 7);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn concurrent_readers_share_one_read_and_a_detached_flight_is_not_joined() {
        let flights = SingleFlight::<usize>::default();
        let env = Environment::parse("production").unwrap();
        let reads = AtomicUsize::new(0);
        let gate = tokio::sync::Notify::new();
        let read = || async {
            let number = reads.fetch_add(1, Ordering::SeqCst) + 1;
            gate.notified().await;
            number
        };
        let first = flights.share(&env, read);
        let second = flights.share(&env, read);
        let detached = async {
            // Both readers are on the first flight by now; after the detach a third starts anew.
            tokio::task::yield_now().await;
            flights.detach(&env);
            flights.share(&env, read).await
        };
        let release = async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            gate.notify_waiters();
            tokio::task::yield_now().await;
            gate.notify_waiters();
        };
        let (first, second, third, ()) = tokio::join!(first, second, detached, release);
        assert_eq!(
            (first, second),
            (1, 1),
            "the two readers did not share one read"
        );
        assert_eq!(third, 2, "a reader after the detach joined the old flight");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
