//! The listeners: the passive OPEN (`listen`, RFC 9293 3.10.1) and its end (`unlisten`), and
//! SEGMENT ARRIVES in LISTEN (RFC 9293 3.10.7.2): a SYN opens a TCB in SYN-RECEIVED while the
//! listener's bounded SYN queue has room, and is answered with a SYN cookie when it is full; an
//! ACK that carries a valid cookie opens an established TCB.
//!
//! What this is not: the cookies themselves (`syncookie`), the TCB's passive open
//! (`connection`'s `open`).

use super::{CTRL_QUEUE_LEN, CookieSynAck, Endpoint, Listener};
use crate::config::{DropReason, Event, FourTuple, ListenError};
use crate::connection::{Connection, PeerSyn};
use crate::syncookie::CookieOptions;
use crate::time::Instant;
use core::net::SocketAddr;
use sluice_wire::tcp;

impl Endpoint {
    /// Passive open on `local` (an unspecified IP, `0.0.0.0` or `::`, listens on every address
    /// of its family; there are no IPv4-mapped IPv6 listeners).
    pub fn listen(&mut self, local: SocketAddr) -> Result<(), ListenError> {
        if local.port() == 0 {
            return Err(ListenError::InvalidPort);
        }
        if let Some(l) = self.listeners.iter_mut().find(|l| l.addr == local) {
            if l.open {
                return Err(ListenError::AddrInUse);
            }
            l.open = true;
            return Ok(());
        }
        self.listeners.push(Listener { addr: local, half_open: 0, open: true });
        Ok(())
    }

    /// Stops accepting on `local` (RFC 9293 3.10.7.1: new SYNs get a RST, as on a closed port).
    /// Established connections and handshakes already under way are not touched. Returns
    /// whether `local` was listening.
    pub fn unlisten(&mut self, local: SocketAddr) -> bool {
        match self.listeners.iter_mut().find(|l| l.addr == local && l.open) {
            Some(l) => {
                l.open = false;
                true
            }
            None => false,
        }
    }

    pub(super) fn find_listener(&self, local: SocketAddr) -> Option<usize> {
        self.listeners.iter().position(|l| l.open && l.addr == local).or_else(|| {
            self.listeners.iter().position(|l| {
                l.open
                    && l.addr.port() == local.port()
                    && l.addr.ip().is_unspecified()
                    && l.addr.is_ipv4() == local.is_ipv4()
            })
        })
    }

    /// RFC 9293 3.10.7.2: LISTEN.
    pub(super) fn listener_segment(&mut self, now: Instant, li: usize, tuple: FourTuple, seg: &tcp::Repr<'_>) {
        let f = seg.flags;
        // "first, check for a RST: An incoming RST should be ignored."
        if f.rst() {
            self.stats.drop(DropReason::BadFlags);
            return;
        }
        if f.ack() {
            if !f.syn() && self.config.syn_cookies {
                let peer_isn = seg.seq_number.wrapping_sub(1);
                let cookie = seg.ack_number.wrapping_sub(1);
                if let Some(opts) = self.cookies.validate(now, tuple.local, tuple.remote, peer_isn, cookie) {
                    if !self.make_room() {
                        self.stats.drop(DropReason::SynQueueFull);
                        return;
                    }
                    self.stats.syn_cookies_validated += 1;
                    let peer = PeerSyn {
                        mss: Some(opts.mss),
                        window_scale: opts.window_scale,
                        sack_permitted: opts.sack_permitted,
                        timestamp: None,
                    };
                    let ts = self.isn.ts_offset(tuple.local, tuple.remote);
                    let bufs = self.take_buffers();
                    let conn = Connection::from_cookie(&self.config, bufs, now, tuple, cookie, peer_isn, peer, ts);
                    let slot = self.insert(tuple, conn, Some(li), true);
                    let handle = self.handle_of(slot);
                    self.events.push_back((handle, Event::Established));
                    self.with_conn(slot, now, |c, ctx| c.handle_segment(ctx, seg));
                    self.after(slot, true);
                    return;
                }
                self.stats.drop(DropReason::BadCookie);
            } else {
                self.stats.drop(DropReason::BadAck);
            }
            // "second, check for an ACK: ... form a reset <SEQ=SEG.ACK><CTL=RST>"
            self.queue_rst(now, tuple, seg);
            return;
        }
        if !f.syn() {
            // "fourth, other text or control: drop the segment and return"
            self.stats.drop(DropReason::BadFlags);
            return;
        }
        // "third, check for a SYN".
        if !self.make_room() {
            self.stats.drop(DropReason::SynQueueFull);
            return;
        }
        if self.listeners[li].half_open >= self.config.syn_queue_len {
            if !self.config.syn_cookies {
                self.stats.drop(DropReason::SynQueueFull);
                return;
            }
            if self.synacks.len() >= CTRL_QUEUE_LEN {
                self.stats.drop(DropReason::SynQueueFull);
                return;
            }
            let opts = CookieOptions {
                mss: seg.max_seg_size.unwrap_or(536),
                window_scale: if self.config.window_scale { seg.window_scale } else { None },
                sack_permitted: self.config.sack && seg.sack_permitted,
            };
            let iss = self.cookies.generate(now, tuple.local, tuple.remote, seg.seq_number, opts);
            self.synacks.push_back(CookieSynAck { tuple, iss, ack: seg.seq_number.wrapping_add(1), opts });
            self.stats.syn_cookies_sent += 1;
            return;
        }
        let iss = self.isn.isn(now, tuple.local, tuple.remote);
        let ts = self.isn.ts_offset(tuple.local, tuple.remote);
        let bufs = self.take_buffers();
        let mut conn = Connection::accept(&self.config, bufs, now, tuple, iss, ts, seg);
        conn.counted_in_syn_queue = true;
        self.listeners[li].half_open += 1;
        let slot = self.insert(tuple, conn, Some(li), false);
        self.after(slot, true);
    }
}
