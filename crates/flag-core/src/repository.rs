//! The repository port: the source of truth for flags, with versions and revisions.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::flag::FeatureFlag;
use crate::names::{Environment, FlagKey};
use crate::snapshot::{EnvironmentSnapshot, EnvironmentSummary, Revision};

/// Durable flag storage, shared as `Arc<dyn FeatureFlagRepository>`.
///
/// # Contract
///
/// `flag-conformance`'s repository suite proves each rule for every adapter.
///
/// 1. **Versions.** A flag's first write stores version 1; every later write of it stores the
///    previous version + 1, and returns the stored flag with its version and `updated_at`.
/// 2. **Revisions.** Every successful write (upsert or delete) in an environment bumps that
///    environment's revision by exactly 1 in the same transaction; `snapshot` returns the flags
///    and the revision of one consistent state, and `revision` the same revision without the
///    flags. An environment never written is at revision 0 with no flags.
/// 3. **Optimistic concurrency.** [`Precondition::Version`] fails with
///    [`RepositoryError::VersionConflict`] (carrying the current version) unless the stored
///    version is exactly that; [`Precondition::Absent`] fails unless the flag does not exist.
///    A failed write changes nothing. Concurrent read-modify-write cycles never lose an update.
/// 4. **Deletes.** Deleting a missing flag is [`RepositoryError::NotFound`] and bumps nothing.
///    A re-created flag starts again at version 1.
/// 5. **Isolation.** Nothing done in one environment is visible in another.
/// 6. **Listing.** `environments` lists every environment that has had a write, by name, with its
///    revision and current flag count (0 after its last flag was deleted).
/// 7. **Failures are values.** An unreachable store is [`RepositoryError::Unavailable`] or
///    [`RepositoryError::Timeout`] within the adapter's timeout, never a hang.
#[async_trait]
pub trait FeatureFlagRepository: Send + Sync + fmt::Debug {
    /// A short, stable name of the backend (`sqlite`, `postgres`, ...) for metrics and logs.
    fn backend(&self) -> &'static str;

    /// Every flag of `env` with the environment's revision.
    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError>;

    /// The revision of `env` alone (what `snapshot` would carry), for callers that need no flags;
    /// the provided method reads the whole snapshot, and adapters answer it more cheaply.
    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        Ok(self.snapshot(env).await?.revision())
    }

    /// One flag of `env`, if it exists.
    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError>;

    /// Creates or replaces a flag, if `precondition` holds.
    async fn upsert(
        &self,
        env: &Environment,
        flag: FeatureFlag,
        precondition: Precondition,
    ) -> Result<Upserted, RepositoryError>;

    /// Deletes a flag, if it exists and `precondition` holds.
    async fn delete(
        &self,
        env: &Environment,
        key: &FlagKey,
        precondition: Precondition,
    ) -> Result<Deleted, RepositoryError>;

    /// Every environment that has had a write, ordered by name.
    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError>;

    /// Succeeds when the store answers; for readiness checks.
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// The trait object the service and server hold.
pub type DynFeatureFlagRepository = dyn FeatureFlagRepository;

/// A condition a write needs to hold, checked in the write's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Write whatever is stored.
    #[default]
    None,
    /// Write only if the flag exists at exactly this version (HTTP `If-Match`).
    Version(u64),
    /// Write only if the flag does not exist (HTTP `If-None-Match: *`).
    Absent,
}

/// A successful upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    /// The flag as stored, with its new version and timestamp.
    pub flag: FeatureFlag,
    /// The environment's revision after the write.
    pub revision: Revision,
    /// Whether the flag did not exist before.
    pub created: bool,
}

/// A successful delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The version the flag had when it was deleted.
    pub version: u64,
    /// The environment's revision after the write.
    pub revision: Revision,
}

/// A repository failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// The flag does not exist.
    #[error("flag {key} not found in environment {environment}")]
    NotFound {
        /// The environment.
        environment: Environment,
        /// The flag.
        key: FlagKey,
    },
    /// The precondition did not hold; nothing was written.
    #[error(
        "version conflict on flag {key} in {environment}: expected {expected:?}, current version {current:?}"
    )]
    VersionConflict {
        /// The environment.
        environment: Environment,
        /// The flag.
        key: FlagKey,
        /// What the writer required.
        expected: Precondition,
        /// The stored version, `None` when the flag does not exist.
        current: Option<u64>,
    },
    /// The store did not answer within the configured timeout.
    #[error("repository call timed out after {}ms", after.as_millis())]
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// The store cannot be reached.
    #[error("repository unavailable: {message}")]
    Unavailable {
        /// What the driver said.
        message: String,
    },
    /// A stored row cannot be read back as a valid flag.
    #[error("repository holds corrupt data: {message}")]
    Corrupt {
        /// What is wrong.
        message: String,
    },
    /// Any other store failure.
    #[error("repository error: {message}")]
    Backend {
        /// What the driver said.
        message: String,
    },
}

impl RepositoryError {
    /// Whether the store is down or slow (as opposed to the request being refused).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            RepositoryError::Timeout { .. } | RepositoryError::Unavailable { .. }
        )
    }
}

macro_rules! forward_repository {
    ($wrapper:ty) => {
        #[async_trait]
        impl<T: FeatureFlagRepository + ?Sized> FeatureFlagRepository for $wrapper {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }

            async fn snapshot(
                &self,
                env: &Environment,
            ) -> Result<EnvironmentSnapshot, RepositoryError> {
                (**self).snapshot(env).await
            }

            async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
                (**self).revision(env).await
            }

            async fn flag(
                &self,
                env: &Environment,
                key: &FlagKey,
            ) -> Result<Option<FeatureFlag>, RepositoryError> {
                (**self).flag(env, key).await
            }

            async fn upsert(
                &self,
                env: &Environment,
                flag: FeatureFlag,
                precondition: Precondition,
            ) -> Result<Upserted, RepositoryError> {
                (**self).upsert(env, flag, precondition).await
            }

            async fn delete(
                &self,
                env: &Environment,
                key: &FlagKey,
                precondition: Precondition,
            ) -> Result<Deleted, RepositoryError> {
                (**self).delete(env, key, precondition).await
            }

            async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
                (**self).environments().await
            }

            async fn ping(&self) -> Result<(), RepositoryError> {
                (**self).ping().await
            }
        }
    };
}

forward_repository!(std::sync::Arc<T>);
forward_repository!(Box<T>);
