//! What per-flag evaluation counts cost (`--counting`): the same `wrk` series (single and bulk)
//! on two `memory` instances seeded alike, one with `FLAG_EVALUATION_METRICS=on`, measured
//! interleaved round after round; the medians and their ratio are reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;

use crate::backend::{Backend, Server, Stores};
use crate::ceiling::wrk_run;
use crate::report::median;
use crate::seed::{Admin, LOAD_ENVIRONMENT};
use crate::shares::{Series, prepare};

/// One series, counting off and on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CountingCost {
    pub(crate) series: Series,
    /// Requests/s with counting off (median over the rounds).
    pub(crate) off_rps: f64,
    /// Requests/s with counting on (median over the rounds).
    pub(crate) on_rps: f64,
}

impl CountingCost {
    /// The rate with counting on over the rate with it off.
    pub(crate) fn ratio(&self) -> f64 {
        if self.off_rps > 0.0 {
            self.on_rps / self.off_rps
        } else {
            0.0
        }
    }
}

/// Per series: the URL path and the `wrk` script.
type Requests = BTreeMap<Series, (String, PathBuf)>;

/// Measures single and bulk with counting off and on.
pub(crate) async fn measure(
    stores: &Stores,
    binary: &Path,
    out: &Path,
    token: &str,
    seconds: usize,
    rounds: usize,
) -> anyhow::Result<Vec<CountingCost>> {
    if let Some(missing) = stores.missing(Backend::Memory) {
        bail!("the counting run needs the memory backend: {missing}");
    }
    let series = [Series::Single, Series::Bulk];
    let mut subjects: Vec<(Server, Requests)> = Vec::new();
    for (name, extra) in [
        ("off", &[][..]),
        ("on", &[("FLAG_EVALUATION_METRICS", "on")][..]),
    ] {
        let directory = out.join("counting").join(name);
        let server = stores
            .start_server_with(
                binary,
                Backend::Memory,
                &directory.join("data"),
                token,
                extra,
            )
            .await?;
        Admin::new(&server.base_url, token)
            .seed_environment(LOAD_ENVIRONMENT, 4)
            .await?;
        crate::seed::warm(&server.base_url).await?;
        let mut requests = BTreeMap::new();
        for &one in &series {
            let (path, script, _) = prepare(&server, one, &directory).await?;
            requests.insert(one, (path, script));
        }
        subjects.push((server, requests));
    }
    let mut rates: BTreeMap<(usize, Series), Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        println!("   counting round {round} of {rounds}");
        for &one in &series {
            for (index, (server, requests)) in subjects.iter().enumerate() {
                let Some((path, script)) = requests.get(&one) else {
                    continue;
                };
                let url = format!("{}{path}", server.base_url);
                let rate = wrk_run(&url, script, seconds, 2, None)?.per_second;
                rates.entry((index, one)).or_default().push(rate);
            }
        }
    }
    let rate =
        |index: usize, one: Series| median(rates.get(&(index, one)).into_iter().flatten().copied());
    Ok(series
        .iter()
        .map(|&one| CountingCost {
            series: one,
            off_rps: rate(0, one),
            on_rps: rate(1, one),
        })
        .collect())
}

/// The costs as a Markdown table.
pub(crate) fn table(costs: &[CountingCost], seconds: usize, rounds: usize) -> String {
    let mut out = format!(
        "\nPer-flag evaluation counts (FLAG_EVALUATION_METRICS), memory backend, 100 flags; \
         wrk -t2 -c50 -d{seconds}s, medians of {rounds} interleaved rounds:\n\n\
         | series | off requests/s | on requests/s | on / off |\n|---|---:|---:|---:|\n"
    );
    for cost in costs {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} |\n",
            cost.series.name(),
            cost.off_rps,
            cost.on_rps,
            cost.ratio()
        ));
    }
    out
}
