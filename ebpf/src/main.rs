//! sluice's XDP program (the `sluice-xdp` binary, built for `bpfel-unknown-none`
//! by proxy/build.rs; on any other target this file is an empty `main`).
//!
//! What it does: parses Ethernet / IPv4 / TCP with every header bounds-checked
//! against `data_end`, and redirects a TCP segment to `XSKS[rx_queue_index]`
//! when its destination (address, port) is a listener (`LISTENERS`) or the
//! local end of one of sluice's own backend flows (`BACKEND_FLOWS`). Every
//! other frame (ARP, IPv6, ICMP, UDP, other ports, IPv4 fragments, truncated
//! or malformed headers) is passed to the kernel. Each frame increments exactly
//! one per-CPU counter (`sluice_ebpf::Counter`).
//!
//! What it is not: a validator. Checksums and TCP options are user space's job
//! (`sluice-wire`); this program parses only what steering needs, and never
//! drops or aborts: whatever it cannot classify goes to the kernel, counted.
//!
//! Headers: Ethernet II (IEEE 802.3 / RFC 894), IPv4 (RFC 791 section 3.1),
//! TCP (RFC 9293 section 3.1).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod xdp;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
