//! TCP segments (RFC 9293 3.1) and the options sluice uses: MSS (RFC 9293 3.2), window scale
//! and timestamps (RFC 7323), SACK-permitted and SACK (RFC 2018).
//!
//! [`Packet::new_checked`] validates lengths (20-byte minimum, data offset >= 5 and inside the
//! buffer). The buffer handed to a [`Packet`] is the whole segment (the IPv4 payload, padding
//! excluded): the checksum and the payload run to its end. [`Repr::parse`] verifies the checksum
//! over the IPv4 or IPv6 pseudo-header (RFC 9293 3.1, RFC 8200 8.1; the addresses of both ends
//! must be of one family, else `Malformed`), rejects port 0, and walks the options:
//! - EOL ends the list; NOP is one byte; every other option has a length byte that must be
//!   >= 2 and stay inside the header, else `Malformed` (RFC 9293 3.1 "Options").
//! - MSS (kind 2, len 4), window scale (3, len 3; shifts above 14 are clamped to 14,
//!   RFC 7323 2.3), SACK-permitted (4, len 2), SACK (5, len 2+8n, 1 <= n <= 4), timestamps
//!   (8, len 10). A known kind with another length is skipped, as Linux does
//!   (tcp_parse_options), and so is any unknown kind.
//!
//! The repr keeps flags, sequence and acknowledgment numbers raw: what they mean (RFC 9293
//! 3.10.7) is the TCP stack's business, not this module's.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

use crate::ip::{IpAddr, Protocol};
use crate::{Checksum, Error, checksum};

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;
/// Largest TCP header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Most option bytes a header can carry.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

/// The eight control bits of byte 13 (RFC 9293 3.1, RFC 3168 for ECE/CWR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from sender.
    pub const FIN: Flags = Flags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Flags = Flags(0x02);
    /// Reset the connection.
    pub const RST: Flags = Flags(0x04);
    /// Push function.
    pub const PSH: Flags = Flags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: Flags = Flags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: Flags = Flags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: Flags = Flags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: Flags = Flags(0x80);

    /// No flags.
    pub const fn empty() -> Flags {
        Flags(0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }
    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
    /// FIN set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    /// SYN set.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    /// RST set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    /// PSH set.
    pub const fn psh(self) -> bool {
        self.contains(Self::PSH)
    }
    /// ACK set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    /// URG set.
    pub const fn urg(self) -> bool {
        self.contains(Self::URG)
    }
    /// ECE set.
    pub const fn ece(self) -> bool {
        self.contains(Self::ECE)
    }
    /// CWR set.
    pub const fn cwr(self) -> bool {
        self.contains(Self::CWR)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Flags {
    type Output = Flags;
    fn bitand(self, rhs: Flags) -> Flags {
        Flags(self.0 & rhs.0)
    }
}

impl fmt::Display for Flags {
    /// tcpdump-like: `S`, `S.`, `F.`, `R`, `P.` ...; `.` is ACK, `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        for (flag, c) in [
            (Self::SYN, "S"),
            (Self::FIN, "F"),
            (Self::RST, "R"),
            (Self::PSH, "P"),
            (Self::URG, "U"),
            (Self::ECE, "E"),
            (Self::CWR, "W"),
            (Self::ACK, "."),
        ] {
            if self.contains(flag) {
                f.write_str(c)?;
            }
        }
        Ok(())
    }
}

/// One SACK block: the half-open range `[left, right)` of sequence space (RFC 2018 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlock {
    /// Left edge: first sequence number of the block.
    pub left: u32,
    /// Right edge: sequence number just after the block.
    pub right: u32,
}

/// The timestamps option (RFC 7323 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// TSval: the sender's clock.
    pub tsval: u32,
    /// TSecr: the echoed TSval (meaningful only with ACK).
    pub tsecr: u32,
}

mod field {
    use crate::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS: usize = 20;
}

/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod kind {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No-operation.
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK.
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMP: u8 = 8;
}

/// The largest window scale shift (RFC 7323 2.3).
pub const MAX_WINDOW_SCALE: u8 = 14;

/// One TCP option, as read by [`TcpOption::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: the end of the list.
    EndOfList,
    /// Kind 1.
    NoOperation,
    /// Kind 2, length 4.
    MaxSegmentSize(u16),
    /// Kind 3, length 3: the shift as sent (not clamped here).
    WindowScale(u8),
    /// Kind 4, length 2.
    SackPermitted,
    /// Kind 5, length 2 + 8n: the blocks in the order sent, `None` past the n-th.
    Sack([Option<SackBlock>; 4]),
    /// Kind 8, length 10.
    Timestamp(Timestamp),
    /// Any other kind, or a known kind with an unexpected length: skipped.
    Unknown {
        /// The kind byte.
        kind: u8,
        /// The option's data (after kind and length).
        data: &'a [u8],
    },
}

