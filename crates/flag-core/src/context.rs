//! The evaluation context: who is asking (`targetingKey`) and what is known about them.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// The reserved attribute that identifies the user, as OpenFeature names it.
pub const TARGETING_KEY: &str = "targetingKey";

/// Up to this many attributes, a lookup compares names one by one.
const LINEAR_LOOKUP_MAX: usize = 8;

/// Attributes of the subject of an evaluation, `targetingKey` among them.
///
/// Decisions: an attribute whose value is `null` counts as missing; an empty `targetingKey` counts
/// as missing too (it identifies nobody, and would put every such caller in one bucket). When a
/// name is given twice, the last value counts, as in a JSON object read by `serde_json`.
///
/// Stored as a vector sorted by name, not a map: a context has a handful of attributes and is
/// built once per request, and a tree costs a node allocation and a walk on insert and drop
/// (`docs/performance.md`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvaluationContext {
    /// Sorted by name, names unique.
    attributes: Vec<(String, Value)>,
}

/// A context that is not a JSON object, or whose `targetingKey` is not a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContextError(&'static str);

impl EvaluationContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses an OFREP `context` value: a JSON object whose `targetingKey`, if any, is a string.
    pub fn from_json(value: Value) -> Result<Self, ContextError> {
        match value {
            Value::Object(attributes) => Self::from_map(attributes),
            _ => Err(ContextError("context must be a JSON object")),
        }
    }

    /// Builds a context from an attribute map; see [`EvaluationContext::from_json`].
    pub fn from_map(attributes: Map<String, Value>) -> Result<Self, ContextError> {
        Self::from_pairs(attributes.into_iter().collect())
    }

    /// Builds a context from attributes in the order given (a later one of a name replaces an
    /// earlier); see [`EvaluationContext::from_json`].
    pub fn from_pairs(mut attributes: Vec<(String, Value)>) -> Result<Self, ContextError> {
        // Stable: of equal names, the last given stays last.
        if !attributes.is_sorted_by(|(a, _), (b, _)| a <= b) {
            attributes.sort_by(|(a, _), (b, _)| a.cmp(b));
        }
        // Of a run of equal names the first stays in place: it takes the last one's value.
        attributes.dedup_by(|later, kept| {
            let repeated = later.0 == kept.0;
            if repeated {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            repeated
        });
        let context = Self { attributes };
        match context.get(TARGETING_KEY) {
            None | Some(Value::Null | Value::String(_)) => Ok(context),
            Some(_) => Err(ContextError("targetingKey must be a string")),
        }
    }

    /// The same context with `targetingKey` set.
    #[must_use]
    pub fn with_targeting_key(self, key: impl Into<String>) -> Self {
        self.with_attribute(TARGETING_KEY, Value::String(key.into()))
    }

    /// The same context with one more attribute (replacing any of that name).
    ///
    /// Setting `targetingKey` to a non-string here makes the context have no targeting key.
    #[must_use]
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        match self.position(&name) {
            Ok(found) => self.attributes[found].1 = value.into(),
            Err(at) => self.attributes.insert(at, (name, value.into())),
        }
        self
    }

    /// The non-empty targeting key, if the context has one.
    pub fn targeting_key(&self) -> Option<&str> {
        match self.get(TARGETING_KEY) {
            Some(Value::String(key)) if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    /// The value of an attribute, `None` when it is missing or `null`.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.get(name).filter(|value| !value.is_null())
    }

    /// All attributes, as given (the last of a repeated name), in name order.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attributes
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.attributes
            .binary_search_by(|(candidate, _)| candidate.as_str().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        // Few attributes (the usual context): equality, which a length tells apart at once,
        // costs less than ordering them; many: a binary search.
        if self.attributes.len() <= LINEAR_LOOKUP_MAX {
            return self
                .attributes
                .iter()
                .find(|(candidate, _)| candidate == name)
                .map(|(_, value)| value);
        }
        self.position(name)
            .ok()
            .map(|found| &self.attributes[found].1)
    }
}

/// Reads a JSON object straight into a context (no intermediate map), refusing what
/// [`EvaluationContext::from_json`] refuses.
impl<'de> Deserialize<'de> for EvaluationContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Attributes;
        impl<'de> Visitor<'de> for Attributes {
            type Value = EvaluationContext;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object of attributes")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Self::Value, A::Error> {
                let mut attributes = Vec::with_capacity(members.size_hint().unwrap_or(4).min(64));
                while let Some(member) = members.next_entry::<String, Value>()? {
                    attributes.push(member);
                }
                EvaluationContext::from_pairs(attributes).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_map(Attributes)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_repeated_name_keeps_its_last_value_whichever_way_the_context_is_read() {
        let text = r#"{"plan":"free","targetingKey":"u-1","plan":"pro","a":1}"#;
        let read: EvaluationContext = serde_json::from_str(text).unwrap();
        let via_map = EvaluationContext::from_json(serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(read, via_map);
        assert_eq!(read.attribute("plan"), Some(&json!("pro")));
        assert_eq!(read.targeting_key(), Some("u-1"));
        let names: Vec<&str> = read.attributes().map(|(name, _)| name).collect();
        assert_eq!(names, ["a", "plan", "targetingKey"]);
    }

    #[test]
    fn many_attributes_are_found_by_name_as_few_are() {
        let names: Vec<String> = (0..(LINEAR_LOOKUP_MAX * 3))
            .map(|n| format!("a{n:02}"))
            .collect();
        let many = EvaluationContext::from_pairs(
            names
                .iter()
                .rev()
                .map(|name| (name.clone(), json!(name)))
                .collect(),
        )
        .unwrap();
        for name in &names {
            assert_eq!(many.attribute(name), Some(&json!(name)));
        }
        assert_eq!(many.attribute("a99"), None);
        assert_eq!(many.attribute(""), None);
    }

    #[test]
    fn attributes_set_one_by_one_are_found_and_replaced() {
        let context = EvaluationContext::new()
            .with_attribute("z", 1)
            .with_targeting_key("u-1")
            .with_attribute("b", 2)
            .with_attribute("z", 3);
        assert_eq!(context.attribute("z"), Some(&json!(3)));
        assert_eq!(context.attribute("b"), Some(&json!(2)));
        assert_eq!(context.attribute("missing"), None);
        assert_eq!(context.targeting_key(), Some("u-1"));
        let names: Vec<&str> = context.attributes().map(|(name, _)| name).collect();
        assert_eq!(names, ["b", "targetingKey", "z"]);
    }

    #[test]
    fn a_targeting_key_that_is_not_a_string_is_refused_and_null_counts_as_missing() {
        let refused = serde_json::from_str::<EvaluationContext>(r#"{"targetingKey":7}"#);
        assert!(refused.is_err());
        assert!(EvaluationContext::from_json(json!({"targetingKey": 7})).is_err());
        assert!(EvaluationContext::from_json(json!([])).is_err());
        let null: EvaluationContext = serde_json::from_str(r#"{"targetingKey":null}"#).unwrap();
        assert_eq!(null.targeting_key(), None);
        assert_eq!(null.attribute(TARGETING_KEY), None);
    }
}
