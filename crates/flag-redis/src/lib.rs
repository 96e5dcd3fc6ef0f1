//! `RedisCache`: the Redis implementation of [`FeatureFlagCache`].
//!
//! # Layout
//!
//! One hash per environment, key `<prefix>:{<env>}` (default prefix `feature_flags`; the braces
//! are a Redis Cluster hash tag, so every key of one environment lives in one slot). One field per
//! flag key holding the flag's JSON, and one reserved field `__meta` holding
//! `{"revision":…,"cachedAtMs":…,"tombstone":…}` (flag keys cannot start with `_`). So in
//! `redis-cli`:
//!
//! ```text
//! > HGETALL "feature_flags:{production}"
//! 1) "__meta"        2) "{\"revision\":7,\"cachedAtMs\":1764100000000,\"tombstone\":false}"
//! 3) "new-checkout"  4) "{\"key\":\"new-checkout\",\"enabled\":true,…}"
//! ```
//!
//! `get` is one `HGETALL`, `get_flag` one `HMGET key <flag> __meta`. Decoding a whole environment
//! costs far more than fetching it (about 1.5 µs per flag), so `get` remembers, per environment,
//! the snapshot it last decoded with the exact `__meta` text it came with; the next `get` asks
//! Redis only for `HGET key __meta` and, when the text is byte-for-byte the same (same revision,
//! same fill, no tombstone), answers the remembered snapshot without fetching or decoding a
//! flag. Anything else (an expired key, a tombstone, a newer fill) takes the full `HGETALL` path,
//! so every answer is still what Redis holds at that moment: the TTL, invalidations and
//! revisions behave exactly as without it. The one difference: a flag field edited by hand in
//! Redis while `__meta` stays the same is seen once `__meta` changes (the next fill or
//! invalidation, or the TTL). At most [`DECODED_ENVIRONMENTS`] environments are remembered. `set` and `invalidate` are
//! Lua scripts that compare revisions on the server, so a slow fill can never overwrite a newer
//! revision and no writer ever retries (no `WATCH`); they write in chunks of 1,000 fields to stay
//! under Lua's `unpack` limit (a 10,000-flag environment works). Revisions are compared as
//! decimal strings, exact for every `u64`. TTL is a `PEXPIRE` on the whole hash, in milliseconds
//! (declared slack: [`TTL_SLACK`]). `invalidate` leaves a tombstone hash holding only `__meta`
//! for [`RedisCacheBuilder::tombstone_ttl`] (default 10 minutes).
//!
//! A Redis that was flushed or restarted empty is only a run of misses: the service refills it.
//! A hash edited by hand into something unreadable is [`CacheError::Corrupt`]; the next fill
//! replaces it.
//!
//! # Connection
//!
//! From one URL:
//!
//! | URL | deployment |
//! |---|---|
//! | `redis://[user[:password]@]host[:port][/db]` | single node |
//! | `rediss://…` | single node over TLS, verified against the system's roots (`#insecure` at the end turns verification off) |
//! | `redis+unix:///path/to/redis.sock[?db=N]` | single node on a unix socket |
//! | `redis+cluster://[user[:password]@]host:port[,host:port…]` (`rediss+cluster://`) | Redis Cluster, from any seed nodes |
//! | `redis+sentinel://[user[:password]@]host:port[,…]/<master>[/db]` (`rediss+sentinel://`) | the master that Sentinel names; credentials and TLS apply to the master |
//! One shared multiplexed
//! connection reconnects by itself; the first connection is made lazily, so a cache built while
//! Redis is down starts working when Redis comes up. Every call has a timeout (default
//! [`DEFAULT_TIMEOUT`]) and fails with [`CacheError::Timeout`] or [`CacheError::Unavailable`]
//! within it. Passwords never appear in logs, errors or `Debug`.
//!
//! # Invalidation bus
//!
//! [`RedisBus`] carries invalidations between server instances on the same connection settings:
//! classic pub/sub on one channel for a single node or Sentinel, sharded pub/sub (one channel per
//! environment, with its hash tag) on a Cluster. See its module for how a lost subscription is
//! reported.

