//! The targeting added on top of attribute conditions: semantic versions, regular expressions,
//! `$now`, `bucketBy`, segments and prerequisites, each pinned by vectors or by behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use flag_core::{
    EnvironmentSnapshot, ErrorCode, Evaluation, EvaluationContext, EvaluationError, FeatureFlag,
    FlagKey, Reason, Revision, Scope, Segment, SegmentKey, evaluate, evaluate_in,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn flag(key: &str, body: Value) -> FeatureFlag {
    FeatureFlag::from_definition_json(&FlagKey::parse(key).unwrap(), &body.to_string())
        .unwrap_or_else(|error| panic!("{key}: {error}"))
        .stored_as(1, flag_core::time::OffsetDateTime::UNIX_EPOCH)
}

fn segment(key: &str, body: Value) -> Segment {
    Segment::from_definition_json(&SegmentKey::parse(key).unwrap(), &body.to_string())
        .unwrap_or_else(|error| panic!("{key}: {error}"))
        .stored_as(1, flag_core::time::OffsetDateTime::UNIX_EPOCH)
}

fn one_condition(condition: Value) -> FeatureFlag {
    flag(
        "f",
        json!({"enabled": true, "defaultVariant": "off",
               "rules": [{"conditions": [condition], "variant": "on"}]}),
    )
}

fn context(attributes: Value) -> EvaluationContext {
    EvaluationContext::from_json(attributes).unwrap()
}

fn variant_of(flag: &FeatureFlag, context: &EvaluationContext) -> String {
    evaluate(flag, context).unwrap().variant.to_string()
}

