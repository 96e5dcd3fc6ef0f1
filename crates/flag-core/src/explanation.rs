//! The explainer: why a flag served what it served to a context.
//!
//! [`explain`] runs the evaluation engine itself with a witness that writes down each step
//! (prerequisites with their answers, each rule's conditions with their outcomes, the bucket a
//! rollout placed the context in). There is no second evaluator to drift from the first: the
//! answer an explanation carries is the answer [`crate::evaluate_in`] gives, which a property
//! test checks over random flags and contexts.
//!
//! Decisions:
//! - Every rule is listed, in order; rules the evaluation never reached (after the one that
//!   matched, or all of them when the flag is disabled or a prerequisite failed) say
//!   `evaluated: false` and list no outcomes.
//! - Within a reached rule every condition is evaluated and shown, even after one that did not
//!   match (conditions have no effects, so this changes no answer), because a person fixing a
//!   rule wants to see all that stands in the way, not only the first.
//! - The bucket is shown as flagd shows it, a percentage from 0 to 99.99 (the hash as a
//!   fraction of 2^32, in hundredths, rounded down), with each slot's range in the same unit.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::bucketing::Placement;
use crate::context::EvaluationContext;
use crate::evaluation::{
    ConditionOutcome, EvaluationError, Reason, Resolution, Scope, SegmentPart, Witness,
    evaluate_witnessed,
};
use crate::flag::{FeatureFlag, Prerequisite, Rollout};
use crate::names::FlagKey;

/// An answer with the steps that led to it.
#[derive(Debug)]
pub struct Explained<'f> {
    /// What the evaluation answered, exactly as [`crate::evaluate_in`] does.
    pub result: Result<Resolution<'f>, EvaluationError>,
    /// Why.
    pub explanation: Explanation,
}

/// The steps of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Explanation {
    /// Whether the flag is enabled (a disabled flag serves its `offVariant` at once).
    pub enabled: bool,
    /// Each prerequisite evaluated, in order, with its answer; the list stops at the first that
    /// failed.
    pub prerequisites: Vec<PrerequisiteStep>,
    /// Every rule of the flag, in order.
    pub rules: Vec<RuleStep>,
    /// The rollout that chose the variant, when one did.
    pub split: Option<SplitStep>,
}

/// A prerequisite and what its flag answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrerequisiteStep {
    /// The prerequisite flag.
    pub flag: FlagKey,
    /// The variants it must serve.
    pub variants: Vec<String>,
    /// The variant it served, when it served one.
    pub variant: Option<String>,
    /// Why it served it.
    pub reason: Option<Reason>,
    /// Why it served nothing (`FLAG_NOT_FOUND` for a missing flag).
    pub error_code: Option<String>,
    /// Whether it let the flag go on (served, not `DISABLED`, and a listed variant).
    pub passed: bool,
}

/// A rule and how it came out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleStep {
    /// Its position in the flag's rules, from 0.
    pub index: usize,
    /// Whether the evaluation reached it.
    pub evaluated: bool,
    /// Whether all its conditions matched (false when not reached).
    pub matched: bool,
    /// Each condition with its outcome (empty when not reached).
    pub conditions: Vec<ConditionStep>,
}

/// A condition and how it came out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConditionStep {
    /// The attribute tested (absent for segment conditions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The operator.
    pub operator: &'static str,
    /// The condition's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub value: Option<Value>,
    /// `match`, `no_match`, `missing_attribute`, `wrong_type`, or `segment`.
    pub outcome: &'static str,
    /// Whether the condition holds.
    pub matched: bool,
    /// For a segment condition, what decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentStep>,
}

/// What decided a segment condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SegmentStep {
    /// The segment.
    pub key: String,
    /// `included`, `excluded`, `rule`, `no_rule`, or `unavailable` (missing or unreadable).
    pub decided_by: &'static str,
    /// The segment rule that matched, from 0 (for `rule`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// Whether the context is in the segment (absent when `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains: Option<bool>,
}

/// Where a rollout placed the context.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SplitStep {
    /// The rule whose rollout it is, `None` for the flag's own rollout.
    pub rule: Option<usize>,
    /// The attribute hashed with the flag key.
    pub bucket_by: String,
    /// Its value, as hashed.
    pub value: String,
    /// The bucket, 0 to 99.99, as flagd computes it.
    pub bucket: f64,
    /// The slot the bucket fell in, from 0.
    pub slot: usize,
    /// The slots: each variant with its weight and its range of buckets.
    pub slots: Vec<SlotStep>,
}

/// One slot of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotStep {
    /// The variant it serves.
    pub variant: String,
    /// Its weight.
    pub weight: u32,
    /// The first bucket in it (a percentage).
    pub from: f64,
    /// The first bucket past it (a percentage).
    pub to: f64,
}

