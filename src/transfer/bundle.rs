//! The record bundle: a patient's whole record as mdgate's own JSON Lines
//! document (`mdgate-record/1`), written and read as a stream, with a
//! signed manifest that binds every byte.
//!
//! Format, one JSON object per line, each line ending in `\n`:
//!
//! ```text
//! {"t":"header","format":"mdgate-record/1","transfer":"<uuid>","source":"<fid>@<fqdn>","created":<ms>}
//! {"t":"patient","data":{…}}        exactly 1: the upstream Patient, `profile` removed
//! {"t":"profile","data":{…}}        exactly 1: the MedicalProfile
//! {"t":"vitals","data":{…}}         0..n: VitalsMeasurment, `patient` removed
//! {"t":"symptom","data":{…}}        0..n: Symptom, `patient` removed
//! {"t":"answer","data":{…}}         0..n: Answer (its question embedded)
//! {"t":"question","data":{…}}       0..n: Question
//! {"t":"manifest","jws":"<compact JWS>"}
//! ```
//!
//! The parts come in that fixed order, so a reader checks the order with
//! one comparison per line and never needs to look back. The manifest is a
//! compact JWS ([`crate::token::sign`], EdDSA, typ
//! [`MANIFEST_TYP`], `kid` = the signing key's selector) whose claims
//! ([`Manifest`]) give, for each of the six parts, the number of lines and
//! the SHA-256 of those lines' exact bytes (newlines included), and the
//! SHA-256 and length of everything before the manifest line. The hashes
//! cover bytes, not parsed values: the importer hashes what it received,
//! so any change to any byte (a value, a key order, white space) shows.
//!
//! Data flow:
//!
//! ```text
//! server1: upstream element bytes ──BundleWriter::push──▶ lines (hashed as written)
//!          BundleWriter::finish(key, now) ──▶ manifest line (signed digests)
//! server2: plaintext chunks ──BundleReader::feed──▶ Item per line (hashed as read)
//!          BundleReader::finish ──▶ ReadBundle ──signer()──▶ (iss, kid): caller fetches key
//!                                             ──verify(key, …)──▶ Manifest, or the reason
//! ```
//!
//! Both sides hold one line at a time: the writer writes into the caller's
//! buffer (which the caller drains into the cipher), the reader keeps at
//! most one partial line, bounded by `max_line_bytes`. Nothing here does
//! I/O or reads the clock; `now` is a parameter.
//!
//! The reader hands records to its callback before the manifest is
//! verified (the manifest comes last so that the writer can stream). An
//! importer must therefore stage what it receives and commit only after
//! [`ReadBundle::verify`] succeeds.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::federation::access::code::parse_address;
use crate::token::{
    parse, sign, unix_seconds, Expect, JwtError, SignError, SigningKey, VerifyingKey,
    DEFAULT_CLOCK_SKEW,
};

/// The format name in the header line.
pub const FORMAT: &str = "mdgate-record/1";
/// The JWS `typ` of the manifest.
pub const MANIFEST_TYP: &str = "mdgate-manifest+jwt";
/// How long a manifest stays valid (`exp - iat`): long enough for a
/// transfer that waits for the patient, short enough that an old copy of a
/// bundle cannot be replayed for ever.
pub const MANIFEST_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest error detail quoted from a parser.
const MAX_DETAIL: usize = 200;

/// One part of the record, in bundle order (the derived `Ord` is that
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Patient,
    Profile,
    Vitals,
    Symptom,
    Answer,
    Question,
}

/// The bundle's first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleHeader {
    /// The transfer this bundle belongs to.
    pub transfer: Uuid,
    /// The patient's address on the source server: `<federation uuid>@<fqdn>`.
    pub source: String,
    /// When the bundle was made, epoch milliseconds.
    pub created: i64,
}

/// The signed claims of the manifest line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The source server's FQDN (the key is looked up under it).
    pub iss: String,
    /// The patient's federation uuid.
    pub sub: Uuid,
    pub transfer: Uuid,
    /// The patient's address, as in the header.
    pub source: String,
    /// As in the header, epoch milliseconds.
    pub created: i64,
    /// Unix seconds.
    pub iat: i64,
    /// Unix seconds; `iat` + [`MANIFEST_LIFETIME`].
    pub exp: i64,
    /// The six parts, in bundle order.
    pub parts: Vec<PartDigest>,
    /// Hex SHA-256 of every byte before the manifest line.
    pub sha256: String,
    /// The number of those bytes.
    pub bytes: u64,
}

