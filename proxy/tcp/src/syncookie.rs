//! SYN cookies: a stateless SYN-ACK whose initial sequence number encodes what the SYN
//! negotiated, validated when the final ACK of the handshake arrives (RFC 4987 section 3.6).
//!
//! Layout of the 32-bit cookie (our ISN):
//! `[t:5][mss index:3][window scale:4][sack:1][mac:19]`, where `t` counts 64-second periods
//! modulo 32 and the MAC is SipHash-2-4 keyed with the endpoint secret over the 4-tuple, the
//! peer's ISN, `t` and the encoded options. The secret rotates with `t` (it is an input of the
//! keyed hash), and a cookie is valid during the period it was issued in and the next one.
//! A guess succeeds with probability 2^-19 per forged ACK, and a valid cookie cannot be
//! replayed after two periods. What a cookie loses: the timestamp option and any MSS outside
//! the table (rounded down to the nearest entry). Window scale 15 encodes "not offered".

use crate::isn::{SipHasher24, TupleBytes, tuple_bytes};
use crate::time::Instant;
use core::net::SocketAddr;

/// MSS values a cookie can carry (Linux's table, plus jumbo).
pub const MSS_TABLE: [u16; 8] = [536, 1220, 1300, 1440, 1452, 1460, 4312, 8960];
const PERIOD_SECS: u64 = 64;
/// The longest a cookie stays valid: the period it was issued in and the next one.
pub const VALIDITY: core::time::Duration = core::time::Duration::from_secs(2 * PERIOD_SECS);
const MAC_BITS: u32 = 19;
const MAC_MASK: u32 = (1 << MAC_BITS) - 1;

/// What a cookie carries of the peer's SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieOptions {
    /// The peer's MSS (rounded down to a table entry).
    pub mss: u16,
    /// The peer's window scale, if offered (0..=14).
    pub window_scale: Option<u8>,
    /// The peer sent SACK-permitted.
    pub sack_permitted: bool,
}

#[derive(Debug, Clone)]
pub struct SynCookies {
    hasher: SipHasher24,
}

fn period(now: Instant) -> u32 {
    ((now.as_micros() / 1_000_000 / PERIOD_SECS) & 31) as u32
}

impl SynCookies {
    #[must_use]
    pub fn new(key: [u8; 16]) -> Self {
        // Derive a key distinct from the ISN key.
        let mut k = key;
        for b in &mut k {
            *b ^= 0x5c;
        }
        SynCookies { hasher: SipHasher24::new(k) }
    }

    fn mac(&self, local: SocketAddr, remote: SocketAddr, peer_isn: u32, t: u32, data: u32) -> u32 {
        let tuple = tuple_bytes(local, remote);
        let n = tuple.as_slice().len();
        let mut b = [0u8; TupleBytes::MAX_LEN + 12];
        b[..n].copy_from_slice(tuple.as_slice());
        b[n..n + 4].copy_from_slice(&peer_isn.to_be_bytes());
        b[n + 4..n + 8].copy_from_slice(&t.to_be_bytes());
        b[n + 8..n + 12].copy_from_slice(&data.to_be_bytes());
        (self.hasher.hash(&b[..n + 12]) as u32) & MAC_MASK
    }

    fn encode(opts: CookieOptions) -> u32 {
        let idx = MSS_TABLE.iter().rposition(|&m| m <= opts.mss).unwrap_or(0) as u32;
        let ws = u32::from(opts.window_scale.map_or(15, |w| w.min(14)));
        (idx << 5) | (ws << 1) | u32::from(opts.sack_permitted)
    }

    /// The cookie (our ISN) for a SYN from `remote` with sequence number `peer_isn`.
    #[must_use]
    pub fn generate(
        &self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        peer_isn: u32,
        opts: CookieOptions,
    ) -> u32 {
        let t = period(now);
        let data = Self::encode(opts);
        (t << 27) | (data << MAC_BITS) | self.mac(local, remote, peer_isn, t, data)
    }

