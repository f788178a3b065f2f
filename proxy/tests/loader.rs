//! Integration tests of `sluice::datapath::xdp::loader` and the XDP program, on a veth pair between two network
//! namespaces made here: `sluice-hl-a` (hla0, 198.51.100.201/24, where the program is attached)
//! and `sluice-hl-b` (hlb0, 198.51.100.202/24, the peer that sends traffic). Two queues per end,
//! MTU 1500. The namespaces are removed when a test ends, also on panic.
//!
//! Needs root. A test that cannot create its namespaces fails; none skips. The tests share the
//! namespace names, so they run one at a time (a lock).
//!
//! No AF_XDP socket is bound here: a segment to a listener is classified for redirection, the
//! XSKMAP has no socket for its queue, the program passes it to the kernel and counts it as
//! `redirect_failed` (the kernel then answers with a RST, so the client's connect() is refused).

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use sluice::datapath::xdp::loader::{Attached, LoadError, Loader, XDP_OBJECT, XdpCounters, XdpMode, queue_count};
use sluice_testbed::{in_netns, in_ns, ip, require_root, run};

const NS_A: &str = "sluice-hl-a";
const NS_B: &str = "sluice-hl-b";
const IF_A: &str = "hla0";
const IF_B: &str = "hlb0";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 201);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 202);
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
            for (ns, dev, addr) in [(NS_A, IF_A, ADDR_A), (NS_B, IF_B, ADDR_B)] {
                ip(ns, &["link", "set", "lo", "up"])?;
                ip(ns, &["link", "set", dev, "mtu", "1500"])?;
                ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
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
    in_netns(NS_A, move || Loader::attach(ifname, mode, force)).expect("enter sluice-hl-a")
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

/// connect() from sluice-hl-b to `addr:port`; returns the error kind (refused is expected).
fn connect_from_b(port: u16) -> std::io::ErrorKind {
    in_netns(NS_B, move || {
        let to = SocketAddr::V4(SocketAddrV4::new(ADDR_A, port));
        match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
            Ok(_) => std::io::ErrorKind::Other,
            Err(e) => e.kind(),
        }
    })
    .expect("enter sluice-hl-b")
}

/// `198.51.100.201:port`, an endpoint of sluice-hl-a.
fn on_a(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ADDR_A, port))
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

/// Sends raw Ethernet frames from hlb0 (sluice-hl-b) with an AF_PACKET socket (python3).
fn send_raw_from_b(frames: &[Vec<u8>]) {
    const SCRIPT: &str = "import socket,sys\n\
        s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
        s.bind((sys.argv[1],0))\n\
        [s.send(bytes.fromhex(h)) for h in sys.argv[2:]]\n";
    let hex: Vec<String> = frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect()).collect();
    let mut args = vec!["-c", SCRIPT, IF_B];
    args.extend(hex.iter().map(String::as_str));
    in_ns(NS_B, "python3", &args).expect("python3 AF_PACKET sender in sluice-hl-b");
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = in_ns(ns, "ip", &["-j", "link", "show", "dev", dev]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = json[0]["address"].as_str().expect("MAC address").to_owned();
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// An Ethernet frame a(hlb0) -> b(hla0) carrying `ethertype` and `payload`.
fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header B -> A (checksum left 0: the program does not verify it, the kernel drops it).
fn ipv4(version_ihl: u8, total_len: u16, frag: u16, protocol: u8, options: &[u8]) -> Vec<u8> {
    let mut h = vec![version_ihl, 0];
    h.extend_from_slice(&total_len.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, protocol, 0, 0]);
    h.extend_from_slice(&ADDR_B.octets());
    h.extend_from_slice(&ADDR_A.octets());
    h.extend_from_slice(options);
    h
}

