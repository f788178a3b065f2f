//! The relay against real kernels, on both transports: Linux's TCP in `{p}client` talks to
//! sluice's listener on 198.51.100.2:80 (on sluice's TCP over AF_XDP, or on kernel sockets), which
//! relays to a kernel server in `{p}backend` (203.0.113.2:8080) over a kernel socket.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Sluice, Transport, echo_backend};
use sha2::{Digest, Sha256};
use sluice_testbed::in_netns;

const LISTENER: &str = "198.51.100.2:80";

/// A relay listener on `t`.
fn relay_config(t: Transport) -> String {
    t.config(
        "[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [relay]\nbackend_connect_timeout_ms = 2000\n",
    )
}

fn addr() -> SocketAddr {
    LISTENER.parse().unwrap()
}

fn relays_256_mib_each_way_intact_with_half_close(t: Transport) -> Result<()> {
    let sluice = Sluice::start(&t.prefix("sl-rl1-"), &relay_config(t))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let mib = common::transfer_mib(256);
    let (sent, back, elapsed) = in_netns(&sluice.client(), move || common::echo_stream(LISTENER, mib << 20))??;
    ensure!(sent == back, "sha256 differs");
    eprintln!(
        "{mib} MiB relayed each way in {elapsed:.2?} ({:.1} MB/s)",
        (mib << 20) as f64 / elapsed.as_secs_f64() / 1e6
    );
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "relays_clean") == 1, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "relay_bytes_to_backend") == (mib as u64) << 20, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "relay_bytes_to_client") == (mib as u64) << 20, "{stats:#}");
    Ok(())
}

fn two_hundred_concurrent_relayed_connections(t: Transport) -> Result<()> {
    let sluice = Sluice::start(&t.prefix("sl-rl2-"), &relay_config(t))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let ns = sluice.client();
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let ns = ns.clone();
            std::thread::spawn(move || in_netns(&ns, move || common::echo_stream(LISTENER, 10_000 + i * 101)))
        })
        .collect();
    let mut failures = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(Ok((a, b, _)))) if a == b => {}
            other => failures.push(format!("{i}: {other:?}")),
        }
    }
    ensure!(failures.is_empty(), "{} of 200 failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "relays_clean") == 200, "{stats:#}");
    // Every relay's backend connect and first backend byte is in the merged histograms.
    ensure!(stats["latency"]["backend_connect"]["count"] == 200, "{:#}", stats["latency"]);
    ensure!(stats["latency"]["first_backend_byte"]["count"] == 200, "{:#}", stats["latency"]);
    let p50 = stats["latency"]["backend_connect"]["p50_us"].as_u64().unwrap_or(0);
    ensure!(p50 > 0, "{:#}", stats["latency"]);
    Ok(())
}

/// No backend listening: the client's connection is reset, counted, and sluice serves on.
fn refusing_backend_resets_the_client(t: Transport) -> Result<()> {
    let sluice = Sluice::start(&t.prefix("sl-rl3-"), &relay_config(t))?;
    let result = in_netns(&sluice.client(), || -> std::io::Result<usize> {
        let mut s = TcpStream::connect_timeout(&addr(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let _ = s.write_all(b"hello");
        s.read(&mut [0u8; 16])
    })?;
    match result {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => bail!("expected a reset, got {other:?}"),
    }
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "relays_backend_failed") == 1, "{stats:#}");
    // The backend appears: the next connection is relayed.
    echo_backend(&sluice.topology.topology.backend())?;
    let (a, b, _) = in_netns(&sluice.client(), || common::echo_stream(LISTENER, 100_000))??;
    ensure!(a == b);
    Ok(())
}

/// Client data waits (bounded) while the backend is slow to read: back-pressure, no loss.
fn slow_backend_pauses_the_client_without_loss(t: Transport) -> Result<()> {
    let sluice = Sluice::start(&t.prefix("sl-rl4-"), &relay_config(t))?;
    let listener = in_netns(&sluice.topology.topology.backend(), || TcpListener::bind("203.0.113.2:8080"))??;
    let server = std::thread::spawn(move || -> Result<([u8; 32], usize)> {
        let (mut conn, _) = listener.accept()?;
        // Read nothing for a while: everything queues up in sluice and the kernels' windows.
        std::thread::sleep(Duration::from_secs(2));
        let (mut h, mut buf, mut total) = (Sha256::new(), vec![0u8; 4096], 0);
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok((h.finalize().into(), total)),
                n => {
                    h.update(&buf[..n]);
                    total += n;
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    });
    const LEN: usize = 16 << 20;
    let sent = in_netns(&sluice.client(), || -> Result<[u8; 32]> {
        let mut s = TcpStream::connect_timeout(&addr(), Duration::from_secs(5))?;
        let (mut h, chunk) = (Sha256::new(), (0..=255u8).cycle().take(1 << 16).collect::<Vec<_>>());
        for _ in 0..LEN / chunk.len() {
            s.write_all(&chunk)?;
            h.update(&chunk);
        }
        s.shutdown(Shutdown::Write)?;
        // The backend never answers; wait for sluice's FIN after the backend's EOF.
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let _ = s.read(&mut [0u8; 1]);
        Ok(h.finalize().into())
    })??;
    let stats_mid = sluice.stats()?;
    let (got, total) = server.join().map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(total == LEN && got == sent, "backend got {total} bytes of {LEN}, sha256 equal: {}", got == sent);
    // sluice never held more than its two bounded queues per relay.
    let frames_out: u64 = stats_mid["queues"]
        .as_array()
        .context("queues")?
        .iter()
        .map(|q| q["umem_frames_total"].as_u64().unwrap_or(0) - q["umem_frames_free"].as_u64().unwrap_or(0))
        .sum();
    ensure!(frames_out <= 2 * 8192 + 64, "UMEM frames held: {frames_out}");
    Ok(())
}

/// A backend that resets mid-stream: the client's connection is reset too, counted; sluice
/// serves the next connection.
fn backend_reset_mid_stream_resets_the_client(t: Transport) -> Result<()> {
    let sluice = Sluice::start(&t.prefix("sl-rl5-"), &relay_config(t))?;
    let listener = in_netns(&sluice.topology.topology.backend(), || TcpListener::bind("203.0.113.2:8080"))??;
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf)?;
        conn.write_all(b"partial")?;
        // Abortive close: RST.
        socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO))?;
        drop(conn);
        Ok(())
    });
    let result = in_netns(&sluice.client(), || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"hello")?;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })?;
    match result {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => bail!("expected a reset after the backend's, got {other:?}"),
    }
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "relays_backend_failed") == 1, "{stats:#}");
    Ok(())
}

on_both_transports!(
    relays_256_mib_each_way_intact_with_half_close,
    two_hundred_concurrent_relayed_connections,
    refusing_backend_resets_the_client,
    slow_backend_pauses_the_client_without_loss,
    backend_reset_mid_stream_resets_the_client,
);
