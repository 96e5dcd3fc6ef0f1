//! The audit log: one row per write of a flag or a segment, appended in the write's own
//! transaction with the definitions before and after, and read back a page at a time, newest
//! first, by the row's id (the cursor).

use flag_core::{
    Actor, AuditAction, AuditCursor, AuditEntry, AuditKind, AuditPage, AuditQuery, Environment,
    RepositoryError, Revision,
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
