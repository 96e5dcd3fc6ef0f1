//! A Postgres server of the test's own, started from `initdb` and `postgres`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{HINT, SERVICE, wait_until_ready};
use crate::process::{OwnedProcess, find_binary, free_port};
use crate::{FixtureError, Source, unique_name};

/// A Postgres server started from `initdb` and `postgres` in a temporary directory.
#[derive(Debug)]
pub struct PostgresServer {
    process: OwnedProcess,
    port: u16,
    directory: PathBuf,
}

impl PostgresServer {
    /// Initialises a cluster in a temporary directory and starts it on a free port.
    pub async fn start() -> Result<Self, FixtureError> {
        let search: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|versions| {
                versions
                    .flatten()
                    .map(|version| version.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        let missing = FixtureError::Missing {
            service: SERVICE,
            hint: HINT,
        };
        let initdb = find_binary("initdb", &search).ok_or(missing)?;
        let postgres = initdb.with_file_name("postgres");
        let failed = |message: String| FixtureError::Failed {
            service: SERVICE,
            source_kind: Source::Binary,
            message,
        };
        let directory = std::env::temp_dir().join(unique_name("flag-pg-"));
        std::fs::create_dir_all(&directory).map_err(|error| failed(error.to_string()))?;
        // Postgres refuses to run as root: run it as the `postgres` user then.
        let as_root = std::fs::metadata("/proc/self")
            .map(|meta| meta.uid() == 0)
            .unwrap_or(false);
        if as_root {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&directory)
                .status()
                .map_err(|error| failed(format!("chown: {error}")))?;
            if !chown.success() {
                return Err(failed(
                    "chown of the data directory to postgres failed".into(),
                ));
            }
        }
        let data = directory.join("data");
        let run = |program: &Path, args: Vec<String>| -> (String, Vec<String>) {
            if as_root {
                let mut all = vec![
                    "--reuid=postgres".to_owned(),
                    "--regid=postgres".to_owned(),
                    "--init-groups".to_owned(),
                    program.to_string_lossy().into_owned(),
                ];
                all.extend(args);
                ("setpriv".to_owned(), all)
            } else {
                (program.to_string_lossy().into_owned(), args)
            }
        };
        let (program, args) = run(
            &initdb,
            vec![
                "-D".into(),
                data.to_string_lossy().into_owned(),
                "-U".into(),
                "postgres".into(),
                "-A".into(),
                "trust".into(),
                "--no-sync".into(),
            ],
        );
        let output = Command::new(&program)
            .args(&args)
            .output()
            .map_err(|error| failed(format!("{program}: {error}")))?;
        if !output.status.success() {
            return Err(failed(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let port = free_port().map_err(|error| failed(error.to_string()))?;
        let (program, args) = run(
            &postgres,
            vec![
                "-D".into(),
                data.to_string_lossy().into_owned(),
                "-p".into(),
                port.to_string(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-k".into(),
                directory.to_string_lossy().into_owned(),
                "-F".into(),
            ],
        );
        let process = OwnedProcess::spawn(&program, &args)
            .map_err(|error| failed(format!("{program}: {error}")))?;
        let server = Self {
            process,
            port,
            directory,
        };
        wait_until_ready(&server.admin_url())
            .await
            .map_err(failed)?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (SIGKILL).
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data, and waits until it answers.
    pub async fn restart(&self) -> Result<(), String> {
        self.process.respawn().map_err(|error| error.to_string())?;
        wait_until_ready(&self.admin_url()).await
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
