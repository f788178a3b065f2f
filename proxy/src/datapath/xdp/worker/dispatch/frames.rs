//! What a frame gets. A frame in ([`Dispatch::on_frame`]) is parsed and its flow's owner found in
//! the flow index (a new SYN claims its flow for this worker before the TCB exists); then it is
//! answered in place with a RST, handed to the owning worker, or given to the TCP stack. A frame
//! out ([`Dispatch::poll_transmit`]) is the stack's next segment behind an Ethernet header,
//! addressed to its next hop (`next_hop`).

use std::net::SocketAddr;

use sluice_tcp::syncookie::CookieOptions;
use sluice_tcp::{ConnectionHandle, FourTuple, Instant, State as TcpState};
use sluice_wire::ethernet;
use sluice_wire::{Error as WireError, ParsedSegment, emit_frame, parse_frame, rst_reply};

use super::{Dispatch, Source, Verdict};
use crate::config::ListenerMode;
use crate::datapath::xdp::flows::ClaimError;

/// Whether a segment from `src` to `dst` can come from a real peer.
fn possible_peer(src: std::net::IpAddr, dst: std::net::IpAddr) -> bool {
    let bad = src.is_multicast()
        || src.is_unspecified()
        || src.is_loopback()
        || src == dst
        || match src {
            std::net::IpAddr::V4(v4) => v4.is_broadcast(),
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
        };
    !bad
}

/// What the XDP program's cookie SYN-ACK offered, from the low bits of its TSval that the ACK
/// echoes in TSecr (`sluice_ebpf::ts_cookie_decode`); without timestamps the conservative
/// defaults: MSS 536 (IPv4) or 1220 (IPv6), no window
/// scaling, no SACK.
fn xdp_cookie_options(seg: &ParsedSegment<'_>) -> CookieOptions {
    let v6 = seg.ip.dst_addr().is_ipv6();
    let decoded = seg.tcp.timestamp.map(|ts| sluice_ebpf::ts_cookie_decode(ts.tsecr, v6));
    match decoded {
        Some((mss, window_scale, sack_permitted)) => CookieOptions { mss, window_scale, sack_permitted },
        None => CookieOptions { mss: if v6 { 1220 } else { 536 }, window_scale: None, sack_permitted: false },
    }
}

