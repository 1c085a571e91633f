//! Server configs for the two TLS listeners.
//!
//! Both present the [`CertReloader`]'s current certificate, offer ALPN `h2`
//! then `http/1.1`, refuse 0-RTT (rustls's default) and resume sessions:
//! stateless TLS 1.3/1.2 tickets from the ring ticketer (keys rotated every
//! 12 hours, kept in memory, so tickets do not survive a restart and are not
//! shared between instances behind a load balancer) plus a bounded session
//! cache for TLS 1.2 clients without ticket support. Each config gets its
//! own ticketer, so a ticket from the public listener cannot resume on the
//! federation listener. Build each config once and share the `Arc` with
//! every worker, so they share ticket keys.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::ServerSessionMemoryCache;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedProtocolVersion};

use super::{alpn, provider, CertReloader, TlsError};

/// Sessions kept for stateful (session-ID) resumption, per listener.
const SESSION_CACHE_ENTRIES: usize = 1024;

/// The public listener accepts TLS 1.2 for older browsers and tools.
const PUBLIC_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// Federation peers are mdgate instances, so TLS 1.3 only: the client
/// certificate (and thus the peer's name) is encrypted, and there is one
/// resumption mechanism to reason about.
pub(crate) const FEDERATION_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13];

/// The config for the public listener (local users, no client certificate).
pub fn public_server_config(certs: Arc<CertReloader>) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PUBLIC_VERSIONS)
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    finish(config)
}

/// The config for the federation listener: a client certificate is
/// required and checked by `verifier` (normally a
/// [`PeerVerifier`](super::PeerVerifier)).
///
/// The verifier's `client_auth_mandatory()` must be true; resumed sessions
/// keep the client chain, so `peer_certificates()` (and
/// [`peer_identity`](super::peer_identity)) work on them too.
pub fn federation_server_config(
    certs: Arc<CertReloader>,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(FEDERATION_VERSIONS)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    finish(config)
}

/// ALPN and resumption, common to both listeners.
fn finish(mut config: ServerConfig) -> Result<Arc<ServerConfig>, TlsError> {
    config.alpn_protocols = alpn();
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
}