/// A TCP SYN header (20 bytes) to `port` with the given data offset nibble.
fn tcp(port: u16, data_offset: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&port.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    t.extend_from_slice(&[data_offset << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// Malformed, truncated, fragmented and unusual frames are passed and each lands in its own
/// counter; a well-formed SYN with IPv4 options to the listener is still classified.
fn malformed_frames_are_passed_and_counted(mode: XdpMode) {
    let _pair = Pair::up();
    let mut attached = attach(IF_A, mode, false).unwrap();
    attached.add_listener(on_a(LISTENER_PORT)).unwrap();
    let (mac_a, mac_b) = (mac_of(NS_A, IF_A), mac_of(NS_B, IF_B));
    let eth = |ethertype: u16, payload: &[u8]| frame(mac_a, mac_b, ethertype, payload);
    let cat = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();

    let frames = vec![
        // IHL 4 (< 5): malformed IPv4.
        eth(0x0800, &cat(ipv4(0x44, 40, 0, 6, &[]), tcp(LISTENER_PORT, 5))),
        // Version 6 in an IPv4 EtherType: malformed IPv4.
        eth(0x0800, &cat(ipv4(0x65, 40, 0, 6, &[]), tcp(LISTENER_PORT, 5))),
        // Total length below the header length: malformed IPv4.
        eth(0x0800, &cat(ipv4(0x45, 19, 0, 6, &[]), tcp(LISTENER_PORT, 5))),
        // The frame ends 10 bytes into the IPv4 header: truncated IPv4.
        eth(0x0800, &ipv4(0x45, 40, 0, 6, &[])[..10]),
        // IHL 15 (60 bytes), total length 80, but only 20 bytes of header in the frame:
        // truncated IPv4.
        eth(0x0800, &ipv4(0x4f, 80, 0, 6, &[])),
        // TCP data offset 4 (< 5): malformed TCP.
        eth(0x0800, &cat(ipv4(0x45, 40, 0, 6, &[]), tcp(LISTENER_PORT, 4))),
        // TCP data offset 15 (60 bytes) past the datagram and the frame: truncated TCP.
        eth(0x0800, &cat(ipv4(0x45, 40, 0, 6, &[]), tcp(LISTENER_PORT, 15))),
        // Only 10 bytes of TCP header: truncated TCP.
        eth(0x0800, &cat(ipv4(0x45, 30, 0, 6, &[]), tcp(LISTENER_PORT, 5)[..10].to_vec())),
        // First fragment (MF) of a TCP segment to the listener: passed as a fragment.
        eth(0x0800, &cat(ipv4(0x45, 40, 0x2000, 6, &[]), tcp(LISTENER_PORT, 5))),
        // A later fragment (offset 8 bytes): passed as a fragment.
        eth(0x0800, &cat(ipv4(0x45, 40, 0x0001, 6, &[]), tcp(LISTENER_PORT, 5))),
        // GRE (47): another protocol.
        eth(0x0800, &cat(ipv4(0x45, 40, 0, 47, &[]), vec![0; 20])),
        // An unknown EtherType, and a VLAN tag: other EtherTypes.
        eth(0x88b5, &[0; 46]),
        eth(0x8100, &[0; 46]),
        // A SYN with 4 bytes of IPv4 options (IHL 6) to the listener: classified, no socket.
        eth(0x0800, &cat(ipv4(0x46, 44, 0, 6, &[1, 1, 1, 0]), tcp(LISTENER_PORT, 5))),
    ];
    let c0 = attached.counters().unwrap();
    send_raw_from_b(&frames);
    let d = attached.counters().unwrap().since(&c0);
    let got = (
        d.pass_malformed_ipv4,
        d.pass_truncated_ipv4,
        d.pass_malformed_tcp,
        d.pass_truncated_tcp,
        d.pass_fragment,
        d.pass_other_protocol,
        d.pass_other_ethertype,
        d.redirect_failed,
    );
    assert_eq!(got, (3, 2, 1, 2, 2, 1, 2, 1), "{mode} mode: {d:?}");
    assert_eq!(d.redirected + d.pass_no_listener + d.pass_udp, 0, "{d:?}");
    drop(attached);
    assert!(wait_detached());
}

#[test]
fn malformed_frames_are_passed_and_counted_native() {
    malformed_frames_are_passed_and_counted(XdpMode::Native);
}

#[test]
fn malformed_frames_are_passed_and_counted_skb() {
    malformed_frames_are_passed_and_counted(XdpMode::Skb);
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
    match Loader::attach("lo", XdpMode::Skb, false) {
        Err(e @ LoadError::NotPrivileged(caps)) => {
            assert_eq!(caps, 0);
            assert!(!e.to_string().contains('\n'));
            println!("{UNPRIV_REFUSED} {e}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("attached without capabilities"),
    }
}
