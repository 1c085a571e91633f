//! The decision to admit a federation peer, in two steps.
//!
//! 1. **In the handshake** ([`PeerGate::verifier`]): the certificate must
//!    name exactly one FQDN, be within its dates, and the peer must prove
//!    possession of its key (the handshake signature). With CA or static
//!    pins only, the verifier also decides trust here.
//! 2. **After the handshake, before any request** ([`PeerGate::admit`]):
//!    the deny- and allow-lists, then, when DNS trust is on, the key
//!    authority (the peer's DNS-published keys, see `crate::dns`). DNS
//!    lookups are asynchronous and rustls verifiers are not, so with DNS
//!    trust the handshake verifier defers the trust decision to this step;
//!    nothing is served until it passes. If DNS refuses and the admin also
//!    configured a CA bundle or static pins, those are tried as a fallback.
//!
//! The same gate serves the federation listener (peer as client) and the
//! egress client (peer as server; the dialled name is also checked).

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::verify::{PeerVerifier, PinnedKeys};
use super::{PeerId, TlsError};
use crate::config::PeerTrust;

/// Something that vouches for a peer's TLS key by its FQDN (the DNS
/// resolver). `Err` carries a stable refusal label for logs and metrics.
pub trait KeyAuthority: fmt::Debug + Send + Sync {
    fn check_tls_key<'a>(
        &'a self,
        fqdn: &'a str,
        spki_sha256: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<(), &'static str>>;
}

/// In the handshake: accept any key, because the authority decides after
/// it (identity, dates and possession are still checked by the verifier).
#[derive(Debug)]
struct DeferToAuthority;

impl PinnedKeys for DeferToAuthority {
    fn is_pinned(&self, _fqdn: &str, _spki_sha256: &[u8; 32]) -> bool {
        true
    }
}

/// Admits or refuses federation peers; see the module docs.
pub struct PeerGate {
    verifier: Arc<PeerVerifier>,
    /// CA bundle or static pins, tried when the authority refuses.
    fallback: Option<PeerVerifier>,
    authority: Option<Arc<dyn KeyAuthority>>,
    allow: Vec<String>,
    deny: Vec<String>,
}

impl fmt::Debug for PeerGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerGate")
            .field("authority", &self.authority.is_some())
            .field("fallback", &self.fallback.is_some())
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .finish()
    }
}

impl PeerGate {
    /// Builds the gate for `trust`. `authority` must be given exactly when
    /// `trust.dns` is on.
    pub fn new(
        trust: &PeerTrust,
        authority: Option<Arc<dyn KeyAuthority>>,
    ) -> Result<Self, TlsError> {
        let has_static = trust.ca_file.is_some() || !trust.pinned_spki_sha256.is_empty();
        let (verifier, fallback) = match &authority {
            None => (PeerVerifier::from_trust(trust)?, None),
            Some(_) => {
                let fallback = if has_static {
                    Some(PeerVerifier::from_trust(trust)?)
                } else {
                    None
                };
                (
                    PeerVerifier::new(None, Some(Arc::new(DeferToAuthority)))?,
                    fallback,
                )
            }
        };
        Ok(PeerGate {
            verifier: Arc::new(verifier),
            fallback,
            authority,
            allow: trust.allow.clone(),
            deny: trust.deny.clone(),
        })
    }

    /// The verifier for TLS configs (server and client side).
    pub fn verifier(&self) -> Arc<PeerVerifier> {
        self.verifier.clone()
    }

    /// Whether keys are vouched for after the handshake (DNS trust).
    pub fn defers(&self) -> bool {
        self.authority.is_some()
    }

    /// The identity of a peer after its handshake: `resumed` sessions skip
    /// the verifier in rustls (the ticket carries the chain), so their chain
    /// is checked again against the current trust and time. `Err` carries a
    /// refusal label and a detail for the log.
    pub fn identify(
        &self,
        chain: &[CertificateDer<'_>],
        resumed: bool,
        dialled: Option<&ServerName<'_>>,
    ) -> Result<PeerId, (&'static str, String)> {
        if resumed {
            return self
                .verifier
                .recheck(chain, dialled, UnixTime::now())
                .map_err(|e| {
                    (
                        super::HandshakeFailure::from_rustls(&e).as_str(),
                        e.to_string(),
                    )
                });
        }
        let leaf = chain
            .first()
            .ok_or(("no_certificate", "no certificate presented".to_owned()))?;
        super::peer_identity(leaf).map_err(|e| ("identity", e.to_string()))
    }

    /// The post-handshake decision for an authenticated peer; `chain` is
    /// what it presented, `dialled` the name we connected to (egress).
    pub async fn admit(
        &self,
        peer: &PeerId,
        chain: &[CertificateDer<'_>],
        dialled: Option<&ServerName<'_>>,
    ) -> Result<(), &'static str> {
        let fqdn = peer.fqdn();
        if self.deny.iter().any(|d| d == fqdn) {
            return Err("denied");
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|a| a == fqdn) {
            return Err("not_allowed");
        }
        let Some(authority) = &self.authority else {
            // The handshake verifier already decided trust (CA or pins).
            return Ok(());
        };
        match authority.check_tls_key(fqdn, peer.spki_sha256()).await {
            Ok(()) => Ok(()),
            Err(reason) => match &self.fallback {
                Some(fallback) if fallback.recheck(chain, dialled, UnixTime::now()).is_ok() => {
                    Ok(())
                }
                _ => Err(reason),
            },
        }
    }
}
