//! The two ends of a relay, as the sans-IO relay sees them: the client's, a [`Client`] (a
//! connection on sluice's TCP stack, [`OnStack`], or a kernel socket with the kernel transport),
//! and the backend's, a [`Backend`] (a non-blocking kernel socket whose connect
//! [`connect_kernel`] starts, or an in-memory stream in tests and in the ceiling benchmark).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use sluice_tcp::{ConnectionHandle, Endpoint, StreamError};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The client's side of a relay: a byte stream that can be read, written, closed and reset.
pub trait Client {
    /// Reads what the client sent: `Ok(0)` when nothing is there now, `Err(Finished)` once the
    /// client finished sending and every byte was read; other errors when the stream is gone.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError>;
    /// Queues bytes for the client: how many were taken (0 when the send buffer is full); an
    /// error when the stream no longer takes data.
    fn send(&mut self, data: &[u8]) -> Result<usize, StreamError>;
    /// Closes the sending side after what was queued (FIN).
    fn close(&mut self);
    /// Resets the connection (RST).
    fn abort(&mut self);
}

/// A client connection on sluice's own TCP stack.
pub struct OnStack<'a> {
    pub tcp: &'a mut Endpoint,
    pub handle: ConnectionHandle,
}

impl Client for OnStack<'_> {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        self.tcp.recv(self.handle, buf)
    }
    fn send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        self.tcp.send(self.handle, data)
    }
    fn close(&mut self) {
        self.tcp.close(self.handle)
    }
    fn abort(&mut self) {
        self.tcp.abort(self.handle)
    }
}

/// The backend's side of a relay: a byte stream the transport opened (non-blocking: reads and
/// writes that would block say `WouldBlock`).
pub trait Backend: Read + Write {
    /// Called once the transport reported the connecting stream writable: `Ok` when it is
    /// connected, the connect's error when it failed.
    fn finish_connect(&self) -> std::io::Result<()>;
    /// Ends one or both directions (a FIN for `Write`).
    fn shutdown(&self, how: Shutdown);
    /// Closing the stream resets it (RST) instead of ending it.
    fn reset_on_close(&self);
}

/// A backend on a non-blocking kernel TCP socket.
impl Backend for TcpStream {
    fn finish_connect(&self) -> std::io::Result<()> {
        match self.take_error()? {
            Some(e) => Err(e),
            None => self.peer_addr().map(|_| ()),
        }
    }
    fn shutdown(&self, how: Shutdown) {
        let _ = TcpStream::shutdown(self, how);
    }
    fn reset_on_close(&self) {
        // SO_LINGER 0.
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

/// Starts a non-blocking connect of a kernel TCP socket to `backend` (TCP_NODELAY).
pub fn connect_kernel(backend: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&SockAddr::from(backend)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}
