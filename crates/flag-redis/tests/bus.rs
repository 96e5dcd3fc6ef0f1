//! `RedisBus` on real Redis: the whole bus suite on a single node, a Cluster and through
//! Sentinel (each property on servers of its own, which it interrupts with `CLIENT KILL TYPE
//! pubsub`); and what only Redis does: one classic channel on a single node (and on the master
//! Sentinel names); on a Cluster, one sharded channel per environment, subscribed on the node that
//! owns the environment's keys, and every one of them subscribed again after the connection is
//! lost or the slot moves to another node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use flag_conformance::{BusCapabilities, BusMedium, SharedBus, SharedMedium, bus_suite};
use flag_core::{BusEvent, Environment, InvalidationBus, Revision, async_trait};
use flag_fixtures::{FixtureError, RedisCluster, RedisProcess, RedisSentinel, RedisServer};
use flag_redis::{MAX_WATCHED, RedisBus, RedisCache};
use tokio::sync::broadcast;

/// The servers a bus suite property runs on: its own, so that killing their subscriber
/// connections disturbs no other test.
enum Servers {
    Node(RedisProcess),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

/// Buses on servers of their own: every bus opened is a server instance on the same Redis and
/// key prefix; an interruption kills every subscriber connection on every node.
struct RedisMedium {
    servers: Servers,
}

impl RedisMedium {
    fn on(servers: Result<Servers, FixtureError>) -> SharedMedium {
        Arc::new(Self {
            servers: servers.unwrap_or_else(|error| panic!("{error}")),
        })
    }

    async fn node() -> SharedMedium {
        Self::on(RedisProcess::spawn(&[]).await.map(Servers::Node))
    }

    async fn cluster() -> SharedMedium {
        Self::on(RedisCluster::start().await.map(Servers::Cluster))
    }

    async fn sentinel() -> SharedMedium {
        Self::on(RedisSentinel::start().await.map(Servers::Sentinel))
    }

    fn url(&self) -> String {
        match &self.servers {
            Servers::Node(process) => process.url(),
            Servers::Cluster(cluster) => cluster.url().to_owned(),
            Servers::Sentinel(sentinel) => sentinel.url(),
        }
    }
}

#[async_trait]
impl BusMedium for RedisMedium {
    async fn open(&self) -> SharedBus {
        Arc::new(RedisBus::start(&cache(&self.url(), "suite")))
    }

