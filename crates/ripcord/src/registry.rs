//! One breaker (or pipeline) per key: per endpoint, per host, per tenant.
//!
//! A [`Registry`] creates members lazily from one template the first time a key
//! is used, so one failing endpoint trips only its own breaker. It is bounded:
//! past `max_keys` it evicts idle members first, then the least recently used,
//! but **never a breaker that is open** (evicting it would silently drop the
//! protection). It can cap the share of breakers open at once (rounded down,
//! but always at least one): past the cap a breaker that should trip stays
//! closed and reports [`TripSuppressed`](crate::EventKind::TripSuppressed) —
//! the registry fails open rather than letting its own breakers cut off every
//! key.
//!
//! ```
//! use ripcord::{CircuitBreaker, Registry};
//! use std::time::Duration;
//!
//! let registry: Registry<String> = Registry::builder(
//!     CircuitBreaker::builder("template").consecutive_failures(5),
//! )
//! .max_keys(10_000)
//! .idle_timeout(Duration::from_secs(600))
//! .max_open_share(0.5)
//! .build()?;
//!
//! let orders = registry.get(&"api.example.com/orders".to_string())?;
//! assert_eq!(orders.name(), "api.example.com/orders");
//! let again = registry.get(&"api.example.com/orders".to_string())?;
//! assert!(orders.same_as(&again));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::circuit_breaker::gate::OpenGate;
use crate::circuit_breaker::nanos;
use crate::clock::ClockHandle;
use crate::{CircuitBreaker, CircuitBreakerBuilder, Clock, ConfigError};

/// What a registry needs to know about its members.
pub trait Member: Clone + Send + Sync + 'static {
    /// Whether the member must not be evicted now (an open breaker).
    fn is_pinned(&self) -> bool;
}

impl Member for CircuitBreaker {
    fn is_pinned(&self) -> bool {
        self.state().is_open()
    }
}

/// A registry could not hand out a member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Every one of the `max_keys` members is pinned (open), so none could be
    /// evicted to make room for a new key.
    #[error("registry is full: all {max_keys} members are open and cannot be evicted")]
    Full {
        /// The configured bound.
        max_keys: usize,
    },
    /// The template or factory refused to build a member for this key.
    #[error("cannot build a member for this key")]
    Build(#[source] ConfigError),
}

type Factory<K, V> = Arc<dyn Fn(&K) -> Result<V, ConfigError> + Send + Sync>;
type GatedFactory<K, V> = fn(CircuitBreakerBuilder, Arc<OpenGate>) -> Factory<K, V>;

fn gated_breakers<K: fmt::Display>(
    template: CircuitBreakerBuilder,
    gate: Arc<OpenGate>,
) -> Factory<K, CircuitBreaker> {
    Arc::new(move |k: &K| {
        let mut b = template.clone().name(&k.to_string());
        b.open_gate = Some(gate.clone());
        b.build()
    })
}

const SHARDS: usize = 16;
/// `last_used` is refreshed at most this often, so busy keys do not write a
/// shared line on every lookup.
const TOUCH_EVERY: u64 = 100_000_000;

struct Slot<V> {
    value: V,
    last_used: AtomicU64,
}

type Shard<K, V> = RwLock<HashMap<K, Slot<V>, KeyHash>>;

/// The registry's hash of a key: a folded 64×64→128-bit multiply per word,
/// keyed by two random seeds per registry (so that which keys collide
/// cannot be known in advance). A lookup hashes its key twice (for the
/// shard and in the shard's map), which with SipHash cost more than the
/// rest of the lookup.
#[derive(Clone, Copy)]
struct KeyHash {
    seed: u64,
    mul: u64,
}

impl KeyHash {
    fn random() -> Self {
        // The standard library's `RandomState` is seeded from the OS.
        let mut rng = crate::random::SplitMix64::new(RandomState::new().hash_one(0x5EED_u64));
        KeyHash {
            seed: rng.next_u64(),
            // Odd, with both halves busy, so that the multiply mixes.
            mul: rng.next_u64() | (1 << 63) | 1,
        }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            acc: self.seed,
            mul: self.mul,
        }
    }
}

