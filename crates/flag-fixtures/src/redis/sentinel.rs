//! A Redis master watched by one Sentinel.

use std::path::PathBuf;

use super::process::RedisProcess;
use super::{redis_server_binary, wait_until};
use crate::process::{OwnedProcess, free_port};
use crate::{FixtureError, Source, unique_name};

/// A Redis master watched by one Sentinel (master name `mymaster`), both owned by the test.
#[derive(Debug)]
pub struct RedisSentinel {
    master: RedisProcess,
    _sentinel: OwnedProcess,
    port: u16,
    directory: PathBuf,
}

impl RedisSentinel {
    /// The name the Sentinel knows the master by.
    pub const MASTER_NAME: &'static str = "mymaster";

    /// Starts a master and a Sentinel monitoring it; returns once the Sentinel reports the master.
    pub async fn start() -> Result<Self, FixtureError> {
        let master = RedisProcess::spawn(&[]).await?;
        let binary = redis_server_binary()?;
        let failed = |message: String| FixtureError::Failed {
            service: "redis sentinel",
            source_kind: Source::Binary,
            message,
        };
        let port = free_port().map_err(|error| failed(error.to_string()))?;
        let directory = std::env::temp_dir().join(unique_name("flag-sentinel-"));
        std::fs::create_dir_all(&directory).map_err(|error| failed(error.to_string()))?;
        let config = directory.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {} 127.0.0.1 {} 1\n",
                directory.display(),
                Self::MASTER_NAME,
                master.port()
            ),
        )
        .map_err(|error| failed(error.to_string()))?;
        let sentinel = OwnedProcess::spawn(
            &binary.to_string_lossy(),
            &[
                config.to_string_lossy().into_owned(),
                "--sentinel".to_owned(),
            ],
        )
        .map_err(|error| failed(error.to_string()))?;
        let expected = master.port().to_string();
        wait_until(
            port,
            &format!("SENTINEL get-master-addr-by-name {}", Self::MASTER_NAME),
            |reply| reply.contains(&expected),
        )
        .await
        .map_err(failed)?;
        Ok(Self {
            master,
            _sentinel: sentinel,
            port,
            directory,
        })
    }

    /// `redis+sentinel://127.0.0.1:<sentinel port>/mymaster`.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{}",
            self.port,
            Self::MASTER_NAME
        )
    }

    /// The master the Sentinel points at.
    pub fn master(&self) -> &RedisProcess {
        &self.master
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