/// The count and hash of one part's lines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PartDigest {
    pub part: Part,
    pub count: u64,
    /// Hex SHA-256 of the part's lines, newlines included (of nothing when
    /// the part is empty).
    pub sha256: String,
}

/// What the reader hands over, one per line before the manifest.
#[derive(Debug)]
pub enum Item<'a> {
    Header(BundleHeader),
    /// One record; `data` is the JSON object exactly as the line carries
    /// it (parse it with `serde_json::from_str(data.get())`).
    Record {
        part: Part,
        data: &'a RawValue,
    },
}

/// Writes a bundle line by line; see the module docs.
#[derive(Debug)]
pub struct BundleWriter {
    header: BundleHeader,
    digests: Digests,
}

/// Reads a bundle from plaintext chunks; see the module docs.
#[derive(Debug)]
pub struct BundleReader {
    max_line_bytes: usize,
    /// The start of a line that a chunk boundary cut.
    carry: Vec<u8>,
    /// Complete lines read so far.
    lines: u64,
    header: Option<BundleHeader>,
    jws: Option<String>,
    digests: Digests,
    failed: bool,
}

/// A bundle read to its end: the unverified manifest and what the reader
/// computed from the bytes.
#[derive(Debug, Clone)]
pub struct ReadBundle {
    pub header: BundleHeader,
    pub jws: String,
    pub computed: Vec<PartDigest>,
    pub sha256: String,
    pub bytes: u64,
}

/// Why a bundle was not written, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A line that is not JSON of the expected shape.
    #[error("bundle line {line}: {detail}")]
    Line { line: u64, detail: String },
    #[error("bundle line {line}: unknown line type {tag:?}")]
    UnknownTag { line: u64, tag: String },
    #[error("bundle line {line}: expected the header line first")]
    MissingHeader { line: u64 },
    #[error("bundle line {line}: a second header line")]
    DuplicateHeader { line: u64 },
    #[error("unsupported bundle format {found:?} (expected {FORMAT:?})")]
    UnsupportedFormat { found: String },
    #[error(
        "a {part} record after {after} records: parts come in the order \
         patient, profile, vitals, symptom, answer, question"
    )]
    Order { part: Part, after: Part },
    #[error("a second {0} record; a bundle has exactly one")]
    Duplicate(Part),
    #[error("the bundle has no {0} record")]
    Missing(Part),
    /// An element the writer was given, or a line's data, that is not a
    /// JSON object.
    #[error("{part} record: {detail}")]
    Element { part: Part, detail: String },
    #[error("bundle line {line} is longer than {limit} bytes")]
    LineTooLong { line: u64, limit: usize },
    #[error("data after the manifest line")]
    AfterManifest,
    #[error("the bundle ends without a manifest line")]
    NoManifest,
    #[error("the bundle's last line has no newline (truncated?)")]
    Truncated,
    /// The header's source is not `<uuid>@<fqdn>` of this subject and
    /// issuer (a caller bug on the writing side).
    #[error("the bundle source {address:?} is not the patient {subject} at {issuer}")]
    Source {
        address: String,
        subject: Uuid,
        issuer: String,
    },
    /// The reader already refused this bundle.
    #[error("the bundle was already refused")]
    Refused,
    /// Malformed manifest JWS, wrong header, or a signature that does not
    /// verify with the key (a forgery, or a key other than `kid`'s).
    #[error("manifest refused: {0}")]
    Signature(JwtError),
    #[error("manifest refused: {0}")]
    Expired(JwtError),
    #[error("manifest issued by {found:?}, expected {expected:?}")]
    Issuer { expected: String, found: String },
    /// A genuine manifest of another bundle (another transfer, source or
    /// creation time).
    #[error("manifest is for another bundle: its {field} is {manifest:?}, expected {expected:?}")]
    Transfer {
        field: &'static str,
        manifest: String,
        expected: String,
    },
    /// The bytes read differ from what the manifest signs.
    #[error(
        "the bundle does not match its manifest: {}'s {what} is {manifest} in the manifest \
         but {computed} in the bundle",
        scope_name(.part)
    )]
    Mismatch {
        /// `None` for the whole bundle.
        part: Option<Part>,
        what: &'static str,
        manifest: String,
        computed: String,
    },
    #[error("cannot sign the manifest: {0}")]
    Sign(#[from] SignError),
}

