//! Sample flags and snapshots the properties store and compare.

use flag_core::{EnvironmentSnapshot, FeatureFlag, FlagKey, Revision, Segment, SegmentKey};
use serde_json::{Value, json};

/// A stored, enabled flag whose `on` variant holds `value`.
///
/// # Panics
/// If `key` is not a valid flag key (the suite only passes valid ones).
pub fn flag_with_value(key: &str, value: Value) -> FeatureFlag {
    let key = FlagKey::parse(key).unwrap_or_else(|error| panic!("sample key {key:?}: {error}"));
    let body = json!({"enabled": true, "variants": {"on": value, "off": false}});
    FeatureFlag::from_definition_json(&key, &body.to_string())
        .unwrap_or_else(|error| panic!("sample flag {key}: {error}"))
        .stored_as(1, flag_core::time::OffsetDateTime::UNIX_EPOCH)
}

/// A stored segment including exactly `included`.
///
/// # Panics
/// If `key` is not a valid segment key (the suite only passes valid ones).
pub(crate) fn segment_including(key: &str, included: &[String]) -> Segment {
    let key =
        SegmentKey::parse(key).unwrap_or_else(|error| panic!("sample segment {key:?}: {error}"));
    let body = json!({"included": included,
                      "rules": [{"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}]}]});
    Segment::from_definition_json(&key, &body.to_string())
        .unwrap_or_else(|error| panic!("sample segment {key}: {error}"))
        .stored_as(1, flag_core::time::OffsetDateTime::UNIX_EPOCH)
}

/// A snapshot of `flags` flags (`flag-00000`, ...) whose values all carry `generation`, so a
/// reader can tell whether a snapshot it got is whole (one generation) or mixed; with flags, it
/// also holds a segment named like the first flag (a segment and a flag of one key must not
/// collide), which carries the generation too.
pub fn generation_snapshot(revision: u64, flags: usize, generation: u64) -> EnvironmentSnapshot {
    let segments =
        (flags > 0).then(|| segment_including("flag-00000", &[format!("generation-{generation}")]));
    let flags = (0..flags).map(|index| {
        flag_with_value(
            &format!("flag-{index:05}"),
            json!({"generation": generation, "index": index}),
        )
    });
    EnvironmentSnapshot::new(Revision(revision), flags)
        .unwrap_or_else(|error| panic!("sample snapshot: {error}"))
        .with_segments(segments)
        .unwrap_or_else(|error| panic!("sample snapshot: {error}"))
}

/// The generation every flag of `snapshot` carries, or `Err` listing the mix.
pub(crate) fn generation_of(snapshot: &EnvironmentSnapshot) -> Result<Option<u64>, Vec<u64>> {
    let mut generations: Vec<u64> = snapshot
        .flags()
        .filter_map(|flag| flag.variant("on")?.1.get("generation")?.as_u64())
        .chain(snapshot.segments().flat_map(|segment| {
            segment
                .included()
                .iter()
                .filter_map(|key| key.strip_prefix("generation-")?.parse().ok())
        }))
        .collect();
    generations.sort_unstable();
    generations.dedup();
    match generations.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(generations),
    }
}
