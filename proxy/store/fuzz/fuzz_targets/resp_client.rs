//! Fuzz target: the body is `sluice_store::fuzz::resp_client`, which the proptests of sluice-store
//! also run on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_store::fuzz::resp_client(data);
});
