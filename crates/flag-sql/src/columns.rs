//! How values cross the SQL boundary: integers (SQL's are signed), stored definitions, times, and
//! driver errors told as the repository port's.

use std::time::Duration;

use flag_core::time::OffsetDateTime;
use flag_core::time::format_description::well_known::Rfc3339;
use flag_core::{FeatureFlag, FlagKey, NameError, RepositoryError, Segment, SegmentKey};
use serde::de::DeserializeOwned;

/// A version or revision as a column; saturates at `i64::MAX` (no write ever gets there).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A version or revision column as a number; a negative one (never written) reads as 0.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A stored flag row, read back as the flag it is; a definition that cannot be read becomes
/// the flag's unreadable stand-in (so the rest of its environment stays readable), and only a
/// row whose key itself is unusable is an error.
pub(crate) fn parse_stored(
    key: &str,
    definition: &str,
    version: i64,
    updated_at: &str,
) -> Result<FeatureFlag, sqlx::Error> {
    parse_row(
        key,
        definition,
        version,
        updated_at,
        FlagKey::parse,
        FeatureFlag::unreadable,
    )
}

/// A stored segment row, read as [`parse_stored`] reads a flag row.
pub(crate) fn parse_stored_segment(
    key: &str,
    definition: &str,
    version: i64,
    updated_at: &str,
) -> Result<Segment, sqlx::Error> {
    parse_row(
        key,
        definition,
        version,
        updated_at,
        SegmentKey::parse,
        Segment::unreadable,
    )
}

fn parse_row<T: DeserializeOwned, K>(
    key: &str,
    definition: &str,
    version: i64,
    updated_at: &str,
    parse_key: fn(&str) -> Result<K, NameError>,
    unreadable: fn(K, u64, OffsetDateTime, String) -> T,
) -> Result<T, sqlx::Error> {
    match serde_json::from_str::<T>(definition) {
        Ok(value) => Ok(value),
        Err(error) => {
            let key = parse_key(key).map_err(|refused| sqlx::Error::Decode(Box::new(refused)))?;
            let updated_at =
                OffsetDateTime::parse(updated_at, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            Ok(unreadable(
                key,
                to_u64(version),
                updated_at,
                error.to_string(),
            ))
        }
    }
}

/// Now, and now as RFC 3339 text for the `updated_at` and `at` columns.
pub(crate) fn now_rfc3339() -> (OffsetDateTime, String) {
    let now = OffsetDateTime::now_utc();
    let shown = now
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
    (now, shown)
}

/// A driver error as the repository port tells it.
pub(crate) fn map_error(error: &sqlx::Error, timeout: Duration) -> RepositoryError {
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
