//! Properties over generated flags and contexts: evaluation never panics, is deterministic,
//! always serves a variant the flag has, and flags survive a JSON round trip unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use flag_core::{EvaluationContext, FeatureFlag, FlagKey, Reason, evaluate};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const ATTRIBUTES: [&str; 4] = ["plan", "age", "email", "targetingKey"];
const VARIANTS: [&str; 3] = ["on", "off", "blue"];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "[a-zA-Z0-9@._ -]{0,12}".prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

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
        "gte",
        "lt",
        "lte",
        "exists",
    ]);
    (
        prop::sample::select(ATTRIBUTES.to_vec()),
        operators,
        json_value(),
        "[a-z@.]{0,4}",
        -100.0f64..100.0,
    )
        .prop_map(|(attribute, operator, any, text, number)| {
            let value = match operator {
                "in" | "not_in" => Some(match any {
                    Value::Array(items) => Value::Array(items),
                    other => json!([other, text]),
                }),
                "starts_with" | "ends_with" => Some(Value::from(text)),
                "contains" => Some(if any.is_null() {
                    Value::from(text)
                } else {
                    any
                }),
                "gt" | "gte" | "lt" | "lte" => Some(Value::from(number)),
                "exists" => None,
                _ => Some(any),
            };
            let mut condition = json!({"attribute": attribute, "operator": operator});
            if let Some(value) = value {
                condition["value"] = value;
            }
            condition
        })
}

fn rollout() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(VARIANTS.to_vec()), 0u32..1000), 1..4).prop_map(
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
    )
        .prop_map(|(conditions, (field, outcome))| {
            let mut rule = json!({"conditions": conditions});
            rule[field] = outcome;
            rule
        })
}

/// Valid flags: documents that pass validation (a few generated ones, such as all-zero weights,
/// do not, and are discarded).
fn valid_flag() -> impl Strategy<Value = FeatureFlag> {
    (
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}",
        any::<bool>(),
        prop::collection::vec(json_value().prop_filter("non-null", |v| !v.is_null()), 3),
        prop::sample::select(VARIANTS.to_vec()),
        prop::sample::select(VARIANTS.to_vec()),
        prop::collection::vec(rule(), 0..4),
        prop::option::of(rollout()),
        prop::collection::btree_map("[a-z]{1,6}", "[a-z0-9 ]{0,8}", 0..3),
    )
        .prop_filter_map(
            "flag must validate",
            |(key, enabled, values, default_variant, off_variant, rules, rollout, metadata)| {
                let variants: Map<String, Value> = VARIANTS
                    .iter()
                    .map(|name| name.to_string())
                    .zip(values)
                    .collect();
                let mut body = json!({
                    "enabled": enabled, "variants": variants, "defaultVariant": default_variant,
                    "offVariant": off_variant, "rules": rules, "metadata": metadata,
                });
                if let Some(rollout) = rollout {
                    body["rollout"] = rollout;
                }
                let key = FlagKey::parse(&key).ok()?;
                FeatureFlag::from_definition_json(&key, &body.to_string()).ok()
            },
        )
}

fn any_context() -> impl Strategy<Value = EvaluationContext> {
    (
        prop::option::of("\\PC{0,10}"),
        prop::collection::btree_map(
            prop::sample::select(ATTRIBUTES[..3].to_vec()),
            json_value(),
            0..3,
        ),
    )
        .prop_map(|(targeting_key, attributes)| {
            let mut context = EvaluationContext::new();
            for (name, value) in attributes {
                context = context.with_attribute(name, value);
            }
            match targeting_key {
                Some(key) => context.with_targeting_key(key),
                None => context,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn evaluation_is_total_and_deterministic(flag in valid_flag(), context in any_context()) {
        let first = evaluate(&flag, &context);
        let second = evaluate(&flag, &context);
        prop_assert_eq!(&first, &second);
        match first {
            Ok(resolution) => {
                prop_assert!(flag.variant(resolution.variant).is_some());
                prop_assert!(resolution.reason != Reason::Error);
                if !flag.enabled() {
                    prop_assert_eq!(resolution.reason, Reason::Disabled);
                    prop_assert_eq!(resolution.variant.as_ref(), flag.off_variant());
                }
            }
            Err(error) => {
                // The only error a valid flag can produce is a rollout without a targeting key.
                prop_assert_eq!(error.code(), flag_core::ErrorCode::TargetingKeyMissing);
                prop_assert!(context.targeting_key().is_none());
            }
        }
    }

    #[test]
    fn stored_flags_round_trip_through_json(flag in valid_flag(), version in 1u64..1_000_000) {
        let stored = flag.stored_as(version, time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_700_000_000));
        let text = serde_json::to_string(&stored).unwrap();
        let back: FeatureFlag = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, stored);
    }

    #[test]
    fn arbitrary_documents_never_panic_the_parser(body in json_value()) {
        let key = FlagKey::parse("any").unwrap();
        let _ = FeatureFlag::from_definition_json(&key, &body.to_string());
        let _ = serde_json::from_value::<FeatureFlag>(body);
    }
}
