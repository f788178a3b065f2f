//! `SessionCache`: the server-side TLS session store shared by every worker thread.
//!
//! What it is: an implementation of rustls's [`StoresServerSessions`] that serves TLS 1.2
//! session IDs (RFC 5246 §7.4.1.2, looked up with `get`) and TLS 1.3 stateful resumption
//! (RFC 8446 §4.6.1 / §2.2, single use: rustls calls `take`, which must delete reliably).
//! It is sharded by a keyed hash of the session key (`shards` power of two, 32 by default); each
//! shard is one `Mutex` over a slab of entries threaded on two intrusive lists: recency (LRU)
//! and age (insertion order, i.e. expiry order, since every entry has the same lifetime).
//! It is bounded by entries and by bytes (key + value). When a put needs room, expired entries
//! are evicted first (oldest insertion), then the least-recently-used. An expired entry is never
//! returned.
//!
//! What it is not: persistent, or shared across processes. Its clock is a rustls
//! [`TimeProvider`] (seconds resolution): the worker may pass a [`ManualClock`] that it advances
//! with its own `now`, and tests do, so nothing here depends on wall time unless asked to.
//!
//! Counters are per shard, written under the shard lock (plain relaxed load+store, no lock
//! prefix) and read without locks by [`SessionCache::stats`].

use std::fmt;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;
use zeroize::{Zeroize, Zeroizing};

/// Sizes and lifetime of a [`SessionCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCacheConfig {
    /// Maximum live entries over all shards (each shard gets `ceil(entries / shards)`).
    pub max_entries: usize,
    /// Maximum bytes (key + value) over all shards (each shard gets `ceil(bytes / shards)`).
    pub max_bytes: usize,
    /// Seconds an entry stays usable after its insertion.
    pub lifetime_secs: u64,
    /// Number of shards; rounded up to a power of two, at least 1.
    pub shards: usize,
}

impl Default for SessionCacheConfig {
    fn default() -> Self {
        Self { max_entries: 100_000, max_bytes: 64 << 20, lifetime_secs: 7200, shards: 32 }
    }
}

/// A clock for the cache that the caller sets: seconds since the Unix epoch, stored atomically.
/// Workers advance it with their `now`; tests move it by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `secs`.
    pub fn new(secs: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(secs)))
    }
    /// Set the time (seconds since the Unix epoch).
    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::Relaxed);
    }
    /// Move the time forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::Relaxed);
    }
}

impl TimeProvider for ManualClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(self.0.load(Ordering::Relaxed))))
    }
}

/// A snapshot of the cache's counters (sums over shards).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get`/`take` that found a live entry.
    pub hits: u64,
    /// `get`/`take` that found nothing (or only an expired entry).
    pub misses: u64,
    /// Successful `put`s (including overwrites).
    pub inserts: u64,
    /// `put`s refused (value larger than a shard's byte budget).
    pub rejected: u64,
    /// Entries evicted because the shard was full by count.
    pub evicted_capacity: u64,
    /// Entries evicted because the shard was full by bytes.
    pub evicted_bytes: u64,
    /// Entries dropped because their lifetime had passed.
    pub evicted_expired: u64,
    /// Live entries now.
    pub entries: u64,
    /// Bytes (key + value) held now.
    pub bytes: u64,
    /// Sessions found but made under another TLS policy (before a reload that changed it, or,
    /// with shared ticket key files, on a host serving another policy): not resumed, a full
    /// handshake instead.
    pub policy_mismatch: u64,
}

const NIL: u32 = u32::MAX;

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    rejected: AtomicU64,
    evicted_capacity: AtomicU64,
    evicted_bytes: AtomicU64,
    evicted_expired: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// Increment a counter that only the shard-lock holder writes: no locked RMW needed.
#[inline]
fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}
#[inline]
fn set(c: &AtomicU64, v: u64) {
    c.store(v, Ordering::Relaxed);
}

#[derive(Clone, Copy)]
enum Why {
    Capacity,
    Bytes,
    Expired,
}