/// Running counts and hashes, shared by the writer and the reader so that
/// both compute the digests the same way.
#[derive(Clone)]
struct Digests {
    whole: Sha256,
    bytes: u64,
    counts: [u64; 6],
    parts: [Sha256; 6],
    current: Option<Part>,
}

/// One bundle line, every field optional, checked per `t` afterwards.
/// Unknown and duplicate fields are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    t: Cow<'a, str>,
    format: Option<String>,
    transfer: Option<Uuid>,
    source: Option<String>,
    created: Option<i64>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    jws: Option<String>,
}

/// The header line as written (field order as in the docs).
#[derive(Serialize)]
struct HeaderLine<'a> {
    t: &'static str,
    format: &'static str,
    transfer: Uuid,
    source: &'a str,
    created: i64,
}

/// The manifest line as written.
#[derive(Serialize)]
struct ManifestLine<'a> {
    t: &'static str,
    jws: &'a str,
}

/// The one claim read before verification.
#[derive(Deserialize)]
struct Issuer {
    iss: String,
}

/// An upstream JSON object as (key, raw value) pairs in their order, so
/// that values pass through byte for byte.
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl Part {
    /// Every part, in bundle order.
    pub const ALL: [Part; 6] = [
        Part::Patient,
        Part::Profile,
        Part::Vitals,
        Part::Symptom,
        Part::Answer,
        Part::Question,
    ];

    /// The line tag, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Patient => "patient",
            Part::Profile => "profile",
            Part::Vitals => "vitals",
            Part::Symptom => "symptom",
            Part::Answer => "answer",
            Part::Question => "question",
        }
    }

    /// The part a line tag names.
    pub fn from_tag(tag: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.as_str() == tag)
    }

    /// The key the writer removes from the upstream element: the patient
    /// embeds its profile (which has its own line), vitals and symptoms
    /// embed the whole patient (which the bundle already has once).
    fn embedded(self) -> Option<&'static str> {
        match self {
            Part::Patient => Some("profile"),
            Part::Vitals | Part::Symptom => Some("patient"),
            Part::Profile | Part::Answer | Part::Question => None,
        }
    }

    /// Patient and profile appear exactly once.
    fn single(self) -> bool {
        matches!(self, Part::Patient | Part::Profile)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BundleWriter {
    /// Starts a bundle: appends the header line to `out`.
    pub fn new(header: &BundleHeader, out: &mut Vec<u8>) -> BundleWriter {
        let mut digests = Digests::new();
        let line = HeaderLine {
            t: "header",
            format: FORMAT,
            transfer: header.transfer,
            source: &header.source,
            created: header.created,
        };
        let mark = out.len();
        // Invariant: serializing a struct of strings, a uuid and an
        // integer into a Vec cannot fail (no I/O, no non-string map keys).
        serde_json::to_writer(&mut *out, &line).expect("header line serializes");
        out.push(b'\n');
        digests.header(&out[mark..]);
        BundleWriter {
            header: header.clone(),
            digests,
        }
    }

    /// Appends one record line for `element`, an upstream JSON object as
    /// its bytes. The embedded key of the part (see the module docs) is
    /// removed; every other value is kept byte for byte (a value spread
    /// over several lines is re-serialized compactly, so that the record
    /// stays on one line). Refuses parts out of order, a second patient or
    /// profile, and anything but one JSON object; on error nothing is
    /// appended.
    pub fn push(
        &mut self,
        part: Part,
        element: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BundleError> {
        self.digests.admit(part)?;
        let object = RawObject::parse(part, element)?;
        let mark = out.len();
        if let Err(e) = write_record(part, &object, out) {
            out.truncate(mark);
            return Err(e);
        }
        self.digests.commit(part, &out[mark..]);
        Ok(())
    }

    /// Ends the bundle: appends the manifest line, signed with `key` as
    /// `issuer_fqdn` (this server), for the patient `subject`. Refuses a
    /// bundle without its patient or profile, and a header source that is
    /// not `<subject>@<issuer_fqdn>`.
    pub fn finish(
        self,
        key: &SigningKey,
        issuer_fqdn: &str,
        subject: Uuid,
        now: SystemTime,
        out: &mut Vec<u8>,
    ) -> Result<Manifest, BundleError> {
        self.digests.complete()?;
        let source_ok = parse_address(&self.header.source).is_ok_and(|a| {
            a.patient == subject
                && a.fqdn
                    .eq_ignore_ascii_case(issuer_fqdn.trim_end_matches('.'))
        });
        if !source_ok {
            return Err(BundleError::Source {
                address: self.header.source,
                subject,
                issuer: issuer_fqdn.to_owned(),
            });
        }
        let iat = unix_seconds(now);
        let lifetime = i64::try_from(MANIFEST_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        let (parts, sha256, bytes) = self.digests.finish();
        let manifest = Manifest {
            iss: issuer_fqdn.to_owned(),
            sub: subject,
            transfer: self.header.transfer,
            source: self.header.source,
            created: self.header.created,
            iat,
            exp: iat.saturating_add(lifetime),
            parts,
            sha256,
            bytes,
        };
        let jws = sign(key, MANIFEST_TYP, &manifest)?;
        serde_json::to_writer(
            &mut *out,
            &ManifestLine {
                t: "manifest",
                jws: &jws,
            },
        )
        .map_err(SignError::Json)?;
        out.push(b'\n');
        Ok(manifest)
    }
}

/// Writes `{"t":<part>,"data":{…}}\n`, leaving out the part's embedded key.
fn write_record(part: Part, object: &RawObject<'_>, out: &mut Vec<u8>) -> Result<(), BundleError> {
    let element_error = |e: serde_json::Error| BundleError::Element {
        part,
        detail: detail(&e),
    };
    out.extend_from_slice(b"{\"t\":\"");
    out.extend_from_slice(part.as_str().as_bytes());
    out.extend_from_slice(b"\",\"data\":{");
    let mut first = true;
    for (key, value) in &object.0 {
        if Some(key.as_str()) == part.embedded() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, key).map_err(element_error)?;
        out.push(b':');
        let raw = value.get();
        if raw.bytes().any(|b| b == b'\n' || b == b'\r') {
            // Only white space between tokens can hold a line break.
            let value: serde_json::Value = serde_json::from_str(raw).map_err(element_error)?;
            serde_json::to_writer(&mut *out, &value).map_err(element_error)?;
        } else {
            out.extend_from_slice(raw.as_bytes());
        }
    }
    out.extend_from_slice(b"}}\n");
    Ok(())
}

impl<'a> RawObject<'a> {
    /// Parses one upstream element, which must be a JSON object without
    /// duplicate keys (two parsers could read different values from one).
    fn parse(part: Part, element: &'a [u8]) -> Result<Self, BundleError> {
        let refuse = |detail: String| BundleError::Element { part, detail };
        if element.trim_ascii_start().first() != Some(&b'{') {
            return Err(refuse("not a JSON object".to_owned()));
        }
        let object: RawObject<'a> =
            serde_json::from_slice(element).map_err(|e| refuse(detail(&e)))?;
        let mut keys: Vec<&str> = object.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(refuse(format!("duplicate key {:?}", pair[0])));
        }
        Ok(object)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Pairs<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    pairs.push((key, value));
                }
                Ok(RawObject(pairs))
            }
        }
        deserializer.deserialize_map(Pairs(std::marker::PhantomData))
    }
}

