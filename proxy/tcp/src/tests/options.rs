//! Tests for the options of the handshake and what they do afterwards: MSS (RFC 9293 3.7.1),
//! window scaling (RFC 7323 2: answered only when offered, the SYN's window never scaled),
//! SACK-permitted (RFC 2018), timestamps and PAWS (RFC 7323 5, with Linux's leniency for
//! reordering and our anchors).

use super::*;

#[test]
fn listen_syn_gets_syn_ack_with_offered_options_only() {
    let mut t = listening_with(Config { window_scale: true, timestamps: true, ..config() });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, max_seg_size: Some(1400));
    let o = recv!(t, flags: Flags::SYN | Flags::ACK, ack: REMOTE_SEQ + 1, mss: Some(1460));
    // The peer offered no window scale, SACK or timestamps: we answer with none.
    assert_eq!(o.wscale, None);
    assert!(!o.sack_permitted);
    assert_eq!(o.ts, None);
}

#[test]
fn listen_syn_with_all_options() {
    let mut t = listening_with(Config { window_scale: true, timestamps: true, recv_buffer: 1 << 20, ..config() });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, max_seg_size: Some(1460), window_scale: Some(7),
        sack_permitted: true, timestamp: Some(Timestamp { tsval: 777, tsecr: 0 }));
    let o = recv!(t, flags: Flags::SYN | Flags::ACK);
    assert_eq!(o.wscale, Some(5)); // 1 MiB >> 5 fits 16 bits
    assert!(o.sack_permitted);
    assert_eq!(o.ts.map(|t| t.tsecr), Some(777));
    // The SYN-ACK's own window is never scaled.
    assert_eq!(o.window, 65_535);
}

#[test]
fn syn_sent_offers_options() {
    let mut t = T::new(Config { window_scale: true, timestamps: true, ..config() });
    let h =
        t.ep.connect(t.now, SocketAddr::new(LOCAL_IP, LOCAL_PORT), SocketAddr::new(REMOTE_IP, REMOTE_PORT)).unwrap();
    let o = recv!(t, flags: Flags::SYN);
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(1));
    assert!(o.sack_permitted);
    assert_eq!(o.ts.map(|t| t.tsecr), Some(0));
    assert_eq!(t.ep.state(h), Some(State::SynSent));
    assert_eq!(
        t.ep.connect(t.now, SocketAddr::new(LOCAL_IP, LOCAL_PORT), SocketAddr::new(REMOTE_IP, REMOTE_PORT)),
        Err(crate::ConnectError::AddrInUse)
    );
}

#[test]
fn syn_ack_window_is_not_scaled_later_ones_are() {
    let mut t = syn_sent_with(Config { window_scale: true, ..config() });
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: iss1, window_scale: Some(2), window_len: 1000, max_seg_size: Some(1460));
    recv!(t);
    // Window 1000 unscaled: only 1000 bytes may go.
    t.ep.send(t.h(), &[1u8; 5000]).unwrap();
    let sent: usize = t.recv_all().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 1000);
    // A later ACK's window is scaled by 4: 1000 << 2 = 4000 from the new SND.UNA.
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: iss1 + 1000, window_len: 1000);
    let sent: usize = t.recv_all().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 4000);
}

#[test]
fn syn_ack_without_window_scale_disables_it_both_ways() {
    let mut t = syn_sent_with(Config { window_scale: true, recv_buffer: 1 << 20, ..config() });
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: iss1, window_len: 3000, max_seg_size: Some(1460));
    let o = recv!(t, flags: Flags::ACK);
    // We offered a shift of 5 but the peer did not: our window field is unscaled and capped.
    assert_eq!(o.window, 65_535);
    // And the peer's windows are taken as they are.
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: iss1, window_len: 2920);
    t.ep.send(t.h(), &[0u8; 10_000]).unwrap();
    assert_eq!(t.recv_all().iter().map(|o| o.payload.len()).sum::<usize>(), 2920);
    assert_eq!(t.ep.stats().negotiated_wscale, 0);
}

