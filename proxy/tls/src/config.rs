//! `TlsSettings` (the per-listener `[tls]` table of sluice's TOML) and [`build`], which turns
//! them into a rustls `ServerConfig` on the aws-lc-rs provider.
//!
//! What it is: certificate chains and keys from PEM files (ECDSA and RSA), chosen by SNI
//! (RFC 6066 §3) with a default for clients that send none or an unknown name; ALPN (RFC 7301);
//! TLS 1.2 (RFC 5246) and TLS 1.3 (RFC 8446), each switchable; key-exchange groups and cipher
//! suites by the names rustls prints; optional client-certificate verification (mTLS, required
//! when `client_ca` is set); resumption by session ID / TLS 1.3 stateful tickets through the
//! shared [`SessionCache`], by stateless tickets (RFC 5077, rotating in-process keys, or keys
//! from nginx-format ticket key files shared by a fleet: [`crate::tickets`]), or none.
//!
//! ```toml
//! [listeners.tls]                      # the table sluice's config embeds per listener
//! certificates = [
//!   { cert = "a.ecdsa.pem", key = "a.ecdsa.key", sni = ["a.example"], default = true },
//!   { cert = "a.rsa.pem",   key = "a.rsa.key",   sni = ["a.example"] },
//!   { cert = "b.pem",       key = "b.key",       sni = ["b.example", "*.b.example"] },
//! ]
//! alpn = ["h2", "http/1.1"]
//! tls12 = true
//! tls13 = true
//! groups = ["x25519", "secp256r1"]     # empty: provider defaults
//! cipher_suites = []                   # e.g. "TLS13_AES_128_GCM_SHA256"; empty: defaults
//! # client_ca = "clients-ca.pem"       # mTLS: client certificates required
//! resumption = "session_id"            # or "tickets" or "none"
//! session_cache_entries = 100000
//! session_cache_bytes = 67108864
//! session_lifetime_secs = 7200
//! ticket_rotation_secs = 21600
//! # ticket_key_files = ["ticket.key"]  # resumption = "tickets": keys shared by a fleet
//! ```
//!
//! What it is not: a reloader. Building is done once per (re)load; errors name the field and
//! the file so an operator can fix the TOML without reading code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::aws_lc_rs as provider;
use rustls::crypto::{CryptoProvider, GetRandomFailed};
use rustls::server::{ClientHello, NoServerSessionStorage, ProducesTickets, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use zeroize::Zeroize;

use sluice_store::ticket_keys::TicketKeyError;

use crate::cache::{SessionCache, SessionCacheConfig};
use crate::tickets::{KeyFileTicketer, KeyFilesError};

/// How resumed handshakes are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resumption {
    /// TLS 1.2 session IDs and TLS 1.3 stateful tickets, both through the shared [`SessionCache`].
    #[default]
    SessionId,
    /// Stateless tickets (RFC 5077 for 1.2, RFC 8446 §4.6.1 for 1.3), keys rotated every
    /// `ticket_rotation_secs`, or read from `ticket_key_files`; the session cache is not used.
    Tickets,
    /// No resumption.
    None,
}

/// One certificate chain with its key and the SNI names it serves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSettings {
    /// PEM file: the end-entity certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, SEC1 or PKCS#1; ECDSA, RSA or Ed25519).
    pub key: PathBuf,
    /// Exact names (`a.example`) or one-label wildcards (`*.example`), matched case-insensitively.
    #[serde(default)]
    pub sni: Vec<String>,
    /// Serve this chain to clients without SNI or with an unknown name. At most one entry may set
    /// it; when none does, the first entry is the default. Entries with exactly the same `sni`
    /// list as the default entry are defaults too (an ECDSA + RSA pair), picked by the client's
    /// signature schemes.
    #[serde(default)]
    pub default: bool,
}

