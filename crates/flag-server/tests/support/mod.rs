//! What the socket tests share: a server on a chosen backend, started through the real wiring
//! on a free loopback port, and a raw HTTP/1.1 client (one request per connection, whole reply
//! read).

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use flag_core::{Environment, FeatureFlag, FeatureFlagService, FlagKey, Precondition};
use flag_fixtures::{PostgresDatabase, RedisServer, ScratchDir};
use flag_server::app::App;
use flag_server::config::{CacheBackend, Config, LogFormat};
use flag_server::serve::ConnectionLimits;
use flag_server::state::AppState;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The admin token of every test server.
pub const ADMIN_TOKEN: &str = "admin-secret";

/// The stores behind a test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file and the in-process cache.
    Embedded,
    /// A shared deployment: Redis in front of Postgres (each test its own key prefix and database).
    RedisPostgres,
}

/// What keeps a test server's stores alive.
enum Stores {
    Embedded(ScratchDir),
    RedisPostgres(Box<PostgresDatabase>),
}

/// A running server: its address, the state behind it (to seed flags directly) and its stores.
pub struct TestServer {
    pub address: SocketAddr,
    pub state: AppState,
    /// The configuration the server was started with.
    pub config: Config,
    _stores: Stores,
}

/// The configuration the binary would get with no flags and no environment.
pub fn default_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: "sqlite://flags.db?mode=rwc".to_owned(),
        cache_backend: None,
        redis_url: None,
        cache_l1_ttl_ms: 5_000,
        stale_if_error_ms: 86_400_000,
        outage_refresh_ms: 1_000,
        last_good_dir: None,
        bus_ping_ms: 1_000,
        redis_key_prefix: "feature_flags".to_owned(),
        redis_timeout_ms: 100,
        cache_ttl_ms: 300_000,
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        admin_tokens: None,
        client_tokens: None,
        default_environment: "production".to_owned(),
        shutdown_grace_ms: 10_000,
        request_timeout_ms: 5_000,
        max_context_bytes: 65_536,
        max_in_flight: 4_096,
        header_timeout_ms: 10_000,
        idle_timeout_ms: 60_000,
        max_connections: 10_000,
        max_environments: 1_000,
        max_flags: 10_000,
        redis_max_snapshot_bytes: 16 << 20,
        cors_origins: None,
        stream_credential_ttl_ms: 86_400_000,
        stream_heartbeat_ms: 15_000,
        max_streams: 10_000,
        stream_poll_ms: 1_000,
        file_poll_ms: 5_000,
        evaluation_metrics: flag_server::config::Switch::Off,
        webhooks: None,
        webhook_secret: None,
        webhook_retry_ms: 86_400_000,
        webhook_timeout_ms: 5_000,
        traced: false,
        log_format: LogFormat::Text,
    }
}

impl TestServer {
    /// A server on `backend` with the default configuration.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// A server on `backend`, with `adjust` applied to the configuration first.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = default_config();
        let stores = match backend {
            Backend::Embedded => {
                let directory = ScratchDir::new().unwrap();
                config.database_url = format!(
                    "sqlite://{}?mode=rwc",
                    directory.path().join("flags.db").display()
                );
                config.cache_backend = Some(CacheBackend::Memory);
                Stores::Embedded(directory)
            }
            Backend::RedisPostgres => {
                let redis = RedisServer::shared()
                    .await
                    .unwrap_or_else(|error| panic!("{error}"));
                let database = PostgresDatabase::create()
                    .await
                    .unwrap_or_else(|error| panic!("{error}"));
                config.database_url = database.url().to_owned();
                config.redis_url = Some(redis.url);
                config.redis_key_prefix = redis.key_prefix;
                config.cache_backend = Some(CacheBackend::Redis);
                Stores::RedisPostgres(Box::new(database))
            }
        };
        adjust(&mut config);
        let state = flag_server::wiring::state_from(&config).await.unwrap();
        let limits = flag_server::wiring::connection_limits(&config).unwrap();
        Self::serve(state, config, limits, stores).await
    }

    async fn serve(
        state: AppState,
        config: Config,
        limits: ConnectionLimits,
        stores: Stores,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = App::new(state.clone());
        tokio::spawn(flag_server::serve::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        Self {
            address,
            state,
            config,
            _stores: stores,
        }
    }

    /// The service behind the server.
    pub fn service(&self) -> &FeatureFlagService {
        &self.state.service
    }

    /// Stores a flag directly through the service (not over HTTP).
    pub async fn put(&self, env: &str, key: &str, body: Value) {
        let key = FlagKey::parse(key).unwrap();
        let flag = FeatureFlag::from_definition_json(&key, &body.to_string()).unwrap();
        self.service()
            .upsert(
                &Environment::parse(env).unwrap(),
                flag,
                Precondition::None,
                &flag_core::Actor::system(),
            )
            .await
            .unwrap();
    }

    /// The OFREP answer for `key` in `env` to a context of only `targetingKey: user`.
    pub async fn evaluate(&self, env: &str, key: &str, user: &str) -> Value {
        self.request(
            "POST",
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            &[("X-Environment", env)],
            &serde_json::json!({"context": {"targetingKey": user}}).to_string(),
        )
        .await
        .json()
    }

    /// A request without credentials.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        request(self.address, method, path, headers, body).await
    }

    /// A management request with the admin token.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let mut headers = vec![("Authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        request(self.address, method, path, &headers, body).await
    }

    /// The value of one sample of `/metrics`, by its exact name and labels.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(self.address, series).await
    }
}

