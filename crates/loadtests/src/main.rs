//! `loadtests`: the benchmark runner for flag-server, over HTTP only.
//!
//! One command (`cargo run --release -p loadtests`) builds flag-server in release mode, starts it
//! for each backend (memory + SQLite, Redis + SQLite, Redis + Postgres when one answers), seeds it
//! through the management API, warms it, runs every scenario with 50 concurrent users twice
//! (paced to 5,000 requests/s in all, then saturated), writes goose's reports (HTML with its
//! graphs, and JSON) under `target/loadtests/<backend>/`, prints one table and exits non-zero
//! when any attack had an error or missed its P95 target. `--wrk` adds the throughput ceiling.
//! `--smoke` is CI's check: the single scenario on the embedded default for 5 s, failing only on
//! errors.
//!
//! Latency figures come from goose's per-request timings, kept in microseconds: the time from the
//! request leaving the client to its answer being read, on this machine, with the load generator
//! sharing its cores with the server.

mod backend;
mod ceiling;
mod propagation;
mod report;
mod scenarios;
mod seed;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;

use crate::backend::{Backend, Stores, release_binary};
use crate::ceiling::CeilingRow;
use crate::report::{Row, table};
use crate::scenarios::{Attack, Mode, Plan, ScenarioKind};
use crate::seed::{Admin, MIXED_ENVIRONMENT, counter_definition, counter_key};

/// Load scenarios against flag-server, per backend, with one table of results.
#[derive(Parser)]
#[command(name = "loadtests", about)]
struct Cli {
    /// Seconds each attack runs.
    #[arg(long, default_value_t = 30)]
    duration: usize,
    /// Backends to run (comma-separated); all that can run here when left out.
    #[arg(long, value_enum, value_delimiter = ',')]
    backends: Vec<Backend>,
    /// Scenarios to run (comma-separated); all when left out.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<ScenarioKind>,
    /// Load shapes to run (comma-separated); both when left out.
    #[arg(long, value_enum, value_delimiter = ',')]
    modes: Vec<Mode>,
    /// Concurrent virtual users.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Requests per second, all users together, in paced runs.
    #[arg(long, default_value_t = 5_000)]
    paced_rate: usize,
    /// A flag-server binary to use instead of building the release one.
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// CI's smoke run: single scenario, embedded default, paced, 5 s; fails only on errors.
    #[arg(long)]
    smoke: bool,
    /// Also measure the throughput ceiling with `wrk` (single and bulk).
    #[arg(long)]
    wrk: bool,
    /// Writes of the propagation run on `tiered` (0 skips it).
    #[arg(long, default_value_t = 1_000)]
    propagation_writes: usize,
    /// Seconds of each `wrk` run.
    #[arg(long, default_value_t = 10)]
    wrk_duration: usize,
    /// Redis to use (else one on 127.0.0.1:6379, else a redis-server started from the PATH).
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Postgres to use (else one on 127.0.0.1:5432 as user postgres).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where reports go; `<target>/loadtests` when left out.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.smoke {
        cli.duration = cli.duration.min(5);
        cli.backends = vec![Backend::Memory];
        cli.scenarios = vec![ScenarioKind::Single];
        cli.modes = vec![Mode::Paced];
    }
    let backends = or_all(&cli.backends, &Backend::ALL);
    let scenarios = or_all(&cli.scenarios, &ScenarioKind::ALL);
    let modes = or_all(&cli.modes, &[Mode::Paced, Mode::Saturated]);
    if cli.wrk {
        ceiling::require_wrk()?;
    }
    let out = match &cli.out {
        Some(out) => out.clone(),
        None => release_binary("flag-server")?
            .parent()
            .and_then(Path::parent)
            .context("locating the target directory")?
            .join("loadtests"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let binary = match &cli.server_binary {
        Some(binary) => binary.clone(),
        None => build_release(cli.wrk)?,
    };
    let database_url = cli
        .database_url
        .clone()
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"));
    let want_redis = backends.iter().any(|backend| backend.needs_redis());
    let stores = Stores::discover(cli.redis_url.clone(), database_url, want_redis);
    let token = format!("loadtests-{}", std::process::id());

    let mut rows = Vec::new();
    let mut ceilings = Vec::new();
    let mut skipped = Vec::new();
    let mut spread: Option<propagation::Propagation> = None;
    for backend in backends {
        if let Some(reason) = stores.missing(backend) {
            println!("skipping {}: {reason}", backend.name());
            skipped.push(format!("{}: {reason}", backend.name()));
            continue;
        }
        let directory = out.join(backend.name());
        println!("== {}: starting {}", backend.name(), binary.display());
        let server = stores
            .start_server(&binary, backend, &directory.join("data"), &token)
            .await?;
        let admin = Admin::new(&server.base_url, &token);
        // SQLite takes one writer at a time; more concurrent writers only queue.
        let concurrency = if backend == Backend::RedisPostgres {
            16
        } else {
            4
        };
        let seeded = admin.seed(cli.users, concurrency).await?;
        seed::warm(&server.base_url).await?;
        println!("   seeded {seeded} flags, warmed the cache");
        for &scenario in &scenarios {
            for &mode in &modes {
                if scenario == ScenarioKind::Mixed {
                    reset_counters(&admin, cli.users).await?;
                }
                let reports = directory.join(format!("{}-{}", scenario.name(), mode.name()));
                let attack = Attack {
                    scenario,
                    mode,
                    host: &server.base_url,
                    users: cli.users,
                    seconds: cli.duration,
                    paced_rate: cli.paced_rate,
                    reports: &reports,
                };
                println!(
                    "   {} {} for {} s ({} users)",
                    scenario.name(),
                    mode.name(),
                    cli.duration,
                    cli.users
                );
                let metrics = scenarios::run(&attack, Plan::new(cli.users, &token)).await?;
                let row = Row::from_metrics(scenario, backend, mode, &metrics);
                println!(
                    "     {:.0} requests/s, P95 {}, {} errors",
                    row.requests_per_second,
                    report::micros(row.p95_us),
                    row.errors
                );
                rows.push(row);
            }
        }
        if cli.wrk {
            for scenario in [ScenarioKind::Single, ScenarioKind::Bulk] {
                println!(
                    "   wrk {} against flag-server and the ceiling",
                    scenario.name()
                );
                let row = ceiling::measure(
                    &server.base_url,
                    backend,
                    scenario,
                    cli.wrk_duration,
                    &directory,
                )
                .await?;
                ceilings.push(row);
            }
        }
        drop(server);
        if backend == Backend::Tiered && cli.propagation_writes > 0 {
            println!(
                "   propagation: {} writes through one of three tiered instances",
                cli.propagation_writes
            );
            let measured = propagation::measure(
                &stores,
                &binary,
                &directory.join("propagation"),
                &token,
                cli.propagation_writes,
            )
            .await?;
            println!("{}", measured.line().trim());
            spread = Some(measured);
        }
    }

    let mut summary = format!(
        "{} cores; load generator on the same machine; {} users; {} s per attack; paced = {} requests/s\n\n{}",
        std::thread::available_parallelism().map_or(0, usize::from),
        cli.users,
        cli.duration,
        cli.paced_rate,
        table(&rows, !cli.smoke)
    );
    if !ceilings.is_empty() {
        summary.push_str(&ceiling_table(&ceilings));
    }
    if let Some(measured) = &spread {
        summary.push_str(&measured.line());
    }
    println!("\n{summary}");
    std::fs::write(out.join("summary.md"), &summary).context("writing summary.md")?;
    let json = serde_json::json!({"rows": rows, "ceiling": ceilings, "propagation": spread, "skipped": skipped});
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&json).context("encoding summary.json")?,
    )
    .context("writing summary.json")?;
    println!("reports: {}", out.display());