/// The per-listener TLS settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Certificate chains; at least one.
    pub certificates: Vec<CertSettings>,
    /// ALPN protocols in server preference order, e.g. `["h2", "http/1.1"]`; empty = no ALPN.
    pub alpn: Vec<String>,
    /// Offer TLS 1.2.
    pub tls12: bool,
    /// Offer TLS 1.3.
    pub tls13: bool,
    /// Key-exchange groups by name (`x25519`, `secp256r1`, `secp384r1`, `X25519MLKEM768`, ...),
    /// in preference order; empty = the provider's defaults.
    pub groups: Vec<String>,
    /// Cipher suites by name (`TLS13_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`, ...); empty = the provider's defaults.
    pub cipher_suites: Vec<String>,
    /// PEM file of CA certificates; when set, clients must present a certificate chaining to one.
    pub client_ca: Option<PathBuf>,
    /// Resumption mode.
    pub resumption: Resumption,
    /// Session cache: maximum entries over all shards.
    pub session_cache_entries: usize,
    /// Session cache: maximum bytes (key + value) over all shards.
    pub session_cache_bytes: usize,
    /// Session cache: lifetime of an entry, in seconds.
    pub session_lifetime_secs: u32,
    /// Stateless tickets: how long one ticket key encrypts (tickets are accepted for twice that).
    pub ticket_rotation_secs: u32,
    /// Stateless tickets under keys from these files (nginx's `ssl_session_ticket_key` format,
    /// 48 or 80 bytes) instead of in-process keys: the first encrypts, all decrypt, so hosts
    /// sharing the files resume each other's tickets. Needs `resumption = "tickets"`; tickets
    /// live `session_lifetime_secs`; the files are read again on every (re)load.
    pub ticket_key_files: Vec<PathBuf>,
    /// TLS 1.3 tickets sent after a full handshake (RFC 8446 §4.6.1).
    pub tls13_tickets: usize,
    /// Prefer the server's cipher-suite order over the client's.
    pub prefer_server_ciphers: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            certificates: Vec::new(),
            alpn: Vec::new(),
            tls12: true,
            tls13: true,
            groups: Vec::new(),
            cipher_suites: Vec::new(),
            client_ca: None,
            resumption: Resumption::SessionId,
            session_cache_entries: 100_000,
            session_cache_bytes: 64 << 20,
            session_lifetime_secs: 7200,
            ticket_rotation_secs: 6 * 3600,
            ticket_key_files: Vec::new(),
            tls13_tickets: 2,
            prefer_server_ciphers: true,
        }
    }
}

impl TlsSettings {
    /// The session-cache bounds these settings ask for.
    pub fn session_cache_config(&self) -> SessionCacheConfig {
        SessionCacheConfig {
            max_entries: self.session_cache_entries,
            max_bytes: self.session_cache_bytes,
            lifetime_secs: u64::from(self.session_lifetime_secs),
            ..SessionCacheConfig::default()
        }
    }
}

/// Why [`build`] failed. Each variant names the settings field and, where there is one, the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    #[error("tls.{field}: cannot read {}: {source}", path.display())]
    Read { field: String, path: PathBuf, source: std::io::Error },
    #[error("tls.{field}: {}: {what}", path.display())]
    Pem { field: String, path: PathBuf, what: String },
    #[error("tls.{field}: key {} does not match certificate {}: {reason}", key.display(), cert.display())]
    KeyMismatch { field: String, cert: PathBuf, key: PathBuf, reason: String },
    #[error("tls.certificates: {0}")]
    Certificates(String),
    #[error("tls.groups: unknown key-exchange group {name:?} (known: {known})")]
    UnknownGroup { name: String, known: String },
    #[error("tls.cipher_suites: unknown cipher suite {name:?} (known: {known})")]
    UnknownSuite { name: String, known: String },
    #[error("tls.tls12/tls.tls13: no protocol version enabled")]
    NoProtocolVersion,
    #[error("tls.cipher_suites/tls.groups: {0}")]
    Incompatible(String),
    #[error("tls.client_ca: {}: {what}", path.display())]
    ClientCa { path: PathBuf, what: String },
    #[error("tls.resumption: {0}")]
    Tickets(String),
    #[error("tls.ticket_key_files: needs resumption = \"tickets\"")]
    TicketKeyFilesUnused,
    #[error("tls.ticket_key_files[{index}]: {}: {what}", path.display())]
    TicketKeyFile { index: usize, path: PathBuf, what: String },
}

fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Where [`build_with`] reads certificates and keys from: the file system ([`Disk`]), or the
/// files a privileged process read on the caller's behalf (sluice reads root-only keys that way
/// after dropping privileges).
pub trait FileSource {
    /// The whole content of `path` (already resolved against the base directory).
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// Reads files from the file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl FileSource for Disk {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Every file [`build_with`] reads for `settings` (certificate chains, keys, the client CA,
/// ticket key files), resolved against `base_dir`, in the order it reads them.
pub fn files_named(settings: &TlsSettings, base_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = settings
        .certificates
        .iter()
        .flat_map(|c| [resolve_path(base_dir, &c.cert), resolve_path(base_dir, &c.key)])
        .collect();
    out.extend(settings.client_ca.iter().map(|p| resolve_path(base_dir, p)));
    out.extend(settings.ticket_key_files.iter().map(|p| resolve_path(base_dir, p)));
    out
}

fn read_file(files: &dyn FileSource, field: &str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    files.read(path).map_err(|source| TlsConfigError::Read {
        field: field.to_owned(),
        path: path.to_path_buf(),
        source,
    })
}

fn load_certs(
    files: &dyn FileSource,
    field: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read_file(files, field, path)?;
    let pem_err = |what: String| TlsConfigError::Pem { field: field.to_owned(), path: path.to_path_buf(), what };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn load_key(files: &dyn FileSource, field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let mut pem = read_file(files, field, path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem);
    pem.zeroize();
    key.map_err(|e| TlsConfigError::Pem {
        field: field.to_owned(),
        path: path.to_path_buf(),
        what: format!("no readable private key: {e}"),
    })
}

/// Certificates chosen by SNI (RFC 6066 §3). Several chains may serve one name (say ECDSA and
/// RSA): the first whose key can sign with a scheme the client offers wins.
#[derive(Debug)]
pub struct SniResolver {
    /// (lower-case name or `*.suffix`, chain) in configuration order.
    by_name: Vec<(String, Arc<CertifiedKey>)>,
    defaults: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn pick<'a>(
        candidates: impl Iterator<Item = &'a Arc<CertifiedKey>>,
        hello: &ClientHello<'_>,
    ) -> Option<Arc<CertifiedKey>> {
        let mut first = None;
        for ck in candidates {
            if ck.key.choose_scheme(hello.signature_schemes()).is_some() {
                return Some(ck.clone());
            }
            first.get_or_insert_with(|| ck.clone());
        }
        // No key fits the client's schemes: hand rustls the first and let it fail the handshake
        // with the proper alert.
        first
    }

    pub(crate) fn matches(pattern: &str, name: &str) -> bool {
        match pattern.strip_prefix("*.") {
            // One label only: `*.example` matches `a.example`, not `a.b.example` nor `example`.
            Some(suffix) => name.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => pattern == name,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            // rustls hands us a validated DNS name; compare lower-case.
            let name = name.to_ascii_lowercase();
            let exact = self.by_name.iter().filter(|(p, _)| *p == name).map(|(_, c)| c);
            if let Some(ck) = Self::pick(exact, &hello) {
                return Some(ck);
            }
            let wild =
                self.by_name.iter().filter(|(p, _)| p.starts_with("*.") && Self::matches(p, &name)).map(|(_, c)| c);
            if let Some(ck) = Self::pick(wild, &hello) {
                return Some(ck);
            }
        }
        Self::pick(self.defaults.iter(), &hello)
    }
}

fn build_resolver(
    settings: &TlsSettings,
    base: &Path,
    files: &dyn FileSource,
    prov: &CryptoProvider,
) -> Result<SniResolver, TlsConfigError> {
    if settings.certificates.is_empty() {
        return Err(TlsConfigError::Certificates("at least one certificate is required".into()));
    }
    let n_default = settings.certificates.iter().filter(|c| c.default).count();
    if n_default > 1 {
        return Err(TlsConfigError::Certificates(format!("{n_default} entries set default = true; at most one may")));
    }
    let mut by_name = Vec::new();
    let mut defaults = Vec::new();
    let mut all: Vec<Arc<CertifiedKey>> = Vec::new();
    for (i, c) in settings.certificates.iter().enumerate() {
        let cert_path = resolve_path(base, &c.cert);
        let key_path = resolve_path(base, &c.key);
        let certs = load_certs(files, &format!("certificates[{i}].cert"), &cert_path)?;
        let key = load_key(files, &format!("certificates[{i}].key"), &key_path)?;
        let field = format!("certificates[{i}]");
        let signing = prov.key_provider.load_private_key(key).map_err(|e| TlsConfigError::Pem {
            field: format!("certificates[{i}].key"),
            path: key_path.clone(),
            what: format!("unsupported private key: {e}"),
        })?;
        let ck = CertifiedKey::new(certs, signing);
        match ck.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(TlsConfigError::KeyMismatch {
                    field,
                    cert: cert_path,
                    key: key_path,
                    reason: e.to_string(),
                });
            }
        }
        let ck = Arc::new(ck);
        for name in &c.sni {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() || name.starts_with("*.") && name.len() < 3 {
                return Err(TlsConfigError::Certificates(format!("certificates[{i}].sni: invalid name {name:?}")));
            }
            by_name.push((name, ck.clone()));
        }
        all.push(ck);
    }
    // The default entry (explicit, else the first) plus every entry serving exactly the same
    // names, so an ECDSA + RSA pair stays a pair for clients without SNI.
    let d = settings.certificates.iter().position(|c| c.default).unwrap_or(0);
    let d_sni = &settings.certificates[d].sni;
    for (i, (c, ck)) in settings.certificates.iter().zip(&all).enumerate() {
        if i == d || (!d_sni.is_empty() && c.sni == *d_sni) {
            defaults.push(ck.clone());
        }
    }
    Ok(SniResolver { by_name, defaults })
}

