//! SEGMENT ARRIVES (RFC 9293 3.10.7) at the endpoint: demultiplexing by 4-tuple to a TCB, the
//! reopening of a TIME-WAIT 4-tuple by a new SYN (RFC 9293 3.10.7.4, RFC 6191), then a
//! listener (`listen`), else CLOSED (3.10.7.1): a rate-limited RST.
//!
//! Also the path-MTU messages that quote one of our segments (`path_mtu`, RFC 5927).
//!
//! What this is not: a TCB's own processing (`connection`), LISTEN (`listen`).

use super::{CTRL_QUEUE_LEN, Endpoint};
use crate::config::{DropReason, FourTuple, PathMtuIgnored};
use crate::connection::State;
use crate::time::Instant;
use core::net::SocketAddr;
use sluice_wire::{ip, tcp};

impl Endpoint {
    pub(super) fn queue_rst(&mut self, now: Instant, tuple: FourTuple, seg: &tcp::Repr<'_>) {
        if seg.flags.rst() {
            return;
        }
        if !self.rst_limit.allow(now) || self.rsts.len() >= CTRL_QUEUE_LEN {
            self.stats.rsts_rate_limited += 1;
            return;
        }
        // RFC 9293 3.10.7.1: "If the incoming segment has the ACK bit set, the reset takes its
        // sequence number from the ACK field; otherwise the reset has sequence number zero and
        // the ACK field is set to the sum of the sequence number and segment length".
        if seg.flags.ack() {
            self.rsts.push_back((tuple, seg.ack_number, None));
        } else {
            let ack = seg.seq_number.wrapping_add(seg.segment_len() as u32);
            self.rsts.push_back((tuple, 0, Some(ack)));
        }
    }

    /// Process one received segment, IPv4 or IPv6. `ip` and `seg` come from the wire parsers
    /// with checksums verified (or offloaded). Never fails: drops are counted in
    /// `stats().drops`.
    pub fn handle_segment(&mut self, now: Instant, ip: &ip::Repr, seg: &tcp::Repr<'_>) {
        self.stats.segments_in += 1;
        let tuple = FourTuple {
            local: SocketAddr::new(ip.dst_addr(), seg.dst_port),
            remote: SocketAddr::new(ip.src_addr(), seg.src_port),
        };
        if let Some(&slot) = self.table.get(&tuple) {
            let reuse = self.slots[slot as usize].conn.as_ref().is_some_and(|c| {
                // RFC 9293 3.10.7.4 / RFC 6191: a new SYN may reopen a connection in TIME-WAIT
                // when its sequence number is beyond the old one.
                c.state() == State::TimeWait
                    && seg.flags.syn()
                    && !seg.flags.ack()
                    && !seg.flags.rst()
                    && crate::seq::SeqNumber(seg.seq_number) > c.rcv_nxt()
            }) && self.find_listener(tuple.local).is_some();
            if reuse {
                self.free_slot(slot);
            } else {
                self.with_conn(slot, now, |c, ctx| c.handle_segment(ctx, seg));
                self.after(slot, true);
                self.prune_timers();
                return;
            }
        }
        match self.find_listener(tuple.local) {
            Some(li) => self.listener_segment(now, li, tuple, seg),
            None => {
                self.stats.drop(DropReason::NoListener);
                self.queue_rst(now, tuple, seg);
            }
        }
        self.prune_timers();
    }

    /// A path-MTU message (ICMPv4 fragmentation needed, ICMPv6 Packet Too Big; see
    /// `sluice_wire::icmp`) reports `mtu` for the connection `tuple` (`local` is the quoted
    /// packet's source, ours), quoting its sequence number `quoted_seq`. When the sequence
    /// number is in flight (RFC 5927 4.1) and the MTU lowers the connection's segment size,
    /// the size goes down (never below 536 bytes over IPv4 / 1220 over IPv6, RFC 1191 / RFC
    /// 8201) and what is in flight is sent again from SND.UNA at the new size on the next
    /// `poll_transmit`. `Err` says why it was ignored; count both outcomes.
    pub fn path_mtu(
        &mut self,
        now: Instant,
        tuple: &FourTuple,
        mtu: u32,
        quoted_seq: u32,
    ) -> Result<(), PathMtuIgnored> {
        let &slot = self.table.get(tuple).ok_or(PathMtuIgnored::NoConnection)?;
        let mtu = usize::try_from(mtu).unwrap_or(usize::MAX);
        let r =
            self.with_conn(slot, now, |c, _| c.path_mtu(mtu, quoted_seq)).unwrap_or(Err(PathMtuIgnored::NoConnection));
        self.after(slot, true);
        self.prune_timers();
        r
    }
}