mod bus;
mod connection;
mod target;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flag_core::{
    CacheError, Environment, EnvironmentSnapshot, FeatureFlag, FeatureFlagCache, FlagKey,
    FlagLookup, Revision, SetOutcome, async_trait, redact_url,
};
use redis::{RedisError, Script};
use serde::{Deserialize, Serialize};

pub use crate::bus::{MAX_WATCHED, RedisBus};
use crate::connection::{Connector, Link};
use crate::target::Target;
pub use crate::target::UrlError;

/// The timeout of every Redis call unless configured otherwise: 100 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The key prefix unless configured otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "feature_flags";
/// The reserved hash field holding the entry's revision, fill time and tombstone flag.
pub const META_FIELD: &str = "__meta";
/// The TTL slack this adapter declares: Redis keeps expiry times in whole milliseconds.
pub const TTL_SLACK: Duration = Duration::from_millis(2);

/// Replaces the environment's hash unless it holds a newer revision. Returns 1 (stored) or 0.
const SET_SCRIPT: &str = r#"
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local meta = redis.call('HGET', KEYS[1], '__meta')
if meta then
  local current = string.match(meta, '"revision":(%d+)')
  if current and newer(current, ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__meta', ARGV[3])
for first = 4, #ARGV, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 1999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Drops the environment's flags, leaving a tombstone that remembers the newer of the given and
/// the cached revision.
/// The whole hash and its remaining time in milliseconds, read atomically.
const READ_WITH_TTL_SCRIPT: &str = r#"
return {redis.call('HGETALL', KEYS[1]), redis.call('PTTL', KEYS[1])}
"#;

/// `__meta` (nil when absent) and the remaining time in milliseconds, read atomically.
const META_WITH_TTL_SCRIPT: &str = r#"
return {redis.call('HGET', KEYS[1], '__meta'), redis.call('PTTL', KEYS[1])}
"#;

const INVALIDATE_SCRIPT: &str = r#"
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local revision = ARGV[1]
local meta = redis.call('HGET', KEYS[1], '__meta')
if meta then
  local current = string.match(meta, '"revision":(%d+)')
  if current and newer(current, revision) then revision = current end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__meta',
  '{"revision":' .. revision .. ',"cachedAtMs":' .. ARGV[3] .. ',"tombstone":true}')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// The `__meta` field.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    revision: u64,
    cached_at_ms: u64,
    tombstone: bool,
}

/// A clone of the shared connection; usable with any `redis` command or script.
#[derive(Clone)]
pub struct RedisConnection(Link);

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisConnection")
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// A cache of environment snapshots in Redis, shared by every server instance that uses it.
#[derive(Clone)]
pub struct RedisCache {
    shared: Arc<Shared>,
}

struct Shared {
    /// The last snapshot `get` decoded per environment, with the `__meta` text it came with.
    decoded: std::sync::Mutex<HashMap<Environment, Decoded>>,
    connector: Connector,
    shown_url: String,
    prefix: String,
    timeout: Duration,
    tombstone_ttl: Duration,
    set_script: Script,
    invalidate_script: Script,
    read_with_ttl_script: Script,
    meta_with_ttl_script: Script,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("url", &self.shared.shown_url)
            .field("target", self.shared.connector.target())
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.shared.timeout)
            .finish()
    }
}

/// How many environments' decoded snapshots a cache remembers; past that it forgets them all and
/// starts again (a deployment with more environments than this pays the full decode more often).
pub const DECODED_ENVIRONMENTS: usize = 1024;

/// A snapshot `get` decoded, and the exact `__meta` text that came with it.
struct Decoded {
    meta: String,
    snapshot: Arc<EnvironmentSnapshot>,
}

/// Configures a [`RedisCache`].
#[derive(Clone)]
pub struct RedisCacheBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    tombstone_ttl: Duration,
}

