//! The model test: random sequences of `get`, `get_flag`, `set`, `invalidate` and waits over
//! look-alike environments, every answer compared with a reference model of the port.
//!
//! The model runs in real time. Each environment holds the last stored snapshot with the window
//! of its `set` and its TTL, and the revision its tombstone remembers. Where real time makes the
//! answer uncertain (a read or a set within the TTL slack of an expiry), the model accepts
//! either answer and then learns from it: a miss there means the entry has expired. Shrinking
//! reduces a failure to a short, readable sequence of operations.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flag_core::{EnvironmentSnapshot, FlagLookup, Revision, SetOutcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::json;

use crate::cache::{Expectation, Window, env, key, timed};
use crate::sample::flag_with_value;
use crate::{CacheCapabilities, SharedCache, Violation};

/// The property name the model test reports violations under.
pub const PROPERTY: &str = "model_test";

/// Look-alike environment names: a backend that confuses any two of them is caught.
pub const ENVIRONMENTS: [&str; 4] = ["prod", "prod-eu", "prod_eu", "prod0"];
/// Look-alike flag keys, differing by case and suffix.
pub const KEYS: [&str; 4] = ["alpha", "Alpha", "alpha.1", "beta"];

/// How many sequences to run and how long they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// Sequences to run (`PROPTEST_CASES`, default 256).
    pub cases: u32,
    /// The longest sequence.
    pub max_operations: usize,
}

impl ModelConfig {
    /// 256 cases unless `PROPTEST_CASES` says otherwise; sequences of up to 24 operations.
    pub fn from_env() -> Self {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(256);
        Self {
            cases,
            max_operations: 24,
        }
    }
}

/// One step of a sequence.
#[derive(Clone, PartialEq, Eq)]
pub enum Operation {
    /// `get(env)`.
    Get {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
    },
    /// `get_flag(env, key)`.
    GetFlag {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
        /// Index into [`KEYS`].
        key: usize,
    },
    /// `set(env, snapshot, ttl)` of a snapshot holding the chosen keys.
    Set {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
        /// The snapshot's revision.
        revision: u64,
        /// Which of [`KEYS`] the snapshot holds.
        keys: Vec<usize>,
        /// Tells this snapshot's values from other snapshots of the same revision.
        generation: u8,
        /// The TTL in ms.
        ttl_ms: u64,
    },
    /// `invalidate(env, revision)`.
    Invalidate {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
        /// The revision to remember.
        revision: u64,
    },
    /// Sleep.
    Wait {
        /// How long, in ms.
        ms: u64,
    },
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Get { env } => write!(f, "get({})", ENVIRONMENTS[*env]),
            Operation::GetFlag { env, key } => {
                write!(f, "get_flag({}, {})", ENVIRONMENTS[*env], KEYS[*key])
            }
            Operation::Set {
                env,
                revision,
                keys,
                generation,
                ttl_ms,
            } => {
                let names: Vec<&str> = keys.iter().map(|k| KEYS[*k]).collect();
                write!(
                    f,
                    "set({}, r{revision} g{generation} {names:?}, ttl {ttl_ms}ms)",
                    ENVIRONMENTS[*env]
                )
            }
            Operation::Invalidate { env, revision } => {
                write!(f, "invalidate({}, r{revision})", ENVIRONMENTS[*env])
            }
            Operation::Wait { ms } => write!(f, "wait({ms}ms)"),
        }
    }
}

/// Generates operations, weighted towards reads and sets.
pub fn operation() -> impl Strategy<Value = Operation> {
    let env = 0..ENVIRONMENTS.len();
    prop_oneof![
        3 => env.clone().prop_map(|env| Operation::Get { env }),
        3 => (env.clone(), 0..KEYS.len()).prop_map(|(env, key)| Operation::GetFlag { env, key }),
        4 => (env.clone(), 1..8u64, prop::sample::subsequence((0..KEYS.len()).collect::<Vec<_>>(), 0..=KEYS.len()), any::<u8>(), 5..200u64)
            .prop_map(|(env, revision, keys, generation, ttl_ms)| Operation::Set { env, revision, keys, generation, ttl_ms }),
        2 => (env, 0..8u64).prop_map(|(env, revision)| Operation::Invalidate { env, revision }),
        2 => (0..60u64).prop_map(|ms| Operation::Wait { ms }),
    ]
}

fn snapshot_of(revision: u64, keys: &[usize], generation: u8) -> EnvironmentSnapshot {
    let flags = keys.iter().map(|k| {
        flag_with_value(
            KEYS[*k],
            json!({"generation": generation, "revision": revision}),
        )
    });
    EnvironmentSnapshot::new(Revision(revision), flags)
        .unwrap_or_else(|error| panic!("model snapshot: {error}"))
}

