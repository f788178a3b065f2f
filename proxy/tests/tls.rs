//! TLS termination on the bypass path against real clients (issue 4): curl and openssl in
//! `{p}client` (Linux's TCP), sluice terminating TLS on 198.51.100.2:443 with its own TCP, and a
//! plaintext HTTP backend in `{p}backend`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Sluice, config, http_backend};
use sluice_testbed::{in_netns, in_ns};
use sluice_tls::testcerts::{Ca, KeyKind};

/// A CA, `a.test` (ECDSA) and `b.test` (RSA) certificates in `dir`; returns the CA certificate.
fn certificates(dir: &Path) -> Result<sluice_tls::rustls::pki_types::CertificateDer<'static>> {
    let ca = Ca::new()?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    for (name, kind) in [("a.test", KeyKind::EcdsaP256), ("b.test", KeyKind::Rsa2048)] {
        let leaf = ca.server(&[name], kind)?;
        std::fs::write(dir.join(format!("{name}.pem")), &leaf.cert_pem)?;
        std::fs::write(dir.join(format!("{name}.key")), &leaf.key_pem)?;
    }
    Ok(ca.cert_der())
}

fn tls_config(dir: &Path) -> String {
    let d = dir.display();
    config(
        "native",
        &format!(
            "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n\
             [listener.tls]\ncertificates = [\n  \
             {{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }},\n  \
             {{ cert = \"{d}/b.test.pem\", key = \"{d}/b.test.key\", sni = [\"b.test\"] }},\n]\n\
             alpn = [\"http/1.1\"]\n\n[tcp]\ntime_wait_ms = 1000\n\n[relay]\ntls_handshake_timeout_ms = 1500\n"
        ),
    )
}

/// Starts sluice with TLS on 443 and an HTTP backend; the certificates live in a fresh directory.
fn start(prefix: &str) -> Result<(Sluice, std::path::PathBuf)> {
    start_with_ca(prefix).map(|(s, d, _)| (s, d))
}

fn start_with_ca(
    prefix: &str,
) -> Result<(Sluice, std::path::PathBuf, sluice_tls::rustls::pki_types::CertificateDer<'static>)> {
    let dir = std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = certificates(&dir)?;
    let sluice = Sluice::start(prefix, &tls_config(&dir))?;
    http_backend(&sluice.topology.topology.backend())?;
    Ok((sluice, dir, ca))
}

#[test]
fn curl_gets_the_backend_through_tls_for_two_names_and_both_versions() -> Result<()> {
    let (sluice, dir) = start("sl-tl1-")?;
    let ca = dir.join("ca.pem");
    for name in ["a.test", "b.test"] {
        for version in [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3", "--tls-max", "1.3"]] {
            let resolve = format!("{name}:443:198.51.100.2");
            let url = format!("https://{name}/");
            let mut args = vec!["-sS", "-v", "--max-time", "10", "--cacert", ca.to_str().context("path")?];
            args.extend(["--resolve", &resolve]);
            args.extend(version);
            args.push(&url);
            let out = in_ns(&sluice.client(), "curl", &args).with_context(|| format!("curl {name} {version:?}"))?;
            let body = String::from_utf8_lossy(&out.stdout);
            let log = String::from_utf8_lossy(&out.stderr);
            ensure!(body == format!("backend saw Host: {name}\n"), "{name} {version:?}: body {body:?}");
            // curl verified the chain against the CA (it fails otherwise) and shows the subject.
            ensure!(log.contains(&format!("CN={name}")), "{name}: certificate subject not {name}:\n{log}");
            let want = if version[0] == "--tlsv1.2" { "TLSv1.2" } else { "TLSv1.3" };
            ensure!(log.contains(want), "{name}: not {want}:\n{log}");
        }
    }
    let stats = sluice.wait_relays_closed()?;
    ensure!(sluice.queue_total(&stats, "tls_handshakes_full") == 4, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "relays_clean") == 4, "{stats:#}");
    let l = &stats["latency"];
    ensure!(l["tls12_handshake_full"]["count"] == 2 && l["tls13_handshake_full"]["count"] == 2, "{l:#}");
    Ok(())
}

