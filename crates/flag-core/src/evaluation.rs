//! The evaluation engine: which variant a flag serves to a context, and why.
//!
//! Order: a disabled flag serves `offVariant` (`DISABLED`). An enabled flag serves the first rule
//! whose conditions all match (`TARGETING_MATCH` for a variant, `SPLIT` for a rollout); when no
//! rule matches, its `rollout` if it has one (`SPLIT`), else `defaultVariant` (`STATIC` when the
//! flag has no rules, `DEFAULT` otherwise). A rollout without a targeting key is the error
//! `TARGETING_KEY_MISSING`.
//!
//! Conditions never fail: a missing (or `null`) attribute, or one of the wrong JSON type, makes
//! the condition not match, for the negative operators too. "Wrong type" means:
//! - `equals` / `not_equals`: the attribute's JSON type differs from `value`'s (so `"5"` neither
//!   equals nor not-equals `5`); numbers compare by value (`1` equals `1.0`).
//! - `in` / `not_in`: no element of `value` has the attribute's JSON type. An empty list is
//!   the exception: nothing is `in` it, and every present attribute is `not_in` it.
//! - `starts_with` / `ends_with`: the attribute is not a string.
//! - `contains`: the attribute is neither a string (substring test, `value` a string) nor an
//!   array (element test, any `value`).
//! - `gt` / `gte` / `lt` / `lte`: the attribute is not a number.
//!
//! - `semver_*`: the attribute is not a string holding a SemVer 2.0 version.
//! - `matches`: the attribute is not a string.
//! - `in_segment` / `not_in_segment`: the segment does not exist in the environment (a write
//!   never leaves such a reference; an older release's write might) or could not be read.
//!
//! String comparisons are case-sensitive and by Unicode scalar values, with no normalisation.
//!
//! An enabled flag with `prerequisites` first evaluates each of them, in order, with the same
//! context; when one is missing, disabled, in error or serves a variant not listed, the flag
//! serves its `offVariant` with reason `DISABLED`. Prerequisites and segments are read from the
//! environment's snapshot ([`Scope`]): no evaluation reads anything else, and one [`Scope`]
//! evaluates each flag at most once however many flags list it (a bulk evaluation shares one).
//! A chain deeper than [`MAX_PREREQUISITE_DEPTH`], or a cycle (which writes refuse), fails the
//! prerequisite rather than recursing.
//!
//! Reserved attributes: `$now` is the evaluation time in whole Unix seconds, the same for every
//! flag of one [`Scope`]; no other `$` attribute exists, and a context cannot set one (a
//! context's own `$now` is ignored).
//!
//! `bucketBy`: a rollout hashes the flag key followed by the value of that attribute (a string,
//! or a number as JSON writes it, `42` or `1.5`), exactly as flagd's `fractional` over
//! `{"cat": [{"var": "$flagd.flagKey"}, {"var": attribute}]}`; a missing attribute, or one of
//! another type, is the error `TARGETING_KEY_MISSING` naming it.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Number, Value};

use crate::bucketing::{self, Placement};
use crate::context::{EvaluationContext, TARGETING_KEY};
use crate::flag::{
    Condition, FeatureFlag, NOW_ATTRIBUTE, Operator, Prerequisite, Rollout, RuleOutcome,
};
use crate::fnv::FnvBuildHasher;
use crate::names::FlagKey;
use crate::operand::{self, Compiled};
use crate::segment::Segment;
use crate::snapshot::EnvironmentSnapshot;

/// The longest chain of prerequisites evaluated (and the deepest a write may make).
pub const MAX_PREREQUISITE_DEPTH: usize = 8;

/// Why a variant was served, in OpenFeature's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum Reason {
    /// The flag has no rules and no rollout: everyone gets the default variant.
    Static,
    /// The flag has rules, none matched, and there is no rollout.
    Default,
    /// A rule matched and serves a fixed variant.
    TargetingMatch,
    /// A percentage rollout chose the variant.
    Split,
    /// The flag is disabled.
    Disabled,
    /// Served from the last snapshot known to be good while the stores were unreachable.
    Cached,
    /// The evaluation failed.
    Error,
}

impl Reason {
    /// How many reasons there are.
    pub(crate) const COUNT: usize = 7;

