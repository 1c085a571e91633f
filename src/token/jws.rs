//! Compact JWS (RFC 7515) and JWT claims (RFC 7519), EdDSA only.
//!
//! Verification is split in two so that the key can be fetched in between:
//!
//! ```text
//! token ──parse(token, &expect)──▶ Unverified   header checked: alg is EdDSA,
//!                                    │           kid present, typ as expected,
//!                                    │           no crit, no embedded keys
//!        caller looks up kid in DNS  │  (async; its own errors)
//!                                    ▼
//!          .verify(&key, now) ──▶ Verified<T>   signature, then exp/nbf/iat
//!                                               against `now` ± clock skew,
//!                                               then the claims as T
//! ```
//!
//! Every refusal is its own [`JwtError`] variant with a stable
//! machine-readable [`JwtError::reason`]; time refusals report the offset
//! observed between the token and this server's clock.
//!
//! Rules beyond RFC 7519 (RFC 8725 best practice, and our protocol):
//! the algorithm is fixed by the verifier, never taken from the token
//! (`none`, `HS*`, `RS*`, `ES*` are all refused before any key is touched,
//! which defeats algorithm confusion); `kid` is required and must have
//! selector syntax; `crit` is refused (we implement no extension); `jwk`,
//! `jku`, `x5u` and `x5c` are refused because keys come only from DNS;
//! `exp` is required; times are integer seconds; duplicate header or claim
//! names are refused (serde's derived structs do that), so two parsers can
//! never read different values from one token.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::key::{valid_selector, SigningKey, VerifyingKey};
use super::unix_seconds;

/// The clock-skew tolerance when the configuration says nothing
/// (`[keys] clock_skew`); Envoy's default too.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Longest token accepted, before any decoding.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// The only `alg` issued or accepted.
const ALG: &str = "EdDSA";
/// Length of an Ed25519 signature, and of its base64url form.
const SIGNATURE_LEN: usize = 64;
/// Longest serde message carried in an error.
const MAX_DETAIL: usize = 200;

/// What a verifier requires beyond a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The `typ` the header must carry (compared as RFC 7515 §4.1.9 says:
    /// case-insensitively, with an optional `application/` prefix). `None`
    /// accepts any `typ`, or none.
    pub typ: Option<&'static str>,
    /// How far `exp`, `nbf` and `iat` may be off this server's clock.
    pub clock_skew: Duration,
    /// Longest `exp - iat` accepted; `iat` is then required.
    pub max_lifetime: Option<Duration>,
}

/// The JOSE header fields a verified token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The signing key's selector.
    pub kid: String,
    pub typ: Option<String>,
}

/// The registered time claims, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeClaims {
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// A token whose header passed the checks and whose signature has not been
/// verified yet. Nothing from it may be trusted except to find the key.
#[derive(Debug)]
pub struct Unverified<'a> {
    token: &'a str,
    expect: &'a Expect,
    header: Header,
    /// Length of `header.payload`, the signing input.
    signed_len: usize,
    payload: Vec<u8>,
}

