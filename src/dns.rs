//! Peer keys published in DNS: records, resolver, cache, DNSSEC.
//!
//! A peer is who its DNS says it is (DESIGN.md invariant 4). This module
//! owns everything between "a peer presented this key" and "its zone says
//! that key is live":
//!
//! ```text
//! check_tls_key(fqdn, spki_sha256)          signing_key(fqdn, kid)
//!        │                                        │
//!        ▼                                        ▼
//!   resolver::KeyResolver ── cache (moka, bounded; one fetch in flight per
//!        │                   name; TTL clamp; negative; stale-if-error;
//!        │                   background refresh; unknown-key refetch)
//!        ▼
//!   client::Client ── hickory-resolver (DNSSEC validation when asked,
//!        │            its own cache off) ── UDP/TCP ── nameservers
//!        ▼
//!   record:: parse_index_rrset / parse_key_rrset / Tlsa  (pure)
//! ```
//!
//! * [`record`]: the `_mdgate` TXT records and TLSA data, pure functions.
//! * [`resolver`]: [`KeyResolver`], the cache, and the decisions
//!   ([`TlsKeyVerdict`] or a [`KeyRefusal`] with a stable reason label).
//! * `client`: the thin adapter over hickory-resolver that turns its
//!   answers and errors into [`Security`] and query outcomes.
//! * [`testserver`]: an in-process authoritative DNS server on loopback
//!   (optionally DNSSEC-signed) for tests and `mdgate demo`.
//!
//! Time comes from a [`Clock`], so tests move it instead of sleeping
//! through TTLs and stale windows.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub mod addr;
mod authority;
mod client;
mod locate;
pub mod probe;
pub mod record;
pub mod resolver;
pub mod testserver;

#[cfg(test)]
mod tests;

pub use record::RecordError;
pub use resolver::{
    KeyEntry, KeyProblem, KeyResolver, LookupReport, LookupStep, PeerKeys, StepOutcome,
    TlsKeyVerdict,
};

/// Where the resolver gets "now" from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that tests move by hand: the real clock plus an offset.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves "now" forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant::now() + *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What DNSSEC says about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    /// Validation is off (`dnssec = "off"`).
    Unvalidated,
    /// A chain of signatures from a trust anchor proves the answer.
    Secure,
    /// Proven to come from an unsigned zone.
    Insecure,
    /// The validator could not tell (missing DNSSEC data); treated like
    /// insecure: usable, but TLSA is not.
    Indeterminate,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Unvalidated => "unvalidated",
            Security::Secure => "secure",
            Security::Insecure => "insecure",
            Security::Indeterminate => "indeterminate",
        }
    }

    /// The weaker of two (for an answer assembled from several queries).
    pub fn and(self, other: Security) -> Security {
        use Security::*;
        match (self, other) {
            (Unvalidated, _) | (_, Unvalidated) => Unvalidated,
            (Indeterminate, _) | (_, Indeterminate) => Indeterminate,
            (Insecure, _) | (_, Insecure) => Insecure,
            (Secure, Secure) => Secure,
        }
    }
}

impl std::fmt::Display for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the keys of a peer could not be had from DNS. Cheap to clone: the
/// cache hands the same failure to every caller that waited for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name to look up is not a valid server name.
    #[error("{name:?} is not a valid server name: {reason}")]
    InvalidName { name: String, reason: String },
    /// NXDOMAIN, no TXT, or no `v=mdgate1` record at the index name.
    #[error("{name}: {what}; the server publishes no mdgate keys")]
    NoRecord { name: String, what: &'static str },
    /// The index record is there but unusable.
    #[error("{name}: invalid record: {error}")]
    InvalidRecord { name: String, error: RecordError },
    /// DNSSEC validation failed: the answer is forged or the zone is broken.
    #[error("{name}: DNSSEC validation failed (bogus answer)")]
    Bogus { name: String },
    /// The resolver answered SERVFAIL.
    #[error("{name}: the resolver answered SERVFAIL")]
    ServFail { name: String },
    /// No answer in time.
    #[error("{name}: no answer within the timeout")]
    Timeout { name: String },
    /// Any other failure: REFUSED, network errors, indeterminate DNSSEC.
    #[error("{name}: {detail}")]
    Other { name: String, detail: String },
    /// Refreshes have failed for longer than `stale_if_error` after the
    /// last good answer expired.
    #[error("last good answer expired {} ago and refreshing fails: {cause}", crate::config::format_duration(*.expired_for))]
    StaleExpired {
        expired_for: Duration,
        cause: Box<DnsError>,
    },
    /// The resolver could not be set up from the configuration.
    #[error("DNS resolver set-up: {0}")]
    Setup(String),
}

impl DnsError {
    /// A stable label (metrics, logs).
    pub fn reason(&self) -> &'static str {
        match self {
            DnsError::InvalidName { .. } => "invalid_name",
            DnsError::NoRecord { .. } => "no_record",
            DnsError::InvalidRecord { .. } => "invalid_record",
            DnsError::Bogus { .. } => "dnssec_bogus",
            DnsError::ServFail { .. } => "dns_servfail",
            DnsError::Timeout { .. } => "dns_timeout",
            DnsError::Other { .. } => "dns_error",
            DnsError::StaleExpired { .. } => "stale_expired",
            DnsError::Setup(_) => "setup",
        }
    }

    /// An answer from the zone (cached for `negative_ttl`), as opposed to
    /// a failure to get one.
    pub(crate) fn is_answer(&self) -> bool {
        matches!(
            self,
            DnsError::NoRecord { .. } | DnsError::InvalidRecord { .. }
        )
    }
}

