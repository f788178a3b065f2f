//! Tests for retransmission and loss recovery: the RTO with backoff and its limit (RFC 6298),
//! fast retransmit and NewReno (RFC 5681 3.2, RFC 6582), Limited Transmit (RFC 3042), SACK
//! recovery (RFC 6675), and the RFC 8985 loss probes of `rack`.

use super::*;

#[test]
fn rto_retransmits_with_backoff_and_gives_up() {
    let mut t = established_with(Config { max_retransmits: 3, ..config() });
    t.ep.send(t.h(), b"data").unwrap();
    let iss1 = t.iss1();
    recv!(t, seq: iss1);
    let start = t.now;
    t.fire();
    recv!(t, seq: iss1, payload: b"data".to_vec());
    let first = t.now - start;
    t.fire();
    recv!(t, seq: iss1);
    let second = t.now - start - first;
    assert_eq!(second, first * 2, "RTO doubles (RFC 6298 5.5)");
    t.fire();
    recv!(t, seq: iss1);
    t.fire();
    // Fourth expiry > max_retransmits: RST and TimedOut.
    recv!(t, flags: Flags::RST | Flags::ACK);
    assert_eq!(t.events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(t.ep.stats().retransmits_rto, 3);
}

#[test]
fn fast_retransmit_after_three_dup_acks() {
    let mut t = established_with(Config { sack: false, ..config() });
    t.ep.send(t.h(), &[9u8; 1460 * 5]).unwrap();
    let segs = t.recv_all();
    assert_eq!(segs.len(), 5);
    let iss1 = t.iss1();
    for _ in 0..2 {
        send!(t, ack_number: iss1);
        recv_nothing!(t);
    }
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1);
    assert_eq!(t.ep.stats().retransmits_fast, 1);
    assert_eq!(t.ep.stats().dup_acks, 3);
    // NewReno partial ACK: retransmit the next hole at once.
    send!(t, ack_number: iss1 + 1460);
    recv!(t, seq: iss1 + 1460);
    // Full ACK ends recovery.
    send!(t, ack_number: iss1 + 1460 * 5);
    let c = t.ep.connection(t.h()).unwrap();
    assert_eq!(c.snd_una(), c.snd_max());
}

#[test]
fn limited_transmit_on_first_two_dup_acks() {
    let mut t = established_with(Config { sack: false, ..config() });
    t.ep.send(t.h(), &[9u8; 1460 * 20]).unwrap();
    // The initial window: 10 segments.
    assert_eq!(t.recv_all().len(), 10);
    let iss1 = t.iss1();
    // RFC 3042: one new segment per each of the first two duplicate ACKs.
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1 + 1460 * 10);
    recv_nothing!(t);
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1 + 1460 * 11);
    recv_nothing!(t);
    // The third: fast retransmit of the first segment.
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1);
    assert_eq!(t.ep.stats().retransmits_fast, 1);
}

#[test]
fn sack_recovery_retransmits_only_holes() {
    let mut t = syn_received_with(config());
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    t.events();
    t.ep.send(t.h(), &[9u8; 1460 * 8]).unwrap();
    assert_eq!(t.recv_all().len(), 8);
    // Segments 0 and 2 lost; 1 and 3..8 arrive: SACK them.
    let s = |k: u32| iss1 + 1460 * k;
    let sack = |blocks: &[(u32, u32)]| {
        let mut b = [None; 4];
        for (i, &(l, r)) in blocks.iter().enumerate() {
            b[i] = Some(SackBlock { left: l, right: r });
        }
        b
    };
    send!(t, ack_number: iss1, sack_blocks: sack(&[(s(1), s(2))]));
    recv_nothing!(t);
    // Three segments SACKed above SND.UNA: more than (DupThresh - 1) * SMSS, so segment 0
    // IsLost (RFC 6675 4) and is retransmitted, before three duplicate ACKs.
    send!(t, ack_number: iss1, sack_blocks: sack(&[(s(3), s(5)), (s(1), s(2))]));
    recv!(t, seq: s(0));
    recv_nothing!(t);
    // Now segment 2 has four SACKed above it: lost too; pipe < cwnd lets it go.
    send!(t, ack_number: iss1, sack_blocks: sack(&[(s(3), s(7)), (s(1), s(2))]));
    recv!(t, seq: s(2));
    recv_nothing!(t);
    assert!(t.ep.stats().retransmits_sack >= 1);
    assert_eq!(t.ep.stats().sack_blocks_received, 5);
}

