//! Integration tests of `sluice-bench backend` (in network namespaces, with the kernel's TCP stack
//! on both sides) and of `sluice-bench certs` (checked with openssl).
//!
//! The backend runs in `sluice-bk-backend` on 203.0.113.2:8080; the clients are std TcpStreams on
//! threads that joined `sluice-bk-proxy` (203.0.113.1), where sluice's backend connections start.
//! The namespace tests need root and fail without it (never skip). They share one topology prefix,
//! so they take a lock and run one at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_testbed::{BACKEND_ADDR, NsProcess, TopologyGuard, in_netns};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-bench");
const PREFIX: &str = "sluice-bk-";
static TOPOLOGY: Mutex<()> = Mutex::new(());

fn addr() -> SocketAddr {
    format!("{BACKEND_ADDR}:8080").parse().unwrap()
}

/// The backend in its namespace; dropped before the topology (fields drop in order).
struct Running {
    backend: NsProcess,
    topology: TopologyGuard,
    _lock: MutexGuard<'static, ()>,
}

impl Running {
    fn start(name: &str, extra: &[&str]) -> Self {
        let lock = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
        let topology = TopologyGuard::up(PREFIX).expect("bringing up the sluice-bk- topology (needs root)");
        let log = std::env::temp_dir().join(format!("sluice-bk-{name}.log"));
        let listen = addr().to_string();
        let mut args = vec!["backend", "--listen", &listen, "--id", "bk-test"];
        args.extend_from_slice(extra);
        let backend = NsProcess::spawn(&topology.topology.backend(), BIN, &args, log).expect("starting the backend");
        let running = Self { backend, topology, _lock: lock };
        let ready = running.in_proxy(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr(), Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(ready, "backend never accepted a connection; log:\n{}", running.backend.log());
        running
    }

    /// Runs `f` on a thread in `sluice-bk-proxy` (threads it spawns are there too).
    fn in_proxy<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.topology.topology.proxy(), f).expect("joining sluice-bk-proxy")
    }

    /// SIGTERM; the last line of output is the final counters.
    fn stop(&mut self) -> serde_json::Value {
        let status = self
            .backend
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
            .expect("backend exits on SIGTERM");
        assert!(status.success(), "backend exit status {status}");
        let log = self.backend.log();
        let line = log.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line in:\n{log}"));
        serde_json::from_str(line).expect("final counters are JSON")
    }
}

fn connect() -> TcpStream {
    let s = TcpStream::connect_timeout(&addr(), Duration::from_secs(5)).expect("connect to the backend");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn content_length(&self) -> u64 {
        self.header("content-length").expect("Content-Length").parse().expect("a number")
    }
}

fn read_head(r: &mut impl BufRead) -> Head {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 ") && line.ends_with("\r\n"), "status line {line:?}");
    let status = line[9..12].parse().expect("status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header line");
        let l = line.trim_end_matches("\r\n");
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("name: value");
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Head { status, headers }
}

fn read_response(r: &mut impl BufRead) -> (Head, Vec<u8>) {
    let head = read_head(r);
    let mut body = vec![0; head.content_length() as usize];
    r.read_exact(&mut body).expect("body");
    (head, body)
}

/// Reads until EOF: the peer closed (what a 400/431 or a rejected PROXY header must end in).
fn reads_to_eof(r: &mut impl Read) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match r.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            // A reset also ends the connection, but is not the clean close we want.
            Err(_) => return false,
        }
    }
}

