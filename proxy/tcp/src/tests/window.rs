//! Tests for flow control: zero windows and their probes (RFC 9293 3.8.6.1), sender and receiver
//! SWS avoidance (3.8.6.2.1, 3.8.6.2.2), window updates after reads, and a window field that
//! cannot carry the buffer (no window scaling).

use super::*;

#[test]
fn zero_window_probe_and_reopen() {
    let mut t = established();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, window_len: 0);
    t.ep.send(t.h(), b"waiting").unwrap();
    recv_nothing!(t);
    t.fire();
    // Probe: <SEQ=SND.UNA-1>, no data.
    recv!(t, flags: Flags::ACK, seq: iss1.wrapping_sub(1), payload: vec![]);
    assert_eq!(t.ep.stats().zero_window_probes, 1);
    let first = t.ep.poll_timeout().unwrap() - t.now;
    t.fire();
    recv!(t, seq: iss1.wrapping_sub(1));
    let second = t.ep.poll_timeout().unwrap() - t.now;
    assert_eq!(second, first * 2, "probe interval backs off");
    send!(t, ack_number: iss1, window_len: 1000);
    recv!(t, seq: iss1, payload: b"waiting".to_vec());
}

#[test]
fn zero_window_with_outstanding_data_never_times_out_while_acked() {
    let mut t = established_with(Config { max_retransmits: 3, ..config() });
    let iss1 = t.iss1();
    t.ep.send(t.h(), &[1u8; 3000]).unwrap();
    assert_eq!(t.recv_all().len(), 3);
    // The peer takes the first segment and closes its window.
    send!(t, ack_number: iss1 + 1000, window_len: 0);
    for k in 0..10 {
        t.fire();
        let o = recv!(t);
        assert!(o.payload.is_empty(), "round {k}: {} bytes at {}, iss1 {iss1}", o.payload.len(), o.seq);
        assert_eq!(o.seq, (iss1 + 1000).wrapping_sub(1), "a probe, not a retransmission into the zero window");
        send!(t, ack_number: iss1 + 1000, window_len: 0);
    }
    assert_eq!(t.state(), Some(State::Established));
    send!(t, ack_number: iss1 + 1000, window_len: 8000);
    let segs = t.recv_all();
    assert_eq!(segs.iter().map(|o| o.payload.len()).sum::<usize>(), 2000);
}

#[test]
fn sender_sws_avoidance_waits_for_a_useful_window() {
    let mut t = established();
    let iss1 = t.iss1();
    t.ep.send(t.h(), &[1u8; 1460]).unwrap();
    recv!(t);
    t.ep.send(t.h(), &[2u8; 5000]).unwrap();
    // The window's right edge moves by only 100 bytes with data still outstanding: wait.
    send!(t, ack_number: iss1, window_len: 1560);
    recv_nothing!(t);
    // A full segment's worth opens: send it.
    send!(t, ack_number: iss1 + 1460, window_len: 1460);
    recv!(t, seq: iss1 + 1460);
}

#[test]
fn big_buffer_without_window_scaling_is_quiet() {
    // 1 MiB of buffer but the peer offered no window scale: the field caps at 65535, and no
    // window update may look due forever (an ACK storm).
    let mut t = established_with(Config { recv_buffer: 1 << 20, window_scale: true, ..config() });
    send!(t, payload: &[1u8; 1000]);
    t.read_all();
    recv_nothing!(t);
    t.fire();
    let o = recv!(t, flags: Flags::ACK);
    assert_eq!(o.window, 65_535);
    recv_nothing!(t);
}

#[test]
fn receive_window_fills_then_update_after_read() {
    let mut t = established_with(Config { recv_buffer: 4000, ..config() });
    for k in 0..4u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 1000 * k, payload: &[1u8; 1000]);
    }
    let last = t.recv_all().pop().unwrap();
    assert_eq!(last.ack, REMOTE_SEQ + 4001);
    assert_eq!(last.window, 0);
    // More data beyond the window is not accepted.
    send!(t, seq_number: REMOTE_SEQ + 4001, payload: b"x");
    recv!(t, window: 0, ack: REMOTE_SEQ + 4001);
    assert_eq!(t.read_all().len(), 4000);
    recv!(t, flags: Flags::ACK, window: 4000);
}

