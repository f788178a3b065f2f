//! Tests for the keepalive (RFC 9293 3.8.4) and idle timers. The retransmission and persist
//! timers are in `retransmission` and `window`, the handshake and TIME-WAIT ones with their
//! states.

use super::*;

#[test]
fn keepalive_probes_then_times_out() {
    let ka = Keepalive { idle: Duration::from_secs(10), interval: Duration::from_secs(2), probes: 2 };
    let mut t = established_with(Config { keepalive: Some(ka), ..config() });
    let start = t.now;
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(10));
    let iss1 = t.iss1();
    recv!(t, flags: Flags::ACK, seq: iss1.wrapping_sub(1));
    t.fire();
    recv!(t, seq: iss1.wrapping_sub(1));
    t.fire();
    recv!(t, flags: Flags::RST | Flags::ACK);
    assert_eq!(t.events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(t.ep.stats().keepalives_sent, 2);
}

#[test]
fn keepalive_answer_resets_probes() {
    let ka = Keepalive { idle: Duration::from_secs(10), interval: Duration::from_secs(2), probes: 1 };
    let mut t = established_with(Config { keepalive: Some(ka), ..config() });
    t.fire();
    recv!(t);
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    t.fire();
    recv!(t, flags: Flags::ACK);
    assert_eq!(t.state(), Some(State::Established));
}

#[test]
fn idle_timeout_resets() {
    let mut t = established_with(Config { idle_timeout: Some(Duration::from_secs(30)), ..config() });
    t.advance(Duration::from_secs(20));
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, payload: b"x");
    t.advance(Duration::from_secs(20));
    assert_eq!(t.state(), Some(State::Established));
    t.fire();
    t.recv_all();
    assert!(t.events().contains(&Event::TimedOut));
    assert_eq!(t.ep.connection_count(), 0);
}
