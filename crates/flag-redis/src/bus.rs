//! `RedisBus`: the invalidation bus on Redis pub/sub.
//!
//! - **Single node and Sentinel: classic pub/sub.** One channel, `<prefix>:invalidations`, carries
//!   every environment's invalidations, so every environment is watched as soon as the one
//!   subscription is up.
//! - **Cluster: sharded pub/sub.** Each environment has a channel of its own,
//!   `<prefix>:{<env>}:invalidations`, which carries the environment's hash tag: `SPUBLISH` and
//!   `SSUBSCRIBE` go to the node owning the environment's keys, instead of classic `PUBLISH`
//!   being broadcast to every node of the Cluster. A process subscribes to an environment's
//!   channel when its tiered cache first wants to keep that environment in memory
//!   ([`InvalidationBus::watch`]); until the subscription is confirmed the environment is not
//!   watched, so nothing of it is kept. At most [`MAX_WATCHED`] environments are watched; the
//!   others are always read from Redis. Subscriptions last as long as the bus: environments
//!   are few, and unsubscribing when an entry expires would churn.
//!
//! Publishing goes through the shared connection of the client the bus shares with its cache
//! (with its timeout). Receiving needs a
//! connection of its own: a task keeps it subscribed. When it drops (Redis restarted,
//! `CLIENT KILL TYPE pubsub`, a failover; on a Cluster, any node's connection, or the server
//! unsubscribing a channel whose slot moved) the task reports [`BusEvent::Lost`], connects again
//! with backoff (50 ms doubling to 1 s), subscribes to every channel again, and reports
//! [`BusEvent::Restored`] once every one is confirmed. Subscriber connections are pinged every
//! `FLAG_BUS_PING_MS` (1 s; on a Cluster, every primary's connection, which is where the sharded
//! subscriptions live): one that stays silent for two intervals (a partition without a reset, a
//! frozen Redis or node) is a loss too, so a tiered cache stops serving from memory instead of
//! waiting for its L1 TTL. A loss on one node of a Cluster is
//! reported as a loss of everything: which environments lived there is not known for sure while
//! slots may be moving, and a whole drop of the in-process layer is always safe.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flag_core::{
    BUS_CAPACITY, BusError, BusEvent, Environment, InvalidationBus, Revision, async_trait,
};
use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use crate::cache::RedisCache;
use crate::client::RedisClient;

/// The most environments a bus on a Cluster watches; the others are always read from Redis.
pub const MAX_WATCHED: usize = 1024;

/// The first wait before connecting again, doubled after every failure.
const FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between two attempts to connect.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// How often the subscriber connection is pinged when not configured (`FLAG_BUS_PING_MS`).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);

/// A message on a channel.
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
    client: RedisClient,
    /// Sharded pub/sub (a Cluster) rather than one classic channel.
    sharded: bool,
    sender: broadcast::Sender<BusEvent>,
    live: Arc<AtomicBool>,
    watched: Arc<Mutex<Watched>>,
    /// Environments to subscribe to, for the sharded subscriber task.
    requests: mpsc::UnboundedSender<Environment>,
    subscriber: tokio::task::AbortHandle,
}

/// The environments of a sharded bus.
#[derive(Default)]
struct Watched {
    /// Every environment asked for.
    wanted: HashSet<Environment>,
    /// Those whose subscription is confirmed on the current connection.
    confirmed: HashSet<Environment>,
}

impl Drop for BusShared {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("client", &self.shared.client)
            .field("sharded", &self.shared.sharded)
            .field("live", &self.shared.live.load(Ordering::SeqCst))
            .finish()
    }
}

impl RedisBus {
    /// A bus on the same Redis, connection settings and key prefix as `cache`; starts subscribing
    /// at once (in the background: a Redis that is down now is subscribed to when it is up).
    /// Call it inside a Tokio runtime, which runs the subscriber task.
    pub fn start(cache: &RedisCache) -> Self {
        Self::start_with_ping(cache, DEFAULT_PING_INTERVAL)
    }

    /// Like [`RedisBus::start`], pinging the subscriber connection every `ping` (a zero interval
    /// is taken as the default): a connection that stays silent past two intervals (a network
    /// partition without a reset, a frozen Redis) is taken as lost.
    pub fn start_with_ping(cache: &RedisCache, ping: Duration) -> Self {
        let ping = if ping.is_zero() {
            DEFAULT_PING_INTERVAL
        } else {
            ping
        };
        let client = cache.client().clone();
        let sharded = client.connector().is_cluster();
        let sender = broadcast::channel(BUS_CAPACITY).0;
        let live = Arc::new(AtomicBool::new(false));
        let watched = Arc::new(Mutex::new(Watched::default()));
        let (requests, requested) = mpsc::unbounded_channel();
        let listener = Listener {
            client: client.clone(),
            sender: sender.clone(),
            live: Arc::clone(&live),
            ping,
        };
        let subscriber = if sharded {
            tokio::spawn(listener.keep_sharded(Arc::clone(&watched), requested))
        } else {
            tokio::spawn(listener.keep_classic())
        }
        .abort_handle();
        Self {
            shared: Arc::new(BusShared {
                client,
                sharded,
                sender,
                live,
                watched,
                requests,
                subscriber,
            }),
        }
    }

