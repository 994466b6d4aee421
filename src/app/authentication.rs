//! Who is calling: API key secrets, and the cache that checks them without a database round
//! trip per request.
//!
//! A secret is `ord_<lookup id>_<secret>`: the prefix makes a leaked key easy to find with
//! grep, the lookup id (64 random bits, hex) finds the key, and the whole secret (256 random
//! bits from the OS, base64url) is checked against its SHA-256 hash in constant time. A slow
//! hash is not needed: it protects guessable passwords, and these secrets are not guessable.
//!
//! Each instance keeps the unrevoked keys in memory and reloads them every few seconds (the
//! interval is a setting: `config::DEFAULT_KEY_REFRESH_INTERVAL`), so a new key works, and a
//! revoked one stops working, on every instance within that time. The cache fails closed: keys
//! read by a reload that began more than [`KEY_MAX_AGE`] ago check nothing (every protected
//! request is a 503 until a reload succeeds), so a revoked key cannot go on working because
//! reloads fail, hang or answer late. Uses are written back at most once a minute per key, by
//! a task of their own, so a write that waits on a lock never holds up the reloads.
//!
//! Each loaded key also holds its rate limit's bucket (see [`super::rate_limit`]): the key's
//! own limit, else the ring's default, else none.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rand::{TryRngCore, rngs::OsRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::rate_limit::{KeyLimiter, RateLimited};
use crate::{
    domain::{ActiveKey, RateLimit, Scope, StoredSecret},
    storage::{self, StoreError},
};

/// The oldest the loaded keys may be and still be trusted: the hard bound on how long a
/// revoked key can keep working on an instance whose reloads fail.
pub const KEY_MAX_AGE: Duration = Duration::from_secs(5);

/// How long one reload, or one write of uses, may take before it is given up.
const KEY_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How often uses are written back; they are kept to the minute.
const USE_RECORD_INTERVAL: Duration = Duration::from_secs(15);

const SECRET_PREFIX: &str = "ord_";
const LOOKUP_ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A new key's secret, as shown once to whoever created it, and what is stored of it.
pub struct IssuedSecret {
    /// The whole secret, to hand to the caller; never stored, never logged.
    pub secret: String,
    pub lookup_id: String,
    pub hash: [u8; 32],
}

impl IssuedSecret {
    /// A fresh secret from the operating system's randomness.
    pub fn generate() -> Self {
        let mut lookup = [0u8; LOOKUP_ID_BYTES];
        let mut random = [0u8; SECRET_BYTES];
        OsRng
            .try_fill_bytes(&mut lookup)
            .and_then(|()| OsRng.try_fill_bytes(&mut random))
            .expect("the operating system provides randomness");
        let lookup_id: String = lookup.iter().map(|byte| format!("{byte:02x}")).collect();
        let secret = format!(
            "{SECRET_PREFIX}{lookup_id}_{}",
            URL_SAFE_NO_PAD.encode(random)
        );
        Self {
            hash: hash_secret(&secret),
            secret,
            lookup_id,
        }
    }

    pub fn stored(&self) -> StoredSecret<'_> {
        StoredSecret {
            lookup_id: &self.lookup_id,
            hash: &self.hash,
        }
    }
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The lookup id of a presented secret, if it has a secret's shape.
fn lookup_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(SECRET_PREFIX)?;
    let (lookup_id, random) = rest.split_at_checked(LOOKUP_ID_BYTES * 2)?;
    let random = random.strip_prefix('_')?;
    let shaped = lookup_id
        .bytes()
        .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        && random.len() == URL_SAFE_NO_PAD.encode([0u8; SECRET_BYTES]).len()
        && random
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    shaped.then_some(lookup_id)
}

/// A caller whose key the cache vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: i64,
    /// The key's name: what the log and `created_by`/`updated_by` show.
    pub name: Arc<str>,
    scopes: Vec<Scope>,
    /// The key's bucket, shared with the cache; none when no limit applies to it.
    limiter: Option<Arc<KeyLimiter>>,
}

impl Caller {
    /// Takes a token from the key's bucket for one request; refused when it is empty.
    pub fn check_rate(&self) -> Result<(), RateLimited> {
        self.limiter
            .as_ref()
            .map_or(Ok(()), |limiter| limiter.check())
    }

    /// The limit that applies to the key, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.limiter.as_ref().map(|limiter| limiter.limit())
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }
}

/// Why a credential was refused. Deliberately coarse: the caller is never told whether a key
/// exists, only that this credential does not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential was sent")]
    Missing,
    #[error("the credential is not a valid API key")]
    Invalid,
    /// The keys could not be loaded yet (the database has been unreachable since start-up),
    /// so no credential can be checked.
    #[error("the API keys could not be loaded lately: the database cannot be reached")]
    KeysUnavailable,
}