    /// Validate the final ACK: `cookie` is SEG.ACK - 1, `peer_isn` is SEG.SEQ - 1.
    #[must_use]
    pub fn validate(
        &self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        peer_isn: u32,
        cookie: u32,
    ) -> Option<CookieOptions> {
        let t = cookie >> 27;
        let data = (cookie >> MAC_BITS) & 0xff;
        let cur = period(now);
        // Issued in this period or the previous one.
        if t != cur && t != cur.wrapping_sub(1) & 31 {
            return None;
        }
        if self.mac(local, remote, peer_isn, t, data) != cookie & MAC_MASK {
            return None;
        }
        let idx = (data >> 5) as usize;
        let ws = ((data >> 1) & 0xf) as u8;
        Some(CookieOptions {
            mss: MSS_TABLE[idx.min(7)],
            window_scale: if ws == 15 { None } else { Some(ws.min(14)) },
            sack_permitted: data & 1 == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn tuple() -> (SocketAddr, SocketAddr) {
        (
            SocketAddr::new(Ipv4Addr::new(198, 51, 100, 2).into(), 443),
            SocketAddr::new(Ipv4Addr::new(198, 51, 100, 1).into(), 50000),
        )
    }

    #[test]
    fn ipv6_cookies_bind_the_whole_addresses() {
        let l = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2).into(), 443);
        let r = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1).into(), 50000);
        let c = SynCookies::new([7; 16]);
        let now = Instant::from_millis(1_000_000);
        let opts = CookieOptions { mss: 1220, window_scale: Some(7), sack_permitted: true };
        let cookie = c.generate(now, l, r, 999, opts);
        assert_eq!(c.validate(now, l, r, 999, cookie), Some(opts));
        // Another interface ID (low 64 bits) of the same /64 does not validate.
        let r2 = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 1, 1).into(), 50000);
        assert!(c.validate(now, l, r2, 999, cookie).is_none());
    }

    #[test]
    fn roundtrip_carries_options() {
        let (l, r) = tuple();
        let c = SynCookies::new([7; 16]);
        let now = Instant::from_millis(1_000_000);
        for (mss, ws, sack) in [
            (1460, Some(7), true),
            (536, None, false),
            (1400, Some(14), true),
            (9000, Some(0), false),
            (100, None, true),
        ] {
            let opts = CookieOptions { mss, window_scale: ws, sack_permitted: sack };
            let cookie = c.generate(now, l, r, 12345, opts);
            let got = c.validate(now, l, r, 12345, cookie).expect("valid");
            assert_eq!(got.window_scale, ws);
            assert_eq!(got.sack_permitted, sack);
            assert!(got.mss <= mss.max(536));
        }
        let got = c
            .validate(
                now,
                l,
                r,
                12345,
                c.generate(now, l, r, 12345, CookieOptions { mss: 1400, window_scale: None, sack_permitted: false }),
            )
            .unwrap();
        assert_eq!(got.mss, 1300);
    }

    #[test]
    fn rejects_forgeries_and_old_cookies() {
        let (l, r) = tuple();
        let c = SynCookies::new([7; 16]);
        let now = Instant::from_millis(1_000_000);
        let opts = CookieOptions { mss: 1460, window_scale: Some(7), sack_permitted: true };
        let cookie = c.generate(now, l, r, 999, opts);
        // Wrong peer ISN, wrong tuple, flipped bits, other key.
        assert!(c.validate(now, l, r, 998, cookie).is_none());
        let r2 = SocketAddr::new(r.ip(), 50001);
        assert!(c.validate(now, l, r2, 999, cookie).is_none());
        assert!(c.validate(now, l, r, 999, cookie ^ 1).is_none());
        assert!(c.validate(now, l, r, 999, cookie ^ (1 << 22)).is_none());
        assert!(SynCookies::new([8; 16]).validate(now, l, r, 999, cookie).is_none());
        // Still valid in the next period, not two periods later.
        let next = now + core::time::Duration::from_secs(64);
        assert!(c.validate(next, l, r, 999, cookie).is_some());
        let later = now + core::time::Duration::from_secs(128);
        assert!(c.validate(later, l, r, 999, cookie).is_none());
    }
}
