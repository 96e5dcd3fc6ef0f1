//! Scaling (`--speed`): how the cost of an evaluation grows with flags per environment,
//! environments, context attributes, rules per flag and segment size.
//!
//! One SQLite database is seeded once, through the management API of a `memory` instance:
//! - `size-10`, `size-1000`, `size-10000`: that many flags (static, rule-based and rollouts in
//!   turn);
//! - `spread-0` … `spread-999`: 10 flags each;
//! - `mem-0` … `mem-9`: 1,000 flags each (the footprint run's, see [`crate::footprint`]);
//! - `shapes`: flags `rules-1`, `rules-10` and `rules-100` (that many rules, none of which matches,
//!   so every one is tried), and `segment-10` and `segment-10000` (a rule on a segment of that
//!   many included keys, which the user is not in).
//!
//! Then an instance of each backend (`memory`, `redis`, `tiered`, as chosen) on that database is
//! warmed (one bulk evaluation of each environment) and measured with `wrk -t2 -c50`, every row
//! once per round (`--wrk-rounds`), rows interleaved, medians reported: requests/s, and the
//! server's own CPU time per request (`/proc/<pid>/stat` over the run). Flags per environment
//! and environments run on every backend; context, rules and segments, which cost the same
//! whichever cache answers, on `memory` only. A dimension is flat when its slowest row keeps
//! 90 % of its fastest row's requests/s.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::backend::{Backend, Server, Stores};
use crate::ceiling::{post_script, spread_script, wrk_run};
use crate::report::median;
use crate::seed::{Admin, flag_key, three_kinds};
use crate::shares::{CONTEXT_BODY, ofrep_post};

/// Flags per environment measured.
pub(crate) const FLAG_COUNTS: [usize; 3] = [10, 1_000, 10_000];
/// Environments the spread rows send their traffic over.
const ENVIRONMENT_COUNTS: [usize; 3] = [1, 100, 1_000];
/// Flags of each `spread-` environment.
const SPREAD_FLAGS: usize = 10;
/// Context attributes measured (`targetingKey` among them).
const ATTRIBUTE_COUNTS: [usize; 3] = [1, 50, 500];
/// Rules per flag measured.
const RULE_COUNTS: [usize; 3] = [1, 10, 100];
/// Included keys per segment measured.
const SEGMENT_SIZES: [usize; 2] = [10, 10_000];
/// The footprint run's environments and their size.
pub(crate) const FOOTPRINT_ENVIRONMENTS: usize = 10;
/// Flags of each footprint environment.
pub(crate) const FOOTPRINT_FLAGS: usize = 1_000;
/// The environment of the context, rules and segment rows.
const SHAPES: &str = "shapes";
/// How much of its fastest row's rate a dimension's slowest row must keep to be flat.
const FLAT: f64 = 0.9;
/// The settings every instance on the scaling database runs with: more environments than the
/// default limit of 1,000 exist there.
pub(crate) const SETTINGS: [(&str, &str); 1] = [("FLAG_MAX_ENVIRONMENTS", "2000")];

