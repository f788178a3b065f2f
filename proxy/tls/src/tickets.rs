//! [`KeyFileTicketer`]: stateless session tickets under keys from nginx-format ticket key files,
//! so that a ticket one sluice (or one of its reloads) issued resumes on every other host that
//! reads the same files.
//!
//! What it is: a rustls [`ProducesTickets`] with the ticket layout RFC 5077 §4 recommends, which
//! nginx (OpenSSL) uses too:
//!
//! ```text
//! key_name (16) || IV (16) || AES-CBC-PKCS7(inner) || HMAC-SHA256(key_name || IV || ciphertext) (32)
//! inner = policy (8) || issued (8, seconds since the epoch, big-endian) || rustls's session state
//! ```
//!
//! The MAC covers every byte before it, as OpenSSL computes it (RFC 5077's example also MACs a
//! 2-byte length of the ciphertext; with a fixed-size name and IV the ticket's length fixes it
//! anyway). Tickets are at most [`MAX_TICKET`] bytes: a longer one is refused before its MAC is
//! computed, and a session that would need a longer one gets no ticket (rustls sends none).
//!
//! The keys come from [`sluice_store::ticket_keys`] (48-byte files: AES-128 with a 16-byte HMAC
//! key; 80-byte files: AES-256 with a 32-byte HMAC key). The first file's key encrypts; any
//! file's key, found by the name a ticket starts with, decrypts, so a rotation is "prepend a new
//! file everywhere, SIGHUP, drop the oldest later". The HMAC is checked (in constant time) before
//! anything is decrypted. A ticket that fails any check is `None`: a full handshake.
//!
//! Two checks sit inside the encrypted part. `policy` is the fingerprint of the TLS policy the
//! session was made under (versions, suites, groups, ALPN, certificates, client CA: see
//! [`crate::config`]): a ticket of another policy is refused and counted as the session cache's
//! `policy_mismatch`, as a cached session would be. `issued` bounds a ticket's use to
//! [`ProducesTickets::lifetime`] (`session_lifetime_secs`) on the session cache's clock, as
//! OpenSSL bounds nginx's; a ticket from a clock ahead of ours counts as new.
//!
//! What it is not: compatible with nginx's tickets (nginx's plaintext is OpenSSL's session
//! encoding, which rustls cannot read; only the key files are shared), nor a key manager. Forward
//! secrecy of ticketed sessions lasts only as long as the operator keeps a key: rotate the
//! files (and remove old ones) as often as for nginx.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use rustls::server::ProducesTickets;
use sluice_store::ticket_keys::{NAME_LEN, TicketCipher, TicketKey, TicketKeyError};
use zeroize::Zeroize;

use crate::cache::SessionCache;

const IV_LEN: usize = 16;
const BLOCK_LEN: usize = 16;
const TAG_LEN: usize = 32;
const POLICY_LEN: usize = 8;
const ISSUED_LEN: usize = 8;
/// The shortest well-formed ticket: name, IV, one cipher block, tag.
const MIN_TICKET: usize = NAME_LEN + IV_LEN + BLOCK_LEN + TAG_LEN;
/// The longest ticket made or accepted: room for rustls's session state with a client
/// certificate chain of several kilobytes (mTLS), while a client cannot make sluice MAC 64 KiB.
pub const MAX_TICKET: usize = 16 << 10;

/// One key file's keys, ready to use.
struct Key {
    name: [u8; NAME_LEN],
    encrypt: PaddedBlockEncryptingKey,
    decrypt: PaddedBlockDecryptingKey,
    hmac: hmac::Key,
}

impl Key {
    fn new(mut key: TicketKey) -> Option<Self> {
        let made = match &key.keys {
            TicketCipher::Aes128 { aes, hmac } => Self::with(key.name, &AES_128, aes, hmac),
            TicketCipher::Aes256 { aes, hmac } => Self::with(key.name, &AES_256, aes, hmac),
        };
        match &mut key.keys {
            TicketCipher::Aes128 { aes, hmac } => {
                aes.zeroize();
                hmac.zeroize();
            }
            TicketCipher::Aes256 { aes, hmac } => {
                aes.zeroize();
                hmac.zeroize();
            }
        }
        made
    }

    fn with(name: [u8; NAME_LEN], alg: &'static aws_lc_rs::cipher::Algorithm, aes: &[u8], mac: &[u8]) -> Option<Self> {
        let encrypt = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(alg, aes).ok()?).ok()?;
        let decrypt = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(alg, aes).ok()?).ok()?;
        Some(Self { name, encrypt, decrypt, hmac: hmac::Key::new(hmac::HMAC_SHA256, mac) })
    }
}

