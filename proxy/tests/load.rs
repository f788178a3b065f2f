//! The load generator against sluice (issue 5): `sluice_bench::load` runs as a library in
//! `{p}client`, and what it counted (full and resumed handshakes, requests) must equal what sluice
//! counted in `/stats.json`: full handshakes (open and closed loop, TLS 1.3 and 1.2), TLS 1.2
//! session-ID resumption, TLS 1.3 resumption, keep-alive requests.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use common::{Sluice, config, http_backend};
use sluice_bench::load::{self, LoadArgs, LoadReport, Mode, TlsVersion};
use sluice_tls::testcerts::{Ca, KeyKind};

/// A CA and an ECDSA `a.test` leaf in `dir`; returns the CA file.
fn certificates(dir: &Path) -> Result<PathBuf> {
    let ca = Ca::new()?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    let leaf = ca.server(&["a.test"], KeyKind::EcdsaP256)?;
    std::fs::write(dir.join("a.test.pem"), &leaf.cert_pem)?;
    std::fs::write(dir.join("a.test.key"), &leaf.key_pem)?;
    Ok(dir.join("ca.pem"))
}

fn handshakes(sluice: &Sluice) -> Result<(u64, u64)> {
    let s = sluice.stats()?;
    Ok((sluice.queue_total(&s, "tls_handshakes_full"), sluice.queue_total(&s, "tls_handshakes_resumed")))
}

#[test]
fn load_generator_counts_what_sluice_counts() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("ld-load-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = certificates(&dir)?;
    let d = dir.display();
    let sluice = Sluice::start(
        "ld-",
        &config(
            "native",
            &format!(
                "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n[listener.tls]\n\
                 certificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }}]\n\
                 alpn = [\"http/1.1\"]\n\n[tcp]\ntime_wait_ms = 1000\n"
            ),
        ),
    )?;
    http_backend(&sluice.topology.topology.backend())?;
    let run = |mode: Mode, tls: TlsVersion, rate: Option<f64>, count: u64, concurrency: usize| -> Result<LoadReport> {
        let mut args = LoadArgs::new("198.51.100.2:443".parse()?, ca.clone());
        args.mode = mode;
        args.tls = tls;
        args.rate = rate;
        args.count = Some(count);
        args.duration = 60.0;
        args.concurrency = concurrency;
        args.netns = Some(sluice.client());
        load::run(&args)
    };
    // (mode, version, open-loop rate, connections or requests, concurrency)
    let cases = [
        (Mode::Full, TlsVersion::Tls13, Some(150.0), 300, 16),
        (Mode::Full, TlsVersion::Tls12, None, 200, 8),
        (Mode::Resume, TlsVersion::Tls12, None, 200, 8),
        (Mode::Resume, TlsVersion::Tls13, None, 200, 8),
        (Mode::Resume, TlsVersion::Tls13, Some(150.0), 200, 8),
        (Mode::Keepalive, TlsVersion::Tls13, None, 300, 4),
    ];
    for (mode, tls, rate, count, concurrency) in cases {
        let what = format!("{mode:?} {} {rate:?}", tls.name());
        let before = handshakes(&sluice)?;
        let r = run(mode, tls, rate, count, concurrency)?;
        sluice.wait_idle()?;
        let after = handshakes(&sluice)?;
        let m = &r.measured;
        eprintln!("{what}:\n{}", r.summary());
        ensure!(m.failed_total() == 0, "{what}: failures {:?}", m.failed);
        // The acceptance: as many completed handshakes, of each kind, as sluice counted.
        ensure!(
            (after.0 - before.0, after.1 - before.1) == (r.handshakes_full(), r.handshakes_resumed()),
            "{what}: sluice counted {:?} (full, resumed), the client {:?}",
            (after.0 - before.0, after.1 - before.1),
            (r.handshakes_full(), r.handshakes_resumed())
        );
        ensure!(m.negotiated_other == 0 && m.hello_retries == 0, "{what}: {:?}", m.negotiated);
        let (proto, suite, group) = m.negotiated.clone().unwrap_or_default();
        // A TLS 1.2 resumption has no key exchange; everything else used X25519.
        let want_group = if mode == Mode::Resume && tls == TlsVersion::Tls12 { "" } else { "X25519" };
        ensure!(group == want_group, "{what}: group {group:?}");
        ensure!(proto.contains(if tls == TlsVersion::Tls12 { "1_2" } else { "1_3" }), "{what}: {proto}");
        ensure!(suite.contains("AES_128_GCM_SHA256"), "{what}: {suite}");
        match mode {
            Mode::Full => {
                ensure!(m.completed == count && m.handshakes_full == count, "{what}: {} completed", m.completed);
                ensure!(m.handshakes_resumed == 0 && r.flagged.is_empty(), "{what}: {:?}", r.flagged);
                ensure!(r.priming.started == 0, "{what}: a full run primes nothing");
            }
            Mode::Resume => {
                ensure!(
                    r.priming.completed > 0 && r.priming.handshakes_full > 0,
                    "{what}: priming {:?}",
                    r.priming.started
                );
                ensure!(
                    m.completed == count && m.handshakes_resumed == count,
                    "{what}: {} resumed of {}",
                    m.handshakes_resumed,
                    m.completed
                );
                ensure!(m.handshakes_full == 0 && r.flagged.is_empty(), "{what}: {:?}", r.flagged);
            }
            Mode::Keepalive => {
                ensure!(m.requests == count, "{what}: {} requests", m.requests);
                ensure!(m.handshakes_full == concurrency as u64 && m.completed == concurrency as u64, "{what}");
            }
        }
        ensure!(m.handshake.len() == m.handshakes() && m.tcp_connect.len() >= m.handshakes(), "{what}: histograms");
    }
    Ok(())
}