/// `openssl s_client -sess_out` then `-sess_in`: the second connection is resumed, with TLS 1.2
/// session IDs (tickets off) and with TLS 1.3.
#[test]
fn openssl_resumes_sessions_tls12_and_tls13() -> Result<()> {
    let (sluice, dir) = start("sl-tl2-")?;
    let ca = dir.join("ca.pem");
    for version in ["-tls1_2", "-tls1_3"] {
        let sess = dir.join(format!("session{version}.pem"));
        let s_client = |io: &str| -> Result<String> {
            let mut args = vec![
                "s_client", "-connect", "198.51.100.2:443", "-servername", "a.test", version, "-CAfile",
                ca.to_str().context("path")?, "-verify_return_error",
            ];
            if version == "-tls1_2" {
                args.push("-no_ticket");
            }
            args.extend([io, sess.to_str().context("path")?]);
            // stdin stays open for a second, so that the TLS 1.3 NewSessionTicket (sent after the
            // handshake) arrives before s_client ends the session.
            let cmd = format!("sleep 1 | timeout 10 openssl {}", args.join(" "));
            let out = in_ns(&sluice.client(), "sh", &["-c", &cmd])
                .or_else(|e| anyhow::bail!("openssl s_client {version} {io}: {e:#}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let first = s_client("-sess_out")?;
        ensure!(first.contains("New, TLSv1"), "{version}: first handshake not new:\n{first}");
        ensure!(first.contains("Verify return code: 0 (ok)"), "{version}: chain did not verify:\n{first}");
        let second = s_client("-sess_in")?;
        ensure!(second.contains("Reused, TLSv1"), "{version}: second handshake not resumed:\n{second}");
    }
    let stats = sluice.wait_relays_closed()?;
    ensure!(sluice.queue_total(&stats, "tls_handshakes_resumed") == 2, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "tls_handshakes_full") == 2, "{stats:#}");
    let l = &stats["latency"];
    ensure!(l["tls12_handshake_resumed"]["count"] == 1 && l["tls13_handshake_resumed"]["count"] == 1, "{l:#}");
    ensure!(stats["session_caches"][0]["hits"].as_u64() >= Some(2), "{stats:#}");
    Ok(())
}

/// Plain HTTP instead of a ClientHello: an alert and a close, counted; the next client is fine.
#[test]
fn garbage_instead_of_a_client_hello_gets_an_alert() -> Result<()> {
    let (sluice, dir) = start("sl-tl3-")?;
    let answer = in_netns(&sluice.client(), || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&"198.51.100.2:443".parse().unwrap(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)?;
        Ok(answer)
    })??;
    // A TLS alert record: content type 21.
    ensure!(answer.first() == Some(&21), "expected a TLS alert, got {answer:02x?}");
    let stats = sluice.wait_relays_closed()?;
    ensure!(sluice.queue_total(&stats, "tls_failed") == 1, "{stats:#}");
    let ca = dir.join("ca.pem");
    let out = in_ns(
        &sluice.client(),
        "curl",
        &["-sS", "--max-time", "10", "--cacert", ca.to_str().context("path")?, "--resolve", "a.test:443:198.51.100.2", "https://a.test/"],
    )?;
    ensure!(out.stdout == b"backend saw Host: a.test\n");
    Ok(())
}

/// A client that connects and sends half a ClientHello, then nothing: closed after the handshake
/// timeout, counted; the backend connection is freed.
#[test]
fn client_stalled_mid_handshake_is_closed() -> Result<()> {
    let (sluice, _dir) = start("sl-tl4-")?;
    let waited = in_netns(&sluice.client(), || -> std::io::Result<Duration> {
        let mut s = TcpStream::connect_timeout(&"198.51.100.2:443".parse().unwrap(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // The first 5 bytes of a TLS record header promising a 512-byte handshake message.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])?;
        let start = std::time::Instant::now();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(start.elapsed())
    })??;
    ensure!(waited >= Duration::from_millis(1000), "closed too early ({waited:?}), before the timeout");
    let stats = sluice.wait_relays_closed()?;
    ensure!(sluice.queue_total(&stats, "tls_handshake_timeouts") == 1, "{stats:#}");
    Ok(())
}

/// 1,000 resumptions (500 with TLS 1.2 session IDs, 500 with TLS 1.3 tickets) from a rustls
/// client, each on a new connection (a new source port, so flows land on both workers): every
/// one resumes, and both workers served resumptions of sessions the other may have made.
#[test]
fn thousand_resumptions_spread_over_both_workers() -> Result<()> {
    use sluice_tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
    let (sluice, _dir, ca) = start_with_ca("sl-tl5-")?;
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut config = ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::in_memory_sessions(64);
        let config = std::sync::Arc::new(config);
        let kinds = in_netns(&sluice.client(), move || -> Result<Vec<rustls::HandshakeKind>> {
            let mut kinds = Vec::new();
            for _ in 0..501 {
                let tcp = TcpStream::connect_timeout(&"198.51.100.2:443".parse()?, Duration::from_secs(5))?;
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                let conn = ClientConnection::new(config.clone(), "a.test".try_into()?)?;
                let mut tls = StreamOwned::new(conn, tcp);
                tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")?;
                let mut body = Vec::new();
                let _ = tls.read_to_end(&mut body); // the backend closes; no close_notify needed
                ensure!(body.ends_with(b"backend saw Host: a.test\n"), "bad answer {body:?}");
                kinds.push(tls.conn.handshake_kind().context("no handshake")?);
            }
            Ok(kinds)
        })??;
        let resumed = kinds.iter().filter(|k| **k == rustls::HandshakeKind::Resumed).count();
        ensure!(resumed == 500, "{version:?}: {resumed} of 500 resumed: {:?}", &kinds[..5]);
    }
    let stats = sluice.wait_relays_closed()?;
    ensure!(sluice.queue_total(&stats, "tls_handshakes_resumed") == 1000, "{stats:#}");
    for q in stats["queues"].as_array().context("queues")? {
        ensure!(q["tls_handshakes_resumed"].as_u64() > Some(100), "a worker resumed too few: {stats:#}");
    }
    Ok(())
}
