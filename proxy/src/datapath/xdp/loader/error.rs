//! [`LoadError`]: why loading, attaching or a map operation failed, in one line each.

use super::mode::XdpMode;

/// Why [`Loader::attach`] or a map operation failed. Each message is one line.
///
/// [`Loader::attach`]: super::Loader::attach
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "not privileged: attaching XDP needs CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN (effective capabilities {0:#x})"
    )]
    NotPrivileged(u64),
    #[error("cannot read the effective capabilities from /proc/self/status: {0}")]
    Capabilities(String),
    #[error("interface {0} does not exist (in this network namespace)")]
    NoSuchInterface(String),
    #[error("interface {0} is down: bring it up first (ip link set {0} up)")]
    InterfaceDown(String),
    #[error(
        "interface {ifname} already has an XDP program attached (id {prog_id}, {mode} mode); use --force to replace it"
    )]
    AlreadyAttached { ifname: String, prog_id: u32, mode: &'static str },
    #[error(
        "interface {ifname} already has an XDP program attached (id {prog_id}) held by a bpf_link{} of another process or a pin; --force cannot remove it: stop its owner first",
        link_id.map(|id| format!(" (id {id})")).unwrap_or_default()
    )]
    HeldByLink { ifname: String, prog_id: u32, link_id: Option<u32> },
    #[error("the XDP program was not built (AYA_BUILD_SKIP was set at build time); rebuild without it")]
    ProgramNotBuilt,
    #[error("loading the XDP program object: {0}")]
    Load(String),
    #[error("loading the XDP program into the kernel: {0}")]
    Verify(String),
    #[error("attaching XDP on {ifname} in {mode} mode failed: {reason}")]
    Attach { ifname: String, mode: XdpMode, reason: String },
    #[error(
        "the kernel attached XDP on {0} without a bpf_link (legacy netlink path); refused because it would outlive the process"
    )]
    NotALink(String),
    #[error("{count} listeners: the XDP program steers at most {max} (both address families together)")]
    TooManyListeners { count: usize, max: usize },
    #[error("map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("rtnetlink: {0}")]
    Netlink(String),
}
