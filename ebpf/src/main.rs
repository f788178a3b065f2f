//! sluice's XDP program (the `sluice-xdp` binary, built for `bpfel-unknown-none`
//! by proxy/build.rs; on any other target this file is an empty `main`).
//!
//! What it does: parses Ethernet / IPv4 / IPv6 (and its Hop-by-Hop, Routing and
//! Destination Options headers, a few at most) / TCP with every header bounds-checked against
//! `data_end`, and redirects a TCP segment of either family to `XSKS[rx_queue_index]` when its
//! destination (address, port) is a listener (`LISTENERS`) or the local end of one of sluice's
//! own backend flows (`BACKEND_FLOWS`), with the same draining rule (`DRAIN_FLOWS`) for both.
//! Path-MTU messages (ICMPv4 fragmentation needed, ICMPv6 Packet Too Big) quoting a segment
//! sluice sent from such an endpoint are redirected too, for user space to validate. Every
//! other frame (ARP, NDP and other ICMP, UDP, other ports, fragments of either family, long
//! extension header chains, truncated or malformed headers) is passed to the kernel. Each frame
//! increments exactly one per-CPU counter (`sluice_ebpf::Counter`).
//!
//! Two programs share this code and the maps: `sluice_xdp`, and `sluice_xdp_cookies`, which
//! also answers SYNs with the kernel's SYN cookies while a queue's SYN queue is under pressure
//! and marks the ACKs whose cookie the kernel validated (`cookie`). The loader takes the second
//! when enabled and the kernel accepts it.
//!
//! What it is not: a validator. Checksums and TCP options are user space's job
//! (`sluice-wire`), and so is checking that a path-MTU message quotes a segment in flight
//! (RFC 5927); this program parses only what steering needs, and never drops or aborts:
//! whatever it cannot classify goes to the kernel, counted. (The cookie SYN-ACK is the one frame
//! it sends, with XDP_TX.)
//!
//! Headers: Ethernet II (IEEE 802.3 / RFC 894), IPv4 (RFC 791 section 3.1), IPv6 (RFC 8200
//! sections 3 and 4), TCP (RFC 9293 section 3.1), ICMP (RFC 792, RFC 1191 section 4), ICMPv6
//! (RFC 4443 section 3.2, RFC 8201).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod cookie;
#[cfg(target_arch = "bpf")]
mod xdp;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
