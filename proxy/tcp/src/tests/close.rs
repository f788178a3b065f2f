//! Tests for closing (RFC 9293 3.10.4 CLOSE, 3.10.5 ABORT, and the FIN steps of 3.10.7.4): the
//! peer's FIN in ESTABLISHED, then the FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, LAST-ACK, CLOSING and
//! TIME-WAIT states.

use super::*;

#[test]
fn established_fin_to_close_wait_and_finished() {
    let mut t = established();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, flags: Flags::FIN | Flags::ACK, payload: b"bye");
    assert_eq!(t.state(), Some(State::CloseWait));
    assert_eq!(t.events(), vec![Event::Readable, Event::PeerClosed]);
    recv!(t, ack: REMOTE_SEQ + 5);
    assert_eq!(t.read_all(), b"bye");
    let mut b = [0u8; 8];
    assert_eq!(t.ep.recv(t.h(), &mut b), Err(crate::StreamError::Finished));
}

#[test]
fn out_of_order_fin_waits_for_data() {
    let mut t = established();
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ + 4, ack_number: iss1, flags: Flags::FIN | Flags::ACK, payload: b"def");
    assert_eq!(t.state(), Some(State::Established));
    send!(t, ack_number: iss1, payload: b"abc");
    assert_eq!(t.state(), Some(State::CloseWait));
    assert_eq!(t.read_all(), b"abcdef");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ack, REMOTE_SEQ + 8);
}

#[test]
fn established_close_sends_fin_after_data() {
    let mut t = established();
    t.ep.send(t.h(), b"last words").unwrap();
    t.ep.close(t.h());
    assert_eq!(t.state(), Some(State::FinWait1));
    let iss1 = t.iss1();
    recv!(t, seq: iss1, flags: Flags::ACK | Flags::PSH | Flags::FIN, payload: b"last words".to_vec());
    assert_eq!(t.ep.send(t.h(), b"more"), Err(crate::StreamError::Closed));
}

#[test]
fn abort_sends_rst() {
    let mut t = established();
    t.ep.abort(t.h());
    let iss1 = t.iss1();
    recv!(t, flags: Flags::RST | Flags::ACK, seq: iss1);
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.send(t.h(), b"x"), Err(crate::StreamError::InvalidHandle));
}

// ---- FIN-WAIT-1 ----

#[test]
fn fin_wait_1_ack_to_fin_wait_2() {
    let mut t = fin_wait_1();
    let a = t.iss1() + 1;
    send!(t, ack_number: a);
    assert_eq!(t.state(), Some(State::FinWait2));
}

#[test]
fn fin_wait_1_fin_ack_three_step_close() {
    let mut t = fin_wait_1();
    let a = t.iss1() + 1;
    // The peer merges its FIN with the ACK of ours.
    send!(t, ack_number: a, flags: Flags::FIN | Flags::ACK);
    assert_eq!(t.state(), Some(State::TimeWait));
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 2, seq: a);
}

#[test]
fn fin_wait_1_fin_to_closing_then_time_wait() {
    let mut t = fin_wait_1();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, flags: Flags::FIN | Flags::ACK);
    assert_eq!(t.state(), Some(State::Closing));
    recv!(t, ack: REMOTE_SEQ + 2);
    send!(t, seq_number: REMOTE_SEQ + 2, ack_number: iss1 + 1);
    assert_eq!(t.state(), Some(State::TimeWait));
}

#[test]
fn fin_wait_1_fin_retransmitted() {
    let mut t = fin_wait_1();
    t.fire();
    let iss1 = t.iss1();
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1);
}

#[test]
fn fin_wait_1_still_receives() {
    let mut t = fin_wait_1();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, payload: b"late");
    assert_eq!(t.read_all(), b"late");
}

// ---- FIN-WAIT-2 ----