impl BundleReader {
    /// A reader that refuses any line longer than `max_line_bytes`
    /// (newline excluded).
    pub fn new(max_line_bytes: usize) -> BundleReader {
        BundleReader {
            max_line_bytes,
            carry: Vec::new(),
            lines: 0,
            header: None,
            jws: None,
            digests: Digests::new(),
            failed: false,
        }
    }

    /// Reads `bytes` (any amount of the plaintext) and calls `f` for the
    /// header and each record line completed in them. An error from `f`
    /// is returned as is. After any error the reader refuses everything.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        f: &mut impl FnMut(Item<'_>) -> Result<(), BundleError>,
    ) -> Result<(), BundleError> {
        if self.failed {
            return Err(BundleError::Refused);
        }
        let result = self.scan(bytes, f);
        if result.is_err() {
            self.failed = true;
            self.carry = Vec::new();
        }
        result
    }

    /// After the last byte: the manifest text and the computed digests,
    /// for [`ReadBundle::verify`].
    pub fn finish(self) -> Result<ReadBundle, BundleError> {
        if self.failed {
            return Err(BundleError::Refused);
        }
        if !self.carry.is_empty() {
            return Err(BundleError::Truncated);
        }
        let header = self.header.ok_or(BundleError::MissingHeader {
            line: self.lines + 1,
        })?;
        let jws = self.jws.ok_or(BundleError::NoManifest)?;
        let (computed, sha256, bytes) = self.digests.finish();
        Ok(ReadBundle {
            header,
            jws,
            computed,
            sha256,
            bytes,
        })
    }

    fn scan(
        &mut self,
        mut bytes: &[u8],
        f: &mut impl FnMut(Item<'_>) -> Result<(), BundleError>,
    ) -> Result<(), BundleError> {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(end);
            let too_long = BundleError::LineTooLong {
                line: self.lines + 1,
                limit: self.max_line_bytes,
            };
            if self.carry.is_empty() {
                if line.len() > self.max_line_bytes {
                    return Err(too_long);
                }
                self.line(line, f)?;
            } else {
                if self.carry.len().saturating_add(line.len()) > self.max_line_bytes {
                    return Err(too_long);
                }
                let mut whole = std::mem::take(&mut self.carry);
                whole.extend_from_slice(line);
                let result = self.line(&whole, f);
                whole.clear();
                self.carry = whole;
                result?;
            }
            // `rest` starts with the newline.
            bytes = &rest[1..];
        }
        if self.carry.len().saturating_add(bytes.len()) > self.max_line_bytes {
            return Err(BundleError::LineTooLong {
                line: self.lines + 1,
                limit: self.max_line_bytes,
            });
        }
        self.carry.extend_from_slice(bytes);
        Ok(())
    }

    /// One complete line, without its newline.
    fn line(
        &mut self,
        line: &[u8],
        f: &mut impl FnMut(Item<'_>) -> Result<(), BundleError>,
    ) -> Result<(), BundleError> {
        self.lines += 1;
        let n = self.lines;
        if self.jws.is_some() {
            return Err(BundleError::AfterManifest);
        }
        let parsed: Line<'_> = serde_json::from_slice(line).map_err(|e| BundleError::Line {
            line: n,
            detail: detail(&e),
        })?;
        let shape = |detail: &str| BundleError::Line {
            line: n,
            detail: detail.to_owned(),
        };
        match &*parsed.t {
            "header" => {
                if self.header.is_some() {
                    return Err(BundleError::DuplicateHeader { line: n });
                }
                let (Some(format), Some(transfer), Some(source), Some(created), None, None) = (
                    parsed.format,
                    parsed.transfer,
                    parsed.source,
                    parsed.created,
                    parsed.data,
                    parsed.jws,
                ) else {
                    return Err(shape(
                        "a header has format, transfer, source and created, and nothing else",
                    ));
                };
                if format != FORMAT {
                    return Err(BundleError::UnsupportedFormat { found: format });
                }
                if parse_address(&source).is_err() {
                    return Err(shape("the header's source is not <uuid>@<fqdn>"));
                }
                let header = BundleHeader {
                    transfer,
                    source,
                    created,
                };
                self.header = Some(header.clone());
                self.digests.header_line(line);
                f(Item::Header(header))
            }
            _ if self.header.is_none() => Err(BundleError::MissingHeader { line: n }),
            "manifest" => {
                let (Some(jws), None, None, None, None, None) = (
                    parsed.jws,
                    parsed.format,
                    parsed.transfer,
                    parsed.source,
                    parsed.created,
                    parsed.data,
                ) else {
                    return Err(shape("a manifest line has jws, and nothing else"));
                };
                self.digests.complete()?;
                self.jws = Some(jws);
                Ok(())
            }
            tag => {
                let part = Part::from_tag(tag).ok_or_else(|| BundleError::UnknownTag {
                    line: n,
                    tag: tag.chars().take(32).collect(),
                })?;
                let (Some(data), None, None, None, None, None) = (
                    parsed.data,
                    parsed.format,
                    parsed.transfer,
                    parsed.source,
                    parsed.created,
                    parsed.jws,
                ) else {
                    return Err(shape("a record line has data, and nothing else"));
                };
                if !data.get().starts_with('{') {
                    return Err(BundleError::Element {
                        part,
                        detail: "data is not a JSON object".to_owned(),
                    });
                }
                self.digests.admit(part)?;
                self.digests.commit_line(part, line);
                f(Item::Record { part, data })
            }
        }
    }
}

