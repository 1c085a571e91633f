//! Loading a certificate chain and its private key from PEM files.
//!
//! The chain file is read plainly (certificates are public); the key file
//! goes through [`crate::config::read_secret_file`], which refuses files
//! readable by group or others. A pair is accepted only when the key parses
//! (PKCS#8, SEC1 or PKCS#1), the key matches the leaf's public key, and the
//! leaf has not expired. The result is a [`LoadedCert`]: the rustls
//! `CertifiedKey` plus the facts metrics and logs show.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;

use super::identity::inspect;
use super::TlsError;
use crate::config::TlsFiles;

/// A validated certificate and key, ready to present.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    key: Arc<CertifiedKey>,
    spki_sha256: [u8; 32],
    not_before: UnixTime,
    not_after: UnixTime,
}

impl LoadedCert {
    /// The chain and signing key, as rustls presents them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// SHA-256 of the leaf's SubjectPublicKeyInfo (what peers pin).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> UnixTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }
}

/// Loads and checks a certificate chain and its private key.
///
/// The chain file holds the leaf first, then any intermediates. Errors name
/// the file at fault.
pub fn load_certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    Ok(load(files, UnixTime::now())?.key)
}

/// [`load_certified_key`] with the facts, at a given time (for tests).
pub(crate) fn load(files: &TlsFiles, now: UnixTime) -> Result<LoadedCert, TlsError> {
    let chain = read_certificates(&files.cert_file)?;
    // `read_certificates` never returns an empty chain.
    let leaf = &chain[0];
    let facts = inspect(leaf).map_err(|_| TlsError::BadLeaf {
        path: files.cert_file.clone(),
    })?;
    if facts.not_after.as_secs() < now.as_secs() {
        return Err(TlsError::Expired {
            path: files.cert_file.clone(),
            not_after: facts.not_after.as_secs(),
        });
    }

    let key_der = read_private_key(&files.key_file)?;
    let signing_key = any_supported_type(&key_der).map_err(|source| TlsError::UnsupportedKey {
        path: files.key_file.clone(),
        source,
    })?;
    let key = CertifiedKey::new(chain, signing_key);
    // All ring signing keys expose their public key, so "unknown" cannot
    // happen with this provider; refuse it anyway rather than skip the check.
    key.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
    })?;

    Ok(LoadedCert {
        key: Arc::new(key),
        spki_sha256: facts.spki_sha256,
        not_before: facts.not_before,
        not_after: facts.not_after,
    })
}

/// Reads every CERTIFICATE section of a PEM file, in order; at least one.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::CertRead {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::CertPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads exactly one private key (any of the three PEM kinds).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = crate::config::read_secret_file(path).map_err(|source| TlsError::KeyRead {
        path: path.to_owned(),
        source,
    })?;
    let mut keys = PrivateKeyDer::pem_slice_iter(&pem);
    let key = match keys.next() {
        Some(Ok(key)) => key,
        Some(Err(source)) => {
            return Err(TlsError::KeyPem {
                path: path.to_owned(),
                source,
            })
        }
        None => {
            return Err(TlsError::NoPrivateKey {
                path: path.to_owned(),
            })
        }
    };
    if keys.next().is_some() {
        return Err(TlsError::SeveralPrivateKeys {
            path: path.to_owned(),
        });
    }
    Ok(key)
}
