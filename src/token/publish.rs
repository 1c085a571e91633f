//! This server's own keys, as `[keys]` and `[federation.tls]` name them,
//! and the key document built from them.
//!
//! Two tools publish the same keys through the two channels of
//! `docs/protocol.md` § Keys, and both start here so they cannot drift:
//!
//! ```text
//! Config ──own_keys──▶ OwnKeys ──┬─▶ mdgate dns-records (DNS: index, key records, TLSA)
//!  [keys] signing key            └─▶ key_document(config, now) ─▶ JWS for /.well-known/mdgate/keys
//!  [federation.tls] certificate
//!  next_* keys of a rotation
//! ```
//!
//! [`OwnKeys`] holds the public half of every key (and the signing key, to
//! sign the document). Reading the files is the only I/O; building and
//! signing the document takes `now` as a parameter.
//!
//! Next keys are listed in the document with an `nbf` after the
//! document's own expiry (plus the longest clock skew a peer may allow),
//! so they are never valid during its lifetime: the protocol requires a
//! live DNS selector to be in the document, and a document key valid now to
//! be live in DNS, so a next key published ahead of use must be listed but
//! not yet valid. After the switch (`next_*` lines become the current
//! ones), the next document lists them without `nbf`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::key::{KeyError, SigningKey};
use super::keydoc::{DocError, DocKey, KeyAlg, KeyDocument, KeyMaterial, KeyUsage};
use crate::config::Config;
use crate::dns::record::KeyAlgorithm;

/// How long a key document built by [`key_document`] is valid. The server
/// re-signs it well before that (a peer caps any document at 7 days).
pub const DOC_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A next key's `nbf` is this long after the document's `exp`: the
/// largest `[keys] clock_skew` a peer may configure, so that no peer's
/// clock makes the entry valid while the document is.
const NEXT_KEY_MARGIN: Duration = Duration::from_secs(600);

/// Why this server's keys cannot be read or its document not built.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "the configuration has no [keys] section: run `mdgate keygen` and add the lines it prints"
    )]
    NoKeys,
    #[error(
        "the configuration has no [federation] section: the tls key record pins the key of the \
         [federation.tls] certificate"
    )]
    NoFederation,
    #[error("signing key: {0}")]
    SigningKey(#[from] KeyError),
    #[error("cannot read certificate {}: {source}", path.display())]
    CertRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate file {}: no PEM CERTIFICATE block", path.display())]
    CertPem { path: PathBuf },
    #[error("certificate file {}: the first certificate cannot be parsed", path.display())]
    CertParse { path: PathBuf },
    #[error(
        "certificate file {}: its key is neither P-256 nor Ed25519, the algorithms of tls key \
         records",
        path.display()
    )]
    UnsupportedKey { path: PathBuf },
    #[error(transparent)]
    Document(#[from] DocError),
}

/// What a key is to this server now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// In use: presented (TLS) or signing (sig).
    Current,
    /// Published ahead of a rotation; not used until the switch.
    Next,
}

/// One of this server's keys, public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnKey {
    pub selector: String,
    pub usage: KeyUsage,
    pub alg: KeyAlg,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    pub role: KeyRole,
    /// For TLS keys: the certificate file, and the DNS name the
    /// certificate speaks for (or why it has no usable one).
    pub cert: Option<CertInfo>,
}

/// Facts about a TLS key's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub path: PathBuf,
    /// The single DNS subjectAltName, or why there is none.
    pub identity: Result<String, String>,
}

/// Every key of this server that the configuration names.
#[derive(Debug, Clone)]
pub struct OwnKeys {
    /// `[server] fqdn`.
    pub fqdn: String,
    /// Current TLS, current signing, then the next TLS and next signing
    /// keys when a rotation is under way.
    pub keys: Vec<OwnKey>,
    /// The current signing key (signs the key document).
    signing: SigningKey,
}

impl OwnKey {
    /// SHA-256 of the SubjectPublicKeyInfo (DNS `h=`, TLSA `3 1 1`).
    pub fn spki_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.spki).into()
    }
}

impl OwnKeys {
    /// The keys in one role.
    pub fn with_role(&self, role: KeyRole) -> impl Iterator<Item = &OwnKey> {
        self.keys.iter().filter(move |k| k.role == role)
    }

    /// The current signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The unsigned document, issued at `now`, valid for [`DOC_LIFETIME`].
    pub fn document(&self, now: SystemTime) -> KeyDocument {
        let mut doc = KeyDocument::new(self.fqdn.clone(), Vec::new(), now, DOC_LIFETIME);
        let next_nbf = doc
            .exp
            .saturating_add(i64::try_from(NEXT_KEY_MARGIN.as_secs()).unwrap_or(i64::MAX));
        doc.keys = self
            .keys
            .iter()
            .map(|key| DocKey {
                selector: key.selector.clone(),
                usage: key.usage,
                alg: key.alg,
                // TLS keys as `h`, the form of their DNS records; signing
                // keys need `k`.
                material: match key.usage {
                    KeyUsage::Tls => KeyMaterial::SpkiSha256(key.spki_sha256()),
                    KeyUsage::Sig => KeyMaterial::Spki(key.spki.clone()),
                },
                nbf: match key.role {
                    KeyRole::Current => None,
                    KeyRole::Next => Some(next_nbf),
                },
                exp: None,
            })
            .collect();
        doc
    }
}