fn names<T: fmt::Debug>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
}

fn build_provider(settings: &TlsSettings) -> Result<CryptoProvider, TlsConfigError> {
    let mut prov = provider::default_provider();
    if !settings.groups.is_empty() {
        let mut groups = Vec::new();
        for name in &settings.groups {
            let g = provider::ALL_KX_GROUPS
                .iter()
                .find(|g| format!("{:?}", g.name()).eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| TlsConfigError::UnknownGroup {
                    name: name.clone(),
                    known: names(provider::ALL_KX_GROUPS.iter().map(|g| g.name())),
                })?;
            groups.push(*g);
        }
        prov.kx_groups = groups;
    }
    if !settings.cipher_suites.is_empty() {
        let mut suites = Vec::new();
        for name in &settings.cipher_suites {
            let s = provider::ALL_CIPHER_SUITES
                .iter()
                .find(|s| format!("{:?}", s.suite()).eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| TlsConfigError::UnknownSuite {
                    name: name.clone(),
                    known: names(provider::ALL_CIPHER_SUITES.iter().map(|s| s.suite())),
                })?;
            suites.push(*s);
        }
        prov.cipher_suites = suites;
    }
    Ok(prov)
}

/// Wraps the provider's (already rotating) ticketer so [`rustls::ticketer::TicketRotator`] can
/// own one per period: the provider keeps its RFC 5077 construction private and only exposes
/// `Ticketer::new()` (6 h keys), so we rotate those at our own interval.
#[derive(Debug)]
struct ProviderTicketer(Arc<dyn ProducesTickets>);

impl ProducesTickets for ProviderTicketer {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

fn make_ticketer() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
    let t = provider::Ticketer::new().map_err(|_| GetRandomFailed)?;
    Ok(Box::new(ProviderTicketer(t)))
}

/// The ticketer of `ticket_key_files`, read from `files` (contents zeroed once used).
fn key_file_ticketer(
    settings: &TlsSettings,
    base: &Path,
    files: &dyn FileSource,
    policy: u64,
    cache: Arc<SessionCache>,
) -> Result<KeyFileTicketer, TlsConfigError> {
    let paths: Vec<PathBuf> = settings.ticket_key_files.iter().map(|p| resolve_path(base, p)).collect();
    let mut contents = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        match read_file(files, &format!("ticket_key_files[{i}]"), path) {
            Ok(c) => contents.push(c),
            Err(e) => {
                contents.iter_mut().for_each(Vec::zeroize);
                return Err(e);
            }
        }
    }
    // RFC 8446 §4.6.1: a ticket lifetime of at most seven days.
    let lifetime = settings.session_lifetime_secs.clamp(1, 7 * 24 * 3600);
    KeyFileTicketer::new(&mut contents, policy, lifetime, cache).map_err(|e| {
        let at = |index: usize, what: String| TlsConfigError::TicketKeyFile {
            index,
            path: paths.get(index).cloned().unwrap_or_default(),
            what,
        };
        match e {
            KeyFilesError::Parse(TicketKeyError::BadSize { file, len }) => at(
                file,
                format!("{len} bytes; a ticket key file has 48 or 80 (nginx's format: `openssl rand 80 > ticket.key`)"),
            ),
            KeyFilesError::Parse(TicketKeyError::DuplicateName { file, first }) => at(
                file,
                format!(
                    "the same key name as ticket_key_files[{first}] ({}): every file needs its own",
                    paths.get(first).map(|p| p.display().to_string()).unwrap_or_default()
                ),
            ),
            KeyFilesError::Cipher { file } => at(file, "the cipher refused the key".into()),
            other => at(0, other.to_string()),
        }
    })
}

/// A [`std::hash::Hasher`] over SHA-256 for the TLS policy fingerprint: it depends on the
/// settings and certificates only, not on std's hasher (free to change between Rust releases)
/// nor on the host's byte order, so that the hosts of a fleet sharing ticket key files agree on
/// it whichever sluice build they run.
struct PolicyHasher(aws_lc_rs::digest::Context);

