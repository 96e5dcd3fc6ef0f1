//! The core of the feature-flag service: what a flag is, how it is evaluated, the two ports that
//! adapters implement, and the service that joins them.
//!
//! - Domain ([`Environment`], [`FlagKey`], [`FeatureFlag`], [`EnvironmentSnapshot`]): parsed, not
//!   validated later; a value of these types is valid by construction.
//! - Evaluation ([`evaluate`], [`Evaluation`], [`EvaluationContext`]): every operator, reason and
//!   error of the design contract; percentage rollouts bucketed exactly like flagd.
//! - Ports: [`FeatureFlagCache`] (memory, Redis, ...) and [`FeatureFlagRepository`] (SQL), both
//!   object-safe and documented with a `# Contract` that `flag-conformance` proves per adapter.
//! - [`FeatureFlagService`]: read-through caching with single-flight fills, fallback to the
//!   repository when the cache fails, read-your-writes after every write, and last-known-good
//!   answers (reason `CACHED`) when the cache and the repository both fail.
//! - [`InvalidationBus`] (a third port: instances telling each other an environment changed, with
//!   [`LocalBus`] in process) and [`TieredCache`], an in-process L1 over any shared L2 that the
//!   bus keeps coherent; itself a [`FeatureFlagCache`].
//!
//! ```
//! use flag_core::{EvaluationContext, FeatureFlag, FlagKey, Reason, evaluate};
//!
//! let key = FlagKey::parse("new-checkout")?;
//! let flag = FeatureFlag::from_definition_json(&key, r#"{
//!     "enabled": true,
//!     "rules": [{"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro"]}],
//!                "variant": "on"}],
//!     "defaultVariant": "off"
//! }"#)?;
//! let pro = EvaluationContext::new().with_targeting_key("user-1").with_attribute("plan", "pro");
//! let resolution = evaluate(&flag, &pro)?;
//! assert_eq!(resolution.value, &serde_json::json!(true));
//! assert_eq!(resolution.reason, Reason::TargetingMatch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod bucketing;
mod bus;
mod cache;
mod context;
mod evaluation;
mod flag;
mod in_memory;
mod last_good;
mod metrics;
mod names;
mod repository;
mod secrets;
mod service;
mod snapshot;
mod tiered;

pub use bucketing::{bucket, murmur3_x86_32};
pub use bus::{BUS_CAPACITY, BusError, BusEvent, DynInvalidationBus, InvalidationBus, LocalBus};
pub use cache::{CacheError, DynFeatureFlagCache, FeatureFlagCache, FlagLookup, SetOutcome};
pub use context::{ContextError, EvaluationContext, TARGETING_KEY};
pub use evaluation::{
    ErrorCode, Evaluation, EvaluationError, Reason, Resolution, evaluate, matches,
};
pub use flag::{
    Condition, ConditionDocument, FeatureFlag, FlagDocument, Operator, Rollout, Rule, RuleDocument,
    RuleOutcome, ValidationError, ValidationReason, WeightedVariant, WeightedVariantDocument,
};
pub use in_memory::InMemoryRepository;
pub use metrics::ServiceMetrics;
pub use names::{Environment, FlagKey, NameError};
pub use repository::{
    Deleted, DynFeatureFlagRepository, FeatureFlagRepository, Precondition, RepositoryError,
    Upserted,
};
pub use secrets::redact_url;
pub use service::{
    BulkEvaluation, DEFAULT_STALE_IF_ERROR, DEFAULT_TTL, FeatureFlagService, RetryPolicy,
    ServiceBuilder, ServiceConfigError, ServiceError,
};
pub use snapshot::{DuplicateFlag, EnvironmentSnapshot, EnvironmentSummary, Revision};
pub use tiered::{DEFAULT_L1_TTL, TieredCache};

/// Re-exported so adapters implement the ports with the same macro version.
pub use async_trait::async_trait;
/// Re-exported so adapters name `updated_at` timestamps with the same crate version.
pub use time;
