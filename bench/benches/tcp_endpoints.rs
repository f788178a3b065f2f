//! TCP stack benchmark, in memory, one core. Prints figures; asserts nothing about time.
//!
//! 1. Connections per second between two sluice `Endpoint`s: SYN, established, one request
//!    (100 B) and response (1 KiB), FIN both ways, closed (TIME-WAIT expired), one connection
//!    at a time, with the cost of each phase. Packets go through the real emit and parse code
//!    (checksums computed and verified).
//! 2. The same workload between two smoltcp 0.12 sockets on one loopback interface, and the
//!    ratio.
//! 3. The throughput of one sluice connection through the simulator (`sluice_tcp::sim`), with
//!    and without 1 % loss: wall-clock bytes/s of the stack and virtual goodput on the link.
//!
//! Run: `cargo bench -p sluice-bench --bench tcp_endpoints` (env `TCP_BENCH_CONNS`,
//! `TCP_BENCH_MIB` to change the sizes).

use sluice_tcp::sim::{LinkConfig, run_transfer};
use sluice_tcp::{Config, Endpoint, Event, Instant as VInstant, State};
use sluice_wire::{Checksum, ipv4, tcp};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const REQUEST: usize = 100;
const RESPONSE: usize = 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------- sluice

struct Wire {
    buf: Vec<u8>,
}

impl Wire {
    /// Move every pending packet from `from` into `to`. Returns how many moved.
    fn carry(&mut self, now: VInstant, from: &mut Endpoint, to: &mut Endpoint) -> usize {
        let mut n = 0;
        while let Some(len) = from.poll_transmit(now, &mut self.buf) {
            let ipp = ipv4::Packet::new_checked(&self.buf[..len]).expect("ipv4");
            let ip = ipv4::Repr::parse(&ipp, Checksum::Verify).expect("ipv4 repr");
            let tp = tcp::Packet::new_checked(ipp.payload()).expect("tcp");
            let seg =
                tcp::Repr::parse(&tp, ip.src_addr.into(), ip.dst_addr.into(), Checksum::Verify).expect("tcp repr");
            to.handle_segment(now, &ip.into(), &seg);
            n += 1;
        }
        n
    }
}

#[derive(Default)]
struct Phases {
    syn: Duration,
    established: Duration,
    request_response: Duration,
    fin: Duration,
    closed: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.syn + self.established + self.request_response + self.fin + self.closed
    }
    fn print(&self, n: usize) {
        let per = |d: Duration| d.as_nanos() as f64 / n as f64 / 1000.0;
        println!(
            "  per connection (us): SYN {:.2}  established {:.2}  request+response {:.2}  FIN {:.2}  closed {:.2}  total {:.2}",
            per(self.syn),
            per(self.established),
            per(self.request_response),
            per(self.fin),
            per(self.closed),
            per(self.total())
        );
    }
}

