//! The flags a run serves, written through the management API, and the cache warm-up.
//!
//! Environments: `load` (100 flags: a fifth each static, with rules, with rollouts, using a
//! segment of 1,000 included keys, and with 3 prerequisites) for the single and bulk scenarios;
//! `mixed` (one counter flag per virtual user, which only that user writes) for the mixed
//! scenario; `cold-0` … `cold-49` (100 flags each, the same mix) for the cold-cache scenario.
//! Every seeded environment holds the segment `customers`.

use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// How many flags a seeded environment holds.
pub(crate) const FLAGS_PER_ENVIRONMENT: usize = 100;
/// How many environments the cold-cache scenario spreads over.
pub(crate) const COLD_ENVIRONMENTS: usize = 50;
/// The environment of the single and bulk scenarios.
pub(crate) const LOAD_ENVIRONMENT: &str = "load";
/// The environment of the mixed scenario.
pub(crate) const MIXED_ENVIRONMENT: &str = "mixed";

/// The key of the `index`th flag of a seeded environment.
pub(crate) fn flag_key(index: usize) -> String {
    format!("flag-{index:03}")
}

/// The key of the counter flag user `user` writes in the mixed scenario.
pub(crate) fn counter_key(user: usize) -> String {
    format!("counter-{user:03}")
}

/// The name of the `index`th environment of the cold-cache scenario.
pub(crate) fn cold_environment(index: usize) -> String {
    format!("cold-{index}")
}

/// The segment of every seeded environment.
pub(crate) const SEGMENT: &str = "customers";

/// The flags the prerequisite kind lists (all static, so always `on`).
pub(crate) const PREREQUISITES: [usize; 3] = [0, 5, 10];

/// The segment `customers`: 1,000 included keys and one rule.
pub(crate) fn segment_definition() -> Value {
    let included: Vec<String> = (0..1_000).map(|n| format!("customer-{n:04}")).collect();
    json!({
        "description": "paying customers",
        "included": included,
        "rules": [{"conditions": [{"attribute": "plan", "operator": "equals", "value": "enterprise"}]}]
    })
}

/// The `index`th flag: static, rule-based, a rollout, segment-based or gated by prerequisites,
/// in turn.
pub(crate) fn flag_definition(index: usize) -> Value {
    match index % 5 {
        3 => json!({
            "enabled": true,
            "description": "segment",
            "defaultVariant": "off",
            "rules": [{"conditions": [{"operator": "in_segment", "value": SEGMENT}], "variant": "on"}]
        }),
        4 => json!({
            "enabled": true,
            "description": "prerequisites",
            "prerequisites": PREREQUISITES
                .iter()
                .map(|index| json!({"flag": flag_key(*index), "variants": ["on"]}))
                .collect::<Vec<_>>()
        }),
        _ => three_kinds(index),
    }
}

/// Static, rule-based or a rollout, by `index` (needing no segment and no other flag).
pub(crate) fn three_kinds(index: usize) -> Value {
    match index % 5 {
        0 => json!({
            "enabled": true,
            "description": "static",
            "metadata": {"team": "load"}
        }),
        1 => json!({
            "enabled": true,
            "description": "rules",
            "defaultVariant": "off",
            "rules": [
                {"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro", "team"]}],
                 "variant": "on"},
                {"conditions": [{"attribute": "email", "operator": "ends_with", "value": "@example.com"}],
                 "variant": "on"}
            ]
        }),
        _ => json!({
            "enabled": true,
            "description": "rollout",
            "variants": {"a": "alpha", "b": "beta", "c": "gamma"},
            "defaultVariant": "a",
            "offVariant": "a",
            "rollout": [
                {"variant": "a", "weight": 50},
                {"variant": "b", "weight": 30},
                {"variant": "c", "weight": 20}
            ]
        }),
    }
}

/// The counter flag of the mixed scenario at `value`.
pub(crate) fn counter_definition(value: u64) -> Value {
    json!({
        "enabled": true,
        "variants": {"current": value, "off": -1},
        "defaultVariant": "current",
        "offVariant": "off"
    })
}

/// A client of one server's management API.
#[derive(Clone)]
pub(crate) struct Admin {
    client: reqwest::Client,
    base_url: Arc<str>,
    bearer: Arc<str>,
}

