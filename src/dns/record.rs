//! The mdgate DNS records: parsing and formatting, with no I/O.
//!
//! A server `F` publishes (see `docs/protocol.md` § Keys):
//!
//! * the **index** at `_mdgate.F` (TXT): `v=mdgate1; s=sel1,sel2; fp=8443; wp=443`;
//! * one **key record** per selector at `<sel>._mdgate.F` (TXT):
//!   `v=mdgate1; u=tls|sig; a=p256|ed25519; k=<base64 SPKI>` or, for TLS
//!   keys, `h=<base64 SHA-256 of the SPKI>`; an empty `k=`/`h=` revokes;
//! * where the zone is DNSSEC-signed, **TLSA** `3 1 1` at `_<fp>._tcp.F`.
//!
//! Data flow: the resolver hands the TXT RRset of one name, as raw
//! character-strings per record, to [`parse_index_rrset`] or
//! [`parse_key_rrset`]. Each record's strings are concatenated (RFC 7208
//! §3.3); records that do not start with `v=mdgate1` are not ours and are
//! ignored; exactly one of ours may remain (two are ambiguous, an error);
//! that one is parsed as an RFC 6376 §3.2 tag list into [`IndexRecord`] or
//! [`KeyRecord`]. The `format`/`Display` side produces the same text, so
//! `mdgate dns-records` and the parser cannot drift apart (a proptest
//! checks the round trip).
//!
//! Every function here is total: arbitrary bytes give an error, never a
//! panic (a proptest and the `fuzz/` target check that). Error messages
//! quote at most a short, escaped prefix of what was received, because the
//! input comes from someone else's DNS.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The version tag value this code implements.
pub const VERSION: &str = "mdgate1";
/// The label under the server's FQDN where the index and key records live.
pub const LABEL: &str = "_mdgate";
/// Most selectors an index may list.
pub const MAX_SELECTORS: usize = 16;
/// Longest selector (one DNS label).
pub const MAX_SELECTOR_LEN: usize = 63;
/// Federation port when the index has no `fp=`.
pub const DEFAULT_FEDERATION_PORT: u16 = 8443;
/// Port of the key document when the index has no `wp=`.
pub const DEFAULT_WEB_PORT: u16 = 443;
/// Longest character-string in a TXT record (RFC 1035 §3.3).
pub const TXT_STRING_MAX: usize = 255;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the
/// 32-byte key.
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point
/// (RFC 5480), before the 64 coordinate bytes.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
/// The same with a compressed point, before the 32-byte x coordinate
/// (the `02`/`03` prefix byte is checked separately).
const P256_COMPRESSED_SPKI_PREFIX: &[u8] = &[
    0x30, 0x39, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x22, 0x00,
];

