//! Verifying federation peers, as TLS server (their client certificate) and
//! as TLS client (their server certificate).
//!
//! One [`PeerVerifier`] implements both rustls traits with the same rules:
//!
//! 1. The leaf must carry a usable identity (exactly one DNS SAN that is a
//!    valid FQDN, see [`peer_identity`](super::peer_identity)); as a client
//!    we also require that name to be the FQDN we dialled.
//! 2. If its SubjectPublicKeyInfo SHA-256 is pinned for that FQDN (the
//!    [`PinnedKeys`] source), only its validity dates are checked: the
//!    certificate may be self-signed, the pin is the trust.
//! 3. Otherwise it must chain to the configured CA bundle (rustls's webpki
//!    verifiers: path building, EKU, dates, name).
//! 4. In both cases rustls then asks us to check the handshake signature,
//!    which we do with the leaf's key via the provider's algorithms, so a
//!    pinned key proves possession just as a CA-issued one does.
//!
//! Trust roots and pins are parsed once when the verifier is built; a
//! handshake parses only the presented leaf (x509-parser once, webpki for
//! the chain and the signature).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

use super::identity::{inspect, IdentityError, PeerId};
use super::load::read_certificates;
use super::{provider, TlsError};
use crate::config::PeerTrust;

/// A source of pinned peer keys.
///
/// The static list from the configuration ignores the name; the DNS module
/// will answer from its cache of keys published under each peer's FQDN.
/// Called on every full handshake, so it must not block.
pub trait PinnedKeys: fmt::Debug + Send + Sync {
    /// Whether `spki_sha256` is an accepted key for the peer `fqdn`
    /// (normalized, lower case).
    fn is_pinned(&self, fqdn: &str, spki_sha256: &[u8; 32]) -> bool;
}

/// Pins from the configuration file: accepted for any peer name.
#[derive(Clone, Default)]
pub struct StaticPins {
    pins: HashSet<[u8; 32]>,
}

/// Why a peer certificate was refused, beyond what rustls names itself.
///
/// Carried inside `CertificateError::Other` so that
/// [`handshake_failure_reason`](super::handshake_failure_reason) can label it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerVerifyError {
    #[error("peer certificate is not CA-issued and its key is not pinned")]
    NotPinned,
    #[error("peer identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("peer certificate names {presented}, expected {expected}")]
    NameMismatch { expected: String, presented: String },
    #[error("a federation peer must be dialled by DNS name, not IP address")]
    NotDnsServerName,
}

/// Verifies federation peers by CA bundle or pinned keys.
pub struct PeerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    ca: Option<CaVerifiers>,
    pins: Option<Arc<dyn PinnedKeys>>,
    /// Sent in CertificateRequest. Empty when pins are in use, so that a
    /// client with a self-signed certificate still sends it.
    hints: Vec<DistinguishedName>,
}

/// webpki verifiers over the same roots, one per direction.
struct CaVerifiers {
    client: Arc<dyn ClientCertVerifier>,
    server: Arc<WebPkiServerVerifier>,
}

/// Which side the peer is on: which checks apply beyond trust.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// The peer is a TLS client (federation listener).
    Client,
    /// The peer is a TLS server we dialled under this name.
    Server(&'a ServerName<'a>),
}

impl StaticPins {
    /// A pin set from raw SHA-256 hashes of SubjectPublicKeyInfo.
    pub fn new(pins: impl IntoIterator<Item = [u8; 32]>) -> Self {
        StaticPins {
            pins: pins.into_iter().collect(),
        }
    }

    /// Whether no key is pinned.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}

impl fmt::Debug for StaticPins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.pins.iter().map(hex::encode))
            .finish()
    }
}

impl PinnedKeys for StaticPins {
    fn is_pinned(&self, _fqdn: &str, spki_sha256: &[u8; 32]) -> bool {
        self.pins.contains(spki_sha256)
    }
}

