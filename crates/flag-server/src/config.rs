//! Configuration from command-line flags and environment variables of the same names.

use std::fmt;
use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};
use flag_core::redact_url;

/// The feature-flag server.
#[derive(Parser)]
#[command(name = "flag-server", version, about)]
pub struct Cli {
    /// What to do; `serve` when left out.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
}

/// The commands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Write an environment's flags and segments as one document (JSON, or YAML when the file
    /// ends in `.yaml` / `.yml` or with `--yaml`).
    Export {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The file to write; standard output when left out.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// YAML rather than JSON.
        #[arg(long)]
        yaml: bool,
    },
    /// Import a document (as `export` writes it; JSON, or YAML by the file's extension) into an
    /// environment as one transaction, and print what changed.
    Import {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The document.
        file: std::path::PathBuf,
        /// `merge` (add and replace) or `replace` (also delete what the document lacks).
        #[arg(long, value_enum, default_value_t = ImportModeArg::Merge)]
        mode: ImportModeArg,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The name the audit log records for the import's writes.
        #[arg(long, default_value = "cli")]
        actor: String,
    },
}

/// `--mode` of `import`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportModeArg {
    /// Add and replace what the document holds.
    Merge,
    /// Also delete every flag and segment the document does not hold.
    Replace,
}

/// Which cache sits in front of the database.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheBackend {
    /// In-process cache (moka); each instance has its own.
    Memory,
    /// Redis shared by every instance.
    Redis,
    /// In-process layer over Redis, invalidated through Redis pub/sub.
    Tiered,
    /// No cache: every read goes to the database.
    None,
}

/// How the logs are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A feature that is off unless asked for.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Switch {
    /// Off.
    #[default]
    Off,
    /// On.
    On,
}

