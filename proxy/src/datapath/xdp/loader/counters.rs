//! [`XdpCounters`]: the XDP program's outcome counters (one per [`sluice_ebpf::Counter`]),
//! summed over CPUs; [`super::Attached::counters`] reads them from the program's map.

use sluice_ebpf::Counter;

/// Outcome counters of the XDP program, summed over CPUs (see [`sluice_ebpf::Counter`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct XdpCounters {
    pub redirected: u64,
    pub redirect_failed: u64,
    pub redirected_backend: u64,
    pub redirected_icmp_ptb: u64,
    pub pass_arp: u64,
    pub pass_other_ethertype: u64,
    pub pass_icmp: u64,
    pub pass_icmpv6: u64,
    pub pass_udp: u64,
    pub pass_other_protocol: u64,
    pub pass_fragment: u64,
    pub pass_no_listener: u64,
    pub pass_draining: u64,
    pub pass_ipv6_extension_limit: u64,
    pub pass_truncated_ethernet: u64,
    pub pass_truncated_ipv4: u64,
    pub pass_malformed_ipv4: u64,
    pub pass_truncated_ipv6: u64,
    pub pass_malformed_ipv6: u64,
    pub pass_truncated_tcp: u64,
    pub pass_malformed_tcp: u64,
    pub syn_cookies_sent: u64,
    pub syn_cookies_validated: u64,
    pub syn_cookies_failed: u64,
    pub syn_cookies_skipped: u64,
    pub syn_cookies_dropped: u64,
}

impl XdpCounters {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        match counter {
            Counter::Redirected => self.redirected,
            Counter::RedirectFailed => self.redirect_failed,
            Counter::RedirectedBackend => self.redirected_backend,
            Counter::RedirectedIcmpPtb => self.redirected_icmp_ptb,
            Counter::PassArp => self.pass_arp,
            Counter::PassOtherEthertype => self.pass_other_ethertype,
            Counter::PassIcmp => self.pass_icmp,
            Counter::PassIcmpv6 => self.pass_icmpv6,
            Counter::PassUdp => self.pass_udp,
            Counter::PassOtherProtocol => self.pass_other_protocol,
            Counter::PassFragment => self.pass_fragment,
            Counter::PassNoListener => self.pass_no_listener,
            Counter::PassDraining => self.pass_draining,
            Counter::PassIpv6ExtensionLimit => self.pass_ipv6_extension_limit,
            Counter::PassTruncatedEthernet => self.pass_truncated_ethernet,
            Counter::PassTruncatedIpv4 => self.pass_truncated_ipv4,
            Counter::PassMalformedIpv4 => self.pass_malformed_ipv4,
            Counter::PassTruncatedIpv6 => self.pass_truncated_ipv6,
            Counter::PassMalformedIpv6 => self.pass_malformed_ipv6,
            Counter::PassTruncatedTcp => self.pass_truncated_tcp,
            Counter::PassMalformedTcp => self.pass_malformed_tcp,
            Counter::SynCookieSent => self.syn_cookies_sent,
            Counter::SynCookieValidated => self.syn_cookies_validated,
            Counter::SynCookieFailed => self.syn_cookies_failed,
            Counter::SynCookieSkipped => self.syn_cookies_skipped,
            Counter::SynCookieDropped => self.syn_cookies_dropped,
        }
    }

    pub(super) fn slot(&mut self, counter: Counter) -> &mut u64 {
        match counter {
            Counter::Redirected => &mut self.redirected,
            Counter::RedirectFailed => &mut self.redirect_failed,
            Counter::RedirectedBackend => &mut self.redirected_backend,
            Counter::RedirectedIcmpPtb => &mut self.redirected_icmp_ptb,
            Counter::PassArp => &mut self.pass_arp,
            Counter::PassOtherEthertype => &mut self.pass_other_ethertype,
            Counter::PassIcmp => &mut self.pass_icmp,
            Counter::PassIcmpv6 => &mut self.pass_icmpv6,
            Counter::PassUdp => &mut self.pass_udp,
            Counter::PassOtherProtocol => &mut self.pass_other_protocol,
            Counter::PassFragment => &mut self.pass_fragment,
            Counter::PassNoListener => &mut self.pass_no_listener,
            Counter::PassDraining => &mut self.pass_draining,
            Counter::PassIpv6ExtensionLimit => &mut self.pass_ipv6_extension_limit,
            Counter::PassTruncatedEthernet => &mut self.pass_truncated_ethernet,
            Counter::PassTruncatedIpv4 => &mut self.pass_truncated_ipv4,
            Counter::PassMalformedIpv4 => &mut self.pass_malformed_ipv4,
            Counter::PassTruncatedIpv6 => &mut self.pass_truncated_ipv6,
            Counter::PassMalformedIpv6 => &mut self.pass_malformed_ipv6,
            Counter::PassTruncatedTcp => &mut self.pass_truncated_tcp,
            Counter::PassMalformedTcp => &mut self.pass_malformed_tcp,
            Counter::SynCookieSent => &mut self.syn_cookies_sent,
            Counter::SynCookieValidated => &mut self.syn_cookies_validated,
            Counter::SynCookieFailed => &mut self.syn_cookies_failed,
            Counter::SynCookieSkipped => &mut self.syn_cookies_skipped,
            Counter::SynCookieDropped => &mut self.syn_cookies_dropped,
        }
    }

    /// Every counter with its stable name, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c.name(), self.get(c)))
    }

    /// Frames passed because a header was truncated or malformed (every `pass_truncated_*` and
    /// `pass_malformed_*` counter together, see [`Counter::is_malformed`]).
    pub fn pass_malformed(&self) -> u64 {
        Counter::ALL.iter().filter(|c| c.is_malformed()).map(|&c| self.get(c)).sum()
    }

    /// The counts since `earlier` (a snapshot of the same program), counter by counter.
    pub fn since(&self, earlier: &XdpCounters) -> XdpCounters {
        let mut d = XdpCounters::default();
        for c in Counter::ALL {
            *d.slot(c) = self.get(c).wrapping_sub(earlier.get(c));
        }
        d
    }

    /// All frames the program saw.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, v)| v).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_map_names_to_fields() {
        let mut c = XdpCounters::default();
        for (i, counter) in Counter::ALL.iter().enumerate() {
            *c.slot(*counter) = i as u64 + 1;
        }
        for (i, (name, value)) in c.iter().enumerate() {
            assert_eq!(value, i as u64 + 1, "{name}");
            assert_eq!(name, Counter::ALL[i].name());
        }
        // serde field names are the counter names.
        let json = serde_json::to_value(c).unwrap();
        for (name, value) in c.iter() {
            assert_eq!(json[name].as_u64(), Some(value), "{name}");
        }
        assert_eq!(c.total(), (1..=Counter::COUNT as u64).sum::<u64>());
        let malformed =
            ["pass_truncated_ethernet", "pass_truncated_ipv4", "pass_malformed_ipv4", "pass_truncated_ipv6"];
        let malformed = malformed.iter().chain(&["pass_malformed_ipv6", "pass_truncated_tcp", "pass_malformed_tcp"]);
        let want: u64 = malformed.map(|n| c.iter().find(|(name, _)| name == n).unwrap().1).sum();
        assert_eq!(c.pass_malformed(), want);
        assert!(want > 0);
    }
}
