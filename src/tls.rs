//! TLS (placeholder until the tls work lands).
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no certificate")]
    NoCertificate,
}

/// An authenticated peer server.
#[derive(Debug, Clone)]
pub struct PeerId {
    pub fqdn: Arc<str>,
}

pub struct CertReloader;
impl CertReloader {
    pub fn load(_f: &crate::config::TlsFiles) -> Result<Arc<Self>, TlsError> {
        Err(TlsError("not built".into()))
    }
    pub fn reload(&self) -> Result<(), TlsError> {
        Err(TlsError("not built".into()))
    }
    pub fn spki_sha256(&self) -> [u8; 32] {
        [0; 32]
    }
}
pub fn public_server_config(_c: Arc<CertReloader>) -> Arc<rustls::ServerConfig> {
    unimplemented!()
}
pub fn federation_server_config(
    _c: Arc<CertReloader>,
    _v: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Arc<rustls::ServerConfig> {
    unimplemented!()
}
pub fn client_verifier(
    _t: &crate::config::PeerTrust,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    Err(TlsError("not built".into()))
}
pub fn handshake_failure_reason(_e: &std::io::Error) -> &'static str {
    "io"
}
pub fn peer_identity(_c: &CertificateDer<'_>) -> Result<PeerId, IdentityError> {
    Err(IdentityError::NoCertificate)
}
