//! Real network partitions: Redis (then, in a second test, Postgres) runs in a network namespace
//! of the test's own, joined to this one by a veth pair, and the partition is a blackhole route
//! on each side, so packets of established connections vanish (no reset, no error: the
//! connections look open and carry nothing) and new connections fail. (Blackhole routes rather
//! than `tc netem` or a firewall: this kernel has no `netem` qdisc, and routes need nothing
//! beyond iproute2.) From Redis: every evaluation still ends within its timeouts, the silent
//! subscription is noticed within two `FLAG_BUS_PING_MS` (the in-process layer stops serving),
//! the cache's circuit opens, writes still land. From Postgres: reads are served from the cache,
//! a write is a `503` within the database bound, readiness says degraded. When the partition
//! heals everything recovers with no restart.
//!
//! Needs root and iproute2 (`ip netns`); where namespaces cannot be made the test fails saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flag_server::config::CacheBackend;
use serde_json::json;
use support::{Backend, TestServer};

/// The namespace, the veth pair and the servers inside; all removed when dropped.
struct Island {
    namespace: String,
    host_side: String,
    /// The island's address, where its servers listen.
    address: String,
    host_address: String,
    servers: Vec<Child>,
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
    /// A namespace joined to this one; `salt` tells apart the islands of one test process.
    fn make(salt: u32) -> Result<Self, String> {
        let seed = std::process::id() + salt;
        let id = seed % 10_000;
        let subnet = 1 + seed % 250;
        let namespace = format!("flagpart{id}");
        let host_side = format!("fpa{id}");
        let island_side = format!("fpb{id}");
        let host_address = format!("10.213.{subnet}.1");
        let address = format!("10.213.{subnet}.2");
        let _ = ip(&["netns", "del", &namespace]);
        let _ = ip(&["link", "del", &host_side]);
        ip(&["netns", "add", &namespace])?;
        let veth = [
            "link",
            "add",
            &host_side,
            "type",
            "veth",
            "peer",
            "name",
            &island_side,
        ];
        ip(&veth)?;
        ip(&["link", "set", &island_side, "netns", &namespace])?;
        let host_cidr = format!("{host_address}/30");
        ip(&["addr", "add", &host_cidr, "dev", &host_side])?;
        ip(&["link", "set", &host_side, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        let island_cidr = format!("{address}/30");
        inside(&["addr", "add", &island_cidr, "dev", &island_side])?;
        inside(&["link", "set", &island_side, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(Self {
            namespace,
            host_side,
            address,
            host_address,
            servers: Vec::new(),
        })
    }

    /// Runs `program` with `args` inside the island until the island is dropped.
    fn run(&mut self, program: &str, args: &[&str]) -> Result<(), String> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("starting {program} in {}: {error}", self.namespace))?;
        self.servers.push(child);
        Ok(())
    }

    /// The island with a Redis inside, on port 6379.
    fn with_redis(mut self) -> Result<Self, String> {
        let address = self.address.clone();
        let args = [
            "--bind",
            &address,
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        self.run("redis-server", &args)?;
        Ok(self)
    }

    /// Drops every packet between the two sides from now on (or, `false`, lets them through).
    fn partition(&self, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        let island = format!("{}/32", self.address);
        ip(&["route", verb, "blackhole", &island]).unwrap();
        let host = format!("{}/32", self.host_address);
        let inside = [
            "netns",
            "exec",
            &self.namespace,
            "ip",
            "route",
            verb,
            "blackhole",
            &host,
        ];
        ip(&inside).unwrap();
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = ip(&["link", "del", &self.host_side]);
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

/// The island, or the reason this machine cannot make one.
fn island(salt: u32) -> Island {
    Island::make(salt).unwrap_or_else(|error| {
        panic!(
            "network namespaces cannot be made here (this test needs root and iproute2): {error}"
        )
    })
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
    let island = island(0)
        .with_redis()
        .unwrap_or_else(|error| panic!("{error}"));
    let url = format!("redis://{}:6379", island.address);
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

/// Starts a Postgres of the test's own inside `island` (as the `postgres` user, trusting every
/// host), answering on the island's address; answers its data directory (removed by the caller).
fn postgres_in(island: &mut Island) -> Result<std::path::PathBuf, String> {
    let initdb = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|error| format!("no Postgres under /usr/lib/postgresql: {error}"))?
        .flatten()
        .map(|version| version.path().join("bin/initdb"))
        .find(|path| path.exists())
        .ok_or("no initdb under /usr/lib/postgresql/*/bin (apt-get install postgresql)")?;
    let postgres = initdb.with_file_name("postgres");
    let directory = std::env::temp_dir().join(format!("flag-partition-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).map_err(|error| error.to_string())?;
    let chowned = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&directory)
        .status()
        .map_err(|error| error.to_string())?;
    if !chowned.success() {
        return Err("chown to postgres failed".into());
    }
    let data = directory.join("data");
    let data_text = data.to_string_lossy().into_owned();
    let as_postgres = ["--reuid=postgres", "--regid=postgres", "--init-groups"];
    let initialised = Command::new("setpriv")
        .args(as_postgres)
        .arg(&initdb)
        .args([
            "-D",
            &data_text,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ])
        .output()
        .map_err(|error| error.to_string())?;
    if !initialised.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&initialised.stderr)
        ));
    }
    let mut hba = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("pg_hba.conf"))
        .map_err(|error| error.to_string())?;
    std::io::Write::write_all(&mut hba, b"host all all 0.0.0.0/0 trust\n")
        .map_err(|error| error.to_string())?;
    let listen = format!("listen_addresses={}", island.address);
    let sockets = directory.to_string_lossy().into_owned();
    let postgres_text = postgres.to_string_lossy().into_owned();
    let mut args: Vec<&str> = as_postgres.to_vec();
    args.extend([postgres_text.as_str(), "-D", &data_text, "-p", "5432"]);
    args.extend(["-c", &listen, "-k", &sockets, "-F"]);
    island.run("setpriv", &args)?;
    Ok(directory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_postgres_without_resets_is_survived_and_healed() {
    let mut island = island(1);
    let directory = postgres_in(&mut island).unwrap_or_else(|error| panic!("{error}"));
    let url = format!("postgres://postgres@{}:5432/postgres", island.address);
    let server = TestServer::start_with(Backend::RedisPostgres, move |config| {
        config.database_url = url;
    })
    .await;
    // Postgres may still be starting: the server connects in the background.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written = server.admin("PUT", FLAG, &[], r#"{"enabled": true}"#).await;
        if written.status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Postgres never answered: {}",
            written.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(value(&server).await.0, json!(true));

    island.partition(true);
    support::assert_cut_off_from_the_database(&server, FLAG, EVALUATE).await;

    island.partition(false);
    support::write_once_healed(&server, FLAG, Duration::from_secs(20)).await;
    assert_eq!(value(&server).await.0, json!(false));
    drop(server);
    drop(island);
    let _ = std::fs::remove_dir_all(directory);
}