impl PolicyHasher {
    fn new() -> Self {
        Self(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }
}

impl std::hash::Hasher for PolicyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn write_u16(&mut self, i: u16) {
        self.0.update(&i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.0.update(&i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.0.update(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.0.update(&(i as u64).to_le_bytes());
    }
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_be_bytes(first)
    }
}

/// Build the rustls `ServerConfig` for one listener. Relative paths are taken from `base_dir`
/// (the directory of the TOML file). `cache` stores sessions when `resumption = "session_id"`
/// and holds the shared ticket keys when `resumption = "tickets"` (the first `build` that needs
/// them fixes `ticket_rotation_secs`); build it
/// with `SessionCache::new(settings.session_cache_config(), clock)` (one per process, shared by
/// every listener and worker that should resume each other's sessions).
pub fn build(
    settings: &TlsSettings,
    base_dir: &Path,
    cache: Arc<SessionCache>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    build_with(settings, base_dir, &Disk, cache)
}

/// [`build`], reading certificates and keys from `files` ([`files_named`] lists them).
pub fn build_with(
    settings: &TlsSettings,
    base_dir: &Path,
    files: &dyn FileSource,
    cache: Arc<SessionCache>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if settings.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if settings.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        return Err(TlsConfigError::NoProtocolVersion);
    }
    if !settings.ticket_key_files.is_empty() && settings.resumption != Resumption::Tickets {
        return Err(TlsConfigError::TicketKeyFilesUnused);
    }
    let prov = Arc::new(build_provider(settings)?);
    let resolver = Arc::new(build_resolver(settings, base_dir, files, &prov)?);
    // The TLS policy a session is made under, for resumption (see `PolicyStore` and
    // `KeyFileTicketer`).
    let mut policy = PolicyHasher::new();
    {
        use std::hash::Hash;
        versions.iter().for_each(|v| u16::from(v.version).hash(&mut policy));
        prov.cipher_suites.iter().for_each(|s| u16::from(s.suite()).hash(&mut policy));
        prov.kx_groups.iter().for_each(|g| u16::from(g.name()).hash(&mut policy));
        settings.alpn.hash(&mut policy);
        for (name, ck) in
            resolver.by_name.iter().map(|(n, ck)| (n.as_str(), ck)).chain(resolver.defaults.iter().map(|ck| ("", ck)))
        {
            name.hash(&mut policy);
            ck.cert.iter().for_each(|c| c.as_ref().hash(&mut policy));
        }
    }
    let builder = ServerConfig::builder_with_provider(prov.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsConfigError::Incompatible(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(p) => {
            let path = resolve_path(base_dir, p);
            let certs = load_certs(files, "client_ca", &path)?;
            certs.iter().for_each(|c| std::hash::Hash::hash(c.as_ref(), &mut policy));
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots.add(c).map_err(|e| TlsConfigError::ClientCa {
                    path: path.clone(),
                    what: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), prov.clone())
                .build()
                .map_err(|e| TlsConfigError::ClientCa { path: path.clone(), what: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = settings.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    cfg.ignore_client_order = settings.prefer_server_ciphers;
    let policy = std::hash::Hasher::finish(&policy);
    match settings.resumption {
        Resumption::SessionId => {
            cfg.session_storage = Arc::new(crate::cache::PolicyStore::new(cache, policy));
            cfg.send_tls13_tickets = settings.tls13_tickets;
        }
        Resumption::Tickets => {
            cfg.session_storage = Arc::new(NoServerSessionStorage {});
            let secs = settings.ticket_rotation_secs.max(1);
            cfg.ticketer = if settings.ticket_key_files.is_empty() {
                cache
                    .ticketer(policy, || {
                        rustls::ticketer::TicketRotator::new(secs, make_ticketer)
                            .map(|t| Arc::new(t) as Arc<dyn ProducesTickets>)
                    })
                    .map_err(|e| TlsConfigError::Tickets(e.to_string()))?
            } else {
                // Read again on every (re)load: a rotated file takes effect at the next SIGHUP.
                Arc::new(key_file_ticketer(settings, base_dir, files, policy, cache)?)
            };
            cfg.send_tls13_tickets = settings.tls13_tickets;
        }
        Resumption::None => {
            cfg.session_storage = Arc::new(NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
        }
    }
    Ok(Arc::new(cfg))
}