impl PeerVerifier {
    /// Builds the verifier for `[federation]` trust: reads and parses the CA
    /// file (if any) now, and takes the pins.
    ///
    /// Refuses to build with neither a CA nor a pin.
    pub fn from_trust(trust: &PeerTrust) -> Result<Self, TlsError> {
        let roots = match &trust.ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|source| TlsError::CaCertificate {
                        path: path.clone(),
                        source,
                    })?;
                }
                Some(roots)
            }
            None => None,
        };
        let pins = StaticPins::new(trust.pinned_spki_sha256.iter().copied());
        let pins: Option<Arc<dyn PinnedKeys>> = if pins.is_empty() {
            None
        } else {
            Some(Arc::new(pins))
        };
        Self::new(roots, pins)
    }

    /// Builds a verifier from parsed roots and/or a pin source. With `pins`
    /// set, no CA hints are sent to clients.
    pub fn new(
        roots: Option<RootCertStore>,
        pins: Option<Arc<dyn PinnedKeys>>,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let ca = match roots {
            Some(roots) if !roots.is_empty() => {
                let roots = Arc::new(roots);
                Some(CaVerifiers {
                    client: WebPkiClientVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .build()?,
                    server: WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                        .build()?,
                })
            }
            _ => None,
        };
        if ca.is_none() && pins.is_none() {
            return Err(TlsError::NoPeerTrust);
        }
        let hints = match (&ca, &pins) {
            (Some(ca), None) => ca.client.root_hint_subjects().to_vec(),
            _ => Vec::new(),
        };
        Ok(PeerVerifier {
            algorithms: provider.signature_verification_algorithms,
            ca,
            pins,
            hints,
        })
    }

    /// Re-checks a peer chain against the current trust and time, and
    /// returns its identity.
    ///
    /// rustls does not run the verifier again when a session is resumed
    /// (the ticket carries the chain), so a peer whose pin was withdrawn or
    /// whose certificate expired could resume for the ticket's lifetime.
    /// Call this after a resumed handshake (`handshake_kind() ==
    /// Some(HandshakeKind::Resumed)`) with `peer_certificates()`;
    /// `expected_server` is the dialled name when we are the client. The
    /// handshake signature is not re-checked: resumption proved possession
    /// of the session's secret.
    pub fn recheck(
        &self,
        chain: &[CertificateDer<'_>],
        expected_server: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<PeerId, Error> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(Error::NoCertificatesPresented);
        };
        let expect = match expected_server {
            Some(name) => Expect::Server(name),
            None => Expect::Client,
        };
        self.verify(end_entity, intermediates, expect, now)?;
        super::peer_identity(end_entity).map_err(|e| reject(PeerVerifyError::Identity(e)))
    }

    /// The shared rules; see the module docs.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        expect: Expect<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        let facts = inspect(end_entity).map_err(|e| match e {
            IdentityError::Malformed => Error::InvalidCertificate(CertificateError::BadEncoding),
            other => reject(PeerVerifyError::Identity(other)),
        })?;
        let fqdn = facts
            .identity
            .map_err(|e| reject(PeerVerifyError::Identity(e)))?;

        if let Expect::Server(name) = expect {
            let ServerName::DnsName(dns) = name else {
                return Err(reject(PeerVerifyError::NotDnsServerName));
            };
            let expected = dns.as_ref().strip_suffix('.').unwrap_or(dns.as_ref());
            if !expected.eq_ignore_ascii_case(&fqdn) {
                return Err(reject(PeerVerifyError::NameMismatch {
                    expected: expected.to_ascii_lowercase(),
                    presented: fqdn,
                }));
            }
        }

        if let Some(pins) = &self.pins {
            if pins.is_pinned(&fqdn, &facts.spki_sha256) {
                return check_validity(facts.not_before, facts.not_after, now);
            }
        }

        let Some(ca) = &self.ca else {
            return Err(reject(PeerVerifyError::NotPinned));
        };
        match expect {
            Expect::Client => ca
                .client
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ()),
            Expect::Server(name) => ca
                .server
                .verify_server_cert(end_entity, intermediates, name, &[], now)
                .map(|_| ()),
        }
    }
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("ca", &self.ca.is_some())
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.verify(end_entity, intermediates, Expect::Client, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.verify(end_entity, intermediates, Expect::Server(server_name), now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Validity dates for a pinned certificate (webpki checks them on the CA
/// path). The context variants let the error report the clock skew.
fn check_validity(not_before: UnixTime, not_after: UnixTime, now: UnixTime) -> Result<(), Error> {
    if now.as_secs() < not_before.as_secs() {
        return Err(Error::InvalidCertificate(
            CertificateError::NotValidYetContext {
                time: now,
                not_before,
            },
        ));
    }
    if now.as_secs() > not_after.as_secs() {
        return Err(Error::InvalidCertificate(
            CertificateError::ExpiredContext {
                time: now,
                not_after,
            },
        ));
    }
    Ok(())
}

/// Wraps our reason so it survives rustls and tokio-rustls to the metrics.
fn reject(e: PeerVerifyError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}
