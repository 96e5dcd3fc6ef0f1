//! Last-known-good: per environment, the newest snapshot the service served, with when the stores
//! last confirmed it current. When the cache cannot answer and the repository fails, the service
//! answers from it (evaluations say `CACHED`) for as long as the confirmation is younger than the
//! configured bound; past the bound, or with a zero bound, the failure is the answer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::archive::{Archive, Restored};
use crate::fnv::FnvBuildHasher;
use crate::names::Environment;
use crate::snapshot::{EnvironmentSnapshot, Revision};

/// How long a confirmation counts before a read of the same revision refreshes it: reads at
/// tens of thousands per second then take the write lock about once a second per environment.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// After the repository failed with an outage (a timeout, unreachable) for an environment, how
/// long reads of that environment that can be answered from last-known-good skip it; then one
/// read probes it again while the others keep being answered at once. A repository that is down
/// often fails only after its connect timeout, which no read should wait for twice. Other
/// environments are not rested (one environment's failure must not hide another's data), and a
/// refusal or unreadable data never rests anything.
const REPOSITORY_REST: Duration = Duration::from_secs(1);

/// The last snapshot served per environment.
#[derive(Debug)]
pub(crate) struct LastKnownGood {
    bound: Duration,
    entries: RwLock<HashMap<Environment, Entry, FnvBuildHasher>>,
    /// Environments whose whole snapshot is being fetched to catch up with a single-flag read.
    catching_up: Mutex<HashSet<Environment>>,
    /// Per environment, until when reads with a fallback skip the repository after an outage.
    resting_until: Mutex<HashMap<Environment, Instant>>,
    /// Where the snapshots are also written, when `FLAG_LAST_GOOD_DIR` is set.
    archive: Option<Archive>,
}

#[derive(Debug)]
struct Entry {
    snapshot: Arc<EnvironmentSnapshot>,
    confirmed: Instant,
}

impl LastKnownGood {
    /// Keeps snapshots servable for `bound` after their last confirmation; zero keeps nothing.
    #[cfg(test)]
    pub(crate) fn new(bound: Duration) -> Self {
        Self::archived(bound, None)
    }

    /// Keeps snapshots servable for `bound` after their last confirmation (zero keeps nothing),
    /// also writing each to `archive` when there is one.
    pub(crate) fn archived(bound: Duration, archive: Option<Archive>) -> Self {
        Self {
            bound,
            entries: RwLock::default(),
            catching_up: Mutex::default(),
            resting_until: Mutex::default(),
            archive,
        }
    }

    /// Keeps a snapshot read back from disk, as confirmed when it was written; `false` (and
    /// nothing kept) when it is already older than the bound.
    pub(crate) fn restore(&self, restored: Restored) -> bool {
        let age = SystemTime::now()
            .duration_since(restored.confirmed)
            .unwrap_or(Duration::ZERO);
        let confirmed = match Instant::now().checked_sub(age) {
            Some(confirmed) if self.enabled() && age <= self.bound => confirmed,
            _ => return false,
        };
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let newer_kept = entries
            .get(&restored.environment)
            .is_some_and(|entry| entry.snapshot.revision() >= restored.snapshot.revision());
        if !newer_kept {
            entries.insert(
                restored.environment,
                Entry {
                    snapshot: restored.snapshot,
                    confirmed,
                },
            );
        }
        true
    }

