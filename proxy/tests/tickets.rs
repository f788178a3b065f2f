//! Stateless tickets across hosts (issue 14): two sluice processes sharing one ticket key file
//! (`[listener.tls] ticket_key_files`) resume each other's tickets. In one test topology, sluice 1
//! runs on AF_XDP with its listener on 198.51.100.2:443 and sluice 2 on kernel sockets on
//! 198.51.100.2:8443 (the XDP program passes every other port to the kernel), both dropped to
//! `nobody`, the key files root's with mode 0600 (read on SIGHUP by the keyholder).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Another, PROXY_HOST, Sluice, Transport, certificates, handshake_at, http_backend, queue_total as total};
use sluice_tls::rustls::{self, ClientConfig, HandshakeKind, RootCertStore};

const ADMIN_2: &str = "127.0.0.1:9091";
const ROUNDS: usize = 50;

/// A listener section on `port` with tickets, under `key_files` (none: in-process keys). The
/// TLS settings are otherwise the same everywhere: one TLS policy.
fn listener(dir: &Path, port: u16, key_files: &[&Path]) -> String {
    let d = dir.display();
    let files = key_files.iter().map(|p| format!("{:?}", p.display().to_string())).collect::<Vec<_>>().join(", ");
    let files = if key_files.is_empty() { String::new() } else { format!("ticket_key_files = [{files}]\n") };
    format!(
        "[[listener]]\naddress = \"198.51.100.2:{port}\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [listener.tls]\ncertificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"] }}]\n\
         alpn = [\"http/1.1\"]\nresumption = \"tickets\"\n{files}\n"
    )
}

/// sluice 2's configuration: kernel sockets, port 8443, its admin endpoint on 9091.
fn second_config(dir: &Path, key_files: &[&Path]) -> String {
    Transport::Kernel.config(&format!("{}[admin]\naddress = \"{ADMIN_2}\"\n", listener(dir, 8443, key_files)))
}

/// A new ticket key file of `len` random bytes (`openssl rand`, as the README says), root's,
/// mode 0600.
fn key_file(dir: &Path, name: &str, len: usize) -> Result<PathBuf> {
    let path = dir.join(name);
    let out = std::process::Command::new("openssl").args(["rand", "-out"]).arg(&path).arg(len.to_string()).output()?;
    ensure!(out.status.success(), "openssl rand: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    ensure!(std::fs::metadata(&path)?.len() == len as u64);
    Ok(path)
}

/// A rustls client of `version` that resumes with tickets (TLS 1.2 too), with a session store
/// of its own.
fn client(
    ca: &rustls::pki_types::CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut config =
        ClientConfig::builder_with_protocol_versions(&[version]).with_root_certificates(roots).with_no_client_auth();
    config.resumption = rustls::client::Resumption::in_memory_sessions(16)
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOrTickets);
    Ok(Arc::new(config))
}

fn sighup(pid: u32) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).context("kill")
}

