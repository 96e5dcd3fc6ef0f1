//! Properties of the invalidation bus contract, one function per rule of `InvalidationBus`.
//!
//! A bus is tested on a [`BusMedium`]: what every server instance shares (one Redis, one
//! process), on which each property opens the buses it needs, as server instances would, and
//! which it can interrupt, as a restarted server or a killed connection does. Every property gets
//! a medium of its own. Waiting for something asynchronous is bounded by the bus's declared
//! [`BusCapabilities::patience`] (a bound on a hang on a loaded machine, not a latency target).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flag_core::{BusEvent, Environment, InvalidationBus, Revision, async_trait};
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::Violation;
use crate::cache::env;

/// A bus under test, shared as the tiered cache holds it.
pub type SharedBus = Arc<dyn InvalidationBus>;

/// How long the suite listens for a delivery that must not come (a duplicate, a message beyond
/// the watch limit).
const QUIET: Duration = Duration::from_millis(200);

/// What the buses of one deployment share, and on which the suite opens them.
#[async_trait]
pub trait BusMedium: Send + Sync {
    /// A new bus on the medium, as another server instance would open it (starting to subscribe
    /// in the background).
    async fn open(&self) -> SharedBus;

    /// Breaks every subscription on the medium, as a restarted server or a killed connection
    /// does; the buses must notice and come back by themselves.
    async fn interrupt(&self) -> Result<(), String>;
}

/// A medium under test.
pub type SharedMedium = Arc<dyn BusMedium>;

/// What a bus declares about itself; the suite adjusts its expectations, never its coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusCapabilities {
    /// How many environments the bus watches at most, for a bus that subscribes per environment
    /// (sharded pub/sub); `None` for a bus whose one subscription covers every environment.
    pub max_watched: Option<usize>,
    /// How long it may take to connect, deliver or come back after an interruption, on a loaded
    /// machine; past it the suite calls the event lost.
    pub patience: Duration,
}

impl Default for BusCapabilities {
    fn default() -> Self {
        Self {
            max_watched: None,
            patience: Duration::from_secs(10),
        }
    }
}

