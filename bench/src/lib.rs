//! `sluice-bench` as a library: the parts that the benchmark programs, and tests of other
//! crates, call directly. The proxy's load test runs [`load::run`] in the client namespace and
//! checks its counts against sluice's own. [`probe`] reads /proc and [`admin`] sluice's
//! `/stats.json` for every benchmark program.
#![forbid(unsafe_code)]

pub mod admin;
pub mod load;
pub mod plot;
pub mod probe;