impl Admin {
    /// A client for the server at `base_url` with `token`.
    pub(crate) fn new(base_url: &str, token: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base_url: base_url.into(),
            bearer: format!("Bearer {token}").into(),
        }
    }

    /// Puts every counter of the mixed scenario back to 0, so each attack starts from a known
    /// state.
    pub(crate) async fn reset_counters(&self, users: usize) -> anyhow::Result<()> {
        for user in 0..users {
            self.put(
                MIXED_ENVIRONMENT,
                &counter_key(user),
                &counter_definition(0),
            )
            .await?;
        }
        Ok(())
    }

    /// `PUT` one flag; fails unless the server answers `200` or `201`.
    pub(crate) async fn put(&self, env: &str, key: &str, flag: &Value) -> anyhow::Result<()> {
        self.put_at(&format!("{env}/flags/{key}"), flag).await
    }

    /// `PUT` the `/v1/environments/` resource at `path`; fails unless it answers `200` or `201`.
    async fn put_at(&self, path: &str, definition: &Value) -> anyhow::Result<()> {
        let (env, key) = path.split_once('/').unwrap_or((path, ""));
        let response = self
            .client
            .put(format!("{}/v1/environments/{path}", self.base_url))
            .header("Authorization", &*self.bearer)
            .json(definition)
            .send()
            .await
            .with_context(|| format!("PUT {env}/{key}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("PUT {env}/{key}: {status} {body}");
        }
        Ok(())
    }

    /// `PUT` one segment; fails unless the server answers `200` or `201`.
    pub(crate) async fn put_segment(
        &self,
        env: &str,
        key: &str,
        segment: &Value,
    ) -> anyhow::Result<()> {
        self.put_at(&format!("{env}/segments/{key}"), segment).await
    }

    /// Writes every flag of every environment, `concurrency` writes at a time (each
    /// environment's segment and prerequisite flags first, which the others refer to).
    pub(crate) async fn seed(&self, users: usize, concurrency: usize) -> anyhow::Result<usize> {
        let mut environments = vec![LOAD_ENVIRONMENT.to_owned()];
        environments.extend((0..COLD_ENVIRONMENTS).map(cold_environment));
        let mut total = 0;
        for env in &environments {
            total += self.seed_environment(env, concurrency).await?;
        }
        let counters = (0..users).map(|user| {
            (
                MIXED_ENVIRONMENT.to_owned(),
                counter_key(user),
                counter_definition(0),
            )
        });
        total += self.put_all(counters, concurrency).await?;
        Ok(total)
    }

    /// Writes one environment of the standard mix: its segment, its prerequisite flags, then
    /// the rest `concurrency` at a time; returns how many flags it wrote.
    pub(crate) async fn seed_environment(
        &self,
        env: &str,
        concurrency: usize,
    ) -> anyhow::Result<usize> {
        self.put_segment(env, SEGMENT, &segment_definition())
            .await?;
        for index in PREREQUISITES {
            self.put(env, &flag_key(index), &flag_definition(index))
                .await?;
        }
        let rest = (0..FLAGS_PER_ENVIRONMENT)
            .filter(|index| !PREREQUISITES.contains(index))
            .map(|index| (env.to_owned(), flag_key(index), flag_definition(index)));
        Ok(PREREQUISITES.len() + self.put_all(rest, concurrency).await?)
    }

    /// `PUT`s every `(environment, key, flag)`, `concurrency` at a time; returns how many.
    pub(crate) async fn put_all(
        &self,
        writes: impl IntoIterator<Item = (String, String, Value)>,
        concurrency: usize,
    ) -> anyhow::Result<usize> {
        let mut pending = writes.into_iter();
        let mut tasks = tokio::task::JoinSet::new();
        let mut written = 0;
        loop {
            while tasks.len() < concurrency.max(1) {
                let Some((env, key, flag)) = pending.next() else {
                    break;
                };
                let admin = self.clone();
                tasks.spawn(async move { admin.put(&env, &key, &flag).await });
            }
            match tasks.join_next().await {
                Some(joined) => {
                    joined.context("a seeding task")??;
                    written += 1;
                }
                None => return Ok(written),
            }
        }
    }
}

/// Evaluates every flag of `load` once and the whole environment once, so the paced and
/// saturated runs of the single and bulk scenarios start on a warm cache.
pub(crate) async fn warm(base_url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let body = json!({"context": {"targetingKey": "warm-up"}});
    let paths = (0..FLAGS_PER_ENVIRONMENT)
        .map(|index| format!("/ofrep/v1/evaluate/flags/{}", flag_key(index)))
        .chain(std::iter::once("/ofrep/v1/evaluate/flags".to_owned()));
    for path in paths {
        let status = client
            .post(format!("{base_url}{path}"))
            .header("X-Environment", LOAD_ENVIRONMENT)
            .json(&body)
            .send()
            .await
            .context("warming the cache")?
            .status();
        if !status.is_success() {
            bail!("warming {path}: {status}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifth_of_the_flags_are_each_kind() {
        let kinds: Vec<String> = (0..FLAGS_PER_ENVIRONMENT)
            .map(|index| flag_definition(index)["description"].to_string())
            .collect();
        for kind in [
            "\"static\"",
            "\"rules\"",
            "\"rollout\"",
            "\"segment\"",
            "\"prerequisites\"",
        ] {
            let count = kinds.iter().filter(|seen| *seen == kind).count();
            assert_eq!(count, 20, "{kind}");
        }
        for index in PREREQUISITES {
            assert_eq!(flag_definition(index)["description"], "static");
        }
    }
}