fn sluice_cps(n: usize) -> Phases {
    let cfg = Config {
        recv_buffer: 16 * 1024,
        send_buffer: 16 * 1024,
        time_wait: Duration::from_secs(1),
        secret: [9; 16],
        ..Config::default()
    };
    let mut vnow = VInstant::from_millis(1_000);
    let mut client = Endpoint::new(cfg.clone(), vnow);
    let mut server = Endpoint::new(cfg, vnow);
    let server_addr = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 80);
    server.listen(server_addr.into()).unwrap();
    let mut wire = Wire { buf: vec![0; 2048] };
    let request = [b'q'; REQUEST];
    let response = [b'r'; RESPONSE];
    let mut rbuf = [0u8; 4096];
    let mut p = Phases::default();

    // Pump both ways until quiet; if `done` is still false, run the earliest timer and repeat.
    fn settle(
        wire: &mut Wire,
        vnow: &mut VInstant,
        c: &mut Endpoint,
        s: &mut Endpoint,
        mut done: impl FnMut(&mut Endpoint, &mut Endpoint) -> bool,
    ) {
        for _ in 0..1000 {
            loop {
                let moved = wire.carry(*vnow, c, s) + wire.carry(*vnow, s, c);
                if moved == 0 {
                    break;
                }
            }
            if done(c, s) {
                return;
            }
            let t = [c.poll_timeout(), s.poll_timeout()].into_iter().flatten().min().expect("stuck without timers");
            *vnow = (*vnow).max(t);
            c.handle_timeout(*vnow);
            s.handle_timeout(*vnow);
        }
        panic!("did not settle");
    }

    for i in 0..n {
        let local = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 1024 + (i % 60_000) as u16);
        // SYN: connect, the SYN crosses, the server creates its TCB.
        let t0 = Instant::now();
        let h = client.connect(vnow, local.into(), server_addr.into()).unwrap();
        wire.carry(vnow, &mut client, &mut server);
        let t1 = Instant::now();
        p.syn += t1 - t0;
        // Established: SYN-ACK and ACK; both sides see Established.
        wire.carry(vnow, &mut server, &mut client);
        wire.carry(vnow, &mut client, &mut server);
        let mut sh = None;
        while let Some((hh, e)) = server.poll_event() {
            if e == Event::Established {
                sh = Some(hh);
            }
        }
        let sh = sh.expect("server established");
        assert_eq!(client.state(h), Some(State::Established));
        while client.poll_event().is_some() {}
        let t2 = Instant::now();
        p.established += t2 - t1;
        // One request and its response.
        client.send(h, &request).unwrap();
        wire.carry(vnow, &mut client, &mut server);
        let mut got = 0;
        while got < REQUEST {
            got += server.recv(sh, &mut rbuf).unwrap();
        }
        server.send(sh, &response).unwrap();
        let mut got = 0;
        settle(&mut wire, &mut vnow, &mut client, &mut server, |c, _| {
            while let Ok(k) = c.recv(h, &mut rbuf) {
                if k == 0 {
                    break;
                }
                got += k;
            }
            got >= RESPONSE
        });
        let t3 = Instant::now();
        p.request_response += t3 - t2;
        // FIN: the server closes, the client reads the end and closes too.
        server.close(sh);
        settle(&mut wire, &mut vnow, &mut client, &mut server, |c, _| {
            c.recv(h, &mut rbuf) == Err(sluice_tcp::StreamError::Finished)
        });
        client.close(h);
        settle(&mut wire, &mut vnow, &mut client, &mut server, |c, s| {
            c.connection_count() == 0 && s.state(sh) == Some(State::TimeWait)
        });
        let t4 = Instant::now();
        p.fin += t4 - t3;
        // Closed: TIME-WAIT expires, both TCBs are freed.
        vnow += Duration::from_secs(1);
        server.handle_timeout(vnow);
        client.handle_timeout(vnow);
        assert_eq!(server.connection_count() + client.connection_count(), 0);
        while server.poll_event().is_some() {}
        while client.poll_event().is_some() {}
        p.closed += Instant::now() - t4;
    }
    p
}

// ---------------------------------------------------------------- smoltcp

