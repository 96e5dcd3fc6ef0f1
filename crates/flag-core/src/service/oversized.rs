//! Environments too large for the cache (`CacheError::TooLarge`): their snapshot is kept in
//! process and served from there, read again from the repository at most once per
//! [`REFRESH_EVERY`], instead of being pushed to the cache on every read (which a shared Redis
//! connection would pay for on every other environment's calls) or read from the repository on
//! every request. A write through this instance drops the copy at once (read-your-writes); writes
//! through other instances are seen within the interval.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::names::Environment;
use crate::snapshot::{EnvironmentSnapshot, Revision};

/// How long an in-process copy is served before the repository is read again.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The copies, one per environment the cache refused (only environments that exist get here).
#[derive(Debug, Default)]
pub(super) struct Oversized {
    copies: RwLock<HashMap<Environment, (Arc<EnvironmentSnapshot>, Instant)>>,
}

impl Oversized {
    /// Keeps `snapshot` of `env`, read from the repository just now.
    pub(super) fn keep(&self, env: &Environment, snapshot: Arc<EnvironmentSnapshot>) {
        self.copies
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(env.clone(), (snapshot, Instant::now()));
    }

    /// The copy of `env`, when it is younger than [`REFRESH_EVERY`] and not older than `floor`.
    pub(super) fn fresh(
        &self,
        env: &Environment,
        floor: Revision,
    ) -> Option<Arc<EnvironmentSnapshot>> {
        let copies = self.copies.read().unwrap_or_else(PoisonError::into_inner);
        if copies.is_empty() {
            return None;
        }
        copies
            .get(env)
            .filter(|(snapshot, read)| {
                read.elapsed() < REFRESH_EVERY && snapshot.revision() >= floor
            })
            .map(|(snapshot, _)| Arc::clone(snapshot))
    }

    /// Drops the copy of `env` (a write through this instance changed it).
    pub(super) fn drop_copy(&self, env: &Environment) {
        let mut copies = self.copies.write().unwrap_or_else(PoisonError::into_inner);
        copies.remove(env);
    }
}
