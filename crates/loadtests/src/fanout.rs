//! The fan-out run: OFREP event streams at scale, and what a bulk `304` saves.
//!
//! - For each count (1,000 and 10,000 by default) a fresh `memory` instance gets that many open
//!   streams on one environment; one write; the time until every stream has its event (P50, P99,
//!   max, from just before the write), and the resident memory each open stream costs (the
//!   server's `VmRSS` with the streams open, less before them, over the count). Targets: every
//!   stream hears the write; under 16 KiB per stream.
//! - Bulk evaluation of 100 flags over 50 connections, answered `200`, and with the answer's
//!   `ETag` in `If-None-Match`, answered `304`: rounds of 3 s each, alternating, so that both
//!   kinds see the same machine (its speed drifts by a fifth within a minute here). Each run gives
//!   the requests per second and the server's own CPU time per request (from `/proc/<pid>/stat`).
//!   With `wrk` on the PATH the server is pinned to the first CPU (its runtime then started with
//!   one worker) and `wrk` to the others (as `taskset` allows), so the load generator does not
//!   take the server's CPU; without it the runner's own client shares every core. Target: the
//!   `304` at least 3× the `200` in server capacity (requests per second of server CPU): the
//!   median, over the rounds, of each round's `200` CPU per request over its `304` CPU per
//!   request. The wall-clock ratio is printed beside it.
//!
//! Streams are raw sockets (one task each) rather than goose users: what matters is each
//! stream's own arrival time, which goose's aggregates do not keep.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

use crate::backend::{Backend, Server, Stores};
use crate::report::{median, micros};
use crate::seed::{Admin, flag_definition, flag_key};

/// The environment the streams follow.
const ENVIRONMENT: &str = "fanout";
/// The most resident memory an open stream may cost.
const MEMORY_TARGET_BYTES: f64 = 16.0 * 1024.0;
/// How much faster a `304` must be served than a `200`.
const NOT_MODIFIED_TARGET: f64 = 3.0;
/// How long each bulk throughput run lasts.
const BULK_SECONDS: u64 = 3;
/// Rounds of the bulk pair (`200` then `304`); medians are reported.
const BULK_ROUNDS: usize = 9;
/// Flags of the bulk environment.
const BULK_FLAGS: usize = 100;
/// Concurrent bulk clients.
const BULK_USERS: usize = 50;
/// How long every stream has to hear the write.
const PATIENCE: Duration = Duration::from_secs(30);

/// One count's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutRow {
    pub(crate) streams: usize,
    pub(crate) heard: usize,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
    pub(crate) bytes_per_stream: f64,
}

/// The fan-out run's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fanout {
    pub(crate) rows: Vec<FanoutRow>,
    pub(crate) bulk_200: BulkRate,
    pub(crate) bulk_304: BulkRate,
    /// The median over the rounds of the `200`'s server CPU per request over the `304`'s.
    pub(crate) capacity_ratio: f64,
    /// What generated the bulk load.
    pub(crate) bulk_load: String,
}

/// One kind of bulk answer's figures: medians over the rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct BulkRate {
    /// Requests answered per second of wall-clock time.
    pub(crate) per_second: f64,
    /// The server's CPU time per request, in microseconds.
    pub(crate) server_cpu_us: f64,
}

