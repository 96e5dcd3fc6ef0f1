//! `rediss://`: the cache talks TLS to a TLS-only `redis-server`, and refuses a certificate it
//! cannot verify unless told otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use flag_conformance::generation_snapshot;
use flag_core::{CacheError, Environment, FeatureFlagCache};
use flag_fixtures::RedisTls;
use flag_redis::RedisCache;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_round_trips_over_tls() {
    let server = RedisTls::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let env = Environment::parse("production").unwrap();

    // The test certificate is self-signed: verification must refuse it...
    let verified = RedisCache::builder(format!("rediss://127.0.0.1:{}", server.port()))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let refused = verified.get(&env).await;
    // (The connection manager keeps retrying the handshake, so this may surface as a timeout.)
    assert!(
        matches!(
            refused,
            Err(CacheError::Unavailable { .. }
                | CacheError::Backend { .. }
                | CacheError::Timeout { .. })
        ),
        "an unverifiable certificate was accepted: {refused:?}"
    );

    // ...and with verification explicitly off (`#insecure`), the same server serves the cache.
    let cache = RedisCache::builder(format!("rediss://127.0.0.1:{}/#insecure", server.port()))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let snapshot = generation_snapshot(2, 3, 1);
    cache
        .set(&env, Arc::new(snapshot.clone()), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get(&env).await.unwrap().as_deref(), Some(&snapshot));
}
