//! The whole cache conformance suite against `RedisCache`, on a real single node and on a real
//! three-master Redis Cluster.
//!
//! The suite is about behaviour, not latency, so calls get a generous timeout here; the fault
//! tests use the production default of 100 ms.

use std::sync::Arc;
use std::time::Duration;

use flag_conformance::{CacheCapabilities, SharedCache, cache_suite};
use flag_fixtures::{RedisEndpoint, RedisServer};
use flag_redis::{RedisCache, TTL_SLACK};

const CAPABILITIES: CacheCapabilities = CacheCapabilities {
    ttl_slack: TTL_SLACK,
    max_value_bytes: None,
};

fn cache_at(endpoint: RedisEndpoint) -> SharedCache {
    let cache = RedisCache::builder(endpoint.url)
        .key_prefix(endpoint.key_prefix)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    Arc::new(cache)
}

async fn single_node() -> SharedCache {
    cache_at(
        RedisServer::shared()
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    )
}

async fn cluster() -> SharedCache {
    cache_at(
        RedisServer::shared_cluster()
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    )
}

cache_suite!(single_node, single_node, CAPABILITIES);
cache_suite!(cluster, cluster, CAPABILITIES);
