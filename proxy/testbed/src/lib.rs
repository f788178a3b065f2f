//! The test topology of sluice (../shared/DESIGN.md, "Test topology"), as code.
//!
//! Four network namespaces joined by veth pairs, every link with IPv4 and IPv6:
//!
//! ```text
//!  {p}far                   {p}client (a router)      {p}proxy                     {p}backend
//!  far0 192.0.2.1 --------- cli1 192.0.2.2
//!       2001:db8:192::1          2001:db8:192::2
//!                           cli0 198.51.100.1 ------- px0 198.51.100.2 (2 queues)
//!                                2001:db8:100::1          2001:db8:100::2
//!                                                     px1 203.0.113.1 ----------- be0 203.0.113.2
//!                                                         2001:db8:203::1             2001:db8:203::2
//! ```
//!
//! `{p}client` forwards both families, so `{p}far` is a client behind a router: its frames reach
//! px0 from cli0's MAC address, not its own (the proxy routes 192.0.2.0/24 and 2001:db8:192::/64
//! through 198.51.100.1 and 2001:db8:100::1). IPv6 addresses are added without duplicate address
//! detection (`nodad`), so they are usable at once.
//!
//! `{p}` is a prefix: `sluice-` for `cargo xtask netns up`, a per-test prefix for the integration
//! tests so that a crashed run elsewhere cannot disturb them. Interface names and addresses are the
//! same in every instance (namespaces isolate them). Nothing here touches any other namespace or
//! address: `down` deletes exactly the namespaces of its prefix, and with them their veths.
//!
//! This is test and demo tooling, not part of the proxy: it shells out to `ip`, `ethtool` and `tc`.
#![forbid(unsafe_code)]

use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

pub const CLIENT_ADDR: &str = "198.51.100.1";
pub const PROXY_ADDR: &str = "198.51.100.2";
pub const PROXY_BACKEND_SIDE_ADDR: &str = "203.0.113.1";
pub const BACKEND_ADDR: &str = "203.0.113.2";
pub const CLIENT_ADDR6: &str = "2001:db8:100::1";
pub const PROXY_ADDR6: &str = "2001:db8:100::2";
pub const PROXY_BACKEND_SIDE_ADDR6: &str = "2001:db8:203::1";
pub const BACKEND_ADDR6: &str = "2001:db8:203::2";
/// The routed client in `{p}far`, one router hop (`{p}client`) away from the proxy.
pub const FAR_ADDR: &str = "192.0.2.1";
pub const FAR_ADDR6: &str = "2001:db8:192::1";

/// The names of one instance of the topology.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    /// With a `{p}wire` namespace between client and proxy that runs the impairment bridge
    /// (`impair.py`, a netem substitute: this kernel has no sch_netem).
    impaired: bool,
}

/// Impairment of one direction of the wire: percentages, and how long a reordered frame is held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub loss: f64,
    pub reorder: f64,
    pub duplicate: f64,
    pub hold_ms: f64,
}

impl Impairment {
    pub const NONE: Self = Self { loss: 0.0, reorder: 0.0, duplicate: 0.0, hold_ms: 0.0 };

    fn arg(&self) -> String {
        format!("{},{},{},{}", self.loss, self.reorder, self.duplicate, self.hold_ms)
    }
}

impl Topology {
    /// The topology of `cargo xtask netns up`: namespaces `sluice-client`, `sluice-proxy`, `sluice-backend`.
    pub fn standard() -> Self {
        Self::with_prefix("sluice-")
    }

