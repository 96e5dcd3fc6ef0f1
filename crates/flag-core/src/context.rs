//! The evaluation context: who is asking (`targetingKey`) and what is known about them.

use serde_json::{Map, Value};

/// The reserved attribute that identifies the user, as OpenFeature names it.
pub const TARGETING_KEY: &str = "targetingKey";

/// Attributes of the subject of an evaluation, `targetingKey` among them.
///
/// Decisions: an attribute whose value is `null` counts as missing; an empty `targetingKey` counts
/// as missing too (it identifies nobody, and would put every such caller in one bucket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvaluationContext {
    attributes: Map<String, Value>,
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
        match attributes.get(TARGETING_KEY) {
            None | Some(Value::Null | Value::String(_)) => Ok(Self { attributes }),
            Some(_) => Err(ContextError("targetingKey must be a string")),
        }
    }

    /// The same context with `targetingKey` set.
    #[must_use]
    pub fn with_targeting_key(mut self, key: impl Into<String>) -> Self {
        self.attributes
            .insert(TARGETING_KEY.to_owned(), Value::String(key.into()));
        self
    }

    /// The same context with one more attribute (replacing any of that name).
    ///
    /// Setting `targetingKey` to a non-string here makes the context have no targeting key.
    #[must_use]
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// The non-empty targeting key, if the context has one.
    pub fn targeting_key(&self) -> Option<&str> {
        match self.attributes.get(TARGETING_KEY) {
            Some(Value::String(key)) if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    /// The value of an attribute, `None` when it is missing or `null`.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name).filter(|value| !value.is_null())
    }

    /// All attributes, as given.
    pub fn attributes(&self) -> &Map<String, Value> {
        &self.attributes
    }
}