    /// Every reason, in the order of [`Self::index`].
    pub(crate) const ALL: [Reason; Reason::COUNT] = [
        Reason::Static,
        Reason::Default,
        Reason::TargetingMatch,
        Reason::Split,
        Reason::Disabled,
        Reason::Cached,
        Reason::Error,
    ];

    /// The reason's place among the [`Self::COUNT`] reasons.
    pub(crate) fn index(self) -> usize {
        match self {
            Reason::Static => 0,
            Reason::Default => 1,
            Reason::TargetingMatch => 2,
            Reason::Split => 3,
            Reason::Disabled => 4,
            Reason::Cached => 5,
            Reason::Error => 6,
        }
    }

    /// The reason as OFREP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::Default => "DEFAULT",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Cached => "CACHED",
            Reason::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OpenFeature error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request could not be parsed.
    ParseError,
    /// A rollout needed a targeting key and the context had none.
    TargetingKeyMissing,
    /// The context is not usable.
    InvalidContext,
    /// No flag with that key in that environment.
    FlagNotFound,
    /// Anything else.
    General,
}

impl ErrorCode {
    /// The code as OFREP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An evaluation that produced no variant; a value, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvaluationError {
    /// The environment has no flag with this key.
    #[error("flag {key} was not found")]
    FlagNotFound {
        /// The key asked for.
        key: FlagKey,
    },
    /// The flag serves a rollout here and the context has no `targetingKey`.
    #[error("flag {key} needs a targetingKey for its percentage rollout")]
    TargetingKeyMissing {
        /// The flag evaluated.
        key: FlagKey,
    },
    /// The flag's rollout hashes the attribute `attribute` (`bucketBy`) and the context has no
    /// string or number there.
    #[error(
        "flag {key} buckets its percentage rollout by {attribute:?}, which the context lacks (a string or a number is needed)"
    )]
    BucketingAttributeMissing {
        /// The flag evaluated.
        key: FlagKey,
        /// The `bucketBy` attribute.
        attribute: String,
    },
    /// The flag names a variant it does not have (impossible for a validated flag).
    #[error("flag {key} resolved to a variant it does not define")]
    General {
        /// The flag evaluated.
        key: FlagKey,
    },
    /// The stored flag could not be read (a damaged row); its environment's other flags can.
    #[error("flag {key} is stored in a form that cannot be read: {reason}")]
    Unreadable {
        /// The flag asked for.
        key: FlagKey,
        /// Why it could not be read.
        reason: String,
    },
}

impl EvaluationError {
    /// The OpenFeature error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            EvaluationError::FlagNotFound { .. } => ErrorCode::FlagNotFound,
            EvaluationError::TargetingKeyMissing { .. }
            | EvaluationError::BucketingAttributeMissing { .. } => ErrorCode::TargetingKeyMissing,
            EvaluationError::General { .. } | EvaluationError::Unreadable { .. } => {
                ErrorCode::General
            }
        }
    }

    /// The flag the error is about.
    pub fn key(&self) -> &FlagKey {
        match self {
            EvaluationError::FlagNotFound { key }
            | EvaluationError::TargetingKeyMissing { key }
            | EvaluationError::BucketingAttributeMissing { key, .. }
            | EvaluationError::General { key }
            | EvaluationError::Unreadable { key, .. } => key,
        }
    }
}

/// The variant a flag serves to a context, borrowed from the flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution<'f> {
    /// The variant's name.
    pub variant: &'f Arc<str>,
    /// The variant's value.
    pub value: &'f Value,
    /// Why it was served.
    pub reason: Reason,
}

/// What an evaluation may consult beyond the flag and the context: the environment's snapshot
/// (segments, prerequisite flags) and the evaluation time (`$now`). One scope serves one
/// request; it remembers each flag it evaluated, so a prerequisite shared by many flags is
/// evaluated once. Not shared between threads.
#[derive(Debug)]
pub struct Scope<'s> {
    environment: Option<&'s EnvironmentSnapshot>,
    now: Value,
    /// Keyed by the environment's own flag keys (never a client's), so hashed with FNV.
    outcomes: RefCell<HashMap<FlagKey, Outcome, FnvBuildHasher>>,
    evaluated: Cell<usize>,
}

