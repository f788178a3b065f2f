//! What leaves the endpoint: `poll_transmit` writes the queued stateless replies first (RSTs
//! for unknown flows, SYN-ACKs carrying a SYN cookie), then the segments of the connections
//! with something to send, one packet per call.
//!
//! What this is not: how a TCB builds its segments (`connection`'s `output`).

use super::Endpoint;
use crate::config::FourTuple;
use crate::time::Instant;
use sluice_wire::tcp::Flags;
use sluice_wire::{emit_ip_tcp_in_place, tcp};

impl Endpoint {
    /// Write one IP + TCP packet into `buf` and return its length, or `None` when there is
    /// nothing to send. `buf` should hold at least MTU bytes.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some((tuple, seq, ack)) = self.rsts.pop_front()
            && let Some(n) = emit_stateless(
                buf,
                tuple,
                seq,
                ack.unwrap_or(0),
                if ack.is_some() { Flags::RST | Flags::ACK } else { Flags::RST },
                None,
                0,
            )
        {
            self.stats.rsts_sent += 1;
            self.stats.segments_out += 1;
            return Some(n);
        }
        if let Some(sa) = self.synacks.pop_front() {
            let window = self.config.recv_buffer.min(65_535) as u16;
            let wscale = sa.opts.window_scale.map(|_| self.config.rcv_wscale());
            let syn = SynOpts {
                mss: self.config.mss(sa.tuple.version()).min(65_535) as u16,
                window_scale: wscale,
                sack_permitted: sa.opts.sack_permitted,
            };
            if let Some(n) = emit_stateless(buf, sa.tuple, sa.iss, sa.ack, Flags::SYN | Flags::ACK, Some(syn), window) {
                self.stats.segments_out += 1;
                return Some(n);
            }
        }
        while let Some(slot) = self.dirty.pop_front() {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                s.queued = false;
            }
            let r = self.with_conn(slot, now, |c, ctx| c.poll_transmit(ctx, buf)).flatten();
            match r {
                Some(n) => {
                    let s = &mut self.slots[slot as usize];
                    if !s.queued {
                        s.queued = true;
                        self.dirty.push_back(slot);
                    }
                    self.after(slot, false);
                    self.prune_timers();
                    return Some(n);
                }
                None => self.after(slot, false),
            }
        }
        self.prune_timers();
        None
    }
}

struct SynOpts {
    mss: u16,
    window_scale: Option<u8>,
    sack_permitted: bool,
}

fn emit_stateless(
    buf: &mut [u8],
    tuple: FourTuple,
    seq: u32,
    ack: u32,
    flags: Flags,
    syn: Option<SynOpts>,
    window: u16,
) -> Option<usize> {
    let mut repr = tcp::Repr {
        src_port: tuple.local.port(),
        dst_port: tuple.remote.port(),
        seq_number: seq,
        ack_number: ack,
        flags,
        window_len: window,
        ..Default::default()
    };
    if let Some(s) = syn {
        repr.max_seg_size = Some(s.mss);
        repr.window_scale = s.window_scale;
        repr.sack_permitted = s.sack_permitted;
    }
    let ip = tuple.ip_repr(repr.header_len())?;
    emit_ip_tcp_in_place(buf, &ip, &repr, 0).ok()
}
