//! Integration tests of `sluice::datapath::xdp::loader` and the XDP program, on a veth pair between two network
//! namespaces made here: `sluice-hl-a` (hla0, 198.51.100.201/24 and 2001:db8:100::2/64, where
//! the program is attached) and `sluice-hl-b` (hlb0, 198.51.100.202/24 and 2001:db8:100::1/64,
//! the peer that sends traffic). Two queues per end, MTU 1500, IPv6 without DAD. The namespaces
//! are removed when a test ends, also on panic.
//!
//! The files: this one attaches, detaches and classifies kernel-made IPv4 traffic; `frames`
//! sends hand-made IPv4 frames (malformed, fragmented, ICMP); `ipv6` classifies IPv6 traffic,
//! hand-made IPv6 frames and path-MTU messages of both families.
//!
//! Needs root. A test that cannot create its namespaces fails; none skips. The tests share the
//! namespace names, so they run one at a time (a lock).
//!
//! No AF_XDP socket is bound here: a segment to a listener is classified for redirection, the
//! XSKMAP has no socket for its queue, the program passes it to the kernel and counts it as
//! `redirect_failed` (the kernel then answers with a RST, so the client's connect() is refused).

mod frames;
mod ipv6;

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use sluice::datapath::xdp::loader::{Attached, LoadError, Loader, XDP_OBJECT, XdpCounters, XdpMode, queue_count};
use sluice_testbed::{in_netns, in_ns, ip, require_root, run};
use sluice_xsk::{BindMode, Socket, XskConfig};
use std::os::fd::AsFd;

const NS_A: &str = "sluice-hl-a";
const NS_B: &str = "sluice-hl-b";
const IF_A: &str = "hla0";
const IF_B: &str = "hlb0";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 201);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 202);
const ADDR6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
const ADDR6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const LISTENER_PORT: u16 = 4433;
const OTHER_PORT: u16 = 4434;
const UDP_PORT: u16 = 4435;
const BACKEND_PORT: u16 = 4436;
const CHILD_ENV: &str = "SLUICE_HL_SIGKILL_CHILD";
const CHILD_READY: &str = "SLUICE_HL_ATTACHED";

static LOCK: Mutex<()> = Mutex::new(());

/// The namespace pair; removed on drop (also on panic, also when `up` fails half-way).
struct Pair {
    _lock: MutexGuard<'static, ()>,
}

impl Pair {
    fn up() -> Pair {
        let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        require_root().expect("root");
        remove_namespaces(); // leftovers of a crashed run
        let pair = Pair { _lock: lock };
        let setup = || -> anyhow::Result<()> {
            run("ip", &["netns", "add", NS_A])?;
            run("ip", &["netns", "add", NS_B])?;
            ip(
                NS_A,
                &[
                    "link",
                    "add",
                    IF_A,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    IF_B,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                    "netns",
                    NS_B,
                ],
            )?;
            for (ns, dev, addr, addr6) in [(NS_A, IF_A, ADDR_A, ADDR6_A), (NS_B, IF_B, ADDR_B, ADDR6_B)] {
                ip(ns, &["link", "set", "lo", "up"])?;
                ip(ns, &["link", "set", dev, "mtu", "1500"])?;
                ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
                ip(ns, &["-6", "addr", "add", &format!("{addr6}/64"), "dev", dev, "nodad"])?;
                ip(ns, &["link", "set", dev, "up"])?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            panic!("cannot create the test namespaces {NS_A}/{NS_B}: {e:#}");
        }
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        remove_namespaces();
    }
}

fn remove_namespaces() {
    for ns in [NS_A, NS_B] {
        let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
    }
}

fn attach(ifname: &'static str, mode: XdpMode, force: bool) -> Result<Attached, LoadError> {
    in_netns(NS_A, move || Loader::attach(ifname, mode, force, true)).expect("enter sluice-hl-a")
}

/// `ip -d link show dev hla0` in sluice-hl-a.
fn link_details() -> String {
    let out = in_ns(NS_A, "ip", &["-d", "link", "show", "dev", IF_A]).expect("ip -d link show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn xdp_attached() -> bool {
    link_details().contains("prog/xdp")
}

/// Waits (bounded) for the program to be gone; the kernel detaches as the link's fd closes.
fn wait_detached() -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while xdp_attached() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// connect() from sluice-hl-b to `198.51.100.201:port`; returns the error kind (refused is
/// expected).
fn connect_from_b(port: u16) -> std::io::ErrorKind {
    connect_from_b_to(on_a(port))
}

/// connect() from sluice-hl-b to `to`; returns the error kind (refused is expected).
fn connect_from_b_to(to: SocketAddr) -> std::io::ErrorKind {
    in_netns(NS_B, move || match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(_) => std::io::ErrorKind::Other,
        Err(e) => e.kind(),
    })
    .expect("enter sluice-hl-b")
}

/// `198.51.100.201:port`, an endpoint of sluice-hl-a.
fn on_a(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ADDR_A, port))
}