impl Fanout {
    /// The tables for the summary.
    pub(crate) fn table(&self) -> String {
        let mut out = String::from(
            "\nEvent-stream fan-out (one memory instance, one write, every stream's event):\n\n\
             | open streams | heard | P50 | P99 | max | resident memory per stream |\n\
             |---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} KiB |\n",
                row.streams,
                row.heard,
                micros(row.p50_us),
                micros(row.p99_us),
                micros(row.max_us),
                row.bytes_per_stream / 1024.0
            ));
        }
        out.push_str(&format!(
            "\nBulk evaluation of {BULK_FLAGS} flags, {BULK_USERS} connections ({}), medians of \
             {BULK_ROUNDS} alternating runs of {BULK_SECONDS} s:\n\n\
             | answer | requests/s | server CPU per request | server capacity (requests per CPU-second) |\n\
             |---|---:|---:|---:|\n\
             | 200 | {:.0} | {:.1} µs | {:.0} |\n\
             | 304 | {:.0} | {:.1} µs | {:.0} |\n\n\
             304 against 200: {:.1}x in server capacity (target at least {NOT_MODIFIED_TARGET}x), \
             {:.1}x in wall-clock requests/s\n",
            self.bulk_load,
            self.bulk_200.per_second,
            self.bulk_200.server_cpu_us,
            capacity(self.bulk_200),
            self.bulk_304.per_second,
            self.bulk_304.server_cpu_us,
            capacity(self.bulk_304),
            self.capacity_ratio,
            self.bulk_304.per_second / self.bulk_200.per_second.max(f64::MIN_POSITIVE),
        ));
        out
    }

    /// What missed a target.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for row in &self.rows {
            if row.heard < row.streams {
                problems.push(format!(
                    "fan-out: {} of {} streams heard the write",
                    row.heard, row.streams
                ));
            }
            if row.bytes_per_stream > MEMORY_TARGET_BYTES {
                problems.push(format!(
                    "fan-out: {:.1} KiB per open stream with {} open (target 16 KiB)",
                    row.bytes_per_stream / 1024.0,
                    row.streams
                ));
            }
        }
        if self.capacity_ratio < NOT_MODIFIED_TARGET {
            problems.push(format!(
                "bulk 304 only {:.1}x the 200 in server capacity (target {NOT_MODIFIED_TARGET}x)",
                self.capacity_ratio
            ));
        }
        problems
    }
}

/// Runs the fan-out for each of `counts`, then the bulk throughput pair, against `binary`.
pub(crate) async fn measure(
    binary: &Path,
    directory: &Path,
    token: &str,
    counts: &[usize],
) -> anyhow::Result<Fanout> {
    raise_descriptor_limit(counts.iter().copied().max().unwrap_or(0))?;
    let stores = Stores::discover(None, None, false);
    let extra = [
        ("FLAG_MAX_CONNECTIONS", "30000"),
        ("FLAG_MAX_STREAMS", "30000"),
    ];
    let mut rows = Vec::new();
    for &count in counts {
        let server = stores
            .start_server_with(binary, Backend::Memory, directory, token, &extra)
            .await?;
        rows.push(fan_out(&server, token, count).await?);
        println!(
            "{count} streams: {} heard, P99 {}, {:.1} KiB each",
            rows.last().map_or(0, |row| row.heard),
            micros(rows.last().map_or(0, |row| row.p99_us)),
            rows.last().map_or(0.0, |row| row.bytes_per_stream / 1024.0)
        );
    }
    // Pinned to one CPU for the bulk pair (see `WrkLoad::prepare`), the server's runtime gets
    // one worker, as it would had it started on one CPU: two workers taking turns on one CPU
    // would add a cost to every request that no deployment has.
    let bulk_extra = [
        ("FLAG_MAX_CONNECTIONS", "30000"),
        ("FLAG_MAX_STREAMS", "30000"),
        ("TOKIO_WORKER_THREADS", "1"),
    ];
    let server = stores
        .start_server_with(
            binary,
            Backend::Memory,
            directory,
            token,
            if WrkLoad::can_pin() {
                &bulk_extra
            } else {
                &extra
            },
        )
        .await?;
    let pair = bulk_pair(&server, token, directory).await?;
    Ok(Fanout {
        rows,
        bulk_200: median_rate(&pair.ok),
        bulk_304: median_rate(&pair.not_modified),
        capacity_ratio: median(
            pair.ok
                .iter()
                .zip(&pair.not_modified)
                .map(|(ok, not_modified)| {
                    ok.server_cpu_us / not_modified.server_cpu_us.max(f64::MIN_POSITIVE)
                }),
        ),
        bulk_load: pair.load,
    })
}

