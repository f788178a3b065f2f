//! The connection table: TCBs live in slots, found by 4-tuple, named by handles (slot and
//! generation, so a stale handle never reaches a newer connection in the same slot). Every call
//! into a TCB goes through `with_conn` (which withholds the events of a passive connection not
//! yet announced) and then `after`: SYN-queue accounting, the counters of opened connections,
//! freeing a finished TCB and recycling its buffers, the timer entry and the transmit queue.
//! Also the 4-tuples released to a caller mirroring the table (`take_released`).
//!
//! What this is not: the timer queue's upkeep (`timeouts`), what a TCB does (`connection`).

use super::{CTRL_QUEUE_LEN, Endpoint, Slot};
use crate::config::{ConnectionHandle, Event, FourTuple};
use crate::connection::{Buffers, Connection, Ctx, State};
use crate::time::Instant;
use crate::timer::Entry;
use std::collections::VecDeque;

/// Most released 4-tuples remembered for [`Endpoint::take_released`]; the oldest go first.
const RELEASED_QUEUE_LEN: usize = 1 << 16;

/// Buffers kept for reuse after connections close.
const SPARE_BUFFERS: usize = 64;

impl Endpoint {
    pub(super) fn take_buffers(&mut self) -> Buffers {
        self.spare.pop().unwrap_or_else(|| Buffers::new(&self.config))
    }

    pub(super) fn handle_of(&self, slot: u32) -> ConnectionHandle {
        ConnectionHandle { slot, generation: self.slots[slot as usize].generation }
    }