    /// The channel that carries `env`'s invalidations.
    pub fn channel(&self, env: &Environment) -> String {
        channel_of(&self.shared.client, self.shared.sharded, env)
    }

    /// Whether the bus uses sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, on a Cluster).
    pub fn is_sharded(&self) -> bool {
        self.shared.sharded
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `<prefix>:{<env>}:invalidations` when sharded: it begins with the environment's key, so it
/// has the key's hash tag and slot whatever the prefix holds. `<prefix>:invalidations` otherwise.
fn channel_of(client: &RedisClient, sharded: bool, env: &Environment) -> String {
    if sharded {
        format!("{}:invalidations", client.key(env))
    } else {
        format!("{}:invalidations", client.prefix())
    }
}

/// What a subscriber task needs: where to connect, and where to report.
struct Listener {
    client: RedisClient,
    sender: broadcast::Sender<BusEvent>,
    live: Arc<AtomicBool>,
    /// How often the classic subscriber connection is pinged.
    ping: Duration,
}

impl Listener {
    /// How long one attempt to connect and subscribe may take.
    fn connect_timeout(&self) -> Duration {
        self.client.timeout().max(Duration::from_secs(1))
    }

    fn restored(&self) {
        self.live.store(true, Ordering::SeqCst);
        let _ = self.sender.send(BusEvent::Restored);
    }

    fn lost(&self, why: &str) {
        self.live.store(false, Ordering::SeqCst);
        let _ = self.sender.send(BusEvent::Lost);
        warn!(why, "invalidation subscription lost; reconnecting");
    }

    fn forward(&self, payload: &[u8]) {
        match decode(payload) {
            Some(event) => {
                let _ = self.sender.send(event);
            }
            None => warn!("ignoring an unreadable invalidation message"),
        }
    }

    /// Keeps the one classic subscription up, forwarding what arrives, until aborted.
    async fn keep_classic(self) {
        let channel = format!("{}:invalidations", self.client.prefix());
        let mut delay = FIRST_DELAY;
        loop {
            let subscribed = async {
                let mut pubsub = self.client.connector().pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(self.connect_timeout(), subscribed).await {
                Ok(Ok(pubsub)) => {
                    self.restored();
                    debug!(%channel, "subscribed to invalidations");
                    delay = FIRST_DELAY;
                    let why = self.listen(pubsub).await;
                    self.lost(why);
                }
                Ok(Err(error)) => debug!(%channel, %error, "subscribing to invalidations failed"),
                Err(_) => debug!(%channel, "subscribing to invalidations timed out"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// Forwards what arrives on `pubsub` and pings it every interval, until the connection closes
    /// or goes silent ([`Heartbeat`]); answers why it ended.
    async fn listen(&self, pubsub: redis::aio::PubSub) -> &'static str {
        let (sink, mut messages) = pubsub.split();
        let mut heartbeat = Heartbeat::start(self.ping).await;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => {
                        heartbeat.heard();
                        self.forward(message.get_payload_bytes());
                    }
                    None => return "the connection closed",
                },
                _ = heartbeat.due() => {
                    let mut sink = sink.clone();
                    // A subscribed connection answers PING with `["pong", ""]` (RESP2), not the
                    // simple `PONG`: any answer will do, only silence is a loss.
                    let answered = async move { sink.ping::<redis::Value>().await.is_ok() };
                    if !heartbeat.beat(answered).await {
                        return "PING not answered within an interval";
                    }
                }
            }
        }
    }

    /// Keeps one sharded subscription per watched environment, until aborted: connects, subscribes
    /// to every environment asked for so far, then serves new requests and forwards messages
    /// until anything about the connection goes wrong, and starts over.
    async fn keep_sharded(
        self,
        watched: Arc<Mutex<Watched>>,
        mut requests: mpsc::UnboundedReceiver<Environment>,
    ) {
        let confirmed = |env: Environment| {
            watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .confirmed
                .insert(env);
        };
        let mut delay = FIRST_DELAY;
        loop {
            let (push_sender, mut pushes) = mpsc::unbounded_channel();
            let wanted: Vec<Environment> = watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wanted
                .iter()
                .cloned()
                .collect();
            // Each step has its own timeout, so that many environments to subscribe again
            // never add up to one that runs out.
            let subscribed = async {
                let connection = tokio::time::timeout(
                    self.connect_timeout(),
                    self.client.connector().sharded_subscriber(push_sender),
                )
                .await
                .map_err(|_| "connecting timed out".to_owned())?;
                let mut connection = connection
                    .ok_or_else(|| "sharded pub/sub needs a Cluster".to_owned())?
                    .map_err(|error| error.to_string())?;
                for env in &wanted {
                    self.subscribe(&mut connection, env).await?;
                }
                Ok::<_, String>(connection)
            };
            let mut connection = match subscribed.await {
                Ok(connection) => connection,
                Err(error) => {
                    debug!(%error, "subscribing to invalidations failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    continue;
                }
            };
            wanted.into_iter().for_each(confirmed);
            self.restored();
            debug!("subscribed to sharded invalidations");
            delay = FIRST_DELAY;
            let mut heartbeat = Heartbeat::start(self.ping).await;
            let why = loop {
                tokio::select! {
                    _ = heartbeat.due() => {
                        // Every primary's connection, so every node a subscription may live on:
                        // one that went silent is a loss like one that closed.
                        let mut pinger = connection.clone();
                        let every_node = RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::AllSucceeded),
                        ));
                        let answered = async move {
                            pinger.route_command(redis::cmd("PING"), every_node).await.is_ok()
                        };
                        if !heartbeat.beat(answered).await {
                            break "a node did not answer PING within an interval";
                        }
                    }
                    request = requests.recv() => {
                        let Some(env) = request else { return };
                        match self.subscribe(&mut connection, &env).await {
                            Ok(()) => confirmed(env),
                            Err(error) => {
                                debug!(%error, "subscribing to an environment failed");
                                break "subscribing to an environment failed";
                            }
                        }
                    }
                    push = pushes.recv() => match push {
                        None => break "the connection closed",
                        Some(PushInfo { kind: PushKind::SMessage, data }) => {
                            heartbeat.heard();
                            if let Some(Value::BulkString(payload)) = data.get(1) {
                                self.forward(payload);
                            }
                        }
                        Some(PushInfo { kind: PushKind::Disconnection, .. }) => {
                            break "a node's connection dropped";
                        }
                        // Never asked for: the server dropped the channel (its slot moved away).
                        Some(PushInfo { kind: PushKind::SUnsubscribe, .. }) => {
                            break "the server unsubscribed a channel";
                        }
                        Some(_) => {}
                    },
                }
            };
            watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .confirmed
                .clear();
            self.lost(why);
            tokio::time::sleep(delay).await;
        }
    }

    /// Subscribes to `env`'s channel on the node that owns its slot, within the connect timeout.
    async fn subscribe(
        &self,
        connection: &mut ClusterConnection,
        env: &Environment,
    ) -> Result<(), String> {
        let channel = channel_of(&self.client, true, env);
        match tokio::time::timeout(self.connect_timeout(), connection.ssubscribe(&channel)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("SSUBSCRIBE {channel}: {error}")),
            Err(_) => Err(format!("SSUBSCRIBE {channel} timed out")),
        }
    }
}

