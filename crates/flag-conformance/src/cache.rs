//! Example-based properties of the cache contract, one function per rule.
//!
//! Time is judged by instants measured around each call, never by how long a sleep was meant to
//! last: a read that *ended* before `set_started + ttl - slack` must hit, a read that *began*
//! after `set_ended + ttl + slack` must miss, and any read in between may answer either way (but
//! a hit must still be the exact snapshot). That keeps the suite exact on a fast machine and free
//! of flakes on a loaded one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flag_core::{
    CacheError, Environment, EnvironmentSnapshot, FlagKey, FlagLookup, Revision, SetOutcome,
};
use serde_json::json;

use crate::sample::{flag_with_value, generation_of, generation_snapshot};
use crate::{CacheCapabilities, SharedCache, Violation};

/// The TTL used by properties that are not about expiry.
const LONG_TTL: Duration = Duration::from_secs(60);

/// When a call started and ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Just before the call.
    pub started: Instant,
    /// Just after it returned.
    pub ended: Instant,
}

/// What a read at some moment must answer, given when the entry was set and its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// The read ended before `set_started + ttl - slack`.
    Hit,
    /// The read began after `set_ended + ttl + slack`.
    Miss,
    /// Too close to the expiry to tell.
    Either,
}

impl Expectation {
    /// Judges a read window against a set window.
    pub fn judge(set: Window, ttl: Duration, slack: Duration, read: Window) -> Self {
        if read.ended + slack < set.started + ttl {
            Expectation::Hit
        } else if read.started > set.ended + ttl + slack {
            Expectation::Miss
        } else {
            Expectation::Either
        }
    }
}

/// Runs `call` and measures its window.
pub async fn timed<T>(call: impl Future<Output = T>) -> (T, Window) {
    let started = Instant::now();
    let value = call.await;
    (
        value,
        Window {
            started,
            ended: Instant::now(),
        },
    )
}

pub(crate) fn env(name: &str) -> Environment {
    Environment::parse(name).unwrap_or_else(|error| panic!("suite environment {name:?}: {error}"))
}

pub(crate) fn key(name: &str) -> FlagKey {
    FlagKey::parse(name).unwrap_or_else(|error| panic!("suite key {name:?}: {error}"))
}

fn fault(property: &'static str, operation: &str, error: CacheError) -> Violation {
    Violation::new(property, format!("{operation} failed: {error}"))
}

async fn set(
    property: &'static str,
    cache: &SharedCache,
    env: &Environment,
    snapshot: EnvironmentSnapshot,
    ttl: Duration,
) -> Result<SetOutcome, Violation> {
    cache
        .set(env, Arc::new(snapshot), ttl)
        .await
        .map_err(|error| fault(property, "set", error))
}

async fn get(
    property: &'static str,
    cache: &SharedCache,
    env: &Environment,
) -> Result<Option<Arc<EnvironmentSnapshot>>, Violation> {
    cache
        .get(env)
        .await
        .map_err(|error| fault(property, "get", error))
}

async fn invalidate(
    property: &'static str,
    cache: &SharedCache,
    env: &Environment,
    revision: u64,
) -> Result<(), Violation> {
    cache
        .invalidate(env, Revision(revision))
        .await
        .map_err(|error| fault(property, "invalidate", error))
}

fn expect_outcome(
    property: &'static str,
    what: &str,
    got: SetOutcome,
    want: SetOutcome,
) -> Result<(), Violation> {
    if got == want {
        Ok(())
    } else {
        Err(Violation::new(
            property,
            format!("{what}: answered {got:?}, expected {want:?}"),
        ))
    }
}

fn expect_snapshot(
    property: &'static str,
    what: &str,
    got: Option<Arc<EnvironmentSnapshot>>,
    want: Option<&EnvironmentSnapshot>,
) -> Result<(), Violation> {
    match (got.as_deref(), want) {
        (None, None) => Ok(()),
        (Some(got), Some(want)) if got == want => Ok(()),
        (got, want) => Err(Violation::new(
            property,
            format!("{what}: got {}, expected {}", describe(got), describe(want)),
        )),
    }
}

fn describe(snapshot: Option<&EnvironmentSnapshot>) -> String {
    match snapshot {
        None => "a miss".to_owned(),
        Some(snapshot) => format!(
            "revision {} with {} flags (generation {:?})",
            snapshot.revision(),
            snapshot.len(),
            generation_of(snapshot)
        ),
    }
}

