//! A bounds-checked peek at a TLS ClientHello: the TLS 1.2 legacy session ID, the TLS 1.3
//! `pre_shared_key` identities and the SNI, read before the bytes reach rustls.
//!
//! What it is: a parser of the first bytes a client sent, one or more TLS plaintext records
//! (RFC 8446 §5.1, RFC 5246 §6.2.1) carrying one `ClientHello` handshake message (RFC 8446
//! §4.1.2, RFC 5246 §7.4.1.2), possibly fragmented over several records and possibly not all
//! here yet. It answers [`Peek::Incomplete`], [`Peek::NotClientHello`] with a reason, or
//! [`Peek::ClientHello`] with the [`HelloIds`] a session store is keyed by: the
//! `legacy_session_id` (0..=32 bytes; a TLS 1.2 resumption), the first identity of the
//! `pre_shared_key` extension (RFC 8446 §4.2.11; a TLS 1.3 resumption), whether
//! `supported_versions` offers TLS 1.3, and the `server_name` (RFC 6066 §3).
//!
//! What it is not: a validator. It checks every length against its container and never reads
//! past one, but it does not judge cipher suites, extension order, duplicates or binders:
//! rustls sees the same bytes next and decides. It never panics and never looks at more than
//! [`MAX_PEEK_BYTES`] of input; records longer than 2^14 bytes (RFC 8446 §5.1) or of another
//! content type before the message is complete end the peek.

use std::borrow::Cow;

/// Most input bytes the peek ever looks at, record headers included. A ClientHello that needs
/// more is answered [`NotReason::TooLarge`]; real ones are a few hundred bytes to 2 KiB
/// (with post-quantum key shares).
pub const MAX_PEEK_BYTES: usize = 64 * 1024;

/// Largest record payload a client may send (RFC 8446 §5.1: 2^14).
pub const MAX_RECORD_PAYLOAD: usize = 16 * 1024;

/// TLS record header: type (1), legacy_record_version (2), length (2).
const RECORD_HEADER: usize = 5;
/// ContentType handshake (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// HandshakeType client_hello (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// ExtensionType values (RFC 8446 §4.2).
const EXT_SERVER_NAME: u16 = 0;
const EXT_PRE_SHARED_KEY: u16 = 41;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// ProtocolVersion TLS 1.3 (RFC 8446 §4.2.1).
const TLS13: u16 = 0x0304;
/// NameType host_name (RFC 6066 §3).
const NAME_TYPE_HOST_NAME: u8 = 0;
/// Longest session ID (RFC 5246 §7.4.1.2, RFC 8446 §4.1.2).
pub const MAX_SESSION_ID: usize = 32;

/// What the peek found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peek {
    /// The bytes so far are a valid beginning; call again with more.
    Incomplete,
    /// Not a TLS ClientHello (or not one this peek reads): hand the bytes to rustls anyway and
    /// let it answer; there is nothing to look up.
    NotClientHello(NotReason),
    /// A whole ClientHello was read.
    ClientHello(HelloIds),
}

/// Why [`Peek::NotClientHello`]: one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotReason {
    /// The first record is not a handshake record, or a record of another type came before
    /// the ClientHello was complete.
    NotHandshakeRecord,
    /// `legacy_record_version` is not 3.x.
    BadRecordVersion,
    /// A record longer than 2^14 bytes, or an empty handshake record.
    BadRecordLength,
    /// The handshake message is not a ClientHello.
    NotClientHello,
    /// The ClientHello (with its record headers) does not fit in [`MAX_PEEK_BYTES`].
    TooLarge,
    /// A length inside the ClientHello runs past its container, or a field is out of range.
    Malformed,
}

/// The identifiers of a ClientHello that a session store is keyed by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelloIds {
    /// `legacy_session_id`, 0..=32 bytes. A TLS 1.3 client in middlebox-compatibility mode
    /// sends 32 random bytes here, so look it up only when no PSK is offered.
    pub session_id: SessionId,
    /// Whether the `pre_shared_key` extension is present.
    pub psk_present: bool,
    /// The first `PskIdentity.identity` of `pre_shared_key` (the ticket; with stateful
    /// resumption, the store's key). `None` without the extension.
    pub psk_identity: Option<Vec<u8>>,
    /// How many identities the extension offers.
    pub psk_identities: usize,
    /// `supported_versions` lists TLS 1.3.
    pub offers_tls13: bool,
    /// The first `host_name` of `server_name`, when it is valid UTF-8.
    pub sni: Option<String>,
}

impl HelloIds {
    /// The identifier to look up: the first PSK identity when the client offers one (TLS 1.3);
    /// else a non-empty session ID when the handshake will be TLS 1.2 (the client does not
    /// offer TLS 1.3, or the server has it off: `server_tls13`); else nothing (a full
    /// handshake). A TLS 1.3 client sends 32 random bytes as its session ID
    /// (middlebox compatibility, RFC 8446 §D.4): looking those up would cost every new client
    /// a store round trip for a certain miss.
    pub fn lookup_id(&self, server_tls13: bool) -> Option<&[u8]> {
        match &self.psk_identity {
            Some(id) if !id.is_empty() => Some(id),
            _ if self.psk_present => None,
            _ if self.offers_tls13 && server_tls13 => None,
            _ if !self.session_id.is_empty() => Some(self.session_id.as_bytes()),
            _ => None,
        }
    }
}

/// A `legacy_session_id`: up to 32 bytes, inline.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SessionId {
    len: u8,
    bytes: [u8; MAX_SESSION_ID],
}

impl SessionId {
    /// `None` when `id` is longer than 32 bytes.
    pub fn new(id: &[u8]) -> Option<Self> {
        let mut bytes = [0; MAX_SESSION_ID];
        bytes.get_mut(..id.len())?.copy_from_slice(id);
        Some(Self { len: id.len() as u8, bytes })
    }

