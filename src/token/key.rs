//! Ed25519 keys: this server's signing key and peers' verifying keys.
//!
//! A [`SigningKey`] comes from a PKCS#8 PEM file (`-----BEGIN PRIVATE
//! KEY-----`, v1 as `openssl genpkey -algorithm ed25519` writes it, or v2
//! with the public key, as `mdgate keygen` writes it), read through
//! [`read_secret_file`] so that a file group or others can read is refused.
//! It carries its selector, which is the JWS `kid` and the DNS record name
//! (`<selector>._mdgate.<fqdn>`).
//!
//! A [`VerifyingKey`] comes from the DER SubjectPublicKeyInfo that a DNS
//! `k=` tag carries (RFC 8410: 12 fixed bytes, then the 32-byte key). Only
//! that exact encoding is accepted, so two different byte strings never
//! name the same key.
//!
//! Neither type's `Debug` shows private material, and no error message
//! quotes anything read from a key file.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::rand::SecureRandom as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;

use crate::config::{read_secret_file, SecretError};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4): SEQUENCE,
/// AlgorithmIdentifier { id-Ed25519 }, BIT STRING of 33 bytes with no
/// unused bits. The 32-byte public key follows.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410 §7): version
/// 0, id-Ed25519, OCTET STRING { OCTET STRING of 32 bytes }. The seed
/// follows. This is the form OpenSSL writes and reads; ring's own v2
/// output wraps the public key in a way OpenSSL 3 refuses, so keys are
/// generated in this form.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const ED25519_PUBLIC_LEN: usize = 32;
const ED25519_SPKI_LEN: usize = ED25519_SPKI_PREFIX.len() + ED25519_PUBLIC_LEN;
/// Longest selector (a DNS label).
const MAX_SELECTOR_LEN: usize = 63;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file is missing, unreadable, or readable by others.
    #[error(transparent)]
    File(#[from] SecretError),
    /// No single unencrypted PKCS#8 PEM block in the file.
    #[error(
        "{}: expected one unencrypted PKCS#8 PEM block (-----BEGIN PRIVATE KEY-----), \
         as `mdgate keygen` or `openssl genpkey -algorithm ed25519` write",
        origin.display()
    )]
    Pem { origin: PathBuf },
    /// A PKCS#8 key of another algorithm (often the TLS key by mistake).
    #[error(
        "{}: not an Ed25519 key (is it the TLS key? signing keys are Ed25519)",
        origin.display()
    )]
    NotEd25519 { origin: PathBuf },
    /// Ed25519 by its algorithm identifier, but malformed or inconsistent.
    #[error("{}: invalid Ed25519 PKCS#8 key ({reason})", origin.display())]
    InvalidPrivateKey {
        origin: PathBuf,
        reason: &'static str,
    },
    /// A public key that is not a 44-byte Ed25519 SubjectPublicKeyInfo.
    #[error("not an Ed25519 SubjectPublicKeyInfo (expected 44 DER bytes starting 302a300506032b6570032100, got {len} bytes)")]
    NotEd25519Spki { len: usize },
    /// A selector that is not `[a-z0-9][a-z0-9-]{0,62}`.
    #[error("invalid selector {selector:?}: use 1-63 characters from a-z, 0-9 and '-', not starting with '-'")]
    Selector { selector: String },
    /// The system random source failed while generating a key.
    #[error("cannot generate a key: the system random source failed")]
    Random,
}

/// This server's Ed25519 signing key and its selector.
#[derive(Clone)]
pub struct SigningKey {
    selector: String,
    /// PKCS#8 DER, as jsonwebtoken's `EncodingKey` wants it.
    encoding: EncodingKey,
    /// The PKCS#8 DER again, kept only for [`SigningKey::to_pkcs8_pem`].
    pkcs8: Vec<u8>,
    public: VerifyingKey,
}

/// An Ed25519 public key, as published in DNS.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    /// The whole SubjectPublicKeyInfo; the raw key is its last 32 bytes.
    spki: [u8; ED25519_SPKI_LEN],
}

