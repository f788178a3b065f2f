//! Dropping privileges once sluice is set up.
//!
//! Root (or a set of capabilities) is needed to attach the XDP program (CAP_NET_ADMIN, CAP_BPF,
//! CAP_PERFMON, or CAP_SYS_ADMIN on older kernels), to open AF_XDP sockets (CAP_NET_RAW), to lock
//! UMEM memory (CAP_IPC_LOCK) and to read private keys that only root may read. None of it is
//! needed afterwards: the rings are mapped, the BPF maps are reached through descriptors sluice
//! already holds (map updates through a held descriptor need no capability since Linux 6.5),
//! and the XDP program goes away with its bpf_link when the process ends. So sluice switches
//! to an unprivileged user and keeps only what is still needed:
//!
//! - XDP transport: nothing.
//! - kernel transport: CAP_NET_BIND_SERVICE, so that a reload can add a listener on a port
//!   below 1024.
//!
//! Order (capabilities(7)): drop every other capability from the bounding set (needs
//! CAP_SETPCAP, so before the switch), keep the permitted set across `setuid` with
//! PR_SET_KEEPCAPS, switch groups, gid and uid (glibc applies them to every thread), then set
//! the permitted and effective sets to exactly what is kept, clear the inheritable and ambient
//! sets and set no_new_privs.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use caps::{CapSet, Capability};
use nix::unistd::{Gid, Group, Uid, User};

/// Who sluice runs as after the switch, and what it kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub kept: Vec<Capability>,
}

fn resolve_user(user: &str) -> Result<(Uid, Gid, String)> {
    let found = match user.parse::<u32>() {
        Ok(id) => User::from_uid(Uid::from_raw(id)),
        Err(_) => User::from_name(user),
    }
    .with_context(|| format!("process.user: looking up {user:?}"))?;
    match found {
        Some(u) => Ok((u.uid, u.gid, u.name)),
        None => match user.parse::<u32>() {
            // A numeric id without a passwd entry is allowed (containers); its group is itself.
            Ok(id) => Ok((Uid::from_raw(id), Gid::from_raw(id), user.to_owned())),
            Err(_) => bail!("process.user: no such user {user:?}"),
        },
    }
}

/// `user` resolved, refused if it is root: switching to root would drop nothing while the
/// configuration says privileges are dropped.
fn unprivileged_user(user: &str) -> Result<(Uid, Gid, String)> {
    let (uid, gid, name) = resolve_user(user)?;
    if uid.is_root() {
        bail!(
            "process.user = {user:?} is root (uid 0): sluice would keep every privilege of root; name an unprivileged \
             user (e.g. \"nobody\" or a system user made for sluice), or leave process.user unset to keep running as started"
        );
    }
    Ok((uid, gid, name))
}

fn resolve_group(group: &str) -> Result<Gid> {
    if let Ok(id) = group.parse::<u32>() {
        return Ok(Gid::from_raw(id));
    }
    match Group::from_name(group).with_context(|| format!("process.group: looking up {group:?}"))? {
        Some(g) => Ok(g.gid),
        None => bail!("process.group: no such group {group:?}"),
    }
}

/// Checks that `user` and `group` exist (for `check-config` and before anything is set up).
pub fn check(user: &str, group: Option<&str>) -> Result<()> {
    unprivileged_user(user)?;
    if let Some(g) = group {
        resolve_group(g)?;
    }
    Ok(())
}

/// Switches the whole process to `user` (and `group`, default the user's primary group),
/// keeping only the capabilities in `keep`. Verifies the result before returning.
pub fn drop_to(user: &str, group: Option<&str>, keep: &[Capability]) -> Result<Dropped> {
    let (uid, user_gid, name) = unprivileged_user(user)?;
    let gid = match group {
        Some(g) => resolve_group(g)?,
        None => user_gid,
    };
    let keep_set: HashSet<Capability> = keep.iter().copied().collect();
    for cap in caps::all() {
        if !keep_set.contains(&cap) {
            // EINVAL for capabilities this kernel does not know: nothing to drop.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    nix::sys::prctl::set_keepcaps(!keep.is_empty()).context("PR_SET_KEEPCAPS")?;
    nix::unistd::setgroups(&[gid]).context("setgroups")?;
    nix::unistd::setgid(gid).with_context(|| format!("setgid({gid})"))?;
    nix::unistd::setuid(uid).with_context(|| format!("setuid({uid})"))?;
    caps::set(None, CapSet::Permitted, &keep_set).context("setting the permitted capabilities")?;
    caps::set(None, CapSet::Effective, &keep_set).context("setting the effective capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable capabilities")?;
    let _ = caps::clear(None, CapSet::Ambient);
    nix::sys::prctl::set_keepcaps(false).context("PR_SET_KEEPCAPS")?;
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    // Verify: a failed switch must not go unnoticed.
    let effective = caps::read(None, CapSet::Effective).context("reading capabilities")?;
    if Uid::current() != uid || Uid::effective() != uid || Gid::effective() != gid || effective != keep_set {
        bail!("privilege switch to {name} did not take effect (uid {}, caps {effective:?})", Uid::effective());
    }
    let mut kept: Vec<_> = keep_set.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Dropped { user: name, uid: uid.as_raw(), gid: gid.as_raw(), kept })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_by_name_and_number() {
        assert_eq!(resolve_user("root").unwrap().0, Uid::from_raw(0));
        assert_eq!(resolve_user("0").unwrap().2, "root");
        assert_eq!(resolve_user("4000000").unwrap().1, Gid::from_raw(4_000_000), "numeric without passwd entry");
        let e = resolve_user("no-such-user-sluice").unwrap_err().to_string();
        assert!(e.contains("no such user"), "{e}");
        assert_eq!(resolve_group("0").unwrap(), Gid::from_raw(0));
        assert!(resolve_group("no-such-group-sluice").is_err());
        assert!(check("nobody", None).is_ok());
        for root in ["root", "0"] {
            let e = check(root, None).unwrap_err().to_string();
            assert!(e.contains("is root (uid 0)"), "{e}");
        }
    }
}
