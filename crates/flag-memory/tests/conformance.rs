//! The whole cache conformance suite against `MemoryCache`.

use std::sync::Arc;

use flag_conformance::{CacheCapabilities, SharedCache, cache_suite};
use flag_memory::{MemoryCache, TTL_SLACK};

cache_suite!(
    memory,
    || async { Arc::new(MemoryCache::new()) as SharedCache },
    CacheCapabilities {
        ttl_slack: TTL_SLACK,
        max_value_bytes: None,
    }
);
