//! One proxied connection: the client's TCP connection on sluice's stack, relayed to a backend
//! over a non-blocking kernel TCP socket (TLS termination slots in between in a later step).
//!
//! Bytes move both ways through bounded queues with back-pressure: when the queue towards the
//! backend is full, sluice stops reading from the client connection, so its receive window
//! closes; when the queue towards the client is full, sluice stops reading the backend socket,
//! so the kernel's window towards the backend closes. Memory per relay is two queues.
//!
//! Half-close passes through both ways (RFC 9293 3.6): the client's FIN becomes a `shutdown(Write)`
//! on the backend once every byte before it was written; the backend's EOF becomes sluice's FIN
//! once every byte before it was sent. A backend that refuses or resets makes sluice reset the
//! client; a client that resets makes sluice reset the backend (SO_LINGER 0).
//!
//! Readiness is edge-triggered (epoll, owned by the worker): `readable`/`writable` are set by
//! events and cleared when an operation would block, as mio does.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::time::Duration;

use sluice_tcp::{ConnectionHandle, Endpoint, Instant, StreamError};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A fixed-capacity byte queue: data is appended at the end and consumed from the front.
#[derive(Debug)]
pub struct ByteQueue {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl ByteQueue {
    pub fn new(capacity: usize) -> Self {
        Self { buf: vec![0; capacity].into_boxed_slice(), start: 0, end: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Free space at the end (the data moves to the front first when that makes room).
    pub fn space_mut(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        &mut self.buf[self.end..]
    }

    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendState {
    Connecting { deadline: Instant },
    Connected,
}

/// How a relay ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions closed after every byte was delivered.
    Clean,
    /// The backend refused, reset or failed the connect; the client was reset.
    BackendFailed,
    /// The backend did not accept the connection in time; the client was reset.
    BackendTimeout,
    /// The client reset or timed out; the backend was reset.
    ClientGone,
}

#[derive(Debug)]
pub struct Relay {
    pub handle: ConnectionHandle,
    backend: TcpStream,
    state: BackendState,
    pub readable: bool,
    pub writable: bool,
    to_backend: ByteQueue,
    to_client: ByteQueue,
    client_eof: bool,
    backend_write_shut: bool,
    backend_eof: bool,
    client_closed: bool,
    pub started: Instant,
    /// Set once: how the relay ended (the worker removes it when the TCB is freed).
    pub end: Option<RelayEnd>,
    /// Backend connect latency and time to the backend's first byte (from the client's
    /// connection being established), each handed out once by `take_timings`.
    connect_time: Option<Duration>,
    first_byte_time: Option<Duration>,
    timings_taken: (bool, bool),
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
}

impl Relay {
    /// Starts a non-blocking connect to `backend` for the client connection `handle`.
    pub fn connect(
        handle: ConnectionHandle,
        backend: SocketAddrV4,
        now: Instant,
        connect_timeout: Duration,
        buffer: usize,
    ) -> std::io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&SockAddr::from(backend)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Self {
            handle,
            backend: socket.into(),
            state: BackendState::Connecting { deadline: now + connect_timeout },
            readable: false,
            writable: false,
            to_backend: ByteQueue::new(buffer),
            to_client: ByteQueue::new(buffer),
            client_eof: false,
            backend_write_shut: false,
            backend_eof: false,
            client_closed: false,
            started: now,
            end: None,
            connect_time: None,
            first_byte_time: None,
            timings_taken: (false, false),
            bytes_to_backend: 0,
            bytes_to_client: 0,
        })
    }

    pub fn backend(&self) -> &TcpStream {
        &self.backend
    }