struct Entry {
    key: Vec<u8>,
    hash: u64,
    value: Vec<u8>,
    inserted: u64,
    // Recency list: head = most recently used.
    lru_prev: u32,
    lru_next: u32,
    // Age list: head = oldest insertion.
    age_prev: u32,
    age_next: u32,
}

/// Session secrets do not outlive their entry: key (the session ID) and value (the master
/// secret) are zeroed when the entry is evicted, taken or the cache is dropped.
impl Drop for Entry {
    fn drop(&mut self) {
        self.key.zeroize();
        self.value.zeroize();
    }
}

/// One shard: slab + index + two intrusive lists.
struct Shard {
    /// Slab indices, hashed by their entry's key hash.
    index: HashTable<u32>,
    slab: Vec<Option<Entry>>,
    free: Vec<u32>,
    lru_head: u32,
    lru_tail: u32,
    age_head: u32,
    age_tail: u32,
    bytes: usize,
}

impl Shard {
    fn new() -> Self {
        Self {
            index: HashTable::new(),
            slab: Vec::new(),
            free: Vec::new(),
            lru_head: NIL,
            lru_tail: NIL,
            age_head: NIL,
            age_tail: NIL,
            bytes: 0,
        }
    }

    fn e(&self, i: u32) -> &Entry {
        self.slab[i as usize].as_ref().expect("linked slot is occupied")
    }
    fn e_mut(&mut self, i: u32) -> &mut Entry {
        self.slab[i as usize].as_mut().expect("linked slot is occupied")
    }

    fn lru_unlink(&mut self, i: u32) {
        let (p, n) = {
            let e = self.e(i);
            (e.lru_prev, e.lru_next)
        };
        if p == NIL {
            self.lru_head = n
        } else {
            self.e_mut(p).lru_next = n
        }
        if n == NIL { self.lru_tail = p } else { self.e_mut(n).lru_prev = p }
    }
    fn lru_push_front(&mut self, i: u32) {
        let h = self.lru_head;
        {
            let e = self.e_mut(i);
            e.lru_prev = NIL;
            e.lru_next = h;
        }
        if h == NIL {
            self.lru_tail = i
        } else {
            self.e_mut(h).lru_prev = i
        }
        self.lru_head = i;
    }
    fn age_unlink(&mut self, i: u32) {
        let (p, n) = {
            let e = self.e(i);
            (e.age_prev, e.age_next)
        };
        if p == NIL {
            self.age_head = n
        } else {
            self.e_mut(p).age_next = n
        }
        if n == NIL { self.age_tail = p } else { self.e_mut(n).age_prev = p }
    }
    fn age_push_back(&mut self, i: u32) {
        let t = self.age_tail;
        {
            let e = self.e_mut(i);
            e.age_next = NIL;
            e.age_prev = t;
        }
        if t == NIL {
            self.age_head = i
        } else {
            self.e_mut(t).age_next = i
        }
        self.age_tail = i;
    }

    /// Unlink and free slot `i`, returning its value (zeroed when the caller drops it).
    fn remove_slot(&mut self, i: u32) -> Zeroizing<Vec<u8>> {
        self.lru_unlink(i);
        self.age_unlink(i);
        let mut e = self.slab[i as usize].take().expect("linked slot is occupied");
        if let Ok(found) = self.index.find_entry(e.hash, |&j| j == i) {
            found.remove();
        }
        self.bytes -= e.key.len() + e.value.len();
        self.free.push(i);
        Zeroizing::new(std::mem::take(&mut e.value))
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.index.find(hash, |&j| self.slab[j as usize].as_ref().is_some_and(|e| e.key == key)).copied()
    }

    fn expired(&self, i: u32, now: u64, lifetime: u64) -> bool {
        now.saturating_sub(self.e(i).inserted) >= lifetime
    }
}

#[repr(align(128))]
struct PaddedShard {
    shard: Mutex<Shard>,
    counters: Counters,
}

