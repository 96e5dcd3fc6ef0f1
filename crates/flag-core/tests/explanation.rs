//! The explainer: its answer is the evaluation's answer (a property over random environments of
//! flags, segments and prerequisites, and random contexts), and what it says of each step agrees
//! with the engine's own parts (each condition with `matches_in`, the split with the variant).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use flag_core::{
    EnvironmentSnapshot, EvaluationContext, FeatureFlag, FlagKey, Reason, Revision, Scope, Segment,
    SegmentKey, evaluate_in, explain, matches_in,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const ATTRIBUTES: [&str; 5] = ["plan", "age", "tags", "email", "appVersion"];
const VARIANTS: [&str; 3] = ["on", "off", "blue"];
const SEGMENTS: [&str; 2] = ["beta", "staff"];
const USERS: [&str; 4] = ["u1", "u2", "u3", "u4"];

fn flag(key: &str, body: &Value) -> Option<FeatureFlag> {
    FeatureFlag::from_definition_json(&FlagKey::parse(key).unwrap(), &body.to_string())
        .ok()
        .map(|flag| flag.stored_as(1, flag_core::time::OffsetDateTime::UNIX_EPOCH))
}

fn segment(key: &str, body: &Value) -> Segment {
    Segment::from_definition_json(&SegmentKey::parse(key).unwrap(), &body.to_string())
        .unwrap_or_else(|error| panic!("{key}: {error}"))
        .stored_as(1, flag_core::time::OffsetDateTime::UNIX_EPOCH)
}

fn attribute_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["free", "pro", "enterprise"]).prop_map(Value::from),
        (0i64..100).prop_map(Value::from),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..3)
            .prop_map(|items| json!(items)),
        Just(json!("ana@example.com")),
        prop::sample::select(vec!["1.2.3", "2.0.0", "v2.3.1", "not-a-version"])
            .prop_map(Value::from),
        Just(json!(true)),
    ]
}

/// A condition on an attribute, or on a segment.
fn condition() -> impl Strategy<Value = Value> {
    let operators = prop::sample::select(vec![
        "in",
        "not_in",
        "equals",
        "not_equals",
        "starts_with",
        "ends_with",
        "contains",
        "gt",
        "lte",
        "exists",
        "semver_gte",
        "matches",
        "in_segment",
        "not_in_segment",
    ]);
    (
        prop::sample::select(ATTRIBUTES.to_vec()),
        operators,
        attribute_value(),
        prop::sample::select(SEGMENTS.to_vec()),
    )
        .prop_map(|(attribute, operator, value, segment)| match operator {
            "in_segment" | "not_in_segment" => json!({"operator": operator, "value": segment}),
            "exists" => json!({"attribute": attribute, "operator": operator}),
            "in" | "not_in" => {
                json!({"attribute": attribute, "operator": operator, "value": [value, "pro"]})
            }
            "gt" | "lte" => json!({"attribute": attribute, "operator": operator, "value": 40}),
            "semver_gte" => {
                json!({"attribute": attribute, "operator": operator, "value": "2.0.0"})
            }
            "matches" => json!({"attribute": attribute, "operator": operator, "value": "^[a-p]"}),
            "starts_with" | "ends_with" => {
                json!({"attribute": attribute, "operator": operator, "value": "e"})
            }
            _ => json!({"attribute": attribute, "operator": operator, "value": value}),
        })
}

fn rollout() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(VARIANTS.to_vec()), 1u32..100), 1..4).prop_map(
        |entries| {
            Value::Array(
                entries
                    .into_iter()
                    .map(|(variant, weight)| json!({"variant": variant, "weight": weight}))
                    .collect(),
            )
        },
    )
}

fn rule() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(condition(), 0..3),
        prop_oneof![
            prop::sample::select(VARIANTS.to_vec()).prop_map(|v| ("variant", Value::from(v))),
            rollout().prop_map(|r| ("rollout", r)),
        ],
        prop::option::of(prop::sample::select(vec!["plan", "age", "targetingKey"])),
    )
        .prop_map(|(conditions, (field, outcome), bucket_by)| {
            let mut rule = json!({"conditions": conditions});
            rule[field] = outcome;
            if let (Some(bucket_by), "rollout") = (bucket_by, field) {
                rule["bucketBy"] = json!(bucket_by);
            }
            rule
        })
}