fn smoltcp_cps(n: usize) -> Phases {
    use smoltcp::iface::{Config as IfConfig, Interface, SocketSet};
    use smoltcp::phy::{Loopback, Medium};
    use smoltcp::socket::tcp as stcp;
    use smoltcp::time::{Duration as SDuration, Instant as SInstant};
    use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

    let mut device = Loopback::new(Medium::Ip);
    let mut vnow = SInstant::from_millis(1_000);
    let mut iface = Interface::new(IfConfig::new(HardwareAddress::Ip), &mut device, vnow);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(198, 51, 100, 2), 24)).unwrap();
    });
    let mk =
        || stcp::Socket::new(stcp::SocketBuffer::new(vec![0; 16 * 1024]), stcp::SocketBuffer::new(vec![0; 16 * 1024]));
    let mut sockets = SocketSet::new(Vec::new());
    let server = sockets.add(mk());
    let client = sockets.add(mk());
    let request = [b'q'; REQUEST];
    let response = [b'r'; RESPONSE];
    let mut p = Phases::default();

    // Poll until the condition holds; when idle, jump the virtual clock to the next timer.
    let settle = |iface: &mut Interface,
                  device: &mut Loopback,
                  sockets: &mut SocketSet<'_>,
                  vnow: &mut SInstant,
                  done: &mut dyn FnMut(&mut SocketSet<'_>) -> bool| {
        for _ in 0..10_000 {
            iface.poll(*vnow, device, sockets);
            if done(sockets) {
                return;
            }
            match iface.poll_delay(*vnow, sockets) {
                Some(d) if d > SDuration::ZERO => *vnow += d,
                Some(_) => {}
                None => *vnow += SDuration::from_millis(1),
            }
        }
        panic!(
            "smoltcp did not settle: client {:?} server {:?}",
            sockets.get::<stcp::Socket<'_>>(client).state(),
            sockets.get::<stcp::Socket<'_>>(server).state()
        );
    };

    for i in 0..n {
        let t0 = Instant::now();
        sockets.get_mut::<stcp::Socket<'_>>(server).listen(80).unwrap();
        let cx = iface.context();
        sockets
            .get_mut::<stcp::Socket<'_>>(client)
            .connect(cx, (IpAddress::v4(198, 51, 100, 2), 80), 1024 + (i % 60_000) as u16)
            .unwrap();
        // One poll sends the SYN and delivers it to the listener.
        iface.poll(vnow, &mut device, &mut sockets);
        if std::env::var_os("SMOL_DEBUG").is_some() {
            for _ in 0..4 {
                eprintln!(
                    "{i}: client {:?} server {:?}",
                    sockets.get::<stcp::Socket<'_>>(client).state(),
                    sockets.get::<stcp::Socket<'_>>(server).state()
                );
                iface.poll(vnow, &mut device, &mut sockets);
            }
        }
        let t1 = Instant::now();
        p.syn += t1 - t0;
        settle(&mut iface, &mut device, &mut sockets, &mut vnow, &mut |s| {
            s.get::<stcp::Socket<'_>>(client).state() == stcp::State::Established
                && s.get::<stcp::Socket<'_>>(server).state() == stcp::State::Established
        });
        let t2 = Instant::now();
        p.established += t2 - t1;
        sockets.get_mut::<stcp::Socket<'_>>(client).send_slice(&request).unwrap();
        let mut got = 0;
        let mut responded = false;
        let mut rbuf = [0u8; 4096];
        settle(&mut iface, &mut device, &mut sockets, &mut vnow, &mut |s| {
            let sv = s.get_mut::<stcp::Socket<'_>>(server);
            if !responded {
                let mut req = 0;
                while let Ok(k) = sv.recv_slice(&mut rbuf) {
                    if k == 0 {
                        break;
                    }
                    req += k;
                }
                if req > 0 {
                    sv.send_slice(&response).unwrap();
                    responded = true;
                }
            }
            let cl = s.get_mut::<stcp::Socket<'_>>(client);
            while let Ok(k) = cl.recv_slice(&mut rbuf) {
                if k == 0 {
                    break;
                }
                got += k;
            }
            got >= RESPONSE
        });
        let t3 = Instant::now();
        p.request_response += t3 - t2;
        sockets.get_mut::<stcp::Socket<'_>>(server).close();
        settle(&mut iface, &mut device, &mut sockets, &mut vnow, &mut |s| {
            s.get::<stcp::Socket<'_>>(client).state() == stcp::State::CloseWait
        });
        sockets.get_mut::<stcp::Socket<'_>>(client).close();
        settle(&mut iface, &mut device, &mut sockets, &mut vnow, &mut |s| {
            s.get::<stcp::Socket<'_>>(client).state() == stcp::State::Closed
                && matches!(s.get::<stcp::Socket<'_>>(server).state(), stcp::State::TimeWait | stcp::State::Closed)
        });
        let t4 = Instant::now();
        p.fin += t4 - t3;
        // smoltcp's TIME-WAIT is fixed at 10 s.
        vnow += SDuration::from_secs(11);
        iface.poll(vnow, &mut device, &mut sockets);
        assert_eq!(sockets.get::<stcp::Socket<'_>>(server).state(), stcp::State::Closed);
        p.closed += Instant::now() - t4;
    }
    p
}

// ---------------------------------------------------------------- throughput

fn throughput(mib: usize, loss: f64) {
    let data: Vec<u8> = (0..mib << 20).map(|i| (i * 31 + 7) as u8).collect();
    let cfg =
        Config { recv_buffer: 1 << 20, send_buffer: 1 << 20, time_wait: Duration::from_secs(1), ..Config::default() };
    let link = LinkConfig {
        loss,
        delay: Duration::from_millis(5),
        bandwidth: Some(1_000_000_000),
        max_queue_delay: Duration::from_millis(50),
        ..LinkConfig::default()
    };
    let t0 = Instant::now();
    let t = run_transfer(cfg, link, 7, data.clone(), Vec::new(), Duration::from_secs(36_000));
    let wall = t0.elapsed();
    assert!(t.server.received == data, "transfer incomplete or corrupt");
    let s = t.pair.a.stats();
    let virt = t.data_done.expect("all data delivered").as_secs_f64();
    println!(
        "  {:>4.1} % loss: {} MiB in {:.3} s wall = {:.0} MiB/s of stack work (both endpoints, one core); virtual {:.2} s = {:.0} Mbit/s goodput on a 1 Gbit/s, 10 ms RTT link (handshake and slow start included); retransmits rto/fast/sack {}/{}/{}, link lost {}",
        loss * 100.0,
        mib,
        wall.as_secs_f64(),
        mib as f64 / wall.as_secs_f64(),
        virt,
        (mib << 20) as f64 * 8.0 / virt / 1e6,
        s.retransmits_rto,
        s.retransmits_fast,
        s.retransmits_sack,
        t.pair.stats.lost
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n = env_usize("TCP_BENCH_CONNS", 20_000);
    let mib = env_usize("TCP_BENCH_MIB", 64);
    println!(
        "tcp_endpoints: {n} sequential connections, {REQUEST} B request, {RESPONSE} B response, in memory, one core"
    );

    // Warm up both.
    sluice_cps(n / 10 + 1);
    smoltcp_cps(n / 10 + 1);

    // The machine may be shared: interleave the two stacks over several rounds and report the
    // best round of each (the least disturbed), plus the median.
    let rounds = env_usize("TCP_BENCH_ROUNDS", 5);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..rounds {
        ours.push(sluice_cps(n));
        theirs.push(smoltcp_cps(n));
    }
    ours.sort_by_key(Phases::total);
    theirs.sort_by_key(Phases::total);
    let cps = |p: &Phases| n as f64 / p.total().as_secs_f64();
    let (s_best, s_med) = (cps(&ours[0]), cps(&ours[rounds / 2]));
    let (m_best, m_med) = (cps(&theirs[0]), cps(&theirs[rounds / 2]));
    println!("sluice  Endpoint <-> Endpoint: {s_best:.0} connections/s (best of {rounds}), median {s_med:.0}");
    ours[0].print(n);
    println!(
        "smoltcp socket <-> socket (loopback iface): {m_best:.0} connections/s (best of {rounds}), median {m_med:.0}"
    );
    theirs[0].print(n);
    println!("ratio sluice/smoltcp: {:.2} (best), {:.2} (median)", s_best / m_best, s_med / m_med);

    println!("single-connection throughput through sluice_tcp::sim ({mib} MiB one way):");
    throughput(mib, 0.0);
    throughput(mib, 0.01);
}
