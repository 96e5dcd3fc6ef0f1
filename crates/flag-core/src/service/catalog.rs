//! The catalog: which environments exist, so that a read of one that does not costs no
//! repository read, no cache entry and no per-name state.
//!
//! An environment exists once it has had a write. The catalog holds the names this instance
//! knows to exist (never more than the repository lists, which `FLAG_MAX_ENVIRONMENTS` bounds):
//! those it wrote, those the last listing of the repository returned, and those a shared cache
//! showed it (an entry or an invalidation's mark left by another instance's write). A name it
//! does not know is looked up in this order:
//! 1. the cache ([`FeatureFlagCache::holds_environment`]): with a shared Redis, another
//!    instance's write left a mark there, so the very next read here sees the new environment;
//! 2. the repository's list of environments, read again at most once per [`RELIST_EVERY`]
//!    whatever the number of unknown names asked for (a flood of junk names costs one listing per
//!    interval, and readers arriving during a listing wait for it rather than start another).
//!
//! A name found nowhere does not exist: the service answers it as an empty environment at
//! revision 0 and remembers nothing about it. When the last listing failed, a name found nowhere
//! is answered with that failure (a real environment this instance has not seen yet must not
//! look empty during an outage), still without asking the repository again before the interval.
//!
//! [`FeatureFlagCache::holds_environment`]: crate::FeatureFlagCache::holds_environment

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::fnv::FnvBuildHasher;
use crate::names::Environment;
use crate::repository::RepositoryError;
use crate::snapshot::{EnvironmentSnapshot, EnvironmentSummary, Revision};

/// How often, at most, names this instance does not know make it list the repository again.
pub const RELIST_EVERY: Duration = Duration::from_secs(1);

/// The environments known to exist, and when the repository was last listed.
#[derive(Debug)]
pub(super) struct Catalog {
    known: RwLock<HashSet<Environment, FnvBuildHasher>>,
    listing: tokio::sync::Mutex<Listing>,
    empty: Arc<EnvironmentSnapshot>,
}

/// The last listing of the repository.
#[derive(Debug, Default)]
struct Listing {
    at: Option<Instant>,
    failure: Option<RepositoryError>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            known: RwLock::default(),
            listing: tokio::sync::Mutex::default(),
            empty: Arc::new(EnvironmentSnapshot::empty(Revision::default())),
        }
    }
}

impl Catalog {
    /// Whether `env` is known to exist.
    pub(super) fn knows(&self, env: &Environment) -> bool {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(env)
    }

    /// Records that `env` exists (it was written, or a shared cache shows it).
    pub(super) fn learn(&self, env: &Environment) {
        if !self.knows(env) {
            self.known
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(env.clone());
        }
    }

    /// Adds a listing of the repository to what is known. A listing never removes a name: it may
    /// have been read just before a write through this instance created one.
    pub(super) fn add_listed(&self, environments: &[EnvironmentSummary]) {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        known.extend(environments.iter().map(|summary| summary.name.clone()));
    }

    /// Records that `env` no longer exists (deleted through this instance).
    pub(super) fn forget(&self, env: &Environment) {
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(env);
    }

    /// How many environments are known to exist.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The answer for an environment that does not exist: empty, at revision 0, shared.
    pub(super) fn nothing(&self) -> Arc<EnvironmentSnapshot> {
        Arc::clone(&self.empty)
    }

    /// Whether `env` exists after listing the repository with `list` when the last listing is
    /// older than [`RELIST_EVERY`]; the last listing's failure when it failed and `env` is not
    /// known.
    pub(super) async fn exists_after_listing<F, Fut>(
        &self,
        env: &Environment,
        list: F,
    ) -> Result<bool, RepositoryError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<EnvironmentSummary>, RepositoryError>>,
    {
        let mut listing = self.listing.lock().await;
        let due = listing.at.is_none_or(|at| at.elapsed() >= RELIST_EVERY);
        if due {
            let listed = list().await;
            listing.at = Some(Instant::now());
            match listed {
                Ok(environments) => {
                    self.add_listed(&environments);
                    listing.failure = None;
                }
                Err(error) => listing.failure = Some(error),
            }
        }
        if self.knows(env) {
            return Ok(true);
        }
        match &listing.failure {
            Some(error) => Err(error.clone()),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str) -> EnvironmentSummary {
        EnvironmentSummary {
            name: Environment::parse(name).unwrap(),
            revision: Revision(1),
            flag_count: 1,
        }
    }

    #[tokio::test]
    async fn unknown_names_list_the_repository_at_most_once_per_interval() {
        let catalog = Catalog::default();
        let listings = std::sync::atomic::AtomicUsize::new(0);
        let list = || async {
            listings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![summary("production")])
        };
        let production = Environment::parse("production").unwrap();
        assert!(
            catalog
                .exists_after_listing(&production, list)
                .await
                .unwrap()
        );
        for index in 0..1000 {
            let junk = Environment::parse(&format!("junk-{index}")).unwrap();
            assert!(!catalog.exists_after_listing(&junk, list).await.unwrap());
        }
        assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(catalog.len(), 1, "junk names leave nothing behind");
    }

    #[tokio::test]
    async fn a_failed_listing_is_the_answer_for_unknown_names_until_the_next() {
        let catalog = Catalog::default();
        catalog.learn(&Environment::parse("known").unwrap());
        let failing = || async {
            Err(RepositoryError::Unavailable {
                message: "down".to_owned(),
            })
        };
        let unknown = Environment::parse("unknown").unwrap();
        assert!(
            catalog
                .exists_after_listing(&unknown, failing)
                .await
                .is_err()
        );
        assert!(
            catalog
                .exists_after_listing(&unknown, failing)
                .await
                .is_err()
        );
        assert!(catalog.knows(&Environment::parse("known").unwrap()));
    }
}
