//! Cross-instance propagation on `tiered`: three flag-server processes on one Redis and one
//! database; each write goes through the first, and the time until each of the other two answers
//! the new value (polling as fast as they answer) is one sample. The target: every write seen by
//! both others within 50 ms.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::backend::{Backend, Server, Stores};
use crate::report::micros;
use crate::seed::{Admin, counter_definition};

/// The environment the propagation run writes.
const ENVIRONMENT: &str = "propagation";
/// The flag it writes.
const FLAG: &str = "counter";
/// Every write must reach both other instances within this.
pub(crate) const TARGET: Duration = Duration::from_millis(50);

/// The propagation figures of one run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Propagation {
    pub(crate) writes: usize,
    pub(crate) samples: usize,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
}

impl Propagation {
    /// One line for the summary.
    pub(crate) fn line(&self) -> String {
        format!(
            "\npropagation on tiered (3 instances, {} writes through one, {} observations by the other two): P50 {}, P99 {}, max {} (target: max < {})\n",
            self.writes,
            self.samples,
            micros(self.p50_us),
            micros(self.p99_us),
            micros(self.max_us),
            micros(u64::try_from(TARGET.as_micros()).unwrap_or(u64::MAX))
        )
    }

    /// Whether every write arrived in time.
    pub(crate) fn within_target(&self) -> bool {
        u128::from(self.max_us) < TARGET.as_micros()
    }
}

/// Runs `writes` writes through a fresh trio of tiered instances on `directory`'s stores.
pub(crate) async fn measure(
    stores: &Stores,
    binary: &Path,
    directory: &Path,
    token: &str,
    writes: usize,
) -> anyhow::Result<Propagation> {
    let writer = stores
        .start_server(binary, Backend::Tiered, directory, token)
        .await?;
    let readers: Vec<Server> = vec![
        stores
            .start_another(binary, Backend::Tiered, directory, token)
            .await?,
        stores
            .start_another(binary, Backend::Tiered, directory, token)
            .await?,
    ];
    let admin = Admin::new(&writer.base_url, token);
    let client = reqwest::Client::new();
    admin.put(ENVIRONMENT, FLAG, &counter_definition(0)).await?;
    // Let every instance cache the flag, so each write has an L1 entry to drop.
    for reader in &readers {
        read(&client, &reader.base_url).await?;
    }
    let mut samples = Vec::with_capacity(writes * readers.len());
    for value in 1..=writes as u64 {
        admin
            .put(ENVIRONMENT, FLAG, &counter_definition(value))
            .await?;
        let written = Instant::now();
        for reader in &readers {
            loop {
                let seen = read(&client, &reader.base_url).await?;
                if seen >= value {
                    samples.push(written.elapsed());
                    break;
                }
                if written.elapsed() > Duration::from_secs(10) {
                    bail!("{} never answered {value} (still {seen})", reader.base_url);
                }
            }
        }
    }
    samples.sort();
    let at = |fraction: f64| {
        let index = ((samples.len() as f64 * fraction).ceil() as usize).clamp(1, samples.len()) - 1;
        u64::try_from(samples[index].as_micros()).unwrap_or(u64::MAX)
    };
    Ok(Propagation {
        writes,
        samples: samples.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: at(1.0),
    })
}

/// The counter value one instance answers.
async fn read(client: &reqwest::Client, base_url: &str) -> anyhow::Result<u64> {
    let answer: serde_json::Value = client
        .post(format!("{base_url}/ofrep/v1/evaluate/flags/{FLAG}"))
        .header("X-Environment", ENVIRONMENT)
        .header("Content-Type", "application/json")
        .body(r#"{"context":{"targetingKey":"propagation"}}"#)
        .send()
        .await
        .context("evaluating the counter")?
        .json()
        .await
        .context("reading the counter")?;
    answer["value"]
        .as_u64()
        .with_context(|| format!("no counter value in {answer}"))
}
