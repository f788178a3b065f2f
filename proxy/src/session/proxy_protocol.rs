//! The PROXY protocol version 2 header that sluice sends first on a backend connection
//! (haproxy.org doc/proxy-protocol.txt §2.2), so the backend learns the client's address and
//! what the TLS handshake agreed.
//!
//! What it is: an encoder. The header is the 12-byte signature, version 2 / command PROXY
//! (0x21), AF_INET + STREAM (0x11, TCP over IPv4) or AF_INET6 + STREAM (0x21, TCP over IPv6), the
//! length of the rest, the client's (source) and sluice's listener (destination) addresses and
//! ports, then TLVs (§2.2.7, §2.2.8): PP2_TYPE_ALPN (the
//! protocol agreed), PP2_TYPE_AUTHORITY (the SNI name), and PP2_TYPE_SSL with the client flags
//! (PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS), `verify` (0 when the client
//! presented a certificate that was verified) and the sub-TLVs PP2_SUBTYPE_SSL_VERSION
//! (`TLSv1.3`, as OpenSSL names versions), PP2_SUBTYPE_SSL_CIPHER (the IANA name of the suite,
//! e.g. `TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`) and
//! PP2_SUBTYPE_SSL_CN (the client certificate's subject commonName, with mTLS).
//!
//! What it is not: a parser (the bench backend parses strictly; the integration tests check what
//! it saw), nor the CRC32C or UNIQUE_ID TLVs.

use std::net::{IpAddr, SocketAddr};

use sluice_tls::rustls::{CipherSuite, ProtocolVersion};

pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY (§2.2).
const VERSION_PROXY: u8 = 0x21;
/// AF_INET, STREAM.
const INET_STREAM: u8 = 0x11;
/// AF_INET6, STREAM.
const INET6_STREAM: u8 = 0x21;

pub const PP2_TYPE_ALPN: u8 = 0x01;
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
pub const PP2_CLIENT_SSL: u8 = 0x01;
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// What a TLS listener tells the backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFacts {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: String,
    /// The IANA name of the cipher suite.
    pub cipher: String,
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate was sent on this connection (a full mTLS handshake) or belongs
    /// to the resumed session.
    pub client_cert_conn: bool,
    pub client_cert_sess: bool,
    /// The client certificate's subject commonName.
    pub client_cn: Option<String>,
}

impl TlsFacts {
    /// From a completed handshake: what it agreed and the client's certificate chain (end-entity
    /// first; rustls verified it against the listener's `client_ca` before the handshake ended).
    pub fn new(info: &sluice_tls::HandshakeInfo, client_chain: Option<&[impl AsRef<[u8]>]>) -> Self {
        let leaf = client_chain.and_then(|c| c.first()).map(AsRef::as_ref);
        Self {
            version: version_name(info.version),
            cipher: cipher_name(info.cipher_suite),
            sni: info.sni.clone(),
            alpn: info.alpn.clone(),
            client_cert_conn: leaf.is_some() && !info.resumed,
            client_cert_sess: leaf.is_some(),
            client_cn: leaf.and_then(subject_common_name),
        }
    }
}

/// OpenSSL's names of protocol versions (what HAProxy sends in PP2_SUBTYPE_SSL_VERSION).
pub fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        ProtocolVersion::TLSv1_1 => "TLSv1.1".into(),
        ProtocolVersion::TLSv1_0 => "TLSv1".into(),
        other => format!("{other:?}"),
    }
}

/// The IANA name of a cipher suite (rustls spells TLS 1.3 suites `TLS13_*`; IANA `TLS_*`).
pub fn cipher_name(c: CipherSuite) -> String {
    match c.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("{c:?}"),
    }
}

/// Appends one TLV (§2.2.7): type, 16-bit big-endian length, value (cut at 65535 bytes).
fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let value = &value[..value.len().min(u16::MAX as usize)];
    out.push(kind);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// The header for a connection from `client` to sluice's listener `listener`, with the TLS
