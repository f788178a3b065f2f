//! Packaging: the systemd unit in `configs/` is valid for systemd, reloads with SIGHUP and runs
//! the configuration check first; the shipped configurations pass `sluice check-config`, which
//! refuses what a start would refuse.

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

/// A copy of the shipped configuration `name` in `dir/cfg/`, with a certificate and key written
/// at every path its TLS listeners name (relative paths resolve from the copy's directory).
fn with_certificates(name: &str, dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let cfg = dir.join("cfg");
    std::fs::create_dir_all(&cfg)?;
    let copy = cfg.join(name);
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/").to_owned() + name, &copy)?;
    let config = sluice::config::Config::load(&copy)?;
    let ca = sluice_tls::testcerts::Ca::new()?;
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for c in &tls.certificates {
            let names: Vec<&str> = c.sni.iter().map(|n| n.trim_start_matches("*.")).collect();
            let leaf = ca.server(&names, sluice_tls::testcerts::KeyKind::EcdsaP256)?;
            for (path, pem) in [(&c.cert, &leaf.cert_pem), (&c.key, &leaf.key_pem)] {
                let path = cfg.join(path);
                std::fs::create_dir_all(path.parent().context("a file path has a parent")?)?;
                std::fs::write(path, pem)?;
            }
        }
    }
    Ok(copy)
}

fn check_config(path: &std::path::Path) -> Result<(bool, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", path.to_str().context("path")?])
        .output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// `check-config` validates what a start validates: the file, the user, and every listener's
/// certificates and keys.
#[test]
fn shipped_configurations_pass_check_config() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sluice-check-config-{}", std::process::id()));
    let result = (|| -> Result<()> {
        for f in ["example.toml", "netns.toml"] {
            let path = with_certificates(f, &dir)?;
            let (ok, err) = check_config(&path)?;
            ensure!(ok, "{f}: {err}");
        }
        let example = std::fs::read_to_string(dir.join("cfg/example.toml"))?;
        let example = example.replace("resumption = \"session_id\"", "resumption = \"tickets\"");
        std::fs::create_dir_all(dir.join("cfg/keys"))?;
        std::fs::write(dir.join("cfg/keys/ticket.key"), [7u8; 47])?;
        let bad = dir.join("cfg/bad.toml");
        for (change, want) in [
            // A user that does not exist, and root, are caught before anything is attached.
            (("user = \"nobody\"", "user = \"no-such-user-sluice\""), vec!["process.user", "no-such-user-sluice"]),
            (("user = \"nobody\"", "user = \"root\""), vec!["process.user", "is root"]),
            // A key that is not there, named with its field and path.
            (("certs/example.key", "certs/missing.key"), vec!["certificates[0].key", "missing.key"]),
            // A ticket key file of the wrong size, named with its field and path.
            (
                ("# ticket_key_files = [\"keys/ticket.key\"]", "ticket_key_files = [\"keys/ticket.key\"]"),
                vec!["ticket_key_files[0]", "keys/ticket.key", "47 bytes"],
            ),
        ] {
            std::fs::write(&bad, example.replace(change.0, change.1))?;
            let (ok, err) = check_config(&bad)?;
            ensure!(!ok && want.iter().all(|w| err.contains(w)), "{change:?}: {err}");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
