//! The [`BudgetStore`] shared by every replica through Redis. Each check-and-
//! take is one Lua script, so concurrent callers in different processes never
//! both take the last unit; times come from Redis's clock (`TIME`), so hosts
//! with skewed clocks agree.
//!
//! Keys (under a prefix, `ec:` in production): `b:<scope>` a hash with the
//! budget (`minute`, `used`, `level`, `at`) and the hold (`held`, ms);
//! `m:<scope>` remembered facts as `<expiry ms> <value>`; `n:<scope>` the last
//! Kraken nonce and `l:<scope>` the per-key lock (a random token, with a TTL
//! so a crashed holder cannot block the key for ever). Every key expires.
//!
//! Unreachable Redis: [`redis::aio::ConnectionManager`] is created lazily
//! (startup never waits), connects with a short timeout, and every operation
//! is bounded by [`OP_TIMEOUT`]; failures are [`StoreError`]s.

use super::{Admission, BudgetStore, KeyId, Limit, Refusal, StoreError};
use crate::exchange::kraken::{NonceError, NonceLease, NonceSource};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Longest any single store operation may take, reconnecting included.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a Kraken key stays locked if its holder never releases it: longer
/// than any request (10 s timeout) so nonces cannot arrive out of order.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// How often a waiting caller retries a locked key.
const LOCK_POLL: Duration = Duration::from_millis(20);
/// A last nonce is kept this long after its key's last use; after that the
/// clock alone is ahead of it.
const NONCE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
const STORE: &str = "redis";

static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local held = tonumber(redis.call('HGET', key, 'held') or '0')
if held > now then return {0, held - now, 1} end
local kind, cost = ARGV[1], tonumber(ARGV[2])
if kind == 'none' then return {1, 0, 0} end
if kind == 'minute' then
  local limit = tonumber(ARGV[3])
  local minute = math.floor(now / 60000)
  local used = 0
  if tonumber(redis.call('HGET', key, 'minute') or '-1') == minute then
    used = tonumber(redis.call('HGET', key, 'used') or '0')
  end
  if used + cost > limit then return {0, (minute + 1) * 60000 - now, 2} end
  redis.call('HSET', key, 'minute', string.format('%d', minute), 'used', string.format('%d', used + cost))
  redis.call('PEXPIRE', key, 120000)
  return {1, 0, 0}
end
local max, decay, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4]) / 1000, tonumber(ARGV[5])
local level = tonumber(redis.call('HGET', key, 'level') or '0')
local at = tonumber(redis.call('HGET', key, 'at') or tostring(now))
level = math.max(0, level - math.max(0, now - at) * decay)
local wait = 0
if level + cost > max then wait = math.ceil((level + cost - max) / decay) end
if wait > max_wait then return {0, wait, 2} end
level = level + cost
redis.call('HSET', key, 'level', string.format('%.6f', level), 'at', string.format('%d', now))
redis.call('PEXPIRE', key, math.ceil(level / decay) + 1000)
return {1, wait, 0}
",
    )
});

static OBSERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now / 60000)
local used = tonumber(ARGV[1])
if tonumber(redis.call('HGET', KEYS[1], 'minute') or '-1') == minute then
  used = math.max(used, tonumber(redis.call('HGET', KEYS[1], 'used') or '0'))
end
redis.call('HSET', KEYS[1], 'minute', string.format('%d', minute), 'used', string.format('%d', used))
if redis.call('PTTL', KEYS[1]) < 120000 then redis.call('PEXPIRE', KEYS[1], 120000) end
return 1
",
    )
});

static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = tonumber(ARGV[1])
local held = math.max(tonumber(redis.call('HGET', KEYS[1], 'held') or '0'), now + wait)
redis.call('HSET', KEYS[1], 'held', string.format('%d', held))
if redis.call('PTTL', KEYS[1]) < held - now + 1000 then redis.call('PEXPIRE', KEYS[1], held - now + 1000) end
return 1
",
    )
});

static REMEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + ttl) .. ' ' .. ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
",
    )
});

static RECALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, field in ipairs(ARGV) do
  local v = redis.call('HGET', KEYS[1], field)
  out[i] = ''
  if v then
    local sp = string.find(v, ' ', 1, true)
    if sp and tonumber(string.sub(v, 1, sp - 1)) > now then out[i] = '+' .. string.sub(v, sp + 1) end
  end
end
return out
",
    )
});

/// Takes the key's lock if free and, with it, the next nonce:
/// max(now in µs, last + 1). Returns -1 while another holder has the lock.
static LOCK_AND_NONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nonce = math.max(now, tonumber(redis.call('GET', KEYS[2]) or '0') + 1)
redis.call('SET', KEYS[2], string.format('%d', nonce), 'PX', ARGV[3])
return nonce
",
    )
});

static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Budgets and nonces in Redis. Cheap to clone (one multiplexed connection).
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    lock_ttl: Duration,
}

