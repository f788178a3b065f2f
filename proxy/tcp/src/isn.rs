//! Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport,
//! secretkey), where M is a 4-microsecond clock and F is SipHash-2-4 keyed with a per-endpoint
//! secret (section 3). Also the SipHash-2-4 implementation that `syncookie` uses.
//!
//! SipHash-2-4 follows Aumasson and Bernstein, "SipHash: a fast short-input PRF" (2012); the
//! test vector is the paper's appendix A example.

use crate::time::Instant;
use core::net::{IpAddr, SocketAddr};

/// SipHash-2-4 with a 128-bit key.
#[derive(Debug, Clone, Copy)]
pub struct SipHasher24 {
    k0: u64,
    k1: u64,
}

#[inline]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

impl SipHasher24 {
    #[must_use]
    pub fn new(key: [u8; 16]) -> Self {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&key[..8]);
        b.copy_from_slice(&key[8..]);
        SipHasher24 { k0: u64::from_le_bytes(a), k1: u64::from_le_bytes(b) }
    }

    /// SipHash-2-4 of `msg`.
    #[must_use]
    pub fn hash(&self, msg: &[u8]) -> u64 {
        let mut v = [
            self.k0 ^ 0x736f_6d65_7073_6575,
            self.k1 ^ 0x646f_7261_6e64_6f6d,
            self.k0 ^ 0x6c79_6765_6e65_7261,
            self.k1 ^ 0x7465_6462_7974_6573,
        ];
        let mut chunks = msg.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            let m = u64::from_le_bytes(w);
            v[3] ^= m;
            sipround(&mut v);
            sipround(&mut v);
            v[0] ^= m;
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        let m = u64::from_le_bytes(last) | ((msg.len() as u64 & 0xff) << 56);
        v[3] ^= m;
        sipround(&mut v);
        sipround(&mut v);
        v[0] ^= m;
        v[2] ^= 0xff;
        for _ in 0..4 {
            sipround(&mut v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}

/// The bytes of a 4-tuple, local first: address, port, address, port. 12 bytes for IPv4 (the
/// layout every hash of this crate has always used), 36 for IPv6 (full 16-byte addresses).
#[derive(Debug, Clone, Copy)]
pub struct TupleBytes {
    buf: [u8; TupleBytes::MAX_LEN],
    len: usize,
}

impl TupleBytes {
    /// The longest encoding: two IPv6 addresses and two ports.
    pub const MAX_LEN: usize = 36;

    /// The encoded tuple.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The bytes of the 4-tuple (`local`, `remote`); see [`TupleBytes`].
#[must_use]
pub fn tuple_bytes(local: SocketAddr, remote: SocketAddr) -> TupleBytes {
    let mut buf = [0u8; TupleBytes::MAX_LEN];
    let mut len = 0;
    for end in [local, remote] {
        let n = match end.ip() {
            IpAddr::V4(a) => {
                buf[len..len + 4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                buf[len..len + 16].copy_from_slice(&a.octets());
                16
            }
        };
        buf[len + n..len + n + 2].copy_from_slice(&end.port().to_be_bytes());
        len += n + 2;
    }
    TupleBytes { buf, len }
}

/// RFC 6528 ISN generator.
#[derive(Debug, Clone)]
pub struct IsnGenerator {
    hasher: SipHasher24,
}

impl IsnGenerator {
    #[must_use]
    pub fn new(key: [u8; 16]) -> Self {
        IsnGenerator { hasher: SipHasher24::new(key) }
    }
    /// ISN = M + F(4-tuple, key) with M a 4 us timer (RFC 6528 section 3, RFC 9293 3.4.1).
    #[must_use]
    pub fn isn(&self, now: Instant, local: SocketAddr, remote: SocketAddr) -> u32 {
        let f = self.hasher.hash(tuple_bytes(local, remote).as_slice()) as u32;
        let m = (now.as_micros() / 4) as u32;
        f.wrapping_add(m)
    }
    /// A per-connection keyed offset for TCP timestamps (RFC 7323 section 5.4 / 7.1).
    #[must_use]
    pub fn ts_offset(&self, local: SocketAddr, remote: SocketAddr) -> u32 {
        let t = tuple_bytes(local, remote);
        let n = t.as_slice().len();
        let mut b = [0u8; TupleBytes::MAX_LEN + 1];
        b[..n].copy_from_slice(t.as_slice());
        b[n] = 0x75;
        self.hasher.hash(&b[..=n]) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

    #[test]
    fn siphash_reference_vector() {
        let mut key = [0u8; 16];
        for (i, k) in key.iter_mut().enumerate() {
            *k = i as u8;
        }
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(SipHasher24::new(key).hash(&msg), 0xa129_ca61_49be_45e5);
        // First entry of the reference vectors (empty message).
        assert_eq!(SipHasher24::new(key).hash(&[]), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    fn isn_depends_on_key_tuple_and_clock() {
        let l = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 443).into();
        let r = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 40000).into();
        let r2 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 40001).into();
        let g = IsnGenerator::new([1; 16]);
        let h = IsnGenerator::new([2; 16]);
        let t = Instant::from_millis(1000);
        assert_ne!(g.isn(t, l, r), h.isn(t, l, r));
        assert_ne!(g.isn(t, l, r), g.isn(t, l, r2));
        assert_eq!(g.isn(t, l, r), g.isn(t, l, r));
        // The clock advances by 1 per 4 us.
        let later = Instant::from_micros(t.as_micros() + 400);
        assert_eq!(g.isn(later, l, r), g.isn(t, l, r).wrapping_add(100));
    }

    #[test]
    fn tuple_bytes_keep_the_ipv4_layout_and_take_whole_ipv6_addresses() {
        let l = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 443).into();
        let r = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 40000).into();
        assert_eq!(tuple_bytes(l, r).as_slice(), &[198, 51, 100, 2, 1, 187, 198, 51, 100, 1, 0x9c, 0x40]);
        let l6 = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2).into(), 443);
        let r6 = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1).into(), 40000);
        let b = tuple_bytes(l6, r6);
        assert_eq!(b.as_slice().len(), 36);
        assert_eq!(&b.as_slice()[16..18], &[1, 187]);
        assert_eq!(&b.as_slice()[34..], &[0x9c, 0x40]);
        // The low bits of an address count: two addresses that differ only there differ.
        let r6b = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 3).into(), 40000);
        let g = IsnGenerator::new([1; 16]);
        let t = Instant::from_millis(1000);
        assert_ne!(g.isn(t, l6, r6), g.isn(t, l6, r6b));
        assert_ne!(g.ts_offset(l6, r6), g.ts_offset(l6, r6b));
    }
}