/// Why a record could not be used. Each variant says what to fix in the
/// zone; none carries more than a short escaped excerpt of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The text is not a tag list (`tag=value; tag=value`).
    #[error("not a tag list at byte {offset}: {reason}")]
    Syntax { offset: usize, reason: &'static str },
    /// A tag name outside `[a-z][a-z0-9_]*`.
    #[error("invalid tag name {0:?}: tag names are lower case letters, digits and '_'")]
    BadTagName(String),
    /// A tag given twice (RFC 6376 §3.2 makes the whole record invalid).
    #[error("tag {0:?} appears twice; each tag may appear once")]
    DuplicateTag(String),
    /// `v=mdgate1` is not the first tag.
    #[error("v=mdgate1 must be the first tag")]
    VersionNotFirst,
    /// A required tag is absent.
    #[error("required tag {0}= is missing")]
    MissingTag(&'static str),
    /// `s=` is present but lists no selector.
    #[error("s= lists no selector; publish at least one, or remove the index")]
    EmptySelectorList,
    /// A selector outside `[a-z0-9][a-z0-9-]{0,62}`.
    #[error(
        "invalid selector {0:?}: use 1 to 63 lower case letters, digits and '-', \
         not starting with '-'"
    )]
    BadSelector(String),
    /// The same selector twice in `s=`.
    #[error("selector {0:?} is listed twice in s=")]
    DuplicateSelector(String),
    /// More than [`MAX_SELECTORS`] selectors.
    #[error("s= lists {0} selectors; at most 16 are allowed")]
    TooManySelectors(usize),
    /// `fp=` or `wp=` is not a port number 1..65535.
    #[error("{tag}= must be a port number from 1 to 65535, not {value:?}")]
    BadPort { tag: &'static str, value: String },
    /// `u=` other than `tls` or `sig`.
    #[error("u= must be tls or sig, not {0:?}")]
    UnknownUse(String),
    /// `a=` other than `p256` or `ed25519`.
    #[error("a= must be p256 or ed25519, not {0:?}")]
    UnknownAlgorithm(String),
    /// `u=sig` with `a=p256`.
    #[error("signing keys (u=sig) must be ed25519")]
    SigKeyNotEd25519,
    /// `u=sig` with `h=`: a verifier needs the key itself.
    #[error("signing keys (u=sig) need k= with the public key; h= is for tls keys only")]
    HashForSigKey,
    /// Both `k=` and `h=`.
    #[error("give k= or h=, not both")]
    KeyAndHash,
    /// Neither `k=` nor `h=`.
    #[error("the key is missing: add k= (or, for tls keys, h=)")]
    MissingKey,
    /// `k=` or `h=` is not standard base64.
    #[error("{tag}= is not valid standard base64")]
    BadBase64 { tag: &'static str },
    /// `h=` does not decode to 32 bytes.
    #[error("h= decodes to {0} bytes; a SHA-256 is 32")]
    BadHashLength(usize),
    /// `k=` is not a DER SubjectPublicKeyInfo of a supported key.
    #[error("k= is not a DER SubjectPublicKeyInfo of a P-256 or Ed25519 key ({0} bytes)")]
    BadSpki(usize),
    /// `k=` holds a key of another algorithm than `a=` says.
    #[error("a={declared} but k= holds a {found} key")]
    AlgorithmMismatch {
        declared: KeyAlgorithm,
        found: KeyAlgorithm,
    },
    /// More than one `v=mdgate1` record at one name.
    #[error("{0} TXT records with v=mdgate1 at one name; publish exactly one")]
    Ambiguous(usize),
}

/// A key selector: one DNS label, `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector(String);

impl Selector {
    /// Checks the syntax (lower case only: selectors are compared exactly).
    pub fn parse(text: &str) -> Result<Selector, RecordError> {
        let bytes = text.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_SELECTOR_LEN
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if valid {
            Ok(Selector(text.to_owned()))
        } else {
            Err(RecordError::BadSelector(excerpt(text)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The index record at `_mdgate.F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRecord {
    /// Live selectors, in the published order, without duplicates.
    pub selectors: Vec<Selector>,
    /// `fp=`: the federation listener's port.
    pub federation_port: u16,
    /// `wp=`: the HTTPS port of the key document.
    pub web_port: u16,
}

/// `u=`: what a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUse {
    /// The TLS certificate key (client and server).
    Tls,
    /// Signs grant tokens, approvals and the key document.
    Sig,
}

/// `a=`: the key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA over P-256.
    P256,
    /// Ed25519.
    Ed25519,
}

/// What a key record says about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// `k=`: the DER SubjectPublicKeyInfo.
    Spki(Vec<u8>),
    /// `h=`: the SHA-256 of the DER SubjectPublicKeyInfo (TLS keys only).
    SpkiSha256([u8; 32]),
    /// `k=` or `h=` present but empty: the selector is revoked.
    Revoked,
}

/// A key record at `<sel>._mdgate.F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub usage: KeyUse,
    pub algorithm: KeyAlgorithm,
    pub material: KeyMaterial,
}

/// A TLSA record's data (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl KeyUse {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::Tls => "tls",
            KeyUse::Sig => "sig",
        }
    }
}

impl fmt::Display for KeyUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::P256 => "p256",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The algorithm of a DER SubjectPublicKeyInfo, if it is one of ours.
    /// DER is canonical, so the exact prefixes of RFC 8410 and RFC 5480
    /// (named curve, uncompressed or compressed point) are the only valid
    /// encodings.
    pub fn of_spki(der: &[u8]) -> Option<KeyAlgorithm> {
        if der.len() == ED25519_SPKI_PREFIX.len() + 32 && der.starts_with(ED25519_SPKI_PREFIX) {
            return Some(KeyAlgorithm::Ed25519);
        }
        if der.len() == P256_SPKI_PREFIX.len() + 64 && der.starts_with(P256_SPKI_PREFIX) {
            return Some(KeyAlgorithm::P256);
        }
        let compressed = P256_COMPRESSED_SPKI_PREFIX.len();
        if der.len() == compressed + 33
            && der.starts_with(P256_COMPRESSED_SPKI_PREFIX)
            && matches!(der[compressed], 0x02 | 0x03)
        {
            return Some(KeyAlgorithm::P256);
        }
        None
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KeyRecord {
    /// The SHA-256 of the key's SubjectPublicKeyInfo; `None` when revoked.
    pub fn spki_sha256(&self) -> Option<[u8; 32]> {
        match &self.material {
            KeyMaterial::Spki(der) => Some(Sha256::digest(der).into()),
            KeyMaterial::SpkiSha256(hash) => Some(*hash),
            KeyMaterial::Revoked => None,
        }
    }

    /// Whether a presented key (the SHA-256 of its SPKI) is this record's
    /// key. A revoked record matches nothing.
    pub fn matches_spki(&self, spki_sha256: &[u8; 32]) -> bool {
        self.spki_sha256().is_some_and(|h| &h == spki_sha256)
    }

    pub fn is_revoked(&self) -> bool {
        self.material == KeyMaterial::Revoked
    }

    /// The DER SubjectPublicKeyInfo, when the record carries it (`k=`).
    pub fn spki(&self) -> Option<&[u8]> {
        match &self.material {
            KeyMaterial::Spki(der) => Some(der),
            _ => None,
        }
    }

    /// A TLS key record for a SubjectPublicKeyInfo, in the `h=` form.
    pub fn tls_hash(algorithm: KeyAlgorithm, spki_der: &[u8]) -> KeyRecord {
        KeyRecord {
            usage: KeyUse::Tls,
            algorithm,
            material: KeyMaterial::SpkiSha256(Sha256::digest(spki_der).into()),
        }
    }
}

impl Tlsa {
    /// A DANE-EE record pinning a key: `3 1 1 <SHA-256 of the SPKI>`.
    pub fn dane_ee(spki_sha256: [u8; 32]) -> Tlsa {
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: spki_sha256.to_vec(),
        }
    }

    /// The pinned SPKI hash when this is a usable `3 1 1` record.
    pub fn dane_ee_spki_sha256(&self) -> Option<[u8; 32]> {
        if (self.usage, self.selector, self.matching) == (3, 1, 1) {
            <[u8; 32]>::try_from(self.data.as_slice()).ok()
        } else {
            None
        }
    }
}

/// The presentation form, `3 1 1 <hex>`, as in a zone file.
impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.usage,
            self.selector,
            self.matching,
            hex::encode(&self.data)
        )
    }
}

