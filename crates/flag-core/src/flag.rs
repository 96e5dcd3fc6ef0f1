//! The feature flag: its JSON shape, and the parsing that turns a document into a valid flag.
//!
//! A [`FeatureFlag`] can only be obtained through validation, so every function that receives one
//! may rely on its invariants: every variant it names exists, rollouts have a positive total
//! weight, each rule has exactly one outcome and each condition's `value` fits its operator.
//!
//! Decisions the design contract leaves open, made here:
//! - `null` for an optional field means "use the default", like leaving the field out.
//! - Variant names are 1 to 128 characters; a variant value may be any JSON except `null`
//!   (OpenFeature SDKs cannot tell a `null` value from a failed evaluation).
//! - Weights are whole numbers from 0 to 2^32 - 1 and a rollout's total is at most 2^32 - 1, so
//!   bucketing is exact integer arithmetic (flagd's `(hash * total) >> 32`).
//! - A flag-level `rollout` of `[]` means "no rollout"; a rule's `rollout` must have weight.
//! - A rule's `conditions` may be left out and then is empty (the rule always matches).
//! - `metadata` is a map of strings; the OFREP `flagVersion` entry is added by the server and
//!   wins over a user entry of the same name.
//! - `bucketBy` (flag or rule) names the attribute a rollout hashes instead of `targetingKey`;
//!   on a rule it needs a `rollout`, and no `bucketBy` may name a reserved (`$`) attribute.
//! - Attributes starting with `$` are reserved: `$now` (the evaluation time in Unix seconds) is
//!   the only one a condition may test; no context can set one.
//! - Operands are compiled once, here: a `semver_*` value is parsed as a version and a `matches`
//!   pattern compiled as a regular expression (at most 1 KiB of pattern, 1 MiB compiled), so
//!   evaluation never parses or compiles. `matches` searches anywhere in the string; anchor the
//!   pattern (`^...$`) to test the whole of it.
//! - A flag's `prerequisites` name other flags (never itself, none twice) with the variants
//!   they must serve (at least one); whether those flags exist, and whether the links form a
//!   cycle or a chain deeper than 8, is checked by the repository against the environment
//!   ([`crate::References`]).
//! - Input is strict, stored data is read tolerantly: a definition sent to the API with a field
//!   this release does not know is refused, while a stored flag (the `Deserialize` of
//!   [`FeatureFlag`], what repositories and caches decode) with such fields, written by a newer
//!   release during a rolling deploy, is read with them ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::evaluation::Reason;
use crate::names::{FlagKey, NameError, SegmentKey};
use crate::operand::{self, Compiled};

/// How many variants [`FeatureFlag::variant`] compares by pointer before searching by name.
const POINTER_SCAN_MAX: usize = 8;

/// A validated feature flag, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "Value")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeatureFlag {
    /// The flag's key.
    key: FlagKey,
    /// Free text for people.
    description: String,
    /// A disabled flag serves `offVariant` to everyone.
    enabled: bool,
    /// Variant names and their values (any JSON but `null`).
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, Value>))]
    variants: BTreeMap<Arc<str>, Value>,
    /// Served when no rule matches and there is no rollout.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    default_variant: Arc<str>,
    /// Served while the flag is disabled.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    off_variant: Arc<str>,
    /// Targeting rules, tried in order.
    rules: Vec<Rule>,
    /// The flag-level rollout, `[]` when there is none.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<WeightedVariant>))]
    rollout: Rollout,
    /// Strings for people and tools; served as OFREP metadata.
    metadata: BTreeMap<String, String>,
    /// The attribute rollouts hash instead of `targetingKey` (a rule's own wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket_by: Option<String>,
    /// Flags that must serve one of the listed variants for this one to be on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prerequisites: Vec<Prerequisite>,
    /// Server-set: 1 on creation, one more on each replacement.
    version: u64,
    /// Server-set: when the flag was last written (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    updated_at: OffsetDateTime,
    /// Server-set, only on a stored flag that could not be read: why. Such a flag evaluates to a
    /// `GENERAL` error; writing it again replaces it.
    #[serde(rename = "error", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    unreadable: Option<Arc<str>>,
    /// Each answer's bytes as an adapter renders them, made on first use (never stored).
    #[serde(skip)]
    renderings: Renderings,
    /// Whether evaluating needs prerequisites or segments, decided once when the flag is built:
    /// asked on every evaluation, it read every rule's conditions, rules the evaluation itself
    /// may never reach (never stored).
    #[serde(skip)]
    environment_needed: bool,
}

/// The rendered answers of one flag, one slot per (variant, reason), each filled on first use,
/// and how many times each was served (when someone counts).
///
/// A flag never changes once built (the methods that make a changed copy start it empty), so
/// an answer rendered once stays right for as long as any snapshot holds the flag: a bulk
/// answer of a cached environment copies its flags' bytes instead of serializing them again.
#[derive(Default)]
struct Renderings {
    slots: OnceLock<Box<[VariantAnswers]>>,
    /// Whether this flag object was ever counted (so a registry learns of it once).
    counted: AtomicBool,
}

/// A variant's name (the flag's own `Arc`, found by pointer) and its answers, one per reason.
type VariantAnswers = (Arc<str>, [Answer; Reason::COUNT]);

/// One answer: its bytes, once rendered, and how many times it was counted as served.
#[derive(Default)]
struct Answer {
    rendering: OnceLock<Box<[u8]>>,
    served: AtomicU64,
}

impl Clone for Renderings {
    /// A copy renders again: the copy may be changed before it is used.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Renderings {
    /// Renderings follow from the flag, so they never tell two flags apart.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Renderings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filled = self.slots.get().map_or(0, |slots| {
            slots
                .iter()
                .flat_map(|(_, answers)| answers)
                .filter(|slot| slot.rendering.get().is_some())
                .count()
        });
        write!(f, "Renderings({filled} rendered)")
    }
}