/// AF_XDP sockets on both queues of hla0 (copy mode, small), in the program's XSKMAP: a frame
/// the program steers is then `redirected*`, not `redirect_failed`. Nobody reads them; the
/// kernel drops what does not fit. Keep them until the counters are read.
fn bind_xsks(attached: &mut Attached) -> Vec<Socket> {
    let config = XskConfig {
        frame_size: 2048,
        frame_count: 512,
        fill_size: 128,
        comp_size: 256,
        rx_size: 128,
        tx_size: 256,
        tx_reserve: 256,
        mode: BindMode::Copy,
        ..XskConfig::default()
    };
    let sockets: Vec<Socket> = (0..2)
        .map(|q| {
            let config = config.clone();
            in_netns(NS_A, move || Socket::new(IF_A, q, &config)).unwrap().expect("AF_XDP socket on hla0").0
        })
        .collect();
    for (q, socket) in sockets.iter().enumerate() {
        attached.register_xsk(q as u32, socket.as_fd()).unwrap();
    }
    sockets
}

fn delta(before: &XdpCounters, after: &XdpCounters) -> XdpCounters {
    after.since(before)
}

fn classify_traffic(mode: XdpMode) {
    let _pair = Pair::up();
    assert_eq!(in_netns(NS_A, || queue_count(IF_A)).unwrap().unwrap(), 2, "veth with 2 RX queues");

    let mut attached = attach(IF_A, mode, false).unwrap_or_else(|e| panic!("attach in {mode} mode: {e}"));
    assert_eq!(attached.mode(), mode);
    eprintln!("load+attach in {mode} mode took {:?}", attached.load_time());

    let details = link_details();
    assert!(
        details.contains(&format!("prog/xdp id {}", attached.program_id())),
        "ip -d link does not show program {}: {details}",
        attached.program_id()
    );
    let keyword = match mode {
        XdpMode::Skb => "xdpgeneric",
        _ => "xdp ",
    };
    assert!(details.contains(keyword), "{mode} mode not shown by ip -d link: {details}");

    attached.add_listener(on_a(LISTENER_PORT)).unwrap();
    let c0 = attached.counters().unwrap();

    // 5 SYNs to the listener: classified for redirection, no socket on the queue, passed, and
    // refused by the kernel (RST). The first one also makes sluice-hl-b ARP for .201.
    for _ in 0..5 {
        assert_eq!(connect_from_b(LISTENER_PORT), std::io::ErrorKind::ConnectionRefused);
    }
    // 3 SYNs to another port: passed.
    for _ in 0..3 {
        assert_eq!(connect_from_b(OTHER_PORT), std::io::ErrorKind::ConnectionRefused);
    }
    // 3 UDP datagrams into sluice-hl-a: passed.
    in_netns(NS_B, || {
        let s = UdpSocket::bind((ADDR_B, 0)).unwrap();
        for _ in 0..3 {
            s.send_to(b"sluice", (ADDR_A, UDP_PORT)).unwrap();
        }
    })
    .unwrap();
    // ICMP into sluice-hl-a: a datagram from a to a closed port of b draws a port unreachable.
    in_netns(NS_A, || {
        let s = UdpSocket::bind((ADDR_A, 0)).unwrap();
        s.connect((ADDR_B, UDP_PORT)).unwrap();
        s.send(b"sluice").unwrap();
        // The ICMP error comes back as ECONNREFUSED on the connected socket.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let err = s.recv(&mut buf).expect_err("no datagram expected");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "no ICMP port unreachable came back");
    })
    .unwrap();

    let c1 = attached.counters().unwrap();
    let d = delta(&c0, &c1);
    assert_eq!(d.redirect_failed, 5, "listener SYNs: {d:?}");
    assert_eq!(d.redirected, 0, "nothing can be redirected without a socket: {d:?}");
    assert_eq!(d.pass_no_listener, 3, "other-port SYNs: {d:?}");
    assert_eq!(d.pass_udp, 3, "UDP: {d:?}");
    assert!(d.pass_icmp >= 1, "ICMP: {d:?}");
    assert!(d.pass_arp >= 1, "ARP: {d:?}");
    assert_eq!(d.pass_malformed(), 0, "well-formed traffic only: {d:?}");

    // Removing the listener: its SYNs are now plain pass.
    attached.remove_listener(on_a(LISTENER_PORT)).unwrap();
    attached.remove_listener(on_a(LISTENER_PORT)).unwrap(); // absent: not an error
    assert_eq!(connect_from_b(LISTENER_PORT), std::io::ErrorKind::ConnectionRefused);
    // The backend-flow rule classifies like a listener.
    attached.add_backend_flow(on_a(BACKEND_PORT)).unwrap();
    assert_eq!(connect_from_b(BACKEND_PORT), std::io::ErrorKind::ConnectionRefused);
    attached.remove_backend_flow(on_a(BACKEND_PORT)).unwrap();
    let d = delta(&c1, &attached.counters().unwrap());
    assert_eq!((d.pass_no_listener, d.redirect_failed, d.redirected_backend), (1, 1, 0), "{d:?}");

    drop(attached);
    assert!(wait_detached(), "XDP program still attached after Drop: {}", link_details());
}

