//! The two ICMP messages that carry a path MTU (RFC 1191, RFC 8201), reduced to what a TCP
//! sender needs to act on them (RFC 5927 4.1 and 5.2):
//! - ICMPv4 Destination Unreachable, code 4 "fragmentation needed and DF set" (RFC 792; RFC
//!   1191 4: the Next-Hop MTU in the low-order 16 bits of the second word);
//! - ICMPv6 Packet Too Big (RFC 4443 3.2: the 32-bit MTU in the second word).
//!
//! Both quote the packet that did not fit: its IP header and at least the first 8 bytes of its
//! TCP header (RFC 792 "the first 64 bits of the original datagram's data"), which hold the
//! ports and the sequence number. [`Repr::parse_v4`] and [`Repr::parse_v6`] verify the
//! message's checksum (ICMPv4 over the message, RFC 792; ICMPv6 with the pseudo-header, RFC
//! 4443 2.3) and return the MTU and the quoted packet's addresses, ports and sequence number.
//! Another ICMP type (or an ICMPv4 Destination Unreachable of another code), or a quoted packet
//! that is not TCP or is a non-first fragment, is `Unsupported`; a quote too short to hold the
//! 8 bytes is `Truncated`. Never panics.
//!
//! [`Repr::emit`] writes such a message with a minimal quote (the IP header and 8 bytes of
//! TCP), for tests that play the router.
//!
//! What this is not: any other ICMP message (echo, NDP, ...: the kernel's), and the checks
//! that the quoted flow is ours and its sequence number in flight (the TCP stack's).

use crate::ip::{self, IpAddr, Protocol, Version};
use crate::{Checksum, Error, checksum, ipv4, ipv6};

/// Length of the ICMP header of both messages (type, code, checksum, one 32-bit word).
pub const HEADER_LEN: usize = 8;

/// Bytes of the quoted TCP header this module needs: source and destination ports and the
/// sequence number.
pub const QUOTED_TCP_LEN: usize = 8;

/// ICMPv4 type 3, Destination Unreachable (RFC 792).
pub const V4_DEST_UNREACHABLE: u8 = 3;
/// ICMPv4 Destination Unreachable code 4, fragmentation needed and DF set (RFC 792, RFC 1191).
pub const V4_FRAG_NEEDED: u8 = 4;
/// ICMPv6 type 2, Packet Too Big (RFC 4443 3.2).
pub const V6_PACKET_TOO_BIG: u8 = 2;

mod field {
    use crate::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// ICMPv4: "unused" (2 bytes) then the Next-Hop MTU (RFC 1191 4).
    pub const MTU_V4: Field = 6..8;
    /// ICMPv6: the MTU (RFC 4443 3.2).
    pub const MTU_V6: Field = 4..8;
}

/// What a path-MTU message says about the packet it quotes (a packet we sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// The quoted packet's source address (ours).
    pub src_addr: IpAddr,
    /// The quoted packet's destination address (the peer's).
    pub dst_addr: IpAddr,
    /// The quoted TCP source port (ours).
    pub src_port: u16,
    /// The quoted TCP destination port (the peer's).
    pub dst_port: u16,
    /// The quoted TCP sequence number.
    pub seq_number: u32,
}

/// A validated path-MTU message: ICMPv4 fragmentation needed or ICMPv6 Packet Too Big,
/// according to the family of the quoted addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The MTU the message reports (ICMPv4: 16 bits, 0 from routers older than RFC 1191).
    pub mtu: u32,
    /// The quoted packet.
    pub quoted: Quoted,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Ports and sequence number from the first 8 bytes of a quoted TCP header.
fn quoted_tcp(src_addr: IpAddr, dst_addr: IpAddr, tcp: &[u8]) -> Result<Quoted, Error> {
    let t = tcp.get(..QUOTED_TCP_LEN).ok_or(Error::Truncated)?;
    Ok(Quoted {
        src_addr,
        dst_addr,
        src_port: be16(&t[0..2]),
        dst_port: be16(&t[2..4]),
        seq_number: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
    })
}

/// The quoted IPv4 packet: its header must be complete (options included) and followed by 8
/// bytes of TCP. Its checksum is not verified (the quote is as the router received it).
fn quoted_v4(q: &[u8]) -> Result<Quoted, Error> {
    if q.len() < ipv4::HEADER_LEN {
        return Err(Error::Truncated);
    }
    let p = ipv4::Packet::new_unchecked(q);
    if p.version() != 4 {
        return Err(Error::Malformed);
    }
    let ihl = usize::from(p.header_len());
    if ihl < ipv4::HEADER_LEN {
        return Err(Error::Malformed);
    }
    // A non-first fragment quotes no TCP header.
    if p.next_header() != Protocol::Tcp || p.frag_offset() != 0 {
        return Err(Error::Unsupported);
    }
    let tcp = q.get(ihl..).ok_or(Error::Truncated)?;
    quoted_tcp(p.src_addr().into(), p.dst_addr().into(), tcp)
}

/// The quoted IPv6 packet: its fixed header, any extension headers (skipped as in
/// [`ipv6::upper_layer`], bounded by the quote), then 8 bytes of TCP.
fn quoted_v6(q: &[u8]) -> Result<Quoted, Error> {
    if q.len() < ipv6::HEADER_LEN {
        return Err(Error::Truncated);
    }
    let p = ipv6::Packet::new_unchecked(q);
    if p.version() != 6 {
        return Err(Error::Malformed);
    }
    let after = &q[ipv6::HEADER_LEN..];
    let (protocol, off) = ipv6::upper_layer(p.next_header(), after)?;
    if protocol != Protocol::Tcp {
        return Err(Error::Unsupported);
    }
    quoted_tcp(p.src_addr().into(), p.dst_addr().into(), &after[off..])
}

