//! The egress client config: mdgate dialling a peer's federation listener.
//!
//! It presents the same [`CertReloader`] certificate as our listeners (a
//! federation server is also a client), verifies the peer with the given
//! verifier (normally a [`PeerVerifier`](super::PeerVerifier), which also
//! requires the dialled FQDN to be the certificate's single DNS SAN), offers
//! ALPN `h2` then `http/1.1`, and keeps rustls's default in-memory
//! resumption store (256 sessions).

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::ClientConfig;

use super::server::FEDERATION_VERSIONS;
use super::{alpn, provider, CertReloader, TlsError};

/// The config for outgoing federation connections.
pub fn client_config(
    certs: Arc<CertReloader>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, TlsError> {
    // `dangerous()` is rustls's name for "custom verifier"; ours verifies
    // fully (CA path or pinned key, name, dates, handshake signature).
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(FEDERATION_VERSIONS)
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certs);
    config.alpn_protocols = alpn();
    Ok(Arc::new(config))
}
