//! flagd's own flag files, imported: every flag that maps answers as flagd's documentation and
//! its testbed say, and every flag that does not is refused with its path (never approximated).
//!
//! The files are in `tests/vectors/flagd/` with the commits they came from. The testbed's
//! `.feature` files are read as they are by a small Gherkin reader below, so a new testbed
//! brings its new scenarios with it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::collections::{BTreeMap, BTreeSet};

use flag_core::{
    EvaluationContext, FeatureFlag, ImportProblem, MAX_FLAGD_RULES, Reason, evaluate,
    is_flagd_document, read_document,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/flagd");

fn vector(path: &str) -> String {
    std::fs::read_to_string(format!("{VECTORS}/{path}"))
        .unwrap_or_else(|error| panic!("{VECTORS}/{path}: {error}"))
}

fn import(document: &Value) -> (BTreeMap<String, FeatureFlag>, Vec<ImportProblem>) {
    assert!(is_flagd_document(document));
    let (contents, problems) = read_document(document);
    let flags = contents
        .flags
        .into_iter()
        .map(|flag| (flag.key().as_str().to_owned(), flag))
        .collect();
    (flags, problems)
}

fn answer(flag: &FeatureFlag, context: Value) -> (Value, String, Reason) {
    let context = EvaluationContext::from_json(context).unwrap();
    let resolution = evaluate(flag, &context).unwrap();
    (
        resolution.value.clone(),
        resolution.variant.to_string(),
        resolution.reason,
    )
}

/// flagd's `samples/example_flags.flagd.json` imports whole, and answers as its JSONLogic says.
#[test]
fn flagds_sample_file_imports_whole_and_answers_as_flagd() {
    let document: Value =
        serde_json::from_str(&vector("samples/example_flags.flagd.json")).unwrap();
    let (flags, problems) = import(&document);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        flags.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "fibAlgo",
            "headerColor",
            "isColorYellow",
            "myBoolFlag",
            "myFloatFlag",
            "myIntFlag",
            "myObjectFlag",
            "myStringFlag"
        ]
    );
    // No targeting: the default variant, reason STATIC.
    for (key, value, variant) in [
        ("myBoolFlag", json!(true), "on"),
        ("myStringFlag", json!("val1"), "key1"),
        ("myFloatFlag", json!(1.23), "one"),
        ("myIntFlag", json!(1), "one"),
        ("myObjectFlag", json!({"key": "val"}), "object1"),
    ] {
        assert_eq!(
            answer(&flags[key], json!({})),
            (value, variant.to_owned(), Reason::Static),
            "{key}"
        );
    }
    // `if [color == yellow, "on", "off"]`: both branches are the targeting's answer.
    let yellow = &flags["isColorYellow"];
    assert_eq!(
        answer(yellow, json!({"color": "yellow"})).2,
        Reason::TargetingMatch
    );
    assert_eq!(answer(yellow, json!({"color": "yellow"})).0, json!(true));
    assert_eq!(
        answer(yellow, json!({"color": "blue"})),
        (json!(false), "off".into(), Reason::TargetingMatch)
    );
    assert_eq!(
        answer(yellow, json!({})),
        (json!(false), "off".into(), Reason::TargetingMatch)
    );
    // `if [$ref emailWithFaas, "binet", null]`: `in` on a string is "contains"; null is the
    // default variant with reason DEFAULT.
    let fib = &flags["fibAlgo"];
    assert_eq!(
        answer(fib, json!({"email": "ann@faas.com"})),
        (json!("binet"), "binet".into(), Reason::TargetingMatch)
    );
    assert_eq!(
        answer(fib, json!({"email": "ann@example.com"})),
        (json!("recursive"), "recursive".into(), Reason::Default)
    );
    assert_eq!(
        answer(fib, json!({})),
        (json!("recursive"), "recursive".into(), Reason::Default)
    );
    // `fractional` bucketed by flag key + email, 25 each: every colour, near a quarter each,
    // the same for the same email; others get the default.
    let header = &flags["headerColor"];
    let mut shares: BTreeMap<String, u32> = BTreeMap::new();
    for user in 0..4000 {
        let context = json!({"email": format!("user{user}@faas.com")});
        let (_, variant, reason) = answer(header, context.clone());
        assert_eq!(reason, Reason::Split);
        assert_eq!(answer(header, context).1, variant, "sticky");
        *shares.entry(variant).or_default() += 1;
    }
    assert_eq!(
        shares.keys().collect::<Vec<_>>(),
        ["blue", "green", "red", "yellow"]
    );
    for (variant, count) in &shares {
        assert!((800..1200).contains(count), "{variant}: {count} of 4000");
    }
    assert_eq!(
        answer(header, json!({"email": "ann@example.com"})),
        (json!("#FF0000"), "red".into(), Reason::Default)
    );
}