impl fmt::Debug for RedisCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisCacheBuilder {
    /// The prefix of every key (`<prefix>:{<env>}`).
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The timeout of every call (connecting included).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long an invalidation's revision is remembered.
    #[must_use]
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// The cache; no connection is made until the first call.
    pub fn build(self) -> Result<RedisCache, UrlError> {
        let target = Target::parse(&self.url)?;
        install_tls_provider();
        Ok(RedisCache {
            shared: Arc::new(Shared {
                decoded: std::sync::Mutex::default(),
                connector: Connector::new(target, self.timeout),
                shown_url: redact_url(&self.url),
                prefix: self.prefix,
                timeout: self.timeout,
                tombstone_ttl: self.tombstone_ttl,
                set_script: Script::new(SET_SCRIPT),
                invalidate_script: Script::new(INVALIDATE_SCRIPT),
                read_with_ttl_script: Script::new(READ_WITH_TTL_SCRIPT),
                meta_with_ttl_script: Script::new(META_WITH_TTL_SCRIPT),
            }),
        })
    }
}

impl RedisCache {
    /// A builder with the defaults: prefix `feature_flags`, 100 ms timeout, 10-minute tombstones.
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.into(),
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            tombstone_ttl: Duration::from_secs(600),
        }
    }

    /// A cache with the defaults at `url`; no connection is made until the first call.
    pub fn from_url(url: impl Into<String>) -> Result<Self, UrlError> {
        Self::builder(url).build()
    }

    /// The hash key of an environment: `<prefix>:{<env>}`.
    pub fn key(&self, env: &Environment) -> String {
        format!("{}:{{{}}}", self.shared.prefix, env)
    }

    /// Succeeds when Redis answers `PING` within the timeout.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.call(
            |mut link| async move { redis::cmd("PING").query_async::<String>(&mut link).await },
        )
        .await
        .map(drop)
    }

    /// The cache's shared, self-healing connection, for other parts of the server that talk to
    /// the same Redis (one connection per process instead of one per component). Calls made on
    /// it are not bounded by the cache's timeout: wrap them in one of your own.
    pub async fn connection(&self) -> Result<RedisConnection, CacheError> {
        self.call(|link| async move { Ok(RedisConnection(link)) })
            .await
    }

    /// Runs one call on the shared link, bounded by the timeout, with errors mapped.
    /// The snapshot last decoded for `env`, when Redis still holds the very fill it came from
    /// (one `HGET` of `__meta`); `None` sends the caller down the full `HGETALL` path.
    async fn unchanged_since_decoded(
        &self,
        env: &Environment,
    ) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        if !self.has_decoded(env) {
            return Ok(None);
        }
        let key = self.key(env);
        let meta: Option<String> = self
            .call(|mut link| async move {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(META_FIELD)
                    .query_async(&mut link)
                    .await
            })
            .await?;
        Ok(meta.and_then(|meta| self.decoded_with(env, &meta)))
    }

    fn decoded(&self) -> std::sync::MutexGuard<'_, HashMap<Environment, Decoded>> {
        self.shared
            .decoded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a decoded snapshot of `env` is remembered (worth asking Redis for `__meta` only).
    fn has_decoded(&self, env: &Environment) -> bool {
        self.decoded().contains_key(env)
    }

    /// The remembered snapshot of `env`, if it came with exactly this `__meta` text.
    fn decoded_with(&self, env: &Environment, meta: &str) -> Option<Arc<EnvironmentSnapshot>> {
        self.decoded()
            .get(env)
            .filter(|decoded| decoded.meta == meta)
            .map(|decoded| Arc::clone(&decoded.snapshot))
    }

    fn remember_decoded(
        &self,
        env: &Environment,
        meta: String,
        snapshot: Arc<EnvironmentSnapshot>,
    ) {
        let mut decoded = self.decoded();
        if decoded.len() >= DECODED_ENVIRONMENTS && !decoded.contains_key(env) {
            decoded.clear();
        }
        decoded.insert(env.clone(), Decoded { meta, snapshot });
    }

    async fn call<T, F, Fut>(&self, operation: F) -> Result<T, CacheError>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let shared = &self.shared;
        let attempt = async {
            let link = shared.connector.link().await?;
            operation(link).await
        };
        match tokio::time::timeout(shared.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                shared.connector.failed(&error);
                Err(map_error(&error, shared.timeout))
            }
            Err(_) => Err(CacheError::Timeout {
                after: shared.timeout,
            }),
        }
    }
}

