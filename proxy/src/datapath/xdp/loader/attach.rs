//! [`Loader::attach`]: the preconditions (privileges, the interface, an XDP program already
//! there), loading the embedded program object ([`XDP_OBJECT`]) and attaching it as a bpf_link,
//! never the legacy netlink way.

use std::time::Instant;

use aya::{
    Ebpf,
    programs::{ProgramError, Xdp, links::FdLink, links::LinkType, loaded_links},
};

use super::attached::{Attached, Maps};
use super::error::LoadError;
use super::mode::XdpMode;
use super::netlink::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, detach_legacy, get_link};
use super::privileges::check_privileges;

/// The XDP program object built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-xdp"));

/// Entry point: see [`Loader::attach`].
pub struct Loader;

impl Loader {
    /// Loads the XDP program and attaches it to `ifname` (in the calling thread's network
    /// namespace) as a bpf_link. Refuses, before loading anything, when the process lacks the
    /// capabilities, when the interface is missing or down, or when an XDP program is already
    /// attached there (with `force`, a legacy-attached one is removed first).
    ///
    /// With `syn_cookies`, the variant with SYN cookies in XDP ([`sluice_ebpf::PROGRAM_NAME_COOKIES`])
    /// is loaded; when the kernel refuses it (no `bpf_tcp_raw_*_syncookie_*` helpers before Linux
    /// 6.0, or a verifier that rejects it), the reason is logged and the plain program is loaded
    /// ([`Attached::xdp_syn_cookies`] says which).
    pub fn attach(ifname: &str, mode: XdpMode, force: bool, syn_cookies: bool) -> Result<Attached, LoadError> {
        let started = Instant::now();
        check_privileges()?;
        let link = get_link(ifname)?.ok_or_else(|| LoadError::NoSuchInterface(ifname.to_owned()))?;
        if !link.up {
            return Err(LoadError::InterfaceDown(ifname.to_owned()));
        }
        if let Some(existing) = link.xdp {
            // Which bpf_link holds it (needs CAP_SYS_ADMIN to look up; None when unknown).
            let held_by =
                |link_id| LoadError::HeldByLink { ifname: ifname.to_owned(), prog_id: existing.prog_id, link_id };
            if let Some(link_id) = xdp_link_of_program(existing.prog_id) {
                return Err(held_by(Some(link_id)));
            }
            if !force {
                return Err(LoadError::AlreadyAttached {
                    ifname: ifname.to_owned(),
                    prog_id: existing.prog_id,
                    mode: existing.mode_name(),
                });
            }
            tracing::warn!(
                ifname,
                prog_id = existing.prog_id,
                mode = existing.mode_name(),
                "--force: removing the XDP program already attached"
            );
            match detach_legacy(link.index, existing.flags) {
                Ok(()) => {}
                // The kernel refuses to remove a program held by a bpf_link.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(held_by(None)),
                Err(e) => {
                    return Err(LoadError::Netlink(format!("removing the attached XDP program: {e}")));
                }
            }
        }
        if XDP_OBJECT.is_empty() {
            return Err(LoadError::ProgramNotBuilt);
        }

        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| LoadError::Load(e.to_string()))?;
        let mut cookies = false;
        if syn_cookies {
            match load_program(&mut ebpf, sluice_ebpf::PROGRAM_NAME_COOKIES) {
                Ok(()) => cookies = true,
                Err(e) => tracing::warn!(
                    ifname,
                    error = %e,
                    "the kernel refused the XDP program with SYN cookies (bpf_tcp_raw_gen_syncookie_* needs Linux \
                     6.0+): SYN floods are answered by sluice's own SYN cookies in user space"
                ),
            }
        }
        let name = if cookies { sluice_ebpf::PROGRAM_NAME_COOKIES } else { sluice_ebpf::PROGRAM_NAME };
        if !cookies {
            load_program(&mut ebpf, name)?;
        }
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::Load(format!("no program {name} in the object")))?
            .try_into()
            .map_err(|e: ProgramError| LoadError::Load(e.to_string()))?;
        let loaded = started.elapsed();

        let (attached_mode, xdp_link) = match mode {
            XdpMode::Native => attach_link(program, ifname, link.index, XdpMode::Native)?,
            XdpMode::Skb => attach_link(program, ifname, link.index, XdpMode::Skb)?,
            XdpMode::Auto => match attach_link(program, ifname, link.index, XdpMode::Native) {
                Ok(attached) => attached,
                Err(e) => {
                    tracing::info!(ifname, error = %e, "native XDP refused; falling back to skb mode");
                    attach_link(program, ifname, link.index, XdpMode::Skb)?
                }
            },
        };
        let prog_id = program.info().map_err(|e| LoadError::Load(e.to_string()))?.id();

        let maps = Maps::take(&mut ebpf)?;
        tracing::debug!(
            ifname,
            mode = %attached_mode,
            prog_id,
            load_us = loaded.as_micros() as u64,
            load_and_attach_us = started.elapsed().as_micros() as u64,
            "XDP program attached"
        );
        Ok(Attached {
            maps,
            _link: xdp_link,
            _ebpf: ebpf,
            mode: attached_mode,
            ifname: ifname.to_owned(),
            prog_id,
            load_time: started.elapsed(),
            syn_cookies: cookies,
        })
    }
}

/// Loads (verifies) program `name` of the object.
fn load_program(ebpf: &mut Ebpf, name: &str) -> Result<(), LoadError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::Load(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: ProgramError| LoadError::Load(e.to_string()))?;
    program.load().map_err(|e| LoadError::Verify(error_chain(&e)))
}

/// Attaches `program` as a bpf_link and takes the link out of aya's keeping, so that it is
/// ours to drop. aya falls back to the legacy netlink attach when `BPF_LINK_CREATE` says
/// EINVAL; such an attachment would outlive the process, so it is removed again and refused.
fn attach_link(program: &mut Xdp, ifname: &str, ifindex: u32, mode: XdpMode) -> Result<(XdpMode, FdLink), LoadError> {
    let (aya_mode, flags) = match mode {
        XdpMode::Native => (aya::programs::xdp::XdpMode::Driver, XDP_FLAGS_DRV_MODE),
        XdpMode::Skb | XdpMode::Auto => (aya::programs::xdp::XdpMode::Skb, XDP_FLAGS_SKB_MODE),
    };
    let attach_error = |reason: String| LoadError::Attach { ifname: ifname.to_owned(), mode, reason };
    let link_id = program.attach(ifname, aya_mode).map_err(|e| attach_error(error_chain(&e)))?;
    let link = program.take_link(link_id).map_err(|e| attach_error(error_chain(&e)))?;
    match FdLink::try_from(link) {
        Ok(fd_link) => Ok((mode, fd_link)),
        Err(_) => {
            // The conversion dropped a netlink "link" without detaching it: detach it here.
            if let Err(e) = detach_legacy(ifindex, flags) {
                tracing::warn!(ifname, error = %e, "removing a legacy XDP attachment failed");
            }
            Err(LoadError::NotALink(ifname.to_owned()))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    // Verifier logs are multi-line; keep the reason on one line.
    s.replace('\n', " | ")
}

/// The id of the XDP bpf_link holding program `prog_id`, if any.
fn xdp_link_of_program(prog_id: u32) -> Option<u32> {
    loaded_links()
        .filter_map(Result::ok)
        .find(|info| info.program_id() == prog_id && matches!(info.link_type(), Ok(LinkType::Xdp)))
        .map(|info| info.id())
}