/// A flag's answer as prerequisites and bulk evaluations reuse it.
#[derive(Debug, Clone)]
enum Outcome {
    /// Being evaluated further up this chain: a cycle if met again.
    InProgress,
    /// Evaluated.
    Done(Result<(Arc<str>, Reason), EvaluationError>),
}

impl<'s> Scope<'s> {
    /// Evaluations within `environment`, at the current time.
    pub fn new(environment: &'s EnvironmentSnapshot) -> Self {
        Self::with(Some(environment))
    }

    /// Evaluations of flags on their own: no segment exists and every prerequisite is missing.
    pub fn standalone() -> Scope<'static> {
        Scope::with(None)
    }

    fn with(environment: Option<&'s EnvironmentSnapshot>) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Self {
            environment,
            now: Value::from(now),
            outcomes: RefCell::default(),
            evaluated: Cell::new(0),
        }
    }

    /// The same scope evaluating at `unix_seconds` (`$now`), for tests and previews.
    #[must_use]
    pub fn at(mut self, unix_seconds: i64) -> Self {
        self.now = Value::from(unix_seconds);
        self
    }

    /// How many flag evaluations this scope has run (prerequisites included).
    pub fn evaluations(&self) -> usize {
        self.evaluated.get()
    }

    /// An attribute as conditions see it: reserved (`$`) names from the scope, never the
    /// context; the rest from the context.
    fn attribute<'a>(&'a self, context: &'a EvaluationContext, name: &str) -> Option<&'a Value> {
        if name.starts_with('$') {
            return (name == NOW_ATTRIBUTE).then_some(&self.now);
        }
        context.attribute(name)
    }

    fn segment(&self, key: &str) -> Option<&'s Arc<Segment>> {
        self.environment
            .and_then(|environment| environment.segment(key))
    }

    /// The answer of `flag`: remembered when it is the environment's own and a prerequisite of
    /// another, so that it is evaluated once however many flags list it.
    fn outcome_of(
        &self,
        flag: &Arc<FeatureFlag>,
        context: &EvaluationContext,
    ) -> Result<(Arc<str>, Reason), EvaluationError> {
        // Only answers another flag will ask for are worth remembering.
        let shared = self.environment.is_some_and(|environment| {
            environment.is_prerequisite(flag.key().as_str())
                && environment
                    .flag(flag.key().as_str())
                    .is_some_and(|own| Arc::ptr_eq(own, flag))
        });
        if shared {
            return self.outcome(flag.key(), context, 0);
        }
        evaluate_at(flag, context, self, 0)
            .map(|resolution| (Arc::clone(resolution.variant), resolution.reason))
    }

    /// [`Self::outcome_of`] for a flag taken from the scope's own environment (a bulk evaluation
    /// walking its snapshot), which says whether it is a prerequisite: nothing is looked up.
    fn outcome_of_own(
        &self,
        flag: &Arc<FeatureFlag>,
        prerequisite: bool,
        context: &EvaluationContext,
    ) -> Result<(Arc<str>, Reason), EvaluationError> {
        if prerequisite && self.environment.is_some() {
            return self.outcome(flag.key(), context, 0);
        }
        evaluate_at(flag, context, self, 0)
            .map(|resolution| (Arc::clone(resolution.variant), resolution.reason))
    }

    /// Whether `prerequisite` passes, when the scope has its flag's answer already: read in
    /// place, nothing cloned (most flags that list a prerequisite find it answered).
    fn remembered_pass(&self, prerequisite: &Prerequisite) -> Option<bool> {
        match self.outcomes.borrow().get(prerequisite.flag())? {
            Outcome::Done(Ok((variant, reason))) => {
                Some(*reason != Reason::Disabled && prerequisite.accepts(variant))
            }
            Outcome::Done(Err(_)) => Some(false),
            Outcome::InProgress => None,
        }
    }

    /// The answer of the environment's flag `key`, evaluated at most once per scope.
    fn outcome(
        &self,
        key: &FlagKey,
        context: &EvaluationContext,
        depth: usize,
    ) -> Result<(Arc<str>, Reason), EvaluationError> {
        match self.outcomes.borrow().get(key) {
            Some(Outcome::Done(outcome)) => return outcome.clone(),
            Some(Outcome::InProgress) => {
                return Err(EvaluationError::General { key: key.clone() });
            }
            None => {}
        }
        let Some(flag) = self
            .environment
            .and_then(|environment| environment.flag(key.as_str()))
        else {
            return Err(EvaluationError::FlagNotFound { key: key.clone() });
        };
        if depth > MAX_PREREQUISITE_DEPTH {
            return Err(EvaluationError::General { key: key.clone() });
        }
        self.outcomes
            .borrow_mut()
            .insert(key.clone(), Outcome::InProgress);
        let outcome = evaluate_at(flag, context, self, depth)
            .map(|resolution| (Arc::clone(resolution.variant), resolution.reason));
        self.outcomes
            .borrow_mut()
            .insert(key.clone(), Outcome::Done(outcome.clone()));
        outcome
    }
}

