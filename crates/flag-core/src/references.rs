//! The references between an environment's flags and segments, and the rules writes keep:
//! a flag refers only to segments and prerequisite flags that exist, its prerequisites form no
//! cycle and no chain longer than [`MAX_PREREQUISITE_DEPTH`] links, and nothing that is
//! referred to can be deleted.
//!
//! Repositories check these inside the write's transaction, against the environment as that
//! transaction sees it (writers of one environment are serialized by its revision bump), so
//! two racing writes cannot leave a dangling reference between them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::evaluation::MAX_PREREQUISITE_DEPTH;
use crate::flag::FeatureFlag;
use crate::names::{FlagKey, SegmentKey};
use crate::snapshot::EnvironmentSnapshot;

/// A write that would break a reference rule; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// A condition refers to a segment the environment does not have.
    #[error("{field}: segment {segment} does not exist in this environment")]
    MissingSegment {
        /// The field of the written flag (`rules[0].conditions[1].value`).
        field: String,
        /// The segment named.
        segment: SegmentKey,
    },
    /// A prerequisite names a flag the environment does not have.
    #[error("{field}: flag {flag} does not exist in this environment")]
    MissingPrerequisite {
        /// The field of the written flag (`prerequisites[0].flag`).
        field: String,
        /// The flag named.
        flag: FlagKey,
    },
    /// The prerequisites would form a cycle.
    #[error("prerequisites: the write would make a cycle: {}", show(.cycle))]
    Cycle {
        /// The flags of the cycle, the written one first and last.
        cycle: Vec<FlagKey>,
    },
    /// The prerequisites would form a chain longer than the limit.
    #[error(
        "prerequisites: the write would make a chain of {links} prerequisite links through flag {key}; at most {MAX_PREREQUISITE_DEPTH} are allowed"
    )]
    TooDeep {
        /// The written flag.
        key: FlagKey,
        /// The length of the longest chain through it.
        links: usize,
    },
    /// Other flags list the flag as a prerequisite.
    #[error("flag {key} is a prerequisite of {}; change them first", show(.by))]
    FlagInUse {
        /// The flag being deleted.
        key: FlagKey,
        /// The flags that list it.
        by: Vec<FlagKey>,
    },
    /// Flags refer to the segment.
    #[error("segment {key} is used by {}; change them first", show(.by))]
    SegmentInUse {
        /// The segment being deleted.
        key: SegmentKey,
        /// The flags that refer to it.
        by: Vec<FlagKey>,
    },
}

impl ReferenceError {
    /// Whether the refusal is about deleting something still referred to (`409 in_use`), as
    /// opposed to a definition referring to what is not there (`400`).
    pub fn is_in_use(&self) -> bool {
        matches!(
            self,
            ReferenceError::FlagInUse { .. } | ReferenceError::SegmentInUse { .. }
        )
    }

    /// The field of the written definition the refusal is about (`rules[0].conditions[1].value`,
    /// `prerequisites`), `None` for a delete.
    pub fn field(&self) -> Option<&str> {
        match self {
            ReferenceError::MissingSegment { field, .. }
            | ReferenceError::MissingPrerequisite { field, .. } => Some(field),
            ReferenceError::Cycle { .. } | ReferenceError::TooDeep { .. } => Some("prerequisites"),
            ReferenceError::FlagInUse { .. } | ReferenceError::SegmentInUse { .. } => None,
        }
    }
}

fn show<T: std::fmt::Display>(keys: &[T]) -> String {
    let shown: Vec<String> = keys.iter().take(10).map(ToString::to_string).collect();
    let more = keys.len().saturating_sub(10);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// What one flag refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Links {
    prerequisites: Vec<FlagKey>,
    segments: Vec<SegmentKey>,
}

/// The flags and segments of one environment and what each flag refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    flags: BTreeMap<FlagKey, Links>,
    segments: BTreeSet<SegmentKey>,
}

