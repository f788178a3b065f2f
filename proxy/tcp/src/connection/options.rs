//! What the handshake negotiated: the MSS (RFC 9293 3.7.1), window scaling (RFC 7323 2; the
//! shifts themselves sit with the sequence space each scales), SACK-permitted (RFC 2018) and
//! timestamps (RFC 7323 3 and 4: TS.Recent, our TSval clock, RTT from TSecr), and PAWS
//! (RFC 7323 5) with Linux's leniency for reordering and our anchors (`PawsAnchors`).
//!
//! What this is not: the SACK scoreboard (`recovery`), the SACK blocks we send (`recv`).

use super::Connection;
use crate::config::Config;
use crate::congestion::CongestionControl;
use crate::seq::SeqNumber;
use crate::time::Instant;
use core::time::Duration;
use sluice_wire::ip::Version;
use sluice_wire::tcp::{self, Timestamp};

/// PAWS: timestamps older than this are not compared (RFC 7323 5.5, 24 days).
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

/// Sequence space between two PAWS anchors (see `PawsAnchors`).
const PAWS_ANCHOR_BYTES: u32 = 1 << 28;

/// Two (TSval, RCV.NXT) points of the peer's stream at least `PAWS_ANCHOR_BYTES` apart, the
/// older at most 2 * `PAWS_ANCHOR_BYTES` = 2^29 behind RCV.NXT. A segment whose TSval is not
/// older than the older anchor's was sent after the peer had reached that point of its
/// stream, so it cannot be an old duplicate from an earlier sequence wrap, whatever its
/// TSval's age relative to TS.Recent (see `Connection::paws_discard`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PawsAnchors {
    /// (TSval, RCV.NXT, when): `[older, newer]`.
    points: [(u32, SeqNumber, Instant); 2],
    valid: bool,
}

impl PawsAnchors {
    pub(crate) fn new(tsval: u32, rcv_nxt: SeqNumber, now: Instant) -> Self {
        PawsAnchors { points: [(tsval, rcv_nxt, now); 2], valid: true }
    }
    /// TS.Recent was updated to `tsval` with RCV.NXT at `rcv_nxt`.
    pub(crate) fn on_ts_recent(&mut self, tsval: u32, rcv_nxt: SeqNumber, now: Instant) {
        if !self.valid {
            *self = Self::new(tsval, rcv_nxt, now);
        } else if rcv_nxt.0.wrapping_sub(self.points[1].1.0) >= PAWS_ANCHOR_BYTES
            || now - self.points[1].2 >= PAWS_IDLE / 4
        {
            self.points = [self.points[1], (tsval, rcv_nxt, now)];
        }
    }
    /// `tsval` is not older than the older anchor (whose TSval is still comparable).
    pub(crate) fn covers(&self, tsval: u32, now: Instant) -> bool {
        let (anchor, _, at) = self.points[0];
        self.valid && now - at < PAWS_IDLE / 2 && (tsval.wrapping_sub(anchor) as i32) >= 0
    }
}

/// PAWS: how many ticks older than TS.Recent a TSval may be and still pass (Linux's
/// `TCP_PAWS_WINDOW`): segments reordered around a retransmission (see `paws_discard`).
const PAWS_WINDOW: i32 = 1;

/// Options negotiated on the handshake.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeerSyn {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamp: Option<Timestamp>,
}

impl PeerSyn {
    pub(crate) fn from_repr(seg: &tcp::Repr<'_>) -> Self {
        PeerSyn {
            mss: seg.max_seg_size,
            window_scale: seg.window_scale,
            sack_permitted: seg.sack_permitted,
            timestamp: seg.timestamp,
        }
    }
}

/// The options of this connection: offered by us, then what both sides agreed to.
#[derive(Debug)]
pub(super) struct Options {
    /// Bytes of options + payload per segment: min(peer MSS + 20, MTU - IP header) - 20 (RFC
    /// 9293 3.7.1), lowered by path-MTU messages (`lower_to_path_mtu`).
    pub(super) mss_budget: usize,
    /// Our MSS (what we advertised).
    pub(super) our_mss: usize,
    mtu: usize,
    /// The connection's IP version: its header length and its minimum MTU.
    version: Version,
    /// Window scaling offered, then in use (RFC 7323 2.2: both sides sent the option).
    pub(super) offered_wscale: bool,
    pub(super) sack_ok: bool,
    pub(super) ts_ok: bool,
    pub(super) ts_recent: u32,
    ts_recent_time: Instant,
    paws_anchors: PawsAnchors,
    /// Added to our millisecond clock for TSval (RFC 7323 5.4, per connection).
    ts_offset: u32,
}

