//! The core of the feature-flag service: what a flag is, how it is evaluated, the three ports
//! that adapters implement, and the service that joins them. It knows no adapter.
//!
//! - Domain ([`Environment`], [`FlagKey`], [`SegmentKey`], [`Actor`], [`FeatureFlag`], [`Segment`],
//!   [`EnvironmentSnapshot`], [`FlagLookup`]): parsed, not validated later; a value of these
//!   types is valid by construction (operands such as versions and regular expressions are
//!   compiled while parsing). [`References`] is the rule every repository keeps between flags,
//!   segments and prerequisites.
//! - Evaluation ([`evaluate`], [`evaluate_in`], [`Scope`], [`Evaluation`],
//!   [`EvaluationContext`]): every operator, reason and error of the design contract, segments,
//!   prerequisites and `$now` read from the [`Scope`] (the environment's snapshot and the
//!   evaluation time); percentage rollouts bucketed exactly like flagd, by `targetingKey` or a
//!   `bucketBy` attribute.
//! - The explainer ([`explain`], [`Explanation`]): the same engine run with a witness that
//!   writes down each step (prerequisites, each condition's [`ConditionOutcome`], the segment
//!   part that decided, the bucket), so an explanation can never disagree with the answer.
//! - Flags as files ([`read_document`], [`plan_import`]): an environment document, or a flagd
//!   flag file for the subset of flagd's targeting that maps exactly, read with every problem at
//!   its path, and the one decision every repository takes to import it.
//! - Who and what changed ([`Actor`], [`AuditQuery`], [`AuditPage`]): every write through the
//!   repository port names its actor, and the repository answers its audit log a page at a time.
//!   The audit log is also the outbox of change notifications ([`OutboxEntry`], the repository's
//!   rule 15): each receiver's place in it, so webhooks lose nothing a write committed.
//! - [`Traced`]: any port with a `tracing` span around each call, for OpenTelemetry; wrapped in by
//!   the binary only while spans are exported.
//! - Ports, each object-safe and documented with a `# Contract` whose every rule names the
//!   `flag-conformance` property that proves it for every adapter:
//!   [`FeatureFlagCache`] (adapters: `flag-memory`'s `MemoryCache`, `TieredCache`, `NoCache`;
//!   `flag-redis`'s `RedisCache`), [`FeatureFlagRepository`] (`flag-sql`'s `SqlRepository`, and
//!   [`InMemoryRepository`] here, the reference the repository suite is checked against) and
//!   [`InvalidationBus`] (`flag-memory`'s `LocalBus`, `flag-redis`'s `RedisBus`).
//! - Feature `openapi`: OpenAPI schemas (`utoipa::ToSchema`) of the flag, definition, context,
//!   name and answer types, so a server's document describes exactly what these types accept.
//! - [`FeatureFlagService`]: read-through caching with single-flight fills, fallback to the
//!   repository when the cache fails, read-your-writes after every write, retried invalidations,
//!   and last-known-good answers (reason `CACHED`) when the cache and the repository both fail.
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

mod audit;
mod bucketing;
mod bus;
mod cache;
mod context;
mod evaluation;
mod evaluation_counts;
mod explanation;
mod flag;
mod flagd;
mod fnv;
mod import;
mod in_memory;
mod metrics;
mod names;
#[cfg(feature = "openapi")]
mod openapi;
mod operand;
mod references;
mod repository;
mod secrets;
mod segment;
mod service;
mod single_flight;
mod snapshot;
mod traced;

pub use audit::{
    AuditAction, AuditCursor, AuditCursorError, AuditEntry, AuditKind, AuditPage, AuditQuery,
    DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE,
};
pub use bucketing::{bucket, murmur3_x86_32};
pub use bus::{BUS_CAPACITY, BusError, BusEvent, DynInvalidationBus, InvalidationBus};
pub use cache::{CacheError, DynFeatureFlagCache, FeatureFlagCache, SetOutcome, TierStatus};
pub use context::{ContextError, EvaluationContext, TARGETING_KEY};
pub use evaluation::{
    ConditionOutcome, ErrorCode, Evaluation, EvaluationError, MAX_PREREQUISITE_DEPTH, Reason,
    Resolution, Scope, SegmentPart, condition_outcome, evaluate, evaluate_in, matches, matches_in,
};
pub use evaluation_counts::{EvaluationCounts, EvaluationSeries};
pub use explanation::{
    ConditionStep, Explained, Explanation, PrerequisiteStep, RuleStep, SegmentStep, SlotStep,
    SplitStep, explain,
};
pub use flag::{
    Condition, ConditionDocument, FeatureFlag, FlagDocument, NOW_ATTRIBUTE, Operator, Prerequisite,
    PrerequisiteDocument, Rollout, Rule, RuleDocument, RuleOutcome, ValidationError,
    ValidationReason, WeightedVariant, WeightedVariantDocument,
};
pub use flagd::{MAX_FLAGD_RULES, is_flagd_document};
pub use fnv::{FnvBuildHasher, FnvHasher};
pub use import::{
    DocumentContents, ImportDiff, ImportMode, ImportPlan, ImportProblem, ImportRequest, Imported,
    KeyChanges, path_within, plan_import, read_document, read_environment,
};
pub use in_memory::InMemoryRepository;
pub use metrics::ServiceMetrics;
pub use names::{Actor, Environment, FlagKey, NameError, SegmentKey};
pub use operand::{MAX_COMPILED_PATTERN_BYTES, MAX_PATTERN_BYTES};
pub use references::{ReferenceError, References};
pub use repository::{
    Deleted, DynFeatureFlagRepository, FeatureFlagRepository, OutboxEntry, Precondition,
    RepositoryError, Upserted, UpsertedSegment,
};
pub use secrets::redact_url;
pub use segment::{KeySet, Segment, SegmentDocument, SegmentRule, SegmentRuleDocument};
pub use service::{
    BulkEvaluation, BulkSnapshot, DEFAULT_OUTAGE_REFRESH, DEFAULT_STALE_IF_ERROR, DEFAULT_TTL,
    FeatureFlagService, LimitExceeded, Limits, RELIST_EVERY, RetryPolicy, ServiceBuilder,
    ServiceConfigError, ServiceError,
};
pub use single_flight::SingleFlight;
pub use snapshot::{
    DuplicateFlag, DuplicateSegment, EnvironmentSnapshot, EnvironmentSummary, FlagLookup, Revision,
};

pub use async_trait::async_trait;
/// Re-exported so adapters name `updated_at` timestamps with the same crate version.
pub use time;
/// Re-exported so adapters implement the ports with the same macro version.
pub use traced::Traced;