/// A token whose signature and times were checked.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    pub header: Header,
    pub times: TimeClaims,
    pub claims: T,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not three non-empty base64url segments, or a signature of the wrong
    /// length.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header is not base64url of a JSON object of the right types.
    #[error("malformed token header: {0}")]
    Header(String),
    #[error("token refused: alg \"none\" (unsigned tokens are never accepted)")]
    AlgNone,
    #[error("token refused: alg {alg:?} is not allowed (only EdDSA is)")]
    AlgNotAllowed { alg: String },
    #[error("token refused: the header has no kid")]
    MissingKid,
    #[error("token refused: kid {kid:?} is not a selector ([a-z0-9][a-z0-9-]{{0,62}})")]
    InvalidKid { kid: String },
    #[error("token refused: typ is {found:?}, expected {expected:?}")]
    WrongTyp {
        expected: &'static str,
        found: Option<String>,
    },
    #[error("token refused: crit header parameters are not supported")]
    Crit,
    #[error("token refused: the header embeds a key or key reference ({param}); keys come only from DNS")]
    EmbeddedKey { param: &'static str },
    #[error("token refused: the signature does not verify with key {kid:?}")]
    BadSignature { kid: String },
    /// The payload is not a JSON object, or a time claim has the wrong type.
    #[error("invalid token claims: {0}")]
    Payload(String),
    #[error("token refused: no exp claim (every token must expire)")]
    MissingExp,
    #[error("token refused: no iat claim (needed to check the token's lifetime)")]
    MissingIat,
    #[error("token expired: exp was {ago} s ago by this server's clock (tolerance {tolerance} s)")]
    Expired { ago: i64, tolerance: u64 },
    #[error("token not yet valid: nbf is {ahead} s ahead of this server's clock (tolerance {tolerance} s)")]
    NotYetValid { ahead: i64, tolerance: u64 },
    #[error(
        "token refused: iat is {ahead} s ahead of this server's clock (tolerance {tolerance} s)"
    )]
    IssuedInFuture { ahead: i64, tolerance: u64 },
    #[error("token refused: lifetime exp - iat is {lifetime} s, more than the {max} s allowed")]
    LifetimeTooLong { lifetime: i64, max: u64 },
    /// Signed and in time, but the claims do not have the expected shape.
    #[error("invalid token claims: {0}")]
    Claims(String),
}

/// Why a token could not be signed (a bug in the caller, or in the key).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("claims must serialize to a JSON object")]
    NotAnObject,
    #[error("claims have no integer exp; every token must expire")]
    MissingExp,
    #[error("typ must be a non-empty printable ASCII string")]
    BadTyp,
    #[error("claims cannot be serialized: {0}")]
    Json(#[from] serde_json::Error),
    #[error("signing failed: {0}")]
    Crypto(jsonwebtoken::errors::Error),
}

/// The header as received: every field optional so that each absence gets
/// its own error; duplicates are refused by the derived visitor.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<IgnoredAny>,
    jwk: Option<IgnoredAny>,
    jku: Option<IgnoredAny>,
    x5u: Option<IgnoredAny>,
    x5c: Option<IgnoredAny>,
}

/// The header we issue (field order as in `docs/protocol.md`).
#[derive(Serialize)]
struct OutHeader<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'a str,
}

/// The time claims as received, checked one by one after parsing.
#[derive(Deserialize)]
struct RawTimes {
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
}

impl Expect {
    /// Requires `typ`, with the given tolerance and no lifetime limit.
    pub fn typ(typ: &'static str, clock_skew: Duration) -> Self {
        Expect {
            typ: Some(typ),
            clock_skew,
            max_lifetime: None,
        }
    }
}

/// Signs `claims` as a compact JWS with header
/// `{"alg":"EdDSA","kid":<selector>,"typ":<typ>}`. The claims must be a
/// JSON object with an integer `exp`.
pub fn sign<T: Serialize>(key: &SigningKey, typ: &str, claims: &T) -> Result<String, SignError> {
    if typ.is_empty() || !typ.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SignError::BadTyp);
    }
    let value = serde_json::to_value(claims)?;
    let object = value.as_object().ok_or(SignError::NotAnObject)?;
    if object
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .is_none()
    {
        return Err(SignError::MissingExp);
    }
    let header = serde_json::to_vec(&OutHeader {
        alg: ALG,
        kid: key.selector(),
        typ,
    })?;
    let payload = serde_json::to_vec(&value)?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature =
        jsonwebtoken::crypto::sign(token.as_bytes(), key.encoding_key(), Algorithm::EdDSA)
            .map_err(SignError::Crypto)?;
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

