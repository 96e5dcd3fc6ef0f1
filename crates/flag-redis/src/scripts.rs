//! The Lua scripts `RedisCache` runs, so that reading and writing an environment's hash is one
//! atomic step on the server.
//!
//! `set` and `invalidate` compare revisions on the server with one shared prelude (a slow fill
//! can never overwrite a newer revision, and no writer ever retries: no `WATCH`). Revisions are
//! compared as decimal strings, which is exact for every `u64`. Writes go in chunks of 1,000
//! fields to stay under Lua's `unpack` limit (a 10,000-flag environment works).

use redis::Script;

/// Prepends the revision comparison both writing scripts share: `cached` is the revision in the
/// hash's `__meta` (nil when there is none) and `newer(a, b)` compares two decimal revisions.
macro_rules! comparing_revisions {
    ($body:literal) => {
        concat!(
            r#"
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local cached = nil
local meta = redis.call('HGET', KEYS[1], '__meta')
if meta then cached = string.match(meta, '"revision":(%d+)') end
"#,
            $body
        )
    };
}

/// Replaces the environment's hash unless it holds a newer revision. Returns 1 (stored) or 0.
/// `ARGV`: revision, TTL in ms, `__meta`, then field/value pairs.
const SET: &str = comparing_revisions!(
    r#"
if cached and newer(cached, ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__meta', ARGV[3])
for first = 4, #ARGV, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 1999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#
);

/// Drops the environment's flags, leaving a tombstone hash (only `__meta`) that remembers the
/// newer of the given and the cached revision. `ARGV`: revision, tombstone TTL in ms, now in ms.
const INVALIDATE: &str = comparing_revisions!(
    r#"
local revision = ARGV[1]
if cached and newer(cached, revision) then revision = cached end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__meta',
  '{"revision":' .. revision .. ',"cachedAtMs":' .. ARGV[3] .. ',"tombstone":true}')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#
);

/// The whole hash and its remaining time in milliseconds, read at one instant.
const READ_WITH_TTL: &str = r#"
return {redis.call('HGETALL', KEYS[1]), redis.call('PTTL', KEYS[1])}
"#;

/// `__meta` (nil when absent) and the remaining time in milliseconds, read at one instant.
const META_WITH_TTL: &str = r#"
return {redis.call('HGET', KEYS[1], '__meta'), redis.call('PTTL', KEYS[1])}
"#;

/// Every script, loaded once per cache (`EVALSHA`, falling back to `EVAL` after a flush).
pub(crate) struct Scripts {
    pub(crate) set: Script,
    pub(crate) invalidate: Script,
    pub(crate) read_with_ttl: Script,
    pub(crate) meta_with_ttl: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            set: Script::new(SET),
            invalidate: Script::new(INVALIDATE),
            read_with_ttl: Script::new(READ_WITH_TTL),
            meta_with_ttl: Script::new(META_WITH_TTL),
        }
    }
}