/// Waits until sluice 2 has done `ok` reloads; fails on a refused one.
fn wait_reloaded(second: &Another, ok: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = second.stats()?;
        ensure!(stats["reloads"]["refused"] == 0, "reload refused: {:#}\n{}", stats["reloads"], second.process.log());
        if stats["reloads"]["ok"] == ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no reload {ok} after 10 s: {:#}\n{}", stats["reloads"], second.process.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// For each of TLS 1.2 and 1.3, `n` clients that each made a full handshake with `first`:
/// they hold `first`'s tickets.
fn clients_with_tickets(
    ns: &str,
    ca: &rustls::pki_types::CertificateDer<'static>,
    first: &str,
    n: usize,
) -> Result<Vec<Arc<ClientConfig>>> {
    let mut out = Vec::new();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        for _ in 0..n {
            let c = client(ca, version)?;
            let kind = handshake_at(ns, first, &c)?;
            ensure!(kind == HandshakeKind::Full, "{version:?}: a new client's first handshake at {first} was {kind:?}");
            out.push(c);
        }
    }
    Ok(out)
}

/// How many of `clients` resume at `addr` (one connection each).
fn resumed_at(ns: &str, addr: &str, clients: &[Arc<ClientConfig>]) -> Result<usize> {
    let mut n = 0;
    for c in clients {
        if handshake_at(ns, addr, c)? == HandshakeKind::Resumed {
            n += 1;
        }
    }
    Ok(n)
}

/// `openssl s_client -sess_out` at `first`, then `-sess_in` at `second` (TLS 1.2 with a session
/// ticket, and TLS 1.3): true when the second was `Reused`.
fn openssl_resumes(ns: &str, dir: &Path, version: &str, first: &str, second: &str) -> Result<bool> {
    let ca = dir.join("ca.pem");
    let sess = dir.join(format!("tickets{version}.pem"));
    let s_client = |io: &str, connect: &str| -> Result<String> {
        // stdin stays open for a second, so that the TLS 1.3 NewSessionTicket (sent after the
        // handshake) arrives before s_client ends the session.
        let cmd = format!(
            "sleep 1 | timeout 10 openssl s_client -connect {connect} -servername a.test {version} -CAfile {} \
             -verify_return_error {io} {}",
            ca.display(),
            sess.display()
        );
        let out = sluice_testbed::in_ns(ns, "sh", &["-c", &cmd])
            .or_else(|e| bail!("openssl s_client {version} {io} to {connect}: {e:#}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let new = s_client("-sess_out", first)?;
    ensure!(new.contains("New, TLSv1"), "{version}: first handshake not new:\n{new}");
    ensure!(new.contains("TLS session ticket"), "{version}: no session ticket from {first}:\n{new}");
    Ok(s_client("-sess_in", second)?.contains("Reused, TLSv1"))
}

/// Tickets of sluice 1 (XDP, :443) on sluice 2 (kernel sockets, :8443): a full handshake while
/// sluice 2 has its own in-process keys; after a SIGHUP that gives it sluice 1's key file, all of
/// 50 TLS 1.2 and 50 TLS 1.3 tickets resume there (and openssl's); after a SIGHUP that
/// prepends a new file (a rotation) tickets made before it still resume, and new tickets are
/// made with the new key (sluice 1, which has only the old file, cannot open them); under another
/// TLS policy none resumes (counted `policy_mismatch`).
#[test]
fn tickets_resume_across_two_sluices_sharing_a_key_file_and_survive_a_rotation() -> Result<()> {
    let prefix = "tk1-";
    let dir = std::env::temp_dir().join(format!("{prefix}keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = certificates(&dir)?;
    let key_a = key_file(&dir, "ticket-a.key", 80)?;
    let sluice = Sluice::start(prefix, &Transport::Xdp.config(&listener(&dir, 443, &[&key_a])))?;
    http_backend(&sluice.backend())?;
    let second = sluice.start_another("second", ADMIN_2, &second_config(&dir, &[]))?;
    let ns = sluice.client();
    let (at_1, at_2) = (format!("{PROXY_HOST}:443"), format!("{PROXY_HOST}:8443"));

    // Each its own keys: sluice 1's tickets mean nothing to sluice 2.
    let holders = clients_with_tickets(&ns, &ca, &at_1, 5)?;
    ensure!(resumed_at(&ns, &at_2, &holders)? == 0, "resumed on sluice 2 without the shared key file");
    for version in ["-tls1_2", "-tls1_3"] {
        ensure!(!openssl_resumes(&ns, &dir, version, &at_1, &at_2)?, "{version}: openssl resumed without the file");
    }
    ensure!(total(&second.stats()?, "tls_handshakes_resumed") == 0, "{:#}", second.stats()?);

    // SIGHUP: sluice 2 reads sluice 1's key file (root's 0600: through its keyholder).
    std::fs::write(second.config_path(), second_config(&dir, &[&key_a]))?;
    sighup(second.process.pid())?;
    wait_reloaded(&second, 1)?;
    let holders = clients_with_tickets(&ns, &ca, &at_1, ROUNDS)?;
    let resumed = resumed_at(&ns, &at_2, &holders)?;
    ensure!(resumed == 2 * ROUNDS, "{resumed} of {} tickets of sluice 1 resumed on sluice 2", 2 * ROUNDS);
    for version in ["-tls1_2", "-tls1_3"] {
        ensure!(openssl_resumes(&ns, &dir, version, &at_1, &at_2)?, "{version}: openssl's ticket did not resume");
    }
    let stats = second.stats()?;
    ensure!(total(&stats, "tls_handshakes_resumed") == 2 * ROUNDS as u64 + 2, "{stats:#}");
    // The other way too: sluice 2's tickets resume on sluice 1 (on AF_XDP).
    let holders = clients_with_tickets(&ns, &ca, &at_2, 5)?;
    ensure!(resumed_at(&ns, &at_1, &holders)? == 10, "sluice 2's tickets did not resume on sluice 1");

    // Rotation: a new file prepended on sluice 2. Tickets made under the old key still resume;
    // new ones are made with the new key (sluice 1 has only the old one: a full handshake there).
    let old_tickets = clients_with_tickets(&ns, &ca, &at_1, 10)?;
    let key_b = key_file(&dir, "ticket-b.key", 48)?;
    std::fs::write(second.config_path(), second_config(&dir, &[&key_b, &key_a]))?;
    sighup(second.process.pid())?;
    wait_reloaded(&second, 2)?;
    ensure!(resumed_at(&ns, &at_2, &old_tickets)? == 20, "tickets of the old key did not resume after the rotation");
    let new_tickets = clients_with_tickets(&ns, &ca, &at_2, 10)?;
    ensure!(resumed_at(&ns, &at_1, &new_tickets)? == 0, "a ticket made after the rotation opened with the old key");
    let new_tickets = clients_with_tickets(&ns, &ca, &at_2, 10)?;
    ensure!(resumed_at(&ns, &at_2, &new_tickets)? == 20, "tickets of the new key did not resume where they were made");

    let stats = second.stats()?;
    ensure!(stats["session_caches"][0]["policy_mismatch"] == 0, "{stats:#}");
    ensure!(second.process.log().contains("keyholder"), "sluice 2 did not run a keyholder:\n{}", second.process.log());

    // The same keys under another TLS policy (here another ALPN list): tickets of sluice 1 get a
    // full handshake on sluice 2, counted as policy mismatches.
    let other_policy =
        second_config(&dir, &[&key_b, &key_a]).replace("alpn = [\"http/1.1\"]", "alpn = [\"h2\", \"http/1.1\"]");
    std::fs::write(second.config_path(), other_policy)?;
    sighup(second.process.pid())?;
    wait_reloaded(&second, 3)?;
    let holders = clients_with_tickets(&ns, &ca, &at_1, 5)?;
    ensure!(resumed_at(&ns, &at_2, &holders)? == 0, "a ticket resumed under another TLS policy");
    let stats = second.stats()?;
    ensure!(stats["session_caches"][0]["policy_mismatch"] == 10, "{stats:#}");
    drop(second);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