impl FeatureFlag {
    /// The stand-in for the stored flag `key` (at `version`, written at `updated_at`) that could
    /// not be read, saying `why`: it keeps its environment readable, and evaluates to an error.
    pub fn unreadable(
        key: FlagKey,
        version: u64,
        updated_at: OffsetDateTime,
        why: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            key,
            description: String::new(),
            enabled: false,
            variants: BTreeMap::new(),
            default_variant: Arc::from(""),
            off_variant: Arc::from(""),
            rules: Vec::new(),
            rollout: Rollout::default(),
            metadata: BTreeMap::new(),
            bucket_by: None,
            prerequisites: Vec::new(),
            version,
            updated_at,
            unreadable: Some(why.into()),
            renderings: Renderings::default(),
            environment_needed: false,
        }
    }

    /// Why the stored flag could not be read, for a stand-in made by [`FeatureFlag::unreadable`].
    pub fn unreadable_reason(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }

    /// Parses a PUT body for the flag at `path_key`; server-set fields in it are ignored.
    ///
    /// The result has version 0 ("never stored"); the repository gives it its real version.
    pub fn from_definition(
        path_key: &FlagKey,
        document: FlagDocument,
    ) -> Result<Self, ValidationError> {
        check_definition(
            path_key.as_str(),
            document.key.as_deref(),
            document.error.is_some(),
        )?;
        document.validate(path_key.clone(), 0, OffsetDateTime::UNIX_EPOCH)
    }

    /// Parses a PUT body given as JSON text; see [`FeatureFlag::from_definition`].
    pub fn from_definition_json(path_key: &FlagKey, json: &str) -> Result<Self, ValidationError> {
        let document: FlagDocument = serde_json::from_str(json).map_err(|error| {
            ValidationError::new("$", ValidationReason::Malformed(error.to_string()))
        })?;
        Self::from_definition(path_key, document)
    }

    /// The same flag with the version and timestamp a repository assigned when storing it.
    #[must_use]
    pub fn stored_as(mut self, version: u64, updated_at: OffsetDateTime) -> Self {
        self.version = version;
        self.updated_at = updated_at;
        self.renderings = Renderings::default();
        self
    }

    /// The bytes `render` makes of this flag serving `variant` for `reason`, rendered at most
    /// once per flag (every answer follows from the flag, which never changes); `None` when the
    /// flag has no such variant. One rendering per answer is kept: the server's OFREP entry.
    pub fn rendered_answer(
        &self,
        variant: &str,
        reason: Reason,
        render: impl FnOnce() -> Vec<u8>,
    ) -> Option<&[u8]> {
        let slot = self.answer(variant, reason)?;
        Some(slot.rendering.get_or_init(|| render().into_boxed_slice()))
    }

    /// Counts one answer of `variant` for `reason` as served; answers whether this flag object
    /// is counted for the first time (so that a registry of counts learns of it once), and
    /// `None` when the flag has no such variant.
    pub fn count_answer(&self, variant: &str, reason: Reason) -> Option<bool> {
        self.answer(variant, reason)?
            .served
            .fetch_add(1, Ordering::Relaxed);
        let first = !self.renderings.counted.load(Ordering::Relaxed)
            && !self.renderings.counted.swap(true, Ordering::AcqRel);
        Some(first)
    }

    /// How many times each answer of this flag object was counted as served (only those
    /// counted at least once), by variant and reason.
    pub fn answer_counts(&self) -> Vec<(Arc<str>, Reason, u64)> {
        let Some(slots) = self.renderings.slots.get() else {
            return Vec::new();
        };
        let mut counts = Vec::new();
        for (name, answers) in slots.iter() {
            for (reason, answer) in Reason::ALL.iter().zip(answers) {
                let served = answer.served.load(Ordering::Relaxed);
                if served > 0 {
                    counts.push((Arc::clone(name), *reason, served));
                }
            }
        }
        counts
    }

    /// The slot of `variant` for `reason`.
    fn answer(&self, variant: &str, reason: Reason) -> Option<&Answer> {
        let slots = self.renderings.slots.get_or_init(|| {
            self.variants
                .keys()
                .map(|name| (Arc::clone(name), std::array::from_fn(|_| Answer::default())))
                .collect()
        });
        // An evaluation's variant is this flag's own name for it (the same bytes), so a pointer
        // comparison over the slots finds it without comparing strings (or walking the variant
        // map); another copy of the name is compared.
        let (_, answers) = slots
            .iter()
            .find(|(name, _)| {
                std::ptr::eq(name.as_ptr(), variant.as_ptr()) && name.len() == variant.len()
            })
            .or_else(|| slots.iter().find(|(name, _)| &**name == variant))?;
        answers.get(reason.index())
    }

    /// The flag's key.
    pub fn key(&self) -> &FlagKey {
        &self.key
    }

    /// Free text for people.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the flag is on; a disabled flag always serves its off variant.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The same flag, switched on or off.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self.renderings = Renderings::default();
        self
    }

    /// Variant name to value.
    pub fn variants(&self) -> &BTreeMap<Arc<str>, Value> {
        &self.variants
    }

    /// The variant named `name` with its value, if the flag has it.
    pub fn variant(&self, name: &str) -> Option<(&Arc<str>, &Value)> {
        // The names rules, rollouts and the defaults serve are this map's own `Arc`s
        // (`VariantNames`), so comparing pointers over the first few entries finds them without
        // reading any name's characters, which are stored apart (a cache miss each when
        // evaluations spread over many environments); another copy of a name is looked up by
        // its characters.
        self.variants
            .iter()
            .take(POINTER_SCAN_MAX)
            .find(|(known, _)| {
                std::ptr::eq(known.as_ptr(), name.as_ptr()) && known.len() == name.len()
            })
            .or_else(|| self.variants.get_key_value(name))
    }

    /// The variant served when the flag is enabled and nothing else decides.
    pub fn default_variant(&self) -> &str {
        &self.default_variant
    }

    /// The variant served when the flag is disabled.
    pub fn off_variant(&self) -> &str {
        &self.off_variant
    }

    /// Targeting rules, first match wins.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The flag-level percentage rollout; empty when there is none.
    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// Free string metadata, returned with every evaluation.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The attribute the flag's rollouts hash (a rule's own `bucketBy` wins); `None`:
    /// `targetingKey`.
    pub fn bucket_by(&self) -> Option<&str> {
        self.bucket_by.as_deref()
    }

    /// The flags that must serve one of their listed variants for this one to be on.
    pub fn prerequisites(&self) -> &[Prerequisite] {
        &self.prerequisites
    }

    /// The segments the flag's conditions refer to, each once, in order of appearance.
    pub fn segments(&self) -> Vec<&SegmentKey> {
        let mut keys: Vec<&SegmentKey> = Vec::new();
        for condition in self.rules.iter().flat_map(|rule| &rule.conditions) {
            if let Some(key) = condition.segment()
                && !keys.contains(&key)
            {
                keys.push(key);
            }
        }
        keys
    }

    /// Whether evaluating the flag needs other parts of its environment (prerequisites or
    /// segments), so it must be evaluated within its environment's snapshot.
    pub fn needs_environment(&self) -> bool {
        self.environment_needed
    }

    /// Server-set: starts at 1 and grows by 1 on every write of this flag; 0 means never stored.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Server-set: when the flag was last written.
    pub fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }
}

