//! `SqlRepository`: the repository port on the connected pool. Reads are one statement each;
//! every write is one transaction of steps (bump the revision, check the precondition, check the
//! references, write or delete the flag or segment, append the audit row) that commits whole or
//! not at all.
//!
//! References are checked against the environment as the transaction sees it after the revision
//! bump, which locks the environment's row: writers of one environment queue there, so no two
//! writes can each pass the check and together leave a dangling reference. A flag write that
//! refers to nothing skips the check (it cannot break a rule); the others read every flag key of
//! the environment, with the definition only of flags whose text may hold a reference.

use std::future::Future;
use std::time::Duration;

use flag_core::{
    Actor, AuditCursor, AuditKind, AuditPage, AuditQuery, Deleted, Environment,
    EnvironmentSnapshot, EnvironmentSummary, FeatureFlag, FeatureFlagRepository, FlagKey,
    ImportRequest, Imported, OutboxEntry, Precondition, References, RepositoryError, Revision,
    Segment, SegmentKey, Upserted, UpsertedSegment, async_trait, plan_import,
};
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

use crate::audit::{self, Audit};
use crate::columns::{map_error, now_rfc3339, parse_stored, parse_stored_segment, to_i64, to_u64};
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
    /// A builder with the defaults: 10 connections, 5 s timeout.
    pub fn builder(url: impl Into<String>) -> SqlRepositoryBuilder {
        SqlRepositoryBuilder {
            url: url.into(),
            max_connections: 10,
            timeout: DEFAULT_TIMEOUT,
            migration_timeout: DEFAULT_MIGRATION_TIMEOUT,
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
    ) -> Self {
        Self {
            pool,
            backend,
            shown_url,
            timeout,
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

impl SqlRepository {
    /// One stored row of `table`, read with `parse` (`None` when there is no such row).
    async fn stored_row<T>(
        &self,
        table: Table,
        env: &Environment,
        key: &str,
        parse: fn(&str, &str, i64, &str) -> Result<T, sqlx::Error>,
    ) -> Result<Option<T>, RepositoryError> {
        self.bounded(async {
            let row: Option<(String, i64, String)> = sqlx::query_as(table.select())
                .bind(env.to_string())
                .bind(key.to_owned())
                .fetch_optional(&self.pool)
                .await?;
            row.map(|(definition, version, updated_at)| {
                parse(key, &definition, version, &updated_at)
            })
            .transpose()
        })
        .await
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
    let segments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM segments WHERE environment = $1")
        .bind(env.to_string())
        .fetch_one(&mut **transaction)
        .await?;
    if flags > 0 || segments > 0 {
        return Ok(Err(RepositoryError::EnvironmentInUse {
            environment: env.clone(),
            flags: to_u64(flags),
            segments: to_u64(segments),
        }));
    }
    sqlx::query("UPDATE environments SET deleted = 1 WHERE name = $1")
        .bind(env.to_string())
        .execute(&mut **transaction)
        .await?;
    Ok(Ok(Revision(to_u64(revision))))
}

/// The two tables of versioned definitions, with the statements each needs (fixed text: no
/// name from input ever reaches SQL).
#[derive(Debug, Clone, Copy)]
enum Table {
    Flags,
    Segments,
}

impl Table {
    fn kind(self) -> AuditKind {
        match self {
            Table::Flags => AuditKind::Flag,
            Table::Segments => AuditKind::Segment,
        }
    }

    fn version(self) -> &'static str {
        match self {
            Table::Flags => {
                "SELECT version, definition FROM flags WHERE environment = $1 AND key = $2"
            }
            Table::Segments => {
                "SELECT version, definition FROM segments WHERE environment = $1 AND key = $2"
            }
        }
    }

    fn update(self) -> &'static str {
        match self {
            Table::Flags => {
                "UPDATE flags SET definition = $3, version = $4, updated_at = $5 \
                 WHERE environment = $1 AND key = $2"
            }
            Table::Segments => {
                "UPDATE segments SET definition = $3, version = $4, updated_at = $5 \
                 WHERE environment = $1 AND key = $2"
            }
        }
    }

    fn insert(self) -> &'static str {
        match self {
            Table::Flags => {
                "INSERT INTO flags (environment, key, definition, version, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)"
            }
            Table::Segments => {
                "INSERT INTO segments (environment, key, definition, version, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)"
            }
        }
    }

    fn select(self) -> &'static str {
        match self {
            Table::Flags => {
                "SELECT definition, version, updated_at FROM flags \
                 WHERE environment = $1 AND key = $2"
            }
            Table::Segments => {
                "SELECT definition, version, updated_at FROM segments \
                 WHERE environment = $1 AND key = $2"
            }
        }
    }

    fn all(self) -> &'static str {
        match self {
            Table::Flags => {
                "SELECT key, definition, version, updated_at FROM flags WHERE environment = $1 \
                 ORDER BY key"
            }
            Table::Segments => {
                "SELECT key, definition, version, updated_at FROM segments WHERE environment = $1 \
                 ORDER BY key"
            }
        }
    }

    fn delete(self) -> &'static str {
        match self {
            Table::Flags => "DELETE FROM flags WHERE environment = $1 AND key = $2",
            Table::Segments => "DELETE FROM segments WHERE environment = $1 AND key = $2",
        }
    }
}

