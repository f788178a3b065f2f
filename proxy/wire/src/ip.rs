//! The IP layer whatever its version: the protocol numbers both versions share (IANA
//! "Assigned Internet Protocol Numbers", the IPv4 Protocol and IPv6 Next Header field), the
//! version itself, and [`Repr`], an IPv4 (RFC 791) or IPv6 (RFC 8200) header, which is what
//! the frame functions and the TCP stack take so that one code path serves both.
//!
//! Not here: the headers themselves (`ipv4`, `ipv6`).

pub use core::net::IpAddr;

use crate::{Checksum, Error, ethernet, ipv4, ipv6};

/// The IPv4 Protocol / IPv6 Next Header field, for the upper layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// 1
    Icmp,
    /// 6
    Tcp,
    /// 17
    Udp,
    /// 58 (RFC 4443)
    Icmpv6,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for Protocol {
    fn from(v: u8) -> Self {
        match v {
            1 => Protocol::Icmp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            58 => Protocol::Icmpv6,
            other => Protocol::Unknown(other),
        }
    }
}

impl From<Protocol> for u8 {
    fn from(v: Protocol) -> u8 {
        match v {
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmpv6 => 58,
            Protocol::Unknown(other) => other,
        }
    }
}

/// An IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

impl Version {
    /// The version of `addr`.
    pub const fn of(addr: &IpAddr) -> Version {
        match addr {
            IpAddr::V4(_) => Version::V4,
            IpAddr::V6(_) => Version::V6,
        }
    }
    /// The length of the IP header this crate emits: 20 or 40 bytes.
    pub const fn header_len(self) -> usize {
        match self {
            Version::V4 => ipv4::HEADER_LEN,
            Version::V6 => ipv6::HEADER_LEN,
        }
    }
    /// The smallest path MTU a host needs to accept: 576 for IPv4 (the datagram every host
    /// must accept, RFC 791 / RFC 1122 3.3.3, the floor RFC 1191 plateaus and Linux's
    /// `min_pmtu` stay near), 1280 for IPv6 (RFC 8200 5, RFC 8201 4).
    pub const fn min_mtu(self) -> usize {
        match self {
            Version::V4 => 576,
            Version::V6 => 1280,
        }
    }
    /// The EtherType that carries this version.
    pub const fn ethertype(self) -> ethernet::EtherType {
        match self {
            Version::V4 => ethernet::EtherType::Ipv4,
            Version::V6 => ethernet::EtherType::Ipv6,
        }
    }
}

/// An IPv4 or an IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    /// IPv4.
    V4(ipv4::Repr),
    /// IPv6.
    V6(ipv6::Repr),
}

impl From<ipv4::Repr> for Repr {
    fn from(r: ipv4::Repr) -> Repr {
        Repr::V4(r)
    }
}

impl From<ipv6::Repr> for Repr {
    fn from(r: ipv6::Repr) -> Repr {
        Repr::V6(r)
    }
}

