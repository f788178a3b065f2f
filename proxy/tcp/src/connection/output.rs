//! What leaves next, and how one segment is built: `poll_transmit` in the order of the parent
//! module's doc (RST, SYN/SYN-ACK, loss-recovery retransmissions, new data and FIN, probes,
//! ACKs), bounded by the congestion and send windows with sender SWS avoidance (RFC 9293
//! 3.8.6.2.1, no Nagle).
//!
//! What this is not: the decisions of recovery (`recovery` sets what to retransmit) or of the
//! timers (`timers` sets which probes are due); this only carries them out.

use super::{Connection, Ctx, State};
use crate::congestion::CongestionControl;
use crate::seq::SeqNumber;
use sluice_wire::emit_ip_tcp_in_place;
use sluice_wire::tcp::{self, Flags};

impl Connection {
    fn base_repr(&self) -> tcp::Repr<'static> {
        tcp::Repr {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq_number: 0,
            ack_number: 0,
            flags: Flags::empty(),
            window_len: 0,
            ..Default::default()
        }
    }

    /// Build and write one segment. `data`: bytes of the send buffer from `seq` (at most
    /// `len`), trimmed to what fits. Returns (packet length, payload length).
    fn emit(
        &mut self,
        ctx: &mut Ctx<'_>,
        buf: &mut [u8],
        seq: SeqNumber,
        flags: Flags,
        data_len: usize,
    ) -> Option<(usize, usize)> {
        let now = ctx.now;
        let mut repr = self.base_repr();
        repr.seq_number = seq.0;
        repr.flags = flags;
        let syn = flags.syn();
        if flags.ack() {
            repr.ack_number = self.rcv.rcv_nxt.0;
        }
        if syn {
            repr.window_len = self.rcv.syn_window() as u16;
            if flags.ack() {
                self.rcv.rcv_adv = self.rcv.rcv_nxt + self.rcv.syn_window();
            }
            repr.max_seg_size = Some(self.opts.our_mss.min(65_535) as u16);
            if self.opts.offered_wscale {
                repr.window_scale = Some(self.rcv.rcv_wscale);
            }
            repr.sack_permitted = self.opts.sack_ok;
            let tsecr = if flags.ack() { self.opts.ts_recent } else { 0 };
            repr.timestamp = self.opts.timestamp(now, tsecr);
        } else {
            if flags.ack() {
                repr.window_len = self.rcv.advertise(self.opts.our_mss);
            }
            repr.timestamp = self.opts.timestamp(now, self.opts.ts_recent);
            if self.opts.sack_ok && flags.ack() && self.rcv.buf.has_out_of_order() {
                self.rcv.sack_blocks(&mut repr.sack_blocks);
            }
        }
        let hl = repr.header_len();
        let ip_hl = self.tuple.version().header_len();
        let room = buf.len().checked_sub(ip_hl + hl)?;
        let opt_len = hl - tcp::HEADER_LEN;
        let mut len = data_len.min(self.opts.mss_budget.saturating_sub(opt_len)).min(room);
        let off = ip_hl + hl;
        if len > 0 {
            let start = seq - self.data_start();
            len = self.snd.buf.read_at(start, &mut buf[off..off + len]);
            if seq + len == self.data_end() {
                repr.flags |= Flags::PSH;
            }
        }
        // A FIN rides only on the segment that carries the last byte.
        if repr.flags.fin() && seq + len != self.data_end() {
            repr.flags.remove(Flags::FIN);
        }
        let ip = self.tuple.ip_repr(hl + len)?;
        let n = emit_ip_tcp_in_place(buf, &ip, &repr, len).ok()?;
        ctx.stats.segments_out += 1;
        ctx.stats.bytes_out += len as u64;
        ctx.stats.sack_blocks_sent += repr.sack_capacity() as u64;
        if repr.flags.ack() {
            self.rcv.on_ack_sent();
        }
        Some((n, len + usize::from(repr.flags.fin()) + usize::from(syn)))
    }

    /// Send a segment of data (and FIN) starting at `seq`; advances snd_nxt/snd_max when new.
    fn send_data(&mut self, ctx: &mut Ctx<'_>, buf: &mut [u8], seq: SeqNumber, len: usize, fin: bool) -> Option<usize> {
        let mut flags = Flags::ACK;
        if fin {
            flags |= Flags::FIN;
        }
        let (n, seg_len) = self.emit(ctx, buf, seq, flags, len)?;
        let end = seq + seg_len;
        let new_data = end > self.snd.snd_max;
        if seq == self.snd.snd_nxt {
            self.snd.snd_nxt = end;
        }
        if end > self.snd.snd_max {
            // Karn: time only segments sent for the first time.
            if self.timers.rtt_probe.is_none() && seq >= self.snd.snd_max && self.timers.retransmits == 0 {
                self.timers.rtt_probe = Some((seq, ctx.now));
            }
            self.snd.snd_max = end;
        }
        if seg_len > 0 {
            self.timers.arm_rto(ctx.now);
            if self.opts.sack_ok && self.recovery.loss_probes {
                let one = self.snd.outstanding() <= self.opts.data_mss();
                self.recovery.probe.on_send(ctx.now, new_data, &self.timers.rtt, one);
            }
        }
        Some(n)
    }

    /// Write at most one segment into `buf` (IP + TCP); see the module doc for the order.
    pub(crate) fn poll_transmit(&mut self, ctx: &mut Ctx<'_>, buf: &mut [u8]) -> Option<usize> {
        let now = ctx.now;
        if self.rst_pending {
            self.rst_pending = false;
            let (n, _) = self.emit(ctx, buf, self.snd.snd_max, Flags::RST | Flags::ACK, 0)?;
            ctx.stats.rsts_sent += 1;
            return Some(n);
        }
        match self.state {
            State::Closed | State::Listen => return None,
            State::SynSent | State::SynReceived => {
                let iss = self.snd.iss;
                if self.snd.snd_nxt == iss {
                    let flags = if self.state == State::SynSent { Flags::SYN } else { Flags::SYN | Flags::ACK };
                    let (n, _) = self.emit(ctx, buf, iss, flags, 0)?;
                    self.snd.snd_nxt = iss + 1;
                    if self.snd.snd_max < self.snd.snd_nxt {
                        self.snd.snd_max = self.snd.snd_nxt;
                        if self.timers.retransmits == 0 {
                            self.timers.rtt_probe = Some((iss, now));
                        }
                    }
                    self.timers.arm_rto(now);
                    return Some(n);
                }
                if self.state == State::SynReceived && self.rcv.ack_now {
                    return self.emit(ctx, buf, self.snd.snd_nxt, Flags::ACK, 0).map(|x| x.0);
                }
                return None;
            }
            _ => {}
        }
        let mss = self.opts.data_mss();
        let data_end = self.data_end();
        let sending = self.state.may_send();
        let fin_state = self.snd.fin_queued
            && !self.snd.fin_acked
            && matches!(self.state, State::FinWait1 | State::Closing | State::LastAck);
        let sack_ok = self.opts.sack_ok;
        if sending && self.snd.snd_max > self.snd.snd_una {
            let snd_una = self.snd.snd_una;
            // Fast retransmit of the first unacknowledged segment (RFC 5681 3.2 step 2, RFC 6582).
            if self.recovery.rexmit_una {
                self.recovery.rexmit_una = false;
                let len = self.snd.outstanding().min(mss).min(data_end - snd_una);
                let fin = fin_state && snd_una + len == data_end;
                if len > 0 || fin {
                    let n = self.send_data(ctx, buf, snd_una, len, fin)?;
                    self.recovery.high_rxt = self.recovery.high_rxt.max(snd_una + len.max(1));
                    if core::mem::take(&mut self.recovery.rexmit_rack) {
                        ctx.stats.retransmits_rack += 1;
                    } else {
                        ctx.stats.retransmits_fast += 1;
                    }
                    return Some(n);
                }
            }
            self.recovery.rexmit_rack = false;
            // RFC 8985 7.3 tail loss probe: the last segment sent (with our FIN if it was sent).
            if core::mem::take(&mut self.recovery.tlp_pending) {
                let end = self.snd.snd_max.min(data_end);
                let len = (end - snd_una).min(mss);
                let fin = fin_state && self.snd.snd_max > data_end;
                if len > 0 || fin {
                    let n = self.send_data(ctx, buf, end - len, len, fin)?;
                    ctx.stats.retransmits_tlp += 1;
                    return Some(n);
                }
            }
            // RFC 6675 5 (C): while pipe < cwnd, retransmit NextSeg.
            if self.recovery.in_recovery && sack_ok {
                let r = &self.recovery;
                let pipe = r.pipe(snd_una, self.snd.snd_max, mss);
                if pipe < r.cc.cwnd()
                    && let Some((s, l)) = r.scoreboard.next_seg(snd_una, r.high_rxt, mss)
                {
                    let len = l.min(data_end - s);
                    let fin = fin_state && s + len == data_end && l > len;
                    if len > 0 || fin {
                        let n = self.send_data(ctx, buf, s, len, fin)?;
                        self.recovery.high_rxt = s + len.max(1);
                        ctx.stats.retransmits_sack += 1;
                        return Some(n);
                    }
                    self.recovery.high_rxt = s + l;
                }
            }
        }
        if sending {
            // New data (or data again after an RTO), then the FIN.
            let snd_nxt = self.snd.snd_nxt;
            let available = data_end - snd_nxt;
            let flight = if self.recovery.in_recovery && sack_ok {
                self.recovery.pipe(self.snd.snd_una, self.snd.snd_max, mss)
            } else {
                snd_nxt - self.snd.snd_una
            };
            let cwnd = self.recovery.cc.cwnd() + self.recovery.inflation;
            let cwnd_room = cwnd.saturating_sub(flight);
            let wnd_room = (self.snd.snd_una + self.snd.snd_wnd) - snd_nxt;
            let len = available.min(mss).min(cwnd_room).min(wnd_room);
            if len > 0 {
                // Sender SWS avoidance (RFC 9293 3.8.6.2.1) without Nagle: a full segment, all
                // that is queued, half the largest window, or nothing outstanding.
                let ok =
                    len == mss || len == available || len >= self.snd.max_snd_wnd / 2 || snd_nxt == self.snd.snd_una;
                if ok {
                    let fin = fin_state && snd_nxt + len == data_end;
                    return self.send_data(ctx, buf, snd_nxt, len, fin);
                }
            } else if available == 0 && fin_state && snd_nxt == data_end {
                return self.send_data(ctx, buf, snd_nxt, 0, true);
            }
        }
        // Zero-window probe and keepalive: an out-of-window ACK <SEQ=SND.UNA-1> elicits an ACK.
        if self.timers.probe_pending || self.timers.keepalive_pending {
            if self.timers.probe_pending {
                ctx.stats.zero_window_probes += 1;
            } else {
                ctx.stats.keepalives_sent += 1;
            }
            self.timers.probe_pending = false;
            self.timers.keepalive_pending = false;
            let seq = self.snd.snd_una - 1;
            return self.emit(ctx, buf, seq, Flags::ACK, 0).map(|x| x.0);
        }
        if self.rcv.ack_now || self.window_update_due() {
            // SND.MAX, not SND.NXT: after an RTO SND.NXT goes back, and an ACK numbered below
            // the peer's RCV.NXT would fail its acceptability test and be ignored.
            let seq = self.snd.snd_max;
            let r = self.emit(ctx, buf, seq, Flags::ACK, 0).map(|x| x.0);
            self.update_persist(now);
            return r;
        }
        self.update_persist(now);
        None
    }
}
