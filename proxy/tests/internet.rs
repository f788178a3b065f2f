//! IPv6 and routed networks (issue 11) against real clients in the test topology: curl, openssl
//! and Linux's TCP over IPv6 to sluice's listeners on [2001:db8:100::2] (both transports); a
//! client one router hop away in `{p}far`, whose replies must leave px0 towards the router (cli0's
//! MAC address), not towards whatever MAC a frame came from; frames from another MAC address
//! that carry an established client's address and port, which must not take its replies away; a
//! flood of SYNs from spoofed sources of both families, after which real clients are served; and
//! path MTU discovery through a router (`{p}client`) whose link to the far client is 1,280 bytes.
//!
//! Frames are captured with tcpdump on cli0 in `{p}client` (started before the traffic, stopped by
//! pid) and forged by a Python script ([`FRAMES`]) on an AF_PACKET socket bound to cli0: the
//! kernel's own stack never sees them, px0 (sluice's XDP program) does.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{
    PROXY_HOST, PROXY_HOST6, Sluice, Transport, bench_backend, certificates, curl_both_names_and_versions,
    echo_backend, http_backend, openssl_resumes_tls12_and_tls13,
};
use sha2::{Digest, Sha256};
use sluice_testbed::{FAR_ADDR, FAR_ADDR6, NsProcess, in_netns, in_ns};

/// The MAC addresses of the forged frames (the spoofed segments, the SYN flood): neither cli0's
/// nor px0's, nobody's in the topology.
const SPOOF_MAC: &str = "02:00:00:00:00:99";
const FLOOD_MAC: &str = "02:00:00:00:00:98";

/// Sends hand-built Ethernet frames (TCP over IPv4 or IPv6 with valid checksums, checked by a
/// self-test against a worked example) through an AF_PACKET socket bound to an interface. Run
/// as `python3 -c FRAMES MODE IFACE ETH_DST ETH_SRC ARGS...`; prints one JSON line.
const FRAMES: &str = r#"
"""Modes:
  frames IFACE ETH_DST ETH_SRC SPEC...  SPEC = src,sport,dst,dport,flags,seq,ack (flags: S, A, SA)
  flood IFACE ETH_DST ETH_SRC N4 N6 DPORT  N4 SYNs from 198.51.100.3-252 (source ports vary) to
        198.51.100.2:DPORT and N6 SYNs from distinct hosts of 2001:db8:100::/64 to
        [2001:db8:100::2]:DPORT, interleaved
Prints one JSON line: frames built, sent, send retries, failures, seconds."""
import array, json, socket, struct, sys, time

def csum(data):
    # RFC 1071: the sum is byte-order independent when computed and stored in host order.
    if len(data) % 2:
        data += b"\0"
    s = sum(array.array("H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return struct.pack("=H", ~s & 0xFFFF)

# Self-check against a worked example (an IPv4 header whose checksum is 0xb861).
assert csum(bytes.fromhex("450000730000400040110000c0a80001c0a800c7")) == b"\xb8\x61"

FLAGS = {"S": 0x02, "A": 0x10, "SA": 0x12}

def tcp(pseudo, sport, dport, seq, ack, flags):
    opts = b"\x02\x04\x05\xb4" if flags & 0x02 else b""
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(opts) // 4) << 4, flags, 64240, 0, 0) + opts
    return hdr[:16] + csum(pseudo(len(hdr)) + hdr) + hdr[18:]

def frame(eth, src, sport, dst, dport, seq, ack, flags):
    if len(src) == 16:
        seg = tcp(lambda n: src + dst + struct.pack("!I3xB", n, 6), sport, dport, seq, ack, flags)
        return eth + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(seg), 6, 64) + src + dst + seg
    seg = tcp(lambda n: src + dst + struct.pack("!xBH", 6, n), sport, dport, seq, ack, flags)
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(seg), 0, 0x4000, 64, 6, 0) + src + dst
    return eth + b"\x08\x00" + ip[:10] + csum(ip) + ip[12:] + seg

def addr(text):
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)

