//! Sealing session values for the shared store: the key file, store keys and AEAD values.
//!
//! What it is:
//! - [`KeySet::parse`] reads a `key_file`: one key per line, 64 hex digits (32 bytes); blank
//!   lines and lines starting with `#` are skipped; an error names the line. The first key
//!   seals, every key opens, so a new key is rolled out by prepending it (values sealed under
//!   the old one still open) and the old one removed once its values have expired.
//! - [`KeySet::store_key`]: the store's key for a session ID, `prefix || hex(HMAC-SHA256(k,
//!   prefix || id))` with a key derived from the sealing key, so the store never sees an ID.
//!   [`KeySet::store_keys`] gives the same for every key (first first) for a lookup that must
//!   also find entries written before a rotation.
//! - [`KeySet::seal`] / [`KeySet::open`]: AES-256-GCM with a random 96-bit nonce per value;
//!   the value is `version (1) || key id (4) || nonce (12) || ciphertext || tag (16)`; the
//!   additional data is the version, the key id and the store key, so a value moved to
//!   another store key does not open. The key id is the first 4 bytes of an HMAC of a label
//!   under the key; it names the key that sealed, it is not a secret.
//!
//! What it is not: a key manager. Re-reading the file (SIGHUP) is the caller's: parse a new
//! [`KeySet`] and swap it in. A value that does not open is an [`OpenError`], to be counted
//! as a miss, never a failed handshake. Random nonces bound one key to about 2^32 values
//! (NIST SP 800-38D §8.3): rotate well before that.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;

/// Bytes of a key in the key file.
pub const KEY_LEN: usize = 32;
/// Bytes of a key id in a sealed value.
pub const KEY_ID_LEN: usize = 4;
/// The sealed value's format version.
const VERSION: u8 = 1;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN;
/// Most keys a key file may hold.
pub const MAX_KEYS: usize = 64;

/// Derivation labels: one HMAC per purpose under each file key.
const LABEL_AEAD: &[u8] = b"sluice-store v1 aead key";
const LABEL_STORE_KEY: &[u8] = b"sluice-store v1 store key";
const LABEL_KEY_ID: &[u8] = b"sluice-store v1 key id";

/// A key file that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// A line that is not 64 hex digits.
    #[error("key file line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two lines with the same key (or the same key id).
    #[error("key file line {line}: same key (id) as line {first}")]
    Duplicate {
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first.
        first: usize,
    },
    /// More than [`MAX_KEYS`] keys.
    #[error("key file: more than {MAX_KEYS} keys")]
    TooManyKeys,
    /// No key at all.
    #[error("key file: no key (one key per line, 64 hex digits)")]
    Empty,
}

/// A sealed value that does not open: each is a miss, counted by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than the fixed overhead.
    #[error("sealed value truncated")]
    Truncated,
    /// An unknown format version.
    #[error("sealed value of unknown version")]
    BadVersion,
    /// Sealed under a key that is not (or no longer) in the key file.
    #[error("sealed under an unknown key")]
    UnknownKey,
    /// Authentication failed: tampered, or stored under another key.
    #[error("sealed value failed authentication")]
    Forged,
}

/// A key from the file and what is derived from it.
struct Key {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
    store: hmac::Key,
}

impl Key {
    fn new(secret: &[u8; KEY_LEN]) -> Self {
        let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive = |label: &[u8]| hmac::sign(&master, label);
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&derive(LABEL_KEY_ID).as_ref()[..KEY_ID_LEN]);
        let aead_key = derive(LABEL_AEAD);
        // 32 bytes is AES-256's key length: `new` cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, aead_key.as_ref()).expect("32-byte AES-256 key");
        let store = hmac::Key::new(hmac::HMAC_SHA256, derive(LABEL_STORE_KEY).as_ref());
        Self { id, aead: LessSafeKey::new(unbound), store }
    }

    fn store_key(&self, prefix: &[u8], session_id: &[u8]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.store);
        ctx.update(prefix);
        ctx.update(session_id);
        let tag = ctx.sign();
        let mut out = Vec::with_capacity(prefix.len() + 64);
        out.extend_from_slice(prefix);
        for b in tag.as_ref() {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The parsed key file: the first key seals, every key opens.
pub struct KeySet {
    keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids only, never key material.
        f.debug_list().entries(self.keys.iter().map(|k| KeyIdHex(k.id))).finish()
    }
}

