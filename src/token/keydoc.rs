//! The key document: the second channel beside DNS (`docs/protocol.md`
//! § The key document).
//!
//! A server serves, at `/.well-known/mdgate/keys`, a compact JWS of type
//! `mdgate-keys+jwt` signed with its current signing key, listing its keys.
//! A peer fetches it, verifies it with the signing key that DNS publishes
//! for the `kid` ([`KeyDocument::verify`]), then checks that the two
//! channels agree ([`compare`]). A forged DNS answer alone, or a
//! compromised web server alone, then cannot introduce a key.
//!
//! ```text
//! KeyDocument::new ─▶ sign(&SigningKey, now) ─▶ JWS ─(HTTPS)─▶ verify(jws, server, skew, |kid| DNS key, now)
//!                                                                   │
//!                        DNS records of the index's selectors ──▶ compare(&doc, &dns, now)
//! ```
//!
//! The DNS side is given as [`DnsKey`] values, a local type, so that this
//! module does not depend on the `dns` module's record types.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::jws::{self, Expect, JwtError, SignError};
use super::key::{valid_selector, SigningKey, VerifyingKey};
use super::unix_seconds;
use crate::tls::normalize_fqdn;

/// The protocol version, the document's `v`.
pub const PROTOCOL_VERSION: &str = "mdgate1";
/// The JWS `typ` of a key document.
pub const KEYS_TYP: &str = "mdgate-keys+jwt";
/// A document is valid for at most this long after its `iat`.
pub const MAX_DOC_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most keys one document may list (the DNS index allows 16 live ones;
/// the rest is room for recently retired keys).
const MAX_DOC_KEYS: usize = 64;

/// Standard base64 with padding optional, as in DNS `k=` and `h=`.
const B64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a key is for (`u=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyUsage {
    Tls,
    Sig,
}

/// A key's algorithm (`a=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlg {
    P256,
    Ed25519,
}

/// A key as the document gives it: the SubjectPublicKeyInfo (`k`) or, for
/// TLS keys, its SHA-256 (`h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Spki(Vec<u8>),
    SpkiSha256([u8; 32]),
}

/// One key listed in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocKey {
    pub selector: String,
    pub usage: KeyUsage,
    pub alg: KeyAlg,
    pub material: KeyMaterial,
    /// Not valid before (Unix seconds); absent: no lower bound.
    pub nbf: Option<i64>,
    /// Not valid from (Unix seconds); absent: no upper bound.
    pub exp: Option<i64>,
}

/// A verified (or to-be-signed) key document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDocument {
    /// The server's FQDN, canonical form.
    pub server: String,
    pub iat: i64,
    /// After [`KeyDocument::verify`], already capped at `iat` + 7 days.
    pub exp: i64,
    pub keys: Vec<DocKey>,
}

/// A key record as DNS publishes it, for [`compare`]. The `dns` module's
/// records convert into this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsKey {
    pub selector: String,
    pub usage: KeyUsage,
    pub alg: KeyAlg,
    pub material: DnsMaterial,
}

/// The key material of a DNS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsMaterial {
    /// `k=`: the DER SubjectPublicKeyInfo.
    Spki(Vec<u8>),
    /// `h=`: SHA-256 of the DER SubjectPublicKeyInfo.
    SpkiSha256([u8; 32]),
    /// `k=` (or `h=`) present but empty.
    Revoked,
}

/// One way in which the document and DNS disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Live in DNS, absent from the document.
    MissingFromDocument { selector: String },
    /// Valid now in the document, not in the DNS index.
    MissingFromDns { selector: String },
    /// Different `u`.
    Usage {
        selector: String,
        dns: KeyUsage,
        document: KeyUsage,
    },
    /// Different `a`.
    Alg {
        selector: String,
        dns: KeyAlg,
        document: KeyAlg,
    },
    /// Different key (`k`/`h`).
    Material { selector: String },
    /// Revoked in DNS, still valid in the document.
    RevokedButListed { selector: String },
}