def main():
    mode, iface, eth_dst, eth_src = sys.argv[1:5]
    eth = bytes.fromhex(eth_dst.replace(":", "")) + bytes.fromhex(eth_src.replace(":", ""))
    frames = []
    if mode == "frames":
        for spec in sys.argv[5:]:
            src, sport, dst, dport, flags, seq, ack = spec.split(",")
            frames.append(frame(eth, addr(src), int(sport), addr(dst), int(dport), int(seq), int(ack), FLAGS[flags]))
    elif mode == "flood":
        n4, n6, dport = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
        dst4, dst6 = addr("198.51.100.2"), addr("2001:db8:100::2")
        base6 = int.from_bytes(addr("2001:db8:100::1:0:0"), "big")
        for i in range(max(n4, n6)):
            seq = (i * 2654435761) & 0xFFFFFFFF
            if i < n4:
                src = bytes([198, 51, 100, 3 + i % 250])
                frames.append(frame(eth, src, 10000 + i // 250, dst4, dport, seq, 0, 0x02))
            if i < n6:
                src = (base6 + i).to_bytes(16, "big")
                frames.append(frame(eth, src, 20000 + i % 40000, dst6, dport, seq, 0, 0x02))
    else:
        sys.exit("unknown mode " + mode)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    start, sent, retries, failed = time.monotonic(), 0, 0, 0
    for f in frames:
        for _ in range(1000):
            try:
                sock.send(f)
                sent += 1
                break
            except OSError:
                # A full queue on the way (ENOBUFS and the like): a moment, then again.
                retries += 1
                time.sleep(0.0002)
        else:
            failed += 1
    print(json.dumps({"built": len(frames), "sent": sent, "retries": retries, "failed": failed,
                      "seconds": round(time.monotonic() - start, 3)}))

main()
"#;

/// Runs [`FRAMES`] in `ns`: `mode` on `iface` from `eth_src` to `eth_dst`; returns its report.
fn send_frames(
    ns: &str,
    mode: &str,
    iface: &str,
    eth_dst: &str,
    eth_src: &str,
    args: &[&str],
) -> Result<serde_json::Value> {
    let mut all = vec!["-c", FRAMES, mode, iface, eth_dst, eth_src];
    all.extend_from_slice(args);
    let out = in_ns(ns, "python3", &all)?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("the frame sender's report")?;
    ensure!(report["failed"] == 0 && report["sent"] == report["built"], "frames not all sent: {report}");
    Ok(report)
}

/// The MAC address of `dev` in `ns` (lower case, as tcpdump prints it).
fn mac(ns: &str, dev: &str) -> Result<String> {
    let out = in_ns(ns, "cat", &[&format!("/sys/class/net/{dev}/address")])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_ascii_lowercase())
}

/// One captured frame: Ethernet source and destination, and tcpdump's line for it.
struct Frame {
    src: String,
    dst: String,
    line: String,
}

/// The tcpdump lines of `frames`, one a line (the first 20).
fn lines<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> String {
    frames.into_iter().take(20).map(|f| f.line.as_str()).collect::<Vec<_>>().join("\n")
}

/// `tcpdump -e -n` on `dev` in a namespace, from before the traffic until [`Capture::stop`].
struct Capture {
    process: NsProcess,
}

impl Capture {
    /// Starts the capture with a pcap `filter` and waits until tcpdump is listening.
    fn start(sluice: &Sluice, ns: &str, dev: &str, filter: &str, name: &str) -> Result<Self> {
        let log = sluice.dir.join(format!("tcpdump-{name}.txt"));
        let mut process =
            NsProcess::spawn(ns, "tcpdump", &["-i", dev, "-e", "-n", "-t", "-l", "--immediate-mode", filter], log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process.log().contains("listening on") {
            if let Some(status) = process.try_wait()? {
                bail!("tcpdump exited ({status}):\n{}", process.log());
            }
            ensure!(Instant::now() < deadline, "tcpdump not listening after 10 s:\n{}", process.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { process })
    }

    /// Stops tcpdump (SIGTERM to its pid) and returns the frames it captured.
    fn stop(mut self) -> Result<Vec<Frame>> {
        // Frames already on the wire reach the capture socket first.
        std::thread::sleep(Duration::from_millis(300));
        self.process.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5))?;
        let log = self.process.log();
        let frames: Vec<Frame> = log
            .lines()
            .filter_map(|line| {
                let (src, rest) = line.split_once(" > ")?;
                let (dst, _) = rest.split_once(", ethertype ")?;
                let is_mac = |m: &str| m.len() == 17 && m.matches(':').count() == 5;
                (is_mac(src) && is_mac(dst)).then(|| Frame { src: src.into(), dst: dst.into(), line: line.into() })
            })
            .collect();
        let summary = log.lines().filter(|l| l.contains("packets")).collect::<Vec<_>>().join("; ");
        eprintln!("captured {} frames; tcpdump: {summary}", frames.len());
        // A frame the capture missed could be one sent to the wrong address.
        ensure!(summary.contains(" 0 packets dropped by kernel"), "tcpdump missed frames: {summary}");
        Ok(frames)
    }
}

/// A TLS listener on `address` (`ip:port`, IPv6 in brackets) for a.test and b.test, with the
/// certificates of `dir`, relaying to the HTTP backend 203.0.113.2:8080.
fn tls_listener(dir: &Path, address: &str) -> String {
    let d = dir.display();
    format!(
        "[[listener]]\naddress = \"{address}\"\nbackend = \"203.0.113.2:8080\"\n\n\
         [listener.tls]\ncertificates = [\n  \
         {{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }},\n  \
         {{ cert = \"{d}/b.test.pem\", key = \"{d}/b.test.key\", sni = [\"b.test\"] }},\n]\n\
         alpn = [\"http/1.1\"]\n\n"
    )
}

/// A fresh directory with a CA and the certificates of a.test and b.test.
fn cert_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    certificates(&dir)?;
    Ok(dir)
}

