//! IPv4 packets (RFC 791), without fragmentation or reassembly.
//!
//! [`Packet::new_checked`] validates the lengths (header at least 20 bytes, IHL >= 5, the
//! header and `total_len` inside the buffer, `total_len` >= header length); the buffer may be
//! longer than `total_len` (Ethernet padding) and [`Packet::payload`] stops at `total_len`.
//! [`Repr::parse`] additionally checks the version and the header checksum, skips options, and
//! rejects fragments with [`Error::Fragmented`]. [`Repr::emit`] writes a 20-byte header with DF
//! set and identification 0 (RFC 6864 4.1: atomic datagrams may use any ID).
//!
//! Not here: options on emit, DSCP/ECN (zero on emit, ignored on parse), IPv6 (`ipv6`).

pub use core::net::Ipv4Addr;

/// The protocol field (shared with IPv6's Next Header).
pub use crate::ip::Protocol;

use crate::{Checksum, Error, Field, checksum};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    use crate::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than the header
    /// (or than `total_len`, for the payload).
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer received from the network, checking its lengths (see the module doc).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the accessors cannot panic: `Truncated` if the buffer is shorter than 20
    /// bytes, the header length or `total_len`; `Malformed` if IHL < 5 or `total_len` is
    /// shorter than the header.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
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
    fn be16(&self, f: Field) -> u16 {
        let b = &self.data()[f];
        u16::from_be_bytes([b[0], b[1]])
    }
    fn addr(&self, f: Field) -> Ipv4Addr {
        let b = &self.data()[f];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The version field (4 for IPv4).
    pub fn version(&self) -> u8 {
        self.data()[field::VER_IHL] >> 4
    }
    /// The header length in bytes (IHL * 4).
    pub fn header_len(&self) -> u8 {
        (self.data()[field::VER_IHL] & 0x0f) * 4
    }
    /// The DSCP field.
    pub fn dscp(&self) -> u8 {
        self.data()[field::DSCP_ECN] >> 2
    }
    /// The ECN field.
    pub fn ecn(&self) -> u8 {
        self.data()[field::DSCP_ECN] & 0x03
    }
    /// The total length (header + payload).
    pub fn total_len(&self) -> u16 {
        self.be16(field::LENGTH)
    }
    /// The identification field.
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }
    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.be16(field::FLG_OFF) & FLAG_DF != 0
    }
    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.be16(field::FLG_OFF) & FLAG_MF != 0
    }
    /// The fragment offset in bytes (the field times 8).
    pub fn frag_offset(&self) -> u16 {
        (self.be16(field::FLG_OFF) & OFFSET_MASK) << 3
    }
    /// Whether this packet is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.be16(field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }
    /// The time-to-live field.
    pub fn hop_limit(&self) -> u8 {
        self.data()[field::TTL]
    }
    /// The protocol field.
    pub fn next_header(&self) -> Protocol {
        Protocol::from(self.data()[field::PROTOCOL])
    }
    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }
    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.addr(field::SRC_ADDR)
    }
    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.addr(field::DST_ADDR)
    }
    /// The options bytes (between the fixed header and the payload).
    pub fn options(&self) -> &[u8] {
        &self.data()[HEADER_LEN..usize::from(self.header_len())]
    }
    /// Whether the header checksum (over `header_len` bytes, options included) is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.data()[..usize::from(self.header_len())]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the header to `total_len` (padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[usize::from(self.header_len())..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    fn set_be16(&mut self, f: Field, v: u16) {
        self.data_mut()[f].copy_from_slice(&v.to_be_bytes());
    }
    fn set_flg_off(&mut self, mask: u16, v: u16) {
        let old = self.be16(field::FLG_OFF);
        self.set_be16(field::FLG_OFF, (old & !mask) | (v & mask));
    }

    /// Sets the version field.
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.data_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }
    /// Sets the header length in bytes (rounded down to a multiple of 4; at most 60).
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.data_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }
    /// Sets the DSCP field.
    pub fn set_dscp(&mut self, v: u8) {
        let b = &mut self.data_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (v << 2);
    }
    /// Sets the ECN field.
    pub fn set_ecn(&mut self, v: u8) {
        let b = &mut self.data_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (v & 0x03);
    }
    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        self.set_be16(field::LENGTH, v);
    }
    /// Sets the identification field.
    pub fn set_ident(&mut self, v: u16) {
        self.set_be16(field::IDENT, v);
    }
    /// Clears the flags (reserved, DF, MF) and the fragment offset.
    pub fn clear_flags(&mut self) {
        self.set_be16(field::FLG_OFF, 0);
    }
    /// Sets the Don't Fragment flag.
    pub fn set_dont_frag(&mut self, v: bool) {
        self.set_flg_off(FLAG_DF, if v { FLAG_DF } else { 0 });
    }
    /// Sets the More Fragments flag.
    pub fn set_more_frags(&mut self, v: bool) {
        self.set_flg_off(FLAG_MF, if v { FLAG_MF } else { 0 });
    }
    /// Sets the fragment offset in bytes (rounded down to a multiple of 8).
    pub fn set_frag_offset(&mut self, v: u16) {
        self.set_flg_off(OFFSET_MASK, v >> 3);
    }
    /// Sets the time-to-live field.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.data_mut()[field::TTL] = v;
    }
    /// Sets the protocol field.
    pub fn set_next_header(&mut self, v: Protocol) {
        self.data_mut()[field::PROTOCOL] = u8::from(v);
    }
    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_be16(field::CHECKSUM, v);
    }
    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.data_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.data_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }
    /// Computes and writes the header checksum (over `header_len` bytes).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(&self.data()[..usize::from(self.header_len())]);
        self.set_checksum(!sum);
    }
    /// The payload, mutably (from the end of the header to `total_len`).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &mut self.data_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of an IPv4 header, as far as sluice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: Protocol,
    /// Payload length (`total_len` minus the header, options included).
    pub payload_len: usize,
    /// Time to live.
    pub hop_limit: u8,
}