struct KeyHasher {
    acc: u64,
    mul: u64,
}

/// The shard of a key's hash: bits the shard's map uses neither for its
/// buckets (the low ones) nor for its control bytes (the top seven).
#[inline(always)]
fn shard_of(hash: u64) -> usize {
    ((hash >> 32) as usize) % SHARDS
}

/// The high and low halves of the 128-bit product, folded together.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl KeyHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.acc = fold(self.acc ^ word, self.mul);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(w);
            self.mix(u64::from_le_bytes(buf));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            // The length tells `ab` from `ab\0`.
            self.mix(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.acc, self.mul.rotate_left(32) | 1)
    }
}

struct Shared<K, V> {
    shards: Box<[Shard<K, V>]>,
    hash: KeyHash,
    factory: Factory<K, V>,
    max_keys: usize,
    idle_nanos: u64,
    clock: ClockHandle,
    gate: Option<Arc<OpenGate>>,
    len: AtomicU64,
}

/// Members per key, created lazily from one template. Cheap to clone: clones
/// share the members.
pub struct Registry<K, V = CircuitBreaker> {
    shared: Arc<Shared<K, V>>,
}

impl<K, V> Clone for Registry<K, V> {
    fn clone(&self) -> Self {
        Registry {
            shared: self.shared.clone(),
        }
    }
}

/// Configures a [`Registry`].
#[must_use = "a builder does nothing until build() is called"]
pub struct RegistryBuilder<K, V> {
    factory: Factory<K, V>,
    /// For breaker registries: the template, to validate it and to build
    /// breakers that share the open cap.
    template: Option<(CircuitBreakerBuilder, GatedFactory<K, V>)>,
    max_keys: usize,
    idle_timeout: Duration,
    max_open_share: Option<f64>,
    clock: ClockHandle,
}

impl<K, V> fmt::Debug for RegistryBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_open_share", &self.max_open_share)
            .finish_non_exhaustive()
    }
}

impl<K> Registry<K, CircuitBreaker>
where
    K: Eq + Hash + Clone + fmt::Display + Send + Sync + 'static,
{
    /// A registry of breakers built from `template`, each named after its key
    /// (its `Display` form). Idle tracking uses the template's clock.
    pub fn builder(template: CircuitBreakerBuilder) -> RegistryBuilder<K, CircuitBreaker> {
        let clock = template.clock.clone();
        let t = template.clone();
        RegistryBuilder {
            factory: Arc::new(move |k: &K| t.clone().name(&k.to_string()).build()),
            template: Some((template, gated_breakers::<K>)),
            max_keys: 10_000,
            idle_timeout: Duration::from_secs(600),
            max_open_share: None,
            clock,
        }
    }
}

impl<K, V> Registry<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Member,
{
    /// A registry of any members (e.g. pipelines) made by `factory`.
    pub fn with_factory(
        factory: impl Fn(&K) -> Result<V, ConfigError> + Send + Sync + 'static,
    ) -> RegistryBuilder<K, V> {
        RegistryBuilder {
            factory: Arc::new(factory),
            template: None,
            max_keys: 10_000,
            idle_timeout: Duration::from_secs(600),
            max_open_share: None,
            clock: ClockHandle::default(),
        }
    }

    #[inline]
    fn shard(&self, key: &K) -> &Shard<K, V> {
        &self.shared.shards[shard_of(self.shared.hash.hash_one(key))]
    }

    /// The member for `key`, created on first use.
    pub fn get(&self, key: &K) -> Result<V, RegistryError> {
        let now = self.shared.clock.now_nanos();
        {
            let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = shard.get(key) {
                touch(slot, now);
                return Ok(slot.value.clone());
            }
        }
        let value = (self.shared.factory)(key).map_err(RegistryError::Build)?;
        self.reserve()?;
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        match shard.entry(key.clone()) {
            MapEntry::Occupied(o) => {
                // Another caller inserted this key meanwhile: its reservation
                // holds the place, ours goes back.
                self.shared.len.fetch_sub(1, Ordering::AcqRel);
                touch(o.get(), now);
                Ok(o.get().value.clone())
            }
            MapEntry::Vacant(v) => {
                v.insert(Slot {
                    value: value.clone(),
                    last_used: AtomicU64::new(now),
                });
                Ok(value)
            }
        }
    }

