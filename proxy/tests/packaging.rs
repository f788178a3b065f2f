//! Packaging: the systemd unit in `configs/` is valid for systemd, reloads with SIGHUP and runs
//! the configuration check first; the example configuration passes `sluice check-config`.

use anyhow::{Context, Result, ensure};

const UNIT: &str = include_str!("../../configs/sluice.service");

#[test]
fn systemd_unit_verifies_and_reloads_with_sighup() -> Result<()> {
    for line in ["ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM", "Restart=on-failure"] {
        ensure!(UNIT.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // `systemd-analyze verify` checks every directive; point it at the built binary.
    let dir = std::env::temp_dir().join(format!("sluice-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let unit = dir.join("sluice.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/sluice", env!("CARGO_BIN_EXE_sluice")))?;
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", unit.to_str().context("path")?])
        .output()
        .context("running systemd-analyze (package systemd)")?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify: {text}");
    Ok(())
}

#[test]
fn shipped_configurations_pass_check_config() -> Result<()> {
    for f in ["example.toml", "netns.toml"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/").to_owned() + f;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(["check-config", &path]).output()?;
        ensure!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A user that does not exist is caught before anything is attached.
    let bad = std::env::temp_dir().join(format!("sluice-baduser-{}.toml", std::process::id()));
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/example.toml"))?;
    std::fs::write(&bad, example.replace("user = \"nobody\"", "user = \"no-such-user-sluice\""))?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", bad.to_str().context("path")?])
        .output()?;
    let _ = std::fs::remove_file(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("process.user") && err.contains("no-such-user-sluice"), "{err}");
    Ok(())
}