    async fn interrupt(&self) -> Result<(), String> {
        const KILL: &str = "CLIENT KILL TYPE pubsub";
        match &self.servers {
            Servers::Node(process) => process.command(KILL).await.map(drop),
            Servers::Cluster(cluster) => cluster.command_on_every_node(KILL).await.map(drop),
            Servers::Sentinel(sentinel) => sentinel.master().command(KILL).await.map(drop),
        }
    }
}

const CLASSIC: BusCapabilities = BusCapabilities {
    max_watched: None,
    patience: PATIENCE,
};

bus_suite!(single_node, RedisMedium::node, CLASSIC);
bus_suite!(
    cluster,
    RedisMedium::cluster,
    BusCapabilities {
        max_watched: Some(MAX_WATCHED),
        ..CLASSIC
    }
);
bus_suite!(sentinel, RedisMedium::sentinel, CLASSIC);

/// How long anything asynchronous may take before the test calls it lost (a bound on a hang on
/// a loaded machine, not a latency target).
const PATIENCE: Duration = Duration::from_secs(10);

fn env(name: &str) -> Environment {
    Environment::parse(name).unwrap()
}

fn cache(url: &str, prefix: &str) -> RedisCache {
    RedisCache::builder(url)
        .key_prefix(prefix)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A cache and two buses on it, a publisher and a subscriber, both connected.
async fn connected_pair(url: &str, prefix: &str) -> (RedisCache, RedisBus, RedisBus) {
    let cache = cache(url, prefix);
    let publisher = RedisBus::start(&cache);
    let subscriber = RedisBus::start(&cache);
    eventually("connecting", || subscriber.is_live() && publisher.is_live()).await;
    (cache, publisher, subscriber)
}

/// Asks `bus` to watch `env` until it does.
async fn watching(bus: &RedisBus, env: &Environment) {
    bus.watch(env);
    eventually(&format!("watching {env}"), || bus.is_watching(env)).await;
}

/// The next event that `keep` accepts.
async fn next_event(
    events: &mut broadcast::Receiver<BusEvent>,
    keep: impl Fn(&BusEvent) -> bool,
) -> BusEvent {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .expect("no such event arrived")
            .unwrap();
        if keep(&event) {
            return event;
        }
    }
}

/// The next invalidation.
async fn next_invalidation(events: &mut broadcast::Receiver<BusEvent>) -> BusEvent {
    next_event(events, |event| {
        matches!(event, BusEvent::Invalidated { .. })
    })
    .await
}

fn invalidated(environment: &Environment, revision: u64) -> BusEvent {
    BusEvent::Invalidated {
        environment: environment.clone(),
        revision: Revision(revision),
    }
}

/// The first node of a `redis+cluster://` URL, as a plain `redis://` URL.
fn first_node(cluster_url: &str) -> String {
    let hosts = cluster_url.strip_prefix("redis+cluster://").unwrap();
    format!("redis://{}", hosts.split(',').next().unwrap())
}

async fn integer(url: &str, command: &mut redis::Cmd) -> i64 {
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    command.query_async(&mut connection).await.unwrap()
}

/// How many sharded subscribers `channel` has across the Cluster (each node counts its own).
async fn shard_subscribers(cluster_url: &str, channel: &str) -> i64 {
    let mut total = 0;
    for host in cluster_url
        .strip_prefix("redis+cluster://")
        .unwrap()
        .split(',')
    {
        let reply: Vec<redis::Value> = {
            let mut connection = redis::Client::open(format!("redis://{host}"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(channel)
                .query_async(&mut connection)
                .await
                .unwrap()
        };
        if let Some(redis::Value::Int(count)) = reply.get(1) {
            total += count;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_carries_every_environment_on_one_classic_channel() {
    let endpoint = RedisServer::shared()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let publisher = RedisBus::start(&cache(&endpoint.url, &endpoint.key_prefix));
    let subscriber = RedisBus::start(&cache(&endpoint.url, &endpoint.key_prefix));
    eventually("subscribing", || subscriber.is_live()).await;
    let (production, staging) = (env("production"), env("staging"));

    assert!(!subscriber.is_sharded());
    assert_eq!(
        subscriber.channel(&production),
        format!("{}:invalidations", endpoint.key_prefix)
    );
    assert_eq!(
        subscriber.channel(&production),
        subscriber.channel(&staging)
    );
    // One subscription covers every environment: nothing to ask for.
    assert!(subscriber.is_watching(&production) && subscriber.is_watching(&staging));

    let mut events = subscriber.subscribe();
    publisher.publish(&staging, Revision(7)).await.unwrap();
    assert_eq!(
        next_invalidation(&mut events).await,
        invalidated(&staging, 7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_subscribes_each_watched_environment_on_its_own_slot() {
    let endpoint = RedisServer::shared_cluster()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let (cache, publisher, subscriber) = connected_pair(&endpoint.url, &endpoint.key_prefix).await;
    let (production, staging) = (env("production"), env("staging"));

    assert!(subscriber.is_sharded());
    let channel = subscriber.channel(&production);
    assert_eq!(
        channel,
        format!("{}:{{production}}:invalidations", endpoint.key_prefix)
    );
    // The channel hashes to the slot of the environment's keys, so SPUBLISH and SSUBSCRIBE go to
    // the node that holds them.
    let node = first_node(&endpoint.url);
    assert_eq!(
        integer(&node, redis::cmd("CLUSTER").arg("KEYSLOT").arg(&channel)).await,
        integer(
            &node,
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(cache.key(&production))
        )
        .await
    );

    // Nothing is subscribed until an environment is watched, and then only that environment.
    assert!(!subscriber.is_watching(&production));
    assert_eq!(shard_subscribers(&endpoint.url, &channel).await, 0);
    watching(&subscriber, &production).await;
    assert_eq!(shard_subscribers(&endpoint.url, &channel).await, 1);
    assert_eq!(
        shard_subscribers(&endpoint.url, &subscriber.channel(&staging)).await,
        0
    );
    assert!(!subscriber.is_watching(&staging));

    // A publish on a watched environment arrives; one on an unwatched environment does not
    // (the event after it is the watched one's).
    let mut events = subscriber.subscribe();
    publisher.publish(&staging, Revision(1)).await.unwrap();
    publisher.publish(&production, Revision(2)).await.unwrap();
    assert_eq!(
        next_invalidation(&mut events).await,
        invalidated(&production, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cluster_subscription_is_reported_and_every_environment_is_subscribed_again() {
    let cluster = RedisCluster::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let (_, publisher, subscriber) = connected_pair(cluster.url(), "flags").await;
    // Enough environments that their slots land on more than one node.
    let environments: Vec<Environment> = ["production", "staging", "qa", "eu", "us", "dev"]
        .into_iter()
        .map(env)
        .collect();
    for environment in &environments {
        watching(&subscriber, environment).await;
    }

    let mut events = subscriber.subscribe();
    let killed: usize = cluster
        .command_on_every_node("CLIENT KILL TYPE pubsub")
        .await
        .unwrap()
        .iter()
        .map(|reply| reply.trim_start_matches(':').parse::<usize>().unwrap())
        .sum();
    assert!(killed > 0, "no subscriber connection was killed");
    assert_eq!(
        next_event(&mut events, |event| *event == BusEvent::Lost).await,
        BusEvent::Lost
    );
    assert!(environments.iter().all(|env| !subscriber.is_watching(env)));
    next_event(&mut events, |event| *event == BusEvent::Restored).await;
    // Every environment is subscribed again without being asked for again...
    assert!(
        environments.iter().all(|env| subscriber.is_watching(env)),
        "an environment was not subscribed again"
    );
    // ...and its invalidations arrive.
    for (revision, environment) in (10..).zip(&environments) {
        publisher
            .publish(environment, Revision(revision))
            .await
            .unwrap();
        assert_eq!(
            next_invalidation(&mut events).await,
            invalidated(environment, revision)
        );
    }
}

/// The last line of a raw reply (`$40\r\n<id>` → `<id>`).
fn last_line(reply: &str) -> &str {
    reply.lines().last().unwrap_or_default().trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_environment_follows_its_slot_to_another_node() {
    let cluster = RedisCluster::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let (_, publisher, subscriber) = connected_pair(cluster.url(), "flags").await;
    let production = env("production");
    watching(&subscriber, &production).await;
    let channel = subscriber.channel(&production);

    // Which node owns the channel's slot: the only one that does not answer MOVED.
    let slot = last_line(
        &cluster
            .command_on(0, &format!("CLUSTER KEYSLOT {channel}"))
            .await
            .unwrap(),
    )
    .trim_start_matches(':')
    .to_owned();
    let mut owner = None;
    for node in 0..cluster.nodes() {
        let reply = cluster
            .command_on(node, &format!("GET {channel}"))
            .await
            .unwrap();
        if !reply.starts_with("-MOVED") {
            owner = Some(node);
        }
    }
    let source = owner.expect("no node owns the slot");
    let target = (source + 1) % cluster.nodes();
    let id =
        async |node| last_line(&cluster.command_on(node, "CLUSTER MYID").await.unwrap()).to_owned();
    let (source_id, target_id) = (id(source).await, id(target).await);

    // Move the (key-less) slot from its owner to another node, as a resharding does.
    let mut events = subscriber.subscribe();
    let set_slot = async |node, how: String| {
        let reply = cluster
            .command_on(node, &format!("CLUSTER SETSLOT {slot} {how}"))
            .await
            .unwrap();
        assert_eq!(reply, "+OK", "CLUSTER SETSLOT {slot} {how} on node {node}");
    };
    set_slot(target, format!("IMPORTING {source_id}")).await;
    set_slot(source, format!("MIGRATING {target_id}")).await;
    set_slot(target, format!("NODE {target_id}")).await;
    set_slot(source, format!("NODE {target_id}")).await;
    for node in (0..cluster.nodes()).filter(|node| *node != source && *node != target) {
        set_slot(node, format!("NODE {target_id}")).await;
    }

    // The old owner drops the subscription; the bus says so, and subscribes on the new owner.
    assert_eq!(
        next_event(&mut events, |event| *event == BusEvent::Lost).await,
        BusEvent::Lost
    );
    next_event(&mut events, |event| *event == BusEvent::Restored).await;
    assert!(subscriber.is_watching(&production));
    let reply = cluster
        .command_on(target, &format!("PUBSUB SHARDNUMSUB {channel}"))
        .await
        .unwrap();
    assert!(
        reply.ends_with(":1"),
        "not subscribed on the new owner: {reply}"
    );
    publisher.publish(&production, Revision(5)).await.unwrap();
    assert_eq!(
        next_invalidation(&mut events).await,
        invalidated(&production, 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sentinel_the_classic_channel_lives_on_the_master() {
    let sentinel = RedisSentinel::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let (_, publisher, subscriber) = connected_pair(&sentinel.url(), "flags").await;
    assert!(!subscriber.is_sharded());
    let production = env("production");
    assert!(subscriber.is_watching(&production));
    let subscribers = sentinel
        .master()
        .command(&format!(
            "PUBSUB NUMSUB {}",
            subscriber.channel(&production)
        ))
        .await
        .unwrap();
    // Both buses listen on the master.
    assert!(subscribers.ends_with(":2"), "{subscribers}");
    let mut events = subscriber.subscribe();
    publisher.publish(&production, Revision(3)).await.unwrap();
    assert_eq!(
        next_invalidation(&mut events).await,
        invalidated(&production, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_watches_at_most_max_watched_environments() {
    let endpoint = RedisServer::shared_cluster()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let (_, _, subscriber) = connected_pair(&endpoint.url, &endpoint.key_prefix).await;
    let watched: Vec<Environment> = (0..MAX_WATCHED).map(|n| env(&format!("env-{n}"))).collect();
    watched
        .iter()
        .for_each(|environment| subscriber.watch(environment));
    eventually("watching every environment up to the limit", || {
        watched
            .iter()
            .all(|environment| subscriber.is_watching(environment))
    })
    .await;
    // One more is refused: it is never subscribed, so it is always read from Redis.
    let overflow = env("one-too-many");
    subscriber.watch(&overflow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!subscriber.is_watching(&overflow));
    assert_eq!(
        shard_subscribers(&endpoint.url, &subscriber.channel(&overflow)).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_cluster_node_is_a_loss_within_two_ping_intervals_and_comes_back() {
    // A frozen node keeps its connections open and answers nothing, as a partition without a
    // reset does: only the pings on the sharded subscriber's connections can tell.
    let cluster = RedisCluster::start()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let cache = RedisCache::builder(cluster.url())
        .key_prefix("flags")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let ping = Duration::from_millis(200);
    let subscriber = RedisBus::start_with_ping(&cache, ping);
    eventually("connecting", || subscriber.is_live()).await;
    let production = env("production");
    watching(&subscriber, &production).await;

    // The node holding the subscription.
    let channel = subscriber.channel(&production);
    let mut holder = None;
    for node in 0..cluster.nodes() {
        let reply = cluster
            .command_on(node, &format!("PUBSUB SHARDNUMSUB {channel}"))
            .await
            .unwrap();
        if last_line(&reply) == ":1" {
            holder = Some(node);
        }
    }
    let holder = holder.expect("no node holds the subscription");

    let mut events = subscriber.subscribe();
    let paused = cluster.pause_node(holder).await.unwrap();
    let frozen = Instant::now();
    while subscriber.is_live() {
        // Two intervals, plus room for a loaded machine; the node is thawed well before the
        // Cluster's own node timeout (2 s) would fail it over.
        if frozen.elapsed() > ping * 2 + Duration::from_secs(1) {
            cluster.resume_node(paused).unwrap();
            panic!("a silent node's subscription was not noticed");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let noticed = frozen.elapsed();
    cluster.resume_node(paused).unwrap();
    eprintln!("silent Cluster node noticed after {noticed:?}");
    assert!(!subscriber.is_watching(&production));
    assert_eq!(
        next_event(&mut events, |event| *event == BusEvent::Lost).await,
        BusEvent::Lost
    );

    // Thawed, it is subscribed again without being asked again, and invalidations arrive.
    next_event(&mut events, |event| *event == BusEvent::Restored).await;
    assert!(subscriber.is_watching(&production));
    let publisher = RedisBus::start(&cache);
    eventually("connecting the publisher", || publisher.is_live()).await;
    publisher.publish(&production, Revision(7)).await.unwrap();
    assert_eq!(
        next_invalidation(&mut events).await,
        invalidated(&production, 7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscription_stays_live_across_many_pings() {
    // Nothing is published, so only the pings' answers keep the subscription judged alive: a
    // subscribed connection answers PING in its own shape, which must count as an answer.
    let redis = RedisProcess::spawn(&[])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let cache = cache(&redis.url(), "idle");
    let ping = Duration::from_millis(50);
    let bus = RedisBus::start_with_ping(&cache, ping);
    let mut events = bus.subscribe();
    eventually("connecting", || bus.is_live()).await;
    let watched = Instant::now();
    while watched.elapsed() < ping * 20 {
        assert!(
            bus.is_live(),
            "an idle, healthy subscription was judged lost after {:?}",
            watched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while let Ok(event) = events.try_recv() {
        assert_ne!(
            event,
            BusEvent::Lost,
            "a healthy subscription reported a loss"
        );
    }
}