/// `count` streams on `server`, one write, and when each stream heard it.
async fn fan_out(server: &Server, token: &str, count: usize) -> anyhow::Result<FanoutRow> {
    let admin = Admin::new(&server.base_url, token);
    admin
        .put(
            ENVIRONMENT,
            "switch",
            &serde_json::json!({"enabled": false}),
        )
        .await?;
    let address = server
        .base_url
        .strip_prefix("http://")
        .context("a base URL")?
        .to_owned();
    // Let the process settle before reading its baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.resident_kb().context("reading VmRSS")?;
    let (armed, arming) = watch::channel::<Option<Instant>>(None);
    let opening = Arc::new(Semaphore::new(256));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let address = address.clone();
        let opening = Arc::clone(&opening);
        let opened = Arc::clone(&opened);
        let mut arming = arming.clone();
        tasks.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.ok()?;
            let mut stream = open(&address).await.ok()?;
            drop(permit);
            opened.fetch_add(1, Ordering::SeqCst);
            let written = loop {
                if let Some(at) = *arming.borrow_and_update() {
                    break at;
                }
                arming.changed().await.ok()?;
            };
            let heard = until_event(&mut stream).await?;
            Some(heard.saturating_duration_since(written))
        }));
    }
    let deadline = Instant::now() + PATIENCE;
    while opened.load(Ordering::SeqCst) < count {
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} streams opened within {PATIENCE:?}",
                opened.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.resident_kb().context("reading VmRSS")?;
    let written = Instant::now();
    armed.send_replace(Some(written));
    admin
        .put(ENVIRONMENT, "switch", &serde_json::json!({"enabled": true}))
        .await?;
    let mut delays = Vec::with_capacity(count);
    for task in tasks {
        if let Ok(Some(delay)) = task.await {
            delays.push(delay);
        }
    }
    delays.sort();
    let at = |fraction: f64| {
        delays
            .get(((delays.len() as f64 * fraction).ceil() as usize).saturating_sub(1))
            .map_or(0, |delay| {
                u64::try_from(delay.as_micros()).unwrap_or(u64::MAX)
            })
    };
    Ok(FanoutRow {
        streams: count,
        heard: delays.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: at(1.0),
        bytes_per_stream: after.saturating_sub(before) as f64 * 1024.0 / count as f64,
    })
}

/// Opens the environment's stream and reads its head and first chunk.
async fn open(address: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET /ofrep/v1/events/{ENVIRONMENT} HTTP/1.1\r\nHost: load\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains("retry:") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::other("closed before it opened"));
        }
        received.extend_from_slice(&chunk[..read]);
    }
    if !received.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not a 200"));
    }
    Ok(stream)
}

/// Reads until an event arrives; when it did.
async fn until_event(stream: &mut TcpStream) -> Option<Instant> {
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        if String::from_utf8_lossy(&chunk[..read]).contains("id: ") {
            return Some(Instant::now());
        }
    }
}

/// The runs of the bulk pair, and what generated the load.
struct BulkPair {
    ok: Vec<BulkRate>,
    not_modified: Vec<BulkRate>,
    load: String,
}

