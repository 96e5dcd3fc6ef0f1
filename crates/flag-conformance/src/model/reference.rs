//! The reference model: what each environment may hold, given every answer seen so far, and the
//! judgement of each new answer against it.
//!
//! Each environment holds the last stored snapshot with the window of its `set` and its TTL, and
//! the revision its tombstone remembers. Where real time makes the answer uncertain (a read or a
//! set within the TTL slack of an expiry), the model accepts either answer and then learns from
//! it: a miss there means the entry has expired.

use std::sync::Arc;
use std::time::Duration;

use flag_core::{EnvironmentSnapshot, FlagLookup, SetOutcome};

use super::{ENVIRONMENTS, KEYS};
use crate::cache::{Expectation, Window};

/// The last stored snapshot of an environment, with when it was set and for how long.
#[derive(Debug, Clone)]
struct Entry {
    snapshot: Arc<EnvironmentSnapshot>,
    set: Window,
    ttl: Duration,
}

impl Entry {
    /// What a read during `read` must answer of this entry.
    fn judge(&self, slack: Duration, read: Window) -> Expectation {
        Expectation::judge(self.set, self.ttl, slack, read)
    }
}

/// What the model knows of one environment.
#[derive(Debug, Clone, Default)]
struct EnvModel {
    entry: Option<Entry>,
    /// A revision an invalidation certainly left remembered.
    tombstone_certain: u64,
    /// The highest revision an invalidation may have left remembered.
    tombstone_maybe: u64,
}

impl EnvModel {
    /// The entry's revision if it was certainly alive during `window`, and if possibly alive.
    fn entry_revisions(&self, window: Window, slack: Duration) -> (u64, u64) {
        match &self.entry {
            None => (0, 0),
            Some(entry) => {
                let certain = entry.set.started + entry.ttl > window.ended + slack;
                let possible = window.started <= entry.set.ended + entry.ttl + slack;
                let revision = entry.snapshot.revision().get();
                (
                    if certain { revision } else { 0 },
                    if possible { revision } else { 0 },
                )
            }
        }
    }
}

/// The model of every environment of [`ENVIRONMENTS`]; each `check_*` judges one answer and
/// learns from it, or says what is wrong with it.
#[derive(Debug)]
pub(super) struct Reference {
    environments: Vec<EnvModel>,
    slack: Duration,
}

impl Reference {
    /// Nothing cached anywhere, with the adapter's TTL slack.
    pub(super) fn new(slack: Duration) -> Self {
        Self {
            environments: vec![EnvModel::default(); ENVIRONMENTS.len()],
            slack,
        }
    }

    /// `get(env)` answered `got` during `read`.
    pub(super) fn check_get(
        &mut self,
        env: usize,
        got: Option<Arc<EnvironmentSnapshot>>,
        read: Window,
    ) -> Result<(), String> {
        let slack = self.slack;
        let state = &mut self.environments[env];
        let expected = state
            .entry
            .as_ref()
            .map(|entry| (entry.judge(slack, read), &entry.snapshot));
        match (expected, got) {
            (None | Some((Expectation::Miss | Expectation::Either, _)), None) => {
                state.entry = None;
                Ok(())
            }
            (Some((Expectation::Hit | Expectation::Either, want)), Some(got)) if *got == **want => {
                Ok(())
            }
            (None | Some((Expectation::Miss, _)), Some(got)) => Err(format!(
                "hit revision {} where the model has nothing live",
                got.revision()
            )),
            (Some((_, want)), Some(got)) => Err(format!(
                "returned revision {} with {} flags, model has revision {} with {} flags",
                got.revision(),
                got.len(),
                want.revision(),
                want.len()
            )),
            (Some((Expectation::Hit, want)), None) => Err(format!(
                "missed; the model has revision {} live",
                want.revision()
            )),
        }
    }

    /// `get_with_ttl(env)` answered `got` during `read`: what `get` would, and a remaining time
    /// that ends no later than the entry does.
    pub(super) fn check_get_with_ttl(
        &mut self,
        env: usize,
        got: Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>,
        read: Window,
    ) -> Result<(), String> {
        let remaining = got.as_ref().and_then(|(_, remaining)| *remaining);
        if let (Some(remaining), Some(entry)) = (remaining, &self.environments[env].entry) {
            let reported_end = read.started + remaining;
            let latest_end = entry.set.ended + entry.ttl + self.slack;
            if reported_end > latest_end {
                return Err(format!(
                    "reported {remaining:?} left, {:?} past the entry's TTL of {:?}",
                    reported_end - latest_end,
                    entry.ttl
                ));
            }
        }
        self.check_get(env, got.map(|(snapshot, _)| snapshot), read)
    }

    /// `get_flag(env, key)` answered `got` during `read`.
    pub(super) fn check_get_flag(
        &mut self,
        env: usize,
        key: usize,
        got: FlagLookup,
        read: Window,
    ) -> Result<(), String> {
        let slack = self.slack;
        let state = &mut self.environments[env];
        let expectation = state
            .entry
            .as_ref()
            .map_or(Expectation::Miss, |entry| entry.judge(slack, read));
        let live = state
            .entry
            .as_ref()
            .map(|entry| entry.snapshot.lookup(KEYS[key]));
        match (expectation, got) {
            (Expectation::Miss | Expectation::Either, FlagLookup::Miss) => {
                state.entry = None;
                Ok(())
            }
            (Expectation::Hit, FlagLookup::Miss) => {
                Err("missed; the model has the environment live".into())
            }
            (Expectation::Miss, other) => Err(format!(
                "answered {other:?} where the model has nothing live"
            )),
            (_, other) if Some(&other) == live.as_ref() => Ok(()),
            (_, other) => Err(format!("answered {other:?}, model says {live:?}")),
        }
    }

    /// `set(env, snapshot, ttl)` answered `outcome` during `window`.
    pub(super) fn check_set(
        &mut self,
        env: usize,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
        outcome: SetOutcome,
        window: Window,
    ) -> Result<(), String> {
        let state = &mut self.environments[env];
        let revision = snapshot.revision().get();
        let (alive_certain, alive_maybe) = state.entry_revisions(window, self.slack);
        let must_be_stale = revision < state.tombstone_certain.max(alive_certain);
        let must_store = revision >= state.tombstone_maybe.max(alive_maybe);
        match outcome {
            SetOutcome::Stored if must_be_stale => Err(format!(
                "stored over a newer revision (tombstone r{}, live r{alive_certain})",
                state.tombstone_certain
            )),
            SetOutcome::Stale if must_store => Err(format!(
                "answered Stale though nothing newer is known (tombstone r{}, live r{alive_maybe})",
                state.tombstone_maybe
            )),
            SetOutcome::Stored => {
                *state = EnvModel {
                    entry: Some(Entry {
                        snapshot,
                        set: window,
                        ttl,
                    }),
                    tombstone_certain: 0,
                    tombstone_maybe: 0,
                };
                Ok(())
            }
            SetOutcome::Stale => Ok(()),
        }
    }

    /// `invalidate(env, revision)` returned during `window`.
    pub(super) fn invalidated(&mut self, env: usize, revision: u64, window: Window) {
        let state = &mut self.environments[env];
        let (alive_certain, alive_maybe) = state.entry_revisions(window, self.slack);
        state.tombstone_certain = state.tombstone_certain.max(revision).max(alive_certain);
        state.tombstone_maybe = state.tombstone_maybe.max(revision).max(alive_maybe);
        state.entry = None;
    }
}
