//! Parsing flag definitions: defaults, the JSON shape, and one typed error per broken rule.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use flag_core::{FeatureFlag, FlagKey, ValidationReason};
use rstest::rstest;
use serde_json::{Value, json};

fn key(name: &str) -> FlagKey {
    FlagKey::parse(name).unwrap()
}

fn parse(body: Value) -> Result<FeatureFlag, flag_core::ValidationError> {
    FeatureFlag::from_definition_json(&key("checkout"), &body.to_string())
}

#[test]
fn an_empty_body_gets_every_default() {
    let flag = parse(json!({})).unwrap();
    assert_eq!(flag.key().as_str(), "checkout");
    assert_eq!(flag.description(), "");
    assert!(!flag.enabled(), "enabled defaults to false");
    assert_eq!(flag.variants().len(), 2);
    assert_eq!(flag.variant("on").unwrap().1, &json!(true));
    assert_eq!(flag.variant("off").unwrap().1, &json!(false));
    assert_eq!(flag.default_variant(), "on");
    assert_eq!(flag.off_variant(), "off");
    assert!(flag.rules().is_empty());
    assert!(flag.rollout().is_empty());
    assert!(flag.metadata().is_empty());
    assert_eq!(flag.version(), 0, "a parsed definition was never stored");
}

#[test]
fn the_serialized_shape_is_camel_case_and_complete() {
    let flag = parse(json!({
        "description": "New checkout",
        "enabled": true,
        "variants": {"a": "x", "b": {"nested": [1, 2.5]}},
        "defaultVariant": "a",
        "offVariant": "b",
        "rules": [
            {"conditions": [{"attribute": "plan", "operator": "exists"}], "variant": "b"},
            {"conditions": [], "rollout": [{"variant": "a", "weight": 1}, {"variant": "b", "weight": 3}]}
        ],
        "rollout": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}],
        "metadata": {"owner": "payments"}
    }))
    .unwrap()
    .stored_as(3, time::macros::datetime!(2026-01-02 03:04:05 UTC));
    let shown = serde_json::to_value(&flag).unwrap();
    assert_eq!(
        shown,
        json!({
            "key": "checkout",
            "description": "New checkout",
            "enabled": true,
            "variants": {"a": "x", "b": {"nested": [1, 2.5]}},
            "defaultVariant": "a",
            "offVariant": "b",
            "rules": [
                {"conditions": [{"attribute": "plan", "operator": "exists"}], "variant": "b"},
                {"conditions": [], "rollout": [{"variant": "a", "weight": 1}, {"variant": "b", "weight": 3}]}
            ],
            "rollout": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}],
            "metadata": {"owner": "payments"},
            "version": 3,
            "updatedAt": "2026-01-02T03:04:05Z"
        })
    );
    // A stored flag reads back to the same value (the cache and repository rely on this).
    let back: FeatureFlag = serde_json::from_value(shown.clone()).unwrap();
    assert_eq!(back, flag);
    // And a GET-edit-PUT round trip works: server-set fields are accepted and ignored.
    let again = FeatureFlag::from_definition_json(&key("checkout"), &shown.to_string()).unwrap();
    assert_eq!(again.version(), 0);
    assert_eq!(again.rules(), flag.rules());
}