/// The bulk pair: [`BULK_ROUNDS`] alternating runs answered `200`, then `304`.
async fn bulk_pair(server: &Server, token: &str, directory: &Path) -> anyhow::Result<BulkPair> {
    let admin = Admin::new(&server.base_url, token);
    for index in 0..BULK_FLAGS {
        admin
            .put("bulk", &flag_key(index), &flag_definition(index))
            .await?;
    }
    let client = reqwest::Client::new();
    let url = format!("{}/ofrep/v1/evaluate/flags", server.base_url);
    let first = client
        .post(&url)
        .header("X-Environment", "bulk")
        .header("Content-Type", "application/json")
        .body(BULK_BODY)
        .send()
        .await?;
    let etag = first
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .context("a bulk answer without an ETag")?
        .to_owned();
    // wrk counts any answer under 400 as served: make sure the tag is answered 304.
    let check = client
        .post(&url)
        .header("X-Environment", "bulk")
        .header("Content-Type", "application/json")
        .header("If-None-Match", &etag)
        .body(BULK_BODY)
        .send()
        .await?;
    if check.status().as_u16() != 304 {
        bail!("the bulk answer's own ETag was answered {}", check.status());
    }
    let wrk = if crate::ceiling::require_wrk().is_ok() {
        Some(WrkLoad::prepare(server, directory, &etag)?)
    } else {
        println!(
            "wrk is not on the PATH (apt-get install wrk): the bulk pair uses the runner's own client on every core"
        );
        None
    };
    let mut pair = BulkPair {
        ok: Vec::new(),
        not_modified: Vec::new(),
        load: wrk.as_ref().map_or_else(
            || "the runner's client, sharing every core".to_owned(),
            |wrk| wrk.description.clone(),
        ),
    };
    for _ in 0..BULK_ROUNDS {
        for tag in [None, Some(etag.as_str())] {
            let rate = match &wrk {
                Some(wrk) => wrk.run(server, &url, tag.is_some())?,
                None => bulk_run(server, &client, &url, tag).await?,
            };
            if tag.is_some() {
                pair.not_modified.push(rate);
            } else {
                pair.ok.push(rate);
            }
        }
    }
    Ok(pair)
}

/// The bulk load by `wrk`: its two scripts, and where it and the server run.
struct WrkLoad {
    ok_script: std::path::PathBuf,
    not_modified_script: std::path::PathBuf,
    /// The CPUs `wrk` runs on, when the server could be pinned to another.
    cpus: Option<String>,
    description: String,
}

impl WrkLoad {
    /// Writes the scripts and pins the server to CPU 0 (wrk to the rest) when there are two
    /// CPUs or more and `taskset` works.
    fn prepare(server: &Server, directory: &Path, etag: &str) -> anyhow::Result<Self> {
        let script = |tag: Option<&str>| {
            let mut script = format!(
                "wrk.method = \"POST\"\n\
                 wrk.body = '{BULK_BODY}'\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n\
                 wrk.headers[\"X-Environment\"] = \"bulk\"\n"
            );
            if let Some(tag) = tag {
                script.push_str(&format!("wrk.headers[\"If-None-Match\"] = '{tag}'\n"));
            }
            script
        };
        let ok_script = directory.join("wrk-bulk-200.lua");
        let not_modified_script = directory.join("wrk-bulk-304.lua");
        std::fs::write(&ok_script, script(None)).context("writing the wrk script")?;
        std::fs::write(&not_modified_script, script(Some(etag)))
            .context("writing the wrk script")?;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let pinned = Self::can_pin()
            && std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", "0", &server.pid().to_string()])
                .output()
                .is_ok_and(|output| output.status.success());
        let (cpus, description) = if pinned {
            let list = if cpus == 2 {
                "1".to_owned()
            } else {
                format!("1-{}", cpus - 1)
            };
            let description = format!("wrk on CPU {list}, the server pinned to CPU 0");
            (Some(list), description)
        } else {
            (None, "wrk, sharing every core with the server".to_owned())
        };
        Ok(Self {
            ok_script,
            not_modified_script,
            cpus,
            description,
        })
    }

    /// Whether the server can have a CPU of its own: two CPUs or more, `wrk` and `taskset`.
    fn can_pin() -> bool {
        std::thread::available_parallelism().map_or(1, usize::from) >= 2
            && crate::ceiling::require_wrk().is_ok()
            && std::process::Command::new("taskset")
                .arg("-V")
                .output()
                .is_ok_and(|output| output.status.success())
    }

