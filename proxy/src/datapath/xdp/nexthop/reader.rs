//! The kernel's routes and neighbours over rtnetlink, kept current: one non-blocking
//! `NETLINK_ROUTE` socket subscribed to `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE` and
//! `RTNLGRP_NEIGH` (and to link and address changes, see below), on which the full dumps
//! (`RTM_GETROUTE`, `RTM_GETNEIGH` with `NLM_F_DUMP`) are asked too. Replies and notifications
//! arrive on the one socket in the order the kernel produced them, so applying them in order
//! is right for every entry; what a dump did not see was deleted while notifications were lost
//! and is swept when the dump ends (generations, see [`Table::end_route_dump`]).
//!
//! A dump is asked again when notifications were lost (`ENOBUFS`, a truncated read), when a
//! dump was interrupted (`NLM_F_DUMP_INTR`), and when sluice's interface or one of its
//! addresses changes: IPv4 drops the routes of a downed interface or removed address without
//! any `RTM_DELROUTE` (fib_sync_down_dev, fib_del_ifaddr).

use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use super::messages::{apply_neighbour, apply_route};
use super::table::Table;

/// Multicast groups (include/uapi/linux/rtnetlink.h, `enum rtnetlink_groups`).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// Receive buffer asked for the socket (the kernel caps it at `net.core.rmem_max`): room for
/// a burst of notifications while the worker is busy.
const RECV_BUFFER: usize = 4 << 20;
/// One read: a dump message batch is at most 32 KiB (netlink_dump), a notification far less.
const READ_SIZE: usize = 64 << 10;

/// Errors at the OS edge.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("rtnetlink: the first dump of routes and neighbours did not end within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DumpKind {
    Routes,
    Neighbours,
}

#[derive(Debug, Clone, Copy)]
struct Dump {
    kind: DumpKind,
    sequence: u32,
    interrupted: bool,
}

/// Reads the kernel's routes and neighbours into a [`Table`]; see the module docs.
#[derive(Debug)]
pub struct Reader {
    socket: Socket,
    port: u32,
    buf: Vec<u8>,
    sequence: u32,
    dump: Option<Dump>,
    want_routes: bool,
    want_neighbours: bool,
}

