//! Operating sluice (issue 6) against real clients in the test topology: SIGHUP reload with a
//! certificate rotation under load, a refused broken reload, SIGTERM drain (reset and pass
//! modes, the deadline, a second signal), the privilege drop, connection limits, the access log.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Sluice, Transport, echo_backend, http_backend};
use nix::sys::signal::Signal;
use sluice_testbed::{in_netns, in_ns};
use sluice_tls::rustls::pki_types::{CertificateDer, ServerName};
use sluice_tls::rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use sluice_tls::testcerts::{Ca, KeyKind};

const CONNECTIONS: usize = 50;

fn signal(sluice: &Sluice, s: Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sluice.process.pid() as i32), s).context("kill")
}

/// Writes `a.test`'s certificate and key (a new key pair each time) signed by `ca` into `dir`;
/// returns the certificate.
fn write_leaf(ca: &Ca, dir: &Path) -> Result<CertificateDer<'static>> {
    let leaf = ca.server(&["a.test"], KeyKind::EcdsaP256)?;
    std::fs::write(dir.join("a.test.pem"), &leaf.cert_pem)?;
    // As operators keep keys: root's, mode 0600 (sluice reloads them through its keyholder).
    let key = dir.join("a.test.key");
    std::fs::write(&key, &leaf.key_pem)?;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let der = rustls_pemfile_der(&leaf.cert_pem)?;
    Ok(der)
}

/// The first certificate of a PEM text, as DER.
fn rustls_pemfile_der(pem: &str) -> Result<CertificateDer<'static>> {
    use sluice_tls::rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?.into_owned())
}

/// A client that never resumes (a resumed session reports the certificate of its first handshake).
fn client_config(ca: &Ca) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der())?;
    let mut c = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    c.resumption = sluice_tls::rustls::client::Resumption::disabled();
    Ok(Arc::new(c))
}

/// A TLS connection to a.test on 198.51.100.2:443, handshake done.
fn tls_connect(config: &Arc<ClientConfig>) -> Result<StreamOwned<ClientConnection, TcpStream>> {
    let addr: SocketAddr = "198.51.100.2:443".parse()?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = ClientConnection::new(Arc::clone(config), ServerName::try_from("a.test")?)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Ping-pong `chunks` chunks of 16 KiB through an echo, `pause` between them; then half-close
/// with `finish` and read to the end. Every byte must come back in order.
fn paced_echo<S: Read + Write>(
    s: &mut S,
    chunks: usize,
    pause: Duration,
    finish: impl FnOnce(&mut S) -> Result<()>,
) -> Result<()> {
    let mut rng = 0x5eed_u64;
    let (mut out, mut back) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    for i in 0..chunks {
        for b in out.chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            b.copy_from_slice(&rng.to_le_bytes()[..b.len()]);
        }
        s.write_all(&out).with_context(|| format!("writing chunk {i}"))?;
        s.flush()?;
        s.read_exact(&mut back).with_context(|| format!("reading chunk {i}"))?;
        ensure!(out == back, "chunk {i} came back different");
        std::thread::sleep(pause);
    }
    finish(s)?;
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        // rustls: the TCP stream ended right after close_notify.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.into()),
    }
    ensure!(rest.is_empty(), "{} bytes after the last chunk", rest.len());
    Ok(())
}

fn close_notify(s: &mut StreamOwned<ClientConnection, TcpStream>) -> Result<()> {
    s.conn.send_close_notify();
    Ok(())
}

fn tls_config(dir: &Path, extra: &str, t: Transport) -> String {
    let d = dir.display();
    t.config(&format!(
        "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [listener.tls]\ncertificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }}]\n\n{extra}\n"
    ))
}

