//! In-process copies of snapshots read from the repository, each served until it is older than
//! its refresh interval, for two kinds of environment the cache cannot hold:
//! - environments too large for the cache (`CacheError::TooLarge`), so they are not pushed to
//!   the cache on every read (which a shared Redis connection would pay for on every other
//!   environment's calls) nor read from the repository on every request;
//! - every environment while the cache is out (its circuit is open), so the repository is read
//!   once per environment per `FLAG_OUTAGE_REFRESH_MS`, not once per request.
//!
//! A write through this instance drops the copy at once (read-your-writes); writes through other
//! instances are seen within the interval.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::fnv::FnvBuildHasher;
use crate::names::Environment;
use crate::snapshot::{EnvironmentSnapshot, Revision};

/// How long a copy of an environment too large for the cache is served before the repository is
/// read again.
pub(super) const OVERSIZED_REFRESH: Duration = Duration::from_secs(1);

/// The copies, one per environment (only environments that exist get here).
#[derive(Debug)]
pub(super) struct Copies {
    refresh: Duration,
    copies: RwLock<HashMap<Environment, (Arc<EnvironmentSnapshot>, Instant), FnvBuildHasher>>,
}

impl Copies {
    /// Copies served for `refresh` after they were read.
    pub(super) fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            copies: RwLock::default(),
        }
    }

    /// Keeps `snapshot` of `env`, read from the repository just now.
    pub(super) fn keep(&self, env: &Environment, snapshot: Arc<EnvironmentSnapshot>) {
        self.copies
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(env.clone(), (snapshot, Instant::now()));
    }

    /// The copy of `env`, when it is younger than the refresh interval and not older than `floor`.
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
                read.elapsed() < self.refresh && snapshot.revision() >= floor
            })
            .map(|(snapshot, _)| Arc::clone(snapshot))
    }

    /// Drops the copy of `env` (a write through this instance changed it).
    pub(super) fn drop_copy(&self, env: &Environment) {
        let mut copies = self.copies.write().unwrap_or_else(PoisonError::into_inner);
        copies.remove(env);
    }

    /// Drops every copy (the cache is back and holds the truth again).
    pub(super) fn clear(&self) {
        self.copies
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
