//! The model test: random sequences of `get`, `get_with_ttl`, `get_flag`, `set`, `invalidate`
//! and waits over look-alike environments, every answer compared with a reference model of the
//! port (`reference`), in real time. Shrinking reduces a failure to a short, readable sequence
//! of operations.

mod operation;
mod reference;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flag_core::{CacheError, Revision};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use operation::snapshot_of;
pub use operation::{Operation, operation};
use reference::Reference;

use crate::cache::{env, key, timed};
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

/// Runs one sequence against a fresh cache; `Err` says which step disagreed with the model.
pub async fn run_sequence(
    cache: &SharedCache,
    capabilities: CacheCapabilities,
    operations: &[Operation],
) -> Result<(), String> {
    let mut model = Reference::new(capabilities.ttl_slack);
    for (step, operation) in operations.iter().enumerate() {
        apply(cache, &mut model, operation)
            .await
            .map_err(|message| format!("step {step} {operation:?}: {message}"))?;
    }
    Ok(())
}

/// Runs one operation against the cache and has the model judge its answer.
async fn apply(
    cache: &SharedCache,
    model: &mut Reference,
    operation: &Operation,
) -> Result<(), String> {
    let failed = |error: CacheError| format!("failed: {error}");
    match operation {
        Operation::Get { env: index } => {
            let (got, read) = timed(cache.get(&env(ENVIRONMENTS[*index]))).await;
            model.check_get(*index, got.map_err(failed)?, read)
        }
        Operation::GetWithTtl { env: index } => {
            let (got, read) = timed(cache.get_with_ttl(&env(ENVIRONMENTS[*index]))).await;
            model.check_get_with_ttl(*index, got.map_err(failed)?, read)
        }
        Operation::GetFlag { env: index, key: k } => {
            let (got, read) =
                timed(cache.get_flag(&env(ENVIRONMENTS[*index]), &key(KEYS[*k]))).await;
            model.check_get_flag(*index, *k, got.map_err(failed)?, read)
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
            model.check_set(*index, snapshot, ttl, outcome.map_err(failed)?, window)
        }
        Operation::Invalidate {
            env: index,
            revision,
        } => {
            let (result, window) =
                timed(cache.invalidate(&env(ENVIRONMENTS[*index]), Revision(*revision))).await;
            result.map_err(failed)?;
            model.invalidated(*index, *revision, window);
            Ok(())
        }
        Operation::Wait { ms } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Ok(())
        }
    }
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
