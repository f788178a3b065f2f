//! sluice: a TLS terminator that bypasses the kernel's TCP stack.
#![forbid(unsafe_code)]