/// Waits until `/stats.json` satisfies `f`.
fn wait_stats(sluice: &Sluice, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = sluice.stats().with_context(|| format!("sluice's log:\n{}", sluice.process.log()))?;
        if f(&stats) {
            return Ok(stats);
        }
        if Instant::now() > deadline {
            bail!("{what}: not after 10 s: {stats:#}\n{}", sluice.process.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sessions to resume after a reload, TLS 1.3 and 1.2 (session IDs): one client configuration
/// each (and so its own session store), primed by one connection to a.test.
fn sessions_to_resume(sluice: &Sluice, ca: &Ca) -> Result<Vec<Arc<ClientConfig>>> {
    let versions: [&'static sluice_tls::rustls::SupportedProtocolVersion; 2] =
        [&sluice_tls::rustls::version::TLS13, &sluice_tls::rustls::version::TLS12];
    let mut resumers = Vec::new();
    for v in versions {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der())?;
        let c = Arc::new(
            ClientConfig::builder_with_protocol_versions(&[v]).with_root_certificates(roots).with_no_client_auth(),
        );
        let c2 = Arc::clone(&c);
        in_netns(&sluice.client(), move || -> Result<()> {
            let mut s = tls_connect(&c2)?;
            // Read the TLS 1.3 NewSessionTicket: one echo round trip.
            paced_echo(&mut s, 1, Duration::ZERO, close_notify)
        })??;
        resumers.push(c);
    }
    Ok(resumers)
}

/// One connection (handshake and an echo round trip) per client of [`sessions_to_resume`]: how
/// each handshake went.
fn resume(sluice: &Sluice, resumers: Vec<Arc<ClientConfig>>) -> Result<Vec<Option<HandshakeKind>>> {
    let mut kinds = Vec::new();
    for c in resumers {
        kinds.push(in_netns(&sluice.client(), move || -> Result<Option<HandshakeKind>> {
            let mut s = tls_connect(&c)?;
            let kind = s.conn.handshake_kind();
            paced_echo(&mut s, 1, Duration::ZERO, close_notify)?;
            Ok(kind)
        })??);
    }
    Ok(kinds)
}

/// SIGHUP with a new certificate (its key root's, mode 0600) while 50 TLS connections stream:
/// the streams finish intact, new connections get the new certificate, sessions from before get
/// a full handshake (the certificate set is part of the TLS policy) while a reload that keeps
/// the policy keeps them; then a broken configuration is refused and the last good one serves.
fn sighup_rotates_the_certificate_under_load_and_refuses_a_broken_config(t: Transport) -> Result<()> {
    let prefix = t.prefix("op-rl-");
    let dir = std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = Ca::new()?;
    let old_cert = write_leaf(&ca, &dir)?;
    let sluice = Sluice::start(&prefix, &tls_config(&dir, "", t))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let client = client_config(&ca)?;

    let resumers = sessions_to_resume(&sluice, &ca)?;

    let streams: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let client = Arc::clone(&client);
            in_netns(&sluice.client(), move || {
                std::thread::spawn(move || -> Result<CertificateDer<'static>> {
                    let mut s = tls_connect(&client)?;
                    let cert = s.conn.peer_certificates().context("no certificate")?[0].clone();
                    paced_echo(&mut s, 40, Duration::from_millis(50), close_notify)?;
                    Ok(cert)
                })
            })
        })
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_millis(500));

    let new_cert = write_leaf(&ca, &dir)?;
    ensure!(new_cert != old_cert);
    signal(&sluice, Signal::SIGHUP)?;
    wait_stats(&sluice, "reload", |s| s["reloads"]["ok"] == 1)?;
    let c = Arc::clone(&client);
    let seen = in_netns(&sluice.client(), move || -> Result<CertificateDer<'static>> {
        let mut s = tls_connect(&c)?;
        paced_echo(&mut s, 1, Duration::ZERO, close_notify)?;
        Ok(s.conn.peer_certificates().context("no certificate")?[0].clone())
    })??;
    ensure!(seen == new_cert, "a new connection after the reload did not get the new certificate");

    for (i, t) in streams.into_iter().enumerate() {
        let cert =
            t.join().map_err(|_| anyhow::anyhow!("stream {i} panicked"))?.with_context(|| format!("stream {i}"))?;
        ensure!(cert == old_cert, "stream {i} began before the reload and had the old certificate");
    }
    // The certificate set is part of the TLS policy: sessions from before the rotation get a
    // full handshake (counted), not a resumption under the new certificate.
    let kinds = resume(&sluice, resumers)?;
    ensure!(kinds == [Some(HandshakeKind::Full); 2], "sessions resumed across a certificate change: {kinds:?}");
    let stats = sluice.stats()?;
    ensure!(stats["session_caches"][0]["policy_mismatch"].as_u64() >= Some(2), "{stats:#}");
    // A reload that keeps the policy keeps sessions resumable.
    let resumers = sessions_to_resume(&sluice, &ca)?;
    signal(&sluice, Signal::SIGHUP)?;
    wait_stats(&sluice, "second reload", |s| s["reloads"]["ok"] == 2)?;
    let kinds = resume(&sluice, resumers)?;
    ensure!(kinds == [Some(HandshakeKind::Resumed); 2], "a reload with the same policy lost sessions: {kinds:?}");

    // A broken configuration: refused with the reason, the last good one keeps serving.
    let path = sluice.dir.join("sluice.toml");
    let good = std::fs::read_to_string(&path)?;
    std::fs::write(&path, good.replace("a.test.key", "missing.key"))?;
    signal(&sluice, Signal::SIGHUP)?;
    let stats = wait_stats(&sluice, "refused reload", |s| s["reloads"]["refused"] == 1)?;
    let why = stats["reloads"]["last_error"].as_str().unwrap_or("");
    ensure!(why.contains("missing.key"), "the refusal does not name the missing key: {why}");
    ensure!(sluice.process.log().contains("reload refused"), "{}", sluice.process.log());
    let c = Arc::clone(&client);
    let seen = in_netns(&sluice.client(), move || -> Result<CertificateDer<'static>> {
        let mut s = tls_connect(&c)?;
        paced_echo(&mut s, 2, Duration::ZERO, close_notify)?;
        Ok(s.conn.peer_certificates().context("no certificate")?[0].clone())
    })??;
    ensure!(seen == new_cert, "after a refused reload sluice must serve the last good configuration");
    let stats = sluice.wait_idle()?;
    let full = sluice.queue_total(&stats, "tls_handshakes_full");
    // Full: the streams, four priming handshakes, two refused resumptions, two certificate checks.
    ensure!(full == CONNECTIONS as u64 + 8, "full handshakes: {full}: {stats:#}");
    ensure!(sluice.queue_total(&stats, "tls_handshakes_resumed") == 2, "{stats:#}");
    // Clean ends: all of those and the two resumed sessions.
    ensure!(sluice.queue_total(&stats, "relays_clean") == CONNECTIONS as u64 + 10, "{stats:#}");
    Ok(())
}

