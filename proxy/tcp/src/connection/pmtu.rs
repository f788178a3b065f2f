//! Path MTU discovery on the sending side (RFC 1191 for IPv4, RFC 8201 for IPv6): a
//! fragmentation-needed or Packet Too Big message that quotes one of our segments lowers this
//! connection's segment size, after the checks RFC 5927 asks of a TCP (section 4.1: the quoted
//! sequence number must be in flight), and the segments the smaller link dropped are sent
//! again at the new size.
//!
//! What this is not: parsing the ICMP message (`sluice_wire::icmp`), finding the connection
//! (`Endpoint::path_mtu`), raising the MTU again (RFC 1191 6.3's periodic probe is not done: a
//! connection keeps its lowered size).

use super::Connection;
use crate::config::PathMtuIgnored;
use crate::seq::SeqNumber;

impl Connection {
    /// A path MTU of `mtu` bytes reported by a message quoting sequence number `seq`.
    pub(crate) fn path_mtu(&mut self, mtu: usize, seq: u32) -> Result<(), PathMtuIgnored> {
        if !self.state.may_send() {
            return Err(PathMtuIgnored::NotInFlight);
        }
        // RFC 5927 4.1: accept only if SND.UNA <= seq < SND.NXT. SND.MAX stands for SND.NXT
        // here: after a timeout SND.NXT moves back, but what lies below SND.MAX was sent.
        let seq = SeqNumber(seq);
        if seq < self.snd.snd_una || seq >= self.snd.snd_max {
            return Err(PathMtuIgnored::NotInFlight);
        }
        if !self.opts.lower_to_path_mtu(mtu) {
            return Err(PathMtuIgnored::NotSmaller);
        }
        let smss = self.opts.data_mss();
        self.recovery.on_path_mtu(smss, self.snd.snd_una, self.snd.snd_max);
        // Resend from SND.UNA at the new size (RFC 1191 6.5 / Linux's tcp_simple_retransmit):
        // the segments in flight were full-sized and were dropped. Karn: no RTT sample from
        // them.
        self.snd.snd_nxt = self.snd.snd_una;
        self.timers.rtt_probe = None;
        Ok(())
    }
}
