//! The behaviour suites that every adapter of a `flag-core` port must pass (cache, repository,
//! invalidation bus), so that swapping one backend for another changes nothing a user can
//! observe (TTL to the millisecond included).
//!
//! Every property is a plain async function over the port that returns `Result<(), Violation>`,
//! so a suite can also be run against a deliberately broken adapter and be seen to fail (the
//! "teeth" tests of `flag-memory` and of this crate do exactly that). Adapters declare their
//! differences in [`CacheCapabilities`] and [`BusCapabilities`]; nothing is ever skipped. The
//! numbers in brackets are the rules of each port's `# Contract` that the property proves.
//!
//! The cache suite ([`cache`], [`cache_suite!`]):
//!
//! | property | what it proves (rule of `FeatureFlagCache`'s contract) |
//! |---|---|
//! | [`cache::ttl_is_honoured`] | reads before `ttl - slack` hit, reads after `ttl + slack` miss (1) |
//! | [`cache::zero_ttl_is_rejected`] | a zero TTL is `CacheError::ZeroTtl` and stores nothing (1) |
//! | [`cache::set_is_atomic`] | concurrent readers never see a mix of two snapshots (2) |
//! | [`cache::racing_sets_leave_one`] | two racing sets leave exactly one, the newer if revisions differ (2) |
//! | [`cache::empty_environment_is_cacheable`] | an empty snapshot is a hit with no flags (3) |
//! | [`cache::revision_never_goes_back`] | an older set is `Stale` and changes nothing (4) |
//! | [`cache::an_equal_revision_replaces_at_once`] | a refill of the revision just read is what the next read answers, within one millisecond too (4) |
//! | [`cache::stale_set_after_invalidate`] | after `invalidate(r)`, sets older than `r` are `Stale` (4) |
//! | [`cache::environments_are_isolated`] | look-alike environments never collide (5) |
//! | [`cache::get_flag_agrees_with_get`] | `get_flag` is `Hit`, `Absent` or `Miss` exactly as `get` says (7) |
//! | [`cache::get_with_ttl_never_outlives_get`] | the time `get_with_ttl` reports left ends no later than the entry (8) |
//! | [`cache::unusual_keys_and_values_round_trip`] | maximum-length and Unicode keys and values survive (9) |
//! | [`cache::large_environment_round_trips`] | a 10,000-flag environment survives (9) |
//! | [`model::check_against_model`] | random sequences of every operation agree with a reference model |
//!
//! The repository suite ([`repository`], [`repository_suite!`]):
//!
//! | property | what it proves (rule of `FeatureFlagRepository`'s contract) |
//! |---|---|
//! | [`repository::versions_start_at_one_and_grow`] | versions start at 1 and grow by 1 (1) |
//! | [`repository::revisions_bump_once_per_write`] | one revision bump per write, none per failed write; `revision` agrees with `snapshot` (2) |
//! | [`repository::optimistic_concurrency_is_enforced`] | every `Precondition` is checked in the write; a failed one changes nothing (3) |
//! | [`repository::concurrent_writers_never_lose_updates`] | 50 concurrent read-modify-write writers lose nothing (3) |
//! | [`repository::deletes_remove_and_restart_versions`] | deletes, `NotFound`, re-creation at version 1 (4) |
//! | [`repository::environments_are_isolated`] | look-alike environments never collide (5) |
//! | [`repository::environments_are_listed`] | every written environment listed with revision and count (6) |
//! | [`repository::environments_are_removed_only_when_empty`] | removal refused while flags remain; revisions continue after it (7) |
//! | [`repository::unusual_flags_round_trip`], [`repository::ping_answers`] | round trips and ping (8) |
//! | [`repository::stored_rows_are_read_tolerantly`] | unknown stored fields ignored, a damaged row isolated to its flag (10) |
//! | [`source::serves_what_its_source_holds`] | what is served is what the source holds, by snapshot, alone and listed |
//! | [`source::revisions_and_versions_follow_the_source`] | a change raises the revision, no change keeps it; versions kept, next or 1 |
//! | [`source::writes_are_refused`] | read-only repositories only: every write is `ReadOnly` and changes nothing |
//!
//! A repository that takes writes runs the properties of what it serves through
//! [`source::ImportSource`] (its contents imported); a read-only one ([`read_only_repository_suite!`])
//! declares a [`source::Source`] of its own (a file it rewrites) and runs those properties,
//! [`source::writes_are_refused`] and `ping_answers` instead of the properties that write.
//!
//! The bus suite ([`bus`], [`bus_suite!`]) runs on a [`BusMedium`] (what the buses of one
//! deployment share: one Redis, one process), which each property gets fresh:
//!
//! | property | what it proves (rule of `InvalidationBus`'s contract) |
//! |---|---|
//! | [`bus::publish_reaches_every_subscriber`] | one publish reaches every receiver of every bus, the publisher's own included, once (1) |
//! | [`bus::a_loss_is_followed_by_a_restore`] | an interrupted subscription is `Lost`, then `Restored` once it watches again (2) |
//! | [`bus::watch_is_idempotent_and_bounded`] | watching twice is once; no more environments watched than declared (3) |
//! | [`bus::a_watched_environment_is_delivered`] | once `is_watching` says so, publishes arrive (4) |
//!
//! Running the suite for a new adapter takes one macro call in its tests (the crate needs
//! `tokio` and `rstest` as dev-dependencies):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flag_conformance::{CacheCapabilities, SharedCache, cache_suite};
//! use flag_memory::MemoryCache; // your adapter here
//!
//! cache_suite!(
//!     memory,
//!     || async { Arc::new(MemoryCache::new()) as SharedCache },
//!     CacheCapabilities { ttl_slack: Duration::from_millis(1), max_value_bytes: None }
//! );
//! # fn main() {}
//! ```
//!
//! The model test runs 256 cases by default; `PROPTEST_CASES` changes that.

