//! The backends a run covers, the stores they need, and the flag-server process for each.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A cache and database pairing flag-server can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// The embedded default: in-process cache over a SQLite file.
    Memory,
    /// Redis over a SQLite file.
    Redis,
    /// Redis over Postgres: the shared deployment.
    RedisPostgres,
    /// In-process layer over Redis (invalidated through Redis pub/sub), over a SQLite file.
    Tiered,
}

impl Backend {
    /// Every backend, in report order.
    pub(crate) const ALL: [Backend; 4] = [
        Backend::Memory,
        Backend::Redis,
        Backend::RedisPostgres,
        Backend::Tiered,
    ];

    /// The short name used in paths and the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::RedisPostgres => "redis-postgres",
            Backend::Tiered => "tiered",
        }
    }

    /// Whether it needs a Redis.
    pub(crate) fn needs_redis(self) -> bool {
        matches!(
            self,
            Backend::Redis | Backend::RedisPostgres | Backend::Tiered
        )
    }
}

/// Where Redis and Postgres are, found (or started) once for the whole run.
pub(crate) struct Stores {
    redis_url: Option<String>,
    database_url: Option<String>,
    /// A `redis-server` this run started, killed with the run.
    _own_redis: Option<OwnedChild>,
}

impl Stores {
    /// Redis: the URL given, else one answering on 127.0.0.1:6379, else a `redis-server` from the
    /// PATH on a free port (only when `want_redis`). Postgres: the URL given, else one answering on
    /// 127.0.0.1:5432 (as user `postgres`, database `postgres`), else none.
    pub(crate) fn discover(
        redis_url: Option<String>,
        database_url: Option<String>,
        want_redis: bool,
    ) -> Self {
        let mut own_redis = None;
        let redis_url = redis_url.or_else(|| {
            if !want_redis {
                return None;
            }
            if redis_answers("127.0.0.1:6379") {
                return Some("redis://127.0.0.1:6379".to_owned());
            }
            match start_redis() {
                Ok((url, child)) => {
                    own_redis = Some(child);
                    Some(url)
                }
                Err(error) => {
                    eprintln!("no Redis: {error}");
                    None
                }
            }
        });
        let database_url = database_url.or_else(|| {
            let address: SocketAddr = ([127, 0, 0, 1], 5432).into();
            TcpStream::connect_timeout(&address, Duration::from_millis(300))
                .ok()
                .map(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
        });
        Self {
            redis_url,
            database_url,
            _own_redis: own_redis,
        }
    }

    /// The stores of one run against the Redis at `redis_url` and a SQLite file (the outage run,
    /// whose Redis is its own to kill).
    pub(crate) fn with_redis(redis_url: String) -> Self {
        Self {
            redis_url: Some(redis_url),
            database_url: None,
            _own_redis: None,
        }
    }

    /// Why `backend` cannot run here, if it cannot.
    pub(crate) fn missing(&self, backend: Backend) -> Option<String> {
        if backend.needs_redis() && self.redis_url.is_none() {
            return Some("no Redis (set REDIS_URL or install redis-server)".to_owned());
        }
        if backend == Backend::RedisPostgres && self.database_url.is_none() {
            return Some("no Postgres answers (set DATABASE_URL=postgres://…)".to_owned());
        }
        None
    }

    /// The environment flag-server gets for `backend`, with its data under `directory`.
    fn server_env(
        &self,
        backend: Backend,
        directory: &Path,
        run_id: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut env = Vec::new();
        let sqlite = format!("sqlite://{}?mode=rwc", directory.join("flags.db").display());
        match backend {
            Backend::Memory => {
                env.push(("CACHE_BACKEND".into(), "memory".into()));
                env.push(("DATABASE_URL".into(), sqlite));
            }
            Backend::Redis | Backend::RedisPostgres | Backend::Tiered => {
                let redis = self.redis_url.clone().context("no Redis")?;
                let cache = if backend == Backend::Tiered {
                    "tiered"
                } else {
                    "redis"
                };
                env.push(("CACHE_BACKEND".into(), cache.into()));
                env.push(("REDIS_URL".into(), redis));
                env.push(("REDIS_KEY_PREFIX".into(), format!("loadtests-{run_id}")));
                let database = if backend == Backend::RedisPostgres {
                    self.database_url.clone().context("no Postgres")?
                } else {
                    sqlite
                };
                env.push(("DATABASE_URL".into(), database));
            }
        }
        Ok(env)
    }

    /// Starts flag-server for `backend` and waits until it is ready.
    pub(crate) async fn start_server(
        &self,
        binary: &Path,
        backend: Backend,
        directory: &Path,
        admin_token: &str,
    ) -> anyhow::Result<Server> {
        self.start_server_with(binary, backend, directory, admin_token, &[])
            .await
    }

    /// [`Stores::start_server`] with `extra` environment variables for the server.
    pub(crate) async fn start_server_with(
        &self,
        binary: &Path,
        backend: Backend,
        directory: &Path,
        admin_token: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        for stale in ["flags.db", "flags.db-wal", "flags.db-shm"] {
            let _ = std::fs::remove_file(directory.join(stale));
        }
        self.start_another_under(&[], binary, backend, directory, admin_token, extra)
            .await
    }

    /// Starts one more instance on the stores of a server already started in `directory` (the
    /// same database file or URL, the same Redis and key prefix).
    pub(crate) async fn start_another(
        &self,
        binary: &Path,
        backend: Backend,
        directory: &Path,
        admin_token: &str,
    ) -> anyhow::Result<Server> {
        self.start_another_under(&[], binary, backend, directory, admin_token, &[])
            .await
    }

    /// [`Stores::start_another`], run by `wrapper` (a program and its arguments, such as
    /// `valgrind --tool=callgrind`, that runs the binary in its own process) when it is not
    /// empty, with `extra` environment variables.
    pub(crate) async fn start_another_under(
        &self,
        wrapper: &[&str],
        binary: &Path,
        backend: Backend,
        directory: &Path,
        admin_token: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let run_id = format!("{}-{}", std::process::id(), backend.name());
        let mut command = match wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FLAG_LISTEN", format!("127.0.0.1:{port}"))
            .env("FLAG_ADMIN_TOKEN", admin_token)
            .env("FLAG_DEFAULT_ENVIRONMENT", "load")
            // sqlx warns of every statement over 1 s, which seeding SQLite with concurrent
            // writers produces by design (they queue on the database lock).
            .env("RUST_LOG", "warn,sqlx=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in self.server_env(backend, directory, &run_id)? {
            command.env(name, value);
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Server {
            child: OwnedChild(child),
            base_url: format!("http://127.0.0.1:{port}"),
        };
        server.wait_until_ready().await?;
        Ok(server)
    }
}

/// A running flag-server, stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Server {
    child: OwnedChild,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base_url: String,
}

impl Server {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The CPU time the server has used so far (user and system, every thread), where `/proc`
    /// tells it.
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.0.id())).ok()?;
        // The command name (field 2) may hold spaces; the fields after its `)` are fixed.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on every Linux architecture this runs on.
        Some(Duration::from_millis(ticks * 10))
    }

    /// The server's resident memory in kB (`VmRSS`), where `/proc` tells it.
    pub(crate) fn resident_kb(&self) -> Option<u64> {
        resident_kb_of(self.child.0.id())
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("flag-server at {} was not ready within 60 s", self.base_url);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.stop();
    }
}