/// `v=mdgate1; s=a,b; fp=8443; wp=443`: every tag written, defaults too.
impl fmt::Display for IndexRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v={VERSION}; s=")?;
        for (i, selector) in self.selectors.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(selector.as_str())?;
        }
        write!(f, "; fp={}; wp={}", self.federation_port, self.web_port)
    }
}

/// `v=mdgate1; u=tls; a=p256; h=...` (standard base64 with padding).
impl fmt::Display for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v={VERSION}; u={}; a={}; ", self.usage, self.algorithm)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        match &self.material {
            KeyMaterial::Spki(der) => write!(f, "k={}", b64.encode(der)),
            KeyMaterial::SpkiSha256(hash) => write!(f, "h={}", b64.encode(hash)),
            // `h=` for TLS keys, so a revoked record keeps the shape of
            // the one it replaces; both spellings revoke.
            KeyMaterial::Revoked => match self.usage {
                KeyUse::Tls => f.write_str("h="),
                KeyUse::Sig => f.write_str("k="),
            },
        }
    }
}

impl IndexRecord {
    /// An index with the default ports.
    pub fn new(selectors: Vec<Selector>) -> IndexRecord {
        IndexRecord {
            selectors,
            federation_port: DEFAULT_FEDERATION_PORT,
            web_port: DEFAULT_WEB_PORT,
        }
    }