/// Polls `condition` until it holds, for at most `patience`.
async fn eventually(
    (property, patience): Judge,
    what: &str,
    condition: impl Fn() -> bool,
) -> Result<(), Violation> {
    let deadline = Instant::now() + patience;
    while !condition() {
        if Instant::now() > deadline {
            return Err(Violation::new(
                property,
                format!("{what} did not happen within {patience:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Which property is judging, and how long it waits for anything asynchronous.
type Judge = (&'static str, Duration);

/// Opens `count` buses on `medium` and waits until every one is live.
async fn open_live(
    judge: Judge,
    medium: &dyn BusMedium,
    count: usize,
) -> Result<Vec<SharedBus>, Violation> {
    let mut buses = Vec::with_capacity(count);
    for _ in 0..count {
        buses.push(medium.open().await);
    }
    for (index, bus) in buses.iter().enumerate() {
        eventually(judge, &format!("bus {index} going live"), || bus.is_live()).await?;
    }
    Ok(buses)
}

/// Asks `bus` to watch `env` and waits until it does.
async fn watching(judge: Judge, bus: &SharedBus, env: &Environment) -> Result<(), Violation> {
    bus.watch(env);
    eventually(judge, &format!("watching {env}"), || bus.is_watching(env)).await
}

async fn publish(
    property: &'static str,
    bus: &SharedBus,
    env: &Environment,
    revision: u64,
) -> Result<(), Violation> {
    bus.publish(env, Revision(revision))
        .await
        .map_err(|error| Violation::new(property, format!("publish of {env} failed: {error}")))
}

/// The next event of `events` that `keep` accepts, within `patience`.
async fn next_event(
    (property, patience): Judge,
    what: &str,
    events: &mut broadcast::Receiver<BusEvent>,
    keep: impl Fn(&BusEvent) -> bool,
) -> Result<BusEvent, Violation> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                return Err(Violation::new(
                    property,
                    format!("{what} did not arrive within {patience:?}"),
                ));
            }
            Ok(Err(error)) => {
                return Err(Violation::new(
                    property,
                    format!("waiting for {what}, the receiver failed: {error}"),
                ));
            }
            Ok(Ok(event)) if keep(&event) => return Ok(event),
            Ok(Ok(_)) => {}
        }
    }
}

/// Expects the next invalidation of `env` on `events` to be exactly `revision`.
async fn expect_invalidation(
    judge: Judge,
    receiver: &str,
    events: &mut broadcast::Receiver<BusEvent>,
    env: &Environment,
    revision: u64,
) -> Result<(), Violation> {
    let what = format!("the invalidation of {env} at r{revision} on {receiver}");
    let event = next_event(
        judge,
        &what,
        events,
        |event| matches!(event, BusEvent::Invalidated { environment, .. } if environment == env),
    )
    .await?;
    let want = BusEvent::Invalidated {
        environment: env.clone(),
        revision: Revision(revision),
    };
    if event == want {
        Ok(())
    } else {
        Err(Violation::new(
            judge.0,
            format!("{receiver} got {event:?} where {want:?} was due"),
        ))
    }
}

/// Fails when `events` receives any invalidation of `env` within [`QUIET`].
async fn expect_quiet(
    property: &'static str,
    receiver: &str,
    events: &mut broadcast::Receiver<BusEvent>,
    env: &Environment,
) -> Result<(), Violation> {
    tokio::time::sleep(QUIET).await;
    loop {
        match events.try_recv() {
            Ok(BusEvent::Invalidated {
                environment,
                revision,
            }) if environment == *env => {
                return Err(Violation::new(
                    property,
                    format!("{receiver} got an extra invalidation of {env} at r{revision}"),
                ));
            }
            Ok(_) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(()),
            Err(TryRecvError::Lagged(missed)) => {
                return Err(Violation::new(
                    property,
                    format!("{receiver} lagged by {missed} events on a quiet bus"),
                ));
            }
        }
    }
}

/// Rule 1: one publish through any bus reaches every receiver of every bus on the medium, the
/// publisher's own included, exactly once.
pub async fn publish_reaches_every_subscriber(
    medium: &dyn BusMedium,
    capabilities: BusCapabilities,
) -> Result<(), Violation> {
    const P: &str = "publish_reaches_every_subscriber";
    let judge: Judge = (P, capabilities.patience);
    let buses = open_live(judge, medium, 2).await?;
    let env = env("fan-out");
    for bus in &buses {
        watching(judge, bus, &env).await?;
    }
    let mut receivers = [
        ("bus 0's first receiver", buses[0].subscribe()),
        ("bus 0's second receiver", buses[0].subscribe()),
        ("bus 1's receiver", buses[1].subscribe()),
    ];
    for (revision, publisher) in [(7, 0), (8, 1), (9, 0)] {
        publish(P, &buses[publisher], &env, revision).await?;
        for (name, events) in &mut receivers {
            expect_invalidation(judge, name, events, &env, revision).await?;
        }
    }
    for (name, events) in &mut receivers {
        expect_quiet(P, name, events, &env).await?;
    }
    Ok(())
}

/// Rule 2: an interrupted subscription is reported `Lost`, comes back by itself, is reported
/// `Restored` only once it watches again, and carries publishes after that.
pub async fn a_loss_is_followed_by_a_restore(
    medium: &dyn BusMedium,
    capabilities: BusCapabilities,
) -> Result<(), Violation> {
    const P: &str = "a_loss_is_followed_by_a_restore";
    let judge: Judge = (P, capabilities.patience);
    let buses = open_live(judge, medium, 2).await?;
    let (publisher, subscriber) = (&buses[0], &buses[1]);
    let env = env("interrupted");
    watching(judge, subscriber, &env).await?;
    watching(judge, publisher, &env).await?;
    let mut events = subscriber.subscribe();
    medium
        .interrupt()
        .await
        .map_err(|error| Violation::new(P, format!("interrupting the medium failed: {error}")))?;
    next_event(judge, "Lost after the interruption", &mut events, |event| {
        *event == BusEvent::Lost
    })
    .await?;
    next_event(judge, "Restored after Lost", &mut events, |event| {
        *event == BusEvent::Restored
    })
    .await?;
    if !subscriber.is_live() || !subscriber.is_watching(&env) {
        return Err(Violation::new(
            P,
            format!(
                "Restored arrived while the bus was not back (live {}, watching {env} {})",
                subscriber.is_live(),
                subscriber.is_watching(&env)
            ),
        ));
    }
    eventually(judge, "the publisher coming back", || {
        publisher.is_watching(&env)
    })
    .await?;
    publish(P, publisher, &env, 5).await?;
    expect_invalidation(judge, "the restored subscriber", &mut events, &env, 5).await
}

/// Rule 3: watching twice is watching once, and a bus that subscribes per environment watches no
/// more than it declares (one whose subscription covers everything watches everything).
pub async fn watch_is_idempotent_and_bounded(
    medium: &dyn BusMedium,
    capabilities: BusCapabilities,
) -> Result<(), Violation> {
    const P: &str = "watch_is_idempotent_and_bounded";
    let judge: Judge = (P, capabilities.patience);
    let buses = open_live(judge, medium, 2).await?;
    let (publisher, subscriber) = (&buses[0], &buses[1]);
    let twice = env("watched-twice");
    watching(judge, subscriber, &twice).await?;
    watching(judge, subscriber, &twice).await?;
    watching(judge, publisher, &twice).await?;
    let mut events = subscriber.subscribe();
    publish(P, publisher, &twice, 3).await?;
    expect_invalidation(judge, "the subscriber", &mut events, &twice, 3).await?;
    expect_quiet(P, "the subscriber", &mut events, &twice).await?;

    let asked = capabilities.max_watched.unwrap_or(63) + 1;
    let many: Vec<Environment> = (0..asked).map(|n| env(&format!("many-{n}"))).collect();
    many.iter()
        .for_each(|environment| subscriber.watch(environment));
    let watched = || {
        many.iter()
            .chain([&twice])
            .filter(|environment| subscriber.is_watching(environment))
            .count()
    };
    match capabilities.max_watched {
        None => {
            eventually(judge, "watching every environment asked for", || {
                watched() == asked + 1
            })
            .await
        }
        Some(limit) => {
            // At least the limit gets watched; then, after a while, no more than that.
            eventually(judge, &format!("watching {limit} environments"), || {
                watched() >= limit
            })
            .await?;
            tokio::time::sleep(QUIET).await;
            match watched() {
                count if count == limit => Ok(()),
                count => Err(Violation::new(
                    P,
                    format!("watching {count} environments, over the declared limit of {limit}"),
                )),
            }
        }
    }
}

/// Rule 4: the moment `is_watching` says an environment is watched, its publishes arrive.
pub async fn a_watched_environment_is_delivered(
    medium: &dyn BusMedium,
    capabilities: BusCapabilities,
) -> Result<(), Violation> {
    const P: &str = "a_watched_environment_is_delivered";
    let judge: Judge = (P, capabilities.patience);
    let buses = open_live(judge, medium, 2).await?;
    let (publisher, subscriber) = (&buses[0], &buses[1]);
    let mut events = subscriber.subscribe();
    // Enough environments that, sharded, their channels land on more than one node.
    for (revision, name) in (1..).zip(["production", "staging", "qa", "eu", "us", "dev", "ci"]) {
        let environment = env(name);
        publisher.watch(&environment);
        subscriber.watch(&environment);
        // Publish the very moment the subscriber says it watches: nothing may fall in between.
        let deadline = Instant::now() + capabilities.patience;
        while !subscriber.is_watching(&environment) {
            if Instant::now() > deadline {
                return Err(Violation::new(
                    P,
                    format!(
                        "watching {environment} did not happen within {:?}",
                        capabilities.patience
                    ),
                ));
            }
            tokio::task::yield_now().await;
        }
        publish(P, publisher, &environment, revision).await?;
        expect_invalidation(judge, "the subscriber", &mut events, &environment, revision).await?;
    }
    Ok(())
}

/// Runs every property above, each on a fresh medium from `factory`, and returns every violation
/// found; used to show the suite catches broken buses.
pub async fn check_all<F, Fut>(factory: F, capabilities: BusCapabilities) -> Vec<Violation>
where
    F: Fn() -> Fut,
    Fut: Future<Output = SharedMedium>,
{
    let mut violations = Vec::new();
    macro_rules! check {
        ($($property:ident),* $(,)?) => {$(
            if let Err(violation) = $property(&*factory().await, capabilities).await {
                violations.push(violation);
            }
        )*};
    }
    check!(
        publish_reaches_every_subscriber,
        a_loss_is_followed_by_a_restore,
        watch_is_idempotent_and_bounded,
        a_watched_environment_is_delivered,
    );
    violations
}