/// The body of a flag, with prerequisites on `earlier` flags (so no cycle can form).
fn flag_body(earlier: Vec<String>) -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop::sample::select(VARIANTS.to_vec()),
        prop::sample::select(VARIANTS.to_vec()),
        prop::collection::vec(rule(), 0..4),
        prop::option::of(rollout()),
        prop::collection::vec(
            (
                prop::sample::select(if earlier.is_empty() {
                    vec!["none".to_owned()]
                } else {
                    earlier
                }),
                prop::collection::vec(prop::sample::select(VARIANTS.to_vec()), 1..3),
            ),
            0..2,
        ),
    )
        .prop_map(
            |(enabled, default_variant, off_variant, rules, rollout, prerequisites)| {
                let variants: serde_json::Map<String, Value> = VARIANTS
                    .iter()
                    .map(|name| (name.to_string(), json!(name)))
                    .collect();
                let prerequisites: Vec<Value> = prerequisites
                    .into_iter()
                    .filter(|(flag, _)| flag != "none")
                    .map(|(flag, variants)| json!({"flag": flag, "variants": variants}))
                    .collect();
                let mut body = json!({
                    "enabled": enabled, "variants": variants, "defaultVariant": default_variant,
                    "offVariant": off_variant, "rules": rules, "prerequisites": prerequisites,
                });
                if let Some(rollout) = rollout {
                    body["rollout"] = rollout;
                }
                body
            },
        )
}

fn segment_body() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(prop::sample::select(USERS.to_vec()), 0..2),
        prop::collection::vec(prop::sample::select(USERS.to_vec()), 0..2),
        prop::collection::vec(
            prop::collection::vec(condition(), 0..2).prop_map(|conditions| {
                // Segment rules cannot refer to segments.
                conditions
                    .into_iter()
                    .filter(|condition| condition.get("attribute").is_some())
                    .collect::<Vec<_>>()
            }),
            0..3,
        ),
    )
        .prop_map(|(included, excluded, rules)| {
            let rules: Vec<Value> = rules
                .into_iter()
                .map(|conditions| json!({"conditions": conditions}))
                .collect();
            json!({"included": included, "excluded": excluded, "rules": rules})
        })
}

/// An environment of up to four flags (`f0` ... `f3`, each listing only earlier ones as
/// prerequisites), both segments, or none of them (`with_segments` false: every segment
/// condition meets a missing segment).
fn environment() -> impl Strategy<Value = EnvironmentSnapshot> {
    (
        flag_body(vec![]),
        flag_body(vec!["f0".into()]),
        flag_body(vec!["f0".into(), "f1".into()]),
        flag_body(vec!["f1".into(), "f2".into(), "missing".into()]),
        segment_body(),
        segment_body(),
        any::<bool>(),
    )
        .prop_map(|(b0, b1, b2, b3, s0, s1, with_segments)| {
            let flags: Vec<FeatureFlag> = [b0, b1, b2, b3]
                .iter()
                .enumerate()
                .filter_map(|(index, body)| flag(&format!("f{index}"), body))
                .collect();
            let segments = if with_segments {
                vec![segment("beta", &s0), segment("staff", &s1)]
            } else {
                Vec::new()
            };
            EnvironmentSnapshot::new(Revision(1), flags)
                .unwrap()
                .with_segments(segments)
                .unwrap()
        })
}

