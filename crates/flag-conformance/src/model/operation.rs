//! The operations a sequence is made of, and how they are generated.

use std::fmt;

use flag_core::{EnvironmentSnapshot, Revision};
use proptest::prelude::*;
use serde_json::json;

use super::{ENVIRONMENTS, KEYS};
use crate::sample::{flag_with_value, segment_including};

/// One step of a sequence.
#[derive(Clone, PartialEq, Eq)]
pub enum Operation {
    /// `get(env)`.
    Get {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
    },
    /// `get_with_ttl(env)`.
    GetWithTtl {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
    },
    /// `get_flag(env, key)`.
    GetFlag {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
        /// Index into [`KEYS`].
        key: usize,
    },
    /// `set(env, snapshot, ttl)` of a snapshot holding the chosen keys.
    Set {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
        /// The snapshot's revision.
        revision: u64,
        /// Which of [`KEYS`] the snapshot holds.
        keys: Vec<usize>,
        /// Tells this snapshot's values from other snapshots of the same revision.
        generation: u8,
        /// The TTL in ms.
        ttl_ms: u64,
    },
    /// `invalidate(env, revision)`.
    Invalidate {
        /// Index into [`ENVIRONMENTS`].
        env: usize,
        /// The revision to remember.
        revision: u64,
    },
    /// Sleep.
    Wait {
        /// How long, in ms.
        ms: u64,
    },
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Get { env } => write!(f, "get({})", ENVIRONMENTS[*env]),
            Operation::GetWithTtl { env } => write!(f, "get_with_ttl({})", ENVIRONMENTS[*env]),
            Operation::GetFlag { env, key } => {
                write!(f, "get_flag({}, {})", ENVIRONMENTS[*env], KEYS[*key])
            }
            Operation::Set {
                env,
                revision,
                keys,
                generation,
                ttl_ms,
            } => {
                let names: Vec<&str> = keys.iter().map(|k| KEYS[*k]).collect();
                write!(
                    f,
                    "set({}, r{revision} g{generation} {names:?}, ttl {ttl_ms}ms)",
                    ENVIRONMENTS[*env]
                )
            }
            Operation::Invalidate { env, revision } => {
                write!(f, "invalidate({}, r{revision})", ENVIRONMENTS[*env])
            }
            Operation::Wait { ms } => write!(f, "wait({ms}ms)"),
        }
    }
}

/// Generates operations, weighted towards reads and sets.
pub fn operation() -> impl Strategy<Value = Operation> {
    let env = 0..ENVIRONMENTS.len();
    prop_oneof![
        3 => env.clone().prop_map(|env| Operation::Get { env }),
        2 => env.clone().prop_map(|env| Operation::GetWithTtl { env }),
        3 => (env.clone(), 0..KEYS.len()).prop_map(|(env, key)| Operation::GetFlag { env, key }),
        4 => (env.clone(), 1..8u64, prop::sample::subsequence((0..KEYS.len()).collect::<Vec<_>>(), 0..=KEYS.len()), any::<u8>(), 5..200u64)
            .prop_map(|(env, revision, keys, generation, ttl_ms)| Operation::Set { env, revision, keys, generation, ttl_ms }),
        2 => (env, 0..8u64).prop_map(|(env, revision)| Operation::Invalidate { env, revision }),
        2 => (0..60u64).prop_map(|ms| Operation::Wait { ms }),
    ]
}

pub(super) fn snapshot_of(revision: u64, keys: &[usize], generation: u8) -> EnvironmentSnapshot {
    let flags = keys.iter().map(|k| {
        flag_with_value(
            KEYS[*k],
            json!({"generation": generation, "revision": revision}),
        )
    });
    // Each key names a segment too: flags and segments of one key must not collide.
    let segments = keys.iter().map(|k| {
        segment_including(
            KEYS[*k],
            &[format!("generation-{generation}-revision-{revision}")],
        )
    });
    EnvironmentSnapshot::new(Revision(revision), flags)
        .unwrap_or_else(|error| panic!("model snapshot: {error}"))
        .with_segments(segments)
        .unwrap_or_else(|error| panic!("model snapshot: {error}"))
}
