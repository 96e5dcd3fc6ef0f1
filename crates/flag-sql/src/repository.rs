//! `SqlRepository`: the repository port on the connected pool. Reads are one statement each;
//! every write is one transaction of steps (bump the revision, check the precondition, write or
//! delete the flag, append the audit row) that commits whole or not at all.

use std::future::Future;
use std::time::Duration;

use flag_core::{
    Deleted, Environment, EnvironmentSnapshot, EnvironmentSummary, FeatureFlag,
    FeatureFlagRepository, FlagKey, Precondition, RepositoryError, Revision, Upserted, async_trait,
};
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

use crate::audit::{self, Audit};
use crate::columns::{map_error, now_rfc3339, parse_stored, to_i64, to_u64};
use crate::connection::{
    Backend, DEFAULT_MIGRATION_TIMEOUT, DEFAULT_TIMEOUT, SqlError, SqlRepositoryBuilder,
};

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

/// What a write decided inside its transaction: the outcome to commit, or the refusal to roll
/// back.
type Decided<T> = Result<T, RepositoryError>;

impl SqlRepository {
    /// A builder with the defaults: 10 connections, 5 s timeout, actor `flag-server`.
    pub fn builder(url: impl Into<String>) -> SqlRepositoryBuilder {
        SqlRepositoryBuilder {
            url: url.into(),
            max_connections: 10,
            timeout: DEFAULT_TIMEOUT,
            migration_timeout: DEFAULT_MIGRATION_TIMEOUT,
            actor: "flag-server".to_owned(),
        }
    }

    /// Connects to `url` with the defaults and applies the migrations.
    pub async fn connect(url: impl Into<String>) -> Result<Self, SqlError> {
        Self::builder(url).connect().await
    }

    /// A repository on a connected, migrated pool.
    pub(crate) fn new(
        pool: AnyPool,
        backend: Backend,
        shown_url: String,
        timeout: Duration,
        actor: String,
    ) -> Self {
        Self {
            pool,
            backend,
            shown_url,
            timeout,
            actor,
        }
    }

    /// Which database this is.
    pub fn database(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `work` within the timeout, mapping driver errors.
    pub(crate) async fn bounded<T>(
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
}

/// Ends a write's transaction: commits what it decided, or rolls back its refusal.
async fn settle<T>(
    transaction: Transaction<'_, Any>,
    decided: Decided<T>,
) -> Result<Decided<T>, sqlx::Error> {
    match &decided {
        Ok(_) => transaction.commit().await?,
        Err(_) => transaction.rollback().await?,
    }
    Ok(decided)
}

/// Makes sure the environment row exists and bumps its revision, locking the row until commit
/// (writers of one environment queue up instead of racing).
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
    // A write brings a removed environment back, at its next revision.
    let revision: i64 = sqlx::query_scalar(
        "UPDATE environments SET revision = revision + 1, deleted = 0 WHERE name = $1 \
         RETURNING revision",
    )
    .bind(env.to_string())
    .fetch_one(&mut **transaction)
    .await?;
    Ok(Revision(to_u64(revision)))
}

/// Marks an environment without flags removed, bumping its revision (kept for a later write).
async fn delete_environment_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
) -> Result<Decided<Revision>, sqlx::Error> {
    // Locks the row until commit, so no flag can be written in between.
    let revision: Option<i64> = sqlx::query_scalar(
        "UPDATE environments SET revision = revision + 1 WHERE name = $1 AND deleted = 0 \
         RETURNING revision",
    )
    .bind(env.to_string())
    .fetch_optional(&mut **transaction)
    .await?;
    let Some(revision) = revision else {
        return Ok(Err(RepositoryError::EnvironmentNotFound {
            environment: env.clone(),
        }));
    };
    let flags: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM flags WHERE environment = $1")
        .bind(env.to_string())
        .fetch_one(&mut **transaction)
        .await?;
    if flags > 0 {
        return Ok(Err(RepositoryError::EnvironmentInUse {
            environment: env.clone(),
            flags: to_u64(flags),
        }));
    }
    sqlx::query("UPDATE environments SET deleted = 1 WHERE name = $1")
        .bind(env.to_string())
        .execute(&mut **transaction)
        .await?;
    Ok(Ok(Revision(to_u64(revision))))
}

/// The stored version of `key`, `None` when there is no such flag.
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