/// Every setting; each flag can also be given as the environment variable of the same name.
#[derive(clap::Args, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long = "flag-listen",
        env = "FLAG_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Database URL: `sqlite://…` or `postgres://…`; or `file:///path/flags.yaml` (or `.json`)
    /// to serve a flags file with no database (offline mode, read-only).
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "sqlite://flags.db?mode=rwc"
    )]
    pub database_url: String,
    /// Cache backend; `redis` when REDIS_URL is set, else `memory`.
    #[arg(long = "cache-backend", env = "CACHE_BACKEND", value_enum)]
    pub cache_backend: Option<CacheBackend>,
    /// Redis URL: `redis://`, `rediss://` or `redis+unix://`.
    #[arg(long = "redis-url", env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Time-to-live of the in-process layer of the tiered cache, in ms.
    #[arg(
        long = "cache-l1-ttl-ms",
        env = "CACHE_L1_TTL_MS",
        default_value_t = 5_000
    )]
    pub cache_l1_ttl_ms: u64,
    /// How long the last known good flags may be served when cache and database both fail, in ms.
    #[arg(
        long = "flag-stale-if-error-ms",
        env = "FLAG_STALE_IF_ERROR_MS",
        default_value_t = 86_400_000
    )]
    pub stale_if_error_ms: u64,
    /// While the cache is out (its circuit open), how long an in-process copy of an environment
    /// read from the database is served before the database is read again, in ms.
    #[arg(
        long = "flag-outage-refresh-ms",
        env = "FLAG_OUTAGE_REFRESH_MS",
        default_value_t = 1_000
    )]
    pub outage_refresh_ms: u64,
    /// A directory where last-known-good snapshots are also written, and read back at start, so
    /// an instance restarted during a full outage still serves; unset keeps them in memory only.
    #[arg(long = "flag-last-good-dir", env = "FLAG_LAST_GOOD_DIR")]
    pub last_good_dir: Option<std::path::PathBuf>,
    /// How often the invalidation subscriber connection is pinged, in ms; one silent for two
    /// intervals is taken as lost (`tiered` stops serving from memory).
    #[arg(
        long = "flag-bus-ping-ms",
        env = "FLAG_BUS_PING_MS",
        default_value_t = 1_000
    )]
    pub bus_ping_ms: u64,
    /// Prefix of every Redis key.
    #[arg(
        long = "redis-key-prefix",
        env = "REDIS_KEY_PREFIX",
        default_value = "feature_flags"
    )]
    pub redis_key_prefix: String,
    /// Timeout of every Redis call, in ms.
    #[arg(
        long = "redis-timeout-ms",
        env = "REDIS_TIMEOUT_MS",
        default_value_t = 100
    )]
    pub redis_timeout_ms: u64,
    /// Time-to-live of cached environments, in ms.
    #[arg(long = "cache-ttl-ms", env = "CACHE_TTL_MS", default_value_t = 300_000)]
    pub cache_ttl_ms: u64,
    /// Bearer token of the management API; a random one is generated when unset.
    #[arg(
        long = "flag-admin-token",
        env = "FLAG_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Comma-separated named admin tokens, `name:token`; the name is the actor of its writes.
    #[arg(
        long = "flag-admin-tokens",
        env = "FLAG_ADMIN_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub admin_tokens: Option<Vec<String>>,
    /// Comma-separated tokens that OFREP clients must present; OFREP is open when unset.
    #[arg(
        long = "flag-client-tokens",
        env = "FLAG_CLIENT_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub client_tokens: Option<Vec<String>>,
    /// Environment used when a request has no `X-Environment` header.
    #[arg(
        long = "flag-default-environment",
        env = "FLAG_DEFAULT_ENVIRONMENT",
        default_value = "production"
    )]
    pub default_environment: String,
    /// How long SIGTERM waits for in-flight requests, in ms.
    #[arg(
        long = "flag-shutdown-grace-ms",
        env = "FLAG_SHUTDOWN_GRACE_MS",
        default_value_t = 10_000
    )]
    pub shutdown_grace_ms: u64,
    /// How long a request may take before it is answered `503`, in ms.
    #[arg(
        long = "flag-request-timeout-ms",
        env = "FLAG_REQUEST_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub request_timeout_ms: u64,
    /// The largest OFREP request body, in bytes (`413` past it).
    #[arg(
        long = "flag-max-context-bytes",
        env = "FLAG_MAX_CONTEXT_BYTES",
        default_value_t = 65_536
    )]
    pub max_context_bytes: u64,
    /// How many API requests may be in flight; more are answered `503` at once.
    #[arg(
        long = "flag-max-in-flight",
        env = "FLAG_MAX_IN_FLIGHT",
        default_value_t = 4_096
    )]
    pub max_in_flight: u64,
    /// How long a client may take to send a request's headers, in ms.
    #[arg(
        long = "flag-header-timeout-ms",
        env = "FLAG_HEADER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_timeout_ms: u64,
    /// How long a keep-alive connection may stay idle, in ms.
    #[arg(
        long = "flag-idle-timeout-ms",
        env = "FLAG_IDLE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub idle_timeout_ms: u64,
    /// How many connections may be held at once.
    #[arg(
        long = "flag-max-connections",
        env = "FLAG_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: u64,
    /// How many environments may exist; creating one more is `409 limit_exceeded`.
    #[arg(
        long = "flag-max-environments",
        env = "FLAG_MAX_ENVIRONMENTS",
        default_value_t = 1_000
    )]
    pub max_environments: u64,
    /// How many flags an environment may hold; one more is `409 limit_exceeded`.
    #[arg(
        long = "flag-max-flags",
        env = "FLAG_MAX_FLAGS",
        default_value_t = 10_000
    )]
    pub max_flags: u64,
    /// The largest encoded snapshot pushed to Redis, in bytes; larger ones are served in process.
    #[arg(
        long = "redis-max-snapshot-bytes",
        env = "REDIS_MAX_SNAPSHOT_BYTES",
        default_value_t = 16_777_216
    )]
    pub redis_max_snapshot_bytes: u64,
    /// Origins whose browsers may call OFREP and its event streams (comma-separated, or `*`);
    /// unset: no CORS headers.
    #[arg(
        long = "flag-cors-origins",
        env = "FLAG_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// How long a stream credential issued in a bulk answer stays valid, in ms.
    #[arg(
        long = "flag-stream-credential-ttl-ms",
        env = "FLAG_STREAM_CREDENTIAL_TTL_MS",
        default_value_t = 86_400_000
    )]
    pub stream_credential_ttl_ms: u64,
    /// How often an event stream carries a comment line when nothing else is sent, in ms.
    #[arg(
        long = "flag-stream-heartbeat-ms",
        env = "FLAG_STREAM_HEARTBEAT_MS",
        default_value_t = 15_000
    )]
    pub stream_heartbeat_ms: u64,
    /// How many event streams may be open at once; one more is `503`.
    #[arg(
        long = "flag-max-streams",
        env = "FLAG_MAX_STREAMS",
        default_value_t = 10_000
    )]
    pub max_streams: u64,
    /// How often the revisions of streamed environments that no bus covers are read, in ms.
    #[arg(
        long = "flag-stream-poll-ms",
        env = "FLAG_STREAM_POLL_MS",
        default_value_t = 1_000
    )]
    pub stream_poll_ms: u64,
    /// How often a flags file (`DATABASE_URL=file://…`) is read again besides the changes its
    /// directory's watcher reports, in ms.
    #[arg(
        long = "flag-file-poll-ms",
        env = "FLAG_FILE_POLL_MS",
        default_value_t = 5_000
    )]
    pub file_poll_ms: u64,
    /// Per-flag evaluation counts in `/metrics` (`flag_evaluations_total{environment, flag,
    /// variant, reason}`): `on` or `off` (their cardinality is flags × variants).
    #[arg(
        long = "flag-evaluation-metrics",
        env = "FLAG_EVALUATION_METRICS",
        value_enum,
        default_value_t = Switch::Off
    )]
    pub evaluation_metrics: Switch,
    /// Comma-separated URLs that every committed write of a flag or segment is POSTed to, as
    /// JSON, from the database's outbox (at least once, in revision order per environment).
    #[arg(
        long = "flag-webhooks",
        env = "FLAG_WEBHOOKS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub webhooks: Option<Vec<String>>,
    /// The key of each delivery's `X-Flag-Signature: sha256=<HMAC-SHA256 of the body>`; without
    /// it deliveries are not signed.
    #[arg(
        long = "flag-webhook-secret",
        env = "FLAG_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// How long a change is retried (with backoff) before it is given up, in milliseconds.
    #[arg(
        long = "flag-webhook-retry-ms",
        env = "FLAG_WEBHOOK_RETRY_MS",
        default_value_t = 86_400_000
    )]
    pub webhook_retry_ms: u64,
    /// How long one delivery may take before it counts as failed, in milliseconds.
    #[arg(
        long = "flag-webhook-timeout-ms",
        env = "FLAG_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub webhook_timeout_ms: u64,
    /// Whether the ports are wrapped in spans (set by the binary while OpenTelemetry exports
    /// traces; not a setting).
    #[arg(skip)]
    pub traced: bool,
    /// Log format: `text` or `json`.
    #[arg(
        long = "log-format",
        env = "FLAG_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// The longest time-to-live or age accepted: one year, far below what Redis and moka accept.
