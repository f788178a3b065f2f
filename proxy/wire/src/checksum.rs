//! The Internet checksum (RFC 1071): the 16-bit one's complement of the one's complement sum
//! of the data taken as big-endian 16-bit words, and its incremental update (RFC 1624).
//!
//! Conventions (as in smoltcp): [`data`] and [`combine`] return the folded *sum*, not its
//! complement; the value written into a header is `!combine(..)`. A buffer that includes a
//! correct checksum field sums to `0xffff`.
//!
//! Not here: offload metadata.

use crate::Error;
use crate::ip::{IpAddr, Protocol};

/// Folds a wide one's complement accumulator into 16 bits (end-around carry, RFC 1071 4.1).
#[inline]
pub const fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Adds `data` to a running (unfolded) one's complement accumulator.
///
/// The data is summed as native-endian 32-bit words into a 64-bit accumulator, a loop the
/// compiler vectorizes. That is correct because 2^16 = 1 (mod 2^16 - 1), so 32-bit words fold
/// to the sum of their 16-bit halves (RFC 1071 2(C), "parallel summation"), and because a sum
/// taken in swapped byte order is the byte-swapped sum (RFC 1071 2(B)). An odd trailing byte is
/// padded with a zero byte (RFC 1071 1). `sum` must itself be below 2^63 (anything this crate
/// builds is).
#[inline]
pub fn accumulate(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    let mut acc = 0u64;
    for w in &mut words {
        // Cannot overflow below 2^32 words (16 GiB).
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut folded = fold(acc);
    if cfg!(target_endian = "little") {
        folded = folded.swap_bytes();
    }
    sum += u64::from(folded);
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// The folded one's complement sum of `data` (not complemented).
#[inline]
pub fn data(data: &[u8]) -> u16 {
    fold(accumulate(0, data))
}

/// Combines folded sums into one folded sum (not complemented).
#[inline]
pub fn combine(checksums: &[u16]) -> u16 {
    let mut sum = 0u64;
    for c in checksums {
        sum += u64::from(*c);
    }
    fold(sum)
}

/// The unfolded partial sum of the pseudo-header of an upper-layer packet of `len` bytes of
/// `protocol` from `src` to `dst`: for IPv4 (RFC 9293 3.1, RFC 768) the addresses, zero, the
/// protocol and the 16-bit length; for IPv6 (RFC 8200 8.1) the addresses, the 32-bit length,
/// zero and the Next Header. Both sum to the address words plus protocol plus length, so one
/// path serves both. `Malformed` if the addresses are of different families.
#[inline]
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: Protocol, len: u32) -> Result<u64, Error> {
    let mut sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => accumulate(accumulate(0, &s.octets()), &d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => accumulate(accumulate(0, &s.octets()), &d.octets()),
        _ => return Err(Error::Malformed),
    };
    sum += u64::from(u8::from(protocol));
    sum += u64::from(len >> 16);
    sum += u64::from(len & 0xffff);
    Ok(sum)
}

/// The folded sum of `data` together with its pseudo-header (length `data.len()`, see
/// [`pseudo_header`]); `Malformed` if the addresses are of different families.
#[inline]
pub fn with_pseudo_header(src: IpAddr, dst: IpAddr, protocol: Protocol, data: &[u8]) -> Result<u16, Error> {
    // An upper-layer packet is at most 65535 bytes in any packet this crate parses (no
    // jumbograms); saturate, never wrap.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    Ok(fold(accumulate(pseudo_header(src, dst, protocol, len)?, data)))
}

/// Incremental update of a header checksum when one 16-bit word changes from `old` to
/// `new` (RFC 1624 3, eqn. 3: `HC' = ~(~HC + ~m + m')`). `checksum` and the result are the
/// values as stored in the header (complemented).
#[inline]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive reference: 16-bit words, one at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            sum += u32::from(data[i]) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (folded).
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(!data(&bytes), 0x220d);
        // Byte-order independence (RFC 1071 2(B)): swapped bytes give the swapped sum.
        let swapped = [0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6];
        assert_eq!(data(&swapped), 0xf2dd);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn matches_reference_at_every_length_and_alignment() {
        let mut buf = [0u8; 300];
        let mut x = 0x1234_5678u32;
        for b in buf.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 24) as u8;
        }
        for start in 0..9 {
            for end in start..buf.len() {
                assert_eq!(data(&buf[start..end]), reference(&buf[start..end]), "{start}..{end}");
            }
        }
        // All-ones data exercises the carries.
        let ones = [0xffu8; 257];
        for end in 0..ones.len() {
            assert_eq!(data(&ones[..end]), reference(&ones[..end]));
        }
    }

    #[test]
    fn combine_and_fold() {
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(combine(&[data(&[1, 2, 3, 4]), data(&[5, 6])]), data(&[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn rfc1624_incremental_update() {
        // RFC 1624 4: HC = 0xdd2f, m changes 0x5555 -> 0x3285, HC' = 0x0000.
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
        // An update gives what a full recomputation gives.
        let mut hdr = [
            0x45u8, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xac, 0x10, 0x0a, 0x63, 0xac,
            0x10, 0x0a, 0x0c,
        ];
        let c = !data(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(c, 0xb1e6); // the classic example header
        let updated = update(c, 0x4006, 0x3f06); // TTL 64 -> 63
        hdr[8] = 0x3f;
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, !data(&hdr));
    }

    #[test]
    fn pseudo_header_sum() {
        use core::net::{Ipv4Addr, Ipv6Addr};
        let src = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        let dst = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
        let expect: u64 = 0xc633 + 0x6401 + 0xc633 + 0x6402 + 6 + 20;
        assert_eq!(pseudo_header(src, dst, Protocol::Tcp, 20).map(fold), Ok(fold(expect)));
        assert_eq!(pseudo_header(src, dst, Protocol::Tcp, 0x1_0002).map(fold), Ok(fold(expect - 20 + 1 + 2)));
        // RFC 8200 8.1: 2001:db8:100::1 -> 2001:db8:100::2, Next Header 6, length 40.
        let src6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1));
        let dst6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2));
        let expect6: u64 = 2 * (0x2001 + 0x0db8 + 0x0100) + 1 + 2 + 6 + 40;
        assert_eq!(pseudo_header(src6, dst6, Protocol::Tcp, 40).map(fold), Ok(fold(expect6)));
        // Mixed families have no pseudo-header.
        assert_eq!(pseudo_header(src, dst6, Protocol::Tcp, 20), Err(Error::Malformed));
        assert_eq!(with_pseudo_header(src6, dst, Protocol::Tcp, &[]), Err(Error::Malformed));
    }
}
