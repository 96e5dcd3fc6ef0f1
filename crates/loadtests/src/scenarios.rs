//! The goose scenarios, and one attack (a scenario, a load shape, a time bound) against a server.
//!
//! - `single`: OFREP single-flag evaluation of the 100 flags of `load`, warm cache.
//! - `bulk`: OFREP bulk evaluation of `load` (100 flags per answer).
//! - `mixed`: 95 % evaluations, 5 % writes through the management API. Each virtual user owns one
//!   counter flag in `mixed` and writes it with the next number; every evaluation of a counter
//!   must answer at least the number last acknowledged for it before the evaluation started (a
//!   smaller one is a stale read and counts as an error).
//! - `cold`: each iteration invalidates one of the 50 `cold-*` environments, then evaluates a flag
//!   in it, so every evaluation refills the cache from the database.
//! - `hostile`: 80 % of requests are bulk evaluations in a new junk environment each (names that
//!   were never written), 20 % real single-flag evaluations of `load`; the row reports the real
//!   ones, and the runner the server's resident memory before and after.
//!
//! Goose transactions are plain functions, so what they share (bodies, counters, the admin
//! token) is a [`Plan`] installed for the duration of one attack.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use goose::config::GooseConfiguration;
use goose::goose::GooseResponse;
use goose::metrics::GooseRequestMetric;
use goose::prelude::*;
use serde_json::json;

use crate::seed::{
    COLD_ENVIRONMENTS, FLAGS_PER_ENVIRONMENT, LOAD_ENVIRONMENT, MIXED_ENVIRONMENT,
    cold_environment, counter_definition, counter_key, flag_key,
};

/// The four scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScenarioKind {
    /// (a) single-flag evaluation, warm cache.
    Single,
    /// (b) bulk evaluation of 100 flags.
    Bulk,
    /// (c) 95 % evaluations, 5 % writes, every read checked against the last acknowledged write.
    Mixed,
    /// (d) evaluations right after their environment's invalidation, over 50 environments.
    Cold,
    /// (e) real single-flag evaluations amid a flood of junk environments.
    Hostile,
}

impl ScenarioKind {
    /// Every scenario, in report order.
    pub(crate) const ALL: [ScenarioKind; 5] = [
        ScenarioKind::Single,
        ScenarioKind::Bulk,
        ScenarioKind::Mixed,
        ScenarioKind::Cold,
        ScenarioKind::Hostile,
    ];

    /// The short name used in paths and the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ScenarioKind::Single => "single",
            ScenarioKind::Bulk => "bulk",
            ScenarioKind::Mixed => "mixed",
            ScenarioKind::Cold => "cold",
            ScenarioKind::Hostile => "hostile",
        }
    }

    /// The goose request row whose latency the scenario reports.
    pub(crate) fn measured_request(self) -> &'static str {
        match self {
            ScenarioKind::Single | ScenarioKind::Mixed | ScenarioKind::Hostile => "POST evaluate",
            ScenarioKind::Bulk => "POST bulk",
            ScenarioKind::Cold => "POST cold evaluate",
        }
    }

    fn scenario(self) -> Result<Scenario, GooseError> {
        Ok(match self {
            ScenarioKind::Single => {
                scenario!("single").register_transaction(transaction!(evaluate_single))
            }
            ScenarioKind::Bulk => {
                scenario!("bulk").register_transaction(transaction!(evaluate_bulk))
            }
            ScenarioKind::Mixed => scenario!("mixed")
                .register_transaction(transaction!(evaluate_counter).set_weight(95)?)
                .register_transaction(transaction!(write_counter).set_weight(5)?),
            ScenarioKind::Cold => {
                scenario!("cold").register_transaction(transaction!(evaluate_after_invalidation))
            }
            ScenarioKind::Hostile => scenario!("hostile")
                .register_transaction(transaction!(evaluate_single).set_weight(1)?)
                .register_transaction(transaction!(evaluate_junk).set_weight(4)?),
        })
    }
}

/// What the transactions of one attack share.
pub(crate) struct Plan {
    bearer: String,
    /// Request bodies with varied users, plans and emails, so rules and rollouts do real work.
    contexts: Vec<String>,
    single_paths: Vec<String>,
    cold_environments: Vec<String>,
    /// Per virtual user: the last counter value the server acknowledged.
    acknowledged: Vec<AtomicU64>,
    next: AtomicUsize,
}