struct CachedKey {
    caller: Caller,
    secret_hash: [u8; 32],
    /// The last minute (Unix time / 60) this instance saw the key used, and the last it wrote.
    used_minute: AtomicI64,
    written_minute: AtomicI64,
}

/// The unrevoked keys, by lookup id, and when they were loaded.
struct LoadedKeys {
    by_lookup_id: HashMap<String, Arc<CachedKey>>,
    /// When the reload that read them began: no later than the database read them.
    loaded_at: Instant,
}

/// The cache of unrevoked keys. Cheap to clone: one shared cache.
#[derive(Clone, Default)]
pub struct KeyRing {
    /// `None` until the first load succeeds.
    keys: Arc<RwLock<Option<LoadedKeys>>>,
    /// The limit of keys that have none of their own; none: such keys are not limited.
    default_rate: Option<RateLimit>,
    /// How many times the keys have been loaded, for whoever waits on a reload.
    loads: Arc<AtomicU64>,
}

/// What a missing key's secret is compared with, so that an unknown lookup id costs the same
/// work as a known one.
const NO_SECRET_HASH: [u8; 32] = [0; 32];

impl KeyRing {
    /// An empty cache whose keys without a limit of their own get `default_rate`.
    pub fn with_default_rate(default_rate: Option<RateLimit>) -> Self {
        Self {
            keys: Arc::default(),
            default_rate,
            loads: Arc::default(),
        }
    }