/// curl (TLS 1.2 and 1.3, a.test and b.test) and openssl s_client (TLS 1.2 session IDs, TLS 1.3
/// resumption) from the client namespace to sluice's IPv6 listener [2001:db8:100::2]:443.
fn curl_and_openssl_resumption_over_ipv6(t: Transport) -> Result<()> {
    let prefix = t.prefix("in1-");
    let dir = cert_dir(&prefix)?;
    let sluice = Sluice::start(&prefix, &t.config(&tls_listener(&dir, "[2001:db8:100::2]:443")))?;
    http_backend(&sluice.backend())?;
    curl_both_names_and_versions(&sluice.client(), &dir.join("ca.pem"), PROXY_HOST6)?;
    openssl_resumes_tls12_and_tls13(&sluice.client(), &dir, PROXY_HOST6)?;
    let stats = sluice.wait_idle()?;
    // curl: four full handshakes; openssl: a full and a resumed one per version.
    ensure!(sluice.queue_total(&stats, "tls_handshakes_full") == 6, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "tls_handshakes_resumed") == 2, "{stats:#}");
    let l = &stats["latency"];
    ensure!(l["tls12_handshake_full"]["count"] == 3 && l["tls13_handshake_full"]["count"] == 3, "{l:#}");
    ensure!(l["tls12_handshake_resumed"]["count"] == 1 && l["tls13_handshake_resumed"]["count"] == 1, "{l:#}");
    ensure!(stats["session_caches"][0]["hits"].as_u64() >= Some(2), "{stats:#}");
    if t == Transport::Xdp {
        // sluice's own TCP served them: the handshakes are in its histogram.
        ensure!(l["tcp_handshake"]["count"].as_u64() >= Some(8), "{l:#}");
    }
    Ok(())
}

