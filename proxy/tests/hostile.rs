//! Hostile clients (issue 12), the time bounds so far: a relay where nothing moves is reset
//! after `relay.idle_timeout_ms`, and a client that stops reading (a zero window it answers
//! probes for, forever) is reset after `tcp.user_timeout_ms`; either way every resource of the
//! connection goes and sluice is idle again.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use common::{Sluice, Transport, bench_backend, echo_backend};
use sluice_testbed::in_netns;

/// Waits up to `limit` until `/stats.json` satisfies `f`.
fn wait_for(sluice: &Sluice, what: &str, limit: Duration, f: impl Fn(&serde_json::Value) -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let stats = sluice.stats()?;
        if f(&stats) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}: {stats:#}\n{}", sluice.process.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A relay through which nothing moves for `relay.idle_timeout_ms` (1 s here) is ended: the
/// client gets a RST, the backend connection goes, sluice is idle again.
fn an_idle_relay_is_reset_after_the_idle_timeout(t: Transport) -> Result<()> {
    let config = "[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n\n\
                  [relay]\nidle_timeout_ms = 1000\n";
    let sluice = Sluice::start(&t.prefix("ho1-"), &t.config(config))?;
    echo_backend(&sluice.backend())?;
    let ended = in_netns(&sluice.client(), || -> Result<Duration> {
        let mut s = TcpStream::connect_timeout(&"198.51.100.2:80".parse()?, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        ensure!(&b == b"ping");
        let quiet = Instant::now();
        match s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(quiet.elapsed()),
            other => bail!("an idle relay ended with {other:?}, not a reset"),
        }
    })??;
    // The sweep runs once a second: ended within the timeout plus that and a margin.
    ensure!(ended >= Duration::from_millis(900) && ended < Duration::from_secs(5), "reset after {ended:?}");
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "relays_idle_timeout") == 1, "{stats:#}");
    Ok(())
}

on_both_transports!(an_idle_relay_is_reset_after_the_idle_timeout);

/// A client that asks for 10 MiB and never reads: its window closes and it answers sluice's
/// zero-window probes for ever. With `tcp.user_timeout_ms = 2000` sluice resets it (counted
/// `user_timeouts`) and its relay, backend connection, buffers and UMEM frames go.
#[test]
fn a_client_that_stops_reading_is_reset_after_the_user_timeout() -> Result<()> {
    let config = common::config(
        "native",
        "[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [tcp]\ntime_wait_ms = 1000\nuser_timeout_ms = 2000\n",
    );
    let sluice = Sluice::start("ho2-", &config)?;
    let _backend = bench_backend(&sluice, 8080, "bytes", false)?;
    let client = in_netns(&sluice.client(), || -> Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        // A small receive buffer: the window closes after a few segments.
        s.set_recv_buffer_size(4096)?;
        s.connect_timeout(&"198.51.100.2:80".parse::<std::net::SocketAddr>()?.into(), Duration::from_secs(3))?;
        let mut s: TcpStream = s.into();
        s.write_all(b"GET /bytes/10485760 HTTP/1.1\r\nHost: stall\r\nConnection: close\r\n\r\n")?;
        Ok(s)
    })??;
    wait_for(&sluice, "user timeout", Duration::from_secs(20), |s| sluice.tcp_total(s, "user_timeouts") >= 1)?;
    let stats = sluice.wait_idle()?;
    ensure!(sluice.tcp_total(&stats, "user_timeouts") == 1, "{stats:#}");
    // (`wait_idle` also saw every UMEM frame back but those lent to the fill rings.)
    let mut client = client;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut sink = vec![0u8; 1 << 16];
    let mut got = 0usize;
    let end = loop {
        match client.read(&mut sink) {
            Ok(0) => break "EOF".to_owned(),
            Ok(n) => got += n,
            Err(e) => break e.kind().to_string(),
        }
    };
    ensure!(got < 10 << 20, "the whole body arrived ({got} bytes, then {end}): nothing stalled");
    ensure!(end.contains("reset"), "the client's connection ended with {end}, not a reset, after {got} bytes");
    eprintln!("user timeout: the client read {got} bytes, then {end}");
    Ok(())
}
