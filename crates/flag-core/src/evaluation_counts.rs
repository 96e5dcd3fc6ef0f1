//! How many times each flag answered each variant for each reason, for the opt-in per-flag
//! evaluation metrics (`flag_evaluations_total`).
//!
//! Decisions:
//! - The hot path counts on the flag object itself: one slot per (variant, reason) next to the
//!   answer's rendering, found by pointer, one relaxed atomic add. No lock, no hash, no
//!   allocation per evaluation.
//! - A snapshot refilled from the cache or the repository holds new flag objects, whose counts
//!   start at 0. So the registry keeps every counted flag object of an environment's flag, and
//!   folds one into a running total once nothing else holds it (no evaluation can count on it
//!   any more). Totals never go back, as a Prometheus counter must not.
//! - Only flags that exist are counted, so the series are bounded by the flag limits whatever
//!   clients ask for: an unknown key is not a series. An evaluation error of an existing flag
//!   counts under variant `""` and reason `ERROR`.
//! - A flag deleted stops its series: [`EvaluationCounts::series`] drops every flag its caller
//!   says no longer exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::evaluation::{Evaluation, Reason};
use crate::flag::FeatureFlag;
use crate::fnv::FnvBuildHasher;
use crate::names::{Environment, FlagKey};

/// How many flag objects of one flag the registry holds before it folds those nothing else
/// holds (without a cache every evaluation reads new ones, and the scrape may be far away).
const FOLD_AT: usize = 16;

/// One series of `flag_evaluations_total`: a flag's answers of one variant for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationSeries {
    /// The environment.
    pub environment: Environment,
    /// The flag.
    pub flag: FlagKey,
    /// The variant served (`""` for an evaluation error).
    pub variant: String,
    /// Why.
    pub reason: Reason,
    /// How many times, since the process started.
    pub count: u64,
}

/// The counts of one flag of one environment.
#[derive(Debug, Default)]
struct Counted {
    /// Flag objects counted on, still held by a snapshot or an evaluation.
    live: Vec<Arc<FeatureFlag>>,
    /// The counts of flag objects nothing holds any more, and of errors, by variant and
    /// [`Reason::index`].
    retired: BTreeMap<(String, usize), u64>,
}

impl Counted {
    /// Folds every live flag object nothing else holds into `retired`.
    fn retire(&mut self) {
        let retired = &mut self.retired;
        self.live.retain(|flag| {
            // Only the registry holds it: nobody can count on it any more.
            if Arc::strong_count(flag) > 1 {
                return true;
            }
            for (variant, reason, count) in flag.answer_counts() {
                *retired
                    .entry((variant.to_string(), reason.index()))
                    .or_default() += count;
            }
            false
        });
    }

    fn totals(&self) -> BTreeMap<(String, usize), u64> {
        let mut totals = self.retired.clone();
        for flag in &self.live {
            for (variant, reason, count) in flag.answer_counts() {
                *totals
                    .entry((variant.to_string(), reason.index()))
                    .or_default() += count;
            }
        }
        totals
    }
}

/// Per-flag evaluation counts of a server (see the module's decisions).
#[derive(Debug, Default)]
pub struct EvaluationCounts {
    flags: Mutex<HashMap<(Environment, FlagKey), Counted, FnvBuildHasher>>,
}

impl EvaluationCounts {
    /// No counts yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one answer of `evaluation` in `env`.
    pub fn record(&self, env: &Environment, evaluation: &Evaluation) {
        let flag = evaluation.flag();
        if flag.count_answer(evaluation.variant(), evaluation.reason()) == Some(true) {
            // The first count on this flag object: the registry keeps it until it is folded.
            let mut flags = self.lock();
            let counted = flags.entry((env.clone(), flag.key().clone())).or_default();
            if counted.live.len() >= FOLD_AT {
                counted.retire();
            }
            counted.live.push(Arc::clone(flag));
        }
    }