    /// The ID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// No session ID.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Peeks at the first bytes a client sent. Pure: call it again on the grown buffer when it
/// answers [`Peek::Incomplete`] (the caller never needs to keep more than [`MAX_PEEK_BYTES`]).
pub fn peek(input: &[u8]) -> Peek {
    match gather(input) {
        Ok(msg) => match parse_client_hello(&msg) {
            Some(ids) => Peek::ClientHello(ids),
            None => Peek::NotClientHello(NotReason::Malformed),
        },
        Err(p) => p,
    }
}

/// Reassembles the ClientHello body (without its 4-byte handshake header) from the records.
/// Borrows when the whole message sits in the first record (the usual case).
fn gather(input: &[u8]) -> Result<Cow<'_, [u8]>, Peek> {
    let input = &input[..input.len().min(MAX_PEEK_BYTES)];
    let mut rest = input;
    // Handshake bytes gathered so far, when they span records.
    let mut joined: Option<Vec<u8>> = None;
    let mut first: &[u8] = &[];
    let mut records = 0usize;
    loop {
        let Some(header) = rest.get(..RECORD_HEADER) else {
            return Err(incomplete_or_too_large(input));
        };
        if header[0] != CONTENT_HANDSHAKE {
            return Err(Peek::NotClientHello(NotReason::NotHandshakeRecord));
        }
        if header[1] != 3 {
            return Err(Peek::NotClientHello(NotReason::BadRecordVersion));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD_PAYLOAD {
            // RFC 8446 §5.1: zero-length handshake fragments MUST NOT be sent.
            return Err(Peek::NotClientHello(NotReason::BadRecordLength));
        }
        let payload_all = &rest[RECORD_HEADER..];
        let complete_record = payload_all.len() >= len;
        let payload = &payload_all[..len.min(payload_all.len())];
        // The handshake bytes seen so far, across records.
        let hs: &[u8] = match joined.as_mut() {
            None if records == 0 => {
                first = payload;
                first
            }
            None => {
                let mut v = Vec::with_capacity((first.len() + payload.len()).min(MAX_PEEK_BYTES));
                v.extend_from_slice(first);
                v.extend_from_slice(payload);
                joined.insert(v)
            }
            Some(v) => {
                v.extend_from_slice(payload);
                v
            }
        };
        records += 1;
        if let Some(&t) = hs.first()
            && t != HANDSHAKE_CLIENT_HELLO
        {
            return Err(Peek::NotClientHello(NotReason::NotClientHello));
        }
        if hs.len() >= 4 {
            let body_len = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
            // The whole message and at least one record header per 2^14 bytes must fit.
            let min_records = (4 + body_len).div_ceil(MAX_RECORD_PAYLOAD);
            if 4 + body_len + min_records * RECORD_HEADER > MAX_PEEK_BYTES {
                return Err(Peek::NotClientHello(NotReason::TooLarge));
            }
            if hs.len() >= 4 + body_len {
                return Ok(match joined {
                    None => Cow::Borrowed(&first[4..4 + body_len]),
                    Some(mut v) => {
                        v.truncate(4 + body_len);
                        v.drain(..4);
                        Cow::Owned(v)
                    }
                });
            }
        }
        if !complete_record {
            return Err(incomplete_or_too_large(input));
        }
        rest = &payload_all[len..];
    }
}

/// Out of input: more may come, unless the peek's byte budget is spent.
fn incomplete_or_too_large(input: &[u8]) -> Peek {
    if input.len() >= MAX_PEEK_BYTES { Peek::NotClientHello(NotReason::TooLarge) } else { Peek::Incomplete }
}

/// A cursor that never reads past its slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a ClientHello body (RFC 8446 §4.1.2). `None`: malformed.
fn parse_client_hello(body: &[u8]) -> Option<HelloIds> {
    let mut r = Reader(body);
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let session_id = SessionId::new(r.vec8()?)?;
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    let compression = r.vec8()?;
    if compression.is_empty() {
        return None;
    }
    let mut ids = HelloIds { session_id, ..HelloIds::default() };
    if r.is_empty() {
        // A TLS 1.2 ClientHello may carry no extensions at all (RFC 5246 §7.4.1.2).
        return Some(ids);
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        match ty {
            EXT_SERVER_NAME if ids.sni.is_none() => ids.sni = parse_sni(data)?,
            EXT_SUPPORTED_VERSIONS => {
                let mut v = Reader(data);
                let mut versions = Reader(v.vec8()?);
                while !versions.is_empty() {
                    if versions.u16()? == TLS13 {
                        ids.offers_tls13 = true;
                    }
                }
            }
            EXT_PRE_SHARED_KEY if !ids.psk_present => {
                ids.psk_present = true;
                // OfferedPsks: identities<7..2^16-1>, binders<33..2^16-1>.
                let mut psk = Reader(data);
                let mut identities = Reader(psk.vec16()?);
                while !identities.is_empty() {
                    let identity = identities.vec16()?;
                    let _obfuscated_ticket_age = identities.take(4)?;
                    if identity.is_empty() {
                        return None;
                    }
                    if ids.psk_identity.is_none() {
                        ids.psk_identity = Some(identity.to_vec());
                    }
                    ids.psk_identities += 1;
                }
                if ids.psk_identities == 0 {
                    return None;
                }
            }
            _ => {}
        }
    }
    Some(ids)
}

/// `server_name` (RFC 6066 §3): the first host_name. `None`: malformed; `Some(None)`: no
/// usable name.
fn parse_sni(data: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16()?);
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == NAME_TYPE_HOST_NAME {
            return Some(std::str::from_utf8(name).ok().map(str::to_owned));
        }
    }
    Some(None)
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
