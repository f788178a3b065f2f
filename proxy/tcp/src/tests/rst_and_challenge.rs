//! Tests for RST and SYN in a synchronized state and for ACKs far out of range, hardened by
//! RFC 5961: only a RST at exactly RCV.NXT resets (3.2), any other in the window, a SYN (4.2)
//! or an ACK older than MAX.SND.WND (5.2) gets a rate-limited challenge ACK.

use super::*;

#[test]
fn established_rst_exact_resets() {
    let mut t = established();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 1);
    assert_eq!(t.events(), vec![Event::Reset, Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    recv_nothing!(t);
}

#[test]
fn established_rst_in_window_gets_challenge_ack() {
    let mut t = established();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 500);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(t.state(), Some(State::Established));
    assert_eq!(t.ep.stats().challenge_acks, 1);
    // Outside the window: dropped without an answer.
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 10_000_000);
    recv_nothing!(t);
    assert_eq!(t.drops(DropReason::InvalidSequence), 1);
}

#[test]
fn established_syn_gets_challenge_ack_rate_limited() {
    let mut t = established_with(Config { challenge_ack_limit: 2, ..config() });
    for _ in 0..5 {
        send!(t, flags: Flags::SYN, seq_number: REMOTE_SEQ + 1);
        let _ = t.recv_all();
    }
    assert_eq!(t.ep.stats().challenge_acks, 2);
    assert_eq!(t.drops(DropReason::SynInWindow), 5);
    assert_eq!(t.state(), Some(State::Established));
}

#[test]
fn established_ancient_ack_gets_challenge() {
    let mut t = established();
    let a = t.iss.wrapping_sub(200_000);
    send!(t, ack_number: a);
    recv!(t, flags: Flags::ACK);
    assert_eq!(t.ep.stats().challenge_acks, 1);
}
