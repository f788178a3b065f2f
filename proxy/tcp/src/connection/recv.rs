//! The receive sequence space of RFC 9293 3.3.1 (IRS, RCV.NXT, and RCV.WND as the right edge
//! last advertised), the shift of our window field (RFC 7323 2.3 Rcv.Wind.Shift), the
//! reassembly buffer (`recv_buffer`), the peer's FIN, and when to acknowledge: at once or after
//! the delayed-ACK timer (RFC 5681 4.2, RFC 9293 3.8.6.3), with receiver SWS avoidance for
//! window updates (RFC 9293 3.8.6.2.2). Also the application's `recv`.
//!
//! The delayed-ACK timer lives here rather than in `timers` because it is one half of the
//! delayed-ACK state (Linux's `icsk_ack`): the other half, an ACK owed now, is set by every
//! step of the input path and cleared by every segment that carries an ACK.
//!
//! What this is not: the acceptability test (`handle_segment` in the parent module).

use super::{Connection, Ctx};
use crate::config::{Config, DropReason, Event, StreamError};
use crate::ranges::Range;
use crate::recv_buffer::RecvBuffer;
use crate::seq::SeqNumber;
use crate::time::Instant;
use core::time::Duration;
use sluice_wire::tcp::{self, SackBlock};

/// Receive sequence variables (RFC 9293 3.3.1), the reassembly buffer and the delayed-ACK
/// state.
#[derive(Debug)]
pub(super) struct RecvSpace {
    pub(super) irs: SeqNumber,
    pub(super) rcv_nxt: SeqNumber,
    /// Right edge of the window we last advertised.
    pub(super) rcv_adv: SeqNumber,
    /// Our shift (applied by the peer to our window field).
    pub(super) rcv_wscale: u8,
    pub(super) last_ack_sent: SeqNumber,
    /// In-order bytes not yet read, and out-of-order ones (RFC 2018 SACK blocks come from here).
    pub(super) buf: RecvBuffer,
    /// The peer's FIN sequence number, known before all data ahead of it arrived.
    pub(super) remote_fin: Option<SeqNumber>,
    pub(super) fin_received: bool,
    /// An ACK is owed now (out-of-order data, a FIN, a challenge, an unacceptable segment...).
    pub(super) ack_now: bool,
    /// The delayed-ACK timer (RFC 5681 4.2).
    pub(super) delack_at: Option<Instant>,
    delayed_ack: Duration,
}

impl RecvSpace {
    pub(super) fn new(config: &Config, buf: RecvBuffer) -> Self {
        RecvSpace {
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            rcv_wscale: if config.window_scale { config.rcv_wscale() } else { 0 },
            last_ack_sent: SeqNumber(0),
            buf,
            remote_fin: None,
            fin_received: false,
            ack_now: false,
            delack_at: None,
            delayed_ack: config.delayed_ack,
        }
    }

    /// RCV.WND: what is left of the window we last advertised.
    pub(super) fn rcv_wnd(&self) -> usize {
        self.rcv_adv - self.rcv_nxt
    }

    /// The window advertised in a SYN or SYN-ACK (never scaled).
    pub(super) fn syn_window(&self) -> usize {
        self.buf.window().min(65_535)
    }

    /// Seventh step of RFC 9293 3.10.7.4, segment text: place it in the reassembly buffer,
    /// advance RCV.NXT, note a FIN, and decide when to acknowledge (at once, or by the
    /// delayed-ACK timer unless `ack_every` bytes arrived since the last ACK).
    pub(super) fn process_text(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>, ack_every: usize) {
        let now = ctx.now;
        let seq = SeqNumber(seg.seq_number);
        let had_ooo = self.buf.has_out_of_order();
        let was_readable = self.buf.readable() > 0;
        let placed = self.buf.place(self.rcv_nxt, seq, seg.payload);
        if placed.refused {
            ctx.stats.drop(DropReason::ReassemblyFull);
            self.ack_now = true;
            return;
        }
        ctx.stats.bytes_in += placed.advanced as u64;
        self.rcv_nxt += placed.advanced;
        // Edge-triggered: only when bytes appear in an empty receive buffer.
        if placed.advanced > 0 && !was_readable {
            ctx.event(Event::Readable);
        }
        if seg.flags.fin() && placed.trimmed == 0 {
            let fs = seq + seg.payload.len();
            if fs >= self.rcv_nxt {
                self.remote_fin = Some(fs);
            }
        }
        // RFC 5681 4.2: ACK at once for out-of-order data and for data filling a hole;
        // otherwise at least every second full-sized segment, else within the delayed-ACK timer.
        if placed.out_of_order || had_ooo || placed.trimmed > 0 || seg.flags.fin() {
            self.ack_now = true;
        } else if !seg.payload.is_empty() {
            if self.rcv_nxt - self.last_ack_sent >= ack_every {
                self.ack_now = true;
            } else if self.delack_at.is_none() {
                self.delack_at = Some(now + self.delayed_ack);
            }
        }
    }

