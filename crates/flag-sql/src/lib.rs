//! `SqlRepository`: the SQL implementation of [`FeatureFlagRepository`], Postgres or SQLite by the
//! URL's scheme (`postgres://…`, `sqlite://…`).
//!
//! # Schema
//!
//! `environments (name, revision)`, `flags (environment, key, definition, version, updated_at)` and
//! `audit_log (environment, key, action, old_version, new_version, revision, at, actor)`, created
//! by embedded migrations (`migrations/postgres`, `migrations/sqlite`) that run at connect (and by
//! `flag-server migrate`). `definition` holds the flag's JSON exactly as the API shows it.
//!
//! # Writes
//!
//! One transaction per write: make sure the environment row exists, bump its revision (which also
//! locks the row, so writers of one environment queue up instead of racing), check the
//! precondition against the flag's current version, write the flag, append the audit row, commit.
//! A failed precondition rolls everything back, so the revision only moves with a real write. A
//! crash never leaves a revision bump, a version bump or an audit row without the others.
//!
//! # Reads
//!
//! A snapshot is one statement (environment joined with its flags), so its revision and flags
//! always come from one committed state, on Postgres as on SQLite.
//!
//! # Operations
//!
//! Queries are built at run time (building needs no database). The pool is bounded
//! ([`SqlRepositoryBuilder::max_connections`], default 10) and every call is bounded by
//! [`SqlRepositoryBuilder::timeout`] (default 5 s, connection acquisition included): a database
//! that is down or unreachable gives [`RepositoryError::Unavailable`] or
//! [`RepositoryError::Timeout`], never a hang. Connections are tested before use, so the same pool
//! survives a database restart. SQLite runs in WAL mode with `synchronous = FULL` and a 5 s busy
//! timeout; a `sqlite::memory:` database is kept on a single connection (each SQLite connection
//! to `:memory:` would otherwise be a database of its own). Until the repository port carries the
//! writer's identity, audit rows name the actor configured with [`SqlRepositoryBuilder::actor`]
//! (default `flag-server`).

use std::future::Future;
use std::sync::Once;
use std::time::Duration;

use flag_core::time::OffsetDateTime;
use flag_core::time::format_description::well_known::Rfc3339;
use flag_core::{
    Deleted, Environment, EnvironmentSnapshot, EnvironmentSummary, FeatureFlag,
    FeatureFlagRepository, FlagKey, Precondition, RepositoryError, Revision, Upserted, async_trait,
    redact_url,
};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

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

    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
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
    url: String,
    max_connections: u32,
    timeout: Duration,
    actor: String,
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

    /// The actor named in audit rows.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Connects and applies the migrations.
    pub async fn connect(self) -> Result<SqlRepository, SqlError> {
        let backend = Backend::of(&self.url)?;
        let shown = redact_url(&self.url);
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let options: AnyConnectOptions =
            self.url
                .parse()
                .map_err(|error: sqlx::Error| SqlError::Connect {
                    url: shown.clone(),
                    message: error.to_string(),
                })?;
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
        let pool = tokio::time::timeout(self.timeout, pool.connect_with(options))
            .await
            .map_err(|_| SqlError::Connect {
                url: shown.clone(),
                message: format!("no answer within {:?}", self.timeout),
            })?
            .map_err(|error| SqlError::Connect {
                url: shown.clone(),
                message: error.to_string(),
            })?;
        let migrator = match backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|error| SqlError::Migrate {
                url: shown.clone(),
                message: error.to_string(),
            })?;
        Ok(SqlRepository {
            pool,
            backend,
            shown_url: shown,
            timeout: self.timeout,
            actor: self.actor,
        })
    }
}

/// Flags in Postgres or SQLite.
#[derive(Clone)]
pub struct SqlRepository {
    pool: AnyPool,
    backend: Backend,
    shown_url: String,
    timeout: Duration,
    actor: String,
}

