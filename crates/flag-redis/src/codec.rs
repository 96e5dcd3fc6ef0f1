//! How an environment's snapshot is laid out in its Redis hash, both ways: one field per flag
//! holding the flag's JSON, one field `__segment:<key>` per segment holding the segment's JSON
//! (flag keys cannot start with `_`, so no flag can collide with a segment or with `__meta`),
//! and `__meta` holding `{"revision","cachedAtMs","tombstone"}`. Other fields starting with `__`
//! are a newer release's and are ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flag_core::{CacheError, Environment, EnvironmentSnapshot, FeatureFlag, Revision, Segment};
use serde::{Deserialize, Serialize};

/// The reserved hash field holding the entry's revision, fill time and tombstone flag.
pub const META_FIELD: &str = "__meta";

/// The prefix of the hash fields holding segments: `__segment:<key>`.
pub(crate) const SEGMENT_FIELD_PREFIX: &str = "__segment:";

/// The `__meta` field.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    pub(crate) revision: u64,
    pub(crate) cached_at_ms: u64,
    pub(crate) tombstone: bool,
}

/// A snapshot as `set` writes it: its `__meta` text and its field/value pairs.
pub(crate) struct Encoded {
    pub(crate) meta: String,
    pub(crate) pairs: Vec<String>,
}

/// The `__meta` text of a fill of `revision` at `cached_at_ms`.
pub(crate) fn meta_text(revision: u64, cached_at_ms: u64) -> Result<String, CacheError> {
    let meta = Meta {
        revision,
        cached_at_ms,
        tombstone: false,
    };
    serde_json::to_string(&meta).map_err(|error| CacheError::Backend {
        message: error.to_string(),
    })
}

/// `snapshot` as the fields of its hash, filled at `cached_at_ms`.
pub(crate) fn encode(
    snapshot: &EnvironmentSnapshot,
    cached_at_ms: u64,
) -> Result<Encoded, CacheError> {
    let meta = meta_text(snapshot.revision().get(), cached_at_ms)?;
    let mut pairs = Vec::with_capacity(snapshot.len() * 2);
    for flag in snapshot.flags() {
        let json = serde_json::to_string(&**flag).map_err(|error| CacheError::Backend {
            message: format!("encoding flag {}: {error}", flag.key()),
        })?;
        pairs.push(flag.key().to_string());
        pairs.push(json);
    }
    for segment in snapshot.segments() {
        let json = serde_json::to_string(&**segment).map_err(|error| CacheError::Backend {
            message: format!("encoding segment {}: {error}", segment.key()),
        })?;
        pairs.push(format!("{SEGMENT_FIELD_PREFIX}{}", segment.key()));
        pairs.push(json);
    }
    Ok(Encoded { meta, pairs })
}

fn corrupt(env: &Environment, message: impl Into<String>) -> CacheError {
    CacheError::Corrupt {
        environment: env.clone(),
        message: message.into(),
    }
}

/// The `__meta` text of `env`'s hash, read.
pub(crate) fn parse_meta(env: &Environment, raw: &str) -> Result<Meta, CacheError> {
    serde_json::from_str(raw)
        .map_err(|error| corrupt(env, format!("unreadable {META_FIELD}: {error}")))
}

/// The flag stored in `field` of `env`'s hash; the field must be the flag's key.
pub(crate) fn parse_flag(
    env: &Environment,
    field: &str,
    raw: &str,
) -> Result<FeatureFlag, CacheError> {
    let flag: FeatureFlag = serde_json::from_str(raw)
        .map_err(|error| corrupt(env, format!("unreadable flag {field:?}: {error}")))?;
    if flag.key().as_str() != field {
        return Err(corrupt(
            env,
            format!("field {field:?} holds flag {}", flag.key()),
        ));
    }
    Ok(flag)
}

/// The segment stored in the field `__segment:<key>` of `env`'s hash.
fn parse_segment(env: &Environment, key: &str, raw: &str) -> Result<Segment, CacheError> {
    let segment: Segment = serde_json::from_str(raw)
        .map_err(|error| corrupt(env, format!("unreadable segment {key:?}: {error}")))?;
    if segment.key().as_str() != key {
        return Err(corrupt(
            env,
            format!("field for segment {key:?} holds segment {}", segment.key()),
        ));
    }
    Ok(segment)
}

/// The snapshot a whole hash holds, with its `__meta` text; `None` for a miss or a tombstone.
pub(crate) fn decode_hash(
    env: &Environment,
    mut fields: HashMap<String, String>,
) -> Result<Option<(String, Arc<EnvironmentSnapshot>)>, CacheError> {
    let Some(raw_meta) = fields.remove(META_FIELD) else {
        if fields.is_empty() {
            return Ok(None);
        }
        return Err(corrupt(env, format!("hash has flags but no {META_FIELD}")));
    };
    let meta = parse_meta(env, &raw_meta)?;
    if meta.tombstone {
        return Ok(None);
    }
    let mut flags = Vec::with_capacity(fields.len());
    let mut segments = Vec::new();
    for (field, raw) in &fields {
        if let Some(key) = field.strip_prefix(SEGMENT_FIELD_PREFIX) {
            segments.push(parse_segment(env, key, raw)?);
        } else if !field.starts_with("__") {
            flags.push(Arc::new(parse_flag(env, field, raw)?));
        }
    }
    let snapshot = EnvironmentSnapshot::from_shared(Revision(meta.revision), flags)
        .map_err(|error| corrupt(env, error.to_string()))?
        .with_segments(segments)
        .map_err(|error| corrupt(env, error.to_string()))?;
    Ok(Some((raw_meta, Arc::new(snapshot))))
}

/// The fields of a flattened `HGETALL` answer (`[field, value, field, value, ...]`).
pub(crate) fn pairs_to_fields(flat: Vec<String>) -> HashMap<String, String> {
    let mut fields = HashMap::with_capacity(flat.len() / 2);
    let mut pairs = flat.into_iter();
    while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
        fields.insert(field, value);
    }
    fields
}

/// A `PTTL` answer as a remaining time: `None` for -2 (just expired) and -1 (no TTL, which our
/// writes never leave).
pub(crate) fn remaining_time(pttl: i64) -> Option<Duration> {
    u64::try_from(pttl).ok().map(Duration::from_millis)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Milliseconds for `PEXPIRE`, rounding a sub-millisecond remainder up (never 0, which deletes).
pub(crate) fn whole_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_millisecond_ttls_round_up() {
        assert_eq!(whole_ms(Duration::from_micros(1)), 1);
        assert_eq!(whole_ms(Duration::from_micros(1_500)), 2);
        assert_eq!(whole_ms(Duration::from_millis(15)), 15);
    }

    #[test]
    fn pttl_answers_become_remaining_times() {
        assert_eq!(remaining_time(250), Some(Duration::from_millis(250)));
        assert_eq!(remaining_time(-1), None);
        assert_eq!(remaining_time(-2), None);
    }
}