/// The document and DNS disagree (`channel_mismatch`). Lists every
/// difference, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key document and DNS disagree for {server}: {}", list(.differences))]
pub struct ChannelMismatch {
    pub server: String,
    pub differences: Vec<Difference>,
}

/// Why a key document cannot be signed or is refused.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The JWS itself is refused (alg, typ, signature, expiry...).
    #[error("key document: {0}")]
    Jwt(#[from] JwtError),
    /// DNS publishes no live signing key under the document's `kid`.
    #[error("key document is signed with key {kid:?}, which is not a live signing key in DNS")]
    UnknownKid { kid: String },
    #[error("key document has version {found:?}, expected {PROTOCOL_VERSION:?}")]
    Version { found: String },
    #[error("key document is for {found:?}, fetched from {expected:?}")]
    ServerMismatch { expected: String, found: String },
    #[error("key document server {server:?} is not a canonical FQDN")]
    InvalidServer { server: String },
    #[error("key document lifetime exp - iat is {lifetime} s, more than 7 days")]
    ExceedsMaxLifetime { lifetime: i64 },
    #[error("key document exp is before its iat")]
    ExpBeforeIat,
    #[error("key document is not valid at the signing time (iat {iat}, exp {exp}, now {now})")]
    NotValidNow { iat: i64, exp: i64, now: i64 },
    #[error("key document lists {count} keys, more than {MAX_DOC_KEYS}")]
    TooManyKeys { count: usize },
    #[error("key document lists selector {selector:?} twice")]
    DuplicateSelector { selector: String },
    #[error("key document key {selector:?}: {reason}")]
    InvalidKey {
        selector: String,
        reason: &'static str,
    },
    /// The key that signs the document must be listed in it, unchanged.
    #[error(
        "key document is signed with {selector:?}, which it does not list as that signing key"
    )]
    SignerNotListed { selector: String },
    #[error("key document cannot be signed: {0}")]
    Sign(#[from] SignError),
}

/// The payload as on the wire.
#[derive(Serialize, Deserialize)]
struct WireDoc {
    v: String,
    server: String,
    iat: i64,
    exp: i64,
    keys: Vec<WireKey>,
}

#[derive(Serialize, Deserialize)]
struct WireKey {
    sel: String,
    u: KeyUsage,
    a: KeyAlg,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
}

impl DocKey {
    /// A signing key's entry (`u=sig`, `a=ed25519`, `k`).
    pub fn signing(key: &SigningKey, nbf: Option<i64>, exp: Option<i64>) -> Self {
        DocKey {
            selector: key.selector().to_owned(),
            usage: KeyUsage::Sig,
            alg: KeyAlg::Ed25519,
            material: KeyMaterial::Spki(key.spki_der().to_vec()),
            nbf,
            exp,
        }
    }

    /// Whether the key is valid at `now` (`nbf ≤ now < exp`).
    pub fn valid_at(&self, now: i64) -> bool {
        self.nbf.is_none_or(|nbf| nbf <= now) && self.exp.is_none_or(|exp| now < exp)
    }

    fn to_wire(&self) -> WireKey {
        let (k, h) = match &self.material {
            KeyMaterial::Spki(der) => (Some(STANDARD.encode(der)), None),
            KeyMaterial::SpkiSha256(hash) => (None, Some(STANDARD.encode(hash))),
        };
        WireKey {
            sel: self.selector.clone(),
            u: self.usage,
            a: self.alg,
            k,
            h,
            nbf: self.nbf,
            exp: self.exp,
        }
    }