/// The shared, sharded, bounded session store. See the module doc.
pub struct SessionCache {
    shards: Box<[PaddedShard]>,
    mask: usize,
    seed: u64,
    per_shard_entries: usize,
    per_shard_bytes: usize,
    lifetime: u64,
    clock: Arc<dyn TimeProvider>,
    /// Stateless-ticket keys (`resumption = "tickets"`) with the TLS policy they serve, made on
    /// first use and shared by every `ServerConfig` built with this cache under that policy, so a
    /// ticket issued on one worker (or before a reload that kept the policy) decrypts on any other.
    ticketer: Mutex<Option<(u64, Arc<dyn ProducesTickets>)>>,
    config: SessionCacheConfig,
    policy_mismatch: AtomicU64,
    /// Where new sessions are copied (a fleet's shared store), if anywhere.
    write_behind: Mutex<Option<Arc<dyn WriteBehind>>>,
}

/// A copy of every session rustls stores, for a store beyond this process (a fleet's): called
/// on the worker thread inside rustls's `put`, so it must not block (queue the write and return;
/// a full queue drops it). Sessions fetched from that store ([`SessionCache::insert_fetched`])
/// are not copied back.
pub trait WriteBehind: Send + Sync {
    /// A session `value` was stored under `key`, usable for `lifetime_secs`.
    fn put(&self, key: &[u8], value: &[u8], lifetime_secs: u64);
}

