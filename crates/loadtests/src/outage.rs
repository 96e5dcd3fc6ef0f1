//! The outage run: 50 users evaluate single flags against a `redis` instance (over SQLite) whose
//! Redis is this run's own, killed in the middle of the run. Five equal phases: Redis up; Redis
//! SIGKILLed (refused connections); Redis restarted empty; Redis SIGSTOPped (frozen: every call
//! times out); Redis SIGCONTed. Per phase: requests, errors, P50/P95/P99 and the server's
//! repository reads per second; after each return of Redis, how long until the server uses the
//! cache again (its hit, miss and absent counters move).
//!
//! Targets: no errors; P95 under 5 ms while Redis is out; repository reads close to one per
//! environment per second while Redis is out; the cache used again within a second of Redis
//! returning.
//!
//! The load is a plain paced client loop (reqwest) rather than a goose attack: the phases need
//! each request's own start time, which goose's aggregates do not keep.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::backend::{Backend, OwnedChild, Server, Stores, free_port, start_redis_on};
use crate::report::micros;
use crate::seed::{Admin, FLAGS_PER_ENVIRONMENT, LOAD_ENVIRONMENT, flag_key, warm};

/// Requests per second of all users together.
const RATE: usize = 2_000;
/// The largest P95 while Redis is out.
const P95_TARGET: Duration = Duration::from_millis(5);
/// The longest time from Redis returning to the cache being used again.
const RECOVERY_TARGET: Duration = Duration::from_secs(1);

/// The phases, in order, and what starts each.
const PHASES: [&str; 5] = [
    "Redis up",
    "Redis SIGKILLed",
    "Redis restarted empty",
    "Redis SIGSTOPped",
    "Redis SIGCONTed",
];

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseRow {
    pub(crate) phase: &'static str,
    pub(crate) requests: usize,
    pub(crate) errors: usize,
    pub(crate) p50_us: u64,
    pub(crate) p95_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) repository_reads_per_second: f64,
}

/// The outage run's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outage {
    pub(crate) users: usize,
    pub(crate) phases: Vec<PhaseRow>,
    /// From the restart until the cache was used again.
    pub(crate) recovery_after_restart_ms: Option<u64>,
    /// From SIGCONT until the cache was used again.
    pub(crate) recovery_after_thaw_ms: Option<u64>,
}

impl Outage {
    /// The table for the summary.
    pub(crate) fn table(&self) -> String {
        let mut out = format!(
            "\nRedis outage ({} users, {RATE} requests/s, single-flag evaluations, redis over SQLite):\n\n\
             | phase | requests | errors | P50 | P95 | P99 | repository reads/s |\n|---|---:|---:|---:|---:|---:|---:|\n",
            self.users
        );
        for row in &self.phases {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.1} |\n",
                row.phase,
                row.requests,
                row.errors,
                micros(row.p50_us),
                micros(row.p95_us),
                micros(row.p99_us),
                row.repository_reads_per_second
            ));
        }
        let shown = |ms: Option<u64>| ms.map_or("never".to_owned(), |ms| format!("{ms} ms"));
        out.push_str(&format!(
            "\ncache used again {} after the restart, {} after SIGCONT (target: under {} ms)\n",
            shown(self.recovery_after_restart_ms),
            shown(self.recovery_after_thaw_ms),
            RECOVERY_TARGET.as_millis()
        ));
        out
    }

    /// What missed a target.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for row in &self.phases {
            if row.errors > 0 {
                problems.push(format!("outage, {}: {} errors", row.phase, row.errors));
            }
        }
        for row in self.phases.iter().filter(|row| is_out(row.phase)) {
            if u128::from(row.p95_us) >= P95_TARGET.as_micros() {
                problems.push(format!(
                    "outage, {}: P95 {} over {}",
                    row.phase,
                    micros(row.p95_us),
                    micros(P95_TARGET.as_micros() as u64)
                ));
            }
        }
        for (what, ms) in [
            ("restart", self.recovery_after_restart_ms),
            ("SIGCONT", self.recovery_after_thaw_ms),
        ] {
            if ms.is_none_or(|ms| u128::from(ms) > RECOVERY_TARGET.as_millis()) {
                problems.push(format!(
                    "outage: cache not used again within a second of the {what}"
                ));
            }
        }
        problems
    }
}

fn is_out(phase: &str) -> bool {
    phase == PHASES[1] || phase == PHASES[3]
}

/// A request's start (since the run began), latency and outcome.
type Sample = (Duration, Duration, bool);