pub mod bus;
pub mod cache;
pub mod model;
pub mod repository;
mod sample;
pub mod source;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use bus::{BusCapabilities, BusMedium, SharedBus, SharedMedium};
pub use flag_core;
pub use repository::SharedRepository;
pub use sample::{flag_with_value, generation_snapshot};

/// A cache under test, shared so that properties can drive it from several tasks at once.
pub type SharedCache = Arc<dyn flag_core::FeatureFlagCache>;

/// What an adapter declares about itself; the suite adjusts its expectations, never its coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCapabilities {
    /// How far past (or before) the TTL a read may still hit (or already miss): a few ms at most.
    pub ttl_slack: Duration,
    /// The largest encoded snapshot the backend stores, if it has a limit.
    pub max_value_bytes: Option<usize>,
}

impl Default for CacheCapabilities {
    fn default() -> Self {
        Self {
            ttl_slack: Duration::from_millis(1),
            max_value_bytes: None,
        }
    }
}

/// A broken rule: which property caught it, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property's function name.
    pub property: &'static str,
    /// What the adapter did, against what the contract demands.
    pub message: String,
}

impl Violation {
    /// A violation of `property`.
    pub fn new(property: &'static str, message: impl Into<String>) -> Self {
        Self {
            property,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.property, self.message)
    }
}

impl std::error::Error for Violation {}

/// The properties `violations` were caught by, each violation printed first so a teeth test's
/// log says what was seen.
pub fn caught_by(violations: &[Violation]) -> Vec<&'static str> {
    for violation in violations {
        println!("{violation}");
    }
    violations
        .iter()
        .map(|violation| violation.property)
        .collect()
}

