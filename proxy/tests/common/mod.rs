//! Shared fixture of the integration tests: the test topology with sluice running in `{p}proxy`.
//! Every test brings its own topology up under its own prefix and takes it down on drop, also on
//! failure. Without root or namespaces a test fails; it never skips.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sluice_testbed::{Impairment, NsProcess, Topology, TopologyGuard};
use sluice_tls::rustls::{ClientConfig, HandshakeKind};

pub const ADMIN: &str = "http://127.0.0.1:9090/stats.json";

/// sluice's address on px0 as a host in a URL or `host:port`, IPv4 and IPv6 (bracketed).
pub const PROXY_HOST: &str = "198.51.100.2";
pub const PROXY_HOST6: &str = "[2001:db8:100::2]";

pub struct Sluice {
    // Field order is drop order: stop sluice and the bridge before removing their namespaces.
    pub process: NsProcess,
    pub bridge: Option<NsProcess>,
    pub topology: TopologyGuard,
    pub dir: PathBuf,
}

impl Sluice {
    /// Brings up topology `prefix` and starts sluice in its proxy namespace with `config`
    /// (TOML text); waits until the admin endpoint answers.
    pub fn start(prefix: &str, config: &str) -> Result<Self> {
        Self::start_in(TopologyGuard::up(prefix)?, None, config)
    }

    /// The same, with the impairment bridge (seeded) between client and proxy.
    pub fn start_impaired(
        prefix: &str,
        config: &str,
        seed: u64,
        client_egress: Impairment,
        proxy_egress: Impairment,
    ) -> Result<Self> {
        let topology = TopologyGuard::up_topology(Topology::impaired(prefix))?;
        let log = std::env::temp_dir().join(format!("{prefix}bridge-{}.log", std::process::id()));
        let bridge = sluice_testbed::start_impairment(&topology.topology, seed, client_egress, proxy_egress, log)?;
        Self::start_in(topology, Some(bridge), config)
    }

