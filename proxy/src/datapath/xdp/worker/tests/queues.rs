//! Several workers sharing one flow index, as on a NIC with several queues: who owns a flow,
//! hand-offs when a flow moves queue, TIME-WAIT reuse across queues.

use super::*;

/// `n` workers sharing one flow index, fed as a NIC with `n` queues would: each frame on
/// the queue its test chooses; hand-offs delivered to the owner's inbox at once.
struct Queues {
    workers: Vec<Dispatch>,
    now: Instant,
}

impl Queues {
    fn new(n: usize) -> Self {
        Self::with(n, &[])
    }

    fn with(n: usize, extra: &[(u16, ListenerMode)]) -> Self {
        let flows = Arc::new(FlowIndex::new(1 << 16));
        Self { workers: (0..n).map(|w| dispatch_with(w, Arc::clone(&flows), extra)).collect(), now: T0 }
    }

    /// `f` arrives on queue `q`; returns the frames every worker sends in answer.
    fn arrive(&mut self, q: usize, f: &[u8]) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        buf[..f.len()].copy_from_slice(f);
        match self.workers[q].on_frame(self.now, &mut buf, f.len(), Source::Rx) {
            Verdict::HandOff(owner) => {
                self.workers[q].counters.handoff_out += 1;
                let mut copy = f.to_vec();
                let v = self.workers[owner].on_frame(self.now, &mut copy, f.len(), Source::HandOff);
                assert!(!matches!(v, Verdict::HandOff(_)), "a handed-over frame is never handed on");
                self.workers[owner].counters.handoff_in += 1;
            }
            Verdict::Reply(n) => return vec![buf[..n].to_vec()],
            Verdict::Consumed => {}
        }
        self.now += Duration::from_micros(100);
        let now = self.now;
        self.workers.iter_mut().flat_map(|d| transmit(d, now)).collect()
    }

    fn handoffs(&self) -> u64 {
        self.workers.iter().map(|d| d.counters.handoff_out).sum()
    }
}

fn tcp_of(f: &[u8]) -> (Flags, u32, u32, Vec<u8>) {
    let s = parse_frame(f, Checksum::Verify).unwrap();
    (s.tcp.flags, s.tcp.seq_number, s.tcp.ack_number, s.tcp.payload.to_vec())
}

/// A client of the echo listener: handshake and data, each frame on the queue `queue`
/// gives; returns the bytes echoed back, in order.
fn echo_client(qs: &mut Queues, port: u16, chunks: &[(&[u8], usize)]) -> Vec<u8> {
    let first_q = chunks[0].1;
    let out = qs.arrive(
        first_q,
        &frame(Seg { src_port: port, dst_port: 7, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] }),
    );
    let (flags, iss, _, _) = tcp_of(&out[0]);
    assert_eq!(flags, Flags::SYN | Flags::ACK);
    let (mut seq, ack) = (1001u32, iss.wrapping_add(1));
    let _ = qs.arrive(first_q, &frame(Seg { src_port: port, dst_port: 7, flags: Flags::ACK, seq, ack, payload: &[] }));
    let mut echoed = Vec::new();
    for (data, q) in chunks {
        let out = qs.arrive(
            *q,
            &frame(Seg { src_port: port, dst_port: 7, flags: Flags::ACK | Flags::PSH, seq, ack, payload: data }),
        );
        seq = seq.wrapping_add(data.len() as u32);
        for f in out {
            let (_, _, _, payload) = tcp_of(&f);
            echoed.extend_from_slice(&payload);
        }
    }
    echoed
}

#[test]
fn flows_that_stay_on_their_queue_are_never_handed_off() {
    let mut qs = Queues::new(8);
    for i in 0..400u16 {
        // A NIC hashes each flow to one queue; any spread will do, as long as it stays.
        let q = usize::from(i) * 5 % 8;
        let msg = format!("flow {i} says hello");
        let echoed = echo_client(&mut qs, 20_000 + i, &[(msg.as_bytes(), q), (b" and more", q)]);
        assert_eq!(echoed, [msg.as_bytes(), b" and more"].concat());
    }
    assert_eq!(qs.handoffs(), 0);
    for (w, d) in qs.workers.iter().enumerate() {
        assert_eq!(d.tcp().connection_count(), 50, "worker {w} owns the flows of its queue");
    }
}

#[test]
fn a_flow_that_moves_to_another_queue_keeps_its_owner_and_every_byte_in_order() {
    let mut qs = Queues::new(8);
    let chunks: [(&[u8], usize); 4] = [(b"one ", 3), (b"two ", 5), (b"three ", 5), (b"four", 3)];
    let echoed = echo_client(&mut qs, 40_000, &chunks);
    assert_eq!(echoed, b"one two three four");
    assert_eq!(qs.workers[3].tcp().connection_count(), 1);
    assert_eq!(qs.workers[5].tcp().connection_count(), 0, "never owned twice");
    assert_eq!(qs.workers[5].counters.handoff_moved, 2);
    assert_eq!(qs.handoffs(), 2);
}