/// A reload that adds `client_ca` (mutual TLS): sessions made before it without a client
/// certificate are not resumed (counted policy_mismatch); the full handshake demands a
/// certificate and fails without one, while a client with a certificate from that CA connects.
fn a_reload_that_adds_client_ca_demands_a_certificate_from_old_sessions(t: Transport) -> Result<()> {
    let prefix = t.prefix("op-ca-");
    let dir = std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = Ca::new()?;
    write_leaf(&ca, &dir)?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    let sluice = Sluice::start(&prefix, &tls_config(&dir, "", t))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let resumers = sessions_to_resume(&sluice, &ca)?;

    let path = sluice.dir.join("sluice.toml");
    let config = std::fs::read_to_string(&path)?;
    let mtls =
        config.replace("default = true }]", &format!("default = true }}]\nclient_ca = \"{}/ca.pem\"", dir.display()));
    ensure!(mtls != config, "no client_ca added:\n{config}");
    std::fs::write(&path, mtls)?;
    signal(&sluice, Signal::SIGHUP)?;
    wait_stats(&sluice, "reload", |s| s["reloads"]["ok"] == 1)?;

    for (i, c) in resumers.into_iter().enumerate() {
        let outcome = in_netns(&sluice.client(), move || -> Result<Option<HandshakeKind>> {
            let mut s = tls_connect(&c)?;
            let kind = s.conn.handshake_kind();
            // TLS 1.3: the client finishes first; the server's refusal arrives as an alert.
            paced_echo(&mut s, 1, Duration::ZERO, close_notify).with_context(|| format!("handshake {kind:?}"))?;
            Ok(kind)
        })?;
        match outcome {
            Ok(kind) => bail!("session {i} from before mTLS was served without a certificate ({kind:?})"),
            Err(e) => {
                ensure!(!format!("{e:#}").contains("Resumed"), "session {i} resumed before it was refused: {e:#}")
            }
        }
    }
    let stats = sluice.stats()?;
    ensure!(stats["session_caches"][0]["policy_mismatch"].as_u64() >= Some(2), "{stats:#}");
    ensure!(sluice.queue_total(&stats, "tls_handshakes_resumed") == 0, "{stats:#}");

    // A client with a certificate from the CA: served.
    let alice = ca.client("alice", KeyKind::EcdsaP256)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der())?;
    let with_cert = Arc::new(
        ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(alice.chain, alice.key_der)?,
    );
    in_netns(&sluice.client(), move || -> Result<()> {
        let mut s = tls_connect(&with_cert)?;
        paced_echo(&mut s, 2, Duration::ZERO, close_notify)
    })??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn plain_config(extra: &str, t: Transport) -> String {
    t.config(&format!("[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n\n{extra}\n"))
}