/// Splits a compact JWS and checks its header. The result says which key
/// (`kid`) to fetch; nothing else in it is authenticated yet.
pub fn parse<'a>(token: &'a str, expect: &'a Expect) -> Result<Unverified<'a>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "expected three base64url segments separated by two dots",
        ));
    };
    // The header first, so that an unsigned `alg: none` token (whose
    // signature segment is empty) is named as such.
    if header_b64.is_empty() {
        return Err(JwtError::Malformed("the header segment is empty"));
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| JwtError::Malformed("the header is not unpadded base64url"))?;
    let header = check_header(&header_bytes, expect)?;
    if payload_b64.is_empty() || signature_b64.is_empty() {
        return Err(JwtError::Malformed(
            "the payload or signature segment is empty",
        ));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| JwtError::Malformed("the payload is not unpadded base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtError::Malformed("the signature is not unpadded base64url"))?;
    if signature.len() != SIGNATURE_LEN {
        return Err(JwtError::Malformed(
            "the signature is not 64 bytes (Ed25519)",
        ));
    }
    Ok(Unverified {
        token,
        expect,
        header,
        signed_len: header_b64.len() + 1 + payload_b64.len(),
        payload,
    })
}

/// The header checks, in the order that gives the most precise error.
fn check_header(bytes: &[u8], expect: &Expect) -> Result<Header, JwtError> {
    let raw: RawHeader = serde_json::from_slice(bytes).map_err(|e| JwtError::Header(detail(&e)))?;
    match raw.alg.as_deref() {
        None => return Err(JwtError::Header("no alg".to_owned())),
        Some(ALG) => {}
        Some(alg) if alg.eq_ignore_ascii_case("none") => return Err(JwtError::AlgNone),
        Some(alg) => {
            return Err(JwtError::AlgNotAllowed {
                alg: alg.chars().take(32).collect(),
            })
        }
    }
    if raw.crit.is_some() {
        return Err(JwtError::Crit);
    }
    let embedded = [
        ("jwk", raw.jwk.is_some()),
        ("jku", raw.jku.is_some()),
        ("x5u", raw.x5u.is_some()),
        ("x5c", raw.x5c.is_some()),
    ];
    if let Some((param, _)) = embedded.into_iter().find(|(_, present)| *present) {
        return Err(JwtError::EmbeddedKey { param });
    }
    let kid = raw.kid.ok_or(JwtError::MissingKid)?;
    if !valid_selector(&kid) {
        return Err(JwtError::InvalidKid {
            kid: kid.chars().take(64).collect(),
        });
    }
    if let Some(expected) = expect.typ {
        if !raw.typ.as_deref().is_some_and(|t| typ_matches(expected, t)) {
            return Err(JwtError::WrongTyp {
                expected,
                found: raw.typ.map(|t| t.chars().take(64).collect()),
            });
        }
    }
    Ok(Header { kid, typ: raw.typ })
}

/// RFC 7515 §4.1.9: media types compare case-insensitively, and
/// `application/` may be left out.
fn typ_matches(expected: &str, found: &str) -> bool {
    fn bare(t: &str) -> &str {
        match t.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &t[12..],
            _ => t,
        }
    }
    bare(expected).eq_ignore_ascii_case(bare(found))
}

impl<'a> Unverified<'a> {
    /// The header (checked for shape, not authenticated).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The selector of the key to fetch.
    pub fn kid(&self) -> &str {
        &self.header.kid
    }

    /// Reads the claims **without** verifying anything, to learn which
    /// zone to look the key up in (a grant's `iss`). Never act on it.
    pub fn peek_unverified<P: DeserializeOwned>(&self) -> Result<P, JwtError> {
        serde_json::from_slice(&self.payload).map_err(|e| JwtError::Payload(detail(&e)))
    }

    /// Verifies the signature with `key`, then the time claims against
    /// `now`, then reads the claims as `T`.
    pub fn verify<T: DeserializeOwned>(
        self,
        key: &VerifyingKey,
        now: SystemTime,
    ) -> Result<Verified<T>, JwtError> {
        let (message, signature) = self.token.split_at(self.signed_len);
        // `signature` starts with the dot that `parse` found there.
        let signature = signature.get(1..).unwrap_or_default();
        let good = jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key.decoding_key(),
            Algorithm::EdDSA,
        );
        if !matches!(good, Ok(true)) {
            return Err(JwtError::BadSignature {
                kid: self.header.kid,
            });
        }
        let times = time_claims(&self.payload)?;
        check_times(&times, self.expect, unix_seconds(now))?;
        let claims =
            serde_json::from_slice(&self.payload).map_err(|e| JwtError::Claims(detail(&e)))?;
        Ok(Verified {
            header: self.header,
            times,
            claims,
        })
    }
}

