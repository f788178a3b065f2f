//! Which worker owns a flow: the one whose queue received its SYN (or, for a connection rebuilt
//! from a SYN cookie, the one that validated the cookie). A NIC (RSS) or veth (the sender's
//! transmit queue) delivers a flow's frames on one queue, so the owner almost always receives
//! them itself and no frame crosses cores.
//!
//! When a frame lands on a worker that has no TCB for it (the sender changed queue after an RTO,
//! an RSS table change), the worker looks its flow up in this index, shared by all workers, and
//! hands the frame to the owner. The index is written at open (a SYN claims its flow before the
//! TCB exists, so no second worker can open it) and at close (the TCP stack reports every freed
//! TCB), and read only on such a miss. It is sharded (a mutex per shard, uncontended in
//! practice: a worker touches it twice per connection) and bounded: a claim past `capacity`
//! fails and the SYN is dropped, counted.
//!
//! What it is not: a connection table. Each worker's `sluice_tcp::Endpoint` is the table; this
//! only answers "who has it".

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_tcp::FourTuple;

const SHARDS: usize = 64;

/// Told of every flow that enters and leaves the index (under its shard's lock, so in order):
/// the XDP program's copy of sluice's flows while it answers SYN cookies
/// ([`crate::datapath::xdp::loader::OpenFlows`]).
pub trait FlowMirror: Send + Sync + std::fmt::Debug {
    fn opened(&self, flow: &FourTuple);
    fn closed(&self, flow: &FourTuple);
}

impl FlowMirror for crate::datapath::xdp::loader::OpenFlows {
    fn opened(&self, flow: &FourTuple) {
        crate::datapath::xdp::loader::OpenFlows::opened(self, flow);
    }
    fn closed(&self, flow: &FourTuple) {
        crate::datapath::xdp::loader::OpenFlows::closed(self, flow);
    }
}

/// flow -> owning worker, shared by the workers of one process.
#[derive(Debug)]
pub struct FlowIndex {
    shards: Box<[Mutex<HashMap<FourTuple, u16>>]>,
    mirror: Option<Box<dyn FlowMirror>>,
    /// Keyed per process: which shard a flow lands in is not predictable from outside.
    hasher: RandomState,
    len: AtomicUsize,
    capacity: usize,
}

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Another worker owns the flow.
    Owned(usize),
    /// The index holds `capacity` flows.
    Full,
}

impl FlowIndex {
    /// An index for at most `capacity` flows (the workers' TCB tables together).
    pub fn new(capacity: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self { shards, mirror: None, hasher: RandomState::new(), len: AtomicUsize::new(0), capacity }
    }

    /// The index, telling `mirror` of every flow that enters and leaves it.
    #[must_use]
    pub fn with_mirror(self, mirror: Box<dyn FlowMirror>) -> Self {
        Self { mirror: Some(mirror), ..self }
    }

    fn shard(&self, flow: &FourTuple) -> std::sync::MutexGuard<'_, HashMap<FourTuple, u16>> {
        let i = (self.hasher.hash_one(flow) % SHARDS as u64) as usize;
        // A worker that panicked while holding a shard left a consistent map (each operation is
        // one insert or remove): keep using it.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker that owns `flow`, if any.
    pub fn owner(&self, flow: &FourTuple) -> Option<usize> {
        self.shard(flow).get(flow).map(|&w| usize::from(w))
    }

    /// Makes `worker` the owner of `flow` unless another worker owns it already. Claiming a
    /// flow one owns again succeeds.
    pub fn claim(&self, flow: FourTuple, worker: usize) -> Result<(), ClaimError> {
        let mut shard = self.shard(&flow);
        if let Some(&w) = shard.get(&flow) {
            return if usize::from(w) == worker { Ok(()) } else { Err(ClaimError::Owned(usize::from(w))) };
        }
        // Reserve a place first: racing claims never pass the capacity.
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return Err(ClaimError::Full);
        }
        shard.insert(flow, worker as u16);
        if let Some(m) = &self.mirror {
            m.opened(&flow);
        }
        Ok(())
    }

    /// `worker` no longer owns `flow` (its TCB was freed, or the claim was not used). An entry
    /// of another worker is left alone.
    pub fn release(&self, flow: &FourTuple, worker: usize) {
        let mut shard = self.shard(flow);
        if shard.get(flow).is_some_and(|&w| usize::from(w) == worker) {
            shard.remove(flow);
            self.len.fetch_sub(1, Ordering::Relaxed);
            if let Some(m) = &self.mirror {
                m.closed(flow);
            }
        }
    }

    /// Flows in the index.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for FlowIndex {
    /// Room for 2^20 flows.
    fn default() -> Self {
        Self::new(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::Arc;

    fn flow(port: u16) -> FourTuple {
        FourTuple {
            local: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 443).into(),
            remote: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), port).into(),
        }
    }

    #[test]
    fn the_first_claim_wins_and_release_is_the_owners_only() {
        let index = FlowIndex::new(10);
        assert_eq!(index.claim(flow(1), 3), Ok(()));
        assert_eq!(index.claim(flow(1), 3), Ok(()), "claiming again is harmless");
        assert_eq!(index.claim(flow(1), 5), Err(ClaimError::Owned(3)));
        assert_eq!(index.owner(&flow(1)), Some(3));
        index.release(&flow(1), 5);
        assert_eq!(index.owner(&flow(1)), Some(3), "not 5's to release");
        index.release(&flow(1), 3);
        assert_eq!(index.owner(&flow(1)), None);
        assert!(index.is_empty());
    }

    /// Records what it is told.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(bool, u16)>>);

    impl FlowMirror for Arc<Recorder> {
        fn opened(&self, flow: &FourTuple) {
            self.0.lock().unwrap().push((true, flow.remote.port()));
        }
        fn closed(&self, flow: &FourTuple) {
            self.0.lock().unwrap().push((false, flow.remote.port()));
        }
    }

    #[test]
    fn the_mirror_hears_of_each_flow_once_when_it_enters_and_once_when_it_leaves() {
        let seen = Arc::new(Recorder::default());
        let index = FlowIndex::new(2).with_mirror(Box::new(Arc::clone(&seen)));
        index.claim(flow(1), 0).unwrap();
        index.claim(flow(1), 0).unwrap();
        assert!(index.claim(flow(1), 1).is_err());
        index.claim(flow(2), 1).unwrap();
        assert_eq!(index.claim(flow(3), 1), Err(ClaimError::Full));
        index.release(&flow(1), 1);
        index.release(&flow(1), 0);
        index.release(&flow(1), 0);
        assert_eq!(*seen.0.lock().unwrap(), [(true, 1), (true, 2), (false, 1)]);
    }

    #[test]
    fn claims_stop_at_the_capacity() {
        let index = FlowIndex::new(2);
        assert_eq!(index.claim(flow(1), 0), Ok(()));
        assert_eq!(index.claim(flow(2), 0), Ok(()));
        assert_eq!(index.claim(flow(3), 0), Err(ClaimError::Full));
        index.release(&flow(1), 0);
        assert_eq!(index.claim(flow(3), 0), Ok(()));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn racing_workers_never_own_a_flow_twice() {
        let index = Arc::new(FlowIndex::new(1 << 16));
        let wins: Vec<_> = (0..4)
            .map(|w| {
                let index = Arc::clone(&index);
                std::thread::spawn(move || (0..5_000).filter(|p| index.claim(flow(*p), w).is_ok()).count())
            })
            .collect();
        let total: usize = wins.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 5_000, "each flow claimed by exactly one worker");
        assert_eq!(index.len(), 5_000);
    }
}
