//! Connecting: which database a URL names, the bounded pool, SQLite's pragmas, and the embedded
//! migrations that run at connect.

use std::sync::Once;
use std::time::Duration;

use flag_core::redact_url;
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;

use crate::repository::SqlRepository;

// Migrations a newer release applied are tolerated (`ignore_missing`): migrations only ever add
// (expand, then contract in a later release), so this release runs on a database a newer one
// migrated, and a rollback keeps working. They are logged at connect.
static POSTGRES_MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};
static SQLITE_MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/sqlite")
};

/// How long the migrations at connect may take before connecting fails.
pub const DEFAULT_MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The timeout of every repository call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:`.
    Sqlite,
}

impl Backend {
    /// The backend of `url`, by its scheme.
    pub fn of(url: &str) -> Result<Self, SqlError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(SqlError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// The backend's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        }
    }
}

/// Setting up a repository failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The URL names no supported database.
    #[error("unsupported database URL {0}: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What the driver said.
        message: String,
    },
    /// The migrations failed.
    #[error("migrating {url} failed: {message}")]
    Migrate {
        /// The URL, password redacted.
        url: String,
        /// What the migrator said.
        message: String,
    },
}

/// Configures a [`SqlRepository`].
#[derive(Clone)]
pub struct SqlRepositoryBuilder {
    pub(crate) url: String,
    pub(crate) max_connections: u32,
    pub(crate) timeout: Duration,
    pub(crate) migration_timeout: Duration,
}

impl std::fmt::Debug for SqlRepositoryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlRepositoryBuilder")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SqlRepositoryBuilder {
    /// The most connections the pool opens.
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The bound on every call, waiting for a connection included.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the migrations at connect may take.
    #[must_use]
    pub fn migration_timeout(mut self, timeout: Duration) -> Self {
        self.migration_timeout = timeout;
        self
    }

    /// Connects and applies the migrations.
    pub async fn connect(self) -> Result<SqlRepository, SqlError> {
        let backend = Backend::of(&self.url)?;
        let shown = redact_url(&self.url);
        let connect_error = |message: String| SqlError::Connect {
            url: shown.clone(),
            message,
        };
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let options: AnyConnectOptions = self
            .url
            .parse()
            .map_err(|error: sqlx::Error| connect_error(error.to_string()))?;
        let pool = tokio::time::timeout(
            self.timeout,
            self.pool_options(backend).connect_with(options),
        )
        .await
        .map_err(|_| connect_error(format!("no answer within {:?}", self.timeout)))?
        .map_err(|error| connect_error(error.to_string()))?;
        tokio::time::timeout(self.migration_timeout, migrate(backend, &pool, &shown))
            .await
            .map_err(|_| SqlError::Migrate {
                url: shown.clone(),
                message: format!("not done within {:?}", self.migration_timeout),
            })??;
        Ok(SqlRepository::new(pool, backend, shown, self.timeout))
    }

    /// The pool: bounded, connections tested before use (so one pool outlives a database
    /// restart), SQLite in WAL mode with `synchronous = FULL`, and an in-memory SQLite database
    /// kept on its one connection (each connection to `:memory:` would be a database of its own).
    fn pool_options(&self, backend: Backend) -> AnyPoolOptions {
        let in_memory = backend == Backend::Sqlite
            && (self.url.contains(":memory:") || self.url.contains("mode=memory"));
        let mut pool = AnyPoolOptions::new()
            .max_connections(if in_memory { 1 } else { self.max_connections })
            .acquire_timeout(self.timeout)
            .test_before_acquire(true);
        if in_memory {
            // The one connection is the database: never let the pool close it.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        if backend == Backend::Sqlite {
            pool = pool.after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                    )
                    .execute(connection)
                    .await
                    .map(drop)
                })
            });
        }
        pool
    }
}

/// Applies the backend's embedded migrations, and warns of any a newer release applied.
async fn migrate(backend: Backend, pool: &AnyPool, shown_url: &str) -> Result<(), SqlError> {
    let migrator = backend.migrator();
    migrator
        .run(pool)
        .await
        .map_err(|error| SqlError::Migrate {
            url: shown_url.to_owned(),
            message: error.to_string(),
        })?;
    let known = migrator
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    let newer: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE version > $1")
            .bind(known)
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    if !newer.is_empty() {
        tracing::warn!(
            url = shown_url,
            ?newer,
            newest_known = known,
            "the database has migrations of a newer release; running on it (migrations only add)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_come_from_the_scheme() {
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of("sqlite://flags.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        let error = Backend::of("mysql://u:secret@h/db").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