/// facts of a TLS listener.
pub fn encode(client: SocketAddr, listener: SocketAddr, tls: Option<&TlsFacts>) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    // A TCP connection has one family; were they to differ, both are written as IPv6 (an IPv4
    // address as ::ffff:a.b.c.d).
    let family = match (client.ip(), listener.ip()) {
        (IpAddr::V4(c), IpAddr::V4(l)) => {
            body.extend_from_slice(&c.octets());
            body.extend_from_slice(&l.octets());
            INET_STREAM
        }
        (c, l) => {
            for ip in [c, l] {
                let v6 = match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                body.extend_from_slice(&v6.octets());
            }
            INET6_STREAM
        }
    };
    body.extend_from_slice(&client.port().to_be_bytes());
    body.extend_from_slice(&listener.port().to_be_bytes());
    if let Some(t) = tls {
        if let Some(alpn) = t.alpn.as_deref().filter(|a| !a.is_empty()) {
            push_tlv(&mut body, PP2_TYPE_ALPN, alpn);
        }
        if let Some(sni) = t.sni.as_deref().filter(|s| !s.is_empty()) {
            push_tlv(&mut body, PP2_TYPE_AUTHORITY, sni.as_bytes());
        }
        // §2.2.5: client flags, then `verify` (0: a client certificate was presented and
        // verified), then sub-TLVs.
        let mut ssl = vec![PP2_CLIENT_SSL];
        if t.client_cert_conn {
            ssl[0] |= PP2_CLIENT_CERT_CONN;
        }
        if t.client_cert_sess {
            ssl[0] |= PP2_CLIENT_CERT_SESS;
        }
        let verify: u32 = if t.client_cert_sess { 0 } else { 1 };
        ssl.extend_from_slice(&verify.to_be_bytes());
        push_tlv(&mut ssl, PP2_SUBTYPE_SSL_VERSION, t.version.as_bytes());
        if let Some(cn) = t.client_cn.as_deref().filter(|c| !c.is_empty()) {
            push_tlv(&mut ssl, PP2_SUBTYPE_SSL_CN, cn.as_bytes());
        }
        push_tlv(&mut ssl, PP2_SUBTYPE_SSL_CIPHER, t.cipher.as_bytes());
        push_tlv(&mut body, PP2_TYPE_SSL, &ssl);
    }
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_PROXY);
    out.push(family);
    out.extend_from_slice(&(body.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// One DER element (X.690 §8.1): its tag, its contents, and what follows it. `None` when the
/// input is cut short or uses forms DER forbids (indefinite length, lengths over 4 bytes).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), 2 + n)
    };
    let contents = input.get(head..head.checked_add(len)?)?;
    Some((tag, contents, input.get(head + len..)?))
}

