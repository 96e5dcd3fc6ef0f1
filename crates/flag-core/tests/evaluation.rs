//! The evaluation engine: every operator, reason and error of the contract, and flagd bucketing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::collections::BTreeMap;

use flag_core::{
    ErrorCode, EvaluationContext, EvaluationError, FeatureFlag, FlagKey, Reason, evaluate,
};
use rstest::rstest;
use serde_json::{Value, json};

fn flag(key: &str, body: Value) -> FeatureFlag {
    FeatureFlag::from_definition_json(&FlagKey::parse(key).unwrap(), &body.to_string()).unwrap()
}

fn context(attributes: Value) -> EvaluationContext {
    EvaluationContext::from_json(attributes).unwrap()
}

/// A flag whose single rule is the condition under test: `on` when it matches, `off` when not.
fn one_condition(operator: &str, value: Option<Value>) -> FeatureFlag {
    let mut condition = json!({"attribute": "a", "operator": operator});
    if let Some(value) = value {
        condition["value"] = value;
    }
    flag(
        "probe",
        json!({"enabled": true, "defaultVariant": "off", "rules": [{"conditions": [condition], "variant": "on"}]}),
    )
}

/// Every operator, on matching, non-matching, missing and wrongly typed attributes.
#[rstest]
// in / not_in
#[case("in", Some(json!(["a", "b"])), Some(json!("a")), true)]
#[case("in", Some(json!(["a", "b"])), Some(json!("c")), false)]
#[case("in", Some(json!(["a", "b"])), Some(json!("A")), false)]
#[case("in", Some(json!(["5"])), Some(json!(5)), false)]
#[case("in", Some(json!([5, 6])), Some(json!(5)), true)]
#[case("in", Some(json!([5, 6])), Some(json!(5.0)), true)]
#[case("in", Some(json!([true])), Some(json!(true)), true)]
#[case("in", Some(json!([])), Some(json!("a")), false)]
#[case("in", Some(json!(["a"])), None, false)]
#[case("not_in", Some(json!(["a", "b"])), Some(json!("c")), true)]
#[case("not_in", Some(json!(["a", "b"])), Some(json!("a")), false)]
#[case("not_in", Some(json!(["a", "b"])), None, false)]
#[case("not_in", Some(json!(["5"])), Some(json!(5)), false)]
#[case("not_in", Some(json!(["a"])), Some(json!(["c"])), false)]
#[case("not_in", Some(json!([])), Some(json!("a")), true)]
// equals / not_equals
#[case("equals", Some(json!("5")), Some(json!("5")), true)]
#[case("equals", Some(json!("5")), Some(json!(5)), false)]
#[case("equals", Some(json!(5)), Some(json!(5)), true)]
#[case("equals", Some(json!(5)), Some(json!(5.0)), true)]
#[case("equals", Some(json!({"x": [1]})), Some(json!({"x": [1]})), true)]
#[case("equals", Some(json!("abc")), Some(json!("ABC")), false)]
#[case("equals", Some(json!(false)), Some(json!(false)), true)]
#[case("equals", Some(json!("x")), None, false)]
#[case("not_equals", Some(json!("5")), Some(json!("6")), true)]
#[case("not_equals", Some(json!("5")), Some(json!("5")), false)]
#[case("not_equals", Some(json!("5")), Some(json!(5)), false)]
#[case("not_equals", Some(json!("5")), None, false)]
#[case("not_equals", Some(json!("5")), Some(Value::Null), false)]
// starts_with / ends_with
#[case("starts_with", Some(json!("admin@")), Some(json!("admin@example.com")), true)]
#[case("starts_with", Some(json!("admin@")), Some(json!("Admin@example.com")), false)]
#[case("starts_with", Some(json!("1")), Some(json!(123)), false)]
#[case("starts_with", Some(json!("a")), None, false)]
#[case("ends_with", Some(json!("@example.com")), Some(json!("bob@example.com")), true)]
#[case("ends_with", Some(json!("@example.com")), Some(json!("bob@example.org")), false)]
#[case("ends_with", Some(json!("m")), Some(json!(["m"])), false)]
// contains
#[case("contains", Some(json!("beta")), Some(json!("open-beta-2")), true)]
#[case("contains", Some(json!("Beta")), Some(json!("open-beta-2")), false)]
#[case("contains", Some(json!("beta")), Some(json!(["alpha", "beta"])), true)]
#[case("contains", Some(json!("gamma")), Some(json!(["alpha", "beta"])), false)]
#[case("contains", Some(json!(3)), Some(json!([1, 2, 3])), true)]
#[case("contains", Some(json!(3)), Some(json!("123")), false)]
#[case("contains", Some(json!("x")), Some(json!(5)), false)]
#[case("contains", Some(json!("x")), None, false)]
// gt / gte / lt / lte
#[case("gt", Some(json!(18)), Some(json!(19)), true)]
#[case("gt", Some(json!(18)), Some(json!(18)), false)]
#[case("gt", Some(json!(18)), Some(json!(18.5)), true)]
#[case("gt", Some(json!(18)), Some(json!("19")), false)]
#[case("gte", Some(json!(18)), Some(json!(18)), true)]
#[case("gte", Some(json!(18)), Some(json!(17.99)), false)]
#[case("lt", Some(json!(1.5)), Some(json!(1)), true)]
#[case("lt", Some(json!(1.5)), Some(json!(2)), false)]
#[case("lte", Some(json!(-3)), Some(json!(-3)), true)]
#[case("lte", Some(json!(9_007_199_254_740_993u64)), Some(json!(9_007_199_254_740_992u64)), true)]
#[case("gt", Some(json!(9_007_199_254_740_992u64)), Some(json!(9_007_199_254_740_993u64)), true)]
#[case("lt", Some(json!(5)), None, false)]
#[case("lt", Some(json!(5)), Some(json!(true)), false)]
// exists
#[case("exists", None, Some(json!("")), true)]
#[case("exists", None, Some(json!(0)), true)]
#[case("exists", None, Some(json!(false)), true)]
#[case("exists", None, Some(Value::Null), false)]
#[case("exists", None, None, false)]
fn operators(
    #[case] operator: &str,
    #[case] value: Option<Value>,
    #[case] attribute: Option<Value>,
    #[case] expected: bool,
) {
    let flag = one_condition(operator, value.clone());
    let mut attributes = json!({"targetingKey": "user-1"});
    if let Some(attribute) = attribute.clone() {
        attributes["a"] = attribute;
    }
    let resolution = evaluate(&flag, &context(attributes)).unwrap();
    let matched = resolution.reason == Reason::TargetingMatch;
    assert_eq!(
        matched, expected,
        "{operator} {value:?} against {attribute:?}: got {resolution:?}"
    );
    assert_eq!(
        resolution.variant.as_ref(),
        if expected { "on" } else { "off" }
    );
}