/// Why ticket key files cannot be used (`file` is the 0-based position in the list).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFilesError {
    /// A file's content is not a key file (its size), or two files share a key name.
    #[error(transparent)]
    Parse(#[from] TicketKeyError),
    /// The cipher library refused a key.
    #[error("ticket key file {file}: the cipher refused the key")]
    Cipher {
        /// Which file.
        file: usize,
    },
}

/// Stateless tickets keyed from ticket key files. See the module doc.
pub struct KeyFileTicketer {
    /// The first encrypts; all decrypt.
    keys: Vec<Key>,
    policy: [u8; POLICY_LEN],
    lifetime: u32,
    /// The clock for `issued` and the `policy_mismatch` counter.
    cache: Arc<SessionCache>,
}

impl fmt::Debug for KeyFileTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key names are public (in every ticket); keys are not printed.
        let names: Vec<String> =
            self.keys.iter().map(|k| k.name.iter().map(|b| format!("{b:02x}")).collect()).collect();
        f.debug_struct("KeyFileTicketer")
            .field("names", &names)
            .field("policy", &u64::from_be_bytes(self.policy))
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl KeyFileTicketer {
    /// Keys from the files' contents in configuration order (the first encrypts), for tickets of
    /// TLS policy `policy` that live `lifetime` seconds on `cache`'s clock. The contents are
    /// zeroed once read.
    pub fn new(
        files: &mut [Vec<u8>],
        policy: u64,
        lifetime: u32,
        cache: Arc<SessionCache>,
    ) -> Result<Self, KeyFilesError> {
        let parsed: Vec<Result<TicketKey, TicketKeyError>> =
            files.iter().enumerate().map(|(i, f)| TicketKey::parse(i, f)).collect();
        files.iter_mut().for_each(|f| f.zeroize());
        let mut keys: Vec<Key> = Vec::with_capacity(parsed.len());
        for (i, key) in parsed.into_iter().enumerate() {
            let key = key?;
            if let Some(first) = keys.iter().position(|k| k.name == key.name) {
                return Err(TicketKeyError::DuplicateName { file: i, first }.into());
            }
            keys.push(Key::new(key).ok_or(KeyFilesError::Cipher { file: i })?);
        }
        if keys.is_empty() {
            return Err(TicketKeyError::Empty.into());
        }
        Ok(Self { keys, policy: policy.to_be_bytes(), lifetime, cache })
    }

    fn now(&self) -> u64 {
        self.cache.now()
    }
}

