//! Zero-copy views and validated representations of the headers sluice speaks:
//! Ethernet II, IPv4 (RFC 791), IPv6 (RFC 8200) and TCP (RFC 9293) with its options (RFC 7323
//! window scale and timestamps, RFC 2018 SACK), the ICMP messages that carry a path MTU (RFC
//! 1191, RFC 4443 3.2), plus the Internet checksum (RFC 1071) and its IPv4 and IPv6
//! pseudo-headers. `ip` joins the two IP versions so that the frame functions and the TCP
//! stack have one code path for both.
//!
//! Every header comes in two layers, after smoltcp:
//! - a `Packet<T: AsRef<[u8]>>` (for Ethernet, `Frame`) view with one accessor per field and,
//!   for `T: AsMut<[u8]>`, one setter per field. `new_checked` validates the lengths a
//!   received buffer claims; after it succeeds no accessor can panic. `new_unchecked` is for
//!   buffers we build ourselves: its accessors panic if the buffer is too short.
//! - a `Repr`, the validated meaning of the header, with `parse` (from a checked view), `emit`
//!   (into a view over a buffer of at least `buffer_len` bytes) and the lengths.
//!
//! No-panic contract: `new_checked`, every `Repr::parse`, [`parse_frame`],
//! [`parse_icmp_frame`], [`rst_reply`], [`emit_frame`], [`emit_icmp_frame`] and
//! [`emit_ip_tcp_in_place`] never panic, whatever the bytes. The fuzz
//! targets in `proxy/fuzz` and the proptests in this crate exercise exactly that, through the
//! functions of [`fuzz`].
//!
//! ```
//! use sluice_wire::{Checksum, emit_frame, parse_frame, rst_reply};
//! # let syn = sluice_wire::fuzz::example_syn();
//! // A SYN to a closed port arrives ...
//! let seg = parse_frame(&syn, Checksum::Verify)?;
//! assert!(seg.tcp.flags.syn());
//! // ... and is answered with <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK> (RFC 9293 3.10.7.1).
//! let rst = rst_reply(&seg).expect("not a RST");
//! let mut buf = [0u8; 1514];
//! let len = emit_frame(&mut buf, &rst.eth, &rst.ip, &rst.tcp)?;
//! assert_eq!(parse_frame(&buf[..len], Checksum::Verify)?, rst);
//! # Ok::<(), sluice_wire::Error>(())
//! ```
//!
//! What this crate is not: it keeps no state, allocates nothing, does no reassembly of IPv4 or
//! IPv6 fragments (they are rejected with [`Error::Fragmented`]), and does not interpret TCP
//! flag combinations: that is the TCP stack's job (RFC 9293 3.10.7).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checksum;
pub mod ethernet;
pub mod fuzz;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;

mod frame;
#[cfg(test)]
mod strategies;
#[cfg(test)]
mod testdata;

pub use frame::{
    ParsedIcmp, ParsedSegment, emit_frame, emit_icmp_frame, emit_ip_tcp_in_place, parse_frame, parse_icmp_frame,
    rst_reply,
};

/// Whether to verify checksums when parsing.
///
/// Emitting always computes complete checksums, whatever this says: frames sluice
/// transmits must carry them (no offload is assumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// Verify checksums on parse (and compute them on emit).
    #[default]
    Verify,
    /// Do not verify checksums on parse (e.g. the NIC already did, or a local kernel sent
    /// CHECKSUM_PARTIAL frames); emit still computes them.
    Ignore,
}

/// Why a buffer could not be parsed (or a packet could not be emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than a header or a length field says (also: an emit buffer is
    /// too small).
    Truncated,
    /// A field holds an impossible value (IHL < 5, data offset < 5, total length shorter than
    /// the header, an option length < 2 or past the header, port 0, IPv6 extension headers
    /// past the payload or more than 8 of them, ...). Also returned when asked to emit something
    /// that cannot be encoded (an IPv4 packet over 65535 bytes), and for addresses of two
    /// families where one pseudo-header needs both.
    Malformed,
    /// A checksum did not verify.
    Checksum,
    /// An IPv4 fragment (MF set or a non-zero fragment offset) or an IPv6 packet with a
    /// Fragment header: sluice does not reassemble.
    Fragmented,
    /// A well-formed packet of a kind this crate does not handle (not IPv4 or IPv6, not TCP,
    /// an IPv6 jumbogram or upper layer other than TCP or ICMPv6, an ICMP message other than
    /// the path-MTU ones).
    Unsupported,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "buffer truncated",
            Error::Malformed => "malformed header",
            Error::Checksum => "checksum mismatch",
            Error::Fragmented => "IP fragment",
            Error::Unsupported => "unsupported protocol",
        })
    }
}

impl core::error::Error for Error {}

/// A byte range inside a header: the type of the `mod field` offset tables.
pub(crate) type Field = core::ops::Range<usize>;
