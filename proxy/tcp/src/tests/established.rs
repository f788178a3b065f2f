//! Tests for the ESTABLISHED state: receiving (delayed ACKs per RFC 5681 4.2, out-of-order data
//! and SACK blocks per RFC 2018, bounded reassembly, edge-triggered readability), sending (no
//! Nagle), and the acceptability test of RFC 9293 3.10.7.4 with the ACK checks after it. RST,
//! SYN and challenge ACKs are in `rst_and_challenge`, windows in `window`, closing in `close`.

use super::*;

#[test]
fn receive_delayed_ack() {
    let mut t = established();
    send!(t, payload: b"hello");
    assert_eq!(t.events(), vec![Event::Readable]);
    // One small segment: the ACK is delayed.
    recv_nothing!(t);
    assert_eq!(t.read_all(), b"hello");
    t.fire();
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 6);
}

#[test]
fn ack_every_second_full_segment() {
    let mut t = established();
    let seg = [5u8; 1460];
    send!(t, payload: &seg);
    recv_nothing!(t);
    send!(t, seq_number: REMOTE_SEQ + 1 + 1460, payload: &seg);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1 + 2920);
}

#[test]
fn out_of_order_acks_at_once_with_sack() {
    let mut t = established();
    send!(t, seq_number: REMOTE_SEQ + 101, payload: &[2u8; 100]);
    let o = recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(o.sack, vec![SackBlock { left: REMOTE_SEQ + 101, right: REMOTE_SEQ + 201 }]);
    send!(t, seq_number: REMOTE_SEQ + 301, payload: &[4u8; 100]);
    let o = recv!(t, ack: REMOTE_SEQ + 1);
    // Most recent block first (RFC 2018 4).
    assert_eq!(o.sack[0], SackBlock { left: REMOTE_SEQ + 301, right: REMOTE_SEQ + 401 });
    assert_eq!(o.sack[1], SackBlock { left: REMOTE_SEQ + 101, right: REMOTE_SEQ + 201 });
    // Filling the first hole acks at once, up to the next hole.
    send!(t, seq_number: REMOTE_SEQ + 1, payload: &[1u8; 100]);
    let o = recv!(t, ack: REMOTE_SEQ + 201);
    assert_eq!(o.sack, vec![SackBlock { left: REMOTE_SEQ + 301, right: REMOTE_SEQ + 401 }]);
    let mut expect = vec![1u8; 100];
    expect.extend([2u8; 100]);
    assert_eq!(t.read_all(), expect);
    assert!(t.ep.stats().sack_blocks_sent >= 4);
}

#[test]
fn reassembly_holds_a_bounded_number_of_holes() {
    let mut t = established();
    // 40 one-byte segments, each leaving a hole before it.
    for k in 0..40u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 2 * (k + 1), payload: b"x");
    }
    t.recv_all();
    assert_eq!(t.drops(DropReason::ReassemblyFull), 40 - crate::ranges::MAX_RANGES as u64);
    let c = t.ep.connection(t.h()).unwrap();
    assert_eq!(c.recv_buffered(), crate::ranges::MAX_RANGES);
    // Filling the holes in order still yields the held bytes.
    send!(t, seq_number: REMOTE_SEQ + 1, payload: b"y");
    for k in 0..crate::ranges::MAX_RANGES as u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 2 * k + 1, payload: b"y");
    }
    let got = t.read_all();
    assert_eq!(got.len(), 2 * crate::ranges::MAX_RANGES + 1);
}

#[test]
fn readable_is_edge_triggered() {
    let mut t = established();
    send!(t, payload: b"one");
    send!(t, seq_number: REMOTE_SEQ + 4, payload: b"two");
    assert_eq!(t.events(), vec![Event::Readable]);
    assert_eq!(t.read_all(), b"onetwo");
    send!(t, seq_number: REMOTE_SEQ + 7, payload: b"three");
    assert_eq!(t.events(), vec![Event::Readable]);
}

