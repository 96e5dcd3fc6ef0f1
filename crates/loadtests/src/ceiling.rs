//! `wrk` and the throughput ceiling: the trivial `ceiling` server answering a fixed body, the
//! Lua scripts that post OFREP requests, and one `wrk` run's figures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::backend::{OwnedChild, release_binary};

/// Fails with the install hint when `wrk` is not on the PATH.
pub(crate) fn require_wrk() -> anyhow::Result<()> {
    match Command::new("wrk").arg("-v").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!("wrk is not on the PATH (apt-get install wrk)"),
    }
}

/// A `wrk` script posting `body` as JSON with `X-Environment: env` (and `If-None-Match: tag`).
pub(crate) fn post_script(env: &str, body: &str, tag: Option<&str>) -> String {
    let mut script = format!(
        "wrk.method = \"POST\"\n\
         wrk.body = [==[{body}]==]\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"X-Environment\"] = \"{env}\"\n"
    );
    if let Some(tag) = tag {
        script.push_str(&format!("wrk.headers[\"If-None-Match\"] = [==[{tag}]==]\n"));
    }
    script
}

/// A `wrk` script posting `body` as JSON, each request to one of the environments
/// `<prefix>0` … `<prefix><count - 1>`, chosen at random.
pub(crate) fn spread_script(prefix: &str, count: usize, body: &str) -> String {
    format!(
        "wrk.method = \"POST\"\n\
         wrk.body = [==[{body}]==]\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         request = function()\n\
         \x20 wrk.headers[\"X-Environment\"] = \"{prefix}\" .. math.random(0, {last})\n\
         \x20 return wrk.format()\n\
         end\n",
        last = count.saturating_sub(1)
    )
}

/// A running `ceiling` server answering a fixed body, killed when dropped.
pub(crate) struct Ceiling {
    child: OwnedChild,
    /// `http://127.0.0.1:<port>`.
    pub(crate) address: String,
}

impl Ceiling {
    /// Starts the release `ceiling` binary answering bodies of `body_bytes`.
    pub(crate) fn start(body_bytes: usize) -> anyhow::Result<Self> {
        let binary = release_binary("ceiling")?;
        let mut child = Command::new(&binary)
            .args(["--body-bytes", &body_bytes.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the ceiling's stdout")?;
        let child = OwnedChild::new(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the ceiling's address")?;
        let address = line
            .trim()
            .strip_prefix("ceiling listening on ")
            .map(str::to_owned)
            .with_context(|| format!("unexpected first line from the ceiling: {line:?}"))?;
        Ok(Self { child, address })
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        self.child.kill();
    }
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