    pub fn with_prefix(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), impaired: false }
    }

    /// The same topology with the impairment bridge namespace `{p}wire` between `cli0` and `px0`.
    pub fn impaired(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), impaired: true }
    }

    pub fn wire(&self) -> String {
        format!("{}wire", self.prefix)
    }

    pub fn client(&self) -> String {
        format!("{}client", self.prefix)
    }
    pub fn proxy(&self) -> String {
        format!("{}proxy", self.prefix)
    }
    pub fn backend(&self) -> String {
        format!("{}backend", self.prefix)
    }
    /// The routed client's namespace, behind `{p}client`.
    pub fn far(&self) -> String {
        format!("{}far", self.prefix)
    }
    fn namespaces(&self) -> [String; 5] {
        [self.client(), self.proxy(), self.backend(), self.far(), self.wire()]
    }

    /// Creates the topology. Idempotent: whatever a crashed run left of this prefix is removed first.
    pub fn up(&self) -> Result<()> {
        self.down()?;
        let (client, proxy, backend, far, wire) =
            (self.client(), self.proxy(), self.backend(), self.far(), self.wire());
        let namespaces = self.namespaces();
        for ns in &namespaces[..if self.impaired { 5 } else { 4 }] {
            run("ip", &["netns", "add", ns])?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        // Client <-> proxy: two queues each way so that native XDP spreads flows over both;
        // through the bridge namespace when impaired (cli0 <-> w0, w1 <-> px0).
        let veth = |a: &str, a_ns: &str, b: &str, b_ns: &str| {
            run(
                "ip",
                &[
                    "link",
                    "add",
                    a,
                    "netns",
                    a_ns,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                    "mtu",
                    "1500",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    b,
                    "netns",
                    b_ns,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                    "mtu",
                    "1500",
                ],
            )
        };
        if self.impaired {
            veth("cli0", &client, "w0", &wire)?;
            veth("w1", &wire, "px0", &proxy)?;
            in_ns(&wire, "sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            for dev in ["w0", "w1"] {
                ip(&wire, &["link", "set", dev, "up"])?;
                in_ns(&wire, "ethtool", &["-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"])?;
            }
        } else {
            veth("cli0", &client, "px0", &proxy)?;
        }
        // Proxy <-> backend, and the routed client <-> its router (the client namespace).
        run("ip", &["link", "add", "px1", "netns", &proxy, "type", "veth", "peer", "name", "be0", "netns", &backend])?;
        run("ip", &["link", "add", "far0", "netns", &far, "type", "veth", "peer", "name", "cli1", "netns", &client])?;
        for (ns, dev, addr, addr6) in [
            (&client, "cli0", "198.51.100.1/24", "2001:db8:100::1/64"),
            (&proxy, "px0", "198.51.100.2/24", "2001:db8:100::2/64"),
            (&proxy, "px1", "203.0.113.1/24", "2001:db8:203::1/64"),
            (&backend, "be0", "203.0.113.2/24", "2001:db8:203::2/64"),
            (&client, "cli1", "192.0.2.2/24", "2001:db8:192::2/64"),
            (&far, "far0", "192.0.2.1/24", "2001:db8:192::1/64"),
        ] {
            ip(ns, &["addr", "add", addr, "dev", dev])?;
            ip(ns, &["-6", "addr", "add", addr6, "dev", dev, "nodad"])?;
            ip(ns, &["link", "set", dev, "up"])?;
        }
        // The client namespace routes between the far client and the proxy.
        in_ns(&client, "sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])?;
        ip(&far, &["route", "add", "default", "via", "192.0.2.2"])?;
        ip(&far, &["-6", "route", "add", "default", "via", "2001:db8:192::2"])?;
        ip(&proxy, &["route", "add", "192.0.2.0/24", "via", "198.51.100.1"])?;
        ip(&proxy, &["-6", "route", "add", "2001:db8:192::/64", "via", "2001:db8:100::1"])?;
        // Kernel senders on veth leave TCP checksums partial and coalesce segments past the MTU;
        // full checksums and single-MTU frames are what a NIC would deliver (TOOLCHAIN.md).
        in_ns(&client, "ethtool", &["-K", "cli0", "tx", "off", "tso", "off", "gso", "off"])?;
        in_ns(&backend, "ethtool", &["-K", "be0", "tx", "off", "tso", "off", "gso", "off"])?;
        in_ns(&far, "ethtool", &["-K", "far0", "tx", "off", "tso", "off", "gso", "off"])?;
        Ok(())
    }

    /// Removes the namespaces of this prefix (and so their veths) if they exist; nothing else.
    pub fn down(&self) -> Result<()> {
        let existing = list_namespaces()?;
        for ns in self.namespaces() {
            if existing.contains(&ns) {
                run("ip", &["netns", "del", &ns])?;
            }
        }
        Ok(())
    }
}

/// Brings a topology up and takes it down again when dropped, also on panic: what an
/// integration test holds for its whole run.
pub struct TopologyGuard {
    pub topology: Topology,
}

impl TopologyGuard {
    pub fn up(prefix: &str) -> Result<Self> {
        Self::up_topology(Topology::with_prefix(prefix))
    }

    pub fn up_topology(topology: Topology) -> Result<Self> {
        require_root()?;
        // Take it down again if `up` itself fails half-way.
        let guard = Self { topology };
        guard.topology.up().context("creating the test topology")?;
        Ok(guard)
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        if let Err(e) = self.topology.down() {
            eprintln!("testbed: removing topology {}: {e:#}", self.topology.prefix);
        }
    }
}

/// Integration tests need root for namespaces, XDP and AF_XDP. They fail (never skip) without it.
pub fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if euid != "0" {
        bail!("this test needs root (network namespaces, XDP, AF_XDP); running as uid {euid}");
    }
    Ok(())
}

