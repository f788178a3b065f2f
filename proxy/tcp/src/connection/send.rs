//! The send sequence space of RFC 9293 3.3.1 (ISS, SND.UNA, SND.NXT, SND.WND, SND.WL1, SND.WL2),
//! with SND.MAX (the highest sequence number sent, as in BSD: SND.NXT goes back to SND.UNA after
//! a retransmission timeout), the largest window the peer offered, the shift applied to its
//! window field (RFC 7323 2.3 Snd.Wind.Shift), the send buffer (every byte from SND.UNA on, our
//! SYN excluded) and our FIN. Also the application's `send`.
//!
//! What this is not: the choice of what leaves next (`output`), loss recovery and congestion
//! control (`recovery`), the retransmission timer (`timers`).

use super::{Connection, State};
use crate::config::StreamError;
use crate::ring::Ring;
use crate::seq::SeqNumber;

/// Send sequence variables (RFC 9293 3.3.1) and the send buffer.
#[derive(Debug)]
pub(super) struct SendSpace {
    pub(super) iss: SeqNumber,
    pub(super) snd_una: SeqNumber,
    pub(super) snd_nxt: SeqNumber,
    /// Highest sequence number sent (snd_nxt goes back to snd_una after an RTO).
    pub(super) snd_max: SeqNumber,
    pub(super) snd_wnd: usize,
    /// The largest window the peer advertised (RFC 5961 5.2 MAX.SND.WND; sender SWS avoidance).
    pub(super) max_snd_wnd: usize,
    pub(super) snd_wl1: SeqNumber,
    pub(super) snd_wl2: SeqNumber,
    /// Shift applied to the peer's window field (RFC 7323 2.3).
    pub(super) snd_wscale: u8,
    /// The bytes from SND.UNA (or ISS + 1 before our SYN is acknowledged) on: sent and
    /// unacknowledged, then unsent.
    pub(super) buf: Ring,
    /// `close` was called: a FIN follows the data.
    pub(super) fin_queued: bool,
    pub(super) fin_acked: bool,
    /// `send` found the buffer full: `Event::Writable` once acknowledgments free some room.
    pub(super) want_writable: bool,
}

impl SendSpace {
    pub(super) fn new(iss: SeqNumber, buf: Ring) -> Self {
        SendSpace {
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            snd_wscale: 0,
            buf,
            fin_queued: false,
            fin_acked: false,
            want_writable: false,
        }
    }

    /// SND.MAX - SND.UNA: sequence space sent and not acknowledged (SYN and FIN included).
    pub(super) fn outstanding(&self) -> usize {
        self.snd_max - self.snd_una
    }

    /// SEG.WND of a segment other than a SYN, scaled (RFC 7323 2.3).
    pub(super) fn scaled_window(&self, window_len: u16) -> usize {
        usize::from(window_len) << self.snd_wscale
    }

    /// RFC 9293 3.10.7.4 "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK. Any
    /// segments on the retransmission queue that are thereby entirely acknowledged are
    /// removed": the acknowledged bytes leave the send buffer; an acknowledgment beyond them
    /// covers our FIN. Returns how many bytes of data were acknowledged.
    pub(super) fn on_new_ack(&mut self, ack: SeqNumber) -> usize {
        let mut acked = ack - self.snd_una;
        if self.snd_una == self.iss {
            // Our SYN.
            acked = acked.saturating_sub(1);
        }
        let buffered = self.buf.len();
        if acked > buffered {
            if self.fin_queued {
                self.fin_acked = true;
            }
            acked = buffered;
        }
        self.buf.consume(acked);
        // Every byte acknowledged: the storage goes back (a send ring holds nothing beyond len).
        self.buf.release();
        self.snd_una = ack;
        self.snd_nxt = self.snd_nxt.max(ack);
        acked
    }

    /// RFC 9293 3.10.7.4 "If SND.UNA =< SEG.ACK =< SND.NXT ... If SND.WL1 < SEG.SEQ or (SND.WL1 =
    /// SEG.SEQ and SND.WL2 =< SEG.ACK), set SND.WND <- SEG.WND, set SND.WL1 <- SEG.SEQ, and set
    /// SND.WL2 <- SEG.ACK". Returns whether the window was updated.
    pub(super) fn update_window(&mut self, seq: SeqNumber, ack: SeqNumber, wnd: usize) -> bool {
        if self.snd_una <= ack && (self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack)) {
            self.snd_wnd = wnd;
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            return true;
        }
        false
    }
}

impl Connection {
    /// First sequence number of data (after our SYN).
    pub(super) fn data_start(&self) -> SeqNumber {
        if matches!(self.state, State::SynSent | State::SynReceived) { self.snd.iss + 1 } else { self.snd.snd_una }
    }
    /// Sequence number just past the buffered data (where our FIN goes).
    pub(super) fn data_end(&self) -> SeqNumber {
        self.data_start() + self.snd.buf.len()
    }

    /// RFC 9293 3.10.2 SEND: queue what fits in the send buffer.
    pub(crate) fn send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        let open = match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => !self.snd.fin_queued,
            _ => false,
        };
        if !open {
            return Err(StreamError::Closed);
        }
        let n = self.snd.buf.push(data);
        if n < data.len() {
            self.snd.want_writable = true;
        }
        Ok(n)
    }

    #[must_use]
    pub fn snd_una(&self) -> SeqNumber {
        self.snd.snd_una
    }
    #[must_use]
    pub fn snd_nxt(&self) -> SeqNumber {
        self.snd.snd_nxt
    }
    #[must_use]
    pub fn snd_max(&self) -> SeqNumber {
        self.snd.snd_max
    }
    /// Bytes in the send buffer (unacknowledged or unsent).
    #[must_use]
    pub fn send_buffered(&self) -> usize {
        self.snd.buf.len()
    }
}