#[test]
fn the_targeting_key_is_an_addressable_attribute() {
    let flag = flag(
        "beta",
        json!({"enabled": true, "defaultVariant": "off",
               "rules": [{"conditions": [{"attribute": "targetingKey", "operator": "in", "value": ["alice"]}], "variant": "on"}]}),
    );
    let alice = evaluate(&flag, &EvaluationContext::new().with_targeting_key("alice")).unwrap();
    assert_eq!(
        (alice.variant.as_ref(), alice.reason),
        ("on", Reason::TargetingMatch)
    );
    let bob = evaluate(&flag, &EvaluationContext::new().with_targeting_key("bob")).unwrap();
    assert_eq!((bob.variant.as_ref(), bob.reason), ("off", Reason::Default));
}

#[test]
fn all_conditions_of_a_rule_must_match() {
    let flag = flag(
        "both",
        json!({"enabled": true, "defaultVariant": "off", "rules": [{"conditions": [
            {"attribute": "country", "operator": "equals", "value": "NL"},
            {"attribute": "age", "operator": "gte", "value": 18}
        ], "variant": "on"}]}),
    );
    let adult = context(json!({"country": "NL", "age": 30}));
    let minor = context(json!({"country": "NL", "age": 12}));
    assert_eq!(evaluate(&flag, &adult).unwrap().variant.as_ref(), "on");
    assert_eq!(evaluate(&flag, &minor).unwrap().variant.as_ref(), "off");
}