/// Turns the whole cache suite into `#[tokio::test]`s for one backend.
///
/// `$factory` is a closure returning a future of a fresh [`SharedCache`]; every test gets its
/// own. `$capabilities` is the backend's [`CacheCapabilities`].
#[macro_export]
macro_rules! cache_suite {
    ($name:ident, $factory:expr, $capabilities:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn cache() -> $crate::SharedCache {
                ($factory)().await
            }

            fn capabilities() -> $crate::CacheCapabilities {
                $capabilities
            }

            #[::rstest::rstest]
            #[case::ttl_1ms(1)]
            #[case::ttl_15ms(15)]
            #[case::ttl_250ms(250)]
            #[case::ttl_1s(1_000)]
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ttl_is_honoured(#[case] ttl_ms: u64) {
                let cache = cache().await;
                let ttl = ::std::time::Duration::from_millis(ttl_ms);
                if let Err(violation) =
                    $crate::cache::ttl_is_honoured(&cache, capabilities(), ttl).await
                {
                    panic!("{violation}");
                }
            }

            $crate::__cache_property!(zero_ttl_is_rejected);
            $crate::__cache_property!(set_is_atomic);
            $crate::__cache_property!(racing_sets_leave_one);
            $crate::__cache_property!(empty_environment_is_cacheable);
            $crate::__cache_property!(revision_never_goes_back);
            $crate::__cache_property!(an_equal_revision_replaces_at_once);
            $crate::__cache_property!(stale_set_after_invalidate);
            $crate::__cache_property!(environments_are_isolated);
            $crate::__cache_property!(get_flag_agrees_with_get);
            $crate::__cache_property!(get_with_ttl_never_outlives_get);
            $crate::__cache_property!(unusual_keys_and_values_round_trip);
            $crate::__cache_property!(unreadable_stand_ins_round_trip);
            $crate::__cache_property!(large_environment_round_trips);

            #[test]
            fn model_test() {
                if let Err(failure) = $crate::model::check_against_model(
                    || ($factory)(),
                    capabilities(),
                    $crate::model::ModelConfig::from_env(),
                ) {
                    panic!("{failure}");
                }
            }
        }
    };
}

/// One property of [`cache_suite!`] as a test; expands inside the suite's module.
#[doc(hidden)]
#[macro_export]
macro_rules! __cache_property {
    ($property:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $property() {
            let cache = cache().await;
            if let Err(violation) = $crate::cache::$property(&cache, capabilities()).await {
                panic!("{violation}");
            }
        }
    };
}

/// Turns the whole repository suite into `#[tokio::test]`s for one backend.
///
/// `$factory` is a closure returning a future of a [`SharedRepository`]; every test gets its
/// own (or one shared store: each property uses environments of its own). `$stored_rows` is a
/// closure returning a future of a repository together with the [`repository::StoredRows`] that
/// reaches its store, for the property about what other releases (or damage) leave there.
#[macro_export]
macro_rules! repository_suite {
    ($name:ident, $factory:expr, stored_rows: $stored_rows:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn repository() -> $crate::SharedRepository {
                ($factory)().await
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stored_rows_are_read_tolerantly() {
                let (repository, rows): (
                    $crate::SharedRepository,
                    ::std::sync::Arc<dyn $crate::repository::StoredRows>,
                ) = ($stored_rows)().await;
                if let Err(violation) =
                    $crate::repository::stored_rows_are_read_tolerantly(&repository, &*rows).await
                {
                    panic!("{violation}");
                }
            }

            $crate::__repository_property!(versions_start_at_one_and_grow);
            $crate::__repository_property!(revisions_bump_once_per_write);
            $crate::__repository_property!(optimistic_concurrency_is_enforced);
            $crate::__repository_property!(concurrent_writers_never_lose_updates);
            $crate::__repository_property!(deletes_remove_and_restart_versions);
            $crate::__repository_property!(environments_are_isolated);
            $crate::__repository_property!(environments_are_listed);
            $crate::__repository_property!(environments_are_removed_only_when_empty);
            $crate::__repository_property!(unusual_flags_round_trip);
            $crate::__repository_property!(ping_answers);
            $crate::__repository_property!(segments_are_versioned_with_the_environment);
            $crate::__repository_property!(references_are_kept_by_every_write);
            $crate::__repository_property!(every_write_is_audited_with_its_actor);
            $crate::__repository_property!(imports_are_one_transaction);
            $crate::__repository_property!(the_outbox_holds_every_committed_write_until_delivered);
            $crate::__source_property!(
                serves_what_its_source_holds,
                |repository: &$crate::SharedRepository| {
                    ::std::sync::Arc::new($crate::source::ImportSource::new(
                        ::std::sync::Arc::clone(repository),
                    )) as $crate::source::SharedSource
                }
            );
            $crate::__source_property!(
                revisions_and_versions_follow_the_source,
                |repository: &$crate::SharedRepository| {
                    ::std::sync::Arc::new($crate::source::ImportSource::new(
                        ::std::sync::Arc::clone(repository),
                    )) as $crate::source::SharedSource
                }
            );
        }
    };
}

