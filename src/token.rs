//! Signed tokens and documents: keys, compact JWS with EdDSA, the key
//! document (`docs/protocol.md` § Keys).
//!
//! The parts:
//!
//! * `key`: [`SigningKey`] (this server's Ed25519 key, from a PKCS#8 PEM
//!   file that only its owner may read) and [`VerifyingKey`] (a peer's
//!   public key, from the DER SubjectPublicKeyInfo its DNS `k=` tag gives).
//! * `jws`: compact JWS/JWT signing and verification with the algorithm
//!   pinned to EdDSA. Verification is two steps, [`parse`] then
//!   [`Unverified::verify`], because the verifier has to read `kid` (and,
//!   for grants, the issuer) before it can fetch the key from DNS, and that
//!   fetch is asynchronous: the caller does it in between.
//! * `keydoc`: the key document served at `/.well-known/mdgate/keys`
//!   ([`KeyDocument`]), and [`compare`], which checks it against what DNS
//!   publishes.
//! * [`publish`]: this server's own keys as the configuration names them,
//!   and [`publish::key_document`], the signed document to serve.
//! * [`grant`]: grant tokens ([`GrantClaims`]): [`issue_grant`],
//!   [`verify_grant`], [`verify_delivered`], the [`bearer`] token of a
//!   request, and [`GrantVerifier`], which verifies each token once.
//!
//! Everything here is pure: the current time comes in as a parameter, no
//! I/O happens except [`SigningKey::load`] reading its file, and the only
//! randomness is key generation. `jsonwebtoken` (ring backend, the same
//! crypto provider as rustls) does the signature arithmetic and its
//! base64url; the JOSE header and claim rules are ours, because its
//! `decode` reads the wall clock, does not report the observed clock skew,
//! and ignores `crit`.

pub mod grant;
pub mod jws;
mod key;
mod keydoc;
pub mod publish;

pub use grant::{
    bearer, issue as issue_grant, verify_delivered, verify_grant, GrantClaims, GrantError,
    GrantVerifier, GRANT_TYP, MAX_GRANT_BYTES,
};

pub use jws::{
    parse, sign, Expect, Header, JwtError, SignError, TimeClaims, Unverified, Verified,
    DEFAULT_CLOCK_SKEW, MAX_TOKEN_BYTES,
};
pub use key::{valid_selector, KeyError, SigningKey, VerifyingKey, ED25519_SPKI_PREFIX};
pub use keydoc::{
    compare, ChannelMismatch, Difference, DnsKey, DnsMaterial, DocError, DocKey, KeyAlg,
    KeyDocument, KeyMaterial, KeyUsage, KEYS_TYP, MAX_DOC_LIFETIME, PROTOCOL_VERSION,
};

use std::time::{SystemTime, UNIX_EPOCH};

/// `now` as whole seconds since the Unix epoch (negative before it), the
/// unit of every time in tokens and documents.
pub fn unix_seconds(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
