//! Tests for the endpoint around the TCBs: its timer heap over thousands of connections,
//! stale handles, the size of a TCB.

use super::*;

#[test]
fn poll_timeout_is_the_earliest_of_thousands() {
    let mut t = T::new(config());
    let start = t.now;
    for i in 0..3000u16 {
        t.ep.connect(t.now, SocketAddr::new(LOCAL_IP, 10_000 + i), SocketAddr::new(REMOTE_IP, 80)).unwrap();
        if i % 100 == 99 {
            assert_eq!(t.recv_all().len(), 100);
            t.now += Duration::from_millis(1);
        }
    }
    t.ep.check_invariants().unwrap();
    // The first batch of SYNs went out at `start`: its RTO (1 s) is the earliest timer.
    assert_eq!(t.ep.poll_timeout(), Some(start + Duration::from_secs(1)));
    t.fire();
    assert_eq!(t.recv_all().len(), 100, "exactly the SYNs due were retransmitted");
    assert_eq!(t.ep.poll_timeout(), Some(start + Duration::from_millis(1001)));
    // Closing them all leaves nothing behind.
    for i in 0..3000u16 {
        let tup = FourTuple { local: SocketAddr::new(LOCAL_IP, 10_000 + i), remote: SocketAddr::new(REMOTE_IP, 80) };
        let h = t.ep.lookup(&tup).unwrap();
        t.ep.close(h);
    }
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn stale_handles_are_rejected() {
    let mut t = established();
    let old = t.h();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 1);
    // A new connection may reuse the slot; the old handle must not reach it.
    let h = t.ep.connect(t.now, SocketAddr::new(LOCAL_IP, 5555), SocketAddr::new(REMOTE_IP, 80)).unwrap();
    assert_ne!(h, old);
    assert_eq!(t.ep.state(old), None);
    assert_eq!(t.ep.send(old, b"x"), Err(crate::StreamError::InvalidHandle));
}

#[test]
fn connection_size_is_modest() {
    // A TCB lives in a Box; keep it small enough that moving it is cheap.
    let size = core::mem::size_of::<crate::connection::Connection>();
    assert!(size < 2048, "Connection is {size} bytes");
    println!("Connection: {size} bytes");
}