/// The parts of a stored flag that hold references, read leniently (anything else ignored).
#[derive(Deserialize)]
struct StoredLinks {
    #[serde(default)]
    prerequisites: Vec<StoredPrerequisite>,
    #[serde(default)]
    rules: Vec<StoredRule>,
}

#[derive(Deserialize)]
struct StoredPrerequisite {
    flag: String,
}

#[derive(Deserialize)]
struct StoredRule {
    #[serde(default)]
    conditions: Vec<StoredCondition>,
}

#[derive(Deserialize)]
struct StoredCondition {
    #[serde(default)]
    operator: String,
    #[serde(default)]
    value: serde_json::Value,
}

impl References {
    /// No flags and no segments.
    pub fn new() -> Self {
        Self::default()
    }

    /// The references of every flag and segment of `snapshot`.
    pub fn of_snapshot(snapshot: &EnvironmentSnapshot) -> Self {
        let mut references = Self::new();
        snapshot.flags().for_each(|flag| references.add_flag(flag));
        snapshot
            .segments()
            .for_each(|segment| references.add_segment(segment.key().clone()));
        references
    }

    /// Records `flag` and what it refers to.
    pub fn add_flag(&mut self, flag: &FeatureFlag) {
        self.flags.insert(flag.key().clone(), links_of(flag));
    }

    /// Records the stored flag `key` from its stored JSON (`None` when the store knows it
    /// refers to nothing); an unreadable definition counts as referring to nothing.
    pub fn add_stored_flag(&mut self, key: FlagKey, definition: Option<&str>) {
        let links = definition
            .and_then(|json| serde_json::from_str::<StoredLinks>(json).ok())
            .map(|stored| Links {
                prerequisites: stored
                    .prerequisites
                    .iter()
                    .filter_map(|prerequisite| FlagKey::parse(&prerequisite.flag).ok())
                    .collect(),
                segments: stored
                    .rules
                    .iter()
                    .flat_map(|rule| &rule.conditions)
                    .filter(|condition| {
                        matches!(condition.operator.as_str(), "in_segment" | "not_in_segment")
                    })
                    .filter_map(|condition| condition.value.as_str())
                    .filter_map(|key| SegmentKey::parse(key).ok())
                    .fold(Vec::new(), |mut keys, key| {
                        if !keys.contains(&key) {
                            keys.push(key);
                        }
                        keys
                    }),
            })
            .unwrap_or_default();
        self.flags.insert(key, links);
    }

    /// Records that the segment `key` exists.
    pub fn add_segment(&mut self, key: SegmentKey) {
        self.segments.insert(key);
    }

    /// Whether a stored definition may hold references, by a cheap look at its text (for
    /// stores that want to skip parsing the rest).
    pub fn may_refer(definition: &str) -> bool {
        definition.contains("\"prerequisites\"") || definition.contains("_segment\"")
    }

    /// Whether writing `flag` (created or replaced) keeps every rule.
    pub fn check_flag_write(&self, flag: &FeatureFlag) -> Result<(), ReferenceError> {
        for (index, rule) in flag.rules().iter().enumerate() {
            for (position, condition) in rule.conditions().iter().enumerate() {
                if let Some(segment) = condition.segment()
                    && !self.segments.contains(segment)
                {
                    return Err(ReferenceError::MissingSegment {
                        field: format!("rules[{index}].conditions[{position}].value"),
                        segment: segment.clone(),
                    });
                }
            }
        }
        for (index, prerequisite) in flag.prerequisites().iter().enumerate() {
            if !self.flags.contains_key(prerequisite.flag()) {
                return Err(ReferenceError::MissingPrerequisite {
                    field: format!("prerequisites[{index}].flag"),
                    flag: prerequisite.flag().clone(),
                });
            }
        }
        let key = flag.key();
        let own: Vec<&FlagKey> = flag
            .prerequisites()
            .iter()
            .map(|prerequisite| prerequisite.flag())
            .collect();
        let mut path = vec![key.clone()];
        let down = self.longest_down(key, &own, &mut path)?;
        let up = self.longest_up(key, &mut BTreeSet::new());
        let links = down + up;
        if links > MAX_PREREQUISITE_DEPTH {
            return Err(ReferenceError::TooDeep {
                key: key.clone(),
                links,
            });
        }
        Ok(())
    }