fn connect_80() -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&"198.51.100.2:80".parse().expect("address"), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// 50 relayed connections streaming; returns their threads.
fn start_streams(sluice: &Sluice, chunks: usize) -> Result<Vec<std::thread::JoinHandle<Result<()>>>> {
    (0..CONNECTIONS)
        .map(|_| {
            in_netns(&sluice.client(), move || {
                std::thread::spawn(move || -> Result<()> {
                    let mut s = connect_80()?;
                    paced_echo(&mut s, chunks, Duration::from_millis(50), |s: &mut TcpStream| {
                        Ok(s.shutdown(std::net::Shutdown::Write)?)
                    })
                })
            })
        })
        .collect()
}

/// SIGTERM while 50 connections stream: no new connection is accepted, the 50 finish intact
/// within the deadline, sluice exits by itself and (XDP) the XDP program is gone.
fn sigterm_drains_open_connections_then_detaches(t: Transport) -> Result<()> {
    let mut sluice = Sluice::start(&t.prefix("op-dr-"), &plain_config("[drain]\ndeadline_ms = 20000\n", t))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let streams = start_streams(&sluice, 30)?;
    wait_stats(&sluice, "50 relays", |s| {
        s["queues"]
            .as_array()
            .is_some_and(|q| q.iter().map(|q| q["relays_open"].as_u64().unwrap_or(0)).sum::<u64>() == 50)
    })?;
    signal(&sluice, Signal::SIGTERM)?;
    wait_stats(&sluice, "draining", |s| s["queues"].as_array().is_some_and(|q| q.iter().all(|q| q["draining"] == 1)))?;
    let refused = in_netns(&sluice.client(), || connect_80().map_err(|e| e.kind()))?;
    ensure!(
        refused.as_ref().err() == Some(&ErrorKind::ConnectionRefused),
        "a new connection while draining: {refused:?}"
    );
    for (i, t) in streams.into_iter().enumerate() {
        t.join().map_err(|_| anyhow::anyhow!("stream {i} panicked"))?.with_context(|| format!("stream {i}"))?;
    }
    let status = sluice.process.signal_and_wait(Signal::SIGCONT, Duration::from_secs(10))?;
    ensure!(status.success(), "sluice exited with {status}:\n{}", sluice.process.log());
    let log = sluice.process.log();
    ensure!(log.contains("drained: every connection finished"), "{log}");
    if t == Transport::Xdp {
        ensure!(!sluice_testbed::xdp_attached(&sluice.proxy(), "px0")?, "XDP still attached after the drain");
    }
    Ok(())
}

