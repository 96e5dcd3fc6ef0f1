//! flagd flag files (`{"flags": {"<key>": {"state", "variants", "defaultVariant", "targeting"}}}`)
//! read as this server's flags, for the subset of flagd's JSONLogic whose answers map exactly;
//! everything else is refused with its path in the file, never approximated.
//!
//! What maps:
//! - `targeting` absent or `{}`: no rules (reason `STATIC`, as flagd says).
//! - An outcome: a variant name, `true`/`false` (flagd's shorthand for the variants named
//!   `"true"`/`"false"`), `null` (the default variant, reason `DEFAULT`), an `if` chain, or a
//!   `fractional` (a rollout).
//! - `if`: `[condition, outcome, condition, outcome, ..., otherwise?]`, nested in either place.
//! - Conditions: `==`, `===`, `!=`, `!==`, `in` (an attribute in a list, or a string the
//!   attribute contains), `starts_with`, `ends_with`, `sem_ver`, `<`, `<=`, `>`, `>=` (with an
//!   attribute on one side and a number on the other, or the three-operand "between" form), `and`,
//!   `or`, `!`, `true`/`false`, and `$ref` to the file's `$evaluators`.
//! - `fractional` without a bucketing expression (flag key + `targetingKey`, as ours), or with
//!   `{"cat": [{"var": "$flagd.flagKey"}, {"var": "<attribute>"}]}` (`bucketBy`); weights are whole
//!   numbers.
//! - `{"var": "$flagd.timestamp"}` is the reserved attribute `$now` (Unix seconds, both).
//!
//! How: a targeting expression becomes a decision list. Each `if` branch's condition is put in
//! disjunctive normal form; a negated comparison (`!=`, `!`) is never a condition of its own (our
//! `not_equals` does not match a missing attribute, where flagd's `!=` is true), but is decided
//! by order: a rule for "the comparison holds", sending such contexts on to the rest of the
//! chain, comes before the rule of the branch. Every translated branch ends with a rule that
//! catches all its contexts, so the order of rules is the order of flagd's evaluation.
//!
//! Refused, with the reason at the path: `state: DISABLED` (flagd answers the caller's default
//! and no value; a disabled flag here answers its `offVariant`), a missing or `null`
//! `defaultVariant` (the same), nested properties (`user.name`), `var` defaults, a bucketing
//! value other than flag key + one attribute, non-string metadata, `^` on a `0.x` version (flagd:
//! same major; ours: same minor below 1.0), a targeting that answers a boolean rather than a
//! variant, and every other operator.
//!
//! Known differences, for contexts only (documented in `docs/flags-as-files.md`): comparisons are
//! typed here, where JSONLogic coerces (`"1" == 1`); a context version must be a whole SemVer
//! (flagd reads `"1.2"` as `1.2.0`); a missing bucketing attribute is `TARGETING_KEY_MISSING`
//! here; and a rollout answers reason `SPLIT` where flagd says `TARGETING_MATCH`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::context::TARGETING_KEY;
use crate::flag::{FeatureFlag, NOW_ATTRIBUTE};
use crate::import::{DocumentContents, ImportProblem};
use crate::names::FlagKey;
use crate::operand;

/// The most rules one flagd flag may become (negations and `or` multiply them).
pub const MAX_FLAGD_RULES: usize = 100;

/// How deep `$ref`s may nest in one another.
const MAX_REF_DEPTH: usize = 8;

/// Whether `document` is a flagd flag file rather than an environment document: its `flags` is
/// an object by key.
pub fn is_flagd_document(document: &Value) -> bool {
    document.get("flags").is_some_and(Value::is_object)
}

