//! The per-queue worker: one thread per NIC queue, owning that queue's AF_XDP socket and one
//! `sluice_tcp::Endpoint`.
//!
//! Flow ownership: the worker whose queue received a flow's SYN owns it ([`crate::datapath::xdp::flows`]). The
//! NIC (on veth: the sender's transmit queue) delivers a flow's frames on one queue, so they are
//! almost always handled where they arrive. When the sender changes queue (Linux re-hashes after
//! an RTO), the worker that got the frame finds the owner in the shared flow index and hands the
//! frame to its inbox (a crossbeam channel), waking it if it sleeps. Stateless answers (RSTs of
//! a refusing listener) need no owner and are sent at once.
//!
//! Each loop iteration: take back sent frames, refill the fill ring, receive a batch, drain the
//! inbox, run due timers, serve the listeners' connections (echo), transmit what the TCP stack
//! has to send, flush the TX ring. An iteration that found no work sleeps in `poll` on the
//! socket and the inbox's eventfd until a frame, a hand-off or the next timer: an idle sluice
//! uses no CPU. While the interface is down (the TX wakeup fails with `ENETDOWN`) the worker
//! sleeps between tries ([`LinkState`]) instead of spinning on a TX ring that never drains.
//!
//! What a frame gets is decided by [`Dispatch`], which knows nothing of sockets or clocks and is
//! tested with frames built by `sluice-wire`. Drops are counted with a reason.
//!
//! The worker is split by concern; this file holds the loop ([`run`]), its sleep on the epoll
//! set and the publishing of its counters:
//! - `inbox`: the hand-off plumbing: the [`Inbox`] each worker owns, the [`Peers`] through which
//!   it reaches the others, and [`inboxes`], which makes them with the main thread's `Controls`;
//! - `dispatch`: [`Dispatch`], the socket-free half: what a frame gets, the flow index, the TCP
//!   stack and the sessions on it, the main thread's orders;
//! - `tests`: `Dispatch` fed frames built by `sluice-wire`, alone or as several workers sharing
//!   one flow index.

mod dispatch;
mod inbox;

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::TrySendError;
use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
use sluice_tcp::Instant;
use sluice_xsk::{RxVerdict, Socket};

use crate::datapath::Control;
use crate::datapath::xdp::loader::PressureFlag;
use crate::datapath::xdp::pressure::{self, SynPressure};
use crate::observe::counters::QueueCounters;
use crate::observe::stats::SharedCounters;

pub use dispatch::{Dispatch, Link, Source, TOKEN_INBOX, TOKEN_NETLINK, TOKEN_XSK, Verdict};
pub use inbox::{Inbox, Peers, inboxes};

/// Frames received per batch.
const RX_BATCH: u32 = 64;
/// Longest sleep while idle: how soon a stop request is noticed.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// While the interface is down, how long the worker sleeps between tries of the TX ring.
const LINK_DOWN_RETRY: Duration = Duration::from_millis(100);

/// How often the loop reads the kernel's route and neighbour changes while busy (when idle, it
/// wakes for them).
const NETLINK_POLL: Duration = Duration::from_millis(10);

/// The worker's view of the kernel's routes and neighbours: the netlink reader that keeps its
/// `Dispatch`'s table current, and the prober that asks the kernel to resolve a next hop.
pub struct NextHops {
    pub reader: crate::datapath::xdp::nexthop::Reader,
    pub prober: crate::datapath::xdp::nexthop::Prober,
}

impl NextHops {
    /// Applies the kernel's changes to `dispatch`'s table and triggers the resolutions it asked for.
    fn poll(&mut self, dispatch: &mut Dispatch, now: Instant) {
        if let Err(e) = self.reader.poll(dispatch.next_hops()) {
            dispatch.counters.nexthop_netlink_errors += 1;
            tracing::warn!("reading route and neighbour changes: {e}");
        }
        self.trigger(dispatch, now);
    }

    fn trigger(&mut self, dispatch: &mut Dispatch, now: Instant) {
        for next_hop in dispatch.take_triggers() {
            self.prober.trigger(dispatch.next_hops(), now, next_hop);
        }
    }
}