impl Options {
    pub(super) fn new(config: &Config, now: Instant, ts_offset: u32, version: Version) -> Self {
        Options {
            mss_budget: 536,
            our_mss: config.mss(version),
            mtu: config.mtu,
            version,
            offered_wscale: config.window_scale,
            sack_ok: config.sack,
            ts_ok: config.timestamps,
            ts_recent: 0,
            ts_recent_time: now,
            paws_anchors: PawsAnchors::default(),
            ts_offset,
        }
    }

    /// Apply the peer's SYN options (RFC 9293 3.7.1 MSS; RFC 7323 1.3 and 2.2: window scale and
    /// timestamps only when both sides sent them; RFC 2018 SACK likewise). `rcv_nxt` and `now`
    /// start PAWS from the SYN's TSval. Returns the peer's window shift when window scaling is
    /// in use.
    fn negotiate(&mut self, peer: &PeerSyn, rcv_nxt: SeqNumber, now: Instant) -> Option<u8> {
        let peer_mss = usize::from(peer.mss.unwrap_or(536)).max(64);
        let ip_header_len = self.version.header_len();
        self.mss_budget = (peer_mss + 20).min(self.mtu.saturating_sub(ip_header_len)).saturating_sub(20).max(64);
        let snd_wscale = match (self.offered_wscale, peer.window_scale) {
            (true, Some(ws)) => Some(ws.min(14)),
            _ => {
                self.offered_wscale = false;
                None
            }
        };
        self.sack_ok = self.sack_ok && peer.sack_permitted;
        match peer.timestamp {
            Some(ts) if self.ts_ok => {
                self.ts_recent = ts.tsval;
                self.ts_recent_time = now;
                self.paws_anchors = PawsAnchors::new(ts.tsval, rcv_nxt, now);
            }
            _ => self.ts_ok = false,
        }
        snd_wscale
    }

    /// A path MTU of `mtu` (RFC 1191 / RFC 8201): lowers the bytes of options + payload per
    /// segment so that a segment fits it, never below what the family's minimum MTU allows
    /// (`Version::min_mtu`: 576 bytes, MSS 536, for IPv4; 1280, MSS 1220, for IPv6). Returns
    /// whether the segment size went down (a larger MTU than the current one is ignored: RFC
    /// 1191 6.3).
    pub(super) fn lower_to_path_mtu(&mut self, mtu: usize) -> bool {
        let mtu = mtu.max(self.version.min_mtu());
        let budget = mtu.saturating_sub(self.version.header_len() + tcp::HEADER_LEN);
        if budget >= self.mss_budget {
            return false;
        }
        self.mss_budget = budget;
        true
    }

    /// SMSS for congestion control: the payload of a full segment carrying timestamps.
    pub(super) fn data_mss(&self) -> usize {
        self.mss_budget.saturating_sub(if self.ts_ok { 12 } else { 0 }).max(1)
    }

    /// RFC 5681 4.2: an ACK for at least every second full-sized segment.
    pub(super) fn ack_every(&self) -> usize {
        2 * self.our_mss.min(self.mss_budget.max(536))
    }

    /// Our TSval clock (RFC 7323 5.4: milliseconds, offset per connection).
    pub(super) fn ts_now(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// The timestamp option of a segment we send: TSecr echoes TS.Recent (RFC 7323 3.2).
    pub(super) fn timestamp(&self, now: Instant, tsecr: u32) -> Option<Timestamp> {
        self.ts_ok.then(|| Timestamp { tsval: self.ts_now(now), tsecr })
    }

    /// RFC 7323 4.1: an RTT measurement from the TSecr of an ACK that acknowledges new data.
    pub(super) fn ts_rtt(&self, now: Instant, timestamp: Option<Timestamp>) -> Option<Duration> {
        if self.ts_ok
            && let Some(ts) = timestamp
        {
            let d = self.ts_now(now).wrapping_sub(ts.tsecr);
            if ts.tsecr != 0 && (d as i32) >= 0 && d < 120_000 {
                return Some(Duration::from_millis(u64::from(d)));
            }
        }
        None
    }

    /// RFC 7323 4.3 R3: update TS.Recent from a segment covering Last.ACK.sent (`seq` at or
    /// before it).
    pub(super) fn update_ts_recent(
        &mut self,
        timestamp: Option<Timestamp>,
        seq: SeqNumber,
        last_ack_sent: SeqNumber,
        rcv_nxt: SeqNumber,
        now: Instant,
    ) {
        if self.ts_ok
            && let Some(ts) = timestamp
            && (ts.tsval.wrapping_sub(self.ts_recent) as i32) >= 0
            && seq <= last_ack_sent
        {
            self.ts_recent = ts.tsval;
            self.ts_recent_time = now;
            self.paws_anchors.on_ts_recent(ts.tsval, rcv_nxt, now);
        }
    }
}

impl Connection {
    /// Apply the peer's SYN options (see `Options::negotiate`), the window shifts to both
    /// sequence spaces and the SMSS to congestion control.
    pub(super) fn negotiate(&mut self, peer: PeerSyn) {
        let last_rx = self.timers.last_rx;
        match self.opts.negotiate(&peer, self.rcv.rcv_nxt, last_rx) {
            Some(ws) => self.snd.snd_wscale = ws,
            None => {
                self.snd.snd_wscale = 0;
                self.rcv.rcv_wscale = 0;
            }
        }
        let smss = self.opts.data_mss();
        self.recovery.cc.set_mss(smss);
    }