/// Judges a subscriber connection by pinging it every interval: a ping has until the next tick to
/// be answered, and a message heard in between is proof enough that the connection lives. A
/// partition without a reset leaves a connection that looks open and carries nothing, so silence
/// is noticed within two intervals.
struct Heartbeat {
    ticks: tokio::time::Interval,
    pending: Option<tokio::task::JoinHandle<bool>>,
    heard: bool,
}

impl Heartbeat {
    /// Starts ticking every `every`; the first ping is due one interval from now.
    async fn start(every: Duration) -> Self {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        Self {
            ticks,
            pending: None,
            heard: false,
        }
    }

    /// Notes that something arrived on the connection.
    fn heard(&mut self) {
        self.heard = true;
    }

    /// Resolves when the next ping is due.
    async fn due(&mut self) {
        self.ticks.tick().await;
    }

    /// Judges the previous ping and sends `ping` (answering whether it was answered): false when
    /// the connection was silent for the whole last interval.
    async fn beat(&mut self, ping: impl Future<Output = bool> + Send + 'static) -> bool {
        if let Some(previous) = self.pending.take()
            && !std::mem::take(&mut self.heard)
            && (!previous.is_finished() || !matches!(previous.await, Ok(true)))
        {
            return false;
        }
        self.heard = false;
        self.pending = Some(tokio::spawn(ping));
        true
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
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
        let channel = self.channel(env);
        let command = if self.shared.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        self.shared
            .client
            .call(|mut link| async move {
                redis::cmd(command)
                    .arg(&channel)
                    .arg(&payload)
                    .query_async::<i64>(&mut link)
                    .await
            })
            .await
            .map(drop)
            .map_err(BusError::from)
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.shared.sender.subscribe()
    }

    fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }

    fn is_watching(&self, env: &Environment) -> bool {
        self.is_live() && (!self.shared.sharded || self.watched().confirmed.contains(env))
    }

    fn watch(&self, env: &Environment) {
        if !self.shared.sharded {
            return;
        }
        let mut watched = self.watched();
        if watched.wanted.len() < MAX_WATCHED && watched.wanted.insert(env.clone()) {
            // The task is gone only when the bus is; then nothing needs subscribing.
            let _ = self.shared.requests.send(env.clone());
        }
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