#[test]
fn the_first_matching_rule_wins() {
    let flag = flag(
        "order",
        json!({"enabled": true, "variants": {"a": 1, "b": 2, "c": 3}, "defaultVariant": "c", "offVariant": "c",
        "rules": [
            {"conditions": [{"attribute": "x", "operator": "exists"}], "variant": "a"},
            {"conditions": [], "variant": "b"}
        ]}),
    );
    assert_eq!(
        evaluate(&flag, &context(json!({"x": 1})))
            .unwrap()
            .variant
            .as_ref(),
        "a"
    );
    assert_eq!(
        evaluate(&flag, &context(json!({})))
            .unwrap()
            .variant
            .as_ref(),
        "b"
    );
}

/// Every reason, and the value that comes with it.
#[rstest]
#[case::disabled(json!({"enabled": false, "rules": [{"variant": "on"}]}), json!({}), "off", Reason::Disabled)]
#[case::static_default(json!({"enabled": true}), json!({}), "on", Reason::Static)]
#[case::default_after_rules(json!({"enabled": true, "rules": [{"conditions": [{"attribute": "x", "operator": "exists"}], "variant": "off"}]}), json!({}), "on", Reason::Default)]
#[case::empty_conditions_match(json!({"enabled": true, "rules": [{"conditions": [], "variant": "off"}]}), json!({}), "off", Reason::TargetingMatch)]
#[case::rule_rollout(json!({"enabled": true, "rules": [{"rollout": [{"variant": "off", "weight": 1}]}]}), json!({"targetingKey": "u"}), "off", Reason::Split)]
#[case::flag_rollout(json!({"enabled": true, "rollout": [{"variant": "off", "weight": 0}, {"variant": "on", "weight": 5}]}), json!({"targetingKey": "u"}), "on", Reason::Split)]
#[case::rollout_after_unmatched_rules(json!({"enabled": true, "rules": [{"conditions": [{"attribute": "x", "operator": "exists"}], "variant": "on"}], "rollout": [{"variant": "off", "weight": 1}]}), json!({"targetingKey": "u"}), "off", Reason::Split)]
#[case::disabled_ignores_missing_key(json!({"enabled": false, "rollout": [{"variant": "on", "weight": 1}]}), json!({}), "off", Reason::Disabled)]
fn reasons(#[case] body: Value, #[case] ctx: Value, #[case] variant: &str, #[case] reason: Reason) {
    let flag = flag("f", body);
    let resolution = evaluate(&flag, &context(ctx)).unwrap();
    assert_eq!(resolution.variant.as_ref(), variant);
    assert_eq!(resolution.reason, reason);
    assert_eq!(resolution.value, flag.variant(variant).unwrap().1);
}

#[rstest]
#[case::no_key(json!({}))]
#[case::empty_key(json!({"targetingKey": ""}))]
#[case::null_key(json!({"targetingKey": null}))]
fn a_rollout_without_targeting_key_is_an_error(#[case] ctx: Value) {
    let flag = flag(
        "split",
        json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}]}),
    );
    let error = evaluate(&flag, &context(ctx)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::TargetingKeyMissing);
    assert_eq!(error.code().as_str(), "TARGETING_KEY_MISSING");
    assert!(matches!(error, EvaluationError::TargetingKeyMissing { .. }));
}

