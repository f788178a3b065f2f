//! The user calls of RFC 9293 3.10 on the endpoint: OPEN (active, `connect`; 3.10.1), SEND
//! (3.10.2), RECEIVE (3.10.3), CLOSE (3.10.4) and ABORT (3.10.5), each passed on to the TCB of
//! its handle, and the events the TCBs queued (`poll_event`).
//!
//! What this is not: the passive OPEN (`listen`), STATUS (`status`).

use super::Endpoint;
use crate::config::{ConnectError, ConnectionHandle, Event, FourTuple, StreamError};
use crate::connection::Connection;
use crate::time::Instant;
use core::net::SocketAddr;

impl Endpoint {
    /// Active open from `local` to `remote`, both IPv4 or both IPv6 (else `InvalidAddress`):
    /// the SYN leaves on the next `poll_transmit`.
    pub fn connect(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, ConnectError> {
        if local.port() == 0
            || remote.port() == 0
            || local.ip().is_unspecified()
            || remote.ip().is_unspecified()
            || local.is_ipv4() != remote.is_ipv4()
        {
            return Err(ConnectError::InvalidAddress);
        }
        let tuple = FourTuple { local, remote };
        if self.table.contains_key(&tuple) {
            return Err(ConnectError::AddrInUse);
        }
        if !self.make_room() {
            return Err(ConnectError::TooManyConnections);
        }
        let iss = self.isn.isn(now, local, remote);
        let ts = self.isn.ts_offset(local, remote);
        let bufs = self.take_buffers();
        let conn = Connection::connect(&self.config, bufs, now, tuple, iss, ts);
        let slot = self.insert(tuple, conn, None, true);
        self.after(slot, true);
        self.prune_timers();
        Ok(self.handle_of(slot))
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        self.events.pop_front()
    }

    /// Queue bytes for sending; returns how many the send buffer took (a short count means
    /// full: wait for `Writable`).
    pub fn send(&mut self, h: ConnectionHandle, data: &[u8]) -> Result<usize, StreamError> {
        let slot = self.slot_of(h).ok_or(StreamError::InvalidHandle)?;
        let r = self.with_conn(slot, Instant::ZERO, |c, _| c.send(data)).ok_or(StreamError::InvalidHandle)?;
        self.after(slot, true);
        r
    }

    /// Read in-order bytes. `Ok(0)`: nothing now; `Err(Finished)`: the peer's FIN was reached.
    pub fn recv(&mut self, h: ConnectionHandle, buf: &mut [u8]) -> Result<usize, StreamError> {
        let slot = self.slot_of(h).ok_or(StreamError::InvalidHandle)?;
        let r = self.with_conn(slot, Instant::ZERO, |c, _| c.recv(buf)).ok_or(StreamError::InvalidHandle)?;
        self.after(slot, true);
        r
    }

    /// Close the sending side: a FIN follows the queued data (RFC 9293 3.10.4).
    pub fn close(&mut self, h: ConnectionHandle) {
        if let Some(slot) = self.slot_of(h) {
            self.with_conn(slot, Instant::ZERO, |c, _| c.close());
            self.after(slot, true);
            self.prune_timers();
        }
    }

    /// Abort: send a RST (in synchronized states) and free the connection.
    pub fn abort(&mut self, h: ConnectionHandle) {
        if let Some(slot) = self.slot_of(h) {
            self.with_conn(slot, Instant::ZERO, |c, _| c.abort());
            self.after(slot, true);
            self.prune_timers();
        }
    }
}
