//! Ethernet II frames (IEEE 802.3 with an EtherType, no 802.1Q tag handling, no FCS: AF_XDP
//! hands us frames without it).
//!
//! A frame is a 14-byte header (destination, source, EtherType) and a payload. A VLAN-tagged
//! frame parses as [`EtherType::Unknown(0x8100)`](EtherType::Unknown). Short frames are not
//! padded to 60 bytes on emit: the NIC (or veth) does that.

use crate::{Error, Field};

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Address = Address([0xff; 6]);

    /// Reads an address from the first 6 bytes of `data`; `None` if `data` is shorter.
    pub fn from_bytes(data: &[u8]) -> Option<Address> {
        let b: [u8; 6] = data.get(..6)?.try_into().ok()?;
        Some(Address(b))
    }
    /// The address's bytes.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }
    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    /// Whether the group bit is set (multicast, including broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    /// Whether this is a unicast address.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// The EtherType field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    /// 0x0800
    Ipv4,
    /// 0x0806
    Arp,
    /// 0x86dd
    Ipv6,
    /// Anything else (including 802.1Q tags, 0x8100).
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = 14;

mod field {
    use crate::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking its length; accessors panic if it is shorter than
    /// [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer, checking that it holds at least a header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Err(Truncated)` if the buffer is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN { Err(Error::Truncated) } else { Ok(()) }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The header length (always [`HEADER_LEN`]).
    pub const fn header_len() -> usize {
        HEADER_LEN
    }

    /// The total frame length for a payload of `payload_len` bytes.
    pub const fn buffer_len(payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    fn get(&self, f: Field) -> &[u8] {
        &self.buffer.as_ref()[f]
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Address {
        let b = self.get(field::DESTINATION);
        Address([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    /// The source address.
    pub fn src_addr(&self) -> Address {
        let b = self.get(field::SOURCE);
        Address([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    /// The EtherType.
    pub fn ethertype(&self) -> EtherType {
        let b = self.get(field::ETHERTYPE);
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// The payload (everything after the header, including any padding).
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    fn get_mut(&mut self, f: Field) -> &mut [u8] {
        &mut self.buffer.as_mut()[f]
    }
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Address) {
        self.get_mut(field::DESTINATION).copy_from_slice(&addr.0);
    }
    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Address) {
        self.get_mut(field::SOURCE).copy_from_slice(&addr.0);
    }
    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.get_mut(field::ETHERTYPE).copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }
    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source MAC.
    pub src_addr: Address,
    /// Destination MAC.
    pub dst_addr: Address,
    /// EtherType.
    pub ethertype: EtherType,
}

impl Repr {
    /// Parses a checked frame. Never fails once `new_checked` succeeded; the `Result` re-checks
    /// the length so that a `new_unchecked` view cannot make it panic either.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&T>) -> Result<Repr, Error> {
        frame.check_len()?;
        Ok(Repr { src_addr: frame.src_addr(), dst_addr: frame.dst_addr(), ethertype: frame.ethertype() })
    }

    /// The header length ([`HEADER_LEN`]).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The frame length for a payload of `payload_len` bytes.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Writes the header. Panics if the frame's buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, frame: &mut Frame<&mut T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A frame as captured on a veth: ARP-less IPv4, first bytes of the IP header follow.
    const FRAME: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x00, // IPv4
        0x45, 0x00, 0x00, 0x3c,
    ];

    #[test]
    fn parse_captured() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), Address([2, 0, 0, 0, 0, 2]));
        assert_eq!(f.src_addr(), Address([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload(), &[0x45, 0x00, 0x00, 0x3c]);
        let r = Repr::parse(&f).unwrap();
        assert_eq!(r.ethertype, EtherType::Ipv4);
        assert_eq!(r.src_addr.to_string(), "02:00:00:00:00:01");
        assert!(r.src_addr.is_unicast());
        assert!(Address::BROADCAST.is_broadcast() && Address::BROADCAST.is_multicast());
    }

    #[test]
    fn emit_matches_captured() {
        let mut buf = FRAME;
        buf[..14].fill(0);
        let r = Repr {
            src_addr: Address([2, 0, 0, 0, 0, 1]),
            dst_addr: Address([2, 0, 0, 0, 0, 2]),
            ethertype: EtherType::Ipv4,
        };
        r.emit(&mut Frame::new_unchecked(&mut buf[..]));
        assert_eq!(buf, FRAME);
        assert_eq!(r.buffer_len(4), FRAME.len());
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(Frame::new_checked(&FRAME[..len]), Err(Error::Truncated));
            assert_eq!(Repr::parse(&Frame::new_unchecked(&FRAME[..len])), Err(Error::Truncated));
        }
        assert!(Frame::new_checked(&FRAME[..HEADER_LEN]).unwrap().payload().is_empty());
    }

    #[test]
    fn ethertype_roundtrip() {
        for v in [0x0800u16, 0x0806, 0x86dd, 0x8100, 0, 0xffff] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert_eq!(EtherType::from(0x8100), EtherType::Unknown(0x8100));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prop_parse_emit_roundtrip(r in crate::strategies::eth_repr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = vec![0u8; r.buffer_len(payload.len())];
            r.emit(&mut Frame::new_unchecked(&mut buf[..]));
            Frame::new_unchecked(&mut buf[..]).payload_mut().copy_from_slice(&payload);
            let f = Frame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&f), Ok(r));
            prop_assert_eq!(f.payload(), &payload[..]);
            prop_assert!(crate::fuzz::ethernet(&buf));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            crate::fuzz::ethernet(&data);
            let _ = Repr::parse(&Frame::new_unchecked(&data[..]));
        }
    }
}
