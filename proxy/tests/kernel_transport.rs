//! What is the kernel transport's own (`[datapath] transport = "kernel"`): sluice in `{p}proxy`
//! serves 198.51.100.2 on Linux's TCP stack (one SO_REUSEPORT listener per worker), attaches no
//! XDP program, echoes and refuses, reloads and drains as nobody. TLS, the relay, backends and
//! limits are tested on both transports in their own files (`on_both_transports!`).

mod common;

use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Sluice, echo_backend, kernel_config};
use sluice_testbed::{in_netns, xdp_attached};

/// Waits (up to 15 s) until the workers published `n` closed connections and none open; returns
/// the stats then.
fn wait_closed(sluice: &Sluice, n: u64) -> Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stats = sluice.wait_idle()?;
        if sluice.queue_total(&stats, "connections_closed") == n {
            return Ok(stats);
        }
        ensure!(std::time::Instant::now() < deadline, "not {n} connections closed after 15 s: {stats:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What every kernel-transport run shows: no XDP on px0, the transport named, two workers, no
/// TCP handshake timings (not visible from user space on kernel sockets), nothing left open.
fn common_checks(sluice: &Sluice, stats: &serde_json::Value) -> Result<()> {
    ensure!(!xdp_attached(&sluice.proxy(), "px0")?, "an XDP program is attached to px0");
    ensure!(stats["transport"] == "kernel", "{stats:#}");
    let queues = stats["queues"].as_array().context("queues")?;
    ensure!(queues.len() == 2, "two workers: {stats:#}");
    for (i, q) in queues.iter().enumerate() {
        ensure!(q["queue"] == i, "{stats:#}");
    }
    ensure!(stats["latency"]["tcp_handshake"]["count"] == 0, "{:#}", stats["latency"]);
    let (established, closed) =
        (sluice.queue_total(stats, "connections_established"), sluice.queue_total(stats, "connections_closed"));
    ensure!(established == closed, "{established} established, {closed} closed: {stats:#}");
    Ok(())
}

/// 64 MiB each way through a plain relay listener arrive intact; an echo listener echoes; a
/// refusing listener's SYN gets the kernel's RST; SIGTERM stops sluice cleanly.
#[test]
fn plain_relay_echo_and_refuse_on_kernel_sockets() -> Result<()> {
    let mut sluice = Sluice::start(
        "kt2-",
        &kernel_config(
            2,
            "[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n\n\
             [[listener]]\naddress = \"198.51.100.2:7\"\necho = true\n\n\
             [[listener]]\naddress = \"198.51.100.2:443\"\nrefuse = true\n",
        ),
    )?;
    echo_backend(&sluice.topology.topology.backend())?;
    let mib = common::transfer_mib(64);
    let (sent, back, elapsed) = in_netns(&sluice.client(), move || common::echo_stream("198.51.100.2:80", mib << 20))??;
    ensure!(sent == back, "sha256 of the relayed stream differs");
    eprintln!(
        "{mib} MiB relayed each way in {elapsed:.2?} ({:.1} MB/s)",
        (mib << 20) as f64 / elapsed.as_secs_f64() / 1e6
    );
    let (sent, back, _) = in_netns(&sluice.client(), || common::echo_stream("198.51.100.2:7", 1 << 20))??;
    ensure!(sent == back, "sha256 of the echoed stream differs");
    let refused = in_netns(&sluice.client(), || {
        TcpStream::connect_timeout(&"198.51.100.2:443".parse().unwrap(), Duration::from_secs(5))
    })?;
    match refused {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => bail!("expected a refused connection, got {other:?}"),
    }
    let stats = wait_closed(&sluice, 2)?;
    common_checks(&sluice, &stats)?;
    let total = |c| sluice.queue_total(&stats, c);
    let bytes = (mib as u64) << 20;
    ensure!(total("connections_established") == 2, "{stats:#}");
    ensure!(total("relays_opened") == 1 && total("relays_clean") == 1, "{stats:#}");
    ensure!(total("relay_bytes_to_backend") == bytes && total("relay_bytes_to_client") == bytes, "{stats:#}");
    ensure!(total("echo_bytes") == 1 << 20, "{stats:#}");
    ensure!(stats["latency"]["first_backend_byte"]["count"] == 1, "{:#}", stats["latency"]);
    let status = sluice.process.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5))?;
    ensure!(status.success(), "sluice exited with {status}:\n{}", sluice.process.log());
    Ok(())
}

/// Operations on kernel sockets: running as nobody with only CAP_NET_BIND_SERVICE, SIGHUP adds a
/// listener on a privileged port, SIGTERM drains (new connections refused by the kernel, the
/// open one finishes) and sluice exits by itself.
#[test]
fn reload_and_drain_on_kernel_sockets_as_nobody() -> Result<()> {
    use std::io::{Read, Write};
    let relay = "[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n";
    let mut sluice = Sluice::start("kt3-", &kernel_config(2, relay))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", sluice.process.pid()))?;
    let cap = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("").to_owned();
    ensure!(cap("Uid:").starts_with("65534"), "{status}");
    // Bit 10: CAP_NET_BIND_SERVICE, kept so that a reload can listen below 1024.
    ensure!(cap("CapEff:") == "0000000000000400" && cap("CapPrm:") == "0000000000000400", "{status}");
    let connect = |port: u16| {
        move || -> std::io::Result<TcpStream> {
            let s = TcpStream::connect_timeout(
                &format!("198.51.100.2:{port}").parse().expect("addr"),
                Duration::from_secs(3),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(s)
        }
    };
    let ping = |s: &mut TcpStream| -> Result<()> {
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        ensure!(&b == b"ping");
        Ok(())
    };
    let mut open = in_netns(&sluice.client(), connect(80))??;
    ping(&mut open)?;

    let path = sluice.dir.join("sluice.toml");
    let config = std::fs::read_to_string(&path)?;
    std::fs::write(&path, format!("{config}\n[[listener]]\naddress = \"198.51.100.2:7\"\necho = true\n"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sluice.process.pid() as i32), nix::sys::signal::Signal::SIGHUP)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sluice.stats()?["reloads"]["ok"] != 1 {
        ensure!(std::time::Instant::now() < deadline, "no reload:\n{}", sluice.process.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut echo = in_netns(&sluice.client(), connect(7))?.context("the listener the reload added")?;
    ping(&mut echo)?;
    drop(echo);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sluice.process.pid() as i32), nix::sys::signal::Signal::SIGTERM)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = sluice.stats()?;
        if stats["queues"].as_array().is_some_and(|q| q.iter().all(|q| q["draining"] == 1)) {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "not draining: {stats:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = in_netns(&sluice.client(), connect(80))?;
    ensure!(
        refused.as_ref().err().map(std::io::Error::kind) == Some(std::io::ErrorKind::ConnectionRefused),
        "a new connection while draining: {refused:?}"
    );
    ping(&mut open)?;
    open.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    open.read_to_end(&mut rest)?;
    let status = sluice.process.signal_and_wait(nix::sys::signal::Signal::SIGCONT, Duration::from_secs(10))?;
    ensure!(status.success(), "{status}:\n{}", sluice.process.log());
    ensure!(sluice.process.log().contains("drained: every connection finished"), "{}", sluice.process.log());
    Ok(())
}
