//! The result table, and the targets each row is held to.

use std::fmt::Write as _;
use std::time::Duration;

use goose::metrics::GooseMetrics;
use serde::Serialize;

use crate::backend::Backend;
use crate::scenarios::{Mode, ScenarioKind};

/// One attack's figures, for the measured request of its scenario.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) backend: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) requests: usize,
    pub(crate) requests_per_second: f64,
    pub(crate) p50_us: u64,
    pub(crate) p95_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
    /// Failed requests of any kind in the attack (writes and invalidations included).
    pub(crate) errors: usize,
    /// The P95 this row must stay under, if it has one.
    pub(crate) p95_target_us: Option<u64>,
}

impl Row {
    /// The figures of `metrics` for `scenario`'s measured request.
    pub(crate) fn from_metrics(
        scenario: ScenarioKind,
        backend: Backend,
        mode: Mode,
        metrics: &GooseMetrics,
    ) -> Self {
        let errors = metrics
            .requests
            .values()
            .map(|aggregate| aggregate.fail_count)
            .sum();
        let measured = metrics.requests.get(scenario.measured_request());
        let timing = measured.map(|aggregate| &aggregate.raw_data);
        let requests = timing.map_or(0, |timing| timing.counter);
        let seconds = metrics.duration.max(1) as f64;
        let percentile = |percent: f32| timing.map_or(0, |timing| timing.percentile_us(percent));
        Self {
            scenario: scenario.name(),
            backend: backend.name(),
            mode: mode.name(),
            requests,
            requests_per_second: requests as f64 / seconds,
            p50_us: percentile(0.50),
            p95_us: percentile(0.95),
            p99_us: percentile(0.99),
            max_us: timing.map_or(0, |timing| timing.maximum_time_us),
            errors,
            p95_target_us: p95_target(scenario, backend, mode)
                .map(|target| u64::try_from(target.as_micros()).unwrap_or(u64::MAX)),
        }
    }

    /// What is wrong with this row, if anything: errors, no requests at all, a missed target.
    pub(crate) fn problems(&self, check_targets: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let name = format!("{} on {} ({})", self.scenario, self.backend, self.mode);
        if self.errors > 0 {
            problems.push(format!("{name}: {} errors", self.errors));
        }
        if self.requests == 0 {
            problems.push(format!("{name}: no request was measured"));
        }
        if check_targets
            && let Some(target) = self.p95_target_us
            && self.p95_us >= target
        {
            problems.push(format!(
                "{name}: P95 {} is not under the target {}",
                micros(self.p95_us),
                micros(target)
            ));
        }
        problems
    }
}

/// The P95 each (scenario, backend, mode) must stay under; `None` where only figures are reported.
///
/// Paced (5,000 requests/s in all): single < 1 ms in memory (and tiered, whose hits are in
/// memory), < 2 ms through Redis; bulk < 5 ms.
/// Saturated: single < 10 ms on every backend.
pub(crate) fn p95_target(scenario: ScenarioKind, backend: Backend, mode: Mode) -> Option<Duration> {
    match (mode, scenario, backend) {
        (Mode::Paced, ScenarioKind::Single, Backend::Memory | Backend::Tiered) => {
            Some(Duration::from_millis(1))
        }
        (Mode::Paced, ScenarioKind::Single, _) => Some(Duration::from_millis(2)),
        (Mode::Paced, ScenarioKind::Bulk, _) => Some(Duration::from_millis(5)),
        (Mode::Saturated, ScenarioKind::Single, _) => Some(Duration::from_millis(10)),
        _ => None,
    }
}

/// `850 µs` below a millisecond, `1.24 ms` above.
pub(crate) fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else {
        format!("{:.2} ms", us as f64 / 1_000.0)
    }
}

/// The table: one line per attack; `checked` says whether targets count (not in a smoke run).
pub(crate) fn table(rows: &[Row], checked: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | backend | mode | requests/s | P50 | P95 | P99 | max | errors | P95 target |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let target = match row.p95_target_us {
            Some(target) if !checked => format!("< {} not checked", micros(target)),
            Some(target) if row.p95_us < target => format!("< {} ok", micros(target)),
            Some(target) => format!("< {} MISSED", micros(target)),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.backend,
            row.mode,
            row.requests_per_second,
            micros(row.p50_us),
            micros(row.p95_us),
            micros(row.p99_us),
            micros(row.max_us),
            row.errors,
            target
        );
    }
    out
}

/// The median of `values` (0 when there are none).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p95_us: u64, errors: usize) -> Row {
        Row {
            scenario: "single",
            backend: "memory",
            mode: "paced",
            requests: 100,
            requests_per_second: 5_000.0,
            p50_us: 300,
            p95_us,
            p99_us: 2_000,
            max_us: 9_000,
            errors,
            p95_target_us: Some(1_000),
        }
    }

    #[test]
    fn rows_fail_on_errors_and_on_missed_targets_only_when_checked() {
        assert!(row(999, 0).problems(true).is_empty());
        assert_eq!(row(1_000, 0).problems(true).len(), 1);
        assert!(row(1_000, 0).problems(false).is_empty());
        assert_eq!(row(10, 3).problems(false).len(), 1);
    }

    #[test]
    fn targets_follow_the_issue() {
        let target = |scenario, backend, mode| p95_target(scenario, backend, mode);
        assert_eq!(
            target(ScenarioKind::Single, Backend::Memory, Mode::Paced),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            target(ScenarioKind::Single, Backend::RedisPostgres, Mode::Paced),
            Some(Duration::from_millis(2))
        );
        assert_eq!(
            target(ScenarioKind::Bulk, Backend::Redis, Mode::Paced),
            Some(Duration::from_millis(5))
        );
        assert_eq!(
            target(ScenarioKind::Single, Backend::Redis, Mode::Saturated),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            target(ScenarioKind::Cold, Backend::Memory, Mode::Paced),
            None
        );
    }

    #[test]
    fn the_table_marks_missed_targets() {
        let table = table(&[row(500, 0), row(1_500, 0)], true);
        assert!(table.contains("< 1.00 ms ok"), "{table}");
        assert!(table.contains("< 1.00 ms MISSED"), "{table}");
        assert!(table.contains("| 500 µs |"), "{table}");
    }
}

/// The server's resident memory around one hostile attack.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct MemoryRow {
    pub(crate) backend: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) junk_requests: usize,
    pub(crate) before_kb: u64,
    pub(crate) after_kb: u64,
}

/// The resident-memory table of the hostile attacks.
pub(crate) fn memory_table(rows: &[MemoryRow]) -> String {
    let mut out = String::from(
        "\nHostile traffic (junk environments), the server's resident memory:\n\n\
         | backend | mode | junk requests | resident before | resident after |\n|---|---|---:|---:|---:|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} MB | {:.1} MB |",
            row.backend,
            row.mode,
            row.junk_requests,
            row.before_kb as f64 / 1024.0,
            row.after_kb as f64 / 1024.0
        );
    }
    out
}