    /// Takes one of the `max_keys` places for a new member, evicting to make
    /// room when all are taken. `len` counts members and places reserved by
    /// callers about to insert, and only this compare-exchange raises it, so
    /// callers that race with new keys never exceed the bound together.
    fn reserve(&self) -> Result<(), RegistryError> {
        let max = self.shared.max_keys as u64;
        loop {
            let reserved = self
                .shared
                .len
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
            if reserved.is_ok() {
                return Ok(());
            }
            match self.make_room() {
                Room::Made => {}
                // The places are held by callers still inserting: once they
                // have, their members can be evicted.
                Room::InFlight => std::thread::yield_now(),
                Room::Full => {
                    return Err(RegistryError::Full {
                        max_keys: self.shared.max_keys,
                    })
                }
            }
        }
    }

    /// The member for `key`, if it exists (does not create it).
    pub fn peek(&self, key: &K) -> Option<V> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard.get(key).map(|s| s.value.clone())
    }

    /// Removes `key`'s member, even if it is pinned. Returns it.
    pub fn remove(&self, key: &K) -> Option<V> {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        let removed = shard.remove(key).map(|s| s.value);
        if removed.is_some() {
            self.shared.len.fetch_sub(1, Ordering::AcqRel);
        }
        removed
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Acquire) as usize
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every key and member.
    pub fn entries(&self) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shared.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            out.extend(shard.iter().map(|(k, s)| (k.clone(), s.value.clone())));
        }
        out
    }

    /// Evicts every unpinned member unused for longer than the idle timeout.
    /// Returns how many were evicted. Runs by itself when the registry is full;
    /// call it on a timer to reclaim memory sooner.
    pub fn evict_idle(&self) -> usize {
        let now = self.shared.clock.now_nanos();
        let mut evicted = 0;
        for shard in self.shared.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|e| e.into_inner());
            let before = shard.len();
            shard.retain(|_, s| {
                s.value.is_pinned()
                    || now.saturating_sub(s.last_used.load(Ordering::Relaxed))
                        < self.shared.idle_nanos
            });
            evicted += before - shard.len();
        }
        self.shared.len.fetch_sub(evicted as u64, Ordering::AcqRel);
        evicted
    }

    /// Breakers of this registry currently holding a slot of the open cap
    /// (`None` without a cap).
    pub fn open_count(&self) -> Option<usize> {
        self.shared.gate.as_ref().map(|g| g.open_count())
    }

    fn make_room(&self) -> Room {
        if self.evict_idle() > 0 {
            return Room::Made;
        }
        // Evict the least recently used unpinned member.
        let mut oldest: Option<(usize, K, u64)> = None;
        let mut pinned = 0;
        for (i, shard) in self.shared.shards.iter().enumerate() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for (k, s) in shard.iter() {
                if s.value.is_pinned() {
                    pinned += 1;
                    continue;
                }
                let used = s.last_used.load(Ordering::Relaxed);
                if oldest.as_ref().is_none_or(|(_, _, u)| used < *u) {
                    oldest = Some((i, k.clone(), used));
                }
            }
        }
        match oldest {
            Some((i, k, _)) => {
                let mut shard = self.shared.shards[i]
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                if shard.remove(&k).is_some() {
                    self.shared.len.fetch_sub(1, Ordering::AcqRel);
                }
                Room::Made
            }
            None if pinned >= self.shared.max_keys => Room::Full,
            None => Room::InFlight,
        }
    }
}