fn vectors(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn semver_operators_follow_the_vectors() {
    let vectors = vectors("semver.json");
    let mut checked = 0;
    for group in [
        "flagd_compare",
        "flagd_evaluation",
        "semver_precedence",
        "caret_below_one",
    ] {
        for case in vectors[group].as_array().unwrap() {
            let [attribute, operator, value, expected] = case.as_array().unwrap().as_slice() else {
                panic!("malformed vector {case}");
            };
            let flag = one_condition(
                json!({"attribute": "version", "operator": operator, "value": value}),
            );
            let got = variant_of(&flag, &context(json!({"version": attribute}))) == "on";
            assert_eq!(
                got,
                expected.as_bool().unwrap(),
                "{group}: {attribute} {operator} {value}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} vectors");
}

#[test]
fn a_version_attribute_of_another_type_does_not_match() {
    let flag =
        one_condition(json!({"attribute": "version", "operator": "semver_ne", "value": "1.0.0"}));
    for attribute in [json!(1), json!(["1.0.0"]), json!(null), json!("one")] {
        assert_eq!(
            variant_of(&flag, &context(json!({"version": attribute}))),
            "off",
            "{attribute}"
        );
    }
}

#[test]
fn matches_searches_strings_with_the_compiled_pattern() {
    let flag = one_condition(
        json!({"attribute": "email", "operator": "matches", "value": "@(example|corp)\\.com$"}),
    );
    for (email, expected) in [
        (json!("ana@example.com"), "on"),
        (json!("bo@corp.com"), "on"),
        (json!("bo@corp.com.evil"), "off"),
        (json!("ANA@EXAMPLE.COM"), "off"),
        (json!(42), "off"),
    ] {
        assert_eq!(
            variant_of(&flag, &context(json!({"email": email}))),
            expected,
            "{email}"
        );
    }
}

/// Patterns that take exponential time in a backtracking engine.
const HOSTILE_PATTERNS: [&str; 5] = [
    "^(a+)+$",
    "^(a|aa)+$",
    "^(a|a?)+$",
    "(.*a){12}",
    "^(\\w+\\s?)*$",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No pattern accepted at write time makes an evaluation slow: every evaluation over inputs
    /// up to 64 KiB, built to make backtracking engines explode, ends in bounded time. The bound
    /// (250 ms, for work that takes well under a millisecond) catches exponential behaviour, not
    /// speed; speed is measured by the `evaluation` benchmark.
    #[test]
    fn no_accepted_pattern_makes_an_evaluation_slow(
        pattern in prop_oneof![
            prop::sample::select(HOSTILE_PATTERNS.to_vec()).prop_map(str::to_owned),
            "[a-z()|*+?.\\\\]{1,40}",
        ],
        repeat in 1usize..65_536,
        tail in "[a-z!]{0,3}",
    ) {
        let body = json!({"enabled": true, "defaultVariant": "off", "rules": [{"conditions": [
            {"attribute": "input", "operator": "matches", "value": pattern}], "variant": "on"}]});
        let Ok(flag) = FeatureFlag::from_definition_json(&FlagKey::parse("f").unwrap(), &body.to_string()) else {
            // Refused at write time: nothing to evaluate.
            return Ok(());
        };
        let input = format!("{}{tail}", "a".repeat(repeat));
        let context = context(json!({"input": input}));
        let started = Instant::now();
        let _ = evaluate(&flag, &context);
        prop_assert!(started.elapsed() < Duration::from_millis(250), "{pattern} took {:?}", started.elapsed());
    }
}

#[test]
fn now_is_the_evaluation_time_and_no_context_sets_it() {
    let flag =
        one_condition(json!({"attribute": "$now", "operator": "gte", "value": 1_800_000_000}));
    let before = Scope::standalone().at(1_799_999_999);
    let after = Scope::standalone().at(1_800_000_000);
    let anyone = context(json!({"targetingKey": "u"}));
    assert_eq!(
        evaluate_in(&flag, &anyone, &before)
            .unwrap()
            .variant
            .as_ref(),
        "off"
    );
    assert_eq!(
        evaluate_in(&flag, &anyone, &after)
            .unwrap()
            .variant
            .as_ref(),
        "on"
    );
    let forged = context(json!({"targetingKey": "u", "$now": 9_999_999_999u64}));
    assert_eq!(
        evaluate_in(&flag, &forged, &before)
            .unwrap()
            .variant
            .as_ref(),
        "off",
        "a context's own $now is ignored"
    );
    // The real clock is past 2020 and before 2100.
    let window =
        one_condition(json!({"attribute": "$now", "operator": "gt", "value": 1_577_836_800}));
    assert_eq!(variant_of(&window, &anyone), "on");
}

#[test]
fn bucket_by_follows_flagd_fractional_vectors() {
    let vectors = vectors("bucket_by.json");
    for case in vectors["cases"].as_array().unwrap() {
        let weights = case["weights"].as_array().unwrap();
        let variants: serde_json::Map<String, Value> = weights
            .iter()
            .map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[0].clone()))
            .collect();
        let rollout: Vec<Value> = weights
            .iter()
            .map(|pair| json!({"variant": pair[0], "weight": pair[1]}))
            .collect();
        let first = weights[0][0].clone();
        let attribute = case["attribute"].as_str().unwrap();
        // Flag-level and rule-level bucketBy hash the same way.
        let flag_level = flag(
            case["flag"].as_str().unwrap(),
            json!({"enabled": true, "variants": variants, "defaultVariant": first, "offVariant": first,
                   "rollout": rollout, "bucketBy": attribute}),
        );
        let rule_level = flag(
            case["flag"].as_str().unwrap(),
            json!({"enabled": true, "variants": variants, "defaultVariant": first, "offVariant": first,
                   "rules": [{"rollout": rollout, "bucketBy": attribute}]}),
        );
        let user = context(json!({"targetingKey": "someone-else", attribute: case["value"]}));
        for flag in [&flag_level, &rule_level] {
            let resolution = evaluate(flag, &user).unwrap();
            assert_eq!(
                resolution.variant.as_ref(),
                case["variant"].as_str().unwrap(),
                "{case}"
            );
            assert_eq!(resolution.reason, Reason::Split);
        }
    }
}

#[test]
fn bucket_by_reads_numbers_as_json_writes_them_and_names_a_missing_attribute() {
    let rollout = json!([{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}]);
    let by_company = flag(
        "f",
        json!({"enabled": true, "rollout": rollout, "bucketBy": "companyId"}),
    );
    let pick = |value: Value| {
        evaluate(&by_company, &context(json!({"companyId": value})))
            .map(|resolution| resolution.variant.to_string())
    };
    // 300 companies, as numbers and as the same digits in strings: the same buckets.
    for id in 0..300u32 {
        assert_eq!(pick(json!(id)), pick(json!(id.to_string())), "{id}");
    }
    assert_eq!(pick(json!(1.5)), pick(json!("1.5")));
    let error = pick(json!(true)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::TargetingKeyMissing);
    assert!(error.to_string().contains("companyId"), "{error}");
    let missing = evaluate(&by_company, &context(json!({"targetingKey": "u"}))).unwrap_err();
    assert!(
        matches!(missing, EvaluationError::BucketingAttributeMissing { ref attribute, .. } if attribute == "companyId")
    );
    // A rule's own bucketBy wins over the flag's.
    let overridden = flag(
        "f",
        json!({"enabled": true, "bucketBy": "companyId",
               "rules": [{"rollout": rollout, "bucketBy": "teamId"}]}),
    );
    assert!(evaluate(&overridden, &context(json!({"teamId": "t"}))).is_ok());
    // Everyone of one company gets one variant, whoever they are.
    let company = |user: &str| pick_user(&by_company, user);
    let first = company("u-0");
    assert!((1..50).all(|n| company(&format!("u-{n}")) == first));
}

fn pick_user(flag: &FeatureFlag, user: &str) -> String {
    variant_of(
        flag,
        &context(json!({"targetingKey": user, "companyId": 7})),
    )
}

fn environment(flags: Vec<FeatureFlag>, segments: Vec<Segment>) -> EnvironmentSnapshot {
    EnvironmentSnapshot::new(Revision(1), flags)
        .unwrap()
        .with_segments(segments)
        .unwrap()
}

fn answer(snapshot: &EnvironmentSnapshot, key: &str, attributes: Value) -> (String, Reason) {
    let scope = Scope::new(snapshot);
    let flag = Arc::clone(snapshot.flag(key).unwrap());
    let evaluation = Evaluation::within(flag, &context(attributes), &scope).unwrap();
    (evaluation.variant().to_owned(), evaluation.reason())
}

#[test]
fn segments_include_exclude_and_match_rules() {
    let beta = segment(
        "beta",
        json!({"included": ["vip"], "excluded": ["banned", "vip2"],
               "rules": [{"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}]},
                         {"conditions": [{"attribute": "email", "operator": "ends_with", "value": "@corp.com"}]}]}),
    );
    let uses = |operator: &str, key: &str| {
        flag(
            key,
            json!({"enabled": true, "defaultVariant": "off",
                   "rules": [{"conditions": [{"operator": operator, "value": "beta"}], "variant": "on"}]}),
        )
    };
    let snapshot = environment(
        vec![
            uses("in_segment", "inside"),
            uses("not_in_segment", "outside"),
        ],
        vec![beta],
    );
    for (attributes, inside) in [
        (json!({"targetingKey": "vip"}), true),
        (json!({"targetingKey": "banned", "plan": "pro"}), false),
        (json!({"targetingKey": "u", "plan": "pro"}), true),
        (json!({"targetingKey": "u", "email": "a@corp.com"}), true),
        (json!({"targetingKey": "u", "plan": "free"}), false),
        (json!({"plan": "pro"}), true),
        (json!({}), false),
    ] {
        let (variant, reason) = answer(&snapshot, "inside", attributes.clone());
        assert_eq!(variant == "on", inside, "in_segment {attributes}");
        assert_eq!(
            reason,
            if inside {
                Reason::TargetingMatch
            } else {
                Reason::Default
            }
        );
        let (variant, _) = answer(&snapshot, "outside", attributes.clone());
        assert_eq!(variant == "on", !inside, "not_in_segment {attributes}");
    }
    // A segment the environment does not have matches neither way, like a missing attribute.
    let orphaned = environment(
        vec![
            uses("in_segment", "inside"),
            uses("not_in_segment", "outside"),
        ],
        vec![],
    );
    assert_eq!(
        answer(&orphaned, "inside", json!({"targetingKey": "vip"})).0,
        "off"
    );
    assert_eq!(
        answer(&orphaned, "outside", json!({"targetingKey": "vip"})).0,
        "off"
    );
}

#[test]
fn a_flag_serves_its_off_variant_unless_every_prerequisite_serves_a_listed_variant() {
    let base = |enabled: bool| {
        flag(
            "base",
            json!({"enabled": enabled, "defaultVariant": "off",
                   "rules": [{"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}], "variant": "on"}]}),
        )
    };
    let split = flag(
        "split",
        json!({"enabled": true, "rollout": [{"variant": "on", "weight": 1}]}),
    );
    let dependent = |prerequisites: Value| {
        flag(
            "dependent",
            json!({"enabled": true, "variants": {"new": "n", "old": "o"}, "defaultVariant": "new",
                   "offVariant": "old", "prerequisites": prerequisites}),
        )
    };
    let on = json!([{"flag": "base", "variants": ["on"]}]);
    let pro = json!({"targetingKey": "u", "plan": "pro"});
    let free = json!({"targetingKey": "u", "plan": "free"});
    let snapshot = environment(vec![base(true), dependent(on.clone())], vec![]);
    assert_eq!(
        answer(&snapshot, "dependent", pro.clone()),
        ("new".into(), Reason::Static)
    );
    assert_eq!(
        answer(&snapshot, "dependent", free.clone()),
        ("old".into(), Reason::Disabled)
    );
    // Listing the off variant accepts it, unless the prerequisite is disabled.
    let either = json!([{"flag": "base", "variants": ["on", "off"]}]);
    let snapshot = environment(vec![base(true), dependent(either.clone())], vec![]);
    assert_eq!(answer(&snapshot, "dependent", free.clone()).0, "new");
    let snapshot = environment(vec![base(false), dependent(either)], vec![]);
    assert_eq!(
        answer(&snapshot, "dependent", pro.clone()),
        ("old".into(), Reason::Disabled)
    );
    // A missing prerequisite, or one in error, fails.
    let snapshot = environment(vec![dependent(on)], vec![]);
    assert_eq!(answer(&snapshot, "dependent", pro.clone()).0, "old");
    let snapshot = environment(
        vec![
            split,
            dependent(json!([{"flag": "split", "variants": ["on"]}])),
        ],
        vec![],
    );
    assert_eq!(
        answer(&snapshot, "dependent", json!({"plan": "pro"})).0,
        "old",
        "no targeting key"
    );
    assert_eq!(answer(&snapshot, "dependent", pro).0, "new");
}

#[test]
fn one_scope_evaluates_each_prerequisite_once() {
    let base = flag("base", json!({"enabled": true}));
    let mut flags = vec![base];
    for index in 0..10 {
        flags.push(flag(
            &format!("user-{index}"),
            json!({"enabled": true, "prerequisites": [{"flag": "base", "variants": ["on"]}]}),
        ));
    }
    let snapshot = environment(flags, vec![]);
    let scope = Scope::new(&snapshot);
    let anyone = context(json!({"targetingKey": "u"}));
    for flag in snapshot.flags() {
        let evaluation = Evaluation::within(Arc::clone(flag), &anyone, &scope).unwrap();
        assert_eq!(evaluation.variant(), "on");
    }
    assert_eq!(scope.evaluations(), 11, "11 flags, each evaluated once");
}

#[test]
fn a_bulk_walk_marks_exactly_the_listed_flags_and_evaluates_each_prerequisite_once() {
    // Prerequisites before, between and after the flags that list them, and one listed by two.
    let listing = |key: &str, prerequisites: &[&str]| {
        let listed: Vec<Value> = prerequisites
            .iter()
            .map(|flag| json!({"flag": flag, "variants": ["on"]}))
            .collect();
        flag(key, json!({"enabled": true, "prerequisites": listed}))
    };
    let flags = vec![
        flag("a-first", json!({"enabled": true})),
        listing("b-lists", &["a-first", "m-middle"]),
        flag("m-middle", json!({"enabled": true})),
        listing("n-lists", &["m-middle", "z-last"]),
        flag("q-plain", json!({"enabled": true})),
        flag("z-last", json!({"enabled": true})),
    ];
    let snapshot = environment(flags, vec![]);
    let marked: Vec<(String, bool)> = snapshot
        .flags_marking_prerequisites()
        .map(|(flag, listed)| (flag.key().to_string(), listed))
        .collect();
    let expected: Vec<(String, bool)> = snapshot
        .flags()
        .map(|flag| {
            let key = flag.key().to_string();
            let listed = snapshot.is_prerequisite(&key);
            (key, listed)
        })
        .collect();
    assert_eq!(marked, expected);
    assert_eq!(
        marked.iter().filter(|(_, listed)| *listed).count(),
        3,
        "{marked:?}"
    );
    let scope = Scope::new(&snapshot);
    let anyone = context(json!({"targetingKey": "u"}));
    for (flag, listed) in snapshot.flags_marking_prerequisites() {
        let own = Evaluation::within_own(Arc::clone(flag), listed, &anyone, &scope).unwrap();
        let alone = Evaluation::within(Arc::clone(flag), &anyone, &Scope::new(&snapshot)).unwrap();
        assert_eq!(
            (own.variant(), own.reason()),
            (alone.variant(), alone.reason())
        );
    }
    assert_eq!(scope.evaluations(), 6, "6 flags, each evaluated once");
}

#[test]
fn a_cycle_or_an_overlong_chain_in_stored_data_fails_the_prerequisite_instead_of_recursing() {
    // Writes refuse both; stored data written around the checks must still not hang.
    let listing = |key: &str, prerequisite: &str| {
        flag(
            key,
            json!({"enabled": true, "prerequisites": [{"flag": prerequisite, "variants": ["on"]}]}),
        )
    };
    let snapshot = environment(vec![listing("a", "b"), listing("b", "a")], vec![]);
    assert_eq!(
        answer(&snapshot, "a", json!({})),
        ("off".into(), Reason::Disabled)
    );
    let mut chain = vec![flag("c0", json!({"enabled": true}))];
    for index in 1..=12 {
        chain.push(listing(&format!("c{index}"), &format!("c{}", index - 1)));
    }
    let snapshot = environment(chain, vec![]);
    assert_eq!(
        answer(&snapshot, "c8", json!({})).0,
        "on",
        "8 links are evaluated"
    );
    assert_eq!(
        answer(&snapshot, "c12", json!({})).0,
        "off",
        "past 8 links the chain fails"
    );
}
