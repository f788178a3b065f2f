//! `cargo xtask bench fleet`: what a fleet's session store costs and gives (issue 14), in the
//! test topology. Three sluice processes in the proxy namespace share one backend; Debian's
//! `redis-server` (with a password) runs in the backend namespace:
//!
//! - sluice 1, AF_XDP on 198.51.100.2:443, with `[session_store]`: where sessions are made;
//! - sluice 2, kernel sockets on 198.51.100.2:8443, with the same `[session_store]`;
//! - sluice 3, kernel sockets on 198.51.100.2:8444, without a store: the local-only baseline.
//!
//! Per TLS version, three `sluice-bench load --mode resume` runs against the kernel processes
//! (the same transport, so only the store differs): local-only (sluice 3, sessions made there),
//! store with local sessions (sluice 2, sessions made there: TLS 1.2 never asks the store,
//! TLS 1.3 asks it once per resumption, GETDEL, to stay single use in the fleet) and store with
//! remote sessions (`--prime-at` sluice 1, resumed on sluice 2: every resumption a store hit).
//! Each run prints resumed handshakes/s and the handshake latency's p50/p99; sluice 2's
//! `session_store_lookup` histogram gives a remote hit's added latency. A run in which a
//! handshake failed, a session was not resumed or sluice's counts disagree is a failed run,
//! printed as such, and the command fails.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use sluice_testbed::{NsProcess, TopologyGuard};

const PASSWORD: &str = "fleet-bench-password";

/// One sluice configuration: `transport`, a TLS listener on `port`, the store or not.
fn config(dir: &str, transport: &str, port: u16, admin: &str, store: bool) -> String {
    let datapath = if transport == "xdp" {
        "[datapath]\ninterface = \"px0\"\nxdp_mode = \"auto\"\nzero_copy = false\nframes_per_queue = 16384\n".to_owned()
    } else {
        "[datapath]\ntransport = \"kernel\"\nworkers = 1\n".to_owned()
    };
    let store = if store {
        format!(
            "[session_store]\nurl = \"redis://:{PASSWORD}@203.0.113.2:6379\"\nkey_file = \"{dir}/store.keys\"\n\
             timeout_ms = 5\n\n"
        )
    } else {
        String::new()
    };
    let certs = std::fs::canonicalize("run/certs").map(|p| p.display().to_string()).unwrap_or_default();
    format!(
        "{datapath}\n[admin]\naddress = \"{admin}\"\n\n{store}[[listener]]\naddress = \"198.51.100.2:{port}\"\n\
         backend = \"203.0.113.2:8080\"\n\n[listener.tls]\ncertificates = [{{ cert = \"{certs}/a.test.pem\", \
         key = \"{certs}/a.test.key\", sni = [\"a.test\"] }}]\nalpn = [\"http/1.1\"]\n"
    )
}