#[test]
fn paws_drops_old_timestamps() {
    let mut t = listening_with(Config { timestamps: true, ..config() });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, timestamp: Some(Timestamp { tsval: 1000, tsecr: 0 }));
    let o = recv!(t);
    t.iss = o.seq;
    t.h = t.ep.lookup(&tuple());
    let iss1 = t.iss1();
    let ts = |v| Some(Timestamp { tsval: v, tsecr: 0 });
    send!(t, ack_number: iss1, timestamp: ts(1001));
    assert_eq!(t.state(), Some(State::Established));
    send!(t, ack_number: iss1, timestamp: ts(1002), payload: b"new");
    assert_eq!(t.read_all(), b"new");
    // A segment carrying an older timestamp is a duplicate from an earlier incarnation.
    send!(t, seq_number: REMOTE_SEQ + 4, ack_number: iss1, timestamp: ts(900), payload: b"old");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ts.unwrap().tsecr, 1002, "TS.Recent echoed");
    // Wrap-around: a timestamp just past 2^32 is newer.
    send!(t, seq_number: REMOTE_SEQ + 4, ack_number: iss1, timestamp: ts(1002u32.wrapping_add(0x7fff_0000)), payload: b"ok");
    assert_eq!(t.read_all(), b"ok");
}

/// ESTABLISHED with timestamps negotiated; the peer's last TSval is 1001.
fn established_ts() -> T {
    let mut t = listening_with(Config { timestamps: true, ..config() });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, timestamp: Some(Timestamp { tsval: 1000, tsecr: 0 }));
    let o = recv!(t);
    t.iss = o.seq;
    t.h = t.ep.lookup(&tuple());
    send!(t, timestamp: Some(Timestamp { tsval: 1001, tsecr: 0 }));
    assert_eq!(t.state(), Some(State::Established));
    t
}

fn ts(v: u32) -> Option<Timestamp> {
    Some(Timestamp { tsval: v, tsecr: 0 })
}

/// The case seen through the impairment bridge: segment 1 is lost, segments 2 and 3 were sent
/// before the retransmission of 1, and 3 was held back on the path. The retransmission
/// (newer TSval) moves TS.Recent; 3 arrives after it with an older TSval. Literal RFC 7323 R1
/// would discard it; Linux accepts it if one tick older (TCP_PAWS_WINDOW); we accept it
/// because its TSval is newer than a PAWS anchor less than 2^29 bytes back (here the SYN's).
#[test]
fn paws_accepts_segment_reordered_around_a_retransmission() {
    let mut t = established_ts();
    // Segment 1 (REMOTE_SEQ+1, "aaa", TSval 1002) is lost; 2 arrives out of order.
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts(1009), payload: b"bbb");
    t.recv_all();
    // The retransmission of 1 fills the hole: TS.Recent becomes 1010.
    send!(t, seq_number: REMOTE_SEQ + 1, timestamp: ts(1010), payload: b"aaa");
    assert_eq!(t.read_all(), b"aaabbb");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ts.unwrap().tsecr, 1010);
    // 3, sent seven ticks before the retransmission, arrives late.
    send!(t, seq_number: REMOTE_SEQ + 7, timestamp: ts(1003), payload: b"ccc");
    assert_eq!(t.drops(DropReason::Paws), 0);
    assert_eq!(t.read_all(), b"ccc");
    t.advance(Duration::from_millis(500));
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ack, REMOTE_SEQ + 10);
    assert_eq!(o.ts.unwrap().tsecr, 1010, "an older TSval does not move TS.Recent back");
    // Older than the anchor (sent before the SYN: impossible but for an old duplicate) and
    // beyond TCP_PAWS_WINDOW: R1 applies.
    send!(t, seq_number: REMOTE_SEQ + 10, timestamp: ts(999), payload: b"ddd");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
}

/// Linux's TCP_PAWS_WINDOW on its own: TS.Recent equal to the anchor, a TSval one tick older
/// passes, two ticks older does not.
#[test]
fn paws_window_of_one_tick() {
    let mut t = listening_with(Config { timestamps: true, ..config() });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, timestamp: ts(1000));
    let o = recv!(t);
    t.iss = o.seq;
    t.h = t.ep.lookup(&tuple());
    send!(t, timestamp: ts(1000));
    assert_eq!(t.state(), Some(State::Established));
    send!(t, timestamp: ts(999), payload: b"one");
    assert_eq!(t.drops(DropReason::Paws), 0);
    assert_eq!(t.read_all(), b"one");
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts(998), payload: b"two");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
}