/// 1 GiB each way through a relay listener on [2001:db8:100::2]:80 (client side IPv6, backend
/// side IPv4) to the echo backend, with half-close: sha256 equal both ways.
fn one_gib_each_way_over_ipv6_intact(t: Transport) -> Result<()> {
    let listener = "[[listener]]\naddress = \"[2001:db8:100::2]:80\"\nbackend = \"203.0.113.2:8080\"\n";
    let sluice = Sluice::start(&t.prefix("in2-"), &t.config(listener))?;
    echo_backend(&sluice.backend())?;
    let mib = common::transfer_mib(1024);
    let (sent, back, elapsed) =
        in_netns(&sluice.client(), move || common::echo_stream("[2001:db8:100::2]:80", mib << 20))??;
    ensure!(sent == back, "sha256 differs: sent {sent:02x?}, got back {back:02x?}");
    eprintln!(
        "{mib} MiB relayed each way over IPv6 in {elapsed:.2?} ({:.1} MB/s)",
        (mib << 20) as f64 / elapsed.as_secs_f64() / 1e6
    );
    let stats = sluice.wait_idle()?;
    let bytes = (mib as u64) << 20;
    ensure!(sluice.queue_total(&stats, "relays_clean") == 1, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "relay_bytes_to_backend") == bytes, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "relay_bytes_to_client") == bytes, "{stats:#}");
    if t == Transport::Xdp {
        ensure!(sluice.tcp_total(&stats, "bytes_in") == bytes, "{stats:#}");
    }
    Ok(())
}

/// One listener section naming both families: curl over both, and a session made over IPv4
/// resumes over IPv6 and the other way (one TLS configuration, one session cache).
fn one_section_serves_both_families_and_their_sessions_resume_across(t: Transport) -> Result<()> {
    let prefix = t.prefix("in7-");
    let dir = cert_dir(&prefix)?;
    let both = tls_listener(&dir, "198.51.100.2:443")
        .replace("address = \"198.51.100.2:443\"", "address = [\"198.51.100.2:443\", \"[2001:db8:100::2]:443\"]");
    let sluice = Sluice::start(&prefix, &t.config(&both))?;
    http_backend(&sluice.backend())?;
    for host in [PROXY_HOST, PROXY_HOST6] {
        curl_both_names_and_versions(&sluice.client(), &dir.join("ca.pem"), host)?;
    }
    common::openssl_resumes_at(&sluice.client(), &dir, PROXY_HOST, PROXY_HOST6)?;
    common::openssl_resumes_at(&sluice.client(), &dir, PROXY_HOST6, PROXY_HOST)?;
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "tls_handshakes_resumed") == 4, "{stats:#}");
    ensure!(stats["session_caches"].as_array().map(Vec::len) == Some(1), "one cache: {stats:#}");
    Ok(())
}

/// An IPv6 client through a PROXY-protocol listener: the backend sees a TCP6 header with the
/// client's and the listener's IPv6 addresses and ports, the access log names the client, and
/// the limit per client counts the client's /64 (a second address of it is the same client).
fn proxy_header_access_log_and_client_limit_over_ipv6(t: Transport) -> Result<()> {
    let config = "[[listener]]\naddress = \"[2001:db8:100::2]:80\"\nbackend = \"203.0.113.2:8080\"\n\
                  proxy_protocol = true\n\n[log]\naccess_log = true\n\n[limits]\nmax_connections_per_client = 2\n";
    let sluice = Sluice::start(&t.prefix("in8-"), &t.config(config))?;
    let _backend = bench_backend(&sluice, 8080, "pp6", true)?;
    let client = sluice.client();
    let out = in_ns(
        &client,
        "curl",
        &["-sS", "--fail", "--max-time", "10", "--local-port", "41010", "http://[2001:db8:100::2]:80/stats"],
    )?;
    let stats: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("{}", String::from_utf8_lossy(&out.stdout)))?;
    let last = &stats["last_proxy"];
    ensure!(last["family"] == "INET6" && last["transport"] == "STREAM", "{last:#}");
    ensure!(last["src"] == "[2001:db8:100::1]:41010" && last["dst"] == "[2001:db8:100::2]:80", "{last:#}");
    ensure!(stats["proxy_rejected"] == 0, "{stats:#}");

    // (Added only now: curl above would have taken it as its source.)
    sluice_testbed::ip(&client, &["addr", "add", "2001:db8:100::3/64", "dev", "cli0", "nodad"])?;
    // Two connections held open from ::1; a third from ::3 (the same /64) is refused.
    let open_from = |src: &'static str| -> Result<std::io::Result<TcpStream>> {
        in_netns(&client, move || -> std::io::Result<TcpStream> {
            let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
            s.bind(&std::net::SocketAddr::new(src.parse().expect("ip"), 0).into())?;
            let to: std::net::SocketAddr = "[2001:db8:100::2]:80".parse().expect("addr");
            s.connect_timeout(&to.into(), Duration::from_secs(3))?;
            let mut s: TcpStream = s.into();
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            // A whole request on a kept-alive connection: the relay answers, and stays open.
            s.write_all(b"GET / HTTP/1.1\r\nHost: v6\r\n\r\n")?;
            let mut b = [0u8; 12];
            s.read_exact(&mut b)?;
            if &b != b"HTTP/1.1 200" {
                return Err(std::io::Error::other(format!("{:?}", String::from_utf8_lossy(&b))));
            }
            Ok(s)
        })
    };
    let held = [open_from("2001:db8:100::1")??, open_from("2001:db8:100::1")??];
    let third = open_from("2001:db8:100::3")?;
    ensure!(third.is_err(), "a third connection from the client's /64 was served");
    let stats = sluice.stats()?;
    ensure!(sluice.queue_total(&stats, "refused_limit_client") >= 1, "{stats:#}");
    drop(held);
    let log = sluice.process.log();
    ensure!(log.contains("client=[2001:db8:100::1]:41010"), "no access-log line for the IPv6 client:\n{log}");
    Ok(())
}

