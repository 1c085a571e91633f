//! Key and certificate generation (rcgen, ECDSA P-256).
//!
//! * [`self_signed`]: a server's own certificate whose only DNS SAN is its
//!   FQDN, for `mdgate keygen` and pinned (DNS-published) trust.
//! * [`TestCa`]: a tiny in-memory CA. **Test and demo helper only**: its key
//!   lives in memory, it has no revocation, and [`TestCa::issue_with`]
//!   deliberately lets callers mint malformed identities (wildcards, several
//!   names, IP-only) to exercise the verifier.
//! * [`write_private`]: creates a key file with mode 0600 from the start.
//!
//! PEM strings returned here feed straight into files that
//! [`load_certified_key`](super::load_certified_key) and
//! [`PeerTrust`](crate::config::PeerTrust) read. Leaves carry both the
//! serverAuth and clientAuth purposes because a federation server presents
//! the same certificate in both roles.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::identity::{inspect, normalize_fqdn, FqdnError};

/// Default lifetime of generated leaves.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Generated certificates start this far in the past, to tolerate a peer
/// whose clock is a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Errors from generating or inspecting keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("invalid FQDN {name:?}: {source}")]
    InvalidName {
        name: String,
        #[source]
        source: FqdnError,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("certificate cannot be parsed")]
    Malformed,
}

/// What to put in a generated leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// DNS subjectAltNames, taken as given (not validated, so tests can
    /// build bad identities).
    pub dns_names: Vec<String>,
    /// IP address subjectAltNames.
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A throwaway certificate authority for tests and the demo.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl LeafSpec {
    /// A leaf for these DNS names, valid from an hour ago for a year.
    pub fn dns<S: AsRef<str>>(names: &[S]) -> Self {
        let now = SystemTime::now();
        LeafSpec {
            dns_names: names.iter().map(|n| n.as_ref().to_owned()).collect(),
            ip_addresses: Vec::new(),
            not_before: now - BACKDATE,
            not_after: now + LEAF_VALIDITY,
        }
    }

    /// The rcgen parameters for this leaf (CN is the first DNS name, for
    /// humans only; nothing reads it).
    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = self.dns_names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.subject_alt_names = self
            .dns_names
            .iter()
            .filter_map(|n| n.as_str().try_into().ok().map(SanType::DnsName))
            .chain(self.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        set_validity(&mut params, self.not_before, self.not_after);
        params.serial_number = Some(SerialNumber::from(rand::random::<u64>()));
        params
    }
}

/// A self-signed certificate for `fqdn` (its only DNS SAN) with a new
/// ECDSA P-256 key, valid for a year. Returns `(cert_pem, key_pem)`; the
/// key is PKCS#8.
pub fn self_signed(fqdn: &str) -> Result<(String, String), PkiError> {
    let fqdn = normalize_fqdn(fqdn).map_err(|source| PkiError::InvalidName {
        name: fqdn.to_owned(),
        source,
    })?;
    self_signed_with(&LeafSpec::dns(&[fqdn]))
}

/// A self-signed certificate from an explicit spec (any SANs, any dates).
pub fn self_signed_with(spec: &LeafSpec) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = spec.params().self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A self-signed certificate for an existing PKCS#8 private key (renewing
/// a certificate without changing the pinned key). Returns the cert PEM.
pub fn self_signed_with_key(spec: &LeafSpec, key_pem: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem)?;
    Ok(spec.params().self_signed(&key)?.pem())
}

impl TestCa {
    /// A new CA with a fresh P-256 key, valid from an hour ago for a year.
    pub fn new() -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "mdgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, now - BACKDATE, now + LEAF_VALIDITY);
        params.serial_number = Some(SerialNumber::from(rand::random::<u64>()));
        let cert = params.self_signed(&key)?;
        Ok(TestCa { cert, key })
    }

    /// The CA certificate, for a `ca_file` trust bundle.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a leaf for `dns_names` with a new P-256 key, valid from an
    /// hour ago for a year. Returns `(cert_pem, key_pem)`.
    pub fn issue<S: AsRef<str>>(&self, dns_names: &[S]) -> Result<(String, String), PkiError> {
        self.issue_with(&LeafSpec::dns(dns_names))
    }

    /// Issues a leaf from an explicit spec (any SANs, any dates).
    pub fn issue_with(&self, spec: &LeafSpec) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = self.sign(spec, &key)?;
        Ok((cert, key.serialize_pem()))
    }

    /// Issues a leaf for an existing PKCS#8 private key. Returns the cert
    /// PEM.
    pub fn issue_for_key(&self, spec: &LeafSpec, key_pem: &str) -> Result<String, PkiError> {
        self.sign(spec, &KeyPair::from_pem(key_pem)?)
    }

    fn sign(&self, spec: &LeafSpec, key: &KeyPair) -> Result<String, PkiError> {
        let mut params = spec.params();
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(key, &self.cert, &self.key)?.pem())
    }
}

/// SHA-256 of the SubjectPublicKeyInfo of the first certificate in a PEM
/// string: the value to pin (`pinned_spki_sha256`, DNS key records).
pub fn spki_sha256_of_pem(cert_pem: &str) -> Result<[u8; 32], PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())?;
    Ok(inspect(&der).map_err(|_| PkiError::Malformed)?.spki_sha256)
}

/// Writes a private file: created with mode 0600 (never wider, whatever
/// the umask), refusing to overwrite an existing file, synced to disk.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Sets the validity window in rcgen's time type without depending on the
/// `time` crate ourselves: whole seconds after the epoch (earlier times
/// become the epoch).
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(secs(not_before));
    params.not_after = epoch + Duration::from_secs(secs(not_after));
}
