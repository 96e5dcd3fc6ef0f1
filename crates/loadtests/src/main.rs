//! `loadtests`: the benchmark runner for flag-server, over HTTP only.
//!
//! One command (`cargo run --release -p loadtests`) builds flag-server in release mode, starts it
//! for each backend (memory + SQLite, Redis + SQLite, Redis + Postgres when one answers), seeds it
//! through the management API, warms it, runs every scenario with 50 concurrent users twice
//! (paced to 5,000 requests/s in all, then saturated), writes goose's reports (HTML with its
//! graphs, and JSON) under `target/loadtests/<backend>/`, prints one table and exits non-zero
//! when any attack had an error or missed its P95 target. `--wrk` adds the throughput shares
//! (every series against a reference measured in the same run); `--speed` runs only those, the
//! scaling tables, instructions per request and the memory figures.
//! `--smoke` is CI's check: the single scenario on the embedded default for 5 s, failing only on
//! errors.
//!
//! Latency figures come from goose's per-request timings, kept in microseconds: the time from the
//! request leaving the client to its answer being read, on this machine, with the load generator
//! sharing its cores with the server.

mod backend;
mod ceiling;
mod counting;
mod fanout;
mod footprint;
mod instructions;
mod outage;
mod propagation;
mod report;
mod scaling;
mod scenarios;
mod seed;
mod shares;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;

use crate::backend::{Backend, Server, Stores, build_release, release_binary};
use crate::fanout::Fanout;
use crate::footprint::Footprint;
use crate::instructions::Instructions;
use crate::outage::Outage;
use crate::propagation::Propagation;
use crate::report::{MemoryRow, Row, table};
use crate::scaling::ScalingRow;
use crate::scenarios::{Attack, Mode, Plan, ScenarioKind};
use crate::seed::Admin;
use crate::shares::Share;

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
    /// Also measure throughput with `wrk` as shares of a reference (single, bulk, bulk 304).
    #[arg(long)]
    wrk: bool,
    /// Only the speed figures: the `wrk` shares, the scaling tables, instructions per request
    /// (callgrind) and resident memory.
    #[arg(long)]
    speed: bool,
    /// Only what per-flag evaluation counts cost: single and bulk with `FLAG_EVALUATION_METRICS`
    /// off and on, interleaved `wrk` rounds (also part of `--speed`).
    #[arg(long)]
    counting: bool,
    /// Only what OpenTelemetry costs: single and bulk with no collector and with every request
    /// (then 1 % of them) traced and exported to a local OTLP/HTTP sink, interleaved `wrk`
    /// rounds (also part of `--speed`).
    #[arg(long)]
    telemetry: bool,
    /// Interleaved rounds of every `wrk` measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    wrk_rounds: usize,
    /// A scaling database an earlier `--speed` run seeded (its `<out>/scaling/data`), used as
    /// it is instead of seeding one (to measure another binary on the same flags).
    #[arg(long)]
    scaling_database: Option<PathBuf>,
    /// Writes of the propagation run on `tiered` (0 skips it).
    #[arg(long, default_value_t = 1_000)]
    propagation_writes: usize,
    /// Seconds of the Redis outage run (its own redis-server, killed then frozen mid-run; 0
    /// skips it).
    #[arg(long, default_value_t = 30)]
    outage_seconds: usize,
    /// Run the outage run only (no backend attacks).
    #[arg(long)]
    outage_only: bool,
    /// Open event streams of each fan-out run (comma-separated; 0 skips the fan-out and the
    /// bulk 304/200 run).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    fanout_streams: Vec<usize>,
    /// Run the fan-out runs only (no backend attacks, no outage).
    #[arg(long)]
    fanout_only: bool,
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

impl Cli {
    /// The command line with `--smoke` applied: the single scenario on the embedded default,
    /// paced, for at most 5 s.
    fn resolved(mut self) -> Self {
        if self.smoke {
            self.duration = self.duration.min(5);
            self.backends = vec![Backend::Memory];
            self.scenarios = vec![ScenarioKind::Single];
            self.modes = vec![Mode::Paced];
            self.outage_seconds = 0;
            self.fanout_streams = vec![0];
        }
        if self.fanout_only {
            self.outage_seconds = 0;
        }
        if self.counting || self.telemetry {
            self.outage_seconds = 0;
            self.fanout_streams = vec![0];
            self.propagation_writes = 0;
        }
        if self.speed {
            self.wrk = true;
            self.outage_seconds = 0;
            self.fanout_streams = vec![0];
            self.propagation_writes = 0;
        }
        self.fanout_streams.retain(|count| *count > 0);
        self
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse().resolved();
    let mut run = Run::prepare(cli)?;
    if !run.cli.outage_only
        && !run.cli.fanout_only
        && !run.cli.speed
        && !run.cli.counting
        && !run.cli.telemetry
    {
        for backend in or_all(&run.cli.backends, &Backend::ALL) {
            run.backend(backend).await?;
        }
    }
    if run.cli.wrk {
        run.shares().await?;
    }
    if run.cli.speed {
        run.speed().await?;
    }
    if run.cli.speed || run.cli.counting {
        run.switch(counting::Switch::Counting).await?;
    }
    if run.cli.speed || run.cli.telemetry {
        run.switch(counting::Switch::Telemetry).await?;
        run.switch(counting::Switch::TelemetrySampled).await?;
    }
    if run.cli.outage_seconds > 0 {
        run.outage().await?;
    }
    if !run.cli.fanout_streams.is_empty() && !run.cli.outage_only {
        run.fanout().await?;
    }
    let summary = run.summary();
    println!("\n{summary}");
    run.write_reports(&summary)?;
    let problems = run.problems()?;
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("FAILED: {problem}");
        }
        std::process::exit(1);
    }
    Ok(())
}