impl Reader {
    /// Opens the socket in the calling thread's network namespace, subscribes, and dumps
    /// routes and neighbours into `table`, waiting up to `timeout` for both dumps to end.
    pub fn open(table: &mut Table, timeout: Duration) -> Result<Self, ReaderError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(ReaderError::Socket)?;
        let port = socket.bind_auto().map_err(ReaderError::Socket)?.port_number();
        // Best effort: a smaller buffer only makes ENOBUFS (and a re-dump) likelier.
        let _ = socket.set_rx_buf_sz(RECV_BUFFER);
        for group in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV6_ROUTE,
        ] {
            socket.add_membership(group).map_err(ReaderError::Socket)?;
        }
        socket.set_non_blocking(true).map_err(ReaderError::Socket)?;
        let mut reader = Self {
            socket,
            port,
            buf: Vec::with_capacity(READ_SIZE),
            sequence: 0,
            dump: None,
            want_routes: true,
            want_neighbours: true,
        };
        let deadline = Instant::now() + timeout;
        reader.start_dump(table)?;
        while !reader.synced() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReaderError::Timeout(timeout));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
            let mut fds = [nix::poll::PollFd::new(reader.socket.as_fd(), nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, ms) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(ReaderError::Socket(e.into())),
            }
            reader.poll(table)?;
        }
        // Later dumps are re-dumps.
        Ok(reader)
    }

    /// Sets the socket's receive buffer (`SO_RCVBUF`, capped by `net.core.rmem_max`; the
    /// default asked at open is 4 MiB). Smaller means notifications are lost (and re-dumped)
    /// sooner: for tests.
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<(), ReaderError> {
        self.socket.set_rx_buf_sz(bytes).map_err(ReaderError::Socket)
    }

    /// Whether no dump is in progress or wanted: the table mirrors the kernel's as far as
    /// the notifications read so far tell.
    pub fn synced(&self) -> bool {
        self.dump.is_none() && !self.want_routes && !self.want_neighbours
    }

    /// Reads and applies everything pending on the socket without blocking; starts a dump
    /// when one is wanted. Returns the number of messages read. Call it when the socket's fd
    /// ([`AsFd`]) is readable, or once per loop.
    pub fn poll(&mut self, table: &mut Table) -> Result<usize, ReaderError> {
        let mut read = 0;
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    // Truncated (larger than one read): what it said is lost.
                    self.lost(table);
                }
                Ok(0) => break,
                Ok(_) => read += self.handle(table),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.lost(table),
                Err(e) => return Err(ReaderError::Socket(e)),
            }
        }
        if self.dump.is_none() {
            self.start_dump(table)?;
        }
        Ok(read)
    }

    /// Notifications were dropped by the kernel: dump everything again.
    fn lost(&mut self, table: &mut Table) {
        table.counters_mut().redumps += 1;
        self.want_routes = true;
        self.want_neighbours = true;
    }

    /// Applies the messages in `self.buf`; returns how many there were.
    fn handle(&mut self, table: &mut Table) -> usize {
        let mut count = 0;
        let mut offset = 0;
        let data = std::mem::take(&mut self.buf);
        while data.len() - offset >= 16 {
            let rest = &data[offset..];
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len < 16 || len > rest.len() {
                table.counters_mut().malformed += 1;
                break;
            }
            count += 1;
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) {
                Ok(msg) => self.message(table, msg),
                Err(_) => table.counters_mut().malformed += 1,
            }
            // NLMSG_ALIGN
            offset += (len + 3) & !3;
        }
        self.buf = data;
        count
    }

    fn message(&mut self, table: &mut Table, msg: NetlinkMessage<RouteNetlinkMessage>) {
        let ours =
            self.dump.filter(|d| msg.header.port_number == self.port && msg.header.sequence_number == d.sequence);
        if let Some(d) = ours
            && msg.header.flags & NLM_F_DUMP_INTR != 0
        {
            self.dump = Some(Dump { interrupted: true, ..d });
        }
        match msg.payload {
            NetlinkPayload::Done(done) if ours.is_some() => {
                // A dump that failed part-way says so in NLMSG_DONE's error code.
                if done.code != 0
                    && let Some(d) = self.dump.as_mut()
                {
                    d.interrupted = true;
                }
                self.end_dump(table);
            }
            NetlinkPayload::Error(e) if ours.is_some() && e.code.is_some() => {
                // The dump failed (EBUSY, ENOMEM): ask it again on the next poll.
                if let Some(d) = self.dump.take() {
                    self.want(d.kind);
                }
            }
            NetlinkPayload::Overrun(_) => self.lost(table),
            NetlinkPayload::InnerMessage(inner) => self.inner(table, &inner),
            _ => {}
        }
    }

    fn inner(&mut self, table: &mut Table, msg: &RouteNetlinkMessage) {
        match msg {
            RouteNetlinkMessage::NewRoute(m) => apply_route(table, m, true),
            RouteNetlinkMessage::DelRoute(m) => apply_route(table, m, false),
            RouteNetlinkMessage::NewNeighbour(m) => apply_neighbour(table, m, true),
            RouteNetlinkMessage::DelNeighbour(m) => apply_neighbour(table, m, false),
            RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) if m.header.index == table.ifindex() => {
                self.interface_changed(table);
            }
            RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m)
                if m.header.index == table.ifindex() =>
            {
                self.interface_changed(table);
            }
            _ => {}
        }
    }

    /// The kernel may have removed IPv4 routes without telling: dump the routes again.
    fn interface_changed(&mut self, table: &mut Table) {
        if !self.want_routes {
            table.counters_mut().redumps += 1;
        }
        self.want_routes = true;
    }

    fn want(&mut self, kind: DumpKind) {
        match kind {
            DumpKind::Routes => self.want_routes = true,
            DumpKind::Neighbours => self.want_neighbours = true,
        }
    }

    fn end_dump(&mut self, table: &mut Table) {
        let Some(d) = self.dump.take() else { return };
        if d.interrupted {
            // Inconsistent: keep what it said, sweep nothing, ask again.
            table.counters_mut().redumps += 1;
            self.want(d.kind);
            return;
        }
        match d.kind {
            DumpKind::Routes => table.end_route_dump(),
            DumpKind::Neighbours => table.end_neighbour_dump(),
        }
    }

    /// Asks the next wanted dump (the kernel runs one dump per socket at a time).
    fn start_dump(&mut self, table: &mut Table) -> Result<(), ReaderError> {
        let (kind, request) = if self.want_routes {
            // AF_UNSPEC: both families.
            (DumpKind::Routes, RouteNetlinkMessage::GetRoute(RouteMessage::default()))
        } else if self.want_neighbours {
            let mut m = NeighbourMessage::default();
            // Filtered by the kernel to sluice's interface (neigh_valid_dump_req).
            m.attributes.push(NeighbourAttribute::IfIndex(table.ifindex()));
            (DumpKind::Neighbours, RouteNetlinkMessage::GetNeighbour(m))
        } else {
            return Ok(());
        };
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
        packet.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        packet.header.sequence_number = self.sequence;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        match self.socket.send(&buf, 0) {
            Ok(_) => {}
            // The socket's send side is never full for a request this small; try again later.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return Ok(()),
            Err(e) => return Err(ReaderError::Socket(e)),
        }
        match kind {
            DumpKind::Routes => {
                self.want_routes = false;
                table.begin_route_dump();
            }
            DumpKind::Neighbours => {
                self.want_neighbours = false;
                table.begin_neighbour_dump();
            }
        }
        self.dump = Some(Dump { kind, sequence: self.sequence, interrupted: false });
        Ok(())
    }
}

impl AsFd for Reader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
