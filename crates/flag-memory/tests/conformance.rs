//! The whole cache conformance suite against `MemoryCache`, and against `AnnouncedCache` over it
//! (announcing adds a publish and changes nothing a reader sees), plus what announcing adds.

use std::sync::Arc;
use std::time::Duration;

use flag_conformance::{CacheCapabilities, SharedCache, cache_suite};
use flag_core::{
    BusError, BusEvent, Environment, FeatureFlagCache, InvalidationBus, Revision, async_trait,
};
use flag_memory::{AnnouncedCache, LocalBus, MemoryCache, TTL_SLACK};
use tokio::sync::broadcast;

cache_suite!(
    memory,
    || async { Arc::new(MemoryCache::new()) as SharedCache },
    CacheCapabilities {
        ttl_slack: TTL_SLACK,
        max_value_bytes: None,
    }
);

cache_suite!(
    announced,
    || async {
        Arc::new(AnnouncedCache::new(
            Arc::new(MemoryCache::new()),
            Arc::new(LocalBus::new()),
        )) as SharedCache
    },
    CacheCapabilities {
        ttl_slack: TTL_SLACK,
        max_value_bytes: None,
    }
);

#[tokio::test]
async fn an_announced_invalidation_is_published_and_a_failed_publish_fails_it() {
    let bus = LocalBus::new();
    let mut events = bus.subscribe();
    let cache = AnnouncedCache::new(Arc::new(MemoryCache::new()), Arc::new(bus.clone()));
    let env = Environment::parse("production").unwrap();
    cache.invalidate(&env, Revision(3)).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event,
        BusEvent::Invalidated {
            environment: env.clone(),
            revision: Revision(3)
        }
    );
}

/// A bus whose publishes all fail.
#[derive(Debug)]
struct Refusing(LocalBus);

#[async_trait]
impl InvalidationBus for Refusing {
    fn backend(&self) -> &'static str {
        "refusing"
    }
    async fn publish(&self, _: &Environment, _: Revision) -> Result<(), BusError> {
        Err(BusError::Unavailable {
            message: "refused".into(),
        })
    }
    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.0.subscribe()
    }
    fn is_live(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_invalidation_not_published_fails_so_that_it_is_retried() {
    let inner = Arc::new(MemoryCache::new());
    let cache = AnnouncedCache::new(inner.clone(), Arc::new(Refusing(LocalBus::new())));
    let env = Environment::parse("production").unwrap();
    assert!(cache.invalidate(&env, Revision(4)).await.is_err());
    // The inner cache took it all the same: an older fill is stale.
    let older = Arc::new(flag_core::EnvironmentSnapshot::empty(Revision(3)));
    assert_eq!(
        inner
            .set(&env, older, Duration::from_secs(60))
            .await
            .unwrap(),
        flag_core::SetOutcome::Stale
    );
}
