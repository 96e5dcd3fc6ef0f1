//! The audit log: one row per write of a flag or a segment, appended in the write's own
//! transaction, and read back per flag or segment.

use flag_core::{Environment, FlagKey, RepositoryError, Revision, SegmentKey};
use sqlx::{Any, Row, Transaction};

use crate::columns::{to_i64, to_u64};
use crate::repository::SqlRepository;

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

/// What a write appends to the log.
pub(crate) struct Audit<'a> {
    pub(crate) env: &'a Environment,
    /// `flag` or `segment`.
    pub(crate) kind: &'static str,
    pub(crate) key: &'a str,
    pub(crate) action: &'static str,
    pub(crate) old_version: Option<u64>,
    pub(crate) new_version: Option<u64>,
    pub(crate) revision: Revision,
    pub(crate) at: &'a str,
    pub(crate) actor: &'a str,
}

/// Appends `record` inside the write's transaction, so the row commits with the write or not at
/// all.
pub(crate) async fn append(
    transaction: &mut Transaction<'_, Any>,
    record: Audit<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (environment, key, action, old_version, new_version, revision, at, actor, kind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(record.env.to_string())
    .bind(record.key.to_owned())
    .bind(record.action)
    .bind(record.old_version.map(to_i64))
    .bind(record.new_version.map(to_i64))
    .bind(to_i64(record.revision.get()))
    .bind(record.at.to_owned())
    .bind(record.actor.to_owned())
    .bind(record.kind)
    .execute(&mut **transaction)
    .await
    .map(drop)
}

impl SqlRepository {
    /// The audit log of one flag, oldest first.
    pub async fn audit_log(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        self.audit_rows(env, "flag", key.as_str()).await
    }

    /// The audit log of one segment, oldest first.
    pub async fn segment_audit_log(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        self.audit_rows(env, "segment", key.as_str()).await
    }

    async fn audit_rows(
        &self,
        env: &Environment,
        kind: &'static str,
        key: &str,
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        let (env, key) = (env.to_string(), key.to_owned());
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT action, old_version, new_version, revision, at, actor FROM audit_log \
                 WHERE environment = $1 AND kind = $2 AND key = $3 ORDER BY id",
            )
            .bind(env)
            .bind(kind)
            .bind(key)
            .fetch_all(self.pool())
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
}
