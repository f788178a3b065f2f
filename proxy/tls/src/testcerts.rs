//! Test and demo certificates (rcgen): a CA and leaf certificates (ECDSA P-256 and RSA 2048).
//!
//! What it is: in-memory generation for tests ([`Ca`]) and [`generate`], which writes a demo
//! CA and one ECDSA and one RSA chain per name into a directory, for xtask and the benches.
//! [`generate`] never overwrites a file that exists: it reuses what is there and only fills the
//! gaps. Private keys are written with mode 0600.
//!
//! What it is not: a way to make production certificates. No private key is ever committed;
//! these files are made on the machine that runs the demo.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Key type of a generated certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256 with SHA-256.
    EcdsaP256,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 certificate signatures.
    Rsa2048,
}

impl KeyKind {
    fn alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// Errors of certificate generation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestCertError {
    #[error("rcgen: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// A certificate authority that signs leaves.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A generated leaf: chain (leaf, CA) and key, in PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: PrivateKeyDer<'static>,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "sluice test CA");
    dn.push(DnType::OrganizationName, "sluice");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

impl Ca {
    /// A fresh CA with an ECDSA P-256 key.
    pub fn new() -> Result<Self, TestCertError> {
        Self::from_key(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
    }

    /// A CA certificate for an existing key (same subject every time, so leaves signed by it
    /// verify against an earlier CA certificate made from the same key).
    pub fn from_key(key: KeyPair) -> Result<Self, TestCertError> {
        let cert = ca_params().self_signed(&key)?;
        Ok(Self { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn sign(&self, names: &[&str], kind: KeyKind, eku: ExtendedKeyUsagePurpose) -> Result<Leaf, TestCertError> {
        let key = KeyPair::generate_for(kind.alg())?;
        let mut p = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or("sluice client"));
        p.distinguished_name = dn;
        p.extended_key_usages = vec![eku];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone(), self.cert.der().clone()],
            key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// A server certificate for `names` (DNS SANs).
    pub fn server(&self, names: &[&str], kind: KeyKind) -> Result<Leaf, TestCertError> {
        self.sign(names, kind, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mTLS).
    pub fn client(&self, name: &str, kind: KeyKind) -> Result<Leaf, TestCertError> {
        self.sign(&[name], kind, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Paths written (or found) by [`generate`] for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafPaths {
    pub name: String,
    /// `<name>.ecdsa.pem` (chain: leaf then CA) and `<name>.ecdsa.key`.
    pub ecdsa_cert: PathBuf,
    pub ecdsa_key: PathBuf,
    /// `<name>.rsa.pem` and `<name>.rsa.key`.
    pub rsa_cert: PathBuf,
    pub rsa_key: PathBuf,
}

/// Everything [`generate`] wrote (or found).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// `ca.pem`: what clients trust (`curl --cacert`).
    pub ca_cert: PathBuf,
    /// `ca.key`: kept so that later calls can sign new names with the same CA.
    pub ca_key: PathBuf,
    pub leaves: Vec<LeafPaths>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TestCertError + '_ {
    move |source| TestCertError::Io { path: path.to_path_buf(), source }
}

/// Write `data` to `path` unless it exists. Returns whether it wrote.
fn write_new(path: &Path, data: &str, private: bool) -> Result<bool, TestCertError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(data.as_bytes()).map_err(io_err(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Make `dir/ca.pem`, `dir/ca.key` and, per name, an ECDSA and an RSA chain, each only if
/// missing. An existing `ca.key` is reused to sign missing leaves. Never overwrites a file.
pub fn generate(dir: &Path, names: &[&str]) -> Result<Generated, TestCertError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let mut ca: Option<Ca> = None;
    let get_ca = |ca: &mut Option<Ca>| -> Result<(), TestCertError> {
        if ca.is_some() {
            return Ok(());
        }
        let made = match std::fs::read_to_string(&ca_key) {
            Ok(pem) => Ca::from_key(KeyPair::from_pem(&pem)?)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let c = Ca::new()?;
                write_new(&ca_key, &c.key_pem(), true)?;
                c
            }
            Err(e) => return Err(io_err(&ca_key)(e)),
        };
        write_new(&ca_cert, &made.cert_pem(), false)?;
        *ca = Some(made);
        Ok(())
    };
    get_ca(&mut ca)?;
    let mut leaves = Vec::new();
    for name in names {
        let lp = LeafPaths {
            name: (*name).to_owned(),
            ecdsa_cert: dir.join(format!("{name}.ecdsa.pem")),
            ecdsa_key: dir.join(format!("{name}.ecdsa.key")),
            rsa_cert: dir.join(format!("{name}.rsa.pem")),
            rsa_key: dir.join(format!("{name}.rsa.key")),
        };
        for (kind, cert, key) in
            [(KeyKind::EcdsaP256, &lp.ecdsa_cert, &lp.ecdsa_key), (KeyKind::Rsa2048, &lp.rsa_cert, &lp.rsa_key)]
        {
            if cert.exists() && key.exists() {
                continue;
            }
            if cert.exists() || key.exists() {
                // Half a pair: leave it alone rather than overwrite; the caller sees the paths.
                continue;
            }
            get_ca(&mut ca)?;
            let leaf = ca.as_ref().expect("CA loaded").server(&[name], kind)?;
            write_new(key, &leaf.key_pem, true)?;
            write_new(cert, &leaf.cert_pem, false)?;
        }
        leaves.push(lp);
    }
    Ok(Generated { ca_cert, ca_key, leaves })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_fills_gaps_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("sluice-tls-testcerts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = generate(&dir, &["a.example"]).unwrap();
        let ca_before = std::fs::read(&g.ca_cert).unwrap();
        let leaf_before = std::fs::read(&g.leaves[0].ecdsa_cert).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for k in [&g.ca_key, &g.leaves[0].ecdsa_key, &g.leaves[0].rsa_key] {
                assert_eq!(std::fs::metadata(k).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
        // A second run with one more name keeps the old files and signs the new one with the same CA.
        let g2 = generate(&dir, &["a.example", "b.example"]).unwrap();
        assert_eq!(std::fs::read(&g2.ca_cert).unwrap(), ca_before);
        assert_eq!(std::fs::read(&g2.leaves[0].ecdsa_cert).unwrap(), leaf_before);
        assert!(g2.leaves[1].rsa_cert.exists());
        // The new leaf verifies against the CA written by the first run.
        let ca = CertificateDer::from_pem_file_compat(&g.ca_cert);
        let chain = CertificateDer::from_pem_file_compat(&g2.leaves[1].ecdsa_cert);
        crate::tests::verify_chain(&ca[0], &chain, "b.example");
        let _ = std::fs::remove_dir_all(&dir);
    }

    trait PemCompat {
        fn from_pem_file_compat(p: &Path) -> Vec<CertificateDer<'static>>;
    }
    impl PemCompat for CertificateDer<'static> {
        fn from_pem_file_compat(p: &Path) -> Vec<CertificateDer<'static>> {
            use rustls_pki_types::pem::PemObject;
            CertificateDer::pem_file_iter(p).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
        }
    }
}