/// A stored row as a write finds it: its version, and its definition for the audit log.
struct Current {
    version: u64,
    definition: String,
}

/// The stored row of `key` in `table`, `None` when there is no such row.
async fn current_row(
    transaction: &mut Transaction<'_, Any>,
    table: Table,
    env: &Environment,
    key: &str,
) -> Result<Option<Current>, sqlx::Error> {
    let row: Option<(i64, String)> = sqlx::query_as(table.version())
        .bind(env.to_string())
        .bind(key.to_owned())
        .fetch_optional(&mut **transaction)
        .await?;
    Ok(row.map(|(version, definition)| Current {
        version: to_u64(version),
        definition,
    }))
}

/// A row about to be written: what it holds and where it stands.
struct Written<'a, T> {
    table: Table,
    env: &'a Environment,
    key: &'a str,
    /// The definition, its version and `updatedAt` included.
    stored: &'a T,
    version: u64,
    /// The row it replaces, `None` when it creates the row.
    current: Option<Current>,
    /// The environment's revision after the write.
    revision: Revision,
}

/// Writes a flag or a segment over its row (or as a new one) and appends its audit row.
async fn write_row<T: serde::Serialize>(
    transaction: &mut Transaction<'_, Any>,
    row: Written<'_, T>,
    at: &str,
    actor: &Actor,
) -> Result<(), sqlx::Error> {
    let definition =
        serde_json::to_string(row.stored).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    let query = sqlx::query(if row.current.is_some() {
        row.table.update()
    } else {
        row.table.insert()
    });
    query
        .bind(row.env.to_string())
        .bind(row.key.to_owned())
        .bind(definition.clone())
        .bind(to_i64(row.version))
        .bind(at.to_owned())
        .execute(&mut **transaction)
        .await?;
    let (old_version, before) = row
        .current
        .map(|current| (current.version, current.definition))
        .unzip();
    let record = Audit {
        env: row.env,
        kind: row.table.kind(),
        key: row.key,
        old_version,
        new_version: Some(row.version),
        revision: row.revision,
        at,
        actor,
        before,
        after: Some(definition),
    };
    audit::append(transaction, record).await
}

/// The references of `env` as this transaction sees it (see the module docs).
async fn references_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
) -> Result<References, sqlx::Error> {
    let flags: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT key, CASE WHEN definition LIKE '%\"prerequisites\"%' \
                          OR definition LIKE '%_segment\"%' THEN definition END \
         FROM flags WHERE environment = $1",
    )
    .bind(env.to_string())
    .fetch_all(&mut **transaction)
    .await?;
    let segments: Vec<String> =
        sqlx::query_scalar("SELECT key FROM segments WHERE environment = $1")
            .bind(env.to_string())
            .fetch_all(&mut **transaction)
            .await?;
    let mut references = References::new();
    for (key, definition) in flags {
        if let Ok(key) = FlagKey::parse(&key) {
            references.add_stored_flag(key, definition.as_deref());
        }
    }
    for key in segments {
        if let Ok(key) = SegmentKey::parse(&key) {
            references.add_segment(key);
        }
    }
    Ok(references)
}