/// Whether the interface is down, as the TX wakeups see it: `sendto` on an AF_XDP socket fails
/// with `ENETDOWN` while the device is not up (frames stay on the TX ring). Then the worker
/// sleeps [`LINK_DOWN_RETRY`] between tries instead of spinning on a ring that never drains;
/// the first `sendto` that works again ends the wait.
#[derive(Debug, Default)]
struct LinkState {
    down: bool,
}

impl LinkState {
    /// Learns the link's state from a TX flush: logs and counts each change to down (once per
    /// outage), logs the change back to up.
    fn after_flush(&mut self, flushed: &std::io::Result<u32>, queue: u32, counters: &mut QueueCounters) {
        match flushed {
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) && !self.down => {
                tracing::warn!(
                    queue,
                    "interface down (TX wakeup: {e}); waiting for it, retrying every {LINK_DOWN_RETRY:?}"
                );
                counters.xsk_link_down += 1;
                self.down = true;
            }
            Ok(_) if self.down => {
                tracing::info!(queue, "interface up again; sending");
                self.down = false;
            }
            _ => {}
        }
    }
}

/// SYN cookies in XDP, the worker's side: its RX queue's pressure level in the program's map,
/// kept by [`SynPressure`] from its TCP stack's SYN queues, and the mark that says the program
/// validated a frame's cookie.
pub struct XdpCookies {
    pub flag: PressureFlag,
    pub mark: u64,
    pub pressure: SynPressure,
}

impl XdpCookies {
    /// Sets the level from the stack's SYN queues now.
    fn update(&mut self, now: Instant, dispatch: &mut Dispatch) {
        let under = dispatch.tcp.syn_queue_pressure(now, pressure::PRESSURE_PERCENT, pressure::OVERFLOW_WINDOW);
        let level = self.pressure.update(now, under);
        if level != self.flag.level() {
            tracing::info!(queue = self.flag.queue(), level, "SYN cookies in XDP: pressure level changed");
            if let Err(e) = self.flag.set(level) {
                tracing::warn!("setting the SYN pressure level: {e}");
            }
        }
    }

    /// Whether `rx` carries the program's mark (wiped as it is read).
    fn validated(&self, rx: &mut sluice_xsk::RxFrame<'_>) -> bool {
        rx.take_meta::<{ sluice_ebpf::COOKIE_META_LEN }>() == Some(self.mark.to_le_bytes())
    }
}

