//! The privileges attaching needs: CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN, read from the
//! effective capabilities in `/proc/self/status` before anything is loaded.

use super::error::LoadError;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

pub(super) fn check_privileges() -> Result<(), LoadError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| LoadError::Capabilities(e.to_string()))?;
    let caps = parse_cap_eff(&status).ok_or_else(|| LoadError::Capabilities("no CapEff line".into()))?;
    if caps_allow_xdp(caps) { Ok(()) } else { Err(LoadError::NotPrivileged(caps)) }
}

/// The `CapEff:` bit mask of a `/proc/<pid>/status` text.
fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Loading a networking BPF program and attaching it needs CAP_BPF + CAP_NET_ADMIN, or
/// CAP_SYS_ADMIN (which implies both for BPF since Linux 5.8).
fn caps_allow_xdp(caps: u64) -> bool {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_and_judged() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
        let caps = parse_cap_eff(status).unwrap();
        assert_eq!(caps, 0x1ff_ffff_ffff);
        assert!(caps_allow_xdp(caps));
        assert!(!caps_allow_xdp(0));
        assert!(!caps_allow_xdp(1 << CAP_BPF), "CAP_BPF alone cannot attach to a netdev");
        assert!(!caps_allow_xdp(1 << CAP_NET_ADMIN));
        assert!(caps_allow_xdp((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)));
        assert!(caps_allow_xdp(1 << CAP_SYS_ADMIN));
        assert_eq!(parse_cap_eff("CapPrm:\t1\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }
}