pub fn list_namespaces() -> Result<Vec<String>> {
    let out = output("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// `ip -n ns ARGS`.
pub fn ip(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs `program ARGS` inside `ns` and fails with its stderr if it fails.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<Output> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    output("ip", &all)
}

/// Runs a command to completion; an error carries the command line and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).map(drop)
}

pub fn output(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}: is it installed?"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Reads one counter of `nstat`-style SNMP output (`/proc/net/snmp` of namespace `ns`),
/// e.g. `("Tcp", "OutRsts")`.
pub fn snmp_counter(ns: &str, group: &str, name: &str) -> Result<u64> {
    let out = in_ns(ns, "cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
    let (header, values) = (lines.next().context("no header")?, lines.next().context("no values")?);
    let idx = header
        .split_whitespace()
        .position(|h| h == name)
        .with_context(|| format!("no {group}:{name} in /proc/net/snmp"))?;
    values.split_whitespace().nth(idx).context("short line")?.parse().context("not a number")
}

/// Runs `f` on a new thread that has joined network namespace `ns` (setns applies to the calling
/// thread only), and returns its result. Lets tests use plain `std::net` sockets as a client in
/// `sluice-client`, with the kernel's own TCP stack.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in namespace {ns} panicked"))?
}

/// A process started inside a namespace (e.g. sluice in `{p}proxy`), stopped by pid when dropped:
/// SIGTERM, a second SIGTERM after 2 s, then SIGKILL after a grace period. Its stderr goes to a file that `log()` reads back.
pub struct NsProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl NsProcess {
    pub fn spawn(ns: &str, program: &str, args: &[&str], log: std::path::PathBuf) -> Result<Self> {
        let err = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(err.try_clone()?)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {program} in {ns}"))?;
        Ok(Self { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends `signal` and waits up to `timeout` for the exit.
    pub fn signal_and_wait(
        &mut self,
        signal: nix::sys::signal::Signal,
        timeout: std::time::Duration,
    ) -> Result<std::process::ExitStatus> {
        if self.child.try_wait()?.is_none() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            nix::sys::signal::kill(pid, signal).context("kill")?;
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("process {} did not exit within {timeout:?} of {signal}", self.child.id());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        use nix::sys::signal::Signal;
        use std::time::Duration;
        // SIGTERM drains (sluice waits for open connections); a second one stops at once.
        if self.signal_and_wait(Signal::SIGTERM, Duration::from_secs(2)).is_err()
            && self.signal_and_wait(Signal::SIGTERM, Duration::from_secs(3)).is_err()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Fetches `http://{addr}{path}` from inside `ns` with curl and parses the body as JSON.
pub fn get_json(ns: &str, url: &str) -> Result<serde_json::Value> {
    let out = in_ns(ns, "curl", &["-sS", "--max-time", "2", "--fail", url])?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("parsing JSON from {url}"))
}

/// Whether an XDP program is attached to `dev` in `ns` (`ip -d link show` lists `prog/xdp`).
pub fn xdp_attached(ns: &str, dev: &str) -> Result<bool> {
    let out = in_ns(ns, "ip", &["-d", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.contains("prog/xdp") || text.contains("xdpgeneric") || text.contains(" xdp "))
}

/// Starts the impairment bridge in `{p}wire` between `w0` (client side) and `w1` (proxy side).
/// `client_egress` impairs frames from the client, `proxy_egress` frames from the proxy.
/// Stopping it (drop) prints its counters into its log.
pub fn start_impairment(
    topology: &Topology,
    seed: u64,
    client_egress: Impairment,
    proxy_egress: Impairment,
    log: std::path::PathBuf,
) -> Result<NsProcess> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/impair.py");
    NsProcess::spawn(
        &topology.wire(),
        "python3",
        &[script, "w0", "w1", &seed.to_string(), &client_egress.arg(), &proxy_egress.arg()],
        log,
    )
}
