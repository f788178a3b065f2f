//! Fuzz target: TCP segments and options. The body is `sluice_wire::fuzz::tcp`, which the proptests of
//! sluice-wire also run on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_wire::fuzz::tcp(data);
});
