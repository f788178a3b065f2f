//! Connection limits: in total, per worker and per client address (the `[limits]` section).
//!
//! A worker asks [`ConnCounts::admit`] before it takes a connection and gets a [`Slot`] back,
//! or the limit that refused it; the slot is handed back with [`ConnCounts::release`] when the
//! connection is gone. A client is an IPv4 address or an IPv6 /64: one host is given a whole
//! /64 (RFC 6177, and SLAAC or privacy addresses change inside it), so counting single IPv6
//! addresses would let one client open a limit's worth per address. The total is one atomic; the per-client counts live in sharded maps
//! (a client's connections may land on any worker), touched once at admission and once at
//! release, never per packet. What a refusal looks like on the wire (a RST) and how it is
//! counted is the worker's business.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Limits;

/// Descriptors kept back from the connection budget: logs, the admin endpoint and its clients,
/// health checks, epoll and eventfds, XDP maps and links, a reload's files.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The descriptors sluice may open: raises the soft `RLIMIT_NOFILE` to the hard limit (as nginx's
/// `worker_rlimit_nofile` would) and returns `(soft limit now, soft limit before)`. A failure
/// leaves the limit as it was.
pub fn raise_descriptor_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return (1024, 1024) };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return (hard, soft);
    }
    (soft, soft)
}

/// How many connections one of `workers` workers may hold when each holds `per_connection`
/// descriptors and the process may open `limit`: past it, new connections are refused (counted
/// `refused_descriptors`) instead of failing a backend connect with EMFILE.
pub fn connections_per_worker(limit: u64, workers: usize, per_connection: u64) -> u64 {
    limit.saturating_sub(RESERVED_DESCRIPTORS) / (workers.max(1) as u64) / per_connection.max(1)
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    Worker,
    Client,
    /// The connections hold `limits.memory` already.
    Memory,
}

/// The memory sluice may use: the host's (`MemTotal`) or, when smaller, its cgroup's limit
/// (cgroup v2 `memory.max`; a systemd `MemoryMax=` lands there). What `[limits]` defaults from.
pub fn memory_available() -> u64 {
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned)))
        .and_then(|path| std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.max", path.trim())).ok())
        .and_then(|m| m.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    host.min(cgroup)
}

/// An admitted connection's claim on the counts; give it back with [`ConnCounts::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Slot {
    client: IpAddr,
}

/// Who a limit per client counts: the IPv4 address, or the IPv6 address's /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

const SHARDS: usize = 16;

/// Open-connection counts shared by every worker, and the memory their connections hold.
#[derive(Debug, Default)]
pub struct ConnCounts {
    total: AtomicU64,
    per_client: [Mutex<HashMap<IpAddr, u64>>; SHARDS],
    /// Each worker's charge ([`ConnCounts::charge`]) and their sum.
    charges: Mutex<Vec<u64>>,
    charged: AtomicU64,
}

impl ConnCounts {
    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, u64>> {
        let folded = match client {
            IpAddr::V4(v4) => u32::from(v4),
            IpAddr::V6(v6) => {
                let [a, b, c, d]: [u32; 4] = ipv6_words(v6.octets());
                a ^ b ^ c ^ d
            }
        };
        &self.per_client[(folded ^ (folded >> 8)) as usize % SHARDS]
    }

    /// Whether a new connection from `client` would pass `limits`, given that the asking worker
    /// has `worker_open` connections (a cheap look, for refusing a SYN before any state exists).
    pub fn check(&self, limits: &Limits, worker_open: u64, client: IpAddr) -> Result<(), Refusal> {
        let client = client_key(client);
        if limits.max_connections_per_worker > 0 && worker_open >= limits.max_connections_per_worker {
            return Err(Refusal::Worker);
        }
        self.check_memory(limits)?;
        let max = limits.max_connections.unwrap_or(0);
        if max > 0 && self.total.load(Ordering::Relaxed) >= max {
            return Err(Refusal::Total);
        }
        if limits.max_connections_per_client > 0 {
            let map = self.shard(client).lock().unwrap_or_else(|e| e.into_inner());
            if map.get(&client).copied().unwrap_or(0) >= limits.max_connections_per_client {
                return Err(Refusal::Client);
            }
        }
        Ok(())
    }

