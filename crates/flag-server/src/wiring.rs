//! From configuration to a running application: repository, cache, service. The only module
//! that names adapters.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flag_core::{
    DynFeatureFlagCache, DynFeatureFlagRepository, DynInvalidationBus, Environment,
    FeatureFlagService, Limits, Traced,
};
use flag_file::FileRepository;
use flag_memory::{AnnouncedCache, MemoryCache, NoCache, TieredCache};
use flag_redis::{RedisBus, RedisCache};
use flag_sql::{DeferredSqlRepository, SqlError, SqlRepository};

use crate::auth::{AdminTokens, ClientTokens};
use crate::config::{CacheBackend, Config, Switch};
use crate::cors::CorsOrigins;
use crate::serve::ConnectionLimits;
use crate::state::AppState;
use crate::streams::{StreamSettings, Streams};

/// `cache` with a span around each call while spans are exported (`flag_core::Traced`);
/// otherwise bare, so the hot path carries no span.
fn traced_cache(config: &Config, cache: Arc<DynFeatureFlagCache>) -> Arc<DynFeatureFlagCache> {
    if config.traced {
        Arc::new(Traced::when(cache, crate::telemetry::sampled))
    } else {
        cache
    }
}

/// `bus` with a span around each publish while spans are exported; otherwise bare.
fn traced_bus(config: &Config, bus: Arc<DynInvalidationBus>) -> Arc<DynInvalidationBus> {
    if config.traced {
        Arc::new(Traced::when(bus, crate::telemetry::sampled))
    } else {
        bus
    }
}

/// Connects the stores the configuration names (migrating the database) and builds the state.
pub async fn state_from(config: &Config) -> anyhow::Result<AppState> {
    let default_environment = Environment::parse(&config.default_environment)
        .context("FLAG_DEFAULT_ENVIRONMENT is not a valid environment name")?;
    let (service, flags_file) = service_from(config).await?;
    let shared_cache = matches!(
        config.effective_cache_backend(),
        CacheBackend::Redis | CacheBackend::Tiered
    );
    let webhooks = crate::webhooks::start(&service, config).await?;
    let mut state = state_with(config, service, default_environment, shared_cache)?;
    state.flags_file = flags_file;
    state.webhooks = webhooks;
    Ok(state)
}

/// Connects the stores the configuration names (migrating the database) and builds the service
/// over them, following other instances' changes: what the server and the command line's
/// `import` share, so a write from either reaches caches and other instances the same way. With
/// `DATABASE_URL=file://…`, also the flags file, watched: each reload is told to the service
/// as a write would be.
pub async fn service_from(
    config: &Config,
) -> anyhow::Result<(FeatureFlagService, Option<FileRepository>)> {
    config.validate()?;
    let (repository, flags_file) = match flags_file_path(&config.database_url) {
        Some(path) => {
            let default = Environment::parse(&config.default_environment)
                .context("FLAG_DEFAULT_ENVIRONMENT is not a valid environment name")?;
            let file = FileRepository::open(path, default)
                .await
                .context("DATABASE_URL names a flags file that cannot be served")?;
            (
                Arc::new(file.clone()) as Arc<DynFeatureFlagRepository>,
                Some(file),
            )
        }
        None => (repository(config).await?, None),
    };
    // With Redis, every write is published on the bus, so that other instances' event streams
    // hear of it (tiered publishes for its own coherence too); without, streamed environments'
    // revisions are read every FLAG_STREAM_POLL_MS.
    let (cache, bus): (Arc<DynFeatureFlagCache>, Option<Arc<DynInvalidationBus>>) =
        match config.effective_cache_backend() {
            CacheBackend::Memory => (Arc::new(MemoryCache::new()), None),
            CacheBackend::None => (Arc::new(NoCache), None),
            CacheBackend::Redis => {
                let cache = redis_cache(config, "redis")?;
                let bus = traced_bus(config, Arc::new(redis_bus(config, &cache)));
                let announced = AnnouncedCache::new(Arc::new(cache), Arc::clone(&bus));
                (Arc::new(announced), Some(bus))
            }
            CacheBackend::Tiered => {
                let cache = redis_cache(config, "tiered")?;
                let bus = traced_bus(config, Arc::new(redis_bus(config, &cache)));
                let tiered = TieredCache::start(
                    Arc::new(MemoryCache::new()),
                    traced_cache(config, Arc::new(cache)),
                    Arc::clone(&bus),
                    Duration::from_millis(config.cache_l1_ttl_ms),
                );
                (Arc::new(tiered), Some(bus))
            }
        };
    let (repository, cache) = if config.traced {
        (
            Arc::new(Traced::when(repository, crate::telemetry::sampled))
                as Arc<DynFeatureFlagRepository>,
            traced_cache(config, cache),
        )
    } else {
        (repository, cache)
    };
    let mut service = FeatureFlagService::builder(repository, cache);
    if let Some(directory) = &config.last_good_dir {
        service = service.last_good_dir(directory);
    }
    let service = service
        .ttl(Duration::from_millis(config.cache_ttl_ms))
        .stale_if_error(Duration::from_millis(config.stale_if_error_ms))
        .outage_refresh(Duration::from_millis(config.outage_refresh_ms))
        .limits(Limits {
            max_environments: usize::try_from(config.max_environments)?,
            max_flags: usize::try_from(config.max_flags)?,
        })
        .build()
        .context("building the service (CACHE_TTL_MS, FLAG_LAST_GOOD_DIR)")?;
    service.follow_changes(bus, Duration::from_millis(config.stream_poll_ms));
    if let Some(file) = &flags_file {
        follow_file(&service, file, Duration::from_millis(config.file_poll_ms));
    }
    Ok((service, flags_file))
}

