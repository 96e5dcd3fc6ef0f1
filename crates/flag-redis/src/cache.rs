//! `RedisCache`: the cache port on Redis hashes (layout in the crate docs), with the snapshot it
//! last decoded per environment remembered.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flag_core::{
    CacheError, Environment, EnvironmentSnapshot, FeatureFlag, FeatureFlagCache, FlagKey,
    FlagLookup, FnvBuildHasher, Revision, SetOutcome, async_trait, redact_url,
};

use crate::client::RedisClient;
use crate::codec::{
    META_FIELD, decode_hash, encode, meta_text, now_ms, pairs_to_fields, parse_flag, parse_meta,
    remaining_time, whole_ms,
};
use crate::connection::Link;
use crate::scripts::Scripts;
use crate::target::UrlError;

/// The timeout of every Redis call unless configured otherwise: 100 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The key prefix unless configured otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "feature_flags";
/// The TTL slack this adapter declares: Redis keeps expiry times in whole milliseconds.
pub const TTL_SLACK: Duration = Duration::from_millis(2);
/// How many environments' decoded snapshots (and, apart, decoded flags) a cache remembers; past
/// that it forgets them all and starts again (a deployment with more environments than this pays
/// the full decode more often).
pub const DECODED_ENVIRONMENTS: usize = 1024;

/// The largest snapshot `set` sends when the builder does not say: 16 MiB of encoded flags.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: usize = 16 << 20;

/// A cache of environment snapshots in Redis, shared by every server instance that uses it.
#[derive(Clone)]
pub struct RedisCache {
    client: RedisClient,
    shared: Arc<Shared>,
}

struct Shared {
    /// The last snapshot `get` decoded per environment, with the `__meta` text it came with.
    decoded: Mutex<HashMap<Environment, Decoded, FnvBuildHasher>>,
    /// The flags `get_flag` decoded per environment, with the `__meta` text they came with.
    decoded_flags: Mutex<HashMap<Environment, DecodedFlags, FnvBuildHasher>>,
    tombstone_ttl: Duration,
    max_snapshot_bytes: usize,
    scripts: Scripts,
}

/// A snapshot `get` decoded, and the exact `__meta` text that came with it.
struct Decoded {
    meta: String,
    snapshot: Arc<EnvironmentSnapshot>,
}

/// Flags `get_flag` decoded from one fill of an environment (the exact `__meta` text that came
/// with them): decoding a flag's JSON was a third of a single-flag read, and a fill never
/// changes, so each flag of it is decoded once.
///
/// Keyed with FNV, as the environment maps are: only flags Redis answered are remembered, of
/// environments that exist, so a client's junk names are never added.
struct DecodedFlags {
    meta: String,
    /// The revision `meta` names: a read that finds the same text needs not parse it again.
    revision: Revision,
    flags: HashMap<FlagKey, Arc<FeatureFlag>, FnvBuildHasher>,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("client", &self.client)
            .field("tombstone_ttl", &self.shared.tombstone_ttl)
            .field("max_snapshot_bytes", &self.shared.max_snapshot_bytes)
            .finish()
    }
}

/// Configures a [`RedisCache`].
#[derive(Clone)]
pub struct RedisCacheBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    tombstone_ttl: Duration,
    max_snapshot_bytes: usize,
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

    /// The largest encoded snapshot `set` sends; a larger one is [`CacheError::TooLarge`],
    /// refused before anything is sent.
    #[must_use]
    pub fn max_snapshot_bytes(mut self, limit: usize) -> Self {
        self.max_snapshot_bytes = limit;
        self
    }

    /// The cache; no connection is made until the first call.
    pub fn build(self) -> Result<RedisCache, UrlError> {
        Ok(RedisCache {
            client: RedisClient::new(&self.url, self.prefix, self.timeout)?,
            shared: Arc::new(Shared {
                decoded: Mutex::default(),
                decoded_flags: Mutex::default(),
                tombstone_ttl: self.tombstone_ttl,
                max_snapshot_bytes: self.max_snapshot_bytes,
                scripts: Scripts::new(),
            }),
        })
    }
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

