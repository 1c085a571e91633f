//! The current certificate, swapped atomically on reload.
//!
//! [`CertReloader`] is installed as the certificate resolver of every config
//! (server and client side), so a reload never rebuilds a config: the
//! session-ticket keys, the session cache and the verifier stay, and the
//! next handshake presents the new leaf. Connections already established
//! keep the certificate they negotiated.
//!
//! A reload reads and validates the new pair completely before taking the
//! write lock; on any error the previous pair keeps being served (the
//! linkerd2-proxy and rpxy pattern, see STYLE.md). The lock is held only to
//! swap one `Arc`, so handshakes never wait on file I/O.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::UnixTime;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::load::{load, LoadedCert};
use super::TlsError;
use crate::config::TlsFiles;

/// Holds the last good certificate and key, and reloads them from files.
pub struct CertReloader {
    files: TlsFiles,
    current: RwLock<Arc<LoadedCert>>,
}

impl CertReloader {
    /// Loads the pair named by `files`; fails if it is not valid now.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        Self::new_at(files, UnixTime::now())
    }

    pub(crate) fn new_at(files: TlsFiles, now: UnixTime) -> Result<Self, TlsError> {
        let loaded = load(&files, now)?;
        Ok(CertReloader {
            files,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Re-reads the files. On success the next handshakes present the new
    /// certificate; on failure the current one stays and the error says
    /// why (log it and count it; it is not fatal).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_at(UnixTime::now())
    }

    pub(crate) fn reload_at(&self, now: UnixTime) -> Result<(), TlsError> {
        let loaded = Arc::new(load(&self.files, now)?);
        let old = {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *current, loaded.clone())
        };
        if old.spki_sha256() != loaded.spki_sha256() {
            tracing::info!(
                cert.file = %self.files.cert_file.display(),
                tls.spki_sha256 = %hex::encode(loaded.spki_sha256()),
                tls.not_after = loaded.not_after().as_secs(),
                "certificate reloaded with a new key"
            );
        } else {
            tracing::info!(
                cert.file = %self.files.cert_file.display(),
                tls.not_after = loaded.not_after().as_secs(),
                "certificate reloaded"
            );
        }
        Ok(())
    }

    /// The pair being served now.
    pub fn current(&self) -> Arc<LoadedCert> {
        // A poisoned lock still holds a valid `Arc` (the writer only swaps
        // it), so recovering the guard is safe.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// SHA-256 of the current leaf's SubjectPublicKeyInfo.
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.current().spki_sha256()
    }

    /// When the current leaf expires (for an expiry gauge and warnings).
    pub fn not_after(&self) -> UnixTime {
        self.current().not_after()
    }

    /// The files this reloader reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .certified_key()
            .clone()
    }
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert_file", &self.files.cert_file)
            .field("spki_sha256", &hex::encode(self.spki_sha256()))
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertReloader {
    /// One certificate whatever the SNI: mdgate serves one FQDN per
    /// listener, and SNI/Host agreement is checked at the HTTP layer.
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for CertReloader {
    /// Always presents our certificate: federation peers trust it by pin or
    /// by CA, and a pinning server sends no CA hints to match against.
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
