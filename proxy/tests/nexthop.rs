//! The next-hop reader against a real kernel: the test topology's proxy namespace, its `px0`
//! facing the client's `cli0` (198.51.100.0/24 and 2001:db8:100::/64). The reader runs on a
//! thread inside `{p}proxy`; `ip -n` changes the tables beside it. Everything is removed with
//! the namespaces, also on failure.

use std::net::IpAddr;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{Context, Result, bail, ensure};
use sluice::datapath::xdp::nexthop::{Limits, Prober, Reader, Resolution, Table};
use sluice_tcp::Instant;
use sluice_testbed::{TopologyGuard, ip};
use sluice_wire::ethernet::Address as MacAddress;

const PERMANENT_MAC: MacAddress = MacAddress([2, 0, 0, 0, 0, 0x77]);
const REPLACED_MAC: MacAddress = MacAddress([2, 0, 0, 0, 0, 0x78]);

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// `ip -o link show dev` in `ns`: its index and MAC address.
fn link(ns: &str, dev: &str) -> Result<(u32, MacAddress)> {
    let out = sluice_testbed::output("ip", &["-n", ns, "-o", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let index = text.split(':').next().and_then(|i| i.trim().parse().ok()).context("no index")?;
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no link/ether")?
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok((index, MacAddress(mac.try_into().map_err(|_| anyhow::anyhow!("MAC length"))?)))
}

/// Polls the reader until `table.peek(dst)` is `want`, for at most `within`.
fn until(reader: &mut Reader, table: &mut Table, dst: &str, want: Resolution, within: Duration) -> Result<()> {
    let deadline = StdInstant::now() + within;
    loop {
        reader.poll(table)?;
        let got = table.peek(addr(dst));
        if got == want {
            return Ok(());
        }
        if StdInstant::now() > deadline {
            bail!("{dst}: {got:?}, not {want:?} after {within:?}; {:?}", table.counters());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kernel_routes_and_neighbours_reach_the_table() -> Result<()> {
    let guard = TopologyGuard::up("nh1-")?;
    let (client, proxy) = (guard.topology.client(), guard.topology.proxy());
    // The topology's routes to the far client are not this test's: it makes its own.
    ip(&proxy, &["route", "del", "192.0.2.0/24"])?;
    ip(&proxy, &["-6", "route", "del", "2001:db8:192::/64"])?;
    // Before the reader starts: a PERMANENT neighbour and a static route through it.
    ip(&proxy, &["neigh", "add", "198.51.100.77", "lladdr", "02:00:00:00:00:77", "dev", "px0", "nud", "permanent"])?;
    ip(&proxy, &["route", "add", "192.0.2.0/24", "via", "198.51.100.77", "dev", "px0"])?;
    let (ifindex, _) = link(&proxy, "px0")?;
    let (_, client_mac) = link(&client, "cli0")?;
    let ns = proxy.clone();
    sluice_testbed::in_netns(&proxy, move || -> Result<()> {
        let second = Duration::from_secs(1);
        let mut table = Table::new(ifindex, Limits::default());
        let mut reader = Reader::open(&mut table, Duration::from_secs(5))?;
        ensure!(reader.synced());

        // The dump.
        ensure!(table.resolve(addr("192.0.2.1")) == Resolution::Ready(PERMANENT_MAC), "{table:?}");
        ensure!(table.resolve(addr("203.0.113.2")) == Resolution::Unreachable, "px1's subnet is not px0's");
        ensure!(table.resolve(addr("2001:db8:203::2")) == Resolution::Unreachable, "px1's IPv6 subnet is not px0's");
        ensure!(table.resolve(addr("2001:db8:77::2")) == Resolution::Unreachable, "no IPv6 route yet");

        // Notifications, each within a second.
        ip(
            &ns,
            &["neigh", "replace", "198.51.100.77", "lladdr", "02:00:00:00:00:78", "dev", "px0", "nud", "permanent"],
        )?;
        until(&mut reader, &mut table, "192.0.2.1", Resolution::Ready(REPLACED_MAC), second)?;
        ip(&ns, &["neigh", "del", "198.51.100.77", "dev", "px0"])?;
        until(&mut reader, &mut table, "192.0.2.1", Resolution::Pending(addr("198.51.100.77")), second)?;
        ip(&ns, &["route", "add", "203.0.113.128/25", "via", "198.51.100.77", "dev", "px0"])?;
        until(&mut reader, &mut table, "203.0.113.200", Resolution::Pending(addr("198.51.100.77")), second)?;
        ip(&ns, &["-6", "route", "add", "2001:db8:77::/64", "via", "2001:db8:100::1", "dev", "px0"])?;
        until(&mut reader, &mut table, "2001:db8:77::2", Resolution::Pending(addr("2001:db8:100::1")), second)?;
        ip(&ns, &["route", "del", "192.0.2.0/24"])?;
        until(&mut reader, &mut table, "192.0.2.1", Resolution::Unreachable, second)?;

        // Resolution of unknown on-link addresses: triggered, answered by the client.
        let prober = Prober::new(ifindex)?;
        let now = Instant::from_millis(1_000);
        for peer in ["198.51.100.1", "2001:db8:100::1"] {
            ensure!(table.resolve(addr(peer)) == Resolution::Pending(addr(peer)), "{peer} known already");
            ensure!(prober.trigger(&mut table, now, addr(peer)), "{peer}: not triggered");
            ensure!(!prober.trigger(&mut table, now, addr(peer)), "{peer}: triggered twice at once");
            until(&mut reader, &mut table, peer, Resolution::Ready(client_mac), Duration::from_secs(3))?;
        }
        // Through the IPv6 route added above, the client is the gateway and now known.
        ensure!(table.resolve(addr("2001:db8:77::2")) == Resolution::Ready(client_mac));
        let c = table.counters();
        ensure!((c.triggers, c.triggers_limited, c.trigger_errors) == (2, 2, 0), "{c:?}");
        ensure!(c.redumps == 0 && c.malformed == 0 && c.routes_overflow == 0, "{c:?}");
        Ok(())
    })?
}

#[test]
fn lost_notifications_are_recovered_by_a_dump() -> Result<()> {
    let guard = TopologyGuard::up("nh2-")?;
    let proxy = guard.topology.proxy();
    let (ifindex, _) = link(&proxy, "px0")?;
    let dir = std::env::temp_dir().join(format!("nh2-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let batch = |verb: &str| -> Result<std::path::PathBuf> {
        let mut text = String::new();
        for i in 10..250u32 {
            let lladdr =
                if verb == "add" { format!(" lladdr 02:00:00:00:01:{i:02x} nud permanent") } else { String::new() };
            text.push_str(&format!("neigh {verb} 198.51.100.{i} dev px0{lladdr}\n"));
        }
        let path = dir.join(format!("{verb}.batch"));
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let (add, del) = (batch("add")?, batch("del")?);
    let ns = proxy.clone();
    let result = sluice_testbed::in_netns(&proxy, move || -> Result<()> {
        let mut table = Table::new(ifindex, Limits::default());
        let mut reader = Reader::open(&mut table, Duration::from_secs(5))?;
        // The smallest buffer the kernel allows: 240 notifications cannot fit.
        reader.set_recv_buffer(0)?;
        // How many of the batch's neighbours the table has (the kernel may know others, such as
        // the client's link-local address).
        let known = |table: &Table| {
            (10..250u32)
                .filter(|i| matches!(table.peek(addr(&format!("198.51.100.{i}"))), Resolution::Ready(_)))
                .count()
        };
        let settle = |reader: &mut Reader, table: &mut Table, want: usize| -> Result<()> {
            let deadline = StdInstant::now() + Duration::from_secs(5);
            loop {
                reader.poll(table)?;
                if reader.synced() && known(table) == want {
                    return Ok(());
                }
                ensure!(StdInstant::now() < deadline, "{want} neighbours expected: {:?}", table.counters());
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        ip(&ns, &["-batch", add.to_str().context("path")?])?;
        settle(&mut reader, &mut table, 240)?;
        let after_add = table.counters().redumps;
        ensure!(after_add >= 1, "no notification lost? {:?}", table.counters());
        ensure!(table.peek(addr("198.51.100.249")) == Resolution::Ready(MacAddress([2, 0, 0, 0, 1, 249])));
        ip(&ns, &["-batch", del.to_str().context("path")?])?;
        settle(&mut reader, &mut table, 0)?;
        ensure!(table.counters().redumps > after_add, "{:?}", table.counters());
        ensure!(table.peek(addr("198.51.100.1")) == Resolution::Pending(addr("198.51.100.1")));
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result?
}