    /// Parses one record's text (already concatenated).
    pub fn parse(text: &str) -> Result<IndexRecord, RecordError> {
        let tags = TagList::parse(text)?;
        tags.require_version()?;
        let list = tags.get("s").ok_or(RecordError::MissingTag("s"))?;
        let selectors = parse_selector_list(list)?;
        let federation_port = match tags.get("fp") {
            Some(v) => parse_port("fp", v)?,
            None => DEFAULT_FEDERATION_PORT,
        };
        let web_port = match tags.get("wp") {
            Some(v) => parse_port("wp", v)?,
            None => DEFAULT_WEB_PORT,
        };
        Ok(IndexRecord {
            selectors,
            federation_port,
            web_port,
        })
    }

    pub fn contains(&self, selector: &Selector) -> bool {
        self.selectors.contains(selector)
    }
}

impl KeyRecord {
    /// Parses one record's text (already concatenated).
    pub fn parse(text: &str) -> Result<KeyRecord, RecordError> {
        let tags = TagList::parse(text)?;
        tags.require_version()?;
        let usage = match tags.get("u").ok_or(RecordError::MissingTag("u"))? {
            "tls" => KeyUse::Tls,
            "sig" => KeyUse::Sig,
            other => return Err(RecordError::UnknownUse(excerpt(other))),
        };
        let algorithm = match tags.get("a").ok_or(RecordError::MissingTag("a"))? {
            "p256" => KeyAlgorithm::P256,
            "ed25519" => KeyAlgorithm::Ed25519,
            other => return Err(RecordError::UnknownAlgorithm(excerpt(other))),
        };
        if usage == KeyUse::Sig && algorithm != KeyAlgorithm::Ed25519 {
            return Err(RecordError::SigKeyNotEd25519);
        }
        let material = match (tags.get("k"), tags.get("h")) {
            (Some(_), Some(_)) => return Err(RecordError::KeyAndHash),
            (None, None) => return Err(RecordError::MissingKey),
            (None, Some(_)) if usage == KeyUse::Sig => return Err(RecordError::HashForSigKey),
            (Some(""), None) | (None, Some("")) => KeyMaterial::Revoked,
            (Some(k), None) => {
                let der = decode_base64("k", k)?;
                match KeyAlgorithm::of_spki(&der) {
                    Some(found) if found == algorithm => KeyMaterial::Spki(der),
                    Some(found) => {
                        return Err(RecordError::AlgorithmMismatch {
                            declared: algorithm,
                            found,
                        })
                    }
                    None => return Err(RecordError::BadSpki(der.len())),
                }
            }
            (None, Some(h)) => {
                let hash = decode_base64("h", h)?;
                let len = hash.len();
                KeyMaterial::SpkiSha256(
                    <[u8; 32]>::try_from(hash).map_err(|_| RecordError::BadHashLength(len))?,
                )
            }
        };
        Ok(KeyRecord {
            usage,
            algorithm,
            material,
        })
    }
}

/// The index of one TXT RRset. Each element of `records` is one TXT
/// record's character-strings. `Ok(None)`: no `v=mdgate1` record there.
pub fn parse_index_rrset<S: AsRef<[u8]>>(
    records: &[Vec<S>],
) -> Result<Option<IndexRecord>, RecordError> {
    select_ours(records)?
        .map(|text| IndexRecord::parse(&text))
        .transpose()
}