    /// Admits a connection from `client` if every limit allows it (exactly: two workers racing
    /// for the last place cannot both get it).
    pub fn admit(&self, limits: &Limits, worker_open: u64, client: IpAddr) -> Result<Slot, Refusal> {
        let client = client_key(client);
        if limits.max_connections_per_worker > 0 && worker_open >= limits.max_connections_per_worker {
            return Err(Refusal::Worker);
        }
        self.check_memory(limits)?;
        let max = limits.max_connections.filter(|&m| m > 0).unwrap_or(u64::MAX);
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(|_| Refusal::Total)?;
        let mut map = self.shard(client).lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(client).or_insert(0);
        if limits.max_connections_per_client > 0 && *n >= limits.max_connections_per_client {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Client);
        }
        *n += 1;
        Ok(Slot { client })
    }

    /// Gives back an admitted connection's place.
    pub fn release(&self, slot: Slot) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.shard(slot.client).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&slot.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&slot.client);
            }
        }
    }

    /// Connections admitted and not yet released, over all workers.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn check_memory(&self, limits: &Limits) -> Result<(), Refusal> {
        if self.over_memory(limits) { Err(Refusal::Memory) } else { Ok(()) }
    }

    /// Whether the connections hold `limits.memory` or more (as last reported): new ones are
    /// refused and the workers cut their buffers to what they hold.
    pub fn over_memory(&self, limits: &Limits) -> bool {
        limits.memory.is_some_and(|m| m > 0 && self.charged() >= m)
    }

    /// Sets what `worker`'s connections hold now (bytes: buffers, queues and
    /// [`crate::config::CONNECTION_BYTES`] each); each worker reports once a second.
    pub fn charge(&self, worker: usize, bytes: u64) {
        let mut charges = self.charges.lock().unwrap_or_else(|e| e.into_inner());
        if charges.len() <= worker {
            charges.resize(worker + 1, 0);
        }
        charges[worker] = bytes;
        self.charged.store(charges.iter().sum(), Ordering::Relaxed);
    }

    /// What every worker's connections hold, as last reported.
    pub fn charged(&self) -> u64 {
        self.charged.load(Ordering::Relaxed)
    }
}

