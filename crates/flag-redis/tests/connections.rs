//! The other ways in: a unix socket (`redis+unix://`) and an ACL user (`user:password@`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use flag_conformance::generation_snapshot;
use flag_core::{CacheError, Environment, FeatureFlagCache};
use flag_fixtures::{RedisProcess, ScratchDir};
use flag_redis::RedisCache;

async fn round_trip(cache: &RedisCache) -> Result<(), CacheError> {
    let env = Environment::parse("production").unwrap();
    let snapshot = generation_snapshot(1, 2, 1);
    cache
        .set(&env, Arc::new(snapshot.clone()), Duration::from_secs(60))
        .await?;
    assert_eq!(cache.get(&env).await?.as_deref(), Some(&snapshot));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_url_works() {
    let directory = ScratchDir::new().unwrap();
    let socket = directory.path().join("redis.sock");
    let socket_arg = socket.to_string_lossy().into_owned();
    let _redis = RedisProcess::spawn(&["--unixsocket", &socket_arg, "--unixsocketperm", "700"])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let cache = RedisCache::from_url(format!("redis+unix://{socket_arg}")).unwrap();
    round_trip(&cache).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_its_password_works_and_a_wrong_one_is_refused() {
    let redis = RedisProcess::spawn(&[])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        redis
            .command("ACL SETUSER flags on >s3cret ~* &* +@all")
            .await
            .unwrap(),
        "+OK"
    );

    let cache =
        RedisCache::from_url(format!("redis://flags:s3cret@127.0.0.1:{}", redis.port())).unwrap();
    round_trip(&cache).await.unwrap();
    assert!(!format!("{cache:?}").contains("s3cret"));

    let wrong =
        RedisCache::from_url(format!("redis://flags:nope@127.0.0.1:{}", redis.port())).unwrap();
    let refused = round_trip(&wrong).await.unwrap_err();
    assert!(!refused.to_string().contains("nope"), "{refused}");
}