/// Runs the outage scenario with `users` users for `seconds` (five phases of a fifth each)
/// against `binary`.
pub(crate) async fn measure(
    binary: &Path,
    directory: &Path,
    token: &str,
    users: usize,
    seconds: usize,
) -> anyhow::Result<Outage> {
    let port = free_port()?;
    let (url, redis) = start_redis_on(port)?;
    let mut redis = Some(redis);
    let stores = Stores::with_redis(url);
    let server = stores
        .start_server(binary, Backend::Redis, directory, token)
        .await?;
    let admin = Admin::new(&server.base_url, token);
    admin.seed(users, 4).await?;
    warm(&server.base_url).await?;

    let phase_length = Duration::from_secs_f64(seconds as f64 / PHASES.len() as f64);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..users)
        .map(|user| {
            let every = Duration::from_secs_f64(users as f64 / RATE as f64);
            tokio::spawn(load(
                server.base_url.clone(),
                user,
                every,
                started,
                Arc::clone(&stop),
            ))
        })
        .collect();

    let mut boundaries = vec![Duration::ZERO];
    let mut reads = vec![repository_reads(&server).await?];
    let mut recoveries = Vec::new();
    for phase in 1..PHASES.len() {
        tokio::time::sleep_until((started + phase_length * phase as u32).into()).await;
        reads.push(repository_reads(&server).await?);
        boundaries.push(started.elapsed());
        match phase {
            1 => {
                if let Some(mut child) = redis.take() {
                    child.kill();
                }
            }
            2 => {
                let (_, child) = start_redis_on(port)?;
                redis = Some(child);
                recoveries.push(recovery(&server).await?);
            }
            3 => signal(redis.as_ref(), "-STOP")?,
            _ => {
                signal(redis.as_ref(), "-CONT")?;
                recoveries.push(recovery(&server).await?);
            }
        }
    }
    tokio::time::sleep_until((started + phase_length * PHASES.len() as u32).into()).await;
    reads.push(repository_reads(&server).await?);
    boundaries.push(started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Sample> = Vec::new();
    for task in tasks {
        samples.extend(task.await.context("a load task failed")?);
    }
    drop(server);
    drop(redis);

    let phases = PHASES
        .iter()
        .enumerate()
        .map(|(index, phase)| {
            let (from, to) = (boundaries[index], boundaries[index + 1]);
            let mut latencies: Vec<Duration> = Vec::new();
            let mut errors = 0;
            for (_, latency, ok) in samples.iter().filter(|(at, _, _)| *at >= from && *at < to) {
                latencies.push(*latency);
                errors += usize::from(!ok);
            }
            latencies.sort();
            let at = |fraction: f64| {
                if latencies.is_empty() {
                    return 0;
                }
                let index = ((latencies.len() as f64 * fraction).ceil() as usize)
                    .clamp(1, latencies.len())
                    - 1;
                u64::try_from(latencies[index].as_micros()).unwrap_or(u64::MAX)
            };
            PhaseRow {
                phase,
                requests: latencies.len(),
                errors,
                p50_us: at(0.50),
                p95_us: at(0.95),
                p99_us: at(0.99),
                repository_reads_per_second: (reads[index + 1] - reads[index])
                    / (to - from).as_secs_f64(),
            }
        })
        .collect();
    Ok(Outage {
        users,
        phases,
        recovery_after_restart_ms: recoveries.first().copied().flatten(),
        recovery_after_thaw_ms: recoveries.get(1).copied().flatten(),
    })
}

/// One user: a single-flag evaluation `every` interval until `stop`.
async fn load(
    base_url: String,
    user: usize,
    every: Duration,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    let mut n = user;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        n += 1;
        let key = flag_key(n % FLAGS_PER_ENVIRONMENT);
        let body = format!(r#"{{"context":{{"targetingKey":"user-{n}","plan":"pro"}}}}"#);
        let sent = Instant::now();
        let ok = client
            .post(format!("{base_url}/ofrep/v1/evaluate/flags/{key}"))
            .header("X-Environment", LOAD_ENVIRONMENT)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        samples.push((sent - started, sent.elapsed(), ok));
    }
    samples
}

/// The server's `flag_repository_reads_total`.
async fn repository_reads(server: &Server) -> anyhow::Result<f64> {
    metric_sum(server, "flag_repository_reads_total").await
}

/// The sum of every sample of `/metrics` whose series starts with `prefix`.
async fn metric_sum(server: &Server, prefix: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .context("reading /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// How long, from now, until the server calls the cache successfully again (its hit, miss or
/// absent counters move); `None` after 10 s.
async fn recovery(server: &Server) -> anyhow::Result<Option<u64>> {
    let answered = |server| async move {
        let mut total = 0.0;
        for result in ["hit", "miss", "absent"] {
            total += metric_sum(
                server,
                &format!("flag_cache_requests_total{{backend=\"redis\",result=\"{result}\"}}"),
            )
            .await?;
        }
        anyhow::Ok(total)
    };
    let returned = Instant::now();
    let before = answered(server).await?;
    while returned.elapsed() < Duration::from_secs(10) {
        if answered(server).await? > before {
            return Ok(Some(returned.elapsed().as_millis() as u64));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// Sends `signal` (`-STOP`, `-CONT`) to the Redis process.
fn signal(redis: Option<&OwnedChild>, signal: &str) -> anyhow::Result<()> {
    let Some(redis) = redis else {
        bail!("no Redis process to signal");
    };
    let status = std::process::Command::new("kill")
        .args([signal, &redis.id().to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {signal} failed");
    }
    Ok(())
}