/// Writes `stored` over the flag's row (`replacing`) or as a new one.
async fn write_flag(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    stored: &FeatureFlag,
    replacing: bool,
    at: &str,
) -> Result<(), sqlx::Error> {
    let definition =
        serde_json::to_string(stored).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    let version = to_i64(stored.version());
    let query = if replacing {
        sqlx::query(
            "UPDATE flags SET definition = $3, version = $4, updated_at = $5 \
             WHERE environment = $1 AND key = $2",
        )
    } else {
        sqlx::query(
            "INSERT INTO flags (environment, key, definition, version, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
    };
    query
        .bind(env.to_string())
        .bind(stored.key().to_string())
        .bind(definition)
        .bind(version)
        .bind(at.to_owned())
        .execute(&mut **transaction)
        .await
        .map(drop)
}

/// The steps of an upsert inside its transaction.
async fn upsert_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    flag: FeatureFlag,
    precondition: Precondition,
    actor: &str,
) -> Result<Decided<Upserted>, sqlx::Error> {
    let revision = bump_revision(transaction, env).await?;
    let current = current_version(transaction, env, flag.key()).await?;
    if let Err(refused) = precondition.check(env, flag.key(), current) {
        return Ok(Err(refused));
    }
    let (now, at) = now_rfc3339();
    let stored = flag.stored_as(current.unwrap_or(0) + 1, now);
    write_flag(transaction, env, &stored, current.is_some(), &at).await?;
    let record = Audit {
        env,
        key: stored.key(),
        action: if current.is_some() {
            "update"
        } else {
            "create"
        },
        old_version: current,
        new_version: Some(stored.version()),
        revision,
        at: &at,
        actor,
    };
    audit::append(transaction, record).await?;
    Ok(Ok(Upserted {
        created: current.is_none(),
        flag: stored,
        revision,
    }))
}

/// The steps of a delete inside its transaction.
async fn delete_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    key: &FlagKey,
    precondition: Precondition,
    actor: &str,
) -> Result<Decided<Deleted>, sqlx::Error> {
    let revision = bump_revision(transaction, env).await?;
    let Some(current) = current_version(transaction, env, key).await? else {
        return Ok(Err(RepositoryError::NotFound {
            environment: env.clone(),
            key: key.clone(),
        }));
    };
    if let Err(refused) = precondition.check(env, key, Some(current)) {
        return Ok(Err(refused));
    }
    sqlx::query("DELETE FROM flags WHERE environment = $1 AND key = $2")
        .bind(env.to_string())
        .bind(key.to_string())
        .execute(&mut **transaction)
        .await?;
    let (_, at) = now_rfc3339();
    let record = Audit {
        env,
        key,
        action: "delete",
        old_version: Some(current),
        new_version: None,
        revision,
        at: &at,
        actor,
    };
    audit::append(transaction, record).await?;
    Ok(Ok(Deleted {
        version: current,
        revision,
    }))
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
                "SELECT e.revision, f.key, f.definition, f.version, f.updated_at \
                 FROM environments e LEFT JOIN flags f ON f.environment = e.name \
                 WHERE e.name = $1 ORDER BY f.key",
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
                    let key: String = row.try_get("key")?;
                    let version: i64 = row.try_get("version")?;
                    let updated_at: String = row.try_get("updated_at")?;
                    flags.push(parse_stored(&key, &definition, version, &updated_at)?);
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
            let row: Option<(String, i64, String)> = sqlx::query_as(
                "SELECT definition, version, updated_at FROM flags \
                 WHERE environment = $1 AND key = $2",
            )
            .bind(env)
            .bind(&key)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|(definition, version, updated_at)| {
                parse_stored(&key, &definition, version, &updated_at)
            })
            .transpose()
        })
        .await
    }

    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
    ) -> Result<Upserted, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided = upsert_in(&mut transaction, env, flag, precondition, &self.actor).await?;
            settle(transaction, decided).await
        })
        .await?
    }

    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
    ) -> Result<Deleted, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided = delete_in(&mut transaction, env, key, precondition, &self.actor).await?;
            settle(transaction, decided).await
        })
        .await?
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT e.name, e.revision, COUNT(f.key) AS flag_count FROM environments e \
                 LEFT JOIN flags f ON f.environment = e.name WHERE e.deleted = 0 \
                 GROUP BY e.name, e.revision ORDER BY e.name",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let name: String = row.try_get("name")?;
                    let name = Environment::parse(&name)
                        .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
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

    async fn delete_environment(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided = delete_environment_in(&mut transaction, env).await?;
            settle(transaction, decided).await
        })
        .await?
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        self.bounded(async {
            let mut connection = self.pool.acquire().await?;
            connection.ping().await
        })
        .await
    }
}
