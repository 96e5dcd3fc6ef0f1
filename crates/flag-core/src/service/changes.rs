//! The change feed: the newest revision this instance knows of for each environment that someone
//! follows (the event streams that tell browsers about changes), fed by this instance's writes,
//! by other instances' writes heard on an invalidation bus, and by a revision check of followed
//! environments that no bus covers.
//!
//! Each followed environment has a [`watch`] channel: a follower sees the newest revision, never
//! a queue, so a burst of writes costs a slow follower nothing and the last one is never lost.
//! Channels exist only while someone follows the environment (or since a write announced it to
//! one), so names that do not exist leave nothing behind once their followers are gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tracing::debug;

use super::{FeatureFlagService, Inner, lock};
use crate::bus::{BusEvent, DynInvalidationBus};
use crate::names::Environment;
use crate::snapshot::Revision;

/// How often a client's claim of a revision this instance has not heard of may cost a repository
/// read, per environment.
pub(super) const CLAIM_CHECK_EVERY: Duration = Duration::from_millis(100);

/// The followed environments and their newest known revision.
#[derive(Debug, Default)]
pub(super) struct ChangeFeed {
    followed: Mutex<HashMap<Environment, watch::Sender<Revision>>>,
    /// When a claimed revision last cost a repository read, per environment.
    claims_checked: Mutex<HashMap<Environment, Instant>>,
}

impl ChangeFeed {
    /// Records that `env` is at `revision`: followers hear of it when it is newer than what they
    /// saw.
    pub(super) fn announce(&self, env: &Environment, revision: Revision) {
        if let Some(sender) = lock(&self.followed).get(env) {
            sender.send_if_modified(|known| {
                let newer = revision > *known;
                if newer {
                    *known = revision;
                }
                newer
            });
        }
    }

    /// A receiver of `env`'s newest revision, starting from `current`.
    pub(super) fn follow(&self, env: &Environment, current: Revision) -> watch::Receiver<Revision> {
        let mut followed = lock(&self.followed);
        let sender = followed
            .entry(env.clone())
            .or_insert_with(|| watch::channel(current).0);
        sender.send_if_modified(|known| {
            let newer = current > *known;
            if newer {
                *known = current;
            }
            newer
        });
        let mut receiver = sender.subscribe();
        receiver.mark_unchanged();
        receiver
    }

    /// The newest revision heard for `env`, if it is followed here.
    pub(super) fn heard(&self, env: &Environment) -> Option<Revision> {
        lock(&self.followed).get(env).map(|sender| *sender.borrow())
    }

    /// The environments someone follows now; forgets those nobody follows any more.
    pub(super) fn followed(&self) -> Vec<Environment> {
        let mut followed = lock(&self.followed);
        followed.retain(|_, sender| sender.receiver_count() > 0);
        followed.keys().cloned().collect()
    }

    /// Whether a claimed revision of `env` may cost a repository read now (at most once per
    /// [`CLAIM_CHECK_EVERY`]); takes the turn when it may.
    pub(super) fn may_check_claim(&self, env: &Environment) -> bool {
        let now = Instant::now();
        let mut checked = lock(&self.claims_checked);
        checked.retain(|_, at| now.duration_since(*at) < CLAIM_CHECK_EVERY);
        if checked.contains_key(env) {
            return false;
        }
        checked.insert(env.clone(), now);
        true
    }
}

impl FeatureFlagService {
    /// Follows `env`'s changes: a receiver of the newest revision of it this instance knows,
    /// starting at its current revision (read through the cache). It moves with this instance's
    /// writes and, once [`Self::follow_changes`] runs, with other instances' writes.
    pub async fn watch_changes(
        &self,
        env: &Environment,
    ) -> Result<watch::Receiver<Revision>, super::ServiceError> {
        let current = self.snapshot(env).await?.revision();
        Ok(self.inner.changes.follow(env, current))
    }

