//! Last-known-good: per environment, the newest snapshot the service served, with when the stores
//! last confirmed it current. When the cache cannot answer and the repository fails, the service
//! answers from it (evaluations say `CACHED`) for as long as the confirmation is younger than the
//! configured bound; past the bound, or with a zero bound, the failure is the answer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::names::Environment;
use crate::snapshot::{EnvironmentSnapshot, Revision};

/// How long a confirmation counts before a read of the same revision refreshes it: reads at
/// tens of thousands per second then take the write lock about once a second per environment.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// After the repository failed, how long reads that can be answered from last-known-good skip
/// it; then one read probes it again while the others keep being answered at once. A repository
/// that is down often fails only after its connect timeout, which no read should wait for twice.
const REPOSITORY_REST: Duration = Duration::from_secs(1);

/// The last snapshot served per environment.
#[derive(Debug)]
pub(crate) struct LastKnownGood {
    bound: Duration,
    entries: RwLock<HashMap<Environment, Entry>>,
    /// Environments whose whole snapshot is being fetched to catch up with a single-flag read.
    catching_up: Mutex<HashSet<Environment>>,
    /// Until when reads with a fallback skip the repository, after it failed.
    repository_resting_until: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct Entry {
    snapshot: Arc<EnvironmentSnapshot>,
    confirmed: Instant,
}

impl LastKnownGood {
    /// Keeps snapshots servable for `bound` after their last confirmation; zero keeps nothing.
    pub(crate) fn new(bound: Duration) -> Self {
        Self {
            bound,
            entries: RwLock::default(),
            catching_up: Mutex::default(),
            repository_resting_until: Mutex::default(),
        }
    }

    fn enabled(&self) -> bool {
        !self.bound.is_zero()
    }

    /// Records that the stores just answered `snapshot` for `env`.
    pub(crate) fn confirm(&self, env: &Environment, snapshot: &Arc<EnvironmentSnapshot>) {
        if !self.enabled() {
            return;
        }
        let fresh = |entry: &Entry| {
            entry.snapshot.revision() == snapshot.revision()
                && entry.confirmed.elapsed() < REFRESH_EVERY
        };
        if self.read().get(env).is_some_and(fresh) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(env) {
            // A slow reader must not replace a newer snapshot with the older one it got.
            Some(entry) if entry.snapshot.revision() > snapshot.revision() => {}
            Some(entry) => {
                entry.snapshot = Arc::clone(snapshot);
                entry.confirmed = Instant::now();
            }
            None => {
                entries.insert(
                    env.clone(),
                    Entry {
                        snapshot: Arc::clone(snapshot),
                        confirmed: Instant::now(),
                    },
                );
            }
        }
    }

    /// Records that the stores just answered `revision` for `env` (a single-flag read). Answers
    /// `false` when the kept snapshot is older than that (or missing), so the caller should fetch
    /// it whole; a kept snapshot newer than a lagging cache has nothing to catch up.
    pub(crate) fn confirm_revision(&self, env: &Environment, revision: Revision) -> bool {
        if !self.enabled() {
            return true;
        }
        let state = self.read().get(env).map(|entry| {
            (
                entry.snapshot.revision(),
                entry.confirmed.elapsed() < REFRESH_EVERY,
            )
        });
        match state {
            Some((kept, true)) if kept >= revision => true,
            Some((kept, false)) if kept > revision => true,
            Some((kept, false)) if kept == revision => {
                let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = entries.get_mut(env) {
                    entry.confirmed = Instant::now();
                }
                true
            }
            _ => false,
        }
    }

    /// What a read that goes to the repository needs of last-known-good for `env`, looked up
    /// once: whether to answer at once while the repository rests, what to answer if it fails,
    /// and where to record what it answered.
    pub(crate) fn consult<'a>(&'a self, env: &'a Environment) -> Consulted<'a> {
        let kept = if self.enabled() {
            self.read().get(env).map(|entry| Kept {
                snapshot: Arc::clone(&entry.snapshot),
                confirmed: entry.confirmed,
            })
        } else {
            None
        };
        Consulted {
            last_good: self,
            env,
            kept,
        }
    }

    /// Whether a snapshot confirmed at `confirmed` may still be served.
    fn servable(&self, confirmed: Instant) -> bool {
        confirmed.elapsed() <= self.bound
    }