/// Wildcard listeners (`0.0.0.0:80`, `[::]:80` in one section) take every address of their
/// family: plain HTTP relayed over IPv4 and IPv6, and the backend's PROXY header names the
/// address the client reached, not the wildcard.
fn wildcard_listeners_take_every_address_of_their_family(t: Transport) -> Result<()> {
    let config = "[[listener]]\naddress = [\"0.0.0.0:80\", \"[::]:80\"]\nbackend = \"203.0.113.2:8080\"\n\
                  proxy_protocol = true\n";
    let sluice = Sluice::start(&t.prefix("in9-"), &t.config(config))?;
    let _backend = bench_backend(&sluice, 8080, "any", true)?;
    for (url, dst) in [
        ("http://198.51.100.2:80/stats", "198.51.100.2:80"),
        ("http://[2001:db8:100::2]:80/stats", "[2001:db8:100::2]:80"),
    ] {
        let out = in_ns(&sluice.client(), "curl", &["-sS", "--fail", "--max-time", "10", url])?;
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{url}: {}", String::from_utf8_lossy(&out.stdout)))?;
        ensure!(stats["last_proxy"]["dst"] == dst, "{url}: {:#}", stats["last_proxy"]);
    }
    let stats = sluice.wait_idle()?;
    ensure!(sluice.queue_total(&stats, "relays_clean") == 2, "{stats:#}");
    Ok(())
}

on_both_transports!(
    wildcard_listeners_take_every_address_of_their_family,
    proxy_header_access_log_and_client_limit_over_ipv6,
    curl_and_openssl_resumption_over_ipv6,
    one_gib_each_way_over_ipv6_intact,
    one_section_serves_both_families_and_their_sessions_resume_across,
);