/// Rule 1: a read before `ttl - slack` hits, a read after `ttl + slack` misses, for `get` and
/// `get_flag` alike.
pub async fn ttl_is_honoured(
    cache: &SharedCache,
    capabilities: CacheCapabilities,
    ttl: Duration,
) -> Result<(), Violation> {
    const P: &str = "ttl_is_honoured";
    let slack = capabilities.ttl_slack;
    let env = env("ttl-probe");
    let probe = key("flag-00000");
    let snapshot = generation_snapshot(1, 3, 7);
    let (outcome, set_window) = timed(cache.set(&env, Arc::new(snapshot.clone()), ttl)).await;
    let outcome = outcome.map_err(|error| fault(P, "set", error))?;
    expect_outcome(P, "set on an empty cache", outcome, SetOutcome::Stored)?;

    let last_read = set_window.ended + ttl + slack + Duration::from_millis(25);
    let poll = (ttl / 20).clamp(Duration::from_micros(200), Duration::from_millis(20));
    let mut misses_judged = 0;
    for round in 0u64.. {
        let (hit, read) = if round % 2 == 0 {
            let (got, read) = timed(cache.get(&env)).await;
            let got = got.map_err(|error| fault(P, "get", error))?;
            if let Some(got) = &got
                && **got != snapshot
            {
                return Err(Violation::new(
                    P,
                    format!("get returned {}", describe(Some(got))),
                ));
            }
            (got.is_some(), read)
        } else {
            let (got, read) = timed(cache.get_flag(&env, &probe)).await;
            match got.map_err(|error| fault(P, "get_flag", error))? {
                FlagLookup::Hit { flag, revision } => {
                    if Some(&flag) != snapshot.flag(probe.as_str())
                        || revision != snapshot.revision()
                    {
                        return Err(Violation::new(
                            P,
                            "get_flag returned another flag or revision",
                        ));
                    }
                    (true, read)
                }
                FlagLookup::Absent { .. } => {
                    return Err(Violation::new(
                        P,
                        "get_flag answered Absent for a cached flag",
                    ));
                }
                FlagLookup::Miss => (false, read),
            }
        };
        let since_set = read.started.saturating_duration_since(set_window.started);
        match (Expectation::judge(set_window, ttl, slack, read), hit) {
            (Expectation::Hit, false) => {
                return Err(Violation::new(
                    P,
                    format!(
                        "read {since_set:?} after a set with TTL {ttl:?} missed (slack {slack:?})"
                    ),
                ));
            }
            (Expectation::Miss, true) => {
                return Err(Violation::new(
                    P,
                    format!(
                        "read {since_set:?} after a set with TTL {ttl:?} still hit (slack {slack:?})"
                    ),
                ));
            }
            (Expectation::Miss, false) => misses_judged += 1,
            _ => {}
        }
        if read.started > last_read && misses_judged > 0 {
            return Ok(());
        }
        tokio::time::sleep(poll).await;
    }
    Ok(())
}

/// Rule 1: a zero TTL is `CacheError::ZeroTtl` and stores nothing.
pub async fn zero_ttl_is_rejected(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "zero_ttl_is_rejected";
    let env = env("zero-ttl");
    match cache
        .set(&env, Arc::new(generation_snapshot(1, 1, 1)), Duration::ZERO)
        .await
    {
        Err(CacheError::ZeroTtl) => {}
        other => {
            return Err(Violation::new(
                P,
                format!("set with a zero TTL answered {other:?}"),
            ));
        }
    }
    expect_snapshot(
        P,
        "get after a refused set",
        get(P, cache, &env).await?,
        None,
    )
}

