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
fn challenge_acks_are_limited_per_connection() {
    let mut t = established();
    for _ in 0..5 {
        send!(t, flags: Flags::SYN, seq_number: REMOTE_SEQ + 1);
        let _ = t.recv_all();
    }
    // One challenge per connection per `invalid_ack_interval` (500 ms), as Linux.
    assert_eq!(t.ep.stats().challenge_acks, 1);
    assert_eq!(t.ep.stats().invalid_acks_limited, 4);
    assert_eq!(t.drops(DropReason::SynInWindow), 5);
    assert_eq!(t.state(), Some(State::Established));
    t.advance(Duration::from_millis(500));
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 700);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(t.ep.stats().challenge_acks, 2);
}

/// `n` connections from ports 20000.. established on `t`, which listens.
fn establish_many(t: &mut T, n: u16) {
    for i in 0..n {
        let port = 20_000 + i;
        send!(t, src_port: port, seq_number: REMOTE_SEQ, flags: Flags::SYN);
        let o = recv!(t, flags: Flags::SYN | Flags::ACK, dst_port: port);
        send!(t, src_port: port, seq_number: REMOTE_SEQ + 1, ack_number: o.seq.wrapping_add(1));
    }
    assert_eq!(t.ep.connection_count(), usize::from(n));
}

/// The challenge ACKs `t`'s connections (ports 20000..20000+n) earn with one in-window RST
/// each in each of `seconds` seconds, second by second.
fn challenges_per_second(t: &mut T, n: u16, seconds: usize) -> Vec<u64> {
    let mut per_second = Vec::new();
    for _ in 0..seconds {
        let before = t.ep.stats().challenge_acks;
        for i in 0..n {
            send!(t, src_port: 20_000 + i, flags: Flags::RST, seq_number: REMOTE_SEQ + 500);
        }
        let _ = t.recv_all();
        per_second.push(t.ep.stats().challenge_acks - before);
        t.advance(Duration::from_secs(1));
    }
    per_second
}

#[test]
fn the_global_challenge_budget_is_random_each_second() {
    // RFC 5961 section 7 and CVE-2016-5696: with a fixed budget of N per second, an off-path
    // attacker spends N - 1 on its own connection, sends one forged RST to a guessed 4-tuple,
    // and learns from the missing Nth answer that the guess exists. Here each second's budget is
    // drawn from [N/2, 3N/2) with a key the attacker does not know.
    let spent = |secret: [u8; 16]| {
        let mut t = listening_with(Config { challenge_ack_limit: 10, secret, ..config() });
        establish_many(&mut t, 30);
        challenges_per_second(&mut t, 30, 12)
    };
    let a = spent([3; 16]);
    assert!(a.iter().all(|&n| (5..15).contains(&n)), "{a:?}");
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert!(distinct.len() >= 3, "the budget varies from second to second: {a:?}");
    assert_ne!(a, spent([4; 16]), "and depends on the per-boot secret");
    assert_eq!(a, spent([3; 16]), "deterministic for one secret (a sans-IO test)");
}

#[test]
fn established_ancient_ack_gets_challenge() {
    let mut t = established();
    let a = t.iss.wrapping_sub(200_000);
    send!(t, ack_number: a);
    recv!(t, flags: Flags::ACK);
    assert_eq!(t.ep.stats().challenge_acks, 1);
}