impl Repr {
    /// Parses a packet: lengths as in [`Packet::check_len`], version 4 (else `Malformed`),
    /// the header checksum when `checksum` is [`Checksum::Verify`] (else `Checksum`), and no
    /// fragments (else `Fragmented`, RFC 791 3.2: MF set or offset non-zero). Options are
    /// skipped.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>, checksum: Checksum) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::Malformed);
        }
        if checksum == Checksum::Verify && !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        if packet.is_fragment() {
            return Err(Error::Fragmented);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.next_header(),
            payload_len: usize::from(packet.total_len()) - usize::from(packet.header_len()),
            hop_limit: packet.hop_limit(),
        })
    }

    /// The length of the header [`Repr::emit`] writes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet [`Repr::emit`] describes (header + payload).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header (version 4, IHL 5, DSCP/ECN 0, DF, ident 0, no options) and its
    /// checksum; the payload is left alone. The checksum is computed whatever `checksum` says.
    ///
    /// Panics if the buffer is shorter than 20 bytes. A `payload_len` above 65515 cannot be
    /// encoded: `total_len` saturates at 65535 (the free functions of this crate check it and
    /// return `Malformed` first).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>, checksum: Checksum) {
        let _ = checksum;
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN as u8);
        packet.set_dscp(0);
        packet.set_ecn(0);
        let total = u16::try_from(self.buffer_len()).unwrap_or(u16::MAX);
        packet.set_total_len(total);
        packet.set_ident(0);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_hop_limit(self.hop_limit);
        packet.set_next_header(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The IPv4 header of a Linux SYN 198.51.100.1 -> 198.51.100.2 (tcp, 60 bytes, DF,
    // TTL 64), checksum 0xabe2 computed with python3 (RFC 1071 sum).
    const SYN_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x3a, 0x6f, 0x40, 0x00, 0x40, 0x06, 0xab, 0xe2, 0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33,
        0x64, 0x02,
    ];

    fn syn_packet() -> [u8; 60] {
        let mut buf = [0u8; 60];
        buf[..20].copy_from_slice(&SYN_HDR);
        buf
    }

    #[test]
    fn parse_captured() {
        let buf = syn_packet();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 60);
        assert_eq!(p.ident(), 0x3a6f);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.next_header(), Protocol::Tcp);
        assert_eq!(p.checksum(), 0xabe2);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(p.payload().len(), 40);
        let r = Repr::parse(&p, Checksum::Verify).unwrap();
        assert_eq!(
            r,
            Repr {
                src_addr: Ipv4Addr::new(198, 51, 100, 1),
                dst_addr: Ipv4Addr::new(198, 51, 100, 2),
                protocol: Protocol::Tcp,
                payload_len: 40,
                hop_limit: 64,
            }
        );
    }

    #[test]
    fn emit_then_parse() {
        let r = Repr {
            src_addr: Ipv4Addr::new(198, 51, 100, 1),
            dst_addr: Ipv4Addr::new(198, 51, 100, 2),
            protocol: Protocol::Tcp,
            payload_len: 40,
            hop_limit: 64,
        };
        let mut buf = [0xaau8; 60];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]), Checksum::Verify);
        // Same as the capture except ident 0 (and so the checksum).
        let mut expect = SYN_HDR;
        expect[4..6].fill(0);
        expect[10..12].copy_from_slice(&(0xabe2u16 + 0x3a6f).to_be_bytes());
        assert_eq!(&buf[..20], &expect);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p, Checksum::Verify), Ok(r));
    }

    #[test]
    fn flipped_bit_fails_checksum() {
        for bit in 0..160 {
            let mut buf = syn_packet();
            buf[bit / 8] ^= 1 << (bit % 8);
            let Ok(p) = Packet::new_checked(&buf[..]) else {
                continue;
            };
            assert!(!p.verify_checksum(), "bit {bit}");
            let r = Repr::parse(&p, Checksum::Verify);
            assert!(r.is_err(), "bit {bit}");
            if p.version() == 4 {
                assert_eq!(r, Err(Error::Checksum), "bit {bit}");
            }
        }
    }

    #[test]
    fn options_are_skipped() {
        // IHL 6 with a 4-byte option (NOP NOP NOP EOL), total 44.
        let mut buf = [0u8; 44];
        buf[..20].copy_from_slice(&SYN_HDR);
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&44u16.to_be_bytes());
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        let r = Repr::parse(&p, Checksum::Verify).unwrap();
        assert_eq!(r.payload_len, 20);
        assert_eq!(p.payload().len(), 20);
    }

    #[test]
    fn padding_is_excluded() {
        // Ethernet pads a 40-byte packet to 46 bytes.
        let mut buf = [0u8; 46];
        buf[..20].copy_from_slice(&SYN_HDR);
        buf[2..4].copy_from_slice(&40u16.to_be_bytes());
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload().len(), 20);
        let r = Repr::parse(&p, Checksum::Ignore).unwrap();
        assert_eq!(r.payload_len, 20);
    }

    #[test]
    fn length_checks() {
        let buf = syn_packet();
        for len in 0..20 {
            assert_eq!(Packet::new_checked(&buf[..len]), Err(Error::Truncated));
        }
        // total_len 60 but only 59 bytes.
        assert_eq!(Packet::new_checked(&buf[..59]), Err(Error::Truncated));
        for ihl in 0..5u8 {
            let mut b = buf;
            b[0] = 0x40 | ihl;
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed), "ihl {ihl}");
        }
        // IHL 15 = 60 bytes of header in a 40-byte buffer.
        let mut b = buf;
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..40]), Err(Error::Truncated));
        // total_len shorter than the header.
        let mut b = buf;
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed));
        // Version 6 in an IPv4 packet.
        let mut b = buf;
        b[0] = 0x65;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p, Checksum::Ignore), Err(Error::Malformed));
    }

    #[test]
    fn fragments_are_rejected() {
        for (flags, off) in [(0x20u8, 0u8), (0x00, 0x01), (0x40, 0xb9), (0x3f, 0xff)] {
            let mut buf = syn_packet();
            buf[6] = flags;
            buf[7] = off;
            let mut p = Packet::new_unchecked(&mut buf[..]);
            p.fill_checksum();
            let p = Packet::new_checked(&buf[..]).unwrap();
            assert!(p.is_fragment());
            assert_eq!(Repr::parse(&p, Checksum::Verify), Err(Error::Fragmented));
        }
        let mut buf = syn_packet();
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_frag_offset(1480);
        p.set_more_frags(true);
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.more_frags() && p.dont_frag());
    }

    #[test]
    fn protocol_roundtrip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Protocol::from(v)), v);
        }
    }

    use crate::strategies;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prop_parse_emit_roundtrip(
            src_addr in strategies::addr(),
            dst_addr in strategies::addr(),
            protocol in any::<u8>(),
            payload_len in 0usize..2000,
            hop_limit in any::<u8>(),
        ) {
            let r = Repr { src_addr, dst_addr, protocol: Protocol::from(protocol), payload_len, hop_limit };
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]), Checksum::Verify);
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.dont_frag() && p.ident() == 0 && p.header_len() == 20);
            prop_assert_eq!(Repr::parse(&p, Checksum::Verify), Ok(r));
            prop_assert!(crate::fuzz::ipv4(&buf));
        }

        #[test]
        fn prop_mutated_headers_never_panic(
            ver_ihl in any::<u8>(),
            total_len in any::<u16>(),
            flags in any::<u8>(),
            cut in 0usize..80,
            extra in proptest::collection::vec(any::<u8>(), 0..60),
        ) {
            let mut buf = syn_packet().to_vec();
            buf[0] = ver_ihl;
            buf[2..4].copy_from_slice(&total_len.to_be_bytes());
            buf[6] = flags;
            buf.extend_from_slice(&extra);
            buf.truncate(cut);
            crate::fuzz::ipv4(&buf);
            let _ = Packet::new_checked(&buf[..]).map(|p| Repr::parse(&p, Checksum::Verify));
            let _ = Repr::parse(&Packet::new_unchecked(&buf[..]), Checksum::Ignore);
        }
    }
}
