//! A real network partition between a `tiered` instance and its Redis: Redis runs in a network
//! namespace of the test's own, joined to this one by a veth pair, and the partition is a
//! blackhole route on each side, so packets of established connections vanish (no reset, no
//! error: the connections look open and carry nothing) and new connections fail. Every
//! evaluation still ends within its timeouts, the silent subscription is noticed within two
//! `FLAG_BUS_PING_MS` (the in-process layer stops serving), the cache's circuit opens, writes
//! still land; when the partition heals everything recovers with no restart.
//!
//! Needs root and iproute2 (`ip netns`); where namespaces cannot be made the test fails saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flag_server::config::CacheBackend;
use serde_json::json;
use support::{Backend, TestServer};

/// The namespace, the veth pair and the Redis inside; all removed when dropped.
struct Island {
    namespace: String,
    host_side: String,
    redis_address: String,
    host_address: String,
    redis: Child,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("running ip {}: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Island {
    fn make() -> Result<Self, String> {
        let id = std::process::id() % 10_000;
        let subnet = 1 + (std::process::id() % 250);
        let namespace = format!("flagpart{id}");
        let host_side = format!("fpa{id}");
        let island_side = format!("fpb{id}");
        let host_address = format!("10.213.{subnet}.1");
        let redis_address = format!("10.213.{subnet}.2");
        let _ = ip(&["netns", "del", &namespace]);
        let _ = ip(&["link", "del", &host_side]);
        ip(&["netns", "add", &namespace])?;
        ip(&[
            "link",
            "add",
            &host_side,
            "type",
            "veth",
            "peer",
            "name",
            &island_side,
        ])?;
        ip(&["link", "set", &island_side, "netns", &namespace])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_address}/30"),
            "dev",
            &host_side,
        ])?;
        ip(&["link", "set", &host_side, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&[
            "addr",
            "add",
            &format!("{redis_address}/30"),
            "dev",
            &island_side,
        ])?;
        inside(&["link", "set", &island_side, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        let redis = Command::new("ip")
            .args(["netns", "exec", &namespace, "redis-server"])
            .args([
                "--bind",
                &redis_address,
                "--port",
                "6379",
                "--protected-mode",
                "no",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("starting redis-server in {namespace}: {error}"))?;
        Ok(Self {
            namespace,
            host_side,
            redis_address,
            host_address,
            redis,
        })
    }

    /// Drops every packet between the two sides from now on (or, `false`, lets them through).
    fn partition(&self, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        ip(&[
            "route",
            verb,
            "blackhole",
            &format!("{}/32", self.redis_address),
        ])
        .unwrap();
        ip(&[
            "netns",
            "exec",
            &self.namespace,
            "ip",
            "route",
            verb,
            "blackhole",
            &format!("{}/32", self.host_address),
        ])
        .unwrap();
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        let _ = self.redis.kill();
        let _ = self.redis.wait();
        let _ = ip(&["link", "del", &self.host_side]);
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

const FLAG: &str = "/v1/environments/production/flags/kill-switch";
const EVALUATE: &str = "/ofrep/v1/evaluate/flags/kill-switch";

async fn value(server: &TestServer) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let reply = server
        .request("POST", EVALUATE, &[], r#"{"context":{}}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    (reply.json()["value"].clone(), started.elapsed())
}

async fn wait_for(server: &TestServer, series: &str, expected: f64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while server.metric(series).await != expected {
        assert!(Instant::now() < deadline, "{what}");
        // Reads keep the environment wanted and the probe nudged.
        value(server).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_redis_without_resets_is_survived_and_healed() {
    let island = Island::make().unwrap_or_else(|error| {
        panic!(
            "network namespaces cannot be made here (this test needs root and iproute2): {error}"
        )
    });
    let url = format!("redis://{}:6379", island.redis_address);
    let server = TestServer::start_with(Backend::RedisPostgres, move |config| {
        config.redis_url = Some(url);
        config.redis_key_prefix = "feature_flags".to_owned();
        config.cache_backend = Some(CacheBackend::Tiered);
        config.redis_timeout_ms = 100;
        config.bus_ping_ms = 200;
    })
    .await;
    let written = server.admin("PUT", FLAG, &[], r#"{"enabled": true}"#).await;
    assert_eq!(written.status, 201, "{}", written.body);
    wait_for(
        &server,
        "flag_tiered_l1_serving",
        1.0,
        Duration::from_secs(10),
        "L1 never served",
    )
    .await;
    assert_eq!(value(&server).await.0, json!(true));

    island.partition(true);
    let cut = Instant::now();
    let mut slowest = Duration::ZERO;
    while server.metric("flag_tiered_l1_serving").await != 0.0 {
        assert!(
            cut.elapsed() < Duration::from_millis(400) + Duration::from_secs(1),
            "the silent subscription was not noticed within two pings"
        );
        slowest = slowest.max(value(&server).await.1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("partition noticed after {:?}", cut.elapsed());
    wait_for(
        &server,
        "flag_cache_circuit_open{backend=\"tiered\"}",
        1.0,
        Duration::from_secs(5),
        "the circuit did not open",
    )
    .await;
    for _ in 0..50 {
        let (answer, took) = value(&server).await;
        assert_eq!(answer, json!(true));
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_secs(2),
        "an evaluation took {slowest:?}"
    );
    // Writes go to the database, and are read back at once.
    let flipped = server
        .admin("PUT", FLAG, &[], r#"{"enabled": false}"#)
        .await;
    assert_eq!(flipped.status, 200, "{}", flipped.body);
    assert_eq!(value(&server).await.0, json!(false));

    island.partition(false);
    wait_for(
        &server,
        "flag_cache_circuit_open{backend=\"tiered\"}",
        0.0,
        Duration::from_secs(10),
        "the circuit never closed after the partition healed",
    )
    .await;
    wait_for(
        &server,
        "flag_tiered_l1_serving",
        1.0,
        Duration::from_secs(10),
        "L1 never served again after the partition healed",
    )
    .await;
    assert_eq!(
        value(&server).await.0,
        json!(false),
        "the write made during the partition"
    );
}
