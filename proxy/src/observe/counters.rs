//! The counters of one worker (either transport): what it received, sent, refused and dropped,
//! its connections and relays and how they ended. Written by the worker only, published to the
//! stats thread ([`crate::observe::stats::WorkerStats`]) with its TCP stack's counters.

use serde::Serialize;
use serde_json::{Map, Value};
use sluice_tcp::Stats;

/// Counters of one queue. Written by its worker only; published to [`SharedCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounters {
    pub queue: u32,
    /// Frames received from the RX ring.
    pub rx_frames: u64,
    /// Frames put on the TX ring.
    pub tx_frames: u64,
    /// RSTs sent by a refusing listener (or to a connection refused by a limit), and those not
    /// sent because this worker had sent `REFUSAL_RSTS_PER_SECOND` in the last second.
    pub rst_sent: u64,
    pub rst_refusal_limited: u64,
    /// Frames handed to the worker that owns their flow, in all and by reason: the flow's
    /// frames moved to this queue (the sender changed queue: RTO, RSS change), or a SYN found
    /// its flow claimed by another worker a moment earlier (a retransmitted SYN on two queues).
    pub handoff_out: u64,
    pub handoff_moved: u64,
    pub handoff_syn_race: u64,
    /// Frames received from other workers' hand-offs.
    pub handoff_in: u64,
    /// Hand-offs dropped because the owner's inbox was full.
    pub dropped_handoff_full: u64,
    /// Handed-over frames whose flow changed owner meanwhile (never handed on twice).
    pub dropped_handoff_stale: u64,
    /// SYNs dropped because the flow index was full.
    pub dropped_flow_index_full: u64,
    /// A connection rebuilt from a SYN cookie whose flow another worker opened at the same
    /// moment (a duplicated ACK on two queues): reset, never owned twice.
    pub flow_claim_conflicts: u64,
    /// Frames whose headers did not parse (truncated, bad lengths, options past the header).
    pub dropped_malformed: u64,
    /// Frames with a wrong IPv4 or TCP checksum.
    pub dropped_checksum: u64,
    /// IPv4 fragments, non-IPv4 or non-TCP frames (the XDP program passes those to the kernel).
    pub dropped_unsupported: u64,
    /// TCP segments for an address that is not a listener here.
    pub dropped_no_listener: u64,
    /// Segments from a source no peer can have (broadcast, multicast, unspecified, loopback,
    /// IPv4-mapped, sluice's own address): never answered.
    pub dropped_bad_source: u64,
    /// Incoming RSTs to a refusing listener (nothing to answer).
    pub dropped_rst: u64,
    /// Outgoing frames that found no free frame or no room on the TX ring.
    pub dropped_tx_full: u64,
    /// Outgoing segments whose next hop the kernel did not resolve in time (or too many were
    /// waiting), and those to a destination without a route through sluice's interface.
    pub dropped_no_neighbor: u64,
    pub dropped_no_route: u64,
    /// Outgoing segments held while the kernel resolved their next hop, those sent once it had,
    /// and how many wait now.
    pub nexthop_held: u64,
    pub nexthop_released: u64,
    pub nexthop_waiting_now: u64,
    /// The worker's copy of the kernel's routing and neighbour tables (rtnetlink): routes and
    /// usable neighbours stored now, resolutions triggered (and refused by the rate limit or the
    /// kernel), full re-reads after lost notifications, entries not stored past the bounds,
    /// messages that made no sense, and netlink errors.
    pub nexthop_routes_now: u64,
    pub nexthop_neighbours_now: u64,
    pub nexthop_triggers: u64,
    pub nexthop_triggers_limited: u64,
    pub nexthop_trigger_errors: u64,
    pub nexthop_redumps: u64,
    pub nexthop_overflow: u64,
    pub nexthop_malformed: u64,
    pub nexthop_netlink_errors: u64,
    /// ICMP fragmentation-needed / ICMPv6 packet-too-big messages that lowered a connection's
    /// segment size, and those ignored (no such connection, the quoted sequence number not in
    /// flight, or not a smaller MTU: RFC 5927 4.1).
    pub path_mtu_lowered: u64,
    pub path_mtu_ignored: u64,
    /// Connections established / closed (TCB freed) on this worker.
    pub connections_established: u64,
    pub connections_closed: u64,
    /// Connections open now (all states).
    pub connections_open: u64,
    /// Connections open now, TIME-WAIT not counted (what a drain waits for), and whether the
    /// worker took the drain order (1) or not (0).
    pub connections_active: u64,
    pub draining: u64,
    /// Connections refused with a RST because a `[limits]` limit was reached: over all
    /// workers, on this worker, from one client address, the connections' memory.
    pub refused_limit_total: u64,
    pub refused_limit_worker: u64,
    pub refused_limit_client: u64,
    pub refused_limit_memory: u64,
    /// What this worker's connections hold (bytes, reported once a second; `limits.memory`),
    /// and the bytes of buffer storage given back while past that limit (each buffer cut to
    /// what it holds: storage grows by doubling and otherwise stays until the buffer empties).
    pub memory_charged_now: u64,
    pub memory_shrunk_bytes: u64,
    /// Connections refused because the worker holds as many relays (each a backend socket) as
    /// its share of the process's descriptors allows (`RLIMIT_NOFILE`).
    pub refused_descriptors: u64,
    /// Kernel transport: times `accept` failed (EMFILE, ENFILE, ENOBUFS, ENOMEM) and the worker
    /// stopped accepting for a back-off (100 ms doubling to 1 s) instead of spinning.
    pub accept_backoffs: u64,
    /// Bytes echoed by echo listeners.
    pub echo_bytes: u64,
    /// Relays to backends: opened, open now, and how they ended.
    pub relays_opened: u64,
    pub relays_open: u64,
    pub relays_clean: u64,
    pub relays_backend_failed: u64,
    pub relays_backend_timeout: u64,
    pub relays_client_gone: u64,
    /// Relays through which no byte moved for `relay.idle_timeout_ms`: both ends reset.
    pub relays_idle_timeout: u64,
    /// Backend connects that failed before any byte went through and were retried elsewhere.
    pub backend_retries: u64,
    /// Relayed bytes (plaintext, with TLS).
    pub relay_bytes_to_backend: u64,
    pub relay_bytes_to_client: u64,
    /// TLS handshakes completed, full and resumed; connections ended by a TLS error (alert sent).
    pub tls_handshakes_full: u64,
    pub tls_handshakes_resumed: u64,
    pub tls_failed: u64,
    /// Clients closed for not completing the TLS handshake within `relay.tls_handshake_timeout_ms`.
    pub tls_handshake_timeouts: u64,
    /// Of `tls_failed`: clients whose handshake was larger than `relay.tls_max_handshake_bytes`
    /// or than rustls holds (a handshake message over 0xffff bytes with its records); each got
    /// a `decode_error` alert.
    pub tls_handshake_too_large: u64,
    /// A fleet's session store (`[session_store]`), kept by the worker's `Fleet`: its fields
    /// (`session_store_*`) sit among these.
    #[serde(flatten)]
    pub session_store: crate::session::fleet::FleetCounters,
    /// Loop iterations that slept in poll.
    pub idle_sleeps: u64,
    /// UMEM frames on the free list and in total.
    pub umem_frames_free: u64,
    pub umem_frames_total: u64,
    /// The AF_XDP socket's own counters: replies refused for a full TX ring or no free frame,
    /// fill-ring refills short of frames, descriptors the kernel got wrong.
    pub xsk_tx_ring_full: u64,
    pub xsk_tx_no_frame: u64,
    pub xsk_fill_starved: u64,
    pub xsk_invalid_descs: u64,
    /// XDP transport: times the worker found its interface down (a TX wakeup failed with
    /// ENETDOWN; once per outage), and the sleeps it took while waiting for it.
    pub xsk_link_down: u64,
    pub xsk_link_down_sleeps: u64,
    /// The kernel's counters for the socket (XDP_STATISTICS): frames it dropped because the RX
    /// ring was full or the fill ring empty (the worker did not keep up).
    pub kernel_rx_dropped: u64,
    pub kernel_rx_ring_full: u64,
    pub kernel_rx_fill_ring_empty: u64,
    pub kernel_rx_invalid_descs: u64,
    pub kernel_tx_invalid_descs: u64,
}

/// What a worker publishes for the admin endpoint: its counters and its TCP stack's (see
/// [`crate::observe::stats::WorkerStats::publish`]; latencies go by `send_interval`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    #[serde(flatten)]
    pub queue: QueueCounters,
    #[serde(serialize_with = "serialize_tcp")]
    pub tcp: sluice_tcp::Stats,
    /// Latency values recorded but not yet in the exported histograms (0: they are complete).
    pub latency_pending: u64,
}

/// The TCP stack's counters of one worker: every counter at the top level, drops in `drops`
/// keyed by reason. Names come from `Stats::iter` and `DropReason::name`.
pub fn tcp_json(s: &Stats) -> Value {
    let drops: Map<String, Value> = s.drops_iter().map(|(n, v)| (n.to_owned(), v.into())).collect();
    let mut m: Map<String, Value> = s.iter().map(|(n, v)| (n.to_owned(), v.into())).collect();
    m.insert("drops".to_owned(), Value::Object(drops));
    Value::Object(m)
}

/// `serialize_with` for a worker's TCP counters: [`tcp_json`].
pub fn serialize_tcp<S: serde::Serializer>(s: &Stats, ser: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&tcp_json(s), ser)
}