    fn start_in(topology: TopologyGuard, bridge: Option<NsProcess>, config: &str) -> Result<Self> {
        let prefix = topology.topology.client().trim_end_matches("client").to_owned();
        let dir = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config)?;
        let process = NsProcess::spawn(
            &topology.topology.proxy(),
            env!("CARGO_BIN_EXE_sluice"),
            &["--config", config_path.to_str().context("path")?],
            dir.join("sluice.log"),
        )?;
        let mut s = Self { process, bridge, topology, dir };
        s.wait_ready()?;
        Ok(s)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.process.try_wait()? {
                bail!("sluice exited ({status}) before it was ready:\n{}", self.process.log());
            }
            if self.stats().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("sluice not ready after 20 s:\n{}", self.process.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn client(&self) -> String {
        self.topology.topology.client()
    }
    pub fn proxy(&self) -> String {
        self.topology.topology.proxy()
    }
    pub fn backend(&self) -> String {
        self.topology.topology.backend()
    }
    /// The routed client's namespace, one router hop (`{p}client`) away.
    pub fn far(&self) -> String {
        self.topology.topology.far()
    }

    /// `/stats.json` of the running sluice.
    pub fn stats(&self) -> Result<serde_json::Value> {
        sluice_testbed::get_json(&self.proxy(), ADMIN)
    }

    /// Waits until nothing is left behind: no relay and no connection open on any worker (their
    /// ends are counted when the TCB is freed), the UMEM frames back on the free lists but for
    /// those lent to the kernel's fill rings, every latency in the histograms; returns the
    /// stats then.
    pub fn wait_idle(&self) -> Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let stats = self.stats()?;
            let open = self.queue_total(&stats, "connections_open");
            let relays = self.queue_total(&stats, "relays_open");
            let frames_out =
                self.queue_total(&stats, "umem_frames_total") - self.queue_total(&stats, "umem_frames_free");
            // Latencies reach the histograms a little after the counters (hand-off to the stats
            // thread): wait until none is on its way.
            let latency_pending = self.queue_total(&stats, "latency_pending");
            if open == 0 && relays == 0 && frames_out <= 2 * 8192 && latency_pending == 0 {
                return Ok(stats);
            }
            if Instant::now() > deadline {
                bail!(
                    "not idle after 15 s: {open} connections, {relays} relays open, {frames_out} frames out, {latency_pending} latencies pending: {stats:#}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sum of one TCP-stack counter over all workers.
    pub fn tcp_total(&self, stats: &serde_json::Value, counter: &str) -> u64 {
        stats["queues"].as_array().map_or(0, |qs| qs.iter().map(|q| q["tcp"][counter].as_u64().unwrap_or(0)).sum())
    }

    /// Sum of one per-queue counter over all queues.
    pub fn queue_total(&self, stats: &serde_json::Value, counter: &str) -> u64 {
        queue_total(stats, counter)
    }
}

/// Sum of one per-queue counter over all queues of any sluice's `/stats.json`.
pub fn queue_total(stats: &serde_json::Value, counter: &str) -> u64 {
    stats["queues"].as_array().map_or(0, |qs| qs.iter().map(|q| q[counter].as_u64().unwrap_or(0)).sum())
}

/// A configuration for the test topology with the given xdp mode and extra TOML appended. Like
/// `configs/netns.toml`, sluice drops to `nobody` once set up: every test runs it unprivileged.
pub fn config(xdp_mode: &str, listeners: &str) -> String {
    format!(
        "[datapath]\ninterface = \"px0\"\nxdp_mode = \"{xdp_mode}\"\nframes_per_queue = 16384\n\n\
         [process]\nuser = \"nobody\"\n\n{listeners}\n"
    )
}

/// A configuration for the kernel transport (`transport = "kernel"`, `workers` threads, no
/// interface) with extra TOML appended.
pub fn kernel_config(workers: usize, listeners: &str) -> String {
    format!("[datapath]\ntransport = \"kernel\"\nworkers = {workers}\n\n[process]\nuser = \"nobody\"\n\n{listeners}\n")
}

/// An echo server in the backend namespace (203.0.113.2:8080): echoes every byte, and after the
/// client's FIN finishes echoing and closes its side (half-close passed through).
pub fn echo_backend(ns: &str) -> Result<()> {
    use std::io::{ErrorKind, Read, Write};
    let listener = sluice_testbed::in_netns(ns, || std::net::TcpListener::bind("203.0.113.2:8080"))??;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Ok(())
}

/// A minimal HTTP/1.1 backend (203.0.113.2:8080): answers every request head with `200 OK` and
/// the body `backend saw Host: <host>`; keeps the connection for the next request (HTTP/1.1)
/// unless the request says `Connection: close` or is HTTP/1.0.
pub fn http_backend(ns: &str) -> Result<()> {
    use std::io::{Read, Write};
    let listener = sluice_testbed::in_netns(ns, || std::net::TcpListener::bind("203.0.113.2:8080"))??;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if pending.len() > 65536 {
                            return;
                        }
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end + 4);
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Host: ").or_else(|| l.strip_prefix("host: ")))
                        .unwrap_or("-")
                        .trim()
                        .to_owned();
                    let close = head.lines().next().is_some_and(|l| l.ends_with("HTTP/1.0"))
                        || head.to_ascii_lowercase().contains("connection: close");
                    let body = format!("backend saw Host: {host}\n");
                    let connection = if close { "close" } else { "keep-alive" };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(answer.as_bytes()).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

/// The size of a bulk transfer in MiB: `default`, or `SLUICE_TEST_TRANSFER_MIB` while developing.
pub fn transfer_mib(default: usize) -> usize {
    std::env::var("SLUICE_TEST_TRANSFER_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Streams `len` pseudo-random bytes to `addr` (an echo, directly or through sluice), reading the
/// echo concurrently and half-closing after the last byte; returns the sha256 of what was sent,
/// of what came back (after the echo's EOF), and the time it took.
pub fn echo_stream(addr: &str, len: usize) -> Result<([u8; 32], [u8; 32], Duration)> {
    use sha2::{Digest, Sha256};
    use std::io::{ErrorKind, Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = s.try_clone()?;
    let start = Instant::now();
    let read = std::thread::spawn(move || -> std::io::Result<([u8; 32], usize)> {
        let (mut h, mut buf, mut total) = (Sha256::new(), vec![0u8; 1 << 16], 0);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok((h.finalize().into(), total)),
                Ok(n) => {
                    h.update(&buf[..n]);
                    total += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    });
    let (mut h, mut chunk, mut rng) = (Sha256::new(), vec![0u8; 1 << 16], 0x5eed_u64);
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        for b in chunk[..n].chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            b.copy_from_slice(&rng.to_le_bytes()[..b.len()]);
        }
        s.write_all(&chunk[..n])?;
        h.update(&chunk[..n]);
        sent += n;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let (back, total) = read.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(total == len, "{total} of {len} bytes came back");
    Ok((h.finalize().into(), back, start.elapsed()))
}

/// A CA (`ca.pem`), an ECDSA `a.test` and an RSA `b.test` certificate with their keys in `dir`;
/// returns the CA certificate.
pub fn certificates(dir: &Path) -> Result<sluice_tls::rustls::pki_types::CertificateDer<'static>> {
    use sluice_tls::testcerts::{Ca, KeyKind};
    let ca = Ca::new()?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    for (name, kind) in [("a.test", KeyKind::EcdsaP256), ("b.test", KeyKind::Rsa2048)] {
        let leaf = ca.server(&[name], kind)?;
        std::fs::write(dir.join(format!("{name}.pem")), &leaf.cert_pem)?;
        std::fs::write(dir.join(format!("{name}.key")), &leaf.key_pem)?;
    }
    Ok(ca.cert_der())
}

/// curl from namespace `ns` to `https://{a,b}.test/` resolved to `host`:443 (`host` is
/// [`PROXY_HOST`], [`PROXY_HOST6`] or another address, IPv6 in brackets) over TLS 1.2 and 1.3,
/// verifying against `ca`: each gets the HTTP backend's answer, the certificate of its name
/// (curl verified the chain, it fails otherwise) and the version asked.
pub fn curl_both_names_and_versions(ns: &str, ca: &Path, host: &str) -> Result<()> {
    let ca = ca.to_str().context("path")?;
    for name in ["a.test", "b.test"] {
        for version in [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3", "--tls-max", "1.3"]] {
            let resolve = format!("{name}:443:{host}");
            let url = format!("https://{name}/");
            let mut args = vec!["-sS", "-v", "--max-time", "10", "--cacert", ca, "--resolve", &resolve];
            args.extend(version);
            args.push(&url);
            let out = sluice_testbed::in_ns(ns, "curl", &args)
                .with_context(|| format!("curl {name} {version:?} to {host} from {ns}"))?;
            let body = String::from_utf8_lossy(&out.stdout);
            let log = String::from_utf8_lossy(&out.stderr);
            ensure!(body == format!("backend saw Host: {name}\n"), "{name} {version:?}: body {body:?}");
            ensure!(log.contains(&format!("CN={name}")), "{name}: certificate subject not {name}:\n{log}");
            let want = if version[0] == "--tlsv1.2" { "TLSv1.2" } else { "TLSv1.3" };
            ensure!(log.contains(want), "{name}: not {want}:\n{log}");
        }
    }
    Ok(())
}

/// `n` HTTPS requests to a.test on 198.51.100.2:443 from the client namespace, each on a new
/// connection with one client config (its own session store): the kinds of handshake the client
/// saw, in order. Every answer must be the HTTP backend's.
pub fn handshakes(sluice: &Sluice, config: ClientConfig, n: usize) -> Result<Vec<HandshakeKind>> {
    let config = std::sync::Arc::new(config);
    sluice_testbed::in_netns(&sluice.client(), move || -> Result<Vec<HandshakeKind>> {
        (0..n).map(|_| Ok(https_request("198.51.100.2:443", &config)?.0)).collect()
    })?
}

/// One HTTPS request to a.test at `addr` with `config`, from the calling thread's namespace:
/// the handshake's kind and how long the connection took (connect to answer). The answer must
/// be the HTTP backend's.
pub fn https_request(addr: &str, config: &std::sync::Arc<ClientConfig>) -> Result<(HandshakeKind, Duration)> {
    use sluice_tls::rustls::{ClientConnection, StreamOwned};
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let tcp = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let conn = ClientConnection::new(config.clone(), "a.test".try_into()?)?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")?;
    let mut body = Vec::new();
    let _ = tls.read_to_end(&mut body); // the backend closes; no close_notify needed
    ensure!(body.ends_with(b"backend saw Host: a.test\n"), "bad answer from {addr}: {body:?}");
    Ok((tls.conn.handshake_kind().context("no handshake")?, start.elapsed()))
}

/// `openssl s_client -sess_out` then `-sess_in` from namespace `ns` to a.test on `host`:443
/// ([`PROXY_HOST`], [`PROXY_HOST6`]: IPv6 in brackets), for TLS 1.2 (session IDs: tickets off) and TLS 1.3, verifying against
/// `dir/ca.pem` (the session files go to `dir` too): the first handshake of each is new and
/// verified, the second resumed.
pub fn openssl_resumes_tls12_and_tls13(ns: &str, dir: &Path, host: &str) -> Result<()> {
    openssl_resumes_at(ns, dir, host, host)
}

/// [`openssl_resumes_tls12_and_tls13`], the first handshake of each version to `first`, the
/// resumption to `second` (the same listener section at another address).
pub fn openssl_resumes_at(ns: &str, dir: &Path, first: &str, second: &str) -> Result<()> {
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().context("path")?;
    for version in ["-tls1_2", "-tls1_3"] {
        let sess = dir.join(format!("session{version}.pem"));
        let s_client = |io: &str, host: &str| -> Result<String> {
            let connect = format!("{host}:443");
            let mut args = vec![
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "a.test",
                version,
                "-CAfile",
                ca,
                "-verify_return_error",
            ];
            if version == "-tls1_2" {
                args.push("-no_ticket");
            }
            args.extend([io, sess.to_str().context("path")?]);
            // stdin stays open for a second, so that the TLS 1.3 NewSessionTicket (sent after the
            // handshake) arrives before s_client ends the session.
            let cmd = format!("sleep 1 | timeout 10 openssl {}", args.join(" "));
            let out = sluice_testbed::in_ns(ns, "sh", &["-c", &cmd])
                .or_else(|e| bail!("openssl s_client {version} {io} to {connect} from {ns}: {e:#}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let new = s_client("-sess_out", first)?;
        ensure!(new.contains("New, TLSv1"), "{version}: first handshake not new:\n{new}");
        ensure!(new.contains("Verify return code: 0 (ok)"), "{version}: chain did not verify:\n{new}");
        let again = s_client("-sess_in", second)?;
        ensure!(again.contains("Reused, TLSv1"), "{version} at {second}: not resumed:\n{again}");
    }
    Ok(())
}

/// The transport a test body runs sluice on (see [`on_both_transports!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Xdp,
    Kernel,
}

impl Transport {
    /// The test topology's configuration for this transport (XDP: native mode on px0, TIME-WAIT
    /// 1 s so that a test sees its connections end soon; kernel: two workers), with `listeners`
    /// (extra TOML, without a `[tcp]` section) appended.
    pub fn config(self, listeners: &str) -> String {
        match self {
            Transport::Xdp => config("native", &format!("{listeners}\n[tcp]\ntime_wait_ms = 1000\n")),
            Transport::Kernel => kernel_config(2, listeners),
        }
    }

    /// A namespace prefix of its own per transport: `bk1-` stays for XDP, `bk1k-` on kernel
    /// sockets.
    pub fn prefix(self, prefix: &str) -> String {
        match self {
            Transport::Xdp => prefix.to_owned(),
            Transport::Kernel => format!("{}k-", prefix.trim_end_matches('-')),
        }
    }
}

/// One test body, two transports: `on_both_transports!(body)` makes the tests `body::xdp` and
/// `body::kernel`, each calling `body(Transport)`.
#[macro_export]
macro_rules! on_both_transports {
    ($($body:ident),+ $(,)?) => {$(
        mod $body {
            #[test]
            fn xdp() -> anyhow::Result<()> {
                super::$body(super::common::Transport::Xdp)
            }
            #[test]
            fn kernel() -> anyhow::Result<()> {
                super::$body(super::common::Transport::Kernel)
            }
        }
    )+};
}

/// The `sluice-bench` binary beside this test's (`cargo xtask test` builds the workspace first);
/// built here when missing.
pub fn bench_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let debug = exe.parent().and_then(Path::parent).context("test binary location")?;
    let bin = debug.join("sluice-bench");
    if !bin.exists() {
        let target = debug.parent().context("target dir")?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "sluice-bench"])
            .env("CARGO_TARGET_DIR", target)
            .status()?;
        ensure!(status.success(), "building sluice-bench: {status}");
    }
    Ok(bin)
}

/// `sluice-bench backend` in the backend namespace on 203.0.113.2:`port`, named `id`; waits until
/// it accepts connections.
pub fn bench_backend(sluice: &Sluice, port: u16, id: &str, accept_proxy: bool) -> Result<NsProcess> {
    let ns = sluice.topology.topology.backend();
    let listen = format!("203.0.113.2:{port}");
    let mut args = vec!["backend", "--listen", &listen, "--id", id, "--threads", "1"];
    if accept_proxy {
        args.push("--accept-proxy");
    }
    let log = sluice.dir.join(format!("backend-{id}.log"));
    let bin = bench_bin()?;
    let mut p = NsProcess::spawn(&ns, bin.to_str().context("path")?, &args, log)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let addr = listen.clone();
        let up = sluice_testbed::in_netns(&ns, move || {
            std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
        })?;
        if up {
            return Ok(p);
        }
        if let Some(status) = p.try_wait()? {
            bail!("sluice-bench backend exited ({status}):\n{}", p.log());
        }
        ensure!(Instant::now() < deadline, "backend {id} not listening after 10 s:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time (user + system, every thread) process `pid` has used so far.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let s = sluice_bench::probe::process_cpu_seconds(pid).with_context(|| format!("/proc/{pid}/stat"))?;
    Ok(Duration::from_secs_f64(s))
}

/// Another sluice in the proxy namespace of a running [`Sluice`]'s topology: its own
/// configuration (other listeners, its own `[admin] address`) in its own directory. Stopped by
/// pid when dropped; drop it before the `Sluice` (declare it after), which removes the namespaces.
pub struct Another {
    pub process: NsProcess,
    pub dir: PathBuf,
    ns: String,
    admin: String,
}

impl Sluice {
    /// Starts another sluice named `name` next to this one with `config` (TOML text, whose
    /// `[admin] address` is `admin`, e.g. `127.0.0.1:9091`); waits until its admin endpoint
    /// answers.
    pub fn start_another(&self, name: &str, admin: &str, config: &str) -> Result<Another> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config)?;
        let process = NsProcess::spawn(
            &self.proxy(),
            env!("CARGO_BIN_EXE_sluice"),
            &["--config", config_path.to_str().context("path")?],
            dir.join("sluice.log"),
        )?;
        let mut another = Another { process, dir, ns: self.proxy(), admin: format!("http://{admin}/stats.json") };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = another.process.try_wait()? {
                bail!("sluice {name} exited ({status}) before it was ready:\n{}", another.process.log());
            }
            if another.stats().is_ok() {
                return Ok(another);
            }
            ensure!(Instant::now() < deadline, "sluice {name} not ready after 20 s:\n{}", another.process.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Another {
    /// Its `/stats.json`.
    pub fn stats(&self) -> Result<serde_json::Value> {
        sluice_testbed::get_json(&self.ns, &self.admin)
    }

    /// Its configuration file (rewrite it, then SIGHUP, to reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sluice.toml")
    }
}

/// One HTTPS request to a.test at `addr` from namespace `ns` on a new connection with `config`
/// (its session store keeps what the server gave): the kind of handshake the client saw. The
/// answer must be the HTTP backend's.
pub fn handshake_at(ns: &str, addr: &str, config: &std::sync::Arc<ClientConfig>) -> Result<HandshakeKind> {
    let (addr, config) = (addr.to_owned(), config.clone());
    sluice_testbed::in_netns(ns, move || Ok(https_request(&addr, &config)?.0))?
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn process_rss_kib(pid: u32) -> Result<u64> {
    sluice_bench::probe::rss_kib(pid).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}