impl ReadBundle {
    /// The manifest's unverified `iss` and `kid`, so that the caller can
    /// fetch the key (`<kid>._mdgate.<iss>` in DNS) before [`verify`].
    /// Nothing else may be trusted yet.
    ///
    /// [`verify`]: ReadBundle::verify
    pub fn signer(&self) -> Result<(String, String), BundleError> {
        let expect = manifest_expect();
        let unverified = parse(&self.jws, &expect).map_err(BundleError::Signature)?;
        let Issuer { iss } = unverified
            .peek_unverified()
            .map_err(BundleError::Signature)?;
        Ok((iss, unverified.kid().to_owned()))
    }

    /// Accepts the bundle: the manifest's signature with `key` (and its
    /// times against `now`, with the usual clock skew), then its issuer,
    /// then that it is this bundle's manifest (transfer, source, creation
    /// time, and the subject and issuer the source address names), then
    /// every count and hash against what was read.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        expected_issuer: &str,
        expected_transfer: Uuid,
        now: SystemTime,
    ) -> Result<Manifest, BundleError> {
        let expect = manifest_expect();
        let unverified = parse(&self.jws, &expect).map_err(BundleError::Signature)?;
        let manifest: Manifest = match unverified.verify(key, now) {
            Ok(verified) => verified.claims,
            Err(e @ JwtError::Expired { .. }) => return Err(BundleError::Expired(e)),
            Err(e) => return Err(BundleError::Signature(e)),
        };
        if !same_host(&manifest.iss, expected_issuer) {
            return Err(BundleError::Issuer {
                expected: expected_issuer.to_owned(),
                found: manifest.iss,
            });
        }
        self.check_binding(&manifest, expected_transfer)?;
        self.check_digests(&manifest)?;
        Ok(manifest)
    }

    /// The manifest names this bundle and the transfer the caller expects.
    fn check_binding(&self, manifest: &Manifest, expected: Uuid) -> Result<(), BundleError> {
        let differs = |field, manifest: String, expected: String| BundleError::Transfer {
            field,
            manifest,
            expected,
        };
        if manifest.transfer != self.header.transfer {
            return Err(differs(
                "transfer",
                manifest.transfer.to_string(),
                self.header.transfer.to_string(),
            ));
        }
        if self.header.transfer != expected {
            return Err(differs(
                "transfer",
                self.header.transfer.to_string(),
                expected.to_string(),
            ));
        }
        if manifest.source != self.header.source {
            return Err(differs(
                "source",
                manifest.source.clone(),
                self.header.source.clone(),
            ));
        }
        if manifest.created != self.header.created {
            return Err(differs(
                "created",
                manifest.created.to_string(),
                self.header.created.to_string(),
            ));
        }
        // The header was checked to be an address when it was read.
        let address = parse_address(&self.header.source).ok();
        if address.as_ref().map(|a| a.patient) != Some(manifest.sub) {
            return Err(differs(
                "sub",
                manifest.sub.to_string(),
                self.header.source.clone(),
            ));
        }
        if !address.is_some_and(|a| same_host(&a.fqdn, &manifest.iss)) {
            return Err(BundleError::Issuer {
                expected: self.header.source.clone(),
                found: manifest.iss.clone(),
            });
        }
        Ok(())
    }

    /// Every count and hash the manifest signs equals what was read.
    fn check_digests(&self, manifest: &Manifest) -> Result<(), BundleError> {
        let listed: Vec<Part> = manifest.parts.iter().map(|d| d.part).collect();
        if listed != Part::ALL {
            return Err(BundleError::Mismatch {
                part: None,
                what: "list of parts",
                manifest: format!("{listed:?}"),
                computed: format!("{:?}", Part::ALL),
            });
        }
        for (signed, read) in manifest.parts.iter().zip(&self.computed) {
            if signed.count != read.count {
                return Err(BundleError::Mismatch {
                    part: Some(read.part),
                    what: "count",
                    manifest: signed.count.to_string(),
                    computed: read.count.to_string(),
                });
            }
            if !signed.sha256.eq_ignore_ascii_case(&read.sha256) {
                return Err(BundleError::Mismatch {
                    part: Some(read.part),
                    what: "sha256",
                    manifest: signed.sha256.clone(),
                    computed: read.sha256.clone(),
                });
            }
        }
        if manifest.bytes != self.bytes {
            return Err(BundleError::Mismatch {
                part: None,
                what: "length",
                manifest: manifest.bytes.to_string(),
                computed: self.bytes.to_string(),
            });
        }
        if !manifest.sha256.eq_ignore_ascii_case(&self.sha256) {
            return Err(BundleError::Mismatch {
                part: None,
                what: "sha256",
                manifest: manifest.sha256.clone(),
                computed: self.sha256.clone(),
            });
        }
        Ok(())
    }
}

