//! Interface state over rtnetlink (`RTM_GETLINK`, crates netlink-packet-route + netlink-sys:
//! safe, sync, and correct in the calling thread's network namespace, unlike /sys/class/net):
//! whether it exists and is up, its RX queues ([`queue_count`]) and the XDP program attached to
//! it; and the removal of a legacy-attached program (`RTM_SETLINK` with `IFLA_XDP_FD = -1`).

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::error::LoadError;

/// Number of RX queues of `ifname` in the calling thread's network namespace
/// (`IFLA_NUM_RX_QUEUES`; the same number as `/sys/class/net/<if>/queues/rx-*` shows in the
/// namespace /sys was mounted in).
pub fn queue_count(ifname: &str) -> Result<usize, LoadError> {
    let link = get_link(ifname)?.ok_or_else(|| LoadError::NoSuchInterface(ifname.to_owned()))?;
    Ok(link.num_rx_queues.unwrap_or(1).max(1) as usize)
}

pub(super) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(super) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

pub(super) struct LinkState {
    pub(super) index: u32,
    pub(super) up: bool,
    num_rx_queues: Option<u32>,
    pub(super) xdp: Option<AttachedXdp>,
}

pub(super) struct AttachedXdp {
    pub(super) prog_id: u32,
    /// The mode flag to use when removing it.
    pub(super) flags: u32,
}

impl AttachedXdp {
    pub(super) fn mode_name(&self) -> &'static str {
        match self.flags {
            XDP_FLAGS_DRV_MODE => "native",
            XDP_FLAGS_SKB_MODE => "skb",
            XDP_FLAGS_HW_MODE => "offload",
            _ => "several",
        }
    }
}

fn netlink_socket() -> Result<Socket, LoadError> {
    let nl = |e: std::io::Error| LoadError::Netlink(e.to_string());
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(nl)?;
    socket.bind_auto().map_err(nl)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(nl)?;
    Ok(socket)
}

/// Sends one request and returns the replies up to and including the final one
/// (the answer for a GET, the ACK or error for a SET).
fn request(msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, LoadError> {
    let socket = netlink_socket()?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| LoadError::Netlink(e.to_string()))?;

    let mut replies = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full().map_err(|e| LoadError::Netlink(e.to_string()))?;
        if data.is_empty() {
            return Err(LoadError::Netlink("empty reply".into()));
        }
        let mut offset = 0;
        while offset < data.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| LoadError::Netlink(e.to_string()))?;
            let len = msg.header.length as usize;
            let last =
                matches!(msg.payload, NetlinkPayload::Error(_) | NetlinkPayload::Done(_)) || flags & NLM_F_ACK == 0;
            replies.push(msg);
            if last {
                return Ok(replies);
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

pub(super) fn get_link(ifname: &str) -> Result<Option<LinkState>, LoadError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(ifname.to_owned()));
    let replies = request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST)?;
    for reply in replies {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                return Ok(Some(link_state(&link)));
            }
            NetlinkPayload::Error(e) if e.raw_code() == -libc::ENODEV => return Ok(None),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(LoadError::Netlink(format!("RTM_GETLINK {ifname}: {}", e.to_io())));
            }
            _ => {}
        }
    }
    Err(LoadError::Netlink(format!("RTM_GETLINK {ifname}: no answer")))
}

fn link_state(link: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: link.header.index,
        up: link.header.flags.contains(LinkFlags::Up),
        num_rx_queues: None,
        xdp: None,
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::NumRxQueues(n) => state.num_rx_queues = Some(*n),
            LinkAttribute::Xdp(xdp) => state.xdp = attached_xdp(xdp),
            _ => {}
        }
    }
    state
}

fn attached_xdp(attrs: &[LinkXdp]) -> Option<AttachedXdp> {
    let mut attached = None;
    let mut prog_id = 0;
    for a in attrs {
        match a {
            LinkXdp::Attached(mode) => attached = Some(*mode),
            LinkXdp::ProgId(id) => prog_id = *id,
            LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) if prog_id == 0 => prog_id = *id,
            _ => {}
        }
    }
    let flags = match attached? {
        XdpAttached::None => return None,
        XdpAttached::Driver => XDP_FLAGS_DRV_MODE,
        XdpAttached::SocketBuffer => XDP_FLAGS_SKB_MODE,
        XdpAttached::Hardware => XDP_FLAGS_HW_MODE,
        _ => 0,
    };
    Some(AttachedXdp { prog_id, flags })
}

/// Removes a program attached with the legacy netlink interface (`IFLA_XDP_FD = -1`).
/// The kernel answers EBUSY when a bpf_link holds the program.
pub(super) fn detach_legacy(index: u32, mode_flags: u32) -> Result<(), std::io::Error> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    let mut xdp = vec![LinkXdp::Fd(-1)];
    if mode_flags != 0 {
        xdp.push(LinkXdp::Flags(mode_flags));
    }
    msg.attributes.push(LinkAttribute::Xdp(xdp));
    let replies = request(RouteNetlinkMessage::SetLink(msg), NLM_F_REQUEST | NLM_F_ACK)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    for reply in replies {
        if let NetlinkPayload::Error(e) = reply.payload {
            return match e.code {
                None => Ok(()),
                Some(_) => Err(e.to_io()),
            };
        }
    }
    Err(std::io::Error::other("RTM_SETLINK: no acknowledgement"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_attributes_give_mode_and_id() {
        assert!(attached_xdp(&[LinkXdp::Attached(XdpAttached::None)]).is_none());
        let a = attached_xdp(&[LinkXdp::Attached(XdpAttached::SocketBuffer), LinkXdp::ProgId(7)]).unwrap();
        assert_eq!((a.prog_id, a.mode_name()), (7, "skb"));
        let a = attached_xdp(&[LinkXdp::Attached(XdpAttached::Driver), LinkXdp::DrvProgId(9)]).unwrap();
        assert_eq!((a.prog_id, a.mode_name()), (9, "native"));
    }
}