fn time_claims(payload: &[u8]) -> Result<TimeClaims, JwtError> {
    let raw: RawTimes =
        serde_json::from_slice(payload).map_err(|e| JwtError::Payload(detail(&e)))?;
    let seconds = |name: &str, value: Option<serde_json::Value>| match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            JwtError::Payload(format!("{name} must be an integer number of seconds"))
        }),
    };
    Ok(TimeClaims {
        exp: seconds("exp", raw.exp)?.ok_or(JwtError::MissingExp)?,
        nbf: seconds("nbf", raw.nbf)?,
        iat: seconds("iat", raw.iat)?,
    })
}

/// `exp` must be after `now - skew`; `nbf` and `iat` at most `now + skew`.
fn check_times(times: &TimeClaims, expect: &Expect, now: i64) -> Result<(), JwtError> {
    let tolerance = expect.clock_skew.as_secs();
    let skew = i64::try_from(tolerance).unwrap_or(i64::MAX);
    let ago = now.saturating_sub(times.exp);
    if ago >= skew {
        return Err(JwtError::Expired { ago, tolerance });
    }
    if let Some(nbf) = times.nbf {
        let ahead = nbf.saturating_sub(now);
        if ahead > skew {
            return Err(JwtError::NotYetValid { ahead, tolerance });
        }
    }
    if let Some(iat) = times.iat {
        let ahead = iat.saturating_sub(now);
        if ahead > skew {
            return Err(JwtError::IssuedInFuture { ahead, tolerance });
        }
    }
    if let Some(max) = expect.max_lifetime {
        let iat = times.iat.ok_or(JwtError::MissingIat)?;
        let lifetime = times.exp.saturating_sub(iat);
        let max = max.as_secs();
        if lifetime > i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(JwtError::LifetimeTooLong { lifetime, max });
        }
    }
    Ok(())
}

/// A serde message, cut to a bounded length.
fn detail(e: &serde_json::Error) -> String {
    let mut message = e.to_string();
    if message.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

impl JwtError {
    /// A stable machine-readable reason, for responses and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::TooLarge => "token_too_large",
            JwtError::Malformed(_) => "token_malformed",
            JwtError::Header(_) => "token_header_invalid",
            JwtError::AlgNone => "alg_none",
            JwtError::AlgNotAllowed { .. } => "alg_not_allowed",
            JwtError::MissingKid => "kid_missing",
            JwtError::InvalidKid { .. } => "kid_invalid",
            JwtError::WrongTyp { .. } => "typ_mismatch",
            JwtError::Crit => "crit_unsupported",
            JwtError::EmbeddedKey { .. } => "embedded_key",
            JwtError::BadSignature { .. } => "bad_signature",
            JwtError::Payload(_) => "claims_invalid",
            JwtError::MissingExp => "exp_missing",
            JwtError::MissingIat => "iat_missing",
            JwtError::Expired { .. } => "token_expired",
            JwtError::NotYetValid { .. } => "token_not_yet_valid",
            JwtError::IssuedInFuture { .. } => "token_issued_in_future",
            JwtError::LifetimeTooLong { .. } => "token_lifetime_too_long",
            JwtError::Claims(_) => "claims_invalid",
        }
    }

    /// For time refusals, the token's time minus this server's clock, in
    /// seconds (negative for `exp`: the token expired that long ago), so
    /// that responses can show the observed skew.
    pub fn observed_offset(&self) -> Option<i64> {
        match self {
            JwtError::Expired { ago, .. } => Some(ago.saturating_neg()),
            JwtError::NotYetValid { ahead, .. } | JwtError::IssuedInFuture { ahead, .. } => {
                Some(*ahead)
            }
            JwtError::TooLarge
            | JwtError::Malformed(_)
            | JwtError::Header(_)
            | JwtError::AlgNone
            | JwtError::AlgNotAllowed { .. }
            | JwtError::MissingKid
            | JwtError::InvalidKid { .. }
            | JwtError::WrongTyp { .. }
            | JwtError::Crit
            | JwtError::EmbeddedKey { .. }
            | JwtError::BadSignature { .. }
            | JwtError::Payload(_)
            | JwtError::MissingExp
            | JwtError::MissingIat
            | JwtError::LifetimeTooLong { .. }
            | JwtError::Claims(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