#[test]
fn fin_wait_2_half_close_receives_then_fin() {
    let mut t = fin_wait_2();
    let a = t.iss1() + 1;
    send!(t, ack_number: a, payload: b"half-closed data");
    assert_eq!(t.read_all(), b"half-closed data");
    send!(t, seq_number: REMOTE_SEQ + 17, ack_number: a, flags: Flags::FIN | Flags::ACK);
    assert_eq!(t.state(), Some(State::TimeWait));
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 18);
}

#[test]
fn fin_wait_2_silent_peer_times_out() {
    let mut t = established_with(Config { fin_wait_2_timeout: Some(Duration::from_secs(60)), ..config() });
    t.ep.close(t.h());
    t.recv_all();
    let a = t.iss1() + 1;
    send!(t, ack_number: a);
    assert_eq!(t.state(), Some(State::FinWait2));
    let a = t.iss1() + 1;
    t.advance(Duration::from_secs(50));
    // Data keeps a half-closed connection alive.
    send!(t, ack_number: a, payload: b"still here");
    t.read_all();
    t.advance(Duration::from_secs(50));
    assert_eq!(t.state(), Some(State::FinWait2));
    t.recv_all();
    t.fire();
    recv!(t, flags: Flags::RST | Flags::ACK);
    assert!(t.events().contains(&Event::TimedOut));
    assert_eq!(t.ep.connection_count(), 0);
}

// ---- CLOSE-WAIT and LAST-ACK ----

#[test]
fn close_wait_can_still_send() {
    let mut t = close_wait();
    t.ep.send(t.h(), b"reply").unwrap();
    recv!(t, payload: b"reply".to_vec());
}

#[test]
fn last_ack_ack_closes() {
    let mut t = last_ack();
    let a = t.iss1() + 1;
    t.events();
    send!(t, seq_number: REMOTE_SEQ + 2, ack_number: a);
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn last_ack_fin_retransmitted() {
    let mut t = last_ack();
    t.fire();
    let iss1 = t.iss1();
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1);
}

// ---- CLOSING and TIME-WAIT ----

#[test]
fn time_wait_acks_retransmitted_fin_and_restarts_timer() {
    let mut t = time_wait();
    let deadline = t.ep.poll_timeout().unwrap();
    assert_eq!(deadline - t.now, Duration::from_secs(10));
    t.advance(Duration::from_secs(5));
    let a = t.iss1() + 1;
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: a, flags: Flags::FIN | Flags::ACK);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 2);
    assert_eq!(t.ep.poll_timeout().unwrap() - t.now, Duration::from_secs(10));
}

#[test]
fn time_wait_expires() {
    let mut t = time_wait();
    t.events();
    t.fire();
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn time_wait_new_syn_reopens() {
    let mut t = time_wait();
    send!(t, seq_number: REMOTE_SEQ + 100_000, flags: Flags::SYN);
    recv!(t, flags: Flags::SYN | Flags::ACK, ack: REMOTE_SEQ + 100_001);
    let h = t.ep.lookup(&tuple()).unwrap();
    assert_eq!(t.ep.state(h), Some(State::SynReceived));
}

#[test]
fn time_wait_rst_closes() {
    let mut t = time_wait();
    t.events();
    send!(t, seq_number: REMOTE_SEQ + 2, flags: Flags::RST);
    assert_eq!(t.events(), vec![Event::Closed]);
}

#[test]
fn time_wait_hands_its_buffers_back_at_once() {
    let mut t = time_wait();
    assert_eq!(t.state(), Some(State::TimeWait));
    assert_eq!(t.ep.spare_buffers(), 1, "the buffers are back before the 2 MSL are over");
    assert_eq!(t.ep.connection_count(), 1, "the TCB itself stays in TIME-WAIT");
    // A retransmitted FIN is still acknowledged.
    let o = recv_all_after_fin_retransmit(&mut t);
    assert!(o.iter().any(|s| s.flags.contains(Flags::ACK)), "{o:?}");
}

fn recv_all_after_fin_retransmit(t: &mut T) -> Vec<Out> {
    let fin_seq = REMOTE_SEQ + 1;
    send!(t, seq_number: fin_seq, flags: Flags::FIN | Flags::ACK);
    t.recv_all()
}