/// The name of the `index`th environment of `prefix`.
pub(crate) fn environment(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// The database every scaling and footprint instance runs on.
pub(crate) struct Database {
    /// The directory of the SQLite file (what [`Stores::start_another`] takes).
    pub(crate) directory: PathBuf,
}

/// Seeds the scaling database under `out` through a `memory` instance.
pub(crate) async fn seed(
    stores: &Stores,
    binary: &Path,
    out: &Path,
    token: &str,
) -> anyhow::Result<Database> {
    let directory = out.join("scaling").join("data");
    let server = stores
        .start_server_with(binary, Backend::Memory, &directory, token, &SETTINGS)
        .await?;
    let admin = Admin::new(&server.base_url, token);
    let started = std::time::Instant::now();
    let mut writes: Vec<(String, String, Value)> = Vec::new();
    for count in FLAG_COUNTS {
        let env = environment("size-", count);
        writes.extend((0..count).map(|index| (env.clone(), flag_key(index), three_kinds(index))));
    }
    for index in 0..ENVIRONMENT_COUNTS[2] {
        let env = environment("spread-", index);
        writes
            .extend((0..SPREAD_FLAGS).map(|flag| (env.clone(), flag_key(flag), three_kinds(flag))));
    }
    for index in 0..FOOTPRINT_ENVIRONMENTS {
        let env = environment("mem-", index);
        writes.extend(
            (0..FOOTPRINT_FLAGS).map(|flag| (env.clone(), flag_key(flag), three_kinds(flag))),
        );
    }
    for size in SEGMENT_SIZES {
        let included: Vec<String> = (0..size).map(|n| format!("member-{n}")).collect();
        admin
            .put_segment(
                SHAPES,
                &format!("members-{size}"),
                &json!({"included": included}),
            )
            .await?;
        writes.push((
            SHAPES.to_owned(),
            format!("segment-{size}"),
            json!({
                "enabled": true,
                "defaultVariant": "off",
                "rules": [{"conditions": [{"operator": "in_segment", "value": format!("members-{size}")}], "variant": "on"}]
            }),
        ));
    }
    for count in RULE_COUNTS {
        let rules: Vec<Value> = (0..count)
            .map(|rule| {
                json!({"conditions": [{"attribute": "plan", "operator": "equals", "value": format!("plan-{rule}")}], "variant": "on"})
            })
            .collect();
        writes.push((
            SHAPES.to_owned(),
            format!("rules-{count}"),
            json!({"enabled": true, "defaultVariant": "off", "rules": rules}),
        ));
    }
    let total = writes.len();
    println!("   seeding the scaling database: {total} flags");
    admin.put_all(writes, 4).await?;
    println!(
        "   seeded {total} flags in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Database { directory })
}

/// One measured row: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScalingRow {
    /// The dimension: `flags`, `environments`, `attributes`, `rules` or `segment keys`.
    pub(crate) dimension: &'static str,
    /// Its size in this row.
    pub(crate) size: usize,
    /// `single` or `bulk`.
    pub(crate) request: &'static str,
    pub(crate) backend: &'static str,
    pub(crate) requests_per_second: f64,
    /// The server's CPU time per request, in µs.
    pub(crate) cpu_us_per_request: f64,
}

/// A row to measure: what it is and what `wrk` posts.
struct Plan {
    dimension: &'static str,
    size: usize,
    request: &'static str,
    path: String,
    script: PathBuf,
}

/// Measures every row on an instance of each backend in `backends` on `database`.
#[expect(clippy::too_many_arguments, reason = "the run's settings, each used")]
pub(crate) async fn measure(
    stores: &Stores,
    binary: &Path,
    database: &Database,
    out: &Path,
    token: &str,
    backends: &[Backend],
    seconds: usize,
    rounds: usize,
) -> anyhow::Result<Vec<ScalingRow>> {
    let scripts = out.join("scaling");
    let mut rows = Vec::new();
    for &backend in backends {
        if backend == Backend::RedisPostgres || stores.missing(backend).is_some() {
            continue;
        }
        println!("   scaling on {}", backend.name());
        let server = stores
            .start_another_under(&[], binary, backend, &database.directory, token, &SETTINGS)
            .await?;
        let plans = plans(backend, &scripts)?;
        let mut environments: Vec<String> = FLAG_COUNTS
            .iter()
            .map(|count| environment("size-", *count))
            .collect();
        environments.extend((0..ENVIRONMENT_COUNTS[2]).map(|index| environment("spread-", index)));
        environments.push(SHAPES.to_owned());
        warm(&server, &environments).await?;
        let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); plans.len()];
        for _ in 0..rounds {
            for (plan, samples) in plans.iter().zip(&mut samples) {
                samples.push(run(&server, plan, seconds)?);
            }
        }
        for (plan, samples) in plans.iter().zip(samples) {
            rows.push(ScalingRow {
                dimension: plan.dimension,
                size: plan.size,
                request: plan.request,
                backend: backend.name(),
                requests_per_second: median(samples.iter().map(|sample| sample.0)),
                cpu_us_per_request: median(samples.iter().map(|sample| sample.1)),
            });
        }
    }
    Ok(rows)
}

/// The rows `backend` runs, with their scripts written under `scripts`.
fn plans(backend: Backend, scripts: &Path) -> anyhow::Result<Vec<Plan>> {
    std::fs::create_dir_all(scripts).with_context(|| format!("creating {}", scripts.display()))?;
    let mut plans = Vec::new();
    let mut plan = |dimension: &'static str,
                    size: usize,
                    request: &'static str,
                    path: String,
                    script: String|
     -> anyhow::Result<()> {
        let file = scripts.join(format!(
            "{}-{}-{size}-{request}.lua",
            backend.name(),
            dimension.replace(' ', "-")
        ));
        std::fs::write(&file, script).with_context(|| format!("writing {}", file.display()))?;
        plans.push(Plan {
            dimension,
            size,
            request,
            path,
            script: file,
        });
        Ok(())
    };
    let single = format!("/ofrep/v1/evaluate/flags/{}", flag_key(1));
    let bulk = "/ofrep/v1/evaluate/flags".to_owned();
    for count in FLAG_COUNTS {
        let env = environment("size-", count);
        let script = post_script(&env, CONTEXT_BODY, None);
        plan("flags", count, "single", single.clone(), script.clone())?;
        plan("flags", count, "bulk", bulk.clone(), script)?;
    }
    for count in ENVIRONMENT_COUNTS {
        let script = spread_script("spread-", count, CONTEXT_BODY);
        plan("environments", count, "single", single.clone(), script)?;
    }
    if backend != Backend::Memory {
        return Ok(plans);
    }
    let rules_flag = format!("/ofrep/v1/evaluate/flags/{}", "rules-1");
    for count in ATTRIBUTE_COUNTS {
        let script = post_script(SHAPES, &context_of(count), None);
        plan("attributes", count, "single", rules_flag.clone(), script)?;
    }
    for count in RULE_COUNTS {
        let path = format!("/ofrep/v1/evaluate/flags/rules-{count}");
        plan(
            "rules",
            count,
            "single",
            path,
            post_script(SHAPES, CONTEXT_BODY, None),
        )?;
    }
    for size in SEGMENT_SIZES {
        let path = format!("/ofrep/v1/evaluate/flags/segment-{size}");
        plan(
            "segment keys",
            size,
            "single",
            path,
            post_script(SHAPES, CONTEXT_BODY, None),
        )?;
    }
    Ok(plans)
}

