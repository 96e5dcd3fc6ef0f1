//! `FeatureFlagService` under concurrency and injected faults.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flag_core::{
    EvaluationContext, EvaluationError, FeatureFlagCache, FeatureFlagRepository,
    FeatureFlagService, LimitExceeded, Limits, Precondition, Reason, RepositoryError, RetryPolicy,
    Revision, ServiceConfigError, ServiceError,
};
use serde_json::json;
use support::{FakeCache, FakeRepository, boolean, env, flag, key};
use tokio::sync::Barrier;

struct Harness {
    cache: Arc<FakeCache>,
    repository: Arc<FakeRepository>,
    service: FeatureFlagService,
}

fn harness_with(retry: RetryPolicy) -> Harness {
    let cache = Arc::new(FakeCache::default());
    let repository = Arc::new(FakeRepository::default());
    let service = FeatureFlagService::builder(repository.clone(), cache.clone())
        .ttl(Duration::from_secs(60))
        .invalidation_retry(retry)
        .build()
        .unwrap();
    Harness {
        cache,
        repository,
        service,
    }
}

fn harness() -> Harness {
    harness_with(RetryPolicy {
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        give_up_after: Some(Duration::from_secs(5)),
    })
}

/// Writes each `(name, value)` boolean flag to `environment` through `service`.
async fn put_booleans(service: &FeatureFlagService, environment: &str, flags: &[(&str, bool)]) {
    for (name, value) in flags {
        service
            .upsert(
                &env(environment),
                boolean(name, *value),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .unwrap();
    }
}

async fn value_of(
    service: &FeatureFlagService,
    environment: &str,
    name: &str,
) -> serde_json::Value {
    service
        .evaluate(&env(environment), &key(name), &EvaluationContext::new())
        .await
        .unwrap()
        .value()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_cause_one_repository_read() {
    let h = harness();
    let prod = env("production");
    h.service
        .upsert(
            &prod,
            boolean("checkout", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    // Slow reads keep the first fill in flight while every other miss arrives.
    h.repository.snapshot_delay_ms.store(200, Ordering::SeqCst);
    let reads_before = h.repository.reads();

    let barrier = Arc::new(Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let service = h.service.clone();
            let barrier = barrier.clone();
            let prod = prod.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                service.snapshot(&prod).await
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        let snapshot = task.await.unwrap().unwrap();
        assert_eq!(snapshot.len(), 1);
        revisions.push(snapshot.revision());
    }
    assert_eq!(
        h.repository.reads() - reads_before,
        1,
        "one repository read for 100 misses"
    );
    assert!(revisions.iter().all(|r| *r == Revision(1)));
    assert_eq!(h.service.metrics().fills_stored, 1);
}

#[tokio::test]
async fn a_second_read_is_a_cache_hit() {
    let h = harness();
    let prod = env("production");
    h.service
        .upsert(
            &prod,
            boolean("a", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(value_of(&h.service, "production", "a").await, json!(true));
    assert_eq!(value_of(&h.service, "production", "a").await, json!(true));
    h.service.snapshot(&prod).await.unwrap();
    assert_eq!(h.repository.reads(), 1);
    let metrics = h.service.metrics();
    assert_eq!((metrics.cache_misses, metrics.cache_hits), (1, 2));
    assert_eq!(
        *h.cache.last_ttl.lock().unwrap(),
        Some(Duration::from_secs(60))
    );
}

#[tokio::test]
async fn an_absent_flag_in_a_cached_environment_needs_no_repository_read() {
    let h = harness();
    let prod = env("production");
    h.service
        .upsert(
            &prod,
            boolean("a", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    h.service.snapshot(&prod).await.unwrap();
    let error = h
        .service
        .evaluate(&prod, &key("missing"), &EvaluationContext::new())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        ServiceError::Evaluation(EvaluationError::FlagNotFound { .. })
    ));
    assert_eq!(h.repository.reads(), 1);
    assert_eq!(h.service.metrics().cache_absent, 1);
}

#[tokio::test]
async fn a_missing_flag_in_an_uncached_environment_is_not_found() {
    let h = harness();
    let error = h
        .service
        .evaluate(&env("empty"), &key("nothing"), &EvaluationContext::new())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        ServiceError::Evaluation(EvaluationError::FlagNotFound { .. })
    ));
}

#[tokio::test]
async fn with_the_cache_down_every_read_is_still_correct() {
    let h = harness();
    let prod = env("production");
    put_booleans(
        &h.service,
        "production",
        &[("on-flag", true), ("off-flag", false)],
    )
    .await;
    // (Creating the second flag read the environment through the cache, which filled it.)
    let sets_before = h.cache.sets.load(Ordering::SeqCst);
    h.cache.fail_reads.store(true, Ordering::SeqCst);
    h.cache.fail_sets.store(true, Ordering::SeqCst);
    h.cache
        .failing_invalidations
        .store(u32::MAX, Ordering::SeqCst);

    for _ in 0..5 {
        assert_eq!(
            value_of(&h.service, "production", "on-flag").await,
            json!(true)
        );
        assert_eq!(
            value_of(&h.service, "production", "off-flag").await,
            json!(false)
        );
    }
    // Writes still work, and the next read sees them.
    h.service
        .upsert(
            &prod,
            boolean("on-flag", false),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(
        value_of(&h.service, "production", "on-flag").await,
        json!(false)
    );
    let bulk = h
        .service
        .evaluate_all(&prod, &EvaluationContext::new())
        .await
        .unwrap();
    assert_eq!(bulk.results.len(), 2);
    assert_eq!(bulk.revision, Revision(3));

    let metrics = h.service.metrics();
    assert_eq!(metrics.cache_fallbacks, 12, "{metrics:?}");
    assert!(metrics.cache_errors >= 1);
    assert!(h.service.cache_circuit_open());
    // A failing cache is not asked to store what a fallback read loaded.
    assert_eq!(h.cache.sets.load(Ordering::SeqCst), sets_before);
}

#[tokio::test]
async fn corrupt_cache_data_is_answered_from_the_repository_and_replaced() {
    let h = harness();
    let prod = env("production");
    h.service
        .upsert(
            &prod,
            boolean("f", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    h.service.snapshot(&prod).await.unwrap();
    h.cache.corrupt_reads.store(true, Ordering::SeqCst);
    // The corrupt entry is not served, and the fill after the repository read replaces it.
    assert_eq!(value_of(&h.service, "production", "f").await, json!(true));
    assert!(
        !h.cache.corrupt_reads.load(Ordering::SeqCst),
        "the fill replaced the bad entry"
    );
    assert_eq!(value_of(&h.service, "production", "f").await, json!(true));
    let metrics = h.service.metrics();
    assert_eq!(
        (metrics.cache_errors, metrics.fills_stored),
        (1, 2),
        "{metrics:?}"
    );
}

#[tokio::test]
async fn a_cache_read_failure_and_a_repository_failure_is_an_error_not_a_panic() {
    let h = harness();
    h.cache.fail_reads.store(true, Ordering::SeqCst);
    h.repository.fail.store(true, Ordering::SeqCst);
    let error = h.service.snapshot(&env("production")).await.unwrap_err();
    assert!(matches!(
        error,
        ServiceError::Repository(RepositoryError::Unavailable { .. })
    ));
}

/// A fill that read the repository before a write, and returns after it, must never be served
/// to a read that began after the write returned, nor be left in the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fill_racing_a_write_never_serves_pre_write_flags() {
    for invalidation_fails in [false, true] {
        let h = harness();
        let prod = env("production");
        h.service
            .upsert(
                &prod,
                boolean("kill-switch", false),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .unwrap();

        // Reader A misses and reads the repository, which captures revision 1 and then stalls.
        h.repository.hold_snapshots.store(true, Ordering::SeqCst);
        let reader_a = {
            let service = h.service.clone();
            let prod = prod.clone();
            tokio::spawn(async move {
                service
                    .evaluate(&prod, &key("kill-switch"), &EvaluationContext::new())
                    .await
            })
        };
        while h.repository.reads() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        // The write lands while A's fill is in flight.
        if invalidation_fails {
            h.cache
                .failing_invalidations
                .store(u32::MAX, Ordering::SeqCst);
        }
        h.service
            .upsert(
                &prod,
                boolean("kill-switch", true),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .unwrap();
        h.repository.hold_snapshots.store(false, Ordering::SeqCst);

        // Reader B begins after the write returned: it must see the write.
        // (A reader that joined A's stalled fill would wait forever: bound it so that fails.)
        let b = tokio::time::timeout(
            Duration::from_secs(5),
            h.service
                .evaluate(&prod, &key("kill-switch"), &EvaluationContext::new()),
        )
        .await
        .expect("a read after the write must not wait on a fill that began before it")
        .unwrap();
        assert_eq!(
            b.value(),
            &json!(true),
            "invalidation_fails={invalidation_fails}"
        );

        // Let A finish. A overlapped the write, so either answer is correct for A itself; what
        // matters is that its pre-write fill is refused by the cache.
        h.repository.gate.add_permits(10);
        reader_a.await.unwrap().unwrap();

        for _ in 0..3 {
            let c = h
                .service
                .evaluate(&prod, &key("kill-switch"), &EvaluationContext::new())
                .await
                .unwrap();
            assert_eq!(
                c.value(),
                &json!(true),
                "invalidation_fails={invalidation_fails}"
            );
        }
        if let Some(cached) = h.cache.peek(&prod) {
            assert_eq!(
                cached.revision(),
                Revision(2),
                "the cache never keeps the pre-write snapshot"
            );
        }
        assert_eq!(
            h.service.metrics().fills_stale,
            1,
            "{:?}",
            h.service.metrics()
        );
    }
}

#[tokio::test]
async fn a_write_whose_caller_stops_waiting_after_the_commit_is_still_seen_by_every_read() {
    let h = harness();
    let prod = env("production");
    put_booleans(&h.service, "production", &[("kill-switch", false)]).await;
    assert_eq!(
        value_of(&h.service, "production", "kill-switch").await,
        json!(false)
    );

    // The caller gives up (a client hung up, a request timed out) after the repository
    // committed and before its answer reached the service.
    h.repository
        .upsert_reply_delay_ms
        .store(200, Ordering::SeqCst);
    let write = {
        let service = h.service.clone();
        let prod = prod.clone();
        tokio::spawn(async move {
            service
                .upsert(
                    &prod,
                    boolean("kill-switch", true),
                    Precondition::None,
                    &flag_core::Actor::system(),
                )
                .await
        })
    };
    while h
        .repository
        .flag(&prod, &key("kill-switch"))
        .await
        .unwrap()
        .unwrap()
        .version()
        < 2
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    write.abort();
    assert!(write.await.unwrap_err().is_cancelled());

    // Once the repository's answer arrives, the write finishes behind the caller's back: the
    // cache learns of it and it is served (the cache's TTL is a minute: a lost invalidation
    // would leave the old value served until then).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.cache.known_revision(&prod), Revision(2));
    assert_eq!(
        value_of(&h.service, "production", "kill-switch").await,
        json!(true)
    );
}

#[tokio::test]
async fn a_stale_cached_snapshot_is_not_served_after_a_write_whose_invalidation_failed() {
    let h = harness();
    let prod = env("production");
    h.service
        .upsert(
            &prod,
            boolean("f", false),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(value_of(&h.service, "production", "f").await, json!(false));
    h.cache
        .failing_invalidations
        .store(u32::MAX, Ordering::SeqCst);
    h.service
        .upsert(
            &prod,
            boolean("f", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    // The cache still holds revision 1, which this server knows to be older than its write.
    assert_eq!(h.cache.peek(&prod).unwrap().revision(), Revision(1));
    assert_eq!(value_of(&h.service, "production", "f").await, json!(true));
    assert_eq!(
        h.service.snapshot(&prod).await.unwrap().revision(),
        Revision(2)
    );
}

#[tokio::test]
async fn a_failed_invalidation_is_retried_in_the_background_and_counted() {
    let h = harness();
    let prod = env("production");
    h.cache.failing_invalidations.store(3, Ordering::SeqCst);
    h.service
        .upsert(
            &prod,
            boolean("f", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    // One failed invalidation inline, then retries until the fourth call succeeds.
    for _ in 0..200 {
        if h.cache.known_revision(&prod) == Revision(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        h.cache.known_revision(&prod),
        Revision(1),
        "the retry reached the cache"
    );
    let metrics = h.service.metrics();
    assert_eq!(metrics.invalidation_retries, 3, "{metrics:?}");
    assert_eq!(metrics.invalidations_abandoned, 0);
}

#[tokio::test]
async fn retries_of_one_environment_collapse_into_one_task_with_the_newest_revision() {
    let h = harness();
    let prod = env("production");
    h.cache
        .failing_invalidations
        .store(u32::MAX, Ordering::SeqCst);
    for value in [true, false, true] {
        h.service
            .upsert(
                &prod,
                boolean("f", value),
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    h.cache.failing_invalidations.store(0, Ordering::SeqCst);
    for _ in 0..200 {
        if h.cache.known_revision(&prod) == Revision(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.cache.known_revision(&prod), Revision(3));
}

#[tokio::test]
async fn an_invalidation_that_keeps_failing_is_abandoned_after_the_deadline() {
    let h = harness_with(RetryPolicy {
        first_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(5),
        give_up_after: Some(Duration::from_millis(40)),
    });
    let prod = env("production");
    h.cache
        .failing_invalidations
        .store(u32::MAX, Ordering::SeqCst);
    h.service
        .upsert(
            &prod,
            boolean("f", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    for _ in 0..200 {
        if h.service.metrics().invalidations_abandoned == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = h.service.metrics();
    assert_eq!(metrics.invalidations_abandoned, 1, "{metrics:?}");
    assert!(metrics.invalidation_retries >= 2);
}

#[tokio::test]
async fn bulk_evaluation_is_in_key_order_with_errors_per_flag() {
    let h = harness();
    let prod = env("production");
    h.service
        .upsert(
            &prod,
            boolean("b-flag", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    h.service
        .upsert(
            &prod,
            flag(
                "a-split",
                json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}]}),
            ),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    h.service
        .upsert(
            &prod,
            boolean("c-off", false),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();

    let anonymous = h
        .service
        .evaluate_all(&prod, &EvaluationContext::new())
        .await
        .unwrap();
    assert_eq!(anonymous.revision, Revision(3));
    let keys: Vec<String> = anonymous
        .results
        .iter()
        .map(|result| match result {
            Ok(evaluation) => evaluation.key().to_string(),
            Err(error) => error.key().to_string(),
        })
        .collect();
    assert_eq!(keys, ["a-split", "b-flag", "c-off"]);
    assert!(matches!(
        anonymous.results[0],
        Err(EvaluationError::TargetingKeyMissing { .. })
    ));

    let known = h
        .service
        .evaluate_all(&prod, &EvaluationContext::new().with_targeting_key("u1"))
        .await
        .unwrap();
    let first = known.results[0].as_ref().unwrap();
    assert_eq!((first.variant(), first.reason()), ("on", Reason::Split));
    assert_eq!(first.flag_version(), 1);
}

#[tokio::test]
async fn writes_keep_versions_and_report_conflicts() {
    let h = harness();
    let prod = env("production");
    let created = h
        .service
        .upsert(
            &prod,
            boolean("f", true),
            Precondition::Absent,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.flag.version(), 1);
    let conflict = h
        .service
        .upsert(
            &prod,
            boolean("f", false),
            Precondition::Version(7),
            &flag_core::Actor::system(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        conflict,
        ServiceError::Repository(RepositoryError::VersionConflict {
            current: Some(1),
            ..
        })
    ));
    // A refused write changes nothing that readers see.
    assert_eq!(value_of(&h.service, "production", "f").await, json!(true));
    let deleted = h
        .service
        .delete(
            &prod,
            &key("f"),
            Precondition::Version(1),
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(deleted.revision, Revision(2));
    let gone = h
        .service
        .evaluate(&prod, &key("f"), &EvaluationContext::new())
        .await
        .unwrap_err();
    assert!(matches!(
        gone,
        ServiceError::Evaluation(EvaluationError::FlagNotFound { .. })
    ));
}

#[tokio::test]
async fn explicit_invalidation_drops_the_cache_and_reports_cache_failures() {
    let h = harness();
    let prod = env("production");
    h.service
        .upsert(
            &prod,
            boolean("f", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    h.service.snapshot(&prod).await.unwrap();
    assert!(h.cache.peek(&prod).is_some());
    assert_eq!(
        h.service.invalidate_cache(&prod).await.unwrap(),
        Revision(1)
    );
    assert!(h.cache.peek(&prod).is_none());
    // The same revision may be filled again.
    h.service.snapshot(&prod).await.unwrap();
    assert!(h.cache.peek(&prod).is_some());

    h.cache.failing_invalidations.store(1, Ordering::SeqCst);
    assert!(matches!(
        h.service.invalidate_cache(&prod).await,
        Err(ServiceError::Cache(_))
    ));
}

#[tokio::test]
async fn environments_are_isolated() {
    let h = harness();
    h.service
        .upsert(
            &env("prod"),
            boolean("f", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    h.service
        .upsert(
            &env("prod-eu"),
            boolean("f", false),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(value_of(&h.service, "prod", "f").await, json!(true));
    assert_eq!(value_of(&h.service, "prod-eu", "f").await, json!(false));
    let listed = h.service.environments().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["prod", "prod-eu"]);
}

#[test]
fn a_zero_ttl_is_refused() {
    let result = FeatureFlagService::builder(
        Arc::new(FakeRepository::default()),
        Arc::new(FakeCache::default()),
    )
    .ttl(Duration::ZERO)
    .build();
    assert_eq!(result.unwrap_err(), ServiceConfigError::ZeroTtl);
}

#[tokio::test]
async fn with_cache_and_repository_both_failing_the_last_known_good_snapshot_answers_cached() {
    let h = harness();
    let production = env("production");
    put_booleans(
        &h.service,
        "production",
        &[("colour", true), ("other", false)],
    )
    .await;
    let context = EvaluationContext::new();
    let fresh = h
        .service
        .evaluate(&production, &key("colour"), &context)
        .await
        .unwrap();
    assert_eq!(fresh.reason(), Reason::Static);
    assert!(h.service.can_serve_last_known_good());
    assert_eq!(h.service.metrics().stale_answers, 0);

    h.cache.fail_reads.store(true, Ordering::SeqCst);
    h.repository.fail.store(true, Ordering::SeqCst);
    let reads_before = h.repository.reads();
    for _ in 0..10 {
        let stale = h
            .service
            .evaluate(&production, &key("colour"), &context)
            .await
            .unwrap();
        assert_eq!(
            (stale.value().clone(), stale.reason()),
            (json!(true), Reason::Cached)
        );
    }
    assert!(
        h.repository.reads() <= reads_before + 1,
        "a failed repository is probed, not asked by every read"
    );
    let bulk = h.service.evaluate_all(&production, &context).await.unwrap();
    assert_eq!(bulk.results.len(), 2);
    assert!(
        bulk.results
            .iter()
            .all(|result| result.as_ref().unwrap().reason() == Reason::Cached)
    );
    assert_eq!(h.service.metrics().stale_answers, 11);
    assert!(h.service.can_serve_last_known_good());
    // Unknown environments and writes still fail: there is nothing good to answer with.
    assert!(h.service.snapshot(&env("staging")).await.is_err());
    assert!(
        h.service
            .upsert(
                &production,
                boolean("colour", false),
                Precondition::None,
                &flag_core::Actor::system()
            )
            .await
            .is_err()
    );

    // Back to normal: once the probe finds the cache back, answers are current again.
    h.cache.fail_reads.store(false, Ordering::SeqCst);
    h.repository.fail.store(false, Ordering::SeqCst);
    for _ in 0..100 {
        if !h.service.cache_circuit_open() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!h.service.cache_circuit_open());
    let current = h
        .service
        .evaluate(&production, &key("colour"), &context)
        .await
        .unwrap();
    assert_eq!(current.reason(), Reason::Static);
}

#[tokio::test]
async fn a_zero_stale_if_error_bound_turns_last_known_good_off() {
    let cache = Arc::new(FakeCache::default());
    let repository = Arc::new(FakeRepository::default());
    let service = FeatureFlagService::builder(repository.clone(), cache.clone())
        .stale_if_error(Duration::ZERO)
        .build()
        .unwrap();
    let production = env("production");
    put_booleans(&service, "production", &[("colour", true)]).await;
    assert_eq!(
        value_of(&service, "production", "colour").await,
        json!(true)
    );
    cache.fail_reads.store(true, Ordering::SeqCst);
    repository.fail.store(true, Ordering::SeqCst);
    let error = service
        .evaluate(&production, &key("colour"), &EvaluationContext::new())
        .await
        .unwrap_err();
    assert!(matches!(error, ServiceError::Repository(_)), "{error:?}");
    assert!(!service.can_serve_last_known_good());
}

#[tokio::test]
async fn single_flag_reads_from_a_shared_cache_keep_last_known_good_up_to_date() {
    let h = harness();
    let production = env("production");
    h.service
        .upsert(
            &production,
            boolean("colour", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(
        value_of(&h.service, "production", "colour").await,
        json!(true)
    );
    // A second instance on the same cache: its reads are cache hits of single flags, so it has
    // never loaded a snapshot itself.
    let other = FeatureFlagService::builder(h.repository.clone(), h.cache.clone())
        .build()
        .unwrap();
    assert_eq!(value_of(&other, "production", "colour").await, json!(true));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !other.can_serve_last_known_good() {
        assert!(
            std::time::Instant::now() < deadline,
            "the whole snapshot was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.cache.fail_reads.store(true, Ordering::SeqCst);
    h.repository.fail.store(true, Ordering::SeqCst);
    let stale = other
        .evaluate(&production, &key("colour"), &EvaluationContext::new())
        .await
        .unwrap();
    assert_eq!(
        (stale.value().clone(), stale.reason()),
        (json!(true), Reason::Cached)
    );
}

#[tokio::test]
async fn a_write_after_the_repository_recovers_is_read_back_at_once_not_the_last_known_good() {
    let h = harness();
    let production = env("production");
    put_booleans(&h.service, "production", &[("colour", true)]).await;
    assert_eq!(
        value_of(&h.service, "production", "colour").await,
        json!(true)
    );
    h.cache.fail_reads.store(true, Ordering::SeqCst);
    h.repository.fail.store(true, Ordering::SeqCst);
    let stale = h
        .service
        .evaluate(&production, &key("colour"), &EvaluationContext::new())
        .await
        .unwrap();
    assert_eq!(stale.reason(), Reason::Cached);
    // The repository is back (the cache is not) well within its rest; a write goes through...
    h.repository.fail.store(false, Ordering::SeqCst);
    put_booleans(&h.service, "production", &[("colour", false)]).await;
    // ...and the very next read sees it, from the repository.
    let fresh = h
        .service
        .evaluate(&production, &key("colour"), &EvaluationContext::new())
        .await
        .unwrap();
    assert_eq!(
        (fresh.value().clone(), fresh.reason()),
        (json!(false), Reason::Static)
    );
}

#[tokio::test]
async fn environments_that_do_not_exist_cost_no_read_per_request_and_touch_no_cache() {
    let h = harness();
    put_booleans(&h.service, "production", &[("checkout", true)]).await;
    let (snapshots, reads, cache_reads, cache_sets) = (
        h.repository.reads(),
        h.service.metrics().repository_reads,
        h.cache.reads.load(Ordering::SeqCst),
        h.cache.sets.load(Ordering::SeqCst),
    );
    for index in 0..1_000 {
        let junk = env(&format!("junk-{index}"));
        let missing = h
            .service
            .evaluate(&junk, &key("checkout"), &EvaluationContext::new())
            .await;
        assert!(matches!(
            missing,
            Err(ServiceError::Evaluation(
                EvaluationError::FlagNotFound { .. }
            ))
        ));
        let bulk = h
            .service
            .evaluate_all(&junk, &EvaluationContext::new())
            .await
            .unwrap();
        assert!(bulk.results.is_empty());
        assert_eq!(bulk.revision, Revision(0));
    }
    assert_eq!(
        h.repository.reads(),
        snapshots,
        "no snapshot read for a junk name"
    );
    assert!(
        h.service.metrics().repository_reads - reads <= 1,
        "at most one listing for 2,000 junk reads within a second"
    );
    assert_eq!(h.cache.reads.load(Ordering::SeqCst), cache_reads);
    assert_eq!(h.cache.sets.load(Ordering::SeqCst), cache_sets);
    // The real environment still answers.
    assert_eq!(
        value_of(&h.service, "production", "checkout").await,
        json!(true)
    );
}

#[tokio::test]
async fn a_write_creating_an_environment_is_seen_by_the_very_next_read() {
    let h = harness();
    // Asked once while it does not exist: the catalog has just listed the repository.
    assert!(h.service.snapshot(&env("fresh")).await.unwrap().is_empty());
    put_booleans(&h.service, "fresh", &[("new", true)]).await;
    assert_eq!(value_of(&h.service, "fresh", "new").await, json!(true));
    // Removed once empty: it no longer exists, and writing it again continues its revision.
    h.service
        .delete(
            &env("fresh"),
            &key("new"),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    let removed = h.service.delete_environment(&env("fresh")).await.unwrap();
    assert_eq!(removed, Revision(3));
    assert_eq!(
        h.service.snapshot(&env("fresh")).await.unwrap().revision(),
        Revision(0)
    );
    put_booleans(&h.service, "fresh", &[("again", false)]).await;
    let snapshot = h.service.snapshot(&env("fresh")).await.unwrap();
    assert_eq!(snapshot.revision(), Revision(4));
}

#[tokio::test]
async fn writes_past_the_limits_are_refused_and_change_nothing() {
    let repository = Arc::new(FakeRepository::default());
    let service = FeatureFlagService::builder(repository, Arc::new(FakeCache::default()))
        .limits(Limits {
            max_environments: 1,
            max_flags: 1,
        })
        .build()
        .unwrap();
    put_booleans(&service, "one", &[("a", true)]).await;
    let second_flag = service
        .upsert(
            &env("one"),
            boolean("b", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await;
    assert!(matches!(
        second_flag,
        Err(ServiceError::Limit(LimitExceeded::Flags { limit: 1, .. }))
    ));
    let second_env = service
        .upsert(
            &env("two"),
            boolean("a", true),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await;
    assert!(matches!(
        second_env,
        Err(ServiceError::Limit(LimitExceeded::Environments {
            limit: 1,
            ..
        }))
    ));
    // Replacing the one flag is not creating one.
    put_booleans(&service, "one", &[("a", false)]).await;
    assert_eq!(service.environments().await.unwrap().len(), 1);
    assert_eq!(value_of(&service, "one", "a").await, json!(false));
}

#[tokio::test]
async fn a_cache_outage_costs_one_call_then_reads_skip_it_until_a_probe_finds_it_back() {
    let cache = Arc::new(FakeCache::default());
    let repository = Arc::new(FakeRepository::default());
    let service = FeatureFlagService::builder(repository.clone(), cache.clone())
        .ttl(Duration::from_secs(60))
        .outage_refresh(Duration::from_millis(300))
        .build()
        .unwrap();
    let prod = env("production");
    put_booleans(&service, "production", &[("kill-switch", true)]).await;
    put_booleans(&service, "staging", &[("kill-switch", true)]).await;
    for name in ["production", "staging"] {
        assert_eq!(value_of(&service, name, "kill-switch").await, json!(true));
    }

    cache.fail_reads.store(true, Ordering::SeqCst);
    cache.fail_sets.store(true, Ordering::SeqCst);
    let (cache_reads, repository_reads) = (cache.reads.load(Ordering::SeqCst), repository.reads());
    for _ in 0..50 {
        for name in ["production", "staging"] {
            assert_eq!(value_of(&service, name, "kill-switch").await, json!(true));
        }
    }
    assert!(service.cache_circuit_open());
    assert_eq!(
        cache.reads.load(Ordering::SeqCst),
        cache_reads + 1,
        "one failed call opens the circuit; no read calls the cache after it"
    );
    assert_eq!(
        repository.reads(),
        repository_reads + 2,
        "one repository read per environment per refresh interval"
    );
    assert!(
        service.ping_cache().await.is_err(),
        "readiness sees the open circuit"
    );

    // Read-your-writes holds with the cache out; the invalidation waits for the cache.
    let invalidations = cache.invalidations.load(Ordering::SeqCst);
    service
        .upsert(
            &prod,
            boolean("kill-switch", false),
            Precondition::None,
            &flag_core::Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(
        value_of(&service, "production", "kill-switch").await,
        json!(false)
    );
    assert_eq!(cache.invalidations.load(Ordering::SeqCst), invalidations);

    // Copies are read again after the refresh interval, once per environment.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = repository.reads();
    for _ in 0..20 {
        assert_eq!(
            value_of(&service, "staging", "kill-switch").await,
            json!(true)
        );
        assert_eq!(
            value_of(&service, "production", "kill-switch").await,
            json!(false)
        );
    }
    assert_eq!(repository.reads(), before + 2);

    // The cache comes back: a probe (due within a second while reads arrive) closes the
    // circuit, the pending invalidation lands, and reads use the cache again.
    cache.fail_reads.store(false, Ordering::SeqCst);
    cache.fail_sets.store(false, Ordering::SeqCst);
    let back = std::time::Instant::now();
    while service.cache_circuit_open() {
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "the circuit stays open"
        );
        value_of(&service, "staging", "kill-switch").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cache.pings.load(Ordering::SeqCst) >= 2);
    for _ in 0..100 {
        if cache.known_revision(&prod) == Revision(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cache.known_revision(&prod), Revision(2));
    let reads = cache.reads.load(Ordering::SeqCst);
    assert_eq!(
        value_of(&service, "production", "kill-switch").await,
        json!(false)
    );
    assert!(
        cache.reads.load(Ordering::SeqCst) > reads,
        "reads use the cache again"
    );
}

#[tokio::test]
async fn a_repository_failure_in_one_environment_never_hides_another_environments_data() {
    for failure in [
        RepositoryError::Corrupt {
            message: "a damaged row".into(),
        },
        RepositoryError::Unavailable {
            message: "this environment's read failed".into(),
        },
    ] {
        let h = harness();
        let (prod, broken) = (env("production"), env("broken"));
        put_booleans(&h.service, "production", &[("kill-switch", true)]).await;
        put_booleans(&h.service, "broken", &[("f", true)]).await;
        assert_eq!(value_of(&h.service, "broken", "f").await, json!(true));
        assert_eq!(
            value_of(&h.service, "production", "kill-switch").await,
            json!(true)
        );

        // Reading `broken` from the repository fails (it is answered from last-known-good).
        *h.repository.failing_environment.lock().unwrap() = Some((broken.clone(), failure.clone()));
        h.cache.invalidate(&broken, Revision(1)).await.unwrap();
        let stale = h
            .service
            .evaluate(&broken, &key("f"), &EvaluationContext::new())
            .await
            .unwrap();
        assert_eq!(stale.reason(), Reason::Cached, "{failure}");

        // Another instance flips the kill switch: this one reads production from the repository
        // at once, not from last-known-good.
        let revision = h
            .repository
            .write_behind_the_service(&prod, boolean("kill-switch", false))
            .await;
        h.cache.invalidate(&prod, revision).await.unwrap();
        let fresh = h
            .service
            .evaluate(&prod, &key("kill-switch"), &EvaluationContext::new())
            .await
            .unwrap();
        assert_eq!(
            (fresh.value().clone(), fresh.reason()),
            (json!(false), Reason::Static),
            "{failure}"
        );
    }
}

#[tokio::test]
async fn pending_invalidations_are_flushed_at_shutdown() {
    // Retries far apart, so only the flush can land the invalidation within the test.
    let h = harness_with(RetryPolicy {
        first_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(30),
        give_up_after: None,
    });
    let prod = env("production");
    put_booleans(&h.service, "production", &[("kill-switch", true)]).await;
    assert_eq!(
        value_of(&h.service, "production", "kill-switch").await,
        json!(true)
    );
    h.cache
        .failing_invalidations
        .store(u32::MAX, Ordering::SeqCst);
    put_booleans(&h.service, "production", &[("kill-switch", false)]).await;
    assert_eq!(h.cache.known_revision(&prod), Revision(1));

    // Still failing: the flush says so.
    assert_eq!(h.service.flush_invalidations().await, 1);
    // The cache answers again: the flush lands the write's invalidation.
    h.cache.failing_invalidations.store(0, Ordering::SeqCst);
    assert_eq!(h.service.flush_invalidations().await, 0);
    assert_eq!(h.cache.known_revision(&prod), Revision(2));
    assert_eq!(
        h.service.flush_invalidations().await,
        0,
        "nothing is left pending"
    );
}

/// A fresh directory under the system's temporary one.
fn scratch_directory(name: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("flag-core-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    directory
}

#[tokio::test]
async fn last_known_good_snapshots_persisted_on_disk_answer_after_a_restart_in_a_full_outage() {
    let directory = scratch_directory("last-good");
    {
        let (cache, repository) = (
            Arc::new(FakeCache::default()),
            Arc::new(FakeRepository::default()),
        );
        let service = FeatureFlagService::builder(repository, cache)
            .last_good_dir(&directory)
            .build()
            .unwrap();
        put_booleans(
            &service,
            "production",
            &[("kill-switch", false), ("other", true)],
        )
        .await;
        assert_eq!(
            value_of(&service, "production", "kill-switch").await,
            json!(false)
        );
        let file = directory.join("production.json");
        for _ in 0..200 {
            if std::fs::read_to_string(&file).is_ok_and(|text| text.contains("\"revision\":2")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(file.exists(), "the snapshot was written");
    }
    // A new process, with the cache and the database both out.
    let (cache, repository) = (
        Arc::new(FakeCache::default()),
        Arc::new(FakeRepository::default()),
    );
    cache.fail_reads.store(true, Ordering::SeqCst);
    repository.fail.store(true, Ordering::SeqCst);
    let service = FeatureFlagService::builder(repository.clone(), cache.clone())
        .last_good_dir(&directory)
        .build()
        .unwrap();
    assert!(service.can_serve_last_known_good());
    let answer = service
        .evaluate(
            &env("production"),
            &key("kill-switch"),
            &EvaluationContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (answer.value().clone(), answer.reason()),
        (json!(false), Reason::Cached)
    );
    assert_eq!(
        service
            .evaluate_all(&env("production"), &EvaluationContext::new())
            .await
            .unwrap()
            .results
            .len(),
        2
    );
    // Past the stale-if-error bound, the files are not served.
    let strict = FeatureFlagService::builder(repository, cache)
        .last_good_dir(&directory)
        .stale_if_error(Duration::from_millis(1))
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!strict.can_serve_last_known_good());
    // An unreadable file is skipped, not fatal.
    std::fs::write(directory.join("broken.json"), "{not json").unwrap();
    let (cache, repository) = (
        Arc::new(FakeCache::default()),
        Arc::new(FakeRepository::default()),
    );
    assert!(
        FeatureFlagService::builder(repository, cache)
            .last_good_dir(&directory)
            .build()
            .is_ok()
    );
    let _ = std::fs::remove_dir_all(&directory);
}