/// The key record of one TXT RRset, as [`parse_index_rrset`].
pub fn parse_key_rrset<S: AsRef<[u8]>>(
    records: &[Vec<S>],
) -> Result<Option<KeyRecord>, RecordError> {
    select_ours(records)?
        .map(|text| KeyRecord::parse(&text))
        .transpose()
}

/// The one record of an RRset that is ours (its concatenated text starts
/// with the `v=mdgate1` tag), or `None`; two or more are ambiguous.
pub fn select_ours<S: AsRef<[u8]>>(records: &[Vec<S>]) -> Result<Option<String>, RecordError> {
    let mut ours = Vec::new();
    for strings in records {
        let text = concat_strings(strings);
        if is_ours(&text) {
            // `is_ours` only accepts records whose first bytes are ASCII;
            // the rest may still be invalid UTF-8, which the tag-list
            // parser rejects with a position.
            ours.push(text);
        }
    }
    match ours.len() {
        0 => Ok(None),
        1 => {
            let text = ours.pop().unwrap_or_default();
            match String::from_utf8(text) {
                Ok(text) => Ok(Some(text)),
                Err(e) => Err(RecordError::Syntax {
                    offset: e.utf8_error().valid_up_to(),
                    reason: "bytes that are not printable ASCII",
                }),
            }
        }
        n => Err(RecordError::Ambiguous(n)),
    }
}

/// Concatenates a TXT record's character-strings without separators
/// (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
pub fn concat_strings<S: AsRef<[u8]>>(strings: &[S]) -> Vec<u8> {
    let mut out = Vec::with_capacity(strings.iter().map(|s| s.as_ref().len()).sum());
    for s in strings {
        out.extend_from_slice(s.as_ref());
    }
    out
}

/// Splits record text into character-strings of at most 255 bytes, the
/// form a TXT record needs (the text is ASCII, so any split is valid).
pub fn split_strings(text: &str) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    text.as_bytes()
        .chunks(TXT_STRING_MAX)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect()
}

/// A zone-file line for a TXT record: `name. ttl IN TXT "..." "..."`.
pub fn txt_zone_line(name: &str, ttl: u32, text: &str) -> String {
    let strings: Vec<String> = split_strings(text)
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{} {ttl} IN TXT {}", absolute(name), strings.join(" "))
}

/// A zone-file line for a TLSA record.
pub fn tlsa_zone_line(name: &str, ttl: u32, tlsa: &Tlsa) -> String {
    format!("{} {ttl} IN TLSA {tlsa}", absolute(name))
}

/// `_mdgate.<fqdn>.` (absolute, so no resolver search list applies).
pub fn index_name(fqdn: &str) -> String {
    format!("{LABEL}.{}", absolute(fqdn))
}

/// `<sel>._mdgate.<fqdn>.`
pub fn key_name(selector: &Selector, fqdn: &str) -> String {
    format!("{selector}.{LABEL}.{}", absolute(fqdn))
}

/// `_<port>._tcp.<fqdn>.`
pub fn tlsa_name(port: u16, fqdn: &str) -> String {
    format!("_{port}._tcp.{}", absolute(fqdn))
}

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// Whether a record's text starts with the `v=mdgate1` tag (whitespace
/// allowed around the name and `=`, then the end, `;` or whitespace).
fn is_ours(text: &[u8]) -> bool {
    let rest = skip_ws(text);
    let Some(rest) = rest.strip_prefix(b"v") else {
        return false;
    };
    let Some(rest) = skip_ws(rest).strip_prefix(b"=") else {
        return false;
    };
    let Some(rest) = skip_ws(rest).strip_prefix(VERSION.as_bytes()) else {
        return false;
    };
    match rest.first() {
        None => true,
        Some(b) => *b == b';' || is_ws(*b),
    }
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| is_ws(**b)).count();
    &bytes[n..]
}