impl<'a> TcpOption<'a> {
    /// Reads one option from the start of `buf` (non-empty), returning it and the rest.
    /// `Malformed` when a length byte is missing, below 2, or runs past `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<(TcpOption<'a>, &'a [u8]), Error> {
        let (&k, after_kind) = buf.split_first().ok_or(Error::Malformed)?;
        match k {
            kind::EOL => return Ok((TcpOption::EndOfList, &[])),
            kind::NOP => return Ok((TcpOption::NoOperation, after_kind)),
            _ => {}
        }
        let &len = after_kind.first().ok_or(Error::Malformed)?;
        let len = usize::from(len);
        if len < 2 || len > buf.len() {
            return Err(Error::Malformed);
        }
        let data = &buf[2..len];
        let rest = &buf[len..];
        let opt = match (k, data.len()) {
            (kind::MSS, 2) => TcpOption::MaxSegmentSize(be16(data)),
            (kind::WINDOW_SCALE, 1) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (kind::SACK, n) if n % 8 == 0 && (8..=32).contains(&n) => {
                let mut blocks = [None; 4];
                for (slot, c) in blocks.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some(SackBlock { left: be32(&c[..4]), right: be32(&c[4..]) });
                }
                TcpOption::Sack(blocks)
            }
            (kind::TIMESTAMP, 8) => {
                TcpOption::Timestamp(Timestamp { tsval: be32(&data[..4]), tsecr: be32(&data[4..]) })
            }
            _ => TcpOption::Unknown { kind: k, data },
        };
        Ok((opt, rest))
    }

    /// The encoded length of this option.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(blocks) => 2 + 8 * blocks.iter().flatten().count(),
            TcpOption::Timestamp(_) => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes this option at the start of `buf` and returns the rest. Panics if `buf` is
    /// shorter than [`TcpOption::buffer_len`] (or an `Unknown` option's data is over 253 bytes).
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> &'b mut [u8] {
        let len = self.buffer_len();
        let (out, rest) = buf.split_at_mut(len);
        match *self {
            TcpOption::EndOfList => out[0] = kind::EOL,
            TcpOption::NoOperation => out[0] = kind::NOP,
            _ => {
                out[1] = u8::try_from(len).expect("TCP option longer than 255 bytes");
                match *self {
                    TcpOption::MaxSegmentSize(mss) => {
                        out[0] = kind::MSS;
                        out[2..4].copy_from_slice(&mss.to_be_bytes());
                    }
                    TcpOption::WindowScale(shift) => {
                        out[0] = kind::WINDOW_SCALE;
                        out[2] = shift;
                    }
                    TcpOption::SackPermitted => out[0] = kind::SACK_PERMITTED,
                    TcpOption::Sack(blocks) => {
                        out[0] = kind::SACK;
                        for (c, b) in out[2..].chunks_exact_mut(8).zip(blocks.iter().flatten()) {
                            c[..4].copy_from_slice(&b.left.to_be_bytes());
                            c[4..].copy_from_slice(&b.right.to_be_bytes());
                        }
                    }
                    TcpOption::Timestamp(ts) => {
                        out[0] = kind::TIMESTAMP;
                        out[2..6].copy_from_slice(&ts.tsval.to_be_bytes());
                        out[6..10].copy_from_slice(&ts.tsecr.to_be_bytes());
                    }
                    TcpOption::Unknown { kind, data } => {
                        out[0] = kind;
                        out[2..].copy_from_slice(data);
                    }
                    TcpOption::EndOfList | TcpOption::NoOperation => unreachable!(),
                }
            }
        }
        rest
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The checksum over the pseudo-header and `segment` (RFC 9293 3.1, RFC 8200 8.1), as written
/// in the header when `segment`'s checksum field is zero; `0xffff`-summing when it holds the
/// right value. `Malformed` if `src` and `dst` are of different families.
fn segment_sum(segment: &[u8], src: IpAddr, dst: IpAddr) -> Result<u16, Error> {
    checksum::with_pseudo_header(src, dst, Protocol::Tcp, segment)
}

