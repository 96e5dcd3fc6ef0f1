//! `RedisCache` when Redis misbehaves (killed, frozen, restarted, flushed, edited by hand), and
//! the key layout a person debugging with `redis-cli` will find. Every test owns its
//! `redis-server` process, so faults never touch other tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flag_conformance::generation_snapshot;
use flag_core::{
    CacheError, Environment, EvaluationContext, FeatureFlag, FeatureFlagCache, FeatureFlagService,
    FlagKey, FlagLookup, InMemoryRepository, Precondition, Revision, SetOutcome,
};
use flag_fixtures::RedisProcess;
use flag_redis::{DEFAULT_TIMEOUT, RedisCache};
use serde_json::{Value, json};

/// How much longer than its timeout a failing call may take (scheduling on a loaded machine).
/// This bounds a hang; it is not a latency target.
const MARGIN: Duration = Duration::from_millis(400);
const TTL: Duration = Duration::from_secs(60);

async fn redis() -> RedisProcess {
    RedisProcess::spawn(&[])
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

fn cache_for(redis: &RedisProcess) -> RedisCache {
    RedisCache::from_url(redis.url()).unwrap()
}

fn production() -> Environment {
    Environment::parse("production").unwrap()
}

fn key(name: &str) -> FlagKey {
    FlagKey::parse(name).unwrap()
}

/// Every operation, each with how long it took.
async fn every_operation(
    cache: &RedisCache,
) -> Vec<(&'static str, Result<(), CacheError>, Duration)> {
    let env = production();
    let mut results = Vec::new();
    let started = Instant::now();
    let result = cache.get(&env).await.map(drop);
    results.push(("get", result, started.elapsed()));
    let started = Instant::now();
    let result = cache.get_flag(&env, &key("flag-00000")).await.map(drop);
    results.push(("get_flag", result, started.elapsed()));
    let started = Instant::now();
    let result = cache
        .set(&env, Arc::new(generation_snapshot(9, 3, 9)), TTL)
        .await
        .map(drop);
    results.push(("set", result, started.elapsed()));
    let started = Instant::now();
    let result = cache.invalidate(&env, Revision(9)).await;
    results.push(("invalidate", result, started.elapsed()));
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_gives_typed_errors_within_the_timeout() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    cache
        .set(&production(), Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    redis.kill();
    for (operation, result, took) in every_operation(&cache).await {
        assert!(
            matches!(
                result,
                Err(CacheError::Unavailable { .. } | CacheError::Timeout { .. })
            ),
            "{operation} on a killed server answered {result:?}"
        );
        assert!(took < DEFAULT_TIMEOUT + MARGIN, "{operation} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_gives_timeouts_and_recovers_when_thawed() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    cache
        .set(&production(), Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    redis.pause().unwrap();
    for (operation, result, took) in every_operation(&cache).await {
        assert!(
            matches!(result, Err(CacheError::Timeout { after }) if after == DEFAULT_TIMEOUT),
            "{operation} on a frozen server answered {result:?}"
        );
        assert!(took < DEFAULT_TIMEOUT + MARGIN, "{operation} took {took:?}");
    }
    redis.resume().unwrap();
    // Calls that timed out have an unknown outcome (they may still run after the thaw); what
    // matters is that the same cache answers again, and correctly.
    eventually(|| async { cache.get(&production()).await }).await;
    let snapshot = generation_snapshot(20, 3, 20);
    cache
        .set(&production(), Arc::new(snapshot.clone()), TTL)
        .await
        .unwrap();
    assert_eq!(
        cache.get(&production()).await.unwrap().as_deref(),
        Some(&snapshot)
    );
}

/// Retries `call` for up to five seconds until it succeeds.
async fn eventually<T, F, Fut>(call: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, CacheError>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) if Instant::now() > deadline => panic!("still failing after 5s: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cache_works_again_after_a_restart_without_being_rebuilt() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    let env = production();
    cache
        .set(&env, Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    redis.kill();
    assert!(cache.get(&env).await.is_err());
    redis.restart().await.unwrap();
    // A restarted Redis is empty: a run of misses, then fills work again (scripts reloaded).
    let after = eventually(|| async { cache.get(&env).await }).await;
    assert_eq!(after, None);
    let stored = eventually(|| async {
        cache
            .set(&env, Arc::new(generation_snapshot(2, 3, 2)), TTL)
            .await
    })
    .await;
    assert_eq!(stored, SetOutcome::Stored);
    assert_eq!(
        cache.get(&env).await.unwrap().unwrap().revision(),
        Revision(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_made_while_redis_is_down_works_once_it_is_up() {
    let redis = redis().await;
    redis.kill();
    let cache = cache_for(&redis);
    assert!(matches!(
        cache.get(&production()).await,
        Err(CacheError::Unavailable { .. } | CacheError::Timeout { .. })
    ));
    redis.restart().await.unwrap();
    assert_eq!(
        eventually(|| async { cache.get(&production()).await }).await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_components_can_share_the_connection() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    let mut connection = cache.connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("shared")
        .arg("yes")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(redis.command("GET shared").await.unwrap(), "$3\r\nyes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_is_only_a_run_of_misses() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    let env = production();
    cache
        .set(&env, Arc::new(generation_snapshot(5, 3, 1)), TTL)
        .await
        .unwrap();
    assert_eq!(redis.command("FLUSHALL").await.unwrap(), "+OK");
    assert_eq!(cache.get(&env).await.unwrap(), None);
    assert_eq!(
        cache.get_flag(&env, &key("flag-00000")).await.unwrap(),
        FlagLookup::Miss
    );
    assert_eq!(
        cache
            .set(&env, Arc::new(generation_snapshot(5, 3, 1)), TTL)
            .await
            .unwrap(),
        SetOutcome::Stored
    );
}

fn redis_cli(redis: &RedisProcess, args: &[&str]) -> Vec<String> {
    let output = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli not found: apt-get install redis-tools");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_shows_the_documented_layout() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    let snapshot = generation_snapshot(7, 2, 1);
    cache
        .set(
            &production(),
            Arc::new(snapshot.clone()),
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let lines = redis_cli(&redis, &["HGETALL", "feature_flags:{production}"]);
    let fields: std::collections::BTreeMap<&str, &str> = lines
        .chunks(2)
        .map(|pair| (pair[0].as_str(), pair[1].as_str()))
        .collect();
    assert_eq!(
        fields.keys().copied().collect::<Vec<_>>(),
        ["__meta", "__segment:flag-00000", "flag-00000", "flag-00001"],
        "a segment and a flag of one key sit in separate fields"
    );
    let segment: flag_core::Segment = serde_json::from_str(fields["__segment:flag-00000"]).unwrap();
    assert_eq!(&segment, &**snapshot.segment("flag-00000").unwrap());
    let meta: Value = serde_json::from_str(fields["__meta"]).unwrap();
    assert_eq!(meta["revision"], json!(7));
    assert_eq!(meta["tombstone"], json!(false));
    assert!(meta["cachedAtMs"].as_u64().unwrap() > 1_700_000_000_000);
    let flag: FeatureFlag = serde_json::from_str(fields["flag-00000"]).unwrap();
    assert_eq!(&flag, &**snapshot.flag("flag-00000").unwrap());

    let ttl_ms: u64 = redis_cli(&redis, &["PTTL", "feature_flags:{production}"])[0]
        .parse()
        .unwrap();
    assert!(ttl_ms > 0 && ttl_ms <= 30_000, "PTTL {ttl_ms}");

    cache.invalidate(&production(), Revision(8)).await.unwrap();
    let lines = redis_cli(&redis, &["HGETALL", "feature_flags:{production}"]);
    assert_eq!(lines[0], "__meta");
    let tombstone: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        (
            tombstone["revision"].clone(),
            tombstone["tombstone"].clone()
        ),
        (json!(8), json!(true))
    );
    assert_eq!(lines.len(), 2, "a tombstone holds no flags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edited_garbage_is_corrupt_not_a_panic_and_the_service_replaces_it() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    let env = production();
    cache
        .set(&env, Arc::new(generation_snapshot(1, 2, 1)), TTL)
        .await
        .unwrap();
    redis_cli(
        &redis,
        &[
            "HSET",
            "feature_flags:{production}",
            "flag-00000",
            "{not json",
        ],
    );
    assert!(matches!(
        cache.get(&env).await,
        Err(CacheError::Corrupt { .. })
    ));
    assert!(matches!(
        cache.get_flag(&env, &key("flag-00000")).await,
        Err(CacheError::Corrupt { .. })
    ));
    // A field that is not the flag it claims to be is corrupt as well.
    let other = redis_cli(
        &redis,
        &["HGET", "feature_flags:{production}", "flag-00001"],
    )
    .join("\n");
    redis_cli(
        &redis,
        &["HSET", "feature_flags:{production}", "flag-00000", &other],
    );
    assert!(matches!(
        cache.get(&env).await,
        Err(CacheError::Corrupt { .. })
    ));
    redis_cli(&redis, &["HSET", "feature_flags:{staging}", "lonely", "{}"]);
    assert!(matches!(
        cache.get(&Environment::parse("staging").unwrap()).await,
        Err(CacheError::Corrupt { .. })
    ));
    redis_cli(
        &redis,
        &["HSET", "feature_flags:{production}", "__meta", "garbage"],
    );
    assert!(matches!(
        cache.get(&env).await,
        Err(CacheError::Corrupt { .. })
    ));

    // Through the service: the read is answered from the repository and the fill replaces the
    // garbage (its __meta is unreadable, so the set script treats it as revision 0).
    let repository = Arc::new(InMemoryRepository::new());
    let service = FeatureFlagService::new(repository, Arc::new(cache.clone()));
    let flag = FeatureFlag::from_definition_json(&key("checkout"), r#"{"enabled": true}"#).unwrap();
    service
        .upsert(&env, flag, Precondition::None, &flag_core::Actor::system())
        .await
        .unwrap();
    let context = EvaluationContext::new();
    service
        .evaluate(&env, &key("checkout"), &context)
        .await
        .unwrap(); // fills the cache
    redis_cli(
        &redis,
        &[
            "HSET",
            "feature_flags:{production}",
            "checkout",
            "{not json",
        ],
    );
    let evaluation = service
        .evaluate(&env, &key("checkout"), &context)
        .await
        .unwrap();
    assert_eq!(evaluation.value(), &json!(true));
    assert_eq!(service.metrics().cache_errors, 1);
    let healed = cache.get(&env).await.unwrap().unwrap();
    assert_eq!(healed.flag("checkout").unwrap().version(), 1);
}

/// `calls=N` of one command in `INFO commandstats`.
async fn calls(redis: &RedisProcess, command: &str) -> u64 {
    let info = redis.command("INFO commandstats").await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |count| count.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_environment_is_not_fetched_or_decoded_again() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    let env = production();
    cache
        .set(&env, Arc::new(generation_snapshot(1, 50, 1)), TTL)
        .await
        .unwrap();
    let first = cache.get(&env).await.unwrap().unwrap();
    assert_eq!(calls(&redis, "hgetall").await, 1);
    // (The set script's own HGET of __meta counts too, so count from here.)
    let hgets = calls(&redis, "hget").await;
    for _ in 0..3 {
        let again = cache.get(&env).await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the decoded snapshot is reused"
        );
    }
    assert_eq!(calls(&redis, "hgetall").await, 1, "no second HGETALL");
    // The tiered cache's read (with the remaining time) takes the same shortcut.
    let (again, remaining) = cache.get_with_ttl(&env).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert!(
        remaining.is_some_and(|left| left <= TTL && left > TTL / 2),
        "{remaining:?}"
    );
    assert_eq!(calls(&redis, "hgetall").await, 1);
    assert_eq!(
        calls(&redis, "hget").await,
        hgets + 4,
        "one HGET of __meta per read (three gets, one get_with_ttl)"
    );

    // A newer fill changes __meta: the next get fetches and decodes it.
    cache
        .set(&env, Arc::new(generation_snapshot(2, 50, 2)), TTL)
        .await
        .unwrap();
    let newer = cache.get(&env).await.unwrap().unwrap();
    assert_eq!(newer.revision().get(), 2);
    assert_eq!(calls(&redis, "hgetall").await, 2);
    // An invalidation leaves a tombstone: a miss, never the remembered snapshot.
    cache.invalidate(&env, Revision(3)).await.unwrap();
    assert!(cache.get(&env).await.unwrap().is_none());
    // So does an expired or flushed key.
    cache
        .set(&env, Arc::new(generation_snapshot(4, 50, 4)), TTL)
        .await
        .unwrap();
    assert!(cache.get(&env).await.unwrap().is_some());
    redis.command("FLUSHALL").await.unwrap();
    assert!(cache.get(&env).await.unwrap().is_none());
}

#[tokio::test]
async fn a_snapshot_past_the_size_limit_is_refused_before_it_is_sent() {
    let redis = redis().await;
    let cache = RedisCache::builder(redis.url())
        .max_snapshot_bytes(10_000)
        .build()
        .unwrap();
    let env = production();
    let small = Arc::new(generation_snapshot(1, 3, 1));
    assert_eq!(cache.set(&env, small, TTL).await, Ok(SetOutcome::Stored));
    let large = Arc::new(generation_snapshot(2, 500, 2));
    match cache.set(&env, large, TTL).await {
        Err(CacheError::TooLarge { size, limit }) => {
            assert!(size > 10_000);
            assert_eq!(limit, 10_000);
        }
        other => panic!("a 500-flag snapshot over a 10 kB limit answered {other:?}"),
    }
    // Nothing was written: the small snapshot is still there.
    let cached = cache.get(&env).await.unwrap().unwrap();
    assert_eq!(cached.revision(), Revision(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_a_newer_release_cached_with_fields_unknown_here_are_read_with_them_ignored() {
    let redis = redis().await;
    let cache = cache_for(&redis);
    let env = production();
    let snapshot = generation_snapshot(1, 2, 1);
    cache
        .set(&env, Arc::new(snapshot.clone()), TTL)
        .await
        .unwrap();
    let stored = redis_cli(
        &redis,
        &["HGET", "feature_flags:{production}", "flag-00000"],
    )
    .join("\n");
    let mut newer: serde_json::Value = serde_json::from_str(&stored).unwrap();
    newer["hashSeed"] = serde_json::json!("companyId");
    newer["rules"] = serde_json::json!([
        {"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"], "caseSensitive": false}],
         "variant": newer["defaultVariant"].clone(), "segments": ["beta"]}
    ]);
    redis_cli(
        &redis,
        &[
            "HSET",
            "feature_flags:{production}",
            "flag-00000",
            &newer.to_string(),
        ],
    );
    let read = cache.get(&env).await.unwrap().unwrap();
    let flag = read.flag("flag-00000").unwrap();
    assert_eq!(
        flag.rules().len(),
        1,
        "the known part of the newer flag is read"
    );
    assert_eq!(read.len(), snapshot.len());
    assert!(matches!(
        cache.get_flag(&env, &key("flag-00000")).await,
        Ok(FlagLookup::Hit { .. })
    ));
}
