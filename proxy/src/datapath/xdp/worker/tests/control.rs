//! The main thread's orders: a reload that retires a listener, a drain.

use super::*;

#[test]
fn reload_retires_a_listener_without_touching_its_connections() {
    let mut d = dispatch();
    let iss = establish(&mut d, 40000, 7, T0);
    let s = services(&d, &[(9, ListenerMode::Echo)]);
    let retired = d.reload(s);
    assert_eq!(retired.len(), 1, "the open connection on :7 is reported");
    assert_eq!(retired[0].remote, SocketAddr::from((CLIENT, 40000)));
    // The connection on the removed listener still echoes.
    let data = first_data(7, iss, b"ping");
    let _ = on(&mut d, &data);
    assert_eq!(payload(&transmit(&mut d, T0)), b"ping");
    // A new SYN to :7 is refused by the stack; :9 accepts.
    let _ = on(&mut d, &frame(Seg { src_port: 40001, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }));
    assert!(is_rst(&transmit(&mut d, T0)));
    establish(&mut d, 40002, 9, T0);
    assert_eq!(d.counters.connections_established, 2);
    // A frame to an address that never was a listener is still dropped.
    assert!(reply(&mut d, &syn(80)).is_none());
    assert_eq!(d.counters.dropped_no_listener, 1);
}

#[test]
fn draining_refuses_syns_and_names_open_flows() {
    let mut d = dispatch();
    establish(&mut d, 40000, 7, T0);
    let flows = d.drain();
    assert_eq!(flows.len(), 1);
    assert_eq!(d.counters.connections_active, 1);
    let _ = on(&mut d, &frame(Seg { src_port: 40001, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }));
    assert!(is_rst(&transmit(&mut d, T0)));
    assert_eq!(d.tcp().connection_count(), 1);
    // A reload while draining does not reopen the listener.
    let s = services(&d, &[(7, ListenerMode::Echo)]);
    d.reload(s);
    let _ = on(&mut d, &frame(Seg { src_port: 40002, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }));
    assert!(is_rst(&transmit(&mut d, T0)));
    d.abort_all(T0);
    assert!(is_rst(&transmit(&mut d, T0)), "the open connection is reset");
}
