//! A `redis-server` of the test's own, for fault injection.

use super::{raw_command, start_on_free_port, wait_for_reply};
use crate::FixtureError;
use crate::process::OwnedProcess;

/// A `redis-server` process the test owns: it can be paused, resumed, killed and restarted on
/// the same port, and dies with the fixture.
#[derive(Debug)]
pub struct RedisProcess {
    process: OwnedProcess,
    port: u16,
}

impl RedisProcess {
    /// Starts `redis-server` on a free port (no persistence) with `extra_args`, and waits until
    /// it answers `PING`.
    pub async fn spawn(extra_args: &[&str]) -> Result<Self, FixtureError> {
        let extra: Vec<String> = extra_args.iter().map(|arg| (*arg).to_owned()).collect();
        let (process, port) = start_on_free_port(false, |_| extra.clone()).await?;
        Ok(Self { process, port })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) -> std::io::Result<()> {
        self.process.signal("STOP")
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) -> std::io::Result<()> {
        self.process.signal("CONT")
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Starts a new, empty server on the same port and waits until it answers.
    pub async fn restart(&self) -> Result<(), String> {
        self.process.respawn().map_err(|error| error.to_string())?;
        self.wait_until_ready().await
    }

    /// Sends a raw command line and returns the reply as text (`+PONG`, `:1`, ...).
    pub async fn command(&self, line: &str) -> Result<String, String> {
        raw_command(self.port, line).await
    }

    async fn wait_until_ready(&self) -> Result<(), String> {
        wait_for_reply(self.port, "PING", "+PONG").await
    }
}
