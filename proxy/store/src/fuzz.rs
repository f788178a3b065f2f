//! Bodies of the cargo-fuzz targets in `proxy/store/fuzz/` (nightly), public so that the
//! crate's proptests run the same code on stable. Each panics only when an invariant breaks.

use std::time::{Duration, Instant};

use crate::client_hello::{MAX_PEEK_BYTES, Peek, peek};
use crate::resp::{Client, ClientConfig, Token};

/// `peek` on arbitrary bytes: no panic; the answer never depends on bytes past the budget;
/// every prefix of a complete ClientHello's bytes is incomplete or the same answer.
pub fn client_hello(data: &[u8]) {
    let whole = peek(data);
    if data.len() > MAX_PEEK_BYTES {
        assert_eq!(whole, peek(&data[..MAX_PEEK_BYTES]));
    }
    if let Peek::ClientHello(_) = whole {
        for n in [0, 1, 5, data.len() / 2] {
            let p = peek(&data[..n.min(data.len())]);
            assert!(p == Peek::Incomplete || p == whole, "prefix {n}: {p:?} vs {whole:?}");
        }
    }
}

/// A connected [`Client`] with requests in flight and waiting, fed `data` as server bytes in
/// pieces (the first byte of each piece sets its length), with time moving: no panic, and
/// every accepted request completes exactly once by the time the connection is closed.
pub fn resp_client(data: &[u8]) {
    let t0 = Instant::now();
    let cfg = ClientConfig { max_in_flight: 3, max_queued: 3, max_reply_bytes: 256, ..ClientConfig::default() };
    let mut c = Client::new(cfg);
    c.on_connected(t0);
    let mut accepted = Vec::new();
    for i in 0..8u64 {
        let ok = match i % 3 {
            0 => c.get(t0, Token(i), b"k"),
            1 => c.getdel(t0, Token(i), b"k"),
            _ => c.set(t0, Token(i), b"k", b"v", 10),
        };
        if ok.is_ok() {
            accepted.push(Token(i));
        }
    }
    let mut seen = Vec::new();
    let mut rest = data;
    let mut ms = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len % 32).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        rest = tail;
        ms += u64::from(len >> 5);
        let now = t0 + Duration::from_millis(ms);
        let out = c.pending_output().len();
        c.advance_output(out);
        let _ = c.handle_input(now, piece);
        let _ = c.handle_timeout(now);
        seen.extend(std::iter::from_fn(|| c.poll_completion()).map(|d| d.token));
    }
    c.connection_lost();
    seen.extend(std::iter::from_fn(|| c.poll_completion()).map(|d| d.token));
    seen.sort();
    assert_eq!(seen, accepted, "each accepted request completes exactly once");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn client_hello_body(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            super::client_hello(&data);
        }

        #[test]
        fn client_hello_body_behind_a_record_header(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let mut bytes = vec![22, 3, 1, (data.len() >> 8) as u8, data.len() as u8];
            bytes.extend_from_slice(&data);
            super::client_hello(&bytes);
        }

        #[test]
        fn resp_client_body(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::resp_client(&data);
        }

        #[test]
        fn resp_client_body_on_plausible_replies(
            pieces in proptest::collection::vec(
                prop_oneof![Just(&b"+OK\r\n"[..]), Just(&b"$-1\r\n"[..]), Just(&b"$1\r\nx\r\n"[..]), Just(&b"-ERR\r\n"[..])],
                0..12,
            ),
        ) {
            let mut data = Vec::new();
            for p in pieces {
                data.push(p.len() as u8);
                data.extend_from_slice(p);
            }
            super::resp_client(&data);
        }
    }
}