impl Repr {
    /// A header from `src` to `dst` (both of one family, else `Malformed`) carrying
    /// `payload_len` bytes of `protocol`.
    pub fn new(src: IpAddr, dst: IpAddr, protocol: Protocol, payload_len: usize, hop_limit: u8) -> Result<Repr, Error> {
        match (src, dst) {
            (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
                Ok(Repr::V4(ipv4::Repr { src_addr, dst_addr, protocol, payload_len, hop_limit }))
            }
            (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => Ok(Repr::V6(ipv6::Repr {
                src_addr,
                dst_addr,
                next_header: protocol,
                payload_len,
                hop_limit,
                payload_offset: ipv6::HEADER_LEN,
            })),
            _ => Err(Error::Malformed),
        }
    }

    /// Parses the IP packet at the start of `data` for a frame of type `ethertype` (IPv4 or
    /// IPv6, else `Unsupported`), with the header checksum verified as `checksum` says (IPv6
    /// has none). Returns the repr and the upper-layer packet (options, extension headers and
    /// padding excluded). Never panics.
    pub fn parse(ethertype: ethernet::EtherType, data: &[u8], checksum: Checksum) -> Result<(Repr, &[u8]), Error> {
        match ethertype {
            ethernet::EtherType::Ipv4 => {
                let packet = ipv4::Packet::new_checked(data)?;
                let repr = ipv4::Repr::parse(&packet, checksum)?;
                Ok((Repr::V4(repr), packet.payload()))
            }
            ethernet::EtherType::Ipv6 => {
                let packet = ipv6::Packet::new_checked(data)?;
                let repr = ipv6::Repr::parse(&packet)?;
                // In bounds: parse checked that the extension headers lie inside the payload.
                let upper = packet.payload().get(repr.payload_offset - ipv6::HEADER_LEN..).ok_or(Error::Malformed)?;
                Ok((Repr::V6(repr), upper))
            }
            _ => Err(Error::Unsupported),
        }
    }

    /// The IP version.
    pub const fn version(&self) -> Version {
        match self {
            Repr::V4(_) => Version::V4,
            Repr::V6(_) => Version::V6,
        }
    }
    /// The source address.
    pub fn src_addr(&self) -> IpAddr {
        match self {
            Repr::V4(r) => IpAddr::V4(r.src_addr),
            Repr::V6(r) => IpAddr::V6(r.src_addr),
        }
    }
    /// The destination address.
    pub fn dst_addr(&self) -> IpAddr {
        match self {
            Repr::V4(r) => IpAddr::V4(r.dst_addr),
            Repr::V6(r) => IpAddr::V6(r.dst_addr),
        }
    }
    /// The upper-layer protocol (IPv4 Protocol, IPv6 Next Header after extension headers).
    pub const fn protocol(&self) -> Protocol {
        match self {
            Repr::V4(r) => r.protocol,
            Repr::V6(r) => r.next_header,
        }
    }
    /// The length of the upper-layer packet.
    pub const fn payload_len(&self) -> usize {
        match self {
            Repr::V4(r) => r.payload_len,
            Repr::V6(r) => r.payload_len,
        }
    }
    /// The TTL (IPv4) or Hop Limit (IPv6).
    pub const fn hop_limit(&self) -> u8 {
        match self {
            Repr::V4(r) => r.hop_limit,
            Repr::V6(r) => r.hop_limit,
        }
    }
    /// The length of the header [`Repr::emit`] writes: 20 or 40 bytes.
    pub const fn header_len(&self) -> usize {
        self.version().header_len()
    }
    /// The length of the whole packet [`Repr::emit`] describes.
    pub const fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len()
    }
    /// The largest upper-layer packet the header can describe: 65515 bytes in IPv4 (Total
    /// Length counts the header), 65535 in IPv6 (Payload Length does not).
    pub const fn max_payload_len(&self) -> usize {
        match self {
            Repr::V4(_) => u16::MAX as usize - ipv4::HEADER_LEN,
            Repr::V6(_) => u16::MAX as usize,
        }
    }

    /// This header carrying `payload_len` bytes of `protocol` (and, for IPv6, written without
    /// extension headers).
    #[must_use]
    pub const fn with_payload(self, protocol: Protocol, payload_len: usize) -> Repr {
        match self {
            Repr::V4(r) => Repr::V4(ipv4::Repr { protocol, payload_len, ..r }),
            Repr::V6(r) => {
                Repr::V6(ipv6::Repr { next_header: protocol, payload_len, payload_offset: ipv6::HEADER_LEN, ..r })
            }
        }
    }

    /// The header of an answer to this packet: addresses swapped, hop limit 64, carrying
    /// `payload_len` bytes of `protocol`.
    #[must_use]
    pub const fn reply(&self, protocol: Protocol, payload_len: usize) -> Repr {
        match *self {
            Repr::V4(r) => Repr::V4(ipv4::Repr {
                src_addr: r.dst_addr,
                dst_addr: r.src_addr,
                protocol,
                payload_len,
                hop_limit: 64,
            }),
            Repr::V6(r) => Repr::V6(ipv6::Repr {
                src_addr: r.dst_addr,
                dst_addr: r.src_addr,
                next_header: protocol,
                payload_len,
                hop_limit: 64,
                payload_offset: ipv6::HEADER_LEN,
            }),
        }
    }

    /// Writes the header (IPv4 with its checksum; IPv6 without extension headers) at the start
    /// of `buf` and returns its length. `Truncated` if `buf` is shorter than the header,
    /// `Malformed` if `payload_len` exceeds [`Repr::max_payload_len`]. Never panics.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.payload_len() > self.max_payload_len() {
            return Err(Error::Malformed);
        }
        let header = buf.get_mut(..self.header_len()).ok_or(Error::Truncated)?;
        match self {
            Repr::V4(r) => r.emit(&mut ipv4::Packet::new_unchecked(header), Checksum::Verify),
            Repr::V6(r) => r.emit(&mut ipv6::Packet::new_unchecked(header)),
        }
        Ok(self.header_len())
    }
}
