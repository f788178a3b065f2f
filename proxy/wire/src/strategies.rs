//! proptest strategies for arbitrary valid reprs, shared by the tests of every module.

use proptest::prelude::*;

use crate::ip::{self, Protocol};
use crate::{ethernet, ipv4, ipv6, tcp};

/// A `tcp::Repr` with an owned payload (a repr borrows its payload).
#[derive(Debug, Clone)]
pub struct OwnedTcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: u8,
    pub window_len: u16,
    pub max_seg_size: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack_blocks: [Option<tcp::SackBlock>; 4],
    pub timestamp: Option<tcp::Timestamp>,
    pub payload: Vec<u8>,
}

impl OwnedTcp {
    pub fn repr(&self) -> tcp::Repr<'_> {
        tcp::Repr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq_number: self.seq_number,
            ack_number: self.ack_number,
            flags: tcp::Flags(self.flags),
            window_len: self.window_len,
            max_seg_size: self.max_seg_size,
            window_scale: self.window_scale,
            sack_permitted: self.sack_permitted,
            sack_blocks: self.sack_blocks,
            timestamp: self.timestamp,
            payload: &self.payload,
        }
    }
}

fn sack_blocks() -> impl Strategy<Value = [Option<tcp::SackBlock>; 4]> {
    proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4).prop_map(|v| {
        let mut out = [None; 4];
        for (slot, (left, right)) in out.iter_mut().zip(v) {
            *slot = Some(tcp::SackBlock { left, right });
        }
        out
    })
}

/// Any valid TCP repr: non-zero ports, any flags, every option combination, window scale
/// within 14, 0..=4 SACK blocks in front (emit may keep fewer), payload up to `max_payload`.
pub fn tcp_repr(max_payload: usize) -> impl Strategy<Value = OwnedTcp> {
    (
        (1..=u16::MAX, 1..=u16::MAX, any::<u32>(), any::<u32>(), any::<u8>(), any::<u16>()),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0..=tcp::MAX_WINDOW_SCALE),
            any::<bool>(),
            sack_blocks(),
            proptest::option::of(
                (any::<u32>(), any::<u32>()).prop_map(|(tsval, tsecr)| tcp::Timestamp { tsval, tsecr }),
            ),
        ),
        proptest::collection::vec(any::<u8>(), 0..=max_payload),
    )
        .prop_map(|((sp, dp, seq, ack, flags, win), (mss, ws, sp_ok, sack, ts), payload)| OwnedTcp {
            src_port: sp,
            dst_port: dp,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: win,
            max_seg_size: mss,
            window_scale: ws,
            sack_permitted: sp_ok,
            sack_blocks: sack,
            timestamp: ts,
            payload,
        })
}

pub fn mac() -> impl Strategy<Value = ethernet::Address> {
    any::<[u8; 6]>().prop_map(ethernet::Address)
}

pub fn eth_repr() -> impl Strategy<Value = ethernet::Repr> {
    (mac(), mac(), any::<u16>()).prop_map(|(src_addr, dst_addr, t)| ethernet::Repr {
        src_addr,
        dst_addr,
        ethertype: ethernet::EtherType::from(t),
    })
}

pub fn addr() -> impl Strategy<Value = ipv4::Ipv4Addr> {
    any::<u32>().prop_map(ipv4::Ipv4Addr::from)
}

/// An IPv4 repr carrying TCP (payload_len is set by the caller).
pub fn ipv4_repr() -> impl Strategy<Value = ipv4::Repr> {
    (addr(), addr(), any::<u8>()).prop_map(|(src_addr, dst_addr, hop_limit)| ipv4::Repr {
        src_addr,
        dst_addr,
        protocol: ipv4::Protocol::Tcp,
        payload_len: 0,
        hop_limit,
    })
}

pub fn addr6() -> impl Strategy<Value = ipv6::Ipv6Addr> {
    any::<u128>().prop_map(ipv6::Ipv6Addr::from)
}

/// An IPv6 repr carrying TCP, without extension headers (payload_len is set by the caller).
pub fn ipv6_repr() -> impl Strategy<Value = ipv6::Repr> {
    (addr6(), addr6(), any::<u8>()).prop_map(|(src_addr, dst_addr, hop_limit)| ipv6::Repr {
        src_addr,
        dst_addr,
        next_header: Protocol::Tcp,
        payload_len: 0,
        hop_limit,
        payload_offset: ipv6::HEADER_LEN,
    })
}

/// An IPv4 or IPv6 repr carrying TCP (payload_len is set by the caller).
pub fn ip_repr() -> impl Strategy<Value = ip::Repr> {
    prop_oneof![ipv4_repr().prop_map(ip::Repr::V4), ipv6_repr().prop_map(ip::Repr::V6)]
}

/// Two addresses of one family, IPv4 or IPv6.
pub fn ip_addr_pair() -> impl Strategy<Value = (ip::IpAddr, ip::IpAddr)> {
    prop_oneof![
        (addr(), addr()).prop_map(|(a, b)| (a.into(), b.into())),
        (addr6(), addr6()).prop_map(|(a, b)| (a.into(), b.into())),
    ]
}
