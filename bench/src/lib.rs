//! `sluice-bench` as a library: the parts that tests of other crates call directly. The
//! proxy's load test runs [`load::run`] in the client namespace and checks its counts against
//! sluice's own. [`probe`] reads /proc for every benchmark program.
#![forbid(unsafe_code)]

pub mod load;
pub mod plot;
pub mod probe;