/// Evaluates `flag` on its own for `context` (see [`Scope::standalone`]).
pub fn evaluate<'f>(
    flag: &'f FeatureFlag,
    context: &EvaluationContext,
) -> Result<Resolution<'f>, EvaluationError> {
    evaluate_in(flag, context, &Scope::standalone())
}

/// Evaluates `flag` for `context` within `scope` (its environment and time).
pub fn evaluate_in<'f>(
    flag: &'f FeatureFlag,
    context: &EvaluationContext,
    scope: &Scope<'_>,
) -> Result<Resolution<'f>, EvaluationError> {
    evaluate_at(flag, context, scope, 0)
}

/// [`evaluate_in`] at `depth` links down a prerequisite chain.
fn evaluate_at<'f>(
    flag: &'f FeatureFlag,
    context: &EvaluationContext,
    scope: &Scope<'_>,
    depth: usize,
) -> Result<Resolution<'f>, EvaluationError> {
    evaluate_witnessed(flag, context, scope, depth, &mut Unwatched)
}

/// What an evaluation tells whoever watches it, step by step (the explainer); an evaluation
/// nobody watches tells [`Unwatched`], which the compiler removes.
///
/// Why a witness instead of a second evaluator: the explanation is made by the very code that
/// makes the answer, so the two can never disagree.
pub(crate) trait Witness {
    /// Whether anyone listens; when not, conditions stop at a rule's first miss.
    const WATCHING: bool;

    /// A prerequisite's answer, and whether it let the flag go on.
    fn prerequisite(
        &mut self,
        _prerequisite: &Prerequisite,
        _answer: &Result<(Arc<str>, Reason), EvaluationError>,
        _passed: bool,
    ) {
    }

    /// The outcome of condition `condition` of rule `rule`.
    fn condition(&mut self, _rule: usize, _condition: usize, _outcome: ConditionOutcome) {}

    /// Whether rule `rule` matched.
    fn rule(&mut self, _rule: usize, _matched: bool) {}

    /// Where the context fell in the rollout that chose the variant.
    fn split(&mut self, _rollout: &Rollout, _attribute: &str, _value: &str, _placement: Placement) {
    }
}

/// The witness of an evaluation nobody watches.
pub(crate) struct Unwatched;

impl Witness for Unwatched {
    const WATCHING: bool = false;
}

/// [`evaluate_at`], telling `witness` each step.
pub(crate) fn evaluate_witnessed<'f, W: Witness>(
    flag: &'f FeatureFlag,
    context: &EvaluationContext,
    scope: &Scope<'_>,
    depth: usize,
    witness: &mut W,
) -> Result<Resolution<'f>, EvaluationError> {
    scope.evaluated.set(scope.evaluated.get() + 1);
    if let Some(reason) = flag.unreadable_reason() {
        return Err(EvaluationError::Unreadable {
            key: flag.key().clone(),
            reason: reason.to_owned(),
        });
    }
    if !flag.enabled() {
        return resolve(flag, flag.off_variant(), Reason::Disabled);
    }
    for prerequisite in flag.prerequisites() {
        let remembered = if W::WATCHING {
            None
        } else {
            scope.remembered_pass(prerequisite)
        };
        let passes = match remembered {
            Some(passes) => passes,
            None => {
                let answer = scope.outcome(prerequisite.flag(), context, depth + 1);
                let passes = match &answer {
                    Ok((variant, reason)) => {
                        *reason != Reason::Disabled && prerequisite.accepts(variant)
                    }
                    Err(_) => false,
                };
                witness.prerequisite(prerequisite, &answer, passes);
                passes
            }
        };
        if !passes {
            return resolve(flag, flag.off_variant(), Reason::Disabled);
        }
    }
    for (index, rule) in flag.rules().iter().enumerate() {
        let matched = if W::WATCHING {
            // Every condition of the rule, so the explanation shows each one's outcome.
            let mut all = true;
            for (position, condition) in rule.conditions().iter().enumerate() {
                let outcome = condition_outcome(condition, context, scope);
                witness.condition(index, position, outcome);
                all &= outcome.matched();
            }
            witness.rule(index, all);
            all
        } else {
            rule.conditions()
                .iter()
                .all(|condition| matches_in(condition, context, scope))
        };
        if matched {
            return match rule.outcome() {
                RuleOutcome::Variant(variant) => resolve(flag, variant, Reason::TargetingMatch),
                RuleOutcome::Rollout(rollout) => {
                    split(flag, rollout, rule.bucket_by(), context, scope, witness)
                }
            };
        }
    }
    if !flag.rollout().is_empty() {
        return split(flag, flag.rollout(), None, context, scope, witness);
    }
    let reason = if flag.rules().is_empty() {
        Reason::Static
    } else {
        Reason::Default
    };
    resolve(flag, flag.default_variant(), reason)
}

