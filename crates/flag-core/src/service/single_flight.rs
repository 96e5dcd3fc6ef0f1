//! Single flight: concurrent cache misses on one environment share one repository read.
//!
//! A flight is the repository read of one environment in progress. The first reader starts it,
//! readers arriving while it runs join it and get its answer; when it lands it is forgotten, so
//! the next miss reads again. A write detaches the flight in progress: readers arriving after the
//! write start a new one instead of joining a read that began before it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::lock;
use crate::names::Environment;
use crate::repository::RepositoryError;
use crate::snapshot::EnvironmentSnapshot;

/// What a flight answers: the snapshot read, or why the read failed.
type Answer = Result<Arc<EnvironmentSnapshot>, RepositoryError>;

type Flight = OnceCell<Answer>;

/// The repository reads in progress, one per environment.
#[derive(Debug, Default)]
pub(super) struct Flights {
    flying: Mutex<HashMap<Environment, Arc<Flight>>>,
}

impl Flights {
    /// The answer of the flight of `env`: joined when one is in progress, else started with
    /// `read`.
    pub(super) async fn share<F, Fut>(&self, env: &Environment, read: F) -> Answer
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Answer>,
    {
        let flight = Arc::clone(lock(&self.flying).entry(env.clone()).or_default());
        let boarded = Boarded {
            flights: self,
            env,
            flight,
        };
        boarded.flight.get_or_init(read).await.clone()
    }

    /// Forgets a flight that landed, or one that every reader abandoned (their requests were
    /// cancelled), unless a newer one already took its place.
    fn land(&self, env: &Environment, flight: &Arc<Flight>) {
        let mut flying = lock(&self.flying);
        let Some(current) = flying.get(env) else {
            return;
        };
        // The map's reference and the caller's: nobody else waits on an unfinished flight.
        let abandoned = Arc::strong_count(flight) <= 2;
        if Arc::ptr_eq(current, flight) && (flight.initialized() || abandoned) {
            flying.remove(env);
        }
    }

    /// How many environments have a flight in progress (for tests of cancellation).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.flying).len()
    }

    /// Detaches the flight in progress, so that readers arriving from now on start a new one.
    pub(super) fn detach(&self, env: &Environment) {
        lock(&self.flying).remove(env);
    }
}

/// A reader on a flight: when it gets off, landed or cancelled, the flight may be forgotten.
struct Boarded<'a> {
    flights: &'a Flights,
    env: &'a Environment,
    flight: Arc<Flight>,
}

impl Drop for Boarded<'_> {
    fn drop(&mut self) {
        self.flights.land(self.env, &self.flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flight_every_reader_abandoned_is_forgotten() {
        let flights = Flights::default();
        let env = Environment::parse("production").unwrap();
        let never = flights.share(&env, std::future::pending);
        // Two readers on the flight, both cancelled.
        let joined = flights.share(&env, std::future::pending);
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(10), async {
            tokio::join!(never, joined)
        })
        .await;
        assert!(cancelled.is_err());
        assert_eq!(flights.len(), 0, "an abandoned flight stayed");
        let landed = flights
            .share(&env, || async {
                Ok(Arc::new(EnvironmentSnapshot::empty(Default::default())))
            })
            .await;
        assert!(landed.is_ok());
        assert_eq!(flights.len(), 0);
    }
}
