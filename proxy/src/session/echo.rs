//! The echo service (`echo = true` listeners): every byte the client sends comes back, with
//! back-pressure (nothing more is read while echoed bytes wait for the send buffer, so the
//! client's window closes), and the client's FIN is answered with sluice's once all is echoed.

use sluice_tcp::StreamError;

use crate::session::byte_queue::ByteQueue;
use crate::session::relay::Client;

/// One echo connection's bytes read and not yet taken by the send buffer.
#[derive(Debug)]
pub struct Echo {
    pending: ByteQueue,
    closed: bool,
}

impl Echo {
    /// An echo connection holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self { pending: ByteQueue::new(capacity), closed: false }
    }

    /// Echoes what can move now. Returns whether the connection is done: the client's FIN was
    /// echoed (sluice's FIN queued), or the stream is gone.
    pub fn pump(&mut self, client: &mut impl Client, echoed: &mut u64) -> bool {
        loop {
            if !self.pending.is_empty() {
                match client.send(self.pending.data()) {
                    Ok(n) => {
                        self.pending.consume(n);
                        *echoed += n as u64;
                    }
                    Err(_) => return true,
                }
                if !self.pending.is_empty() {
                    return false;
                }
            }
            match client.recv(self.pending.space_mut()) {
                Ok(0) => return false,
                Ok(n) => self.pending.commit(n),
                Err(StreamError::Finished) => {
                    if !std::mem::replace(&mut self.closed, true) {
                        client.close();
                    }
                    return true;
                }
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::memory::MemoryClient;

    #[test]
    fn echoes_everything_with_back_pressure_then_closes_after_the_fin() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut c = MemoryClient { inbox: data.clone(), fin: true, room: Some(0), ..Default::default() };
        let mut e = Echo::new(1024);
        let mut echoed = 0;
        assert!(!e.pump(&mut c, &mut echoed), "a full send buffer holds the echo back");
        assert_eq!(c.inbox.len(), data.len() - 1024, "and nothing more is read meanwhile");
        c.room = Some(300);
        let mut rounds = 0;
        while !e.pump(&mut c, &mut echoed) {
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert_eq!(c.out, data);
        assert_eq!(echoed, data.len() as u64);
        assert!(c.closed, "the FIN is answered once everything was echoed");
    }
}
