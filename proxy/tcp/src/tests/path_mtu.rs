//! Tests for path-MTU messages (`Endpoint::path_mtu`): RFC 5927 4.1's in-flight check, the
//! new segment size per family (RFC 1191, RFC 8201) and its floor, the resend from SND.UNA.

use super::*;
use crate::config::PathMtuIgnored;

/// `t` (ESTABLISHED, peer MSS 1460, no timestamps) with `n` full-sized segments in flight;
/// returns their lengths.
fn in_flight(t: &mut T, n: usize) -> Vec<usize> {
    let data = vec![7u8; 1460 * n];
    assert_eq!(t.ep.send(t.h(), &data), Ok(data.len()));
    let out = t.recv_all();
    assert_eq!(out.len(), n);
    out.iter().map(|o| o.payload.len()).collect()
}

#[test]
fn an_in_flight_sequence_number_lowers_the_mss_and_resends_from_snd_una() {
    let mut t = established();
    assert_eq!(in_flight(&mut t, 3), vec![1460; 3]);
    let tuple = t.tuple();
    // The middle segment is quoted: SND.UNA <= seq < SND.NXT.
    let seq = t.iss1().wrapping_add(1460);
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 1280, seq), Ok(()));
    // Everything from SND.UNA again, in segments of 1280 - 40 bytes.
    let out = t.recv_all();
    assert!(!out.is_empty());
    assert_eq!(out[0].seq, t.iss1());
    assert!(out.iter().all(|o| o.payload.len() <= 1240));
    assert_eq!(out[0].payload.len(), 1240);
    // The same MTU again changes nothing; a larger one neither (RFC 1191 6.3).
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 1280, seq), Err(PathMtuIgnored::NotSmaller));
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 1500, seq), Err(PathMtuIgnored::NotSmaller));
    recv_nothing!(t);
}

#[test]
fn stale_or_future_sequence_numbers_are_ignored() {
    let mut t = established();
    in_flight(&mut t, 2);
    let tuple = t.tuple();
    // Acknowledge the first segment: its sequence number is no longer in flight.
    let acked = t.iss1().wrapping_add(1460);
    send!(t, ack_number: acked);
    for seq in [t.iss1(), t.iss1().wrapping_sub(1), acked.wrapping_add(1460), acked.wrapping_add(100_000)] {
        assert_eq!(t.ep.path_mtu(t.now, &tuple, 1280, seq), Err(PathMtuIgnored::NotInFlight), "{seq}");
    }
    recv_nothing!(t);
    // Another 4-tuple is no connection.
    let other = FourTuple { remote: SocketAddr::new(REMOTE_IP, REMOTE_PORT + 1), ..tuple };
    assert_eq!(t.ep.path_mtu(t.now, &other, 1280, acked), Err(PathMtuIgnored::NoConnection));
    // The last byte in flight still is.
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 1280, acked.wrapping_add(1459)), Ok(()));
    assert_eq!(recv!(t).seq, acked);
}

#[test]
fn nothing_in_flight_is_ignored() {
    let mut t = established();
    let tuple = t.tuple();
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 1280, t.iss1()), Err(PathMtuIgnored::NotInFlight));
    // Nor during the handshake (only SYNs are in flight then).
    let mut s = syn_received();
    let tuple = s.tuple();
    assert_eq!(s.ep.path_mtu(s.now, &tuple, 600, s.iss), Err(PathMtuIgnored::NotInFlight));
}

#[test]
fn the_ipv4_floor_is_576() {
    let mut t = established();
    in_flight(&mut t, 1);
    let tuple = t.tuple();
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 68, t.iss1()), Ok(()));
    assert_eq!(recv!(t).payload.len(), 536);
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 0, t.iss1()), Err(PathMtuIgnored::NotSmaller));
}

#[test]
fn ipv6_advertises_mtu_minus_60_and_floors_at_1280() {
    let mut t = T::new_v6(config());
    t = listening_in(t);
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, max_seg_size: Some(1460), sack_permitted: true);
    // RFC 8200 / RFC 9293 3.7.1: MSS = 1500 - 40 - 20.
    recv!(t, flags: Flags::SYN | Flags::ACK, mss: Some(1440));
    let mut t = established_v6();
    let data = vec![1u8; 3000];
    t.ep.send(t.h(), &data).unwrap();
    // The peer's 1460 is clamped by our MTU: 1500 - 60.
    let out = t.recv_all();
    assert_eq!(out[0].payload.len(), 1440);
    let tuple = t.tuple();
    assert_eq!(tuple.local.ip(), LOCAL_IP6);
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 1000, t.iss1()), Ok(()));
    let out = t.recv_all();
    assert_eq!((out[0].seq, out[0].payload.len()), (t.iss1(), 1220));
    assert_eq!(t.ep.path_mtu(t.now, &tuple, 1280, t.iss1()), Err(PathMtuIgnored::NotSmaller));
}
