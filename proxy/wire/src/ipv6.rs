//! IPv6 packets (RFC 8200): the fixed header (section 3) and a bounded walk over the extension
//! headers a host must skip to find the upper-layer header (section 4).
//!
//! [`Packet::new_checked`] validates the lengths (the 40-byte fixed header and `payload_len`
//! inside the buffer); the buffer may be longer (Ethernet padding) and [`Packet::payload`]
//! stops at `payload_len`. [`Repr::parse`] additionally checks the version, rejects a Payload
//! Length of zero (a jumbogram, RFC 2675, or an empty packet: [`Error::Unsupported`]) and walks
//! the extension headers with [`upper_layer`]: Hop-by-Hop Options (0, first only), Routing (43)
//! and Destination Options (60) are skipped by their length, at most [`MAX_EXT_HEADERS`] of
//! them and never past the payload (else [`Error::Malformed`]); a Fragment header (44) is
//! [`Error::Fragmented`]; an upper layer other than TCP or ICMPv6 is [`Error::Unsupported`].
//! [`Repr::emit`] writes the fixed header only (traffic class and flow label zero).
//!
//! Not here: emitting extension headers, fragments, jumbograms (RFC 2675), ECN.

pub use core::net::Ipv6Addr;

use crate::ip::Protocol;
use crate::{Error, Field};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Most extension headers [`upper_layer`] skips before giving up (`Malformed`): a bound on
/// the work one packet can cause (a chain of empty Destination Options headers loops cheaply).
pub const MAX_EXT_HEADERS: usize = 8;

/// Next Header values of the extension headers this module knows (IANA "IPv6 Extension
/// Header Types").
pub mod ext {
    /// Hop-by-Hop Options (RFC 8200 4.3): only right after the fixed header.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing (RFC 8200 4.4).
    pub const ROUTING: u8 = 43;
    /// Fragment (RFC 8200 4.5).
    pub const FRAGMENT: u8 = 44;
    /// Destination Options (RFC 8200 4.6).
    pub const DESTINATION_OPTIONS: u8 = 60;
}