/// `new_connections = "pass"`: while draining, SYNs go to the kernel (here a kernel listener on
/// the same address takes them, as a successor would); past the deadline the rest is reset;
/// and a second SIGTERM stops at once.
#[test]
fn drain_passes_syns_to_the_kernel_resets_at_the_deadline_and_a_second_signal_stops() -> Result<()> {
    let mut sluice = Sluice::start(
        "op-dp-",
        &plain_config("[drain]\ndeadline_ms = 1500\nnew_connections = \"pass\"\n", Transport::Xdp),
    )?;
    echo_backend(&sluice.topology.topology.backend())?;
    let successor = in_netns(&sluice.proxy(), || std::net::TcpListener::bind("198.51.100.2:80"))??;
    let mut idle = in_netns(&sluice.client(), connect_80)??;
    idle.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    idle.read_exact(&mut buf)?;
    signal(&sluice, Signal::SIGTERM)?;
    wait_stats(&sluice, "draining", |s| s["queues"].as_array().is_some_and(|q| q.iter().all(|q| q["draining"] == 1)))?;
    let _new = in_netns(&sluice.client(), connect_80)?.context("a new connection while draining in pass mode")?;
    successor.set_nonblocking(false)?;
    let (_taken, from) = successor.accept()?;
    ensure!(from.ip().to_string() == "198.51.100.1", "{from}");
    // The idle connection outlives the 1.5 s deadline: sluice resets it and exits.
    let status = sluice.process.signal_and_wait(Signal::SIGCONT, Duration::from_secs(10))?;
    ensure!(status.success(), "{status}:\n{}", sluice.process.log());
    let mut rest = [0u8; 1];
    let end = idle.read(&mut rest);
    ensure!(
        end.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "the connection still open at the deadline was not reset: {end:?}"
    );
    ensure!(sluice.process.log().contains("drain deadline passed"), "{}", sluice.process.log());

    // A second signal while draining stops at once, although a connection is open and the
    // deadline is far.
    drop(sluice);
    let mut sluice = Sluice::start("op-d2-", &plain_config("[drain]\ndeadline_ms = 60000\n", Transport::Xdp))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let _open = in_netns(&sluice.client(), connect_80)??;
    wait_stats(&sluice, "a relay", |s| {
        s["queues"].as_array().is_some_and(|q| q.iter().any(|q| q["relays_open"] == 1))
    })?;
    signal(&sluice, Signal::SIGTERM)?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(sluice.process.try_wait()?.is_none(), "sluice must wait for the open connection");
    let started = Instant::now();
    let status = sluice.process.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5))?;
    ensure!(status.success(), "{status}:\n{}", sluice.process.log());
    ensure!(sluice.process.log().contains("second stop signal"), "{}", sluice.process.log());
    println!("second signal to exit: {:?}", started.elapsed());
    Ok(())
}