/// Runs one queue's worker until `stop` is set.
pub fn run(
    mut sock: Socket,
    mut dispatch: Dispatch,
    inbox: Inbox,
    peers: Peers,
    mut next_hops: NextHops,
    mut cookies: Option<XdpCookies>,
    worker: crate::datapath::Worker,
) {
    let crate::datapath::Worker { shared, clock, stop } = worker;
    let now = || Instant::from_micros(clock.elapsed().as_micros() as u64);
    dispatch.fleet.start(clock);
    let mut last_netlink = now();
    for (fd, token) in
        [(sock.as_fd(), TOKEN_XSK), (inbox.wake.fd(), TOKEN_INBOX), (next_hops.reader.as_fd(), TOKEN_NETLINK)]
    {
        if let Err(e) = dispatch.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token)) {
            tracing::error!(queue = sock.queue_id(), "epoll: {e}; the worker cannot sleep");
        }
    }
    let mut last_publish = now();
    let mut link = LinkState::default();
    let mut idle_since: Option<Instant> = None;
    let mut woke_idle = false;
    while !stop.load(Ordering::Relaxed) {
        let t = now();
        while let Ok(c) = inbox.control.try_recv() {
            match c {
                Control::Reload(services, done) => {
                    let _ = done.send(dispatch.reload(*services));
                }
                Control::Drain(flows) => {
                    let mine = dispatch.drain();
                    if let Some(tx) = flows {
                        let _ = tx.send(mine);
                    }
                }
                Control::Abort => dispatch.abort_all(t),
            }
        }
        if dispatch.netlink_ready || t.saturating_duration_since(last_netlink) >= NETLINK_POLL {
            dispatch.netlink_ready = false;
            last_netlink = t;
            next_hops.poll(&mut dispatch, t);
        }
        sock.reap_completions();
        sock.refill_fill_ring();
        let mut handoffs = 0u64;
        let received = sock.recv_batch(RX_BATCH, |mut rx, _tx| {
            dispatch.counters.rx_frames += 1;
            let len = rx.len();
            let source = match &cookies {
                Some(c) if c.validated(&mut rx) => Source::RxCookie,
                _ => Source::Rx,
            };
            match dispatch.on_frame(t, rx.buf_mut(), len, source) {
                Verdict::Reply(n) => RxVerdict::Transmit(n),
                Verdict::HandOff(owner) => {
                    match peers.senders[owner].try_send(rx.data().to_vec()) {
                        Ok(()) => {
                            handoffs += 1;
                            peers.wakers[owner].wake();
                        }
                        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                            dispatch.counters.dropped_handoff_full += 1
                        }
                    }
                    RxVerdict::Recycle
                }
                Verdict::Consumed => RxVerdict::Recycle,
            }
        });
        dispatch.counters.handoff_out += handoffs;
        let mut handed_in = 0u32;
        while let Ok(mut frame) = inbox.rx.try_recv() {
            handed_in += 1;
            // A handed-over frame is never handed on. A stateless answer (a RST for a connection
            // past a limit) is sent from here.
            let len = frame.len();
            if let Verdict::Reply(n) = dispatch.on_frame(t, &mut frame, len, Source::HandOff) {
                let sent = sock.tx_frame().is_some_and(|mut out| {
                    let fits = out.buf_mut().len() >= n;
                    if fits {
                        out.buf_mut()[..n].copy_from_slice(&frame[..n]);
                    }
                    fits && out.submit(n).is_ok()
                });
                if !sent {
                    dispatch.counters.dropped_tx_full += 1;
                }
            }
            if handed_in >= RX_BATCH * 4 {
                break;
            }
        }
        dispatch.counters.handoff_in += u64::from(handed_in);
        let backend = if dispatch.has_relays() { backend_events(&mut dispatch, Duration::ZERO, now) } else { 0 };
        dispatch.process(t);
        if let Some(c) = &mut cookies {
            c.update(t, &mut dispatch);
        }
        let mut sent = 0u32;
        while let Some(mut out) = sock.tx_frame() {
            match dispatch.poll_transmit(t, out.buf_mut()) {
                Some(len) => {
                    if out.submit(len).is_err() {
                        dispatch.counters.dropped_tx_full += 1;
                    }
                    sent += 1;
                }
                None => break, // the unused frame goes back to the free list
            }
        }
        next_hops.trigger(&mut dispatch, t);
        let flushed = sock.flush_tx();
        link.after_flush(&flushed, sock.queue_id(), &mut dispatch.counters);
        if let Err(e) = flushed
            && !link.down
        {
            tracing::warn!(queue = sock.queue_id(), "TX wakeup failed: {e}");
        }
        let busy = received > 0 || handed_in > 0 || sent > 0 || backend > 0;
        if t.saturating_duration_since(last_publish) >= Duration::from_millis(100) || !busy {
            publish(&sock, &mut dispatch, &shared);
            last_publish = t;
        }
        if link.down {
            // Nothing leaves until the link is up: frames on the TX ring stay there, timers
            // would only queue more. Sleep until a frame, a hand-off, a backend event or the
            // next try, whatever the timers say.
            idle_since = None;
            woke_idle = true;
            dispatch.counters.xsk_link_down_sleeps += 1;
            sleep(&mut dispatch, &inbox, LINK_DOWN_RETRY, now);
            continue;
        }
        if busy || sock.tx_in_flight() > 0 {
            idle_since = None;
            woke_idle = false;
            continue;
        }
        // Busy-poll a little before sleeping: a wake-up from poll costs far more than a few
        // empty looks at the rings, and frames arriving meanwhile would wait in the RX ring.
        // Not after a wake-up that brought nothing (a timeout): then sleep again at once.
        let idle_for = t.saturating_duration_since(*idle_since.get_or_insert(t));
        if woke_idle || idle_for >= dispatch.busy_poll {
            idle_since = None;
            woke_idle = true;
            dispatch.counters.idle_sleeps += 1;
            let timeout = dispatch
                .poll_timeout()
                .map_or(IDLE_POLL, |deadline| deadline.saturating_duration_since(now()).min(IDLE_POLL));
            sleep(&mut dispatch, &inbox, timeout, now);
        }
    }
    publish(&sock, &mut dispatch, &shared);
    shared.finish(&mut dispatch.latencies);
    if let Err(e) = sock.check_accounting() {
        tracing::error!(queue = sock.queue_id(), "UMEM frame accounting: {e}");
    }
}

