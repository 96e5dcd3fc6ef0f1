//! The audit log: one row per write of a flag or a segment, appended in the write's own
//! transaction with the definitions before and after, and read back a page at a time, newest
//! first, by the row's id (the cursor).

use flag_core::{
    Actor, AuditAction, AuditCursor, AuditEntry, AuditKind, AuditPage, AuditQuery, Environment,
    OutboxEntry, RepositoryError, Revision,
};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::columns::{to_i64, to_u64};
use crate::repository::SqlRepository;

/// What a write appends to the log.
pub(crate) struct Audit<'a> {
    pub(crate) env: &'a Environment,
    pub(crate) kind: AuditKind,
    pub(crate) key: &'a str,
    pub(crate) old_version: Option<u64>,
    pub(crate) new_version: Option<u64>,
    pub(crate) revision: Revision,
    pub(crate) at: &'a str,
    pub(crate) actor: &'a Actor,
    /// The stored definition the write replaced or deleted, as stored.
    pub(crate) before: Option<String>,
    /// The definition the write stored.
    pub(crate) after: Option<String>,
}

/// Appends `record` inside the write's transaction, so the row commits with the write or not at
/// all.
pub(crate) async fn append(
    transaction: &mut Transaction<'_, Any>,
    record: Audit<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (environment, key, action, old_version, new_version, revision, at, \
         actor, kind, before_definition, after_definition) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(record.env.to_string())
    .bind(record.key.to_owned())
    .bind(AuditAction::of(record.old_version, record.new_version).as_str())
    .bind(record.old_version.map(to_i64))
    .bind(record.new_version.map(to_i64))
    .bind(to_i64(record.revision.get()))
    .bind(record.at.to_owned())
    .bind(record.actor.to_string())
    .bind(record.kind.as_str())
    .bind(record.before)
    .bind(record.after)
    .execute(&mut **transaction)
    .await
    .map(drop)
}

/// A page of one environment, any key.
const PAGE: &str = "SELECT id, key, kind, action, old_version, new_version, revision, at, actor, \
                    before_definition, after_definition FROM audit_log \
                    WHERE environment = $1 AND id < $2 ORDER BY id DESC LIMIT $3";

/// A page of one key of one environment.
const PAGE_OF_KEY: &str = "SELECT id, key, kind, action, old_version, new_version, revision, at, \
                           actor, before_definition, after_definition FROM audit_log \
                           WHERE environment = $1 AND id < $2 AND key = $3 \
                           ORDER BY id DESC LIMIT $4";

impl SqlRepository {
    /// A page of `env`'s log, newest first (the port's `audit`).
    pub(crate) async fn audit_page(
        &self,
        env: &Environment,
        query: &AuditQuery,
    ) -> Result<AuditPage, RepositoryError> {
        let page_size = query.page_size();
        // Positions fit an i64 (the cursor's grammar says so); one beyond the last is "none yet".
        let before = query.before.map_or(i64::MAX, |cursor| to_i64(cursor.0));
        // One statement per shape, fixed text: a key from input is only ever bound.
        let statement = if query.key.is_some() {
            PAGE_OF_KEY
        } else {
            PAGE
        };
        let env = env.to_string();
        let key = query.key.clone();
        let fetch = i64::try_from(page_size + 1).unwrap_or(i64::MAX);
        self.bounded(async {
            let mut statement = sqlx::query(statement).bind(env).bind(before);
            if let Some(key) = key {
                statement = statement.bind(key);
            }
            let rows = statement.bind(fetch).fetch_all(self.pool()).await?;
            let entries = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
            Ok(AuditPage::from_newest_first(entries, page_size))
        })
        .await
    }
}

/// One row as an entry. Rows are read tolerantly, like flags: a word this release does not know
/// reads as the nearest it does, and a definition that is not JSON as none, so one odd row never
/// hides the log.
fn entry(row: &AnyRow) -> Result<AuditEntry, sqlx::Error> {
    let old_version = row.try_get::<Option<i64>, _>("old_version")?.map(to_u64);
    let new_version = row.try_get::<Option<i64>, _>("new_version")?.map(to_u64);
    let action: String = row.try_get("action")?;
    let kind: String = row.try_get("kind")?;
    let definition = |column: &str| -> Result<Option<serde_json::Value>, sqlx::Error> {
        Ok(row
            .try_get::<Option<String>, _>(column)?
            .and_then(|text| serde_json::from_str(&text).ok()))
    };
    Ok(AuditEntry {
        position: AuditCursor(to_u64(row.try_get("id")?)),
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: AuditAction::parse(&action)
            .unwrap_or_else(|| AuditAction::of(old_version, new_version)),
        kind: AuditKind::parse(&kind).unwrap_or(AuditKind::Flag),
        key: row.try_get("key")?,
        old_version,
        new_version,
        revision: Revision(to_u64(row.try_get("revision")?)),
        before: definition("before_definition")?,
        after: definition("after_definition")?,
    })
}