fn probing() -> Config {
    Config { loss_probes: true, ..config() }
}

fn sack1(left: u32, right: u32) -> [Option<SackBlock>; 4] {
    [Some(SackBlock { left, right }), None, None, None]
}

/// RFC 8985 (see `rack`): the retransmission of the only hole is lost and everything else is
/// SACKed; nothing sent after it can reveal the loss, so the probe timer does, long before
/// the RTO.
#[test]
fn loss_probe_repairs_a_lost_retransmission_before_the_rto() {
    let mut t = established_with(probing());
    let iss1 = t.iss1();
    let s = |k: u32| iss1 + 1460 * k;
    t.ep.send(t.h(), &[9u8; 1460 * 5]).unwrap();
    assert_eq!(t.recv_all().len(), 5);
    // Segment 0 lost, 1..5 SACKed: it IsLost (RFC 6675 4), retransmitted at once.
    send!(t, ack_number: iss1, sack_blocks: sack1(s(1), s(5)));
    recv!(t, seq: s(0));
    recv_nothing!(t);
    assert_eq!(t.ep.stats().retransmits_fast, 1);
    // That retransmission is lost too. The next timer is the loss probe, before the RTO.
    let rto_at = t.now + t.ep.connection(t.h()).unwrap().rto();
    t.fire();
    assert!(t.now < rto_at);
    recv!(t, seq: s(0), payload: vec![9u8; 1460]);
    recv_nothing!(t);
    assert_eq!(t.ep.stats().retransmits_rack, 1);
    assert_eq!(t.ep.stats().retransmits_rto, 0);
    // It arrives: all acknowledged, no probe or RTO left.
    send!(t, ack_number: s(5));
    assert_eq!(t.ep.poll_timeout(), None);
}

/// RFC 8985 7.3: a tail loss without any SACK information: the probe is the last segment;
/// its ACK SACKs it, and the next expiry retransmits the hole that this revealed.
#[test]
fn tail_loss_probe_resends_the_last_segment() {
    let mut t = established_with(probing());
    let iss1 = t.iss1();
    t.ep.send(t.h(), &[9u8; 1460 * 2]).unwrap();
    assert_eq!(t.recv_all().len(), 2);
    t.fire();
    recv!(t, seq: iss1 + 1460);
    recv_nothing!(t);
    assert_eq!(t.ep.stats().retransmits_tlp, 1);
    send!(t, ack_number: iss1, sack_blocks: sack1(iss1 + 1460, iss1 + 2920));
    recv_nothing!(t);
    t.fire();
    recv!(t, seq: iss1);
    assert_eq!(t.ep.stats().retransmits_rack, 1);
    assert_eq!(t.ep.stats().retransmits_rto, 0);
}

/// Without SACK (or with `loss_probes` off) there is no probe: the next timer is the RTO.
#[test]
fn no_loss_probe_without_sack() {
    let mut t = established_with(Config { sack: false, ..probing() });
    t.ep.send(t.h(), &[9u8; 1460 * 2]).unwrap();
    assert_eq!(t.recv_all().len(), 2);
    t.fire();
    recv!(t, seq: t.iss1());
    assert_eq!(t.ep.stats().retransmits_rto, 1);
    assert_eq!(t.ep.stats().retransmits_tlp, 0);
}