impl ProducesTickets for KeyFileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = &self.keys[0];
        let mut inner = Vec::with_capacity(POLICY_LEN + ISSUED_LEN + plain.len() + BLOCK_LEN);
        inner.extend_from_slice(&self.policy);
        inner.extend_from_slice(&self.now().to_be_bytes());
        inner.extend_from_slice(plain);
        // A fresh random IV per ticket (RFC 5077 §4).
        let encrypted = key.encrypt.encrypt(&mut inner);
        let Ok(DecryptionContext::Iv128(iv)) = encrypted else {
            inner.zeroize();
            return None;
        };
        if NAME_LEN + IV_LEN + inner.len() + TAG_LEN > MAX_TICKET {
            inner.zeroize();
            return None;
        }
        let mut ticket = Vec::with_capacity(NAME_LEN + IV_LEN + inner.len() + TAG_LEN);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(iv.as_ref());
        ticket.extend_from_slice(&inner);
        let tag = hmac::sign(&key.hmac, &ticket);
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if !(MIN_TICKET..=MAX_TICKET).contains(&ticket.len()) || !(ticket.len() - MIN_TICKET).is_multiple_of(BLOCK_LEN)
        {
            return None;
        }
        let (signed, tag) = ticket.split_at(ticket.len() - TAG_LEN);
        let (name, rest) = signed.split_at(NAME_LEN);
        let (iv, ciphertext) = rest.split_at(IV_LEN);
        // The name is public: finding the key by it needs no constant time; the tag does.
        let key = self.keys.iter().find(|k| k.name[..] == *name)?;
        hmac::verify(&key.hmac, signed, tag).ok()?;
        let iv: [u8; IV_LEN] = iv.try_into().ok()?;
        let mut buf = ciphertext.to_vec();
        let inner = match key.decrypt.decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv))) {
            Ok(inner) if inner.len() >= POLICY_LEN + ISSUED_LEN => inner,
            _ => {
                buf.zeroize();
                return None;
            }
        };
        let (policy, rest) = inner.split_at(POLICY_LEN);
        let (issued, state) = rest.split_at(ISSUED_LEN);
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        let result = if *policy != self.policy {
            // Made under another TLS policy (here or on another host): a full handshake.
            self.cache.count_policy_mismatch();
            None
        } else if self.now().saturating_sub(issued) > u64::from(self.lifetime) {
            None
        } else {
            Some(state.to_vec())
        };
        buf.zeroize();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{ManualClock, SessionCacheConfig};

    fn file(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8)).collect()
    }

    fn cache() -> (Arc<SessionCache>, Arc<ManualClock>) {
        let clock = ManualClock::new(1_700_000_000);
        (SessionCache::new(SessionCacheConfig::default(), clock.clone()), clock)
    }

    fn ticketer(files: &[Vec<u8>], policy: u64, cache: &Arc<SessionCache>) -> KeyFileTicketer {
        KeyFileTicketer::new(&mut files.to_vec(), policy, 3600, cache.clone()).unwrap()
    }

    const PLAIN: &[u8] = b"rustls's session state, some dozens of bytes long, not a block multiple";

    #[test]
    fn roundtrip_with_both_key_sizes() {
        let (c, _) = cache();
        for len in [48, 80] {
            let t = ticketer(&[file(len, 1)], 7, &c);
            assert!(t.enabled());
            assert_eq!(t.lifetime(), 3600);
            for plain in [&b""[..], b"x", &[0xaa; 16], PLAIN] {
                let ticket = t.encrypt(plain).unwrap();
                assert_eq!(ticket[..NAME_LEN], file(len, 1)[..NAME_LEN], "the key name leads");
                // name + IV + the padded policy, issued time and state + tag.
                let inner = POLICY_LEN + ISSUED_LEN + plain.len();
                assert_eq!(ticket.len(), NAME_LEN + IV_LEN + (inner / 16 + 1) * 16 + TAG_LEN);
                assert_eq!(t.decrypt(&ticket).as_deref(), Some(plain), "{len}-byte key");
                // Another instance of the same files (another host, a reload) opens it too.
                assert_eq!(ticketer(&[file(len, 1)], 7, &c).decrypt(&ticket).as_deref(), Some(plain));
            }
            // A random IV per ticket: the same state never gives the same ticket.
            assert_ne!(t.encrypt(PLAIN), t.encrypt(PLAIN));
        }
    }

    #[test]
    fn tickets_are_bounded() {
        let (c, _) = cache();
        let t = ticketer(&[file(80, 12)], 7, &c);
        // The largest state that fits: MAX_TICKET less name, IV, tag, the inner header and at
        // least one byte of padding.
        let fits = MAX_TICKET - NAME_LEN - IV_LEN - TAG_LEN - POLICY_LEN - ISSUED_LEN - 1;
        let ticket = t.encrypt(&vec![1; fits]).unwrap();
        assert_eq!(ticket.len(), MAX_TICKET);
        assert_eq!(t.decrypt(&ticket).map(|p| p.len()), Some(fits));
        assert_eq!(t.encrypt(&vec![1; fits + 1]), None, "no ticket rather than one too long to accept");
    }

    #[test]
    fn a_ticket_from_key_a_opens_after_rotation_and_new_tickets_use_b() {
        let (c, _) = cache();
        let (a, b) = (file(80, 1), file(48, 2));
        let old = ticketer(std::slice::from_ref(&a), 7, &c).encrypt(PLAIN).unwrap();
        let rotated = ticketer(&[b.clone(), a.clone()], 7, &c);
        assert_eq!(rotated.decrypt(&old).as_deref(), Some(PLAIN));
        let new = rotated.encrypt(PLAIN).unwrap();
        assert_eq!(new[..NAME_LEN], b[..NAME_LEN], "the first file encrypts");
        // A host that has not rotated yet cannot open the new ticket (a full handshake there).
        assert_eq!(ticketer(std::slice::from_ref(&a), 7, &c).decrypt(&new), None);
        // Once A is dropped, its tickets are gone.
        assert_eq!(ticketer(&[b], 7, &c).decrypt(&old), None);
    }

    #[test]
    fn a_tampered_ticket_is_refused_at_every_byte() {
        let (c, _) = cache();
        for len in [48, 80] {
            let t = ticketer(&[file(len, 3), file(80, 4)], 7, &c);
            let ticket = t.encrypt(PLAIN).unwrap();
            for i in 0..ticket.len() {
                for flip in [0x01, 0x80] {
                    let mut bad = ticket.clone();
                    bad[i] ^= flip;
                    assert_eq!(t.decrypt(&bad), None, "byte {i} ^ {flip:#x}");
                }
            }
            // Cut short or lengthened anywhere: refused, never a panic.
            for n in 0..ticket.len() {
                assert_eq!(t.decrypt(&ticket[..n]), None, "first {n} bytes");
            }
            let mut longer = ticket.clone();
            longer.extend_from_slice(&[0; 16]);
            assert_eq!(t.decrypt(&longer), None);
            longer.resize(64 << 10, 0);
            assert_eq!(t.decrypt(&longer), None);
            assert_eq!(t.decrypt(&ticket).as_deref(), Some(PLAIN));
        }
    }

    #[test]
    fn an_unknown_key_name_is_refused() {
        let (c, _) = cache();
        let ticket = ticketer(&[file(48, 5)], 7, &c).encrypt(PLAIN).unwrap();
        let other = ticketer(&[file(48, 6), file(80, 7)], 7, &c);
        assert_eq!(other.decrypt(&ticket), None);
        // Same name, other keys (a file replaced without a new name): the HMAC refuses it.
        let mut same_name = file(48, 8);
        same_name[..NAME_LEN].copy_from_slice(&file(48, 5)[..NAME_LEN]);
        assert_eq!(ticketer(&[same_name], 7, &c).decrypt(&ticket), None);
        assert_eq!(c.stats().policy_mismatch, 0, "not a policy matter");
    }

    #[test]
    fn a_ticket_of_another_policy_is_refused_and_counted() {
        let (c, _) = cache();
        let keys = [file(80, 9)];
        let ticket = ticketer(&keys, 7, &c).encrypt(PLAIN).unwrap();
        assert_eq!(ticketer(&keys, 8, &c).decrypt(&ticket), None);
        assert_eq!(c.stats().policy_mismatch, 1);
        assert_eq!(ticketer(&keys, 7, &c).decrypt(&ticket).as_deref(), Some(PLAIN));
        assert_eq!(c.stats().policy_mismatch, 1);
    }

    #[test]
    fn a_ticket_older_than_its_lifetime_is_refused() {
        let (c, clock) = cache();
        let t = ticketer(&[file(48, 10)], 7, &c);
        let ticket = t.encrypt(PLAIN).unwrap();
        clock.advance(3600);
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(PLAIN), "at its lifetime");
        clock.advance(1);
        assert_eq!(t.decrypt(&ticket), None, "past it");
        // Issued by a host whose clock is ahead: counts as new.
        clock.set(1_700_000_000 - 600);
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(PLAIN));
    }

    #[test]
    fn files_are_checked_and_zeroed() {
        let (c, _) = cache();
        let mut files = vec![file(80, 1), file(47, 2)];
        let e = KeyFileTicketer::new(&mut files, 7, 60, c.clone()).unwrap_err();
        assert_eq!(e, KeyFilesError::Parse(TicketKeyError::BadSize { file: 1, len: 47 }));
        assert!(files.iter().all(|f| f.iter().all(|&b| b == 0)), "contents zeroed even on error");
        let mut dup = file(48, 3);
        dup[..NAME_LEN].copy_from_slice(&file(80, 1)[..NAME_LEN]);
        let e = KeyFileTicketer::new(&mut [file(80, 1), dup], 7, 60, c.clone()).unwrap_err();
        assert_eq!(e, KeyFilesError::Parse(TicketKeyError::DuplicateName { file: 1, first: 0 }));
        let e = KeyFileTicketer::new(&mut [], 7, 60, c.clone()).unwrap_err();
        assert_eq!(e, KeyFilesError::Parse(TicketKeyError::Empty));
        let t = ticketer(&[file(48, 4)], 7, &c);
        let dbg = format!("{t:?}");
        assert!(dbg.contains(&file(48, 4)[..NAME_LEN].iter().map(|b| format!("{b:02x}")).collect::<String>()));
        assert!(!dbg.contains(&file(48, 4)[16..32].iter().map(|b| format!("{b:02x}")).collect::<String>()));
    }

    /// Random tickets of every length never panic and never open.
    #[test]
    fn random_tickets_are_refused() {
        let (c, _) = cache();
        let t = ticketer(&[file(48, 11)], 7, &c);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..400 {
            let mut ticket: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len >= NAME_LEN {
                // With a known key name, so the HMAC check is reached.
                ticket[..NAME_LEN].copy_from_slice(&file(48, 11)[..NAME_LEN]);
            }
            assert_eq!(t.decrypt(&ticket), None);
        }
    }
}