fn split<'f, W: Witness>(
    flag: &'f FeatureFlag,
    rollout: &'f Rollout,
    rule_bucket_by: Option<&str>,
    context: &EvaluationContext,
    scope: &Scope<'_>,
    witness: &mut W,
) -> Result<Resolution<'f>, EvaluationError> {
    let attribute = rule_bucket_by.or(flag.bucket_by());
    let number;
    let value = match attribute {
        None | Some(TARGETING_KEY) => {
            context
                .targeting_key()
                .ok_or_else(|| EvaluationError::TargetingKeyMissing {
                    key: flag.key().clone(),
                })?
        }
        Some(name) => match scope.attribute(context, name) {
            Some(Value::String(text)) => text.as_str(),
            Some(Value::Number(value)) => {
                number = value.to_string();
                number.as_str()
            }
            _ => {
                return Err(EvaluationError::BucketingAttributeMissing {
                    key: flag.key().clone(),
                    attribute: name.to_owned(),
                });
            }
        },
    };
    let placement = bucketing::place(rollout, flag.key().as_str(), value);
    witness.split(
        rollout,
        attribute.unwrap_or(TARGETING_KEY),
        value,
        placement,
    );
    let variant = placement
        .slot
        .and_then(|slot| rollout.entries().get(slot))
        .map_or("", |entry| entry.variant());
    resolve(flag, variant, Reason::Split)
}

fn resolve<'f>(
    flag: &'f FeatureFlag,
    variant: &str,
    reason: Reason,
) -> Result<Resolution<'f>, EvaluationError> {
    let (variant, value) = flag
        .variant(variant)
        .ok_or_else(|| EvaluationError::General {
            key: flag.key().clone(),
        })?;
    Ok(Resolution {
        variant,
        value,
        reason,
    })
}

/// Whether one condition holds for the context, on its own (see [`Scope::standalone`]).
pub fn matches(condition: &Condition, context: &EvaluationContext) -> bool {
    matches_in(condition, context, &Scope::standalone())
}

/// Whether one condition holds for the context within `scope`.
pub fn matches_in(condition: &Condition, context: &EvaluationContext, scope: &Scope<'_>) -> bool {
    condition_outcome(condition, context, scope).matched()
}

/// How one condition came out for a context, as the explainer tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionOutcome {
    /// The attribute was there, of a comparable type, and the comparison held.
    Match,
    /// The attribute was there, of a comparable type, and the comparison did not hold.
    NoMatch,
    /// The context has no such attribute (or it is `null`): no operator matches.
    MissingAttribute,
    /// The attribute's JSON type cannot be compared with the condition's value: no operator
    /// matches, the negative ones included.
    WrongType,
    /// An `in_segment` / `not_in_segment` condition, decided by `part` of the segment.
    Segment {
        /// Which part of the segment decided whether the context is in it.
        part: SegmentPart,
        /// Whether the condition holds.
        matched: bool,
    },
}

impl ConditionOutcome {
    /// Whether the condition holds.
    pub fn matched(self) -> bool {
        match self {
            ConditionOutcome::Match => true,
            ConditionOutcome::Segment { matched, .. } => matched,
            _ => false,
        }
    }