/// The four big-endian 32-bit words of an IPv6 address.
fn ipv6_words(o: [u8; 16]) -> [u32; 4] {
    std::array::from_fn(|i| u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
}

/// Raises the descriptor limit and returns how many connections, each holding `per_connection`
/// descriptors, one of `workers` may hold; logs both.
pub fn descriptor_budget(workers: usize, per_connection: u64) -> usize {
    let (limit, before) = raise_descriptor_limit();
    let per_worker = connections_per_worker(limit, workers, per_connection);
    tracing::info!(
        limit,
        raised_from = before,
        connections_per_worker = per_worker,
        "descriptors (RLIMIT_NOFILE): past this many connections a worker refuses new ones (refused_descriptors)"
    );
    usize::try_from(per_worker).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_budget_keeps_a_reserve_and_splits_over_workers() {
        assert_eq!(connections_per_worker(20_000, 2, 1), (20_000 - RESERVED_DESCRIPTORS) / 2);
        assert_eq!(connections_per_worker(20_000, 2, 2), (20_000 - RESERVED_DESCRIPTORS) / 4);
        assert_eq!(connections_per_worker(100, 2, 1), 0, "below the reserve nothing is left");
        let (now, before) = raise_descriptor_limit();
        assert!(now >= before);
    }

    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let c = ConnCounts::default();
        let l = Limits { max_connections_per_client: 2, ..Limits::default() };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = c.admit(&l, 0, ip("2001:db8:100::1")).unwrap();
        let _b = c.admit(&l, 0, ip("2001:db8:100::ffff:1")).unwrap();
        assert_eq!(c.admit(&l, 0, ip("2001:db8:100:0:dead::7")), Err(Refusal::Client), "same /64");
        assert!(c.admit(&l, 0, ip("2001:db8:100:1::1")).is_ok(), "the next /64 is another client");
        // An IPv4-mapped address is the IPv4 client.
        let _v4 = c.admit(&l, 0, ip("198.51.100.1")).unwrap();
        let _m = c.admit(&l, 0, ip("::ffff:198.51.100.1")).unwrap();
        assert_eq!(c.check(&l, 0, ip("198.51.100.1")), Err(Refusal::Client));
    }

    #[test]
    fn no_limits_admit_everything() {
        let c = ConnCounts::default();
        let l = Limits { max_connections_per_client: 0, ..Limits::default() };
        let slots: Vec<_> = (0..1000).map(|i| c.admit(&l, i, A).unwrap()).collect();
        assert_eq!(c.total(), 1000);
        slots.into_iter().for_each(|s| c.release(s));
        assert_eq!(c.total(), 0);
        assert!(c.per_client.iter().all(|m| m.lock().unwrap().is_empty()), "released clients are forgotten");
    }

    #[test]
    fn each_limit_refuses_with_its_reason_and_frees_on_release() {
        let c = ConnCounts::default();
        let l = Limits {
            max_connections: Some(5),
            max_connections_per_worker: 4,
            max_connections_per_client: 3,
            memory: None,
        };
        let a: Vec<_> = (0..3).map(|i| c.admit(&l, i, A).unwrap()).collect();
        assert_eq!(c.check(&l, 0, A), Err(Refusal::Client));
        assert_eq!(c.admit(&l, 0, A), Err(Refusal::Client));
        assert_eq!(c.total(), 3, "a refusal takes no place");
        assert_eq!(c.admit(&l, 4, B), Err(Refusal::Worker));
        let b1 = c.admit(&l, 0, B).unwrap();
        let b2 = c.admit(&l, 0, B).unwrap();
        assert_eq!(c.check(&l, 0, B), Err(Refusal::Total));
        assert_eq!(c.admit(&l, 0, B), Err(Refusal::Total));
        c.release(b1);
        assert_eq!(c.check(&l, 0, B), Ok(()));
        c.release(b2);
        a.into_iter().for_each(|s| c.release(s));
        assert_eq!(c.total(), 0);
        assert!(c.admit(&l, 0, A).is_ok());
    }

    #[test]
    fn past_the_memory_limit_new_connections_are_refused() {
        let c = ConnCounts::default();
        let l = Limits { memory: Some(1 << 20), ..Limits::default() };
        let a = c.admit(&l, 0, A).unwrap();
        c.charge(0, 600 << 10);
        c.charge(1, 300 << 10);
        assert_eq!(c.charged(), 900 << 10);
        assert!(c.check(&l, 0, B).is_ok());
        c.charge(1, 500 << 10);
        assert_eq!(c.check(&l, 0, B), Err(Refusal::Memory));
        assert_eq!(c.admit(&l, 0, B), Err(Refusal::Memory));
        // Open connections are untouched; once the workers hold less, new ones come in again.
        c.charge(0, 0);
        assert!(c.admit(&l, 0, B).is_ok());
        c.release(a);
        // 0: no memory limit.
        c.charge(0, u64::MAX / 2);
        assert!(c.check(&Limits { memory: Some(0), ..l }, 0, B).is_ok());
    }

    #[test]
    fn defaults_follow_the_memory_sluice_may_use() {
        use crate::config::{BUSY_CONNECTION_BYTES, Limits};
        let r = Limits::default().resolved(8 << 30);
        assert_eq!(r.memory, Some(4 << 30), "half of what is available");
        assert_eq!(r.max_connections, Some((4 << 30) / BUSY_CONNECTION_BYTES));
        assert_eq!(r.max_connections_per_client, 1024);
        let set = Limits { memory: Some(0), max_connections: Some(7), ..Limits::default() }.resolved(8 << 30);
        assert_eq!((set.memory, set.max_connections), (Some(0), Some(7)), "what the operator set stays");
        assert_eq!(Limits { memory: Some(0), ..Limits::default() }.resolved(8 << 30).max_connections, Some(0));
        let m = memory_available();
        assert!(m > 64 << 20 && m < u64::MAX, "{m}");
        // The TCP table per worker follows the same budget unless set.
        let tcp = crate::config::Tcp::default();
        assert_eq!(tcp.table_size(4 << 30, 2), (4 << 30) / crate::config::CONNECTION_BYTES as usize / 2);
        assert_eq!(tcp.table_size(1 << 20, 2), 1024, "never below 1,024");
        assert_eq!(tcp.table_size(0, 2), 65_536, "no memory limit");
        assert_eq!(crate::config::Tcp { max_connections: 300, ..tcp }.table_size(4 << 30, 2), 300);
    }

    #[test]
    fn memory_is_bytes_or_a_string_with_a_unit() {
        use crate::config::parse_bytes;
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("4 GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("12 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999TiB").unwrap_err().contains("too large"));
        let l: Limits = toml::from_str("memory = \"64MiB\"\nmax_connections = 10").unwrap();
        assert_eq!((l.memory, l.max_connections, l.max_connections_per_client), (Some(64 << 20), Some(10), 1024));
        let l: Limits = toml::from_str("memory = 0").unwrap();
        assert_eq!(l.memory, Some(0));
    }

    #[test]
    fn racing_workers_never_pass_the_total() {
        let c = std::sync::Arc::new(ConnCounts::default());
        let l = Limits { max_connections: Some(100), ..Limits::default() };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || (0..1000).filter(|_| c.admit(&l, 0, A).is_ok()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 100);
        assert_eq!(c.total(), 100);
    }
}