#[test]
fn a_rollout_rule_that_does_not_match_needs_no_key() {
    let flag = flag(
        "split",
        json!({"enabled": true, "rules": [{"conditions": [{"attribute": "x", "operator": "exists"}],
               "rollout": [{"variant": "on", "weight": 1}]}]}),
    );
    assert_eq!(
        evaluate(&flag, &context(json!({}))).unwrap().reason,
        Reason::Default
    );
}

#[rstest]
#[case::array(json!([1]))]
#[case::string(json!("ctx"))]
#[case::null(Value::Null)]
#[case::numeric_key(json!({"targetingKey": 5}))]
fn an_unusable_context_is_refused(#[case] value: Value) {
    assert!(EvaluationContext::from_json(value).is_err());
}

#[test]
fn error_codes_are_spelled_as_ofrep_spells_them() {
    let codes: Vec<&str> = [
        ErrorCode::ParseError,
        ErrorCode::TargetingKeyMissing,
        ErrorCode::InvalidContext,
        ErrorCode::FlagNotFound,
        ErrorCode::General,
    ]
    .iter()
    .map(|code| code.as_str())
    .collect();
    assert_eq!(
        codes,
        [
            "PARSE_ERROR",
            "TARGETING_KEY_MISSING",
            "INVALID_CONTEXT",
            "FLAG_NOT_FOUND",
            "GENERAL"
        ]
    );
    assert_eq!(
        serde_json::to_value(Reason::TargetingMatch).unwrap(),
        json!("TARGETING_MATCH")
    );
}

/// flagd testbed, `@fractional-v2` "Fractional operator": the flag `fractional-flag` bucketed by
/// `flagKey + user.name` over clubs, diamonds, hearts, spades at 25 each. Our bucketing input is
/// `flagKey + targetingKey`, so the names are given as targeting keys.
#[rstest]
#[case("jack", "hearts")]
#[case("queen", "spades")]
#[case("ten", "clubs")]
#[case("nine", "diamonds")]
#[case("3", "clubs")]
fn rollouts_match_the_flagd_testbed(#[case] name: &str, #[case] expected: &str) {
    let flag = flag(
        "fractional-flag",
        json!({
            "enabled": true,
            "variants": {"clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades", "wild": "wild"},
            "defaultVariant": "wild", "offVariant": "wild",
            "rollout": [
                {"variant": "clubs", "weight": 25}, {"variant": "diamonds", "weight": 25},
                {"variant": "hearts", "weight": 25}, {"variant": "spades", "weight": 25}
            ]
        }),
    );
    let resolution = evaluate(&flag, &EvaluationContext::new().with_targeting_key(name)).unwrap();
    assert_eq!(resolution.variant.as_ref(), expected);
    assert_eq!(resolution.reason, Reason::Split);
}

/// Pinned vectors of our own, so a change to hashing or bucket order cannot pass unnoticed.
#[rstest]
#[case("new-checkout", "user-1")]
#[case("new-checkout", "user-2")]
#[case("new-checkout", "user-3")]
#[case("dark-mode", "alice@example.com")]
#[case("dark-mode", "bob@example.com")]
fn buckets_are_pinned(#[case] flag_key: &str, #[case] user: &str) {
    let input = format!("{flag_key}{user}");
    let hash = flag_core::murmur3_x86_32(input.as_bytes(), 0);
    let bucket = flag_core::bucket(input.as_bytes(), 100);
    assert_eq!(bucket, (u64::from(hash) * 100) >> 32);
    let flag = flag(
        flag_key,
        json!({"enabled": true, "variants": {"a": 1, "b": 2}, "defaultVariant": "a", "offVariant": "a",
               "rollout": [{"variant": "a", "weight": 30}, {"variant": "b", "weight": 70}]}),
    );
    let served = evaluate(&flag, &EvaluationContext::new().with_targeting_key(user)).unwrap();
    assert_eq!(served.variant.as_ref(), if bucket < 30 { "a" } else { "b" });
}