/// Reads a flagd flag file into the flags that could be read, and every problem with its path
/// (`flags.headerColor.targeting.if[1].fractional[0]`).
pub(crate) fn read_flagd_document(
    members: &Map<String, Value>,
) -> (DocumentContents, Vec<ImportProblem>) {
    let mut problems = Vec::new();
    let mut set_metadata = BTreeMap::new();
    for (name, value) in members {
        match name.as_str() {
            "$schema" if value.is_string() => {}
            "$schema" => {
                problems.push(ImportProblem::new(name.clone(), "$schema must be a string"))
            }
            "flags" | "$evaluators" => {}
            "metadata" => set_metadata = string_map(value, "metadata", &mut problems),
            _ => problems.push(ImportProblem::new(
                name.clone(),
                "unknown field (a flagd file has $schema, flags, $evaluators and metadata)",
            )),
        }
    }
    let evaluators = match members.get("$evaluators") {
        None => Map::new(),
        Some(Value::Object(evaluators)) => evaluators.clone(),
        Some(_) => {
            problems.push(ImportProblem::new(
                "$evaluators",
                "$evaluators must be an object",
            ));
            Map::new()
        }
    };
    let mut contents = DocumentContents::default();
    let Some(Value::Object(flags)) = members.get("flags") else {
        problems.push(ImportProblem::new(
            "flags",
            "flags must be an object by key",
        ));
        return (contents, problems);
    };
    for (position, (key, definition)) in flags.iter().enumerate() {
        let path = format!("flags.{key}");
        let reader = FlagReader {
            evaluators: &evaluators,
            problems: Vec::new(),
        };
        if let Some(flag) = reader.read(key, definition, &set_metadata, &path, &mut problems) {
            contents.flags.push(flag);
            contents.flag_positions.push(position);
        }
    }
    (contents, problems)
}

/// A map of string values (metadata), with a problem for each value of another type.
fn string_map(
    value: &Value,
    path: &str,
    problems: &mut Vec<ImportProblem>,
) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    match value {
        Value::Object(entries) => {
            for (name, value) in entries {
                match value {
                    Value::String(text) => {
                        map.insert(name.clone(), text.clone());
                    }
                    _ => problems.push(ImportProblem::new(
                        format!("{path}.{name}"),
                        "metadata values here are strings; flagd's numbers and booleans would change type",
                    )),
                }
            }
        }
        _ => problems.push(ImportProblem::new(path, "metadata must be an object")),
    }
    map
}

/// One of our conditions, as its JSON document.
type Atom = Value;

/// A conjunction of comparisons that hold and comparisons that fail.
#[derive(Debug, Clone, Default)]
struct Conjunction {
    holds: Vec<Atom>,
    fails: Vec<Atom>,
}

/// A condition in disjunctive normal form: it holds when any conjunction does (none: never).
type Dnf = Vec<Conjunction>;

/// What a branch answers.
#[derive(Debug, Clone)]
enum Outcome {
    /// A variant.
    Variant(String),
    /// The default variant (flagd's `null`).
    Default,
    /// A rollout, as our `rollout` and `bucketBy`.
    Rollout {
        entries: Vec<Value>,
        bucket_by: Option<String>,
    },
}

/// A targeting expression.
#[derive(Debug, Clone)]
enum Expr {
    Outcome(Outcome),
    Chain {
        branches: Vec<(Dnf, Expr)>,
        otherwise: Box<Expr>,
    },
}

/// Reads one flag, collecting its problems.
struct FlagReader<'a> {
    evaluators: &'a Map<String, Value>,
    problems: Vec<ImportProblem>,
}