    /// The caller whose secret `presented` is, if it is a current key's.
    pub fn authenticate(&self, presented: &str) -> Result<Caller, AuthError> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys = keys
            .as_ref()
            .filter(|keys| keys.loaded_at.elapsed() <= KEY_MAX_AGE)
            .ok_or(AuthError::KeysUnavailable)?;
        // Only a token of a secret's shape is worth hashing: anything else (an empty one, 16 KiB
        // of noise) is refused for the price of looking at it. The shape is no secret, so
        // refusing it sooner tells a caller nothing.
        let lookup_id = lookup_id(presented).ok_or(AuthError::Invalid)?;
        let presented_hash = hash_secret(presented);
        let key = keys.by_lookup_id.get(lookup_id);
        let stored_hash = key.map_or(&NO_SECRET_HASH, |key| &key.secret_hash);
        let matches: bool = presented_hash.ct_eq(stored_hash).into();
        let key = key.filter(|_| matches).ok_or(AuthError::Invalid)?;
        key.used_minute
            .fetch_max(Utc::now().timestamp() / 60, Ordering::Relaxed);
        Ok(key.caller.clone())
    }

    /// Reloads the keys from the database, keeping what is known of their use.
    pub async fn refresh(&self, pool: &Pool) -> Result<(), StoreError> {
        // The keys are as old as the moment the database read them, which is after this one
        // and may be long before the answer arrives: timed from here, a key revoked just after
        // the read is refused within [`KEY_MAX_AGE`] of its revocation however slow the answer.
        let asked_at = Instant::now();
        let active = storage::api_keys::active(pool).await?;
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = keys
            .take()
            .map(|loaded| loaded.by_lookup_id)
            .unwrap_or_default();
        let fresh = active
            .into_iter()
            .filter_map(|key| {
                let known = previous.get(&key.lookup_id).filter(|known| {
                    known.caller.key_id == key.id && known.secret_hash[..] == key.secret_hash[..]
                });
                let cached = cached_key(key, known.map(Arc::as_ref), self.default_rate)?;
                Some((cached.0, Arc::new(cached.1)))
            })
            .collect();
        *keys = Some(LoadedKeys {
            by_lookup_id: fresh,
            loaded_at: asked_at,
        });
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many times the keys have been loaded so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Writes down the uses seen since the last call, to the minute.
    pub async fn record_uses(&self, pool: &Pool) -> Result<(), StoreError> {
        let pending: Vec<(Arc<CachedKey>, i64)> = {
            let keys = self
                .keys
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            keys.iter()
                .flat_map(|loaded| loaded.by_lookup_id.values())
                .filter_map(|key| {
                    let used = key.used_minute.load(Ordering::Relaxed);
                    (used > key.written_minute.load(Ordering::Relaxed)).then(|| (key.clone(), used))
                })
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        // In id order, as every instance writes them, so that two instances' writes of the
        // same keys cannot deadlock.
        let mut pending = pending;
        pending.sort_by_key(|(key, _)| key.caller.key_id);
        let ids: Vec<i64> = pending.iter().map(|(key, _)| key.caller.key_id).collect();
        let times: Vec<DateTime<Utc>> = pending
            .iter()
            .map(|(_, minute)| DateTime::from_timestamp(minute * 60, 0).unwrap_or_default())
            .collect();
        storage::api_keys::record_use(pool, &ids, &times).await?;
        for (key, minute) in pending {
            key.written_minute.fetch_max(minute, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Keeps the cache current until the returned tasks are aborted: reloads the keys every
    /// `interval`, and writes down their uses every few seconds. A failed reload keeps the
    /// keys last loaded (and says so in the log) for up to [`KEY_MAX_AGE`], so a short
    /// database outage does not lock every caller out, and a long one cannot keep a revoked
    /// key working.
    pub fn spawn_refresher(
        &self,
        pool: Pool,
        interval: Duration,
    ) -> [tokio::task::JoinHandle<()>; 2] {
        let ring = self.clone();
        let reload_pool = pool.clone();
        let reloads = every(interval, move || {
            let (ring, pool) = (ring.clone(), reload_pool.clone());
            async move {
                // Bounded like any request's work: a connection cut off is not used again.
                if let Err(error) =
                    storage::within(&pool, KEY_QUERY_TIMEOUT, ring.refresh(&pool)).await
                {
                    tracing::warn!(
                        error = %crate::telemetry::error_chain(&error),
                        "could not reload the API keys; keeping those loaded before"
                    );
                }
            }
        });
        let ring = self.clone();
        // Every few reloads, and at least every USE_RECORD_INTERVAL.
        let uses = every((interval * 4).min(USE_RECORD_INTERVAL), move || {
            let (ring, pool) = (ring.clone(), pool.clone());
            async move {
                if let Err(error) =
                    storage::within(&pool, KEY_QUERY_TIMEOUT, ring.record_uses(&pool)).await
                {
                    tracing::warn!(
                        error = %crate::telemetry::error_chain(&error),
                        "could not record when API keys were last used"
                    );
                }
            }
        });
        [reloads, uses]
    }
}

/// Runs `work` every `interval` (the first time at once) until the task is aborted; a run
/// that takes longer than the interval delays the next.
fn every<F, Fut>(interval: Duration, mut work: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            work().await;
        }
    })
}

/// A key as the cache holds it, carrying over the use counters of the entry it replaces, and
/// its bucket while its limit (its own, else `default_rate`) stays the same.
fn cached_key(
    key: ActiveKey,
    known: Option<&CachedKey>,
    default_rate: Option<RateLimit>,
) -> Option<(String, CachedKey)> {
    let secret_hash: [u8; 32] = key.secret_hash.as_slice().try_into().ok()?;
    let (used, written) = known.map_or((0, 0), |known| {
        (
            known.used_minute.load(Ordering::Relaxed),
            known.written_minute.load(Ordering::Relaxed),
        )
    });
    let limiter = key.rate.or(default_rate).map(|limit| {
        known
            .and_then(|known| known.caller.limiter.clone())
            .filter(|limiter| limiter.limit() == limit)
            .unwrap_or_else(|| Arc::new(KeyLimiter::new(limit)))
    });
    Some((
        key.lookup_id,
        CachedKey {
            caller: Caller {
                key_id: key.id,
                name: key.name.into(),
                scopes: key.scopes,
                limiter,
            },
            secret_hash,
            used_minute: AtomicI64::new(used),
            written_minute: AtomicI64::new(written),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active_key(secret: &IssuedSecret, scopes: Vec<Scope>, rate: Option<RateLimit>) -> ActiveKey {
        ActiveKey {
            id: 7,
            name: "billing".to_owned(),
            scopes,
            rate,
            lookup_id: secret.lookup_id.clone(),
            secret_hash: secret.hash.to_vec(),
        }
    }

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit::new(
            std::num::NonZeroU32::new(per_second).unwrap(),
            std::num::NonZeroU32::new(burst),
        )
    }

    fn ring_with(secret: &IssuedSecret, scopes: Vec<Scope>) -> KeyRing {
        let ring = KeyRing::default();
        let (lookup_id, cached) = cached_key(active_key(secret, scopes, None), None, None).unwrap();
        *ring.keys.write().unwrap() = Some(LoadedKeys {
            by_lookup_id: HashMap::from([(lookup_id, Arc::new(cached))]),
            loaded_at: Instant::now(),
        });
        ring
    }

    #[test]
    fn a_secret_is_prefixed_random_and_stored_only_as_its_hash() {
        let first = IssuedSecret::generate();
        let second = IssuedSecret::generate();
        assert!(first.secret.starts_with("ord_"), "{}", first.secret);
        assert_ne!(first.secret, second.secret);
        assert_ne!(first.lookup_id, second.lookup_id);
        assert_eq!(lookup_id(&first.secret), Some(first.lookup_id.as_str()));
        assert_eq!(first.hash, hash_secret(&first.secret));
        // 256 random bits in the secret part, besides the 64 of the lookup id.
        let random = &first.secret[SECRET_PREFIX.len() + LOOKUP_ID_BYTES * 2 + 1..];
        assert_eq!(URL_SAFE_NO_PAD.decode(random).unwrap().len(), 32);
    }

    #[test]
    fn only_a_token_of_a_secret_s_shape_is_looked_up() {
        let secret = IssuedSecret::generate().secret;
        assert!(lookup_id(&secret).is_some());
        let random_at = SECRET_PREFIX.len() + LOOKUP_ID_BYTES * 2 + 1;
        for (at, byte) in [
            (random_at, "+"),
            (random_at, "="),
            (4, "G"),
            (secret.len() - 1, " "),
        ] {
            let mut misshapen = secret.clone();
            misshapen.replace_range(at..at + 1, byte);
            assert_eq!(lookup_id(&misshapen), None, "{misshapen}");
        }
        assert_eq!(lookup_id(&format!("{secret}x")), None, "too long");
        assert_eq!(lookup_id(&"ord_".repeat(4096)), None);
    }

    #[test]
    fn only_the_whole_secret_of_a_loaded_key_authenticates() {
        let secret = IssuedSecret::generate();
        let ring = ring_with(&secret, vec![Scope::OrdersRead]);

        let caller = ring.authenticate(&secret.secret).unwrap();
        assert_eq!(&*caller.name, "billing");
        assert!(caller.may(Scope::OrdersRead));
        assert!(!caller.may(Scope::OrdersWrite));

        let mut tampered = secret.secret.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        for wrong in [
            tampered.as_str(),
            &secret.secret[..secret.secret.len() - 1],
            &IssuedSecret::generate().secret,
            "ord_",
            "",
            "Bearer x",
        ] {
            assert_eq!(ring.authenticate(wrong), Err(AuthError::Invalid), "{wrong}");
        }
    }

    #[test]
    fn keys_loaded_too_long_ago_check_nothing() {
        let secret = IssuedSecret::generate();
        let ring = ring_with(&secret, vec![Scope::OrdersRead]);
        assert!(ring.authenticate(&secret.secret).is_ok());

        let stale = Instant::now() - KEY_MAX_AGE - Duration::from_millis(1);
        ring.keys.write().unwrap().as_mut().unwrap().loaded_at = stale;

        assert_eq!(
            ring.authenticate(&secret.secret),
            Err(AuthError::KeysUnavailable)
        );
    }

    #[test]
    fn before_the_first_load_no_credential_can_be_checked() {
        let ring = KeyRing::default();
        assert_eq!(
            ring.authenticate(&IssuedSecret::generate().secret),
            Err(AuthError::KeysUnavailable)
        );
    }

    #[test]
    fn a_key_s_own_limit_wins_over_the_default_and_no_limit_is_none() {
        let secret = IssuedSecret::generate();
        let cached = |own, default| {
            let key = active_key(&secret, vec![Scope::OrdersRead], own);
            cached_key(key, None, default)
                .unwrap()
                .1
                .caller
                .rate_limit()
        };
        assert_eq!(cached(None, None), None);
        assert_eq!(cached(None, Some(limit(5, 5))), Some(limit(5, 5)));
        assert_eq!(
            cached(Some(limit(1, 2)), Some(limit(5, 5))),
            Some(limit(1, 2))
        );
    }

    #[test]
    fn a_reload_keeps_a_key_s_bucket_unless_its_limit_changed() {
        let secret = IssuedSecret::generate();
        let key = |rate| active_key(&secret, vec![Scope::OrdersRead], Some(rate));
        let (_, first) = cached_key(key(limit(1, 2)), None, None).unwrap();
        first.caller.check_rate().unwrap();
        first.caller.check_rate().unwrap();
        assert!(first.caller.check_rate().is_err(), "the burst is used up");

        let (_, reloaded) = cached_key(key(limit(1, 2)), Some(&first), None).unwrap();
        assert!(
            reloaded.caller.check_rate().is_err(),
            "a reload does not refill the bucket"
        );

        let (_, changed) = cached_key(key(limit(1, 3)), Some(&reloaded), None).unwrap();
        assert_eq!(changed.caller.rate_limit(), Some(limit(1, 3)));
        assert_eq!(
            changed.caller.check_rate(),
            Ok(()),
            "a new limit starts with a full bucket"
        );
    }
}