/// Rule 2: readers running during a stream of sets see whole snapshots only.
pub async fn set_is_atomic(cache: &SharedCache, _: CacheCapabilities) -> Result<(), Violation> {
    const P: &str = "set_is_atomic";
    const FLAGS: usize = 60;
    const GENERATIONS: u64 = 60;
    const MIN_READS: u64 = 4_000;
    let env = env("atomic");
    set(P, cache, &env, generation_snapshot(1, FLAGS, 1), LONG_TTL).await?;

    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let cache = Arc::clone(cache);
        let env = env.clone();
        let done = Arc::clone(&writer_done);
        tokio::spawn(async move {
            let mut result = Ok(());
            for generation in 2..=GENERATIONS {
                let snapshot = generation_snapshot(generation, FLAGS, generation);
                if let Err(violation) = set(P, &cache, &env, snapshot, LONG_TTL).await {
                    result = Err(violation);
                    break;
                }
                tokio::task::yield_now().await;
            }
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let cache = Arc::clone(cache);
            let env = env.clone();
            let writer_done = Arc::clone(&writer_done);
            tokio::spawn(async move {
                let mut reads = 0u64;
                while reads < MIN_READS / 4 || !writer_done.load(Ordering::SeqCst) {
                    let Some(snapshot) = get(P, &cache, &env).await? else {
                        return Err(Violation::new(P, "a cached environment missed during sets"));
                    };
                    reads += 1;
                    // Reads of an in-process cache may never suspend: yield so that the writer
                    // (and other tests) get a worker thread.
                    tokio::task::yield_now().await;
                    match generation_of(&snapshot) {
                        Ok(Some(generation))
                            if snapshot.len() == FLAGS && snapshot.revision() == Revision(generation) => {}
                        mixed => {
                            return Err(Violation::new(
                                P,
                                format!(
                                    "a reader saw a mixed snapshot: revision {}, {} flags, generations {mixed:?}",
                                    snapshot.revision(),
                                    snapshot.len()
                                ),
                            ));
                        }
                    }
                }
                Ok::<u64, Violation>(reads)
            })
        })
        .collect();
    let mut total = 0;
    for reader in readers {
        total += reader
            .await
            .map_err(|error| Violation::new(P, format!("reader task failed: {error}")))??;
    }
    writer
        .await
        .map_err(|error| Violation::new(P, format!("writer task failed: {error}")))??;
    if total < MIN_READS {
        return Err(Violation::new(P, format!("only {total} reads were made")));
    }
    let last = get(P, cache, &env).await?;
    expect_snapshot(
        P,
        "after the last set",
        last,
        Some(&generation_snapshot(GENERATIONS, FLAGS, GENERATIONS)),
    )
}

/// Rule 2: two racing sets leave exactly one of the two snapshots; with different revisions,
/// the newer one.
pub async fn racing_sets_leave_one(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "racing_sets_leave_one";
    for round in 0..40u64 {
        let env = env(&format!("race-{round}"));
        let same_revision = round % 2 == 0;
        let (first, second) = if same_revision {
            (generation_snapshot(5, 20, 1), generation_snapshot(5, 20, 2))
        } else {
            (generation_snapshot(6, 20, 3), generation_snapshot(7, 20, 4))
        };
        let racers: Vec<_> = [first.clone(), second.clone()]
            .into_iter()
            .map(|snapshot| {
                let cache = Arc::clone(cache);
                let env = env.clone();
                tokio::spawn(async move { set(P, &cache, &env, snapshot, LONG_TTL).await })
            })
            .collect();
        for racer in racers {
            racer
                .await
                .map_err(|error| Violation::new(P, format!("set task failed: {error}")))??;
        }
        let left = get(P, cache, &env).await?;
        let ok = match left.as_deref() {
            Some(left) if same_revision => *left == first || *left == second,
            Some(left) => *left == second,
            None => false,
        };
        if !ok {
            return Err(Violation::new(
                P,
                format!(
                    "after racing sets ({}) the cache holds {}",
                    if same_revision {
                        "same revision"
                    } else {
                        "revisions 6 and 7"
                    },
                    describe(left.as_deref())
                ),
            ));
        }
    }
    Ok(())
}

