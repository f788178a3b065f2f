//! STATUS (RFC 9293 3.10.6) of the endpoint: a connection by 4-tuple or handle, its state, the
//! counters, counts of live TCBs (in all, by state, still active); and `check_invariants`, the
//! endpoint's consistency check for tests and the fuzzer.

use super::{CTRL_QUEUE_LEN, Endpoint};
use crate::config::{ConnectionHandle, FourTuple, Stats};
use crate::connection::{Connection, State};

impl Endpoint {
    /// The connection with this 4-tuple, if any (including half-open ones not yet announced).
    #[must_use]
    pub fn lookup(&self, tuple: &FourTuple) -> Option<ConnectionHandle> {
        self.table.get(tuple).map(|&slot| self.handle_of(slot))
    }

    #[must_use]
    pub fn four_tuple(&self, h: ConnectionHandle) -> Option<FourTuple> {
        self.conn(h).map(Connection::four_tuple)
    }

    #[must_use]
    pub fn state(&self, h: ConnectionHandle) -> Option<State> {
        self.conn(h).map(Connection::state)
    }

    /// The connection itself, read-only (sequence variables, cwnd, RTO), for tests and stats.
    #[must_use]
    pub fn connection(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conn(h)
    }

    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Handles of every live connection (every state), e.g. to reset them all at shutdown.
    pub fn handles(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.table.values().map(|&slot| self.handle_of(slot))
    }

    /// Live TCBs that still carry a conversation: every state but TIME-WAIT (whose only job is
    /// to absorb stray segments; a draining server need not wait for it).
    #[must_use]
    pub fn active_count(&self) -> usize {
        self.table
            .values()
            .filter(|&&slot| self.slots[slot as usize].conn.as_ref().is_some_and(|c| c.state() != State::TimeWait))
            .count()
    }

    /// Bytes of buffer storage the TCBs hold now, send and receive (a scan of every TCB: once a
    /// second, not per segment). A buffer holds storage only for the bytes in it.
    #[must_use]
    pub fn buffer_storage(&self) -> usize {
        self.slots.iter().filter_map(|s| s.conn.as_deref()).map(Connection::buffer_storage).sum()
    }

    /// Under memory pressure: every TCB's buffers cut to what they hold (storage grows by
    /// doubling and stays at its high-water mark until empty), and the spare buffers dropped.
    /// Returns the bytes given back.
    pub fn shrink_buffers(&mut self) -> usize {
        self.spare.clear();
        self.slots.iter_mut().filter_map(|s| s.conn.as_deref_mut()).map(Connection::shrink_buffers).sum()
    }

    /// Buffers kept for the next connections.
    #[cfg(test)]
    pub(crate) fn spare_buffers(&self) -> usize {
        self.spare.len()
    }

    /// Live TCBs (every state, TIME-WAIT included).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.table.len()
    }

    /// Live TCBs per state (a scan; not for the fast path).
    #[must_use]
    pub fn connections_by_state(&self) -> Vec<(State, usize)> {
        State::ALL
            .iter()
            .map(|&st| (st, self.slots.iter().filter(|s| s.conn.as_ref().is_some_and(|c| c.state() == st)).count()))
            .collect()
    }

    /// Check the endpoint's invariants (for tests and the fuzzer): per connection, see
    /// `Connection::check_invariants`; the table and the slots agree; every live timer is in
    /// the queue and the queue's head is current; SYN-queue counts match.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0;
        let mut half_open = vec![0usize; self.listeners.len()];
        for (i, s) in self.slots.iter().enumerate() {
            let Some(c) = s.conn.as_ref() else { continue };
            live += 1;
            c.check_invariants().map_err(|e| format!("slot {i}: {e}"))?;
            if self.table.get(&c.four_tuple()) != Some(&(i as u32)) {
                return Err(format!("slot {i}: not in the table"));
            }
            if s.deadline != c.next_deadline() {
                return Err(format!("slot {i}: deadline {:?} != connection's {:?}", s.deadline, c.next_deadline()));
            }
            if c.counted_in_syn_queue
                && let Some(l) = s.listener
            {
                half_open[l] += 1;
            }
            if c.is_finished() {
                return Err(format!("slot {i}: finished but not freed"));
            }
        }
        if live != self.table.len() {
            return Err(format!("{live} live slots, {} table entries", self.table.len()));
        }
        for (l, n) in self.listeners.iter().zip(half_open) {
            if l.half_open != n {
                return Err(format!("listener {}: half_open {} != {}", l.addr, l.half_open, n));
            }
            if l.half_open > self.config.syn_queue_len {
                return Err("SYN queue over its bound".into());
            }
        }
        let earliest = self.slots.iter().filter(|s| s.conn.is_some()).filter_map(|s| s.deadline).min();
        match (earliest, self.poll_timeout()) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) => {}
            (a, b) => return Err(format!("earliest deadline {a:?}, poll_timeout {b:?}")),
        }
        if self.rsts.len() > CTRL_QUEUE_LEN || self.synacks.len() > CTRL_QUEUE_LEN {
            return Err("control queue over its bound".into());
        }
        Ok(())
    }
}