/// The far client (`{p}far`, behind the router `{p}client`) gets TLS from sluice's listener
/// `listen` at `host`, and every frame sluice sends to it (`far`) leaves px0 addressed to the
/// router: cli0's MAC address.
fn routed_client(prefix: &str, listen: &str, host: &str, far: &str) -> Result<()> {
    let dir = cert_dir(prefix)?;
    let sluice = Sluice::start(prefix, &Transport::Xdp.config(&tls_listener(&dir, listen)))?;
    http_backend(&sluice.backend())?;
    let (router, px0) = (mac(&sluice.client(), "cli0")?, mac(&sluice.proxy(), "px0")?);
    let proxy = host.trim_start_matches('[').trim_end_matches(']');
    let capture =
        Capture::start(&sluice, &sluice.client(), "cli0", &format!("src host {proxy} and dst host {far}"), "far")?;
    curl_both_names_and_versions(&sluice.far(), &dir.join("ca.pem"), host)?;
    let stats = sluice.wait_idle()?;
    let frames = capture.stop()?;
    ensure!(sluice.queue_total(&stats, "tls_handshakes_full") == 4, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "relays_clean") == 4, "{stats:#}");
    // Four connections: at least a SYN-ACK, the server's TLS flight, data and a FIN each.
    ensure!(frames.len() >= 16, "only {} frames from {proxy} to {far} on cli0:\n{}", frames.len(), lines(&frames));
    let elsewhere: Vec<&Frame> = frames.iter().filter(|f| f.dst != router || f.src != px0).collect();
    ensure!(
        elsewhere.is_empty(),
        "{} of {} frames to {far} not from px0 ({px0}) to the router's MAC {router}:\n{}",
        elsewhere.len(),
        frames.len(),
        lines(elsewhere)
    );
    Ok(())
}

#[test]
fn routed_client_over_ipv4_replies_go_to_the_router() -> Result<()> {
    routed_client("in3-", "198.51.100.2:443", PROXY_HOST, FAR_ADDR)
}

#[test]
fn routed_client_over_ipv6_replies_go_to_the_router() -> Result<()> {
    routed_client("in36-", "[2001:db8:100::2]:443", PROXY_HOST6, FAR_ADDR6)
}

/// Writes and reads back a few echo round trips on `s`.
fn round_trips(s: &mut TcpStream, round: std::ops::Range<usize>) -> std::io::Result<()> {
    for i in round {
        let msg = format!("round trip {i}: {}\n", "x".repeat(100 + i * 37));
        s.write_all(msg.as_bytes())?;
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(std::io::Error::other(format!("round trip {i}: echo differs")));
        }
    }
    Ok(())
}

/// A client in `{p}client` holds a connection to sluice's echo listener (198.51.100.2:7) and
/// exchanges bytes; then frames from another MAC address (a bare ACK and a SYN) carry its
/// address and port to sluice. Its replies still go to cli0's MAC: keepalive probes while the
/// client is idle (sluice's, every 0.25 s after 0.5 s) reach it and are answered, the
/// connection keeps working byte for byte and ends cleanly, and no frame sluice sends to
/// 198.51.100.1 is addressed to any other MAC.
#[test]
fn spoofed_frames_from_another_mac_do_not_take_over_a_connection() -> Result<()> {
    let sluice = Sluice::start(
        "in4-",
        &common::config(
            "native",
            "[[listener]]\naddress = \"198.51.100.2:7\"\necho = true\n\n[tcp]\ntime_wait_ms = 1000\n\
             keepalive_idle_ms = 500\nkeepalive_interval_ms = 250\nkeepalive_probes = 3\n",
        ),
    )?;
    let client = sluice.client();
    let (cli0, px0) = (mac(&client, "cli0")?, mac(&sluice.proxy(), "px0")?);
    let capture = Capture::start(&sluice, &client, "cli0", "src host 198.51.100.2 and dst host 198.51.100.1", "spoof")?;
    let mut s =
        in_netns(&client, || TcpStream::connect_timeout(&"198.51.100.2:7".parse().unwrap(), Duration::from_secs(5)))??;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let port = s.local_addr()?.port().to_string();
    round_trips(&mut s, 0..5).context("before the forged frames")?;
    let ack = format!("198.51.100.1,{port},198.51.100.2,7,A,1,1");
    let syn = format!("198.51.100.1,{port},198.51.100.2,7,S,12345,0");
    let report = send_frames(&client, "frames", "cli0", &px0, SPOOF_MAC, &[&ack, &syn])?;
    eprintln!("forged from {SPOOF_MAC}: {report}");
    // Idle: keepalive probes go out (3 unanswered ones would close the connection).
    std::thread::sleep(Duration::from_secs(3));
    let after = round_trips(&mut s, 5..15).and_then(|()| {
        s.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        if rest.is_empty() { Ok(()) } else { Err(std::io::Error::other("bytes after the echo")) }
    });
    let stats = sluice.wait_idle();
    let frames = capture.stop()?;
    let stats = stats?;
    let misdirected: Vec<&Frame> = frames.iter().filter(|f| f.dst != cli0).collect();
    eprintln!(
        "{} frames to 198.51.100.1, {} not to cli0 ({cli0}); keepalives sent {}, challenge ACKs {}",
        frames.len(),
        misdirected.len(),
        sluice.tcp_total(&stats, "keepalives_sent"),
        sluice.tcp_total(&stats, "challenge_acks")
    );
    ensure!(
        after.is_ok() && misdirected.is_empty(),
        "after the forged frames: {after:?}; {} frames to 198.51.100.1 not addressed to cli0 ({cli0}):\n{}",
        misdirected.len(),
        lines(misdirected.iter().copied())
    );
    // The forged frames were well formed: nothing dropped for a checksum or a bad header.
    ensure!(sluice.queue_total(&stats, "dropped_checksum") == 0, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "dropped_malformed") == 0, "{stats:#}");
    ensure!(sluice.tcp_total(&stats, "keepalives_sent") > 0, "no keepalive probe while idle: {stats:#}");
    ensure!(sluice.queue_total(&stats, "echo_bytes") > 0, "{stats:#}");
    Ok(())
}