impl std::fmt::Debug for SqlRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlRepository")
            .field("url", &self.shown_url)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SqlRepository {
    /// A builder with the defaults: 10 connections, 5 s timeout, actor `flag-server`.
    pub fn builder(url: impl Into<String>) -> SqlRepositoryBuilder {
        SqlRepositoryBuilder {
            url: url.into(),
            max_connections: 10,
            timeout: DEFAULT_TIMEOUT,
            actor: "flag-server".to_owned(),
        }
    }

    /// Connects to `url` with the defaults and applies the migrations.
    pub async fn connect(url: impl Into<String>) -> Result<Self, SqlError> {
        Self::builder(url).connect().await
    }

    /// Which database this is.
    pub fn database(&self) -> Backend {
        self.backend
    }

    /// The audit log of one flag, oldest first: `(action, old_version, new_version, revision, actor)`.
    pub async fn audit_log(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        let (env, key) = (env.to_string(), key.to_string());
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT action, old_version, new_version, revision, at, actor FROM audit_log \
                 WHERE environment = $1 AND key = $2 ORDER BY id",
            )
            .bind(env)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(AuditEntry {
                        action: row.try_get("action")?,
                        old_version: row.try_get::<Option<i64>, _>("old_version")?.map(to_u64),
                        new_version: row.try_get::<Option<i64>, _>("new_version")?.map(to_u64),
                        revision: Revision(to_u64(row.try_get("revision")?)),
                        at: row.try_get("at")?,
                        actor: row.try_get("actor")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .await
    }

    /// Runs `work` within the timeout, mapping driver errors.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, RepositoryError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result.map_err(|error| map_error(&error, self.timeout)),
            Err(_) => Err(RepositoryError::Timeout {
                after: self.timeout,
            }),
        }
    }

    async fn write_audit(
        &self,
        transaction: &mut Transaction<'_, Any>,
        record: Audit<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit_log (environment, key, action, old_version, new_version, revision, at, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(record.env.to_string())
        .bind(record.key.to_string())
        .bind(record.action)
        .bind(record.old_version.map(to_i64))
        .bind(record.new_version.map(to_i64))
        .bind(to_i64(record.revision.get()))
        .bind(record.at.to_owned())
        .bind(self.actor.clone())
        .execute(&mut **transaction)
        .await
        .map(drop)
    }
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// `create`, `update` or `delete`.
    pub action: String,
    /// The version before the write (`None` on create).
    pub old_version: Option<u64>,
    /// The version after the write (`None` on delete).
    pub new_version: Option<u64>,
    /// The environment's revision after the write.
    pub revision: Revision,
    /// When, RFC 3339.
    pub at: String,
    /// Who.
    pub actor: String,
}

struct Audit<'a> {
    env: &'a Environment,
    key: &'a FlagKey,
    action: &'static str,
    old_version: Option<u64>,
    new_version: Option<u64>,
    revision: Revision,
    at: &'a str,
}

