//! Stateless tickets, one thread: encrypting and then decrypting one ticket (what a resumption
//! that is given a new ticket costs the server in ticket crypto) with rustls's in-process
//! ticketer (the provider's RFC 5077 construction: AES-256-CBC + HMAC-SHA256, random keys) and with [`sluice_tls::tickets::KeyFileTicketer`]
//! under 48-byte (AES-128-CBC + HMAC-SHA256) and 80-byte (AES-256-CBC + HMAC-SHA256) nginx key
//! files. The plaintext is the size of rustls's session state (about 100 to 200 bytes).
//!
//! Usage: `cargo bench -p sluice-tls --bench tickets [-- SECONDS_PER_ROUND ROUNDS]`

use std::sync::Arc;
use std::time::Instant;

use rustls::server::ProducesTickets;
use sluice_tls::tickets::KeyFileTicketer;
use sluice_tls::{ManualClock, SessionCache, SessionCacheConfig};

fn measure(secs: f64, t: &dyn ProducesTickets, plain: &[u8]) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..256 {
            let ticket = t.encrypt(plain).expect("encrypts");
            let back = t.decrypt(std::hint::black_box(&ticket)).expect("decrypts");
            assert_eq!(back.len(), plain.len());
        }
        n += 256;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let secs = args.first().copied().unwrap_or(1.0);
    let rounds = args.get(1).copied().unwrap_or(3.0) as usize;
    let cache = SessionCache::new(SessionCacheConfig::default(), ManualClock::new(1_700_000_000));
    let file = |len: usize| (0..len).map(|i| i as u8 ^ 0x5c).collect::<Vec<u8>>();
    let ticketers: Vec<(&str, Arc<dyn ProducesTickets>)> = vec![
        ("rustls in-process (AES-256-CBC+HMAC)", rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer")),
        (
            "key file 48 B (AES-128-CBC+HMAC)",
            Arc::new(KeyFileTicketer::new(&mut [file(48)], 7, 7200, cache.clone()).expect("key")),
        ),
        (
            "key file 80 B (AES-256-CBC+HMAC)",
            Arc::new(KeyFileTicketer::new(&mut [file(80)], 7, 7200, cache.clone()).expect("key")),
        ),
    ];
    println!("ticket encrypt + decrypt, one thread, {rounds} interleaved rounds of {secs} s, medians");
    for size in [128, 192] {
        let plain = vec![0xa5; size];
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); ticketers.len()];
        for _ in 0..rounds {
            for (i, (_, t)) in ticketers.iter().enumerate() {
                results[i].push(measure(secs, t.as_ref(), &plain));
            }
        }
        for ((name, t), r) in ticketers.iter().zip(results) {
            let per_s = median(r);
            let len = t.encrypt(&plain).map_or(0, |c| c.len());
            println!("{size:>4} B state  {name:<38} {per_s:>9.0}/s ({:>5.2} us)  ticket {len} B", 1e6 / per_s);
        }
    }
}
