//! Configuration, counters, events and errors shared by `connection` and `endpoint`.

use crate::congestion::Algorithm;
use crate::isn::SipHasher24;
use crate::time::Instant;
use core::net::SocketAddr;
use core::time::Duration;
use sluice_wire::ip::{self, Version};

/// Keepalive (RFC 9293 3.8.4 / RFC 1122 4.2.3.6): off unless configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub probes: u32,
}

/// Endpoint configuration. Every field has a default; see `Config::default`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Link MTU; our advertised MSS is `mtu - 40` over IPv4, `mtu - 60` over IPv6 (see
    /// [`Config::mss`]).
    pub mtu: usize,
    /// Receive buffer (and so the largest receive window) per connection, bytes.
    pub recv_buffer: usize,
    /// Send buffer per connection, bytes.
    pub send_buffer: usize,
    /// Offer window scaling (RFC 7323 section 2).
    pub window_scale: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Offer timestamps (RFC 7323 sections 3-5).
    pub timestamps: bool,
    /// Half-open connections per listener before SYN cookies (or drops) begin.
    pub syn_queue_len: usize,
    /// Most TCBs at once (every state); beyond it SYNs and cookie ACKs are dropped
    /// (`DropReason::SynQueueFull`) and `connect` fails. Bounds memory: each TCB holds
    /// `recv_buffer + send_buffer` bytes.
    pub max_connections: usize,
    /// Answer SYNs with SYN cookies when the SYN queue is full.
    pub syn_cookies: bool,
    /// TIME-WAIT duration (2 * MSL; RFC 9293 says 2 * 2 min, Linux uses 60 s).
    pub time_wait: Duration,
    /// Give up on a handshake after this long.
    pub handshake_timeout: Duration,
    /// Drop a synchronized connection after this long without receiving anything (None: never).
    pub idle_timeout: Option<Duration>,
    /// Drop a connection idle this long in FIN-WAIT-2 (our FIN acknowledged, the peer silent),
    /// with a RST, as Linux's `tcp_fin_timeout` does for orphaned sockets; a peer that keeps
    /// sending (half-close) keeps it alive. None (the default): wait forever, because a live
    /// half-closed peer under heavy loss can be silent for longer than any fixed bound (RTO
    /// backoff reaches 60 s); a relay whose application has finished with the connection
    /// should set it (or `idle_timeout`) so that a vanished peer cannot pin a TCB.
    pub fin_wait_2_timeout: Option<Duration>,
    /// Drop a connection, with a RST, when its data has waited this long without any of it
    /// being acknowledged: sent and unacknowledged, or held behind a zero window that did not
    /// open, whatever else the peer sends (its answers to zero-window probes included). Linux's
    /// `TCP_USER_TIMEOUT` (RFC 5482). None (the default): the retransmission limit alone, and a
    /// peer that keeps answering probes with a zero window is kept forever.
    pub user_timeout: Option<Duration>,
    /// Keepalive probes (None: off).
    pub keepalive: Option<Keepalive>,
    /// Delayed-ACK timer (RFC 9293 3.8.6.3: less than 0.5 s; RFC 5681 4.2: at most every
    /// second full-sized segment without delay).
    pub delayed_ack: Duration,
    /// Initial RTO (RFC 6298 2.1: 1 s).
    pub initial_rto: Duration,
    /// RTO lower bound (RFC 6298 2.4 says 1 s; Linux uses 200 ms).
    pub min_rto: Duration,
    /// RTO upper bound (RFC 6298 2.5: at least 60 s).
    pub max_rto: Duration,
    /// Consecutive retransmission timeouts before the connection is dropped.
    pub max_retransmits: u32,
    /// Loss probes after RFC 8985 (RACK-TLP; see the `rack` module) on SACK connections:
    /// a lost retransmission or a tail loss is repaired after about 2 * SRTT instead of an
    /// RTO. Off: RFC 6675 and RFC 6298 only.
    pub loss_probes: bool,
    /// Challenge ACKs per second, endpoint-wide, on average (RFC 5961 section 7): each second's
    /// budget is drawn at random from `[limit / 2, limit * 3 / 2)` (as Linux since 4.7), and a
    /// connection answers at most one challenge per `invalid_ack_interval`.
    pub challenge_ack_limit: u32,
    /// RSTs per second for segments of unknown flows, endpoint-wide.
    pub rst_limit: u32,
    /// At most one ACK per connection in this interval in answer to segments that fail the
    /// acceptability test or PAWS (Linux's `tcp_invalid_ratelimit`, 500 ms): a flood of
    /// out-of-window segments cannot turn a connection into an ACK reflector.
    pub invalid_ack_interval: Duration,
    /// Congestion control algorithm.
    pub congestion: Algorithm,
    /// Secret for ISNs (RFC 6528), SYN cookies and timestamp offsets. Random in production,
    /// fixed in tests.
    pub secret: [u8; 16],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mtu: 1500,
            recv_buffer: 256 * 1024,
            send_buffer: 256 * 1024,
            window_scale: true,
            sack: true,
            timestamps: true,
            syn_queue_len: 1024,
            max_connections: 65_536,
            syn_cookies: true,
            time_wait: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(75),
            idle_timeout: None,
            fin_wait_2_timeout: None,
            user_timeout: None,
            keepalive: None,
            delayed_ack: Duration::from_millis(40),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            max_retransmits: 15,
            loss_probes: true,
            challenge_ack_limit: 1000,
            rst_limit: 1000,
            invalid_ack_interval: Duration::from_millis(500),
            congestion: Algorithm::Cubic,
            secret: [0; 16],
        }
    }
}

