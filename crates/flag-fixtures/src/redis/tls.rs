//! A `redis-server` that speaks only TLS.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::redis_server_binary;
use crate::process::{OwnedProcess, find_binary, free_port};
use crate::{FixtureError, Source, unique_name};

/// A `redis-server` that speaks only TLS, with a self-signed certificate made by `openssl`.
#[derive(Debug)]
pub struct RedisTls {
    _process: OwnedProcess,
    port: u16,
    directory: PathBuf,
}

impl RedisTls {
    /// Makes a certificate for 127.0.0.1 and starts a TLS-only server on a free port.
    pub async fn start() -> Result<Self, FixtureError> {
        let failed = |message: String| FixtureError::Failed {
            service: "redis-server (TLS)",
            source_kind: Source::Binary,
            message,
        };
        let binary = redis_server_binary()?;
        let directory = std::env::temp_dir().join(unique_name("flag-tls-"));
        std::fs::create_dir_all(&directory).map_err(|error| failed(error.to_string()))?;
        let (cert, key) = (directory.join("cert.pem"), directory.join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .map_err(|error| {
                failed(format!(
                    "openssl not found ({error}): apt-get install openssl"
                ))
            })?;
        if !made.status.success() {
            return Err(failed(String::from_utf8_lossy(&made.stderr).into_owned()));
        }
        let port = free_port().map_err(|error| failed(error.to_string()))?;
        let path = |file: &PathBuf| file.to_string_lossy().into_owned();
        let args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            path(&cert),
            "--tls-key-file".into(),
            path(&key),
            "--tls-ca-cert-file".into(),
            path(&cert),
            "--tls-auth-clients".into(),
            "no".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ];
        let process = OwnedProcess::spawn(&binary.to_string_lossy(), &args)
            .map_err(|error| failed(error.to_string()))?;
        let redis_cli = find_binary("redis-cli", &[]).ok_or(FixtureError::Missing {
            service: "redis-cli",
            hint: "apt-get install redis-tools",
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = std::process::Command::new(&redis_cli)
                .args(["--tls", "--cacert"])
                .arg(&cert)
                .args(["-p", &port.to_string(), "PING"])
                .output();
            if reply
                .as_ref()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("PONG"))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "TLS redis-server on {port} never answered: {reply:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            _process: process,
            port,
            directory,
        })
    }

    /// The port it serves TLS on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
