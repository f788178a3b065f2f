//! [`KernelClient`]: the client side of a relay (a [`Client`]) on an accepted, non-blocking
//! kernel TCP socket, with its edge-triggered readiness kept in flags.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use nix::sys::epoll::EpollFlags;
use sluice_tcp::StreamError;

use crate::session::relay::Client;

/// The client side of a relay on a non-blocking kernel socket. Readiness is edge-triggered:
/// `readable`/`writable` are set by epoll events and cleared when an operation would block.
#[derive(Debug)]
pub struct KernelClient {
    stream: TcpStream,
    pub readable: bool,
    pub writable: bool,
    /// The connection was reset or failed: nothing moves any more.
    pub gone: bool,
    /// The client's FIN was read.
    pub(super) eof: bool,
    write_shut: bool,
    /// SO_LINGER 0 is set: closing the socket sends a RST.
    pub(super) aborted: bool,
}

impl KernelClient {
    /// Takes a connected socket (made non-blocking here); both readiness flags start set, so
    /// the first operations find out what the socket has.
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, readable: true, writable: true, gone: false, eof: false, write_shut: false, aborted: false })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sets the readiness flags from an epoll event; an error marks the connection gone.
    pub(super) fn on_event(&mut self, flags: EpollFlags) {
        if flags.contains(EpollFlags::EPOLLERR) {
            self.gone = true;
        }
        let hup = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | hup) {
            self.readable = true;
        }
        if flags.intersects(EpollFlags::EPOLLOUT | hup) {
            self.writable = true;
        }
    }
}

impl Client for KernelClient {
    /// `Ok(0)` when nothing is there now (would block), `Err(Finished)` once the client's FIN
    /// was read, `Err(InvalidHandle)` after a reset or a socket error.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        if self.eof {
            return Err(StreamError::Finished);
        }
        if self.gone {
            return Err(StreamError::InvalidHandle);
        }
        if !self.readable || buf.is_empty() {
            return Ok(0);
        }
        loop {
            return match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    Err(StreamError::Finished)
                }
                Ok(n) => Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    Ok(0)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.gone = true;
                    Err(StreamError::InvalidHandle)
                }
            };
        }
    }

    /// How many bytes the socket's send buffer took (0 when full); an error once the sending
    /// side is closed or the connection is gone.
    fn send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        if self.gone || self.aborted {
            return Err(StreamError::InvalidHandle);
        }
        if self.write_shut {
            return Err(StreamError::Closed);
        }
        if !self.writable || data.is_empty() {
            return Ok(0);
        }
        loop {
            return match self.stream.write(data) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.writable = false;
                    Ok(0)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.gone = true;
                    Err(StreamError::InvalidHandle)
                }
            };
        }
    }

    /// `shutdown(Write)`: the kernel sends a FIN after what was written.
    fn close(&mut self) {
        if !self.write_shut {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.write_shut = true;
        }
    }

    /// SO_LINGER 0: the worker closes the socket next, which sends a RST.
    fn abort(&mut self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        self.aborted = true;
    }
}