    /// Keeps followed environments up to date with other instances' writes until the service is
    /// dropped: from `bus` when there is one (an environment the bus does not watch is asked for
    /// with [`crate::InvalidationBus::watch`] once it exists), and by reading the revision of
    /// each followed environment that no bus covers every `poll` (an environment that does not
    /// exist costs no read). Call it once, inside a Tokio runtime.
    pub fn follow_changes(
        &self,
        bus: Option<Arc<DynInvalidationBus>>,
        poll: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(follow(weak, bus, poll))
    }
}

async fn follow(weak: Weak<Inner>, bus: Option<Arc<DynInvalidationBus>>, poll: Duration) {
    let mut events = bus.as_ref().map(|bus| bus.subscribe());
    let mut ticks = tokio::time::interval(poll.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Whether every followed environment is read again, not only those no bus covers.
        let mut everything = false;
        tokio::select! {
            event = next_event(&mut events) => match event {
                Some(Ok(BusEvent::Invalidated { environment, revision })) => {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.changes.announce(&environment, revision);
                    continue;
                }
                Some(Ok(BusEvent::Lost)) => continue,
                // What was published while the subscription was down, or past what this receiver
                // kept, is gone: read every followed environment again.
                Some(Ok(BusEvent::Restored) | Err(broadcast::error::RecvError::Lagged(_))) => {
                    everything = true;
                }
                Some(Err(broadcast::error::RecvError::Closed)) | None => {
                    events = None;
                    continue;
                }
            },
            _ = ticks.tick() => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        let service = FeatureFlagService { inner };
        service.check_followed(bus.as_deref(), everything).await;
    }
}

/// The next bus event, or never when there is no bus.
async fn next_event(
    events: &mut Option<broadcast::Receiver<BusEvent>>,
) -> Option<Result<BusEvent, broadcast::error::RecvError>> {
    match events {
        Some(events) => Some(events.recv().await),
        None => std::future::pending().await,
    }
}

impl FeatureFlagService {
    /// Reads the revision of every followed environment that exists and that `bus` does not
    /// cover (all of them when `everything`), announcing what changed.
    async fn check_followed(&self, bus: Option<&DynInvalidationBus>, everything: bool) {
        let inner = &self.inner;
        for env in inner.changes.followed() {
            if !matches!(self.exists(&env).await, Ok(true)) {
                continue;
            }
            if let Some(bus) = bus {
                if !bus.is_watching(&env) {
                    bus.watch(&env);
                } else if !everything {
                    continue;
                }
            }
            inner.counters.repository_reads.increment();
            match inner.repository.revision(&env).await {
                Ok(revision) => inner.changes.announce(&env, revision),
                Err(error) => {
                    debug!(%env, %error, "checking a followed environment's revision failed")
                }
            }
        }
    }

    /// Makes sure reads of `env` are at least at `claimed`, a revision a client heard of (from an
    /// event stream, possibly another instance's; `None`: a change of unknown revision): a claim
    /// this instance has heard of raises its read floor; any other is checked against the
    /// repository (a check shared by concurrent claimers, of one read or two, at most once per
    /// [`CLAIM_CHECK_EVERY`] per environment), whose answer becomes the floor, so a claim that
    /// is not true costs little and changes nothing.
    pub(super) async fn catch_up_to(&self, env: &Environment, claimed: Option<Revision>) {
        let inner = &self.inner;
        if let Some(claimed) = claimed {
            if claimed <= inner.floor(env) {
                return;
            }
            if inner
                .changes
                .heard(env)
                .is_some_and(|heard| claimed <= heard)
            {
                inner.raise_floor(env, claimed);
                return;
            }
        }
        let claimed = claimed.unwrap_or(Revision(0));
        if !matches!(self.exists(env).await, Ok(true)) || !inner.changes.may_check_claim(env) {
            return;
        }
        // A read that was already in flight may have begun before the claimed change: then one
        // more, begun after it.
        for _ in 0..2 {
            match inner.flights.share(env, || inner.fetch(env, true)).await {
                Ok(snapshot) => {
                    inner.raise_floor(env, snapshot.revision());
                    inner.changes.announce(env, snapshot.revision());
                    if snapshot.revision() >= claimed {
                        return;
                    }
                }
                Err(error) => {
                    debug!(%env, %error, "checking a claimed revision failed");
                    return;
                }
            }
        }
    }
}
