//! Whole frames: Ethernet + IPv4 or IPv6 + TCP parsed or emitted in one call, emission in place
//! around a payload the caller already wrote, the RST a closed port answers with (RFC 9293
//! 3.10.7.1), and the ICMP path-MTU messages (`icmp`) parsed and emitted as frames.

use crate::ip::{self, Protocol};
use crate::{Checksum, Error, ethernet, icmp, tcp};

/// Everything the datapath needs from one received Ethernet frame carrying IPv4/TCP or
/// IPv6/TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedSegment<'a> {
    /// The Ethernet header.
    pub eth: ethernet::Repr,
    /// The IP header (`payload_len` is the TCP segment length as received).
    pub ip: ip::Repr,
    /// The TCP segment; `payload` borrows from the frame.
    pub tcp: tcp::Repr<'a>,
}

impl ParsedSegment<'_> {
    /// Emits this segment as a frame with [`emit_frame`]; returns the frame length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        emit_frame(buf, &self.eth, &self.ip, &self.tcp)
    }

    /// The length [`ParsedSegment::emit`] writes.
    pub fn frame_len(&self) -> usize {
        ethernet::HEADER_LEN + self.ip.header_len() + self.tcp.buffer_len()
    }
}

/// Parses an Ethernet II frame carrying IPv4 or IPv6 carrying TCP. Never panics.
///
/// `Unsupported` for another EtherType or upper-layer protocol (ICMP included: see
/// [`parse_icmp_frame`]); otherwise the errors of the layers' `new_checked`/`parse`
/// (`Truncated`, `Malformed`, `Checksum`, `Fragmented`). Ethernet padding after the IP packet
/// is ignored; IPv6 extension headers are skipped as `ipv6` describes.
pub fn parse_frame(frame: &[u8], checksum: Checksum) -> Result<ParsedSegment<'_>, Error> {
    let eth_frame = ethernet::Frame::new_checked(frame)?;
    let eth = ethernet::Repr::parse(&eth_frame)?;
    let (ip, upper) = ip::Repr::parse(eth.ethertype, eth_frame.payload(), checksum)?;
    if ip.protocol() != Protocol::Tcp {
        return Err(Error::Unsupported);
    }
    let tcp_packet = tcp::Packet::new_checked(upper)?;
    let tcp = tcp::Repr::parse(&tcp_packet, ip.src_addr(), ip.dst_addr(), checksum)?;
    Ok(ParsedSegment { eth, ip, tcp })
}

/// A received path-MTU message (see `icmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedIcmp {
    /// The Ethernet header.
    pub eth: ethernet::Repr,
    /// The IP header of the ICMP message itself (from the router).
    pub ip: ip::Repr,
    /// The MTU and the quoted packet.
    pub icmp: icmp::Repr,
}

/// Parses an Ethernet II frame carrying an ICMPv4 fragmentation-needed or ICMPv6 Packet Too
/// Big message. `Unsupported` for anything else (TCP included: see [`parse_frame`]); the errors
/// of the layers otherwise. Never panics.
pub fn parse_icmp_frame(frame: &[u8], checksum: Checksum) -> Result<ParsedIcmp, Error> {
    let eth_frame = ethernet::Frame::new_checked(frame)?;
    let eth = ethernet::Repr::parse(&eth_frame)?;
    let (ip, upper) = ip::Repr::parse(eth.ethertype, eth_frame.payload(), checksum)?;
    let icmp = icmp::Repr::parse(&ip, upper, checksum)?;
    Ok(ParsedIcmp { eth, ip, icmp })
}

/// Writes a whole frame carrying `icmp` (see [`icmp::Repr::emit`]) from `ip`'s source to its
/// destination; `eth.ethertype`, `ip`'s protocol and payload length are ignored. Returns the
/// frame length; `Truncated` if `buf` is too small, `Malformed` for mixed address families.
pub fn emit_icmp_frame(buf: &mut [u8], eth: &ethernet::Repr, ip: &ip::Repr, icmp: &icmp::Repr) -> Result<usize, Error> {
    let ip = ip.with_payload(icmp.protocol(), icmp.buffer_len());
    let at = ethernet::HEADER_LEN + ip.header_len();
    let rest = buf.get_mut(ethernet::HEADER_LEN..).ok_or(Error::Truncated)?;
    icmp.emit(rest.get_mut(ip.header_len()..).ok_or(Error::Truncated)?, ip.src_addr(), ip.dst_addr())?;
    ip.emit(rest)?;
    let eth_repr = ethernet::Repr { ethertype: ip.version().ethertype(), ..*eth };
    eth_repr.emit(&mut ethernet::Frame::new_unchecked(&mut buf[..ethernet::HEADER_LEN]));
    Ok(at + icmp.buffer_len())
}

