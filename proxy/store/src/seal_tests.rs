//! Tests for the key file, store keys and sealed values.

use proptest::prelude::*;

use super::*;

const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const K2: &str = "F0E1D2C3B4A5968778695A4B3C2D1E0FF0E1D2C3B4A5968778695A4B3C2D1E0F";
const PREFIX: &[u8] = b"sluice:";

fn set(text: &str) -> KeySet {
    KeySet::parse(text).unwrap()
}

// The key file.

#[test]
fn key_file_with_comments_blank_lines_and_spaces() {
    let s = set(&format!("# sealing keys, newest first\n\n  {K2}  \n\t# old one\n{K1}\n"));
    assert_eq!(s.len(), 2);
    assert!(!s.is_empty());
    assert_eq!(s.sealing_key_id(), set(K2).sealing_key_id(), "the first key seals");
    // Upper- and lower-case hex give the same key.
    assert_eq!(set(K2).sealing_key_id(), set(&K2.to_lowercase()).sealing_key_id());
    // The Debug form shows key ids, never keys.
    let dbg = format!("{s:?}");
    assert!(!dbg.to_lowercase().contains(&K1[..16]) && !dbg.to_lowercase().contains(&K2.to_lowercase()[..16]), "{dbg}");
}

#[test]
fn key_file_errors_name_the_line() {
    let e = |t: &str| KeySet::parse(t).unwrap_err();
    assert_eq!(
        e(&format!("# c\n{K1}\n{}\n", &K2[..62])),
        KeyFileError::BadLine { line: 3, reason: "expected 64 hex digits (32 bytes)" }
    );
    assert_eq!(e(&format!("{}zz\n", &K1[..62])), KeyFileError::BadLine { line: 1, reason: "not a hex digit" });
    assert_eq!(e(&format!("{K1}00\n")), KeyFileError::BadLine { line: 1, reason: "expected 64 hex digits (32 bytes)" });
    assert_eq!(e(&format!("{K1} # trailing\n")).to_string(), "key file line 1: expected 64 hex digits (32 bytes)");
    assert_eq!(e("\n# only comments\n\n"), KeyFileError::Empty);
    assert_eq!(e(""), KeyFileError::Empty);
    assert_eq!(e(&format!("{K1}\n\n{K2}\n{K1}\n")), KeyFileError::Duplicate { line: 4, first: 1 });
    // A non-ASCII line of 64 bytes is refused byte by byte, never sliced mid-character.
    assert_eq!(e(&"é".repeat(32)), KeyFileError::BadLine { line: 1, reason: "not a hex digit" });
    let many: String = (0..=MAX_KEYS).map(|i| format!("{i:064x}\n")).collect();
    assert_eq!(e(&many), KeyFileError::TooManyKeys);
}

// Store keys.

#[test]
fn store_key_is_prefix_and_a_keyed_hash_that_hides_the_id() {
    let s = set(K1);
    let id = b"\x01\x02session-id-bytes";
    let k = s.store_key(PREFIX, id);
    assert!(k.starts_with(PREFIX));
    assert_eq!(k.len(), PREFIX.len() + 64);
    assert!(k[PREFIX.len()..].iter().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(k, s.store_key(PREFIX, id), "deterministic");
    assert_ne!(k, s.store_key(PREFIX, b"\x01\x02session-id-bytez"));
    assert_ne!(k[PREFIX.len()..], s.store_key(b"other:", id)[6..], "the prefix is hashed too");
    assert_ne!(k, set(K2).store_key(PREFIX, id), "another key, another store key");
    assert!(!contains(&k, id) && !contains(&k, &hex(id)));
}

#[test]
fn store_keys_lists_every_key_sealing_first() {
    let s = set(&format!("{K2}\n{K1}\n"));
    let all: Vec<Vec<u8>> = s.store_keys(PREFIX, b"id").collect();
    assert_eq!(all, vec![set(K2).store_key(PREFIX, b"id"), set(K1).store_key(PREFIX, b"id")]);
}

// Sealed values.

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn hex(b: &[u8]) -> Vec<u8> {
    b.iter().flat_map(|x| format!("{x:02x}").into_bytes()).collect()
}

#[test]
fn seal_open_roundtrip_with_fresh_nonces() {
    let s = set(K1);
    let key = s.store_key(PREFIX, b"id");
    for len in [0usize, 1, 15, 16, 17, 500, 5000] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let a = s.seal(&key, &plain);
        let b = s.seal(&key, &plain);
        assert_eq!(a.len(), len + SEAL_OVERHEAD);
        assert_ne!(a, b, "a random nonce per value");
        assert_eq!(s.open(&key, &a).unwrap(), plain);
        assert_eq!(s.open(&key, &b).unwrap(), plain);
        assert_eq!(a[1..5], s.sealing_key_id(), "the key id is in the value");
    }
}

