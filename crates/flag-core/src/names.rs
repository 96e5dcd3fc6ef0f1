//! `Environment`, `FlagKey`, `SegmentKey` and `Actor`: the names every other type is addressed by.
//!
//! Each is parsed once, at the edge, and is cheap to clone afterwards, because names are copied
//! into cache keys, single-flight maps and evaluation results on the hot path.
//!
//! A name of up to 23 bytes (nearly every real one) is held inline (`SmolStr`), longer ones in
//! an `Arc<str>`. Why: a request looks its environment up in several maps (the catalog, the
//! cache, last-known-good) and its flag key in the snapshot; with the characters inline, each
//! comparison reads the map's own bucket instead of following a pointer to a string stored
//! elsewhere, which an evaluation spread over many environments rarely finds in the CPU's
//! caches. A clone copies 24 bytes instead of touching a reference count that every core
//! serving the same environment shares, and parsing a request's names allocates nothing
//! (`docs/performance.md`).

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

/// Why a string is not a valid environment name or flag key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {shown}: {reason}")]
pub struct NameError {
    kind: &'static str,
    shown: String,
    reason: String,
}

impl NameError {
    fn new(kind: &'static str, input: &str, reason: impl Into<String>) -> Self {
        // Echo at most 80 characters of the input: a hostile 1 MiB key must not become a 1 MiB
        // error message (or log line).
        let mut shown: String = input.chars().take(80).collect();
        if shown.len() < input.len() {
            shown.push('…');
        }
        Self {
            kind,
            shown: format!("{shown:?}"),
            reason: reason.into(),
        }
    }

    /// What was being parsed: `"environment"` or `"flag key"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The reason the input was refused, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The grammar of one kind of name: first character, later characters, maximum length.
struct Grammar {
    kind: &'static str,
    /// What the name is, for people reading an API document.
    #[cfg(feature = "openapi")]
    description: &'static str,
    pattern: &'static str,
    max_len: usize,
    /// The bytes a name may start with.
    first: ByteSet,
    /// The bytes that may follow.
    rest: ByteSet,
}

/// A set of bytes, as a table: names are checked on every request, a byte at a time.
struct ByteSet([bool; 256]);

impl ByteSet {
    /// ASCII lowercase letters and digits, uppercase letters when `upper`, and `extra`.
    const fn of(upper: bool, extra: &[u8]) -> Self {
        let mut set = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            let b = byte as u8;
            let mut allowed = b.is_ascii_lowercase() || b.is_ascii_digit();
            allowed |= upper && b.is_ascii_uppercase();
            let mut other = 0;
            while other < extra.len() {
                allowed |= extra[other] == b;
                other += 1;
            }
            set[byte] = allowed;
            byte += 1;
        }
        Self(set)
    }

    fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte)]
    }
}

impl Grammar {
    fn check(&self, input: &str) -> Result<(), NameError> {
        let bytes = input.as_bytes();
        let Some(&first) = bytes.first() else {
            return Err(NameError::new(self.kind, input, "must not be empty"));
        };
        // All allowed characters are ASCII, so byte length equals character length for any
        // input that passes; checking bytes first also bounds the work on hostile input.
        if bytes.len() > self.max_len {
            return Err(NameError::new(
                self.kind,
                input,
                format!(
                    "is {} bytes long, at most {} are allowed",
                    bytes.len(),
                    self.max_len
                ),
            ));
        }
        if !self.first.contains(first) {
            let reason = if first == b'_' {
                format!(
                    "must start with a letter or digit (names starting with `_` are reserved); pattern {}",
                    self.pattern
                )
            } else {
                format!(
                    "must start with a letter or digit; pattern {}",
                    self.pattern
                )
            };
            return Err(NameError::new(self.kind, input, reason));
        }
        if let Some(position) = bytes.iter().skip(1).position(|&b| !self.rest.contains(b)) {
            let bad = input[position + 1..].chars().next().unwrap_or('?');
            return Err(NameError::new(
                self.kind,
                input,
                format!(
                    "character {bad:?} at position {} is not allowed; pattern {}",
                    position + 1,
                    self.pattern
                ),
            ));
        }
        Ok(())
    }
}

static ENVIRONMENT: Grammar = Grammar {
    kind: "environment",
    #[cfg(feature = "openapi")]
    description: "An environment name, such as `production`.",
    pattern: "^[a-z0-9][a-z0-9_-]{0,63}$",
    max_len: 64,
    first: ByteSet::of(false, b""),
    rest: ByteSet::of(false, b"_-"),
};

static FLAG_KEY: Grammar = Grammar {
    kind: "flag key",
    #[cfg(feature = "openapi")]
    description: "A flag key, such as `new-checkout`.",
    pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    max_len: 128,
    first: ByteSet::of(true, b""),
    rest: ByteSet::of(true, b"._-"),
};

static SEGMENT_KEY: Grammar = Grammar {
    kind: "segment key",
    #[cfg(feature = "openapi")]
    description: "A segment key, such as `beta-testers`.",
    pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    max_len: 128,
    first: ByteSet::of(true, b""),
    rest: ByteSet::of(true, b"._-"),
};