    /// Whether deleting the flag `key` keeps every rule.
    pub fn check_flag_delete(&self, key: &FlagKey) -> Result<(), ReferenceError> {
        let by: Vec<FlagKey> = self
            .flags
            .iter()
            .filter(|(other, links)| *other != key && links.prerequisites.contains(key))
            .map(|(other, _)| other.clone())
            .collect();
        if by.is_empty() {
            return Ok(());
        }
        Err(ReferenceError::FlagInUse {
            key: key.clone(),
            by,
        })
    }

    /// Whether deleting the segment `key` keeps every rule.
    pub fn check_segment_delete(&self, key: &SegmentKey) -> Result<(), ReferenceError> {
        let by: Vec<FlagKey> = self
            .flags
            .iter()
            .filter(|(_, links)| links.segments.contains(key))
            .map(|(flag, _)| flag.clone())
            .collect();
        if by.is_empty() {
            return Ok(());
        }
        Err(ReferenceError::SegmentInUse {
            key: key.clone(),
            by,
        })
    }

    /// The longest chain of links below `written` once it lists `next`; a path back to
    /// `written` is a cycle. `path` holds the chain walked so far.
    fn longest_down(
        &self,
        written: &FlagKey,
        next: &[&FlagKey],
        path: &mut Vec<FlagKey>,
    ) -> Result<usize, ReferenceError> {
        let mut longest = 0;
        for &child in next {
            if child == written {
                let mut cycle = path.clone();
                cycle.push(written.clone());
                return Err(ReferenceError::Cycle { cycle });
            }
            // Stored data that already breaks the rules (an older release's writes) must not
            // make this walk endless: a chain past the limit is refused anyway.
            if path.len() > MAX_PREREQUISITE_DEPTH + 1 || path.contains(child) {
                longest = longest.max(MAX_PREREQUISITE_DEPTH + 1);
                continue;
            }
            let grandchildren: Vec<&FlagKey> = self
                .flags
                .get(child)
                .map(|links| links.prerequisites.iter().collect())
                .unwrap_or_default();
            path.push(child.clone());
            let below = self.longest_down(written, &grandchildren, path)?;
            path.pop();
            longest = longest.max(below + 1);
        }
        Ok(longest)
    }

    /// The longest chain of flags that list `key`, directly or through others.
    fn longest_up(&self, key: &FlagKey, seen: &mut BTreeSet<FlagKey>) -> usize {
        if seen.len() > MAX_PREREQUISITE_DEPTH + 1 || !seen.insert(key.clone()) {
            return MAX_PREREQUISITE_DEPTH + 1;
        }
        let longest = self
            .flags
            .iter()
            .filter(|(parent, links)| *parent != key && links.prerequisites.contains(key))
            .map(|(parent, _)| self.longest_up(parent, seen) + 1)
            .max()
            .unwrap_or(0);
        seen.remove(key);
        longest
    }
}

