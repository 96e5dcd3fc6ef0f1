//! An environment's flags and segments at one revision: the unit the cache stores and the
//! service serves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::flag::FeatureFlag;
use crate::fnv::FnvBuildHasher;
use crate::names::{Environment, FlagKey, SegmentKey};
use crate::segment::Segment;

/// An environment's revision: bumped by the repository in the same transaction as every write in
/// that environment, so a larger revision is always newer. An environment never written is at 0.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision of an environment that has never been written.
    pub const ZERO: Revision = Revision(0);

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// All flags and segments of one environment at one revision, each keyed and ordered by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnvironmentSnapshot {
    revision: Revision,
    flags: BTreeMap<FlagKey, Arc<FeatureFlag>>,
    /// The same flags, for lookups by key: a B-tree compares the key with several others, each
    /// stored apart, where a hash table touches one bucket and the one key that matches (an
    /// evaluation spread over many environments finds little of this in the CPU's caches;
    /// `docs/performance.md`). FNV: flag keys are the server's own.
    index: HashMap<FlagKey, Arc<FeatureFlag>, FnvBuildHasher>,
    segments: BTreeMap<SegmentKey, Arc<Segment>>,
    /// The flags some flag lists as a prerequisite (the only ones worth remembering an answer
    /// of during one evaluation scope).
    prerequisites: BTreeSet<FlagKey>,
}

/// Two flags with one key in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flag {0} appears twice in one snapshot")]
pub struct DuplicateFlag(pub FlagKey);

/// Two segments with one key in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment {0} appears twice in one snapshot")]
pub struct DuplicateSegment(pub SegmentKey);

impl EnvironmentSnapshot {
    /// A snapshot of the given flags; two flags with one key are refused.
    pub fn new(
        revision: Revision,
        flags: impl IntoIterator<Item = FeatureFlag>,
    ) -> Result<Self, DuplicateFlag> {
        Self::from_shared(revision, flags.into_iter().map(Arc::new))
    }

    /// A snapshot of already shared flags; two flags with one key are refused.
    pub fn from_shared(
        revision: Revision,
        flags: impl IntoIterator<Item = Arc<FeatureFlag>>,
    ) -> Result<Self, DuplicateFlag> {
        let mut map = BTreeMap::new();
        let mut prerequisites = BTreeSet::new();
        for flag in flags {
            let key = flag.key().clone();
            prerequisites.extend(
                flag.prerequisites()
                    .iter()
                    .map(|prerequisite| prerequisite.flag().clone()),
            );
            if map.insert(key.clone(), flag).is_some() {
                return Err(DuplicateFlag(key));
            }
        }
        let index = map
            .iter()
            .map(|(key, flag)| (key.clone(), Arc::clone(flag)))
            .collect();
        Ok(Self {
            revision,
            flags: map,
            index,
            segments: BTreeMap::new(),
            prerequisites,
        })
    }

    /// The same snapshot holding `segments` too; two segments with one key are refused.
    pub fn with_segments(
        self,
        segments: impl IntoIterator<Item = Segment>,
    ) -> Result<Self, DuplicateSegment> {
        self.with_shared_segments(segments.into_iter().map(Arc::new))
    }

    /// The same snapshot holding already shared `segments` too; two with one key are refused.
    pub fn with_shared_segments(
        mut self,
        segments: impl IntoIterator<Item = Arc<Segment>>,
    ) -> Result<Self, DuplicateSegment> {
        for segment in segments {
            let key = segment.key().clone();
            if self.segments.insert(key.clone(), segment).is_some() {
                return Err(DuplicateSegment(key));
            }
        }
        Ok(self)
    }

    /// An environment with no flags and no segments.
    pub fn empty(revision: Revision) -> Self {
        Self {
            revision,
            flags: BTreeMap::new(),
            index: HashMap::default(),
            segments: BTreeMap::new(),
            prerequisites: BTreeSet::new(),
        }
    }

    /// The revision these flags are at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// One flag, if the environment has it.
    pub fn flag(&self, key: &str) -> Option<&Arc<FeatureFlag>> {
        self.index.get(key)
    }

    /// What a cache holding this snapshot answers to `get_flag(key)`: `Hit` or `Absent`.
    pub fn lookup(&self, key: &str) -> FlagLookup {
        match self.index.get(key) {
            Some(flag) => FlagLookup::Hit {
                flag: Arc::clone(flag),
                revision: self.revision,
            },
            None => FlagLookup::Absent {
                revision: self.revision,
            },
        }
    }

    /// Every flag, in key order.
    pub fn flags(&self) -> impl ExactSizeIterator<Item = &Arc<FeatureFlag>> {
        self.flags.values()
    }

    /// How many flags there are.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Whether some flag of the environment lists `key` as a prerequisite.
    pub fn is_prerequisite(&self, key: &str) -> bool {
        self.prerequisites.contains(key)
    }

    /// Every flag in key order, each with whether some flag lists it as a prerequisite: one walk
    /// of both sorted sets, so past the last prerequisite a flag costs no comparison at all.
    pub fn flags_marking_prerequisites(
        &self,
    ) -> impl ExactSizeIterator<Item = (&Arc<FeatureFlag>, bool)> {
        let mut prerequisites = self.prerequisites.iter().peekable();
        self.flags.iter().map(move |(key, flag)| {
            while prerequisites.next_if(|listed| *listed < key).is_some() {}
            (
                flag,
                prerequisites.next_if(|listed| *listed == key).is_some(),
            )
        })
    }

    /// One segment, if the environment has it.
    pub fn segment(&self, key: &str) -> Option<&Arc<Segment>> {
        self.segments.get(key)
    }

    /// Every segment, in key order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &Arc<Segment>> {
        self.segments.values()
    }
}

/// `{"revision": 7, "flags": [...], "segments": [...]}`, each in key order; `segments` is left
/// out when there are none, so a release without segments reads the snapshots of one with them.
impl Serialize for EnvironmentSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a> {
            revision: Revision,
            flags: Vec<&'a FeatureFlag>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            segments: Vec<&'a Segment>,
        }
        Shape {
            revision: self.revision,
            flags: self.flags.values().map(|flag| &**flag).collect(),
            segments: self.segments.values().map(|segment| &**segment).collect(),
        }
        .serialize(serializer)
    }
}

/// Read tolerantly: fields a newer release adds are ignored.
impl<'de> Deserialize<'de> for EnvironmentSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Shape {
            revision: Revision,
            flags: Vec<FeatureFlag>,
            #[serde(default)]
            segments: Vec<Segment>,
        }
        let shape = Shape::deserialize(deserializer)?;
        Self::new(shape.revision, shape.flags)
            .map_err(serde::de::Error::custom)?
            .with_segments(shape.segments)
            .map_err(serde::de::Error::custom)
    }
}

/// What `get_flag` found.
#[derive(Debug, Clone, PartialEq)]
pub enum FlagLookup {
    /// The environment is cached and has the flag.
    Hit {
        /// The flag.
        flag: Arc<FeatureFlag>,
        /// The revision of the cached snapshot it belongs to.
        revision: Revision,
    },
    /// The environment is cached and has no such flag.
    Absent {
        /// The revision of the cached snapshot.
        revision: Revision,
    },
    /// The environment is not cached.
    Miss,
}

/// One line of the environment listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvironmentSummary {
    /// The environment.
    pub name: Environment,
    /// Its current revision.
    pub revision: Revision,
    /// How many flags it holds now.
    pub flag_count: u64,
}
