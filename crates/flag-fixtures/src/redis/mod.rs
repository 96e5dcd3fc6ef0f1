//! Redis fixtures: a server for one test or a whole test process, a process of the test's own,
//! a Cluster, a Sentinel and a TLS server, all from `redis-server` (or the given `REDIS_URL`, or a
//! container), plus the raw-protocol helpers they share to tell when a server is ready.

mod cluster;
mod process;
mod sentinel;
mod server;
mod tls;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use cluster::RedisCluster;
pub use process::RedisProcess;
pub use sentinel::RedisSentinel;
pub use server::{RedisEndpoint, RedisServer};
pub use tls::RedisTls;

use crate::process::{OwnedProcess, find_binary, free_port};
use crate::{FixtureError, Source};

const SERVICE: &str = "redis-server";
const HINT: &str = "set REDIS_URL, start Docker, or apt-get install redis-server";

/// The `redis-server` binary, or the error that says how to get one.
fn redis_server_binary() -> Result<PathBuf, FixtureError> {
    find_binary("redis-server", &[PathBuf::from("/usr/sbin")]).ok_or(FixtureError::Missing {
        service: SERVICE,
        hint: HINT,
    })
}

/// How many ports a fixture tries before it gives up starting a server.
const ATTEMPTS: usize = 3;

/// Starts `redis-server` on a free port with `extra_args(port)` (under the watchdog when
/// `supervised`, for servers kept in statics) and waits until it answers `PING`. A server that
/// exits first (its port was taken between the check and its bind) is started again on another.
async fn start_on_free_port(
    supervised: bool,
    extra_args: impl Fn(u16) -> Vec<String>,
) -> Result<(OwnedProcess, u16), FixtureError> {
    let binary = redis_server_binary()?;
    let program = binary.to_string_lossy();
    let failed = |message: String| FixtureError::Failed {
        service: SERVICE,
        source_kind: Source::Binary,
        message,
    };
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let port = free_port().map_err(|error| failed(error.to_string()))?;
        let args = server_args(port, &extra_args(port));
        let process = if supervised {
            OwnedProcess::spawn_supervised(&program, &args)
        } else {
            OwnedProcess::spawn(&program, &args)
        }
        .map_err(|error| failed(format!("{}: {error}", binary.display())))?;
        match wait_while(
            || process.is_running(),
            port,
            "PING",
            |reply| reply == "+PONG",
        )
        .await
        {
            Ok(()) => return Ok((process, port)),
            Err(error) => last = error,
        }
    }
    Err(failed(format!("tried {ATTEMPTS} ports; the last: {last}")))
}

/// The arguments of every `redis-server` the fixtures start: loopback only, no persistence.
fn server_args(port: u16, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

async fn raw_command(port: u16, line: &str) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|error| error.to_string())?;
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|error| error.to_string())?;
    let mut reply = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut reply))
        .await
        .map_err(|_| "no reply within 2s".to_owned())?
        .map_err(|error| error.to_string())?;
    Ok(String::from_utf8_lossy(&reply[..read])
        .trim_end()
        .to_owned())
}

async fn wait_for_reply(port: u16, line: &str, expected: &str) -> Result<(), String> {
    wait_until(port, line, |reply| reply == expected).await
}

async fn wait_for_reply_containing(port: u16, line: &str, expected: &str) -> Result<(), String> {
    wait_until(port, line, |reply| reply.contains(expected)).await
}

async fn wait_until(port: u16, line: &str, done: impl Fn(&str) -> bool) -> Result<(), String> {
    wait_while(|| true, port, line, done).await
}

/// Sends `line` to `port` until the reply is `done`, for up to 15 s, or until `running` says
/// the server is gone.
async fn wait_while(
    running: impl Fn() -> bool,
    port: u16,
    line: &str,
    done: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if !running() {
            return Err(format!(
                "redis on port {port} exited before answering {line}"
            ));
        }
        match raw_command(port, line).await {
            Ok(reply) if done(&reply) => return Ok(()),
            last if Instant::now() > deadline => {
                return Err(format!(
                    "redis on port {port} never answered {line} as expected: {last:?}"
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
