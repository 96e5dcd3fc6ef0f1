//! What a switch costs: the same `wrk` series (single and bulk) on two `memory` instances seeded
//! alike, one with the switch on, measured interleaved round after round; the medians and their
//! ratio are reported. The switches: per-flag evaluation counts (`--counting`,
//! `FLAG_EVALUATION_METRICS=on`) and OpenTelemetry (`--telemetry`: traces of every request and
//! metrics exported to an OTLP/HTTP sink of the runner's own that answers `200` at once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;

use crate::backend::{Backend, Server, Stores};
use crate::ceiling::wrk_run;
use crate::report::median;
use crate::seed::{Admin, LOAD_ENVIRONMENT};
use crate::shares::{Series, prepare};

/// A setting measured off and on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Switch {
    /// `FLAG_EVALUATION_METRICS=on`.
    Counting,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` set (every request traced, metrics every second).
    Telemetry,
    /// The same, with 1 % of the traces sampled (`OTEL_TRACES_SAMPLER=traceidratio`).
    TelemetrySampled,
}

impl Switch {
    /// What the table's title calls it.
    fn title(self) -> &'static str {
        match self {
            Switch::Counting => "Per-flag evaluation counts (FLAG_EVALUATION_METRICS)",
            Switch::Telemetry => {
                "OpenTelemetry (every request traced, spans and metrics exported over OTLP/HTTP to a local sink)"
            }
            Switch::TelemetrySampled => {
                "OpenTelemetry with 1 % of traces sampled (OTEL_TRACES_SAMPLER=traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01)"
            }
        }
    }

    /// The variables that turn it on, given the sink's endpoint.
    fn on(self, sink: &str) -> Vec<(&'static str, String)> {
        match self {
            Switch::Counting => vec![("FLAG_EVALUATION_METRICS", "on".to_owned())],
            Switch::Telemetry => vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.to_owned()),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
            ],
            Switch::TelemetrySampled => {
                let mut on = Switch::Telemetry.on(sink);
                on.push(("OTEL_TRACES_SAMPLER", "traceidratio".to_owned()));
                on.push(("OTEL_TRACES_SAMPLER_ARG", "0.01".to_owned()));
                on
            }
        }
    }
}

/// One series, a switch off and on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CountingCost {
    /// What was switched.
    pub(crate) switch: Switch,
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

/// Measures single and bulk with `switch` off and on.
pub(crate) async fn measure(
    stores: &Stores,
    binary: &Path,
    out: &Path,
    token: &str,
    seconds: usize,
    rounds: usize,
    switch: Switch,
) -> anyhow::Result<Vec<CountingCost>> {
    if let Some(missing) = stores.missing(Backend::Memory) {
        bail!("the switch runs need the memory backend: {missing}");
    }
    let series = [Series::Single, Series::Bulk];
    let sink = sink().await?;
    let on = switch.on(&sink);
    let on: Vec<(&str, &str)> = on
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let mut subjects: Vec<(Server, Requests)> = Vec::new();
    for (name, extra) in [("off", &[][..]), ("on", &on[..])] {
        let directory = out.join(format!("{switch:?}").to_lowercase()).join(name);
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
        println!("   {switch:?} round {round} of {rounds}");
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
            switch,
            series: one,
            off_rps: rate(0, one),
            on_rps: rate(1, one),
        })
        .collect())
}

/// An OTLP/HTTP sink on 127.0.0.1: reads each request whole and answers `200` with an empty
/// body at once (what a healthy collector costs the exporter). Answers its endpoint.
async fn sink() -> anyhow::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(endpoint)
}

/// The costs as Markdown tables, one per switch.
pub(crate) fn table(costs: &[CountingCost], seconds: usize, rounds: usize) -> String {
    let mut out = String::new();
    for switch in [
        Switch::Counting,
        Switch::Telemetry,
        Switch::TelemetrySampled,
    ] {
        let measured: Vec<&CountingCost> =
            costs.iter().filter(|cost| cost.switch == switch).collect();
        if !measured.is_empty() {
            out.push_str(&switch_table(switch, &measured, seconds, rounds));
        }
    }
    out
}

/// One switch's costs as a Markdown table.
fn switch_table(switch: Switch, costs: &[&CountingCost], seconds: usize, rounds: usize) -> String {
    let mut out = format!(
        "\n{}, memory backend, 100 flags; \
         wrk -t2 -c50 -d{seconds}s, medians of {rounds} interleaved rounds:\n\n\
         | series | off requests/s | on requests/s | on / off |\n|---|---:|---:|---:|\n",
        switch.title()
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
