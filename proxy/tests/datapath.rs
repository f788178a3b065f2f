//! The datapath against a real kernel (issue 2): XDP steers only listener traffic to sluice's
//! AF_XDP sockets on every queue; everything else reaches the kernel untouched.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Sluice, config};
use nix::sys::signal::Signal;
use sluice_testbed::{in_netns, in_ns, snmp_counter, xdp_attached};

const REFUSE_443: &str = "[[listener]]\naddress = \"198.51.100.2:443\"\nrefuse = true\n";

/// `n` connect() attempts to `addr` from the client namespace; returns how many failed with
/// ECONNREFUSED and the slowest attempt.
fn connect_many(ns: &str, addr: &'static str, n: usize) -> Result<(usize, Duration, Vec<String>)> {
    in_netns(ns, move || {
        let addr: SocketAddr = addr.parse().unwrap();
        let (mut refused, mut slowest, mut other) = (0, Duration::ZERO, Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => other.push(e.to_string()),
                Ok(_) => other.push("connected".into()),
            }
            slowest = slowest.max(t.elapsed());
        }
        (refused, slowest, other)
    })
}

fn refuses_with_own_rst(mode: &str, prefix: &str) -> Result<()> {
    let sluice = Sluice::start(prefix, &config(mode, REFUSE_443))?;
    let kernel_rsts_before = snmp_counter(&sluice.proxy(), "Tcp", "OutRsts")?;

    let (refused, slowest, other) = connect_many(&sluice.client(), "198.51.100.2:443", 200)?;
    ensure!(refused == 200, "only {refused}/200 refused; others: {other:?}");
    ensure!(slowest < Duration::from_secs(1), "a refusal took {slowest:?}: not fast");

    let stats = sluice.stats()?;
    let rsts = sluice.queue_total(&stats, "rst_sent");
    ensure!(rsts >= 200, "sluice counted {rsts} RSTs sent, expected >= 200: {stats:#}");
    let kernel_rsts_after = snmp_counter(&sluice.proxy(), "Tcp", "OutRsts")?;
    ensure!(
        kernel_rsts_after == kernel_rsts_before,
        "the proxy's kernel sent {} RSTs of its own",
        kernel_rsts_after - kernel_rsts_before
    );
    ensure!(stats["xdp"]["counters"]["redirected"].as_u64() >= Some(200), "xdp counters: {stats:#}");
    if mode == "native" {
        // veth in driver mode spreads flows over both queues (the sender's queue choice).
        let queues = stats["queues"].as_array().context("queues")?;
        ensure!(queues.len() == 2, "expected a socket on each of the 2 queues: {stats:#}");
        for q in queues {
            ensure!(q["rx_frames"].as_u64() > Some(0), "a queue received nothing: {stats:#}");
        }
    }
    ensure!(stats["xdp"]["mode"] == mode, "attached in {} mode, asked for {mode}", stats["xdp"]["mode"]);
    Ok(())
}

#[test]
fn refuses_connections_with_own_rst_native() -> Result<()> {
    refuses_with_own_rst("native", "sl-dp1-")
}

#[test]
fn refuses_connections_with_own_rst_skb() -> Result<()> {
    refuses_with_own_rst("skb", "sl-dp2-")
}

/// A TCP exchange with a kernel listener on another port of the proxy, and the ARP it needs,
/// work while sluice is attached.
fn other_traffic_untouched(mode: &str, prefix: &str) -> Result<()> {
    let sluice = Sluice::start(prefix, &config(mode, REFUSE_443))?;
    let listener = in_netns(&sluice.proxy(), || TcpListener::bind("198.51.100.2:8080"))??;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(&buf)
    });
    // Forget the proxy's MAC so that the exchange needs ARP through the XDP program.
    in_ns(&sluice.client(), "ip", &["neigh", "flush", "dev", "cli0"])?;
    let echoed = in_netns(&sluice.client(), || -> std::io::Result<[u8; 5]> {
        let mut s = TcpStream::connect_timeout(&"198.51.100.2:8080".parse().unwrap(), Duration::from_secs(3))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        Ok(buf)
    })??;
    server.join().unwrap()?;
    ensure!(&echoed == b"hello");
    let stats = sluice.stats()?;
    let c = &stats["xdp"]["counters"];
    ensure!(c["pass_no_listener"].as_u64() > Some(0), "TCP to :8080 not counted as passed: {stats:#}");
    ensure!(c["pass_arp"].as_u64() > Some(0), "ARP not counted as passed: {stats:#}");
    Ok(())
}

#[test]
fn other_traffic_untouched_native() -> Result<()> {
    other_traffic_untouched("native", "sl-dp3-")
}

#[test]
fn other_traffic_untouched_skb() -> Result<()> {
    other_traffic_untouched("skb", "sl-dp4-")
}

/// However sluice ends, no XDP program stays on px0.
#[test]
fn detaches_on_every_kind_of_exit() -> Result<()> {
    for (i, signal) in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        let mut sluice = Sluice::start(&format!("sl-dp5{i}-"), &config("native", REFUSE_443))?;
        ensure!(xdp_attached(&sluice.proxy(), "px0")?, "not attached while running");
        let status = sluice.process.signal_and_wait(signal, Duration::from_secs(10))?;
        if signal != Signal::SIGKILL {
            ensure!(status.success(), "sluice exited with {status} on {signal}:\n{}", sluice.process.log());
        }
        // The bpf link dies with the process; give the kernel a moment to release it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while xdp_attached(&sluice.proxy(), "px0")? {
            ensure!(Instant::now() < deadline, "XDP still attached to px0 after {signal}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Hand-made broken frames towards the listener: passed or dropped, counted, and sluice serves on.
#[test]
fn malformed_frames_are_counted_and_survived() -> Result<()> {
    let sluice = Sluice::start("sl-dp6-", &config("native", REFUSE_443))?;
    // Learn the proxy's MAC (and prove sluice is up) with one refused connect.
    let (refused, _, _) = connect_many(&sluice.client(), "198.51.100.2:443", 1)?;
    ensure!(refused == 1);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/malformed_frames.py");
    let out = in_ns(&sluice.client(), "python3", &[script, "cli0", "198.51.100.1", "198.51.100.2", "443"])?;
    let sent: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().context("script output")?;
    ensure!(sent >= 5, "sent only {sent} frames");
    std::thread::sleep(Duration::from_millis(200));
    let stats = sluice.stats()?;
    let c = &stats["xdp"]["counters"];
    let xdp_malformed = c["pass_malformed"].as_u64().unwrap_or(0);
    let worker_dropped = sluice.queue_total(&stats, "dropped_malformed");
    ensure!(
        xdp_malformed + worker_dropped >= sent,
        "{sent} malformed frames sent, {xdp_malformed} passed as malformed by XDP, {worker_dropped} dropped by workers: {stats:#}"
    );
    ensure!(worker_dropped >= 1, "no malformed frame reached a worker (options past the header should): {stats:#}");
    // Still serving.
    let (refused, _, other) = connect_many(&sluice.client(), "198.51.100.2:443", 20)?;
    ensure!(refused == 20, "after malformed frames only {refused}/20 refused: {other:?}");
    Ok(())
}