/// Follows a receiver from the last row committed now (rule 15); a known receiver keeps its
/// place. (`WHERE true`: SQLite reads an `ON` right after `FROM` as a join's.)
const FOLLOW: &str = "INSERT INTO webhook_receivers (receiver, since, holder, held_until) \
                      SELECT $1, COALESCE(MAX(id), 0), NULL, 0 FROM audit_log WHERE true \
                      ON CONFLICT (receiver) DO NOTHING";

/// A receiver's pending rows: after its place in their environment (or, in an environment it
/// has no place in yet, after the row it was followed at), oldest first. Audit ids grow in commit
/// order within an environment, whose writers queue on its row lock, so this is commit order
/// there; across environments ids may commit out of order, which per-environment places allow.
const PENDING: &str = "SELECT a.id, a.environment, a.key, a.kind, a.action, a.old_version, \
                       a.new_version, a.revision, a.at, a.actor, a.before_definition, \
                       a.after_definition \
                       FROM audit_log a \
                       JOIN webhook_receivers r ON r.receiver = $1 \
                       LEFT JOIN webhook_cursors c \
                       ON c.receiver = r.receiver AND c.environment = a.environment \
                       WHERE a.id > r.since AND a.id > COALESCE(c.delivered, 0) \
                       ORDER BY a.id LIMIT $2";

/// Moves a receiver's place in an environment forward, never back.
const DELIVERED: &str = "INSERT INTO webhook_cursors (receiver, environment, delivered) \
                         VALUES ($1, $2, $3) \
                         ON CONFLICT (receiver, environment) DO UPDATE \
                         SET delivered = excluded.delivered \
                         WHERE webhook_cursors.delivered < excluded.delivered";

/// Takes or renews the right to deliver: free when unheld, held by the asker, or expired.
const HOLD: &str = "UPDATE webhook_receivers SET holder = $2, held_until = $3 \
                    WHERE receiver = $1 AND (holder IS NULL OR holder = $2 OR held_until < $4)";

impl SqlRepository {
    /// The port's `outbox_follow`.
    pub(crate) async fn follow_outbox(&self, receiver: &str) -> Result<(), RepositoryError> {
        let receiver = receiver.to_owned();
        self.bounded(async {
            sqlx::query(FOLLOW)
                .bind(receiver)
                .execute(self.pool())
                .await
                .map(drop)
        })
        .await
    }

    /// The port's `outbox_pending`.
    pub(crate) async fn pending_outbox(
        &self,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, RepositoryError> {
        let receiver = receiver.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.bounded(async {
            let rows = sqlx::query(PENDING)
                .bind(receiver)
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
            rows.iter()
                .filter_map(|row| {
                    // A row whose environment name this release cannot read is not sent (it
                    // could not be named in the notification).
                    let environment: String = match row.try_get("environment") {
                        Ok(name) => name,
                        Err(error) => return Some(Err(error)),
                    };
                    let environment = Environment::parse(&environment).ok()?;
                    Some(entry(row).map(|entry| OutboxEntry { environment, entry }))
                })
                .collect()
        })
        .await
    }

    /// The port's `outbox_delivered`.
    pub(crate) async fn mark_delivered(
        &self,
        receiver: &str,
        env: &Environment,
        position: AuditCursor,
    ) -> Result<(), RepositoryError> {
        let (receiver, env) = (receiver.to_owned(), env.to_string());
        self.bounded(async {
            sqlx::query(DELIVERED)
                .bind(receiver)
                .bind(env)
                .bind(to_i64(position.0))
                .execute(self.pool())
                .await
                .map(drop)
        })
        .await
    }

    /// The port's `outbox_hold`.
    pub(crate) async fn hold_outbox(
        &self,
        receiver: &str,
        holder: &str,
        now_ms: u64,
        for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        let (receiver, holder) = (receiver.to_owned(), holder.to_owned());
        self.bounded(async {
            let done = sqlx::query(HOLD)
                .bind(receiver)
                .bind(holder)
                .bind(to_i64(now_ms.saturating_add(for_ms)))
                .bind(to_i64(now_ms))
                .execute(self.pool())
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}
