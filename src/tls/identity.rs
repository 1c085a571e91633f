//! Peer identity: the one DNS name a peer certificate speaks for.
//!
//! A federation peer is identified by its FQDN, taken from **exactly one**
//! DNS subjectAltName. There is no fallback to the subject CN (RFC 6125,
//! HAProxy #3486), no wildcard, no IP address. The same parse also yields
//! the SubjectPublicKeyInfo hash and the validity window, which the verifier
//! needs, so a handshake parses the leaf with x509-parser once.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A verified peer: its FQDN and the hashes that bind tokens to its key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerId {
    fqdn: Arc<str>,
    spki_sha256: [u8; 32],
    cert_sha256: [u8; 32],
}

/// Why a certificate does not name exactly one usable FQDN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate cannot be parsed")]
    Malformed,
    #[error("certificate has no subjectAltName")]
    NoSan,
    #[error("certificate has only IP address subjectAltNames, no DNS name")]
    IpSanOnly,
    #[error("certificate subjectAltName has no DNS name")]
    NoDnsName,
    #[error("certificate has {count} DNS subjectAltNames; exactly one is required")]
    SeveralDnsNames { count: usize },
    #[error("certificate DNS name is a wildcard")]
    Wildcard,
    #[error("certificate DNS name is not a valid FQDN: {0}")]
    InvalidName(FqdnError),
}

/// Why a string is not a syntactically valid FQDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FqdnError {
    #[error("empty name")]
    Empty,
    #[error("longer than 253 characters")]
    TooLong,
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63 characters")]
    LabelTooLong,
    #[error("character outside a-z, 0-9 and '-'")]
    BadCharacter,
    #[error("label starts or ends with '-'")]
    HyphenAtEdge,
    #[error("a single label is not a fully qualified name")]
    SingleLabel,
    #[error("all-numeric top-level label (looks like an IP address)")]
    NumericTopLabel,
    #[error("wildcard")]
    Wildcard,
}

/// What the verifier needs from a leaf certificate, from one parse.
pub(crate) struct CertFacts {
    pub(crate) spki_sha256: [u8; 32],
    pub(crate) not_before: UnixTime,
    pub(crate) not_after: UnixTime,
    /// The normalized FQDN, or why there is none. Kept apart from the other
    /// facts because our own public certificate may legitimately carry
    /// several names.
    pub(crate) identity: Result<String, IdentityError>,
}

impl PeerId {
    /// Builds an identity from parts established elsewhere (tests, stored
    /// grants). The name is normalized like a certificate's.
    pub fn from_parts(
        fqdn: &str,
        spki_sha256: [u8; 32],
        cert_sha256: [u8; 32],
    ) -> Result<Self, FqdnError> {
        Ok(PeerId {
            fqdn: normalize_fqdn(fqdn)?.into(),
            spki_sha256,
            cert_sha256,
        })
    }

    /// The peer's FQDN: lower case, no trailing dot.
    pub fn fqdn(&self) -> &str {
        &self.fqdn
    }

    /// The FQDN as a shared string, for spans and maps without copying.
    pub fn fqdn_arc(&self) -> &Arc<str> {
        &self.fqdn
    }

    /// SHA-256 of the leaf's DER SubjectPublicKeyInfo (what DNS records and
    /// `pinned_spki_sha256` pin; stable across certificate renewals that
    /// keep the key).
    pub fn spki_sha256(&self) -> &[u8; 32] {
        &self.spki_sha256
    }

    /// SHA-256 of the whole DER leaf certificate (RFC 8705 `x5t#S256`).
    pub fn cert_sha256(&self) -> &[u8; 32] {
        &self.cert_sha256
    }

    /// The RFC 8705 `cnf.x5t#S256` value: base64url (no padding) of
    /// [`cert_sha256`](Self::cert_sha256).
    pub fn x5t_s256(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.cert_sha256)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerId")
            .field("fqdn", &self.fqdn)
            .field("spki_sha256", &hex::encode(self.spki_sha256))
            .field("cert_sha256", &hex::encode(self.cert_sha256))
            .finish()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fqdn)
    }
}

/// Extracts the identity of a peer from its end-entity certificate.
///
/// Requires exactly one DNS subjectAltName that is a valid FQDN; returns it
/// lower-cased without a trailing dot. Other SAN kinds beside it are
/// ignored; the CN is never read. This does not verify the certificate:
/// call it on `peer_certificates()[0]` of a completed handshake.
pub fn peer_identity(end_entity: &CertificateDer<'_>) -> Result<PeerId, IdentityError> {
    let facts = inspect(end_entity)?;
    let fqdn = facts.identity?;
    Ok(PeerId {
        fqdn: fqdn.into(),
        spki_sha256: facts.spki_sha256,
        cert_sha256: Sha256::digest(end_entity.as_ref()).into(),
    })
}