impl FlagReader<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(ImportProblem::new(path, message));
    }

    fn read(
        mut self,
        key: &str,
        definition: &Value,
        set_metadata: &BTreeMap<String, String>,
        path: &str,
        problems: &mut Vec<ImportProblem>,
    ) -> Option<FeatureFlag> {
        let flag = self.flag(key, definition, set_metadata, path);
        let ok = self.problems.is_empty();
        problems.append(&mut self.problems);
        flag.filter(|_| ok)
    }

    fn flag(
        &mut self,
        key: &str,
        definition: &Value,
        set_metadata: &BTreeMap<String, String>,
        path: &str,
    ) -> Option<FeatureFlag> {
        let flag_key = match FlagKey::parse(key) {
            Ok(flag_key) => flag_key,
            Err(error) => {
                self.problem(path, error.to_string());
                return None;
            }
        };
        let Some(fields) = definition.as_object() else {
            self.problem(path, "a flag is an object");
            return None;
        };
        for name in fields.keys() {
            if !matches!(
                name.as_str(),
                "state" | "variants" | "defaultVariant" | "targeting" | "metadata"
            ) {
                self.problem(
                    &format!("{path}.{name}"),
                    "unknown field (a flagd flag has state, variants, defaultVariant, targeting and metadata)",
                );
            }
        }
        match fields.get("state").and_then(Value::as_str) {
            Some("ENABLED") => {}
            Some("DISABLED") => self.problem(
                &format!("{path}.state"),
                "DISABLED flags answer the caller's default in flagd, with no value; a disabled flag here answers its offVariant, so it is not imported (enable it, or leave it out)",
            ),
            _ => self.problem(&format!("{path}.state"), "state must be ENABLED"),
        }
        let variants = match fields.get("variants") {
            Some(Value::Object(variants)) if !variants.is_empty() => variants.clone(),
            _ => {
                self.problem(
                    &format!("{path}.variants"),
                    "variants must be a non-empty object",
                );
                return None;
            }
        };
        let default_variant = match fields.get("defaultVariant") {
            Some(Value::String(name)) if variants.contains_key(name) => name.clone(),
            Some(Value::String(name)) => {
                self.problem(
                    &format!("{path}.defaultVariant"),
                    format!("defaultVariant {name:?} is not one of the variants"),
                );
                return None;
            }
            _ => {
                self.problem(
                    &format!("{path}.defaultVariant"),
                    "every flag here has a default variant: flagd's code default (defaultVariant missing or null) has no equivalent",
                );
                return None;
            }
        };
        let mut metadata = set_metadata.clone();
        if let Some(value) = fields.get("metadata") {
            let mut problems = Vec::new();
            metadata.extend(string_map(
                value,
                &format!("{path}.metadata"),
                &mut problems,
            ));
            self.problems.append(&mut problems);
        }
        let targeting_path = format!("{path}.targeting");
        let rules = match fields.get("targeting") {
            None => Vec::new(),
            Some(Value::Object(targeting)) if targeting.is_empty() => Vec::new(),
            Some(targeting @ Value::Object(_)) => {
                let expr = self.outcome(targeting, &targeting_path, &variants, 0)?;
                let mut rules = Vec::new();
                if compile(&expr, &[], &mut rules).is_err() {
                    self.problem(
                        &targeting_path,
                        format!("this targeting becomes more than {MAX_FLAGD_RULES} rules (every negation and `or` adds some)"),
                    );
                    return None;
                }
                // A trailing rule for the default variant answers what no rule would, with the
                // reason flagd gives (`DEFAULT`).
                while matches!(rules.last(), Some((_, Outcome::Default))) {
                    rules.pop();
                }
                rules
                    .into_iter()
                    .map(|(conditions, outcome)| {
                        rule_document(conditions, outcome, &default_variant)
                    })
                    .collect()
            }
            Some(_) => {
                self.problem(&targeting_path, "targeting must be an object (JSONLogic)");
                return None;
            }
        };
        if !self.problems.is_empty() {
            return None;
        }
        let document = json!({
            "enabled": true,
            "variants": variants,
            "defaultVariant": default_variant,
            "offVariant": default_variant,
            "rules": rules,
            "metadata": metadata,
        });
        match FeatureFlag::from_definition_json(&flag_key, &document.to_string()) {
            Ok(flag) => Some(flag),
            Err(error) => {
                self.problem(
                    path,
                    format!("{error} (in the flag this file's flag becomes)"),
                );
                None
            }
        }
    }

    /// Reads an outcome expression: a variant name, a boolean, null, `if` or `fractional`.
    fn outcome(
        &mut self,
        value: &Value,
        path: &str,
        variants: &Map<String, Value>,
        depth: usize,
    ) -> Option<Expr> {
        match value {
            Value::Null => Some(Expr::Outcome(Outcome::Default)),
            Value::String(name) => self.variant(name, path, variants).map(Expr::Outcome),
            Value::Bool(shorthand) => self
                .variant(&shorthand.to_string(), path, variants)
                .map(Expr::Outcome),
            Value::Object(object) if object.len() == 1 => {
                let (operator, arguments) = object.iter().next()?;
                let here = format!("{path}.{operator}");
                match operator.as_str() {
                    "$ref" => {
                        let (target, target_path) = self.reference(arguments, &here, depth)?;
                        self.outcome(&target, &target_path, variants, depth + 1)
                    }
                    "if" => self.chain(arguments, &here, variants, depth),
                    "fractional" => self
                        .fractional(arguments, &here, variants)
                        .map(Expr::Outcome),
                    _ => {
                        self.problem(
                            path,
                            format!("a targeting here chooses a variant (an if, a fractional or a variant name); {operator:?} answers a value that is not a variant, which flagd reads as one only by coincidence of names"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.problem(
                    path,
                    "expected a variant name, true/false, null, if or fractional",
                );
                None
            }
        }
    }

    fn variant(
        &mut self,
        name: &str,
        path: &str,
        variants: &Map<String, Value>,
    ) -> Option<Outcome> {
        if variants.contains_key(name) {
            Some(Outcome::Variant(name.to_owned()))
        } else {
            self.problem(path, format!("{name:?} is not one of the flag's variants"));
            None
        }
    }

    /// The evaluator a `$ref` names, and its path in the file.
    fn reference(&mut self, name: &Value, path: &str, depth: usize) -> Option<(Value, String)> {
        let Some(name) = name.as_str() else {
            self.problem(path, "$ref names an evaluator of $evaluators");
            return None;
        };
        if depth >= MAX_REF_DEPTH {
            self.problem(
                path,
                format!("$ref nests deeper than {MAX_REF_DEPTH} (a cycle?)"),
            );
            return None;
        }
        match self.evaluators.get(name) {
            Some(target) => Some((target.clone(), format!("$evaluators.{name}"))),
            None => {
                self.problem(path, format!("$evaluators has no {name:?}"));
                None
            }
        }
    }

    /// `if`: `[condition, outcome, ..., otherwise?]`.
    fn chain(
        &mut self,
        arguments: &Value,
        path: &str,
        variants: &Map<String, Value>,
        depth: usize,
    ) -> Option<Expr> {
        let Some(items) = arguments.as_array().filter(|items| items.len() >= 2) else {
            self.problem(path, "if takes [condition, outcome, ..., otherwise]");
            return None;
        };
        let mut branches = Vec::new();
        let mut failed = false;
        let mut pairs = items.chunks_exact(2);
        for (index, pair) in pairs.by_ref().enumerate() {
            let condition = self.condition(&pair[0], &format!("{path}[{}]", 2 * index), depth);
            let outcome = self.outcome(
                &pair[1],
                &format!("{path}[{}]", 2 * index + 1),
                variants,
                depth,
            );
            match (condition, outcome) {
                (Some(condition), Some(outcome)) => branches.push((condition, outcome)),
                _ => failed = true,
            }
        }
        let otherwise = match pairs.remainder() {
            [otherwise] => self.outcome(
                otherwise,
                &format!("{path}[{}]", items.len() - 1),
                variants,
                depth,
            ),
            _ => Some(Expr::Outcome(Outcome::Default)),
        };
        let otherwise = otherwise?;
        (!failed).then(|| Expr::Chain {
            branches,
            otherwise: Box::new(otherwise),
        })
    }

    /// `fractional`: `[bucketing?, [variant, weight?], ...]`.
    fn fractional(
        &mut self,
        arguments: &Value,
        path: &str,
        variants: &Map<String, Value>,
    ) -> Option<Outcome> {
        let Some(items) = arguments.as_array() else {
            self.problem(
                path,
                "fractional takes [bucketing?, [variant, weight], ...]",
            );
            return None;
        };
        let (bucket_by, entries, first) = match items.first() {
            Some(Value::Array(_)) => (None, &items[..], 0),
            Some(bucketing) => (
                self.bucketing(bucketing, &format!("{path}[0]")),
                &items[1..],
                1,
            ),
            None => (None, &items[..], 0),
        };
        if entries.is_empty() {
            self.problem(path, "fractional needs at least one [variant, weight]");
            return None;
        }
        let mut rollout = Vec::new();
        let mut failed = false;
        for (offset, entry) in entries.iter().enumerate() {
            let here = format!("{path}[{}]", first + offset);
            let (name, weight) = match entry.as_array().map(Vec::as_slice) {
                Some([name]) => (name, &Value::from(1)),
                Some([name, weight]) => (name, weight),
                _ => {
                    self.problem(&here, "each bucket is [variant] or [variant, weight]");
                    failed = true;
                    continue;
                }
            };
            let Some(name) = name.as_str() else {
                self.problem(
                    &format!("{here}[0]"),
                    "a bucket's variant is a variant name (a string)",
                );
                failed = true;
                continue;
            };
            if self
                .variant(name, &format!("{here}[0]"), variants)
                .is_none()
            {
                failed = true;
                continue;
            }
            let Some(weight) = weight
                .as_u64()
                .and_then(|weight| u32::try_from(weight).ok())
            else {
                self.problem(
                    &format!("{here}[1]"),
                    "a weight here is a whole number from 0 (flagd's fractional or computed weights would change the split)",
                );
                failed = true;
                continue;
            };
            rollout.push(json!({"variant": name, "weight": weight}));
        }
        let bucket_by = match (first, bucket_by) {
            (1, None) => {
                failed = true;
                None
            }
            (_, bucket_by) => bucket_by.flatten(),
        };
        (!failed).then_some(Outcome::Rollout {
            entries: rollout,
            bucket_by,
        })
    }

    /// The bucketing expression of a `fractional`: `Some(None)` for `targetingKey`,
    /// `Some(Some(attribute))` for another attribute.
    fn bucketing(&mut self, value: &Value, path: &str) -> Option<Option<String>> {
        let refused = "the bucketing value here is the flag key followed by one attribute: {\"cat\": [{\"var\": \"$flagd.flagKey\"}, {\"var\": \"<attribute>\"}]}; flagd hashes any other expression as it is, which this server's rollouts do not";
        let Some([flag_key, attribute]) = value
            .get("cat")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        else {
            self.problem(path, refused);
            return None;
        };
        if variable(flag_key).as_deref() != Some("$flagd.flagKey") {
            self.problem(&format!("{path}.cat[0]"), refused);
            return None;
        }
        let attribute = self.attribute(attribute, &format!("{path}.cat[1]"))?;
        Some((attribute != TARGETING_KEY).then_some(attribute))
    }

    /// The attribute a `{"var": ...}` reads, refusing what conditions here cannot read.
    fn attribute(&mut self, value: &Value, path: &str) -> Option<String> {
        let Some(name) = variable(value) else {
            self.problem(
                path,
                "expected {\"var\": \"<attribute>\"} (a var with a default, or with no name, is not read here)",
            );
            return None;
        };
        match name.as_str() {
            "" => {
                self.problem(path, "a var names one attribute");
                None
            }
            "$flagd.timestamp" => Some(NOW_ATTRIBUTE.to_owned()),
            reserved if reserved.starts_with('$') => {
                self.problem(
                    path,
                    format!("{reserved:?} is not read here (of flagd's reserved values, $flagd.timestamp is, as $now; $flagd.flagKey only to bucket)"),
                );
                None
            }
            nested if nested.contains('.') => {
                self.problem(
                    path,
                    format!("{nested:?} reads a nested property; attributes here are top-level, so a context {{\"user\": {{\"name\": ...}}}} would not be read the same"),
                );
                None
            }
            name => Some(name.to_owned()),
        }
    }

    /// Reads a condition into disjunctive normal form.
    fn condition(&mut self, value: &Value, path: &str, depth: usize) -> Option<Dnf> {
        let object = match value {
            Value::Bool(true) => return Some(vec![Conjunction::default()]),
            Value::Bool(false) => return Some(Vec::new()),
            Value::Object(object) if object.len() == 1 => object,
            _ => {
                self.problem(path, "a condition is an object with one operator");
                return None;
            }
        };
        let (operator, arguments) = object.iter().next()?;
        let here = format!("{path}.{operator}");
        let items = arguments.as_array().map(Vec::as_slice).unwrap_or(&[]);
        match operator.as_str() {
            "$ref" => {
                let (target, target_path) = self.reference(arguments, &here, depth)?;
                self.condition(&target, &target_path, depth + 1)
            }
            "and" | "or" => {
                if items.is_empty() {
                    self.problem(
                        &here,
                        format!("{operator} takes a non-empty array of conditions"),
                    );
                    return None;
                }
                let mut parts = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    parts.push(self.condition(item, &format!("{here}[{index}]"), depth));
                }
                let parts: Option<Vec<Dnf>> = parts.into_iter().collect();
                let parts = parts?;
                let combined = if operator == "or" {
                    Some(parts.into_iter().flatten().collect())
                } else {
                    parts
                        .into_iter()
                        .try_fold(vec![Conjunction::default()], both)
                };
                self.bounded(combined, &here)
            }
            "!" => {
                let inner = match arguments {
                    Value::Array(items) if items.len() == 1 => &items[0],
                    Value::Array(_) => {
                        self.problem(&here, "! takes one condition");
                        return None;
                    }
                    other => other,
                };
                let inner = self.condition(inner, &here, depth)?;
                let negated = negate(inner);
                self.bounded(negated, &here)
            }
            "==" | "===" | "!=" | "!==" => {
                let (attribute, literal) = self.compared(items, &here)?;
                if !matches!(
                    literal,
                    Value::String(_) | Value::Number(_) | Value::Bool(_)
                ) {
                    self.problem(&here, "compare with a string, a number or a boolean");
                    return None;
                }
                let atom = atom(&attribute, "equals", literal.clone());
                Some(literal_dnf(atom, operator.starts_with('!')))
            }
            "in" => match items {
                [attribute @ Value::Object(_), Value::Array(list)]
                    if list.iter().all(|item| {
                        matches!(item, Value::String(_) | Value::Number(_) | Value::Bool(_))
                    }) =>
                {
                    let attribute = self.attribute(attribute, &format!("{here}[0]"))?;
                    Some(literal_dnf(
                        atom(&attribute, "in", Value::Array(list.clone())),
                        false,
                    ))
                }
                [Value::String(needle), attribute @ Value::Object(_)] => {
                    let attribute = self.attribute(attribute, &format!("{here}[1]"))?;
                    Some(literal_dnf(
                        atom(&attribute, "contains", Value::String(needle.clone())),
                        false,
                    ))
                }
                _ => {
                    self.problem(
                        &here,
                        "in takes [{\"var\": attribute}, [values]] or [\"text\", {\"var\": attribute}]",
                    );
                    None
                }
            },
            "starts_with" | "ends_with" => match items {
                [attribute, Value::String(text)] => {
                    let attribute = self.attribute(attribute, &format!("{here}[0]"))?;
                    Some(literal_dnf(
                        atom(&attribute, operator, Value::String(text.clone())),
                        false,
                    ))
                }
                _ => {
                    self.problem(
                        &here,
                        format!("{operator} takes [{{\"var\": attribute}}, \"text\"]"),
                    );
                    None
                }
            },
            "sem_ver" => self.semver(items, &here),
            "<" | "<=" | ">" | ">=" => self.comparison(operator, items, &here),
            _ => {
                self.problem(
                    &here,
                    format!("{operator:?} is not imported: its answers do not map exactly to this server's conditions"),
                );
                None
            }
        }
    }

    fn bounded(&mut self, dnf: Option<Dnf>, path: &str) -> Option<Dnf> {
        match dnf {
            Some(dnf) if dnf.len() <= MAX_FLAGD_RULES => Some(dnf),
            _ => {
                self.problem(
                    path,
                    format!("this condition becomes more than {MAX_FLAGD_RULES} rules"),
                );
                None
            }
        }
    }

    /// `[{"var": a}, literal]` or `[literal, {"var": a}]`: the attribute and the literal.
    fn compared<'v>(&mut self, items: &'v [Value], path: &str) -> Option<(String, &'v Value)> {
        match items {
            [attribute, literal]
                if variable(attribute).is_some() && variable(literal).is_none() =>
            {
                Some((self.attribute(attribute, &format!("{path}[0]"))?, literal))
            }
            [literal, attribute]
                if variable(attribute).is_some() && variable(literal).is_none() =>
            {
                Some((self.attribute(attribute, &format!("{path}[1]"))?, literal))
            }
            _ => {
                self.problem(path, "compare one {\"var\": attribute} with one value");
                None
            }
        }
    }

    fn semver(&mut self, items: &[Value], path: &str) -> Option<Dnf> {
        let [attribute, Value::String(operator), Value::String(version)] = items else {
            self.problem(
                path,
                "sem_ver takes [{\"var\": attribute}, operator, \"version\"]",
            );
            return None;
        };
        let attribute = self.attribute(attribute, &format!("{path}[0]"))?;
        let (name, negated) = match operator.as_str() {
            "=" => ("semver_eq", false),
            "!=" => ("semver_eq", true),
            "<" => ("semver_lt", false),
            "<=" => ("semver_lte", false),
            ">" => ("semver_gt", false),
            ">=" => ("semver_gte", false),
            "~" => ("semver_tilde", false),
            "^" => ("semver_caret", false),
            _ => {
                self.problem(
                    &format!("{path}[1]"),
                    "sem_ver's operator is one of =, !=, <, <=, >, >=, ~, ^",
                );
                return None;
            }
        };
        let Some(parsed) = operand::version(version) else {
            self.problem(
                &format!("{path}[2]"),
                "a version here is a whole SemVer 2.0 version (flagd also reads partial versions such as 1.2)",
            );
            return None;
        };
        if name == "semver_caret" && parsed.major == 0 {
            self.problem(
                &format!("{path}[2]"),
                "^ on a 0.x version means the same major in flagd and the same minor here",
            );
            return None;
        }
        Some(literal_dnf(
            atom(&attribute, name, Value::String(version.clone())),
            negated,
        ))
    }

    /// `<`, `<=`, `>`, `>=` between an attribute and a number, or `[number, attribute, number]`.
    fn comparison(&mut self, operator: &str, items: &[Value], path: &str) -> Option<Dnf> {
        let forward = match operator {
            "<" => "lt",
            "<=" => "lte",
            ">" => "gt",
            _ => "gte",
        };
        // The same comparison read from the other side.
        let backward = match operator {
            "<" => "gt",
            "<=" => "gte",
            ">" => "lt",
            _ => "lte",
        };
        let number = |value: &Value| matches!(value, Value::Number(_));
        let atoms = match items {
            [attribute, limit] if number(limit) && variable(attribute).is_some() => {
                vec![atom(
                    &self.attribute(attribute, &format!("{path}[0]"))?,
                    forward,
                    limit.clone(),
                )]
            }
            [limit, attribute] if number(limit) && variable(attribute).is_some() => {
                vec![atom(
                    &self.attribute(attribute, &format!("{path}[1]"))?,
                    backward,
                    limit.clone(),
                )]
            }
            [low, attribute, high]
                if matches!(operator, "<" | "<=")
                    && number(low)
                    && number(high)
                    && variable(attribute).is_some() =>
            {
                let attribute = self.attribute(attribute, &format!("{path}[1]"))?;
                vec![
                    atom(&attribute, backward, low.clone()),
                    atom(&attribute, forward, high.clone()),
                ]
            }
            _ => {
                self.problem(
                    path,
                    format!("{operator} compares one {{\"var\": attribute}} with a number (or sits between two numbers)"),
                );
                return None;
            }
        };
        Some(vec![Conjunction {
            holds: atoms,
            fails: Vec::new(),
        }])
    }
}

/// The attribute name of `{"var": "name"}` or `{"var": ["name"]}`.
fn variable(value: &Value) -> Option<String> {
    match value.as_object()?.get("var")? {
        Value::String(name) => Some(name.clone()),
        Value::Array(items) => match items.as_slice() {
            [Value::String(name)] => Some(name.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn atom(attribute: &str, operator: &str, value: Value) -> Atom {
    json!({"attribute": attribute, "operator": operator, "value": value})
}

/// A one-comparison condition, or its negation.
fn literal_dnf(atom: Atom, negated: bool) -> Dnf {
    let conjunction = if negated {
        Conjunction {
            holds: Vec::new(),
            fails: vec![atom],
        }
    } else {
        Conjunction {
            holds: vec![atom],
            fails: Vec::new(),
        }
    };
    vec![conjunction]
}

/// `a and b`, in disjunctive normal form.
fn both(a: Dnf, b: Dnf) -> Option<Dnf> {
    if a.len().saturating_mul(b.len()) > MAX_FLAGD_RULES {
        return None;
    }
    let mut product = Vec::new();
    for left in &a {
        for right in &b {
            let mut conjunction = left.clone();
            conjunction.holds.extend(right.holds.iter().cloned());
            conjunction.fails.extend(right.fails.iter().cloned());
            product.push(conjunction);
        }
    }
    Some(product)
}

/// `not dnf`, in disjunctive normal form (De Morgan's laws).
fn negate(dnf: Dnf) -> Option<Dnf> {
    dnf.into_iter()
        .try_fold(vec![Conjunction::default()], |so_far, conjunction| {
            let mut alternatives: Dnf = conjunction
                .holds
                .into_iter()
                .map(|atom| literal_dnf(atom, true).remove(0))
                .collect();
            alternatives.extend(
                conjunction
                    .fails
                    .into_iter()
                    .map(|atom| literal_dnf(atom, false).remove(0)),
            );
            both(so_far, alternatives)
        })
}

/// Too many rules.
struct TooMany;

/// Appends the rules of `expr` for contexts where every comparison of `guard` holds; the last
/// rule appended matches every such context.
fn compile(
    expr: &Expr,
    guard: &[Atom],
    rules: &mut Vec<(Vec<Atom>, Outcome)>,
) -> Result<(), TooMany> {
    match expr {
        Expr::Outcome(outcome) => {
            if rules.len() >= MAX_FLAGD_RULES {
                return Err(TooMany);
            }
            rules.push((guard.to_vec(), outcome.clone()));
            Ok(())
        }
        Expr::Chain {
            branches,
            otherwise,
        } => chain(branches, otherwise, guard, rules),
    }
}

fn chain(
    branches: &[(Dnf, Expr)],
    otherwise: &Expr,
    guard: &[Atom],
    rules: &mut Vec<(Vec<Atom>, Outcome)>,
) -> Result<(), TooMany> {
    let Some(((condition, then), rest)) = branches.split_first() else {
        return compile(otherwise, guard, rules);
    };
    for (index, conjunction) in condition.iter().enumerate() {
        let mut holding = guard.to_vec();
        holding.extend(conjunction.holds.iter().cloned());
        for failing in &conjunction.fails {
            // This conjunction is false where `failing` holds: those contexts go on to the
            // conjunctions after it, then to the rest of the chain.
            let mut guarded = holding.clone();
            guarded.push(failing.clone());
            let mut remaining = vec![(condition[index + 1..].to_vec(), then.clone())];
            remaining.extend(rest.iter().cloned());
            chain(&remaining, otherwise, &guarded, rules)?;
        }
        compile(then, &holding, rules)?;
    }
    chain(rest, otherwise, guard, rules)
}

/// One rule as a flag document writes it.
fn rule_document(conditions: Vec<Atom>, outcome: Outcome, default_variant: &str) -> Value {
    let mut distinct: Vec<Atom> = Vec::new();
    for condition in conditions {
        if !distinct.contains(&condition) {
            distinct.push(condition);
        }
    }
    match outcome {
        Outcome::Variant(variant) => json!({"conditions": distinct, "variant": variant}),
        Outcome::Default => json!({"conditions": distinct, "variant": default_variant}),
        Outcome::Rollout { entries, bucket_by } => {
            let mut rule = json!({"conditions": distinct, "rollout": entries});
            if let (Some(bucket_by), Some(fields)) = (bucket_by, rule.as_object_mut()) {
                fields.insert("bucketBy".to_owned(), Value::String(bucket_by));
            }
            rule
        }
    }
}
