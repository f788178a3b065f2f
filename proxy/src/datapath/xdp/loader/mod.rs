//! Loads sluice's XDP program (crate `sluice-ebpf`, embedded at build time) with aya, attaches
//! it to an interface as a bpf_link, and fills its maps.
//!
//! What it is: the one place that talks to the kernel's BPF side. [`Loader::attach`] checks the
//! preconditions first and refuses with a one-line reason ([`LoadError`]): not privileged, the
//! interface missing or down, another XDP program already attached (unless `force`). The
//! attachment is a bpf_link (`BPF_LINK_CREATE`), never the legacy netlink attach: the kernel
//! detaches a link when its last file descriptor closes, so the program goes away when
//! [`Attached`] is dropped and also when the process dies by any means, SIGKILL included.
//!
//! What it is not: the AF_XDP sockets (`sluice_xsk`) or the signal handling (`run`); callers hand
//! socket fds to [`Attached::register_xsk`].
//!
//! Interface state (exists, IFF_UP, number of RX queues, attached XDP program and its mode) is
//! read over rtnetlink (`RTM_GETLINK`, crates netlink-packet-route + netlink-sys: safe, sync, and
//! correct in the calling thread's network namespace, unlike /sys/class/net). With `force`, a
//! program attached the legacy way (netlink, `ip link set dev X xdp ...`) is removed over
//! rtnetlink (`RTM_SETLINK` with `IFLA_XDP_FD = -1`) before attaching; a program held by another
//! bpf_link cannot be removed from here (its owner must close it) and is refused even with
//! `force`.
//!
//! The files, by concern (everything public is re-exported here):
//! - `attach`: [`Loader::attach`]: the checks, loading the program, attaching it as a bpf_link;
//!   and the embedded program object ([`XDP_OBJECT`]).
//! - `attached`: [`Attached`], the attached program: its maps (listeners, drain and backend
//!   flows, XSKMAP, counters; addresses of both families) and detaching on drop;
//!   [`LISTENERS_MAX`] and [`check_listener_count`] for start and reload.
//! - `netlink`: interface state over rtnetlink ([`queue_count`], up, attached program) and the
//!   removal of a legacy-attached program.
//! - `privileges`: the effective capabilities attaching needs.
//! - `counters`: [`XdpCounters`], the program's outcome counters.
//! - `mode`, `error`: [`XdpMode`] and [`LoadError`].

mod attach;
mod attached;
mod counters;
mod error;
mod mode;
mod netlink;
mod open_flows;
mod privileges;

pub use attach::{Loader, XDP_OBJECT};
pub use attached::{Attached, CookieOffer, LISTENERS_MAX, PressureFlag, check_listener_count};
pub use counters::XdpCounters;
pub use error::LoadError;
pub use mode::XdpMode;
pub use netlink::queue_count;
pub use open_flows::OpenFlows;
