//! Whole frames: Ethernet + IPv4 + TCP parsed or emitted in one call, emission in place
//! around a payload the caller already wrote, and the RST a closed port answers with
//! (RFC 9293 3.10.7.1).

use crate::{Checksum, Error, ethernet, ipv4, tcp};

/// Everything the datapath needs from one received Ethernet frame carrying IPv4/TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedSegment<'a> {
    /// The Ethernet header.
    pub eth: ethernet::Repr,
    /// The IPv4 header (`payload_len` is the TCP segment length as received).
    pub ip: ipv4::Repr,
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
        ethernet::HEADER_LEN + ipv4::HEADER_LEN + self.tcp.buffer_len()
    }
}

/// Parses an Ethernet II frame carrying IPv4 carrying TCP. Never panics.
///
/// `Unsupported` for another EtherType or IP protocol; otherwise the errors of the three
/// layers' `new_checked`/`parse` (`Truncated`, `Malformed`, `Checksum`, `Fragmented`).
/// Ethernet padding after the IPv4 `total_len` is ignored.
pub fn parse_frame(frame: &[u8], checksum: Checksum) -> Result<ParsedSegment<'_>, Error> {
    let eth_frame = ethernet::Frame::new_checked(frame)?;
    let eth = ethernet::Repr::parse(&eth_frame)?;
    if eth.ethertype != ethernet::EtherType::Ipv4 {
        return Err(Error::Unsupported);
    }
    let ip_packet = ipv4::Packet::new_checked(eth_frame.payload())?;
    let ip = ipv4::Repr::parse(&ip_packet, checksum)?;
    if ip.protocol != ipv4::Protocol::Tcp {
        return Err(Error::Unsupported);
    }
    let tcp_packet = tcp::Packet::new_checked(ip_packet.payload())?;
    let tcp = tcp::Repr::parse(&tcp_packet, ip.src_addr, ip.dst_addr, checksum)?;
    Ok(ParsedSegment { eth, ip, tcp })
}

/// Writes IPv4 + TCP headers in place for a segment whose payload (`payload_len` bytes) the
/// caller already wrote at `buf[ipv4::HEADER_LEN + tcp.header_len()..]`. `tcp.payload` is
/// ignored; `ip.payload_len` and `ip.protocol` are ignored too (the TCP length and
/// [`ipv4::Protocol::Tcp`] are written). Computes both checksums over the in-place payload.
///
/// Returns the IPv4 packet length; `Truncated` if `buf` is too small, `Malformed` if the
/// packet would exceed 65535 bytes. Never panics.
pub fn emit_ipv4_tcp_in_place(
    buf: &mut [u8],
    ip: &ipv4::Repr,
    tcp: &tcp::Repr<'_>,
    payload_len: usize,
) -> Result<usize, Error> {
    let tcp_len = tcp.header_len().checked_add(payload_len).ok_or(Error::Malformed)?;
    let total = ipv4::HEADER_LEN.checked_add(tcp_len).ok_or(Error::Malformed)?;
    if total > usize::from(u16::MAX) {
        return Err(Error::Malformed);
    }
    let packet = buf.get_mut(..total).ok_or(Error::Truncated)?;
    let ip_repr = ipv4::Repr { protocol: ipv4::Protocol::Tcp, payload_len: tcp_len, ..*ip };
    let (ip_hdr, segment) = packet.split_at_mut(ipv4::HEADER_LEN);
    ip_repr.emit(&mut ipv4::Packet::new_unchecked(ip_hdr), Checksum::Verify);
    tcp.emit_header(&mut tcp::Packet::new_unchecked(&mut *segment));
    tcp::fill_checksum_in(segment, ip.src_addr, ip.dst_addr);
    Ok(total)
}

/// Writes a whole frame: Ethernet + IPv4 + TCP, copying `tcp.payload`. `eth.ethertype`,
/// `ip.protocol` and `ip.payload_len` are ignored (IPv4, TCP and the segment length are
/// written). Returns the frame length; `Truncated` if `buf` is too small, `Malformed` if the
/// IPv4 packet would exceed 65535 bytes. Frames are not padded to 60 bytes. Never panics.
pub fn emit_frame(buf: &mut [u8], eth: &ethernet::Repr, ip: &ipv4::Repr, tcp: &tcp::Repr<'_>) -> Result<usize, Error> {
    if buf.len() < ethernet::HEADER_LEN {
        return Err(Error::Truncated);
    }
    let (eth_hdr, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
    let payload_at = ipv4::HEADER_LEN + tcp.header_len();
    let payload_end = payload_at.checked_add(tcp.payload.len()).ok_or(Error::Malformed)?;
    if payload_end > usize::from(u16::MAX) {
        return Err(Error::Malformed);
    }
    rest.get_mut(payload_at..payload_end).ok_or(Error::Truncated)?.copy_from_slice(tcp.payload);
    let ip_len = emit_ipv4_tcp_in_place(rest, ip, tcp, tcp.payload.len())?;
    let eth_repr = ethernet::Repr { ethertype: ethernet::EtherType::Ipv4, ..*eth };
    eth_repr.emit(&mut ethernet::Frame::new_unchecked(eth_hdr));
    Ok(ethernet::HEADER_LEN + ip_len)
}

/// The RST a closed port (or a listener receiving an unacceptable segment) sends in answer
/// to `seg`, RFC 9293 3.10.7.1 (and 3.5.2 "Reset Generation"):
/// - `seg` has ACK: `<SEQ=SEG.ACK><CTL=RST>`;
/// - otherwise: `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>` (SEG.LEN counts SYN and FIN);
/// - `seg` is a RST: no answer (`None`), "an incoming segment containing a RST is discarded".
///
/// MAC and IP addresses and ports are swapped, TTL 64, window 0, no options, no payload.
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
            ethertype: ethernet::EtherType::Ipv4,
        },
        ip: ipv4::Repr {
            src_addr: seg.ip.dst_addr,
            dst_addr: seg.ip.src_addr,
            protocol: ipv4::Protocol::Tcp,
            payload_len: tcp.header_len(),
            hop_limit: 64,
        },
        tcp,
    })
}

#[cfg(test)]
mod tests;