/// A targeting rule: when all conditions match, serve a variant or a rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rule {
    /// All must match.
    conditions: Vec<Condition>,
    /// The variant served on a match; present exactly when `rollout` is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    variant: Option<Arc<str>>,
    /// The rollout served on a match; present exactly when `variant` is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<WeightedVariant>))]
    rollout: Option<Rollout>,
    /// The attribute this rule's rollout hashes (only with `rollout`).
    #[serde(rename = "bucketBy", skip_serializing_if = "Option::is_none")]
    bucket_by: Option<String>,
}

/// What a matching rule serves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuleOutcome<'a> {
    /// One fixed variant.
    Variant(&'a str),
    /// A percentage rollout over variants.
    Rollout(&'a Rollout),
}

impl Rule {
    /// The conditions, all of which must match.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// The attribute this rule's rollout hashes, when the rule names one.
    pub fn bucket_by(&self) -> Option<&str> {
        self.bucket_by.as_deref()
    }

    /// What the rule serves when it matches.
    pub fn outcome(&self) -> RuleOutcome<'_> {
        match (&self.variant, &self.rollout) {
            (_, Some(rollout)) => RuleOutcome::Rollout(rollout),
            (Some(variant), None) => RuleOutcome::Variant(variant),
            // Unreachable by construction (validation demands exactly one); an empty variant
            // name never exists, so evaluation of such a rule would fail safely, not panic.
            (None, None) => RuleOutcome::Variant(""),
        }
    }
}

/// One test of one context attribute, or of membership in a segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Condition {
    /// The context attribute tested (`targetingKey` and `$now` included); absent for the
    /// segment operators.
    #[serde(skip_serializing_if = "String::is_empty")]
    attribute: String,
    /// The comparison.
    operator: Operator,
    /// The operand; absent for `exists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    value: Option<Value>,
    /// The operand compiled at validation (version, pattern, segment key).
    #[serde(skip)]
    compiled: Compiled,
}

impl Condition {
    /// The context attribute tested (`targetingKey` included); empty for the segment operators.
    pub fn attribute(&self) -> &str {
        &self.attribute
    }

    /// The segment an `in_segment` / `not_in_segment` condition refers to.
    pub fn segment(&self) -> Option<&SegmentKey> {
        match &self.compiled {
            Compiled::Segment(key) => Some(key),
            _ => None,
        }
    }

    /// The operand as validation compiled it.
    pub(crate) fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The comparison.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The operand; `None` only for `exists`.
    pub fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }
}

/// A condition's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Operator {
    /// The attribute equals one element of the `value` array.
    In,
    /// The attribute equals no element of the `value` array.
    NotIn,
    /// The attribute equals `value` exactly (`"5"` is not `5`).
    Equals,
    /// The attribute differs from `value` (both of one JSON type).
    NotEquals,
    /// The string attribute starts with `value`.
    StartsWith,
    /// The string attribute ends with `value`.
    EndsWith,
    /// The string attribute contains `value`, or the array attribute has `value` as an element.
    Contains,
    /// The number attribute is greater than `value`.
    Gt,
    /// The number attribute is greater than or equal to `value`.
    Gte,
    /// The number attribute is less than `value`.
    Lt,
    /// The number attribute is less than or equal to `value`.
    Lte,
    /// The attribute is present (and not `null`).
    Exists,
    /// The version attribute equals the version `value` (SemVer precedence).
    SemverEq,
    /// The version attribute differs from the version `value`.
    SemverNe,
    /// The version attribute is lower than the version `value`.
    SemverLt,
    /// The version attribute is lower than or equal to the version `value`.
    SemverLte,
    /// The version attribute is higher than the version `value`.
    SemverGt,
    /// The version attribute is higher than or equal to the version `value`.
    SemverGte,
    /// `^`: the version attribute has the major version of `value` (and, below 1.0, its minor).
    SemverCaret,
    /// `~`: the version attribute has the major and minor version of `value`.
    SemverTilde,
    /// The string attribute matches the regular expression `value` somewhere.
    Matches,
    /// The context is in the segment `value` (no `attribute`).
    InSegment,
    /// The context is not in the segment `value` (no `attribute`).
    NotInSegment,
}