impl Plan {
    /// A plan for `users` virtual users against a server whose admin token is `token`.
    pub(crate) fn new(users: usize, token: &str) -> Self {
        let plans = ["free", "pro", "team", "enterprise"];
        let contexts = (0..1024)
            .map(|n| {
                let email = if n % 5 == 0 {
                    format!("user{n}@example.com")
                } else {
                    format!("user{n}@customer.org")
                };
                json!({"context": {"targetingKey": format!("user-{n}"), "plan": plans[n % plans.len()], "email": email}})
                    .to_string()
            })
            .collect();
        Self {
            bearer: format!("Bearer {token}"),
            contexts,
            single_paths: (0..FLAGS_PER_ENVIRONMENT)
                .map(|index| format!("/ofrep/v1/evaluate/flags/{}", flag_key(index)))
                .collect(),
            cold_environments: (0..COLD_ENVIRONMENTS).map(cold_environment).collect(),
            acknowledged: (0..users.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A new number for each call, to spread requests over flags, users and environments.
    fn tick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn context(&self, n: usize) -> String {
        self.contexts[n % self.contexts.len()].clone()
    }
}

static PLAN: RwLock<Option<Arc<Plan>>> = RwLock::new(None);

fn plan() -> Result<Arc<Plan>, Box<TransactionError>> {
    PLAN.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .ok_or_else(|| Box::new(TransactionError::Custom("no plan installed".to_owned())))
}

/// Sends one request and reads the answer: the request's metric (for `set_failure`), the status
/// and the body; `None` when no answer came (goose has counted the failure already).
async fn send(
    user: &mut GooseUser,
    method: GooseMethod,
    name: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(GooseRequestMetric, Option<(u16, String)>), Box<TransactionError>> {
    let mut builder = user
        .get_request_builder(&method, path)?
        .header("Content-Type", "application/json")
        .body(body);
    for (header, value) in headers {
        builder = builder.header(*header, *value);
    }
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let GooseResponse { request, response } = user.request(request).await?;
    let answer = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            Some((status, response.text().await.unwrap_or_default()))
        }
        Err(_) => None,
    };
    Ok((request, answer))
}

/// One OFREP single-flag evaluation in `env`; a `200` must carry a value.
async fn evaluate_one(
    user: &mut GooseUser,
    name: &str,
    path: &str,
    env: &str,
    body: String,
) -> TransactionResult {
    let headers = [("X-Environment", env)];
    let (mut request, answer) = send(user, GooseMethod::Post, name, path, &headers, body).await?;
    if let Some((200, body)) = &answer
        && !body.contains("\"value\"")
    {
        return user.set_failure("answer without a value", &mut request, None, Some(body));
    }
    Ok(())
}

async fn evaluate_single(user: &mut GooseUser) -> TransactionResult {
    let plan = plan()?;
    let n = plan.tick();
    let path = &plan.single_paths[n % plan.single_paths.len()];
    evaluate_one(user, "evaluate", path, LOAD_ENVIRONMENT, plan.context(n)).await
}

async fn evaluate_bulk(user: &mut GooseUser) -> TransactionResult {
    let plan = plan()?;
    let n = plan.tick();
    let headers = [("X-Environment", LOAD_ENVIRONMENT)];
    let (mut request, answer) = send(
        user,
        GooseMethod::Post,
        "bulk",
        "/ofrep/v1/evaluate/flags",
        &headers,
        plan.context(n),
    )
    .await?;
    if let Some((200, body)) = &answer {
        let flags = body.matches("\"key\"").count();
        if flags != FLAGS_PER_ENVIRONMENT {
            let tag = format!("bulk answer with {flags} flags");
            return user.set_failure(&tag, &mut request, None, None);
        }
    }
    Ok(())
}

/// A bulk evaluation in an environment that was never written: `200 {"flags": []}`.
async fn evaluate_junk(user: &mut GooseUser) -> TransactionResult {
    let plan = plan()?;
    let n = plan.tick();
    let env = format!("junk-{n}");
    let headers = [("X-Environment", env.as_str())];
    let (mut request, answer) = send(
        user,
        GooseMethod::Post,
        "junk",
        "/ofrep/v1/evaluate/flags",
        &headers,
        plan.context(n),
    )
    .await?;
    if let Some((200, body)) = &answer
        && body.trim() != r#"{"flags":[]}"#
    {
        return user.set_failure(
            "junk environment with flags",
            &mut request,
            None,
            Some(body),
        );
    }
    Ok(())
}

async fn evaluate_counter(user: &mut GooseUser) -> TransactionResult {
    let plan = plan()?;
    let n = plan.tick();
    let owner = n % plan.acknowledged.len();
    // Read before sending: the server must answer at least this.
    let floor = plan.acknowledged[owner].load(Ordering::SeqCst);
    let path = format!("/ofrep/v1/evaluate/flags/{}", counter_key(owner));
    let headers = [("X-Environment", MIXED_ENVIRONMENT)];
    let (mut request, answer) = send(
        user,
        GooseMethod::Post,
        "evaluate",
        &path,
        &headers,
        plan.context(n),
    )
    .await?;
    if let Some((200, body)) = &answer {
        let value = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|answer| answer["value"].as_u64());
        match value {
            Some(value) if value >= floor => {}
            Some(value) => {
                let tag = format!(
                    "stale read: {} answered {value} after {floor} was acknowledged",
                    counter_key(owner)
                );
                return user.set_failure(&tag, &mut request, None, Some(body));
            }
            None => {
                return user.set_failure("answer without a number", &mut request, None, Some(body));
            }
        }
    }
    Ok(())
}

async fn write_counter(user: &mut GooseUser) -> TransactionResult {
    let plan = plan()?;
    let owner = user.weighted_users_index % plan.acknowledged.len();
    // Only this user writes this counter, so its writes are ordered.
    let next = plan.acknowledged[owner].load(Ordering::SeqCst) + 1;
    let path = format!(
        "/v1/environments/{MIXED_ENVIRONMENT}/flags/{}",
        counter_key(owner)
    );
    let headers = [("Authorization", plan.bearer.as_str())];
    let (_, answer) = send(
        user,
        GooseMethod::Put,
        "write",
        &path,
        &headers,
        counter_definition(next).to_string(),
    )
    .await?;
    if matches!(answer, Some((200 | 201, _))) {
        plan.acknowledged[owner].store(next, Ordering::SeqCst);
    }
    Ok(())
}

async fn evaluate_after_invalidation(user: &mut GooseUser) -> TransactionResult {
    let plan = plan()?;
    let n = plan.tick();
    let env = plan.cold_environments[n % plan.cold_environments.len()].clone();
    let invalidate = format!("/v1/environments/{env}/cache/invalidate");
    let admin = [("Authorization", plan.bearer.as_str())];
    send(
        user,
        GooseMethod::Post,
        "invalidate",
        &invalidate,
        &admin,
        String::new(),
    )
    .await?;
    let path = &plan.single_paths[(n / plan.cold_environments.len()) % plan.single_paths.len()];
    evaluate_one(user, "cold evaluate", path, &env, plan.context(n)).await
}

/// How an attack loads the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// All users together throttled to the paced rate (goose `--throttle-requests`).
    Paced,
    /// No think time, no throttle: as fast as the server answers.
    Saturated,
}