/// Makes ring the process's TLS provider for `rediss://`, unless the program chose one already.
fn install_tls_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err means another provider is installed already; that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn map_error(error: &RedisError, timeout: Duration) -> CacheError {
    if error.is_timeout() {
        CacheError::Timeout { after: timeout }
    } else if error.is_connection_refusal() || error.is_io_error() || error.is_connection_dropped()
    {
        CacheError::Unavailable {
            message: error.to_string(),
        }
    } else {
        CacheError::Backend {
            message: error.to_string(),
        }
    }
}

fn corrupt(env: &Environment, message: impl Into<String>) -> CacheError {
    CacheError::Corrupt {
        environment: env.clone(),
        message: message.into(),
    }
}

fn parse_meta(env: &Environment, raw: &str) -> Result<Meta, CacheError> {
    serde_json::from_str(raw)
        .map_err(|error| corrupt(env, format!("unreadable {META_FIELD}: {error}")))
}

fn parse_flag(env: &Environment, field: &str, raw: &str) -> Result<FeatureFlag, CacheError> {
    let flag: FeatureFlag = serde_json::from_str(raw)
        .map_err(|error| corrupt(env, format!("unreadable flag {field:?}: {error}")))?;
    if flag.key().as_str() != field {
        return Err(corrupt(
            env,
            format!("field {field:?} holds flag {}", flag.key()),
        ));
    }
    Ok(flag)
}