impl Dispatch {
    /// Handles one frame of `len` bytes at the start of `buf` (received, or handed over by
    /// another worker). A stateless reply is written in place over it (`buf` extends to the end
    /// of the UMEM frame), so answering costs no second frame and no copy.
    pub fn on_frame(&mut self, now: Instant, buf: &mut [u8], len: usize, source: Source) -> Verdict {
        let frame = &buf[..len.min(buf.len())];
        let seg = match parse_frame(frame, self.checksum) {
            Ok(seg) => seg,
            // Not TCP: the XDP program also steers ICMP path-MTU messages about sluice's flows.
            Err(WireError::Unsupported) => return self.on_icmp(now, frame, source),
            Err(e) => {
                match e {
                    WireError::Checksum => self.counters.dropped_checksum += 1,
                    WireError::Fragmented | WireError::Unsupported => self.counters.dropped_unsupported += 1,
                    _ => self.counters.dropped_malformed += 1,
                }
                return Verdict::Consumed;
            }
        };
        let local = SocketAddr::new(seg.ip.dst_addr(), seg.tcp.dst_port);
        let remote = SocketAddr::new(seg.ip.src_addr(), seg.tcp.src_port);
        if !possible_peer(remote.ip(), local.ip()) {
            // RFC 1122 4.2.3.10: never answer (or connect) a broadcast, multicast or unspecified
            // source; nor our own address or loopback, which only a spoofer can send from.
            self.counters.dropped_bad_source += 1;
            return Verdict::Consumed;
        }
        let listener = self.listener_of(local);
        let mode = listener.and_then(|l| self.listeners.get(&l).copied());
        if mode.is_none() && listener.is_none() {
            self.counters.dropped_no_listener += 1;
            return Verdict::Consumed;
        }
        match mode {
            // RFC 9293 3.10.7.1: a closed port answers anything but a RST with a RST.
            Some(ListenerMode::Refuse) => {
                let rst = rst_reply(&seg);
                self.refuse(now, buf, rst)
            }
            // Accepting listeners, and retired ones whose connections may still be open.
            _ => {
                let tuple = FourTuple { local, remote };
                let local_tcb = self.tcp.lookup(&tuple);
                // A TCB in TIME-WAIT is out of the index: another worker may have reopened its
                // 4-tuple (a new SYN that arrived on another queue).
                let time_wait = local_tcb.is_some_and(|h| self.tcp.state(h) == Some(TcpState::TimeWait));
                let syn = seg.tcp.flags.syn() && !seg.tcp.flags.ack();
                let mut claimed = false;
                if local_tcb.is_none() || time_wait {
                    // Not ours (yet): a flow another worker owns goes there; a new SYN claims
                    // its flow for this worker before the TCB exists.
                    match self.flows.owner(&tuple) {
                        Some(o) if o != self.worker => {
                            if let Some(h) = local_tcb {
                                // The old connection's TIME-WAIT is moot: the 4-tuple lives on.
                                self.tcp.forget_time_wait(h);
                            }
                            return self.hand_off(o, source, false);
                        }
                        Some(_) => {}
                        None if local_tcb.is_none() && syn && mode.is_some() && !self.draining => {
                            if let Err(why) =
                                self.conn_counts.check(&self.limits, self.admitted.len() as u64, remote.ip())
                            {
                                self.counters.count_refusal(why);
                                let rst = rst_reply(&seg);
                                return self.refuse(now, buf, rst);
                            }
                            if matches!(mode, Some(ListenerMode::Relay(_))) && self.sessions.len() >= self.max_relays {
                                self.counters.refused_descriptors += 1;
                                let rst = rst_reply(&seg);
                                return self.refuse(now, buf, rst);
                            }
                            match self.flows.claim(tuple, self.worker) {
                                Ok(()) => claimed = true,
                                Err(ClaimError::Owned(o)) => return self.hand_off(o, source, true),
                                Err(ClaimError::Full) => {
                                    self.counters.dropped_flow_index_full += 1;
                                    return Verdict::Consumed;
                                }
                            }
                        }
                        None => {}
                    }
                }
                let data = !seg.tcp.payload.is_empty();
                if source == Source::RxCookie && local_tcb.is_none() {
                    self.tcp.accept_cookie_ack(now, &seg.ip, &seg.tcp, xdp_cookie_options(&seg));
                } else {
                    self.tcp.handle_segment(now, &seg.ip, &seg.tcp);
                }
                if local_tcb.is_none() || time_wait {
                    self.index_new_flow(tuple, claimed);
                }
                self.release_flows();
                if data {
                    // Let the application take these bytes before the next segment of the batch
                    // is handled: a RST right behind them (an abortive close, as `openssl s_time`
                    // does after its Finished) would flush them unread (RFC 9293 3.10.7.4).
                    self.process(now);
                }
                Verdict::Consumed
            }
        }
    }

    /// An ICMP "fragmentation needed" (RFC 1191) or ICMPv6 "packet too big" (RFC 8201) message
    /// quoting one of sluice's segments: the connection's segment size goes down if the quoted
    /// sequence number is in flight (RFC 5927 4.1), else it is ignored; both counted. Anything
    /// else that is not TCP is dropped as unsupported.
    fn on_icmp(&mut self, now: Instant, frame: &[u8], source: Source) -> Verdict {
        let message = match sluice_wire::parse_icmp_frame(frame, self.checksum) {
            Ok(m) => m,
            Err(e) => {
                match e {
                    WireError::Checksum => self.counters.dropped_checksum += 1,
                    WireError::Fragmented | WireError::Unsupported => self.counters.dropped_unsupported += 1,
                    _ => self.counters.dropped_malformed += 1,
                }
                return Verdict::Consumed;
            }
        };
        let q = message.icmp.quoted;
        // The quote is a segment sluice sent: its source is our end.
        let tuple = FourTuple {
            local: std::net::SocketAddr::new(q.src_addr, q.src_port),
            remote: std::net::SocketAddr::new(q.dst_addr, q.dst_port),
        };
        if self.tcp.lookup(&tuple).is_none()
            && let Some(owner) = self.flows.owner(&tuple).filter(|&o| o != self.worker)
        {
            return self.hand_off(owner, source, false);
        }
        match self.tcp.path_mtu(now, &tuple, message.icmp.mtu, q.seq_number) {
            Ok(()) => self.counters.path_mtu_lowered += 1,
            Err(_) => self.counters.path_mtu_ignored += 1,
        }
        Verdict::Consumed
    }