impl fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCache")
            .field("shards", &self.shards.len())
            .field("per_shard_entries", &self.per_shard_entries)
            .field("per_shard_bytes", &self.per_shard_bytes)
            .field("lifetime", &self.lifetime)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SessionCache {
    /// A cache with the given bounds, reading time from `clock`.
    pub fn new(config: SessionCacheConfig, clock: Arc<dyn TimeProvider>) -> Arc<Self> {
        let n = config.shards.max(1).next_power_of_two();
        let shards = (0..n)
            .map(|_| PaddedShard { shard: Mutex::new(Shard::new()), counters: Counters::default() })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Arc::new(Self {
            shards,
            mask: n - 1,
            seed: RandomState::new().hash_one(0x5e55_10c4_u64) | 1,
            per_shard_entries: config.max_entries.div_ceil(n).clamp(1, NIL as usize - 1),
            per_shard_bytes: config.max_bytes.div_ceil(n).max(1),
            lifetime: config.lifetime_secs,
            clock,
            ticketer: Mutex::new(None),
            config,
            policy_mismatch: AtomicU64::new(0),
            write_behind: Mutex::new(None),
        })
    }

    /// Copies every session rustls stores from now on to `to` (`None`: no longer).
    pub fn set_write_behind(&self, to: Option<Arc<dyn WriteBehind>>) {
        *self.write_behind.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    /// Whether a live entry is held under `key` (not counted as a hit or a miss, the entry is
    /// left where it is).
    pub fn contains(&self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        let now = self.now();
        let s = lock(&self.shard(hash).shard);
        s.find(hash, key).is_some_and(|i| !s.expired(i, now, self.lifetime))
    }

    /// Stores a session fetched from a fleet's store (already under its TLS policy, as
    /// [`PolicyStore`] stores them): like rustls's `put`, but not copied back to the store.
    pub fn insert_fetched(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.insert(key, value)
    }

    /// Drops the entry under `key`, if any (a single-use session the fleet's store says was used
    /// elsewhere).
    pub fn remove(&self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        let sh = self.shard(hash);
        let mut s = lock(&sh.shard);
        let Some(i) = s.find(hash, key) else { return false };
        s.remove_slot(i);
        publish(&s, &sh.counters);
        true
    }

    /// The bounds this cache was made with.
    pub fn config(&self) -> SessionCacheConfig {
        self.config
    }

    /// The shared stateless-ticket producer for TLS policy `policy`, created by `make` on the
    /// first call for that policy; later calls with the same policy return the same one. A new
    /// policy replaces it: tickets issued under the old one no longer decrypt (full handshakes).
    pub fn ticketer<E>(
        &self,
        policy: u64,
        make: impl FnOnce() -> Result<Arc<dyn ProducesTickets>, E>,
    ) -> Result<Arc<dyn ProducesTickets>, E> {
        let mut current = self.ticketer.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((p, t)) if *p == policy => Ok(t.clone()),
            _ => {
                let t = make()?;
                *current = Some((policy, t.clone()));
                Ok(t)
            }
        }
    }

    /// Sum of the per-shard counters (lock-free; a consistent snapshot per counter, not across).
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats::default();
        for sh in self.shards.iter() {
            let c = &sh.counters;
            let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.hits += r(&c.hits);
            s.misses += r(&c.misses);
            s.inserts += r(&c.inserts);
            s.rejected += r(&c.rejected);
            s.evicted_capacity += r(&c.evicted_capacity);
            s.evicted_bytes += r(&c.evicted_bytes);
            s.evicted_expired += r(&c.evicted_expired);
            s.entries += r(&c.entries);
            s.bytes += r(&c.bytes);
        }
        s.policy_mismatch = self.policy_mismatch.load(Ordering::Relaxed);
        s
    }

    /// Drop every expired entry (for a periodic sweep by a worker; never required for correctness).
    pub fn purge_expired(&self) {
        let now = self.now();
        for sh in self.shards.iter() {
            let mut s = lock(&sh.shard);
            while s.age_head != NIL && s.expired(s.age_head, now, self.lifetime) {
                let h = s.age_head;
                s.remove_slot(h);
                bump(&sh.counters.evicted_expired, 1);
            }
            publish(&s, &sh.counters);
        }
    }

    /// Seconds since the epoch on the cache's clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.current_time().map_or(0, |t| t.as_secs())
    }

    /// A session (cached, or in a ticket) made under another TLS policy was not resumed.
    pub(crate) fn count_policy_mismatch(&self) {
        self.policy_mismatch.fetch_add(1, Ordering::Relaxed);
    }

    /// A keyed multiply-fold hash. The stored keys are 32 random bytes that rustls chose (a
    /// session ID or a stateful ticket); a client can only look keys up, never choose the ones
    /// stored, so a fast keyed mix is enough: a lookup probes one run of buckets whatever its key.
    fn hash(&self, key: &[u8]) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = self.seed ^ (key.len() as u64).wrapping_mul(K);
        let mut chunks = key.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(29);
        }
        h ^ (h >> 32)
    }

    fn shard(&self, hash: u64) -> &PaddedShard {
        // hashbrown uses the low bits (bucket) and the top 7 (tag); pick the shard in between.
        &self.shards[(hash >> 40) as usize & self.mask]
    }

    /// Look `key` up; on a live entry apply `f` (which may remove it). Expired entries are removed.
    fn lookup<R>(&self, key: &[u8], f: impl FnOnce(&mut Shard, u32) -> R) -> Option<R> {
        let hash = self.hash(key);
        let sh = self.shard(hash);
        let now = self.now();
        let mut s = lock(&sh.shard);
        let Some(i) = s.find(hash, key) else {
            bump(&sh.counters.misses, 1);
            return None;
        };
        if s.expired(i, now, self.lifetime) {
            s.remove_slot(i);
            bump(&sh.counters.evicted_expired, 1);
            bump(&sh.counters.misses, 1);
            publish(&s, &sh.counters);
            return None;
        }
        bump(&sh.counters.hits, 1);
        let r = f(&mut s, i);
        publish(&s, &sh.counters);
        Some(r)
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard lock cannot leave the lists half-linked in a way that matters
    // more than losing the cache; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn publish(s: &Shard, c: &Counters) {
    set(&c.entries, s.index.len() as u64);
    set(&c.bytes, s.bytes as u64);
}

