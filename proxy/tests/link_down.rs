//! The interface goes down under the XDP transport: sluice's AF_XDP TX wakeups fail with
//! ENETDOWN while frames wait on the TX ring. The workers must sleep between tries (counted
//! `xsk_link_down`, once per outage and queue that had frames to send) instead of spinning, and
//! serve again once the link is up.
//!
//! The CPU bound is a count of what sluice used while it could do nothing (utime + stime from
//! /proc/<pid>/stat over 2 s), generous against a spin (2 s of CPU or more), not a speed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use common::{Sluice, bench_backend, certificates, handshakes, http_backend, process_cpu};
use sluice_testbed::{in_netns, in_ns};
use sluice_tls::rustls::{ClientConfig, RootCertStore};

fn link(sluice: &Sluice, state: &str) -> Result<()> {
    let out = in_ns(&sluice.proxy(), "ip", &["link", "set", "px0", state])?;
    ensure!(out.status.success(), "ip link set px0 {state}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A 1 GiB download through 198.51.100.2:80 read by a thread in the client namespace; started
/// once 4 MiB arrived.
struct Download {
    stream: TcpStream,
    reader: std::thread::JoinHandle<()>,
}

impl Download {
    fn start(sluice: &Sluice) -> Result<Self> {
        let stream = in_netns(&sluice.client(), || -> Result<TcpStream> {
            let mut s = TcpStream::connect_timeout(&"198.51.100.2:80".parse()?, Duration::from_secs(3))?;
            s.write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: down\r\nConnection: close\r\n\r\n")?;
            Ok(s)
        })??;
        let received = Arc::new(AtomicU64::new(0));
        let reader = {
            let (mut stream, received) = (stream.try_clone()?, received.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::Relaxed) < 4 << 20 {
            ensure!(Instant::now() < deadline, "the download did not start:\n{}", sluice.process.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self { stream, reader })
    }

    fn stop(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.reader.join();
    }
}

#[test]
fn xdp_workers_sleep_while_the_link_is_down_and_serve_once_it_is_up() -> Result<()> {
    let prefix = "ld1-";
    let dir = std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = certificates(&dir)?;
    let d = dir.display();
    let config = common::config(
        "native",
        &format!(
            "[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8081\"\n\n\
             [[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n\
             [listener.tls]\ncertificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }}]\n\n\
             [tcp]\ntime_wait_ms = 1000\n"
        ),
    );
    let sluice = Sluice::start(prefix, &config)?;
    http_backend(&sluice.backend())?;
    let _bytes = bench_backend(&sluice, 8081, "bytes", false)?;
    let pid = sluice.process.pid();

    // The link goes down under a download in flight, read as fast as it comes, so that sluice
    // is putting frames on its TX rings at that moment. Once sluice reads that the kernel
    // removed the route through px0 (within 10 ms), its next-hop table holds segments back, so
    // only frames that reached the ring before meet the ENETDOWN: when none did (the worker
    // was between two flights), the link comes back up and the outage is tried again.
    let mut outage = None;
    for attempt in 1..=6 {
        let download = Download::start(&sluice)?;
        link(&sluice, "down")?;
        std::thread::sleep(Duration::from_millis(300));
        let stats = sluice.stats()?;
        if sluice.queue_total(&stats, "xsk_link_down") == 0 {
            eprintln!("outage {attempt}: no frame was on a TX ring; again");
            link(&sluice, "up")?;
            download.stop();
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let (before, start) = (process_cpu(pid)?, Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let (used, wall) = (process_cpu(pid)? - before, start.elapsed());
        let stats = sluice.stats();
        link(&sluice, "up")?;
        download.stop();
        outage = Some((used, wall, stats?));
        break;
    }
    let Some((used, wall, stats)) = outage else { bail!("in 6 outages no frame was ever on a TX ring") };
    eprintln!(
        "link down: sluice used {used:?} of CPU in {wall:?}; xsk_link_down {}, xsk_link_down_sleeps {}",
        sluice.queue_total(&stats, "xsk_link_down"),
        sluice.queue_total(&stats, "xsk_link_down_sleeps")
    );
    ensure!(used < Duration::from_millis(500), "sluice used {used:?} of CPU in {wall:?} with the link down: it spins");
    ensure!(sluice.queue_total(&stats, "xsk_link_down_sleeps") > 0, "{stats:#}");

    // Link up: a TLS handshake and its request go through (the first tries may meet the
    // link's own coming up: a few seconds of grace, then it must work).
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let client = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match handshakes(&sluice, client.clone(), 1) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("after link up: {e:#}; again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => bail!("no TLS handshake 10 s after the link came up: {e:#}\n{}", sluice.process.log()),
        }
    }
    Ok(())
}
