//! What one evaluation costs, by the kind of targeting a flag uses: a plain flag, 10 rules of 5
//! conditions, a segment of 1,000 included keys, 3 prerequisites, a regular expression, and a
//! version comparison. Each is evaluated within its environment's snapshot, as the service does.
//!
//! `cargo bench -p flag-core --bench evaluation`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark harness

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flag_core::{
    EnvironmentSnapshot, Evaluation, EvaluationContext, FeatureFlag, FlagKey, Revision, Scope,
    Segment, SegmentKey,
};
use serde_json::{Value, json};

fn flag(key: &str, body: Value) -> FeatureFlag {
    FeatureFlag::from_definition_json(&FlagKey::parse(key).unwrap(), &body.to_string()).unwrap()
}

/// The environment every case is evaluated in.
fn environment() -> EnvironmentSnapshot {
    let mut flags = vec![flag("plain", json!({"enabled": true}))];
    // 10 rules of 5 conditions; the context fails the last condition of each rule but the last.
    let rules: Vec<Value> = (0..10)
        .map(|rule| {
            let mut conditions: Vec<Value> = (0..4)
                .map(|n| {
                    json!({"attribute": format!("a{n}"), "operator": "in", "value": ["x", "y", "z"]})
                })
                .collect();
            let wanted = if rule == 9 { "pro" } else { "enterprise" };
            conditions.push(json!({"attribute": "plan", "operator": "equals", "value": wanted}));
            json!({"conditions": conditions, "variant": "on"})
        })
        .collect();
    flags.push(flag(
        "ten-rules",
        json!({"enabled": true, "defaultVariant": "off", "rules": rules}),
    ));
    flags.push(flag(
        "segment",
        json!({"enabled": true, "defaultVariant": "off",
               "rules": [{"conditions": [{"operator": "in_segment", "value": "customers"}], "variant": "on"}]}),
    ));
    for index in 0..3 {
        flags.push(flag(&format!("base-{index}"), json!({"enabled": true})));
    }
    flags.push(flag(
        "prerequisites",
        json!({"enabled": true, "prerequisites": [
            {"flag": "base-0", "variants": ["on"]},
            {"flag": "base-1", "variants": ["on"]},
            {"flag": "base-2", "variants": ["on"]}]}),
    ));
    flags.push(flag(
        "regex",
        json!({"enabled": true, "defaultVariant": "off", "rules": [{"conditions": [
            {"attribute": "email", "operator": "matches", "value": "^[a-z0-9.]+@(example|corp)\\.com$"}],
            "variant": "on"}]}),
    ));
    flags.push(flag(
        "semver",
        json!({"enabled": true, "defaultVariant": "off", "rules": [{"conditions": [
            {"attribute": "app", "operator": "semver_gte", "value": "2.3.0"}], "variant": "on"}]}),
    ));
    let included: Vec<String> = (0..1_000).map(|n| format!("user-{n:04}")).collect();
    let customers = Segment::from_definition_json(
        &SegmentKey::parse("customers").unwrap(),
        &json!({"included": included,
                "rules": [{"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}]}]})
        .to_string(),
    )
    .unwrap();
    EnvironmentSnapshot::new(Revision(1), flags)
        .unwrap()
        .with_segments([customers])
        .unwrap()
}

fn evaluations(c: &mut Criterion) {
    let snapshot = environment();
    // Not in the segment's 1,000 keys: the lookup misses and the segment's rule decides.
    let context = EvaluationContext::from_json(json!({
        "targetingKey": "user-9999", "a0": "x", "a1": "y", "a2": "z", "a3": "x",
        "plan": "pro", "email": "ana.lee@example.com", "app": "2.10.1"}))
    .unwrap();
    let mut group = c.benchmark_group("evaluation");
    for key in [
        "plain",
        "ten-rules",
        "segment",
        "prerequisites",
        "regex",
        "semver",
    ] {
        let flag = Arc::clone(snapshot.flag(key).unwrap());
        // Every case must land on `on`, or it measures the wrong path.
        let scope = Scope::new(&snapshot);
        assert_eq!(
            Evaluation::within(Arc::clone(&flag), &context, &scope)
                .unwrap()
                .variant(),
            "on",
            "{key}"
        );
        group.bench_function(key, |b| {
            b.iter(|| {
                // A scope per evaluation, as a single-flag request makes.
                let scope = Scope::new(&snapshot);
                black_box(
                    Evaluation::within(Arc::clone(&flag), black_box(&context), &scope).unwrap(),
                )
            });
        });
    }
    // The path of a flag with no segments or prerequisites: the service evaluates it without
    // reading its environment.
    let plain = Arc::clone(snapshot.flag("plain").unwrap());
    group.bench_function("plain-standalone", |b| {
        b.iter(|| black_box(Evaluation::of(Arc::clone(&plain), black_box(&context)).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, evaluations);
criterion_main!(benches);
