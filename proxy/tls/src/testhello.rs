//! Hand-built ClientHellos of any size, for tests of large handshakes (RFC 8446 §4.1.2).
//!
//! What it is: [`client_hello`] writes the TLS records of one ClientHello that offers TLS 1.3
//! and 1.2, X25519, ECDSA and RSA signatures and the real suites, padded to a chosen handshake
//! size with cipher suites nobody implements and extensions of unassigned types, the way a
//! client with many suites and extensions (or a TLS test suite) makes a ClientHello of tens of
//! KiB. The message is cut into records of a chosen payload size (RFC 8446 §5.1 lets a
//! handshake message span records; 16384 is the largest). A server that reads it whole answers
//! with a ServerHello.
//!
//! What it is not: a TLS client. Nothing after the ServerHello can be done with it (the
//! X25519 share is the base point, not a key anyone holds).

/// A record of ContentType handshake (22).
pub const CONTENT_HANDSHAKE: u8 = 22;
/// A record of ContentType alert (21).
pub const CONTENT_ALERT: u8 = 21;
/// HandshakeType server_hello (2).
pub const HANDSHAKE_SERVER_HELLO: u8 = 2;

/// The largest payload of a TLSPlaintext record (RFC 8446 §5.1: 2^14).
pub const MAX_RECORD_PAYLOAD: usize = 16384;

/// The smallest handshake message [`client_hello`] makes (everything but the padding).
pub const MIN_HELLO: usize = 256;

/// The records of one ClientHello for `sni` whose handshake message (header included) is
/// `size` bytes, cut into records of at most `record_payload` bytes. `size` is raised to
/// [`MIN_HELLO`]; sizes above 0xffff + 4 make a message larger than rustls accepts (and a
/// length that no longer fits the fields pads with what fits, so the result is then smaller
/// than asked: check `len()`).
pub fn client_hello(sni: &str, size: usize, record_payload: usize) -> Vec<u8> {
    let hs = handshake(sni, size.max(MIN_HELLO));
    records(CONTENT_HANDSHAKE, &hs, record_payload.clamp(1, MAX_RECORD_PAYLOAD))
}

/// `payload` cut into records of `typ` of at most `max` bytes each (legacy version 0x0301).
pub fn records(typ: u8, payload: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / max.max(1) * 5 + 5);
    for chunk in payload.chunks(max.max(1)) {
        out.extend_from_slice(&[typ, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn u16_len(v: &mut Vec<u8>, body: &[u8]) {
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
}

fn extension(v: &mut Vec<u8>, typ: u16, body: &[u8]) {
    v.extend_from_slice(&typ.to_be_bytes());
    u16_len(v, body);
}

/// The handshake message: header (4) + body.
fn handshake(sni: &str, size: usize) -> Vec<u8> {
    // The real part of the offer.
    let suites: &[u16] = &[0x1301, 0x1302, 0x1303, 0xc02b, 0xc02c, 0xc02f, 0xc030, 0xcca8, 0xcca9];
    let mut exts = Vec::new();
    let mut name = vec![0u8]; // host_name
    u16_len(&mut name, sni.as_bytes());
    let mut list = Vec::new();
    u16_len(&mut list, &name);
    extension(&mut exts, 0, &list); // server_name
    extension(&mut exts, 10, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // supported_groups: x25519, secp256r1
    extension(&mut exts, 11, &[1, 0]); // ec_point_formats: uncompressed
    let sigs: &[u16] = &[0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501];
    let mut s = Vec::new();
    for x in sigs {
        s.extend_from_slice(&x.to_be_bytes());
    }
    let mut sig_body = Vec::new();
    u16_len(&mut sig_body, &s);
    extension(&mut exts, 13, &sig_body); // signature_algorithms
    extension(&mut exts, 43, &[4, 3, 4, 3, 3]); // supported_versions: TLS 1.3, TLS 1.2
    let mut share = vec![0x00, 0x1d, 0, 32, 9];
    share.extend_from_slice(&[0; 31]); // X25519 base point
    let mut shares = Vec::new();
    u16_len(&mut shares, &share);
    extension(&mut exts, 51, &shares); // key_share
    extension(&mut exts, 45, &[1, 1]); // psk_key_exchange_modes: psk_dhe_ke

    // legacy_version, random, legacy_session_id (32), suites, compression, extensions.
    let fixed = 2 + 32 + 1 + 32 + 2 + suites.len() * 2 + 2 + 2 + exts.len();
    let mut pad = size.saturating_sub(4 + fixed);
    // Half of the padding as cipher suites nobody implements (0xe000..0xefff, unassigned), the
    // rest as extensions of unassigned types (0x2000 + i, each at most 4 KiB, each type once:
    // RFC 8446 §4.2). rustls skips unknown suites and extensions.
    let room_suites = (0xfffe - suites.len() * 2) & !1;
    let fake_suites = ((pad / 2) & !1).min(room_suites);
    pad -= fake_suites;
    let mut ext_pad = Vec::new();
    let mut i = 0u16;
    while pad >= 4 && exts.len() + ext_pad.len() + 4 <= 0xffff {
        let room = 0xffff - exts.len() - ext_pad.len() - 4;
        let n = (pad - 4).min(4096).min(room);
        extension(&mut ext_pad, 0x2000 + i, &vec![0x5a; n]);
        pad -= n + 4;
        i += 1;
        if room == n {
            break;
        }
    }
    // A remainder under 4 bytes goes into the suites when it is even, else is dropped.
    let fake_suites = if fake_suites + pad <= room_suites { fake_suites + (pad & !1) } else { fake_suites };

    let mut body = vec![3, 3];
    body.extend((0..32u8).map(|b| b.wrapping_mul(7)));
    body.push(32);
    body.extend((0..32u8).map(|b| b.wrapping_mul(13)));
    let mut cs = Vec::with_capacity(suites.len() * 2 + fake_suites);
    for x in suites {
        cs.extend_from_slice(&x.to_be_bytes());
    }
    for k in 0..fake_suites / 2 {
        cs.extend_from_slice(&(0xe000u16 + (k % 0x1000) as u16).to_be_bytes());
    }
    u16_len(&mut body, &cs);
    body.extend_from_slice(&[1, 0]); // compression: null
    exts.extend_from_slice(&ext_pad);
    u16_len(&mut body, &exts);

    let mut hs = vec![1]; // client_hello
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    hs
}

/// Whether `wire` (what the server sent, from its first byte) starts with a ServerHello
/// (a handshake record whose first message is server_hello, RFC 8446 §4.1.3).
pub fn starts_with_server_hello(wire: &[u8]) -> bool {
    wire.len() >= 6 && wire[0] == CONTENT_HANDSHAKE && wire[5] == HANDSHAKE_SERVER_HELLO
}

/// Whether `wire` starts with an alert record, and its description (RFC 8446 §6).
pub fn first_alert(wire: &[u8]) -> Option<u8> {
    (wire.len() >= 7 && wire[0] == CONTENT_ALERT).then(|| wire[6])
}