static ACTOR: Grammar = Grammar {
    kind: "actor",
    #[cfg(feature = "openapi")]
    description: "Who made a write: the name of the admin token used, such as `alice`.",
    pattern: "^[a-z0-9][a-z0-9_.-]{0,63}$",
    max_len: 64,
    first: ByteSet::of(false, b""),
    rest: ByteSet::of(false, b"_.-"),
};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $grammar:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(SmolStr);

        impl $name {
            /// Parses a name, refusing anything outside the grammar.
            pub fn parse(input: &str) -> Result<Self, NameError> {
                $grammar.check(input)?;
                Ok(Self(SmolStr::new(input)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(input: &str) -> Result<Self, NameError> {
                Self::parse(input)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(input: &str) -> Result<Self, NameError> {
                Self::parse(input)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(input: String) -> Result<Self, NameError> {
                Self::parse(&input)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::name_schema(
                    $grammar.description,
                    $grammar.pattern,
                    $grammar.max_len,
                )
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// An environment name such as `production`: `^[a-z0-9][a-z0-9_-]{0,63}$`.
    Environment,
    ENVIRONMENT
);

name_type!(
    /// A flag key such as `new-checkout`: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
    ///
    /// No key can start with `_`, which keeps names like the Redis adapter's `__meta` field free.
    FlagKey,
    FLAG_KEY
);

name_type!(
    /// A segment key such as `beta-testers`: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`, the grammar
    /// of flag keys (so no key can start with `_` either).
    SegmentKey,
    SEGMENT_KEY
);

name_type!(
    /// Who made a write, such as `alice`: the name of the admin token that authorised it,
    /// `^[a-z0-9][a-z0-9_.-]{0,63}$`. Every write carries one, and its audit entry names it.
    Actor,
    ACTOR
);

impl Actor {
    /// The actor of writes no person made through a named token (tools, tests, and every
    /// audit row written before tokens had names): `flag-server`.
    pub const fn system() -> Self {
        Self(SmolStr::new_static("flag-server"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("production")]
    #[case("prod-eu")]
    #[case("a")]
    #[case("0")]
    #[case("staging_2")]
    #[case(&"a".repeat(64))]
    fn valid_environments(#[case] input: &str) {
        assert_eq!(Environment::parse(input).unwrap().as_str(), input);
    }

    #[rstest]
    #[case("", "must not be empty")]
    #[case("Prod", "must start with a letter or digit")]
    #[case("-prod", "must start")]
    #[case("_prod", "reserved")]
    #[case("prod.eu", "'.'")]
    #[case("prod eu", "' '")]
    #[case("*", "must start")]
    #[case("a:b", "':'")]
    #[case("a{b}", "'{'")]
    #[case("pröd", "'ö'")]
    #[case(&"a".repeat(65), "at most 64")]
    fn invalid_environments(#[case] input: &str, #[case] reason: &str) {
        let error = Environment::parse(input).unwrap_err();
        assert_eq!(error.kind(), "environment");
        assert!(
            error.to_string().contains(reason),
            "{error} should mention {reason}"
        );
    }

    #[rstest]
    #[case("new-checkout")]
    #[case("NewCheckout")]
    #[case("v1.2_beta-3")]
    #[case("9lives")]
    #[case(&"K".repeat(128))]
    fn valid_flag_keys(#[case] input: &str) {
        assert_eq!(FlagKey::parse(input).unwrap().as_str(), input);
    }

    #[rstest]
    #[case("", "must not be empty")]
    #[case("__meta", "reserved")]
    #[case("_x", "reserved")]
    #[case(".hidden", "must start")]
    #[case("a/b", "'/'")]
    #[case("a b", "' '")]
    #[case("ключ", "must start")]
    #[case(&"K".repeat(129), "at most 128")]
    fn invalid_flag_keys(#[case] input: &str, #[case] reason: &str) {
        let error = FlagKey::parse(input).unwrap_err();
        assert!(
            error.to_string().contains(reason),
            "{error} should mention {reason}"
        );
    }

    #[rstest]
    #[case("alice")]
    #[case("ci.deploy-bot_2")]
    #[case("flag-server")]
    fn valid_actors(#[case] input: &str) {
        assert_eq!(Actor::parse(input).unwrap().as_str(), input);
    }

    #[rstest]
    #[case("Alice", "must start")]
    #[case("", "must not be empty")]
    #[case("a:b", "':'")]
    #[case("a b", "' '")]
    #[case(&"a".repeat(65), "at most 64")]
    fn invalid_actors(#[case] input: &str, #[case] reason: &str) {
        let error = Actor::parse(input).unwrap_err();
        assert_eq!(error.kind(), "actor");
        assert!(error.to_string().contains(reason), "{error}");
    }

    #[test]
    fn the_system_actor_is_a_valid_actor() {
        assert_eq!(Actor::parse("flag-server").unwrap(), Actor::system());
    }

    #[test]
    fn a_huge_input_gives_a_short_message() {
        let error = FlagKey::parse(&"x".repeat(1 << 20)).unwrap_err();
        assert!(error.to_string().len() < 300);
    }

    #[test]
    fn serde_parses_and_refuses() {
        let env: Environment = serde_json::from_str("\"prod\"").unwrap();
        assert_eq!(env.as_str(), "prod");
        assert_eq!(serde_json::to_string(&env).unwrap(), "\"prod\"");
        assert!(serde_json::from_str::<Environment>("\"PROD\"").is_err());
        assert!(serde_json::from_str::<FlagKey>("\"__meta\"").is_err());
    }
}
