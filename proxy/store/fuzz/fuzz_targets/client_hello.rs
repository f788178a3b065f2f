//! Fuzz target: the body is `sluice_store::fuzz::client_hello`, which the proptests of sluice-store
//! also run on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_store::fuzz::client_hello(data);
});
