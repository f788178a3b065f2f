//! nginx-compatible session ticket key files (`ssl_session_ticket_key`): parsing and checks.
//!
//! What it is: a file of exactly 48 or 80 bytes, as nginx reads it (`ngx_ssl_session_ticket_keys`
//! in its `ngx_event_openssl.c`): 48 bytes are a 16-byte key name, a 16-byte AES-128-CBC key and
//! a 16-byte HMAC-SHA256 key; 80 bytes are a 16-byte name, a 32-byte HMAC-SHA256 key and a
//! 32-byte AES-256-CBC key (note the order differs). Of several files the first encrypts new
//! tickets and every one decrypts, found by the name at the start of a ticket (RFC 5077 §4's
//! recommended layout). So a fleet of sluices and nginxes can share the same files.
//!
//! What it is not: the ticket encryption itself (the RFC 5077 construction lives with the
//! rustls ticketer) nor the reading of the files from disk.

use std::fmt;

/// Bytes of a key name.
pub const NAME_LEN: usize = 16;

/// One key file's content.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    /// The name a ticket starts with.
    pub name: [u8; NAME_LEN],
    /// The cipher and its keys.
    pub keys: TicketCipher,
}

/// The ticket protection the file's size selects.
#[derive(Clone, PartialEq, Eq)]
pub enum TicketCipher {
    /// 48-byte file: AES-128-CBC and a 16-byte HMAC-SHA256 key.
    Aes128 {
        /// AES-128 key.
        aes: [u8; 16],
        /// HMAC-SHA256 key.
        hmac: [u8; 16],
    },
    /// 80-byte file: AES-256-CBC and a 32-byte HMAC-SHA256 key.
    Aes256 {
        /// AES-256 key.
        aes: [u8; 32],
        /// HMAC-SHA256 key.
        hmac: [u8; 32],
    },
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cipher = match self.keys {
            TicketCipher::Aes128 { .. } => "AES-128-CBC",
            TicketCipher::Aes256 { .. } => "AES-256-CBC",
        };
        // The name is public (it is in every ticket); the keys are not printed.
        let name: String = self.name.iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("TicketKey").field("name", &name).field("cipher", &cipher).finish()
    }
}

/// A ticket key file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketKeyError {
    /// Not 48 or 80 bytes.
    #[error("ticket key file {file}: {len} bytes, must be 48 or 80")]
    BadSize {
        /// Which file (0-based position in the list).
        file: usize,
        /// Its size.
        len: usize,
    },
    /// Two files with the same key name: a ticket could not say which decrypts it.
    #[error("ticket key files {first} and {file} have the same key name")]
    DuplicateName {
        /// The later file.
        file: usize,
        /// The earlier one.
        first: usize,
    },
    /// An empty list.
    #[error("no ticket key file")]
    Empty,
}

impl TicketKey {
    /// Parses one file's bytes (`file` is its position, for the error).
    pub fn parse(file: usize, bytes: &[u8]) -> Result<Self, TicketKeyError> {
        let mut name = [0; NAME_LEN];
        match bytes.len() {
            48 => {
                let (mut aes, mut hmac) = ([0; 16], [0; 16]);
                name.copy_from_slice(&bytes[..16]);
                aes.copy_from_slice(&bytes[16..32]);
                hmac.copy_from_slice(&bytes[32..48]);
                Ok(Self { name, keys: TicketCipher::Aes128 { aes, hmac } })
            }
            80 => {
                let (mut aes, mut hmac) = ([0; 32], [0; 32]);
                name.copy_from_slice(&bytes[..16]);
                hmac.copy_from_slice(&bytes[16..48]);
                aes.copy_from_slice(&bytes[48..80]);
                Ok(Self { name, keys: TicketCipher::Aes256 { aes, hmac } })
            }
            len => Err(TicketKeyError::BadSize { file, len }),
        }
    }
}

/// Several files, in order: the first encrypts, every one decrypts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketKeys {
    keys: Vec<TicketKey>,
}

impl TicketKeys {
    /// Parses the files' contents in configuration order.
    pub fn parse<B: AsRef<[u8]>>(files: &[B]) -> Result<Self, TicketKeyError> {
        let mut keys: Vec<TicketKey> = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let key = TicketKey::parse(i, f.as_ref())?;
            if let Some(first) = keys.iter().position(|k| k.name == key.name) {
                return Err(TicketKeyError::DuplicateName { file: i, first });
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(TicketKeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// The key that encrypts new tickets.
    pub fn encrypting(&self) -> &TicketKey {
        &self.keys[0]
    }

    /// The key named at the start of a ticket, if any.
    pub fn decrypting(&self, name: &[u8]) -> Option<&TicketKey> {
        self.keys.iter().find(|k| k.name[..] == *name)
    }

    /// Every key, the encrypting one first.
    pub fn all(&self) -> &[TicketKey] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn forty_eight_bytes_is_name_aes128_hmac() {
        let f = file(48, 0);
        let k = TicketKey::parse(0, &f).unwrap();
        assert_eq!(k.name[..], f[..16]);
        match k.keys {
            TicketCipher::Aes128 { aes, hmac } => {
                assert_eq!(aes[..], f[16..32]);
                assert_eq!(hmac[..], f[32..48]);
            }
            _ => panic!("48 bytes is AES-128"),
        }
    }

    #[test]
    fn eighty_bytes_is_name_hmac_aes256() {
        let f = file(80, 100);
        let k = TicketKey::parse(0, &f).unwrap();
        assert_eq!(k.name[..], f[..16]);
        match k.keys {
            TicketCipher::Aes256 { aes, hmac } => {
                assert_eq!(hmac[..], f[16..48], "nginx puts the HMAC key before the AES key in 80-byte files");
                assert_eq!(aes[..], f[48..80]);
            }
            _ => panic!("80 bytes is AES-256"),
        }
        let dbg = format!("{k:?}");
        assert!(dbg.contains("AES-256-CBC") && dbg.contains("6465666768"), "{dbg}");
    }

    #[test]
    fn other_sizes_are_refused_naming_the_file() {
        for len in [0, 16, 47, 49, 79, 81, 96] {
            assert_eq!(TicketKeys::parse(&[file(48, 0), file(len, 1)]), Err(TicketKeyError::BadSize { file: 1, len }));
        }
        assert_eq!(TicketKeys::parse::<Vec<u8>>(&[]), Err(TicketKeyError::Empty));
        assert_eq!(
            TicketKeyError::BadSize { file: 1, len: 47 }.to_string(),
            "ticket key file 1: 47 bytes, must be 48 or 80"
        );
    }

    #[test]
    fn first_encrypts_all_decrypt_names_unique() {
        let (a, b) = (file(80, 1), file(48, 50));
        let keys = TicketKeys::parse(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(keys.encrypting().name[..], a[..16]);
        assert_eq!(keys.decrypting(&b[..16]).unwrap().name[..], b[..16]);
        assert_eq!(keys.decrypting(&a[..16]).unwrap().name[..], a[..16]);
        assert!(keys.decrypting(&[0xee; 16]).is_none());
        assert!(keys.decrypting(&a[..15]).is_none());
        assert_eq!(keys.all().len(), 2);
        // Same name, different keys: refused.
        let mut c = file(48, 9);
        c[..16].copy_from_slice(&a[..16]);
        assert_eq!(TicketKeys::parse(&[a, b, c]), Err(TicketKeyError::DuplicateName { file: 2, first: 0 }));
    }
}