/// The anchors move along the stream: after 2^28 bytes a new point is recorded, and after
/// another 2^28 the first is forgotten, so `covers` never reaches back more than 2^29 bytes.
#[test]
fn paws_anchors_rotate_every_2_28_bytes() {
    use crate::connection::PawsAnchors;
    use crate::seq::SeqNumber;
    let now = Instant::from_millis(1_000);
    let mut a = PawsAnchors::new(100, SeqNumber(u32::MAX - 10), now);
    assert!(a.covers(100, now) && a.covers(5_000, now) && !a.covers(99, now));
    // Less than 2^28 bytes later: no new point.
    a.on_ts_recent(200, SeqNumber((1 << 28) - 20), now);
    assert!(a.covers(150, now));
    // 2^28 bytes (across the wrap of u32): a new point; the older is still the first.
    a.on_ts_recent(300, SeqNumber((1 << 28) - 10), now);
    assert!(a.covers(150, now));
    // Another 2^28: the first point is forgotten.
    a.on_ts_recent(400, SeqNumber((1 << 29) - 10), now);
    assert!(!a.covers(150, now), "older than the anchor 2^28 bytes back");
    assert!(a.covers(300, now));
    // An anchor too old in time for its TSval to be compared is not used.
    let later = now + Duration::from_secs(13 * 24 * 3600);
    assert!(!a.covers(300, later));
}

/// Linux's tcp_disordered_ack(): a pure duplicate ACK that updates nothing, reordered behind
/// a newer segment, is not a PAWS drop; an ancient one still is.
#[test]
fn paws_accepts_disordered_pure_ack_within_rto() {
    let mut t = established_ts();
    // The peer only acknowledges (a one-way transfer from us): its ACKs all carry
    // SEG.SEQ = RCV.NXT = SND.WL1, and the newest moved TS.Recent to 1050.
    send!(t, timestamp: ts(1050));
    // A pure duplicate ACK from 60 ticks earlier (less than the 1 s initial RTO; older than
    // the PAWS anchor, the SYN's 1000, so only tcp_disordered_ack's rule can accept it).
    send!(t, timestamp: ts(990));
    assert_eq!(t.drops(DropReason::Paws), 0);
    recv_nothing!(t);
    // The same ACK with a window update is not merely reordered: dropped.
    send!(t, timestamp: ts(990), window_len: 65_000);
    assert_eq!(t.drops(DropReason::Paws), 1);
    t.recv_all();
    // A pure ACK older than one RTO (in milliseconds) is an old duplicate: dropped.
    send!(t, timestamp: ts(1050u32.wrapping_sub(5_000)));
    assert_eq!(t.drops(DropReason::Paws), 2);
}

/// What PAWS exists for (RFC 7323 5.1): an old duplicate from 2^32 bytes of sequence space
/// ago, whose sequence number lands in the current window again, must still be rejected.
#[test]
fn paws_still_rejects_wrapped_old_duplicate() {
    let mut t = established_ts();
    let tsval = 1001u32;
    // Moving 2^32 bytes through the endpoint is too slow for a unit test; what R1 sees is the
    // same: a segment in the window now whose TSval is far older than TS.Recent (it was sent
    // one sequence wrap ago).
    send!(t, seq_number: REMOTE_SEQ + 1, timestamp: ts(tsval + 100), payload: b"now");
    assert_eq!(t.read_all(), b"now");
    t.recv_all();
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts((tsval + 100).wrapping_sub(1_000_000)), payload: b"old");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ack, REMOTE_SEQ + 4, "ACK sent, RCV.NXT unchanged");
    // And a pure ACK from that old incarnation too (older than any RTO).
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts((tsval + 100).wrapping_sub(1_000_000)));
    assert_eq!(t.drops(DropReason::Paws), 2);
}