/// What [`Registry::make_room`] found.
enum Room {
    /// A member was evicted (or another caller freed a place).
    Made,
    /// Nothing to evict yet: some places are reserved by callers that have
    /// not inserted their member.
    InFlight,
    /// Every member is pinned.
    Full,
}

fn touch<V>(slot: &Slot<V>, now: u64) {
    if now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) >= TOUCH_EVERY {
        slot.last_used.store(now, Ordering::Relaxed);
    }
}

impl<K, V> RegistryBuilder<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Member,
{
    /// At most this many members (default 10 000), also while new keys
    /// arrive at once.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// Members unused for this long may be evicted (default 10 minutes); open
    /// breakers never are.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// At most this share (0 < share ≤ 1) of the breakers may be open at once;
    /// past it, breakers that should trip stay closed and report
    /// `TripSuppressed`. The cap is the share of the current members rounded
    /// down, but never less than one open breaker: with one key and a share
    /// of 0.5 that key can still trip. Only for registries of breakers built
    /// from a template.
    pub fn max_open_share(mut self, share: f64) -> Self {
        self.max_open_share = Some(share);
        self
    }

    /// The clock for idle tracking (default: the template's clock, or the
    /// system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    /// Checks the configuration and builds the registry.
    pub fn build(self) -> Result<Registry<K, V>, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", 0, "at least 1 key"));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "idle_timeout",
                self.idle_timeout,
                "an idle timeout greater than zero",
            ));
        }
        let mut factory = self.factory;
        let mut gate = None;
        if let Some(share) = self.max_open_share {
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                return Err(ConfigError::new(
                    "max_open_share",
                    share,
                    "a share in (0, 1]",
                ));
            }
            let Some((template, gated)) = self.template else {
                return Err(ConfigError::new(
                    "max_open_share",
                    share,
                    "no cap: a cap needs a registry of breakers built from a template",
                ));
            };
            // Validate the template once, now, rather than on first use.
            template.clone().build()?;
            let g = Arc::new(OpenGate::new(share));
            gate = Some(g.clone());
            factory = gated(template, g);
        } else if let Some((template, _)) = &self.template {
            template.clone().build()?;
        }
        let hash = KeyHash::random();
        Ok(Registry {
            shared: Arc::new(Shared {
                shards: (0..SHARDS)
                    .map(|_| RwLock::new(HashMap::with_hasher(hash)))
                    .collect(),
                hash,
                factory,
                max_keys: self.max_keys,
                idle_nanos: nanos(self.idle_timeout),
                clock: self.clock,
                gate,
                len: AtomicU64::new(0),
            }),
        })
    }
}

impl<K, V> fmt::Debug for Registry<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.shared.len.load(Ordering::Relaxed))
            .field("max_keys", &self.shared.max_keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::{shard_of, KeyHash, SHARDS};

    #[test]
    fn the_key_hash_tells_keys_apart_and_spreads_them_over_shards() {
        let h = KeyHash::random();
        let keys: Vec<String> = (0..2000)
            .map(|i| format!("http://10.0.{}.{}:80", i / 256, i % 256))
            .collect();
        let hashes: HashSet<u64> = keys.iter().map(|k| h.hash_one(k)).collect();
        assert_eq!(hashes.len(), keys.len());
        // Trailing zero bytes and lengths count.
        assert_ne!(h.hash_one(&b"ab"[..]), h.hash_one(&b"ab\0"[..]));
        assert_ne!(h.hash_one("ab"), h.hash_one("ab\0"));
        assert_ne!(h.hash_one(0u64), h.hash_one(1u64));
        // Every shard gets a share, none much more than its own.
        let mut per_shard = [0u32; SHARDS];
        for k in &keys {
            per_shard[shard_of(h.hash_one(k))] += 1;
        }
        let fair = keys.len() as u32 / SHARDS as u32;
        assert!(
            per_shard.iter().all(|&n| n > fair / 2 && n < fair * 2),
            "{per_shard:?}"
        );
        // Two registries hash differently.
        let other = KeyHash::random();
        assert_ne!(h.hash_one("key"), other.hash_one("key"));
    }
}