#[test]
fn receiver_sws_avoidance_small_read_no_update() {
    let mut t = established_with(Config { recv_buffer: 8000, ..config() });
    for k in 0..8u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 1000 * k, payload: &[1u8; 1000]);
    }
    t.recv_all();
    let mut b = [0u8; 100];
    t.ep.recv(t.h(), &mut b).unwrap();
    recv_nothing!(t);
    let mut b = [0u8; 4000];
    t.ep.recv(t.h(), &mut b).unwrap();
    recv!(t, window: 4100);
}

#[test]
fn user_timeout_ends_a_zero_window_that_never_opens_though_every_probe_is_answered() {
    let mut t = established_with(Config { user_timeout: Some(Duration::from_secs(30)), ..config() });
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, window_len: 0);
    t.ep.send(t.h(), b"waiting").unwrap();
    recv_nothing!(t);
    let start = t.now;
    // The peer answers every zero-window probe, the window shut: the persist timer alone would
    // probe forever, and the idle timer would be refreshed by every answer.
    while t.state() == Some(State::Established) {
        assert!(t.now - start <= Duration::from_secs(31), "still open after the user timeout");
        t.fire();
        let segs = t.recv_all();
        if segs.iter().any(|o| o.flags.contains(Flags::RST)) {
            break;
        }
        send!(t, ack_number: iss1, window_len: 0);
    }
    assert!(t.now - start >= Duration::from_secs(30), "ended before the user timeout");
    assert!(t.events().contains(&Event::TimedOut));
    assert_eq!(t.ep.stats().user_timeouts, 1);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn user_timeout_spares_a_slow_peer_that_keeps_acknowledging_and_an_idle_connection() {
    let mut t = established_with(Config { user_timeout: Some(Duration::from_secs(5)), ..config() });
    let iss1 = t.iss1();
    // Idle, nothing to send: no timeout however long.
    t.advance(Duration::from_secs(60));
    assert_eq!(t.state(), Some(State::Established));
    // 20 segments, each acknowledged 4 s after it was sent: 80 s in all, never 5 s without progress.
    t.ep.send(t.h(), &[7u8; 20 * 1000]).unwrap();
    let mut acked = 0u32;
    while acked < 20_000 {
        let segs = t.recv_all();
        let sent = segs.iter().map(|o| o.payload.len() as u32).sum::<u32>();
        assert!(sent > 0 || acked > 0, "nothing sent");
        t.advance(Duration::from_secs(4));
        acked += 1000;
        send!(t, ack_number: iss1 + acked, window_len: 1000);
        assert_eq!(t.state(), Some(State::Established), "ended after {acked} bytes acknowledged");
    }
    assert_eq!(t.ep.stats().user_timeouts, 0);
}

#[test]
fn under_memory_pressure_a_send_buffer_is_cut_to_what_it_holds() {
    let mut t = established();
    let iss1 = t.iss1();
    let data: Vec<u8> = (0..60_000u32).map(|i| i as u8).collect();
    assert_eq!(t.ep.send(t.h(), &data), Ok(60_000));
    // The peer acknowledges what arrives (the congestion window opens) up to all but the last
    // 1,000 bytes: the storage stays at its high-water mark until the buffer empties, unless
    // it is cut.
    let mut acked = 0u32;
    while acked < 59_000 {
        let sent = t.recv_all().iter().map(|o| o.seq.wrapping_sub(iss1) + o.payload.len() as u32).max();
        acked = sent.unwrap_or(acked).min(59_000);
        send!(t, ack_number: iss1.wrapping_add(acked), window_len: 64_000);
    }
    assert_eq!(t.ep.buffer_storage(), 65_536);
    assert_eq!(t.ep.shrink_buffers(), 65_536 - 1_024);
    assert_eq!(t.ep.buffer_storage(), 1_024);
    t.ep.check_invariants().unwrap();
    // The bytes still owed are intact: a retransmission timeout resends them.
    t.advance(Duration::from_secs(2));
    t.fire();
    let o = recv!(t, seq: iss1.wrapping_add(59_000));
    assert_eq!(o.payload, &data[59_000..]);
    send!(t, ack_number: iss1.wrapping_add(60_000), window_len: 64_000);
    assert_eq!(t.ep.buffer_storage(), 0);
}