/// The path of `DATABASE_URL=file://<path>`, when it names a flags file.
fn flags_file_path(database_url: &str) -> Option<&str> {
    database_url
        .strip_prefix("file://")
        .filter(|path| !path.is_empty())
}

/// Watches `file` for as long as the process runs, and tells `service` of every environment a
/// reload changed (its cache invalidated, other instances and event streams told).
fn follow_file(service: &FeatureFlagService, file: &FileRepository, poll: Duration) {
    let watcher = file.watch(poll);
    let mut changes = file.changes();
    let (service, file) = (service.clone(), file.clone());
    tokio::spawn(async move {
        let _watching = watcher;
        loop {
            match changes.recv().await {
                Ok(change) => {
                    service
                        .repository_changed(&change.environment, change.revision)
                        .await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Changes were missed: tell every environment at its revision now.
                    let listed = flag_core::FeatureFlagRepository::environments(&file).await;
                    for summary in listed.into_iter().flatten() {
                        service
                            .repository_changed(&summary.name, summary.revision)
                            .await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The state of a server of `service`.
fn state_with(
    config: &Config,
    service: FeatureFlagService,
    default_environment: Environment,
    shared_cache: bool,
) -> anyhow::Result<AppState> {
    let client_tokens = client_tokens(config.client_tokens.as_deref())?;
    let named = config.admin_tokens.as_deref().unwrap_or_default();
    let mut admin_tokens = AdminTokens::parse(config.admin_token.as_deref(), named)?;
    // With no token configured at all, one is generated (named `admin`); a configuration that
    // names its tokens in FLAG_ADMIN_TOKENS gets no extra one.
    let mut generated = None;
    if admin_tokens.is_empty() {
        let token = random_token().context("generating an admin token")?;
        // Printed once, on stdout only; never logged.
        println!("generated admin token (set FLAG_ADMIN_TOKEN to choose one): {token}");
        admin_tokens = AdminTokens::parse(Some(&token), &[])?;
        generated = Some(token);
    }
    // Credentials are needed only when OFREP needs a token; they are keyed by every token.
    let streams = {
        let mut secrets: Vec<&str> = Vec::new();
        secrets.extend(config.admin_token.as_deref());
        secrets.extend(generated.as_deref());
        secrets.extend(named.iter().map(String::as_str));
        secrets.extend(config.client_tokens.iter().flatten().map(String::as_str));
        let settings = StreamSettings {
            heartbeat: Duration::from_millis(config.stream_heartbeat_ms),
            credential_ttl: Duration::from_millis(config.stream_credential_ttl_ms),
            max_streams: usize::try_from(config.max_streams)?,
        };
        Streams::new(
            settings,
            client_tokens.is_some().then_some(secrets.as_slice()),
        )
    };
    let cors = config
        .cors_origins
        .as_deref()
        .and_then(CorsOrigins::parse)
        .map(Arc::new);
    Ok(AppState {
        streams: Arc::new(streams),
        cors,
        client_tokens,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        max_context_bytes: usize::try_from(config.max_context_bytes)?,
        max_in_flight: usize::try_from(config.max_in_flight)?,
        shared_cache,
        admin_tokens: Arc::new(admin_tokens),
        evaluation_counts: (config.evaluation_metrics == Switch::On)
            .then(|| Arc::new(flag_core::EvaluationCounts::new())),
        ..AppState::new(service, default_environment, "")
    })
}

/// The database the configuration names, connected and migrated; when it cannot be reached, a
/// repository that keeps connecting in the background (every call `503` meanwhile), so the
/// server starts and serves what the cache holds instead of failing. A URL that cannot work or
/// migrations that fail still refuse to start.
async fn repository(config: &Config) -> anyhow::Result<Arc<DynFeatureFlagRepository>> {
    let builder = SqlRepository::builder(&config.database_url);
    match builder.clone().connect().await {
        Ok(repository) => Ok(Arc::new(repository)),
        Err(error @ SqlError::Connect { .. }) => {
            tracing::warn!(%error, "the database is unreachable: starting without it, serving what \
                the cache holds and connecting in the background");
            Ok(Arc::new(DeferredSqlRepository::start(
                builder,
                error.to_string(),
            )))
        }
        Err(error) => Err(error).context("connecting to the database"),
    }
}

/// How the configuration says connections are held.
pub fn connection_limits(config: &Config) -> anyhow::Result<ConnectionLimits> {
    config.validate()?;
    Ok(ConnectionLimits {
        header_timeout: Duration::from_millis(config.header_timeout_ms),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        max_connections: usize::try_from(config.max_connections)?,
    })
}

/// The Redis cache the configuration describes (`backend` names the setting that needs it).
fn redis_cache(config: &Config, backend: &str) -> anyhow::Result<RedisCache> {
    let url = config
        .redis_url
        .as_deref()
        .with_context(|| format!("CACHE_BACKEND={backend} needs REDIS_URL"))?;
    RedisCache::builder(url)
        .key_prefix(config.redis_key_prefix.clone())
        .timeout(Duration::from_millis(config.redis_timeout_ms))
        .max_snapshot_bytes(usize::try_from(config.redis_max_snapshot_bytes)?)
        .build()
        .context("REDIS_URL")
}

/// The invalidation bus on the Redis of `cache`, its subscriber pinged every `FLAG_BUS_PING_MS`.
fn redis_bus(config: &Config, cache: &RedisCache) -> RedisBus {
    RedisBus::start_with_ping(cache, Duration::from_millis(config.bus_ping_ms))
}

/// The client tokens in force: `None` (OFREP open) when unset or when every entry is blank, so
/// that `FLAG_CLIENT_TOKENS=` in a deployment file does not lock every client out.
fn client_tokens(configured: Option<&[String]>) -> anyhow::Result<Option<Arc<ClientTokens>>> {
    let Some(configured) = configured else {
        return Ok(None);
    };
    let tokens = ClientTokens::parse(configured)?;
    if tokens.is_none() {
        tracing::warn!("FLAG_CLIENT_TOKENS is set but holds no token: OFREP stays open");
    }
    Ok(tokens.map(Arc::new))
}

/// 32 random bytes from the operating system, as hex.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::signing::hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::client_tokens;

    #[test]
    fn blank_client_tokens_leave_ofrep_open() {
        assert!(client_tokens(None).unwrap().is_none());
        assert!(client_tokens(Some(&[String::new()])).unwrap().is_none());
        assert!(
            client_tokens(Some(&[" ".to_owned(), String::new()]))
                .unwrap()
                .is_none()
        );
        assert!(
            client_tokens(Some(&[" a ".to_owned(), String::new()]))
                .unwrap()
                .is_some()
        );
        let error = client_tokens(Some(&["BAD|x:t".to_owned()])).unwrap_err();
        assert!(
            error.to_string().contains("FLAG_CLIENT_TOKENS entry 1"),
            "{error}"
        );
    }
}