    /// Counts one evaluation error of the existing flag `key` in `env`.
    pub fn record_error(&self, env: &Environment, key: &FlagKey) {
        *self
            .lock()
            .entry((env.clone(), key.clone()))
            .or_default()
            .retired
            .entry((String::new(), Reason::Error.index()))
            .or_default() += 1;
    }

    /// The environments counted in.
    pub fn environments(&self) -> Vec<Environment> {
        let mut environments: Vec<Environment> =
            self.lock().keys().map(|(env, _)| env.clone()).collect();
        environments.sort();
        environments.dedup();
        environments
    }

    /// Every series, by environment, flag, variant and reason; the flags for which `exists`
    /// answers `false` are dropped first (their series stop).
    pub fn series(&self, exists: impl Fn(&Environment, &FlagKey) -> bool) -> Vec<EvaluationSeries> {
        let mut flags = self.lock();
        flags.retain(|(env, key), _| exists(env, key));
        let mut series = Vec::new();
        for ((env, key), counted) in flags.iter_mut() {
            counted.retire();
            for ((variant, reason), count) in counted.totals() {
                series.push(EvaluationSeries {
                    environment: env.clone(),
                    flag: key.clone(),
                    variant,
                    reason: Reason::ALL[reason],
                    count,
                });
            }
        }
        series.sort_by(|a, b| {
            (&a.environment, &a.flag, &a.variant, a.reason.index()).cmp(&(
                &b.environment,
                &b.flag,
                &b.variant,
                b.reason.index(),
            ))
        });
        series
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(Environment, FlagKey), Counted, FnvBuildHasher>> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking

    use super::*;
    use crate::context::EvaluationContext;
    use serde_json::json;

    fn flag() -> Arc<FeatureFlag> {
        let key = FlagKey::parse("f").unwrap();
        let body = json!({"enabled": true, "defaultVariant": "off", "rules": [
            {"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}], "variant": "on"}]});
        Arc::new(FeatureFlag::from_definition_json(&key, &body.to_string()).unwrap())
    }

    fn evaluate(flag: &Arc<FeatureFlag>, plan: &str) -> Evaluation {
        let context = EvaluationContext::new().with_attribute("plan", plan);
        Evaluation::of(Arc::clone(flag), &context).unwrap()
    }

    #[test]
    fn counts_survive_new_flag_objects_and_stop_with_the_flag() {
        let counts = EvaluationCounts::new();
        let env = Environment::parse("production").unwrap();
        let first = flag();
        for _ in 0..3 {
            counts.record(&env, &evaluate(&first, "pro"));
        }
        counts.record(&env, &evaluate(&first, "free"));
        // A refill: a new object of the same flag; the old one is dropped by its snapshot.
        drop(first);
        let second = flag();
        counts.record(&env, &evaluate(&second, "pro"));
        counts.record_error(&env, second.key());
        let series = counts.series(|_, _| true);
        let found: Vec<(&str, Reason, u64)> = series
            .iter()
            .map(|series| (series.variant.as_str(), series.reason, series.count))
            .collect();
        assert_eq!(
            found,
            [
                ("", Reason::Error, 1),
                ("off", Reason::Default, 1),
                ("on", Reason::TargetingMatch, 4),
            ]
        );
        // Folded: only the live object is kept.
        assert_eq!(counts.lock().values().next().unwrap().live.len(), 1);
        assert!(counts.series(|_, _| false).is_empty());
        assert!(counts.environments().is_empty());
    }

    #[test]
    fn flag_objects_read_anew_for_every_evaluation_are_folded_without_a_scrape() {
        // As with no cache: every evaluation reads a new flag object, dropped after it.
        let counts = EvaluationCounts::new();
        let env = Environment::parse("production").unwrap();
        for _ in 0..1000 {
            counts.record(&env, &evaluate(&flag(), "pro"));
        }
        assert!(counts.lock().values().next().unwrap().live.len() <= FOLD_AT);
        assert_eq!(counts.series(|_, _| true)[0].count, 1000);
    }
}