struct KeyIdHex([u8; KEY_ID_LEN]);
impl fmt::Debug for KeyIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl KeySet {
    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys: Vec<Key> = Vec::new();
        let mut lines_of: Vec<usize> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut secret = parse_hex_key(line).map_err(|reason| KeyFileError::BadLine { line: line_no, reason })?;
            let key = Key::new(&secret);
            secret.fill(0);
            if let Some(j) = keys.iter().position(|k| k.id == key.id) {
                return Err(KeyFileError::Duplicate { line: line_no, first: lines_of[j] });
            }
            if keys.len() == MAX_KEYS {
                return Err(KeyFileError::TooManyKeys);
            }
            keys.push(key);
            lines_of.push(line_no);
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(Self { keys })
    }

    /// A key set from raw keys (tests, or keys from elsewhere); the first seals.
    pub fn from_keys(keys: &[[u8; KEY_LEN]]) -> Result<Self, KeyFileError> {
        let mut text = String::new();
        for k in keys {
            for b in k {
                text.push(char::from(HEX[usize::from(b >> 4)]));
                text.push(char::from(HEX[usize::from(b & 15)]));
            }
            text.push('\n');
        }
        Self::parse(&text)
    }

    /// How many keys open.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a key set has a sealing key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The sealing key's id.
    pub fn sealing_key_id(&self) -> [u8; KEY_ID_LEN] {
        self.keys[0].id
    }

    /// The store key for `session_id` under the sealing key: what a write uses and a lookup
    /// tries first.
    pub fn store_key(&self, prefix: &[u8], session_id: &[u8]) -> Vec<u8> {
        self.keys[0].store_key(prefix, session_id)
    }

    /// The store key for `session_id` under every key, the sealing key's first: during a
    /// rotation, entries written under an older key are found under its store key.
    pub fn store_keys<'a>(&'a self, prefix: &'a [u8], session_id: &'a [u8]) -> impl Iterator<Item = Vec<u8>> + 'a {
        self.keys.iter().map(move |k| k.store_key(prefix, session_id))
    }

    /// Seals `plaintext` for `store_key` with the first key and a fresh random nonce.
    pub fn seal(&self, store_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The system RNG failing is not a condition this process can run through.
        aws_lc_rs::rand::fill(&mut nonce).expect("system random number generator");
        self.seal_with_nonce(store_key, plaintext, nonce)
    }

    fn seal_with_nonce(&self, store_key: &[u8], plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        let header = out.len();
        out.extend_from_slice(plaintext);
        let aad = aad(&key.id, store_key);
        let mut body = out.split_off(header);
        key.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad[..]), &mut body)
            // Only fails for plaintexts beyond GCM's 64 GiB limit.
            .expect("AES-GCM seal");
        out.append(&mut body);
        out
    }

    /// Opens a value fetched from `store_key`.
    pub fn open(&self, store_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let (version, rest) = sealed.split_at(1);
        if version[0] != VERSION {
            return Err(OpenError::BadVersion);
        }
        let (id, rest) = rest.split_at(KEY_ID_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|k| k.id == id).ok_or(OpenError::UnknownKey)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Truncated)?;
        let aad = aad(&key.id, store_key);
        let mut buf = ciphertext.to_vec();
        let plain_len =
            key.aead.open_in_place(nonce, Aad::from(&aad[..]), &mut buf).map_err(|_| OpenError::Forged)?.len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

fn aad(id: &[u8; KEY_ID_LEN], store_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + KEY_ID_LEN + store_key.len());
    aad.push(VERSION);
    aad.extend_from_slice(id);
    aad.extend_from_slice(store_key);
    aad
}

fn parse_hex_key(line: &str) -> Result<[u8; KEY_LEN], &'static str> {
    let digits = line.as_bytes();
    if digits.len() != 2 * KEY_LEN {
        return Err("expected 64 hex digits (32 bytes)");
    }
    let mut key = [0u8; KEY_LEN];
    for (k, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = hex_val(pair[0]).ok_or("not a hex digit")?;
        let lo = hex_val(pair[1]).ok_or("not a hex digit")?;
        *k = hi << 4 | lo;
    }
    Ok(key)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[path = "seal_tests.rs"]
mod tests;