    /// Whether a read that has a fallback should skip the repository now. When a rest has just
    /// ended, the caller is the one probe: the rest is extended for everyone else meanwhile.
    fn skip_repository(&self) -> bool {
        let mut resting = self
            .repository_resting_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *resting {
            None => false,
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *resting = Some(Instant::now() + REPOSITORY_REST);
                false
            }
        }
    }

    /// The repository answered: reads go to it again.
    pub(crate) fn repository_answered(&self) {
        let mut resting = self
            .repository_resting_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if resting.is_some() {
            *resting = None;
        }
    }

    /// The repository failed: reads that have a fallback skip it for a while.
    fn repository_failed(&self) {
        if self.enabled() {
            *self
                .repository_resting_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + REPOSITORY_REST);
        }
    }

    /// Whether any environment could be served from here now.
    pub(crate) fn can_serve(&self) -> bool {
        self.enabled()
            && self
                .read()
                .values()
                .any(|entry| self.servable(entry.confirmed))
    }

    /// Claims the catch-up fetch of `env`; `false` when one is already running.
    pub(crate) fn start_catch_up(&self, env: &Environment) -> bool {
        self.catching_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(env.clone())
    }

    /// Releases the catch-up fetch of `env`.
    pub(crate) fn end_catch_up(&self, env: &Environment) {
        self.catching_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(env);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Environment, Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A kept snapshot and when the stores last confirmed it.
#[derive(Debug)]
struct Kept {
    snapshot: Arc<EnvironmentSnapshot>,
    confirmed: Instant,
}

/// Last-known-good as one read that goes to the repository sees it.
#[derive(Debug)]
pub(crate) struct Consulted<'a> {
    last_good: &'a LastKnownGood,
    env: &'a Environment,
    kept: Option<Kept>,
}

impl Consulted<'_> {
    /// The snapshot to answer at once, without asking the repository, while the repository rests
    /// after a failure; never one older than `floor` (a write this server made, which proved the
    /// repository back anyway).
    pub(crate) fn resting_answer(&self, floor: Revision) -> Option<Arc<EnvironmentSnapshot>> {
        let kept = self.kept.as_ref()?;
        (kept.snapshot.revision() >= floor
            && self.last_good.servable(kept.confirmed)
            && self.last_good.skip_repository())
        .then(|| Arc::clone(&kept.snapshot))
    }

    /// The repository answered `snapshot`: reads stop resting it, and the snapshot is kept.
    pub(crate) fn answered(&self, snapshot: &Arc<EnvironmentSnapshot>) {
        self.last_good.repository_answered();
        self.last_good.confirm(self.env, snapshot);
    }

    /// The repository failed: reads that have a fallback rest it for a while, and this one gets
    /// the kept snapshot if it is young enough.
    pub(crate) fn failed(self) -> Option<Arc<EnvironmentSnapshot>> {
        self.last_good.repository_failed();
        let kept = self.kept?;
        self.last_good
            .servable(kept.confirmed)
            .then_some(kept.snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(revision: u64) -> Arc<EnvironmentSnapshot> {
        Arc::new(EnvironmentSnapshot::from_shared(Revision(revision), Vec::new()).unwrap())
    }

    #[test]
    fn keeps_the_newest_revision_and_forgets_past_the_bound() {
        let env = Environment::parse("production").unwrap();
        let kept = LastKnownGood::new(Duration::from_millis(300));
        assert!(kept.consult(&env).failed().is_none());
        kept.confirm(&env, &snapshot(2));
        kept.confirm(&env, &snapshot(1));
        assert_eq!(kept.consult(&env).failed().unwrap().revision(), Revision(2));
        assert!(kept.confirm_revision(&env, Revision(2)));
        assert!(!kept.confirm_revision(&env, Revision(3)));
        assert!(kept.can_serve());
        std::thread::sleep(Duration::from_millis(350));
        assert!(kept.consult(&env).failed().is_none(), "past the bound");
        assert!(!kept.can_serve());
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let env = Environment::parse("production").unwrap();
        let kept = LastKnownGood::new(Duration::ZERO);
        kept.confirm(&env, &snapshot(1));
        assert!(kept.consult(&env).failed().is_none());
        assert!(!kept.can_serve());
    }
}
