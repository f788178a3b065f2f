//! Any sequence of segments, timer runs and application calls into a `sluice_tcp::Endpoint`
//! never panics and keeps its invariants. Run: `cargo +nightly fuzz run endpoint` in proxy/tcp.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_tcp::fuzz::endpoint(data);
});