/// One run of the runner: what it was asked, where it writes, what it found so far.
struct Run {
    cli: Cli,
    out: PathBuf,
    binary: PathBuf,
    stores: Stores,
    token: String,
    rows: Vec<Row>,
    shares: Vec<Share>,
    scaling: Vec<ScalingRow>,
    instructions: Option<Instructions>,
    footprint: Option<Footprint>,
    skipped: Vec<String>,
    spread: Option<Propagation>,
    /// The server's resident memory around each hostile attack.
    memory: Vec<MemoryRow>,
    /// The Redis outage run's figures.
    outage: Option<Outage>,
    /// The event-stream fan-out run's figures.
    fanout: Option<Fanout>,
    /// What per-flag evaluation counts and OpenTelemetry cost.
    counting: Vec<counting::CountingCost>,
}

impl Run {
    /// Checks the tools, builds the server (unless one is given) and finds the stores.
    fn prepare(cli: Cli) -> anyhow::Result<Self> {
        if cli.wrk || cli.counting || cli.telemetry {
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
        let want_redis = or_all(&cli.backends, &Backend::ALL)
            .iter()
            .any(|backend| backend.needs_redis());
        let stores = Stores::discover(cli.redis_url.clone(), database_url, want_redis);
        Ok(Self {
            out,
            binary,
            stores,
            token: format!("loadtests-{}", std::process::id()),
            rows: Vec::new(),
            shares: Vec::new(),
            scaling: Vec::new(),
            instructions: None,
            footprint: None,
            skipped: Vec::new(),
            spread: None,
            memory: Vec::new(),
            outage: None,
            fanout: None,
            counting: Vec::new(),
            cli,
        })
    }

    /// Everything on one backend: a server seeded and warmed, every attack, and the
    /// propagation run on `tiered`.
    async fn backend(&mut self, backend: Backend) -> anyhow::Result<()> {
        if let Some(reason) = self.stores.missing(backend) {
            println!("skipping {}: {reason}", backend.name());
            self.skipped.push(format!("{}: {reason}", backend.name()));
            return Ok(());
        }
        let directory = self.out.join(backend.name());
        println!("== {}: starting {}", backend.name(), self.binary.display());
        let server = self
            .stores
            .start_server(&self.binary, backend, &directory.join("data"), &self.token)
            .await?;
        let admin = Admin::new(&server.base_url, &self.token);
        // SQLite takes one writer at a time; more concurrent writers only queue.
        let concurrency = if backend == Backend::RedisPostgres {
            16
        } else {
            4
        };
        let seeded = admin.seed(self.cli.users, concurrency).await?;
        seed::warm(&server.base_url).await?;
        println!("   seeded {seeded} flags, warmed the cache");
        self.attacks(backend, &server, &admin, &directory).await?;
        drop(server);
        if backend == Backend::Tiered && self.cli.propagation_writes > 0 {
            self.propagation(&directory).await?;
        }
        Ok(())
    }

    /// Every chosen scenario in every chosen mode against `server`.
    async fn attacks(
        &mut self,
        backend: Backend,
        server: &Server,
        admin: &Admin,
        directory: &Path,
    ) -> anyhow::Result<()> {
        let cli = &self.cli;
        for scenario in or_all(&cli.scenarios, &ScenarioKind::ALL) {
            for mode in or_all(&cli.modes, &[Mode::Paced, Mode::Saturated]) {
                if scenario == ScenarioKind::Mixed {
                    admin.reset_counters(cli.users).await?;
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
                let before_kb = server.resident_kb();
                let metrics = scenarios::run(&attack, Plan::new(cli.users, &self.token)).await?;
                if scenario == ScenarioKind::Hostile
                    && let (Some(before_kb), Some(after_kb)) = (before_kb, server.resident_kb())
                {
                    let junk = metrics
                        .requests
                        .get("POST junk")
                        .map_or(0, |aggregate| aggregate.raw_data.counter);
                    println!(
                        "     resident {before_kb} kB -> {after_kb} kB over {junk} junk requests"
                    );
                    self.memory.push(MemoryRow {
                        backend: backend.name(),
                        mode: mode.name(),
                        junk_requests: junk,
                        before_kb,
                        after_kb,
                    });
                }
                let row = Row::from_metrics(scenario, backend, mode, &metrics);
                println!(
                    "     {:.0} requests/s, P95 {}, {} errors",
                    row.requests_per_second,
                    report::micros(row.p95_us),
                    row.errors
                );
                self.rows.push(row);
            }
        }
        Ok(())
    }

    /// Single and bulk with `switch` off and on, interleaved.
    async fn switch(&mut self, switch: counting::Switch) -> anyhow::Result<()> {
        println!("== wrk: {switch:?} off and on");
        let costs = counting::measure(
            &self.stores,
            &self.binary,
            &self.out,
            &self.token,
            self.cli.wrk_duration,
            self.cli.wrk_rounds,
            switch,
        )
        .await?;
        println!(
            "{}",
            counting::table(&costs, self.cli.wrk_duration, self.cli.wrk_rounds)
        );
        self.counting.extend(costs);
        Ok(())
    }

    /// Every `wrk` series of the chosen backends beside its reference, interleaved.
    async fn shares(&mut self) -> anyhow::Result<()> {
        println!("== wrk: every series beside its reference");
        let backends = self.speed_backends();
        self.shares = shares::measure(
            &self.stores,
            &self.binary,
            &self.out,
            &self.token,
            &backends,
            self.cli.wrk_duration,
            self.cli.wrk_rounds,
        )
        .await?;
        println!(
            "{}",
            shares::table(&self.shares, self.cli.wrk_duration, self.cli.wrk_rounds)
        );
        Ok(())
    }

    /// The backends the speed figures cover: those chosen, else `memory`, `tiered` and `redis`.
    fn speed_backends(&self) -> Vec<Backend> {
        or_all(
            &self.cli.backends,
            &[Backend::Memory, Backend::Tiered, Backend::Redis],
        )
    }

    /// The scaling tables, instructions per request and the memory figures.
    async fn speed(&mut self) -> anyhow::Result<()> {
        println!("== scaling: flags, environments, context, rules, segments");
        let database = match &self.cli.scaling_database {
            Some(directory) => scaling::Database {
                directory: directory.clone(),
            },
            None => scaling::seed(&self.stores, &self.binary, &self.out, &self.token).await?,
        };
        let backends = self.speed_backends();
        self.scaling = scaling::measure(
            &self.stores,
            &self.binary,
            &database,
            &self.out,
            &self.token,
            &backends,
            self.cli.wrk_duration,
            self.cli.wrk_rounds,
        )
        .await?;
        println!(
            "{}",
            scaling::table(&self.scaling, self.cli.wrk_duration, self.cli.wrk_rounds)
        );
        println!("== memory: 10 environments of 1,000 flags");
        let footprint = footprint::measure(
            &self.stores,
            &self.binary,
            &database,
            &self.token,
            self.cli.wrk_duration,
        )
        .await?;
        println!("{}", footprint::table(&footprint));
        self.footprint = Some(footprint);
        println!("== instructions per request, under callgrind");
        let counted =
            instructions::measure(&self.stores, &self.binary, &self.out, &self.token).await?;
        println!("{}", instructions::table(&counted));
        self.instructions = Some(counted);
        Ok(())
    }

    /// How fast a write through one of three tiered instances reaches the other two.
    async fn propagation(&mut self, directory: &Path) -> anyhow::Result<()> {
        println!(
            "   propagation: {} writes through one of three tiered instances",
            self.cli.propagation_writes
        );
        let measured = propagation::measure(
            &self.stores,
            &self.binary,
            &directory.join("propagation"),
            &self.token,
            self.cli.propagation_writes,
        )
        .await?;
        println!("{}", measured.line().trim());
        self.spread = Some(measured);
        Ok(())
    }

    /// The Redis outage run, on a Redis of its own (needs `redis-server` on the PATH).
    async fn outage(&mut self) -> anyhow::Result<()> {
        println!(
            "== outage: {} users for {} s; Redis killed, restarted, frozen, thawed",
            self.cli.users, self.cli.outage_seconds
        );
        let directory = self.out.join("outage");
        match outage::measure(
            &self.binary,
            &directory.join("data"),
            &self.token,
            self.cli.users,
            self.cli.outage_seconds,
        )
        .await
        {
            Ok(measured) => {
                println!("{}", measured.table());
                self.outage = Some(measured);
            }
            Err(error) if format!("{error:#}").contains("redis-server is not on the PATH") => {
                println!("skipping the outage run: {error:#}");
                self.skipped.push(format!("outage: {error:#}"));
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// The event-stream fan-out runs and the bulk 304/200 pair, on `memory` instances of their
    /// own.
    async fn fanout(&mut self) -> anyhow::Result<()> {
        println!(
            "== fan-out: {:?} open event streams, one write; bulk 304 against 200",
            self.cli.fanout_streams
        );
        let directory = self.out.join("fanout");
        let measured = fanout::measure(
            &self.binary,
            &directory,
            &self.token,
            &self.cli.fanout_streams,
        )
        .await?;
        println!("{}", measured.table());
        self.fanout = Some(measured);
        Ok(())
    }

    /// The one table of every attack, then the ceiling and propagation figures.
    fn summary(&self) -> String {
        let cli = &self.cli;
        let mut summary = format!(
            "{} cores; load generator on the same machine; {} users; {} s per attack; paced = {} requests/s\n\n{}",
            std::thread::available_parallelism().map_or(0, usize::from),
            cli.users,
            cli.duration,
            cli.paced_rate,
            table(&self.rows, !cli.smoke)
        );
        if !self.shares.is_empty() {
            summary.push_str(&shares::table(
                &self.shares,
                cli.wrk_duration,
                cli.wrk_rounds,
            ));
        }
        if !self.counting.is_empty() {
            summary.push_str(&counting::table(
                &self.counting,
                cli.wrk_duration,
                cli.wrk_rounds,
            ));
        }
        if !self.scaling.is_empty() {
            summary.push_str(&scaling::table(
                &self.scaling,
                cli.wrk_duration,
                cli.wrk_rounds,
            ));
        }
        if let Some(counted) = &self.instructions {
            summary.push_str(&instructions::table(counted));
        }
        if let Some(footprint) = &self.footprint {
            summary.push_str(&footprint::table(footprint));
        }
        if !self.memory.is_empty() {
            summary.push_str(&report::memory_table(&self.memory));
        }
        if let Some(measured) = &self.spread {
            summary.push_str(&measured.line());
        }
        if let Some(outage) = &self.outage {
            summary.push_str(&outage.table());
        }
        if let Some(fanout) = &self.fanout {
            summary.push_str(&fanout.table());
        }
        summary
    }

    /// `summary.md` and `summary.json` beside goose's reports.
    fn write_reports(&self, summary: &str) -> anyhow::Result<()> {
        let out = &self.out;
        std::fs::write(out.join("summary.md"), summary).context("writing summary.md")?;
        let json = serde_json::json!({
            "rows": self.rows,
            "shares": self.shares,
            "scaling": self.scaling,
            "instructions": self.instructions,
            "memory": self.footprint,
            "propagation": self.spread,
            "hostileMemory": self.memory,
            "outage": self.outage,
            "fanout": self.fanout,
            "counting": self.counting,
            "skipped": self.skipped,
        });
        std::fs::write(
            out.join("summary.json"),
            serde_json::to_string_pretty(&json).context("encoding summary.json")?,
        )
        .context("writing summary.json")?;
        println!("reports: {}", out.display());
        Ok(())
    }

    /// Every error and missed target; an error when nothing ran at all.
    fn problems(&self) -> anyhow::Result<Vec<String>> {
        if self.rows.is_empty()
            && self.outage.is_none()
            && self.fanout.is_none()
            && self.shares.is_empty()
            && self.counting.is_empty()
        {
            bail!("no attack ran");
        }
        let mut problems: Vec<String> = self
            .rows
            .iter()
            .flat_map(|row| row.problems(!self.cli.smoke))
            .collect();
        if let Some(outage) = &self.outage {
            problems.extend(outage.problems());
        }
        problems.extend(
            self.shares
                .iter()
                .filter(|share| !share.met())
                .map(|share| {
                    format!(
                        "{} on {}: {:.2} of {}, target {:.2}",
                        share.series.name(),
                        share.backend,
                        share.ratio(),
                        share.reference,
                        share.target
                    )
                }),
        );
        problems.extend(scaling::problems(&self.scaling));
        if let Some(fanout) = &self.fanout {
            problems.extend(fanout.problems());
        }
        if let Some(measured) = &self.spread
            && !measured.within_target()
        {
            problems.push(format!(
                "propagation: a write took {} to reach another instance",
                report::micros(measured.max_us)
            ));
        }
        Ok(problems)
    }
}

/// `chosen`, or every one of `all` when nothing was chosen.
fn or_all<T: Copy>(chosen: &[T], all: &[T]) -> Vec<T> {
    if chosen.is_empty() {
        all.to_vec()
    } else {
        chosen.to_vec()
    }
}