/// Runs the benchmark (see the module documentation); `bin` finds a release binary.
pub fn run(bin: &dyn Fn(&str) -> String, extra: &[String]) -> Result<()> {
    let dir = format!("{}/bench-fleet", crate::target_dir());
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?.display().to_string();
    let keys = Command::new("openssl").args(["rand", "-hex", "32"]).output().context("openssl rand")?;
    ensure!(keys.status.success(), "openssl rand failed");
    std::fs::write(format!("{dir}/store.keys"), [b"# sealing key\n", &keys.stdout[..]].concat())?;
    // Field order = drop order: the processes stop before the namespaces go.
    struct Bed {
        sluices: Vec<NsProcess>,
        _redis: NsProcess,
        _backend: NsProcess,
        _topology: TopologyGuard,
    }
    let topology = TopologyGuard::up("fleetb-")?;
    let (proxy, client, backend_ns) =
        (topology.topology.proxy(), topology.topology.client(), topology.topology.backend());
    let backend = NsProcess::spawn(
        &backend_ns,
        &bin("sluice-bench"),
        &["backend", "--listen", "203.0.113.2:8080", "--id", "fleet"],
        format!("{dir}/backend.log").into(),
    )?;
    let redis = NsProcess::spawn(
        &backend_ns,
        "redis-server",
        &["--bind", "203.0.113.2", "--port", "6379", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
        format!("{dir}/redis.log").into(),
    )?;
    let mut sluices = Vec::new();
    let admins = ["127.0.0.1:9090", "127.0.0.1:9091", "127.0.0.1:9092"];
    for (i, (transport, port, store)) in
        [("xdp", 443, true), ("kernel", 8443, true), ("kernel", 8444, false)].into_iter().enumerate()
    {
        let path = format!("{dir}/sluice{}.toml", i + 1);
        std::fs::write(&path, config(&dir, transport, port, admins[i], store))?;
        let p = NsProcess::spawn(
            &proxy,
            &bin("sluice"),
            &["--config", &path],
            format!("{dir}/sluice{}.log", i + 1).into(),
        )?;
        sluices.push(p);
    }
    let mut bed = Bed { sluices, _redis: redis, _backend: backend, _topology: topology };
    let stats = |admin: &str| sluice_testbed::get_json(&proxy, &format!("http://{admin}/stats.json"));
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, admin) in admins.iter().enumerate() {
        while stats(admin).is_err() {
            if let Some(status) = bed.sluices[i].try_wait()? {
                bail!("sluice {} exited ({status}):\n{}", i + 1, bed.sluices[i].log());
            }
            ensure!(Instant::now() < deadline, "sluice {} not ready:\n{}", i + 1, bed.sluices[i].log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let total = |s: &Value, k: &str| {
        s["queues"].as_array().map_or(0, |q| q.iter().map(|q| q[k].as_u64().unwrap_or(0)).sum::<u64>())
    };
    // The store answers sluice 2 before anything is measured (its link connects at start).
    let warm = Instant::now() + Duration::from_secs(10);
    while total(&stats(admins[1])?, "session_store_connection_failures") > 0 && Instant::now() < warm {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "sluice 1: AF_XDP :443 with the store; sluice 2: kernel :8443 with the store; sluice 3: kernel :8444 without"
    );
    println!("redis-server 203.0.113.2:6379 (AUTH); load from {client}: sluice-bench load --mode resume\n");
    println!(
        "{:<8} {:<34} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "TLS", "sessions", "resumed/s", "resumed", "p50 µs", "p99 µs", "result"
    );
    let mut failed = Vec::new();
    for tls in ["1.2", "1.3"] {
        for (label, connect, prime_at, admin) in [
            ("local only (no store)", "198.51.100.2:8444", None, admins[2]),
            ("store on, made on the same process", "198.51.100.2:8443", None, admins[1]),
            ("store on, made on sluice 1 (remote)", "198.51.100.2:8443", Some("198.51.100.2:443"), admins[1]),
        ] {
            let json = format!(
                "{dir}/load-{tls}-{}.json",
                connect.rsplit(':').next().unwrap_or("").to_owned() + if prime_at.is_some() { "-remote" } else { "" }
            );
            let before = stats(admin)?;
            let mut args = vec![
                "load",
                "--connect",
                connect,
                "--ca",
                "run/certs/ca.pem",
                "--mode",
                "resume",
                "--tls",
                tls,
                "--concurrency",
                "8",
                "--count",
                "3000",
                "--threads",
                "1",
                "--quiet",
                "--json",
                &json,
            ];
            if let Some(p) = prime_at {
                args.extend(["--prime-at", p]);
            }
            args.extend(extra.iter().map(String::as_str));
            let out =
                Command::new("ip").args(["netns", "exec", &client]).arg(bin("sluice-bench")).args(&args).output()?;
            let after = stats(admin)?;
            let report: Value =
                std::fs::read(&json).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
            let m = &report["measured"];
            let n = |k: &str| m[k].as_u64().unwrap_or(0);
            let failures: u64 = m["failed"].as_object().map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
            let resumed = n("handshakes_resumed");
            let secs = m["elapsed_s"].as_f64().unwrap_or(0.0).max(1e-9);
            let hs = &m["latency_us"]["handshake"];
            let sluice_resumed = total(&after, "tls_handshakes_resumed") - total(&before, "tls_handshakes_resumed");
            let ok = out.status.success()
                && report != Value::Null
                && failures == 0
                && resumed == n("completed")
                && resumed > 0
                && sluice_resumed >= resumed;
            println!(
                "{:<8} {:<34} {:>10.0} {:>9} {:>9} {:>9} {:>8}",
                format!("TLS {tls}"),
                label,
                resumed as f64 / secs,
                format!("{resumed}/{}", n("completed")),
                hs["p50"].as_u64().unwrap_or(0),
                hs["p99"].as_u64().unwrap_or(0),
                if ok { "ok" } else { "FAILED" }
            );
            if !ok {
                failed.push(format!(
                    "TLS {tls} {label}: exit {}, {failures} failed, {resumed} of {} resumed, sluice counted {sluice_resumed}\n{}",
                    out.status,
                    n("completed"),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    let s2 = stats(admins[1])?;
    let l = &s2["latency"]["session_store_lookup"];
    println!(
        "\nsluice 2's store lookups (sent to answered, µs): count {} p50 {} p90 {} p99 {} max {}",
        l["count"], l["p50_us"], l["p90_us"], l["p99_us"], l["max_us"]
    );
    let names = ["lookups", "hits", "misses", "timeouts", "errors", "open_failed", "writes", "writes_dropped"];
    let counts: Vec<String> =
        names.iter().map(|k| format!("{k} {}", total(&s2, &format!("session_store_{k}")))).collect();
    println!("sluice 2's store counters: {}", counts.join(", "));
    println!("JSON of each run in {dir}");
    if !failed.is_empty() {
        bail!("FAILED runs:\n{}", failed.join("\n"));
    }
    Ok(())
}
