//! The shared session store (issue 14): two sluice processes with the same `[session_store]`
//! (one Redis, one sealing key file) resume each other's TLS 1.2 session IDs and TLS 1.3
//! stateful tickets (`resumption = "session_id"`, the default).
//!
//! Topology (one test topology per test, its own prefix `ssN-`):
//! - sluice 1 on AF_XDP, listener 198.51.100.2:443, admin 127.0.0.1:9090 (`Sluice::start`);
//! - sluice 2 on kernel sockets in the same proxy namespace, listener 198.51.100.2:8443, admin
//!   127.0.0.1:9091 (`Sluice::start_another`; the XDP program passes port 8443 to the kernel);
//! - in the backend namespace: the HTTP backend on 203.0.113.2:8080 and Debian's `redis-server`
//!   on 203.0.113.2:6379 with a password, no persistence, started by the test and stopped by its
//!   own pid (the [`Redis`] guard, also on failure);
//! - both sluices dropped to `nobody`; the key file (two keys of 64 hex digits and a comment)
//!   root's, mode 0600, the same file for both.
//!
//! What it proves:
//! 1. sessions made on sluice 1 resume on sluice 2 (rustls: 500 TLS 1.2 session IDs and 500
//!    TLS 1.3 stateful tickets, >= 99 %; openssl for both versions), counted as store hits, and
//!    the other way (100 of each, made on kernel sockets, resumed on AF_XDP);
//! 2. a TLS 1.3 ticket resumes once in the whole fleet (GETDEL): offered again, on either
//!    process, it gets a full handshake;
//! 3. Redis holds neither the session ID nor the master secret (searched in an uncompressed RDB
//!    dump, raw and as hex), and a value altered in Redis does not open (full handshake, counted
//!    `session_store_open_failed`);
//! 4. Redis killed under load costs no handshake (full instead of resumed), counted as store
//!    errors/timeouts, and resumption comes back once Redis is up again, without restarting
//!    sluice;
//! 5. a store that answers late (`CLIENT PAUSE`) costs a handshake only the lookup budget
//!    (`timeout_ms`), not the store's delay, counted `session_store_timeouts`.
//! 6. the sealing keys are read again on SIGHUP: a rotation keeps old sessions resumable while
//!    new ones are sealed under the new key, a dropped key no longer opens its sessions, a key
//!    file that does not parse refuses the reload.
//!
//! Counters are summed over the per-queue entries of `/stats.json`, like the other tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{
    Another, PROXY_HOST, Sluice, Transport, certificates, handshake_at, http_backend, https_request as request,
    kernel_config, queue_total as total,
};
use sluice_testbed::NsProcess;
use sluice_tls::rustls::{self, ClientConfig, HandshakeKind, RootCertStore};

const ADMIN_2: &str = "127.0.0.1:9091";
const REDIS_HOST: &str = "203.0.113.2";
const REDIS_PORT: &str = "6379";
const REDIS_PASSWORD: &str = "s3ss10n-st0re-test";

type Ca = rustls::pki_types::CertificateDer<'static>;

// ---------------------------------------------------------------------------------------------
// Configuration

/// A listener section on `port` with the default resumption (session IDs and TLS 1.3 stateful
/// tickets through the session cache, and so through the store).
fn listener(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "[[listener]]\naddress = \"198.51.100.2:{port}\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [listener.tls]\ncertificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"] }}]\n\
         alpn = [\"http/1.1\"]\nresumption = \"session_id\"\n\n"
    )
}

/// The `[session_store]` table both processes share.
fn store_section(key_file: &Path, timeout_ms: u64) -> String {
    format!(
        "[session_store]\nurl = \"redis://:{REDIS_PASSWORD}@{REDIS_HOST}:{REDIS_PORT}\"\nkey_file = {:?}\n\
         timeout_ms = {timeout_ms}\nprefix = \"sluice:\"\nmax_in_flight = 256\n\n",
        key_file.display().to_string()
    )
}

/// sluice 1's configuration: AF_XDP, port 443.
fn first_config(dir: &Path, key_file: &Path, timeout_ms: u64) -> String {
    Transport::Xdp.config(&format!("{}{}", listener(dir, 443), store_section(key_file, timeout_ms)))
}

/// sluice 2's configuration: kernel sockets with `workers` threads, port 8443, admin on 9091.
fn second_config(dir: &Path, key_file: &Path, timeout_ms: u64, workers: usize) -> String {
    kernel_config(
        workers,
        &format!("{}[admin]\naddress = \"{ADMIN_2}\"\n\n{}", listener(dir, 8443), store_section(key_file, timeout_ms)),
    )
}