/// 100,000 SYNs from spoofed sources (50,000 IPv4 from 198.51.100.3-252 with varying ports,
/// 50,000 from distinct hosts of 2001:db8:100::/64), sent as fast as Python sends them from
/// another MAC address to the TLS listeners on 198.51.100.2:443 and [2001:db8:100::2]:443; then
/// curl over IPv4 and IPv6 gets the backend's answer, and sluice goes back to idle.
#[test]
fn syn_flood_from_spoofed_sources_of_both_families_then_real_clients_are_served() -> Result<()> {
    let dir = cert_dir("in5-")?;
    let listeners =
        format!("{}{}", tls_listener(&dir, "198.51.100.2:443"), tls_listener(&dir, "[2001:db8:100::2]:443"));
    let sluice = Sluice::start("in5-", &Transport::Xdp.config(&listeners))?;
    http_backend(&sluice.backend())?;
    let px0 = mac(&sluice.proxy(), "px0")?;
    let report = send_frames(&sluice.client(), "flood", "cli0", &px0, FLOOD_MAC, &["50000", "50000", "443"])?;
    eprintln!("flood: {report}");
    let ca = dir.join("ca.pem");
    curl_both_names_and_versions(&sluice.client(), &ca, PROXY_HOST).context("IPv4 after the flood")?;
    curl_both_names_and_versions(&sluice.client(), &ca, PROXY_HOST6).context("IPv6 after the flood")?;
    // Half-open connections of the flood end at the handshake timeout (10 s after their SYN).
    let stats = match sluice.wait_idle() {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("not idle yet, once more: {e:#}");
            sluice.wait_idle()?
        }
    };
    for q in stats["queues"].as_array().context("queues")? {
        let mut q = q.clone();
        if let Some(q) = q.as_object_mut() {
            q.retain(|k, v| !matches!(v, serde_json::Value::Number(n) if n.as_u64() == Some(0)) || k == "queue");
        }
        eprintln!("queue: {q}");
    }
    eprintln!("xdp: {}", stats["xdp"]);
    ensure!(sluice.queue_total(&stats, "relays_clean") == 8, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "tls_handshakes_full") == 8, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "dropped_checksum") == 0, "the flood's checksums: {stats:#}");
    // The flood reached sluice's TCP stack: more SYNs than the SYN queue holds, so SYN cookies.
    ensure!(sluice.tcp_total(&stats, "syn_cookies_sent") > 0, "{stats:#}");
    Ok(())
}

