//! The AF_XDP transport at the closed-loop maximum (32 connections at once), full and resumed
//! handshakes over TLS 1.2 and 1.3, 20,000 connections in all: every handshake completes, sluice
//! counts what the client counts, no backend connect fails and nothing is refused; after
//! TIME-WAIT every connection, relay and UMEM frame is back. This asserts correctness under load,
//! not speed.
//!
//! Flow ownership: the worker whose queue receives a flow's SYN owns the flow, so frames are
//! handled where they arrive: under 2 % of the frames received cross to another worker.

mod common;

use anyhow::{Result, ensure};
use common::{Sluice, config, http_backend};
use sluice_bench::load::{self, LoadArgs, Mode, TlsVersion};

#[test]
fn closed_loop_maximum_fails_no_handshake_and_hands_off_almost_no_frame() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fl-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    common::certificates(&dir)?;
    let d = dir.display();
    let sluice = Sluice::start(
        "fl-",
        &config(
            "native",
            &format!(
                "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n[listener.tls]\n\
                 certificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }}]\n\
                 alpn = [\"http/1.1\"]\n\n[tcp]\ntime_wait_ms = 2000\n"
            ),
        ),
    )?;
    http_backend(&sluice.topology.topology.backend())?;
    let cases = [
        (Mode::Full, TlsVersion::Tls13, 3_000),
        (Mode::Full, TlsVersion::Tls12, 3_000),
        (Mode::Resume, TlsVersion::Tls12, 7_000),
        (Mode::Resume, TlsVersion::Tls13, 7_000),
    ];
    let mut connections = 0;
    for (mode, tls, count) in cases {
        let what = format!("{mode:?} {}", tls.name());
        let before = sluice.stats()?;
        let mut args = LoadArgs::new("198.51.100.2:443".parse()?, dir.join("ca.pem"));
        (args.mode, args.tls, args.count, args.concurrency) = (mode, tls, Some(count), 32);
        args.duration = 120.0;
        args.netns = Some(sluice.client());
        let r = load::run(&args)?;
        let after = sluice.stats()?;
        let delta = |c: &str| sluice.queue_total(&after, c) - sluice.queue_total(&before, c);
        let m = &r.measured;
        eprintln!("{what}:\n{}", r.summary());
        ensure!(m.failed_total() == 0, "{what}: failed handshakes {:?}", m.failed);
        ensure!(m.completed == count, "{what}: {} of {count} completed", m.completed);
        let want = if mode == Mode::Full { (count, 0) } else { (0, count) };
        ensure!(
            (m.handshakes_full, m.handshakes_resumed) == want,
            "{what}: client saw {:?}",
            (m.handshakes_full, m.handshakes_resumed)
        );
        // Priming connections (resumed runs) are in the server's counts too.
        let server = (delta("tls_handshakes_full"), delta("tls_handshakes_resumed"));
        ensure!(
            server == (r.handshakes_full(), r.handshakes_resumed()),
            "{what}: sluice counted {server:?} (full, resumed), the client {:?}",
            (r.handshakes_full(), r.handshakes_resumed())
        );
        for c in [
            "relays_backend_failed",
            "relays_backend_timeout",
            "refused_descriptors",
            "tls_failed",
            "dropped_handoff_full",
        ] {
            ensure!(delta(c) == 0, "{what}: {c} = {}", delta(c));
        }
        connections += r.handshakes_full() + r.handshakes_resumed();
    }
    ensure!(connections >= 20_000, "{connections} connections");

    // Connections, relays and UMEM frames (but those lent to the fill rings) back to idle.
    let stats = sluice.wait_idle()?;
    let total = |c: &str| sluice.queue_total(&stats, c);
    ensure!(total("relays_open") == 0 && total("connections_open") == 0, "not idle: {stats:#}");
    let queues = stats["queues"].as_array().cloned().unwrap_or_default();
    ensure!(queues.len() == 2, "two queues: {stats:#}");
    for q in &queues {
        let n = q["connections_established"].as_u64().unwrap_or(0);
        ensure!(
            n * 10 >= connections,
            "queue {} established only {n} of {connections}: the test needs both",
            q["queue"]
        );
    }
    let (handed, received) = (total("handoff_out"), total("rx_frames"));
    eprintln!("frames handed to another worker: {handed} of {received} received");
    ensure!(handed * 50 < received, "{handed} of {received} frames handed off (2 % allowed): {stats:#}");
    Ok(())
}