#[test]
fn native_mode_attaches_and_classifies() {
    classify_traffic(XdpMode::Native);
}

#[test]
fn skb_mode_attaches_and_classifies() {
    classify_traffic(XdpMode::Skb);
}

#[test]
fn auto_mode_attaches_native_on_veth() {
    let _pair = Pair::up();
    let attached = attach(IF_A, XdpMode::Auto, false).unwrap();
    assert_eq!(attached.mode(), XdpMode::Native, "veth supports native XDP");
    drop(attached);
    assert!(wait_detached());
}

#[test]
fn second_attach_is_refused_with_the_reason() {
    let _pair = Pair::up();
    let first = attach(IF_A, XdpMode::Skb, false).unwrap();
    for force in [false, true] {
        let err = attach(IF_A, XdpMode::Skb, force).err().expect("second attach must be refused");
        let msg = err.to_string();
        assert!(matches!(err, LoadError::HeldByLink { prog_id, .. } if prog_id == first.program_id()), "{msg}");
        assert!(msg.contains("already has an XDP program attached") && !msg.contains('\n'), "{msg}");
    }
    // Still the first program.
    assert!(link_details().contains(&format!("prog/xdp id {}", first.program_id())));
    drop(first);
    assert!(wait_detached());
}

#[test]
fn force_replaces_a_legacy_attachment() {
    let _pair = Pair::up();
    // Attach a copy of the program the legacy way (netlink IFLA_XDP_FD, like `ip link set xdp`).
    let mut legacy = aya::Ebpf::load(XDP_OBJECT).unwrap();
    let program: &mut aya::programs::Xdp = legacy.program_mut(sluice_ebpf::PROGRAM_NAME).unwrap().try_into().unwrap();
    program.load().unwrap();
    let legacy_id = program.info().unwrap().id();
    {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = program.fd().unwrap().as_fd().as_raw_fd();
        in_netns(NS_A, move || netlink_attach_legacy(IF_A, fd)).unwrap();
    }
    assert!(link_details().contains(&format!("prog/xdp id {legacy_id}")), "{}", link_details());

    let err = attach(IF_A, XdpMode::Skb, false).err().expect("refused without force");
    assert!(matches!(err, LoadError::AlreadyAttached { prog_id, .. } if prog_id == legacy_id), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");

    let attached = attach(IF_A, XdpMode::Skb, true).expect("force replaces a legacy attachment");
    let details = link_details();
    assert!(details.contains(&format!("prog/xdp id {}", attached.program_id())), "{details}");
    assert!(!details.contains(&format!("prog/xdp id {legacy_id} ")), "{details}");
    drop(attached);
    assert!(wait_detached(), "{}", link_details());
    drop(legacy);
}

/// RTM_SETLINK with IFLA_XDP { FD, FLAGS = SKB_MODE }: the pre-bpf_link way of attaching.
fn netlink_attach_legacy(ifname: &str, prog_fd: i32) {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage, LinkXdp},
    };
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    let out = Command::new("ip").args(["-j", "link", "show", "dev", ifname]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let index = json[0]["ifindex"].as_u64().expect("ifindex") as u32;

    let mut socket = Socket::new(NETLINK_ROUTE).unwrap();
    socket.bind_auto().unwrap();
    socket.connect(&SocketAddr::new(0, 0)).unwrap();
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Xdp(vec![LinkXdp::Fd(prog_fd), LinkXdp::Flags(1 << 1)]));
    let mut packet =
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(RouteNetlinkMessage::SetLink(msg)));
    packet.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).unwrap();
    let (reply, _) = socket.recv_from_full().unwrap();
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply).unwrap();
    match reply.payload {
        NetlinkPayload::Error(e) => {
            assert!(e.code.is_none(), "legacy attach failed: {}", e.to_io())
        }
        other => panic!("unexpected reply {other:?}"),
    }
}

