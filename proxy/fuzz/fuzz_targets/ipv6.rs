//! Fuzz target: IPv6 packets and their extension headers. The body is
//! `sluice_wire::fuzz::ipv6`, which the proptests of sluice-wire also run on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_wire::fuzz::ipv6(data);
});