    fn from_wire(wire: WireKey) -> Result<Self, DocError> {
        let shown: String = wire.sel.chars().take(64).collect();
        let invalid = |reason| DocError::InvalidKey {
            selector: shown.clone(),
            reason,
        };
        if !valid_selector(&wire.sel) {
            return Err(invalid("not a selector ([a-z0-9][a-z0-9-]{0,62})"));
        }
        let material = match (&wire.k, &wire.h) {
            (Some(_), Some(_)) => return Err(invalid("has both k and h")),
            (None, None) => return Err(invalid("has neither k nor h")),
            (Some(k), None) => KeyMaterial::Spki(decode_b64(k).ok_or(invalid("k is not base64"))?),
            (None, Some(h)) => {
                let hash = decode_b64(h).ok_or(invalid("h is not base64"))?;
                KeyMaterial::SpkiSha256(
                    hash.try_into()
                        .map_err(|_| invalid("h is not a 32-byte SHA-256"))?,
                )
            }
        };
        let key = DocKey {
            selector: wire.sel,
            usage: wire.u,
            alg: wire.a,
            material,
            nbf: wire.nbf,
            exp: wire.exp,
        };
        key.check().map_err(invalid)?;
        Ok(key)
    }

    /// The rules of the key record table, applied to the document.
    fn check(&self) -> Result<(), &'static str> {
        match (&self.material, self.usage) {
            (KeyMaterial::Spki(der), _) if der.is_empty() => {
                return Err("k is empty (revocation belongs in DNS, not in the document)")
            }
            (KeyMaterial::SpkiSha256(_), KeyUsage::Sig) => {
                return Err("signing keys must give k, not h")
            }
            (KeyMaterial::Spki(der), KeyUsage::Sig) => {
                if VerifyingKey::from_spki_der(der).is_err() {
                    return Err("k is not an Ed25519 SubjectPublicKeyInfo");
                }
            }
            (KeyMaterial::Spki(_) | KeyMaterial::SpkiSha256(_), KeyUsage::Tls) => {}
        }
        if self.usage == KeyUsage::Sig && self.alg != KeyAlg::Ed25519 {
            return Err("signing keys must be ed25519");
        }
        if let (Some(nbf), Some(exp)) = (self.nbf, self.exp) {
            if exp < nbf {
                return Err("exp is before nbf");
            }
        }
        Ok(())
    }
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    B64_ANY_PADDING.decode(text).ok()
}

impl KeyDocument {
    /// A document for `server` listing `keys`, issued at `now` and valid
    /// for `lifetime`, capped at 7 days.
    pub fn new(
        server: impl Into<String>,
        keys: Vec<DocKey>,
        now: SystemTime,
        lifetime: Duration,
    ) -> Self {
        let iat = unix_seconds(now);
        let lifetime = lifetime.min(MAX_DOC_LIFETIME).as_secs();
        KeyDocument {
            server: server.into(),
            iat,
            exp: iat.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
            keys,
        }
    }

    /// Signs the document as a compact JWS (`typ` `mdgate-keys+jwt`, `kid`
    /// the key's selector). Refuses a document that peers would refuse:
    /// malformed keys, `exp` more than 7 days after `iat`, not valid at
    /// `now`, or not listing `key` itself.
    pub fn sign(&self, key: &SigningKey, now: SystemTime) -> Result<String, DocError> {
        self.check()?;
        let lifetime = self.exp.saturating_sub(self.iat);
        if lifetime > max_lifetime_secs() {
            return Err(DocError::ExceedsMaxLifetime { lifetime });
        }
        let now = unix_seconds(now);
        if self.iat > now || self.exp <= now {
            return Err(DocError::NotValidNow {
                iat: self.iat,
                exp: self.exp,
                now,
            });
        }
        self.check_signer(key.selector(), key.verifying_key())?;
        let wire = WireDoc {
            v: PROTOCOL_VERSION.to_owned(),
            server: self.server.clone(),
            iat: self.iat,
            exp: self.exp,
            keys: self.keys.iter().map(DocKey::to_wire).collect(),
        };
        Ok(jws::sign(key, KEYS_TYP, &wire)?)
    }