#[test]
fn send_and_ack() {
    let mut t = established();
    assert_eq!(t.ep.send(t.h(), b"abcdef").unwrap(), 6);
    let iss1 = t.iss1();
    recv!(t, flags: Flags::ACK | Flags::PSH, seq: iss1, payload: b"abcdef".to_vec());
    send!(t, ack_number: iss1 + 6);
    let c = t.ep.connection(t.h()).unwrap();
    assert_eq!(c.snd_una(), c.snd_nxt());
    assert_eq!(t.ep.poll_timeout().map(|_| ()), None, "no timer once everything is acked");
}

#[test]
fn no_nagle_small_writes_go_at_once() {
    let mut t = established();
    t.ep.send(t.h(), b"a").unwrap();
    recv!(t, payload: b"a".to_vec());
    // Still unacknowledged; a relay must not hold the next small write back.
    t.ep.send(t.h(), b"b").unwrap();
    recv!(t, payload: b"b".to_vec());
}

#[test]
fn out_of_window_segment_is_acked_and_dropped() {
    let mut t = established();
    send!(t, seq_number: REMOTE_SEQ + 1_000_000, payload: b"x");
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    // An old duplicate too, at once: no second ACK within the interval (Linux's
    // tcp_invalid_ratelimit), counted; after it, answered again.
    send!(t, seq_number: REMOTE_SEQ - 100, payload: b"old");
    recv_nothing!(t);
    assert_eq!(t.ep.stats().invalid_acks_limited, 1);
    t.advance(Duration::from_millis(500));
    send!(t, seq_number: REMOTE_SEQ - 100, payload: b"old");
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(t.drops(DropReason::InvalidSequence), 3);
    assert!(t.events().is_empty());
}

#[test]
fn a_flood_of_out_of_window_segments_gets_two_acks_a_second() {
    let mut t = established();
    let mut acks = 0;
    for i in 0..1000u32 {
        send!(t, seq_number: REMOTE_SEQ + 1_000_000 + i, payload: b"x");
        acks += t.recv_all().len();
        t.advance(Duration::from_millis(1));
    }
    assert_eq!(acks, 2, "1,000 segments in a second");
    assert_eq!(t.ep.stats().invalid_acks_limited, 998);
}

#[test]
fn ack_at_right_window_edge_and_old_retransmission_carry_acks() {
    let mut t = established_with(Config { recv_buffer: 4000, ..config() });
    let iss1 = t.iss1();
    t.ep.send(t.h(), b"0123456789").unwrap();
    recv!(t);
    // The peer filled our window (its data got lost); its pure ACK is numbered at our right
    // edge. RFC 9293's strict test rejects it; its ACK must still count (as in Linux).
    send!(t, seq_number: REMOTE_SEQ + 1 + 4000, ack_number: iss1 + 4);
    assert_eq!(t.ep.connection(t.h()).unwrap().snd_una().0, iss1 + 4);
    // A retransmission of data we already have, ending at RCV.NXT: ACK processed, and answered.
    send!(t, payload: b"abc");
    t.read_all();
    t.fire();
    t.recv_all();
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: iss1 + 10, payload: b"abc");
    assert_eq!(t.ep.connection(t.h()).unwrap().snd_una().0, iss1 + 10);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 4);
}

#[test]
fn ack_of_unsent_data_is_dropped() {
    let mut t = established();
    let a = t.iss1() + 1000;
    send!(t, ack_number: a, payload: b"data");
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(t.drops(DropReason::BadAck), 1);
    assert_eq!(t.read_all(), b"", "the segment's text is not processed");
}

#[test]
fn no_ack_flag_is_dropped() {
    let mut t = established();
    send!(t, flags: Flags::PSH, payload: b"zz");
    assert_eq!(t.drops(DropReason::NoAck), 1);
    assert_eq!(t.read_all(), b"");
}
