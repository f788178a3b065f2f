//! The listeners: the passive OPEN (`listen`, RFC 9293 3.10.1) and its end (`unlisten`), and
//! SEGMENT ARRIVES in LISTEN (RFC 9293 3.10.7.2): a SYN opens a TCB in SYN-RECEIVED while the
//! listener's bounded SYN queue has room, and is answered with a SYN cookie when it is full; an
//! ACK that carries a valid cookie opens an established TCB. A bare ACK is checked as a cookie
//! only while the listener sent cookies recently ([`super::COOKIES_RECENT`], Linux's
//! `tcp_synq_no_recent_overflow`); else it is answered as any ACK in LISTEN, with a RST.
//!
//! Also the ACKs whose cookie someone else validated ([`Endpoint::accept_cookie_ack`]): the XDP
//! program answers SYNs with the kernel's cookies under pressure and marks the ACKs it checked.
//!
//! What this is not: the cookies themselves (`syncookie`), the TCB's passive open
//! (`connection`'s `open`).

use super::{COOKIES_RECENT, CTRL_QUEUE_LEN, CookieSynAck, Endpoint, Listener};
use crate::config::{DropReason, Event, FourTuple, ListenError};
use crate::connection::{Connection, PeerSyn};
use crate::syncookie::CookieOptions;
use crate::time::Instant;
use core::net::SocketAddr;
use sluice_wire::{ip, tcp};

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
        self.listeners.push(Listener { addr: local, half_open: 0, open: true, last_cookie: None, last_overflow: None });
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
            let recent =
                self.listeners[li].last_cookie.is_some_and(|t| now.saturating_duration_since(t) <= COOKIES_RECENT);
            if !f.syn() && self.config.syn_cookies && !recent {
                // No cookie went out lately: this ACK cannot complete one of our handshakes.
                self.stats.drop(DropReason::CookieNotRecent);
            } else if !f.syn() && self.config.syn_cookies {
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
                    self.open_from_cookie(now, li, tuple, seg, peer, ts);
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
            self.listeners[li].last_overflow = Some(now);
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
            self.listeners[li].last_cookie = Some(now);
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

    /// An ESTABLISHED TCB from a cookie ACK (`peer`: what the cookie carried), fed `seg`.
    fn open_from_cookie(
        &mut self,
        now: Instant,
        li: usize,
        tuple: FourTuple,
        seg: &tcp::Repr<'_>,
        peer: PeerSyn,
        ts_offset: u32,
    ) {
        let (cookie, peer_isn) = (seg.ack_number.wrapping_sub(1), seg.seq_number.wrapping_sub(1));
        let bufs = self.take_buffers();
        let conn = Connection::from_cookie(&self.config, bufs, now, tuple, cookie, peer_isn, peer, ts_offset);
        let slot = self.insert(tuple, conn, Some(li), true);
        let handle = self.handle_of(slot);
        self.events.push_back((handle, Event::Established));
        self.with_conn(slot, now, |c, ctx| c.handle_segment(ctx, seg));
        self.after(slot, true);
    }

    /// A segment whose SYN cookie the caller has validated already: the XDP program answers
    /// SYNs itself with the kernel's cookies (`bpf_tcp_raw_gen_syncookie_*`) while the SYN queue
    /// is under pressure, checks the final ACK with the kernel and marks the frames that passed;
    /// `opts` is what its SYN-ACK encoded (in TSval, echoed in the ACK's TSecr; or the
    /// conservative defaults when the peer sent no timestamps).
    ///
    /// A bare ACK (data allowed, no SYN or RST) to a listener with no TCB for its 4-tuple opens an
    /// ESTABLISHED TCB with `opts`, counted `xdp_cookie_acks`; with timestamps in use, our TSval
    /// clock continues from the TSval the SYN-ACK carried (the ACK's TSecr), so the peer's PAWS
    /// accepts what we send next. Everything else (the flow has a TCB, no listener, other
    /// flags) gets [`Endpoint::handle_segment`]. Only pass segments a trusted party validated:
    /// this skips the cookie check.
    pub fn accept_cookie_ack(&mut self, now: Instant, ip: &ip::Repr, seg: &tcp::Repr<'_>, opts: CookieOptions) {
        let tuple = FourTuple {
            local: SocketAddr::new(ip.dst_addr(), seg.dst_port),
            remote: SocketAddr::new(ip.src_addr(), seg.src_port),
        };
        let f = seg.flags;
        let listener = self.find_listener(tuple.local);
        let (Some(li), false, true, false, false) =
            (listener, self.table.contains_key(&tuple), f.ack(), f.syn(), f.rst())
        else {
            self.handle_segment(now, ip, seg);
            return;
        };
        self.stats.segments_in += 1;
        if !self.make_room() {
            self.stats.drop(DropReason::SynQueueFull);
            return;
        }
        self.stats.xdp_cookie_acks += 1;
        let timestamp = seg.timestamp.filter(|_| self.config.timestamps);
        let peer = PeerSyn {
            mss: Some(opts.mss),
            window_scale: opts.window_scale.filter(|_| self.config.window_scale),
            sack_permitted: opts.sack_permitted && self.config.sack,
            timestamp,
        };
        // Our TSval at `now` is TSecr + 1: never behind what the SYN-ACK sent.
        let ts_offset = match timestamp {
            Some(ts) => ts.tsecr.wrapping_sub(now.as_millis() as u32).wrapping_add(1),
            None => self.isn.ts_offset(tuple.local, tuple.remote),
        };
        self.open_from_cookie(now, li, tuple, seg, peer, ts_offset);
        self.prune_timers();
    }

    /// Whether a listener's SYN queue is under pressure: at least `percent` % full now, or a SYN
    /// found it full within `window`. (The XDP transport answers SYNs in XDP while it is.)
    #[must_use]
    pub fn syn_queue_pressure(&self, now: Instant, percent: usize, window: core::time::Duration) -> bool {
        let len = self.config.syn_queue_len;
        self.listeners.iter().any(|l| {
            l.open
                && (l.half_open * 100 >= len * percent.min(100)
                    || l.last_overflow.is_some_and(|t| now.saturating_duration_since(t) <= window))
        })
    }
}