impl Repr {
    /// The IP version of the message (and of the quoted packet).
    pub const fn version(&self) -> Version {
        Version::of(&self.quoted.src_addr)
    }

    /// Parses an ICMPv4 message (the IPv4 payload): Destination Unreachable code 4 only.
    pub fn parse_v4(data: &[u8], checksum: Checksum) -> Result<Repr, Error> {
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if data[field::TYPE] != V4_DEST_UNREACHABLE || data[field::CODE] != V4_FRAG_NEEDED {
            return Err(Error::Unsupported);
        }
        if checksum == Checksum::Verify && checksum::data(data) != 0xffff {
            return Err(Error::Checksum);
        }
        let quoted = quoted_v4(&data[HEADER_LEN..])?;
        Ok(Repr { mtu: u32::from(be16(&data[field::MTU_V4])), quoted })
    }

    /// Parses an ICMPv6 message (the upper-layer packet of an IPv6 packet from `src` to
    /// `dst`): Packet Too Big only (its Code is ignored, RFC 4443 3.2).
    pub fn parse_v6(data: &[u8], src: ipv6::Ipv6Addr, dst: ipv6::Ipv6Addr, checksum: Checksum) -> Result<Repr, Error> {
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if data[field::TYPE] != V6_PACKET_TOO_BIG {
            return Err(Error::Unsupported);
        }
        if checksum == Checksum::Verify
            && checksum::with_pseudo_header(src.into(), dst.into(), Protocol::Icmpv6, data) != Ok(0xffff)
        {
            return Err(Error::Checksum);
        }
        let quoted = quoted_v6(&data[HEADER_LEN..])?;
        let m = &data[field::MTU_V6];
        Ok(Repr { mtu: u32::from_be_bytes([m[0], m[1], m[2], m[3]]), quoted })
    }

    /// Parses the ICMP message `data` carried by `ip` (ICMPv4 in IPv4, ICMPv6 in IPv6, else
    /// `Unsupported`).
    pub fn parse(ip: &ip::Repr, data: &[u8], checksum: Checksum) -> Result<Repr, Error> {
        match ip {
            ip::Repr::V4(r) if r.protocol == Protocol::Icmp => Repr::parse_v4(data, checksum),
            ip::Repr::V6(r) if r.next_header == Protocol::Icmpv6 => {
                Repr::parse_v6(data, r.src_addr, r.dst_addr, checksum)
            }
            _ => Err(Error::Unsupported),
        }
    }

    /// The IP protocol that carries the message: ICMP or ICMPv6.
    pub const fn protocol(&self) -> Protocol {
        match self.version() {
            Version::V4 => Protocol::Icmp,
            Version::V6 => Protocol::Icmpv6,
        }
    }

    /// The length [`Repr::emit`] writes: the ICMP header, the quoted IP header, 8 bytes of TCP.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.version().header_len() + QUOTED_TCP_LEN
    }

    /// Writes the message, sent from `src` to `dst` (for the ICMPv6 pseudo-header), quoting an
    /// IP header (hop limit 64, claiming a packet of `mtu + 1` bytes: the one that did not fit)
    /// and 8 bytes of TCP; returns its length. `Malformed` if `src`, `dst` and the quoted
    /// addresses are not all of one family, or an ICMPv4 MTU does not fit 16 bits; `Truncated`
    /// if `buf` is too small. Never panics.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<usize, Error> {
        let version = self.version();
        if Version::of(&src) != version || Version::of(&dst) != version {
            return Err(Error::Malformed);
        }
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(Error::Truncated)?;
        out[..HEADER_LEN].fill(0);
        match version {
            Version::V4 => {
                let mtu = u16::try_from(self.mtu).map_err(|_| Error::Malformed)?;
                out[field::TYPE] = V4_DEST_UNREACHABLE;
                out[field::CODE] = V4_FRAG_NEEDED;
                out[field::MTU_V4].copy_from_slice(&mtu.to_be_bytes());
            }
            Version::V6 => {
                out[field::TYPE] = V6_PACKET_TOO_BIG;
                out[field::MTU_V6].copy_from_slice(&self.mtu.to_be_bytes());
            }
        }
        let q = &self.quoted;
        let header_len = version.header_len();
        let claimed = (self.mtu as usize).saturating_add(1).saturating_sub(header_len);
        let quoted_ip = ip::Repr::new(q.src_addr, q.dst_addr, Protocol::Tcp, 0, 64)?;
        let quoted_ip = quoted_ip.with_payload(Protocol::Tcp, claimed.min(quoted_ip.max_payload_len()));
        quoted_ip.emit(&mut out[HEADER_LEN..])?;
        let tcp = &mut out[HEADER_LEN + header_len..];
        tcp[0..2].copy_from_slice(&q.src_port.to_be_bytes());
        tcp[2..4].copy_from_slice(&q.dst_port.to_be_bytes());
        tcp[4..8].copy_from_slice(&q.seq_number.to_be_bytes());
        let sum = match version {
            Version::V4 => checksum::data(out),
            Version::V6 => checksum::with_pseudo_header(src, dst, Protocol::Icmpv6, out)?,
        };
        out[field::CHECKSUM].copy_from_slice(&(!sum).to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests;