impl StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let to = self.write_behind.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(to) = to {
            to.put(&key, &value, self.lifetime);
        }
        self.insert(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lookup(key, |s, i| {
            s.lru_unlink(i);
            s.lru_push_front(i);
            s.e(i).value.clone()
        })
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        // rustls takes ownership of the value it asked for.
        self.lookup(key, |s, i| std::mem::take(&mut *s.remove_slot(i)))
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl SessionCache {
    /// Stores `value` under `key`, making room as the module doc says.
    fn insert(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        let hash = self.hash(&key);
        let sh = self.shard(hash);
        if size > self.per_shard_bytes {
            bump(&sh.counters.rejected, 1);
            return false;
        }
        let now = self.now();
        let mut s = lock(&sh.shard);
        // An overwrite is a remove then an insert.
        if let Some(i) = s.find(hash, &key) {
            s.remove_slot(i);
        }
        // Make room: expired first (oldest insertion), then least recently used.
        while s.index.len() >= self.per_shard_entries || s.bytes + size > self.per_shard_bytes {
            let why = if s.age_head != NIL && s.expired(s.age_head, now, self.lifetime) {
                Why::Expired
            } else if s.index.len() >= self.per_shard_entries {
                Why::Capacity
            } else {
                Why::Bytes
            };
            let victim = match why {
                Why::Expired => s.age_head,
                _ => s.lru_tail,
            };
            if victim == NIL {
                break;
            }
            s.remove_slot(victim);
            bump(
                match why {
                    Why::Expired => &sh.counters.evicted_expired,
                    Why::Capacity => &sh.counters.evicted_capacity,
                    Why::Bytes => &sh.counters.evicted_bytes,
                },
                1,
            );
        }
        // Opportunistically drop a couple of expired entries so dead sessions do not linger.
        for _ in 0..2 {
            if s.age_head != NIL && s.expired(s.age_head, now, self.lifetime) {
                let h = s.age_head;
                s.remove_slot(h);
                bump(&sh.counters.evicted_expired, 1);
            }
        }
        let entry =
            Entry { key, hash, value, inserted: now, lru_prev: NIL, lru_next: NIL, age_prev: NIL, age_next: NIL };
        let i = match s.free.pop() {
            Some(i) => {
                s.slab[i as usize] = Some(entry);
                i
            }
            None => {
                s.slab.push(Some(entry));
                (s.slab.len() - 1) as u32
            }
        };
        let Shard { index, slab, .. } = &mut *s;
        index.insert_unique(hash, i, |&j| slab[j as usize].as_ref().map_or(0, |e| e.hash));
        s.bytes += size;
        s.lru_push_front(i);
        s.age_push_back(i);
        bump(&sh.counters.inserts, 1);
        publish(&s, &sh.counters);
        true
    }
}

/// The session store of one TLS policy over a [`SessionCache`] kept across reloads: a session is
/// resumed only under the policy it was made under (RFC 8446 4.6.1 and RFC 5246 7.4.1.2 leave
/// that to the server). Each value is stored behind the policy's fingerprint; a session of
/// another policy is not resumed (counted `policy_mismatch`), so a reload that adds client
/// authentication or changes versions, suites, ALPN or certificates cannot be bypassed by
/// resuming an older session.
pub struct PolicyStore {
    cache: Arc<SessionCache>,
    policy: [u8; 8],
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore").field("policy", &u64::from_be_bytes(self.policy)).finish()
    }
}

impl PolicyStore {
    pub fn new(cache: Arc<SessionCache>, policy: u64) -> Self {
        Self { cache, policy: policy.to_be_bytes() }
    }

    fn open(&self, mut value: Vec<u8>) -> Option<Vec<u8>> {
        if value.starts_with(&self.policy) {
            value.drain(..self.policy.len());
            return Some(value);
        }
        value.zeroize();
        self.cache.count_policy_mismatch();
        None
    }
}