impl Digests {
    fn new() -> Self {
        Digests {
            whole: Sha256::new(),
            bytes: 0,
            counts: [0; 6],
            parts: std::array::from_fn(|_| Sha256::new()),
            current: None,
        }
    }

    /// The header line, newline included.
    fn header(&mut self, line: &[u8]) {
        self.whole.update(line);
        self.bytes += line.len() as u64;
    }

    /// The header line, without its newline.
    fn header_line(&mut self, line: &[u8]) {
        self.header(line);
        self.header(b"\n");
    }

    /// Whether a `part` record may come next.
    fn admit(&self, part: Part) -> Result<(), BundleError> {
        if let Some(after) = self.current.filter(|&c| part < c) {
            return Err(BundleError::Order { part, after });
        }
        if part.single() && self.counts[part.index()] > 0 {
            return Err(BundleError::Duplicate(part));
        }
        for single in [Part::Patient, Part::Profile] {
            if part > single && self.counts[single.index()] == 0 {
                return Err(BundleError::Missing(single));
            }
        }
        Ok(())
    }

    /// Counts and hashes an admitted record line, newline included.
    fn commit(&mut self, part: Part, line: &[u8]) {
        self.whole.update(line);
        self.parts[part.index()].update(line);
        self.bytes += line.len() as u64;
        self.counts[part.index()] += 1;
        self.current = Some(part);
    }