/// The secondary sample imports whole too.
#[test]
fn flagds_secondary_sample_imports_whole() {
    let document: Value =
        serde_json::from_str(&vector("samples/example_flags_secondary.flagd.json")).unwrap();
    let (flags, problems) = import(&document);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(answer(&flags["myBoolFlag"], json!({})).0, json!(false));
    assert_eq!(
        answer(&flags["isColorGreen"], json!({"color": "yellow"})).0,
        json!(true)
    );
}

/// The testbed flags this server refuses, each for a reason its path and message name.
const REFUSED: &[(&str, &str)] = &[
    ("disabled-boolean-flag", "DISABLED"),
    ("disabled-float-flag", "DISABLED"),
    ("disabled-integer-flag", "DISABLED"),
    ("disabled-object-flag", "DISABLED"),
    ("disabled-string-flag", "DISABLED"),
    ("ends-with-non-string-flag", "chooses a variant"),
    ("ends-with-wrong-args-flag", "chooses a variant"),
    (
        "fractional-as-condition-false-flag",
        "\"fractional\" is not imported",
    ),
    (
        "fractional-as-condition-flag",
        "\"fractional\" is not imported",
    ),
    ("fractional-flag", "nested property"),
    (
        "fractional-flag-A-shared-seed",
        "flag key followed by one attribute",
    ),
    (
        "fractional-flag-B-shared-seed",
        "flag key followed by one attribute",
    ),
    (
        "fractional-hash-edge-flag",
        "flag key followed by one attribute",
    ),
    (
        "fractional-negative-weight-flag",
        "flag key followed by one attribute",
    ),
    (
        "fractional-nested-if-flag",
        "flag key followed by one attribute",
    ),
    (
        "fractional-nested-var-flag",
        "flag key followed by one attribute",
    ),
    (
        "fractional-nested-weight-flag",
        "flag key followed by one attribute",
    ),
    (
        "fractional-null-bucket-key-flag",
        "flag key followed by one attribute",
    ),
    (
        "fractional-zero-weights-flag",
        "flag key followed by one attribute",
    ),
    ("metadata-flag", "metadata values here are strings"),
    ("no-default-flag-null-targeting-variant", "code default"),
    (
        "no-default-flag-undefined-targeting-variant",
        "code default",
    ),
    ("null-default-flag", "code default"),
    ("ref-to-nonexistent-evaluator-flag", "$evaluators has no"),
    ("semver-invalid-operator-flag", "chooses a variant"),
    ("semver-invalid-version-flag", "chooses a variant"),
    ("semver-numeric-context-flag", "whole SemVer"),
    ("semver-partial-version-flag", "whole SemVer"),
    ("semver-wrong-args-flag", "chooses a variant"),
    ("starts-with-non-string-flag", "chooses a variant"),
    ("starts-with-wrong-args-flag", "chooses a variant"),
    ("undefined-default-flag", "code default"),
];

/// Examples of flags that import whose answer here is not flagd's, each with why. Kept exact:
/// the test fails when one of these starts to agree, so the list cannot go stale.
const DIFFERENT: &[(&str, &str, &str)] = &[];