impl Operator {
    /// Every operator, in declaration order.
    pub const ALL: [Operator; 23] = [
        Operator::In,
        Operator::NotIn,
        Operator::Equals,
        Operator::NotEquals,
        Operator::StartsWith,
        Operator::EndsWith,
        Operator::Contains,
        Operator::Gt,
        Operator::Gte,
        Operator::Lt,
        Operator::Lte,
        Operator::Exists,
        Operator::SemverEq,
        Operator::SemverNe,
        Operator::SemverLt,
        Operator::SemverLte,
        Operator::SemverGt,
        Operator::SemverGte,
        Operator::SemverCaret,
        Operator::SemverTilde,
        Operator::Matches,
        Operator::InSegment,
        Operator::NotInSegment,
    ];

    /// The operator's name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::Equals => "equals",
            Operator::NotEquals => "not_equals",
            Operator::StartsWith => "starts_with",
            Operator::EndsWith => "ends_with",
            Operator::Contains => "contains",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::Exists => "exists",
            Operator::SemverEq => "semver_eq",
            Operator::SemverNe => "semver_ne",
            Operator::SemverLt => "semver_lt",
            Operator::SemverLte => "semver_lte",
            Operator::SemverGt => "semver_gt",
            Operator::SemverGte => "semver_gte",
            Operator::SemverCaret => "semver_caret",
            Operator::SemverTilde => "semver_tilde",
            Operator::Matches => "matches",
            Operator::InSegment => "in_segment",
            Operator::NotInSegment => "not_in_segment",
        }
    }

    /// Whether the operator tests segment membership (and so takes no `attribute`).
    pub fn is_segment(self) -> bool {
        matches!(self, Operator::InSegment | Operator::NotInSegment)
    }

    /// Whether the operator compares versions.
    pub fn is_semver(self) -> bool {
        matches!(
            self,
            Operator::SemverEq
                | Operator::SemverNe
                | Operator::SemverLt
                | Operator::SemverLte
                | Operator::SemverGt
                | Operator::SemverGte
                | Operator::SemverCaret
                | Operator::SemverTilde
        )
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// A flag that must serve one of `variants` for the flag that lists it to be on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prerequisite {
    /// The flag evaluated first, with the same context.
    flag: FlagKey,
    /// The variants it must serve (not disabled, not in error).
    variants: Vec<String>,
}

impl Prerequisite {
    /// The flag evaluated first.
    pub fn flag(&self) -> &FlagKey {
        &self.flag
    }

    /// The variants it must serve.
    pub fn variants(&self) -> &[String] {
        &self.variants
    }

    /// Whether `variant` is one of the listed ones.
    pub fn accepts(&self, variant: &str) -> bool {
        self.variants.iter().any(|listed| listed == variant)
    }
}

/// A variant and its share of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WeightedVariant {
    /// The variant served to this share.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    variant: Arc<str>,
    /// The share's weight, relative to the rollout's total.
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0, maximum = 4294967295_u64))]
    weight: u32,
}

impl WeightedVariant {
    /// The variant served to this share.
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// The share's weight, relative to the rollout's total.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// A percentage rollout: an ordered list of weighted variants whose total weight is positive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    entries: Vec<WeightedVariant>,
    total_weight: u64,
}

impl Rollout {
    /// The weighted variants, in order (order matters for bucketing).
    pub fn entries(&self) -> &[WeightedVariant] {
        &self.entries
    }

    /// The sum of all weights; 0 only for the empty (absent) rollout.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// Whether there is no rollout.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Serialize for Rollout {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(serializer)
    }
}

/// The loose JSON shape of a flag, before validation: what a PUT body or a stored row holds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        as = FlagDefinition,
        description = "A flag as a client writes it: every field optional, `null` meaning the \
                       default; `key`, `version` and `updatedAt` are the server's."
    )
)]
pub struct FlagDocument {
    /// Must equal the path key when present.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub key: Option<String>,
    /// Defaults to `""`.
    pub description: Option<String>,
    /// Defaults to `false`.
    #[cfg_attr(feature = "openapi", schema(default = false))]
    pub enabled: Option<bool>,
    /// Defaults to `{"on": true, "off": false}`.
    #[cfg_attr(feature = "openapi", schema(default = json!({"on": true, "off": false})))]
    pub variants: Option<BTreeMap<String, Value>>,
    /// Defaults to `on`.
    #[cfg_attr(feature = "openapi", schema(default = "on"))]
    pub default_variant: Option<String>,
    /// Defaults to `off`.
    #[cfg_attr(feature = "openapi", schema(default = "off"))]
    pub off_variant: Option<String>,
    /// Defaults to no rules.
    pub rules: Option<Vec<RuleDocument>>,
    /// Defaults to no rollout.
    pub rollout: Option<Vec<WeightedVariantDocument>>,
    /// Defaults to an empty map.
    pub metadata: Option<BTreeMap<String, String>>,
    /// The attribute rollouts hash; defaults to `targetingKey`.
    pub bucket_by: Option<String>,
    /// Flags that must serve one of the listed variants first; defaults to none.
    pub prerequisites: Option<Vec<PrerequisiteDocument>>,
    /// Server-set; ignored in a definition.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, read_only))]
    pub version: Option<Value>,
    /// Server-set; ignored in a definition.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, format = DateTime, read_only)
    )]
    pub updated_at: Option<Value>,
    /// Server-set: why a stored flag could not be read; refused in a definition.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub error: Option<String>,
}

/// The loose JSON shape of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        as = RuleDefinition,
        description = "A rule as a client writes it: when all conditions match, serve exactly \
                       one of `variant` and `rollout`."
    )
)]
pub struct RuleDocument {
    /// Defaults to no conditions (always matches).
    pub conditions: Option<Vec<ConditionDocument>>,
    /// The variant served on a match (exclusive with `rollout`).
    pub variant: Option<String>,
    /// The rollout served on a match (exclusive with `variant`).
    pub rollout: Option<Vec<WeightedVariantDocument>>,
    /// The attribute this rule's rollout hashes (only with `rollout`).
    #[serde(rename = "bucketBy")]
    pub bucket_by: Option<String>,
}