    /// Eighth step, the FIN, "once every byte before it arrived": RCV.NXT covers it and it is
    /// acknowledged at once. Returns whether it was taken now.
    pub(super) fn take_fin(&mut self) -> bool {
        if let Some(fs) = self.remote_fin
            && !self.fin_received
            && fs == self.rcv_nxt
        {
            self.rcv_nxt += 1;
            self.fin_received = true;
            self.ack_now = true;
            return true;
        }
        false
    }

    /// Our window for the next segment, with receiver SWS avoidance (RFC 9293 3.8.6.2.2) and
    /// without shrinking an advertised window (RFC 9293 3.8.6). Updates `rcv_adv`.
    pub(super) fn advertise(&mut self, our_mss: usize) -> u16 {
        let free = self.buf.window();
        let mut right = self.rcv_nxt + free;
        let threshold = (self.buf.capacity() / 2).min(our_mss).max(1);
        let old = self.rcv_adv.max(self.rcv_nxt);
        if right > old && right - old < threshold {
            right = old;
        }
        if right < old {
            right = old;
        }
        let wnd = right - self.rcv_nxt;
        let field = (wnd >> self.rcv_wscale).min(65_535);
        self.rcv_adv = self.rcv_nxt + (field << self.rcv_wscale);
        field as u16
    }

    /// Reading moved the right edge by enough to tell the peer (RFC 9293 3.8.6.2.2).
    fn window_update_due(&self, our_mss: usize) -> bool {
        if self.fin_received {
            return false;
        }
        // The window field can carry at most 65535 << RCV.WIND.SHIFT: a buffer larger than that
        // (a peer that did not offer window scaling) must not make an update look due forever.
        let max_wnd = 65_535usize << self.rcv_wscale;
        let right = self.rcv_nxt + self.buf.window().min(max_wnd);
        let threshold = (self.buf.capacity() / 2).min(2 * our_mss).max(1);
        right > self.rcv_adv && right - self.rcv_adv >= threshold
    }

    /// RFC 2018 SACK blocks for an ACK, from the out-of-order data held.
    pub(super) fn sack_blocks(&self, out: &mut [Option<SackBlock>]) {
        let mut ranges: [Option<Range>; 4] = [None; 4];
        let n = self.buf.sack_ranges(&mut ranges);
        for (slot, r) in out.iter_mut().zip(ranges.iter().take(n)) {
            *slot = r.map(|r| SackBlock { left: r.left.0, right: r.right.0 });
        }
    }

    /// A segment carrying an ACK of RCV.NXT left: nothing is owed any more.
    pub(super) fn on_ack_sent(&mut self) {
        self.ack_now = false;
        self.delack_at = None;
        self.last_ack_sent = self.rcv_nxt;
    }
}

impl Connection {
    pub(super) fn window_update_due(&self) -> bool {
        self.state.can_receive() && self.rcv.window_update_due(self.opts.our_mss)
    }

    /// RFC 9293 3.10.3 RECEIVE.
    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        let n = self.rcv.buf.read(buf);
        if n == 0 && !buf.is_empty() && self.rcv.fin_received {
            return Err(StreamError::Finished);
        }
        if n > 0 && self.window_update_due() {
            self.rcv.ack_now = true;
        }
        Ok(n)
    }

    /// Bytes ready for `recv`.
    #[must_use]
    pub fn readable(&self) -> usize {
        self.rcv.buf.readable()
    }
    #[must_use]
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv.rcv_nxt
    }
    /// Bytes held by the receive side (readable plus out of order).
    #[must_use]
    pub fn recv_buffered(&self) -> usize {
        self.rcv.buf.readable() + self.rcv.buf.held_out_of_order()
    }
}