impl RedisCache {
    /// A builder with the defaults: prefix `feature_flags`, 100 ms timeout, 10-minute tombstones,
    /// snapshots up to 16 MiB.
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.into(),
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            tombstone_ttl: Duration::from_secs(600),
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
        }
    }

    /// A cache with the defaults at `url`; no connection is made until the first call.
    pub fn from_url(url: impl Into<String>) -> Result<Self, UrlError> {
        Self::builder(url).build()
    }

    /// The hash key of an environment: `<prefix>:{<env>}`.
    pub fn key(&self, env: &Environment) -> String {
        self.client.key(env)
    }

    /// The cache's shared, self-healing connection, for other parts of the server that talk to
    /// the same Redis (one connection per process instead of one per component). Calls made on
    /// it are not bounded by the cache's timeout: wrap them in one of your own.
    pub async fn connection(&self) -> Result<RedisConnection, CacheError> {
        self.client
            .call(|link| async move { Ok(RedisConnection(link)) })
            .await
            .map_err(CacheError::from)
    }

    /// The client the cache talks through, shared with a bus on the same Redis.
    pub(crate) fn client(&self) -> &RedisClient {
        &self.client
    }

    /// One call of the client, failing as the cache port does.
    async fn call<T, F, Fut>(&self, operation: F) -> Result<T, CacheError>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.client.call(operation).await.map_err(CacheError::from)
    }

    fn decoded(&self) -> MutexGuard<'_, HashMap<Environment, Decoded, FnvBuildHasher>> {
        self.shared
            .decoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The flag `key` of `env` as already decoded from the fill that came with `meta`: from the
    /// remembered snapshot, else from the flags `get_flag` decoded.
    fn decoded_flag(
        &self,
        env: &Environment,
        meta: &str,
        key: &FlagKey,
    ) -> Option<(Arc<FeatureFlag>, Revision)> {
        if let Some(snapshot) = self.decoded_with(env, meta) {
            let flag = snapshot.flag(key.as_str()).cloned()?;
            return Some((flag, snapshot.revision()));
        }
        let flags = self
            .shared
            .decoded_flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let decoded = flags.get(env).filter(|decoded| decoded.meta == meta)?;
        let flag = decoded.flags.get(key).cloned()?;
        Some((flag, decoded.revision))
    }

    /// Remembers `flag` of `env` as decoded from the fill that came with `meta` (forgetting what
    /// was remembered of an older fill; past [`DECODED_ENVIRONMENTS`] environments, everything).
    fn remember_flag(
        &self,
        env: &Environment,
        (meta, revision): (&str, Revision),
        key: &FlagKey,
        flag: Arc<FeatureFlag>,
    ) {
        let mut flags = self
            .shared
            .decoded_flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flags.len() >= DECODED_ENVIRONMENTS && !flags.contains_key(env) {
            flags.clear();
        }
        let decoded = flags.entry(env.clone()).or_insert_with(|| DecodedFlags {
            meta: meta.to_owned(),
            revision,
            flags: HashMap::default(),
        });
        if decoded.meta != meta {
            decoded.meta = meta.to_owned();
            decoded.revision = revision;
            decoded.flags.clear();
        }
        decoded.flags.insert(key.clone(), flag);
    }

    /// Whether a decoded snapshot of `env` is remembered (worth asking Redis for `__meta` only).
    fn has_decoded(&self, env: &Environment) -> bool {
        self.decoded().contains_key(env)
    }

    /// Whether a snapshot or flags of `env` are remembered as decoded from a fill with exactly
    /// this `__meta` text.
    fn remembers_meta(&self, env: &Environment, meta: &str) -> bool {
        self.decoded_with(env, meta).is_some()
            || self
                .shared
                .decoded_flags
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(env)
                .is_some_and(|flags| flags.meta == meta)
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

    /// Decodes a whole hash read from Redis and remembers the snapshot with its `__meta`.
    fn decode_and_remember(
        &self,
        env: &Environment,
        fields: HashMap<String, String>,
    ) -> Result<Option<Arc<EnvironmentSnapshot>>, CacheError> {
        let Some((raw_meta, snapshot)) = decode_hash(env, fields)? else {
            return Ok(None);
        };
        self.remember_decoded(env, raw_meta, Arc::clone(&snapshot));
        Ok(Some(snapshot))
    }
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
        self.decode_and_remember(env, fields)
    }

    async fn get_with_ttl(
        &self,
        env: &Environment,
    ) -> Result<Option<(Arc<EnvironmentSnapshot>, Option<Duration>)>, CacheError> {
        // One script each, so what is read and its remaining time are read at the same instant.
        let scripts = &self.shared.scripts;
        if self.has_decoded(env) {
            let key = self.key(env);
            let (meta, pttl): (Option<String>, i64) = self
                .call(|mut link| async move {
                    scripts
                        .meta_with_ttl
                        .key(&key)
                        .invoke_async(&mut link)
                        .await
                })
                .await?;
            if let Some(snapshot) = meta.and_then(|meta| self.decoded_with(env, &meta)) {
                return Ok(Some((snapshot, remaining_time(pttl))));
            }
        }
        let key = self.key(env);
        let (flat, pttl): (Vec<String>, i64) = self
            .call(|mut link| async move {
                scripts
                    .read_with_ttl
                    .key(&key)
                    .invoke_async(&mut link)
                    .await
            })
            .await?;
        Ok(self
            .decode_and_remember(env, pairs_to_fields(flat))?
            .map(|snapshot| (snapshot, remaining_time(pttl))))
    }

    async fn get_flag(
        &self,
        env: &Environment,
        flag_key: &FlagKey,
    ) -> Result<FlagLookup, CacheError> {
        let key = self.key(env);
        let (raw_flag, raw_meta): (Option<String>, Option<String>) = self
            .call(|mut link| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(flag_key.as_str())
                    .arg(META_FIELD)
                    .query_async(&mut link)
                    .await
            })
            .await?;
        let Some(raw_meta) = raw_meta else {
            return Ok(FlagLookup::Miss);
        };
        // The fill `__meta` names is immutable: what was decoded from it stays right, and so
        // does the revision read from it (a tombstone's flags are never remembered).
        if raw_flag.is_some()
            && let Some((flag, revision)) = self.decoded_flag(env, &raw_meta, flag_key)
        {
            return Ok(FlagLookup::Hit { flag, revision });
        }
        let meta = parse_meta(env, &raw_meta)?;
        if meta.tombstone {
            return Ok(FlagLookup::Miss);
        }
        let revision = Revision(meta.revision);
        let Some(raw) = raw_flag else {
            return Ok(FlagLookup::Absent { revision });
        };
        let flag = Arc::new(parse_flag(env, flag_key.as_str(), &raw)?);
        self.remember_flag(env, (&raw_meta, revision), flag_key, Arc::clone(&flag));
        Ok(FlagLookup::Hit { flag, revision })
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
        // A fill whose `__meta` is one this cache remembers decoding (the same revision in the
        // same millisecond) would be taken for that one by later reads: a later millisecond
        // tells them apart. Only fills of one revision with other contents can meet this.
        let mut cached_at_ms = now_ms();
        while self.remembers_meta(env, &meta_text(snapshot.revision().get(), cached_at_ms)?) {
            cached_at_ms += 1;
        }
        let encoded = encode(&snapshot, cached_at_ms)?;
        // Refused before anything is sent: a huge write would hold up every other call on the
        // shared connection.
        let size = encoded.meta.len() + encoded.pairs.iter().map(String::len).sum::<usize>();
        let limit = self.shared.max_snapshot_bytes;
        if size > limit {
            return Err(CacheError::TooLarge { size, limit });
        }
        let key = self.key(env);
        let revision = snapshot.revision().get().to_string();
        let ttl_ms = whole_ms(ttl);
        let script = &self.shared.scripts.set;
        let stored: i64 = self
            .call(|mut link| async move {
                script
                    .key(&key)
                    .arg(&revision)
                    .arg(ttl_ms)
                    .arg(&encoded.meta)
                    .arg(&encoded.pairs)
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
        let script = &self.shared.scripts.invalidate;
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

    async fn ping(&self) -> Result<(), CacheError> {
        self.client.ping().await.map_err(CacheError::from)
    }

    /// `EXISTS` on the environment's hash: a snapshot or a tombstone, whichever instance left it.
    async fn holds_environment(&self, env: &Environment) -> Result<bool, CacheError> {
        let key = self.key(env);
        let exists: i64 =
            self.call(|mut link| async move {
                redis::cmd("EXISTS").arg(&key).query_async(&mut link).await
            })
            .await?;
        Ok(exists > 0)
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
}