    /// A frame of a flow that worker `owner` holds: handed over, counted by reason. A frame
    /// that was itself handed over is never handed on (the owner changed meanwhile): dropped,
    /// counted; TCP recovers it.
    fn hand_off(&mut self, owner: usize, source: Source, syn_race: bool) -> Verdict {
        if source == Source::HandOff {
            self.counters.dropped_handoff_stale += 1;
            return Verdict::Consumed;
        }
        if syn_race {
            self.counters.handoff_syn_race += 1
        } else {
            self.counters.handoff_moved += 1
        }
        Verdict::HandOff(owner)
    }

    /// The listener (as configured, serving or retired) that `local` belongs to: the one of that
    /// very address, else the family's wildcard (`0.0.0.0:port`, `[::]:port`).
    pub(super) fn listener_of(&self, local: SocketAddr) -> Option<SocketAddr> {
        let known = |a: &SocketAddr| self.listeners.contains_key(a) || self.retired.contains(a);
        let wildcard = SocketAddr::new(
            match local {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            },
            local.port(),
        );
        [local, wildcard].into_iter().find(known)
    }

    /// Whether this worker serves `tuple` actively (a TCB not in TIME-WAIT).
    fn serves(&self, tuple: &FourTuple) -> Option<ConnectionHandle> {
        self.tcp.lookup(tuple).filter(|h| self.tcp.state(*h) != Some(TcpState::TimeWait))
    }

    /// After a segment of a flow this worker did not serve actively: an unused claim is given
    /// back; a connection rebuilt from a SYN cookie (its SYN left no state, so no claim) or
    /// reopened from TIME-WAIT claims its flow now.
    fn index_new_flow(&mut self, tuple: FourTuple, claimed: bool) {
        match self.serves(&tuple) {
            None if claimed => self.flows.release(&tuple, self.worker),
            Some(h) if !claimed && self.flows.claim(tuple, self.worker).is_err() => {
                self.counters.flow_claim_conflicts += 1;
                self.tcp.abort(h);
            }
            _ => {}
        }
    }

    /// Gives back the index entries of the flows the stack released (freed, or in TIME-WAIT)
    /// unless the same 4-tuple was reopened here meanwhile; a connection in TIME-WAIT also
    /// gives back its place under the connection limits (its client is gone: TIME-WAIT only
    /// guards the 4-tuple).
    pub(super) fn release_flows(&mut self) {
        while let Some(t) = self.tcp.take_released() {
            if let Some(h) = self.tcp.lookup(&t)
                && self.tcp.state(h) == Some(TcpState::TimeWait)
                && let Some(slot) = self.admitted.remove(&h)
            {
                self.conn_counts.release(slot);
            }
            if self.serves(&t).is_none() {
                self.flows.release(&t, self.worker);
            }
        }
    }

    /// Writes `rst` (the answer to a refused segment; none to a RST) in place over the frame in
    /// `buf`, at most `REFUSAL_RSTS_PER_SECOND` a second: a flood at a refusing port is not
    /// reflected at full rate (as the TCP stack's own RSTs to unknown flows, `tcp.rst_limit`).
    fn refuse(&mut self, now: Instant, buf: &mut [u8], rst: Option<ParsedSegment<'_>>) -> Verdict {
        if rst.is_some() && !self.refusals.allow(now) {
            self.counters.rst_refusal_limited += 1;
            return Verdict::Consumed;
        }
        match rst {
            None => {
                self.counters.dropped_rst += 1;
                Verdict::Consumed
            }
            Some(rst) => match emit_frame(buf, &rst.eth, &rst.ip, &rst.tcp) {
                Ok(len) => {
                    self.counters.rst_sent += 1;
                    Verdict::Reply(len)
                }
                Err(_) => {
                    self.counters.dropped_tx_full += 1;
                    Verdict::Consumed
                }
            },
        }
    }

    /// The next Ethernet frame to send, written into `out`: a held segment whose next hop was
    /// resolved meanwhile, else the TCP stack's next segment.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if let Some(len) = self.release_held(now, out) {
            return Some(len);
        }
        loop {
            let ip_len = self.tcp.poll_transmit(now, out.get_mut(ethernet::HEADER_LEN..)?)?;
            if let Some(len) = self.address(now, out, ip_len) {
                return Some(len);
            }
        }
    }
}
