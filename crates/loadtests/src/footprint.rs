//! Memory (`--speed`): resident memory of a `memory` instance holding 10 environments of 1,000
//! flags, idle and under 50 connections of load, and what one cached flag and one cached
//! environment cost.
//!
//! Two fresh instances on the scaling database (see [`crate::scaling`]), each measured from its
//! own start (`VmRSS` after `/readyz`):
//! - one warms `mem-0` … `mem-9` (10 × 1,000 flags): its growth over 10,000 is the bytes per
//!   cached flag; then `wrk -t2 -c50` spreads single-flag, then bulk, evaluations over those
//!   environments, and the largest `VmRSS` seen (sampled every 100 ms) is the resident memory
//!   under load;
//! - one warms `spread-0` … `spread-99`, then `spread-100` … `spread-999` (environments of 10
//!   flags): its growth between the two, over 900, is the bytes per cached environment of 10
//!   flags (its flags included). Differences between two readings of one instance leave out
//!   what filling the first environments left behind in the allocator.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::backend::{Backend, Server, Stores};
use crate::ceiling::{spread_script, wrk_run};
use crate::scaling::{Database, FOOTPRINT_ENVIRONMENTS, FOOTPRINT_FLAGS, SETTINGS, environment};
use crate::seed::flag_key;
use crate::shares::CONTEXT_BODY;

/// Environments the second instance warms in all.
const MANY_ENVIRONMENTS: usize = 1_000;
/// Environments it warms before its first reading.
const FIRST_ENVIRONMENTS: usize = 100;

/// The memory figures, in kB of `VmRSS` unless named otherwise.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Footprint {
    /// After start, nothing cached.
    pub(crate) started_kb: u64,
    /// With the 10 environments of 1,000 flags cached.
    pub(crate) warm_kb: u64,
    /// The most seen under 50 connections of single-flag, then bulk, load.
    pub(crate) loaded_kb: u64,
    /// Bytes per cached flag.
    pub(crate) bytes_per_flag: f64,
    /// Bytes per cached environment of 10 flags, its flags included.
    pub(crate) bytes_per_environment: f64,
}

/// Measures both instances on `database`.
pub(crate) async fn measure(
    stores: &Stores,
    binary: &Path,
    database: &Database,
    token: &str,
    seconds: usize,
) -> anyhow::Result<Footprint> {
    let flags = (FOOTPRINT_ENVIRONMENTS * FOOTPRINT_FLAGS) as f64;
    let few: Vec<String> = (0..FOOTPRINT_ENVIRONMENTS)
        .map(|index| environment("mem-", index))
        .collect();
    let (started_kb, warm_kb, server) = growth(stores, binary, database, token, &few).await?;
    let loaded_kb = under_load(&server, database, seconds)?;
    drop(server);
    let first: Vec<String> = (0..FIRST_ENVIRONMENTS)
        .map(|index| environment("spread-", index))
        .collect();
    let rest: Vec<String> = (FIRST_ENVIRONMENTS..MANY_ENVIRONMENTS)
        .map(|index| environment("spread-", index))
        .collect();
    let (_, first_kb, server) = growth(stores, binary, database, token, &first).await?;
    crate::scaling::warm(&server, &rest).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_kb = server.resident_kb().context("reading VmRSS")?;
    let few_growth = warm_kb.saturating_sub(started_kb) as f64 * 1024.0;
    Ok(Footprint {
        started_kb,
        warm_kb,
        loaded_kb,
        bytes_per_flag: few_growth / flags,
        bytes_per_environment: all_kb.saturating_sub(first_kb) as f64 * 1024.0
            / (MANY_ENVIRONMENTS - FIRST_ENVIRONMENTS) as f64,
    })
}

/// A fresh `memory` instance's `VmRSS` after start and after warming `environments`.
async fn growth(
    stores: &Stores,
    binary: &Path,
    database: &Database,
    token: &str,
    environments: &[String],
) -> anyhow::Result<(u64, u64, Server)> {
    let server = stores
        .start_another_under(
            &[],
            binary,
            Backend::Memory,
            &database.directory,
            token,
            &SETTINGS,
        )
        .await?;
    let started = server.resident_kb().context("reading VmRSS")?;
    crate::scaling::warm(&server, environments).await?;
    // Let the runtime settle (the fills' buffers freed) before reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = server.resident_kb().context("reading VmRSS")?;
    Ok((started, warm, server))
}

/// The largest `VmRSS` seen while `wrk` spreads single-flag, then bulk, evaluations over the
/// footprint environments.
fn under_load(server: &Server, database: &Database, seconds: usize) -> anyhow::Result<u64> {
    let script = database.directory.join("footprint.lua");
    std::fs::write(
        &script,
        spread_script("mem-", FOOTPRINT_ENVIRONMENTS, CONTEXT_BODY),
    )
    .context("writing the footprint script")?;
    let peak = Arc::new(AtomicU64::new(server.resident_kb().unwrap_or(0)));
    let done = Arc::new(AtomicBool::new(false));
    let pid = server.pid();
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kb) = crate::backend::resident_kb_of(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let single = format!(
        "{}/ofrep/v1/evaluate/flags/{}",
        server.base_url,
        flag_key(1)
    );
    let bulk = format!("{}/ofrep/v1/evaluate/flags", server.base_url);
    let result = wrk_run(&single, &script, seconds, 2, None)
        .and_then(|_| wrk_run(&bulk, &script, seconds, 2, None));
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    result?;
    Ok(peak.load(Ordering::Relaxed))
}

/// The figures as a Markdown table.
pub(crate) fn table(footprint: &Footprint) -> String {
    format!(
        "\nmemory (memory backend, VmRSS): 10 environments of 1,000 flags\n\n\
         | started | warm (10 × 1,000 flags cached) | under wrk -c50 load (peak) | bytes per cached flag | bytes per cached environment of 10 flags |\n\
         |---:|---:|---:|---:|---:|\n\
         | {} kB | {} kB | {} kB | {:.0} | {:.0} |\n",
        footprint.started_kb,
        footprint.warm_kb,
        footprint.loaded_kb,
        footprint.bytes_per_flag,
        footprint.bytes_per_environment
    )
}
