//! Segments: named, reusable audiences of one environment ("beta testers"), which flag
//! conditions refer to with `in_segment` / `not_in_segment`.
//!
//! A context is in a segment when its `targetingKey` is in `included`, or when it is not in
//! `excluded` and all conditions of at least one rule match. A segment's rules hold conditions
//! only, and cannot refer to segments.
//!
//! Decisions the design contract leaves open, made here:
//! - `included` and `excluded` are sets of non-empty strings: duplicates are dropped and they are
//!   served sorted, so a segment of 10,000 keys answers in logarithmic time.
//! - A key in both lists is included (inclusion is tested first, as the contract reads).
//! - A segment with no rules and no `included` key matches nobody.
//! - Server-set fields (`version`, `updatedAt`) and tolerant reads work as they do for flags; a
//!   stored segment that cannot be read at all matches nobody (for `in_segment` and
//!   `not_in_segment` alike, as a condition on a wrong type does) and is listed with an `error`.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::flag::{
    Condition, ConditionDocument, Segments, ValidationError, ValidationReason, check_definition,
    keep, keep_conditions, server_fields,
};
use crate::names::SegmentKey;

/// A validated segment, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "Value")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Segment {
    /// The segment's key.
    key: SegmentKey,
    /// Free text for people.
    description: String,
    /// Targeting keys always in the segment.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    included: KeySet,
    /// Targeting keys never in the segment (unless also included).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    excluded: KeySet,
    /// Rules: a context matching all conditions of one of them is in the segment.
    rules: Vec<SegmentRule>,
    /// Server-set: 1 on creation, one more on each replacement.
    version: u64,
    /// Server-set: when the segment was last written (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    updated_at: OffsetDateTime,
    /// Server-set, only on a stored segment that could not be read: why. It matches nobody.
    #[serde(rename = "error", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    unreadable: Option<Arc<str>>,
}

/// A segment rule: all of its conditions must match.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SegmentRule {
    /// All must match; never a segment operator.
    conditions: Vec<Condition>,
}

impl SegmentRule {
    /// The conditions, all of which must match.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Segment {
    /// Parses a PUT body for the segment at `path_key`; server-set fields in it are ignored.
    ///
    /// The result has version 0 ("never stored"); the repository gives it its real version.
    pub fn from_definition(
        path_key: &SegmentKey,
        document: SegmentDocument,
    ) -> Result<Self, ValidationError> {
        check_definition(
            path_key.as_str(),
            document.key.as_deref(),
            document.error.is_some(),
        )?;
        document.validate(path_key.clone(), 0, OffsetDateTime::UNIX_EPOCH)
    }

    /// Parses a PUT body given as JSON text; see [`Segment::from_definition`].
    pub fn from_definition_json(
        path_key: &SegmentKey,
        json: &str,
    ) -> Result<Self, ValidationError> {
        let document: SegmentDocument = serde_json::from_str(json).map_err(|error| {
            ValidationError::new("$", ValidationReason::Malformed(error.to_string()))
        })?;
        Self::from_definition(path_key, document)
    }

    /// The stand-in for a stored segment that could not be read, saying `why`; it matches
    /// nobody.
    pub fn unreadable(
        key: SegmentKey,
        version: u64,
        updated_at: OffsetDateTime,
        why: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            key,
            description: String::new(),
            included: KeySet::default(),
            excluded: KeySet::default(),
            rules: Vec::new(),
            version,
            updated_at,
            unreadable: Some(why.into()),
        }
    }

    /// The same segment with the version and timestamp a repository assigned when storing it.
    #[must_use]
    pub fn stored_as(mut self, version: u64, updated_at: OffsetDateTime) -> Self {
        self.version = version;
        self.updated_at = updated_at;
        self
    }

    /// The segment's key.
    pub fn key(&self) -> &SegmentKey {
        &self.key
    }

    /// Free text for people.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Targeting keys always in the segment.
    pub fn included(&self) -> &KeySet {
        &self.included
    }

    /// Targeting keys never in the segment unless also included.
    pub fn excluded(&self) -> &KeySet {
        &self.excluded
    }

    /// The rules, any one of which puts a context in the segment.
    pub fn rules(&self) -> &[SegmentRule] {
        &self.rules
    }

    /// Server-set: starts at 1 and grows by 1 on every write of this segment.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Server-set: when the segment was last written.
    pub fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }

    /// Why the stored segment could not be read, for a stand-in made by [`Segment::unreadable`].
    pub fn unreadable_reason(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }
}

/// The loose JSON shape of a segment, before validation: what a PUT body or a stored row holds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        as = SegmentDefinition,
        description = "A segment as a client writes it: every field optional; `key`, \
                       `version` and `updatedAt` are the server's."
    )
)]
pub struct SegmentDocument {
    /// Must equal the path key when present.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub key: Option<String>,
    /// Defaults to `""`.
    pub description: Option<String>,
    /// Targeting keys always in the segment; defaults to none.
    pub included: Option<Vec<String>>,
    /// Targeting keys never in the segment unless included; defaults to none.
    pub excluded: Option<Vec<String>>,
    /// Rules of conditions (no segment operators); defaults to none.
    pub rules: Option<Vec<SegmentRuleDocument>>,
    /// Server-set; ignored in a definition.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, read_only))]
    pub version: Option<Value>,
    /// Server-set; ignored in a definition.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, format = DateTime, read_only)
    )]
    pub updated_at: Option<Value>,
    /// Server-set: why a stored segment could not be read; refused in a definition.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub error: Option<String>,
}