    /// Verifies a document fetched from `server`: header and signature with
    /// the key `lookup` gives for the `kid` (the caller returns the key only
    /// if DNS lists it as a live `u=sig` key of `server`), then `exp` (capped
    /// at `iat` + 7 days) and `iat` against `now` with `clock_skew`, then
    /// the content. Returns the document with `exp` capped.
    pub fn verify<F>(
        jws: &str,
        server: &str,
        clock_skew: Duration,
        lookup: F,
        now: SystemTime,
    ) -> Result<KeyDocument, DocError>
    where
        F: FnOnce(&str) -> Option<VerifyingKey>,
    {
        let expect = Expect::typ(KEYS_TYP, clock_skew);
        let unverified = jws::parse(jws, &expect)?;
        let kid = unverified.kid().to_owned();
        let key = lookup(&kid).ok_or_else(|| DocError::UnknownKid { kid: kid.clone() })?;
        let verified = unverified.verify::<WireDoc>(&key, now)?;
        let wire = verified.claims;
        if wire.v != PROTOCOL_VERSION {
            return Err(DocError::Version {
                found: wire.v.chars().take(32).collect(),
            });
        }
        // "A verifier uses the lesser" of exp and iat + 7 days; the JWS
        // layer has checked exp itself, this checks the cap.
        let capped = wire.exp.min(wire.iat.saturating_add(max_lifetime_secs()));
        let ago = unix_seconds(now).saturating_sub(capped);
        let tolerance = clock_skew.as_secs();
        if ago >= i64::try_from(tolerance).unwrap_or(i64::MAX) {
            return Err(JwtError::Expired { ago, tolerance }.into());
        }
        let keys = wire
            .keys
            .into_iter()
            .map(DocKey::from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        let doc = KeyDocument {
            server: wire.server,
            iat: wire.iat,
            exp: capped,
            keys,
        };
        doc.check()?;
        if doc.server != server {
            return Err(DocError::ServerMismatch {
                expected: server.to_owned(),
                found: doc.server.chars().take(253).collect(),
            });
        }
        doc.check_signer(&kid, &key)?;
        Ok(doc)
    }

    /// Content rules shared by signing and verifying.
    fn check(&self) -> Result<(), DocError> {
        if normalize_fqdn(&self.server).ok().as_deref() != Some(self.server.as_str()) {
            return Err(DocError::InvalidServer {
                server: self.server.chars().take(253).collect(),
            });
        }
        if self.exp < self.iat {
            return Err(DocError::ExpBeforeIat);
        }
        if self.keys.len() > MAX_DOC_KEYS {
            return Err(DocError::TooManyKeys {
                count: self.keys.len(),
            });
        }
        let mut seen = HashSet::new();
        for key in &self.keys {
            key.check().map_err(|reason| DocError::InvalidKey {
                selector: key.selector.clone(),
                reason,
            })?;
            if !seen.insert(key.selector.as_str()) {
                return Err(DocError::DuplicateSelector {
                    selector: key.selector.clone(),
                });
            }
        }
        Ok(())
    }

    /// The signing key must be listed as a `sig` key with its own material.
    fn check_signer(&self, selector: &str, key: &VerifyingKey) -> Result<(), DocError> {
        let listed = self.keys.iter().any(|k| {
            k.selector == selector
                && k.usage == KeyUsage::Sig
                && k.material == KeyMaterial::Spki(key.spki_der().to_vec())
        });
        if listed {
            Ok(())
        } else {
            Err(DocError::SignerNotListed {
                selector: selector.to_owned(),
            })
        }
    }
}

fn max_lifetime_secs() -> i64 {
    // 604800 fits in an i64 by a wide margin.
    MAX_DOC_LIFETIME.as_secs() as i64
}

/// Checks that the document and DNS agree (`docs/protocol.md`): every
/// selector live in DNS is in the document with the same `u`, `a` and key;
/// every document key valid at `now` is live in DNS; a selector revoked in
/// DNS is not valid in the document. `dns` holds the records of the
/// selectors in the index (revoked ones included). Reports every
/// difference, in DNS order then document order.
pub fn compare(doc: &KeyDocument, dns: &[DnsKey], now: SystemTime) -> Result<(), ChannelMismatch> {
    let now = unix_seconds(now);
    let mut differences = Vec::new();
    for record in dns {
        let listed = doc.keys.iter().find(|k| k.selector == record.selector);
        let selector = || record.selector.clone();
        match (&record.material, listed) {
            (DnsMaterial::Revoked, Some(key)) if key.valid_at(now) => {
                differences.push(Difference::RevokedButListed {
                    selector: selector(),
                });
            }
            (DnsMaterial::Revoked, _) => {}
            (_, None) => differences.push(Difference::MissingFromDocument {
                selector: selector(),
            }),
            (material, Some(key)) => {
                if key.usage != record.usage {
                    differences.push(Difference::Usage {
                        selector: selector(),
                        dns: record.usage,
                        document: key.usage,
                    });
                }
                if key.alg != record.alg {
                    differences.push(Difference::Alg {
                        selector: selector(),
                        dns: record.alg,
                        document: key.alg,
                    });
                }
                if !same_material(&key.material, material) {
                    differences.push(Difference::Material {
                        selector: selector(),
                    });
                }
            }
        }
    }
    for key in doc.keys.iter().filter(|k| k.valid_at(now)) {
        if !dns.iter().any(|r| r.selector == key.selector) {
            differences.push(Difference::MissingFromDns {
                selector: key.selector.clone(),
            });
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(ChannelMismatch {
            server: doc.server.clone(),
            differences,
        })
    }
}

/// `k` and `h` name the same key when the hash of one is the other.
fn same_material(doc: &KeyMaterial, dns: &DnsMaterial) -> bool {
    let hash = |der: &[u8]| -> [u8; 32] { Sha256::digest(der).into() };
    match (doc, dns) {
        (KeyMaterial::Spki(a), DnsMaterial::Spki(b)) => a == b,
        (KeyMaterial::SpkiSha256(a), DnsMaterial::SpkiSha256(b)) => a == b,
        (KeyMaterial::Spki(der), DnsMaterial::SpkiSha256(h))
        | (KeyMaterial::SpkiSha256(h), DnsMaterial::Spki(der)) => hash(der) == *h,
        (KeyMaterial::Spki(_) | KeyMaterial::SpkiSha256(_), DnsMaterial::Revoked) => false,
    }
}

impl ChannelMismatch {
    /// The machine-readable reason of the protocol.
    pub fn reason(&self) -> &'static str {
        "channel_mismatch"
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::MissingFromDocument { selector } => {
                write!(f, "{selector} is live in DNS but not in the document")
            }
            Difference::MissingFromDns { selector } => {
                write!(f, "{selector} is valid in the document but not live in DNS")
            }
            Difference::Usage {
                selector,
                dns,
                document,
            } => write!(
                f,
                "{selector} has u={} in DNS but u={} in the document",
                usage_name(*dns),
                usage_name(*document)
            ),
            Difference::Alg {
                selector,
                dns,
                document,
            } => write!(
                f,
                "{selector} has a={} in DNS but a={} in the document",
                alg_name(*dns),
                alg_name(*document)
            ),
            Difference::Material { selector } => {
                write!(
                    f,
                    "{selector} has a different key in DNS and in the document"
                )
            }
            Difference::RevokedButListed { selector } => {
                write!(f, "{selector} is revoked in DNS but valid in the document")
            }
        }
    }
}

fn usage_name(u: KeyUsage) -> &'static str {
    match u {
        KeyUsage::Tls => "tls",
        KeyUsage::Sig => "sig",
    }
}

fn alg_name(a: KeyAlg) -> &'static str {
    match a {
        KeyAlg::P256 => "p256",
        KeyAlg::Ed25519 => "ed25519",
    }
}

fn list(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
