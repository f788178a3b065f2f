//! The XDP program's copy of sluice's flows (`sluice_ebpf::MAP_OPEN_FLOWS`), kept while it
//! answers SYN cookies: under SYN-queue pressure a bare ACK to a listener that is not of one of
//! these flows and carries no cookie the kernel validates is dropped in XDP, so a spoofed-ACK
//! flood never reaches user space. The flow index ([`crate::datapath::xdp::flows`]) mirrors
//! every claim and release here.
//!
//! The key is the remote end and the local port (as for draining), so two flows may share one
//! (the same client port to two local addresses): the value counts them. When the map is full
//! the flows that did not fit are remembered and `COOKIE_FLOWS_INCOMPLETE` is set, so the program
//! hands failed ACKs to user space instead of dropping them until every such flow is gone.
//!
//! What it is not: the owner of a flow (the flow index), the connection table (each worker's).

use std::collections::{HashMap as Counts, HashSet};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData};
use sluice_ebpf::{COOKIE_FLOWS_INCOMPLETE, FlowKey, MAP_COOKIE_CONFIG, MAP_OPEN_FLOWS, flow_key_of};
use sluice_tcp::FourTuple;

use super::error::LoadError;

/// The map of sluice's flows and the program's flag that says it may be incomplete.
pub struct OpenFlows {
    inner: Mutex<Inner>,
}

struct Inner {
    map: HashMap<MapData, FlowKey, u32>,
    config: Array<MapData, u32>,
    /// Flows per key in the map, kept here so that only the first and the last of a key cost a
    /// syscall (one update at open, one delete at close: no lookups).
    counts: Counts<FlowKey, u32>,
    /// Flows that did not fit: while any is open the map is incomplete.
    missing: HashSet<FlowKey>,
}

impl std::fmt::Debug for OpenFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenFlows")
    }
}

impl OpenFlows {
    pub(super) fn new(map: HashMap<MapData, FlowKey, u32>, config: Array<MapData, u32>) -> Result<Self, LoadError> {
        let mut inner = Inner { map, config, counts: Counts::new(), missing: HashSet::new() };
        inner.set_incomplete(false)?;
        Ok(Self { inner: Mutex::new(inner) })
    }

    /// `flow` is one of sluice's from now on.
    pub fn opened(&self, flow: &FourTuple) {
        let key = flow_key_of(flow.remote, flow.local.port());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        if let Some(n) = inner.counts.get_mut(&key) {
            *n += 1;
            return;
        }
        if inner.map.insert(key, 1, 0).is_ok() {
            inner.counts.insert(key, 1);
        } else if inner.missing.insert(key) && inner.missing.len() == 1 {
            tracing::warn!(
                "the XDP program's map of sluice's flows is full: ACKs that fail the SYN-cookie check \
                 go to user space until the flows that did not fit are gone"
            );
            let _ = inner.set_incomplete(true);
        }
    }

    /// `flow` is no longer one of sluice's.
    pub fn closed(&self, flow: &FourTuple) {
        let key = flow_key_of(flow.remote, flow.local.port());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.missing.remove(&key) {
            if inner.missing.is_empty() {
                let _ = inner.set_incomplete(false);
            }
            return;
        }
        match inner.counts.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                inner.counts.remove(&key);
                let _ = inner.map.remove(&key);
            }
            None => {}
        }
    }
}

impl Inner {
    fn set_incomplete(&mut self, incomplete: bool) -> Result<(), LoadError> {
        self.config
            .set(COOKIE_FLOWS_INCOMPLETE, u32::from(incomplete), 0)
            .map_err(|e| LoadError::Map { map: MAP_COOKIE_CONFIG, reason: e.to_string() })
    }
}

/// The map's name, for errors.
pub(super) const NAME: &str = MAP_OPEN_FLOWS;
