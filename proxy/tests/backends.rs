//! Several backends per listener and the PROXY protocol v2 header (issue 6), against real
//! clients (curl in `{p}client`) and `sluice-bench backend` servers in `{p}backend`: a backend
//! that is down costs no request and gets traffic again once it is back; the backend behind a
//! `proxy_protocol` listener receives a valid header with the client's address and the TLS
//! facts (checked by the bench backend's strict parser); SNI routes pick the backend.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Sluice, Transport, bench_backend};
use sluice_testbed::in_ns;
use sluice_tls::testcerts::{Ca, KeyKind};

/// `/stats` of a plain (no PROXY header) bench backend, asked directly in the backend namespace.
fn backend_stats(sluice: &Sluice, port: u16) -> Result<serde_json::Value> {
    sluice_testbed::get_json(&sluice.topology.topology.backend(), &format!("http://203.0.113.2:{port}/stats"))
}

/// A CA, server certificates for `a.test` and `b.test`, and a client certificate `alice`.
fn certificates(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca = Ca::new()?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    for name in ["a.test", "b.test"] {
        let leaf = ca.server(&[name], KeyKind::EcdsaP256)?;
        std::fs::write(dir.join(format!("{name}.pem")), &leaf.cert_pem)?;
        std::fs::write(dir.join(format!("{name}.key")), &leaf.key_pem)?;
    }
    let client = ca.client("alice", KeyKind::EcdsaP256)?;
    std::fs::write(dir.join("alice.pem"), &client.cert_pem)?;
    std::fs::write(dir.join("alice.key"), &client.key_pem)?;
    Ok(())
}

/// `[listener.tls]` with both names (`a.test` the default) and HTTP/1.1 ALPN.
fn tls_section(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "[listener.tls]\ncertificates = [\n  \
         {{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }},\n  \
         {{ cert = \"{d}/b.test.pem\", key = \"{d}/b.test.key\", sni = [\"b.test\"] }},\n]\nalpn = [\"http/1.1\"]\n"
    )
}

fn certs_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}certs-{}", std::process::id()))
}

