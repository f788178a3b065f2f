//! Session-cache throughput: sluice's sharded `SessionCache` against rustls's
//! `ServerSessionMemoryCache` (one mutex), same run, same workload, interleaved rounds.
//!
//! Workload per thread (TLS 1.3 stateful pattern, the server side of rustls):
//! - 60 %: a resumption: `take(ticket)` (single use) then `put(new ticket)`;
//! - 30 %: a new full handshake: `put(new ticket)`;
//! - 10 %: a TLS 1.2 session-ID lookup: `get(id)`.
//!
//! Keys are 32 random bytes, values 100-200 bytes; the cache is pre-filled with `LIVE` entries
//! and bounded at `CAP`, so puts evict. Each take/put/get counts as one operation.
//! Which session a resumption takes: `random` (any live session of this thread: clients come
//! back in no particular order) or `oldest` (first made, first resumed: the best case for a
//! FIFO-ordered store). Both are run.
//!
//! Usage: `cargo bench -p sluice-tls --bench session_cache [-- THREADS SECONDS_PER_ROUND ROUNDS]`

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use sluice_tls::{ManualClock, SessionCache, SessionCacheConfig};

const LIVE: usize = 50_000;
const CAP: usize = 100_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn key(&mut self) -> Vec<u8> {
        let mut k = Vec::with_capacity(32);
        for _ in 0..4 {
            k.extend_from_slice(&self.next().to_le_bytes());
        }
        k
    }
    fn value(&mut self) -> Vec<u8> {
        vec![0xa5; 100 + (self.next() % 101) as usize]
    }
}

fn run(cache: Arc<dyn StoresServerSessions>, threads: usize, secs: f64, seed: u64, random: bool) -> f64 {
    // Pre-fill; each thread owns the keys it will take.
    let mut owned: Vec<VecDeque<Vec<u8>>> = (0..threads).map(|_| VecDeque::new()).collect();
    let mut rng = Rng(seed | 1);
    for i in 0..LIVE {
        let k = rng.key();
        cache.put(k.clone(), rng.value());
        owned[i % threads].push_back(k);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for (t, mut mine) in owned.into_iter().enumerate() {
            let cache = cache.clone();
            let stop = stop.clone();
            let ops = ops.clone();
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(t as u64 + 7) | 1);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let dice = rng.next() % 100;
                        if dice < 60 {
                            let k = if random {
                                let i = (rng.next() as usize) % mine.len().max(1);
                                mine.swap_remove_back(i)
                            } else {
                                mine.pop_front()
                            };
                            if let Some(k) = k {
                                std::hint::black_box(cache.take(&k));
                                n += 1;
                            }
                            let k = rng.key();
                            cache.put(k.clone(), rng.value());
                            mine.push_back(k);
                            n += 1;
                        } else if dice < 90 {
                            let k = rng.key();
                            cache.put(k.clone(), rng.value());
                            mine.push_back(k);
                            n += 1;
                        } else {
                            let i = (rng.next() as usize) % mine.len().max(1);
                            if let Some(k) = mine.get(i) {
                                std::hint::black_box(cache.get(k));
                            }
                            n += 1;
                        }
                        // Keep the per-thread key list near the live set (older ones were evicted).
                        if mine.len() > CAP / threads {
                            mine.pop_front();
                        }
                    }
                }
                ops.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    ops.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let secs: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1.5);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    println!(
        "session cache: {threads} threads, {secs} s x {rounds} interleaved rounds, {LIVE} live entries, cap {CAP}, \
         mix 60% take+put / 30% put / 10% get, 32-byte keys, 100-200-byte values"
    );
    for random in [true, false] {
        let order = if random { "random" } else { "oldest" };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let seed = 0x9e37_79b9_7f4a_7c15 ^ r as u64;
            let sluice = SessionCache::new(
                SessionCacheConfig { max_entries: CAP, max_bytes: CAP * 300, lifetime_secs: 7200, shards: 32 },
                ManualClock::new(1_700_000_000),
            );
            let a = run(sluice.clone(), threads, secs, seed, random);
            let b = run(ServerSessionMemoryCache::new(CAP), threads, secs, seed, random);
            let st = sluice.stats();
            println!(
                "[{order}] round {r}: sluice SessionCache {a:>10.0} ops/s   rustls ServerSessionMemoryCache {b:>10.0} ops/s   \
                 ratio {:.2}   (sluice: hits {} misses {} inserts {} evicted {} entries {})",
                a / b,
                st.hits,
                st.misses,
                st.inserts,
                st.evicted_capacity + st.evicted_bytes + st.evicted_expired,
                st.entries
            );
            ours.push(a);
            theirs.push(b);
        }
        let (a, b) = (median(&mut ours), median(&mut theirs));
        println!("[{order}] median: sluice {a:.0} ops/s, rustls {b:.0} ops/s, ratio {:.2}", a / b);
    }
}
