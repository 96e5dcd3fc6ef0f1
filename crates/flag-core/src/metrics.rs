//! Counters the service keeps, for the server to export (Prometheus) and tests to assert on.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A point-in-time copy of the service's counters; each only ever grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServiceMetrics {
    /// Cache reads that found the environment (and the flag, for single-flag reads).
    pub cache_hits: u64,
    /// Cache reads that found nothing, or a snapshot older than a write this server made.
    pub cache_misses: u64,
    /// Single-flag cache reads that found the environment without the flag.
    pub cache_absent: u64,
    /// Cache calls of any kind (read, fill, invalidation) that failed.
    pub cache_errors: u64,
    /// Reads answered from the repository because the cache failed.
    pub cache_fallbacks: u64,
    /// Cache fills that stored a snapshot.
    pub fills_stored: u64,
    /// Cache fills refused because a newer revision was already known.
    pub fills_stale: u64,
    /// Repository reads (snapshot, flag and listing reads).
    pub repository_reads: u64,
    /// Repeated attempts at an invalidation that failed after a write.
    pub invalidation_retries: u64,
    /// Invalidations abandoned after retrying until the cache TTL ran out.
    pub invalidations_abandoned: u64,
    /// Reads answered from a last-known-good snapshot because the cache and repository failed.
    pub stale_answers: u64,
    /// Fills the cache refused because the snapshot is larger than it accepts.
    pub fills_too_large: u64,
    /// Stored flags that could not be read, each counted once (per version) when first met.
    pub unreadable_flags: u64,
}

/// The live counters behind [`ServiceMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) cache_absent: Counter,
    pub(crate) cache_errors: Counter,
    pub(crate) cache_fallbacks: Counter,
    pub(crate) fills_stored: Counter,
    pub(crate) fills_stale: Counter,
    pub(crate) repository_reads: Counter,
    pub(crate) invalidation_retries: Counter,
    pub(crate) invalidations_abandoned: Counter,
    pub(crate) stale_answers: Counter,
    pub(crate) fills_too_large: Counter,
    pub(crate) unreadable_flags: Counter,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ServiceMetrics {
        ServiceMetrics {
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
            cache_absent: self.cache_absent.get(),
            cache_errors: self.cache_errors.get(),
            cache_fallbacks: self.cache_fallbacks.get(),
            fills_stored: self.fills_stored.get(),
            fills_stale: self.fills_stale.get(),
            repository_reads: self.repository_reads.get(),
            invalidation_retries: self.invalidation_retries.get(),
            invalidations_abandoned: self.invalidations_abandoned.get(),
            stale_answers: self.stale_answers.get(),
            fills_too_large: self.fills_too_large.get(),
            unreadable_flags: self.unreadable_flags.get(),
        }
    }
}

/// A monotonically increasing count; relaxed ordering suffices for statistics.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