/// `curl https://{name}:{port}{path}` from the client namespace; the body.
fn curl(sluice: &Sluice, certs: &Path, name: &str, port: u16, path: &str, extra: &[&str]) -> Result<String> {
    let ca = certs.join("ca.pem");
    let resolve = format!("{name}:{port}:198.51.100.2");
    let url = format!("https://{name}:{port}{path}");
    let mut args = vec!["-sS", "--fail", "--max-time", "10", "--cacert", ca.to_str().context("path")?];
    args.extend(["--resolve", &resolve]);
    args.extend(extra);
    args.push(&url);
    let out = in_ns(&sluice.client(), "curl", &args).with_context(|| format!("curl {url}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `n` HTTPS requests, each on a new connection; how many each backend answered.
fn requests(sluice: &Sluice, certs: &Path, n: usize) -> Result<(usize, usize)> {
    let (mut one, mut two) = (0, 0);
    for i in 0..n {
        let body = curl(sluice, certs, "a.test", 443, "/", &[]).with_context(|| format!("request {i}"))?;
        match body.lines().next() {
            Some("backend one") => one += 1,
            Some("backend two") => two += 1,
            _ => bail!("request {i}: unexpected body {body:?}"),
        }
    }
    Ok((one, two))
}

/// Two backends, the second not started: all 50 requests succeed (the failed connects are
/// retried on the first backend), then, once the second is up and its cool-down is over,
/// traffic goes to both again.
fn with_one_of_two_backends_down_every_request_succeeds_and_traffic_returns(t: Transport) -> Result<()> {
    let certs = certs_dir(&t.prefix("bk1-"));
    certificates(&certs)?;
    let listener = format!(
        "[[listener]]\naddress = \"198.51.100.2:443\"\n\
         backends = [\"203.0.113.2:8080\", \"203.0.113.2:8081\"]\ncooldown_ms = 1000\n\n{}\n",
        tls_section(&certs)
    );
    let sluice = Sluice::start(&t.prefix("bk1-"), &t.config(&listener))?;
    let _one = bench_backend(&sluice, 8080, "one", false)?;
    let t = Instant::now();
    let (one, two) = requests(&sluice, &certs, 50)?;
    let down_time = t.elapsed();
    ensure!((one, two) == (50, 0), "one backend down: {one} + {two} of 50");
    let stats = sluice.wait_idle()?;
    let b = &stats["backends"][0]["backends"];
    eprintln!(
        "one backend down: 50 of 50 requests answered in {down_time:.2?}, {} connects to the down backend retried",
        b[1]["failures"]
    );
    ensure!(b[1]["failures"].as_u64() >= Some(1), "the down backend's failures are counted: {b:#}");
    ensure!(b[1]["connects"] == b[1]["failures"], "{b:#}");
    ensure!(b[0]["active"] == 0 && b[1]["active"] == 0, "no connection left active: {b:#}");
    ensure!(sluice.queue_total(&stats, "relays_backend_failed") == 0, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "relays_clean") == 50, "{stats:#}");
    ensure!(sluice.queue_total(&stats, "backend_retries") == b[1]["failures"].as_u64().unwrap_or(0), "{stats:#}");

    let _two = bench_backend(&sluice, 8081, "two", false)?;
    std::thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    let (one, two) = requests(&sluice, &certs, 50)?;
    eprintln!("after the second backend came back: {one} + {two} of 50 in {:.2?}", t.elapsed());
    ensure!(one > 0 && two > 0 && one + two == 50, "traffic back on both: {one} + {two}");
    // The backends' own counts agree with the answers (+1: the /stats request itself).
    let served = |port| -> Result<u64> { Ok(backend_stats(&sluice, port)?["requests"].as_u64().unwrap_or(0)) };
    let (one_served, two_served) = (served(8080)?, served(8081)?);
    ensure!(two_served == two as u64 + 1, "backend two counted {two_served} requests, answered {two}");
    ensure!(one_served == 50 + one as u64 + 1, "backend one counted {one_served} requests, answered {}", 50 + one);
    Ok(())
}

/// The hex of a TLV the bench backend reports in `last_proxy.tlvs`, decoded.
fn tlv(last: &serde_json::Value, kind: u8) -> Option<Vec<u8>> {
    let hex = last["tlvs"].as_array()?.iter().find(|t| t["type"] == kind)?["hex"].as_str()?.to_owned();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// The sub-TLVs of a PP2_TYPE_SSL value (after its client byte and 4-byte verify).
fn ssl_subtlvs(ssl: &[u8]) -> Result<Vec<(u8, String)>> {
    let mut out = Vec::new();
    let mut b = ssl.get(5..).context("SSL TLV shorter than 5 bytes")?;
    while !b.is_empty() {
        ensure!(b.len() >= 3, "truncated sub-TLV");
        let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
        let value = b.get(3..3 + len).context("truncated sub-TLV")?;
        out.push((b[0], String::from_utf8_lossy(value).into_owned()));
        b = &b[3 + len..];
    }
    Ok(out)
}

/// `proxy_protocol = true` on a TLS listener, a mutual-TLS listener and a plain one, all to
/// `sluice-bench backend --accept-proxy`. Asking the backend for `/stats` through sluice shows
/// the header of that very connection: the client's address and port, SNI, ALPN, TLS version
/// and cipher, and with mTLS the client certificate's CN; the plain listener sends addresses only.
fn backend_receives_a_valid_proxy_v2_header_with_the_tls_facts(t: Transport) -> Result<()> {
    let certs = certs_dir(&t.prefix("bk2-"));
    certificates(&certs)?;
    let tls = tls_section(&certs);
    let mtls = format!("{tls}client_ca = \"{}/ca.pem\"\n", certs.display());
    let listeners = format!(
        "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\nproxy_protocol = true\n{tls}\n\
         [[listener]]\naddress = \"198.51.100.2:8443\"\nbackend = \"203.0.113.2:8080\"\nproxy_protocol = true\n{mtls}\n\
         [[listener]]\naddress = \"198.51.100.2:80\"\nbackend = \"203.0.113.2:8080\"\nproxy_protocol = true\n\n"
    );
    let sluice = Sluice::start(&t.prefix("bk2-"), &t.config(&listeners))?;
    let _backend = bench_backend(&sluice, 8080, "pp", true)?;

    for (port, local_port, version, mutual) in
        [(443, "41001", "1.3", false), (443, "41002", "1.2", false), (8443, "41003", "1.3", true)]
    {
        let key = certs.join("alice.key");
        let cert = certs.join("alice.pem");
        let tls_max = ["--tls-max", version];
        let mut extra = vec!["--local-port", local_port, "--http1.1", tls_max[0], tls_max[1]];
        if mutual {
            extra.extend(["--cert", cert.to_str().context("path")?, "--key", key.to_str().context("path")?]);
        }
        let body = curl(&sluice, &certs, "b.test", port, "/stats", &extra)?;
        let stats: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("{body:?}"))?;
        let last = &stats["last_proxy"];
        let what = format!("port {port} TLS {version}: {last:#}");
        ensure!(stats["proxy_rejected"] == 0, "{what}");
        ensure!(last["command"] == "PROXY" && last["family"] == "INET" && last["transport"] == "STREAM", "{what}");
        ensure!(last["src"] == format!("198.51.100.1:{local_port}"), "{what}");
        ensure!(last["dst"] == format!("198.51.100.2:{port}"), "{what}");
        ensure!(last["authority"] == "b.test", "SNI: {what}");
        ensure!(last["alpn"] == "http/1.1", "ALPN: {what}");
        let ssl = tlv(last, 0x20).with_context(|| format!("no PP2_TYPE_SSL: {what}"))?;
        let sub = ssl_subtlvs(&ssl)?;
        let get = |k: u8| sub.iter().find(|(t, _)| *t == k).map(|(_, v)| v.as_str());
        ensure!(get(0x21) == Some(&*format!("TLSv{version}")), "version: {sub:?}");
        let cipher = get(0x23).context("no cipher")?;
        // IANA names: TLS_AES_128_GCM_SHA256 (1.3), TLS_ECDHE_ECDSA_WITH_... (1.2).
        let iana = if version == "1.3" { "TLS_" } else { "TLS_ECDHE_ECDSA_WITH_" };
        ensure!(cipher.starts_with(iana) && !cipher.starts_with("TLS13_"), "cipher {cipher}");
        if mutual {
            ensure!(ssl[0] == 0x07, "client flags SSL | CERT_CONN | CERT_SESS: {:#04x}", ssl[0]);
            ensure!(ssl[1..5] == [0, 0, 0, 0], "verify 0: {:?}", &ssl[1..5]);
            ensure!(get(0x22) == Some("alice"), "client CN: {sub:?}");
        } else {
            ensure!(ssl[0] == 0x01, "client flags SSL only: {:#04x}", ssl[0]);
            ensure!(get(0x22).is_none(), "no CN without a client certificate: {sub:?}");
        }
    }
    // The plain listener: addresses, no TLVs.
    let out = in_ns(
        &sluice.client(),
        "curl",
        &["-sS", "--fail", "--max-time", "10", "--local-port", "41004", "http://198.51.100.2:80/stats"],
    )?;
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let last = &stats["last_proxy"];
    ensure!(last["src"] == "198.51.100.1:41004" && last["dst"] == "198.51.100.2:80", "{last:#}");
    ensure!(last["tlvs"].as_array().is_some_and(Vec::is_empty), "{last:#}");
    ensure!(stats["proxy_headers"] == 4 && stats["proxy_rejected"] == 0, "{stats:#}");
    Ok(())
}

/// Two SNI names routed to two backends; a name without a route goes to the listener's backends.
fn sni_routes_pick_the_backend(t: Transport) -> Result<()> {
    let certs = certs_dir(&t.prefix("bk3-"));
    certificates(&certs)?;
    let listener = format!(
        "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n{}\n\
         [[listener.route]]\nsni = \"b.test\"\nbackends = [\"203.0.113.2:8081\"]\n\n\
         [[listener.route]]\nsni = \"a.test\"\nalpn = \"h2\"\nbackends = [\"203.0.113.2:8082\"]\n\n",
        tls_section(&certs)
    );
    let sluice = Sluice::start(&t.prefix("bk3-"), &t.config(&listener))?;
    let _one = bench_backend(&sluice, 8080, "one", false)?;
    let _two = bench_backend(&sluice, 8081, "two", false)?;
    for _ in 0..3 {
        let a = curl(&sluice, &certs, "a.test", 443, "/", &[])?;
        ensure!(a.starts_with("backend one\nhost a.test"), "a.test (ALPN http/1.1, no route): {a:?}");
        let b = curl(&sluice, &certs, "b.test", 443, "/", &[])?;
        ensure!(b.starts_with("backend two\nhost b.test"), "b.test (routed): {b:?}");
    }
    let stats = sluice.wait_idle()?;
    let routes = &stats["backends"][0]["routes"];
    ensure!(routes[0]["backends"][0]["connects"] == 3, "{routes:#}");
    ensure!(routes[1]["backends"][0]["connects"] == 0, "{routes:#}");
    ensure!(stats["backends"][0]["backends"][0]["connects"] == 3, "{stats:#}");
    Ok(())
}

/// Polls sluice's `/stats.json` until backend `i` of the first listener has health `healthy`.
fn wait_health(sluice: &Sluice, i: usize, healthy: bool) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = sluice.stats()?;
        if stats["backends"][0]["backends"][i]["healthy"] == healthy {
            return Ok(stats);
        }
        ensure!(Instant::now() < deadline, "backend {i} not healthy={healthy} after 10 s: {stats:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With the active health check, a backend that is down is marked so and skipped without a
/// failed connect (least-connections balance); once it is up the check marks it healthy and it
/// gets traffic again, without waiting for a cool-down.
fn health_check_skips_a_down_backend_and_sees_it_return(t: Transport) -> Result<()> {
    let certs = certs_dir(&t.prefix("bk4-"));
    certificates(&certs)?;
    let listener = format!(
        "[[listener]]\naddress = \"198.51.100.2:443\"\n\
         backends = [\"203.0.113.2:8080\", \"203.0.113.2:8081\"]\nbalance = \"least-connections\"\n\
         cooldown_ms = 60000\n{}\n[listener.health_check]\ninterval_ms = 100\ntimeout_ms = 500\n\n",
        tls_section(&certs)
    );
    let sluice = Sluice::start(&t.prefix("bk4-"), &t.config(&listener))?;
    let _one = bench_backend(&sluice, 8080, "one", false)?;
    // Both verdicts in: the first check may have found "one" not yet listening.
    wait_health(&sluice, 0, true)?;
    wait_health(&sluice, 1, false)?;
    let (one, two) = requests(&sluice, &certs, 20)?;
    ensure!((one, two) == (20, 0), "{one} + {two}");
    let stats = sluice.wait_idle()?;
    let down = &stats["backends"][0]["backends"][1];
    ensure!(down["connects"] == 0 && down["failures"] == 0, "skipped, never connected: {down:#}");
    let _two = bench_backend(&sluice, 8081, "two", false)?;
    wait_health(&sluice, 1, true)?;
    let (one, two) = requests(&sluice, &certs, 20)?;
    ensure!(one > 0 && two > 0, "traffic back on both: {one} + {two}");
    Ok(())
}

on_both_transports!(
    with_one_of_two_backends_down_every_request_succeeds_and_traffic_returns,
    backend_receives_a_valid_proxy_v2_header_with_the_tls_facts,
    sni_routes_pick_the_backend,
    health_check_skips_a_down_backend_and_sees_it_return,
);