impl Config {
    /// Our MSS over IP `version`: the MTU minus the IP and TCP base headers (RFC 9293 3.7.1:
    /// 40 bytes for IPv4; RFC 8200 / RFC 9293 3.7.1: 60 for IPv6).
    #[must_use]
    pub fn mss(&self, version: Version) -> usize {
        self.mtu.saturating_sub(version.header_len() + TCP_HEADER_LEN).clamp(64, 65_495)
    }
    /// The window-scale shift we offer: the smallest that lets the receive buffer be advertised.
    #[must_use]
    pub fn rcv_wscale(&self) -> u8 {
        let mut s = 0u8;
        while s < 14 && (self.recv_buffer >> s) > 65_535 {
            s += 1;
        }
        s
    }
}

/// The TCP base header, which the MSS does not count (RFC 9293 3.7.1).
const TCP_HEADER_LEN: usize = sluice_wire::tcp::HEADER_LEN;

/// A connection's 4-tuple. Both ends are of one address family: the endpoint only builds
/// tuples from one IP header or from a `connect` it checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl FourTuple {
    /// The IP version of the connection.
    #[must_use]
    pub const fn version(&self) -> Version {
        Version::of(&self.local.ip())
    }

    /// The IP header of a segment we send on this connection carrying `payload_len` bytes of
    /// TCP (hop limit 64); `None` if the ends are of two families (never, see above).
    #[must_use]
    pub fn ip_repr(&self, payload_len: usize) -> Option<ip::Repr> {
        ip::Repr::new(self.local.ip(), self.remote.ip(), ip::Protocol::Tcp, payload_len, 64).ok()
    }
}

/// An opaque reference to a connection of an `Endpoint`. Stale handles are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// What happened to a connection; drained with `Endpoint::poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed (a passive connection appears with this event).
    Established,
    /// In-order bytes can be read. Edge-triggered: raised when bytes arrive in an empty
    /// receive buffer; after it, call `recv` until it returns `Ok(0)`.
    Readable,
    /// Send buffer space freed after a short `send`.
    Writable,
    /// The peer's FIN arrived (after all its data): `recv` returns `Finished` once drained.
    PeerClosed,
    /// The peer reset the connection.
    Reset,
    /// A handshake, retransmission, keepalive or idle timeout dropped the connection.
    TimedOut,
    /// The TCB was freed; the handle is now invalid. Always the last event of a handle.
    Closed,
}