/// The steps of an upsert inside its transaction.
async fn upsert_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    flag: FeatureFlag,
    precondition: Precondition,
    actor: &Actor,
) -> Result<Decided<Upserted>, sqlx::Error> {
    let revision = bump_revision(transaction, env).await?;
    let current = current_row(transaction, Table::Flags, env, flag.key().as_str()).await?;
    let current_version = current.as_ref().map(|row| row.version);
    if let Err(refused) = precondition.check(env, flag.key(), current_version) {
        return Ok(Err(refused));
    }
    if (!flag.prerequisites().is_empty() || !flag.segments().is_empty())
        && let Err(refused) = references_in(transaction, env)
            .await?
            .check_flag_write(&flag)
    {
        return Ok(Err(refused.into()));
    }
    let (now, at) = now_rfc3339();
    let stored = flag.stored_as(current_version.unwrap_or(0) + 1, now);
    let row = Written {
        table: Table::Flags,
        env,
        key: stored.key().as_str(),
        stored: &stored,
        version: stored.version(),
        current,
        revision,
    };
    write_row(transaction, row, &at, actor).await?;
    Ok(Ok(Upserted {
        created: current_version.is_none(),
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
    actor: &Actor,
) -> Result<Decided<Deleted>, sqlx::Error> {
    let revision = bump_revision(transaction, env).await?;
    let Some(current) = current_row(transaction, Table::Flags, env, key.as_str()).await? else {
        return Ok(Err(RepositoryError::NotFound {
            environment: env.clone(),
            key: key.clone(),
        }));
    };
    if let Err(refused) = precondition.check(env, key, Some(current.version)) {
        return Ok(Err(refused));
    }
    if let Err(refused) = references_in(transaction, env)
        .await?
        .check_flag_delete(key)
    {
        return Ok(Err(refused.into()));
    }
    let version = current.version;
    delete_row(
        transaction,
        Table::Flags,
        env,
        key.as_str(),
        current,
        revision,
        actor,
    )
    .await?;
    Ok(Ok(Deleted { version, revision }))
}

/// Deletes the row of `key` from `table` and appends its audit row.
async fn delete_row(
    transaction: &mut Transaction<'_, Any>,
    table: Table,
    env: &Environment,
    key: &str,
    current: Current,
    revision: Revision,
    actor: &Actor,
) -> Result<(), sqlx::Error> {
    sqlx::query(table.delete())
        .bind(env.to_string())
        .bind(key.to_owned())
        .execute(&mut **transaction)
        .await?;
    let (_, at) = now_rfc3339();
    let record = Audit {
        env,
        kind: table.kind(),
        key,
        old_version: Some(current.version),
        new_version: None,
        revision,
        at: &at,
        actor,
        before: Some(current.definition),
        after: None,
    };
    audit::append(transaction, record).await
}

/// The steps of a segment upsert inside its transaction.
async fn upsert_segment_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    segment: Segment,
    precondition: Precondition,
    actor: &Actor,
) -> Result<Decided<UpsertedSegment>, sqlx::Error> {
    let revision = bump_revision(transaction, env).await?;
    let key = segment.key().clone();
    let current = current_row(transaction, Table::Segments, env, key.as_str()).await?;
    let current_version = current.as_ref().map(|row| row.version);
    if let Err(refused) = precondition.check_segment(env, &key, current_version) {
        return Ok(Err(refused));
    }
    let (now, at) = now_rfc3339();
    let stored = segment.stored_as(current_version.unwrap_or(0) + 1, now);
    let row = Written {
        table: Table::Segments,
        env,
        key: key.as_str(),
        stored: &stored,
        version: stored.version(),
        current,
        revision,
    };
    write_row(transaction, row, &at, actor).await?;
    Ok(Ok(UpsertedSegment {
        created: current_version.is_none(),
        segment: stored,
        revision,
    }))
}

/// The steps of a segment delete inside its transaction.
async fn delete_segment_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    key: &SegmentKey,
    precondition: Precondition,
    actor: &Actor,
) -> Result<Decided<Deleted>, sqlx::Error> {
    let revision = bump_revision(transaction, env).await?;
    let Some(current) = current_row(transaction, Table::Segments, env, key.as_str()).await? else {
        return Ok(Err(RepositoryError::SegmentNotFound {
            environment: env.clone(),
            key: key.clone(),
        }));
    };
    if let Err(refused) = precondition.check_segment(env, key, Some(current.version)) {
        return Ok(Err(refused));
    }
    if let Err(refused) = references_in(transaction, env)
        .await?
        .check_segment_delete(key)
    {
        return Ok(Err(refused.into()));
    }
    let version = current.version;
    delete_row(
        transaction,
        Table::Segments,
        env,
        key.as_str(),
        current,
        revision,
        actor,
    )
    .await?;
    Ok(Ok(Deleted { version, revision }))
}

/// The stored rows of one table of `env` as this transaction sees them, by key.
async fn rows_in(
    transaction: &mut Transaction<'_, Any>,
    table: Table,
    env: &Environment,
) -> Result<Vec<(String, String, i64, String)>, sqlx::Error> {
    sqlx::query_as(table.all())
        .bind(env.to_string())
        .fetch_all(&mut **transaction)
        .await
}

/// The steps of an import inside its transaction: lock the environment, check the revision,
/// plan against the rows as this transaction sees them, then write and delete what the plan
/// says at one revision. Answers the outcome and whether to commit it.
async fn import_in(
    transaction: &mut Transaction<'_, Any>,
    env: &Environment,
    request: &ImportRequest,
    actor: &Actor,
) -> Result<Decided<Imported>, sqlx::Error> {
    // The bump locks the environment's row; it is rolled back unless the import writes.
    let revision = bump_revision(transaction, env).await?;
    let current = Revision(revision.get().saturating_sub(1));
    if let Some(expected) = request.expected_revision
        && expected != current
    {
        return Ok(Err(RepositoryError::RevisionConflict {
            environment: env.clone(),
            expected,
            current,
        }));
    }
    let flag_rows = rows_in(transaction, Table::Flags, env).await?;
    let segment_rows = rows_in(transaction, Table::Segments, env).await?;
    let flags = flag_rows
        .iter()
        .map(|(key, definition, version, at)| parse_stored(key, definition, *version, at))
        .collect::<Result<Vec<_>, _>>()?;
    let segments = segment_rows
        .iter()
        .map(|(key, definition, version, at)| parse_stored_segment(key, definition, *version, at))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = match plan_import(&flags, &segments, request) {
        Ok(plan) => plan,
        Err(problems) => return Ok(Err(RepositoryError::InvalidImport { problems })),
    };
    if request.dry_run || !plan.diff.changes_anything() {
        return Ok(Ok(Imported {
            diff: plan.diff,
            revision: current,
            applied: false,
        }));
    }
    let stored_row = |rows: &[(String, String, i64, String)], key: &str| {
        rows.iter()
            .find(|(stored, ..)| stored == key)
            .map(|(_, definition, version, _)| Current {
                version: to_u64(*version),
                definition: definition.clone(),
            })
    };
    let (now, at) = now_rfc3339();
    for flag in plan.flag_writes {
        let current = stored_row(&flag_rows, flag.key().as_str());
        let stored = flag.stored_as(current.as_ref().map_or(0, |row| row.version) + 1, now);
        let row = Written {
            table: Table::Flags,
            env,
            key: stored.key().as_str(),
            stored: &stored,
            version: stored.version(),
            current,
            revision,
        };
        write_row(transaction, row, &at, actor).await?;
    }
    for segment in plan.segment_writes {
        let current = stored_row(&segment_rows, segment.key().as_str());
        let stored = segment.stored_as(current.as_ref().map_or(0, |row| row.version) + 1, now);
        let row = Written {
            table: Table::Segments,
            env,
            key: stored.key().as_str(),
            stored: &stored,
            version: stored.version(),
            current,
            revision,
        };
        write_row(transaction, row, &at, actor).await?;
    }
    for (table, keys, rows) in [
        (
            Table::Flags,
            plan.flag_deletes
                .iter()
                .map(FlagKey::as_str)
                .collect::<Vec<_>>(),
            &flag_rows,
        ),
        (
            Table::Segments,
            plan.segment_deletes
                .iter()
                .map(SegmentKey::as_str)
                .collect(),
            &segment_rows,
        ),
    ] {
        for key in keys {
            if let Some(current) = stored_row(rows, key) {
                delete_row(transaction, table, env, key, current, revision, actor).await?;
            }
        }
    }
    Ok(Ok(Imported {
        diff: plan.diff,
        revision,
        applied: true,
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
            // One statement: revision, flags and segments from one committed state.
            let rows = sqlx::query(
                "SELECT e.revision, 0 AS kind, f.key, f.definition, f.version, f.updated_at \
                 FROM environments e LEFT JOIN flags f ON f.environment = e.name \
                 WHERE e.name = $1 \
                 UNION ALL \
                 SELECT e.revision, 1 AS kind, s.key, s.definition, s.version, s.updated_at \
                 FROM environments e JOIN segments s ON s.environment = e.name \
                 WHERE e.name = $2 \
                 ORDER BY kind, key",
            )
            .bind(name.clone())
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
            let Some(first) = rows.first() else {
                return Ok(EnvironmentSnapshot::empty(Revision::ZERO));
            };
            let revision = Revision(to_u64(first.try_get("revision")?));
            let mut flags = Vec::with_capacity(rows.len());
            let mut segments = Vec::new();
            for row in &rows {
                if let Some(definition) = row.try_get::<Option<String>, _>("definition")? {
                    let key: String = row.try_get("key")?;
                    let version: i64 = row.try_get("version")?;
                    let updated_at: String = row.try_get("updated_at")?;
                    let kind: i32 = row.try_get("kind")?;
                    if kind == 0 {
                        flags.push(parse_stored(&key, &definition, version, &updated_at)?);
                    } else {
                        segments.push(parse_stored_segment(
                            &key,
                            &definition,
                            version,
                            &updated_at,
                        )?);
                    }
                }
            }
            let decode = |error: String| sqlx::Error::Decode(error.into());
            EnvironmentSnapshot::new(revision, flags)
                .map_err(|error| decode(error.to_string()))?
                .with_segments(segments)
                .map_err(|error| decode(error.to_string()))
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

    async fn flag_count(&self, env: &Environment) -> Result<u64, RepositoryError> {
        let name = env.to_string();
        self.bounded(async {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM flags WHERE environment = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
            Ok(to_u64(count))
        })
        .await
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        self.stored_row(Table::Flags, env, key.as_str(), parse_stored)
            .await
    }

    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Upserted, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided = upsert_in(&mut transaction, env, flag, precondition, actor).await?;
            settle(transaction, decided).await
        })
        .await?
    }

    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided = delete_in(&mut transaction, env, key, precondition, actor).await?;
            settle(transaction, decided).await
        })
        .await?
    }

    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        self.stored_row(Table::Segments, env, key.as_str(), parse_stored_segment)
            .await
    }

    async fn upsert_segment(
        &self,
        env: &Environment,
        segment: Segment,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided =
                upsert_segment_in(&mut transaction, env, segment, precondition, actor).await?;
            settle(transaction, decided).await
        })
        .await?
    }

    async fn delete_segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided =
                delete_segment_in(&mut transaction, env, key, precondition, actor).await?;
            settle(transaction, decided).await
        })
        .await?
    }

    async fn audit(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        self.audit_page(env, query).await
    }

    async fn import(
        &self,
        env: &Environment,
        request: ImportRequest,
        actor: &Actor,
    ) -> Result<Imported, RepositoryError> {
        self.bounded(async {
            let mut transaction = self.pool.begin().await?;
            let decided = import_in(&mut transaction, env, &request, actor).await?;
            match &decided {
                Ok(imported) if imported.applied => transaction.commit().await?,
                _ => transaction.rollback().await?,
            }
            Ok(decided)
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

    async fn outbox_follow(&self, receiver: &str) -> Result<(), RepositoryError> {
        self.follow_outbox(receiver).await
    }

    async fn outbox_pending(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, RepositoryError> {
        self.pending_outbox(receiver, limit).await
    }

    async fn outbox_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: AuditCursor,
    ) -> Result<(), RepositoryError> {
        self.mark_delivered(receiver, env, position).await
    }

    async fn outbox_hold(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        self.hold_outbox(receiver, holder, now_ms, for_ms).await
    }
}