/// Evaluates `flag` for `context` within `scope`, explaining each step.
pub fn explain<'f>(
    flag: &'f FeatureFlag,
    context: &EvaluationContext,
    scope: &Scope<'_>,
) -> Explained<'f> {
    let mut explainer = Explainer {
        flag,
        explanation: Explanation {
            enabled: flag.enabled(),
            prerequisites: Vec::new(),
            rules: (0..flag.rules().len())
                .map(|index| RuleStep {
                    index,
                    evaluated: false,
                    matched: false,
                    conditions: Vec::new(),
                })
                .collect(),
            split: None,
        },
        matched_rule: None,
    };
    let result = evaluate_witnessed(flag, context, scope, 0, &mut explainer);
    Explained {
        result,
        explanation: explainer.explanation,
    }
}

/// The witness that writes the explanation.
struct Explainer<'f> {
    flag: &'f FeatureFlag,
    explanation: Explanation,
    matched_rule: Option<usize>,
}

impl Witness for Explainer<'_> {
    const WATCHING: bool = true;

    fn prerequisite(
        &mut self,
        prerequisite: &Prerequisite,
        answer: &Result<(Arc<str>, Reason), EvaluationError>,
        passed: bool,
    ) {
        let (variant, reason, error_code) = match answer {
            Ok((variant, reason)) => (Some(variant.to_string()), Some(*reason), None),
            Err(error) => (None, None, Some(error.code().as_str().to_owned())),
        };
        self.explanation.prerequisites.push(PrerequisiteStep {
            flag: prerequisite.flag().clone(),
            variants: prerequisite.variants().to_vec(),
            variant,
            reason,
            error_code,
            passed,
        });
    }

    fn condition(&mut self, rule: usize, condition: usize, outcome: ConditionOutcome) {
        let Some(written) = self
            .flag
            .rules()
            .get(rule)
            .and_then(|rule| rule.conditions().get(condition))
        else {
            return;
        };
        let segment = match outcome {
            ConditionOutcome::Segment { part, .. } => Some(segment_step(
                written
                    .segment()
                    .map_or_else(String::new, ToString::to_string),
                part,
            )),
            _ => None,
        };
        let step = ConditionStep {
            attribute: written
                .segment()
                .is_none()
                .then(|| written.attribute().to_owned()),
            operator: written.operator().as_str(),
            value: written.value().cloned(),
            outcome: outcome_name(outcome),
            matched: outcome.matched(),
            segment,
        };
        if let Some(step_of_rule) = self.explanation.rules.get_mut(rule) {
            step_of_rule.conditions.push(step);
        }
    }

    fn rule(&mut self, rule: usize, matched: bool) {
        if let Some(step) = self.explanation.rules.get_mut(rule) {
            step.evaluated = true;
            step.matched = matched;
        }
        if matched {
            self.matched_rule = Some(rule);
        }
    }

    fn split(&mut self, rollout: &Rollout, attribute: &str, value: &str, placement: Placement) {
        let total = rollout.total_weight().max(1) as f64;
        let mut cumulative = 0u64;
        let slots = rollout
            .entries()
            .iter()
            .map(|entry| {
                let from = cumulative as f64 * 100.0 / total;
                cumulative += u64::from(entry.weight());
                SlotStep {
                    variant: entry.variant().to_owned(),
                    weight: entry.weight(),
                    from,
                    to: cumulative as f64 * 100.0 / total,
                }
            })
            .collect();
        self.explanation.split = Some(SplitStep {
            rule: self.matched_rule,
            bucket_by: attribute.to_owned(),
            value: value.to_owned(),
            bucket: placement.percent(),
            slot: placement.slot.unwrap_or(0),
            slots,
        });
    }
}

fn outcome_name(outcome: ConditionOutcome) -> &'static str {
    match outcome {
        ConditionOutcome::Match => "match",
        ConditionOutcome::NoMatch => "no_match",
        ConditionOutcome::MissingAttribute => "missing_attribute",
        ConditionOutcome::WrongType => "wrong_type",
        ConditionOutcome::Segment { .. } => "segment",
    }
}

fn segment_step(key: String, part: SegmentPart) -> SegmentStep {
    let (decided_by, rule, contains) = match part {
        SegmentPart::Included => ("included", None, Some(true)),
        SegmentPart::Excluded => ("excluded", None, Some(false)),
        SegmentPart::Rule(index) => ("rule", Some(index), Some(true)),
        SegmentPart::NoRule => ("no_rule", None, Some(false)),
        SegmentPart::Unavailable => ("unavailable", None, None),
    };
    SegmentStep {
        key,
        decided_by,
        rule,
        contains,
    }
}