impl Mode {
    /// The short name used in paths and the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Paced => "paced",
            Mode::Saturated => "saturated",
        }
    }
}

/// One attack's shape.
pub(crate) struct Attack<'a> {
    pub(crate) scenario: ScenarioKind,
    pub(crate) mode: Mode,
    pub(crate) host: &'a str,
    pub(crate) users: usize,
    pub(crate) seconds: usize,
    pub(crate) paced_rate: usize,
    /// Report files are written as `<reports>.html` and `<reports>.json`.
    pub(crate) reports: &'a Path,
}

/// Runs one attack with `plan` installed and returns goose's metrics.
pub(crate) async fn run(attack: &Attack<'_>, plan: Plan) -> anyhow::Result<GooseMetrics> {
    *PLAN
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(plan));
    let mut configuration = GooseConfiguration::default();
    configuration.report_file = ["html", "json"]
        .iter()
        .map(|extension| format!("{}.{extension}", attack.reports.display()))
        .collect();
    let mut scenario = attack.scenario.scenario()?;
    if attack.mode == Mode::Paced {
        // goose's throttle releases its tokens every 10 ms, 50 at a time at 5,000/s: alone it
        // turns a paced run into bursts of 50 simultaneous requests. Each user therefore waits a
        // random time between its requests (uniform, averaging users / rate), which spreads the
        // arrivals out; the throttle stays as the hard cap on the rate.
        let mean = Duration::from_secs_f64(attack.users as f64 / attack.paced_rate.max(1) as f64);
        scenario = scenario.set_wait_time(Duration::ZERO, mean * 2)?;
    }
    let mut goose = GooseAttack::initialize_with_config(configuration)?
        .register_scenario(scenario)
        .set_default(GooseDefault::Host, attack.host)?
        .set_default(GooseDefault::Users, attack.users)?
        .set_default(
            GooseDefault::IncreaseRate,
            attack.users.to_string().as_str(),
        )?
        .set_default(GooseDefault::RunTime, attack.seconds)?
        .set_default(GooseDefault::NoTelnet, true)?
        .set_default(GooseDefault::NoPrintMetrics, true)?
        .set_default(GooseDefault::Quiet, 1)?;
    if attack.mode == Mode::Paced {
        goose = goose.set_default(GooseDefault::ThrottleRequests, attack.paced_rate)?;
    }
    let metrics = goose
        .execute()
        .await
        .with_context(|| format!("the {} attack", attack.scenario.name()))?;
    *PLAN
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    Ok(metrics)
}