/// The snapshot an `HGETALL` answered, with its `__meta` text; `None` for a miss or tombstone.
fn decode_hash(
    env: &Environment,
    mut fields: HashMap<String, String>,
) -> Result<Option<(String, Arc<EnvironmentSnapshot>)>, CacheError> {
    let Some(raw_meta) = fields.remove(META_FIELD) else {
        if fields.is_empty() {
            return Ok(None);
        }
        return Err(corrupt(env, format!("hash has flags but no {META_FIELD}")));
    };
    let meta = parse_meta(env, &raw_meta)?;
    if meta.tombstone {
        return Ok(None);
    }
    let flags = fields
        .iter()
        .map(|(field, raw)| parse_flag(env, field, raw).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let snapshot = EnvironmentSnapshot::from_shared(Revision(meta.revision), flags)
        .map_err(|error| corrupt(env, error.to_string()))?;
    Ok(Some((raw_meta, Arc::new(snapshot))))
}

/// A `PTTL` answer as a remaining time: `None` for -2 (just expired) and -1 (no TTL, which our
/// writes never leave).
fn remaining_time(pttl: i64) -> Option<Duration> {
    u64::try_from(pttl).ok().map(Duration::from_millis)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Milliseconds for `PEXPIRE`, rounding a sub-millisecond remainder up (never 0, which deletes).
fn whole_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait]
impl FeatureFlagCache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, env: &Environment) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        if let Some(snapshot) = self.unchanged_since_decoded(env).await? {
            return Ok(Some(snapshot));
        }
        let key = self.key(env);
        let fields: HashMap<String, String> =
            self.call(|mut link| async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut link).await
            })
            .await?;
        let Some((raw_meta, snapshot)) = decode_hash(env, fields)? else {
            return Ok(None);
        };
        self.remember_decoded(env, raw_meta, snapshot.clone());
        Ok(Some(snapshot))
    }

    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        // One script each, so what is read and its remaining time are read at the same instant.
        if self.has_decoded(env) {
            let key = self.key(env);
            let script = &self.shared.meta_with_ttl_script;
            let (meta, pttl): (Option<String>, i64) = self
                .call(|mut link| async move { script.key(&key).invoke_async(&mut link).await })
                .await?;
            if let Some(snapshot) = meta.and_then(|meta| self.decoded_with(env, &meta)) {
                return Ok(Some((snapshot, remaining_time(pttl))));
            }
        }
        let key = self.key(env);
        let script = &self.shared.read_with_ttl_script;
        let (flat, pttl): (Vec<String>, i64) = self
            .call(|mut link| async move { script.key(&key).invoke_async(&mut link).await })
            .await?;
        let mut fields = HashMap::with_capacity(flat.len() / 2);
        let mut pairs = flat.into_iter();
        while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
            fields.insert(field, value);
        }
        let Some((raw_meta, snapshot)) = decode_hash(env, fields)? else {
            return Ok(None);
        };
        self.remember_decoded(env, raw_meta, snapshot.clone());
        Ok(Some((snapshot, remaining_time(pttl))))
    }

    async fn get_flag(
        &self,
        env: &Environment,
        flag_key: &FlagKey,
    ) -> Result<FlagLookup, CacheError> {
        let key = self.key(env);
        let field = flag_key.as_str().to_owned();
        let (raw_flag, raw_meta): (Option<String>, Option<String>) = self
            .call(|mut link| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&field)
                    .arg(META_FIELD)
                    .query_async(&mut link)
                    .await
            })
            .await?;
        let Some(raw_meta) = raw_meta else {
            return Ok(FlagLookup::Miss);
        };
        let meta = parse_meta(env, &raw_meta)?;
        if meta.tombstone {
            return Ok(FlagLookup::Miss);
        }
        let revision = Revision(meta.revision);
        Ok(match raw_flag {
            None => FlagLookup::Absent { revision },
            Some(raw) => FlagLookup::Hit {
                flag: Arc::new(parse_flag(env, flag_key.as_str(), &raw)?),
                revision,
            },
        })
    }

    async fn set(
        &self,
        env: &Environment,
        snapshot: Arc<EnvironmentSnapshot>,
        ttl: Duration,
    ) -> Result<SetOutcome, CacheError> {
        if ttl.is_zero() {
            return Err(CacheError::ZeroTtl);
        }
        let meta = Meta {
            revision: snapshot.revision().get(),
            cached_at_ms: now_ms(),
            tombstone: false,
        };
        let meta = serde_json::to_string(&meta).map_err(|error| CacheError::Backend {
            message: error.to_string(),
        })?;
        let mut pairs = Vec::with_capacity(snapshot.len() * 2);
        for flag in snapshot.flags() {
            let json = serde_json::to_string(&**flag).map_err(|error| CacheError::Backend {
                message: format!("encoding flag {}: {error}", flag.key()),
            })?;
            pairs.push(flag.key().to_string());
            pairs.push(json);
        }
        let key = self.key(env);
        let revision = snapshot.revision().get().to_string();
        let ttl_ms = whole_ms(ttl);
        let script = &self.shared.set_script;
        let stored: i64 = self
            .call(|mut link| async move {
                script
                    .key(&key)
                    .arg(&revision)
                    .arg(ttl_ms)
                    .arg(&meta)
                    .arg(&pairs)
                    .invoke_async(&mut link)
                    .await
            })
            .await?;
        Ok(if stored == 1 {
            SetOutcome::Stored
        } else {
            SetOutcome::Stale
        })
    }

    async fn invalidate(&self, env: &Environment, revision: Revision) -> Result<(), CacheError> {
        let key = self.key(env);
        let revision = revision.get().to_string();
        let tombstone_ms = whole_ms(self.shared.tombstone_ttl);
        let now = now_ms();
        let script = &self.shared.invalidate_script;
        let _: i64 = self
            .call(|mut link| async move {
                script
                    .key(&key)
                    .arg(&revision)
                    .arg(tombstone_ms)
                    .arg(now)
                    .invoke_async(&mut link)
                    .await
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_hash_tag() {
        let cache = RedisCache::from_url("redis://127.0.0.1:1").unwrap();
        let env = Environment::parse("production").unwrap();
        assert_eq!(cache.key(&env), "feature_flags:{production}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let cache = RedisCache::from_url("rediss://:secret@host:6380/0").unwrap();
        let shown = format!("{cache:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("rediss://:***@host:6380/0"), "{shown}");
    }

    #[test]
    fn sub_millisecond_ttls_round_up() {
        assert_eq!(whole_ms(Duration::from_micros(1)), 1);
        assert_eq!(whole_ms(Duration::from_micros(1_500)), 2);
        assert_eq!(whole_ms(Duration::from_millis(15)), 15);
    }
}