#[test]
fn refuses_missing_and_down_interfaces() {
    let _pair = Pair::up();
    let err = attach("hl-nosuch0", XdpMode::Skb, false).err().expect("missing interface");
    assert!(matches!(err, LoadError::NoSuchInterface(ref n) if n == "hl-nosuch0"), "{err}");
    assert!(in_netns(NS_A, || queue_count("hl-nosuch0")).unwrap().is_err());

    ip(NS_A, &["link", "set", IF_A, "down"]).unwrap();
    let err = attach(IF_A, XdpMode::Native, false).err().expect("down interface");
    assert!(matches!(err, LoadError::InterfaceDown(ref n) if n == IF_A), "{err}");
    assert!(!err.to_string().contains('\n'));
    assert!(!xdp_attached(), "nothing may be attached after a refusal");
}

/// A process that attaches and is then SIGKILLed leaves nothing attached: the bpf_link dies
/// with it.
#[test]
fn sigkill_leaves_no_program_attached() {
    let _pair = Pair::up();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "sigkill_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest prints "test sigkill_child ... " on the same line first.
        if let Some((_, id)) = line.split_once(CHILD_READY) {
            ready = Some(id.trim().to_owned());
            break;
        }
    }
    let prog_id = ready.expect("the child exited before attaching");
    assert!(link_details().contains(&format!("prog/xdp id {prog_id}")), "{}", link_details());

    child.0.kill().unwrap(); // SIGKILL
    let status = child.0.wait().unwrap();
    assert!(!status.success());
    assert!(wait_detached(), "program still attached after SIGKILL: {}", link_details());
}

/// Run only as the child of `sigkill_leaves_no_program_attached` (which sets the variable).
#[test]
#[ignore = "helper process of sigkill_leaves_no_program_attached"]
fn sigkill_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let attached = attach(IF_A, XdpMode::Skb, false).expect("child attach");
    println!("{CHILD_READY} {}", attached.program_id());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

const UNPRIV_ENV: &str = "SLUICE_HL_UNPRIVILEGED_CHILD";
const UNPRIV_REFUSED: &str = "SLUICE_HL_REFUSED";

/// A process without capabilities (root with every capability dropped and the `noroot`
/// securebit, via util-linux's setpriv) is refused with the reason, before anything loads.
#[test]
fn refuses_when_not_privileged() {
    require_root().expect("root");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(["--securebits=+noroot,+noroot_locked", "--bounding-set=-all", "--inh-caps=-all"])
        .arg(exe)
        .args(["--exact", "unprivileged_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(UNPRIV_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(UNPRIV_REFUSED),
        "child: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run only as the child of `refuses_when_not_privileged` (which sets the variable).
#[test]
#[ignore = "helper process of refuses_when_not_privileged"]
fn unprivileged_child() {
    if std::env::var_os(UNPRIV_ENV).is_none() {
        return;
    }
    match Loader::attach("lo", XdpMode::Skb, false, true) {
        Err(e @ LoadError::NotPrivileged(caps)) => {
            assert_eq!(caps, 0);
            assert!(!e.to_string().contains('\n'));
            println!("{UNPRIV_REFUSED} {e}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("attached without capabilities"),
    }
}
