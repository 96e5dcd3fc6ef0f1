//! Condition operands compiled once, when a flag is validated: versions for the `semver_*`
//! operators, regular expressions for `matches`, segment keys for the segment operators.
//!
//! Versions follow SemVer 2.0 with flagd's reading of them (`sem_ver`): a leading `v` or `V` is
//! accepted, precedence is SemVer's (a pre-release sorts below its release, build metadata is
//! ignored), `~` compares major and minor, `^` the major alone. One deliberate difference from
//! flagd, as the design contract says: below 1.0, `^` compares the minor too (`0.2.x` is not
//! `^0.1.0`), the way npm and Cargo read a caret. Shorthands that flagd's Go library accepts
//! (`v1`, `v1.2`) are not SemVer 2.0 versions and are refused.
//!
//! Patterns use the `regex` crate (linear-time matching, no look-around or back-references):
//! a pattern longer than [`MAX_PATTERN_BYTES`] or compiling to more than
//! [`MAX_COMPILED_PATTERN_BYTES`] is refused at write time.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use regex::Regex;
use semver::Version;

use crate::names::SegmentKey;

/// The longest `matches` pattern accepted: 1 KiB.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// The most memory one compiled `matches` pattern may take: 1 MiB.
pub const MAX_COMPILED_PATTERN_BYTES: usize = 1 << 20;

/// A condition's operand as validation compiled it.
#[derive(Clone, Default)]
pub(crate) enum Compiled {
    /// The operand is used as written.
    #[default]
    None,
    /// A `semver_*` operand.
    Version(Arc<Version>),
    /// A `matches` operand.
    Pattern(Arc<Regex>),
    /// A segment operator's operand.
    Segment(SegmentKey),
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compiled::None => f.write_str("None"),
            Compiled::Version(version) => write!(f, "Version({version})"),
            Compiled::Pattern(pattern) => write!(f, "Pattern({:?})", pattern.as_str()),
            Compiled::Segment(key) => write!(f, "Segment({key})"),
        }
    }
}

/// The compiled form follows from the written `value`, which conditions compare already.
impl PartialEq for Compiled {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Parses a version as the `semver_*` operators read one (`v1.2.3`, `1.2.3-rc.1+build`).
pub(crate) fn version(text: &str) -> Option<Arc<Version>> {
    let bare = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    Version::parse(bare).ok().map(Arc::new)
}

/// Compiles a `matches` pattern within the size limits; the error says why in words.
pub(crate) fn pattern(text: &str) -> Result<Arc<Regex>, String> {
    if text.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "the pattern is {} bytes long, at most {MAX_PATTERN_BYTES} are allowed",
            text.len()
        ));
    }
    regex::RegexBuilder::new(text)
        .size_limit(MAX_COMPILED_PATTERN_BYTES)
        .build()
        .map(Arc::new)
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(_) => format!(
                "the pattern compiles to more than {MAX_COMPILED_PATTERN_BYTES} bytes; simplify it"
            ),
            other => {
                let shown = other.to_string();
                format!("invalid regular expression: {}", shorten_lines(&shown))
            }
        })
}

/// The regex crate's messages draw the pattern over several lines; one line reads better in
/// a JSON error.
fn shorten_lines(message: &str) -> String {
    let joined = message.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.chars().take(300).collect()
}

/// How a `semver_*` operator compares `attribute` with `operand`.
pub(crate) fn compare_versions(
    operator: crate::flag::Operator,
    attribute: &Version,
    operand: &Version,
) -> bool {
    use crate::flag::Operator;
    let order = attribute.cmp_precedence(operand);
    match operator {
        Operator::SemverEq => order == Ordering::Equal,
        Operator::SemverNe => order != Ordering::Equal,
        Operator::SemverLt => order == Ordering::Less,
        Operator::SemverLte => order != Ordering::Greater,
        Operator::SemverGt => order == Ordering::Greater,
        Operator::SemverGte => order != Ordering::Less,
        Operator::SemverTilde => {
            attribute.major == operand.major && attribute.minor == operand.minor
        }
        Operator::SemverCaret => {
            attribute.major == operand.major
                && (operand.major > 0 || attribute.minor == operand.minor)
        }
        _ => false,
    }
}