/// Why a segment was dropped (counted in `Stats::drops`, never an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Fails the RFC 9293 3.10.7.4 acceptability test.
    InvalidSequence,
    /// PAWS (RFC 7323 5.3): an old timestamp.
    Paws,
    /// No connection and no listener.
    NoListener,
    /// An unacceptable acknowledgment number.
    BadAck,
    /// A synchronized-state segment without ACK.
    NoAck,
    /// A RST that did not exactly match RCV.NXT (challenge ACK sent instead, RFC 5961 3.2).
    RstOutOfWindow,
    /// A SYN in a synchronized state (challenge ACK sent, RFC 5961 4.2).
    SynInWindow,
    /// SYN queue full and cookies off, or `max_connections` reached.
    SynQueueFull,
    /// A final ACK whose SYN cookie did not validate.
    BadCookie,
    /// A bare ACK to a listener that sent no SYN cookie in the last two cookie periods: not
    /// checked as a cookie at all (Linux's `tcp_synq_no_recent_overflow`), answered as LISTEN
    /// answers any ACK (a rate-limited RST). A spoofed-ACK flood cannot guess cookies then.
    CookieNotRecent,
    /// Reassembly would need too many holes.
    ReassemblyFull,
    /// Segment flags make no sense here (e.g. SYN+RST to a listener, no flags at all).
    BadFlags,
    /// Data after our receive side was closed by the peer's FIN.
    AfterFin,
}

impl DropReason {
    pub const COUNT: usize = 13;
    /// Every reason, in `repr` order (`ALL[r as usize] == r`).
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::InvalidSequence,
        DropReason::Paws,
        DropReason::NoListener,
        DropReason::BadAck,
        DropReason::NoAck,
        DropReason::RstOutOfWindow,
        DropReason::SynInWindow,
        DropReason::SynQueueFull,
        DropReason::BadCookie,
        DropReason::CookieNotRecent,
        DropReason::ReassemblyFull,
        DropReason::BadFlags,
        DropReason::AfterFin,
    ];

    /// The reason's snake_case name (the key in counters exported by the proxy).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::InvalidSequence => "invalid_sequence",
            DropReason::Paws => "paws",
            DropReason::NoListener => "no_listener",
            DropReason::BadAck => "bad_ack",
            DropReason::NoAck => "no_ack",
            DropReason::RstOutOfWindow => "rst_out_of_window",
            DropReason::SynInWindow => "syn_in_window",
            DropReason::SynQueueFull => "syn_queue_full",
            DropReason::BadCookie => "bad_cookie",
            DropReason::CookieNotRecent => "cookie_not_recent",
            DropReason::ReassemblyFull => "reassembly_full",
            DropReason::BadFlags => "bad_flags",
            DropReason::AfterFin => "after_fin",
        }
    }
}

/// Declares `Stats` and `Stats::iter` from one list of counters, so a counter and its name
/// cannot drift apart.
macro_rules! stats {
    ($($f:ident),* $(,)?) => {
        /// Endpoint counters.
        #[derive(Debug, Clone, Default)]
        pub struct Stats {
            $(pub $f: u64,)*
            /// Indexed by `DropReason as usize`.
            pub drops: [u64; DropReason::COUNT],
        }

        impl Stats {
            /// Every scalar counter with its snake_case name (the field's), in declaration
            /// order. Drops are apart: `drops_iter`, `DropReason::ALL`, `DropReason::name`.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($f), self.$f)),*].into_iter()
            }
        }
    };
}

stats!(
    segments_in,
    segments_out,
    bytes_in,
    bytes_out,
    retransmits_rto,
    retransmits_fast,
    retransmits_sack,
    retransmits_rack,
    retransmits_tlp,
    dup_acks,
    syn_cookies_sent,
    syn_cookies_validated,
    xdp_cookie_acks,
    challenge_acks,
    rsts_sent,
    rsts_received,
    rsts_rate_limited,
    zero_window_probes,
    keepalives_sent,
    sack_blocks_sent,
    sack_blocks_received,
    negotiated_wscale,
    negotiated_sack,
    negotiated_timestamps,
    connections_opened,
    connections_closed,
    timeouts,
    user_timeouts,
    invalid_acks_limited,
    challenge_acks_limited,
    time_wait_recycled,
);

