//! In-process caching for `flag-core`: every cache and bus that lives inside the server process.
//!
//! | item | port | what it is |
//! |---|---|---|
//! | [`MemoryCache`] | `FeatureFlagCache` | snapshots in process memory, on moka; TTL exact to the millisecond |
//! | [`TieredCache`] | `FeatureFlagCache` | any in-process L1 over any shared L2, kept coherent across instances by any `InvalidationBus` |
//! | [`NoCache`] | `FeatureFlagCache` | holds nothing: every read goes to the repository |
//! | [`AnnouncedCache`] | `FeatureFlagCache` | any cache whose invalidations are also published on any `InvalidationBus` |
//! | [`LocalBus`] | `InvalidationBus` | a bus inside one process, with simulated outages |
//!
//! `MemoryCache` and `TieredCache` pass the whole cache conformance suite (`tests/conformance.rs`,
//! `tests/tiered.rs`), `LocalBus` the bus suite (`tests/bus.rs`); `tests/teeth.rs` shows the
//! suites catching deliberately broken adapters. `NoCache` deliberately does not pass the cache
//! suite (it never caches); `tests/no_cache.rs` holds it to what it promises instead.
//!
//! Nothing here knows Redis: the server puts a `RedisCache` under a `TieredCache` and hands it a
//! `RedisBus`, and announces a plain `RedisCache`'s invalidations on one with an `AnnouncedCache`.

mod announced;
mod bus;
mod cache;
mod no_cache;
mod tiered;

pub use announced::AnnouncedCache;
pub use bus::LocalBus;
pub use cache::{MemoryCache, MemoryCacheBuilder, TTL_SLACK};
pub use no_cache::NoCache;
pub use tiered::{DEFAULT_L1_TTL, TieredCache};
