//! One store node's connection life: connect, work, break, back off, connect again.
//!
//! What it is: [`Link`] joins a [`Client`] and a [`Backoff`] into the small state machine a
//! worker runs per node: `Idle` (connect when asked) -> `Connecting` (the caller's non-blocking
//! connect is under way, bounded by `connect_timeout`) -> `Up` -> on any failure `Waiting`
//! until the back-off delay has passed -> `Idle`. The back-off resets once a connection has
//! proved itself (its `AUTH`, or its first reply, came back good). Sans-IO like the rest: the
//! caller opens and closes the socket when [`Link::poll_connect`] and the `on_*` calls say so.
//!
//! What it is not: the socket, nor the choice of node ([`crate::rendezvous`]; feed it
//! [`Link::is_up`]).

use std::time::{Duration, Instant};

use crate::resp::{Backoff, Client, ClientConfig, ConnError};

/// Where the link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No socket; connect at the next [`Link::poll_connect`].
    Idle,
    /// The caller's connect is under way since this instant.
    Connecting(Instant),
    /// Connected: requests go to [`Link::client`].
    Up,
    /// Broken; no new connect before this instant.
    Waiting(Instant),
}

/// One node's connection, its client and its back-off.
#[derive(Debug)]
pub struct Link {
    client: Client,
    backoff: Backoff,
    state: LinkState,
    connect_timeout: Duration,
    /// Connections that failed or broke, for the caller's counters.
    failures: u64,
}

impl Link {
    /// A link that will connect at once; `connect_timeout` bounds each connect.
    pub fn new(config: ClientConfig, backoff: Backoff, connect_timeout: Duration) -> Self {
        Self { client: Client::new(config), backoff, state: LinkState::Idle, connect_timeout, failures: 0 }
    }

    /// The Redis client (submit requests, move bytes, take completions).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Where the link is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Connected and accepting requests.
    pub fn is_up(&self) -> bool {
        self.state == LinkState::Up
    }

    /// Connections that failed or broke so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// `true`: start a non-blocking connect now (the link is then `Connecting`).
    pub fn poll_connect(&mut self, now: Instant) -> bool {
        match self.state {
            LinkState::Waiting(until) if now >= until => self.state = LinkState::Idle,
            _ => {}
        }
        if self.state == LinkState::Idle {
            self.state = LinkState::Connecting(now);
            return true;
        }
        false
    }

    /// The caller's connect completed.
    pub fn on_connected(&mut self, now: Instant) {
        if matches!(self.state, LinkState::Connecting(_)) {
            self.state = LinkState::Up;
            self.client.on_connected(now);
        }
    }

    /// The caller's connect failed, or its socket closed or failed: the caller has closed the
    /// socket; pending requests fail and the link waits out a back-off.
    pub fn on_closed(&mut self, now: Instant) {
        self.client.connection_lost();
        self.broken(now);
    }