/// Parses a leaf once and collects what identity and pin checks need.
pub(crate) fn inspect(der: &[u8]) -> Result<CertFacts, IdentityError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
    if !rest.is_empty() {
        return Err(IdentityError::Malformed);
    }
    let validity = cert.validity();
    Ok(CertFacts {
        spki_sha256: Sha256::digest(cert.public_key().raw).into(),
        not_before: unix_time(validity.not_before.timestamp()),
        not_after: unix_time(validity.not_after.timestamp()),
        identity: single_dns_name(&cert),
    })
}

/// The single DNS SAN, normalized, or the precise reason there is none.
fn single_dns_name(cert: &X509Certificate<'_>) -> Result<String, IdentityError> {
    // A duplicated SAN extension is an error here, not "take the first".
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::Malformed)?
        .ok_or(IdentityError::NoSan)?;
    let names = &san.value.general_names;
    if names.is_empty() {
        return Err(IdentityError::NoSan);
    }
    let mut dns = names.iter().filter_map(|n| match n {
        GeneralName::DNSName(d) => Some(*d),
        _ => None,
    });
    let Some(first) = dns.next() else {
        let has_ip = names.iter().any(|n| matches!(n, GeneralName::IPAddress(_)));
        return Err(if has_ip {
            IdentityError::IpSanOnly
        } else {
            IdentityError::NoDnsName
        });
    };
    let more = dns.count();
    if more > 0 {
        return Err(IdentityError::SeveralDnsNames { count: more + 1 });
    }
    normalize_fqdn(first).map_err(|e| match e {
        FqdnError::Wildcard => IdentityError::Wildcard,
        other => IdentityError::InvalidName(other),
    })
}

/// Checks that `name` is a syntactically valid FQDN and returns it in
/// canonical form: ASCII lower case, no trailing dot.
///
/// Rules: 2 or more labels of 1-63 characters from `a-z0-9-` (any case on
/// input), no label starting or ending with `-`, at most 253 characters,
/// a top-level label that is not all digits (so `10.0.0.1` is refused), no
/// `*`. Internationalized names must already be in A-label (`xn--`) form.
pub fn normalize_fqdn(name: &str) -> Result<String, FqdnError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(FqdnError::Empty);
    }
    if name.len() > 253 {
        return Err(FqdnError::TooLong);
    }
    if name.contains('*') {
        return Err(FqdnError::Wildcard);
    }
    let mut labels = 0usize;
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(FqdnError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(FqdnError::LabelTooLong);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(FqdnError::BadCharacter);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(FqdnError::HyphenAtEdge);
        }
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return Err(FqdnError::SingleLabel);
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FqdnError::NumericTopLabel);
    }
    Ok(name.to_ascii_lowercase())
}

/// X.509 times before 1970 cannot be represented; clamp them to the epoch
/// (only `not_before` can sensibly be that old).
fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_table() {
        let ok = [
            ("server1.example.org", "server1.example.org"),
            ("Server1.Example.ORG.", "server1.example.org"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c1", "a-b.c1"),
            ("1.example.org", "1.example.org"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize_fqdn(input).as_deref(), Ok(want), "{input}");
        }
        let long_label = format!("{}.org", "a".repeat(64));
        let long_name = format!("{}org", "abcdefghi.".repeat(26));
        let bad = [
            ("", FqdnError::Empty),
            (".", FqdnError::Empty),
            ("localhost", FqdnError::SingleLabel),
            ("example..org", FqdnError::EmptyLabel),
            (".example.org", FqdnError::EmptyLabel),
            ("example.org..", FqdnError::EmptyLabel),
            ("*.example.org", FqdnError::Wildcard),
            ("a*.example.org", FqdnError::Wildcard),
            ("exa mple.org", FqdnError::BadCharacter),
            ("under_score.org", FqdnError::BadCharacter),
            ("bücher.example", FqdnError::BadCharacter),
            ("-a.example.org", FqdnError::HyphenAtEdge),
            ("a-.example.org", FqdnError::HyphenAtEdge),
            ("10.0.0.1", FqdnError::NumericTopLabel),
            (long_label.as_str(), FqdnError::LabelTooLong),
            (long_name.as_str(), FqdnError::TooLong),
        ];
        for (input, want) in bad {
            assert_eq!(normalize_fqdn(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn peer_id_hashes_and_x5t() {
        let id = PeerId::from_parts("A.Example.org.", [1; 32], [0xff; 32]).expect("valid");
        assert_eq!(id.fqdn(), "a.example.org");
        assert_eq!(id.to_string(), "a.example.org");
        assert_eq!(id.spki_sha256(), &[1; 32]);
        // 32 bytes of 0xff in base64url without padding.
        assert_eq!(id.x5t_s256(), "__________________________________________8");
        assert!(format!("{id:?}").contains("ffffffff"));
    }
}