/// The last stored snapshot of an environment, with when it was set and for how long.
#[derive(Debug, Clone)]
struct Entry {
    snapshot: Arc<EnvironmentSnapshot>,
    set: Window,
    ttl: Duration,
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

/// Runs one sequence against a fresh cache; `Err` says which step disagreed with the model.
pub async fn run_sequence(
    cache: &SharedCache,
    capabilities: CacheCapabilities,
    operations: &[Operation],
) -> Result<(), String> {
    let slack = capabilities.ttl_slack;
    let mut model = vec![EnvModel::default(); ENVIRONMENTS.len()];
    for (step, operation) in operations.iter().enumerate() {
        let fail = |message: String| Err(format!("step {step} {operation:?}: {message}"));
        match operation {
            Operation::Get { env: index } => {
                let (got, read) = timed(cache.get(&env(ENVIRONMENTS[*index]))).await;
                let got = match got {
                    Ok(got) => got,
                    Err(error) => return fail(format!("failed: {error}")),
                };
                let state = &mut model[*index];
                let expected = state.entry.as_ref().map(|entry| {
                    (
                        Expectation::judge(entry.set, entry.ttl, slack, read),
                        &entry.snapshot,
                    )
                });
                match (expected, got) {
                    (None, None) | (Some((Expectation::Miss, _)), None) => state.entry = None,
                    (Some((Expectation::Either, _)), None) => state.entry = None,
                    (Some((Expectation::Hit | Expectation::Either, want)), Some(got))
                        if *got == **want => {}
                    (None, Some(got)) | (Some((Expectation::Miss, _)), Some(got)) => {
                        return fail(format!(
                            "hit revision {} where the model has nothing live",
                            got.revision()
                        ));
                    }
                    (Some((_, want)), Some(got)) => {
                        return fail(format!(
                            "returned revision {} with {} flags, model has revision {} with {} flags",
                            got.revision(),
                            got.len(),
                            want.revision(),
                            want.len()
                        ));
                    }
                    (Some((Expectation::Hit, want)), None) => {
                        return fail(format!(
                            "missed; the model has revision {} live",
                            want.revision()
                        ));
                    }
                }
            }
            Operation::GetFlag { env: index, key: k } => {
                let (got, read) =
                    timed(cache.get_flag(&env(ENVIRONMENTS[*index]), &key(KEYS[*k]))).await;
                let got = match got {
                    Ok(got) => got,
                    Err(error) => return fail(format!("failed: {error}")),
                };
                let state = &mut model[*index];
                let expectation = state.entry.as_ref().map_or(Expectation::Miss, |entry| {
                    Expectation::judge(entry.set, entry.ttl, slack, read)
                });
                let live = state
                    .entry
                    .as_ref()
                    .map(|entry| entry.snapshot.lookup(KEYS[*k]));
                match (expectation, got) {
                    (Expectation::Miss | Expectation::Either, FlagLookup::Miss) => {
                        state.entry = None
                    }
                    (Expectation::Hit, FlagLookup::Miss) => {
                        return fail("missed; the model has the environment live".into());
                    }
                    (Expectation::Miss, other) => {
                        return fail(format!(
                            "answered {other:?} where the model has nothing live"
                        ));
                    }
                    (_, other) if Some(&other) == live.as_ref() => {}
                    (_, other) => return fail(format!("answered {other:?}, model says {live:?}")),
                }
            }
            Operation::Set {
                env: index,
                revision,
                keys,
                generation,
                ttl_ms,
            } => {
                let snapshot = Arc::new(snapshot_of(*revision, keys, *generation));
                let ttl = Duration::from_millis(*ttl_ms);
                let (outcome, window) =
                    timed(cache.set(&env(ENVIRONMENTS[*index]), Arc::clone(&snapshot), ttl)).await;
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(error) => return fail(format!("failed: {error}")),
                };
                let state = &mut model[*index];
                let (alive_certain, alive_maybe) = state.entry_revisions(window, slack);
                let must_be_stale = *revision < state.tombstone_certain.max(alive_certain);
                let must_store = *revision >= state.tombstone_maybe.max(alive_maybe);
                match outcome {
                    SetOutcome::Stored if must_be_stale => {
                        return fail(format!(
                            "stored over a newer revision (tombstone r{}, live r{alive_certain})",
                            state.tombstone_certain
                        ));
                    }
                    SetOutcome::Stale if must_store => {
                        return fail(format!(
                            "answered Stale though nothing newer is known (tombstone r{}, live r{alive_maybe})",
                            state.tombstone_maybe
                        ));
                    }
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
                    }
                    SetOutcome::Stale => {}
                }
            }
            Operation::Invalidate {
                env: index,
                revision,
            } => {
                let (result, window) =
                    timed(cache.invalidate(&env(ENVIRONMENTS[*index]), Revision(*revision))).await;
                if let Err(error) = result {
                    return fail(format!("failed: {error}"));
                }
                let state = &mut model[*index];
                let (alive_certain, alive_maybe) = state.entry_revisions(window, slack);
                state.tombstone_certain = state.tombstone_certain.max(*revision).max(alive_certain);
                state.tombstone_maybe = state.tombstone_maybe.max(*revision).max(alive_maybe);
                state.entry = None;
            }
            Operation::Wait { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
    }
    Ok(())
}

/// Runs `config.cases` random sequences, each against a fresh cache from `factory`; on failure,
/// the message holds the shrunk sequence.
pub fn check_against_model<F, Fut>(
    factory: F,
    capabilities: CacheCapabilities,
    config: ModelConfig,
) -> Result<(), Violation>
where
    F: Fn() -> Fut,
    Fut: Future<Output = SharedCache>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| {
            Violation::new(PROPERTY, format!("cannot start a Tokio runtime: {error}"))
        })?;
    let mut runner = TestRunner::new(Config {
        cases: config.cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec(operation(), 1..=config.max_operations);
    let result = runner.run(&strategy, |operations| {
        runtime.block_on(async {
            let cache = factory().await;
            run_sequence(&cache, capabilities, &operations)
                .await
                .map_err(TestCaseError::fail)
        })
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, operations)) => Err(Violation::new(
            PROPERTY,
            format!(
                "{reason}\nminimal failing sequence ({} operations):\n{}",
                operations.len(),
                operations
                    .iter()
                    .enumerate()
                    .map(|(step, operation)| format!("  {step}: {operation:?}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        )),
        Err(TestError::Abort(reason)) => {
            Err(Violation::new(PROPERTY, format!("aborted: {reason}")))
        }
    }
}
