//! OpenAPI schemas of the types whose JSON shape a derive cannot see (feature `openapi`).
//!
//! The names carry their grammar's pattern and length, the context its one typed attribute, and
//! counts their range, so a server's document states exactly what these types accept. The plain
//! data types (`FeatureFlag`, the `*Document` definitions, `Reason`, `ErrorCode`, ...) derive
//! their schemas where they are declared.

use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::context::{EvaluationContext, TARGETING_KEY};
use crate::snapshot::Revision;

/// A name: 1 to `max_len` characters matching `pattern`.
pub(crate) fn name_schema(description: &str, pattern: &str, max_len: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max_len))
        .into()
}

impl PartialSchema for Revision {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .description(Some(
                "The environment's revision: 0 before its first write, one more after each.",
            ))
            .into()
    }
}

impl ToSchema for Revision {}

impl PartialSchema for EvaluationContext {
    fn schema() -> RefOr<Schema> {
        let targeting_key = ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some(
                "Identifies the user for rollouts; `null` or `\"\"` counts as absent.",
            ));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Attributes of the user, any JSON; only `targetingKey` has a type of its own.",
            ))
            .property(TARGETING_KEY, targeting_key)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

impl ToSchema for EvaluationContext {}
