//! The throughput ceiling: the same `wrk` load (2 threads, 50 connections, a Lua script for the
//! OFREP POST) against flag-server and against the trivial `ceiling` server answering a body of
//! the same size, and flag-server's requests/s as a fraction of the ceiling's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::backend::{Backend, release_binary};
use crate::scenarios::ScenarioKind;
use crate::seed::{LOAD_ENVIRONMENT, flag_key};

/// One scenario's throughput beside the machine's ceiling.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CeilingRow {
    pub(crate) scenario: &'static str,
    pub(crate) backend: &'static str,
    pub(crate) response_bytes: usize,
    pub(crate) flag_server_rps: f64,
    pub(crate) ceiling_rps: f64,
}

impl CeilingRow {
    /// flag-server's requests/s over the ceiling's.
    pub(crate) fn ratio(&self) -> f64 {
        if self.ceiling_rps > 0.0 {
            self.flag_server_rps / self.ceiling_rps
        } else {
            0.0
        }
    }
}

/// Fails with the install hint when `wrk` is not on the PATH.
pub(crate) fn require_wrk() -> anyhow::Result<()> {
    match Command::new("wrk").arg("-v").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!("wrk is not on the PATH (apt-get install wrk)"),
    }
}

/// What `wrk` sends for `scenario`: the path and the Lua script.
fn request(scenario: ScenarioKind) -> anyhow::Result<(String, String)> {
    let path = match scenario {
        ScenarioKind::Single => format!("/ofrep/v1/evaluate/flags/{}", flag_key(1)),
        ScenarioKind::Bulk => "/ofrep/v1/evaluate/flags".to_owned(),
        other => bail!("no wrk measurement for the {} scenario", other.name()),
    };
    let script = format!(
        "wrk.method = \"POST\"\n\
         wrk.body = '{{\"context\":{{\"targetingKey\":\"user-7\",\"plan\":\"pro\",\"email\":\"a@example.com\"}}}}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"X-Environment\"] = \"{LOAD_ENVIRONMENT}\"\n"
    );
    Ok((path, script))
}

/// Measures `scenario` on the server at `base_url`, then the ceiling with the same answer size.
pub(crate) async fn measure(
    base_url: &str,
    backend: Backend,
    scenario: ScenarioKind,
    seconds: usize,
    out: &Path,
) -> anyhow::Result<CeilingRow> {
    let (path, script) = request(scenario)?;
    let script_path = out.join(format!("wrk-{}.lua", scenario.name()));
    std::fs::write(&script_path, &script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    let sample = reqwest::Client::new()
        .post(format!("{base_url}{path}"))
        .header("Content-Type", "application/json")
        .header("X-Environment", LOAD_ENVIRONMENT)
        .body(r#"{"context":{"targetingKey":"user-7","plan":"pro","email":"a@example.com"}}"#)
        .send()
        .await
        .context("sampling the answer")?
        .bytes()
        .await
        .context("reading the sample answer")?;
    let flag_server_rps = wrk(&format!("{base_url}{path}"), &script_path, seconds)?;

    let binary = release_binary("ceiling")?;
    let mut ceiling = Command::new(&binary)
        .args(["--body-bytes", &sample.len().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let address = {
        let stdout = ceiling.stdout.take().context("the ceiling's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the ceiling's address")?;
        line.trim()
            .strip_prefix("ceiling listening on ")
            .map(str::to_owned)
            .with_context(|| format!("unexpected first line from the ceiling: {line:?}"))?
    };
    let ceiling_rps = wrk(&format!("{address}{path}"), &script_path, seconds);
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    Ok(CeilingRow {
        scenario: scenario.name(),
        backend: backend.name(),
        response_bytes: sample.len(),
        flag_server_rps,
        ceiling_rps: ceiling_rps?,
    })
}

/// `wrk -t2 -c50 -d<seconds>s -s <script> <url>`: its requests/s.
fn wrk(url: &str, script: &Path, seconds: usize) -> anyhow::Result<f64> {
    Ok(wrk_run(url, script, seconds, 2, None)?.per_second)
}

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WrkRun {
    /// Requests answered per second.
    pub(crate) per_second: f64,
    /// Requests answered in all.
    pub(crate) requests: u64,
}

/// `wrk -t<threads> -c50 -d<seconds>s -s <script> <url>`, on the CPUs `cpus` (a `taskset` list)
/// when given; fails on any answer wrk counts as an error (`4xx`, `5xx`, socket errors).
pub(crate) fn wrk_run(
    url: &str,
    script: &Path,
    seconds: usize,
    threads: usize,
    cpus: Option<&str>,
) -> anyhow::Result<WrkRun> {
    let mut command = match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus, "wrk"]);
            command
        }
        None => Command::new("wrk"),
    };
    let output = command
        .args([
            &format!("-t{threads}"),
            "-c50",
            &format!("-d{seconds}s"),
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    if let Some(line) = text
        .lines()
        .find(|line| line.contains("Non-2xx") || line.contains("Socket errors"))
    {
        bail!("wrk saw errors from {url}: {line}");
    }
    let per_second = requests_per_second(&text)
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.trim().parse().ok())
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    Ok(WrkRun {
        per_second,
        requests,
    })
}

/// The `Requests/sec:` figure of wrk's report.
fn requests_per_second(report: &str) -> Option<f64> {
    report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
}

/// The ceiling rows as a Markdown table.
pub(crate) fn table(rows: &[CeilingRow]) -> String {
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

#[cfg(test)]
mod tests {
    use super::requests_per_second;

    #[test]
    fn reads_wrk_reports() {
        let report = "Running 10s test @ http://127.0.0.1:8080/\n  2 threads and 50 connections\n\
                      Requests/sec:  41234.56\nTransfer/sec:      5.12MB\n";
        assert_eq!(requests_per_second(report), Some(41_234.56));
        assert_eq!(requests_per_second("nothing"), None);
    }
}