/// The bytes of `GET /bytes/N` as documented in bench/src/backend.rs (`prng`): SplitMix64 from
/// state 0, each output little-endian. Written out here again so that the test checks the doc.
fn splitmix_sha256(n: u64) -> String {
    let mut state = 0u64;
    let mut h = Sha256::new();
    let mut left = n;
    let mut chunk = Vec::with_capacity(1 << 16);
    while left > 0 {
        chunk.clear();
        while chunk.len() < 1 << 16 && (chunk.len() as u64) < left {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let take = (chunk.len() as u64).min(left) as usize;
        h.update(&chunk[..take]);
        left -= take as u64;
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Upload data: not the download sequence, so that an echo of the wrong thing cannot pass.
fn pattern(n: usize) -> Vec<u8> {
    let mut x = 0x1234_5678u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn stats() -> serde_json::Value {
    let mut s = connect();
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut BufReader::new(s));
    assert_eq!(head.status, 200);
    serde_json::from_slice(&body).expect("stats JSON")
}

#[test]
fn http_mode_in_namespaces() {
    let mut running = Running::start("http", &["--mode", "http"]);
    let figures = running.in_proxy(|| {
        // GET / names the backend and echoes the Host header.
        let mut s = BufReader::new(connect());
        s.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut s);
        assert_eq!(head.status, 200);
        assert_eq!(head.header("x-backend-id"), Some("bk-test"));
        assert_eq!(String::from_utf8(body).unwrap(), "backend bk-test\nhost a.test\n");

        // GET /bytes/N on the same connection: the documented sequence, checked by sha256.
        for n in [0u64, 1, 7, 48 * 1024 * 1024 + 5] {
            s.get_mut().write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes()).unwrap();
            let head = read_head(&mut s);
            assert_eq!((head.status, head.content_length()), (200, n));
            let mut h = Sha256::new();
            let mut left = n;
            let mut buf = vec![0u8; 1 << 16];
            while left > 0 {
                let take = left.min(buf.len() as u64) as usize;
                s.read_exact(&mut buf[..take]).unwrap();
                h.update(&buf[..take]);
                left -= take as u64;
            }
            assert_eq!(hex(&h.finalize()), splitmix_sha256(n), "GET /bytes/{n}");
        }

        // POST /upload with Content-Length, and with Expect: 100-continue.
        let data = pattern(32 * 1024 * 1024 + 3);
        let want = hex(&Sha256::digest(&data));
        s.get_mut()
            .write_all(format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes())
            .unwrap();
        s.get_mut().write_all(&data).unwrap();
        let (head, body) = read_response(&mut s);
        assert_eq!(head.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["bytes"].as_u64(), v["sha256"].as_str()), (Some(data.len() as u64), Some(want.as_str())));

        s.get_mut()
            .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        let head = read_head(&mut s);
        assert_eq!((head.status, head.headers.len()), (100, 0));
        s.get_mut().write_all(b"hello").unwrap();
        let (head, body) = read_response(&mut s);
        assert_eq!(head.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["sha256"], hex(&Sha256::digest(b"hello")));

        // POST /upload chunked, in chunks of awkward sizes, with an extension and a trailer.
        s.get_mut().write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let mut at = 0;
        for size in [1usize, 7, 4096, 65536, 100_003].iter().cycle() {
            if at == data.len() {
                break;
            }
            let size = (*size).min(data.len() - at);
            s.get_mut().write_all(format!("{size:x};ext=1\r\n").as_bytes()).unwrap();
            s.get_mut().write_all(&data[at..at + size]).unwrap();
            s.get_mut().write_all(b"\r\n").unwrap();
            at += size;
        }
        s.get_mut().write_all(b"0\r\nX-Trailer: yes\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut s);
        assert_eq!(head.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["bytes"].as_u64(), v["sha256"].as_str()), (Some(data.len() as u64), Some(want.as_str())));

        // Pipelining: three requests in one write, answered in order.
        s.get_mut()
            .write_all(
                b"GET /bytes/5 HTTP/1.1\r\nHost: p\r\n\r\nPOST /upload HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: third\r\n\r\n",
            )
            .unwrap();
        let (h1, b1) = read_response(&mut s);
        let (h2, b2) = read_response(&mut s);
        let (h3, b3) = read_response(&mut s);
        assert_eq!((h1.status, h2.status, h3.status), (200, 200, 200));
        assert_eq!(b1, &0xe220_a839_7b1d_cdafu64.to_le_bytes()[..5]);
        assert!(String::from_utf8_lossy(&b2).contains(&hex(&Sha256::digest(b"abc"))));
        assert_eq!(b3, b"backend bk-test\nhost third\n");

        // Connection: close is honoured.
        s.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: last\r\nConnection: close\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut s);
        assert_eq!(head.header("connection"), Some("close"));
        assert!(reads_to_eof(&mut s));

        // A malformed request: 400, then a clean close.
        let mut bad = connect();
        bad.write_all(b"GARBAGE\r\n\r\n").unwrap();
        let mut r = BufReader::new(bad);
        let (head, _) = read_response(&mut r);
        assert_eq!((head.status, head.header("connection")), (400, Some("close")));
        assert!(reads_to_eof(&mut r));

        // A head over 16 KiB: 431, then a clean close.
        let mut big = connect();
        big.write_all(format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(20 * 1024)).as_bytes())
            .unwrap();
        let mut r = BufReader::new(big);
        let (head, _) = read_response(&mut r);
        assert_eq!((head.status, head.header("connection")), (431, Some("close")));
        assert!(reads_to_eof(&mut r));

        // HTTP/1.1 without Host (RFC 9112 §3.2): 400, saying why, then a clean close.
        let mut nohost = connect();
        nohost.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut r = BufReader::new(nohost);
        let (head, body) = read_response(&mut r);
        assert_eq!(head.status, 400);
        assert!(String::from_utf8_lossy(&body).contains("Host"), "{body:?}");
        assert!(reads_to_eof(&mut r));

        // 200 concurrent keep-alive connections of 10 requests each.
        const CONNS: usize = 200;
        const REQS: usize = 10;
        let barrier = Arc::new(Barrier::new(CONNS + 1));
        let threads: Vec<_> = (0..CONNS)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut s = BufReader::new(connect());
                    barrier.wait();
                    let mut ok = 0;
                    for j in 0..REQS {
                        let host = format!("c{i}-{j}.test");
                        s.get_mut().write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
                        let (head, body) = read_response(&mut s);
                        if head.status == 200 && body == format!("backend bk-test\nhost {host}\n").as_bytes() {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let ok: usize = threads.into_iter().map(|t| t.join().expect("client thread")).sum();
        let concurrent_secs = t0.elapsed().as_secs_f64();
        assert_eq!(ok, CONNS * REQS);

        // One connection, sequential requests: the other figure.
        let mut s = BufReader::new(connect());
        let t0 = Instant::now();
        for _ in 0..2000 {
            s.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: seq\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut s).0.status, 200);
        }
        let sequential_secs = t0.elapsed().as_secs_f64();
        drop(s);

        // The counters, and every client connection gone again (only the /stats one left).
        let deadline = Instant::now() + Duration::from_secs(10);
        let v = loop {
            let v = stats();
            if v["connections_active"] == 1 || Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(v["connections_active"], 1, "{v}");
        assert_eq!(v["bad_requests"], 2, "{v}");
        assert_eq!(v["heads_too_large"], 1, "{v}");
        assert_eq!(v["id"], "bk-test");
        // 1 + 4 + 2 + 1 + 3 + 1 on the first connection, 2000 concurrent, 2000 sequential, /stats.
        assert!(v["requests"].as_u64().unwrap() > 12 + 4000, "{v}");
        (CONNS * REQS, concurrent_secs, 2000, sequential_secs)
    });
    let (n, secs, seq, seq_secs) = figures;
    eprintln!(
        "figures ({} build, namespaces, not a benchmark): {n} requests on 200 concurrent keep-alive connections in {secs:.3} s = {:.0} req/s; \
         {seq} sequential on one connection in {seq_secs:.3} s = {:.0} req/s",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        n as f64 / secs,
        seq as f64 / seq_secs
    );
    let last = running.stop();
    assert!(last["requests"].as_u64().unwrap() >= 4013, "{last}");
    assert_eq!(last["connections_active"], 0, "{last}");
}