    /// The connect deadline while connecting.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            BackendState::Connecting { deadline } => Some(deadline),
            BackendState::Connected => None,
        }
    }

    /// Bytes held in the two queues (for the idle accounting).
    pub fn buffered(&self) -> usize {
        self.to_backend.len() + self.to_client.len()
    }

    /// The backend connect time and the time to the backend's first byte, each once, when known.
    pub fn take_timings(&mut self) -> (Option<Duration>, Option<Duration>) {
        let connect = self.connect_time.filter(|_| !self.timings_taken.0);
        let first = self.first_byte_time.filter(|_| !self.timings_taken.1);
        self.timings_taken.0 |= connect.is_some();
        self.timings_taken.1 |= first.is_some();
        (connect, first)
    }

    /// The client reset or timed out: reset the backend too.
    pub fn client_gone(&mut self) {
        if self.end.is_none() {
            let _ = socket2::SockRef::from(&self.backend).set_linger(Some(Duration::ZERO));
            let _ = self.backend.shutdown(Shutdown::Both);
            self.end = Some(RelayEnd::ClientGone);
        }
    }

    fn fail(&mut self, tcp: &mut Endpoint, why: RelayEnd) {
        if self.end.is_none() {
            tcp.abort(self.handle);
            let _ = socket2::SockRef::from(&self.backend).set_linger(Some(Duration::ZERO));
            self.end = Some(why);
        }
    }

    /// Moves every byte that can move now, both ways. Call on any TCP event of the connection,
    /// any readiness event of the backend socket, and at the connect deadline.
    pub fn pump(&mut self, tcp: &mut Endpoint, now: Instant) {
        if self.end.is_some() {
            return;
        }
        if let BackendState::Connecting { deadline } = self.state {
            if !self.writable {
                if now >= deadline {
                    self.fail(tcp, RelayEnd::BackendTimeout);
                }
                // Meanwhile the client's bytes queue up (bounded) below.
            } else {
                match self.backend.take_error() {
                    Ok(None) if self.backend.peer_addr().is_ok() => {
                        self.state = BackendState::Connected;
                        self.connect_time = Some(now.saturating_duration_since(self.started));
                    }
                    _ => return self.fail(tcp, RelayEnd::BackendFailed),
                }
            }
        }
        let connected = self.state == BackendState::Connected;
        loop {
            let mut progress = false;
            // Client -> backend.
            if !self.client_eof {
                let space = self.to_backend.space_mut();
                if !space.is_empty() {
                    match tcp.recv(self.handle, space) {
                        Ok(0) => {}
                        Ok(n) => {
                            self.to_backend.commit(n);
                            progress = true;
                        }
                        Err(StreamError::Finished) => {
                            self.client_eof = true;
                            progress = true;
                        }
                        Err(_) => {}
                    }
                }
            }
            if connected && self.writable && !self.to_backend.is_empty() {
                match self.backend.write(self.to_backend.data()) {
                    Ok(n) => {
                        self.to_backend.consume(n);
                        self.bytes_to_backend += n as u64;
                        progress |= n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                    Err(_) => return self.fail(tcp, RelayEnd::BackendFailed),
                }
            }
            if connected && self.client_eof && self.to_backend.is_empty() && !self.backend_write_shut {
                let _ = self.backend.shutdown(Shutdown::Write);
                self.backend_write_shut = true;
            }
            // Backend -> client.
            if connected && self.readable && !self.backend_eof {
                let space = self.to_client.space_mut();
                if !space.is_empty() {
                    match self.backend.read(space) {
                        Ok(0) => {
                            self.backend_eof = true;
                            progress = true;
                        }
                        Ok(n) => {
                            self.to_client.commit(n);
                            if self.first_byte_time.is_none() {
                                self.first_byte_time = Some(now.saturating_duration_since(self.started));
                            }
                            progress = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                        Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                        Err(_) => return self.fail(tcp, RelayEnd::BackendFailed),
                    }
                }
            }
            if !self.to_client.is_empty() {
                match tcp.send(self.handle, self.to_client.data()) {
                    Ok(n) => {
                        self.to_client.consume(n);
                        self.bytes_to_client += n as u64;
                        progress |= n > 0;
                    }
                    Err(_) => return self.fail(tcp, RelayEnd::ClientGone),
                }
            }
            if self.backend_eof && self.to_client.is_empty() && !self.client_closed {
                tcp.close(self.handle);
                self.client_closed = true;
            }
            if !progress {
                break;
            }
        }
        if self.client_closed && self.backend_write_shut {
            self.end = Some(RelayEnd::Clean);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_queue_is_bounded_and_compacts() {
        let mut q = ByteQueue::new(8);
        assert_eq!(q.space_mut().len(), 8);
        q.space_mut()[..5].copy_from_slice(b"hello");
        q.commit(5);
        assert_eq!(q.data(), b"hello");
        q.consume(3);
        assert_eq!(q.data(), b"lo");
        assert_eq!(q.space_mut().len(), 3, "no compaction while the end has room");
        q.space_mut()[..3].copy_from_slice(b"abc");
        q.commit(3);
        assert_eq!(q.space_mut().len(), 3, "compacted: the consumed front is free again");
        assert_eq!(q.data(), b"loabc");
        q.commit(100);
        assert_eq!(q.len(), 8, "commit never runs past the capacity");
        q.consume(100);
        assert!(q.is_empty());
        assert_eq!(q.space_mut().len(), 8);
    }
}
