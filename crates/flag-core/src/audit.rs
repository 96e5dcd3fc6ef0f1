//! The audit log as the repository port reads it: who changed what, when, from which definition
//! to which, newest first, a page at a time.
//!
//! Every write appends its entry in its own transaction (rule 13 of
//! [`crate::FeatureFlagRepository`]), so the log never misses a committed write and never shows
//! one that rolled back. Pages are cut by a cursor (the position of the last entry shown), not by
//! an offset: a write that lands while someone pages through does not shift the later pages.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

use crate::snapshot::Revision;

/// The most entries one page may hold.
pub const MAX_AUDIT_PAGE: u16 = 500;
/// The entries a page holds when the reader does not say.
pub const DEFAULT_AUDIT_PAGE: u16 = 50;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuditAction {
    /// The flag or segment did not exist before.
    Create,
    /// It existed and was replaced.
    Update,
    /// It was deleted.
    Delete,
}

impl AuditAction {
    /// The action as stored and shown: `create`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
        }
    }

    /// Reads a stored action; `None` for a word this release does not know.
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "create" => Some(AuditAction::Create),
            "update" => Some(AuditAction::Update),
            "delete" => Some(AuditAction::Delete),
            _ => None,
        }
    }

    /// The action of a write that replaced `old_version` (`None`: there was nothing) and left
    /// `new_version` (`None`: it deleted).
    pub fn of(old_version: Option<u64>, new_version: Option<u64>) -> Self {
        match (old_version, new_version) {
            (_, None) => AuditAction::Delete,
            (None, Some(_)) => AuditAction::Create,
            (Some(_), Some(_)) => AuditAction::Update,
        }
    }
}

/// What a write was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuditKind {
    /// A flag.
    Flag,
    /// A segment.
    Segment,
}

impl AuditKind {
    /// The kind as stored and shown: `flag` or `segment`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Flag => "flag",
            AuditKind::Segment => "segment",
        }
    }

    /// Reads a stored kind; `None` for a word this release does not know.
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "flag" => Some(AuditKind::Flag),
            "segment" => Some(AuditKind::Segment),
            _ => None,
        }
    }
}

/// A position in an environment's audit log: entries strictly older than it come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditCursor(pub u64);

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a string is not a cursor this server gave out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid audit cursor: use the `next` of the previous page")]
pub struct AuditCursorError;

impl FromStr for AuditCursor {
    type Err = AuditCursorError;
    fn from_str(input: &str) -> Result<Self, AuditCursorError> {
        // Digits only (no sign, no spaces) and at most 19 of them: every position fits an i64
        // column, so a cursor can be bound to SQL as it is.
        if input.is_empty() || input.len() > 19 || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuditCursorError);
        }
        input.parse().map(AuditCursor).map_err(|_| AuditCursorError)
    }
}

/// Which entries a reader asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries about this key (a flag or a segment of that name); all when `None`.
    pub key: Option<String>,
    /// At most this many entries, 1 to [`MAX_AUDIT_PAGE`].
    pub limit: u16,
    /// Only entries older than this position (the previous page's `next`).
    pub before: Option<AuditCursor>,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            key: None,
            limit: DEFAULT_AUDIT_PAGE,
            before: None,
        }
    }
}

impl AuditQuery {
    /// The page size as a count, clamped to 1..=[`MAX_AUDIT_PAGE`] so an adapter never reads an
    /// unbounded page whatever the caller built.
    pub fn page_size(&self) -> usize {
        usize::from(self.limit.clamp(1, MAX_AUDIT_PAGE))
    }
}

/// One write as the audit log tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Its position in the environment's log (larger is newer); not shown, the page's `next`
    /// carries it.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub position: AuditCursor,
    /// When the write committed, RFC 3339.
    pub at: String,
    /// The name of the admin token that made it (`flag-server` for writes made before tokens
    /// had names, and by tools).
    pub actor: String,
    /// What it did.
    pub action: AuditAction,
    /// What it was about.
    pub kind: AuditKind,
    /// The flag or segment key.
    pub key: String,
    /// The version before the write (`None` on create).
    pub old_version: Option<u64>,
    /// The version after the write (`None` on delete).
    pub new_version: Option<u64>,
    /// The environment's revision after the write.
    pub revision: Revision,
    /// The definition before the write (`None` on create, and for entries written by a release
    /// that did not keep definitions).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub before: Option<Value>,
    /// The definition after the write (`None` on delete, and for entries written by a release
    /// that did not keep definitions).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub after: Option<Value>,
}

/// One page of an environment's audit log, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditPage {
    /// The entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts, `None` when this page is the last.
    pub next: Option<AuditCursor>,
}

impl AuditPage {
    /// A page from up to `page_size + 1` entries read newest first: the extra one, when there,
    /// only proves that another page exists.
    pub fn from_newest_first(mut entries: Vec<AuditEntry>, page_size: usize) -> Self {
        let more = entries.len() > page_size;
        entries.truncate(page_size);
        let next = more
            .then(|| entries.last().map(|entry| entry.position))
            .flatten();
        Self { entries, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_digits_that_fit_a_column() {
        assert_eq!("0".parse(), Ok(AuditCursor(0)));
        assert_eq!(
            "9223372036854775807".parse(),
            Ok(AuditCursor(i64::MAX as u64))
        );
        for bad in ["", "-1", "+1", " 1", "1a", "99999999999999999999", "1.0"] {
            assert_eq!(bad.parse::<AuditCursor>(), Err(AuditCursorError), "{bad:?}");
        }
    }

    #[test]
    fn actions_follow_the_versions() {
        assert_eq!(AuditAction::of(None, Some(1)), AuditAction::Create);
        assert_eq!(AuditAction::of(Some(1), Some(2)), AuditAction::Update);
        assert_eq!(AuditAction::of(Some(2), None), AuditAction::Delete);
        for action in [
            AuditAction::Create,
            AuditAction::Update,
            AuditAction::Delete,
        ] {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
        }
    }

    #[test]
    fn a_page_says_whether_another_follows() {
        let entry = |position| AuditEntry {
            position: AuditCursor(position),
            at: String::new(),
            actor: "a".into(),
            action: AuditAction::Create,
            kind: AuditKind::Flag,
            key: "k".into(),
            old_version: None,
            new_version: Some(1),
            revision: Revision(position),
            before: None,
            after: None,
        };
        let full = AuditPage::from_newest_first(vec![entry(9), entry(8), entry(7)], 2);
        assert_eq!(full.entries.len(), 2);
        assert_eq!(full.next, Some(AuditCursor(8)));
        let last = AuditPage::from_newest_first(vec![entry(9), entry(8)], 2);
        assert_eq!(last.next, None);
    }
}