impl RedisStore {
    /// Prepares a connection to `url` without connecting. `prefix` starts
    /// every key (tests use a unique one).
    pub fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        // The URL may hold a password: errors name its kind, never the URL.
        let client =
            redis::Client::open(url).map_err(|e| unavailable(format!("REDIS_URL is not usable ({:?})", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| unavailable(format!("cannot prepare the connection ({:?})", e.kind())))?;
        Ok(Self {
            connection,
            prefix: prefix.into(),
            lock_ttl: DEFAULT_LOCK_TTL,
        })
    }

    /// How long a Kraken key lock lives if never released (tests shorten it).
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    fn key(&self, kind: &str, scope: &str) -> String {
        format!("{}{kind}:{scope}", self.prefix)
    }

    /// Runs one operation within [`OP_TIMEOUT`].
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::warn!(operation = what, kind = ?e.kind(), "redis budget store failed");
                Err(unavailable(format!("{what} failed ({:?})", e.kind())))
            }
            Err(_) => {
                tracing::warn!(operation = what, "redis budget store timed out");
                Err(unavailable(format!(
                    "{what} timed out after {} ms",
                    OP_TIMEOUT.as_millis()
                )))
            }
        }
    }
}

fn unavailable(reason: String) -> StoreError {
    StoreError { store: STORE, reason }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait::async_trait]
impl BudgetStore for RedisStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    async fn take(&self, scope: &str, limit: Limit, cost: u32, max_wait: Duration) -> Result<Admission, StoreError> {
        let mut invocation = TAKE.key(self.key("b", scope));
        match limit {
            Limit::None => invocation.arg("none").arg(cost),
            Limit::PerMinute { limit } => invocation.arg("minute").arg(cost).arg(limit),
            Limit::Decaying { max, decay_per_sec } => invocation
                .arg("decay")
                .arg(cost)
                .arg(max)
                .arg(decay_per_sec)
                .arg(u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX)),
        };
        let mut connection = self.connection.clone();
        let (ok, wait_ms, why): (i64, i64, i64) = self.run("take", invocation.invoke_async(&mut connection)).await?;
        let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
        Ok(if ok == 1 {
            Admission::Go { after: wait }
        } else {
            Admission::Refused {
                wait,
                why: if why == 1 { Refusal::Held } else { Refusal::Spent },
            }
        })
    }

    async fn observe_used(&self, scope: &str, used: u32) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = OBSERVE.key(self.key("b", scope));
        invocation.arg(used);
        let _: i64 = self.run("observe", invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }

    async fn hold(&self, scope: &str, wait: Duration) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = HOLD.key(self.key("b", scope));
        invocation.arg(millis(wait));
        let _: i64 = self.run("hold", invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }

    async fn remember(&self, scope: &str, field: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = REMEMBER.key(self.key("m", scope));
        invocation.arg(field).arg(value).arg(millis(ttl));
        let _: i64 = self.run("remember", invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }

    async fn recall(&self, scope: &str, fields: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = RECALL.key(self.key("m", scope));
        for field in fields {
            invocation.arg(*field);
        }
        let values: Vec<String> = self.run("recall", invocation.invoke_async(&mut connection)).await?;
        // '' is absent; '+value' present (so an empty value stays distinct).
        Ok(values
            .into_iter()
            .map(|v| v.strip_prefix('+').map(str::to_owned))
            .collect())
    }

    async fn forget(&self, scope: &str) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: i64 = self.run("forget", connection.del(self.key("m", scope))).await?;
        Ok(())
    }

    fn nonces(&self) -> Arc<dyn NonceSource> {
        Arc::new(self.clone())
    }
}

/// Kraken nonces: a Redis lock per key (serializing the calls of every
/// replica) and, taken with it atomically, a nonce above the last one issued.
#[async_trait::async_trait]
impl NonceSource for RedisStore {
    async fn acquire(&self, key: &KeyId) -> Result<NonceLease, NonceError> {
        let scope = format!("kraken:{}", key.short_hex());
        let (lock_key, nonce_key) = (self.key("l", &scope), self.key("n", &scope));
        let token = hex::encode(rand::random::<[u8; 16]>());
        loop {
            let mut connection = self.connection.clone();
            let mut invocation = LOCK_AND_NONCE.key(&lock_key);
            invocation
                .key(&nonce_key)
                .arg(&token)
                .arg(millis(self.lock_ttl))
                .arg(NONCE_TTL_MS);
            let nonce: i64 = self
                .run("nonce", invocation.invoke_async(&mut connection))
                .await
                .map_err(|e| NonceError(e.to_string()))?;
            if let Ok(nonce) = u64::try_from(nonce) {
                let release = Release {
                    store: self.clone(),
                    lock_key,
                    token,
                };
                return Ok(NonceLease::new(nonce, release));
            }
            // Held elsewhere; the caller bounds the whole wait.
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

/// Releases a key's lock when a lease is dropped, if this holder still owns it.
struct Release {
    store: RedisStore,
    lock_key: String,
    token: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // The lock's TTL frees the key.
        };
        let (store, lock_key, token) = (
            self.store.clone(),
            std::mem::take(&mut self.lock_key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let mut connection = store.connection.clone();
            let mut invocation = UNLOCK.key(&lock_key);
            invocation.arg(&token);
            let _ = store
                .run("unlock", invocation.invoke_async::<i64>(&mut connection))
                .await;
        });
    }
}