/// Turns the repository suite's read-only part into `#[tokio::test]`s for a repository that
/// takes no writes (its contents come from a source it reads, such as a file).
///
/// `$factory` is a closure returning a future of the repository and the
/// [`source::Source`] that changes what it serves. Every property that writes is replaced by
/// [`source::writes_are_refused`]; the properties of what is served
/// ([`source::serves_what_its_source_holds`],
/// [`source::revisions_and_versions_follow_the_source`]) and [`repository::ping_answers`] run as
/// for every repository.
#[macro_export]
macro_rules! read_only_repository_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn repository_and_source()
            -> ($crate::SharedRepository, $crate::source::SharedSource) {
                ($factory)().await
            }

            async fn repository() -> $crate::SharedRepository {
                repository_and_source().await.0
            }

            $crate::__repository_property!(ping_answers);

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn writes_are_refused() {
                let (repository, source) = repository_and_source().await;
                if let Err(violation) =
                    $crate::source::writes_are_refused(&repository, &source).await
                {
                    panic!("{violation}");
                }
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn serves_what_its_source_holds() {
                let (repository, source) = repository_and_source().await;
                if let Err(violation) =
                    $crate::source::serves_what_its_source_holds(&repository, &source).await
                {
                    panic!("{violation}");
                }
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revisions_and_versions_follow_the_source() {
                let (repository, source) = repository_and_source().await;
                if let Err(violation) =
                    $crate::source::revisions_and_versions_follow_the_source(&repository, &source)
                        .await
                {
                    panic!("{violation}");
                }
            }
        }
    };
}

/// One property of what a repository serves, with the source `$source` makes of the
/// repository; expands inside the suite's module.
#[doc(hidden)]
#[macro_export]
macro_rules! __source_property {
    ($property:ident, $source:expr) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $property() {
            let repository = repository().await;
            let source = ($source)(&repository);
            if let Err(violation) = $crate::source::$property(&repository, &source).await {
                panic!("{violation}");
            }
        }
    };
}

/// One property of [`repository_suite!`] as a test; expands inside the suite's module.
#[doc(hidden)]
#[macro_export]
macro_rules! __repository_property {
    ($property:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $property() {
            let repository = repository().await;
            if let Err(violation) = $crate::repository::$property(&repository).await {
                panic!("{violation}");
            }
        }
    };
}

/// Turns the whole bus suite into `#[tokio::test]`s for one backend.
///
/// `$factory` is a closure returning a future of a fresh [`SharedMedium`]; every test gets its
/// own. `$capabilities` is the backend's [`BusCapabilities`].
#[macro_export]
macro_rules! bus_suite {
    ($name:ident, $factory:expr, $capabilities:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn medium() -> $crate::SharedMedium {
                ($factory)().await
            }

            fn capabilities() -> $crate::BusCapabilities {
                $capabilities
            }

            $crate::__bus_property!(publish_reaches_every_subscriber);
            $crate::__bus_property!(a_loss_is_followed_by_a_restore);
            $crate::__bus_property!(watch_is_idempotent_and_bounded);
            $crate::__bus_property!(a_watched_environment_is_delivered);
        }
    };
}

/// One property of [`bus_suite!`] as a test; expands inside the suite's module.
#[doc(hidden)]
#[macro_export]
macro_rules! __bus_property {
    ($property:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $property() {
            let medium = medium().await;
            if let Err(violation) = $crate::bus::$property(&*medium, capabilities()).await {
                panic!("{violation}");
            }
        }
    };
}
