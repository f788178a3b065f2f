//! Out of descriptors (issue 12, hostile clients): sluice on the kernel transport whose
//! `RLIMIT_NOFILE` is lowered to 256 under it, and a client that opens 1,000 connections and
//! holds them. Once its descriptors are gone, `accept` fails with EMFILE on a listener that
//! stays readable (its backlog is full): the worker must pause its listeners (counted
//! `accept_backoffs`) rather than spin, and accept again once descriptors are back.
//!
//! The CPU bound is a count of what sluice used while it had nothing it could do (utime + stime
//! from /proc/<pid>/stat over 3 s), generous against a spin (3 s of CPU), not a speed.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use common::{Sluice, certificates, handshakes, http_backend, process_cpu};
use sluice_testbed::in_netns;
use sluice_tls::rustls::{ClientConfig, RootCertStore};

/// Descriptors `pid` has open now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn kernel_transport_backs_off_when_descriptors_run_out() -> Result<()> {
    let prefix = "fd1k-";
    let dir = std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = certificates(&dir)?;
    let d = dir.display();
    // sluice stays root here (no `[process] user`): lowering the limit of a process of another
    // user needs CAP_SYS_RESOURCE, which the test does not have; of its own user it does not.
    let config = format!(
        "[datapath]\ntransport = \"kernel\"\nworkers = 2\n\n\
         [[listener]]\naddress = \"198.51.100.2:7\"\necho = true\n\n\
         [[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [listener.tls]\ncertificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }}]\n"
    );
    let sluice = Sluice::start(prefix, &config)?;
    http_backend(&sluice.backend())?;
    let pid = sluice.process.pid();
    let out = std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), "--nofile=256:256"]).output()?;
    ensure!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));

    // 1,000 echo connections from the client namespace, held open: the kernel completes their
    // handshakes into the backlog whether sluice accepts them or not.
    let raise = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, raise.1, raise.1)?;
    let held = in_netns(&sluice.client(), || -> Result<Vec<TcpStream>> {
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.push(TcpStream::connect_timeout(&"198.51.100.2:7".parse()?, Duration::from_secs(5))?);
        }
        Ok(held)
    })??;
    // Wait until sluice holds every descriptor it may: then `accept` fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < 250 {
        if Instant::now() > deadline {
            bail!("sluice holds {} descriptors after 10 s:\n{}", open_fds(pid), sluice.process.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (before, start) = (process_cpu(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu, wall) = (process_cpu(pid)? - before, start.elapsed());
    eprintln!("out of descriptors: sluice used {cpu:?} of CPU in {wall:?} ({} descriptors open)", open_fds(pid));
    ensure!(cpu < Duration::from_millis(500), "sluice used {cpu:?} of CPU in {wall:?} out of descriptors: it spins");

    // The client lets go; a new TLS handshake (and its relay) succeeds.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > 100 {
        ensure!(Instant::now() < deadline, "sluice still holds {} descriptors", open_fds(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let client = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let kinds = handshakes(&sluice, client, 1)?;
    ensure!(kinds.len() == 1);
    let stats = sluice.stats()?;
    let backoffs = sluice.queue_total(&stats, "accept_backoffs");
    eprintln!("accept_backoffs {backoffs}");
    ensure!(backoffs > 0, "no accept back-off counted: {stats:#}");
    Ok(())
}
