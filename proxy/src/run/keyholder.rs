//! Privilege separation for reloads: the keyholder reads certificates and keys on SIGHUP.
//!
//! Operators keep private keys as root's 0600 files (certbot does). sluice reads them at start
//! while it is still root, then drops to `process.user` with no capability, so on its own it could
//! not read them again for a reload. nginx and HAProxy keep a privileged master for that; sluice
//! keeps something smaller: a second process, started before the drop from sluice's own binary
//! (`sluice keyholder --config FILE`, with one end of a socket pair as its standard input).
//!
//! What each side can do:
//! - The keyholder switches to the same user and keeps exactly one capability,
//!   CAP_DAC_READ_SEARCH (read any file, write none, bound nothing, attach nothing), with
//!   no_new_privs and a bounding set of that capability alone. It reads only the configuration
//!   file it was started with and the certificate, key and CA files that file names, and answers
//!   one request: "read it all again". The unprivileged side cannot name a path.
//! - The serving process (workers, admin endpoint, stats) runs with no capability at all. A
//!   compromise of it gains at most the current configuration's certificates and keys, which it
//!   already holds in memory.
//! - The keyholder dies with sluice (PR_SET_PDEATHSIG, and the closed socket).
//!
//! Wire format on the socket: a request is one byte (`R`); the answer is a 4-byte big-endian
//! length and that many bytes of JSON ([`Bundle`]). Answers are bounded ([`MAX_ANSWER`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::config::Config;

/// The largest answer either side accepts: certificates and keys, not bulk data.
pub const MAX_ANSWER: usize = 64 << 20;
/// How long a reload waits for the keyholder's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST: u8 = b'R';

/// The configuration file's text and every file it names, as the keyholder read them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    /// The configuration file's text, or why it could not be read.
    pub config: Result<String, String>,
    /// Each certificate, key and CA file the configuration names: its bytes or the read error.
    pub files: HashMap<PathBuf, Result<Vec<u8>, String>>,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for content in self.files.values_mut().filter_map(|r| r.as_mut().ok()) {
            content.zeroize();
        }
    }
}

impl sluice_tls::FileSource for Bundle {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self.files.get(path) {
            Some(Ok(bytes)) => Ok(bytes.clone()),
            Some(Err(why)) => Err(std::io::Error::other(format!("{why} (read by the keyholder)"))),
            None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not read by the keyholder")),
        }
    }
}

impl Bundle {
    /// Reads `config_path` and the files its TLS listeners name. Never fails: what cannot be
    /// read is recorded as the error, for the serving side to report.
    pub fn read(config_path: &Path) -> Self {
        let text = match std::fs::read_to_string(config_path) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("{}: cannot read: {e}", config_path.display());
                return Self { config: Err(why), files: HashMap::new() };
            }
        };
        let mut files = HashMap::new();
        // A configuration that does not parse is reported by the serving side, from the text.
        if let Ok(config) = Config::parse(config_path, &text) {
            let dir = config_path.parent().unwrap_or(Path::new(""));
            let tls = config.listeners.iter().filter_map(|l| l.tls.as_ref());
            let store = config.session_store.iter().map(|s| dir.join(&s.key_file));
            for path in tls.flat_map(|tls| sluice_tls::files_named(tls, dir)).chain(store) {
                let content = std::fs::read(&path).map_err(|e| e.to_string());
                files.insert(path, content);
            }
        }
        Self { config: Ok(text), files }
    }

    /// The configuration, parsed and validated.
    pub fn parse(&self, config_path: &Path) -> Result<Config> {
        let text = self.config.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Config::parse(config_path, text)?)
    }
}

/// The serving side's handle on the keyholder process.
pub struct Keyholder {
    stream: UnixStream,
    child: Child,
}

impl Keyholder {
    /// Starts `sluice keyholder --config <config_path>` from this process's own binary. Call it
    /// while still privileged: the keyholder drops to `user`/`group` itself, keeping
    /// CAP_DAC_READ_SEARCH.
    pub fn spawn(config_path: &Path) -> Result<Self> {
        let (ours, theirs) = UnixStream::pair().context("keyholder: socket pair")?;
        let theirs = theirs.as_fd().try_clone_to_owned().context("keyholder: duplicating the socket")?;
        let child = Command::new("/proc/self/exe")
            .arg("keyholder")
            .arg("--config")
            .arg(config_path)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .spawn()
            .context("starting the keyholder process")?;
        ours.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        ours.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Self { stream: ours, child })
    }

    /// The keyholder's process id (for tests and the log).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the keyholder to read the configuration and its files again.
    pub fn read(&mut self) -> Result<Bundle> {
        self.stream.write_all(&[REQUEST]).context("keyholder: sending the request (is it still running?)")?;
        let mut answer = read_frame(&mut self.stream).context("keyholder: reading the answer")?;
        let bundle = serde_json::from_slice(&answer).context("keyholder: a malformed answer");
        answer.zeroize();
        bundle
    }
}

