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
//! String comparisons are case-sensitive and by Unicode scalar values, with no normalisation.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Number, Value};

use crate::bucketing;
use crate::context::EvaluationContext;
use crate::flag::{Condition, FeatureFlag, Operator, Rollout, RuleOutcome};
use crate::names::FlagKey;

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
            EvaluationError::TargetingKeyMissing { .. } => ErrorCode::TargetingKeyMissing,
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

/// Evaluates `flag` for `context`.
pub fn evaluate<'f>(
    flag: &'f FeatureFlag,
    context: &EvaluationContext,
) -> Result<Resolution<'f>, EvaluationError> {
    if let Some(reason) = flag.unreadable_reason() {
        return Err(EvaluationError::Unreadable {
            key: flag.key().clone(),
            reason: reason.to_owned(),
        });
    }
    if !flag.enabled() {
        return resolve(flag, flag.off_variant(), Reason::Disabled);
    }
    for rule in flag.rules() {
        if rule
            .conditions()
            .iter()
            .all(|condition| matches(condition, context))
        {
            return match rule.outcome() {
                RuleOutcome::Variant(variant) => resolve(flag, variant, Reason::TargetingMatch),
                RuleOutcome::Rollout(rollout) => split(flag, rollout, context),
            };
        }
    }
    if !flag.rollout().is_empty() {
        return split(flag, flag.rollout(), context);
    }
    let reason = if flag.rules().is_empty() {
        Reason::Static
    } else {
        Reason::Default
    };
    resolve(flag, flag.default_variant(), reason)
}

fn split<'f>(
    flag: &'f FeatureFlag,
    rollout: &'f Rollout,
    context: &EvaluationContext,
) -> Result<Resolution<'f>, EvaluationError> {
    let targeting_key =
        context
            .targeting_key()
            .ok_or_else(|| EvaluationError::TargetingKeyMissing {
                key: flag.key().clone(),
            })?;
    let variant = bucketing::choose(rollout, flag.key().as_str(), targeting_key).unwrap_or("");
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

/// Whether one condition holds for the context.
pub fn matches(condition: &Condition, context: &EvaluationContext) -> bool {
    let Some(attribute) = context.attribute(condition.attribute()) else {
        return false;
    };
    let operand = condition.value();
    match condition.operator() {
        Operator::Exists => true,
        Operator::Equals => {
            same_type(attribute, operand) && operand.is_some_and(|v| json_eq(attribute, v))
        }
        Operator::NotEquals => {
            same_type(attribute, operand) && operand.is_some_and(|v| !json_eq(attribute, v))
        }
        Operator::In => membership(attribute, operand) == Some(true),
        Operator::NotIn => membership(attribute, operand) == Some(false),
        Operator::StartsWith => strings(attribute, operand).is_some_and(|(a, v)| a.starts_with(v)),
        Operator::EndsWith => strings(attribute, operand).is_some_and(|(a, v)| a.ends_with(v)),
        Operator::Contains => match (attribute, operand) {
            (Value::String(a), Some(Value::String(v))) => a.contains(v.as_str()),
            (Value::Array(items), Some(v)) => items.iter().any(|item| json_eq(item, v)),
            _ => false,
        },
        Operator::Gt => numbers(attribute, operand).is_some_and(Ordering::is_gt),
        Operator::Gte => numbers(attribute, operand).is_some_and(Ordering::is_ge),
        Operator::Lt => numbers(attribute, operand).is_some_and(Ordering::is_lt),
        Operator::Lte => numbers(attribute, operand).is_some_and(Ordering::is_le),
    }
}

/// `Some(found)` when the attribute can be compared with the list, `None` for a wrong type.
fn membership(attribute: &Value, operand: Option<&Value>) -> Option<bool> {
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
    /// Evaluates a shared flag for `context`.
    pub fn of(
        flag: Arc<FeatureFlag>,
        context: &EvaluationContext,
    ) -> Result<Self, EvaluationError> {
        let resolution = evaluate(&flag, context)?;
        let variant = Arc::clone(resolution.variant);
        let reason = resolution.reason;
        Ok(Self {
            flag,
            variant,
            reason,
        })
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
}
