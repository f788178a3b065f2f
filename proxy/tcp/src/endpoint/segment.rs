//! SEGMENT ARRIVES (RFC 9293 3.10.7) at the endpoint: demultiplexing by 4-tuple to a TCB, the
//! reopening of a TIME-WAIT 4-tuple by a new SYN (RFC 9293 3.10.7.4, RFC 6191), then a
//! listener (`listen`), else CLOSED (3.10.7.1): a rate-limited RST.
//!
//! What this is not: a TCB's own processing (`connection`), LISTEN (`listen`).

use super::{CTRL_QUEUE_LEN, Endpoint};
use crate::config::{DropReason, FourTuple};
use crate::connection::State;
use crate::time::Instant;
use core::net::SocketAddrV4;
use sluice_wire::{ipv4, tcp};

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

    /// Process one received segment. `ip` and `seg` come from the wire parsers with checksums
    /// verified (or offloaded). Never fails: drops are counted in `stats().drops`.
    pub fn handle_segment(&mut self, now: Instant, ip: &ipv4::Repr, seg: &tcp::Repr<'_>) {
        self.stats.segments_in += 1;
        let tuple = FourTuple {
            local: SocketAddrV4::new(ip.dst_addr, seg.dst_port),
            remote: SocketAddrV4::new(ip.src_addr, seg.src_port),
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
}