/// The loose JSON shape of a prerequisite.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        as = PrerequisiteDefinition,
        description = "A flag of the same environment that must serve one of `variants`."
    )
)]
pub struct PrerequisiteDocument {
    /// The prerequisite flag's key.
    pub flag: String,
    /// The variants it must serve (at least one).
    pub variants: Vec<String>,
}

/// The loose JSON shape of a condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        as = ConditionDefinition,
        description = "A condition as a client writes it; `value` is an array for `in` and \
                       `not_in`, absent for `exists`, a version for the `semver_*` operators, \
                       a regular expression for `matches` and a segment key (with no \
                       `attribute`) for `in_segment` and `not_in_segment`."
    )
)]
pub struct ConditionDocument {
    /// The context attribute tested; absent for `in_segment` and `not_in_segment`.
    #[serde(default)]
    pub attribute: Option<String>,
    /// The operator's name, such as `in` or `starts_with`.
    #[cfg_attr(feature = "openapi", schema(value_type = Operator))]
    pub operator: String,
    /// The operand: any JSON, absent for `exists` (an explicit `null` is kept, as `Some(Null)`).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub value: Option<Value>,
}

/// Tells an explicit `null` (`Some(Null)`) from a missing field (`None`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The loose JSON shape of a rollout entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(as = WeightedVariantDefinition, description = "A variant and its share of a rollout.")
)]
pub struct WeightedVariantDocument {
    /// The variant served to this share.
    pub variant: String,
    /// The share's weight: any JSON here, which validation demands be a whole number from 0 to
    /// 2^32 - 1.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = i64, minimum = 0, maximum = 4294967295_u64)
    )]
    pub weight: Value,
}

/// A flag definition that breaks a rule, naming the field (`rules[0].rollout[1].weight`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    field: String,
    reason: ValidationReason,
}

impl ValidationError {
    pub(crate) fn new(field: impl Into<String>, reason: ValidationReason) -> Self {
        Self {
            field: field.into(),
            reason,
        }
    }

    /// The JSON path of the offending field, `$` for the whole document.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the field is refused.
    pub fn reason(&self) -> &ValidationReason {
        &self.reason
    }
}

/// The ways a flag definition can be invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationReason {
    /// Not JSON, or JSON of the wrong shape or type (including unknown fields).
    #[error("{0}")]
    Malformed(String),
    /// A key or other name outside its grammar.
    #[error("{0}")]
    InvalidName(NameError),
    /// The body's `key` differs from the key in the path.
    #[error("body key {body:?} does not match path key {path:?}")]
    KeyMismatch {
        /// The key in the URL.
        path: String,
        /// The key in the body.
        body: String,
    },
    /// A variant name that is not in `variants`.
    #[error("unknown variant {0:?} (not in `variants`)")]
    UnknownVariant(String),
    /// A variant name that is empty or too long.
    #[error("variant names must be 1 to 128 characters long")]
    BadVariantName,
    /// A variant value of `null`.
    #[error("variant values must not be null")]
    NullVariantValue,
    /// `variants` is empty.
    #[error("at least one variant is required")]
    NoVariants,
    /// A negative weight.
    #[error("weight must not be negative, got {0}")]
    NegativeWeight(String),
    /// A weight that is not a whole number in range.
    #[error("weight must be a whole number from 0 to 4294967295, got {0}")]
    BadWeight(String),
    /// A rollout whose weights add up to 0.
    #[error("weights must sum to more than 0")]
    ZeroTotalWeight,
    /// A rollout whose weights add up to more than 2^32 - 1.
    #[error("weights must sum to at most 4294967295")]
    TotalWeightTooLarge,
    /// A rule with both `variant` and `rollout`, or neither.
    #[error("a rule needs exactly one of `variant` and `rollout`")]
    RuleOutcome,
    /// An operator that does not exist.
    #[error(
        "unknown operator {0:?}; expected one of in, not_in, equals, not_equals, starts_with, ends_with, contains, gt, gte, lt, lte, exists, semver_eq, semver_ne, semver_lt, semver_lte, semver_gt, semver_gte, semver_caret, semver_tilde, matches, in_segment, not_in_segment"
    )]
    UnknownOperator(String),
    /// An empty attribute name.
    #[error("attribute must not be empty")]
    EmptyAttribute,
    /// An attribute given to a segment operator, which tests the whole context.
    #[error("in_segment and not_in_segment take no attribute")]
    SegmentAttribute,
    /// A segment operator where segments cannot be referred to (a segment's own rules).
    #[error("a segment's rules cannot refer to segments")]
    NestedSegment,
    /// A reserved (`$`) attribute other than `$now`, or one where none may be named.
    #[error(
        "{0:?} is reserved: attributes starting with `$` are set by the server (only `$now` exists)"
    )]
    ReservedAttribute(String),
    /// A `semver_*` value that is not a SemVer 2.0 version.
    #[error("{0:?} is not a semantic version (MAJOR.MINOR.PATCH, SemVer 2.0, a leading v allowed)")]
    BadVersion(String),
    /// A `matches` pattern that does not compile, or is too large.
    #[error("{0}")]
    BadPattern(String),
    /// A `bucketBy` that cannot be used.
    #[error("{0}")]
    BadBucketBy(&'static str),
    /// A prerequisite that cannot be used as written.
    #[error("{0}")]
    BadPrerequisite(String),
    /// A condition `value` of the wrong shape for its operator.
    #[error("operator {operator} needs {expected}")]
    BadOperand {
        /// The operator's name.
        operator: &'static str,
        /// What it needs, in words.
        expected: &'static str,
    },
    /// A server-set field of a stored flag that is missing or malformed.
    #[error("{0}")]
    BadServerField(&'static str),
}

impl FlagDocument {
    /// Validates this document into a flag with the given key, version and timestamp.
    fn validate(
        self,
        key: FlagKey,
        version: u64,
        updated_at: OffsetDateTime,
    ) -> Result<FeatureFlag, ValidationError> {
        let variants = match self.variants {
            None => BTreeMap::from([
                (Arc::from("off"), Value::Bool(false)),
                (Arc::from("on"), Value::Bool(true)),
            ]),
            Some(map) => {
                if map.is_empty() {
                    return Err(ValidationError::new(
                        "variants",
                        ValidationReason::NoVariants,
                    ));
                }
                let mut variants = BTreeMap::new();
                for (name, value) in map {
                    if name.is_empty() || name.chars().count() > 128 {
                        return Err(ValidationError::new(
                            format!("variants.{}", shorten(&name)),
                            ValidationReason::BadVariantName,
                        ));
                    }
                    if value.is_null() {
                        return Err(ValidationError::new(
                            format!("variants.{name}"),
                            ValidationReason::NullVariantValue,
                        ));
                    }
                    variants.insert(Arc::<str>::from(name), value);
                }
                variants
            }
        };
        let names = VariantNames(&variants);
        let default_variant = names.resolve(
            "defaultVariant",
            self.default_variant.as_deref().unwrap_or("on"),
        )?;
        let off_variant =
            names.resolve("offVariant", self.off_variant.as_deref().unwrap_or("off"))?;

        let rules = self
            .rules
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, rule)| rule.validate(&format!("rules[{index}]"), &names))
            .collect::<Result<Vec<_>, _>>()?;

        let rollout = match self.rollout {
            Some(entries) if !entries.is_empty() => validate_rollout("rollout", entries, &names)?,
            _ => Rollout::default(),
        };
        let bucket_by = validate_bucket_by("bucketBy", self.bucket_by)?;
        let prerequisites = validate_prerequisites(&key, self.prerequisites.unwrap_or_default())?;
        let environment_needed = !prerequisites.is_empty()
            || rules
                .iter()
                .flat_map(|rule: &Rule| &rule.conditions)
                .any(|condition| condition.segment().is_some());

        Ok(FeatureFlag {
            key,
            description: self.description.unwrap_or_default(),
            enabled: self.enabled.unwrap_or(false),
            variants,
            default_variant,
            off_variant,
            rules,
            rollout,
            metadata: self.metadata.unwrap_or_default(),
            bucket_by,
            prerequisites,
            version,
            updated_at,
            unreadable: None,
            renderings: Renderings::default(),
            environment_needed,
        })
    }
}

