//! The test topology itself: both families on every link, and the far client one router hop away.

use anyhow::{Result, ensure};
use sluice_testbed::{
    BACKEND_ADDR, BACKEND_ADDR6, CLIENT_ADDR6, FAR_ADDR, FAR_ADDR6, PROXY_ADDR, PROXY_ADDR6, TopologyGuard, in_ns,
    output,
};

/// `ping -c 1` from `ns` to `addr` with the given TTL / hop limit; whether a reply came back.
fn ping(ns: &str, addr: &str, ttl: u8) -> Result<bool> {
    let ttl = ttl.to_string();
    let out = output("ip", &["netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "2", "-t", &ttl, addr]);
    Ok(out.is_ok())
}

#[test]
fn both_families_on_every_link_and_a_routed_client() -> Result<()> {
    let guard = TopologyGuard::up("sl-topo-")?;
    let t = &guard.topology;
    for (ns, addr) in [
        (t.client(), PROXY_ADDR),
        (t.client(), PROXY_ADDR6),
        (t.proxy(), CLIENT_ADDR6),
        (t.proxy(), BACKEND_ADDR),
        (t.proxy(), BACKEND_ADDR6),
    ] {
        ensure!(ping(&ns, addr, 64)?, "no ping reply from {addr} in {ns}");
    }
    // The far client reaches the proxy through the client namespace, one hop: a TTL / hop limit
    // of 1 expires at the router, 2 arrives.
    for addr in [PROXY_ADDR, PROXY_ADDR6] {
        ensure!(!ping(&t.far(), addr, 1)?, "{addr} answered a TTL of 1 from far: not routed");
        ensure!(ping(&t.far(), addr, 2)?, "{addr} did not answer far with a TTL of 2");
    }
    // And the proxy routes its answers back through the router.
    for (addr, via) in [(FAR_ADDR, "198.51.100.1"), (FAR_ADDR6, CLIENT_ADDR6)] {
        let out = in_ns(&t.proxy(), "ip", &["route", "get", addr])?;
        let route = String::from_utf8_lossy(&out.stdout);
        ensure!(route.contains(&format!("via {via}")) && route.contains("dev px0"), "route to {addr}: {route}");
    }
    Ok(())
}