    /// Feeds bytes read from the socket. On `Err` the caller closes the socket (the link is
    /// already waiting out its back-off).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ConnError> {
        let r = self.client.handle_input(now, bytes);
        self.after(now, r)
    }

    /// Runs timers: request timeouts, the stall check, the connect timeout, the end of a
    /// back-off. On `Err` the caller closes the socket.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        if let LinkState::Connecting(since) = self.state
            && now.saturating_duration_since(since) >= self.connect_timeout
        {
            self.on_closed(now);
            return Err(ConnError::Closed);
        }
        let r = self.client.handle_timeout(now);
        self.after(now, r)
    }

    /// When [`Link::handle_timeout`] (or [`Link::poll_connect`]) next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = match self.state {
            LinkState::Connecting(since) => Some(since + self.connect_timeout),
            LinkState::Waiting(until) => Some(until),
            LinkState::Idle | LinkState::Up => None,
        };
        [own, self.client.poll_timeout()].into_iter().flatten().min()
    }

    fn after(&mut self, now: Instant, r: Result<(), ConnError>) -> Result<(), ConnError> {
        match r {
            Ok(()) => {
                if self.state == LinkState::Up && self.client.is_authenticated() {
                    self.backoff.reset();
                }
                Ok(())
            }
            Err(e) => {
                self.broken(now);
                Err(e)
            }
        }
    }

    fn broken(&mut self, now: Instant) {
        if self.state != LinkState::Idle && !matches!(self.state, LinkState::Waiting(_)) {
            self.failures += 1;
            self.state = LinkState::Waiting(now + self.backoff.next_delay());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Auth, Completion, Refused, Reply, RequestError, Token};

    fn at(ms: u64) -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    fn link(auth: bool) -> Link {
        let cfg = ClientConfig {
            auth: auth.then(|| Auth { username: None, password: "pw".into() }),
            timeout: Duration::from_millis(5),
            stall_reset: Duration::from_millis(100),
            ..ClientConfig::default()
        };
        Link::new(cfg, Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 7), Duration::from_millis(50))
    }

    #[test]
    fn connect_work_break_back_off_reconnect() {
        let mut l = link(true);
        assert!(!l.is_up());
        assert_eq!(l.client().get(at(0), Token(1), b"k"), Err(Refused::Down));
        assert!(l.poll_connect(at(0)));
        assert!(!l.poll_connect(at(0)), "one connect at a time");
        assert_eq!(l.state(), LinkState::Connecting(at(0)));
        assert_eq!(l.poll_timeout(), Some(at(50)));
        l.on_connected(at(1));
        assert!(l.is_up());
        l.client().get(at(1), Token(2), b"k").unwrap();
        let out = l.client().pending_output().len();
        l.client().advance_output(out);
        l.handle_input(at(2), b"+OK\r\n$1\r\nv\r\n").unwrap();
        assert_eq!(
            l.client().poll_completion(),
            Some(Completion { token: Token(2), result: Ok(Reply::Value(b"v".to_vec())) })
        );
        // Garbage: broken, waiting out a back-off of 50..=100 ms.
        assert_eq!(l.handle_input(at(3), b"?"), Err(ConnError::Protocol));
        let LinkState::Waiting(until) = l.state() else { panic!("{:?}", l.state()) };
        assert!(until >= at(3 + 50) && until <= at(3 + 100), "{until:?}");
        assert_eq!(l.failures(), 1);
        assert!(!l.poll_connect(until - Duration::from_millis(1)));
        assert_eq!(l.poll_timeout(), Some(until));
        assert!(l.poll_connect(until));
    }

    #[test]
    fn back_off_grows_while_connects_fail_and_resets_after_a_good_auth() {
        let mut l = link(true);
        let mut now = at(0);
        let mut delays = Vec::new();
        for _ in 0..4 {
            assert!(l.poll_connect(now));
            l.on_closed(now); // connection refused
            let LinkState::Waiting(until) = l.state() else { panic!() };
            delays.push(until - now);
            now = until;
        }
        // Nominal 100, 200, 400, 800 ms, each jittered into its upper half.
        for (d, nominal) in delays.iter().zip([100u64, 200, 400, 800]) {
            assert!(*d >= Duration::from_millis(nominal / 2) && *d <= Duration::from_millis(nominal), "{delays:?}");
        }
        assert!(l.poll_connect(now));
        l.on_connected(now);
        // Connected but AUTH not yet answered: no reset yet.
        l.handle_timeout(now).unwrap();
        l.handle_input(now, b"+OK\r\n").unwrap();
        l.on_closed(now);
        let LinkState::Waiting(until) = l.state() else { panic!() };
        assert!(until - now <= Duration::from_millis(100), "reset after a good AUTH: {:?}", until - now);
    }

    #[test]
    fn a_connect_that_takes_too_long_fails() {
        let mut l = link(false);
        assert!(l.poll_connect(at(0)));
        l.handle_timeout(at(49)).unwrap();
        assert_eq!(l.handle_timeout(at(50)), Err(ConnError::Closed));
        assert!(matches!(l.state(), LinkState::Waiting(_)));
        // A late `on_connected` for the abandoned socket is ignored.
        l.on_connected(at(51));
        assert!(!l.is_up());
    }

    #[test]
    fn a_stalled_node_is_reset_and_its_requests_fail() {
        let mut l = link(false);
        assert!(l.poll_connect(at(0)));
        l.on_connected(at(0));
        l.client().get(at(0), Token(1), b"k").unwrap();
        l.handle_timeout(at(5)).unwrap();
        assert_eq!(l.client().poll_completion().unwrap().result, Err(RequestError::TimedOut));
        assert_eq!(l.handle_timeout(at(100)), Err(ConnError::Stalled));
        assert!(!l.is_up());
        assert_eq!(l.failures(), 1);
    }
}