    fn of(held: Option<bool>) -> Self {
        match held {
            Some(true) => ConditionOutcome::Match,
            Some(false) => ConditionOutcome::NoMatch,
            None => ConditionOutcome::WrongType,
        }
    }
}

/// What decided whether a context is in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentPart {
    /// Its targeting key is listed in `included`.
    Included,
    /// Its targeting key is listed in `excluded`.
    Excluded,
    /// All conditions of the segment's rule at this index (from 0) matched.
    Rule(usize),
    /// No rule of the segment matched.
    NoRule,
    /// The segment does not exist in the environment, or could not be read: neither operator
    /// matches.
    Unavailable,
}

/// How `condition` comes out for the context within `scope`: the single place every condition
/// is decided, for answers and explanations alike.
pub fn condition_outcome(
    condition: &Condition,
    context: &EvaluationContext,
    scope: &Scope<'_>,
) -> ConditionOutcome {
    if let (operator @ (Operator::InSegment | Operator::NotInSegment), Compiled::Segment(key)) =
        (condition.operator(), condition.compiled())
    {
        let membership = scope
            .segment(key.as_str())
            .and_then(|segment| membership(segment, context, scope));
        return match membership {
            Some((is_in, part)) => ConditionOutcome::Segment {
                part,
                matched: is_in == (operator == Operator::InSegment),
            },
            None => ConditionOutcome::Segment {
                part: SegmentPart::Unavailable,
                matched: false,
            },
        };
    }
    let Some(attribute) = scope.attribute(context, condition.attribute()) else {
        return ConditionOutcome::MissingAttribute;
    };
    let operand = condition.value();
    let held =
        match condition.operator() {
            Operator::Exists => Some(true),
            Operator::Equals => same_type(attribute, operand)
                .then(|| operand.is_some_and(|v| json_eq(attribute, v))),
            Operator::NotEquals => same_type(attribute, operand)
                .then(|| operand.is_some_and(|v| !json_eq(attribute, v))),
            Operator::In => listed(attribute, operand),
            Operator::NotIn => listed(attribute, operand).map(|found| !found),
            Operator::StartsWith => strings(attribute, operand).map(|(a, v)| a.starts_with(v)),
            Operator::EndsWith => strings(attribute, operand).map(|(a, v)| a.ends_with(v)),
            Operator::Contains => match (attribute, operand) {
                (Value::String(a), Some(Value::String(v))) => Some(a.contains(v.as_str())),
                (Value::Array(items), Some(v)) => Some(items.iter().any(|item| json_eq(item, v))),
                _ => None,
            },
            Operator::Gt => numbers(attribute, operand).map(Ordering::is_gt),
            Operator::Gte => numbers(attribute, operand).map(Ordering::is_ge),
            Operator::Lt => numbers(attribute, operand).map(Ordering::is_lt),
            Operator::Lte => numbers(attribute, operand).map(Ordering::is_le),
            Operator::Matches => match (attribute, condition.compiled()) {
                (Value::String(text), Compiled::Pattern(pattern)) => Some(pattern.is_match(text)),
                _ => None,
            },
            operator if operator.is_semver() => match (attribute, condition.compiled()) {
                (Value::String(text), Compiled::Version(wanted)) => operand::version(text)
                    .map(|version| operand::compare_versions(operator, &version, wanted)),
                _ => None,
            },
            _ => None,
        };
    ConditionOutcome::of(held)
}

/// Whether the context is in `segment` and what decided it; `None` for a segment that could not
/// be read.
fn membership(
    segment: &Segment,
    context: &EvaluationContext,
    scope: &Scope<'_>,
) -> Option<(bool, SegmentPart)> {
    if segment.unreadable_reason().is_some() {
        return None;
    }
    if let Some(key) = context.targeting_key() {
        if segment.included().contains(key) {
            return Some((true, SegmentPart::Included));
        }
        if segment.excluded().contains(key) {
            return Some((false, SegmentPart::Excluded));
        }
    }
    let rule = segment.rules().iter().position(|rule| {
        rule.conditions()
            .iter()
            .all(|condition| matches_in(condition, context, scope))
    });
    Some(match rule {
        Some(index) => (true, SegmentPart::Rule(index)),
        None => (false, SegmentPart::NoRule),
    })
}

