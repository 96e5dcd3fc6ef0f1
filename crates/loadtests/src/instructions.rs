//! Instructions per request (`--speed`): a figure that repeats on this machine where timings do
//! not (its speed drifts, and the load generator shares its cores).
//!
//! flag-server runs under `valgrind --tool=callgrind` (`memory` backend, the `load` environment
//! of 100 flags of the standard mix, seeded beforehand by a normal instance on the same database)
//! and is warmed; then `callgrind_control -e` reads its instruction count (`Ir`, every thread)
//! before and after a fixed number of requests sent one after another on one connection, and the
//! difference over the count is the figure. What the runtime does meanwhile on its own (timers,
//! the idle bus) is counted too and is small beside thousands of requests. Needs `valgrind` (on
//! Debian: `apt-get install valgrind`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::backend::{Backend, Server, Stores};
use crate::seed::{Admin, LOAD_ENVIRONMENT, flag_key};
use crate::shares::ofrep_post;

/// Single-flag requests counted.
const SINGLE_REQUESTS: u64 = 2_000;
/// Bulk requests counted.
const BULK_REQUESTS: u64 = 500;

/// The instruction counts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Instructions {
    /// Instructions per single-flag evaluation.
    pub(crate) single: u64,
    /// Instructions per bulk evaluation of 100 flags.
    pub(crate) bulk: u64,
    /// Instructions per bulk request answered `304`.
    pub(crate) bulk_not_modified: u64,
}

/// Seeds a database under `out`, then counts on an instance under callgrind.
pub(crate) async fn measure(
    stores: &Stores,
    binary: &Path,
    out: &Path,
    token: &str,
) -> anyhow::Result<Instructions> {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .context("valgrind is not on the PATH (apt-get install valgrind)")?;
    let directory = out.join("instructions").join("data");
    {
        let seeder = stores
            .start_server(binary, Backend::Memory, &directory, token)
            .await?;
        Admin::new(&seeder.base_url, token)
            .seed_environment(LOAD_ENVIRONMENT, 4)
            .await?;
    }
    let dump = directory.join("callgrind.out");
    let dump_argument = format!("--callgrind-out-file={}", dump.display());
    let server = stores
        .start_another_under(
            &["valgrind", "--tool=callgrind", &dump_argument],
            binary,
            Backend::Memory,
            &directory,
            token,
            &[],
        )
        .await?;
    crate::seed::warm(&server.base_url).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .context("building the client")?;
    let single = format!("/ofrep/v1/evaluate/flags/{}", flag_key(1));
    let bulk = "/ofrep/v1/evaluate/flags";
    let etag = ofrep_post(
        &client,
        &format!("{}{bulk}", server.base_url),
        LOAD_ENVIRONMENT,
    )
    .send()
    .await
    .context("sampling the bulk answer")?
    .headers()
    .get("etag")
    .and_then(|value| value.to_str().ok())
    .map(str::to_owned)
    .context("a bulk answer without an ETag")?;
    let count =
        |path, tag, requests, status| per_request(&server, &client, path, tag, requests, status);
    let single = count(&single, None, SINGLE_REQUESTS, 200).await?;
    let bulk_ok = count(bulk, None, BULK_REQUESTS, 200).await?;
    let bulk_not_modified = count(bulk, Some(etag.as_str()), SINGLE_REQUESTS, 304).await?;
    Ok(Instructions {
        single,
        bulk: bulk_ok,
        bulk_not_modified,
    })
}

/// The server's instructions per request over `requests` posts to `path`, each of which must
/// be answered `status`.
async fn per_request(
    server: &Server,
    client: &reqwest::Client,
    path: &str,
    tag: Option<&str>,
    requests: u64,
    status: u16,
) -> anyhow::Result<u64> {
    let url = format!("{}{path}", server.base_url);
    let before = instructions_so_far(server.pid())?;
    for _ in 0..requests {
        let mut request = ofrep_post(client, &url, LOAD_ENVIRONMENT);
        if let Some(tag) = tag {
            request = request.header("If-None-Match", tag);
        }
        let response = request.send().await.context("a counted request")?;
        if response.status().as_u16() != status {
            bail!("{path} answered {} instead of {status}", response.status());
        }
        response.bytes().await.context("reading a counted answer")?;
    }
    let after = instructions_so_far(server.pid())?;
    Ok(after.saturating_sub(before) / requests.max(1))
}

/// The instructions callgrind has counted in process `pid` so far (`callgrind_control -e`).
fn instructions_so_far(pid: u32) -> anyhow::Result<u64> {
    let output = Command::new("callgrind_control")
        .args(["-e", &pid.to_string()])
        .output()
        .context("running callgrind_control (it comes with valgrind)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    total_ir(&text).with_context(|| format!("no Ir total in callgrind_control's output: {text}"))
}

/// The `Ir` total of `callgrind_control -e`'s report: the sum of its per-thread lines
/// (`Th 1  5,931,656`).
fn total_ir(report: &str) -> Option<u64> {
    let mut threads = report.lines().filter_map(|line| {
        let figures = line.trim().strip_prefix("Th ")?;
        let (_, count) = figures.trim().split_once(char::is_whitespace)?;
        count.trim().replace(',', "").parse::<u64>().ok()
    });
    let first = threads.next()?;
    Some(first + threads.sum::<u64>())
}

/// The counts as a Markdown table.
pub(crate) fn table(counted: &Instructions) -> String {
    format!(
        "\ninstructions per request (callgrind, memory backend, 100 flags, requests one at a time):\n\n\
         | single flag | bulk, 100 flags | bulk `304` |\n|---:|---:|---:|\n| {} | {} | {} |\n",
        counted.single, counted.bulk, counted.bulk_not_modified
    )
}

#[cfg(test)]
mod tests {
    use super::total_ir;

    #[test]
    fn reads_callgrind_control_reports() {
        let report = "PID 5320: /work/flag-server\n\n  Totals:       Ir \n   Th 1  5,931,656 \n   Th 2     20,840 \n   Th 4  2,637,257 \nsending command status internal to pid 5320\n";
        assert_eq!(total_ir(report), Some(5_931_656 + 20_840 + 2_637_257));
        assert_eq!(total_ir("PID 1: x\n"), None);
    }
}