#[test]
fn integers_and_floats_keep_their_json_type() {
    let flag = parse(json!({"variants": {"on": 3, "off": 3.0}})).unwrap();
    let shown = serde_json::to_string(flag.variants()).unwrap();
    assert_eq!(shown, r#"{"off":3.0,"on":3}"#);
}

#[test]
fn null_means_default() {
    let flag = parse(json!({"description": null, "enabled": null, "rules": null, "rollout": null}))
        .unwrap();
    assert!(!flag.enabled());
    assert!(flag.rules().is_empty());
}

#[test]
fn server_set_fields_of_any_shape_are_ignored_in_a_definition() {
    let flag = parse(json!({"version": "garbage", "updatedAt": 12})).unwrap();
    assert_eq!(flag.version(), 0);
}

#[test]
fn a_stored_flag_needs_its_server_fields() {
    let missing_version = json!({"key": "a", "updatedAt": "2026-01-01T00:00:00Z"});
    assert!(serde_json::from_value::<FeatureFlag>(missing_version).is_err());
    let bad_time = json!({"key": "a", "version": 1, "updatedAt": "yesterday"});
    assert!(serde_json::from_value::<FeatureFlag>(bad_time).is_err());
    let ok = json!({"key": "a", "version": 1, "updatedAt": "2026-01-01T00:00:00Z"});
    assert_eq!(
        serde_json::from_value::<FeatureFlag>(ok).unwrap().version(),
        1
    );
}

/// One row per rule of the contract: the body, the field named, and the reason.
#[rstest]
#[case::unknown_field(json!({"enabeld": true}), "$", "unknown field")]
#[case::unknown_rule_field(json!({"rules": [{"variant": "on", "when": 1}]}), "$", "unknown field")]
#[case::wrong_type(json!({"enabled": "yes"}), "$", "invalid type")]
#[case::not_an_object(json!([1, 2]), "$", "invalid type")]
#[case::key_mismatch(json!({"key": "other"}), "key", "does not match path key")]
#[case::unknown_default(json!({"defaultVariant": "blue"}), "defaultVariant", "unknown variant \"blue\"")]
#[case::unknown_off(json!({"variants": {"on": 1}, "offVariant": "on", "defaultVariant": "x"}), "defaultVariant", "unknown variant")]
#[case::default_off_missing(json!({"variants": {"on": 1}}), "offVariant", "unknown variant \"off\"")]
#[case::no_variants(json!({"variants": {}}), "variants", "at least one variant")]
#[case::null_variant(json!({"variants": {"on": null, "off": 1}}), "variants.on", "must not be null")]
#[case::empty_variant_name(json!({"variants": {"": 1, "on": 1, "off": 2}}), "variants.", "1 to 128")]
#[case::rule_unknown_variant(json!({"rules": [{"variant": "nope"}]}), "rules[0].variant", "unknown variant")]
#[case::rule_both(json!({"rules": [{"variant": "on", "rollout": [{"variant": "on", "weight": 1}]}]}), "rules[0]", "exactly one")]
#[case::rule_neither(json!({"rules": [{"conditions": []}]}), "rules[0]", "exactly one")]
#[case::negative_weight(json!({"rollout": [{"variant": "on", "weight": -1}]}), "rollout[0].weight", "must not be negative")]
#[case::negative_float_weight(json!({"rollout": [{"variant": "on", "weight": -0.5}]}), "rollout[0].weight", "must not be negative")]
#[case::fractional_weight(json!({"rollout": [{"variant": "on", "weight": 0.5}]}), "rollout[0].weight", "whole number")]
#[case::string_weight(json!({"rollout": [{"variant": "on", "weight": "5"}]}), "rollout[0].weight", "whole number")]
#[case::huge_weight(json!({"rollout": [{"variant": "on", "weight": 5_000_000_000u64}]}), "rollout[0].weight", "whole number")]
#[case::zero_total(json!({"rollout": [{"variant": "on", "weight": 0}, {"variant": "off", "weight": 0}]}), "rollout", "sum to more than 0")]
#[case::total_too_large(json!({"rollout": [{"variant": "on", "weight": 4_000_000_000u64}, {"variant": "off", "weight": 4_000_000_000u64}]}), "rollout", "at most 4294967295")]
#[case::rule_empty_rollout(json!({"rules": [{"rollout": []}]}), "rules[0].rollout", "sum to more than 0")]
#[case::rollout_unknown_variant(json!({"rollout": [{"variant": "blue", "weight": 1}]}), "rollout[0].variant", "unknown variant")]
#[case::unknown_operator(json!({"rules": [{"conditions": [{"attribute": "a", "operator": "like", "value": 1}], "variant": "on"}]}), "rules[0].conditions[0].operator", "unknown operator \"like\"")]
#[case::semver_needs_version(json!({"rules": [{"conditions": [{"attribute": "v", "operator": "semver_gte", "value": "1.2"}], "variant": "on"}]}), "rules[0].conditions[0].value", "not a semantic version")]
#[case::semver_needs_string(json!({"rules": [{"conditions": [{"attribute": "v", "operator": "semver_eq", "value": 1}], "variant": "on"}]}), "rules[0].conditions[0].value", "string")]
#[case::semver_leading_zero(json!({"rules": [{"conditions": [{"attribute": "v", "operator": "semver_lt", "value": "01.2.3"}], "variant": "on"}]}), "rules[0].conditions[0].value", "not a semantic version")]
#[case::invalid_pattern(json!({"rules": [{"conditions": [{"attribute": "e", "operator": "matches", "value": "(unclosed"}], "variant": "on"}]}), "rules[0].conditions[0].value", "invalid regular expression")]
#[case::backreference(json!({"rules": [{"conditions": [{"attribute": "e", "operator": "matches", "value": "(a)\\1"}], "variant": "on"}]}), "rules[0].conditions[0].value", "invalid regular expression")]
#[case::long_pattern(json!({"rules": [{"conditions": [{"attribute": "e", "operator": "matches", "value": "a".repeat(1025)}], "variant": "on"}]}), "rules[0].conditions[0].value", "at most 1024")]
#[case::huge_compiled_pattern(json!({"rules": [{"conditions": [{"attribute": "e", "operator": "matches", "value": "\\w{1000}\\w{1000}"}], "variant": "on"}]}), "rules[0].conditions[0].value", "compiles to more than")]
#[case::reserved_attribute(json!({"rules": [{"conditions": [{"attribute": "$today", "operator": "gt", "value": 1}], "variant": "on"}]}), "rules[0].conditions[0].attribute", "reserved")]
#[case::segment_with_attribute(json!({"rules": [{"conditions": [{"attribute": "a", "operator": "in_segment", "value": "beta"}], "variant": "on"}]}), "rules[0].conditions[0].attribute", "take no attribute")]
#[case::segment_key(json!({"rules": [{"conditions": [{"operator": "not_in_segment", "value": "_beta"}], "variant": "on"}]}), "rules[0].conditions[0].value", "segment key")]
#[case::segment_missing_attribute(json!({"rules": [{"conditions": [{"operator": "equals", "value": 1}], "variant": "on"}]}), "rules[0].conditions[0].attribute", "must not be empty")]
#[case::bucket_by_on_variant_rule(json!({"rules": [{"variant": "on", "bucketBy": "companyId"}]}), "rules[0].bucketBy", "only")]
#[case::bucket_by_empty(json!({"bucketBy": ""}), "bucketBy", "must name")]
#[case::bucket_by_reserved(json!({"bucketBy": "$now"}), "bucketBy", "reserved")]
#[case::prerequisite_self(json!({"prerequisites": [{"flag": "checkout", "variants": ["on"]}]}), "prerequisites[0].flag", "own prerequisite")]
#[case::prerequisite_twice(json!({"prerequisites": [{"flag": "a", "variants": ["on"]}, {"flag": "a", "variants": ["off"]}]}), "prerequisites[1].flag", "twice")]
#[case::prerequisite_no_variants(json!({"prerequisites": [{"flag": "a", "variants": []}]}), "prerequisites[0].variants", "at least one")]
#[case::prerequisite_bad_key(json!({"prerequisites": [{"flag": "a b", "variants": ["on"]}]}), "prerequisites[0].flag", "not allowed")]
#[case::prerequisite_unknown_field(json!({"prerequisites": [{"flag": "a", "variants": ["on"], "when": 1}]}), "$", "unknown field")]
#[case::empty_attribute(json!({"rules": [{"conditions": [{"attribute": "", "operator": "exists"}], "variant": "on"}]}), "rules[0].conditions[0].attribute", "must not be empty")]
#[case::in_needs_array(json!({"rules": [{"conditions": [{"attribute": "a", "operator": "in", "value": "x"}], "variant": "on"}]}), "rules[0].conditions[0].value", "array")]
#[case::gt_needs_number(json!({"rules": [{"conditions": [{"attribute": "a", "operator": "gt", "value": "5"}], "variant": "on"}]}), "rules[0].conditions[0].value", "number")]
#[case::starts_needs_string(json!({"rules": [{"conditions": [{"attribute": "a", "operator": "starts_with", "value": 5}], "variant": "on"}]}), "rules[0].conditions[0].value", "string")]
#[case::exists_takes_no_value(json!({"rules": [{"conditions": [{"attribute": "a", "operator": "exists", "value": true}], "variant": "on"}]}), "rules[0].conditions[0].value", "no `value`")]
#[case::equals_needs_value(json!({"rules": [{"conditions": [{"attribute": "a", "operator": "equals"}], "variant": "on"}]}), "rules[0].conditions[0].value", "a `value`")]
#[case::metadata_strings(json!({"metadata": {"n": 1}}), "$", "invalid type")]
fn invalid_definitions_name_field_and_reason(
    #[case] body: Value,
    #[case] field: &str,
    #[case] reason: &str,
) {
    let error = parse(body).unwrap_err();
    assert!(
        error.field().starts_with(field),
        "field {:?}, expected {field:?} ({error})",
        error.field()
    );
    assert!(
        error.to_string().contains(reason),
        "{error} should say {reason:?}"
    );
}

#[test]
fn reasons_are_typed() {
    let error = parse(json!({"rollout": [{"variant": "on", "weight": -3}]})).unwrap_err();
    assert_eq!(
        error.reason(),
        &ValidationReason::NegativeWeight("-3".into())
    );
    let error = parse(json!({"defaultVariant": "x"})).unwrap_err();
    assert_eq!(
        error.reason(),
        &ValidationReason::UnknownVariant("x".into())
    );
}

#[test]
fn whole_floats_are_whole_weights() {
    let flag = parse(
        json!({"rollout": [{"variant": "on", "weight": 25.0}, {"variant": "off", "weight": 75}]}),
    )
    .unwrap();
    assert_eq!(flag.rollout().total_weight(), 100);
}

#[test]
fn a_flag_level_empty_rollout_is_no_rollout() {
    let flag = parse(json!({"rollout": []})).unwrap();
    assert!(flag.rollout().is_empty());
}

#[test]
fn a_rule_without_conditions_is_accepted() {
    let flag = parse(json!({"rules": [{"variant": "off"}]})).unwrap();
    assert!(flag.rules()[0].conditions().is_empty());
}

#[test]
fn a_hostile_variant_name_is_echoed_short() {
    let name = "v".repeat(100_000);
    let error = parse(json!({"defaultVariant": name})).unwrap_err();
    assert!(
        error.to_string().len() < 400,
        "{} bytes",
        error.to_string().len()
    );
}

/// A stored flag using every field of every level.
fn complete_stored_flag() -> Value {
    json!({
        "key": "full", "description": "d", "enabled": true,
        "variants": {"on": true, "off": false}, "defaultVariant": "on", "offVariant": "off",
        "rules": [
            {"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}], "variant": "on"},
            {"conditions": [{"attribute": "beta", "operator": "exists"},
                            {"operator": "in_segment", "value": "testers"},
                            {"attribute": "app", "operator": "semver_caret", "value": "v2.1.0"},
                            {"attribute": "email", "operator": "matches", "value": "@example\\.com$"}],
             "rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}],
             "bucketBy": "companyId"}
        ],
        "rollout": [{"variant": "on", "weight": 3}],
        "bucketBy": "orgId",
        "prerequisites": [{"flag": "base", "variants": ["on"]}],
        "metadata": {"team": "web"}, "version": 4, "updatedAt": "2026-01-01T00:00:00Z"
    })
}

#[test]
fn stored_flags_from_a_newer_release_are_read_with_unknown_fields_ignored() {
    let known = serde_json::from_value::<FeatureFlag>(complete_stored_flag()).unwrap();
    let mut newer = complete_stored_flag();
    newer["segmentsUsed"] = json!(["beta"]);
    newer["rules"][0]["weighting"] = json!("companyId");
    newer["rules"][0]["conditions"][0]["caseSensitive"] = json!(false);
    newer["rules"][1]["rollout"][0]["note"] = json!("half");
    newer["rollout"][0]["label"] = json!({"nested": [1, 2]});
    newer["prerequisites"][0]["unless"] = json!("x");
    let read = serde_json::from_value::<FeatureFlag>(newer.clone()).unwrap();
    assert_eq!(read, known);
    // The same text through the string decoder the adapters use.
    let read: FeatureFlag = serde_json::from_str(&newer.to_string()).unwrap();
    assert_eq!(read, known);
    // Input stays strict: the same fields in a definition are refused.
    let mut definition = newer;
    for server_field in ["key", "version", "updatedAt"] {
        definition.as_object_mut().unwrap().remove(server_field);
    }
    let refused = parse(definition).unwrap_err();
    assert!(refused.to_string().contains("unknown field"), "{refused}");
}

#[test]
fn the_fields_read_from_storage_are_every_field_a_flag_is_stored_with() {
    // Every field a flag serializes must survive the tolerant read: a stored flag read back
    // and written again is the same flag (a field missing from the known lists would be lost).
    let flag = serde_json::from_value::<FeatureFlag>(complete_stored_flag()).unwrap();
    let stored = serde_json::to_value(&flag).unwrap();
    assert_eq!(
        stored,
        complete_stored_flag(),
        "the sample uses every stored field"
    );
    let again = serde_json::from_value::<FeatureFlag>(stored.clone()).unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap(), stored);
}

#[rstest]
#[case::plain(json!({}), false)]
#[case::attribute_rules(json!({"rules": [{"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}], "variant": "on"}]}), false)]
#[case::segment_in_a_later_rule(json!({"rules": [
    {"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}], "variant": "on"},
    {"conditions": [{"operator": "not_in_segment", "value": "beta"}], "variant": "off"}
]}), true)]
#[case::prerequisite(json!({"prerequisites": [{"flag": "other", "variants": ["on"]}]}), true)]
fn whether_a_flag_needs_its_environment_is_decided_when_it_is_built(
    #[case] body: Value,
    #[case] needs: bool,
) {
    let flag = parse(body).unwrap();
    assert_eq!(flag.needs_environment(), needs, "parsed");
    // A stored flag is read back through `Deserialize`, which builds it the same way.
    let stored: FeatureFlag = serde_json::from_value(serde_json::to_value(&flag).unwrap()).unwrap();
    assert_eq!(stored.needs_environment(), needs, "read back");
}