/// Whether `selector` has selector syntax: `[a-z0-9][a-z0-9-]{0,62}`
/// (one DNS label, lower case).
pub fn valid_selector(selector: &str) -> bool {
    let bytes = selector.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SELECTOR_LEN
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn check_selector(selector: &str) -> Result<String, KeyError> {
    if valid_selector(selector) {
        Ok(selector.to_owned())
    } else {
        Err(KeyError::Selector {
            selector: selector.to_owned(),
        })
    }
}

impl SigningKey {
    /// Reads the key from a PEM file that only its owner can read.
    pub fn load(path: &Path, selector: &str) -> Result<Self, KeyError> {
        let selector = check_selector(selector)?;
        let pem = read_secret_file(path)?;
        Self::parse_pem(selector, &pem, path)
    }

    /// Parses a PKCS#8 PEM key (for tests and in-memory use; files go
    /// through [`SigningKey::load`]).
    pub fn from_pkcs8_pem(selector: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let selector = check_selector(selector)?;
        Self::parse_pem(selector, pem, Path::new("<memory>"))
    }

    /// Parses a PKCS#8 DER key, v1 or v2.
    pub fn from_pkcs8_der(selector: &str, der: &[u8]) -> Result<Self, KeyError> {
        let selector = check_selector(selector)?;
        Self::parse_der(selector, der, Path::new("<memory>"))
    }

    /// A new key from the system's random source.
    pub fn generate(selector: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| KeyError::Random)?;
        let key = Self::from_seed(selector, &seed);
        seed.fill(0);
        key
    }

    /// The key with this 32-byte seed (RFC 8032's private key), for
    /// deterministic tests and for [`SigningKey::generate`].
    pub fn from_seed(selector: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        let selector = check_selector(selector)?;
        let mut der = Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + seed.len());
        der.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        der.extend_from_slice(seed);
        let key = Self::parse_der(selector, &der, Path::new("<generated>"));
        der.fill(0);
        key
    }

    fn parse_pem(selector: String, pem: &[u8], origin: &Path) -> Result<Self, KeyError> {
        // Exactly one PRIVATE KEY block: with two, which one signs would
        // depend on the order in the file. The parser's own errors are not
        // passed on because they can quote bytes of the file.
        let mut blocks = PrivatePkcs8KeyDer::pem_slice_iter(pem);
        let der = match (blocks.next(), blocks.next()) {
            (Some(Ok(der)), None) => der,
            _ => {
                return Err(KeyError::Pem {
                    origin: origin.to_path_buf(),
                })
            }
        };
        Self::parse_der(selector, der.secret_pkcs8_der(), origin)
    }

    fn parse_der(selector: String, der: &[u8], origin: &Path) -> Result<Self, KeyError> {
        // ring checks a v2 file's public key against its private key.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| {
            if e.to_string() == "WrongAlgorithm" {
                KeyError::NotEd25519 {
                    origin: origin.to_path_buf(),
                }
            } else {
                KeyError::InvalidPrivateKey {
                    origin: origin.to_path_buf(),
                    reason: rejected_reason(&e),
                }
            }
        })?;
        let public = VerifyingKey::from_raw(pair.public_key().as_ref()).ok_or(
            KeyError::InvalidPrivateKey {
                origin: origin.to_path_buf(),
                reason: "public key of unexpected length",
            },
        )?;
        Ok(SigningKey {
            selector,
            encoding: EncodingKey::from_ed_der(der),
            pkcs8: der.to_vec(),
            public,
        })
    }

    /// The selector: the JWS `kid` and the DNS record's first label.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The DER SubjectPublicKeyInfo of the public key.
    pub fn spki_der(&self) -> &[u8] {
        self.public.spki_der()
    }

    /// Standard base64 (padded) of the SubjectPublicKeyInfo: the value of
    /// the DNS `k=` tag and of the key document's `k`.
    pub fn spki_b64(&self) -> String {
        self.public.spki_b64()
    }

    /// The private key as PKCS#8 PEM, to write to a private file. This is
    /// secret material: never log or print it.
    pub fn to_pkcs8_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.pkcs8)
    }

    pub(super) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("selector", &self.selector)
            .field("public", &self.public.spki_b64())
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A key from its DER SubjectPublicKeyInfo (what DNS `k=` decodes to).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(raw) if der.len() == ED25519_SPKI_LEN => {
                Self::from_raw(raw).ok_or(KeyError::NotEd25519Spki { len: der.len() })
            }
            _ => Err(KeyError::NotEd25519Spki { len: der.len() }),
        }
    }

    fn from_raw(raw: &[u8]) -> Option<Self> {
        if raw.len() != ED25519_PUBLIC_LEN {
            return None;
        }
        let mut spki = [0u8; ED25519_SPKI_LEN];
        spki[..ED25519_SPKI_PREFIX.len()].copy_from_slice(&ED25519_SPKI_PREFIX);
        spki[ED25519_SPKI_PREFIX.len()..].copy_from_slice(raw);
        Some(VerifyingKey { spki })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Standard base64 (padded) of the SubjectPublicKeyInfo.
    pub fn spki_b64(&self) -> String {
        STANDARD.encode(self.spki)
    }

    /// The raw 32-byte key, which is what ring (under jsonwebtoken) takes.
    fn raw(&self) -> &[u8] {
        &self.spki[ED25519_SPKI_PREFIX.len()..]
    }

    pub(super) fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(self.raw())
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifyingKey")
            .field(&self.spki_b64())
            .finish()
    }
}

/// ring's rejection reasons, as fixed words (its `Display` is one of a
/// handful of static strings; matching keeps our message independent of
/// its exact wording).
fn rejected_reason(e: &ring::error::KeyRejected) -> &'static str {
    match e.to_string().as_str() {
        "InconsistentComponents" => "its public key does not match its private key",
        "InvalidEncoding" => "malformed DER",
        "VersionNotSupported" => "unsupported PKCS#8 version",
        "PublicKeyIsMissing" => "the public key is missing",
        _ => "rejected by the crypto library",
    }
}

/// PEM with 64-character lines (RFC 7468 §2).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 output is ASCII, so splitting at any byte is a char boundary.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests;