/// Every flag of flagd's testbed either imports and gives, in every testbed example, the value
/// (and reason, where the example names one) flagd's evaluators must give, or is refused with
/// its path for a listed reason.
#[test]
fn flagds_testbed_answers_are_ours_for_every_flag_that_imports() {
    let document: Value = serde_json::from_str(&vector("testbed/testkit-flags.json")).unwrap();
    let (flags, problems) = import(&document);

    let mut refused: BTreeMap<String, Vec<&ImportProblem>> = BTreeMap::new();
    for problem in &problems {
        let key = problem
            .path
            .strip_prefix("flags.")
            .and_then(|rest| {
                document["flags"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .find(|key| rest == key.as_str() || rest.starts_with(&format!("{key}.")))
            })
            .unwrap_or_else(|| panic!("a problem outside any flag: {problem:?}"));
        refused.entry(key.clone()).or_default().push(problem);
    }
    assert_eq!(
        refused.keys().map(String::as_str).collect::<Vec<_>>(),
        REFUSED.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
        "refused: {refused:#?}"
    );
    for (key, reason) in REFUSED {
        assert!(
            refused[*key]
                .iter()
                .any(|problem| problem.message.contains(reason)),
            "{key}: {:#?}",
            refused[*key]
        );
    }
    let file_keys: BTreeSet<&str> = document["flags"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(flags.len() + refused.len(), file_keys.len());

    let mut checked = 0;
    let mut skipped = 0;
    let mut differing = Vec::new();
    for entry in std::fs::read_dir(format!("{VECTORS}/testbed/gherkin")).unwrap() {
        let path = entry.unwrap().path();
        let feature = std::fs::read_to_string(&path).unwrap();
        for case in gherkin::cases(&feature) {
            if case.tags.iter().any(|tag| tag == "@fractional-v1") {
                // flagd's legacy bucketing; the contract's (and flagd's current) is v2.
                continue;
            }
            let flag_key = case.flag_key();
            if refused.contains_key(&flag_key) {
                skipped += 1;
                continue;
            }
            let name = format!(
                "{}: {}",
                path.file_name().unwrap().to_string_lossy(),
                case.name
            );
            match run(
                &case,
                flags.get(&flag_key),
                file_keys.contains(flag_key.as_str()),
            ) {
                Ok(()) => checked += 1,
                Err(difference) => differing.push((flag_key, name, difference)),
            }
        }
    }
    let expected: Vec<(String, String)> = DIFFERENT
        .iter()
        .map(|(key, case, _)| ((*key).to_owned(), (*case).to_owned()))
        .collect();
    let found: Vec<(String, String)> = differing
        .iter()
        .map(|(key, case, _)| (key.clone(), case.clone()))
        .collect();
    assert_eq!(
        found, expected,
        "answers that differ from flagd's: {differing:#?}"
    );
    eprintln!("flagd testbed: {checked} examples checked, {skipped} skipped (refused flags)");
    assert!(
        checked >= 45,
        "only {checked} testbed examples checked ({skipped} of refused flags)"
    );
    assert!(skipped > 0);
}

/// Runs one testbed example against the imported flag, as an OpenFeature client would see it.
fn run(case: &gherkin::Case, flag: Option<&FeatureFlag>, in_file: bool) -> Result<(), String> {
    let (kind, fallback) = case.flag_type();
    let fallback = typed(&kind, &fallback);
    let (value, reason, error) = match flag {
        None => {
            assert!(!in_file);
            (
                fallback.clone(),
                "ERROR".to_owned(),
                Some("FLAG_NOT_FOUND".to_owned()),
            )
        }
        Some(flag) => match evaluate(flag, &case.context()) {
            // The client checks the type it asked for, as the OpenFeature SDKs do.
            Ok(resolution) if !of_type(&kind, resolution.value) => (
                fallback.clone(),
                "ERROR".to_owned(),
                Some("TYPE_MISMATCH".to_owned()),
            ),
            Ok(resolution) => (
                resolution.value.clone(),
                flagd_reason(resolution.reason),
                None,
            ),
            Err(error) => (
                fallback.clone(),
                "ERROR".to_owned(),
                Some(error.code().as_str().to_owned()),
            ),
        },
    };
    for (step, expected) in &case.then {
        let holds = match step.as_str() {
            "value" => same_value(&kind, &value, &typed(&kind, expected)),
            "reason" => reason == *expected,
            "error-code" => error.as_deref() == Some(expected.as_str()),
            "metadata is empty" => flag.is_some_and(|flag| flag.metadata().is_empty()),
            other => panic!("a step this reader does not know: {other}"),
        };
        if !holds {
            return Err(format!(
                "{step}: expected {expected:?}, got value {value}, reason {reason}, error {error:?}"
            ));
        }
    }
    Ok(())
}

/// The reason flagd gives for ours: a rollout here is `SPLIT`, flagd's `fractional` answers
/// `TARGETING_MATCH` (documented in docs/flags-as-files.md).
fn flagd_reason(reason: Reason) -> String {
    match reason {
        Reason::Split => "TARGETING_MATCH".to_owned(),
        other => serde_json::to_value(other)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

fn typed(kind: &str, text: &str) -> Value {
    match kind {
        "Boolean" => Value::Bool(text == "true"),
        "String" => Value::String(text.to_owned()),
        "Integer" => text.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
        "Float" => text.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        "Object" => serde_json::from_str(&text.replace("\\\"", "\""))
            .unwrap_or_else(|error| panic!("{text}: {error}")),
        other => panic!("flag type {other}"),
    }
}

fn of_type(kind: &str, value: &Value) -> bool {
    match kind {
        "Boolean" => value.is_boolean(),
        "String" => value.is_string(),
        "Integer" => value.is_i64() || value.is_u64(),
        "Float" => value.is_number(),
        "Object" => value.is_object(),
        _ => false,
    }
}

fn same_value(kind: &str, got: &Value, expected: &Value) -> bool {
    match kind {
        "Float" => got.as_f64() == expected.as_f64(),
        _ => got == expected,
    }
}

/// Just enough Gherkin for the testbed: scenarios and outlines with their examples, tags,
/// a background, the steps the testbed uses, and step data tables.
mod gherkin {
    use flag_core::EvaluationContext;
    use serde_json::{Value, json};

    /// One scenario, or one example row of an outline, with its placeholders filled in.
    #[derive(Debug, Clone)]
    pub(super) struct Case {
        pub(super) name: String,
        pub(super) tags: Vec<String>,
        givens: Vec<String>,
        /// `value`, `reason`, `error-code` or `metadata is empty`, and what is expected.
        pub(super) then: Vec<(String, String)>,
    }

    impl Case {
        /// The key of the flag the case evaluates.
        pub(super) fn flag_key(&self) -> String {
            self.flag_step().1
        }

        /// The type the flag is asked for (`String`, `Integer`, ...), and the fallback.
        pub(super) fn flag_type(&self) -> (String, String) {
            let (kind, _, fallback) = self.flag_step();
            (kind, fallback)
        }

        fn flag_step(&self) -> (String, String, String) {
            for step in &self.givens {
                if let Some((kind, rest)) = step.split_once("-flag with key ") {
                    let kind = kind.trim_start_matches("a ").to_owned();
                    let quoted = quoted(rest);
                    return (kind, quoted[0].clone(), quoted[1].clone());
                }
            }
            panic!("no flag in {self:?}")
        }

        /// The evaluation context the case's steps build.
        pub(super) fn context(&self) -> EvaluationContext {
            let mut context = EvaluationContext::new();
            for step in &self.givens {
                let quoted = quoted(step);
                if step.starts_with("a context containing a targeting key") {
                    context = context.with_targeting_key(quoted[0].clone());
                } else if step.starts_with("a context containing a key") {
                    let value = match quoted[1].as_str() {
                        "String" => Value::String(quoted[2].clone()),
                        "Integer" => json!(quoted[2].parse::<i64>().unwrap()),
                        "Float" => json!(quoted[2].parse::<f64>().unwrap()),
                        "Boolean" => json!(quoted[2] == "true"),
                        other => panic!("context type {other}"),
                    };
                    context = context.with_attribute(quoted[0].clone(), value);
                } else if step.starts_with("a context containing a nested property") {
                    context = context
                        .with_attribute(quoted[0].clone(), json!({ quoted[1].clone(): quoted[2] }));
                }
            }
            context
        }
    }

    /// The quoted parts of a step, escaped quotes (`\"`) kept as they are written.
    fn quoted(text: &str) -> Vec<String> {
        let mut parts = Vec::new();
        let mut current: Option<String> = None;
        let mut escaped = false;
        for character in text.chars() {
            match (&mut current, character) {
                (None, '"') => current = Some(String::new()),
                (None, _) => {}
                (Some(part), '"') if !escaped => {
                    parts.push(std::mem::take(part));
                    current = None;
                }
                (Some(part), _) => {
                    escaped = character == '\\' && !escaped;
                    part.push(character);
                }
            }
        }
        parts
    }

    #[derive(Default)]
    struct Scenario {
        name: String,
        tags: Vec<String>,
        steps: Vec<String>,
        tables: Vec<(Vec<String>, Vec<Vec<String>>)>,
    }

    fn cells(line: &str) -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect()
    }

    /// Every case of a feature file.
    pub(super) fn cases(feature: &str) -> Vec<Case> {
        let mut background: Vec<String> = Vec::new();
        let mut scenarios: Vec<Scenario> = Vec::new();
        let mut tags: Vec<String> = Vec::new();
        let mut in_background = false;
        let mut in_examples = false;
        for line in feature.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('@') {
                tags.extend(line.split_whitespace().map(str::to_owned));
            } else if line.starts_with("Feature:") {
                tags.clear();
            } else if line.starts_with("Background:") {
                in_background = true;
            } else if let Some(name) = line
                .strip_prefix("Scenario Outline:")
                .or_else(|| line.strip_prefix("Scenario:"))
            {
                in_background = false;
                in_examples = false;
                scenarios.push(Scenario {
                    name: name.trim().to_owned(),
                    tags: std::mem::take(&mut tags),
                    ..Scenario::default()
                });
            } else if line.starts_with("Examples:") {
                in_examples = true;
                let scenario = scenarios.last_mut().unwrap();
                scenario
                    .tables
                    .push((std::mem::take(&mut tags), Vec::new()));
            } else if line.starts_with('|') {
                let scenario = scenarios.last_mut().unwrap();
                if in_examples {
                    scenario.tables.last_mut().unwrap().1.push(cells(line));
                } else {
                    // A step's data table: kept on the step itself.
                    let step = scenario.steps.last_mut().unwrap();
                    step.push_str(" |");
                    step.push_str(&cells(line).join("|"));
                }
            } else {
                let step = ["Given ", "And ", "When ", "Then ", "But "]
                    .iter()
                    .find_map(|keyword| line.strip_prefix(keyword))
                    .unwrap_or_else(|| panic!("a line this reader does not know: {line}"))
                    .to_owned();
                if in_background {
                    background.push(step);
                } else {
                    scenarios.last_mut().unwrap().steps.push(step);
                }
            }
        }
        let mut cases = Vec::new();
        for scenario in scenarios {
            let mut steps = background.clone();
            steps.extend(scenario.steps.iter().cloned());
            if scenario.tables.is_empty() {
                cases.push(case(&scenario.name, scenario.tags.clone(), &steps));
            }
            for (table_tags, rows) in &scenario.tables {
                let Some((header, rows)) = rows.split_first() else {
                    continue;
                };
                for row in rows {
                    let filled: Vec<String> = steps
                        .iter()
                        .map(|step| {
                            header
                                .iter()
                                .zip(row)
                                .fold(step.clone(), |step, (name, value)| {
                                    step.replace(&format!("<{name}>"), value)
                                })
                        })
                        .collect();
                    let mut all_tags = scenario.tags.clone();
                    all_tags.extend(table_tags.iter().cloned());
                    cases.push(case(
                        &format!("{} {row:?}", scenario.name),
                        all_tags,
                        &filled,
                    ));
                }
            }
        }
        cases
    }

    fn case(name: &str, tags: Vec<String>, steps: &[String]) -> Case {
        let mut givens = Vec::new();
        let mut then = Vec::new();
        for step in steps {
            let expected = quoted(step).first().cloned().unwrap_or_default();
            if step.starts_with("the resolved details value should be") {
                then.push(("value".to_owned(), expected));
            } else if step.starts_with("the reason should be") {
                then.push(("reason".to_owned(), expected));
            } else if step.starts_with("the error-code should be") {
                then.push(("error-code".to_owned(), expected));
            } else if step.starts_with("the resolved metadata is empty") {
                then.push(("metadata is empty".to_owned(), String::new()));
            } else if step.starts_with("the resolved metadata should contain") {
                then.push(("metadata".to_owned(), step.clone()));
            } else {
                givens.push(step.clone());
            }
        }
        Case {
            name: name.to_owned(),
            tags,
            givens,
            then,
        }
    }
}

/// Specific translations: negation is decided by rule order, so a missing attribute is "not
/// equal" as flagd says; `or` and `and` become rules; refusals carry their path.
#[test]
fn negation_and_disjunction_keep_flagds_answers() {
    let document = json!({"flags": {"plan": {
        "state": "ENABLED",
        "variants": {"a": "A", "b": "B", "c": "C"},
        "defaultVariant": "c",
        "targeting": {"if": [
            {"and": [{"!=": [{"var": "plan"}, "free"]}, {"or": [
                {">=": [{"var": "seats"}, 10]},
                {"in": [{"var": "country"}, ["NL", "BE"]]}
            ]}]},
            "a",
            {"!": {"starts_with": [{"var": "email"}, "test"]}},
            "b",
            null
        ]}
    }}});
    let (flags, problems) = import(&document);
    assert!(problems.is_empty(), "{problems:#?}");
    let flag = &flags["plan"];
    let cases = [
        (json!({}), "b"), // plan missing: != holds; no seats/country; no email: ! holds
        (json!({"plan": "free", "seats": 50}), "b"), // != fails
        (json!({"plan": "pro", "seats": 50}), "a"), // != holds, seats >= 10
        (json!({"plan": "pro", "country": "BE"}), "a"), // country in list
        (json!({"plan": "pro", "seats": 2, "email": "test@x"}), "c"), // nothing: null -> default
        (json!({"email": "test@x"}), "c"),
        (json!({"email": "ann@x"}), "b"),
        (json!({"plan": 7, "seats": 10}), "a"), // another type is "not equal" too
    ];
    for (context, variant) in cases {
        assert_eq!(answer(flag, context.clone()).1, variant, "{context}");
    }
    // flagd's `null` reached through a negation must stop the chain, so it is a rule here: the
    // default variant, with reason TARGETING_MATCH where flagd says DEFAULT (documented).
    assert_eq!(
        answer(flag, json!({"email": "test@x"})).2,
        Reason::TargetingMatch
    );
}

#[test]
fn refusals_name_their_path() {
    let document = json!({"flags": {
        "nested": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "user.id"}, "1"]}, "on", "off"]}},
        "unknown-variant": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
            "targeting": {"if": [{"==": [{"var": "id"}, "1"]}, "gone"]}},
        "regex": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
            "targeting": {"if": [{"matches": [{"var": "id"}, "x"]}, "on"]}},
        "caret-zero": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
            "targeting": {"if": [{"sem_ver": [{"var": "v"}, "^", "0.2.0"]}, "on"]}},
        "float-weight": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
            "targeting": {"fractional": [["on", 0.5], ["off", 0.5]]}},
        "fine": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}
    }, "extra": 1});
    let (flags, problems) = import(&document);
    assert_eq!(flags.keys().collect::<Vec<_>>(), ["fine"]);
    let paths: BTreeSet<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "extra",
            "flags.nested.targeting.if[0].==[0]",
            "flags.unknown-variant.targeting.if[1]",
            "flags.regex.targeting.if[0].matches",
            "flags.caret-zero.targeting.if[0].sem_ver[2]",
            "flags.float-weight.targeting.fractional[0][1]",
            "flags.float-weight.targeting.fractional[1][1]",
        ]),
        "{problems:#?}"
    );
}