    /// Hands a just-confirmed snapshot to the archive, if there is one.
    fn archive(&self, env: &Environment, snapshot: &Arc<EnvironmentSnapshot>) {
        if let Some(archive) = &self.archive {
            archive.offer(env, snapshot);
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
                self.archive(env, snapshot);
            }
            None => {
                entries.insert(
                    env.clone(),
                    Entry {
                        snapshot: Arc::clone(snapshot),
                        confirmed: Instant::now(),
                    },
                );
                self.archive(env, snapshot);
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
                    self.archive(env, &entry.snapshot);
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

    /// Whether a read of `env` that has a fallback should skip the repository now. When a rest
    /// has just ended, the caller is the one probe: the rest is extended for everyone else
    /// meanwhile.
    fn skip_repository(&self, env: &Environment) -> bool {
        let mut resting = self.resting();
        match resting.get_mut(env) {
            None => false,
            Some(until) if Instant::now() < *until => true,
            Some(until) => {
                *until = Instant::now() + REPOSITORY_REST;
                false
            }
        }
    }

    /// The repository answered for `env`: its reads go to it again.
    pub(crate) fn repository_answered(&self, env: &Environment) {
        let mut resting = self.resting();
        if !resting.is_empty() {
            resting.remove(env);
        }
    }

    /// The repository failed for `env` with an outage: reads of `env` that have a fallback skip
    /// it for a while.
    fn repository_out(&self, env: &Environment) {
        if self.enabled() {
            self.resting()
                .insert(env.clone(), Instant::now() + REPOSITORY_REST);
        }
    }

    fn resting(&self) -> std::sync::MutexGuard<'_, HashMap<Environment, Instant>> {
        self.resting_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Environment, Entry, FnvBuildHasher>> {
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
            && self.last_good.skip_repository(self.env))
        .then(|| Arc::clone(&kept.snapshot))
    }

    /// The repository answered `snapshot`: reads stop resting it, and the snapshot is kept.
    pub(crate) fn answered(&self, snapshot: &Arc<EnvironmentSnapshot>) {
        self.last_good.repository_answered(self.env);
        self.last_good.confirm(self.env, snapshot);
    }

    /// The repository failed (`outage`: timed out or unreachable): after an outage, reads of
    /// this environment that have a fallback rest it for a while; this read gets the kept
    /// snapshot if it is young enough.
    pub(crate) fn failed(self, outage: bool) -> Option<Arc<EnvironmentSnapshot>> {
        if outage {
            self.last_good.repository_out(self.env);
        }
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
        assert!(kept.consult(&env).failed(true).is_none());
        kept.confirm(&env, &snapshot(2));
        kept.confirm(&env, &snapshot(1));
        assert_eq!(
            kept.consult(&env).failed(true).unwrap().revision(),
            Revision(2)
        );
        assert!(kept.confirm_revision(&env, Revision(2)));
        assert!(!kept.confirm_revision(&env, Revision(3)));
        assert!(kept.can_serve());
        std::thread::sleep(Duration::from_millis(350));
        assert!(kept.consult(&env).failed(true).is_none(), "past the bound");
        assert!(!kept.can_serve());
    }

    #[test]
    fn an_outage_rests_its_environment_only_and_a_refusal_rests_nothing() {
        let (a, b) = (
            Environment::parse("a").unwrap(),
            Environment::parse("b").unwrap(),
        );
        let kept = LastKnownGood::new(Duration::from_secs(60));
        kept.confirm(&a, &snapshot(1));
        kept.confirm(&b, &snapshot(1));
        // A refusal or unreadable data (not an outage) rests nothing.
        assert!(kept.consult(&a).failed(false).is_some());
        assert!(kept.consult(&a).resting_answer(Revision(0)).is_none());
        // An outage of `a` rests `a` only.
        assert!(kept.consult(&a).failed(true).is_some());
        assert!(kept.consult(&a).resting_answer(Revision(0)).is_some());
        assert!(kept.consult(&b).resting_answer(Revision(0)).is_none());
        // A write's answer for `a` ends its rest.
        kept.repository_answered(&a);
        assert!(kept.consult(&a).resting_answer(Revision(0)).is_none());
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let env = Environment::parse("production").unwrap();
        let kept = LastKnownGood::new(Duration::ZERO);
        kept.confirm(&env, &snapshot(1));
        assert!(kept.consult(&env).failed(true).is_none());
        assert!(!kept.can_serve());
    }
}
