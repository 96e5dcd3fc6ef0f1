//! The tiered cache on real Redis: `TieredCache` (an in-process `MemoryCache` over `RedisCache`,
//! invalidated through `RedisBus`) passes the whole cache conformance suite on a single node and
//! on a Cluster, and a subscription
//! killed on the server (`CLIENT KILL TYPE pubsub`, on a single node and on every node of a
//! Cluster) drops the in-process layer, which never serves a stale value after the subscription
//! is back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use flag_conformance::{CacheCapabilities, SharedCache, cache_suite, generation_snapshot};
use flag_core::{BusEvent, Environment, FeatureFlagCache, InvalidationBus, Revision};
use flag_fixtures::{FixtureError, RedisCluster, RedisEndpoint, RedisProcess, RedisServer};
use flag_memory::{MemoryCache, TieredCache};
use flag_redis::{RedisBus, RedisCache};

fn tiered(cache: RedisCache, l1_ttl: Duration) -> (TieredCache, RedisBus) {
    let bus = RedisBus::start(&cache);
    let tiered = TieredCache::start(
        Arc::new(MemoryCache::new()),
        Arc::new(cache),
        Arc::new(bus.clone()),
        l1_ttl,
    );
    (tiered, bus)
}

async fn subscribed(bus: &RedisBus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bus.is_live() {
        assert!(Instant::now() < deadline, "the bus never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tiered cache over the shared `endpoint`, subscribed.
async fn tiered_on(endpoint: Result<RedisEndpoint, FixtureError>) -> SharedCache {
    let endpoint = endpoint.unwrap_or_else(|error| panic!("{error}"));
    let cache = RedisCache::builder(endpoint.url)
        .key_prefix(endpoint.key_prefix)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (tiered, bus) = tiered(cache, Duration::from_secs(5));
    subscribed(&bus).await;
    Arc::new(tiered)
}

const CAPABILITIES: CacheCapabilities = CacheCapabilities {
    // L1 takes L2's remaining time, read in the same script as the snapshot: it ends no later
    // than the Redis entry plus the round trip.
    ttl_slack: flag_redis::TTL_SLACK.saturating_add(Duration::from_millis(5)),
    max_value_bytes: None,
};

cache_suite!(
    tiered_redis,
    || async { tiered_on(RedisServer::shared().await).await },
    CAPABILITIES
);

cache_suite!(
    tiered_cluster,
    || async { tiered_on(RedisServer::shared_cluster().await).await },
    CAPABILITIES
);

const TTL: Duration = Duration::from_secs(60);

/// A Redis of the test's own, whose subscriber connections it can kill.
enum Deployment {
    Single(RedisProcess),
    Cluster(RedisCluster),
}

impl Deployment {
    async fn start(cluster: bool) -> Self {
        if cluster {
            Deployment::Cluster(
                RedisCluster::start()
                    .await
                    .unwrap_or_else(|error| panic!("{error}")),
            )
        } else {
            Deployment::Single(
                RedisProcess::spawn(&[])
                    .await
                    .unwrap_or_else(|error| panic!("{error}")),
            )
        }
    }

    fn url(&self) -> String {
        match self {
            Deployment::Single(redis) => redis.url(),
            Deployment::Cluster(cluster) => cluster.url().to_owned(),
        }
    }

    /// How many commands all its nodes have served so far.
    async fn commands_served(&self) -> u64 {
        let replies = match self {
            Deployment::Single(redis) => vec![redis.command("INFO stats").await.unwrap()],
            Deployment::Cluster(cluster) => {
                cluster.command_on_every_node("INFO stats").await.unwrap()
            }
        };
        replies
            .iter()
            .map(|reply| {
                reply
                    .lines()
                    .find_map(|line| line.strip_prefix("total_commands_processed:"))
                    .expect("INFO stats without total_commands_processed")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    }

    /// Kills every subscriber connection on every node; how many were killed.
    async fn kill_subscribers(&self) -> usize {
        let replies = match self {
            Deployment::Single(redis) => {
                vec![redis.command("CLIENT KILL TYPE pubsub").await.unwrap()]
            }
            Deployment::Cluster(cluster) => cluster
                .command_on_every_node("CLIENT KILL TYPE pubsub")
                .await
                .unwrap(),
        };
        replies
            .iter()
            .map(|reply| reply.trim_start_matches(':').parse::<usize>().unwrap())
            .sum()
    }
}

/// On a single node (classic pub/sub) and on a Cluster (sharded pub/sub, one channel per
/// environment).
#[rstest::rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_drops_l1_and_nothing_stale_is_served_after_it_is_back(
    #[values(false, true)] cluster: bool,
) {
    let redis = Deployment::start(cluster).await;
    let cache = || RedisCache::builder(redis.url()).build().unwrap();
    let (reader, reader_bus) = tiered(cache(), Duration::from_secs(60));
    let (writer, writer_bus) = tiered(cache(), Duration::from_secs(60));
    subscribed(&reader_bus).await;
    subscribed(&writer_bus).await;
    let env = Environment::parse("production").unwrap();
    writer
        .set(&env, Arc::new(generation_snapshot(1, 3, 1)), TTL)
        .await
        .unwrap();
    assert_eq!(
        reader.get(&env).await.unwrap().unwrap().revision(),
        Revision(1)
    );
    // (On a Cluster, that read asked for the environment's channel; wait until it is subscribed.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reader_bus.is_watching(&env) {
        assert!(Instant::now() < deadline, "the environment is not watched");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // This read is kept in the reader's L1.
    assert_eq!(
        reader.get(&env).await.unwrap().unwrap().revision(),
        Revision(1)
    );

    // Kill every subscriber connection on the server: both buses lose their subscription.
    let mut events = reader_bus.subscribe();
    assert!(
        redis.kill_subscribers().await > 0,
        "no subscriber connection was killed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .expect("no Lost event")
            .unwrap();
        if event == BusEvent::Lost {
            break;
        }
    }
    // (The bus waits 50 ms before it reconnects, so the bypass is seen here.)
    while reader.l1_serving() {
        assert!(Instant::now() < deadline, "L1 still serving after the loss");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // While it is lost or just back, a change whose message nobody hears...
    let raw = cache();
    raw.invalidate(&env, Revision(2)).await.unwrap();
    raw.set(&env, Arc::new(generation_snapshot(2, 3, 2)), TTL)
        .await
        .unwrap();
    // ...is never hidden by the reader's L1: every read from here on answers revision 2.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(
            reader.get(&env).await.unwrap().unwrap().revision(),
            Revision(2)
        );
        if reader_bus.is_live() && reader.l1_serving() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription did not come back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        reader.get(&env).await.unwrap().unwrap().revision(),
        Revision(2)
    );

    // And once back, invalidations flow again.
    writer.invalidate(&env, Revision(3)).await.unwrap();
    writer
        .set(&env, Arc::new(generation_snapshot(3, 3, 3)), TTL)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while reader.get(&env).await.unwrap().unwrap().revision() != Revision(3) {
        assert!(Instant::now() < deadline, "the invalidation never arrived");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

mod support;

/// Three flag-server processes with `CACHE_BACKEND=tiered` on one Redis (a single node or a
/// three-master Cluster) and one SQLite file: the readers answer from memory (Redis sees almost
/// none of their reads), and every write through the first is answered by the other two, whose
/// in-process layers held the old value, once its invalidation has crossed Redis pub/sub
/// (sharded on the Cluster). A killed subscription then shows in each server's `/metrics`. Prints the propagation figures; the 50 ms target is the load-test runner's
/// (`loadtests`, which measures 1,000 writes on a release build); the bound asserted here is the
/// contract's: never later than the in-process TTL.
#[rstest::rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tiered_processes_see_each_others_writes(#[values(false, true)] cluster: bool) {
    // A Redis of its own, so that the commands it serves are the three servers' alone.
    let redis = Deployment::start(cluster).await;
    let url = redis.url();
    let data = flag_fixtures::ScratchDir::new().unwrap();
    let database = format!(
        "sqlite://{}?mode=rwc",
        data.path().join("flags.db").display()
    );
    let env = [
        ("CACHE_BACKEND", "tiered"),
        ("REDIS_URL", url.as_str()),
        ("DATABASE_URL", database.as_str()),
        ("RUST_LOG", "warn"),
    ];
    let servers: Vec<support::Running> = (0..3)
        .map(|_| support::Running::start_in(flag_fixtures::ScratchDir::new().unwrap(), &env))
        .collect();
    let [writer, readers @ ..] = &servers[..] else {
        unreachable!()
    };
    let bearer = "Bearer admin-secret";
    let put = |value: u64| {
        let body = serde_json::json!({"enabled": true, "variants": {"current": value, "off": -1}, "defaultVariant": "current", "offVariant": "off"}).to_string();
        async move {
            let reply = support::request(
                writer.socket(),
                "PUT",
                "/v1/environments/production/flags/counter",
                &[("Authorization", bearer)],
                &body,
            )
            .await;
            assert!(reply.status == 200 || reply.status == 201, "{}", reply.body);
        }
    };
    let read = |server: &support::Running| {
        let address = server.socket();
        async move {
            let reply = support::request(
                address,
                "POST",
                "/ofrep/v1/evaluate/flags/counter",
                &[],
                r#"{"context":{}}"#,
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.json()["value"].as_u64().unwrap()
        }
    };
    put(0).await;
    // The first read from Redis asks for the environment's invalidations (on a Cluster, its
    // sharded channel); once they arrive, the next read is kept in memory and answered from there:
    // a hundred reads each cost Redis (almost) nothing.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for reader in readers {
            assert_eq!(read(reader).await, 0);
        }
        let before = redis.commands_served().await;
        for _ in 0..100 {
            for reader in readers {
                assert_eq!(read(reader).await, 0);
            }
        }
        let served = redis.commands_served().await - before;
        if served < 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "200 reads cost Redis {served} commands: the readers never answer from memory"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut samples = Vec::new();
    for value in 1..=1000 {
        put(value).await;
        let written = Instant::now();
        for reader in readers {
            while read(reader).await < value {
                assert!(
                    written.elapsed() < flag_memory::DEFAULT_L1_TTL,
                    "write {value} not seen after the in-process TTL"
                );
            }
            samples.push(written.elapsed());
        }
    }
    samples.sort();
    let at = |fraction: f64| {
        samples[((samples.len() as f64 * fraction) as usize).min(samples.len() - 1)]
    };
    println!(
        "propagation ({}): {} observations, P50 {:?}, P99 {:?}, max {:?}",
        if cluster { "cluster" } else { "single node" },
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );

    // A lost subscription shows in /metrics: the loss is counted, and the in-process layer serves
    // again once the subscription is back.
    let reader = readers[0].socket();
    assert_eq!(support::metric(reader, "flag_tiered_l1_serving").await, 1.0);
    assert_eq!(
        support::metric(reader, "flag_tiered_subscription_losses_total").await,
        0.0
    );
    assert!(redis.kill_subscribers().await > 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while support::metric(reader, "flag_tiered_subscription_losses_total").await < 1.0
        || support::metric(reader, "flag_tiered_l1_serving").await < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the loss was not counted, or L1 never served again"
        );
        // Reads keep the environment wanted, so that it is watched (and kept) again.
        assert_eq!(read(&readers[0]).await, 1000);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gone_silent_is_lost_within_two_ping_intervals_and_comes_back() {
    // A frozen Redis keeps its connections open and answers nothing, as a partition without a
    // reset does: only the pings can tell.
    let redis = RedisProcess::spawn(&[])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let cache = RedisCache::builder(redis.url())
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let ping = Duration::from_millis(200);
    let bus = RedisBus::start_with_ping(&cache, ping);
    let l1_ttl = Duration::from_secs(30);
    let tiered = TieredCache::start(
        Arc::new(MemoryCache::new()),
        Arc::new(cache),
        Arc::new(bus.clone()),
        l1_ttl,
    );
    subscribed(&bus).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tiered.l1_serving() {
        assert!(Instant::now() < deadline, "L1 never served");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    redis.pause().unwrap();
    let frozen = Instant::now();
    while bus.is_live() {
        // Two intervals, plus room for a loaded machine: far below the L1 TTL it replaces.
        assert!(
            frozen.elapsed() < ping * 2 + Duration::from_secs(1),
            "a silent subscription was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("silent subscription noticed after {:?}", frozen.elapsed());
    assert!(
        !tiered.l1_serving(),
        "L1 stops serving once the subscription is lost"
    );

    redis.resume().unwrap();
    subscribed(&bus).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tiered.l1_serving() {
        assert!(Instant::now() < deadline, "L1 never served again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