impl Stats {
    /// Drops by reason, with the reason's name.
    pub fn drops_iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (r.name(), self.drops[*r as usize]))
    }

    pub(crate) fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
    /// Drops for one reason.
    #[must_use]
    pub fn drops_for(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

/// Errors of `Endpoint::listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    #[error("already listening on this address")]
    AddrInUse,
    #[error("port 0 cannot be listened on")]
    InvalidPort,
}

/// Why a path-MTU message was not acted on (`Endpoint::path_mtu`); the caller counts it as
/// ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathMtuIgnored {
    /// No connection has this 4-tuple.
    #[error("no connection with the quoted 4-tuple")]
    NoConnection,
    /// The quoted sequence number is not in flight (RFC 5927 4.1: SND.UNA <= seq < SND.NXT),
    /// or the connection sends nothing (handshake, closed).
    #[error("the quoted sequence number is not in flight")]
    NotInFlight,
    /// The MTU does not lower the connection's segment size (it is at the minimum or smaller
    /// already).
    #[error("the MTU does not lower the segment size")]
    NotSmaller,
}

/// Errors of `Endpoint::connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("a connection with this 4-tuple exists")]
    AddrInUse,
    #[error("port 0 or unspecified address")]
    InvalidAddress,
    #[error("the endpoint holds `max_connections` connections")]
    TooManyConnections,
}

/// Errors of `Endpoint::send` / `Endpoint::recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("no such connection (closed or stale handle)")]
    InvalidHandle,
    #[error("the sending side is closed")]
    Closed,
    #[error("the peer finished sending and every byte was read")]
    Finished,
}

/// A token bucket: `rate` events per second, burst `rate`. With a `jitter` key, each second's
/// budget is drawn at random from `[rate / 2, rate * 3 / 2)` instead (as Linux's challenge-ACK
/// budget since 4.7, the fix for CVE-2016-5696): an off-path attacker who counts the answers to
/// its probes cannot tell which of them spent the budget, so cannot learn that a 4-tuple exists.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: u32,
    tokens: u32,
    refill_at: Instant,
    jitter: Option<(SipHasher24, u64)>,
}

impl RateLimiter {
    #[must_use]
    pub fn new(rate: u32, now: Instant) -> Self {
        RateLimiter { rate, tokens: rate, refill_at: now, jitter: None }
    }
    /// A budget randomized every second from `secret` (per boot in production).
    pub(crate) fn randomized(rate: u32, now: Instant, secret: [u8; 16]) -> Self {
        let mut key = secret;
        key[0] ^= 0xc5; // not the ISN's or the cookies' key
        RateLimiter { rate, tokens: 0, refill_at: now, jitter: Some((SipHasher24::new(key), 0)) }
    }
    /// Whether one more event may happen at `now` (and it is counted).
    pub fn allow(&mut self, now: Instant) -> bool {
        if now >= self.refill_at {
            self.tokens = match &mut self.jitter {
                None => self.rate,
                Some((hasher, epoch)) => {
                    *epoch += 1;
                    let r = hasher.hash(&epoch.to_le_bytes());
                    let half = self.rate / 2;
                    half + (r % u64::from(self.rate.max(1))) as u32
                }
            };
            self.refill_at = now + Duration::from_secs(1);
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DropReason, Stats};

    #[test]
    fn drop_reasons_all_in_repr_order_with_unique_snake_case_names() {
        let mut names = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            let n = r.name();
            assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{n}");
            assert!(names.insert(n), "duplicate {n}");
        }
        assert_eq!(DropReason::Paws.name(), "paws");
    }

    #[test]
    fn stats_iter_names_every_counter() {
        let mut s = Stats { segments_in: 1, timeouts: 2, retransmits_sack: 3, ..Stats::default() };
        s.drop(DropReason::AfterFin);
        let v: Vec<_> = s.iter().collect();
        assert_eq!(v.len(), 31);
        assert_eq!(v[0], ("segments_in", 1));
        assert_eq!(v.last(), Some(&("time_wait_recycled", 0)));
        assert!(v.contains(&("retransmits_sack", 3)));
        assert_eq!(v.iter().map(|(_, c)| c).sum::<u64>(), 6);
        let d: Vec<_> = s.drops_iter().filter(|(_, c)| *c > 0).collect();
        assert_eq!(d, [("after_fin", 1)]);
    }
}