/// A read/write view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than the header.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a received segment, checking its lengths (see [`Packet::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the buffer is shorter than 20 bytes or than the data offset says;
    /// `Malformed` if the data offset is below 5.
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
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        be16(&self.data()[field::SRC_PORT])
    }
    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        be16(&self.data()[field::DST_PORT])
    }
    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(&self.data()[field::SEQ_NUM])
    }
    /// The acknowledgment number (meaningful only with ACK).
    pub fn ack_number(&self) -> u32 {
        be32(&self.data()[field::ACK_NUM])
    }
    /// The header length in bytes (data offset * 4).
    pub fn header_len(&self) -> u8 {
        (self.data()[field::DATA_OFF] >> 4) * 4
    }
    /// The control bits.
    pub fn flags(&self) -> Flags {
        Flags(self.data()[field::FLAGS])
    }
    /// The raw (unscaled) window field.
    pub fn window_len(&self) -> u16 {
        be16(&self.data()[field::WIN_SIZE])
    }
    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(&self.data()[field::CHECKSUM])
    }
    /// The urgent pointer (meaningful only with URG).
    pub fn urgent_at(&self) -> u16 {
        be16(&self.data()[field::URGENT])
    }
    /// Whether the checksum over the pseudo-header and the whole buffer is correct (never,
    /// when `src` and `dst` are of different families).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        segment_sum(self.data(), src, dst) == Ok(0xffff)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The option bytes (between the fixed header and the payload).
    pub fn options(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[field::OPTIONS..usize::from(self.header_len())]
    }
    /// The payload (after the header, to the end of the buffer).
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[usize::from(self.header_len())..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        self.data_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        self.data_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        self.data_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        self.data_mut()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the header length in bytes (rounded down to a multiple of 4, at most 60); clears
    /// the reserved bits.
    pub fn set_header_len(&mut self, len: u8) {
        self.data_mut()[field::DATA_OFF] = ((len / 4) & 0x0f) << 4;
    }
    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: Flags) {
        self.data_mut()[field::FLAGS] = flags.0;
    }
    /// Sets the raw window field.
    pub fn set_window_len(&mut self, v: u16) {
        self.data_mut()[field::WIN_SIZE].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.data_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, v: u16) {
        self.data_mut()[field::URGENT].copy_from_slice(&v.to_be_bytes());
    }
    /// The option bytes, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.data_mut()[field::OPTIONS..end]
    }
    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.data_mut()[start..]
    }
    /// Computes and writes the checksum over the pseudo-header and the whole buffer;
    /// `Malformed` (and nothing written) if `src` and `dst` are of different families.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) -> Result<(), Error> {
        self.set_checksum(0);
        let sum = segment_sum(self.data(), src, dst)?;
        self.set_checksum(!sum);
        Ok(())
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of a TCP segment: header fields, the options sluice uses, and the payload.
///
/// `Default` is an empty segment (ports, numbers, flags and window zero, no options, no
/// payload): a template to fill with `..Default::default()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number (raw).
    pub seq_number: u32,
    /// Acknowledgment number (raw; meaningful only with [`Flags::ACK`]).
    pub ack_number: u32,
    /// Control bits.
    pub flags: Flags,
    /// Raw 16-bit window field, unscaled.
    pub window_len: u16,
    /// MSS option.
    pub max_seg_size: Option<u16>,
    /// Window scale option: the shift, clamped to 14 on parse and emit.
    pub window_scale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// SACK blocks, in the order sent; on emit only the `Some` ones that fit are written
    /// (see [`Repr::sack_capacity`]).
    pub sack_blocks: [Option<SackBlock>; 4],
    /// Timestamps option.
    pub timestamp: Option<Timestamp>,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses a checked segment. `src`/`dst` are the IP addresses, for the pseudo-header.
    /// Errors: lengths as in [`Packet::check_len`]; `Malformed` for addresses of different
    /// families, port 0 or a bad option length (module doc); `Checksum` when `checksum` is
    /// `Verify` and it does not verify.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        src: IpAddr,
        dst: IpAddr,
        checksum: Checksum,
    ) -> Result<Repr<'a>, Error> {
        packet.check_len()?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(Error::Malformed);
        }
        if checksum == Checksum::Verify && !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        // RFC 9293 3.1 / RFC 6335: port 0 is reserved and never valid on the wire.
        if packet.src_port() == 0 || packet.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        let mut repr = Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; 4],
            timestamp: None,
            payload: packet.payload(),
        };
        let mut opts = packet.options();
        while !opts.is_empty() {
            let (opt, rest) = TcpOption::parse(opts)?;
            match opt {
                TcpOption::EndOfList => break,
                TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                // RFC 7323 2.3: a shift above 14 is used as 14 (and should be logged).
                TcpOption::WindowScale(s) => repr.window_scale = Some(s.min(MAX_WINDOW_SCALE)),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::Sack(blocks) => repr.sack_blocks = blocks,
                TcpOption::Timestamp(ts) => repr.timestamp = Some(ts),
            }
            opts = rest;
        }
        Ok(repr)
    }

    /// Option bytes other than SACK blocks, as emitted: MSS (4), SACK-permitted and/or
    /// timestamps padded with NOPs (4 / 12 / 12), window scale after a NOP (4).
    fn fixed_options_len(&self) -> usize {
        let mut len = 0;
        if self.max_seg_size.is_some() {
            len += 4;
        }
        len += match (self.sack_permitted, self.timestamp.is_some()) {
            (true, true) | (false, true) => 12,
            (true, false) => 4,
            (false, false) => 0,
        };
        if self.window_scale.is_some() {
            len += 4;
        }
        len
    }

    /// How many of the `Some` SACK blocks [`Repr::emit`] writes: as many as fit in the 40
    /// option bytes after the other options, each option 4-aligned with NOPs (RFC 2018 3:
    /// at most 3 with timestamps, 4 without).
    pub fn sack_capacity(&self) -> usize {
        let room = MAX_OPTIONS_LEN - self.fixed_options_len();
        let fit = room.saturating_sub(4) / 8;
        fit.min(self.sack_blocks.iter().flatten().count())
    }

    /// The SACK blocks emit writes (the first [`Repr::sack_capacity`] `Some` ones).
    fn emitted_sack_blocks(&self) -> [Option<SackBlock>; 4] {
        let mut out = [None; 4];
        for (slot, b) in out.iter_mut().zip(self.sack_blocks.iter().flatten().take(self.sack_capacity())) {
            *slot = Some(*b);
        }
        out
    }

    /// What `parse(emit(self))` yields: the SACK blocks that fit, in front; the window
    /// scale clamped to 14.
    pub fn normalized(&self) -> Repr<'a> {
        Repr {
            sack_blocks: self.emitted_sack_blocks(),
            window_scale: self.window_scale.map(|s| s.min(MAX_WINDOW_SCALE)),
            ..*self
        }
    }

    /// Header length as emitted: 20 + options (always a multiple of 4, at most 60).
    pub fn header_len(&self) -> usize {
        let sack = match self.sack_capacity() {
            0 => 0,
            n => 4 + 8 * n,
        };
        HEADER_LEN + self.fixed_options_len() + sack
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Length in sequence space: payload + SYN + FIN (RFC 9293 3.4, SEG.LEN).
    pub fn segment_len(&self) -> usize {
        self.payload.len() + usize::from(self.flags.syn()) + usize::from(self.flags.fin())
    }

    /// Writes the header and options (not the payload, not the checksum). Panics if the
    /// buffer is shorter than [`Repr::header_len`].
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        let header_len = self.header_len();
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        // header_len <= 60 by construction (sack_capacity keeps the options within 40 bytes).
        packet.set_header_len(header_len as u8);
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_at(0);
        // Layout as Linux writes a SYN: MSS, SACK-perm + TS, NOP + WS; then NOP NOP SACK.
        let mut buf = packet.options_mut();
        if let Some(mss) = self.max_seg_size {
            buf = TcpOption::MaxSegmentSize(mss).emit(buf);
        }
        match (self.sack_permitted, self.timestamp) {
            (true, Some(ts)) => {
                buf = TcpOption::SackPermitted.emit(buf);
                buf = TcpOption::Timestamp(ts).emit(buf);
            }
            (false, Some(ts)) => {
                buf = TcpOption::NoOperation.emit(buf);
                buf = TcpOption::NoOperation.emit(buf);
                buf = TcpOption::Timestamp(ts).emit(buf);
            }
            (true, None) => {
                buf = TcpOption::NoOperation.emit(buf);
                buf = TcpOption::NoOperation.emit(buf);
                buf = TcpOption::SackPermitted.emit(buf);
            }
            (false, None) => {}
        }
        if let Some(shift) = self.window_scale {
            buf = TcpOption::NoOperation.emit(buf);
            buf = TcpOption::WindowScale(shift.min(MAX_WINDOW_SCALE)).emit(buf);
        }
        if self.sack_capacity() > 0 {
            buf = TcpOption::NoOperation.emit(buf);
            buf = TcpOption::NoOperation.emit(buf);
            buf = TcpOption::Sack(self.emitted_sack_blocks()).emit(buf);
        }
        debug_assert!(buf.is_empty());
    }

    /// Writes header, options and payload, then the checksum over the first
    /// [`Repr::buffer_len`] bytes (computed whatever `checksum` says). `Malformed` (nothing
    /// written) if `src` and `dst` are of different families. Panics if the buffer is shorter
    /// than `buffer_len`; bytes past it are left alone.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
        src: IpAddr,
        dst: IpAddr,
        checksum: Checksum,
    ) -> Result<(), Error> {
        let _ = checksum;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(Error::Malformed);
        }
        self.emit_header(packet);
        let header_len = self.header_len();
        let len = self.buffer_len();
        packet.data_mut()[header_len..len].copy_from_slice(self.payload);
        fill_checksum_in(&mut packet.data_mut()[..len], src, dst)
    }
}

/// Fills the checksum of the segment in `segment` (exactly the segment, header included);
/// `Malformed` if `src` and `dst` are of different families.
pub(crate) fn fill_checksum_in(segment: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<(), Error> {
    Packet::new_unchecked(segment).fill_checksum(src, dst)
}

#[cfg(test)]
mod tests;