/// The store's key file: a comment and two keys of 32 random bytes in hex (`openssl rand -hex
/// 32`); the first seals, both open. Root's, mode 0600.
fn store_key_file(dir: &Path) -> Result<PathBuf> {
    let mut text = String::from("# sluice session store keys: the first seals, every one opens\n");
    for _ in 0..2 {
        let out = std::process::Command::new("openssl").args(["rand", "-hex", "32"]).output()?;
        ensure!(out.status.success(), "openssl rand: {}", String::from_utf8_lossy(&out.stderr));
        let hex = String::from_utf8(out.stdout)?.trim().to_owned();
        ensure!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "openssl rand -hex 32: {hex:?}");
        text.push_str(&hex);
        text.push('\n');
    }
    let path = dir.join("store.keys");
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Redis

/// `redis-server` in the backend namespace on 203.0.113.2:6379, stopped by its own pid when
/// dropped (declare it after the `Sluice`, so that it goes before the namespaces do). RDB
/// uncompressed, into `dir`, only when asked (`SAVE`).
struct Redis {
    process: Option<NsProcess>,
    ns: String,
    dir: PathBuf,
    starts: usize,
}

impl Redis {
    fn start(ns: &str, dir: &Path) -> Result<Self> {
        let mut r = Self { process: None, ns: ns.to_owned(), dir: dir.to_owned(), starts: 0 };
        r.restart()?;
        Ok(r)
    }

    /// Starts redis (again: the same address, port and password, an empty data set); waits
    /// until it answers PING.
    fn restart(&mut self) -> Result<()> {
        ensure!(self.process.is_none(), "redis is running");
        self.starts += 1;
        let dir = self.dir.to_str().context("path")?.to_owned();
        let args = [
            "--port",
            REDIS_PORT,
            "--bind",
            REDIS_HOST,
            "--requirepass",
            REDIS_PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--rdbcompression",
            "no",
            "--dir",
            &dir,
            "--dbfilename",
            "dump.rdb",
        ];
        let log = self.dir.join(format!("redis-{}.log", self.starts));
        self.process = Some(NsProcess::spawn(&self.ns, "redis-server", &args, log)?);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.process.as_mut().context("redis")?.try_wait()? {
                bail!("redis-server exited ({status}):\n{}", self.log());
            }
            if self.cli(&["PING"]).is_ok_and(|s| s.trim() == "PONG") {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "redis not answering after 10 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (no goodbye to its clients), waits for the exit.
    fn kill(&mut self) -> Result<()> {
        let mut p = self.process.take().context("redis not running")?;
        p.signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5))?;
        Ok(())
    }

    fn log(&self) -> String {
        self.process.as_ref().map(NsProcess::log).unwrap_or_default()
    }

    /// `redis-cli ARGS` against it from the backend namespace: the raw output.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-h", REDIS_HOST, "-p", REDIS_PORT, "-a", REDIS_PASSWORD, "--no-auth-warning", "--raw"];
        all.extend_from_slice(args);
        let out = sluice_testbed::in_ns(&self.ns, "redis-cli", &all)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // redis-cli exits 0 on a server error reply; treat one as an error.
        ensure!(!text.starts_with("ERR") && !text.starts_with("NOAUTH"), "redis-cli {args:?}: {text}");
        Ok(text)
    }

    fn dbsize(&self) -> Result<u64> {
        self.cli(&["DBSIZE"])?.trim().parse().context("DBSIZE")
    }

    /// Every key and value as they are stored: a `SAVE` into an uncompressed RDB, read back.
    fn dump(&self) -> Result<Vec<u8>> {
        let saved = self.cli(&["SAVE"])?;
        ensure!(saved.trim() == "OK", "SAVE: {saved}");
        Ok(std::fs::read(self.dir.join("dump.rdb"))?)
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A rustls client of `version` that resumes through session IDs (TLS 1.2) and stateful
/// tickets (TLS 1.3), with an in-memory session store of its own.
fn client(ca: &Ca, version: &'static rustls::SupportedProtocolVersion) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut config =
        ClientConfig::builder_with_protocol_versions(&[version]).with_root_certificates(roots).with_no_client_auth();
    config.resumption = rustls::client::Resumption::in_memory_sessions(16)
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    Ok(Arc::new(config))
}

/// `threads` threads in namespace `ns`, thread `i` running `f(i)`; their results in order.
fn in_threads<T: Send + 'static>(
    ns: &str,
    threads: usize,
    f: impl Fn(usize) -> Result<T> + Send + Sync + 'static,
) -> Result<Vec<T>> {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (ns, f) = (ns.to_owned(), f.clone());
            std::thread::spawn(move || sluice_testbed::in_netns(&ns, move || f(i)))
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))???);
    }
    Ok(out)
}