/// Writes IP + TCP headers in place for a segment whose payload (`payload_len` bytes) the
/// caller already wrote at `buf[ip.header_len() + tcp.header_len()..]`. `tcp.payload` is
/// ignored; `ip`'s payload length and protocol are ignored too (the TCP length and
/// [`Protocol::Tcp`] are written; IPv6 without extension headers). Computes the checksums over
/// the in-place payload.
///
/// Returns the IP packet length; `Truncated` if `buf` is too small, `Malformed` if the
/// segment is longer than the IP header can describe (65515 bytes in IPv4, 65535 in IPv6).
/// Never panics.
pub fn emit_ip_tcp_in_place(
    buf: &mut [u8],
    ip: &ip::Repr,
    tcp: &tcp::Repr<'_>,
    payload_len: usize,
) -> Result<usize, Error> {
    let tcp_len = tcp.header_len().checked_add(payload_len).ok_or(Error::Malformed)?;
    if tcp_len > ip.max_payload_len() {
        return Err(Error::Malformed);
    }
    let ip = ip.with_payload(Protocol::Tcp, tcp_len);
    let total = ip.buffer_len();
    let packet = buf.get_mut(..total).ok_or(Error::Truncated)?;
    let (ip_hdr, segment) = packet.split_at_mut(ip.header_len());
    ip.emit(ip_hdr)?;
    tcp.emit_header(&mut tcp::Packet::new_unchecked(&mut *segment));
    tcp::fill_checksum_in(segment, ip.src_addr(), ip.dst_addr())?;
    Ok(total)
}

/// Writes a whole frame: Ethernet + IP + TCP, copying `tcp.payload`. `eth.ethertype`, `ip`'s
/// protocol and payload length are ignored (the EtherType of `ip`'s version, TCP and the
/// segment length are written). Returns the frame length; `Truncated` if `buf` is too small,
/// `Malformed` if the segment is too long for the IP header. Frames are not padded to 60
/// bytes. Never panics.
pub fn emit_frame(buf: &mut [u8], eth: &ethernet::Repr, ip: &ip::Repr, tcp: &tcp::Repr<'_>) -> Result<usize, Error> {
    if buf.len() < ethernet::HEADER_LEN {
        return Err(Error::Truncated);
    }
    let (eth_hdr, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
    let tcp_len = tcp.header_len().checked_add(tcp.payload.len()).ok_or(Error::Malformed)?;
    if tcp_len > ip.max_payload_len() {
        return Err(Error::Malformed);
    }
    let payload_at = ip.header_len() + tcp.header_len();
    let payload_end = payload_at + tcp.payload.len();
    rest.get_mut(payload_at..payload_end).ok_or(Error::Truncated)?.copy_from_slice(tcp.payload);
    let ip_len = emit_ip_tcp_in_place(rest, ip, tcp, tcp.payload.len())?;
    let eth_repr = ethernet::Repr { ethertype: ip.version().ethertype(), ..*eth };
    eth_repr.emit(&mut ethernet::Frame::new_unchecked(eth_hdr));
    Ok(ethernet::HEADER_LEN + ip_len)
}

/// The RST a closed port (or a listener receiving an unacceptable segment) sends in answer
/// to `seg`, RFC 9293 3.10.7.1 (and 3.5.2 "Reset Generation"):
/// - `seg` has ACK: `<SEQ=SEG.ACK><CTL=RST>`;
/// - otherwise: `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>` (SEG.LEN counts SYN and FIN);
/// - `seg` is a RST: no answer (`None`), "an incoming segment containing a RST is discarded".
///
/// MAC and IP addresses and ports are swapped, TTL (hop limit) 64, window 0, no options, no
/// payload; the same IP version as `seg`.
/// (The caller should apply its own rate limits before sending it.)
pub fn rst_reply<'a>(seg: &ParsedSegment<'_>) -> Option<ParsedSegment<'a>> {
    if seg.tcp.flags.rst() {
        return None;
    }
    let (seq_number, ack_number, flags) = if seg.tcp.flags.ack() {
        (seg.tcp.ack_number, 0, tcp::Flags::RST)
    } else {
        // SEG.LEN fits in u32: a segment is at most 65535 bytes; sequence space wraps.
        let seg_len = seg.tcp.segment_len() as u32;
        (0, seg.tcp.seq_number.wrapping_add(seg_len), tcp::Flags::RST | tcp::Flags::ACK)
    };
    let tcp = tcp::Repr {
        src_port: seg.tcp.dst_port,
        dst_port: seg.tcp.src_port,
        seq_number,
        ack_number,
        flags,
        ..Default::default()
    };
    Some(ParsedSegment {
        eth: ethernet::Repr {
            src_addr: seg.eth.dst_addr,
            dst_addr: seg.eth.src_addr,
            ethertype: seg.ip.version().ethertype(),
        },
        ip: seg.ip.reply(Protocol::Tcp, tcp.header_len()),
        tcp,
    })
}

#[cfg(test)]
mod tests;