/// A write outcome decided inside a transaction: commit it, or roll back with this error.
enum Decision<T> {
    Commit(T),
    Refuse(RepositoryError),
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn map_error(error: &sqlx::Error, timeout: Duration) -> RepositoryError {
    match error {
        sqlx::Error::PoolTimedOut => RepositoryError::Timeout { after: timeout },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => RepositoryError::Unavailable {
            message: error.to_string(),
        },
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => RepositoryError::Corrupt {
            message: error.to_string(),
        },
        _ => RepositoryError::Backend {
            message: error.to_string(),
        },
    }
}

fn parse_stored(definition: &str) -> Result<FeatureFlag, sqlx::Error> {
    serde_json::from_str(definition).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn now_rfc3339() -> (OffsetDateTime, String) {
    let now = OffsetDateTime::now_utc();
    let shown = now
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
    (now, shown)
}

/// Makes sure the environment row exists and bumps its revision, locking the row until commit.
async fn bump_revision(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
) -> Result<Revision, sqlx::Error> {
    sqlx::query(
        "INSERT INTO environments (name, revision) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
    )
    .bind(env.to_string())
    .execute(&mut **transaction)
    .await?;
    let revision: i64 = sqlx::query_scalar(
        "UPDATE environments SET revision = revision + 1 WHERE name = $1 RETURNING revision",
    )
    .bind(env.to_string())
    .fetch_one(&mut **transaction)
    .await?;
    Ok(Revision(to_u64(revision)))
}

async fn current_version(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    key: &FlagKey,
) -> Result<Option<u64>, sqlx::Error> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM flags WHERE environment = $1 AND key = $2")
            .bind(env.to_string())
            .bind(key.to_string())
            .fetch_optional(&mut **transaction)
            .await?;
    Ok(version.map(to_u64))
}

fn precondition_holds(precondition: Precondition, current: Option<u64>) -> bool {
    match precondition {
        Precondition::None => true,
        Precondition::Version(expected) => current == Some(expected),
        Precondition::Absent => current.is_none(),
    }
}

#[async_trait]
impl FeatureFlagRepository for SqlRepository {
    fn backend(&self) -> &'static str {
        self.backend.name()
    }

    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        let name = env.to_string();
        self.bounded(async {
            // One statement: revision and flags from one committed state.
            let rows = sqlx::query(
                "SELECT e.revision, f.definition FROM environments e \
                 LEFT JOIN flags f ON f.environment = e.name WHERE e.name = $1 ORDER BY f.key",
            )
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
            let Some(first) = rows.first() else {
                return Ok(EnvironmentSnapshot::empty(Revision::ZERO));
            };
            let revision = Revision(to_u64(first.try_get("revision")?));
            let mut flags = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(definition) = row.try_get::<Option<String>, _>("definition")? {
                    flags.push(parse_stored(&definition)?);
                }
            }
            EnvironmentSnapshot::new(revision, flags)
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))
        })
        .await
    }

    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        let name = env.to_string();
        self.bounded(async {
            let revision: Option<i64> =
                sqlx::query_scalar("SELECT revision FROM environments WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(revision.map_or(Revision::ZERO, |revision| Revision(to_u64(revision))))
        })
        .await
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        let (env, key) = (env.to_string(), key.to_string());
        self.bounded(async {
            let definition: Option<String> = sqlx::query_scalar(
                "SELECT definition FROM flags WHERE environment = $1 AND key = $2",
            )
            .bind(env)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            definition.as_deref().map(parse_stored).transpose()
        })
        .await
    }

    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
    ) -> Result<Upserted, RepositoryError> {
        let decision = self
            .bounded(async {
                let mut transaction = self.pool.begin().await?;
                let revision = bump_revision(&mut transaction, env).await?;
                let current = current_version(&mut transaction, env, flag.key()).await?;
                if !precondition_holds(precondition, current) {
                    transaction.rollback().await?;
                    return Ok(Decision::Refuse(RepositoryError::VersionConflict {
                        environment: env.clone(),
                        key: flag.key().clone(),
                        expected: precondition,
                        current,
                    }));
                }
                let version = current.unwrap_or(0) + 1;
                let (now, at) = now_rfc3339();
                let stored = flag.stored_as(version, now);
                let definition = serde_json::to_string(&stored)
                    .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
                if current.is_some() {
                    sqlx::query(
                        "UPDATE flags SET definition = $1, version = $2, updated_at = $3 \
                         WHERE environment = $4 AND key = $5",
                    )
                    .bind(definition)
                    .bind(to_i64(version))
                    .bind(at.clone())
                    .bind(env.to_string())
                    .bind(stored.key().to_string())
                    .execute(&mut *transaction)
                    .await?;
                } else {
                    sqlx::query(
                        "INSERT INTO flags (environment, key, definition, version, updated_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(env.to_string())
                    .bind(stored.key().to_string())
                    .bind(definition)
                    .bind(to_i64(version))
                    .bind(at.clone())
                    .execute(&mut *transaction)
                    .await?;
                }
                let audit = Audit {
                    env,
                    key: stored.key(),
                    action: if current.is_some() {
                        "update"
                    } else {
                        "create"
                    },
                    old_version: current,
                    new_version: Some(version),
                    revision,
                    at: &at,
                };
                self.write_audit(&mut transaction, audit).await?;
                transaction.commit().await?;
                Ok(Decision::Commit(Upserted {
                    flag: stored,
                    revision,
                    created: current.is_none(),
                }))
            })
            .await?;
        match decision {
            Decision::Commit(upserted) => Ok(upserted),
            Decision::Refuse(error) => Err(error),
        }
    }

    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
    ) -> Result<Deleted, RepositoryError> {
        let decision = self
            .bounded(async {
                let mut transaction = self.pool.begin().await?;
                let revision = bump_revision(&mut transaction, env).await?;
                let Some(current) = current_version(&mut transaction, env, key).await? else {
                    transaction.rollback().await?;
                    return Ok(Decision::Refuse(RepositoryError::NotFound {
                        environment: env.clone(),
                        key: key.clone(),
                    }));
                };
                if !precondition_holds(precondition, Some(current)) {
                    transaction.rollback().await?;
                    return Ok(Decision::Refuse(RepositoryError::VersionConflict {
                        environment: env.clone(),
                        key: key.clone(),
                        expected: precondition,
                        current: Some(current),
                    }));
                }
                sqlx::query("DELETE FROM flags WHERE environment = $1 AND key = $2")
                    .bind(env.to_string())
                    .bind(key.to_string())
                    .execute(&mut *transaction)
                    .await?;
                let (_, at) = now_rfc3339();
                let audit = Audit {
                    env,
                    key,
                    action: "delete",
                    old_version: Some(current),
                    new_version: None,
                    revision,
                    at: &at,
                };
                self.write_audit(&mut transaction, audit).await?;
                transaction.commit().await?;
                Ok(Decision::Commit(Deleted {
                    version: current,
                    revision,
                }))
            })
            .await?;
        match decision {
            Decision::Commit(deleted) => Ok(deleted),
            Decision::Refuse(error) => Err(error),
        }
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT e.name, e.revision, COUNT(f.key) AS flag_count FROM environments e \
                 LEFT JOIN flags f ON f.environment = e.name GROUP BY e.name, e.revision ORDER BY e.name",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let name: String = row.try_get("name")?;
                    let name = Environment::parse(&name).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
                    Ok(EnvironmentSummary {
                        name,
                        revision: Revision(to_u64(row.try_get("revision")?)),
                        flag_count: to_u64(row.try_get("flag_count")?),
                    })
                })
                .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        self.bounded(async {
            let mut connection = self.pool.acquire().await?;
            connection.ping().await
        })
        .await
    }
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

    #[test]
    fn preconditions() {
        assert!(precondition_holds(Precondition::None, None));
        assert!(precondition_holds(Precondition::Version(3), Some(3)));
        assert!(!precondition_holds(Precondition::Version(3), Some(4)));
        assert!(!precondition_holds(Precondition::Version(3), None));
        assert!(precondition_holds(Precondition::Absent, None));
        assert!(!precondition_holds(Precondition::Absent, Some(1)));
    }
}