/// Sessions made at `first` resumed at `second`: `n` new clients of `version` over `threads`
/// threads, each a full handshake at `first` then one at `second`. Returns how many resumed.
fn pairs(
    ns: &str,
    ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
    first: &str,
    second: &str,
    n: usize,
    threads: usize,
) -> Result<usize> {
    let (ca, first, second) = (ca.clone(), first.to_owned(), second.to_owned());
    let counts = in_threads(ns, threads, move |i| -> Result<usize> {
        let mut resumed = 0;
        for _ in (i..n).step_by(threads) {
            let c = client(&ca, version)?;
            let (kind, _) = request(&first, &c)?;
            ensure!(kind == HandshakeKind::Full, "{version:?}: a new client's handshake at {first} was {kind:?}");
            if request(&second, &c)?.0 == HandshakeKind::Resumed {
                resumed += 1;
            }
        }
        Ok(resumed)
    })?;
    Ok(counts.into_iter().sum())
}

/// Waits (up to `within`) until a TLS 1.2 session made at `first` resumes at `second`: the store
/// is reachable from both processes (sluice connects, and reconnects, on its own).
fn wait_store_resumes(ns: &str, ca: &Ca, first: &str, second: &str, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let c = client(ca, &rustls::version::TLS12)?;
        ensure!(handshake_at(ns, first, &c)? == HandshakeKind::Full, "a new client resumed at {first}");
        std::thread::sleep(Duration::from_millis(20)); // the write is asynchronous
        if handshake_at(ns, second, &c)? == HandshakeKind::Resumed {
            return Ok(start.elapsed());
        }
        ensure!(start.elapsed() < within, "no session of {first} resumed at {second} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `openssl s_client` to a.test at `connect` from `ns`, `version` (`-tls1_2`: tickets off, so
/// session IDs; `-tls1_3`), with `io` (`-sess_out`/`-sess_in`) `sess`: its stdout.
fn s_client(ns: &str, dir: &Path, version: &str, io: &str, connect: &str, sess: &Path) -> Result<String> {
    let no_ticket = if version == "-tls1_2" { "-no_ticket" } else { "" };
    // stdin stays open for a second, so that the TLS 1.3 NewSessionTicket (sent after the
    // handshake) arrives before s_client ends the session.
    let cmd = format!(
        "sleep 1 | timeout 10 openssl s_client -connect {connect} -servername a.test {version} {no_ticket} -CAfile {} \
         -verify_return_error {io} {}",
        dir.join("ca.pem").display(),
        sess.display()
    );
    let out = sluice_testbed::in_ns(ns, "sh", &["-c", &cmd])
        .or_else(|e| bail!("openssl s_client {version} {io} to {connect}: {e:#}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A new openssl session at `first` written to `dir/name`: must be new and verified.
fn openssl_session(ns: &str, dir: &Path, version: &str, first: &str, name: &str) -> Result<PathBuf> {
    let sess = dir.join(name);
    let new = s_client(ns, dir, version, "-sess_out", first, &sess)?;
    ensure!(new.contains("New, TLSv1"), "{version}: first handshake at {first} not new:\n{new}");
    ensure!(new.contains("Verify return code: 0 (ok)"), "{version}: chain did not verify:\n{new}");
    Ok(sess)
}

/// `openssl s_client -sess_in sess` at `addr`: Some(true) reused, Some(false) a new (full)
/// handshake; an error when neither.
fn openssl_reused(ns: &str, dir: &Path, version: &str, addr: &str, sess: &Path) -> Result<bool> {
    let out = s_client(ns, dir, version, "-sess_in", addr, sess)?;
    if out.contains("Reused, TLSv1") {
        return Ok(true);
    }
    ensure!(out.contains("New, TLSv1"), "{version} at {addr}: neither reused nor new:\n{out}");
    Ok(false)
}

/// The store counters of one `/stats.json`, for messages.
fn store_counters(stats: &serde_json::Value) -> String {
    [
        "session_store_lookups",
        "session_store_hits",
        "session_store_misses",
        "session_store_timeouts",
        "session_store_errors",
        "session_store_open_failed",
        "session_store_writes",
        "session_store_writes_dropped",
        "tls_handshakes_full",
        "tls_handshakes_resumed",
    ]
    .iter()
    .map(|c| format!("{c}={}", total(stats, c)))
    .collect::<Vec<_>>()
    .join(" ")
}

/// The fixture of every test: both sluices, the backend, Redis, the store working end to end.
struct Fleet {
    // Field order is drop order: Redis and sluice 2 before sluice 1, which removes the namespaces.
    redis: Redis,
    second: Another,
    sluice: Sluice,
    dir: PathBuf,
    ca: Ca,
    ns: String,
    at_1: String,
    at_2: String,
}

impl Fleet {
    fn up(prefix: &str, timeout_ms: u64, second_workers: usize) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}store-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = certificates(&dir)?;
        let keys = store_key_file(&dir)?;
        let sluice = Sluice::start(prefix, &first_config(&dir, &keys, timeout_ms))?;
        http_backend(&sluice.backend())?;
        // Redis can only start once the namespaces exist: sluice 1 finds the store down at
        // first, and connects once it is up.
        let redis = Redis::start(&sluice.backend(), &sluice.dir)?;
        let second =
            sluice.start_another("second", ADMIN_2, &second_config(&dir, &keys, timeout_ms, second_workers))?;
        let ns = sluice.client();
        let (at_1, at_2) = (format!("{PROXY_HOST}:443"), format!("{PROXY_HOST}:8443"));
        let fleet = Self { redis, second, sluice, dir, ca, ns, at_1, at_2 };
        wait_store_resumes(&fleet.ns, &fleet.ca, &fleet.at_1, &fleet.at_2, Duration::from_secs(15))
            .with_context(|| fleet.logs())?;
        Ok(fleet)
    }

    fn logs(&self) -> String {
        format!(
            "sluice 1:\n{}\nsluice 2:\n{}\nredis:\n{}",
            self.sluice.process.log(),
            self.second.process.log(),
            self.redis.log()
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

const SESSIONS: usize = 500;

/// 500 TLS 1.2 sessions (IDs) and 500 TLS 1.3 sessions (stateful tickets) made on sluice 1
/// resume on sluice 2, each a store hit there; openssl's too.
#[test]
fn sessions_resume_across_processes() -> Result<()> {
    let f = Fleet::up("ss1-", 5, 2)?;
    let before = f.second.stats()?;

    let mut resumed = 0;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let n = pairs(&f.ns, &f.ca, version, &f.at_1, &f.at_2, SESSIONS, 8)?;
        ensure!(
            n * 100 >= SESSIONS * 99,
            "{version:?}: {n} of {SESSIONS} sessions of sluice 1 resumed on sluice 2: {}",
            store_counters(&f.second.stats()?)
        );
        resumed += n;
    }
    for version in ["-tls1_2", "-tls1_3"] {
        let sess = openssl_session(&f.ns, &f.dir, version, &f.at_1, &format!("s1{version}.pem"))?;
        ensure!(openssl_reused(&f.ns, &f.dir, version, &f.at_2, &sess)?, "{version}: openssl's session not reused");
        resumed += 1;
    }

    let after = f.second.stats()?;
    let delta = |c: &str| total(&after, c) - total(&before, c);
    ensure!(delta("tls_handshakes_resumed") == resumed as u64, "{resumed} resumed: {}", store_counters(&after));
    ensure!(delta("session_store_hits") >= resumed as u64, "{resumed} resumed: {}", store_counters(&after));
    ensure!(delta("session_store_lookups") >= resumed as u64, "{}", store_counters(&after));
    ensure!(delta("session_store_open_failed") == 0, "{}", store_counters(&after));
    ensure!(delta("session_store_errors") == 0, "{}", store_counters(&after));
    ensure!(total(&f.sluice.stats()?, "session_store_writes") >= 2 * SESSIONS as u64, "{:#}", f.sluice.stats()?);
    ensure!(after["latency"]["session_store_lookup"]["count"].as_u64().unwrap_or(0) > 0, "{:#}", after["latency"]);

    // The other way: sessions made on kernel sockets resume on AF_XDP (the lookups parked by
    // the XDP transport's workers).
    let before_1 = f.sluice.stats()?;
    let mut back = 0;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let n = pairs(&f.ns, &f.ca, version, &f.at_2, &f.at_1, 100, 4)?;
        ensure!(n >= 99, "{version:?}: {n} of 100 sessions of sluice 2 resumed on sluice 1");
        back += n;
    }
    let after_1 = f.sluice.stats()?;
    let delta_1 = |c: &str| total(&after_1, c) - total(&before_1, c);
    ensure!(delta_1("tls_handshakes_resumed") == back as u64, "{back} resumed: {}", store_counters(&after_1));
    ensure!(delta_1("session_store_hits") >= back as u64, "{back} resumed: {}", store_counters(&after_1));
    Ok(())
}

/// A TLS 1.3 ticket resumes once in the fleet: made on sluice 1, resumed on sluice 2, then the
/// same ticket offered again to sluice 1 and to sluice 2 gets a full handshake on both.
#[test]
fn tls13_resumes_once_across_the_fleet() -> Result<()> {
    let f = Fleet::up("ss2-", 5, 2)?;
    let sess = openssl_session(&f.ns, &f.dir, "-tls1_3", &f.at_1, "once.pem")?;
    ensure!(openssl_reused(&f.ns, &f.dir, "-tls1_3", &f.at_2, &sess)?, "the ticket of sluice 1 did not resume on 2");
    ensure!(!openssl_reused(&f.ns, &f.dir, "-tls1_3", &f.at_1, &sess)?, "a used ticket resumed again on sluice 1");
    ensure!(!openssl_reused(&f.ns, &f.dir, "-tls1_3", &f.at_2, &sess)?, "a used ticket resumed again on sluice 2");

    // The same with rustls (each ticket offered once by the client, so one ticket per process):
    // many tickets made on sluice 1, each resumed once on sluice 2.
    let n = pairs(&f.ns, &f.ca, &rustls::version::TLS13, &f.at_1, &f.at_2, 50, 2)?;
    ensure!(n >= 49, "{n} of 50 TLS 1.3 sessions resumed on sluice 2");
    Ok(())
}

/// Redis holds neither a session's ID nor its master secret, and a value altered in Redis does
/// not open: a full handshake, counted `session_store_open_failed`.
#[test]
fn store_holds_neither_id_nor_secret_and_refuses_tampered_values() -> Result<()> {
    let f = Fleet::up("ss3-", 5, 2)?;
    // What the warm-up left in the store; the openssl session adds one key.
    let warm = f.redis.dbsize()?;
    ensure!(warm >= 1, "nothing in the store after the warm-up");
    let sess = openssl_session(&f.ns, &f.dir, "-tls1_2", &f.at_1, "secret.pem")?;
    let text = sluice_testbed::in_ns(
        &f.ns,
        "openssl",
        &["sess_id", "-in", sess.to_str().context("path")?, "-noout", "-text"],
    )?;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let field = |name: &str| -> Result<String> {
        let v = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .with_context(|| format!("no {name} in:\n{text}"))?
            .trim()
            .to_owned();
        ensure!(v.len() >= 32 && v.bytes().all(|b| b.is_ascii_hexdigit()), "{name} {v:?}");
        Ok(v)
    };
    let (id_hex, secret_hex) = (field("Session-ID:")?, field("Master-Key:")?);
    let unhex = |h: &str| -> Vec<u8> {
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
    };
    let (id, secret) = (unhex(&id_hex), unhex(&secret_hex));

    // The write is asynchronous: wait until it is there (the warm-up wrote others before).
    let deadline = Instant::now() + Duration::from_secs(3);
    let keys_before = loop {
        let n = f.redis.dbsize()?;
        if n > warm {
            break n;
        }
        ensure!(Instant::now() < deadline, "the openssl session was not written to the store ({n} keys)");
        std::thread::sleep(Duration::from_millis(50));
    };
    let dump = f.redis.dump()?;
    ensure!(dump.len() > 64 * keys_before as usize, "an RDB of {} bytes for {keys_before} keys", dump.len());
    let contains = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
    for (what, bytes, hex) in [("session ID", &id, &id_hex), ("master secret", &secret, &secret_hex)] {
        ensure!(!contains(bytes), "the {what} is in Redis as bytes");
        ensure!(!contains(hex.to_ascii_lowercase().as_bytes()), "the {what} is in Redis as hex");
        ensure!(!contains(hex.to_ascii_uppercase().as_bytes()), "the {what} is in Redis as HEX");
        // Nor its first half (a truncated copy).
        ensure!(!contains(&bytes[..bytes.len() / 2]), "half the {what} is in Redis");
    }
    // The store is keyed by the configured prefix.
    ensure!(contains(b"sluice:"), "no key with the prefix sluice: in the RDB");

    // Alter one byte in the middle of every stored value (keeping its TTL), then resume.
    let altered = f.redis.cli(&[
        "EVAL",
        "local n = 0 \
         for _, k in ipairs(redis.call('KEYS', '*')) do \
           local v = redis.call('GET', k) \
           local i = math.floor(#v / 2) \
           redis.call('SETRANGE', k, i, string.char((string.byte(v, i + 1) + 1) % 256)) \
           n = n + 1 \
         end \
         return n",
        "0",
    ])?;
    let altered: u64 = altered.trim().parse().with_context(|| format!("EVAL: {altered}"))?;
    ensure!(altered >= keys_before, "{altered} values altered, {keys_before} keys");
    let before = f.second.stats()?;
    ensure!(!openssl_reused(&f.ns, &f.dir, "-tls1_2", &f.at_2, &sess)?, "a session resumed from an altered value");
    let after = f.second.stats()?;
    ensure!(
        total(&after, "session_store_open_failed") > total(&before, "session_store_open_failed"),
        "{}",
        store_counters(&after)
    );
    ensure!(
        total(&after, "tls_handshakes_resumed") == total(&before, "tls_handshakes_resumed"),
        "{}",
        store_counters(&after)
    );
    Ok(())
}

/// Redis killed while clients keep resuming on sluice 2 sessions made on sluice 1: not one
/// handshake fails (full instead of resumed), the store errors are counted; Redis started again
/// (same address, port, password): resumption across the processes comes back on its own.
#[test]
fn store_down_mid_load_fails_no_handshake() -> Result<()> {
    let mut f = Fleet::up("ss4-", 5, 2)?;
    let before = f.second.stats()?;
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let load = {
        let (ns, ca, at_1, at_2) = (f.ns.clone(), f.ca.clone(), f.at_1.clone(), f.at_2.clone());
        let (stop, killed_at) = (stop.clone(), killed_at.clone());
        std::thread::spawn(move || {
            in_threads(&ns, 4, move |i| -> Result<(u64, u64, u64, Vec<String>)> {
                // (handshakes, resumed, handshakes after the kill, failures)
                let (mut hs, mut resumed, mut after_kill, mut failures) = (0, 0, 0, Vec::new());
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let version =
                        if (i + round).is_multiple_of(2) { &rustls::version::TLS12 } else { &rustls::version::TLS13 };
                    let c = client(&ca, version)?;
                    for addr in [&at_1, &at_2] {
                        match request(addr, &c) {
                            Ok((kind, _)) => {
                                hs += 1;
                                if addr == &at_2 && kind == HandshakeKind::Resumed {
                                    resumed += 1;
                                }
                                if killed_at.lock().unwrap().is_some() {
                                    after_kill += 1;
                                }
                            }
                            Err(e) => failures.push(format!("{version:?} at {addr}: {e:#}")),
                        }
                    }
                }
                Ok((hs, resumed, after_kill, failures))
            })
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    f.redis.kill()?;
    *killed_at.lock().unwrap() = Some(Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let results = load.join().map_err(|_| anyhow::anyhow!("load panicked"))??;

    let (hs, resumed, after_kill) = results.iter().fold((0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
    let failures: Vec<_> = results.into_iter().flat_map(|r| r.3).collect();
    ensure!(
        failures.is_empty(),
        "{} of {hs} handshakes failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    ensure!(resumed > 0, "no session resumed across the processes before the kill ({hs} handshakes)");
    ensure!(after_kill >= 20, "only {after_kill} handshakes after the kill: the load did not go on");
    let after = f.second.stats()?;
    let delta = |c: &str| total(&after, c) - total(&before, c);
    ensure!(
        delta("session_store_errors") + delta("session_store_timeouts") > 0,
        "store down, neither errors nor timeouts counted: {}",
        store_counters(&after)
    );

    // Up again, empty: new sessions made on sluice 1 resume on sluice 2 again.
    f.redis.restart()?;
    let took = wait_store_resumes(&f.ns, &f.ca, &f.at_1, &f.at_2, Duration::from_secs(12)).with_context(|| f.logs())?;
    eprintln!("resumption across processes back {took:?} after redis restarted");
    // Each worker reconnects on its own back-off (at most 5 s): wait until every one of both
    // processes is connected again (the gauge `session_store_nodes_up_now`, one node).
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let (s1, s2) = (f.sluice.stats()?, f.second.stats()?);
        let queues = s1["queues"].as_array().into_iter().chain(s2["queues"].as_array()).flatten();
        let down = queues.filter(|q| q["session_store_nodes_up_now"] != 1).count();
        if down == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "{down} workers not reconnected 12 s after the restart:\n{}", f.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = pairs(&f.ns, &f.ca, &rustls::version::TLS12, &f.at_1, &f.at_2, 20, 2)?;
    ensure!(n >= 19, "after the restart {n} of 20 sessions resumed: {}", store_counters(&f.second.stats()?));
    Ok(())
}

/// A store that answers late (`CLIENT PAUSE 2000 ALL`) costs a handshake no more than the
/// lookup budget (timeout_ms = 20): resumptions on sluice 2 during the pause complete as full
/// handshakes well before the pause ends, fresh full handshakes on the same worker keep a p99
/// well under the pause, and the timeouts are counted.
#[test]
fn slow_store_costs_only_the_budget() -> Result<()> {
    const PAUSE: Duration = Duration::from_millis(2000);
    let f = Fleet::up("ss5-", 20, 1)?;
    // Sessions made on sluice 1 before the pause, waiting for sluice 2.
    let holders = {
        let (ca, at_1) = (f.ca.clone(), f.at_1.clone());
        in_threads(&f.ns, 1, move |_| -> Result<Vec<Arc<ClientConfig>>> {
            let mut out = Vec::new();
            for i in 0..20 {
                let version = if i % 2 == 0 { &rustls::version::TLS12 } else { &rustls::version::TLS13 };
                let c = client(&ca, version)?;
                ensure!(request(&at_1, &c)?.0 == HandshakeKind::Full, "a new client resumed");
                out.push(c);
            }
            Ok(out)
        })?
        .pop()
        .context("no holders")?
    };
    std::thread::sleep(Duration::from_millis(300)); // the writes reach Redis
    let before = f.second.stats()?;

    let paused = f.redis.cli(&["CLIENT", "PAUSE", &PAUSE.as_millis().to_string(), "ALL"])?;
    ensure!(paused.trim() == "OK", "CLIENT PAUSE: {paused}");
    let pause_start = Instant::now();
    let resumes = {
        let at_2 = f.at_2.clone();
        let holders = Arc::new(holders);
        let ns = f.ns.clone();
        std::thread::spawn(move || {
            in_threads(&ns, 1, move |_| -> Result<Vec<(HandshakeKind, Duration)>> {
                holders.iter().map(|c| request(&at_2, c)).collect()
            })
        })
    };
    let fresh = {
        let (ca, at_2, ns) = (f.ca.clone(), f.at_2.clone(), f.ns.clone());
        std::thread::spawn(move || {
            in_threads(&ns, 1, move |_| -> Result<hdrhistogram::Histogram<u64>> {
                let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let start = Instant::now();
                let mut i = 0;
                while start.elapsed() < PAUSE - Duration::from_millis(300) {
                    i += 1;
                    let version = if i % 2 == 0 { &rustls::version::TLS12 } else { &rustls::version::TLS13 };
                    let (kind, took) = request(&at_2, &client(&ca, version)?)?;
                    ensure!(kind == HandshakeKind::Full, "a new client's handshake was {kind:?}");
                    h.record(took.as_micros() as u64)?;
                }
                Ok(h)
            })
        })
    };
    let resumes = resumes.join().map_err(|_| anyhow::anyhow!("panicked"))??.pop().context("no result")?;
    let fresh = fresh.join().map_err(|_| anyhow::anyhow!("panicked"))??.pop().context("no result")?;
    let done = pause_start.elapsed();
    ensure!(done < PAUSE, "the clients took {done:?}, past the pause: the handshakes waited for the store");

    let slowest = resumes.iter().map(|r| r.1).max().context("no resumption")?;
    ensure!(slowest < Duration::from_secs(1), "a resumption attempt took {slowest:?} during a {PAUSE:?} pause");
    ensure!(
        resumes.iter().all(|r| r.0 == HandshakeKind::Full),
        "a session resumed while the store was paused: {:?}",
        resumes.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    ensure!(fresh.len() >= 10, "only {} fresh handshakes during the pause", fresh.len());
    let p99 = Duration::from_micros(fresh.value_at_quantile(0.99));
    ensure!(p99 < Duration::from_secs(1), "fresh handshakes' p99 {p99:?} during a {PAUSE:?} pause");
    eprintln!(
        "during the pause: slowest resumption attempt {slowest:?}, fresh p50 {:?} p99 {p99:?} ({} handshakes)",
        Duration::from_micros(fresh.value_at_quantile(0.5)),
        fresh.len()
    );
    let after = f.second.stats()?;
    ensure!(
        total(&after, "session_store_timeouts") > total(&before, "session_store_timeouts"),
        "no timeout counted: {}",
        store_counters(&after)
    );

    // After the pause the store answers again.
    std::thread::sleep(PAUSE.saturating_sub(pause_start.elapsed()) + Duration::from_millis(200));
    wait_store_resumes(&f.ns, &f.ca, &f.at_1, &f.at_2, Duration::from_secs(10)).with_context(|| f.logs())?;
    Ok(())
}

/// The sealing keys are read again on SIGHUP (through the keyholder: the file is root's, 0600,
/// sluice runs as `nobody`). A new key put first seals new sessions while the old ones, sealed
/// under a key still listed, keep resuming across processes; a key dropped from the file no
/// longer opens its sessions; a key file that does not parse refuses the reload and the running
/// keys keep serving.
#[test]
fn store_keys_rotate_on_sighup() -> Result<()> {
    let f = Fleet::up("ss6-", 5, 1)?;
    let keys = f.dir.join("store.keys");
    let text = std::fs::read_to_string(&keys)?;
    let old_keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    ensure!(old_keys.len() == 2, "{text}");
    // TLS 1.2 sessions (reusable) sealed under the first key, before any rotation.
    let early = openssl_session(&f.ns, &f.dir, "-tls1_2", &f.at_1, "early.sess")?;
    let kept = openssl_session(&f.ns, &f.dir, "-tls1_2", &f.at_1, "kept.sess")?;
    // Never offered to sluice 2 before its key is dropped (once fetched, a TLS 1.2 session is
    // in sluice 2's own cache, where keys no longer matter).
    let dropped = openssl_session(&f.ns, &f.dir, "-tls1_2", &f.at_1, "dropped.sess")?;
    let written = Instant::now() + Duration::from_secs(5);
    while total(&f.sluice.stats()?, "session_store_writes") < 3 && Instant::now() < written {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(openssl_reused(&f.ns, &f.dir, "-tls1_2", &f.at_2, &early)?, "no resumption before the rotation");

    // Rotation: a new key first, the old ones still listed, on both processes.
    let new_key = {
        let out = std::process::Command::new("openssl").args(["rand", "-hex", "32"]).output()?;
        String::from_utf8(out.stdout)?.trim().to_owned()
    };
    std::fs::write(&keys, format!("# rotated\n{new_key}\n{}\n{}\n", old_keys[0], old_keys[1]))?;
    let reloads = |pid: u32, stats: &dyn Fn() -> Result<serde_json::Value>, ok: u64| -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = stats()?;
            if s["reloads"]["ok"] == ok {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "no reload {ok}: {:#}\n{}", s["reloads"], f.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    reloads(f.sluice.process.pid(), &|| f.sluice.stats(), 1)?;
    reloads(f.second.process.pid(), &|| f.second.stats(), 1)?;
    // Sessions sealed before: still found (under the old key's store key) and opened.
    ensure!(openssl_reused(&f.ns, &f.dir, "-tls1_2", &f.at_2, &kept)?, "an old session lost by the rotation");
    // Sessions made now are sealed under the new key, and resume across processes too.
    wait_store_resumes(&f.ns, &f.ca, &f.at_1, &f.at_2, Duration::from_secs(10)).with_context(|| f.logs())?;
    let fresh = openssl_session(&f.ns, &f.dir, "-tls1_2", &f.at_1, "fresh.sess")?;
    std::thread::sleep(Duration::from_millis(200));

    // The old keys dropped: their sessions no longer open anywhere but where they were made.
    std::fs::write(&keys, format!("{new_key}\n"))?;
    reloads(f.second.process.pid(), &|| f.second.stats(), 2)?;
    ensure!(!openssl_reused(&f.ns, &f.dir, "-tls1_2", &f.at_2, &dropped)?, "a session of a dropped key resumed");
    ensure!(openssl_reused(&f.ns, &f.dir, "-tls1_2", &f.at_2, &early)?, "a session fetched before was lost");
    ensure!(openssl_reused(&f.ns, &f.dir, "-tls1_2", &f.at_2, &fresh)?, "a session of the new key did not resume");

    // A key file that does not parse: the reload is refused, the keys in use keep serving.
    std::fs::write(&keys, "not a key\n")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(f.second.process.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let s = f.second.stats()?;
        if s["reloads"]["refused"] == 1 {
            break s;
        }
        ensure!(Instant::now() < deadline, "a bad key file was not refused: {:#}", s["reloads"]);
        std::thread::sleep(Duration::from_millis(100));
    };
    let why = stats["reloads"]["last_error"].as_str().unwrap_or("");
    ensure!(why.contains("session_store.key_file"), "the refusal does not name the key file: {why}");
    wait_store_resumes(&f.ns, &f.ca, &f.at_1, &f.at_2, Duration::from_secs(10)).with_context(|| f.logs())?;
    Ok(())
}