/// A child process that is stopped when dropped.
pub(crate) struct OwnedChild(Child);

impl OwnedChild {
    /// Owns `child`: it is stopped when this is dropped.
    pub(crate) fn new(child: Child) -> Self {
        Self(child)
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The resident memory of process `pid` in kB (`VmRSS`), where `/proc` tells it.
pub(crate) fn resident_kb_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A free TCP port on loopback.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("reading the port")?.port())
}

fn redis_answers(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(address) = address.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(300)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Starts a `redis-server` from the PATH on a free port, without persistence.
fn start_redis() -> anyhow::Result<(String, OwnedChild)> {
    start_redis_on(free_port()?)
}

/// Starts a `redis-server` from the PATH on `port`, without persistence, and waits until it
/// answers.
pub(crate) fn start_redis_on(port: u16) -> anyhow::Result<(String, OwnedChild)> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server is not on the PATH (apt-get install redis-server)")?;
    let child = OwnedChild(child);
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_answers(&address) {
        if Instant::now() > deadline {
            bail!("the redis-server started on port {port} did not answer");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((format!("redis://{address}"), child))
}

/// The release build of a workspace binary, beside the runner's own target directory.
pub(crate) fn release_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the runner")?;
    // <target>/<profile>/loadtests -> <target>/release/<name>
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("the runner is not inside a target directory")?;
    Ok(target.join("release").join(name))
}

/// Builds flag-server (and the ceiling, for `wrk`) in release mode; returns flag-server's path.
pub(crate) fn build_release(with_ceiling: bool) -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .args(["-p", "flag-server", "--bin", "flag-server"]);
    if with_ceiling {
        command.args(["-p", "loadtests", "--bin", "ceiling"]);
    }
    println!("== building flag-server in release mode");
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    release_binary("flag-server")
}
