//! Throughput as a share of the machine's ceiling (`--wrk`): every series beside a reference
//! measured in the same run.
//!
//! One instance per backend (`memory`, `tiered`, `redis`, as chosen) is seeded with the `load`
//! environment (100 flags of the standard mix) and warmed. Each series is `wrk -t2 -c50` (the load
//! generator on the same two cores as the server, as any single-machine figure here is) posting an
//! OFREP request; its reference is:
//! - `single` and `bulk`: the trivial `ceiling` server answering a fixed body exactly as large as
//!   the answer being measured (so the share is what evaluation costs beyond HTTP and bytes);
//! - `bulk 304` (the bulk request with the answer's own `ETag` in `If-None-Match`): the same
//!   backend's `single` rate, since a `304` should cost about a single-flag lookup.
//!
//! The machine's speed drifts by a fifth within a minute, so series and references are measured
//! interleaved, round after round (`--wrk-rounds`, 3 by default), and the medians are reported.
//! Targets: `single` ≥ 0.85 on `memory` and `tiered`, ≥ 0.55 on `redis`; `bulk` ≥ 0.45;
//! `bulk 304` ≥ 0.8 of `single`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::backend::{Backend, Server, Stores};
use crate::ceiling::{Ceiling, wrk_run};
use crate::report::median;
use crate::seed::{Admin, LOAD_ENVIRONMENT, flag_key};

/// The context every series posts.
pub(crate) const CONTEXT_BODY: &str =
    r#"{"context":{"targetingKey":"user-7","plan":"pro","email":"a@example.com"}}"#;

/// An OFREP `POST` of [`CONTEXT_BODY`] to `url` in environment `env`.
pub(crate) fn ofrep_post(
    client: &reqwest::Client,
    url: &str,
    env: &str,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Environment", env)
        .body(CONTEXT_BODY)
}

/// What a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Series {
    /// One flag evaluated.
    Single,
    /// Every flag of `load` evaluated, answered `200`.
    Bulk,
    /// The bulk request with its answer's `ETag`, answered `304`.
    BulkNotModified,
}

impl Series {
    /// The name in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Series::Single => "single",
            Series::Bulk => "bulk",
            Series::BulkNotModified => "bulk 304",
        }
    }

    /// The share of its reference the series must reach on `backend`.
    fn target(self, backend: Backend) -> f64 {
        match (self, backend) {
            (Series::Single, Backend::Redis | Backend::RedisPostgres) => 0.55,
            (Series::Single, _) => 0.85,
            (Series::Bulk, _) => 0.45,
            (Series::BulkNotModified, _) => 0.8,
        }
    }

    /// The series each backend runs: the bulk ones only where the cache is in-process.
    fn of(backend: Backend) -> &'static [Series] {
        match backend {
            Backend::Memory | Backend::Tiered => {
                &[Series::Single, Series::Bulk, Series::BulkNotModified]
            }
            Backend::Redis | Backend::RedisPostgres => &[Series::Single],
        }
    }
}

/// One series' medians beside its reference's.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Share {
    pub(crate) series: Series,
    pub(crate) backend: &'static str,
    /// Bytes of the answer's body.
    pub(crate) answer_bytes: usize,
    /// flag-server's requests/s (median over the rounds).
    pub(crate) flag_server_rps: f64,
    /// What the series is measured against.
    pub(crate) reference: String,
    /// The reference's requests/s (median over the rounds).
    pub(crate) reference_rps: f64,
    /// The share it must reach.
    pub(crate) target: f64,
}

impl Share {
    /// flag-server's rate over the reference's.
    pub(crate) fn ratio(&self) -> f64 {
        if self.reference_rps > 0.0 {
            self.flag_server_rps / self.reference_rps
        } else {
            0.0
        }
    }

    /// Whether the share reaches its target.
    pub(crate) fn met(&self) -> bool {
        self.ratio() >= self.target
    }
}

/// One backend's instance with what its series post.
struct Subject {
    backend: Backend,
    server: Server,
    /// Per series: the URL path, the script, the answer's size.
    requests: BTreeMap<Series, (String, PathBuf, usize)>,
}