#[test]
fn a_retransmitted_syn_on_another_queue_goes_to_the_first_owner() {
    let mut qs = Queues::new(2);
    let syn = frame(Seg { src_port: 40_000, dst_port: 7, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] });
    let first = qs.arrive(0, &syn);
    let again = qs.arrive(1, &syn);
    assert_eq!(tcp_of(&first[0]).1, tcp_of(&again[0]).1, "the same SYN-ACK, from the owner");
    assert_eq!(qs.workers[1].tcp().connection_count(), 0);
    assert_eq!(qs.workers[1].counters.handoff_moved, 1);
}

#[test]
fn a_freed_flow_leaves_the_index_and_may_open_elsewhere() {
    let mut qs = Queues::new(2);
    let syn = frame(Seg { src_port: 40_000, dst_port: 7, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] });
    let _ = qs.arrive(0, &syn);
    let rst = frame(Seg { src_port: 40_000, dst_port: 7, flags: Flags::RST, seq: 1001, ack: 0, payload: &[] });
    let _ = qs.arrive(0, &rst);
    assert_eq!(qs.workers[0].tcp().connection_count(), 0);
    assert!(qs.workers[0].flows.is_empty(), "a TCB freed in SYN-RECEIVED gives its flow back");
    let _ = qs.arrive(1, &syn);
    assert_eq!(qs.workers[1].tcp().connection_count(), 1, "the same 4-tuple opens on queue 1");
    assert_eq!(qs.handoffs(), 0);
}

/// sluice closed first (the backend's EOF), so its TCB waits in TIME-WAIT on worker 0; the
/// client reuses the 4-tuple on queue 1: worker 1 opens it, and a frame of the new
/// connection that lands on queue 0 ends the old TIME-WAIT there and goes to worker 1.
#[test]
fn a_4_tuple_in_time_wait_reopens_on_the_queue_of_its_new_syn() {
    use std::io::Write;
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let mut qs = Queues::with(2, &[(80, ListenerMode::Relay(backend_addr))]);
    let seg = |flags, seq, ack, payload| frame(Seg { src_port: 40_000, dst_port: 80, flags, seq, ack, payload });
    let out = qs.arrive(0, &seg(Flags::SYN, 1000, 0, &[]));
    let ack = tcp_of(&out[0]).1.wrapping_add(1);
    let _ = qs.arrive(0, &seg(Flags::ACK | Flags::PSH, 1001, ack, b"hi"));
    let (mut conn, _) = backend.accept().unwrap();
    conn.write_all(b"bye").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut fin = None;
    for i in 0..200 {
        let _ = backend_events(&mut qs.workers[0], Duration::from_millis(5), || Instant::from_millis(10 + i));
        let out = transmit(&mut qs.workers[0], Instant::from_millis(10 + i));
        fin = fin.or(out.iter().map(|f| tcp_of(f)).find(|t| t.0.fin()));
        if fin.is_some() {
            break;
        }
    }
    let (_, fin_seq, _, data) = fin.expect("sluice's FIN after the backend's EOF");
    let _ = qs.arrive(0, &seg(Flags::FIN | Flags::ACK, 1003, fin_seq.wrapping_add(data.len() as u32 + 1), &[]));
    let tw = qs.workers[0].tcp().handles().next().unwrap();
    assert_eq!(qs.workers[0].tcp().state(tw), Some(TcpState::TimeWait));
    assert!(qs.workers[0].flows.is_empty(), "a flow in TIME-WAIT is out of the index");

    let out = qs.arrive(1, &seg(Flags::SYN, 5000, 0, &[]));
    let (flags, iss, _, _) = tcp_of(&out[0]);
    assert_eq!(flags, Flags::SYN | Flags::ACK, "worker 1 opens the reused 4-tuple");
    let tuple = FourTuple { local: SocketAddr::from((PROXY, 80)), remote: SocketAddr::from((CLIENT, 40_000)) };
    assert_eq!(qs.workers[1].flows.owner(&tuple), Some(1));
    let _ = qs.arrive(0, &seg(Flags::ACK, 5001, iss.wrapping_add(1), &[]));
    assert_eq!(qs.workers[0].tcp().connection_count(), 0, "the old TIME-WAIT is gone");
    assert_eq!(qs.workers[1].tcp().active_count(), 1);
    assert_eq!(qs.workers[0].counters.handoff_moved, 1);
}

#[test]
fn refusals_are_answered_where_they_land() {
    let mut qs = Queues::new(2);
    let f = frame(Seg { src_port: 40_000, dst_port: 443, flags: Flags::SYN, seq: 1, ack: 0, payload: &[] });
    assert!(is_rst(&qs.arrive(1, &f)));
    assert!(qs.workers[1].flows.is_empty());
}