/// `GET /bytes/{n}` over plain TCP to `addr`: the body's length and sha256.
fn download(addr: &str, n: u64) -> Result<(u64, [u8; 32])> {
    let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: far\r\nConnection: close\r\n\r\n").as_bytes())?;
    let (mut head, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let got = s.read(&mut buf)?;
        ensure!(got > 0, "EOF in the response head: {:?}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..got]);
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    ensure!(text.starts_with("http/1.1 200"), "{text}");
    ensure!(text.contains(&format!("content-length: {n}")), "{text}");
    let (mut h, mut len) = (Sha256::new(), (head.len() - end - 4) as u64);
    h.update(&head[end + 4..]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok((len, h.finalize().into())),
            Ok(got) => {
                h.update(&buf[..got]);
                len += got as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => bail!("after {len} bytes of the body: {e}"),
        }
    }
}

/// A counter of `/proc/net/snmp6` in `ns`, e.g. `Icmp6OutPktTooBigs`.
fn snmp6_counter(ns: &str, name: &str) -> Result<u64> {
    let out = in_ns(ns, "cat", &["/proc/net/snmp6"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(name)).context(name.to_owned())?;
    line.split_whitespace().nth(1).context("no value")?.parse().context("not a number")
}

/// The router `{p}client` forwards to the far client over a 1,280-byte link (cli1; the far
/// client's own link stays at 1,500, so its SYN still advertises a 1,500-byte path): 16 MiB from
/// the HTTP backend through sluice's relay listener `listen` to the far client arrive intact,
/// because the router's ICMP fragmentation-needed / ICMPv6 packet-too-big messages lower the
/// connection's segment size in sluice (`path_mtu_lowered`). The router fragmented nothing
/// (sluice sets DF on IPv4).
fn path_mtu(prefix: &str, listen: &str) -> Result<()> {
    let listener = format!("[[listener]]\naddress = \"{listen}\"\nbackend = \"203.0.113.2:8080\"\n");
    let sluice = Sluice::start(prefix, &Transport::Xdp.config(&listener))?;
    let _backend = bench_backend(&sluice, 8080, "bytes", false)?;
    let router = sluice.client();
    sluice_testbed::ip(&router, &["link", "set", "cli1", "mtu", "1280"])?;
    const LEN: u64 = 16 << 20;
    let addr = listen.to_owned();
    let (len, digest) = in_netns(&sluice.far(), move || download(&addr, LEN))??;
    ensure!(len == LEN, "{len} of {LEN} bytes");
    // The same bytes as the backend gives directly.
    let direct = in_netns(&sluice.backend(), || download("203.0.113.2:8080", LEN))??;
    ensure!((len, digest) == direct, "the body differs from the backend's own");
    let stats = sluice.wait_idle()?;
    let (lowered, ignored) =
        (sluice.queue_total(&stats, "path_mtu_lowered"), sluice.queue_total(&stats, "path_mtu_ignored"));
    let (too_big, fragments) = if listen.starts_with('[') {
        (snmp6_counter(&router, "Icmp6OutPktTooBigs")?, snmp6_counter(&router, "Ip6FragCreates")?)
    } else {
        (
            sluice_testbed::snmp_counter(&router, "Icmp", "OutDestUnreachs")?,
            sluice_testbed::snmp_counter(&router, "Ip", "FragCreates")?,
        )
    };
    eprintln!(
        "path MTU: lowered {lowered}, ignored {ignored}; the router sent {too_big} too-big messages, made \
         {fragments} fragments; xdp: {}",
        stats["xdp"]["counters"]
    );
    ensure!(too_big > 0, "the router sent no too-big message: nothing of sluice's was over 1,280 bytes?");
    ensure!(fragments == 0, "the router fragmented {fragments} times: sluice's IPv4 packets without DF?");
    ensure!(lowered > 0, "no ICMP message lowered the path MTU: {stats:#}");
    ensure!(sluice.queue_total(&stats, "relays_clean") == 1, "{stats:#}");
    Ok(())
}

#[test]
fn path_mtu_over_ipv4_through_a_1280_byte_router() -> Result<()> {
    path_mtu("in6-", "198.51.100.2:80")
}

#[test]
fn path_mtu_over_ipv6_through_a_1280_byte_router() -> Result<()> {
    path_mtu("in66-", "[2001:db8:100::2]:80")
}