mod field {
    use crate::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Walks the extension headers at the start of `data` (the bytes after the fixed header that
/// belong to the packet) when the fixed header's Next Header is `next_header`. Returns the
/// upper-layer protocol (TCP or ICMPv6) and the offset of its header in `data`.
///
/// Errors: `Fragmented` at a Fragment header; `Unsupported` for an upper layer other than TCP
/// or ICMPv6 (ESP, AH, UDP, No Next Header, ...); `Malformed` for a Hop-by-Hop header that is
/// not first (RFC 8200 4.1), more than [`MAX_EXT_HEADERS`] headers, or a header that runs past
/// `data`. Never panics.
pub fn upper_layer(next_header: u8, data: &[u8]) -> Result<(Protocol, usize), Error> {
    let mut next = next_header;
    let mut off = 0usize;
    for count in 0..=MAX_EXT_HEADERS {
        match next {
            ext::HOP_BY_HOP | ext::ROUTING | ext::DESTINATION_OPTIONS => {
                if count == MAX_EXT_HEADERS || (next == ext::HOP_BY_HOP && count != 0) {
                    return Err(Error::Malformed);
                }
                // Next Header, Hdr Ext Len: the length in 8-octet units, not counting the first 8.
                let hdr = data.get(off..off + 2).ok_or(Error::Malformed)?;
                let len = (usize::from(hdr[1]) + 1) * 8;
                if off + len > data.len() {
                    return Err(Error::Malformed);
                }
                next = hdr[0];
                off += len;
            }
            ext::FRAGMENT => return Err(Error::Fragmented),
            _ => {
                return match Protocol::from(next) {
                    p @ (Protocol::Tcp | Protocol::Icmpv6) => Ok((p, off)),
                    _ => Err(Error::Unsupported),
                };
            }
        }
    }
    Err(Error::Malformed)
}

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than the fixed
    /// header (or than `payload_len` after it, for the payload).
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer received from the network, checking its lengths (see the module doc).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the accessors cannot panic: `Truncated` if the buffer is shorter than 40
    /// bytes or than 40 + `payload_len`.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn ver_tc_flow(&self) -> u32 {
        let b = &self.data()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    fn addr(&self, f: Field) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.data()[f]);
        Ipv6Addr::from(a)
    }

    /// The version field (6 for IPv6).
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }
    /// The Traffic Class field.
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }
    /// The 20-bit Flow Label field.
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }
    /// The Payload Length field: the bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        let b = &self.data()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }
    /// The Next Header field of the fixed header (raw: extension headers are not protocols).
    pub fn next_header(&self) -> u8 {
        self.data()[field::NXT_HDR]
    }
    /// The Hop Limit field.
    pub fn hop_limit(&self) -> u8 {
        self.data()[field::HOP_LIMIT]
    }
    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        self.addr(field::SRC_ADDR)
    }
    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.addr(field::DST_ADDR)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the fixed header to `payload_len` (extension headers
    /// included, padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    fn set_ver_tc_flow(&mut self, v: u32) {
        self.data_mut()[field::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the version field.
    pub fn set_version(&mut self, v: u8) {
        let w = self.ver_tc_flow();
        self.set_ver_tc_flow((w & 0x0fff_ffff) | (u32::from(v & 0x0f) << 28));
    }
    /// Sets the Traffic Class field.
    pub fn set_traffic_class(&mut self, v: u8) {
        let w = self.ver_tc_flow();
        self.set_ver_tc_flow((w & 0xf00f_ffff) | (u32::from(v) << 20));
    }
    /// Sets the Flow Label field (the low 20 bits of `v`).
    pub fn set_flow_label(&mut self, v: u32) {
        let w = self.ver_tc_flow();
        self.set_ver_tc_flow((w & 0xfff0_0000) | (v & 0x000f_ffff));
    }
    /// Sets the Payload Length field.
    pub fn set_payload_len(&mut self, v: u16) {
        self.data_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the Next Header field.
    pub fn set_next_header(&mut self, v: u8) {
        self.data_mut()[field::NXT_HDR] = v;
    }
    /// Sets the Hop Limit field.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.data_mut()[field::HOP_LIMIT] = v;
    }
    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.data_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.data_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of an IPv6 header and its extension headers, as far as sluice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// The upper-layer protocol (after any extension headers).
    pub next_header: Protocol,
    /// Length of the upper-layer packet: the payload after the extension headers.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Offset of the upper-layer header from the start of the packet: [`HEADER_LEN`] plus the
    /// extension headers skipped on parse. Emit writes none, whatever this says: use
    /// [`HEADER_LEN`] for a repr to emit.
    pub payload_offset: usize,
}

impl Repr {
    /// Parses a packet: lengths as in [`Packet::check_len`], version 6 (else `Malformed`),
    /// Payload Length non-zero (else `Unsupported`), then the extension headers (see
    /// [`upper_layer`]). Never panics.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        if packet.payload_len() == 0 {
            return Err(Error::Unsupported);
        }
        let payload = packet.payload();
        let (next_header, ext_len) = upper_layer(packet.next_header(), payload)?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header,
            payload_len: payload.len() - ext_len,
            hop_limit: packet.hop_limit(),
            payload_offset: HEADER_LEN + ext_len,
        })
    }

    /// The length of the header [`Repr::emit`] writes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet [`Repr::emit`] describes (fixed header + payload).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 40-byte fixed header (version 6, traffic class and flow label 0, Next Header
    /// `next_header`, Payload Length `payload_len`); the payload is left alone.
    ///
    /// Panics if the buffer is shorter than 40 bytes. A `payload_len` above 65535 cannot be
    /// encoded: the field saturates (the free functions of this crate return `Malformed`
    /// first).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_ver_tc_flow(6 << 28);
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(u8::from(self.next_header));
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests;
