//! The ClientHello gate of a relay whose listener shares its sessions with a fleet
//! (`[session_store]`, issue 14): before rustls sees the ClientHello, the relay reads from it the
//! identifier the client wants to resume (`sluice_store::peek`: the TLS 1.3 PSK identity, or the
//! TLS 1.2 session ID), and the session asks the store for it while rustls waits. rustls's
//! synchronous session lookup is then always answered from memory: the worker never waits on
//! the network inside a handshake, and a handshake never waits longer than the store's budget.
//!
//! The life of a gate: `Peeking` (the ClientHello's bytes are kept in the relay's ciphertext
//! queue, bounded by it and by `sluice_store::MAX_PEEK_BYTES`) -> `Found` (an identifier to look
//! up: the session takes it with [`super::Relay::take_lookup`]) -> `Parked` until the answer
//! ([`super::Relay::open_gate`]) or the deadline -> `Open`: rustls reads every byte from then on.
//! Anything that is not a ClientHello worth a lookup (no identifier, a malformed or oversized
//! hello, the stream's end) opens the gate at once: rustls judges the bytes as it always does.

use sluice_store::{Peek, peek};
use sluice_tcp::Instant;

/// What the session looks up in the store for a parked handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The TLS 1.2 session ID or the TLS 1.3 PSK identity the client offered.
    pub id: Vec<u8>,
    /// A TLS 1.3 PSK identity: usable once in the whole fleet (the store's GETDEL).
    pub single_use: bool,
}

/// Where the gate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Gate {
    /// rustls reads every byte.
    Open,
    /// Reading the ClientHello; `tls13`: the server offers TLS 1.3 (then a session ID alone is
    /// a TLS 1.3 client's middlebox-compatibility noise, not worth a lookup).
    Peeking { tls13: bool },
    /// An identifier to look up, not taken by the session yet.
    Found(Lookup),
    /// The store is asked; rustls waits until the answer or `deadline`.
    Parked { deadline: Instant },
}

impl Gate {
    /// Whether rustls must wait, given the ciphertext received so far (`eof`: the stream
    /// ended, `full`: the queue holding it has no room left) at `now`.
    pub(super) fn holds(&mut self, now: Instant, received: &[u8], eof: bool, full: bool) -> bool {
        match self {
            Gate::Open => false,
            Gate::Found(_) => true,
            Gate::Parked { deadline } => {
                if now >= *deadline {
                    *self = Gate::Open;
                }
                *self != Gate::Open
            }
            Gate::Peeking { tls13 } => {
                match peek(received) {
                    Peek::Incomplete if !eof && !full => return true,
                    Peek::ClientHello(ids) => {
                        if let Some(id) = ids.lookup_id(*tls13) {
                            let single_use = ids.psk_identity.is_some();
                            *self = Gate::Found(Lookup { id: id.to_vec(), single_use });
                            return true;
                        }
                    }
                    _ => {}
                }
                *self = Gate::Open;
                false
            }
        }
    }

    /// The deadline of a parked handshake.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Gate::Parked { deadline } => Some(*deadline),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A ClientHello record with `session_id`, offering TLS 1.3 (supported_versions) or not.
    fn hello(session_id: &[u8], tls13: bool) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x42; 32]);
        body.push(session_id.len() as u8);
        body.extend_from_slice(session_id);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        let exts: Vec<u8> = if tls13 { vec![0x00, 0x2b, 0, 3, 2, 3, 4] } else { Vec::new() };
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut record = vec![22, 3, 1, (msg.len() >> 8) as u8, msg.len() as u8];
        record.extend_from_slice(&msg);
        record
    }

    #[test]
    fn a_tls12_session_id_is_found_once_the_hello_is_whole() {
        let hello = hello(&[7; 32], false);
        let mut g = Gate::Peeking { tls13: true };
        let now = Instant::from_micros(1);
        assert!(g.holds(now, &hello[..10], false, false), "a partial hello waits");
        assert_eq!(g, Gate::Peeking { tls13: true });
        assert!(g.holds(now, &hello, false, false));
        assert_eq!(g, Gate::Found(Lookup { id: vec![7; 32], single_use: false }));
    }

    #[test]
    fn nothing_to_look_up_opens_at_once() {
        let now = Instant::from_micros(1);
        // A TLS 1.3 client's session ID while the server offers TLS 1.3: no lookup.
        let hello = hello(&[7; 32], true);
        let mut g = Gate::Peeking { tls13: true };
        assert!(!g.holds(now, &hello, false, false));
        assert_eq!(g, Gate::Open);
        // Not a ClientHello, a stream that ended, a queue that is full: rustls decides.
        for (bytes, eof, full) in
            [(&b"GET / HTTP/1.1\r\n"[..], false, false), (&hello[..10], true, false), (&hello[..10], false, true)]
        {
            let mut g = Gate::Peeking { tls13: false };
            assert!(!g.holds(now, bytes, eof, full));
            assert_eq!(g, Gate::Open);
        }
    }

    #[test]
    fn a_parked_handshake_goes_on_at_its_deadline() {
        let start = Instant::from_micros(1_000);
        let deadline = start + Duration::from_millis(5);
        let mut g = Gate::Parked { deadline };
        assert!(g.holds(start, &[], false, false));
        assert_eq!(g.deadline(), Some(deadline));
        assert!(!g.holds(deadline, &[], false, false));
        assert_eq!(g, Gate::Open);
        assert_eq!(g.deadline(), None);
    }
}