/// The loose JSON shape of a segment rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(as = SegmentRuleDefinition, description = "Conditions that must all match.")
)]
pub struct SegmentRuleDocument {
    /// Defaults to no conditions (the rule matches everyone).
    pub conditions: Option<Vec<ConditionDocument>>,
}

impl SegmentDocument {
    fn validate(
        self,
        key: SegmentKey,
        version: u64,
        updated_at: OffsetDateTime,
    ) -> Result<Segment, ValidationError> {
        let included = key_set("included", self.included.unwrap_or_default())?;
        let excluded = key_set("excluded", self.excluded.unwrap_or_default())?;
        let rules = self
            .rules
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, rule)| {
                let conditions = rule
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(position, condition)| {
                        condition.validate(
                            &format!("rules[{index}].conditions[{position}]"),
                            Segments::Refused,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(SegmentRule { conditions })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        Ok(Segment {
            key,
            description: self.description.unwrap_or_default(),
            included,
            excluded,
            rules,
            version,
            updated_at,
            unreadable: None,
        })
    }
}

fn key_set(field: &str, keys: Vec<String>) -> Result<KeySet, ValidationError> {
    if let Some(position) = keys.iter().position(String::is_empty) {
        return Err(ValidationError::new(
            format!("{field}[{position}]"),
            ValidationReason::Malformed("targeting keys must not be empty".to_owned()),
        ));
    }
    Ok(KeySet::new(keys.into_iter().collect()))
}

/// A segment's targeting keys, in order, with a sorted index of their 64-bit fingerprints: a
/// lookup hashes the key once and searches integers, and compares strings only when a
/// fingerprint matches (a key in the set, or a rare collision). Every evaluation of a flag on a
/// segment asks, and most users are in no list, so the absent key is the case made cheap.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: BTreeSet<String>,
    fingerprints: Box<[u64]>,
}

impl KeySet {
    fn new(keys: BTreeSet<String>) -> Self {
        let mut fingerprints: Vec<u64> = keys.iter().map(|key| fingerprint(key)).collect();
        fingerprints.sort_unstable();
        Self {
            keys,
            fingerprints: fingerprints.into_boxed_slice(),
        }
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &str) -> bool {
        !self.fingerprints.is_empty()
            && self.fingerprints.binary_search(&fingerprint(key)).is_ok()
            && self.keys.contains(key)
    }

    /// The keys, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &String> {
        self.keys.iter()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys
    }
}

/// Written as the sorted list of keys.
impl Serialize for KeySet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.keys.serialize(serializer)
    }
}

/// FNV-1a over the key's bytes: cheap for short keys, and only ever a prefilter (a match is
/// confirmed against the key itself), so a collision, even one a client chose, costs a string
/// comparison, never a wrong answer.
fn fingerprint(key: &str) -> u64 {
    crate::fnv::hash(key.as_bytes())
}

const SEGMENT_FIELDS: &[&str] = &[
    "key",
    "description",
    "included",
    "excluded",
    "rules",
    "version",
    "updatedAt",
    "error",
];
const SEGMENT_RULE_FIELDS: &[&str] = &["conditions"];

/// A stored segment, read tolerantly: fields this release does not know are ignored.
impl TryFrom<Value> for Segment {
    type Error = ValidationError;

    fn try_from(mut stored: Value) -> Result<Self, ValidationError> {
        keep(&mut stored, SEGMENT_FIELDS);
        if let Some(Value::Array(rules)) = stored.get_mut("rules") {
            for rule in rules {
                keep(rule, SEGMENT_RULE_FIELDS);
                keep_conditions(rule.get_mut("conditions"));
            }
        }
        let mut document: SegmentDocument = serde_json::from_value(stored).map_err(|error| {
            ValidationError::new("$", ValidationReason::Malformed(error.to_string()))
        })?;
        let (key, version, updated_at) = server_fields(
            document.key.take(),
            document.version.take(),
            document.updated_at.take(),
            SegmentKey::parse,
        )?;
        if let Some(why) = document.error.take() {
            return Ok(Segment::unreadable(key, version, updated_at, why));
        }
        document.validate(key, version, updated_at)
    }
}

#[cfg(test)]
mod tests {
    use super::KeySet;

    #[test]
    fn key_sets_find_their_keys_and_only_them() {
        let keys: Vec<String> = (0..10_000).map(|n| format!("customer-{n}")).collect();
        let set = KeySet::new(keys.iter().cloned().collect());
        assert_eq!(set.len(), 10_000);
        assert!(keys.iter().all(|key| set.contains(key)));
        for absent in ["customer-10000", "customer-", "", "user-7", "Customer-1"] {
            assert!(!set.contains(absent), "{absent}");
        }
        let empty = KeySet::default();
        assert!(empty.is_empty() && !empty.contains("customer-1"));
        let listed: Vec<&String> = set.iter().take(3).collect();
        assert_eq!(listed, ["customer-0", "customer-1", "customer-10"]);
    }
}