fn links_of(flag: &FeatureFlag) -> Links {
    Links {
        prerequisites: flag
            .prerequisites()
            .iter()
            .map(|prerequisite| prerequisite.flag().clone())
            .collect(),
        segments: flag.segments().into_iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(key: &str, prerequisites: &[&str], segments: &[&str]) -> FeatureFlag {
        let prerequisites: Vec<_> = prerequisites
            .iter()
            .map(|flag| serde_json::json!({"flag": flag, "variants": ["on"]}))
            .collect();
        let conditions: Vec<_> = segments
            .iter()
            .map(|segment| serde_json::json!({"operator": "in_segment", "value": segment}))
            .collect();
        let body = serde_json::json!({
            "prerequisites": prerequisites,
            "rules": [{"conditions": conditions, "variant": "on"}],
        });
        FeatureFlag::from_definition_json(&FlagKey::parse(key).unwrap(), &body.to_string()).unwrap()
    }

    fn chain(length: usize) -> References {
        // f0 <- f1 <- ... : f(i) lists f(i-1).
        let mut references = References::new();
        references.add_flag(&flag("f0", &[], &[]));
        for index in 1..=length {
            references.add_flag(&flag(
                &format!("f{index}"),
                &[&format!("f{}", index - 1)],
                &[],
            ));
        }
        references
    }

    #[test]
    fn missing_references_name_their_field() {
        let references = chain(0);
        assert!(matches!(
            references.check_flag_write(&flag("x", &[], &["beta"])),
            Err(ReferenceError::MissingSegment { field, .. }) if field == "rules[0].conditions[0].value"
        ));
        assert!(matches!(
            references.check_flag_write(&flag("x", &["nope"], &[])),
            Err(ReferenceError::MissingPrerequisite { field, .. }) if field == "prerequisites[0].flag"
        ));
        assert_eq!(
            references.check_flag_write(&flag("x", &["f0"], &[])),
            Ok(())
        );
    }

    #[test]
    fn cycles_are_refused_with_their_path() {
        let references = chain(3);
        let error = references
            .check_flag_write(&flag("f0", &["f3"], &[]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "prerequisites: the write would make a cycle: f0, f3, f2, f1, f0"
        );
    }

    #[test]
    fn chains_of_eight_links_are_accepted_and_nine_refused() {
        let references = chain(7);
        assert_eq!(
            references.check_flag_write(&flag("top", &["f7"], &[])),
            Ok(())
        );
        let references = chain(8);
        assert!(matches!(
            references.check_flag_write(&flag("top", &["f8"], &[])),
            Err(ReferenceError::TooDeep { links: 9, .. })
        ));
        // Lengthening the bottom of a chain counts the links above the written flag too.
        let mut with_base = chain(7);
        with_base.add_flag(&flag("base", &[], &[]));
        assert_eq!(
            with_base.check_flag_write(&flag("f0", &["base"], &[])),
            Ok(())
        );
        let references = chain(8);
        let mut with_base = references;
        with_base.add_flag(&flag("base", &[], &[]));
        assert!(matches!(
            with_base.check_flag_write(&flag("f0", &["base"], &[])),
            Err(ReferenceError::TooDeep { links: 9, .. })
        ));
    }

    #[test]
    fn what_is_referred_to_cannot_be_deleted() {
        let mut references = chain(1);
        references.add_segment(SegmentKey::parse("beta").unwrap());
        references.add_flag(&flag("user", &[], &["beta"]));
        assert!(matches!(
            references.check_flag_delete(&FlagKey::parse("f0").unwrap()),
            Err(ReferenceError::FlagInUse { by, .. }) if by == [FlagKey::parse("f1").unwrap()]
        ));
        assert_eq!(
            references.check_flag_delete(&FlagKey::parse("f1").unwrap()),
            Ok(())
        );
        let error = references
            .check_segment_delete(&SegmentKey::parse("beta").unwrap())
            .unwrap_err();
        assert!(error.is_in_use());
        assert_eq!(
            error.to_string(),
            "segment beta is used by user; change them first"
        );
    }

    #[test]
    fn stored_definitions_give_the_same_references_as_parsed_flags() {
        let written = flag("x", &["f0"], &["beta", "beta"]);
        let json = serde_json::to_string(&written).unwrap();
        assert!(References::may_refer(&json));
        let mut parsed = References::new();
        parsed.add_flag(&written);
        let mut stored = References::new();
        stored.add_stored_flag(written.key().clone(), Some(&json));
        assert_eq!(parsed, stored);
        assert!(!References::may_refer(
            &serde_json::to_string(&flag("plain", &[], &[])).unwrap()
        ));
    }
}