/// Measures every series of every backend in `backends` (those that can run here).
pub(crate) async fn measure(
    stores: &Stores,
    binary: &Path,
    out: &Path,
    token: &str,
    backends: &[Backend],
    seconds: usize,
    rounds: usize,
) -> anyhow::Result<Vec<Share>> {
    let mut subjects = Vec::new();
    for &backend in backends {
        if backend == Backend::RedisPostgres || stores.missing(backend).is_some() {
            continue;
        }
        let directory = out.join("shares").join(backend.name());
        let server = stores
            .start_server(binary, backend, &directory.join("data"), token)
            .await?;
        let admin = Admin::new(&server.base_url, token);
        admin.seed_environment(LOAD_ENVIRONMENT, 4).await?;
        crate::seed::warm(&server.base_url).await?;
        let mut requests = BTreeMap::new();
        for &series in Series::of(backend) {
            let (path, script, bytes) = prepare(&server, series, &directory).await?;
            requests.insert(series, (path, script, bytes));
        }
        subjects.push(Subject {
            backend,
            server,
            requests,
        });
    }
    if subjects.is_empty() {
        bail!("no backend could run the wrk series");
    }
    // One ceiling per answer size, all started before the first round.
    let mut ceilings: BTreeMap<usize, Ceiling> = BTreeMap::new();
    for subject in &subjects {
        for (series, (_, _, bytes)) in &subject.requests {
            if *series != Series::BulkNotModified && !ceilings.contains_key(bytes) {
                ceilings.insert(*bytes, Ceiling::start(*bytes)?);
            }
        }
    }
    let mut own: BTreeMap<(usize, Series), Vec<f64>> = BTreeMap::new();
    let mut reference: BTreeMap<(usize, Series), Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        println!("   wrk round {round} of {rounds}");
        for (index, subject) in subjects.iter().enumerate() {
            for (series, (path, script, bytes)) in &subject.requests {
                let url = format!("{}{path}", subject.server.base_url);
                let rate = wrk_run(&url, script, seconds, 2, None)?.per_second;
                own.entry((index, *series)).or_default().push(rate);
                if let Some(ceiling) = ceilings.get(bytes)
                    && *series != Series::BulkNotModified
                {
                    let url = format!("{}{path}", ceiling.address);
                    let rate = wrk_run(&url, script, seconds, 2, None)?.per_second;
                    reference.entry((index, *series)).or_default().push(rate);
                }
            }
        }
    }
    let mut shares = Vec::new();
    for (index, subject) in subjects.iter().enumerate() {
        for (series, (_, _, bytes)) in &subject.requests {
            let rates = |figures: &BTreeMap<(usize, Series), Vec<f64>>, series: Series| {
                median(figures.get(&(index, series)).into_iter().flatten().copied())
            };
            let (reference_name, reference_rps) = match series {
                Series::BulkNotModified => (
                    format!("flag-server single ({})", subject.backend.name()),
                    rates(&own, Series::Single),
                ),
                _ => (
                    format!("ceiling, {bytes} B body"),
                    rates(&reference, *series),
                ),
            };
            shares.push(Share {
                series: *series,
                backend: subject.backend.name(),
                answer_bytes: *bytes,
                flag_server_rps: rates(&own, *series),
                reference: reference_name,
                reference_rps,
                target: series.target(subject.backend),
            });
        }
    }
    Ok(shares)
}

/// The path, `wrk` script and answer size of `series` on `server`, after checking that the
/// server answers it as the series expects (`200`, or `304` for its own tag).
pub(crate) async fn prepare(
    server: &Server,
    series: Series,
    directory: &Path,
) -> anyhow::Result<(String, PathBuf, usize)> {
    let path = match series {
        Series::Single => format!("/ofrep/v1/evaluate/flags/{}", flag_key(1)),
        Series::Bulk | Series::BulkNotModified => "/ofrep/v1/evaluate/flags".to_owned(),
    };
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.base_url);
    let post = || ofrep_post(&client, &url, LOAD_ENVIRONMENT);
    let sample = post().send().await.context("sampling the answer")?;
    if !sample.status().is_success() {
        bail!("{} answered {}", series.name(), sample.status());
    }
    let etag = sample
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = sample.bytes().await.context("reading the sample")?.len();
    let tag = match series {
        Series::BulkNotModified => {
            let etag = etag.context("a bulk answer without an ETag")?;
            // wrk counts any answer under 400 as served: make sure the tag is answered 304.
            let check = post()
                .header("If-None-Match", &etag)
                .send()
                .await
                .context("checking the 304")?;
            if check.status().as_u16() != 304 {
                bail!("the bulk answer's own ETag was answered {}", check.status());
            }
            Some(etag)
        }
        _ => None,
    };
    let script = crate::ceiling::post_script(LOAD_ENVIRONMENT, CONTEXT_BODY, tag.as_deref());
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let script_path = directory.join(format!("wrk-{}.lua", series.name().replace(' ', "-")));
    std::fs::write(&script_path, script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    Ok((path, script_path, bytes))
}

/// The shares as a Markdown table.
pub(crate) fn table(shares: &[Share], seconds: usize, rounds: usize) -> String {
    let mut out = format!(
        "\nwrk -t2 -c50 -d{seconds}s, medians of {rounds} interleaved rounds (load generator on the same cores):\n\n\
         | series | backend | answer bytes | flag-server requests/s | reference | reference requests/s | share | target |\n\
         |---|---|---:|---:|---|---:|---:|---:|\n"
    );
    for share in shares {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {:.0} | {:.2} | ≥ {:.2}{} |\n",
            share.series.name(),
            share.backend,
            share.answer_bytes,
            share.flag_server_rps,
            share.reference,
            share.reference_rps,
            share.ratio(),
            share.target,
            if share.met() { "" } else { " (missed)" }
        ));
    }
    out
}