#[test]
fn a_user_keeps_their_bucket() {
    let flag = flag(
        "sticky",
        json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}]}),
    );
    for user in ["a", "b", "c", "d", "e"] {
        let ctx = EvaluationContext::new().with_targeting_key(user);
        let first = evaluate(&flag, &ctx).unwrap().variant.clone();
        for _ in 0..10 {
            assert_eq!(evaluate(&flag, &ctx).unwrap().variant, &first);
        }
    }
}

/// Over 100,000 keys each variant's share is within 1 percentage point of its weight.
#[test]
fn rollout_shares_follow_weights() {
    let weights = [("a", 10u32), ("b", 20), ("c", 30), ("d", 40)];
    let rollout: Vec<Value> = weights
        .iter()
        .map(|(variant, weight)| json!({"variant": variant, "weight": weight}))
        .collect();
    let flag = flag(
        "distribution",
        json!({"enabled": true, "variants": {"a": 1, "b": 2, "c": 3, "d": 4}, "defaultVariant": "a",
               "offVariant": "a", "rollout": rollout}),
    );
    let total = 100_000;
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for user in 0..total {
        let ctx = EvaluationContext::new().with_targeting_key(format!("user-{user}"));
        *counts
            .entry(evaluate(&flag, &ctx).unwrap().variant.to_string())
            .or_default() += 1;
    }
    for (variant, weight) in weights {
        let share = f64::from(counts[variant]) / f64::from(total) * 100.0;
        assert!(
            (share - f64::from(weight)).abs() < 1.0,
            "variant {variant}: {share:.2}% for weight {weight}% ({counts:?})"
        );
    }
}

#[test]
fn a_zero_weight_variant_is_never_served() {
    let flag = flag(
        "zero",
        json!({"enabled": true, "rollout": [{"variant": "off", "weight": 0}, {"variant": "on", "weight": 1}]}),
    );
    for user in 0..1_000 {
        let ctx = EvaluationContext::new().with_targeting_key(format!("u{user}"));
        assert_eq!(evaluate(&flag, &ctx).unwrap().variant.as_ref(), "on");
    }
}

#[test]
fn answers_are_rendered_once_per_flag_variant_and_reason() {
    use std::cell::Cell;
    use std::sync::Arc;

    let stored = flag("rendered", json!({"enabled": true}));
    let renders = Cell::new(0);
    let render = |text: &str| {
        renders.set(renders.get() + 1);
        text.as_bytes().to_vec()
    };
    let first = stored.rendered_answer("on", Reason::Static, || render("a"));
    assert_eq!(first, Some(&b"a"[..]));
    let again = stored.rendered_answer("on", Reason::Static, || render("b"));
    assert_eq!(again, Some(&b"a"[..]), "a second call reuses the rendering");
    let cached = stored.rendered_answer("on", Reason::Cached, || render("c"));
    assert_eq!(cached, Some(&b"c"[..]), "another reason is another answer");
    let off = stored.rendered_answer("off", Reason::Static, || render("d"));
    assert_eq!(off, Some(&b"d"[..]), "another variant is another answer");
    assert_eq!(
        stored.rendered_answer("missing", Reason::Static, || render("e")),
        None
    );
    assert_eq!(renders.get(), 3);

    // A changed copy (new version, switched off) renders again; the evaluation finds the same.
    let replaced = stored
        .clone()
        .stored_as(2, flag_core::time::OffsetDateTime::UNIX_EPOCH);
    assert_eq!(
        replaced.rendered_answer("on", Reason::Static, || render("v2")),
        Some(&b"v2"[..])
    );
    let switched = stored.clone().with_enabled(false);
    assert_eq!(
        switched.rendered_answer("on", Reason::Static, || render("off-copy")),
        Some(&b"off-copy"[..])
    );
    let evaluation = flag_core::Evaluation::of(Arc::new(stored), &context(json!({}))).unwrap();
    assert_eq!(evaluation.rendered(|| render("z")), Some(&b"a"[..]));
}
