//! Tests for the LISTEN state (RFC 9293 3.10.7.2) and for segments to ports nobody listens on
//! (3.10.7.1: CLOSED): SYN-ACKs, RSTs and their rate limit, listening and unlistening.

use super::*;

#[test]
fn ignores_rst_and_resets_ack() {
    let mut t = listening_with(Config { syn_cookies: false, ..config() });
    send!(t, flags: Flags::RST);
    recv_nothing!(t);
    // "any acknowledgment is bad if it arrives on a connection still in the LISTEN state"
    send!(t, flags: Flags::ACK, ack_number: 5555);
    recv!(t, flags: Flags::RST, seq: 5555);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn no_listener_syn_gets_rst_ack() {
    let mut t = T::new(config());
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, payload: b"abc");
    // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    recv!(t, flags: Flags::RST | Flags::ACK, seq: 0, ack: REMOTE_SEQ + 4);
    send!(t, flags: Flags::ACK, ack_number: 99);
    recv!(t, flags: Flags::RST, seq: 99);
    send!(t, flags: Flags::RST);
    recv_nothing!(t);
    assert_eq!(t.drops(DropReason::NoListener), 3);
}

#[test]
fn rsts_to_unknown_flows_are_rate_limited() {
    let mut t = T::new(Config { rst_limit: 3, ..config() });
    for i in 0..10 {
        send!(t, seq_number: i, flags: Flags::SYN);
    }
    assert_eq!(t.recv_all().len(), 3);
    assert_eq!(t.ep.stats().rsts_rate_limited, 7);
    t.advance(Duration::from_secs(1));
    send!(t, seq_number: 77, flags: Flags::SYN);
    assert_eq!(t.recv_all().len(), 1);
}

#[test]
fn on_unspecified_address() {
    let mut t = T::new(config());
    t.ep.listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), LOCAL_PORT)).unwrap();
    assert_eq!(
        t.ep.listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), LOCAL_PORT)),
        Err(crate::ListenError::AddrInUse)
    );
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN);
    recv!(t, flags: Flags::SYN | Flags::ACK);
}

#[test]
fn unlisten_refuses_new_syns_and_keeps_established_connections() {
    let mut t = established();
    let local = SocketAddr::new(LOCAL_IP, LOCAL_PORT);
    assert!(t.ep.unlisten(local));
    assert!(!t.ep.unlisten(local), "already closed");
    // The established connection still carries data.
    send!(t, flags: Flags::ACK | Flags::PSH, payload: b"still here");
    assert_eq!(t.read_all(), b"still here");
    // A SYN from another port is answered as on a closed port.
    send!(t, src_port: REMOTE_PORT + 1, seq_number: 7, flags: Flags::SYN, ack_number: 0);
    recv!(t, flags: Flags::RST | Flags::ACK, seq: 0, ack: 8);
    assert_eq!(t.drops(DropReason::NoListener), 1);
    assert_eq!(t.ep.connection_count(), 1);
    // Listening again accepts again.
    t.ep.listen(local).unwrap();
    assert_eq!(t.ep.listen(local), Err(crate::ListenError::AddrInUse));
    send!(t, src_port: REMOTE_PORT + 2, seq_number: 7, flags: Flags::SYN, ack_number: 0);
    recv!(t, flags: Flags::SYN | Flags::ACK, ack: 8);
    assert_eq!(t.ep.connection_count(), 2);
}
