//! Per-operation cost of what a worker does around a store lookup, single thread, in memory:
//! peeking at a ClientHello (TLS 1.2 session ID in one record; TLS 1.3 with a PSK in one
//! record and split over 64-byte records), deriving a store key, sealing and opening a
//! 1 KiB session, encoding a GET and matching its reply, picking a node of 3.
//!
//! Usage: `cargo bench -p sluice-store --bench store_ops [-- ITERATIONS]` (prints ns/op).

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice_store::{Client, ClientConfig, KeySet, Peek, Rendezvous, Token, peek};

fn hello(session_id: &[u8], psk: Option<&[u8]>) -> Vec<u8> {
    // A ClientHello shaped like a browser's: 16 suites, SNI, groups, key share, PSK last.
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(session_id.len() as u8);
    body.extend_from_slice(session_id);
    body.extend_from_slice(&32u16.to_be_bytes());
    body.extend_from_slice(&[0x13; 32]);
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    let mut ext = |ty: u16, data: &[u8]| {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(data);
    };
    ext(0, &[0, 14, 0, 0, 11, b's', b't', b'o', b'r', b'e', b'.', b'e', b'x', b'a', b'm', b'p']);
    ext(10, &[0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]);
    ext(43, &[4, 3, 4, 3, 3]);
    ext(51, &[vec![0, 36, 0, 0x1d, 0, 32], vec![9; 32]].concat());
    ext(0xfafa, &[0; 200]);
    if let Some(id) = psk {
        let mut d = ((id.len() + 6) as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&(id.len() as u16).to_be_bytes());
        d.extend_from_slice(id);
        d.extend_from_slice(&[0, 0, 0, 1, 0, 33, 32]);
        d.extend_from_slice(&[0xbb; 32]);
        ext(41, &d);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

fn records(msg: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in msg.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(c.len() as u16).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn time(name: &str, iters: u64, mut f: impl FnMut(u64)) {
    // Warm up, then measure.
    for i in 0..iters / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let per = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name:<44} {per:>9.0} ns/op");
}

fn main() {
    let iters: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let tls12 = records(&hello(&[5; 32], None), 16_384);
    let ticket = [0x42u8; 32];
    let tls13 = records(&hello(&[6; 32], Some(&ticket)), 16_384);
    let tls13_split = records(&hello(&[6; 32], Some(&ticket)), 64);
    // The inputs are what they claim to be.
    for (bytes, psk) in [(&tls12, None), (&tls13, Some(&ticket[..])), (&tls13_split, Some(&ticket[..]))] {
        match peek(bytes) {
            Peek::ClientHello(ids) => assert_eq!(ids.psk_identity.as_deref(), psk),
            other => panic!("{other:?}"),
        }
    }
    time("peek TLS 1.2 hello (1 record)", iters, |_| {
        black_box(peek(black_box(&tls12)));
    });
    time("peek TLS 1.3 hello + PSK (1 record)", iters, |_| {
        black_box(peek(black_box(&tls13)));
    });
    time("peek TLS 1.3 hello + PSK (64-byte records)", iters, |_| {
        black_box(peek(black_box(&tls13_split)));
    });

    let keys = KeySet::parse(
        "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f\n\
         000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    )
    .unwrap();
    time("store_key (HMAC-SHA256, hex)", iters, |i| {
        black_box(keys.store_key(b"sluice:", &i.to_le_bytes()));
    });
    let store_key = keys.store_key(b"sluice:", &ticket);
    let session = vec![0x5a; 1024];
    time("seal 1 KiB (AES-256-GCM, random nonce)", iters, |_| {
        black_box(keys.seal(&store_key, black_box(&session)));
    });
    let sealed = keys.seal(&store_key, &session);
    time("open 1 KiB", iters, |_| {
        black_box(keys.open(&store_key, black_box(&sealed)).unwrap());
    });

    let mut client = Client::new(ClientConfig { timeout: Duration::from_secs(60), ..ClientConfig::default() });
    let t0 = Instant::now();
    client.on_connected(t0);
    let mut reply = format!("${}\r\n", sealed.len()).into_bytes();
    reply.extend_from_slice(&sealed);
    reply.extend_from_slice(b"\r\n");
    time("GET encode + 1 KiB reply decode + completion", iters, |i| {
        client.get(t0, Token(i), &store_key).unwrap();
        let n = client.pending_output().len();
        client.advance_output(n);
        client.handle_input(t0, &reply).unwrap();
        black_box(client.poll_completion().unwrap());
    });

    let nodes = Rendezvous::new(["192.0.2.10:6379", "192.0.2.11:6379", "192.0.2.12:6379"]);
    time("rendezvous pick of 3 nodes", iters, |_| {
        black_box(nodes.pick(black_box(&store_key)));
    });
}