#[test]
fn sealed_value_contains_neither_plaintext_nor_id() {
    let s = set(K1);
    let id = b"0123456789abcdef0123456789abcdef";
    let plain = b"a TLS session: master secret, cipher suite, certificate chain .............".repeat(4);
    let key = s.store_key(PREFIX, id);
    let v = s.seal(&key, &plain);
    assert!(!contains(&v, &plain[..8]) && !contains(&v, &plain[40..48]));
    assert!(!contains(&v, &id[..8]) && !contains(&key, &id[..8]) && !contains(&key, &hex(&id[..8])));
}

#[test]
fn rotation_old_values_open_after_a_new_key_is_prepended() {
    let old = set(K1);
    let id = b"session";
    let old_store_key = old.store_key(PREFIX, id);
    let v = old.seal(&old_store_key, b"old session");
    let rotated = set(&format!("{K2}\n{K1}\n"));
    assert_ne!(rotated.sealing_key_id(), old.sealing_key_id());
    // A lookup during the overlap tries every key's store key; the old one finds the value.
    let keys: Vec<Vec<u8>> = rotated.store_keys(PREFIX, id).collect();
    assert_eq!(keys[1], old_store_key);
    assert_eq!(rotated.open(&keys[1], &v).unwrap(), b"old session");
    // New values are sealed with the new key, which the old set cannot open.
    let k = rotated.store_key(PREFIX, id);
    let nv = rotated.seal(&k, b"new session");
    assert_eq!(nv[1..5], set(K2).sealing_key_id());
    assert_eq!(old.open(&k, &nv), Err(OpenError::UnknownKey));
    // Once the old key is removed, its values are misses.
    assert_eq!(set(K2).open(&old_store_key, &v), Err(OpenError::UnknownKey));
}

#[test]
fn a_value_moved_to_another_store_key_does_not_open() {
    let s = set(K1);
    let a = s.store_key(PREFIX, b"a");
    let b = s.store_key(PREFIX, b"b");
    let v = s.seal(&a, b"session of a");
    assert_eq!(s.open(&b, &v), Err(OpenError::Forged));
}

#[test]
fn tampering_with_any_byte_fails() {
    let s = set(K1);
    let key = s.store_key(PREFIX, b"id");
    let v = s.seal(&key, b"session bytes to protect");
    for i in 0..v.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut t = v.clone();
            t[i] ^= flip;
            let e = s.open(&key, &t).unwrap_err();
            let expected = match i {
                0 => OpenError::BadVersion,
                1..=4 => OpenError::UnknownKey,
                _ => OpenError::Forged,
            };
            assert_eq!(e, expected, "byte {i} ^ {flip:#x}");
        }
    }
}

#[test]
fn truncated_or_extended_values_fail() {
    let s = set(K1);
    let key = s.store_key(PREFIX, b"id");
    let v = s.seal(&key, b"session");
    for n in 0..v.len() {
        let e = s.open(&key, &v[..n]).unwrap_err();
        if n < SEAL_OVERHEAD {
            assert_eq!(e, OpenError::Truncated, "{n} bytes");
        } else {
            assert_eq!(e, OpenError::Forged, "{n} bytes");
        }
    }
    let mut longer = v.clone();
    longer.push(0);
    assert_eq!(s.open(&key, &longer), Err(OpenError::Forged));
}

#[test]
fn nonce_reuse_is_not_how_seal_works_but_the_format_is_fixed() {
    // With a fixed nonce the output is deterministic: the layout is version, key id, nonce,
    // ciphertext and tag.
    let s = set(K1);
    let key = s.store_key(PREFIX, b"id");
    let v = s.seal_with_nonce(&key, b"xyz", [9; NONCE_LEN]);
    assert_eq!(v[0], 1);
    assert_eq!(v[5..17], [9; NONCE_LEN]);
    assert_eq!(v.len(), 3 + SEAL_OVERHEAD);
    assert_eq!(v, s.seal_with_nonce(&key, b"xyz", [9; NONCE_LEN]));
    assert_eq!(s.open(&key, &v).unwrap(), b"xyz");
}

proptest! {
    #[test]
    fn open_never_panics_on_arbitrary_values(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let s = set(K1);
        let key = s.store_key(PREFIX, b"id");
        prop_assert!(s.open(&key, &bytes).is_err());
    }

    #[test]
    fn any_plaintext_roundtrips(plain in proptest::collection::vec(any::<u8>(), 0..600), id in proptest::collection::vec(any::<u8>(), 0..64)) {
        let s = set(&format!("{K2}\n{K1}\n"));
        let key = s.store_key(PREFIX, &id);
        prop_assert_eq!(s.open(&key, &s.seal(&key, &plain)).unwrap(), plain);
    }

    #[test]
    fn key_file_parse_never_panics(text in "[0-9a-fA-F# \\n\\té]{0,300}") {
        let _ = KeySet::parse(&text);
    }
}