/// `/proc/<pid>/task/*/status` after setup: every thread has the uid and gid of `nobody`, no
/// capability in any set, no new privileges; the keyholder keeps CAP_DAC_READ_SEARCH only; the
/// keys are never in the log or on the admin port; and the access log.
#[test]
fn runs_as_nobody_without_capabilities_and_logs_each_connection() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("op-pr-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = Ca::new()?;
    write_leaf(&ca, &dir)?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    let sluice = Sluice::start("op-pr-", &tls_config(&dir, "[log]\naccess_log = true\n", Transport::Xdp))?;
    http_backend(&sluice.topology.topology.backend())?;
    // Every thread of sluice: nobody, no capability, no new privileges.
    let nobody = nix::unistd::User::from_name("nobody")?.context("no user nobody")?;
    let (uid, gid) = (nobody.uid.to_string(), nobody.gid.to_string());
    let pid = sluice.process.pid();
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        check_status(&status, &uid, &gid, "0000000000000000")?;
        threads += 1;
    }
    ensure!(threads >= 4, "{threads} threads: expected workers, stats and admin");
    // The keyholder (its child): nobody, CAP_DAC_READ_SEARCH (bit 2) and nothing else.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    let keyholder: Vec<&str> = children.split_whitespace().collect();
    ensure!(keyholder.len() == 1, "expected one child (the keyholder): {children:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", keyholder[0]))?;
    check_status(&status, &uid, &gid, "0000000000000004")?;

    // It still serves (XDP counters, maps and rings work unprivileged), and logs the connection.
    let ca_path = dir.join("ca.pem");
    let out = in_ns(
        &sluice.client(),
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca_path.to_str().context("path")?,
            "--resolve",
            "a.test:443:198.51.100.2",
            "https://a.test/",
        ],
    )?;
    ensure!(String::from_utf8_lossy(&out.stdout) == "backend saw Host: a.test\n");
    let stats = sluice.wait_idle()?;
    ensure!(stats["xdp"]["counters"]["redirected"].as_u64() > Some(0), "{stats:#}");
    let log = sluice.process.log();
    ensure!(log.contains("privileges dropped"), "{log}");
    let line = log.lines().find(|l| l.contains("sluice::access")).context(format!("no access log line:\n{log}"))?;
    for want in [
        "client=198.51.100.1:",
        "listener=198.51.100.2:443",
        "sni=\"a.test\"",
        "version=\"TLSv1_3\"",
        "resumed=false",
        "end=\"clean\"",
    ] {
        ensure!(line.contains(want), "access log line lacks {want}: {line}");
    }
    let key = std::fs::read_to_string(dir.join("a.test.key"))?;
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let admin = serde_json::to_string(&stats)?;
    for (what, text) in [("log", log.replace('\n', "")), ("/stats.json", admin)] {
        ensure!(!text.contains(&key_body[..40]), "the private key appears in the {what}");
    }
    Ok(())
}

/// One `/proc/.../status`: uid and gid `uid`/`gid` in every slot, the permitted, effective and
/// bounding capability sets exactly `caps` (hex), inheritable and ambient empty, NoNewPrivs 1,
/// no supplementary group but `gid`.
fn check_status(status: &str, uid: &str, gid: &str, caps: &str) -> Result<()> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    ensure!(field("Uid:") == [uid; 4], "{status}");
    ensure!(field("Gid:") == [gid; 4], "{status}");
    for (set, want) in [("CapInh:", "0000000000000000"), ("CapPrm:", caps), ("CapEff:", caps), ("CapBnd:", caps)] {
        ensure!(field(set) == [want], "{set} is not {want}:\n{status}");
    }
    ensure!(field("CapAmb:") == ["0000000000000000"], "{status}");
    ensure!(field("NoNewPrivs:") == ["1"], "{status}");
    ensure!(field("Groups:") == [gid], "supplementary groups kept:\n{status}");
    Ok(())
}

/// A connection from `src` in the client namespace to the plain relay on 198.51.100.2:80, once
/// a byte made the round trip through the echo backend (the outer error: the namespace).
fn open_relay_from(sluice: &Sluice, src: &'static str) -> Result<std::io::Result<TcpStream>> {
    in_netns(&sluice.client(), move || -> std::io::Result<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&SocketAddr::new(src.parse().expect("ip"), 0).into())?;
        s.connect_timeout(&"198.51.100.2:80".parse::<SocketAddr>().expect("addr").into(), Duration::from_secs(3))?;
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(s)
    })
}