/// Why a peer's key is refused. [`KeyRefusal::as_str`] is a stable label
/// for metrics, logs and the machine-readable reason in error responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// The peer name is not a valid server name.
    #[error("{0}")]
    InvalidName(DnsError),
    /// The peer publishes no `_mdgate` index: it has not set up DNS keys.
    #[error("{0}")]
    NoRecord(DnsError),
    /// The peer's index is invalid (or a selector record the check needs).
    #[error("{0}")]
    InvalidRecord(DnsError),
    /// The presented TLS key matches no live `u=tls` record.
    #[error("{fqdn}: the presented key matches none of the {live} live tls key records")]
    KeyMismatch { fqdn: String, live: usize },
    /// The key belongs to a selector whose record is revoked (empty key).
    #[error("{fqdn}: selector {selector} is revoked")]
    Revoked { fqdn: String, selector: String },
    /// A signing key selector (`kid`) that the index does not list.
    #[error("{fqdn}: selector {selector:?} is not listed in the index")]
    UnknownSelector { fqdn: String, selector: String },
    /// The selector's record is not an Ed25519 signing key.
    #[error("{fqdn}: selector {selector} is a {usage} key, not a signing key")]
    NotSigningKey {
        fqdn: String,
        selector: String,
        usage: &'static str,
    },
    /// DNSSEC validation failed.
    #[error("{0}")]
    DnssecBogus(DnsError),
    /// The zone is signed and has TLSA 3 1 1 for the federation port, and
    /// the key matches none of them.
    #[error("{fqdn}: the key matches its tls record but none of the TLSA 3 1 1 records at {name}")]
    TlsaMismatch { fqdn: String, name: String },
    #[error("{0}")]
    DnsServfail(DnsError),
    #[error("{0}")]
    DnsTimeout(DnsError),
    #[error("{0}")]
    DnsError(DnsError),
    /// The last good answer is older than its TTL plus `stale_if_error`
    /// and DNS still fails: fail closed.
    #[error("{0}")]
    StaleExpired(DnsError),
}

impl KeyRefusal {
    /// The stable label.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyRefusal::InvalidName(_) => "invalid_name",
            KeyRefusal::NoRecord(_) => "no_record",
            KeyRefusal::InvalidRecord(_) => "invalid_record",
            KeyRefusal::KeyMismatch { .. } => "key_mismatch",
            KeyRefusal::Revoked { .. } => "revoked",
            KeyRefusal::UnknownSelector { .. } => "unknown_selector",
            KeyRefusal::NotSigningKey { .. } => "not_signing_key",
            KeyRefusal::DnssecBogus(_) => "dnssec_bogus",
            KeyRefusal::TlsaMismatch { .. } => "tlsa_mismatch",
            KeyRefusal::DnsServfail(_) => "dns_servfail",
            KeyRefusal::DnsTimeout(_) => "dns_timeout",
            KeyRefusal::DnsError(_) => "dns_error",
            KeyRefusal::StaleExpired(_) => "stale_expired",
        }
    }

    /// Every label, for documentation and tests.
    pub const ALL: [&'static str; 13] = [
        "invalid_name",
        "no_record",
        "invalid_record",
        "key_mismatch",
        "revoked",
        "unknown_selector",
        "not_signing_key",
        "dnssec_bogus",
        "tlsa_mismatch",
        "dns_servfail",
        "dns_timeout",
        "dns_error",
        "stale_expired",
    ];
}

impl From<DnsError> for KeyRefusal {
    fn from(e: DnsError) -> Self {
        match e {
            DnsError::InvalidName { .. } => KeyRefusal::InvalidName(e),
            DnsError::NoRecord { .. } => KeyRefusal::NoRecord(e),
            DnsError::InvalidRecord { .. } => KeyRefusal::InvalidRecord(e),
            DnsError::Bogus { .. } => KeyRefusal::DnssecBogus(e),
            DnsError::ServFail { .. } => KeyRefusal::DnsServfail(e),
            DnsError::Timeout { .. } => KeyRefusal::DnsTimeout(e),
            DnsError::StaleExpired { .. } => KeyRefusal::StaleExpired(e),
            DnsError::Other { .. } | DnsError::Setup(_) => KeyRefusal::DnsError(e),
        }
    }
}

/// Reads a trust anchor file: DNSKEY records in zone-file format (as
/// `dig DNSKEY` prints them). Its keys are added to hickory's built-in root
/// anchors, so a private zone's anchor does not switch off validation of
/// the public tree.
pub fn load_trust_anchors(path: &Path) -> Result<hickory_proto::dnssec::TrustAnchors, String> {
    use hickory_proto::dnssec::{PublicKeyBuf, Verifier as _};
    use hickory_proto::serialize::txt::trust_anchor::{Entry, Parser};
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries = Parser::new(text.as_str())
        .parse()
        .map_err(|e| format!("{} is not a list of DNSKEY records: {e}", path.display()))?;
    if entries.is_empty() {
        return Err(format!("{} holds no DNSKEY record", path.display()));
    }
    let mut anchors = hickory_proto::dnssec::TrustAnchors::default();
    for entry in entries {
        // The parser knows only DNSKEY entries today; `Entry` is
        // non-exhaustive.
        let Entry::DNSKEY(record) = entry else {
            continue;
        };
        let dnskey = record.data();
        let key = dnskey
            .key()
            .map_err(|e| format!("{}: unusable DNSKEY: {e}", path.display()))?;
        let key = PublicKeyBuf::new(key.public_bytes().to_vec(), dnskey.algorithm());
        anchors.insert_with_name(&key, record.name().into());
    }
    Ok(anchors)
}
