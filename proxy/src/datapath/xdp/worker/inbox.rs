//! The hand-off plumbing: each worker's [`Inbox`] (frames handed over by other workers, the main
//! thread's orders, the eventfd that wakes it), the [`Peers`] through which a worker reaches the
//! others' inboxes, and [`inboxes`], which makes them all with the main thread's `Controls`.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::datapath::{Control, Controls, Waker};

/// A worker's inbox: frames handed over by other workers, orders from the main thread, and
/// how to wake the owner.
pub struct Inbox {
    pub rx: Receiver<Vec<u8>>,
    pub control: Receiver<Control>,
    pub wake: Arc<Waker>,
}

/// The other workers' inboxes, indexed by worker.
#[derive(Clone)]
pub struct Peers {
    pub senders: Vec<Sender<Vec<u8>>>,
    pub wakers: Vec<Arc<Waker>>,
}

/// Creates the inboxes of `n` workers: the `Inbox` each owns, the `Peers` all share, and the
/// main thread's `Controls`.
pub fn inboxes(n: usize, capacity: usize) -> std::io::Result<(Vec<Inbox>, Peers, Controls)> {
    let (orders, controls) = crate::datapath::control_channels(n)?;
    let mut inboxes = Vec::new();
    let mut peers = Peers { senders: Vec::new(), wakers: Vec::new() };
    for (control, wake) in orders {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        peers.senders.push(tx);
        peers.wakers.push(Arc::clone(&wake));
        inboxes.push(Inbox { rx, control, wake });
    }
    Ok((inboxes, peers, controls))
}