impl Drop for Keyholder {
    fn drop(&mut self) {
        // Closing our end ends the keyholder's loop; give it a moment, then stop it by its pid.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_frame(stream: &mut impl Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_ANSWER {
        bail!("answer of {len} bytes is over the limit of {MAX_ANSWER}");
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_frame(stream: &mut impl Write, bytes: &[u8]) -> Result<()> {
    if bytes.len() > MAX_ANSWER {
        bail!("answer of {} bytes is over the limit of {MAX_ANSWER}", bytes.len());
    }
    stream.write_all(&(bytes.len() as u32).to_be_bytes())?;
    stream.write_all(bytes)?;
    Ok(())
}

/// The keyholder process (`sluice keyholder --config FILE`): drops to the configured user with
/// CAP_DAC_READ_SEARCH only, then answers requests on its standard input until it closes.
pub fn serve(config_path: &Path) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    let config = Config::load(config_path)?;
    let Some(user) = &config.process.user else {
        bail!("keyholder: process.user is not set; there is nothing to separate");
    };
    let keep = [caps::Capability::CAP_DAC_READ_SEARCH];
    let dropped = super::privileges::drop_to(user, config.process.group.as_deref(), &keep)?;
    tracing::info!(user = %dropped.user, kept = ?dropped.kept, "keyholder ready");
    let mut stream = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut request = [0u8; 1];
    loop {
        match stream.read(&mut request) {
            Ok(0) => return Ok(()),
            Ok(_) if request[0] == REQUEST => {
                let bundle = Bundle::read(config_path);
                let mut answer = serde_json::to_vec(&bundle)?;
                let sent = write_frame(&mut stream, &answer);
                answer.zeroize();
                sent?;
            }
            Ok(_) => bail!("keyholder: unknown request {:#04x}", request[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("keyholder: reading a request"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_tls::FileSource;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), b"hello");
        let too_long = ((MAX_ANSWER + 1) as u32).to_be_bytes();
        assert!(read_frame(&mut too_long.as_slice()).unwrap_err().to_string().contains("over the limit"));
        assert!(read_frame(&mut [0u8, 0, 0, 9, 1].as_slice()).is_err(), "a short frame is an error");
    }

    #[test]
    fn a_bundle_reads_the_files_its_configuration_names_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("sluice-keyholder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certs = sluice_tls::testcerts::generate(&dir, &["a.test"]).unwrap();
        let leaf = &certs.leaves[0];
        let config = format!(
            "[datapath]\ntransport = \"kernel\"\n\n[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:80\"\n\
             [listener.tls]\ncertificates = [{{ cert = {:?}, key = {:?} }}]\n",
            leaf.ecdsa_cert, leaf.ecdsa_key
        );
        let path = dir.join("sluice.toml");
        std::fs::write(&path, &config).unwrap();
        let bundle = Bundle::read(&path);
        assert_eq!(bundle.config.as_deref(), Ok(config.as_str()));
        assert_eq!(bundle.files.len(), 2, "{:?}", bundle.files.keys());
        assert_eq!(bundle.read(&leaf.ecdsa_key).unwrap(), std::fs::read(&leaf.ecdsa_key).unwrap());
        let other = bundle.read(Path::new("/etc/passwd")).unwrap_err();
        assert_eq!(other.kind(), std::io::ErrorKind::NotFound);
        assert!(bundle.parse(&path).is_ok());
        // A named file that cannot be read is reported with its path's error.
        std::fs::remove_file(&leaf.ecdsa_key).unwrap();
        let bundle = Bundle::read(&path);
        assert!(bundle.read(&leaf.ecdsa_key).unwrap_err().to_string().contains("keyholder"));
        // Ticket key files are read too (and only those the configuration names).
        std::fs::write(dir.join("ticket.key"), [5u8; 80]).unwrap();
        std::fs::write(&path, format!("{config}resumption = \"tickets\"\nticket_key_files = [\"ticket.key\"]\n"))
            .unwrap();
        let bundle = Bundle::read(&path);
        assert_eq!(bundle.files.len(), 3, "{:?}", bundle.files.keys());
        assert_eq!(bundle.read(&dir.join("ticket.key")).unwrap(), [5u8; 80]);
        let missing = Bundle::read(&dir.join("nope.toml"));
        assert!(missing.parse(&dir.join("nope.toml")).unwrap_err().to_string().contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
