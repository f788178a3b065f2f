//! Fuzz target: Ethernet II headers. The body is `sluice_wire::fuzz::ethernet`, which the proptests of
//! sluice-wire also run on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_wire::fuzz::ethernet(data);
});