/// `Some(found)` when the attribute can be compared with the list, `None` for a wrong type.
fn listed(attribute: &Value, operand: Option<&Value>) -> Option<bool> {
    let Some(Value::Array(items)) = operand else {
        return None;
    };
    if items.is_empty() {
        return Some(false);
    }
    let mut comparable = items
        .iter()
        .filter(|item| same_kind(item, attribute))
        .peekable();
    comparable.peek()?;
    Some(comparable.any(|item| json_eq(item, attribute)))
}

fn strings<'a>(attribute: &'a Value, operand: Option<&'a Value>) -> Option<(&'a str, &'a str)> {
    match (attribute, operand) {
        (Value::String(a), Some(Value::String(v))) => Some((a, v)),
        _ => None,
    }
}

fn numbers(attribute: &Value, operand: Option<&Value>) -> Option<Ordering> {
    match (attribute, operand) {
        (Value::Number(a), Some(Value::Number(v))) => compare_numbers(a, v),
        _ => None,
    }
}

fn same_type(attribute: &Value, operand: Option<&Value>) -> bool {
    operand.is_some_and(|v| same_kind(attribute, v))
}

fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// JSON equality in which numbers compare by value, so `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

/// Exact for integers (including beyond 2^53), IEEE order otherwise.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// A finished evaluation that shares the flag it came from (no copy of values or metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    flag: Arc<FeatureFlag>,
    variant: Arc<str>,
    reason: Reason,
}

impl Evaluation {
    /// Evaluates a shared flag on its own for `context` (see [`Scope::standalone`]).
    pub fn of(
        flag: Arc<FeatureFlag>,
        context: &EvaluationContext,
    ) -> Result<Self, EvaluationError> {
        Self::within(flag, context, &Scope::standalone())
    }

    /// Evaluates a shared flag for `context` within `scope`, reusing the answer when the scope
    /// has evaluated the flag already (as another flag's prerequisite).
    pub fn within(
        flag: Arc<FeatureFlag>,
        context: &EvaluationContext,
        scope: &Scope<'_>,
    ) -> Result<Self, EvaluationError> {
        let (variant, reason) = scope.outcome_of(&flag, context)?;
        Ok(Self {
            flag,
            variant,
            reason,
        })
    }

    /// [`Self::within`] for one of the flags of the scope's own snapshot, with whether another
    /// flag lists it as a prerequisite, as a bulk evaluation walks them
    /// ([`EnvironmentSnapshot::flags_marking_prerequisites`]): nothing is looked up per flag.
    pub fn within_own(
        flag: Arc<FeatureFlag>,
        prerequisite: bool,
        context: &EvaluationContext,
        scope: &Scope<'_>,
    ) -> Result<Self, EvaluationError> {
        let (variant, reason) = scope.outcome_of_own(&flag, prerequisite, context)?;
        Ok(Self {
            flag,
            variant,
            reason,
        })
    }

    /// The evaluation a [`Resolution`] of the shared `flag` stands for.
    pub fn resolved(flag: Arc<FeatureFlag>, resolution: Resolution<'_>) -> Self {
        Self {
            variant: Arc::clone(resolution.variant),
            reason: resolution.reason,
            flag,
        }
    }

    /// The same evaluation with another reason (used for last-known-good answers).
    #[must_use]
    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reason = reason;
        self
    }

    /// The flag's key.
    pub fn key(&self) -> &FlagKey {
        self.flag.key()
    }

    /// The served variant's name.
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// The served variant's value.
    pub fn value(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.flag.variants().get(&*self.variant).unwrap_or(&NULL)
    }

    /// Why the variant was served.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The version of the flag that was evaluated.
    pub fn flag_version(&self) -> u64 {
        self.flag.version()
    }

    /// The flag's metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.flag.metadata()
    }

    /// The evaluated flag.
    pub fn flag(&self) -> &Arc<FeatureFlag> {
        &self.flag
    }

    /// The bytes `render` makes of this answer, rendered at most once per flag, variant and
    /// reason (see [`FeatureFlag::rendered_answer`]); `None` only for a variant the flag lacks.
    pub fn rendered(&self, render: impl FnOnce() -> Vec<u8>) -> Option<&[u8]> {
        self.flag
            .rendered_answer(&self.variant, self.reason, render)
    }
}