#[test]
fn echo_mode_passes_half_close() {
    let mut running = Running::start("echo", &["--mode", "echo"]);
    running.in_proxy(|| {
        // A small exchange, then the client's FIN: the rest comes back, then the backend's FIN.
        let mut s = connect();
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("EOF after the echo, no reset");
        assert_eq!(got, b"hello");

        // 16 MiB written by one thread while another reads: all of it back, then EOF.
        let data = Arc::new(pattern(16 * 1024 * 1024 + 11));
        let s = connect();
        let mut w = s.try_clone().unwrap();
        let to_send = Arc::clone(&data);
        let writer = std::thread::spawn(move || {
            for c in to_send.chunks(100_000) {
                w.write_all(c).unwrap();
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut r = s;
        let mut h = Sha256::new();
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf).expect("read the echo");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n;
        }
        writer.join().unwrap();
        assert_eq!(total, data.len());
        assert_eq!(h.finalize(), Sha256::digest(&data[..]));
    });
    let last = running.stop();
    assert_eq!(last["mode"], "echo");
    assert_eq!(last["bytes_in"].as_u64(), Some(5 + 16 * 1024 * 1024 + 11), "{last}");
    assert_eq!(last["bytes_in"], last["bytes_out"], "{last}");
}

/// A PROXY v2 header for TCP over IPv4 with an AUTHORITY and an ALPN TLV.
fn proxy_v2_header(ver_cmd: u8) -> Vec<u8> {
    let mut body = vec![198, 51, 100, 1, 198, 51, 100, 2];
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    for (kind, value) in [(0x02u8, &b"a.test"[..]), (0x01, b"http/1.1")] {
        body.push(kind);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(ver_cmd);
    h.push(0x11);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend(body);
    h
}

#[test]
fn accept_proxy_v2() {
    let mut running = Running::start("proxy", &["--accept-proxy"]);
    running.in_proxy(|| {
        // A valid header, then a request in the same write: /stats shows what it carried.
        let mut s = connect();
        let mut first = proxy_v2_header(0x21);
        first.extend_from_slice(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
        s.write_all(&first).unwrap();
        let mut r = BufReader::new(s);
        let (head, body) = read_response(&mut r);
        assert_eq!(head.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let p = &v["last_proxy"];
        assert_eq!(p["command"], "PROXY", "{v}");
        assert_eq!(p["family"], "INET");
        assert_eq!(p["src"], "198.51.100.1:40000");
        assert_eq!(p["dst"], "198.51.100.2:443");
        assert_eq!(p["authority"], "a.test");
        assert_eq!(p["alpn"], "http/1.1");
        assert_eq!(v["proxy_headers"], 1);

        // Version 3, and no header at all: closed without a response, counted.
        let mut bad = connect();
        let mut h = proxy_v2_header(0x31);
        h.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        bad.write_all(&h).unwrap();
        let mut got = Vec::new();
        let _ = bad.read_to_end(&mut got);
        assert!(got.is_empty(), "no response to a malformed PROXY header");
        let mut plain = connect();
        plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let _ = plain.read_to_end(&mut got);
        assert!(got.is_empty(), "no response without a PROXY header");

        // The first connection still works; the counters say what happened.
        r.get_mut().write_all(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (_, body) = read_response(&mut r);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["proxy_headers"].as_u64(), v["proxy_rejected"].as_u64()), (Some(1), Some(2)), "{v}");
    });
    let last = running.stop();
    assert_eq!(last["proxy_rejected"], 2);
    assert!(running.backend.log().contains("PROXY v2 header rejected"), "the rejection is logged");
}

#[test]
fn certs_verify_with_openssl_and_are_never_overwritten() {
    let dir: PathBuf = std::env::temp_dir().join(format!("sluice-bk-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = std::process::Command::new(BIN)
            .args(["certs", "--dir", dir.to_str().unwrap(), "--names", "a.test,b.test"])
            .output()
            .expect("run sluice-bench certs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run();
    let files = [
        "ca.pem",
        "ca.key",
        "a.test.pem",
        "a.test.key",
        "b.test.pem",
        "b.test.key",
        "a.test-rsa.pem",
        "a.test-rsa.key",
    ];
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let before: Vec<Vec<u8>> = files.iter().map(|f| read(f)).collect();
    let verify = |f: &str| {
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", "ca.pem", f])
            .current_dir(&dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl verify {f}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for f in ["a.test.pem", "b.test.pem", "a.test-rsa.pem"] {
        verify(f);
    }
    // Keys are private to the owner; the chain files hold leaf then CA.
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.key", "a.test.key", "b.test.key", "a.test-rsa.key"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let chain = String::from_utf8(read("a.test.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(chain.ends_with(&String::from_utf8(read("ca.pem")).unwrap()));
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join("a.test-rsa.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Public-Key: (2048 bit)") && text.contains("DNS:a.test"), "{text}");
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join("b.test.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("prime256v1") && text.contains("DNS:b.test"), "{text}");

    // A second run changes nothing and says so.
    let out = run();
    assert!(out.contains("exists, kept") && !out.contains("wrote"), "{out}");
    let after: Vec<Vec<u8>> = files.iter().map(|f| read(f)).collect();
    assert!(before == after, "a second run rewrote a file");

    // A missing leaf is made again, signed by the existing CA.
    std::fs::remove_file(dir.join("b.test.pem")).unwrap();
    std::fs::remove_file(dir.join("b.test.key")).unwrap();
    let out = run();
    assert!(out.contains("wrote") && out.contains("b.test.pem"), "{out}");
    assert_eq!(read("ca.pem"), before[0]);
    verify("b.test.pem");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Echoes one byte on `s`; `false` if the backend closed it instead (it was over the bound).
fn echoes(s: &mut TcpStream, byte: u8) -> bool {
    if s.write_all(&[byte]).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1) if b[0] == byte)
}

#[test]
fn max_connections_bound() {
    let mut running = Running::start("max", &["--mode", "echo", "--max-connections", "2"]);
    running.in_proxy(|| {
        // Two served connections (retrying while the readiness probe may still hold a slot).
        let mut served = Vec::new();
        for _ in 0..50 {
            let mut s = connect();
            if echoes(&mut s, b'a') {
                served.push(s);
                if served.len() == 2 {
                    break;
                }
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert_eq!(served.len(), 2, "two connections within the bound are served");
        // A third is accepted and closed: no echo, EOF.
        let mut third = connect();
        assert!(!echoes(&mut third, b'c'), "a connection over the bound is closed");
        // Closing one frees its slot.
        let mut first = served.remove(0);
        first.shutdown(Shutdown::Write).unwrap();
        assert!(reads_to_eof(&mut first));
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut freed = false;
        while !freed && Instant::now() < deadline {
            freed = echoes(&mut connect(), b'd');
            if !freed {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(freed, "a slot is free again after a connection ended");
    });
    let last = running.stop();
    assert!(last["connections_rejected"].as_u64().unwrap() >= 1, "{last}");
}