fn context() -> impl Strategy<Value = EvaluationContext> {
    (
        prop::option::of(prop::sample::select(USERS.to_vec())),
        prop::collection::btree_map(
            prop::sample::select(ATTRIBUTES.to_vec()),
            attribute_value(),
            0..5,
        ),
    )
        .prop_map(|(targeting_key, attributes)| {
            let mut context = serde_json::Map::new();
            if let Some(key) = targeting_key {
                context.insert("targetingKey".into(), json!(key));
            }
            for (name, value) in attributes {
                context.insert(name.into(), value);
            }
            EvaluationContext::from_json(Value::Object(context)).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The explanation's answer is the evaluation's, and every step it tells agrees with the
    /// engine: each condition's outcome with `matches_in`, each rule with its conditions, the
    /// rule that decided with the reason, the split with the variant served.
    #[test]
    fn an_explanation_never_disagrees_with_the_answer(
        environment in environment(),
        context in context(),
    ) {
        let scope = Scope::new(&environment).at(1_800_000_000);
        for flag in environment.flags() {
            let answer = evaluate_in(flag, &context, &Scope::new(&environment).at(1_800_000_000));
            let explained = explain(flag, &context, &scope);
            match (&answer, &explained.result) {
                (Ok(answer), Ok(explained)) => {
                    prop_assert_eq!(answer.variant, explained.variant);
                    prop_assert_eq!(answer.reason, explained.reason);
                    prop_assert_eq!(answer.value, explained.value);
                }
                (Err(answer), Err(explained)) => prop_assert_eq!(answer, explained),
                (answer, explained) => prop_assert!(false, "{answer:?} vs {explained:?}"),
            }
            let explanation = &explained.explanation;
            prop_assert_eq!(explanation.enabled, flag.enabled());
            prop_assert_eq!(explanation.rules.len(), flag.rules().len());
            let failed_prerequisite = explanation.prerequisites.iter().any(|step| !step.passed);
            if !flag.enabled() || failed_prerequisite {
                prop_assert!(explanation.rules.iter().all(|rule| !rule.evaluated));
                prop_assert!(explanation.split.is_none());
                if let Ok(resolution) = &explained.result {
                    prop_assert_eq!(resolution.reason, Reason::Disabled);
                }
                continue;
            }
            prop_assert_eq!(explanation.prerequisites.len(), flag.prerequisites().len());
            // Rules run in order up to the first that matched.
            let evaluated: Vec<_> = explanation.rules.iter().filter(|rule| rule.evaluated).collect();
            let matched = explanation.rules.iter().position(|rule| rule.matched);
            for (index, rule) in explanation.rules.iter().enumerate() {
                prop_assert_eq!(rule.evaluated, matched.is_none_or(|at| index <= at));
                if !rule.evaluated {
                    continue;
                }
                let written = &flag.rules()[index];
                prop_assert_eq!(rule.conditions.len(), written.conditions().len());
                for (step, condition) in rule.conditions.iter().zip(written.conditions()) {
                    prop_assert_eq!(step.matched, matches_in(condition, &context, &scope));
                    prop_assert_eq!(step.operator, condition.operator().as_str());
                    prop_assert_eq!(step.outcome == "segment", step.segment.is_some());
                }
                prop_assert_eq!(rule.matched, rule.conditions.iter().all(|step| step.matched));
            }
            prop_assert!(evaluated.iter().filter(|rule| rule.matched).count() <= 1);
            if let Ok(resolution) = &explained.result {
                match resolution.reason {
                    Reason::TargetingMatch => prop_assert!(matched.is_some()),
                    Reason::Static | Reason::Default => prop_assert!(matched.is_none()),
                    _ => {}
                }
                prop_assert_eq!(resolution.reason == Reason::Split, explanation.split.is_some());
            }
            if let Some(split) = &explanation.split {
                prop_assert_eq!(split.rule, matched);
                prop_assert!((0.0..100.0).contains(&split.bucket), "{}", split.bucket);
                let slot = &split.slots[split.slot];
                prop_assert!(slot.from <= split.bucket + 0.01 && split.bucket < slot.to + 0.01);
                if let Ok(resolution) = &explained.result {
                    prop_assert_eq!(slot.variant.as_str(), resolution.variant.as_ref());
                }
            }
        }
    }
}

fn one_flag(body: Value, segments: Vec<Segment>) -> EnvironmentSnapshot {
    EnvironmentSnapshot::new(Revision(1), [flag("f", &body).unwrap()])
        .unwrap()
        .with_segments(segments)
        .unwrap()
}

fn context_of(value: Value) -> EvaluationContext {
    EvaluationContext::from_json(value).unwrap()
}

#[test]
fn each_condition_says_how_it_came_out() {
    let environment = one_flag(
        json!({"enabled": true, "rules": [{"conditions": [
            {"attribute": "plan", "operator": "equals", "value": "pro"},
            {"attribute": "age", "operator": "gt", "value": 18},
            {"attribute": "email", "operator": "ends_with", "value": "@example.com"},
            {"attribute": "country", "operator": "in", "value": ["fr"]},
            {"operator": "in_segment", "value": "beta"},
            {"operator": "not_in_segment", "value": "beta"}
        ], "variant": "off"}]}),
        vec![segment(
            "beta",
            &json!({"excluded": ["u1"], "rules": [{"conditions": []}]}),
        )],
    );
    let flag = environment.flag("f").unwrap();
    let context = context_of(
        json!({"targetingKey": "u1", "plan": "pro", "age": "old", "email": "x@other.org"}),
    );
    let explained = explain(flag, &context, &Scope::new(&environment));
    let steps = &explained.explanation.rules[0].conditions;
    let outcomes: Vec<_> = steps.iter().map(|step| step.outcome).collect();
    assert_eq!(
        outcomes,
        [
            "match",
            "wrong_type",
            "no_match",
            "missing_attribute",
            "segment",
            "segment"
        ]
    );
    let beta = steps[4].segment.as_ref().unwrap();
    assert_eq!((beta.decided_by, beta.contains), ("excluded", Some(false)));
    assert!(!steps[4].matched && steps[5].matched);
    assert!(!explained.explanation.rules[0].matched);
    let resolution = explained.result.unwrap();
    assert_eq!(
        (resolution.variant.as_ref(), resolution.reason),
        ("on", Reason::Default)
    );

    let someone = context_of(json!({"targetingKey": "u9"}));
    let explained = explain(flag, &someone, &Scope::new(&environment));
    let beta = explained.explanation.rules[0].conditions[4]
        .segment
        .clone()
        .unwrap();
    assert_eq!(
        (beta.decided_by, beta.rule, beta.contains),
        ("rule", Some(0), Some(true))
    );
}

#[test]
fn a_split_says_its_bucket_as_flagd_does() {
    // flagd's testbed: "fractional-flag" with targetingKey "jon@company.com" hashes to a known
    // value; any 50/50 split shows the bucket as a percentage of 2^32, two decimals.
    let environment = one_flag(
        json!({"enabled": true, "rollout": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}),
        vec![],
    );
    let flag = environment.flag("f").unwrap();
    let context = context_of(json!({"targetingKey": "user-1"}));
    let explained = explain(flag, &context, &Scope::new(&environment));
    let split = explained.explanation.split.unwrap();
    let hash = flag_core::murmur3_x86_32(b"fuser-1", 0);
    let expected = ((u64::from(hash) * 10_000) >> 32) as f64 / 100.0;
    assert_eq!(split.bucket, expected);
    assert_eq!(
        (split.bucket_by.as_str(), split.value.as_str()),
        ("targetingKey", "user-1")
    );
    assert_eq!(split.rule, None);
    assert_eq!(
        (split.slots[0].from, split.slots[0].to, split.slots[1].to),
        (0.0, 50.0, 100.0)
    );
    let served = explained.result.unwrap();
    assert_eq!(split.slots[split.slot].variant, served.variant.as_ref());
    assert_eq!(split.slot, usize::from(expected >= 50.0));
}

#[test]
fn a_failed_prerequisite_is_named_with_its_answer() {
    let environment = EnvironmentSnapshot::new(
        Revision(1),
        [
            flag("gate", &json!({"enabled": false})).unwrap(),
            flag(
                "f",
                &json!({"enabled": true, "prerequisites": [
                    {"flag": "gate", "variants": ["on"]}]}),
            )
            .unwrap(),
        ],
    )
    .unwrap();
    let flag = environment.flag("f").unwrap();
    let explained = explain(flag, &context_of(json!({})), &Scope::new(&environment));
    let step = &explained.explanation.prerequisites[0];
    assert_eq!(step.flag.as_str(), "gate");
    assert_eq!(
        (step.variant.as_deref(), step.reason),
        (Some("off"), Some(Reason::Disabled))
    );
    assert!(!step.passed);
    assert_eq!(explained.result.unwrap().reason, Reason::Disabled);
}
