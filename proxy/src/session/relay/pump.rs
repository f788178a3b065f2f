//! Moving the bytes of a relay ([`Relay::pump`]), both ways through its bounded queues: the
//! client's bytes (decrypted by rustls with TLS) to the backend, after the preamble; the
//! backend's bytes (encrypted with TLS) to the client; each side's end passed on as a half-close
//! once every byte before it went. The pump also meets the deadlines (backend connect, TLS
//! handshake) and the failures on the way: a TLS error, a backend read or write that fails, a
//! client that no longer takes data.

use std::io::ErrorKind;
use std::net::Shutdown;

use sluice_tcp::{Instant, StreamError};

use super::{Backend, BackendState, Client, Relay, RelayEnd, Tls};

impl<B: Backend> Relay<B> {
    /// Takes what the client sent into `to_backend` (through rustls with TLS). `Err` on a TLS
    /// failure. Returns whether anything moved.
    fn pull_from_client(&mut self, client: &mut impl Client, now: Instant) -> Result<bool, ()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            if self.client_eof {
                return Ok(false);
            }
            let space = self.to_backend.space_mut();
            if space.is_empty() {
                return Ok(false);
            }
            return Ok(match client.recv(space) {
                Ok(n) => {
                    self.to_backend.commit(n);
                    n > 0
                }
                Err(StreamError::Finished) => {
                    self.client_eof = true;
                    true
                }
                Err(_) => false,
            });
        };
        let mut progress = false;
        if !tls.tcp_eof {
            let space = tls.cipher_in.space_mut();
            if !space.is_empty() {
                match client.recv(space) {
                    Ok(n) => {
                        tls.cipher_in.commit(n);
                        progress |= n > 0;
                    }
                    Err(StreamError::Finished) => {
                        tls.tcp_eof = true;
                        progress = true;
                    }
                    Err(_) => {}
                }
            }
        }
        if !tls.cipher_in.is_empty() {
            // The handshake's clock starts at its first byte, a store lookup included.
            tls.session.note_first_byte(now);
        }
        if tls.gate.holds(now, tls.cipher_in.data(), tls.tcp_eof, tls.cipher_in.is_full()) {
            return Ok(progress);
        }
        while !tls.cipher_in.is_empty() {
            let n = tls.session.feed(now, tls.cipher_in.data()).map_err(|_| ())?;
            tls.cipher_in.consume(n);
            progress |= n > 0;
            // Plaintext out first, so that rustls can take more.
            let space = self.to_backend.space_mut();
            let m = tls.session.read_plaintext(space);
            self.to_backend.commit(m);
            progress |= m > 0;
            if n == 0 && m == 0 {
                break;
            }
        }
        if tls.tcp_eof && tls.cipher_in.is_empty() && !tls.eof_fed {
            tls.session.feed_eof(now).map_err(|_| ())?;
            tls.eof_fed = true;
            progress = true;
        }
        let space = self.to_backend.space_mut();
        let had_space = !space.is_empty();
        let m = tls.session.read_plaintext(space);
        self.to_backend.commit(m);
        progress |= m > 0;
        // The stream to the backend ends only once rustls has no plaintext left: a 0 read into a
        // full queue says nothing (ending it then sent the backend a FIN before the last bytes).
        if !self.client_eof && m == 0 && had_space && (tls.session.peer_closed() || tls.eof_fed) {
            // close_notify, or the TCP stream ended: the plaintext stream to the backend ends.
            self.client_eof = true;
            progress = true;
        }
        progress |= Self::flush_ciphertext(tls, client)?;
        Ok(progress)
    }

    /// Sends `to_client` to the client (through rustls with TLS). `Err` when the client
    /// connection no longer takes data.
    fn push_to_client(&mut self, client: &mut impl Client) -> Result<bool, ()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            if self.to_client.is_empty() {
                return Ok(false);
            }
            let n = client.send(self.to_client.data()).map_err(|_| ())?;
            self.to_client.consume(n);
            self.bytes_to_client += n as u64;
            return Ok(n > 0);
        };
        let mut progress = false;
        if !self.to_client.is_empty() && !tls.close_notify_sent {
            let n = tls.session.write_plaintext(self.to_client.data());
            self.to_client.consume(n);
            self.bytes_to_client += n as u64;
            progress |= n > 0;
        }
        progress |= Self::flush_ciphertext(tls, client)?;
        Ok(progress)
    }

    /// rustls's records -> `cipher_out` -> the TCP send buffer.
    fn flush_ciphertext(tls: &mut Tls, client: &mut impl Client) -> Result<bool, ()> {
        let mut progress = false;
        loop {
            let n = tls.session.write_ciphertext(tls.cipher_out.space_mut());
            tls.cipher_out.commit(n);
            if tls.cipher_out.is_empty() {
                break;
            }
            let sent = client.send(tls.cipher_out.data()).map_err(|_| ())?;
            tls.cipher_out.consume(sent);
            progress |= sent > 0 || n > 0;
            if sent == 0 {
                break;
            }
        }
        Ok(progress)
    }

    /// A TLS failure: send rustls's alert (if any), close the client connection after it,
    /// reset the backend.
    fn tls_failed(&mut self, client: &mut impl Client) {
        if let Some(tls) = self.tls.as_deref_mut() {
            let _ = Self::flush_ciphertext(tls, client);
        }
        self.close_client_reset_backend(client, RelayEnd::TlsFailed);
    }

    /// A read or write on the backend socket failed.
    fn backend_io_failed(&mut self, client: &mut impl Client, e: &std::io::Error) {
        tracing::debug!(error = %e, "backend I/O failed");
        self.backend_failed(client, RelayEnd::BackendFailed);
    }

    /// Moves every byte that can move now, both ways. Call on any TCP event of the connection,
    /// any readiness event of the backend socket, and at the connect deadline.
    pub fn pump(&mut self, client: &mut impl Client, now: Instant) {
        if self.end.is_some() {
            return;
        }
        if self.idle_deadline().is_some_and(|d| now >= d) {
            return self.reset_both(client, RelayEnd::IdleTimeout);
        }
        if let Some(tls) = self.tls.as_deref()
            && tls.session.is_handshaking()
            && now >= tls.handshake_deadline
        {
            // A client stalled mid-handshake: close it, free the backend.
            return self.close_client_reset_backend(client, RelayEnd::HandshakeTimeout);
        }
        if let BackendState::Connecting { deadline } = self.state {
            if !self.writable {
                if now >= deadline {
                    self.backend_failed(client, RelayEnd::BackendTimeout);
                }
                // Meanwhile the client's bytes queue up (bounded) below.
            } else {
                match self.backend.as_ref().map(B::finish_connect) {
                    Some(Ok(())) => {
                        self.state = BackendState::Connected;
                        self.connect_time = Some(now.saturating_duration_since(self.started));
                    }
                    _ => self.backend_failed(client, RelayEnd::BackendFailed),
                }
            }
            if self.end.is_some() {
                return;
            }
        }
        let connected = self.state == BackendState::Connected;
        if !connected || self.backend.is_none() {
            // No backend yet: take what the client sends (bounded) and finish the handshake.
            loop {
                match self.pull_from_client(client, now) {
                    Ok(true) => self.last_activity = now,
                    Ok(false) => return,
                    Err(()) => return self.tls_failed(client),
                }
            }
        }
        loop {
            let mut progress = false;
            // Client -> backend.
            match self.pull_from_client(client, now) {
                Ok(p) => progress |= p,
                Err(()) => return self.tls_failed(client),
            }
            if self.writable && self.preamble_sent < self.preamble.len() {
                match io(&mut self.backend).and_then(|b| b.write(&self.preamble[self.preamble_sent..])) {
                    Ok(n) => {
                        self.preamble_sent += n;
                        progress |= n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                    Err(e) => return self.backend_io_failed(client, &e),
                }
            }
            let preamble_done = self.preamble_sent == self.preamble.len();
            if self.writable && preamble_done && !self.to_backend.is_empty() {
                match io(&mut self.backend).and_then(|b| b.write(self.to_backend.data())) {
                    Ok(n) => {
                        self.to_backend.consume(n);
                        self.bytes_to_backend += n as u64;
                        progress |= n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                    Err(e) => return self.backend_io_failed(client, &e),
                }
            }
            if preamble_done && self.client_eof && self.to_backend.is_empty() && !self.backend_write_shut {
                self.shutdown_backend(Shutdown::Write);
                self.backend_write_shut = true;
            }
            // Backend -> client.
            if self.readable && !self.backend_eof {
                let space = self.to_client.space_mut();
                if !space.is_empty() {
                    match io(&mut self.backend).and_then(|b| b.read(space)) {
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
                        Err(e) => return self.backend_io_failed(client, &e),
                    }
                }
            }
            match self.push_to_client(client) {
                Ok(p) => progress |= p,
                Err(()) => return self.fail(client, RelayEnd::ClientGone),
            }
            if self.backend_eof && self.to_client.is_empty() && !self.client_closed {
                match self.tls.as_deref_mut() {
                    None => {
                        client.close();
                        self.client_closed = true;
                    }
                    Some(tls) => {
                        if !tls.close_notify_sent {
                            tls.session.send_close_notify();
                            tls.close_notify_sent = true;
                            progress = true;
                        } else if tls.cipher_out.is_empty() && !tls.session.wants_write() {
                            client.close();
                            self.client_closed = true;
                        }
                    }
                }
            }
            if !progress {
                break;
            }
            self.last_activity = now;
        }
        if self.client_closed && self.backend_write_shut {
            self.end = Some(RelayEnd::Clean);
        }
    }
}

/// The backend stream for an IO call, or `NotConnected`.
fn io<B>(backend: &mut Option<B>) -> std::io::Result<&mut B> {
    backend.as_mut().ok_or_else(|| std::io::Error::from(ErrorKind::NotConnected))
}