/// The fields of each level of a stored flag that this release reads; any other is a newer
/// release's and is ignored when reading stored data (a test holds these lists equal to what a
/// flag serializes).
const FLAG_FIELDS: &[&str] = &[
    "key",
    "description",
    "enabled",
    "variants",
    "defaultVariant",
    "offVariant",
    "rules",
    "rollout",
    "metadata",
    "bucketBy",
    "prerequisites",
    "version",
    "updatedAt",
    "error",
];
const RULE_FIELDS: &[&str] = &["conditions", "variant", "rollout", "bucketBy"];
pub(crate) const CONDITION_FIELDS: &[&str] = &["attribute", "operator", "value"];
const WEIGHTED_VARIANT_FIELDS: &[&str] = &["variant", "weight"];
const PREREQUISITE_FIELDS: &[&str] = &["flag", "variants"];

/// Keeps only `fields` of a JSON object (anything else is left alone).
pub(crate) fn keep(value: &mut Value, fields: &[&str]) {
    if let Value::Object(object) = value {
        object.retain(|name, _| fields.contains(&name.as_str()));
    }
}

/// Keeps only the known fields of each condition in `conditions` (an array, if it is one).
pub(crate) fn keep_conditions(conditions: Option<&mut Value>) {
    if let Some(Value::Array(conditions)) = conditions {
        conditions
            .iter_mut()
            .for_each(|condition| keep(condition, CONDITION_FIELDS));
    }
}

/// Drops, at every level of a stored flag, the fields this release does not know.
fn keep_known_fields(flag: &mut Value) {
    fn keep_rollout(value: Option<&mut Value>) {
        if let Some(Value::Array(entries)) = value {
            entries
                .iter_mut()
                .for_each(|entry| keep(entry, WEIGHTED_VARIANT_FIELDS));
        }
    }
    keep(flag, FLAG_FIELDS);
    let Value::Object(flag) = flag else {
        return;
    };
    keep_rollout(flag.get_mut("rollout"));
    if let Some(Value::Array(prerequisites)) = flag.get_mut("prerequisites") {
        prerequisites
            .iter_mut()
            .for_each(|prerequisite| keep(prerequisite, PREREQUISITE_FIELDS));
    }
    if let Some(Value::Array(rules)) = flag.get_mut("rules") {
        for rule in rules {
            keep(rule, RULE_FIELDS);
            if let Value::Object(rule) = rule {
                keep_rollout(rule.get_mut("rollout"));
                keep_conditions(rule.get_mut("conditions"));
            }
        }
    }
}

/// A stored flag, read tolerantly: fields this release does not know are ignored, then the
/// flag is validated as a [`FlagDocument`].
impl TryFrom<Value> for FeatureFlag {
    type Error = ValidationError;

    fn try_from(mut stored: Value) -> Result<Self, ValidationError> {
        keep_known_fields(&mut stored);
        let document: FlagDocument = serde_json::from_value(stored).map_err(|error| {
            ValidationError::new("$", ValidationReason::Malformed(error.to_string()))
        })?;
        Self::try_from(document)
    }
}

/// Stored flags carry their key, version and timestamp.
impl TryFrom<FlagDocument> for FeatureFlag {
    type Error = ValidationError;

