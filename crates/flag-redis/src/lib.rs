//! `RedisCache` and `RedisBus`: the cache port and the invalidation bus port on Redis, sharing one
//! client (one connection per process, one timeout, one key prefix).
//!
//! | module | job |
//! |---|---|
//! | `cache` | [`RedisCache`]: the cache port, and the snapshot last decoded per environment |
//! | `codec` | the hash layout, both ways |
//! | `scripts` | the Lua scripts that compare revisions on the server |
//! | `bus` | [`RedisBus`]: invalidations on pub/sub (sharded on a Cluster) |
//! | `client` | the client both share: connector, prefix, timeout, error mapping |
//! | `connection`, `target` | one self-healing connection per deployment, parsed from one URL |
//!
//! # Layout
//!
//! One hash per environment, key `<prefix>:{<env>}` (default prefix `feature_flags`; the braces
//! are a Redis Cluster hash tag, so every key of one environment lives in one slot). One field per
//! flag key holding the flag's JSON, one field `__segment:<key>` per segment holding the
//! segment's JSON, and one reserved field `__meta` holding
//! `{"revision":…,"cachedAtMs":…,"tombstone":…}` (flag keys cannot start with `_`, so a flag
//! and a segment of one key never collide). So in `redis-cli`:
//!
//! ```text
//! > HGETALL "feature_flags:{production}"
//! 1) "__meta"               2) "{\"revision\":7,\"cachedAtMs\":1764100000000,\"tombstone\":false}"
//! 3) "new-checkout"         4) "{\"key\":\"new-checkout\",\"enabled\":true,…}"
//! 5) "__segment:beta-users" 6) "{\"key\":\"beta-users\",\"included\":[…],…}"
//! ```
//!
//! Fields starting with `__` that this release does not know (a newer release's) are ignored
//! when reading; a release from before segments reads `__segment:` fields as unreadable flags,
//! which makes it fall back to the database until the rolling deploy is done.
//!
//! `get` is one `HGETALL`, `get_flag` one `HMGET key <flag> __meta`. A flag with prerequisites
//! or segment conditions is evaluated in its environment's whole snapshot, so the service reads
//! it with `get` (usually one `HGET` of `__meta`, see below). Decoding a whole environment
//! costs far more than fetching it (about 1.5 µs per flag), so `get` remembers, per environment,
//! the snapshot it last decoded with the exact `__meta` text it came with; the next `get` asks
//! Redis only for `HGET key __meta` and, when the text is byte-for-byte the same (same revision,
//! same fill, no tombstone), answers the remembered snapshot without fetching or decoding a
//! flag. Anything else (an expired key, a tombstone, a newer fill) takes the full `HGETALL` path,
//! so every answer is still what Redis holds at that moment: the TTL, invalidations and
//! revisions behave exactly as without it. The one difference: a flag field edited by hand in
//! Redis while `__meta` stays the same is seen once `__meta` changes (the next fill or
//! invalidation, or the TTL). At most [`DECODED_ENVIRONMENTS`] environments are remembered.
//!
//! `set` and `invalidate` are Lua scripts that compare revisions on the server, so a slow fill
//! can never overwrite a newer revision and no writer ever retries (no `WATCH`); they write in
//! chunks of 1,000 fields to stay under Lua's `unpack` limit (a 10,000-flag environment works).
//! A snapshot whose encoding exceeds [`RedisCacheBuilder::max_snapshot_bytes`] (16 MiB by
//! default) is refused with `CacheError::TooLarge` before anything is sent, so one huge
//! environment never holds up the shared connection that every other environment's calls use.
//! Revisions are compared as decimal strings, exact for every `u64`. TTL is a `PEXPIRE` on the
//! whole hash, in milliseconds (declared slack: [`TTL_SLACK`]). `invalidate` leaves a tombstone
//! hash holding only `__meta` for [`RedisCacheBuilder::tombstone_ttl`] (default 10 minutes).
//!
//! A Redis that was flushed or restarted empty is only a run of misses: the service refills it.
//! A hash edited by hand into something unreadable is [`flag_core::CacheError::Corrupt`]; the
//! next fill replaces it.
//!
//! # Connection
//!
//! From one URL:
//!
//! | URL | deployment |
//! |---|---|
//! | `redis://[user[:password]@]host[:port][/db]` | single node |
//! | `rediss://…` | single node over TLS, verified against the system's roots (`#insecure` at the end turns verification off) |
//! | `redis+unix:///path/to/redis.sock[?db=N]` (or `unix://`) | single node on a unix socket |
//! | `redis+cluster://[user[:password]@]host:port[,host:port…]` (`rediss+cluster://` for TLS) | Redis Cluster, from any seed nodes |
//! | `redis+sentinel://[user[:password]@]host:port[,…]/<master>[/db]` (`rediss+sentinel://`) | the master that Sentinel names; credentials and TLS apply to the master |
//!
//! One shared multiplexed connection reconnects by itself; the first connection is made lazily,
//! so a cache built while Redis is down starts working when Redis comes up. Every call has a
//! timeout (default [`DEFAULT_TIMEOUT`]) and fails with a timeout or unavailable error of the
//! port within it. Passwords never appear in logs, errors or `Debug`.
//!
//! # Invalidation bus
//!
//! [`RedisBus`] carries invalidations between server instances on its cache's client: classic
//! pub/sub on one channel for a single node or Sentinel, sharded pub/sub (one channel per
//! environment, with its hash tag) on a Cluster. See its module for how a lost subscription is
//! reported.

mod bus;
mod cache;
mod client;
mod codec;
mod connection;
mod scripts;
mod target;

pub use bus::{DEFAULT_PING_INTERVAL, MAX_WATCHED, RedisBus};
pub use cache::{
    DECODED_ENVIRONMENTS, DEFAULT_KEY_PREFIX, DEFAULT_MAX_SNAPSHOT_BYTES, DEFAULT_TIMEOUT,
    RedisCache, RedisCacheBuilder, RedisConnection, TTL_SLACK,
};
pub use codec::META_FIELD;
pub use target::UrlError;