/// The subject's commonName (OID 2.5.4.3) of an X.509 certificate in DER (RFC 5280 §4.1), the
/// last one when there are several; `None` when there is none or the DER does not parse.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID_CN: [u8; 3] = [0x55, 0x04, 0x03];
    let (SEQUENCE, certificate, _) = der_next(cert)? else { return None };
    let (SEQUENCE, tbs, _) = der_next(certificate)? else { return None };
    let mut rest = tbs;
    // version [0] EXPLICIT (optional), serialNumber, signature, issuer, validity, subject.
    let (tag, _, after) = der_next(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = der_next(rest)?.2;
    }
    let (SEQUENCE, mut rdns, _) = der_next(rest)? else { return None };
    let mut cn = None;
    while !rdns.is_empty() {
        let (tag, mut set, next) = der_next(rdns)?;
        rdns = next;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (tag, attr, next) = der_next(set)?;
            set = next;
            if tag != SEQUENCE {
                return None;
            }
            let (oid_tag, oid, value) = der_next(attr)?;
            if oid_tag == 0x06 && oid == OID_CN {
                let (kind, text, _) = der_next(value)?;
                cn = match kind {
                    // UTF8String, PrintableString, IA5String, TeletexString (taken as UTF-8).
                    0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(text).ok().map(str::to_owned),
                    // BMPString: UTF-16BE.
                    0x1e => {
                        let units: Vec<u16> = text.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                        String::from_utf16(&units).ok()
                    }
                    _ => None,
                };
            }
        }
    }
    cn
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    const CLIENT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 40000));
    const LISTENER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 443));

    #[test]
    fn plain_header_is_the_spec_bytes() {
        let h = encode(CLIENT, LISTENER, None);
        let want: Vec<u8> = [
            &b"\r\n\r\n\0\r\nQUIT\n"[..],
            &[0x21, 0x11, 0x00, 0x0c],
            &[198, 51, 100, 1, 198, 51, 100, 2],
            &[0x9c, 0x40, 0x01, 0xbb],
        ]
        .concat();
        assert_eq!(h, want);
    }

    #[test]
    fn ipv6_header_is_tcp6_with_sixteen_byte_addresses() {
        let client = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1), 40000, 0, 0));
        let listener = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2), 443, 0, 0));
        let h = encode(client, listener, None);
        let want: Vec<u8> = [
            &b"\r\n\r\n\0\r\nQUIT\n"[..],
            &[0x21, 0x21, 0x00, 0x24],
            &[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            &[0x9c, 0x40, 0x01, 0xbb],
        ]
        .concat();
        assert_eq!(h, want);
    }

    /// Walks TLVs the way §2.2.7 lays them out: (type, value) pairs.
    fn tlvs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
            out.push((b[0], b[3..3 + len].to_vec()));
            b = &b[3 + len..];
        }
        out
    }

    #[test]
    fn tls_header_carries_alpn_sni_and_the_ssl_tlv() {
        let facts = TlsFacts {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            sni: Some("a.test".into()),
            alpn: Some(b"h2".to_vec()),
            client_cert_conn: true,
            client_cert_sess: true,
            client_cn: Some("alice".into()),
        };
        let h = encode(CLIENT, LISTENER, Some(&facts));
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!((h[12], h[13]), (0x21, 0x11));
        let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
        assert_eq!(h.len(), 16 + len, "the length covers addresses and TLVs exactly");
        let t = tlvs(&h[28..]);
        assert_eq!(t[0], (PP2_TYPE_ALPN, b"h2".to_vec()));
        assert_eq!(t[1], (PP2_TYPE_AUTHORITY, b"a.test".to_vec()));
        assert_eq!(t[2].0, PP2_TYPE_SSL);
        let ssl = &t[2].1;
        assert_eq!(ssl[0], PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS);
        assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verify: 0, the certificate was verified");
        let sub = tlvs(&ssl[5..]);
        assert_eq!(
            sub,
            [
                (PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3".to_vec()),
                (PP2_SUBTYPE_SSL_CN, b"alice".to_vec()),
                (PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_128_GCM_SHA256".to_vec()),
            ]
        );
        // Without a client certificate: only PP2_CLIENT_SSL, verify non-zero, no CN.
        let anon = TlsFacts { client_cert_conn: false, client_cert_sess: false, client_cn: None, alpn: None, ..facts };
        let h = encode(CLIENT, LISTENER, Some(&anon));
        let t = tlvs(&h[28..]);
        assert_eq!(t.len(), 2, "no ALPN TLV when none was agreed");
        let ssl = &t[1].1;
        assert_eq!(ssl[0], PP2_CLIENT_SSL);
        assert_ne!(&ssl[1..5], &[0, 0, 0, 0]);
        assert!(tlvs(&ssl[5..]).iter().all(|(k, _)| *k != PP2_SUBTYPE_SSL_CN));
    }

    #[test]
    fn names_of_versions_and_suites() {
        assert_eq!(version_name(ProtocolVersion::TLSv1_3), "TLSv1.3");
        assert_eq!(version_name(ProtocolVersion::TLSv1_2), "TLSv1.2");
        assert_eq!(cipher_name(CipherSuite::TLS13_AES_256_GCM_SHA384), "TLS_AES_256_GCM_SHA384");
        assert_eq!(
            cipher_name(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        );
    }

    #[test]
    fn common_name_of_generated_certificates() {
        let ca = sluice_tls::testcerts::Ca::new().unwrap();
        let client = ca.client("alice.clients.test", sluice_tls::testcerts::KeyKind::EcdsaP256).unwrap();
        assert_eq!(subject_common_name(&client.chain[0]).as_deref(), Some("alice.clients.test"));
        assert_eq!(subject_common_name(&ca.cert_der()).as_deref(), Some("sluice test CA"));
        let rsa = ca.server(&["b.test"], sluice_tls::testcerts::KeyKind::Rsa2048).unwrap();
        assert_eq!(subject_common_name(&rsa.chain[0]).as_deref(), Some("b.test"));
    }

    #[test]
    fn common_name_never_panics_on_cut_or_corrupt_der() {
        let ca = sluice_tls::testcerts::Ca::new().unwrap();
        let der = ca.cert_der().to_vec();
        for len in 0..der.len() {
            let _ = subject_common_name(&der[..len]);
        }
        let mut x = 0x1234_5678u32;
        for i in 0..der.len() {
            let mut bad = der.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bad[i] = x as u8;
            let _ = subject_common_name(&bad);
        }
        assert_eq!(subject_common_name(&[]), None);
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512))| {
            let _ = subject_common_name(&bytes);
            let mut framed = vec![0x30, 0x82, (bytes.len() >> 8) as u8, bytes.len() as u8];
            framed.extend_from_slice(&bytes);
            let _ = subject_common_name(&framed);
        });
        assert_eq!(subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