/// Whitespace between tags: RFC 6376 FWS without the folding (space, tab;
/// CR and LF are accepted too, as zone editors sometimes leave them).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A parsed tag list: names and values in order, no duplicates.
struct TagList<'a> {
    tags: Vec<(&'a str, &'a str)>,
}

impl<'a> TagList<'a> {
    /// RFC 6376 §3.2: `tag-spec *( ";" tag-spec ) [ ";" ]`, whitespace
    /// around names, `=` and values ignored, values of printable ASCII
    /// except `;` with inner whitespace kept.
    fn parse(text: &'a str) -> Result<TagList<'a>, RecordError> {
        let mut tags: Vec<(&str, &str)> = Vec::new();
        let mut offset = 0;
        let mut specs = text.split(';').peekable();
        while let Some(spec) = specs.next() {
            let last = specs.peek().is_none();
            let start = offset;
            offset += spec.len() + 1;
            if spec.bytes().all(is_ws) {
                // Only the trailing `;` may leave an empty spec (and an
                // empty text is not a tag list at all).
                if last && !tags.is_empty() {
                    break;
                }
                return Err(RecordError::Syntax {
                    offset: start,
                    reason: "empty tag",
                });
            }
            let Some((name, value)) = spec.split_once('=') else {
                return Err(RecordError::Syntax {
                    offset: start,
                    reason: "a tag without '='",
                });
            };
            let name = name.trim_matches(|c: char| c.is_ascii() && is_ws(c as u8));
            let value = value.trim_matches(|c: char| c.is_ascii() && is_ws(c as u8));
            if !valid_tag_name(name) {
                return Err(RecordError::BadTagName(excerpt(name)));
            }
            if let Some(bad) = value
                .bytes()
                .position(|b| !(b.is_ascii_graphic() || is_ws(b)))
            {
                // `value` is a slice of `text`: its offset is the distance
                // between the two starts.
                let at = value.as_ptr() as usize - text.as_ptr() as usize;
                return Err(RecordError::Syntax {
                    offset: at + bad,
                    reason: "bytes that are not printable ASCII",
                });
            }
            if tags.iter().any(|(n, _)| *n == name) {
                return Err(RecordError::DuplicateTag(name.to_owned()));
            }
            tags.push((name, value));
        }
        Ok(TagList { tags })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.tags.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn require_version(&self) -> Result<(), RecordError> {
        match self.tags.first() {
            Some(("v", v)) if *v == VERSION => Ok(()),
            _ => Err(RecordError::VersionNotFirst),
        }
    }
}

fn valid_tag_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_selector_list(list: &str) -> Result<Vec<Selector>, RecordError> {
    if list.is_empty() {
        return Err(RecordError::EmptySelectorList);
    }
    let mut selectors: Vec<Selector> = Vec::new();
    for (i, item) in list.split(',').enumerate() {
        if i >= MAX_SELECTORS {
            return Err(RecordError::TooManySelectors(list.split(',').count()));
        }
        let selector =
            Selector::parse(item.trim_matches(|c: char| c.is_ascii() && is_ws(c as u8)))?;
        if selectors.contains(&selector) {
            return Err(RecordError::DuplicateSelector(selector.0));
        }
        selectors.push(selector);
    }
    Ok(selectors)
}

fn parse_port(tag: &'static str, value: &str) -> Result<u16, RecordError> {
    let bad = || RecordError::BadPort {
        tag,
        value: excerpt(value),
    };
    // Digits only: `u16::from_str` would also take a leading '+'.
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

/// Standard base64, padding optional; whitespace inside the value (a long
/// key split by a zone editor) is removed first, as DKIM does.
fn decode_base64(tag: &'static str, value: &str) -> Result<Vec<u8>, RecordError> {
    let compact: String = value
        .chars()
        .filter(|c| !(c.is_ascii() && is_ws(*c as u8)))
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
    b64.decode(&compact)
        .or_else(|_| nopad.decode(&compact))
        .map_err(|_| RecordError::BadBase64 { tag })
}

/// A short, escaped prefix of untrusted text for an error message.
fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