/// Past `limits.memory` (each connection charged 16 KiB plus its buffers, reported once a
/// second) new connections get a RST, counted; once connections end, new ones come in again.
fn the_memory_limit_refuses_new_connections_until_memory_is_free(t: Transport) -> Result<()> {
    let listener = "[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n\n[limits]\nmemory = \"100KiB\"\nmax_connections = 0\n";
    let sluice = Sluice::start(&t.prefix("op-mem-"), &t.config(listener))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let mut open = Vec::new();
    let refused = loop {
        match open_relay_from(&sluice, "198.51.100.1")? {
            Ok(s) => open.push(s),
            Err(e) => break e,
        }
        ensure!(open.len() < 100, "100 connections of 16 KiB each under a 100 KiB limit");
        std::thread::sleep(Duration::from_millis(100));
    };
    // 100 KiB / 16 KiB: the seventh connection is the first that can put the charge past it.
    ensure!(open.len() >= 7, "refused after {} connections: {refused}: {:#}", open.len(), sluice.stats()?);
    let stats = sluice.stats()?;
    ensure!(sluice.queue_total(&stats, "refused_limit_memory") >= 1, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "memory_charged_now") >= 100 << 10, "{stats:#}");
    // The open ones are untouched.
    for s in &mut open {
        s.write_all(b"y")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
    }
    open.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = open_relay_from(&sluice, "198.51.100.1")? {
        ensure!(Instant::now() < deadline, "still refused 10 s after every connection ended: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Past a limit, new connections get a RST and are counted; open ones are untouched.
fn connection_limits_refuse_new_connections_and_keep_open_ones(t: Transport) -> Result<()> {
    let limits = "[limits]\nmax_connections = 5\nmax_connections_per_client = 3\n";
    let listener = format!("[[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\n\n{limits}");
    let sluice = Sluice::start(&t.prefix("op-lm-"), &t.config(&listener))?;
    // sluice's stack refuses the SYN; the kernel transport resets what the kernel accepted.
    let refusal = match t {
        Transport::Xdp => ErrorKind::ConnectionRefused,
        Transport::Kernel => ErrorKind::ConnectionReset,
    };
    echo_backend(&sluice.topology.topology.backend())?;
    // A second client address.
    sluice_testbed::ip(&sluice.client(), &["addr", "add", "198.51.100.3/24", "dev", "cli0"])?;
    let open_from = |src: &'static str| open_relay_from(&sluice, src);
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(open_from("198.51.100.1")??);
    }
    let refused = open_from("198.51.100.1")?;
    ensure!(refused.as_ref().err().map(|e| e.kind()) == Some(refusal), "4th from one client: {refused:?}");
    let mut b = Vec::new();
    for _ in 0..2 {
        b.push(open_from("198.51.100.3")??);
    }
    let refused = open_from("198.51.100.3")?;
    ensure!(refused.as_ref().err().map(|e| e.kind()) == Some(refusal), "6th in total: {refused:?}");
    // The open ones are untouched.
    for (i, s) in a.iter_mut().chain(b.iter_mut()).enumerate() {
        s.write_all(b"still")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).with_context(|| format!("connection {i}"))?;
        ensure!(&buf == b"still");
    }
    let stats = sluice.stats()?;
    ensure!(sluice.queue_total(&stats, "refused_limit_client") == 1, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "refused_limit_total") == 1, "{stats:#}");
    // A place frees up when a connection ends.
    drop(a.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_from("198.51.100.1")? {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => bail!("no place after a connection ended: {e}"),
        }
    }
    Ok(())
}

on_both_transports!(
    sighup_rotates_the_certificate_under_load_and_refuses_a_broken_config,
    a_reload_that_adds_client_ca_demands_a_certificate_from_old_sessions,
    sigterm_drains_open_connections_then_detaches,
    connection_limits_refuse_new_connections_and_keep_open_ones,
    the_memory_limit_refuses_new_connections_until_memory_is_free,
);