    /// Window scaling, SACK and timestamps in use (for the endpoint's counters).
    pub(crate) fn negotiated(&self) -> (bool, bool, bool) {
        (self.opts.offered_wscale, self.opts.sack_ok, self.opts.ts_ok)
    }

    /// RFC 7323 5.3 R1 (PAWS): "If there is a Timestamps option in the arriving segment,
    /// SEG.TSval < TS.Recent, TS.Recent is valid (see later discussion), and if the RST bit
    /// is not set, then treat the arriving segment as not acceptable: Send an acknowledgment
    /// in reply as specified in Section 3.10.7.4 of [RFC9293] and drop the segment."
    ///
    /// Read literally, R1 also discards segments that are merely reordered: once a
    /// retransmission filling a hole (a newer TSval) moved TS.Recent, an original sent a
    /// moment earlier and delayed on the path fails R1 although it is valid, and must be
    /// sent again. Like Linux (`tcp_paws_discard()`), we are lenient in two ways:
    /// - `tcp_paws_check(.., TCP_PAWS_WINDOW)`: a TSval at most `PAWS_WINDOW` tick older than
    ///   TS.Recent passes. PAWS exists for old duplicates from 2^31 bytes of sequence space
    ///   ago (RFC 7323 5.1); no path we serve wraps that within one tick of the peer's clock
    ///   (RFC 7323 5.4: 1 ms to 1 s), so those are still rejected.
    /// - `tcp_disordered_ack()`: a pure duplicate ACK (SEG.SEQ = RCV.NXT, SEG.ACK = SND.UNA,
    ///   no window update) less than one RTO old in TSval ticks (Linux assumes 1 ms ticks)
    ///   is only a reordered ACK. It carries nothing to discard, and dropping it would only
    ///   hide the duplicate ACKs and SACK blocks that loss recovery needs.
    ///
    /// And beyond Linux, because a reordering path may hold a segment back for more than one
    /// tick of the peer's clock (the impairment bridge's 1 ms holds often take 2 ms):
    /// - `PawsAnchors::covers`: a TSval no older than one recorded less than 2^29 bytes of
    ///   sequence space ago was sent after that point, so its sequence number cannot be from
    ///   an earlier wrap (it lies within 2^29 + one window, < 2^31, of RCV.NXT): the
    ///   acceptability test alone judges it. This is exactly the hazard of RFC 7323 5.1
    ///   ("old duplicate segments ... from an earlier incarnation of the sequence space"),
    ///   measured in bytes instead of ticks, so it holds whatever the peer's clock rate.
    pub(super) fn paws_discard(&self, seg: &tcp::Repr<'_>, now: Instant) -> bool {
        let o = &self.opts;
        if o.ts_ok
            && !seg.flags.rst()
            && let Some(ts) = seg.timestamp
            && o.ts_recent.wrapping_sub(ts.tsval) as i32 > PAWS_WINDOW
            && now - o.ts_recent_time < PAWS_IDLE
            && !o.paws_anchors.covers(ts.tsval, now)
            && !self.disordered_ack(seg, o.ts_recent.wrapping_sub(ts.tsval))
        {
            return true;
        }
        false
    }

    /// Linux's `tcp_disordered_ack()`: `seg`, whose TSval is `behind` ticks older than
    /// TS.Recent, is a pure duplicate ACK that updates nothing, reordered within one RTO
    /// (counted in milliseconds, Linux's assumption about the peer's tick).
    fn disordered_ack(&self, seg: &tcp::Repr<'_>, behind: u32) -> bool {
        let seq = SeqNumber(seg.seq_number);
        let f = seg.flags;
        let wnd = self.snd.scaled_window(seg.window_len);
        // 1. A pure ACK with the right sequence number.
        f.ack() && !f.syn() && !f.fin() && seg.payload.is_empty() && seq == self.rcv.rcv_nxt
            // 2. ... and a duplicate ACK.
            && SeqNumber(seg.ack_number) == self.snd.snd_una
            // 3. ... that does not update the window (RFC 9293 3.10.7.4 SND.WL1 rule).
            && !(self.snd.snd_wl1 < seq || (self.snd.snd_wl1 == seq && wnd > self.snd.snd_wnd))
            // 4. ... and sits in the replay window.
            && u128::from(behind) <= self.timers.rtt.rto().as_millis()
    }
}
