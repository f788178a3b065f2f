//! Builds sluice's XDP program (crate `sluice-ebpf`, binary `sluice-xdp`) for
//! `bpfel-unknown-none` with aya-build, on the stable toolchain, and leaves the
//! object at `$OUT_DIR/sluice-xdp` for `datapath/xdp/loader` to embed.
//!
//! `-Z build-std=core` on stable needs `RUSTC_BOOTSTRAP=1` in the nested cargo
//! (aya-build reads the variable from this process's environment to decide on
//! the flag). Setting it workspace-wide would change how every host crate
//! builds, and mutating our own environment is `unsafe` in edition 2024, so
//! this script re-runs itself as a child process with `RUSTC_BOOTSTRAP=1` set
//! for that child only: the child calls aya-build, the nested cargo inherits
//! the variable, and nothing else sees it. Its `cargo:` directives are forwarded
//! to cargo, less the nested build's progress lines.
//!
//! Rebuilds: aya-build emits `rerun-if-changed=<ebpf dir>` (cargo scans it
//! recursively), so the nested build reruns only when ebpf/ changes (or this
//! script, or `AYA_BUILD_SKIP`). The nested build keeps its own target dir
//! under `$OUT_DIR`, so a rerun is incremental.
//!
//! `AYA_BUILD_SKIP=1` skips the nested build (e.g. a quick clippy run on a
//! machine without bpf-linker): an empty object is written instead and the
//! loader refuses with `LoadError::ProgramNotBuilt`.

use std::{
    env, fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio, exit},
};

const CHILD_MARK: &str = "SLUICE_EBPF_BUILD_CHILD";
const OBJECT: &str = "sluice-xdp";

fn main() {
    if env::var_os(CHILD_MARK).is_none() {
        exit(run_child());
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest_dir.parent().expect("proxy/ has a parent").join("ebpf");
    let ebpf_dir = ebpf_dir.to_str().expect("UTF-8 path to ebpf/");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let object = out_dir.join(OBJECT);

    if skip_requested() {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        println!("cargo:warning=AYA_BUILD_SKIP set: sluice-xdp not built, the loader will refuse");
        fs::write(&object, b"").expect("write empty placeholder object");
        return;
    }
    if !on_path("bpf-linker") {
        panic!(
            "bpf-linker not found on PATH: install it with \
             `cargo install bpf-linker@0.10.4 --locked` (and `rustup component add rust-src`)"
        );
    }

    // Build with the toolchain that builds us (rustup sets RUSTUP_TOOLCHAIN).
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    let package = aya_build::Package { name: "sluice-ebpf", root_dir: ebpf_dir, ..Default::default() };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)) {
        panic!("building the XDP program (sluice-ebpf) failed: {e:#}");
    }
    assert!(object.is_file(), "aya-build finished but {} is missing", object.display());
}

/// Re-runs this script with `RUSTC_BOOTSTRAP=1`, forwards its `cargo:` directives, and drops
/// the nested cargo's progress lines ("Compiling ...", "Finished ...") that aya-build turns into
/// `cargo:warning`s: cargo would replay them on every later build of this crate.
fn run_child() -> i32 {
    let exe = env::current_exe().expect("build script path");
    let mut child = Command::new(exe)
        .env(CHILD_MARK, "1")
        .env("RUSTC_BOOTSTRAP", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("re-run build script with RUSTC_BOOTSTRAP=1");
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("build script output");
        if let Some(text) = line.strip_prefix("cargo:warning=") {
            let text = text.trim_start();
            if ["Compiling ", "Finished ", "Fresh ", "Blocking "].iter().any(|p| text.starts_with(p)) {
                continue;
            }
        }
        println!("{line}");
    }
    child.wait().expect("wait for the build script child").code().unwrap_or(1)
}

fn skip_requested() -> bool {
    matches!(env::var("AYA_BUILD_SKIP").as_deref(), Ok("1") | Ok("true") | Ok("TRUE"))
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH").map(|paths| env::split_paths(&paths).any(|dir| is_file(&dir.join(program)))).unwrap_or(false)
}

fn is_file(p: &Path) -> bool {
    p.is_file()
}
