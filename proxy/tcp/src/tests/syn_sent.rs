//! Tests for the SYN-SENT state (RFC 9293 3.10.7.3): the SYN-ACK, bad ACKs, RST, simultaneous
//! open, SYN retransmission and the handshake timeout, CLOSE. The options of an active open are
//! in `options`.

use super::*;

#[test]
fn syn_ack_establishes() {
    let mut t = syn_sent();
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: iss1, max_seg_size: Some(1000));
    assert_eq!(t.state(), Some(State::Established));
    assert_eq!(t.events(), vec![Event::Established]);
    recv!(t, flags: Flags::ACK, seq: iss1, ack: REMOTE_SEQ + 1);
    // The peer's MSS bounds our segments.
    t.ep.send(t.h(), &[7u8; 3000]).unwrap();
    let o = recv!(t);
    assert_eq!(o.payload.len(), 1000);
}

#[test]
fn bad_ack_gets_rst() {
    let mut t = syn_sent();
    let bad = t.iss; // acks nothing new: SEG.ACK =< ISS
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: bad);
    recv!(t, flags: Flags::RST, seq: bad);
    assert_eq!(t.state(), Some(State::SynSent));
}

#[test]
fn rst_with_acceptable_ack_resets() {
    let mut t = syn_sent();
    send!(t, seq_number: 0, flags: Flags::RST, ack_number: 0);
    assert_eq!(t.state(), Some(State::SynSent), "a RST without ACK is dropped");
    let iss1 = t.iss1();
    send!(t, seq_number: 0, flags: Flags::RST | Flags::ACK, ack_number: iss1);
    assert_eq!(t.events(), vec![Event::Reset, Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn simultaneous_open() {
    let mut t = syn_sent();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, ack_number: 0);
    assert_eq!(t.state(), Some(State::SynReceived));
    let iss = t.iss;
    recv!(t, flags: Flags::SYN | Flags::ACK, seq: iss, ack: REMOTE_SEQ + 1);
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ + 1, flags: Flags::ACK, ack_number: iss1);
    assert_eq!(t.state(), Some(State::Established));
}

#[test]
fn retransmits_and_times_out() {
    let mut t = syn_sent_with(Config { handshake_timeout: Duration::from_secs(5), ..config() });
    let iss = t.iss;
    t.fire();
    recv!(t, flags: Flags::SYN, seq: iss);
    assert_eq!(t.ep.stats().retransmits_rto, 1);
    t.fire();
    recv!(t, flags: Flags::SYN, seq: iss);
    t.fire();
    assert_eq!(t.events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn close_deletes() {
    let mut t = syn_sent();
    t.ep.close(t.h());
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    recv_nothing!(t);
}
