//! Tests for the SYN-RECEIVED state (RFC 9293 3.10.7.4 on a passive open): the final ACK, a
//! bad ACK, RST, a repeated SYN, SYN-ACK retransmission and the handshake timeout, CLOSE.

use super::*;

#[test]
fn ack_establishes() {
    let mut t = syn_received();
    assert!(t.events().is_empty(), "a half-open connection is not announced");
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    assert_eq!(t.state(), Some(State::Established));
    assert_eq!(t.events(), vec![Event::Established]);
}

#[test]
fn bad_ack_gets_rst() {
    let mut t = syn_received();
    let bad = t.iss1() + 100;
    send!(t, ack_number: bad);
    recv!(t, flags: Flags::RST, seq: bad);
    assert_eq!(t.state(), Some(State::SynReceived));
    assert_eq!(t.drops(DropReason::BadAck), 1);
}

#[test]
fn rst_frees_quietly() {
    let mut t = syn_received();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 1);
    assert_eq!(t.ep.connection_count(), 0);
    assert!(t.events().is_empty());
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn retransmitted_syn_repeats_syn_ack() {
    let mut t = syn_received();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN);
    let iss = t.iss;
    recv!(t, flags: Flags::SYN | Flags::ACK, seq: iss, ack: REMOTE_SEQ + 1);
}

#[test]
fn syn_ack_retransmitted_with_backoff_then_times_out() {
    let mut t = syn_received_with(Config { handshake_timeout: Duration::from_secs(10), ..config() });
    let start = t.now;
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(1));
    recv!(t, flags: Flags::SYN | Flags::ACK);
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(3));
    recv!(t, flags: Flags::SYN | Flags::ACK);
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(7));
    recv!(t, flags: Flags::SYN | Flags::ACK);
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(10));
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.stats().timeouts, 1);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn close_sends_fin_after_establishment() {
    let mut t = syn_received();
    t.ep.close(t.h());
    recv_nothing!(t);
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    assert_eq!(t.state(), Some(State::FinWait1));
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1);
}