#[test]
fn a_variant_is_found_by_the_flags_own_name_and_by_any_copy_of_it() {
    let flag = parse(json!({
        "variants": {"a": 1, "b": 2, "c": 3},
        "defaultVariant": "c",
        "offVariant": "a"
    }))
    .unwrap();
    let own = flag.default_variant();
    let (found, value) = flag.variant(own).unwrap();
    assert!(
        std::ptr::eq(found.as_ptr(), own.as_ptr()),
        "the map's own name"
    );
    assert_eq!(value, &json!(3));
    let copy = String::from("c");
    let (by_copy, value) = flag.variant(&copy).unwrap();
    assert!(
        std::ptr::eq(by_copy.as_ptr(), own.as_ptr()),
        "the map's own name, found by characters"
    );
    assert_eq!(value, &json!(3));
    assert_eq!(flag.variant("b").unwrap().1, &json!(2));
    assert!(flag.variant("d").is_none());
    assert!(flag.variant("").is_none());
}

#[test]
fn a_variant_past_the_first_eight_is_found_too() {
    let variants: serde_json::Map<String, Value> = (0..12)
        .map(|index| (format!("v{index:02}"), json!(index)))
        .collect();
    let flag =
        parse(json!({"variants": variants, "defaultVariant": "v11", "offVariant": "v00"})).unwrap();
    assert_eq!(flag.variant(flag.default_variant()).unwrap().1, &json!(11));
    assert_eq!(flag.variant("v10").unwrap().1, &json!(10));
}