    let mut problems: Vec<String> = rows
        .iter()
        .flat_map(|row| row.problems(!cli.smoke))
        .collect();
    if let Some(measured) = &spread
        && !measured.within_target()
    {
        problems.push(format!(
            "propagation: a write took {} to reach another instance",
            report::micros(measured.max_us)
        ));
    }
    if rows.is_empty() {
        bail!("no attack ran");
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("FAILED: {problem}");
        }
        std::process::exit(1);
    }
    Ok(())
}

/// `chosen`, or every one of `all` when nothing was chosen.
fn or_all<T: Copy>(chosen: &[T], all: &[T]) -> Vec<T> {
    if chosen.is_empty() {
        all.to_vec()
    } else {
        chosen.to_vec()
    }
}

/// Builds flag-server (and the ceiling, for `wrk`) in release mode; returns flag-server's path.
fn build_release(with_ceiling: bool) -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .args(["-p", "flag-server", "--bin", "flag-server"]);
    if with_ceiling {
        command.args(["-p", "loadtests", "--bin", "ceiling"]);
    }
    println!("== building flag-server in release mode");
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    release_binary("flag-server")
}

/// Puts every counter of the mixed scenario back to 0, so each attack starts from a known state.
async fn reset_counters(admin: &Admin, users: usize) -> anyhow::Result<()> {
    for user in 0..users {
        admin
            .put(
                MIXED_ENVIRONMENT,
                &counter_key(user),
                &counter_definition(0),
            )
            .await?;
    }
    Ok(())
}

fn ceiling_table(rows: &[CeilingRow]) -> String {
    let mut out = String::from(
        "\nwrk -t2 -c50 (POST with a Lua script) against flag-server and the trivial `ceiling` server (same answer size):\n\n\
         | scenario | backend | answer bytes | flag-server requests/s | ceiling requests/s | share of ceiling |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} % |\n",
            row.scenario,
            row.backend,
            row.response_bytes,
            row.flag_server_rps,
            row.ceiling_rps,
            row.ratio() * 100.0
        ));
    }
    out
}