/// An OFREP request body whose context has `count` attributes (`targetingKey` and `plan` among
/// them when there is room).
pub(crate) fn context_of(count: usize) -> String {
    let mut context = serde_json::Map::new();
    context.insert("targetingKey".into(), json!("user-7"));
    if count > 1 {
        context.insert("plan".into(), json!("pro"));
    }
    for index in context.len()..count {
        context.insert(
            format!("attribute-{index}"),
            json!(format!("value-{index}")),
        );
    }
    json!({ "context": context }).to_string()
}

/// One bulk evaluation of each of `environments`, so that every row starts on a warm cache.
pub(crate) async fn warm(server: &Server, environments: &[String]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{}/ofrep/v1/evaluate/flags", server.base_url);
    for env in environments {
        let status = ofrep_post(&client, &url, env)
            .send()
            .await
            .with_context(|| format!("warming {env}"))?
            .status();
        if !status.is_success() {
            bail!("warming {env}: {status}");
        }
    }
    Ok(())
}

/// One `wrk` run of `plan`: requests/s and the server's CPU µs per request.
fn run(server: &Server, plan: &Plan, seconds: usize) -> anyhow::Result<(f64, f64)> {
    let before = server.cpu_time().context("reading the server's CPU time")?;
    let measured = wrk_run(
        &format!("{}{}", server.base_url, plan.path),
        &plan.script,
        seconds,
        2,
        None,
    )?;
    let after = server.cpu_time().context("reading the server's CPU time")?;
    let cpu_us = after.saturating_sub(before).as_secs_f64() * 1e6 / measured.requests.max(1) as f64;
    Ok((measured.per_second, cpu_us))
}

/// Whether the rows of one dimension, request and backend are flat, and their spread.
fn spread(rows: &[&ScalingRow]) -> (bool, f64) {
    let rates = rows.iter().map(|row| row.requests_per_second);
    let fastest = rates.clone().fold(0.0, f64::max);
    let slowest = rates.fold(f64::INFINITY, f64::min);
    let kept = if fastest > 0.0 {
        slowest / fastest
    } else {
        0.0
    };
    (kept >= FLAT, kept)
}

/// The rows as Markdown tables, one per dimension.
pub(crate) fn table(rows: &[ScalingRow], seconds: usize, rounds: usize) -> String {
    let mut out = format!(
        "\nscaling: wrk -t2 -c50 -d{seconds}s, medians of {rounds} interleaved rounds; server CPU per request from /proc; \
         flat = the slowest size keeps {:.0} % of the fastest's requests/s\n",
        FLAT * 100.0
    );
    let mut keys: Vec<(&str, &str, &str)> = Vec::new();
    for row in rows {
        let key = (row.dimension, row.request, row.backend);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut dimension = "";
    for (name, request, backend) in keys {
        let group: Vec<&ScalingRow> = rows
            .iter()
            .filter(|row| (row.dimension, row.request, row.backend) == (name, request, backend))
            .collect();
        if name != dimension {
            dimension = name;
            out.push_str(&format!(
                "\n| {name} | request | backend | requests/s | server CPU µs per request | µs per flag |\n|---:|---|---|---:|---:|---:|\n"
            ));
        }
        for row in &group {
            let per_flag = if row.dimension == "flags" && row.request == "bulk" {
                format!("{:.2}", row.cpu_us_per_request / row.size as f64)
            } else {
                "".to_owned()
            };
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.1} | {per_flag} |\n",
                row.size, row.request, row.backend, row.requests_per_second, row.cpu_us_per_request
            ));
        }
        if request == "single" {
            let (flat, kept) = spread(&group);
            out.push_str(&format!(
                "| | | {backend} | {} ({:.0} % kept) | | |\n",
                if flat { "flat" } else { "not flat" },
                kept * 100.0
            ));
        }
    }
    out
}

/// The single-flag dimensions that are not flat, as problems (every backend's flags and
/// environments are held to it).
pub(crate) fn problems(rows: &[ScalingRow]) -> Vec<String> {
    let mut problems = Vec::new();
    for dimension in ["flags", "environments"] {
        for backend in Backend::ALL {
            let group: Vec<&ScalingRow> = rows
                .iter()
                .filter(|row| {
                    row.dimension == dimension
                        && row.request == "single"
                        && row.backend == backend.name()
                })
                .collect();
            if group.is_empty() {
                continue;
            }
            let (flat, kept) = spread(&group);
            if !flat {
                problems.push(format!(
                    "scaling: single-flag rate over {dimension} on {} keeps only {:.0} % of its fastest",
                    backend.name(),
                    kept * 100.0
                ));
            }
        }
    }
    problems
}