#[test]
fn a_targeting_too_large_to_translate_is_refused() {
    // Eight negations in one `and`: one rule each before the branch's own, times the chain.
    let negations: Vec<Value> = (0..MAX_FLAGD_RULES)
        .map(|index| json!({"!=": [{"var": format!("a{index}")}, "x"]}))
        .collect();
    let document = json!({"flags": {"big": {
        "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"if": [{"and": negations}, "on", "off"]}
    }}});
    let (flags, problems) = import(&document);
    assert!(flags.is_empty());
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path, "flags.big.targeting");
}

/// A self-made JSONLogic interpreter for the mapped subset (typed, as this server compares) is
/// the oracle: over random `if` chains of random conditions (negations, `and`, `or`, nesting)
/// and random contexts, the imported flag answers what the chain says.
mod oracle {
    use super::*;

    fn attribute() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("c")]
    }

    fn literal() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("x")),
            Just(json!("y")),
            Just(json!(1)),
            Just(json!(2))
        ]
    }

    fn comparison() -> impl Strategy<Value = Value> {
        (attribute(), literal(), 0..4u8).prop_map(|(name, literal, kind)| match kind {
            0 => json!({"==": [{"var": name}, literal]}),
            1 => json!({"!=": [{"var": name}, literal]}),
            2 => json!({"in": [{"var": name}, [literal, "z"]]}),
            _ => json!({">": [{"var": name}, 1]}),
        })
    }

    fn condition() -> impl Strategy<Value = Value> {
        comparison().prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..3).prop_map(|items| json!({"and": items})),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|items| json!({"or": items})),
                inner.prop_map(|item| json!({"!": item})),
            ]
        })
    }

    fn outcome() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(json!("p")),
            Just(json!("q")),
            Just(json!("r")),
            Just(Value::Null)
        ];
        leaf.prop_recursive(2, 6, 3, |inner| {
            (
                prop::collection::vec((condition(), inner.clone()), 1..3),
                prop::option::of(inner),
            )
                .prop_map(|(branches, otherwise)| {
                    let mut items: Vec<Value> =
                        branches.into_iter().flat_map(|(c, o)| [c, o]).collect();
                    items.extend(otherwise);
                    json!({"if": items})
                })
        })
    }

    fn context() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(attribute(), prop::option::of(literal()), 0..3).prop_map(
            |map| {
                let object: serde_json::Map<String, Value> = map
                    .into_iter()
                    .filter_map(|(name, value)| value.map(|value| (name.to_owned(), value)))
                    .collect();
                Value::Object(object)
            },
        )
    }

    /// What flagd's JSONLogic answers, for contexts whose values have the literals' types
    /// (and the typed comparison otherwise, as documented).
    fn holds(condition: &Value, context: &Value) -> bool {
        if let Value::Bool(constant) = condition {
            return *constant;
        }
        let (operator, arguments) = condition.as_object().unwrap().iter().next().unwrap();
        let items = arguments.as_array();
        let read = |index: usize| context.get(items.unwrap()[index]["var"].as_str().unwrap());
        match operator.as_str() {
            "and" => items.unwrap().iter().all(|item| holds(item, context)),
            "or" => items.unwrap().iter().any(|item| holds(item, context)),
            "!" => !holds(arguments, context),
            "==" => read(0) == Some(&items.unwrap()[1]),
            "!=" => read(0) != Some(&items.unwrap()[1]),
            "in" => {
                read(0).is_some_and(|value| items.unwrap()[1].as_array().unwrap().contains(value))
            }
            ">" => read(0)
                .and_then(Value::as_f64)
                .is_some_and(|value| value > 1.0),
            other => panic!("{other}"),
        }
    }

    fn choose(expression: &Value, context: &Value) -> Option<String> {
        match expression {
            Value::Null => None,
            Value::String(name) => Some(name.clone()),
            _ => {
                let items = expression["if"].as_array().unwrap();
                for pair in items.chunks(2) {
                    match pair {
                        [condition, outcome] => {
                            if holds(condition, context) {
                                return choose(outcome, context);
                            }
                        }
                        [otherwise] => return choose(otherwise, context),
                        _ => unreachable!(),
                    }
                }
                None
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn imported_chains_answer_what_the_chain_says(
            targeting in outcome(),
            contexts in prop::collection::vec(context(), 1..12),
        ) {
            // flagd's targeting is an object: a bare outcome goes under `if [true, ...]`.
            let targeting = if targeting.is_object() { targeting } else { json!({"if": [true, targeting]}) };
            let document = json!({"flags": {"f": {
                "state": "ENABLED",
                "variants": {"p": 1, "q": 2, "r": 3, "d": 0},
                "defaultVariant": "d",
                "targeting": targeting,
            }}});
            let (flags, problems) = import(&document);
            if let Some(problem) = problems.first() {
                // Only size may refuse a chain of mapped operators.
                prop_assert!(problem.message.contains("more than"), "{problems:?}");
                return Ok(());
            }
            for context in contexts {
                let expected = choose(&document["flags"]["f"]["targeting"], &context);
                let (_, variant, reason) = answer(&flags["f"], context.clone());
                prop_assert_eq!(&variant, expected.as_deref().unwrap_or("d"), "{}", context);
                if expected.is_none() {
                    // flagd's null: the default variant; reason DEFAULT unless an earlier
                    // branch had to stop the chain there.
                    prop_assert!(matches!(reason, Reason::Default | Reason::TargetingMatch | Reason::Static));
                }
            }
        }
    }
}
