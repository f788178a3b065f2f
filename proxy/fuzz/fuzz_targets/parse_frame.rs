//! Fuzz target: Ethernet + IPv4 + TCP frames (parse_frame, rst_reply, emit_frame,
//! emit_ipv4_tcp_in_place). The body is `sluice_wire::fuzz::parse_any`, which the proptests
//! of sluice-wire also run on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_wire::fuzz::parse_any(data);
});