pub const MAX_TTL_MS: u64 = 365 * 24 * 3_600_000;

/// The longest request, header, idle or shutdown timeout accepted: one day.
pub const MAX_TIMEOUT_MS: u64 = 24 * 3_600_000;

/// The largest count limit accepted (connections, requests in flight, ...).
pub const MAX_COUNT: u64 = 1_000_000;

/// A setting outside its range, named as the environment variable that sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be between {min} and {max}, got {value}")]
pub struct OutOfRange {
    /// The environment variable.
    pub name: &'static str,
    /// What was given.
    pub value: u64,
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
}

impl Config {
    /// Checks every numeric setting against its range; the first one outside it is the error.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        let checks: [(&'static str, u64, u64, u64); 23] = [
            (
                "FLAG_STREAM_CREDENTIAL_TTL_MS",
                self.stream_credential_ttl_ms,
                1,
                MAX_TTL_MS,
            ),
            (
                "FLAG_STREAM_HEARTBEAT_MS",
                self.stream_heartbeat_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            ("FLAG_MAX_STREAMS", self.max_streams, 1, MAX_COUNT),
            (
                "FLAG_WEBHOOK_RETRY_MS",
                self.webhook_retry_ms,
                1,
                MAX_TTL_MS,
            ),
            (
                "FLAG_WEBHOOK_TIMEOUT_MS",
                self.webhook_timeout_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            ("FLAG_FILE_POLL_MS", self.file_poll_ms, 1, MAX_TIMEOUT_MS),
            (
                "FLAG_STREAM_POLL_MS",
                self.stream_poll_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            ("FLAG_BUS_PING_MS", self.bus_ping_ms, 1, MAX_TIMEOUT_MS),
            (
                "FLAG_OUTAGE_REFRESH_MS",
                self.outage_refresh_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            ("CACHE_TTL_MS", self.cache_ttl_ms, 1, MAX_TTL_MS),
            ("CACHE_L1_TTL_MS", self.cache_l1_ttl_ms, 1, MAX_TTL_MS),
            (
                "FLAG_STALE_IF_ERROR_MS",
                self.stale_if_error_ms,
                0,
                MAX_TTL_MS,
            ),
            ("REDIS_TIMEOUT_MS", self.redis_timeout_ms, 1, MAX_TIMEOUT_MS),
            (
                "FLAG_SHUTDOWN_GRACE_MS",
                self.shutdown_grace_ms,
                0,
                MAX_TIMEOUT_MS,
            ),
            (
                "FLAG_REQUEST_TIMEOUT_MS",
                self.request_timeout_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            (
                "FLAG_HEADER_TIMEOUT_MS",
                self.header_timeout_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            (
                "FLAG_IDLE_TIMEOUT_MS",
                self.idle_timeout_ms,
                1,
                MAX_TIMEOUT_MS,
            ),
            (
                "FLAG_MAX_CONTEXT_BYTES",
                self.max_context_bytes,
                1,
                crate::state::MAX_BODY_BYTES as u64,
            ),
            ("FLAG_MAX_IN_FLIGHT", self.max_in_flight, 1, MAX_COUNT),
            ("FLAG_MAX_CONNECTIONS", self.max_connections, 1, MAX_COUNT),
            ("FLAG_MAX_ENVIRONMENTS", self.max_environments, 1, MAX_COUNT),
            ("FLAG_MAX_FLAGS", self.max_flags, 1, MAX_COUNT),
            // Redis refuses bulk strings past 512 MiB.
            (
                "REDIS_MAX_SNAPSHOT_BYTES",
                self.redis_max_snapshot_bytes,
                1,
                512 << 20,
            ),
        ];
        for (name, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(OutOfRange {
                    name,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    /// The cache backend in effect, after applying the default rule.
    pub fn effective_cache_backend(&self) -> CacheBackend {
        choose_cache_backend(self.cache_backend, self.redis_url.as_deref())
    }
}

/// The backend asked for, else `redis` when a Redis URL is configured, else `memory`.
pub fn choose_cache_backend(asked: Option<CacheBackend>, redis_url: Option<&str>) -> CacheBackend {
    asked.unwrap_or(if redis_url.is_some() {
        CacheBackend::Redis
    } else {
        CacheBackend::Memory
    })
}

/// Secrets are never printed: tokens are shown as `[redacted]`, URL passwords as `***`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "[redacted]" } else { "[unset]" };
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("cache_backend", &self.effective_cache_backend())
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("cache_l1_ttl_ms", &self.cache_l1_ttl_ms)
            .field("stale_if_error_ms", &self.stale_if_error_ms)
            .field("outage_refresh_ms", &self.outage_refresh_ms)
            .field("last_good_dir", &self.last_good_dir)
            .field("bus_ping_ms", &self.bus_ping_ms)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("cache_ttl_ms", &self.cache_ttl_ms)
            .field("admin_token", &redacted(self.admin_token.is_some()))
            .field("admin_tokens", &redacted(self.admin_tokens.is_some()))
            .field("client_tokens", &redacted(self.client_tokens.is_some()))
            .field("default_environment", &self.default_environment)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_context_bytes", &self.max_context_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("max_environments", &self.max_environments)
            .field("max_flags", &self.max_flags)
            .field("redis_max_snapshot_bytes", &self.redis_max_snapshot_bytes)
            .field("cors_origins", &self.cors_origins)
            .field("stream_credential_ttl_ms", &self.stream_credential_ttl_ms)
            .field("stream_heartbeat_ms", &self.stream_heartbeat_ms)
            .field("max_streams", &self.max_streams)
            .field("stream_poll_ms", &self.stream_poll_ms)
            .field("file_poll_ms", &self.file_poll_ms)
            .field("evaluation_metrics", &self.evaluation_metrics)
            .field(
                "webhooks",
                &self.webhooks.as_ref().map(|urls| {
                    urls.iter()
                        .map(|url| crate::webhooks::shown(url))
                        .collect::<Vec<_>>()
                }),
            )
            .field("webhook_secret", &redacted(self.webhook_secret.is_some()))
            .field("webhook_retry_ms", &self.webhook_retry_ms)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The declared defaults and variable names, read from the parser itself (not by parsing, which
    /// would also read the environment of whoever runs the tests).
    #[test]
    fn defaults_and_names_follow_the_contract() {
        use clap::CommandFactory;
        let command = Cli::command();
        let declared = |id: &str| {
            let argument = command
                .get_arguments()
                .find(|argument| argument.get_id() == id)
                .unwrap_or_else(|| panic!("no argument {id}"));
            let default = argument
                .get_default_values()
                .first()
                .map(|value| value.to_string_lossy().into_owned());
            let env = argument
                .get_env()
                .map(|env| env.to_string_lossy().into_owned());
            (default, env)
        };
        let expect = |id: &str, default: Option<&str>, env: &str| {
            assert_eq!(
                declared(id),
                (default.map(str::to_owned), Some(env.to_owned())),
                "{id}"
            );
        };
        expect("listen", Some("127.0.0.1:8080"), "FLAG_LISTEN");
        expect(
            "database_url",
            Some("sqlite://flags.db?mode=rwc"),
            "DATABASE_URL",
        );
        expect("cache_backend", None, "CACHE_BACKEND");
        expect("redis_url", None, "REDIS_URL");
        expect("cache_l1_ttl_ms", Some("5000"), "CACHE_L1_TTL_MS");
        expect(
            "stale_if_error_ms",
            Some("86400000"),
            "FLAG_STALE_IF_ERROR_MS",
        );
        expect("outage_refresh_ms", Some("1000"), "FLAG_OUTAGE_REFRESH_MS");
        expect("last_good_dir", None, "FLAG_LAST_GOOD_DIR");
        expect("bus_ping_ms", Some("1000"), "FLAG_BUS_PING_MS");
        expect(
            "redis_key_prefix",
            Some("feature_flags"),
            "REDIS_KEY_PREFIX",
        );
        expect("redis_timeout_ms", Some("100"), "REDIS_TIMEOUT_MS");
        expect("cache_ttl_ms", Some("300000"), "CACHE_TTL_MS");
        expect("admin_token", None, "FLAG_ADMIN_TOKEN");
        expect("admin_tokens", None, "FLAG_ADMIN_TOKENS");
        expect("client_tokens", None, "FLAG_CLIENT_TOKENS");
        expect(
            "default_environment",
            Some("production"),
            "FLAG_DEFAULT_ENVIRONMENT",
        );
        expect("shutdown_grace_ms", Some("10000"), "FLAG_SHUTDOWN_GRACE_MS");
        expect(
            "request_timeout_ms",
            Some("5000"),
            "FLAG_REQUEST_TIMEOUT_MS",
        );
        expect("log_format", Some("text"), "FLAG_LOG_FORMAT");
        expect("evaluation_metrics", Some("off"), "FLAG_EVALUATION_METRICS");
        expect("webhooks", None, "FLAG_WEBHOOKS");
        expect("webhook_secret", None, "FLAG_WEBHOOK_SECRET");
        expect(
            "webhook_retry_ms",
            Some("86400000"),
            "FLAG_WEBHOOK_RETRY_MS",
        );
        expect(
            "webhook_timeout_ms",
            Some("5000"),
            "FLAG_WEBHOOK_TIMEOUT_MS",
        );
        expect("max_context_bytes", Some("65536"), "FLAG_MAX_CONTEXT_BYTES");
        expect("max_in_flight", Some("4096"), "FLAG_MAX_IN_FLIGHT");
        expect("header_timeout_ms", Some("10000"), "FLAG_HEADER_TIMEOUT_MS");
        expect("idle_timeout_ms", Some("60000"), "FLAG_IDLE_TIMEOUT_MS");
        expect("max_connections", Some("10000"), "FLAG_MAX_CONNECTIONS");
        expect("max_environments", Some("1000"), "FLAG_MAX_ENVIRONMENTS");
        expect("max_flags", Some("10000"), "FLAG_MAX_FLAGS");
        expect(
            "redis_max_snapshot_bytes",
            Some("16777216"),
            "REDIS_MAX_SNAPSHOT_BYTES",
        );
        expect("cors_origins", None, "FLAG_CORS_ORIGINS");
        expect(
            "stream_credential_ttl_ms",
            Some("86400000"),
            "FLAG_STREAM_CREDENTIAL_TTL_MS",
        );
        expect(
            "stream_heartbeat_ms",
            Some("15000"),
            "FLAG_STREAM_HEARTBEAT_MS",
        );
        expect("max_streams", Some("10000"), "FLAG_MAX_STREAMS");
        expect("stream_poll_ms", Some("1000"), "FLAG_STREAM_POLL_MS");
        expect("file_poll_ms", Some("5000"), "FLAG_FILE_POLL_MS");
    }

    // These tests must not depend on the environment (CI exports REDIS_URL and DATABASE_URL), so
    // they pass every value that matters explicitly or test the pure rule.
    #[test]
    fn redis_url_makes_redis_the_default_backend() {
        assert_eq!(
            choose_cache_backend(None, Some("redis://h")),
            CacheBackend::Redis
        );
        assert_eq!(choose_cache_backend(None, None), CacheBackend::Memory);
        assert_eq!(
            choose_cache_backend(Some(CacheBackend::Memory), Some("redis://h")),
            CacheBackend::Memory
        );
        let cli =
            Cli::try_parse_from(["flag-server", "--redis-url", "redis://127.0.0.1:6379"]).unwrap();
        assert_eq!(cli.config.effective_cache_backend(), CacheBackend::Redis);
    }

    #[test]
    fn values_out_of_range_are_named() {
        let parse = |args: &[&str]| {
            let mut all = vec!["flag-server"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().config.validate()
        };
        assert_eq!(parse(&[]), Ok(()));
        let error = parse(&["--cache-ttl-ms", "9223372036854775807"]).unwrap_err();
        assert_eq!(error.name, "CACHE_TTL_MS");
        assert!(
            error
                .to_string()
                .starts_with("CACHE_TTL_MS must be between 1 and")
        );
        assert_eq!(
            parse(&["--cache-ttl-ms", "0"]).unwrap_err().name,
            "CACHE_TTL_MS"
        );
        assert_eq!(
            parse(&["--flag-max-in-flight", "0"]).unwrap_err().name,
            "FLAG_MAX_IN_FLIGHT"
        );
        assert_eq!(
            parse(&["--flag-max-context-bytes", "2000000"])
                .unwrap_err()
                .name,
            "FLAG_MAX_CONTEXT_BYTES"
        );
        assert_eq!(parse(&["--flag-stale-if-error-ms", "0"]), Ok(()));
    }

    #[test]
    fn debug_output_hides_tokens() {
        let cli = Cli::try_parse_from(["flag-server", "--flag-admin-token", "s3cret"]).unwrap();
        let shown = format!("{:?}", cli.config);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
