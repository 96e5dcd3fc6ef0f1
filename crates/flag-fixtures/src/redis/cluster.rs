//! A three-master Redis Cluster on loopback.

use std::path::PathBuf;

use super::{raw_command, start_on_free_port, wait_for_reply_containing};
use crate::process::{OwnedProcess, find_binary, signal_pid};
use crate::{FixtureError, Source, unique_name};

/// A three-master Redis Cluster on loopback owned by one test (for tests that disturb it, such as
/// killing its clients), started from `redis-server` (`cluster-enabled yes`) and joined with
/// `redis-cli --cluster create`; stopped when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    url: String,
    ports: Vec<u16>,
    _processes: Vec<OwnedProcess>,
}

impl RedisCluster {
    /// Starts the three masters and waits until the cluster answers `cluster_state:ok`.
    pub async fn start() -> Result<Self, FixtureError> {
        start_cluster()
            .await
            .map_err(|message| FixtureError::Failed {
                service: "redis cluster",
                source_kind: Source::Binary,
                message,
            })
    }

    /// The `redis+cluster://` URL naming every node.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many nodes (masters) it has.
    pub fn nodes(&self) -> usize {
        self.ports.len()
    }

    /// Sends a raw command line to node `node` (0-based, in URL order); the reply as text.
    pub async fn command_on(&self, node: usize, line: &str) -> Result<String, String> {
        let port = self
            .ports
            .get(node)
            .ok_or_else(|| format!("the cluster has no node {node}"))?;
        raw_command(*port, line).await
    }

    /// Freezes node `node` (SIGSTOP to its `redis-server`): its connections stay open, nothing
    /// answers. Answers the server's process id, for [`RedisCluster::resume_node`].
    pub async fn pause_node(&self, node: usize) -> Result<u32, String> {
        // The fixture's own process is a watchdog shell; the server says its own id.
        let info = self.command_on(node, "INFO server").await?;
        let pid = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("process_id:"))
            .and_then(|pid| pid.parse::<u32>().ok())
            .ok_or_else(|| format!("node {node} did not say its process id"))?;
        signal_pid(pid, "STOP").map_err(|error| error.to_string())?;
        Ok(pid)
    }

    /// Thaws a node paused by [`RedisCluster::pause_node`] (SIGCONT to `pid`).
    pub fn resume_node(&self, pid: u32) -> std::io::Result<()> {
        signal_pid(pid, "CONT")
    }

    /// Sends a raw command line to every node; the replies, in node order.
    pub async fn command_on_every_node(&self, line: &str) -> Result<Vec<String>, String> {
        let mut replies = Vec::with_capacity(self.ports.len());
        for port in &self.ports {
            replies.push(raw_command(*port, line).await?);
        }
        Ok(replies)
    }
}

pub(super) async fn start_cluster() -> Result<RedisCluster, String> {
    remove_abandoned_cluster_directories();
    let directory = std::env::temp_dir().join(unique_name("flag-cluster-"));
    std::fs::create_dir_all(&directory).map_err(|error| error.to_string())?;
    let mut processes = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (process, port) = start_on_free_port(true, |port| {
            vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                directory
                    .join(format!("nodes-{port}.conf"))
                    .to_string_lossy()
                    .into_owned(),
                "--cluster-node-timeout".into(),
                "2000".into(),
                "--dir".into(),
                directory.to_string_lossy().into_owned(),
            ]
        })
        .await
        .map_err(|error| error.to_string())?;
        processes.push(process);
        ports.push(port);
    }
    let redis_cli =
        find_binary("redis-cli", &[]).ok_or("redis-cli not found: apt-get install redis-tools")?;
    let nodes: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let output = std::process::Command::new(redis_cli)
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    for port in &ports {
        wait_for_reply_containing(*port, "CLUSTER INFO", "cluster_state:ok").await?;
    }
    Ok(RedisCluster {
        url: format!("redis+cluster://{}", nodes.join(",")),
        ports,
        _processes: processes,
    })
}

/// Cluster node files of test processes that are gone (a shared cluster lives in a static and so
/// cannot clean up after itself).
fn remove_abandoned_cluster_directories() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("flag-cluster-")
            .and_then(|rest| rest.split('x').next())
        else {
            continue;
        };
        if !PathBuf::from("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
