//! `RedisBus`: the invalidation bus on Redis pub/sub.
//!
//! Publishing goes through the cache's shared connection (with its timeout) as
//! `PUBLISH <prefix>:invalidations {"environment","revision"}`. Receiving needs a connection of its
//! own (a subscribed connection can do nothing else): a task keeps one subscribed, and when it
//! drops (Redis restarted, `CLIENT KILL TYPE pubsub`, a failover) reports [`BusEvent::Lost`],
//! reconnects with backoff (50 ms doubling to 1 s), and reports [`BusEvent::Restored`] once
//! subscribed again. On a Cluster, classic pub/sub reaches every node, so one subscription to any
//! node hears every publish; sharded pub/sub (`SPUBLISH`, one channel per environment's slot)
//! would spare the other nodes the traffic and is left for when a profile asks for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flag_core::{
    BUS_CAPACITY, BusError, BusEvent, CacheError, Environment, InvalidationBus, Revision,
    async_trait,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::RedisCache;

/// A message on the channel.
#[derive(Serialize, Deserialize)]
struct Message {
    environment: String,
    revision: u64,
}

/// The invalidation bus on Redis pub/sub; cheap to clone, and its subscriber task ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct RedisBus {
    shared: Arc<BusShared>,
}

struct BusShared {
    cache: RedisCache,
    channel: String,
    sender: broadcast::Sender<BusEvent>,
    live: Arc<AtomicBool>,
    subscriber: tokio::task::AbortHandle,
}

impl Drop for BusShared {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("cache", &self.shared.cache)
            .field("channel", &self.shared.channel)
            .field("live", &self.shared.live.load(Ordering::SeqCst))
            .finish()
    }
}

impl RedisBus {
    /// A bus on the same Redis, connection settings and key prefix as `cache`; starts subscribing
    /// at once (in the background: a Redis that is down now is subscribed to when it is up).
    /// Call it inside a Tokio runtime, which runs the subscriber task.
    pub fn start(cache: &RedisCache) -> Self {
        let channel = format!("{}:invalidations", cache.shared.prefix);
        let sender = broadcast::channel(BUS_CAPACITY).0;
        let live = Arc::new(AtomicBool::new(false));
        let subscriber = tokio::spawn(subscribe_forever(
            cache.clone(),
            channel.clone(),
            sender.clone(),
            Arc::clone(&live),
        ))
        .abort_handle();
        Self {
            shared: Arc::new(BusShared {
                cache: cache.clone(),
                channel,
                sender,
                live,
                subscriber,
            }),
        }
    }

    /// The channel the bus publishes on and listens to.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }
}

/// Keeps one subscription up, forwarding what arrives, until aborted.
async fn subscribe_forever(
    cache: RedisCache,
    channel: String,
    sender: broadcast::Sender<BusEvent>,
    live: Arc<AtomicBool>,
) {
    const FIRST_DELAY: Duration = Duration::from_millis(50);
    const MAX_DELAY: Duration = Duration::from_secs(1);
    let mut delay = FIRST_DELAY;
    loop {
        let subscribed = async {
            let mut pubsub = cache.shared.connector.pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(cache.shared.timeout.max(Duration::from_secs(1)), subscribed)
            .await
        {
            Ok(Ok(pubsub)) => {
                live.store(true, Ordering::SeqCst);
                let _ = sender.send(BusEvent::Restored);
                debug!(%channel, "subscribed to invalidations");
                delay = FIRST_DELAY;
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    match decode(message.get_payload_bytes()) {
                        Some(event) => {
                            let _ = sender.send(event);
                        }
                        None => warn!(%channel, "ignoring an unreadable invalidation message"),
                    }
                }
                live.store(false, Ordering::SeqCst);
                let _ = sender.send(BusEvent::Lost);
                warn!(%channel, "invalidation subscription lost; reconnecting");
            }
            Ok(Err(error)) => debug!(%channel, %error, "subscribing to invalidations failed"),
            Err(_) => debug!(%channel, "subscribing to invalidations timed out"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

fn decode(payload: &[u8]) -> Option<BusEvent> {
    let message: Message = serde_json::from_slice(payload).ok()?;
    Some(BusEvent::Invalidated {
        environment: Environment::parse(&message.environment).ok()?,
        revision: Revision(message.revision),
    })
}

#[async_trait]
impl InvalidationBus for RedisBus {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, env: &Environment, revision: Revision) -> Result<(), BusError> {
        let payload = serde_json::to_string(&Message {
            environment: env.to_string(),
            revision: revision.get(),
        })
        .map_err(|error| BusError::Unavailable {
            message: error.to_string(),
        })?;
        let channel = self.shared.channel.clone();
        self.shared
            .cache
            .call(|mut link| async move {
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&payload)
                    .query_async::<i64>(&mut link)
                    .await
            })
            .await
            .map(drop)
            .map_err(|error| match error {
                CacheError::Timeout { after } => BusError::Timeout { after },
                other => BusError::Unavailable {
                    message: other.to_string(),
                },
            })
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.shared.sender.subscribe()
    }

    fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_ignored() {
        let payload = serde_json::to_vec(&Message {
            environment: "prod-eu".into(),
            revision: 42,
        })
        .unwrap();
        assert_eq!(
            decode(&payload),
            Some(BusEvent::Invalidated {
                environment: Environment::parse("prod-eu").unwrap(),
                revision: Revision(42)
            })
        );
        assert_eq!(decode(b"{not json"), None);
        assert_eq!(decode(br#"{"environment":"Bad*","revision":1}"#), None);
    }
}
