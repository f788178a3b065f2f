//! Both ends of a session in memory: a client ([`MemoryClient`]) and backends ([`MemoryLink`]
//! opens [`MemoryBackend`]s, the far ends are [`MemoryServer`]s). The session layer runs on them
//! exactly as on sockets, with no kernel and no clock: the unit tests of relay behaviours and the
//! in-memory ceiling benchmark drive it with these.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

use sluice_tcp::StreamError;

use super::BackendLink;
use super::relay::{Backend, Client};

/// The client's end: `inbox` is what the client sent and the relay has not read yet, `out` what
/// the relay sent it.
#[derive(Debug, Default)]
pub struct MemoryClient {
    pub inbox: Vec<u8>,
    pub out: Vec<u8>,
    /// The client finished sending (its FIN): once `inbox` is read, reads say `Finished`.
    pub fin: bool,
    /// The relay closed the connection (FIN after `out`).
    pub closed: bool,
    /// The relay reset the connection.
    pub aborted: bool,
    /// How many bytes each send takes (the client's send buffer); all when absent.
    pub room: Option<usize>,
}

impl Client for MemoryClient {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        if self.inbox.is_empty() && self.fin {
            return Err(StreamError::Finished);
        }
        let n = buf.len().min(self.inbox.len());
        buf[..n].copy_from_slice(&self.inbox[..n]);
        self.inbox.drain(..n);
        Ok(n)
    }
    fn send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        let n = data.len().min(self.room.unwrap_or(usize::MAX));
        self.out.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn close(&mut self) {
        self.closed = true;
    }
    fn abort(&mut self) {
        self.aborted = true;
    }
}

/// How a backend answers a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Refuse,
    /// Never answers (the connect times out).
    Silent,
}

#[derive(Debug, Default)]
struct Pipe {
    answer: Option<Answer>,
    /// Relay -> server, and how much the server side takes before writes would block.
    to_server: Vec<u8>,
    window: usize,
    to_relay: Vec<u8>,
    relay_write_shut: bool,
    server_write_shut: bool,
    reset_on_close: bool,
    /// The server reset the connection.
    server_reset: bool,
    relay_dropped: bool,
}

/// The relay's end of an in-memory backend connection.
#[derive(Debug)]
pub struct MemoryBackend(Rc<RefCell<Pipe>>);

impl Read for MemoryBackend {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut p = self.0.borrow_mut();
        if p.server_reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        if p.to_relay.is_empty() {
            return if p.server_write_shut { Ok(0) } else { Err(ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(p.to_relay.len());
        buf[..n].copy_from_slice(&p.to_relay[..n]);
        p.to_relay.drain(..n);
        Ok(n)
    }
}

impl Write for MemoryBackend {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut p = self.0.borrow_mut();
        if p.server_reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let n = data.len().min(p.window.saturating_sub(p.to_server.len()));
        if n == 0 && !data.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        p.to_server.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn finish_connect(&self) -> std::io::Result<()> {
        match self.0.borrow().answer {
            Some(Answer::Accept) => Ok(()),
            Some(Answer::Refuse) => Err(ErrorKind::ConnectionRefused.into()),
            Some(Answer::Silent) | None => Err(ErrorKind::NotConnected.into()),
        }
    }
    fn shutdown(&self, how: Shutdown) {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.0.borrow_mut().relay_write_shut = true;
        }
    }
    fn reset_on_close(&self) {
        self.0.borrow_mut().reset_on_close = true;
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        self.0.borrow_mut().relay_dropped = true;
    }
}

/// The backend server's end of one connection.
#[derive(Debug, Clone)]
pub struct MemoryServer {
    pub addr: SocketAddr,
    pipe: Rc<RefCell<Pipe>>,
}

impl MemoryServer {
    /// Takes what the relay sent so far.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.pipe.borrow_mut().to_server)
    }
    /// Sends `data` to the relay.
    pub fn send(&self, data: &[u8]) {
        self.pipe.borrow_mut().to_relay.extend_from_slice(data);
    }
    /// Ends the server's sending side (the relay reads EOF after the bytes sent).
    pub fn shutdown_write(&self) {
        self.pipe.borrow_mut().server_write_shut = true;
    }
    /// Resets the connection.
    pub fn reset(&self) {
        self.pipe.borrow_mut().server_reset = true;
    }
    /// How many bytes the relay may have queued at the server before its writes block.
    pub fn set_window(&self, window: usize) {
        self.pipe.borrow_mut().window = window;
    }
    /// The relay ended its sending side (FIN).
    pub fn got_fin(&self) -> bool {
        self.pipe.borrow().relay_write_shut
    }
    /// The relay made the stream reset (RST) when it closes.
    pub fn got_reset(&self) -> bool {
        self.pipe.borrow().reset_on_close
    }
    /// The relay let go of the stream.
    pub fn dropped(&self) -> bool {
        self.pipe.borrow().relay_dropped
    }
}

/// The transport side in memory: opens [`MemoryBackend`]s, answering each connect as `answers`
/// says for its address (accept when absent), and keeps the server end of every connection.
#[derive(Debug, Default)]
pub struct MemoryLink {
    pub answers: HashMap<SocketAddr, Answer>,
    /// Every connection opened, in order.
    pub servers: Vec<MemoryServer>,
    /// Streams in the readiness set now.
    pub registered: usize,
    /// The window of new connections ([`DEFAULT_WINDOW`] when absent).
    pub window: Option<usize>,
}

/// The window of a fresh in-memory connection.
pub const DEFAULT_WINDOW: usize = 1 << 20;

impl BackendLink for MemoryLink {
    type Stream = MemoryBackend;

    fn connect(&mut self, addr: SocketAddr) -> std::io::Result<MemoryBackend> {
        let answer = self.answers.get(&addr).copied().unwrap_or(Answer::Accept);
        let pipe = Rc::new(RefCell::new(Pipe {
            answer: Some(answer),
            window: self.window.unwrap_or(DEFAULT_WINDOW),
            ..Pipe::default()
        }));
        self.servers.push(MemoryServer { addr, pipe: Rc::clone(&pipe) });
        Ok(MemoryBackend(pipe))
    }
    fn register(&mut self, _: &MemoryBackend) -> std::io::Result<()> {
        self.registered += 1;
        Ok(())
    }
    fn deregister(&mut self, _: &MemoryBackend) {
        self.registered -= 1;
    }
}

impl MemoryLink {
    /// The readiness a backend stream would report now: `(readable, writable)`. A silent
    /// backend never becomes writable; the others do at once (level-triggered is enough here).
    pub fn readiness(backend: Option<&MemoryBackend>) -> (bool, bool) {
        match backend {
            Some(b) if b.0.borrow().answer == Some(Answer::Silent) => (false, false),
            Some(_) => (true, true),
            None => (false, false),
        }
    }
}