/// A reload that cannot be applied (more listeners than the XDP program's listener map holds)
/// is refused before any worker switches: the old listener still serves, none of the new ones
/// is served, and the map is as before.
#[test]
fn a_reload_that_does_not_fit_the_xdp_program_leaves_every_worker_on_the_old_configuration() -> Result<()> {
    let sluice = Sluice::start("op-at-", &plain_config("", Transport::Xdp))?;
    echo_backend(&sluice.topology.topology.backend())?;
    let echo = |sluice: &Sluice| -> Result<()> {
        in_netns(&sluice.client(), || -> Result<()> {
            let mut s = connect_80()?;
            paced_echo(&mut s, 2, Duration::ZERO, |s: &mut TcpStream| Ok(s.shutdown(std::net::Shutdown::Write)?))
        })?
    };
    echo(&sluice)?;
    let path = sluice.dir.join("sluice.toml");
    let good = std::fs::read_to_string(&path)?;
    let max = sluice::datapath::xdp::loader::LISTENERS_MAX;
    let many: String =
        (0..max).map(|i| format!("[[listener]]\naddress = \"198.51.100.2:{}\"\necho = true\n\n", 10_000 + i)).collect();
    std::fs::write(&path, good.replace("[tcp]", &format!("{many}[tcp]")))?;
    signal(&sluice, Signal::SIGHUP)?;
    let stats = wait_stats(&sluice, "refused reload", |s| s["reloads"]["refused"] == 1)?;
    let why = stats["reloads"]["last_error"].as_str().unwrap_or("");
    ensure!(why.contains("no worker switched"), "{why}");
    // The old listener serves; a new one (echo on :10000) is not served by sluice: the XDP
    // program passes its SYN to the kernel, which refuses it.
    echo(&sluice)?;
    let refused = in_netns(&sluice.client(), || {
        TcpStream::connect_timeout(&"198.51.100.2:10000".parse().expect("address"), Duration::from_secs(3))
    })?;
    ensure!(refused.is_err(), "a listener of the refused reload answered");
    ensure!(sluice.process.log().contains("reload refused"), "{}", sluice.process.log());
    // And a good reload afterwards still works.
    std::fs::write(&path, &good)?;
    signal(&sluice, Signal::SIGHUP)?;
    wait_stats(&sluice, "reload", |s| s["reloads"]["ok"] == 1)?;
    echo(&sluice)?;
    Ok(())
}

/// A worker that dies (the test hook SLUICE_TEST_WORKER_DIES_AFTER_MS) stops sluice at once with
/// a non-zero exit, the XDP program detached, so that systemd restarts it.
#[test]
fn a_dead_worker_stops_sluice_with_an_error_and_xdp_detached() -> Result<()> {
    let topology = sluice_testbed::TopologyGuard::up("op-dw-")?;
    let dir = std::env::temp_dir().join(format!("op-dw-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("sluice.toml");
    std::fs::write(&config, plain_config("", Transport::Xdp))?;
    let mut process = sluice_testbed::NsProcess::spawn(
        &topology.topology.proxy(),
        "env",
        &[
            "SLUICE_TEST_WORKER_DIES_AFTER_MS=1500",
            env!("CARGO_BIN_EXE_sluice"),
            "--config",
            config.to_str().context("path")?,
        ],
        dir.join("sluice.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = process.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < deadline, "sluice still runs with a dead worker:\n{}", process.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = process.log();
    ensure!(!status.success(), "exit {status}:\n{log}");
    ensure!(log.contains("ended unexpectedly") && log.contains("XDP program detached"), "{log}");
    ensure!(!sluice_testbed::xdp_attached(&topology.topology.proxy(), "px0")?, "XDP still attached");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
