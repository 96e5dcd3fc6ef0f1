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
        let answer = flight.get_or_init(read).await.clone();
        self.land(env, &flight);
        answer
    }

    /// Forgets a finished flight, unless a newer one already took its place.
    fn land(&self, env: &Environment, flight: &Arc<Flight>) {
        let mut flying = lock(&self.flying);
        if flying
            .get(env)
            .is_some_and(|current| Arc::ptr_eq(current, flight))
        {
            flying.remove(env);
        }
    }

    /// Detaches the flight in progress, so that readers arriving from now on start a new one.
    pub(super) fn detach(&self, env: &Environment) {
        lock(&self.flying).remove(env);
    }
}