    fn try_from(mut document: FlagDocument) -> Result<Self, ValidationError> {
        let (key, version, updated_at) = server_fields(
            document.key.take(),
            document.version.take(),
            document.updated_at.take(),
            FlagKey::parse,
        )?;
        if let Some(why) = document.error.take() {
            return Ok(FeatureFlag::unreadable(key, version, updated_at, why));
        }
        document.validate(key, version, updated_at)
    }
}

/// What a PUT body may not say of the server-set fields: an `error`, or a `key` other than the
/// path's.
pub(crate) fn check_definition(
    path_key: &str,
    body_key: Option<&str>,
    has_error: bool,
) -> Result<(), ValidationError> {
    if has_error {
        return Err(ValidationError::new(
            "error",
            ValidationReason::BadServerField("error is set by the server only"),
        ));
    }
    if let Some(key) = body_key
        && key != path_key
    {
        return Err(ValidationError::new(
            "key",
            ValidationReason::KeyMismatch {
                path: path_key.to_owned(),
                body: key.chars().take(140).collect(),
            },
        ));
    }
    Ok(())
}

/// The key, version and timestamp a stored definition must carry, read.
pub(crate) fn server_fields<K>(
    key: Option<String>,
    version: Option<Value>,
    updated_at: Option<Value>,
    parse_key: impl FnOnce(&str) -> Result<K, NameError>,
) -> Result<(K, u64, OffsetDateTime), ValidationError> {
    let raw_key = key.ok_or_else(|| {
        ValidationError::new("key", ValidationReason::BadServerField("key is required"))
    })?;
    let key = parse_key(&raw_key)
        .map_err(|error| ValidationError::new("key", ValidationReason::InvalidName(error)))?;
    let version = version.and_then(|value| value.as_u64()).ok_or_else(|| {
        ValidationError::new(
            "version",
            ValidationReason::BadServerField("version must be a non-negative integer"),
        )
    })?;
    let updated_at = updated_at
        .and_then(|value| value.as_str().and_then(parse_rfc3339))
        .ok_or_else(|| {
            ValidationError::new(
                "updatedAt",
                ValidationReason::BadServerField("updatedAt must be an RFC 3339 timestamp"),
            )
        })?;
    Ok((key, version, updated_at))
}

fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Looks variant names up in the flag's variants, sharing the stored `Arc<str>`.
struct VariantNames<'a>(&'a BTreeMap<Arc<str>, Value>);

impl VariantNames<'_> {
    fn resolve(&self, field: &str, name: &str) -> Result<Arc<str>, ValidationError> {
        self.0
            .get_key_value(name)
            .map(|(stored, _)| Arc::clone(stored))
            .ok_or_else(|| {
                ValidationError::new(field, ValidationReason::UnknownVariant(shorten(name)))
            })
    }
}

impl RuleDocument {
    fn validate(self, path: &str, names: &VariantNames<'_>) -> Result<Rule, ValidationError> {
        let conditions = self
            .conditions
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, condition)| {
                condition.validate(&format!("{path}.conditions[{index}]"), Segments::Allowed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bucket_by = validate_bucket_by(&format!("{path}.bucketBy"), self.bucket_by)?;
        if bucket_by.is_some() && self.rollout.is_none() {
            return Err(ValidationError::new(
                format!("{path}.bucketBy"),
                ValidationReason::BadBucketBy("bucketBy applies to a rule with a `rollout` only"),
            ));
        }
        let (variant, rollout) = match (self.variant, self.rollout) {
            (Some(variant), None) => (
                Some(names.resolve(&format!("{path}.variant"), &variant)?),
                None,
            ),
            (None, Some(entries)) => (
                None,
                Some(validate_rollout(
                    &format!("{path}.rollout"),
                    entries,
                    names,
                )?),
            ),
            _ => return Err(ValidationError::new(path, ValidationReason::RuleOutcome)),
        };
        Ok(Rule {
            conditions,
            variant,
            rollout,
            bucket_by,
        })
    }
}

/// Whether conditions may refer to segments where they are being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segments {
    /// In a flag's rules.
    Allowed,
    /// In a segment's own rules.
    Refused,
}

/// The reserved attribute holding the evaluation time in Unix seconds.
pub const NOW_ATTRIBUTE: &str = "$now";