    pub(super) fn insert(
        &mut self,
        tuple: FourTuple,
        conn: Connection,
        listener: Option<usize>,
        announced: bool,
    ) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.conn = Some(Box::new(conn));
        s.deadline = None;
        s.queued = false;
        s.listener = listener;
        s.announced = announced;
        s.counted_open = false;
        s.released = false;
        self.table.insert(tuple, slot);
        slot
    }

    /// Run `f` on the connection of `slot` with a context, then update the endpoint's view.
    pub(super) fn with_conn<R>(
        &mut self,
        slot: u32,
        now: Instant,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let s = self.slots.get_mut(slot as usize)?;
        let conn = s.conn.as_mut()?;
        let handle = ConnectionHandle { slot, generation: s.generation };
        let before = self.events.len();
        let mut ctx = Ctx {
            now,
            stats: &mut self.stats,
            events: &mut self.events,
            handle,
            challenge: &mut self.challenge,
            rsts: &mut self.rsts,
        };
        let r = f(conn, &mut ctx);
        // Events of a passive connection the application has not seen yet are withheld,
        // except `Established`, which announces it.
        if !s.announced {
            let mut i = before;
            while i < self.events.len() {
                if self.events[i].1 == Event::Established {
                    s.announced = true;
                    i += 1;
                } else if !s.announced {
                    self.events.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        while self.rsts.len() > CTRL_QUEUE_LEN {
            self.rsts.pop_back();
            self.stats.rsts_rate_limited += 1;
        }
        Some(r)
    }

    /// Bookkeeping after any call into a connection: SYN queue accounting, counters, freeing,
    /// the timer entry and the transmit queue.
    pub(super) fn after(&mut self, slot: u32, requeue: bool) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(conn) = s.conn.as_mut() else { return };
        if conn.counted_in_syn_queue && conn.state() != State::SynReceived {
            conn.counted_in_syn_queue = false;
            if let Some(l) = s.listener.and_then(|l| self.listeners.get_mut(l)) {
                l.half_open = l.half_open.saturating_sub(1);
            }
        }
        if !s.counted_open
            && !matches!(conn.state(), State::SynSent | State::SynReceived | State::Closed | State::Listen)
        {
            s.counted_open = true;
            self.stats.connections_opened += 1;
            let (ws, sack, ts) = conn.negotiated();
            self.stats.negotiated_wscale += u64::from(ws);
            self.stats.negotiated_sack += u64::from(sack);
            self.stats.negotiated_timestamps += u64::from(ts);
        }
        if conn.is_finished() {
            self.free_slot(slot);
            return;
        }
        if conn.state() == State::TimeWait && !std::mem::replace(&mut s.released, true) {
            Self::release(&mut self.released, conn.four_tuple());
            if self.time_wait.len() >= self.config.max_connections {
                self.time_wait.pop_front();
            }
            self.time_wait.push_back(ConnectionHandle { slot, generation: s.generation });
        }
        if let Some(bufs) = conn.release_buffers()
            && self.spare.len() < SPARE_BUFFERS
            && bufs.fits(&self.config)
        {
            self.spare.push(bufs);
        }
        let d = conn.next_deadline();
        if d != s.deadline {
            s.deadline = d;
            if let Some(deadline) = d {
                self.timers.push(Entry { deadline, slot, generation: s.generation });
            }
        }
        if requeue && !s.queued {
            s.queued = true;
            self.dirty.push_back(slot);
        }
    }

    pub(super) fn free_slot(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let Some(conn) = s.conn.take() else { return };
        self.table.remove(&conn.four_tuple());
        if !std::mem::replace(&mut s.released, true) {
            Self::release(&mut self.released, conn.four_tuple());
        }
        if conn.counted_in_syn_queue
            && let Some(l) = s.listener.and_then(|l| self.listeners.get_mut(l))
        {
            l.half_open = l.half_open.saturating_sub(1);
        }
        if s.announced {
            self.events.push_back((ConnectionHandle { slot, generation: s.generation }, Event::Closed));
        }
        self.stats.connections_closed += 1;
        let bufs = conn.into_buffers();
        if self.spare.len() < SPARE_BUFFERS && bufs.fits(&self.config) {
            self.spare.push(bufs);
        }
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.deadline = None;
        s.queued = false;
        s.announced = false;
        self.free.push(slot);
    }

    fn release(queue: &mut VecDeque<FourTuple>, tuple: FourTuple) {
        if queue.len() >= RELEASED_QUEUE_LEN {
            queue.pop_front();
        }
        queue.push_back(tuple);
    }

    /// The next 4-tuple this endpoint no longer serves actively, oldest first: its TCB entered
    /// TIME-WAIT (where a new SYN may reopen the 4-tuple, RFC 6191) or was freed in any state,
    /// announced or not; each TCB once. For a caller that mirrors the flow table elsewhere (a
    /// flow index shared by workers): drain it after every call. At most 65,536 are kept.
    pub fn take_released(&mut self) -> Option<FourTuple> {
        self.released.pop_front()
    }

    /// Whether the table has room for one more TCB, after recycling the oldest connection in
    /// TIME-WAIT if it is full (counted `time_wait_recycled`): a full table of TIME-WAIT never
    /// stops new connections, as Linux's `tcp_max_tw_buckets`. TIME-WAIT guards a 4-tuple
    /// against old duplicates (RFC 9293 3.6.1); the oldest has served longest, and a new
    /// connection on the same 4-tuple still goes through RFC 6191's checks while it lives.
    pub(super) fn make_room(&mut self) -> bool {
        while self.table.len() >= self.config.max_connections {
            let Some(h) = self.time_wait.pop_front() else { return false };
            if let Some(slot) = self.slot_of(h)
                && self.state(h) == Some(State::TimeWait)
            {
                self.free_slot(slot);
                self.stats.time_wait_recycled += 1;
            }
        }
        true
    }

    /// Frees a connection in TIME-WAIT without sending anything (its 4-tuple was reopened
    /// elsewhere: the caller knows better than the 2 MSL rule). Returns whether it did.
    pub fn forget_time_wait(&mut self, h: ConnectionHandle) -> bool {
        match self.slot_of(h) {
            Some(slot) if self.state(h) == Some(State::TimeWait) => {
                self.free_slot(slot);
                true
            }
            _ => false,
        }
    }

    pub(super) fn slot_of(&self, h: ConnectionHandle) -> Option<u32> {
        let s = self.slots.get(h.slot as usize)?;
        (s.generation == h.generation && s.conn.is_some()).then_some(h.slot)
    }

    pub(super) fn conn(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.slots.get(self.slot_of(h)? as usize)?.conn.as_deref()
    }
}