    /// One run of [`BULK_SECONDS`], answered `304` when `not_modified`, else `200`.
    fn run(&self, server: &Server, url: &str, not_modified: bool) -> anyhow::Result<BulkRate> {
        let script = if not_modified {
            &self.not_modified_script
        } else {
            &self.ok_script
        };
        let threads = if self.cpus.is_some() { 1 } else { 2 };
        let before = server.cpu_time().context("reading the server's CPU time")?;
        let seconds = usize::try_from(BULK_SECONDS).unwrap_or(3);
        let run = crate::ceiling::wrk_run(url, script, seconds, threads, self.cpus.as_deref())?;
        let cpu = server
            .cpu_time()
            .context("reading the server's CPU time")?
            .saturating_sub(before);
        if run.requests == 0 {
            bail!("wrk had no bulk request answered");
        }
        Ok(BulkRate {
            per_second: run.per_second,
            server_cpu_us: cpu.as_secs_f64() * 1e6 / run.requests as f64,
        })
    }
}

/// The context every bulk request evaluates.
const BULK_BODY: &str = r#"{"context":{"targetingKey":"user-1","plan":"pro","country":"de"}}"#;

/// One run of [`BULK_SECONDS`] by [`BULK_USERS`] users, with `If-None-Match: tag` when given
/// (every answer must then be `304`, else `200`).
async fn bulk_run(
    server: &Server,
    client: &reqwest::Client,
    url: &str,
    tag: Option<&str>,
) -> anyhow::Result<BulkRate> {
    let expected = if tag.is_some() { 304 } else { 200 };
    let served = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(BULK_SECONDS);
    let cpu_before = server.cpu_time().context("reading the server's CPU time")?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..BULK_USERS)
        .map(|_| {
            let (client, url, tag, served) = (
                client.clone(),
                url.to_owned(),
                tag.map(str::to_owned),
                Arc::clone(&served),
            );
            tokio::spawn(async move {
                while Instant::now() < until {
                    let mut request = client
                        .post(&url)
                        .header("X-Environment", "bulk")
                        .header("Content-Type", "application/json")
                        .body(BULK_BODY);
                    if let Some(tag) = &tag {
                        request = request.header("If-None-Match", tag);
                    }
                    match request.send().await {
                        Ok(response) if response.status().as_u16() == expected => {
                            let _ = response.bytes().await;
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a bulk client failed")?;
    }
    let took = started.elapsed();
    let cpu = server
        .cpu_time()
        .context("reading the server's CPU time")?
        .saturating_sub(cpu_before);
    let served = served.load(Ordering::Relaxed);
    if served == 0 {
        bail!("no bulk request was answered {expected}");
    }
    Ok(BulkRate {
        per_second: served as f64 / took.as_secs_f64(),
        server_cpu_us: cpu.as_secs_f64() * 1e6 / served as f64,
    })
}

/// The median of each figure over `runs`.
fn median_rate(runs: &[BulkRate]) -> BulkRate {
    BulkRate {
        per_second: median(runs.iter().map(|run| run.per_second)),
        server_cpu_us: median(runs.iter().map(|run| run.server_cpu_us)),
    }
}

/// Requests per second of server CPU.
fn capacity(rate: BulkRate) -> f64 {
    1e6 / rate.server_cpu_us.max(f64::MIN_POSITIVE)
}

/// Lets this process hold `streams` sockets (and some).
fn raise_descriptor_limit(streams: usize) -> anyhow::Result<()> {
    let wanted = u64::try_from(streams)
        .unwrap_or(u64::MAX)
        .saturating_add(1024);
    let raised = rlimit::increase_nofile_limit(wanted).context("raising RLIMIT_NOFILE")?;
    if raised < wanted {
        bail!("the descriptor limit is {raised}, {streams} streams need {wanted}: raise ulimit -n");
    }
    Ok(())
}