/// The value of one sample of the `/metrics` of the server at `address`, by its exact name and
/// labels.
pub async fn metric(address: std::net::SocketAddr, series: &str) -> f64 {
    let reply = request(address, "GET", "/metrics", &[], "").await;
    assert_eq!(reply.status, 200);
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{}", reply.body))
        .parse()
        .unwrap()
}

/// A reply: status, headers (lower-case names) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {:?}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The management API's `error.code`.
    pub fn code(&self) -> Value {
        self.json()["error"]["code"].clone()
    }
}

/// Sends one request and reads the whole reply. A server may answer (and close) before reading a
/// large body, so a failed write is not an error: the reply decides.
pub async fn request(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let mut raw = Vec::new();
    // A reset after the reply arrived (the server closed with our body unread) still leaves the
    // reply in `raw`. An event stream never ends: its head is the reply.
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => raw.extend_from_slice(&chunk[..read]),
        }
        if let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n")
            && String::from_utf8_lossy(&raw[..end])
                .to_ascii_lowercase()
                .contains("content-type: text/event-stream")
        {
            break;
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no reply head in {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A running binary on the embedded default in its own scratch directory, with its address.
pub struct Running {
    pub child: std::process::Child,
    pub address: String,
    pub directory: ScratchDir,
}

impl Running {
    /// The binary on the embedded default in a scratch directory of its own, with `extra_env`.
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        Self::start_in(ScratchDir::new().unwrap(), extra_env)
    }

    /// The binary on the embedded default, started under `prlimit --nofile=<nofile>`.
    pub fn start_under(nofile: &str, extra_env: &[(&str, &str)]) -> Self {
        let prlimit = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|directory| directory.join("prlimit"))
                    .find(|candidate| candidate.is_file())
            })
            .expect("prlimit not found: apt-get install util-linux");
        let mut command = Command::new(prlimit);
        command
            .arg(format!("--nofile={nofile}"))
            .arg(env!("CARGO_BIN_EXE_flag-server"));
        Self::spawn(command, ScratchDir::new().unwrap(), extra_env)
    }

    /// The binary with its working directory in `directory`, with `extra_env`.
    pub fn start_in(directory: ScratchDir, extra_env: &[(&str, &str)]) -> Self {
        let command = Command::new(env!("CARGO_BIN_EXE_flag-server"));
        Self::spawn(command, directory, extra_env)
    }

    fn spawn(mut command: Command, directory: ScratchDir, extra_env: &[(&str, &str)]) -> Self {
        command
            .env_clear()
            .current_dir(directory.path())
            .env("FLAG_LISTEN", "127.0.0.1:0")
            .env("FLAG_ADMIN_TOKEN", "admin-secret")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            if let Some(address) = line.strip_prefix("flag-server listening on http://") {
                break address.to_owned();
            }
        };
        Self {
            child,
            address,
            directory,
        }
    }

    /// A memory figure of the process from `/proc/<pid>/status`, in kB: `VmRSS` (resident now)
    /// or `VmHWM` (the peak).
    pub fn memory_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
    }

    /// The address as a socket address.
    pub fn socket(&self) -> std::net::SocketAddr {
        self.address.parse().unwrap()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What an instance cut off from its database (while its shared cache answers) must do: serve
/// `evaluate` (answering `true`) at once, refuse a PUT of `flag` with `503` within the database's
/// bound, and say it is degraded.
pub async fn assert_cut_off_from_the_database(server: &TestServer, flag: &str, evaluate: &str) {
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let served = server
            .request("POST", evaluate, &[], r#"{"context":{}}"#)
            .await;
        assert_eq!(served.json()["value"], serde_json::json!(true));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    let started = std::time::Instant::now();
    let refused = server
        .admin("PUT", flag, &[], r#"{"enabled": false}"#)
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(7),
        "a write took {:?}",
        started.elapsed()
    );
    let ready = server.request("GET", "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, serde_json::json!("degraded"))
    );
}

/// Writes `{"enabled": false}` to `flag` until it is accepted (`200`), within `within`: the
/// database is back.
pub async fn write_once_healed(server: &TestServer, flag: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let flipped = server
            .admin("PUT", flag, &[], r#"{"enabled": false}"#)
            .await;
        if flipped.status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes never worked again: {}",
            flipped.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