/// Rule 3: an empty environment is cached like any other.
pub async fn empty_environment_is_cacheable(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "empty_environment_is_cacheable";
    let env = env("empty");
    let empty = EnvironmentSnapshot::empty(Revision(3));
    expect_outcome(
        P,
        "set of an empty snapshot",
        set(P, cache, &env, empty.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(
        P,
        "get of an empty environment",
        get(P, cache, &env).await?,
        Some(&empty),
    )?;
    match cache.get_flag(&env, &key("anything")).await {
        Ok(FlagLookup::Absent {
            revision: Revision(3),
        }) => Ok(()),
        other => Err(Violation::new(
            P,
            format!("get_flag in a cached empty environment answered {other:?}"),
        )),
    }
}

/// Rule 4, at speed: a set of the revision just read replaces it for the very next read, even
/// within the same millisecond (an adapter that remembers what it decoded must tell the two
/// fills apart). 200 rounds, each on a fresh environment.
pub async fn an_equal_revision_replaces_at_once(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "an_equal_revision_replaces_at_once";
    for round in 0..200_u64 {
        let env = env(&format!("refill-{round}"));
        let first = EnvironmentSnapshot::empty(Revision(2));
        set(P, cache, &env, first.clone(), LONG_TTL).await?;
        expect_snapshot(P, "first fill", get(P, cache, &env).await?, Some(&first))?;
        let _ = cache.get_flag(&env, &key("flag-00000")).await;
        let second = generation_snapshot(2, 3, round);
        expect_outcome(
            P,
            "set of the same revision",
            set(P, cache, &env, second.clone(), LONG_TTL).await?,
            SetOutcome::Stored,
        )?;
        expect_snapshot(
            P,
            "read after the refill",
            get(P, cache, &env).await?,
            Some(&second),
        )?;
        let wanted = second.flag("flag-00000").cloned();
        match cache.get_flag(&env, &key("flag-00000")).await {
            Ok(FlagLookup::Hit { flag, .. }) if Some(&flag) == wanted.as_ref() => {}
            other => {
                return Err(Violation::new(
                    P,
                    format!("round {round}: get_flag after the refill answered {other:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// Rule 4: a set older than what is cached answers `Stale` and changes nothing; an equal
/// revision replaces.
pub async fn revision_never_goes_back(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "revision_never_goes_back";
    let env = env("revisions");
    let five = generation_snapshot(5, 4, 1);
    expect_outcome(
        P,
        "set r5",
        set(P, cache, &env, five.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_outcome(
        P,
        "set r4 over r5",
        set(P, cache, &env, generation_snapshot(4, 4, 2), LONG_TTL).await?,
        SetOutcome::Stale,
    )?;
    expect_snapshot(
        P,
        "after a stale set",
        get(P, cache, &env).await?,
        Some(&five),
    )?;
    let five_again = generation_snapshot(5, 2, 3);
    expect_outcome(
        P,
        "set r5 over r5",
        set(P, cache, &env, five_again.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(
        P,
        "after an equal-revision set",
        get(P, cache, &env).await?,
        Some(&five_again),
    )?;
    let six = generation_snapshot(6, 3, 4);
    expect_outcome(
        P,
        "set r6 over r5",
        set(P, cache, &env, six.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(
        P,
        "after a newer set",
        get(P, cache, &env).await?,
        Some(&six),
    )
}

/// Rule 4: after `invalidate(r)` the environment misses and sets older than `r` are `Stale`,
/// also for an environment that was never cached.
pub async fn stale_set_after_invalidate(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "stale_set_after_invalidate";
    let env = env("invalidated");
    set(P, cache, &env, generation_snapshot(3, 2, 1), LONG_TTL).await?;
    invalidate(P, cache, &env, 5).await?;
    expect_snapshot(P, "get after invalidate", get(P, cache, &env).await?, None)?;
    expect_outcome(
        P,
        "set r4 after invalidate(5)",
        set(P, cache, &env, generation_snapshot(4, 2, 2), LONG_TTL).await?,
        SetOutcome::Stale,
    )?;
    expect_snapshot(P, "get after a stale set", get(P, cache, &env).await?, None)?;
    let five = generation_snapshot(5, 2, 3);
    expect_outcome(
        P,
        "set r5 after invalidate(5)",
        set(P, cache, &env, five.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(
        P,
        "get after the refill",
        get(P, cache, &env).await?,
        Some(&five),
    )?;

    // An invalidation older than the cached revision still drops the entry but keeps the newer
    // revision: a set between the two is stale.
    invalidate(P, cache, &env, 2).await?;
    expect_snapshot(
        P,
        "get after an older invalidate",
        get(P, cache, &env).await?,
        None,
    )?;
    expect_outcome(
        P,
        "set r4 after cached r5 was invalidated at 2",
        set(P, cache, &env, generation_snapshot(4, 1, 4), LONG_TTL).await?,
        SetOutcome::Stale,
    )?;

    let fresh = crate::cache::env("never-cached");
    invalidate(P, cache, &fresh, 9).await?;
    expect_outcome(
        P,
        "set r8 on a never-cached env invalidated at 9",
        set(P, cache, &fresh, generation_snapshot(8, 1, 5), LONG_TTL).await?,
        SetOutcome::Stale,
    )?;
    Ok(())
}

/// Rule 5: look-alike environments never see each other's data or invalidations.
pub async fn environments_are_isolated(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "environments_are_isolated";
    let names = [
        "prod", "prod-eu", "prod_eu", "prod-e", "prodeu", "p", "prod0", "0prod",
    ];
    let snapshots: Vec<EnvironmentSnapshot> = (0..names.len() as u64)
        .map(|index| generation_snapshot(index + 1, 3, index + 10))
        .collect();
    for (name, snapshot) in names.iter().zip(&snapshots) {
        set(P, cache, &env(name), snapshot.clone(), LONG_TTL).await?;
    }
    for (name, snapshot) in names.iter().zip(&snapshots) {
        expect_snapshot(
            P,
            &format!("get {name}"),
            get(P, cache, &env(name)).await?,
            Some(snapshot),
        )?;
    }
    invalidate(P, cache, &env("prod"), 100).await?;
    expect_snapshot(
        P,
        "get prod after its invalidation",
        get(P, cache, &env("prod")).await?,
        None,
    )?;
    for (name, snapshot) in names.iter().zip(&snapshots).skip(1) {
        expect_snapshot(
            P,
            &format!("get {name} after prod was invalidated"),
            get(P, cache, &env(name)).await?,
            Some(snapshot),
        )?;
    }
    // prod-eu at revision 2 is untouched by prod's tombstone at 100.
    expect_outcome(
        P,
        "set prod-eu r2 after prod was invalidated at 100",
        set(
            P,
            cache,
            &env("prod-eu"),
            generation_snapshot(2, 1, 99),
            LONG_TTL,
        )
        .await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(
        P,
        "get of a never-set look-alike",
        get(P, cache, &env("prod-eu-west")).await?,
        None,
    )
}

/// `get_flag` answers `Miss`, `Hit` and `Absent` exactly as `get` would.
pub async fn get_flag_agrees_with_get(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "get_flag_agrees_with_get";
    let env = env("lookup");
    let lookup = |name: &str| {
        let cache = Arc::clone(cache);
        let env = env.clone();
        let name = key(name);
        async move {
            cache
                .get_flag(&env, &name)
                .await
                .map_err(|error| fault(P, "get_flag", error))
        }
    };
    if lookup("flag-00000").await? != FlagLookup::Miss {
        return Err(Violation::new(
            P,
            "get_flag on an uncached environment is not Miss",
        ));
    }
    // Every flag of `snapshot` answered as a `Hit` of it; `when` names the moment.
    let every_flag_hits = async |snapshot: &EnvironmentSnapshot, when: &str| {
        for flag in snapshot.flags() {
            let want = FlagLookup::Hit {
                flag: Arc::clone(flag),
                revision: snapshot.revision(),
            };
            let got = lookup(flag.key().as_str()).await?;
            if got != want {
                return Err(Violation::new(
                    P,
                    format!("get_flag {}{when} answered {got:?}", flag.key()),
                ));
            }
        }
        Ok(())
    };
    let snapshot = generation_snapshot(4, 5, 1);
    set(P, cache, &env, snapshot.clone(), LONG_TTL).await?;
    every_flag_hits(&snapshot, "").await?;
    for absent in ["flag-00005", "FLAG-00000", "flag-0000"] {
        let got = lookup(absent).await?;
        if got
            != (FlagLookup::Absent {
                revision: Revision(4),
            })
        {
            return Err(Violation::new(
                P,
                format!("get_flag {absent} (not in the snapshot) answered {got:?}"),
            ));
        }
    }
    invalidate(P, cache, &env, 4).await?;
    if lookup("flag-00000").await? != FlagLookup::Miss {
        return Err(Violation::new(P, "get_flag after invalidate is not Miss"));
    }
    // A later fill with other contents: nothing an adapter remembered of the first may show.
    let replaced = generation_snapshot(5, 5, 2);
    set(P, cache, &env, replaced.clone(), LONG_TTL).await?;
    every_flag_hits(&replaced, " after a new fill").await?;
    Ok(())
}

/// Rule 8: `get_with_ttl` answers what `get` would, and the time it reports left, counted from
/// when the call began, ends no later than the entry's TTL plus the slack.
pub async fn get_with_ttl_never_outlives_get(
    cache: &SharedCache,
    capabilities: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "get_with_ttl_never_outlives_get";
    let slack = capabilities.ttl_slack;
    let env = env("ttl-report");
    let read = |cache: &SharedCache| {
        let cache = Arc::clone(cache);
        let env = env.clone();
        async move { timed(cache.get_with_ttl(&env)).await }
    };
    let (before, _) = read(cache).await;
    if let Some((snapshot, _)) = before.map_err(|error| fault(P, "get_with_ttl", error))? {
        return Err(Violation::new(
            P,
            format!(
                "get_with_ttl of a never-set environment answered {}",
                describe(Some(&snapshot))
            ),
        ));
    }
    for (revision, ttl_ms) in [(1, 60_000), (2, 400), (3, 40)] {
        let ttl = Duration::from_millis(ttl_ms);
        let snapshot = generation_snapshot(revision, 3, revision);
        let (outcome, set_window) = timed(cache.set(&env, Arc::new(snapshot.clone()), ttl)).await;
        let outcome = outcome.map_err(|error| fault(P, "set", error))?;
        expect_outcome(P, &format!("set r{revision}"), outcome, SetOutcome::Stored)?;
        // Right after the set and, for short TTLs, half-way through and around the end.
        let waits = if ttl > Duration::from_secs(1) {
            vec![Duration::ZERO]
        } else {
            vec![Duration::ZERO, ttl / 2, ttl.saturating_sub(slack)]
        };
        for wait in waits {
            tokio::time::sleep_until((set_window.ended + wait).into()).await;
            let (got, window) = read(cache).await;
            let got = got.map_err(|error| fault(P, "get_with_ttl", error))?;
            let since_set = window.started.saturating_duration_since(set_window.started);
            match (got, Expectation::judge(set_window, ttl, slack, window)) {
                (Some((got, _)), _) if *got != snapshot => {
                    return Err(Violation::new(
                        P,
                        format!("get_with_ttl returned {}", describe(Some(&got))),
                    ));
                }
                (Some((_, Some(remaining))), _)
                    if window.started + remaining > set_window.ended + ttl + slack =>
                {
                    return Err(Violation::new(
                        P,
                        format!(
                            "{since_set:?} after a set with TTL {ttl:?}, get_with_ttl reported \
                             {remaining:?} left (slack {slack:?})"
                        ),
                    ));
                }
                (Some(_), Expectation::Miss) => {
                    return Err(Violation::new(
                        P,
                        format!(
                            "get_with_ttl {since_set:?} after a set with TTL {ttl:?} still hit"
                        ),
                    ));
                }
                (None, Expectation::Hit) => {
                    return Err(Violation::new(
                        P,
                        format!("get_with_ttl {since_set:?} after a set with TTL {ttl:?} missed"),
                    ));
                }
                _ => {}
            }
        }
    }
    invalidate(P, cache, &env, 4).await?;
    match read(cache).await.0 {
        Ok(None) => Ok(()),
        other => Err(Violation::new(
            P,
            format!("get_with_ttl after invalidate answered {other:?}"),
        )),
    }
}

/// Maximum-length names and Unicode or large values come back exactly as stored.
pub async fn unusual_keys_and_values_round_trip(
    cache: &SharedCache,
    capabilities: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "unusual_keys_and_values_round_trip";
    let env = env(&format!("{}z", "a".repeat(63)));
    let big_len = capabilities
        .max_value_bytes
        .map_or(512 * 1024, |limit| (limit / 4).min(512 * 1024));
    let flags = vec![
        flag_with_value(&"K".repeat(128), json!("max-length key")),
        flag_with_value(
            "a.b_c-d",
            json!("héllo wörld 🚩 مرحبا 中文 \u{0} \u{1F} \"quoted\" \\ / \n"),
        ),
        flag_with_value(
            "0",
            json!({"nested": {"deep": [1, -2, 2.5, true, null, "ü"]}, "": "empty key"}),
        ),
        flag_with_value("big", json!("x".repeat(big_len))),
    ];
    let snapshot = EnvironmentSnapshot::new(Revision(1), flags)
        .map_err(|error| Violation::new(P, error.to_string()))?;
    expect_outcome(
        P,
        "set",
        set(P, cache, &env, snapshot.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(P, "get", get(P, cache, &env).await?, Some(&snapshot))?;
    let long_key = key(&"K".repeat(128));
    match cache.get_flag(&env, &long_key).await {
        Ok(FlagLookup::Hit { flag, .. }) if Some(&flag) == snapshot.flag(long_key.as_str()) => {
            Ok(())
        }
        other => Err(Violation::new(
            P,
            format!("get_flag of a 128-character key answered {other:?}"),
        )),
    }
}

/// A stored flag that could not be read (its unreadable stand-in, `FeatureFlag::unreadable`) is
/// kept as such beside the readable ones: the cache never turns it into a readable flag, nor
/// makes its environment unreadable.
pub async fn unreadable_stand_ins_round_trip(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "unreadable_stand_ins_round_trip";
    let env = env("damaged");
    let stand_in = flag_core::FeatureFlag::unreadable(
        key("broken"),
        7,
        flag_core::time::OffsetDateTime::UNIX_EPOCH,
        "expected value at line 1 column 2",
    );
    let snapshot = EnvironmentSnapshot::new(
        Revision(3),
        vec![flag_with_value("fine", json!("ok")), stand_in],
    )
    .map_err(|error| Violation::new(P, error.to_string()))?;
    expect_outcome(
        P,
        "set",
        set(P, cache, &env, snapshot.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(P, "get", get(P, cache, &env).await?, Some(&snapshot))?;
    match cache.get_flag(&env, &key("broken")).await {
        Ok(FlagLookup::Hit { flag, .. }) if flag.unreadable_reason().is_some() => Ok(()),
        other => Err(Violation::new(
            P,
            format!("get_flag of the unreadable flag answered {other:?}"),
        )),
    }
}

/// A 10,000-flag environment is stored and read back whole.
pub async fn large_environment_round_trips(
    cache: &SharedCache,
    _: CacheCapabilities,
) -> Result<(), Violation> {
    const P: &str = "large_environment_round_trips";
    let env = env("large");
    let snapshot = generation_snapshot(1, 10_000, 1);
    expect_outcome(
        P,
        "set of 10,000 flags",
        set(P, cache, &env, snapshot.clone(), LONG_TTL).await?,
        SetOutcome::Stored,
    )?;
    expect_snapshot(
        P,
        "get of 10,000 flags",
        get(P, cache, &env).await?,
        Some(&snapshot),
    )?;
    match cache.get_flag(&env, &key("flag-09999")).await {
        Ok(FlagLookup::Hit { flag, revision })
            if revision == Revision(1) && Some(&flag) == snapshot.flag("flag-09999") =>
        {
            Ok(())
        }
        other => Err(Violation::new(
            P,
            format!("get_flag of the last flag answered {other:?}"),
        )),
    }
}

/// Runs every property above (all four TTLs of [`ttl_is_honoured`]), each on a fresh cache from
/// `factory`, and returns every violation found; used to show the suite catches broken adapters.
pub async fn check_all<F, Fut>(factory: F, capabilities: CacheCapabilities) -> Vec<Violation>
where
    F: Fn() -> Fut,
    Fut: Future<Output = SharedCache>,
{
    let mut violations = Vec::new();
    for ttl_ms in [1, 15, 250, 1_000] {
        let ttl = Duration::from_millis(ttl_ms);
        if let Err(violation) = ttl_is_honoured(&factory().await, capabilities, ttl).await {
            violations.push(violation);
        }
    }
    macro_rules! check {
        ($($property:ident),* $(,)?) => {$(
            if let Err(violation) = $property(&factory().await, capabilities).await {
                violations.push(violation);
            }
        )*};
    }
    check!(
        zero_ttl_is_rejected,
        set_is_atomic,
        racing_sets_leave_one,
        empty_environment_is_cacheable,
        revision_never_goes_back,
        stale_set_after_invalidate,
        environments_are_isolated,
        get_flag_agrees_with_get,
        get_with_ttl_never_outlives_get,
        unusual_keys_and_values_round_trip,
        unreadable_stand_ins_round_trip,
        large_environment_round_trips,
    );
    violations
}