/// Reads this server's keys: the signing key of `[keys]`, the key of the
/// `[federation.tls]` certificate, and the next keys of a rotation.
pub fn own_keys(config: &Config) -> Result<OwnKeys, PublishError> {
    let keys = config.keys.as_ref().ok_or(PublishError::NoKeys)?;
    let federation = config
        .federation
        .as_ref()
        .ok_or(PublishError::NoFederation)?;
    let signing = SigningKey::load(&keys.signing.key_file, &keys.signing.selector)?;
    let mut own = vec![
        tls_key(
            &keys.tls_selector,
            &federation.tls.cert_file,
            KeyRole::Current,
        )?,
        sig_key(&signing, KeyRole::Current),
    ];
    if let Some(next) = &keys.next_tls {
        own.push(tls_key(&next.selector, &next.cert_file, KeyRole::Next)?);
    }
    if let Some(next) = &keys.next_signing {
        let key = SigningKey::load(&next.key_file, &next.selector)?;
        own.push(sig_key(&key, KeyRole::Next));
    }
    Ok(OwnKeys {
        fqdn: config.server.fqdn.clone(),
        keys: own,
        signing,
    })
}

/// Builds and signs this server's key document, to serve at
/// `GET /.well-known/mdgate/keys` as `application/jose`. Reads the key
/// files each time (callers cache the result for a while; it is valid for
/// [`DOC_LIFETIME`]).
pub fn key_document(config: &Config, now: SystemTime) -> Result<String, PublishError> {
    let own = own_keys(config)?;
    Ok(own.document(now).sign(&own.signing, now)?)
}

fn sig_key(key: &SigningKey, role: KeyRole) -> OwnKey {
    OwnKey {
        selector: key.selector().to_owned(),
        usage: KeyUsage::Sig,
        alg: KeyAlg::Ed25519,
        spki: key.spki_der().to_vec(),
        role,
        cert: None,
    }
}

fn tls_key(selector: &str, cert_file: &Path, role: KeyRole) -> Result<OwnKey, PublishError> {
    let path = cert_file.to_path_buf();
    let pem = std::fs::read(cert_file).map_err(|source| PublishError::CertRead {
        path: path.clone(),
        source,
    })?;
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| PublishError::CertPem { path: path.clone() })?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| PublishError::CertParse { path: path.clone() })?;
    let spki = cert.public_key().raw.to_vec();
    let alg = match KeyAlgorithm::of_spki(&spki) {
        Some(KeyAlgorithm::P256) => KeyAlg::P256,
        Some(KeyAlgorithm::Ed25519) => KeyAlg::Ed25519,
        None => return Err(PublishError::UnsupportedKey { path }),
    };
    let identity = crate::tls::peer_identity(&der)
        .map(|id| id.fqdn().to_owned())
        .map_err(|e| e.to_string());
    Ok(OwnKey {
        selector: selector.to_owned(),
        usage: KeyUsage::Tls,
        alg,
        spki,
        role,
        cert: Some(CertInfo { path, identity }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{compare, DnsKey, DnsMaterial, KeyDocument, DEFAULT_CLOCK_SKEW};
    use std::time::UNIX_EPOCH;

    const FQDN: &str = "server1.example.org";

    fn keys(next: bool) -> OwnKeys {
        let signing = SigningKey::generate("sig1").expect("key");
        let tls = |selector: &str, role| {
            let spki = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .expect("tls key")
                .public_key_der();
            OwnKey {
                selector: selector.into(),
                usage: KeyUsage::Tls,
                alg: KeyAlg::P256,
                spki,
                role,
                cert: None,
            }
        };
        let mut all = vec![
            tls("tls1", KeyRole::Current),
            sig_key(&signing, KeyRole::Current),
        ];
        if next {
            all.push(tls("tls2", KeyRole::Next));
            let next_sig = SigningKey::generate("sig2").expect("key");
            all.push(sig_key(&next_sig, KeyRole::Next));
        }
        OwnKeys {
            fqdn: FQDN.into(),
            keys: all,
            signing,
        }
    }

    fn dns_of(keys: &OwnKeys, roles: &[KeyRole]) -> Vec<DnsKey> {
        keys.keys
            .iter()
            .filter(|k| roles.contains(&k.role))
            .map(|k| DnsKey {
                selector: k.selector.clone(),
                usage: k.usage,
                alg: k.alg,
                material: match k.usage {
                    KeyUsage::Tls => DnsMaterial::SpkiSha256(k.spki_sha256()),
                    KeyUsage::Sig => DnsMaterial::Spki(k.spki.clone()),
                },
            })
            .collect()
    }

    fn verify(keys: &OwnKeys, jws: &str, now: SystemTime) -> KeyDocument {
        KeyDocument::verify(
            jws,
            FQDN,
            DEFAULT_CLOCK_SKEW,
            |kid| (kid == "sig1").then(|| keys.signing.verifying_key().clone()),
            now,
        )
        .expect("verifies")
    }

    #[test]
    fn the_document_verifies_and_agrees_with_dns() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_500_000);
        let keys = keys(false);
        let jws = keys.document(now).sign(&keys.signing, now).expect("sign");
        let doc = verify(&keys, &jws, now);
        assert_eq!(doc.keys.len(), 2);
        compare(&doc, &dns_of(&keys, &[KeyRole::Current]), now).expect("agree");
    }

    #[test]
    fn next_keys_agree_before_and_after_dns_lists_them() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_500_000);
        let keys = keys(true);
        let jws = keys.document(now).sign(&keys.signing, now).expect("sign");
        // Near the end of the document's life, with a fast clock.
        let late = now + DOC_LIFETIME - Duration::from_secs(1) + Duration::from_secs(60);
        for at in [now, late] {
            let doc = verify(&keys, &jws, now);
            // Published ahead of use: DNS lists them.
            compare(&doc, &dns_of(&keys, &[KeyRole::Current, KeyRole::Next]), at)
                .expect("agree with next keys in DNS");
            // Not yet in DNS: they are not valid yet, so that is fine too.
            compare(&doc, &dns_of(&keys, &[KeyRole::Current]), at)
                .expect("agree without next keys in DNS");
        }
    }
}
