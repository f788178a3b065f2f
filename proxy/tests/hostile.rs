//! Hostile clients (issue 12): the time bounds (a relay where nothing moves is reset after
//! `relay.idle_timeout_ms`, and a client that stops reading, a zero window it answers probes
//! for forever, is reset after `tcp.user_timeout_ms`; either way every resource of the
//! connection goes and sluice is idle again) and large handshakes (ClientHellos of tens of KiB
//! get a ServerHello, larger ones than sluice or rustls take an alert, never silence).

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

/// What came back for a hand-built ClientHello: the first bytes sluice sent, or how the
/// connection ended without any (the fields are for failure messages).
#[derive(Debug)]
#[allow(dead_code)]
enum Answer {
    ServerHello,
    Alert(u8),
    Other(Vec<u8>),
    Closed(String),
    Silence,
}

/// Sends a ClientHello of `size` bytes (records of 16 KiB) to 198.51.100.2:443 from the client
/// namespace and reads what comes back within 5 s (a bound on silence, not a speed).
fn hello_answer(sluice: &Sluice, size: usize) -> Result<Answer> {
    hello_in_records(sluice, size, sluice_tls::testhello::MAX_RECORD_PAYLOAD)
}

/// [`hello_answer`] with the ClientHello cut into records of `record` bytes.
fn hello_in_records(sluice: &Sluice, size: usize, record: usize) -> Result<Answer> {
    in_netns(&sluice.client(), move || -> Result<Answer> {
        let hello = sluice_tls::testhello::client_hello("a.test", size, record);
        let mut s = TcpStream::connect_timeout(&"198.51.100.2:443".parse()?, Duration::from_secs(3))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        if let Err(e) = s.write_all(&hello) {
            return Ok(Answer::Closed(format!("write: {e}")));
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < 7 {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Ok(Answer::Closed(format!("read: {e} after {} bytes", got.len()))),
            }
        }
        Ok(if sluice_tls::testhello::starts_with_server_hello(&got) {
            Answer::ServerHello
        } else if let Some(d) = sluice_tls::testhello::first_alert(&got) {
            Answer::Alert(d)
        } else if got.is_empty() {
            Answer::Silence
        } else {
            Answer::Other(got)
        })
    })?
}

/// sluice with TLS (a.test) on 198.51.100.2:443 and an HTTP backend, `relay` as its `[relay]`.
fn start_tls(prefix: &str, t: Transport, relay: &str) -> Result<Sluice> {
    let dir = std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    common::certificates(&dir)?;
    let d = dir.display();
    let config = t.config(&format!(
        "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [listener.tls]\ncertificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }}]\n\n\
         [relay]\n{relay}\n"
    ));
    let sluice = Sluice::start(prefix, &config)?;
    common::http_backend(&sluice.backend())?;
    Ok(sluice)
}

/// ClientHellos of 11, 40 and 61 KB (records of 16 KiB, sent at once from a kernel socket) get a
/// ServerHello; one larger than rustls holds (0xffff + 4 bytes) gets a fatal decode_error alert,
/// not silence; so does an 11 KB one cut into 1-byte records (six times its size in framing:
/// more than rustls joins), where the same in 100-byte records is answered. With
/// `relay.tls_max_handshake_bytes = 32768`, the 11 KB one is still answered and the 40 KB one
/// gets the alert. Every alert is counted `tls_handshake_too_large`.
fn large_client_hellos_get_a_server_hello_or_an_alert(t: Transport) -> Result<()> {
    const DECODE_ERROR: u8 = 50;
    let sluice = start_tls(&t.prefix("ho3-"), t, "")?;
    for size in [11_000, 40_000, 61_000] {
        let a = hello_answer(&sluice, size)?;
        ensure!(matches!(a, Answer::ServerHello), "{t:?}: a {size}-byte ClientHello got {a:?}");
    }
    let a = hello_in_records(&sluice, 11_000, 100)?;
    ensure!(matches!(a, Answer::ServerHello), "{t:?}: 11 KB in 100-byte records got {a:?}");
    let a = hello_answer(&sluice, 0xffff + 4)?;
    ensure!(matches!(a, Answer::Alert(DECODE_ERROR)), "{t:?}: a ClientHello over rustls's bound got {a:?}");
    let a = hello_in_records(&sluice, 11_000, 1)?;
    ensure!(matches!(a, Answer::Alert(DECODE_ERROR)), "{t:?}: 11 KB in 1-byte records got {a:?}");
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "tls_handshake_too_large") == 2, "{stats:#}");
    drop(sluice);

    let sluice = start_tls(&t.prefix("ho4-"), t, "tls_max_handshake_bytes = 32768")?;
    let a = hello_answer(&sluice, 11_000)?;
    ensure!(matches!(a, Answer::ServerHello), "{t:?}: 11 KB under a 32 KiB bound got {a:?}");
    let a = hello_answer(&sluice, 40_000)?;
    ensure!(matches!(a, Answer::Alert(DECODE_ERROR)), "{t:?}: 40 KB over a 32 KiB bound got {a:?}");
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "tls_handshake_too_large") == 1, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "tls_failed") == 1, "{stats:#}");
    Ok(())
}

on_both_transports!(large_client_hellos_get_a_server_hello_or_an_alert);