impl ConditionDocument {
    pub(crate) fn validate(
        self,
        path: &str,
        segments: Segments,
    ) -> Result<Condition, ValidationError> {
        let operator = Operator::parse(&self.operator).ok_or_else(|| {
            ValidationError::new(
                format!("{path}.operator"),
                ValidationReason::UnknownOperator(shorten(&self.operator)),
            )
        })?;
        let attribute = if operator.is_segment() {
            if segments == Segments::Refused {
                return Err(ValidationError::new(
                    format!("{path}.operator"),
                    ValidationReason::NestedSegment,
                ));
            }
            if self.attribute.is_some() {
                return Err(ValidationError::new(
                    format!("{path}.attribute"),
                    ValidationReason::SegmentAttribute,
                ));
            }
            String::new()
        } else {
            let attribute = self.attribute.unwrap_or_default();
            if attribute.is_empty() {
                return Err(ValidationError::new(
                    format!("{path}.attribute"),
                    ValidationReason::EmptyAttribute,
                ));
            }
            if attribute.starts_with('$') && attribute != NOW_ATTRIBUTE {
                return Err(ValidationError::new(
                    format!("{path}.attribute"),
                    ValidationReason::ReservedAttribute(shorten(&attribute)),
                ));
            }
            attribute
        };
        let bad = |expected: &'static str| {
            ValidationError::new(
                format!("{path}.value"),
                ValidationReason::BadOperand {
                    operator: operator.as_str(),
                    expected,
                },
            )
        };
        let value = match (operator, self.value) {
            (Operator::Exists, None) => None,
            (Operator::Exists, Some(_)) => return Err(bad("no `value`")),
            (_, None) => return Err(bad("a `value`")),
            (Operator::In | Operator::NotIn, Some(value)) if !value.is_array() => {
                return Err(bad("an array `value`"));
            }
            (Operator::StartsWith | Operator::EndsWith, Some(value)) if !value.is_string() => {
                return Err(bad("a string `value`"));
            }
            (Operator::Contains, Some(Value::Null)) => return Err(bad("a non-null `value`")),
            (Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte, Some(value))
                if !value.is_number() =>
            {
                return Err(bad("a number `value`"));
            }
            (operator, Some(value))
                if (operator.is_semver()
                    || operator.is_segment()
                    || operator == Operator::Matches)
                    && !value.is_string() =>
            {
                return Err(bad("a string `value`"));
            }
            (_, value) => value,
        };
        let compiled = match (operator, value.as_ref()) {
            (operator, Some(Value::String(text))) if operator.is_semver() => operand::version(text)
                .map(Compiled::Version)
                .ok_or_else(|| {
                    ValidationError::new(
                        format!("{path}.value"),
                        ValidationReason::BadVersion(shorten(text)),
                    )
                })?,
            (Operator::Matches, Some(Value::String(pattern))) => operand::pattern(pattern)
                .map(Compiled::Pattern)
                .map_err(|why| {
                    ValidationError::new(format!("{path}.value"), ValidationReason::BadPattern(why))
                })?,
            (operator, Some(Value::String(key))) if operator.is_segment() => SegmentKey::parse(key)
                .map(Compiled::Segment)
                .map_err(|error| {
                    ValidationError::new(
                        format!("{path}.value"),
                        ValidationReason::InvalidName(error),
                    )
                })?,
            _ => Compiled::None,
        };
        Ok(Condition {
            attribute,
            operator,
            value,
            compiled,
        })
    }
}

/// A `bucketBy` as written: absent, or a non-empty attribute that is not reserved.
fn validate_bucket_by(
    path: &str,
    bucket_by: Option<String>,
) -> Result<Option<String>, ValidationError> {
    match bucket_by {
        None => Ok(None),
        Some(attribute) if attribute.is_empty() => Err(ValidationError::new(
            path,
            ValidationReason::BadBucketBy("bucketBy must name an attribute"),
        )),
        Some(attribute) if attribute.starts_with('$') => Err(ValidationError::new(
            path,
            ValidationReason::ReservedAttribute(shorten(&attribute)),
        )),
        Some(attribute) => Ok(Some(attribute)),
    }
}

/// The prerequisites of the flag `key` as written: valid keys, never `key` itself, none twice,
/// each with at least one variant.
fn validate_prerequisites(
    key: &FlagKey,
    documents: Vec<PrerequisiteDocument>,
) -> Result<Vec<Prerequisite>, ValidationError> {
    let mut prerequisites: Vec<Prerequisite> = Vec::with_capacity(documents.len());
    for (index, document) in documents.into_iter().enumerate() {
        let path = format!("prerequisites[{index}]");
        let flag = FlagKey::parse(&document.flag).map_err(|error| {
            ValidationError::new(format!("{path}.flag"), ValidationReason::InvalidName(error))
        })?;
        let refuse = |field: &str, why: String| {
            Err(ValidationError::new(
                format!("{path}.{field}"),
                ValidationReason::BadPrerequisite(why),
            ))
        };
        if &flag == key {
            return refuse("flag", format!("flag {key} cannot be its own prerequisite"));
        }
        if prerequisites.iter().any(|listed| listed.flag == flag) {
            return refuse("flag", format!("flag {flag} is listed twice"));
        }
        if document.variants.is_empty() {
            return refuse("variants", "at least one variant is required".to_owned());
        }
        if let Some(bad) = document
            .variants
            .iter()
            .find(|name| name.is_empty() || name.chars().count() > 128)
        {
            return refuse(
                "variants",
                format!(
                    "variant names are 1 to 128 characters long, got {:?}",
                    shorten(bad)
                ),
            );
        }
        prerequisites.push(Prerequisite {
            flag,
            variants: document.variants,
        });
    }
    Ok(prerequisites)
}

fn validate_rollout(
    path: &str,
    entries: Vec<WeightedVariantDocument>,
    names: &VariantNames<'_>,
) -> Result<Rollout, ValidationError> {
    let mut total: u64 = 0;
    let mut validated = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let variant = names.resolve(&format!("{path}[{index}].variant"), &entry.variant)?;
        let weight = parse_weight(&entry.weight)
            .map_err(|reason| ValidationError::new(format!("{path}[{index}].weight"), reason))?;
        total += u64::from(weight);
        if total > u64::from(u32::MAX) {
            return Err(ValidationError::new(
                path,
                ValidationReason::TotalWeightTooLarge,
            ));
        }
        validated.push(WeightedVariant { variant, weight });
    }
    if total == 0 {
        return Err(ValidationError::new(
            path,
            ValidationReason::ZeroTotalWeight,
        ));
    }
    Ok(Rollout {
        entries: validated,
        total_weight: total,
    })
}

fn parse_weight(value: &Value) -> Result<u32, ValidationReason> {
    let shown = || shorten(&value.to_string());
    let Value::Number(number) = value else {
        return Err(ValidationReason::BadWeight(shown()));
    };
    if let Some(whole) = number.as_u64() {
        return u32::try_from(whole).map_err(|_| ValidationReason::BadWeight(shown()));
    }
    if number.as_i64().is_some() || number.as_f64().is_some_and(|f| f < 0.0) {
        return Err(ValidationReason::NegativeWeight(shown()));
    }
    // A float such as 25.0 is a whole number written with a fraction part; accept it exactly.
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f <= f64::from(u32::MAX) => Ok(f as u32),
        _ => Err(ValidationReason::BadWeight(shown())),
    }
}

/// Cuts user-supplied text that is echoed in an error to a readable length.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(140).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}
