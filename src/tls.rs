//! TLS: certificates, server and client configs, peer identity.
//!
//! This module owns everything between a key file on disk and a verified
//! [`PeerId`] on a connection. Data flows through it like this:
//!
//! ```text
//!  TlsFiles ──load──▶ LoadedCert ──▶ CertReloader ──┬─▶ public_server_config     (:443)
//!  (PEM chain,        (CertifiedKey,  (RwLock, keeps ├─▶ federation_server_config (:8443, mTLS)
//!   0600 key)          SPKI hash,      the last good │        ▲ Arc<dyn ClientCertVerifier>
//!                      not-after)      one; resolves └─▶ client_config            (egress, mTLS)
//!                                      server + client        ▲ Arc<dyn ServerCertVerifier>
//!                                      certs)                 │
//!  PeerTrust ──from_trust──▶ PeerVerifier (CA roots via webpki, or SPKI pins via PinnedKeys)
//!
//!  handshake done ──▶ peer_certificates()[0] ──peer_identity──▶ PeerId { fqdn, spki_sha256, cert_sha256 }
//!  handshake failed ──▶ io::Error ──handshake_failure_reason──▶ fixed metric label
//! ```
//!
//! * [`CertReloader`] is the certificate resolver of every config, so a
//!   reload (SIGHUP) swaps the certificate without rebuilding a config and
//!   without losing the session-ticket keys. A reload validates the new pair
//!   fully (PEM, key matches the leaf, not expired) and keeps the old one on
//!   any failure.
//! * [`PeerVerifier`] accepts a peer whose leaf chains to the configured CA
//!   bundle *or* whose SubjectPublicKeyInfo SHA-256 is pinned, and in both
//!   cases requires a usable identity: exactly one DNS SAN that is a valid
//!   FQDN (never the CN). The pin source is the [`PinnedKeys`] trait so that
//!   DNS-published keys can plug in later; any other
//!   `ClientCertVerifier`/`ServerCertVerifier` can replace it outright.
//! * Resumed sessions (TLS 1.3 tickets) carry the peer's certificate chain,
//!   so [`peer_identity`] works on them, but the verifier is **not** run
//!   again by rustls. Callers that need current trust (revoked pins, expiry)
//!   on a resumed connection call [`PeerVerifier::recheck`].
//! * [`pki`] generates keys and certificates (self-signed, and a small test
//!   CA) for `mdgate keygen`, the demo and the test suites.
//!
//! All configs use the ring provider explicitly, never a process default.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

mod client;
mod failure;
mod gate;
mod identity;
mod load;
pub mod pki;
mod reload;
mod server;
mod verify;

#[cfg(test)]
mod tests;

pub use client::client_config;
pub use failure::{handshake_failure_reason, HandshakeFailure};
pub use gate::{KeyAuthority, PeerGate};
pub use identity::{normalize_fqdn, peer_identity, FqdnError, IdentityError, PeerId};
pub use load::{load_certified_key, LoadedCert};
pub use reload::CertReloader;
pub use server::{federation_server_config, public_server_config};
pub use verify::{PeerVerifier, PeerVerifyError, PinnedKeys, StaticPins};

/// ALPN protocols offered by every listener and by the egress client, in
/// order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors while loading TLS material or building configs.
///
/// Every variant that comes from a file names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {}: {source}", path.display())]
    CertRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate file {}: invalid PEM: {source}", path.display())]
    CertPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate file {}: no CERTIFICATE section found", path.display())]
    NoCertificates { path: PathBuf },
    #[error("certificate file {}: the first certificate cannot be parsed", path.display())]
    BadLeaf { path: PathBuf },
    #[error("certificate file {}: the certificate expired at {not_after} (unix time)", path.display())]
    Expired { path: PathBuf, not_after: u64 },
    /// The private key file could not be read or has unsafe permissions
    /// (the source names the file).
    #[error("cannot read private key: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: crate::config::SecretError,
    },
    #[error("private key file {}: invalid PEM: {source}", path.display())]
    KeyPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("private key file {}: no PKCS#8, SEC1 or PKCS#1 private key found", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("private key file {}: more than one private key", path.display())]
    SeveralPrivateKeys { path: PathBuf },
    #[error("private key file {}: unsupported key: {source}", path.display())]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("private key {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("CA file {}: {source}", path.display())]
    CaCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the CA verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("peer trust has neither a CA file nor pinned keys; refusing to accept any peer")]
    NoPeerTrust,
    /// Building a rustls config failed (bad protocol versions, no randomness
    /// for the ticketer).
    #[error("cannot build TLS config: {0}")]
    Config(#[source] rustls::Error),
}

/// The one crypto provider every mdgate config uses (ring).
///
/// Built once; later calls share it.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// `ALPN_PROTOCOLS` as the owned vector rustls configs want.
fn alpn() -> Vec<Vec<u8>> {
    ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect()
}