impl StoresServerSessions for PolicyStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut sealed = Vec::with_capacity(self.policy.len() + value.len());
        sealed.extend_from_slice(&self.policy);
        sealed.extend_from_slice(&value);
        drop(Zeroizing::new(value));
        self.cache.put(key, sealed)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.get(key).and_then(|v| self.open(v))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.take(key).and_then(|v| self.open(v))
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: usize, bytes: usize, lifetime: u64, shards: usize) -> (Arc<SessionCache>, Arc<ManualClock>) {
        let clock = ManualClock::new(1_000_000);
        let c = SessionCache::new(
            SessionCacheConfig { max_entries: entries, max_bytes: bytes, lifetime_secs: lifetime, shards },
            clock.clone(),
        );
        (c, clock)
    }

    fn k(i: u32) -> Vec<u8> {
        let mut v = vec![0u8; 32];
        v[..4].copy_from_slice(&i.to_le_bytes());
        v
    }

    #[test]
    fn put_get_take() {
        let (c, _) = cache(100, 1 << 20, 100, 4);
        assert!(c.put(k(1), b"one".to_vec()));
        assert_eq!(c.get(&k(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(c.get(&k(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(c.take(&k(1)).as_deref(), Some(&b"one"[..]));
        // take deletes reliably.
        assert_eq!(c.take(&k(1)), None);
        assert_eq!(c.get(&k(1)), None);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries, s.bytes), (3, 2, 1, 0, 0));
        assert!(c.can_cache());
    }

    #[test]
    fn overwrite_replaces_and_accounts_bytes() {
        let (c, _) = cache(100, 1 << 20, 100, 1);
        c.put(k(1), vec![1; 10]);
        c.put(k(1), vec![2; 20]);
        assert_eq!(c.get(&k(1)), Some(vec![2; 20]));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes), (1, 32 + 20));
    }

    #[test]
    fn lru_evicts_least_recently_used_by_count() {
        let (c, _) = cache(3, 1 << 20, 100, 1);
        c.put(k(1), vec![1]);
        c.put(k(2), vec![2]);
        c.put(k(3), vec![3]);
        // Touch 1 so 2 is the least recently used.
        assert!(c.get(&k(1)).is_some());
        c.put(k(4), vec![4]);
        assert!(c.get(&k(2)).is_none());
        assert!(c.get(&k(1)).is_some());
        assert!(c.get(&k(3)).is_some());
        assert!(c.get(&k(4)).is_some());
        let s = c.stats();
        assert_eq!((s.evicted_capacity, s.evicted_bytes, s.evicted_expired, s.entries), (1, 0, 0, 3));
    }

    #[test]
    fn bytes_bound_evicts() {
        // Entries are 32 + 68 = 100 bytes; the shard holds 250 bytes, so at most two.
        let (c, _) = cache(100, 250, 100, 1);
        c.put(k(1), vec![0; 68]);
        c.put(k(2), vec![0; 68]);
        c.put(k(3), vec![0; 68]);
        assert!(c.get(&k(1)).is_none());
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.evicted_bytes), (2, 200, 1));
        // A value larger than the whole budget is refused, not stored.
        assert!(!c.put(k(9), vec![0; 300]));
        assert_eq!(c.stats().rejected, 1);
        assert!(c.get(&k(2)).is_some());
    }

    #[test]
    fn expired_entries_are_not_returned_and_go_first() {
        let (c, clock) = cache(3, 1 << 20, 10, 1);
        c.put(k(1), vec![1]);
        clock.advance(5);
        c.put(k(2), vec![2]);
        c.put(k(3), vec![3]);
        // 1 is now the most recently used, but the oldest insertion.
        assert!(c.get(&k(1)).is_some());
        clock.advance(6); // 1 is 11 s old (expired), 2 and 3 are 6 s old.
        c.put(k(4), vec![4]);
        let s = c.stats();
        assert_eq!((s.evicted_expired, s.evicted_capacity), (1, 0), "expired first, not LRU");
        assert!(c.get(&k(2)).is_some());
        clock.advance(4); // 2 and 3 are 10 s old: expired.
        assert!(c.get(&k(2)).is_none());
        assert!(c.take(&k(3)).is_none());
        assert!(c.get(&k(4)).is_some());
        let s = c.stats();
        assert_eq!((s.evicted_expired, s.entries), (3, 1));
        clock.advance(100);
        c.purge_expired();
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn bounds_hold_under_churn() {
        let (c, _) = cache(64, 64 * 150, 1000, 8);
        for i in 0..10_000u32 {
            c.put(k(i), vec![0; (i % 200) as usize]);
            if i % 3 == 0 {
                c.take(&k(i / 2));
            }
            let s = c.stats();
            assert!(s.entries <= 64, "{s:?}");
            assert!(s.bytes <= 64 * 150 + 8 * 150, "{s:?}");
        }
        // Slab slots are reused: the slab never grows past the per-shard bound.
        for sh in c.shards.iter() {
            let s = lock(&sh.shard);
            assert!(s.slab.len() <= c.per_shard_entries);
            assert_eq!(s.index.len(), s.slab.iter().filter(|e| e.is_some()).count());
        }
    }

    #[test]
    fn many_threads_insert_get_take() {
        let (c, _) = cache(1 << 20, 1 << 30, 1000, 16);
        let threads = 8u32;
        let per = 5_000u32;
        std::thread::scope(|s| {
            for t in 0..threads {
                let c = &c;
                s.spawn(move || {
                    for i in 0..per {
                        let key = k(t * per + i);
                        assert!(c.put(key.clone(), key.clone()));
                        assert_eq!(c.get(&key).as_ref(), Some(&key));
                        if i % 2 == 0 {
                            assert_eq!(c.take(&key).as_ref(), Some(&key));
                            assert_eq!(c.take(&key), None);
                        }
                    }
                });
            }
        });
        let s = c.stats();
        let n = u64::from(threads * per);
        assert_eq!(s.inserts, n);
        assert_eq!(s.entries, n / 2);
        assert_eq!(s.hits, n + n / 2);
        assert_eq!(s.misses, n / 2);
        for i in 0..threads * per {
            assert_eq!(c.get(&k(i)).is_some(), i % per % 2 == 1);
        }
    }

    #[test]
    fn concurrent_take_is_single_use() {
        // TLS 1.3 single-use tickets (RFC 8446 §8.1): of many racing takers exactly one wins.
        let (c, _) = cache(1 << 16, 1 << 26, 1000, 4);
        for round in 0..200u32 {
            c.put(k(round), vec![7; 100]);
            let wins = AtomicU64::new(0);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        if c.take(&k(round)).is_some() {
                            wins.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            assert_eq!(wins.load(Ordering::Relaxed), 1);
        }
    }

    /// One call of [`WriteBehind::put`]: key, value, lifetime.
    type Copy = (Vec<u8>, Vec<u8>, u64);

    /// Records what [`WriteBehind`] was given.
    #[derive(Default)]
    struct Copies(Mutex<Vec<Copy>>);

    impl WriteBehind for Copies {
        fn put(&self, key: &[u8], value: &[u8], lifetime_secs: u64) {
            self.0.lock().unwrap().push((key.to_vec(), value.to_vec(), lifetime_secs));
        }
    }

    #[test]
    fn rustls_puts_are_copied_fetched_sessions_are_not() {
        let (c, _) = cache(10, 1 << 20, 300, 1);
        let copies = Arc::new(Copies::default());
        c.put(k(1), b"before".to_vec());
        c.set_write_behind(Some(copies.clone()));
        assert!(c.put(k(2), b"made here".to_vec()));
        assert!(c.insert_fetched(k(3), b"fetched".to_vec()));
        assert_eq!(*copies.0.lock().unwrap(), vec![(k(2), b"made here".to_vec(), 300)]);
        // Fetched sessions are served like any other.
        assert_eq!(c.get(&k(3)).as_deref(), Some(&b"fetched"[..]));
        c.set_write_behind(None);
        c.put(k(4), b"after".to_vec());
        assert_eq!(copies.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn contains_neither_counts_nor_moves_and_remove_drops() {
        let (c, clock) = cache(10, 1 << 20, 10, 1);
        c.put(k(1), b"v".to_vec());
        let before = c.stats();
        assert!(c.contains(&k(1)));
        assert!(!c.contains(&k(2)));
        assert_eq!((c.stats().hits, c.stats().misses), (before.hits, before.misses));
        clock.advance(10);
        assert!(!c.contains(&k(1)), "an expired entry is not held");
        clock.set(1_000_000);
        assert!(c.remove(&k(1)));
        assert!(!c.remove(&k(1)));
        assert_eq!(c.get(&k(1)), None);
        assert_eq!(c.stats().entries, 0);
    }
}
