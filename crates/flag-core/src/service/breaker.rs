//! The cache's circuit breaker: an outage costs one timeout, not one per request.
//!
//! The first cache call that fails with an outage (`CacheError::is_outage`: a timeout, a refused
//! or broken connection) opens the circuit. While it is open no read calls the cache: reads are
//! answered from the repository through in-process copies (`copies.rs`), one repository read per
//! environment per `FLAG_OUTAGE_REFRESH_MS`, and writes leave their invalidation to the retry
//! task. A background probe pings the cache after 100 ms, then after intervals that double up
//! to 5 s; while reads keep arriving a probe is due at least every 500 ms, so the cache is used
//! again within about a second of coming back (a probe's interval plus the reconnect). The
//! first successful ping closes the circuit.
//!
//! Warnings are rate-limited ([`Quiet`]): one line per second at most, with the number of lines
//! held back since the last one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Inner, lock};
use crate::cache::CacheError;

/// The first probe's delay after the circuit opened.
const FIRST_PROBE: Duration = Duration::from_millis(100);
/// The longest interval between probes while nothing asks for the cache.
const LAST_PROBE: Duration = Duration::from_secs(5);
/// The longest interval between probes while reads are being answered without the cache: one
/// ping per half second costs nothing, and puts the cache back to use within about that much of
/// its return.
const PROBE_UNDER_TRAFFIC: Duration = Duration::from_millis(500);

/// Whether the cache is being skipped, and what happened since.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    open: AtomicBool,
    /// Reads answered without the cache since the last probe.
    bypassed: AtomicU64,
    /// When the circuit opened, and how many reads skipped the cache since.
    outage: Mutex<Option<(Instant, u64)>>,
}

impl Breaker {
    /// Whether reads skip the cache now.
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a read answered without the cache.
    pub(super) fn bypassed(&self) {
        self.bypassed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Inner {
    /// Records a failed cache call: an outage opens the circuit (and starts the probe). Answers
    /// whether it was an outage.
    pub(super) fn cache_outage(self: &Arc<Self>, error: &CacheError) -> bool {
        if !error.is_outage() {
            return false;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Without a runtime nothing could close the circuit again: keep calling the cache.
            return true;
        };
        if self.breaker.open.swap(true, Ordering::AcqRel) {
            return true;
        }
        *lock(&self.breaker.outage) = Some((Instant::now(), 0));
        warn!(backend = self.cache.backend(), %error,
            "cache unavailable: circuit open, reads go to the repository (one read per environment \
             per refresh interval) until a probe finds the cache back");
        let inner = Arc::clone(self);
        runtime.spawn(async move { inner.probe_cache().await });
        true
    }

    /// Pings the cache until it answers, then closes the circuit.
    async fn probe_cache(self: Arc<Self>) {
        let mut interval = FIRST_PROBE;
        let mut last_probe = Instant::now();
        loop {
            tokio::time::sleep(interval.min(PROBE_UNDER_TRAFFIC)).await;
            let bypassed = self.breaker.bypassed.swap(0, Ordering::Relaxed);
            if let Some((_, total)) = lock(&self.breaker.outage).as_mut() {
                *total += bypassed;
            }
            if bypassed == 0 && last_probe.elapsed() < interval {
                continue;
            }
            last_probe = Instant::now();
            match self.cache.ping().await {
                Ok(()) => {
                    self.outage_copies.clear();
                    self.breaker.open.store(false, Ordering::Release);
                    let outage = lock(&self.breaker.outage).take();
                    let (lasted, skipped) = outage.map_or((Duration::ZERO, 0), |(since, total)| {
                        (since.elapsed(), total)
                    });
                    info!(
                        backend = self.cache.backend(),
                        lasted_ms = lasted.as_millis() as u64,
                        reads_without_cache = skipped,
                        "cache answers again: circuit closed"
                    );
                    return;
                }
                Err(error) => {
                    interval = (interval * 2).min(LAST_PROBE);
                    if let Some(held_back) = self.quiet.permit() {
                        warn!(backend = self.cache.backend(), %error, held_back,
                            next_probe_ms = interval.min(PROBE_UNDER_TRAFFIC).as_millis() as u64,
                            "cache still unavailable");
                    }
                }
            }
        }
    }
}

/// Lets one warning line through per second and counts the lines held back in between, so an
/// outage under load writes a line a second, not one per request.
#[derive(Debug, Default)]
pub(super) struct Quiet {
    state: Mutex<(Option<Instant>, u64)>,
}

/// At most one line per this interval.
const QUIET_INTERVAL: Duration = Duration::from_secs(1);

impl Quiet {
    /// `Some(lines held back since the last one)` when a line may be written now.
    pub(super) fn permit(&self) -> Option<u64> {
        let mut state = lock(&self.state);
        let (last, held_back) = &mut *state;
        if last.is_some_and(|at| at.elapsed() < QUIET_INTERVAL) {
            *held_back += 1;
            return None;
        }
        *last = Some(Instant::now());
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_lets_one_line_a_second_through_and_counts_the_rest() {
        let quiet = Quiet::default();
        assert_eq!(quiet.permit(), Some(0));
        for _ in 0..5 {
            assert_eq!(quiet.permit(), None);
        }
        *lock(&quiet.state) = (Some(Instant::now() - QUIET_INTERVAL), 5);
        assert_eq!(quiet.permit(), Some(5));
        assert_eq!(quiet.permit(), None);
    }
}