/// Sleeps until the socket has frames, another worker hands one over, a backend socket is
/// ready, or `timeout`; then handles the backends' readiness.
fn sleep(dispatch: &mut Dispatch, inbox: &Inbox, timeout: Duration, now: impl Fn() -> Instant) {
    inbox.wake.set_sleeping(true);
    let timeout = if inbox.rx.is_empty() { timeout } else { Duration::ZERO };
    backend_events(dispatch, timeout, now);
    inbox.wake.set_sleeping(false);
    inbox.wake.reset();
}

/// An epoll timeout of whole milliseconds, rounded up, at most [`IDLE_POLL`]: a timer 0.4 ms
/// away must not turn a sleep into a spin (rounded down, thousands of TIME-WAIT timers a few µs
/// apart kept both cores busy for the 2 MSL after a load).
pub fn epoll_timeout(timeout: Duration) -> EpollTimeout {
    let ms = timeout.min(IDLE_POLL).as_micros().div_ceil(1000);
    EpollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
}

/// Waits up to `timeout` on the worker's epoll set and hands backend readiness to the relays.
fn backend_events(dispatch: &mut Dispatch, timeout: Duration, now: impl Fn() -> Instant) -> usize {
    let mut events = [EpollEvent::empty(); 64];
    let timeout = epoll_timeout(timeout);
    let n = dispatch.epoll.wait(&mut events, timeout).unwrap_or(0);
    let t = now();
    let mut backend = 0;
    for e in &events[..n] {
        if e.data() == TOKEN_NETLINK {
            dispatch.netlink_ready = true;
        } else if crate::session::fleet::Fleet::owns(e.data()) {
            dispatch.fleet.on_event(e.data(), e.events());
            backend += 1;
        } else if e.data() < TOKEN_NETLINK {
            dispatch.on_backend_event(e.data(), e.events(), t);
            backend += 1;
        }
    }
    backend
}

fn publish(sock: &Socket, dispatch: &mut Dispatch, shared: &SharedCounters) {
    let frames = sock.frame_stats();
    let (held, n, draining) = (dispatch.held() as u64, dispatch.next_hop_counters(), dispatch.draining);
    let c = &mut dispatch.counters;
    let xsk = sock.stats();
    c.tx_frames = xsk.tx_frames;
    c.xsk_tx_ring_full = xsk.tx_ring_full;
    c.xsk_tx_no_frame = xsk.tx_no_frame;
    c.xsk_fill_starved = xsk.fill_starved;
    c.xsk_invalid_descs = xsk.invalid_descs;
    if let Ok(k) = sock.kernel_stats() {
        c.kernel_rx_dropped = k.rx_dropped;
        c.kernel_rx_ring_full = k.rx_ring_full;
        c.kernel_rx_fill_ring_empty = k.rx_fill_ring_empty_descs;
        c.kernel_rx_invalid_descs = k.rx_invalid_descs;
        c.kernel_tx_invalid_descs = k.tx_invalid_descs;
    }
    c.umem_frames_free = u64::from(frames.free);
    c.umem_frames_total = u64::from(frames.total);
    c.draining = u64::from(draining);
    dispatch.fleet.publish(c);
    c.nexthop_waiting_now = held;
    c.nexthop_routes_now = n.routes;
    c.nexthop_neighbours_now = n.neighbours;
    c.nexthop_triggers = n.triggers;
    c.nexthop_triggers_limited = n.triggers_limited;
    c.nexthop_trigger_errors = n.trigger_errors;
    c.nexthop_redumps = n.redumps;
    c.nexthop_overflow = n.routes_overflow + n.neighbours_overflow;
    c.nexthop_malformed = n.malformed;
    shared.send_interval(&mut dispatch.latencies);
    shared.publish(c, dispatch.tcp.stats());
}

#[cfg(test)]
mod tests;