    /// [`Digests::commit`] for a line without its newline.
    fn commit_line(&mut self, part: Part, line: &[u8]) {
        self.commit(part, line);
        self.whole.update(b"\n");
        self.parts[part.index()].update(b"\n");
        self.bytes += 1;
    }

    /// The patient and profile are there.
    fn complete(&self) -> Result<(), BundleError> {
        for single in [Part::Patient, Part::Profile] {
            if self.counts[single.index()] == 0 {
                return Err(BundleError::Missing(single));
            }
        }
        Ok(())
    }

    fn finish(self) -> (Vec<PartDigest>, String, u64) {
        let parts = Part::ALL
            .into_iter()
            .zip(self.parts)
            .map(|(part, hasher)| PartDigest {
                part,
                count: self.counts[part.index()],
                sha256: hex::encode(hasher.finalize()),
            })
            .collect();
        (parts, hex::encode(self.whole.finalize()), self.bytes)
    }
}

impl fmt::Debug for Digests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digests")
            .field("bytes", &self.bytes)
            .field("counts", &self.counts)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl BundleError {
    /// A stable machine-readable reason, for responses, logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BundleError::Line { .. }
            | BundleError::UnknownTag { .. }
            | BundleError::MissingHeader { .. }
            | BundleError::DuplicateHeader { .. }
            | BundleError::UnsupportedFormat { .. }
            | BundleError::Order { .. }
            | BundleError::Duplicate(_)
            | BundleError::Missing(_)
            | BundleError::Element { .. }
            | BundleError::LineTooLong { .. }
            | BundleError::AfterManifest
            | BundleError::NoManifest
            | BundleError::Truncated
            | BundleError::Source { .. }
            | BundleError::Refused => "bundle_format",
            BundleError::Signature(_) => "manifest_signature",
            BundleError::Expired(_) => "manifest_expired",
            BundleError::Issuer { .. } => "manifest_issuer",
            BundleError::Transfer { .. } => "manifest_transfer",
            BundleError::Mismatch { .. } => "manifest_mismatch",
            BundleError::Sign(_) => "sign",
        }
    }
}

/// What a manifest must satisfy besides its signature.
fn manifest_expect() -> Expect {
    Expect {
        typ: Some(MANIFEST_TYP),
        clock_skew: DEFAULT_CLOCK_SKEW,
        max_lifetime: Some(MANIFEST_LIFETIME),
    }
}

/// DNS names compare case-insensitively, with or without the final dot.
fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// "vitals", or "the whole bundle", for messages.
fn scope_name(part: &Option<Part>) -> &'static str {
    part.map_or("the whole bundle", Part::as_str)
}

/// A serde message, cut to a bounded length.
fn detail(e: &serde_json::Error) -> String {
    let mut message = e.to_string();
    if message.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests;
