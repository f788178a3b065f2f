//! Fuzz target: ICMP path-MTU messages (fragmentation needed, Packet Too Big). The body is
//! `sluice_wire::fuzz::icmp`, which the proptests of sluice-wire also run on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_wire::fuzz::icmp(data);
});
