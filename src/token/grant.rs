//! Grant tokens: what server1 issues when a patient approves access, what
//! server2 presents on every data request (`docs/protocol.md` § Access,
//! Grant tokens).
//!
//! A grant token is a JWT signed with the issuer's Ed25519 signing key
//! through [`jws`](super::jws), with `typ` [`GRANT_TYP`]. Its claims are
//! [`GrantClaims`]; on the wire they are the registered and RFC 8693 /
//! RFC 8705 names (`iss`, `sub`, `aud`, `azp`, `act`, `scope`, `exp`,
//! `nbf`, `iat`, `jti`, `cnf`).
//!
//! ```text
//! server1 approves ──issue(key, claims)──▶ token ──delivered──▶ server2
//!                                                   verify_delivered(token, key,
//!                                                     server1, us, our cert)
//! server2 ──GET records/… Authorization: Bearer token──▶ server1
//!   bearer(headers) ─▶ GrantVerifier::check(token, cert of this connection, now)
//!        miss: verify_grant (signature, times, claims) once, then cached
//!        hit:  times and the certificate binding again, every time
//! ```
//!
//! Claims are strict: a member this module does not know makes the token
//! invalid (`claims_invalid`), because every member the protocol defines
//! narrows what the token allows, and an older verifier must not silently
//! ignore a newer narrowing; a new claim comes with a new `typ`.
//!
//! Revocation is not this module's business: a token stays
//! cryptographically valid until `exp`. The caller looks the grant (`jti`)
//! up in its own cache of grant rows on every request, which is where a
//! revocation takes effect at once.
//!
//! Everything here is pure apart from the cache in [`GrantVerifier`]: time
//! comes in as `now`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::jws::{self, Expect, JwtError, SignError};
use super::key::{SigningKey, VerifyingKey};
use super::unix_seconds;
use crate::policy::Role;

/// The JOSE `typ` of a grant token.
pub const GRANT_TYP: &str = "mdgate-grant+jwt";
/// Longest grant token accepted. Ours are about 650 bytes.
pub const MAX_GRANT_BYTES: usize = 4096;
/// Length of a [`GrantVerifier`] cache key: the token's last characters,
/// all within its 86-character signature segment.
const KEY_LEN: usize = 64;

/// What a grant token says, in our types.
///
/// Serialized (for the token, and for anyone who stores claims) as the
/// wire members of `docs/protocol.md`; deserializing applies the same
/// structural checks as verification (not the issuer, times or signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireClaims", try_from = "WireClaims")]
pub struct GrantClaims {
    /// `iss`, and `aud` too: server1's FQDN.
    pub issuer: String,
    /// `sub`: the patient's federation id.
    pub patient: Uuid,
    /// `azp`: the requesting server's FQDN (server2).
    pub client: String,
    /// `act.sub`: `<doctor username>@<client>`.
    pub actor: String,
    /// `scope`.
    pub role: Role,
    /// `nbf`, Unix seconds.
    pub not_before: i64,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// `jti`: the grant's id.
    pub id: Uuid,
    /// `cnf.x5t#S256`: SHA-256 of the DER of the client's TLS certificate.
    pub cert_sha256: [u8; 32],
}

/// The claims as JSON members. Field order is the order of
/// `docs/protocol.md`; unknown members are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireClaims {
    iss: String,
    sub: String,
    aud: String,
    azp: String,
    act: Actor,
    scope: Role,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    cnf: Confirmation,
}

/// RFC 8693 §4.1 actor claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Actor {
    sub: String,
}

/// RFC 8705 §3.1 certificate-bound confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

/// Why a grant token, or the request carrying it, is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The JWS layer refused it: header, signature, times, claim shapes.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("grant token is larger than {MAX_GRANT_BYTES} bytes")]
    TooLarge,
    /// The token's `kid` is none of this server's signing keys.
    #[error("grant token signed with key {kid:?}, which is not one of this server's signing keys")]
    UnknownKey { kid: String },
    #[error("grant token issued by {found:?}, expected {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("grant token is for audience {found:?}, expected {expected:?}")]
    WrongAudience { expected: String, found: String },
    /// `azp` names another server than the one receiving the token.
    #[error("grant token was issued to {found:?}, not to {expected:?}")]
    WrongClient { expected: String, found: String },
    /// `cnf` binds the token to another TLS certificate than the one of
    /// the connection it arrived on (or, for a delivered token, ours).
    #[error("grant token is bound to another TLS certificate")]
    WrongCertificate,
    /// More than one token in the request.
    #[error("more than one Authorization header or credential")]
    SeveralTokens,
    /// `Authorization` with another scheme than `Bearer`.
    #[error("Authorization scheme is not Bearer")]
    NotBearer,
    /// `Authorization: Bearer` without a well-formed token.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
}

impl GrantError {
    /// A stable machine-readable reason, for responses and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GrantError::Jwt(e) => e.reason(),
            GrantError::TooLarge => "token_too_large",
            GrantError::UnknownKey { .. } => "unknown_kid",
            GrantError::WrongIssuer { .. } => "wrong_issuer",
            GrantError::WrongAudience { .. } => "wrong_audience",
            GrantError::WrongClient { .. } => "wrong_client",
            GrantError::WrongCertificate => "wrong_certificate",
            GrantError::SeveralTokens => "several_tokens",
            GrantError::NotBearer => "authorization_not_bearer",
            GrantError::MalformedAuthorization(_) => "authorization_malformed",
        }
    }

    /// For time refusals, the token's time minus this server's clock in
    /// seconds (negative for an expired token), to report as the skew.
    pub fn observed_skew(&self) -> Option<i64> {
        match self {
            GrantError::Jwt(e) => e.observed_offset(),
            GrantError::TooLarge
            | GrantError::UnknownKey { .. }
            | GrantError::WrongIssuer { .. }
            | GrantError::WrongAudience { .. }
            | GrantError::WrongClient { .. }
            | GrantError::WrongCertificate
            | GrantError::SeveralTokens
            | GrantError::NotBearer
            | GrantError::MalformedAuthorization(_) => None,
        }
    }
}

impl From<GrantClaims> for WireClaims {
    fn from(c: GrantClaims) -> Self {
        WireClaims {
            aud: c.issuer.clone(),
            iss: c.issuer,
            sub: c.patient.hyphenated().to_string(),
            azp: c.client,
            act: Actor { sub: c.actor },
            scope: c.role,
            exp: c.expires_at,
            nbf: c.not_before,
            iat: c.issued_at,
            jti: c.id.hyphenated().to_string(),
            cnf: Confirmation {
                x5t_s256: URL_SAFE_NO_PAD.encode(c.cert_sha256),
            },
        }
    }
}

impl TryFrom<WireClaims> for GrantClaims {
    type Error = String;

    /// The structural rules of the claims (issuer and times are checked by
    /// the verifier, against its own expectations).
    fn try_from(w: WireClaims) -> Result<Self, String> {
        if w.aud != w.iss {
            return Err("aud must equal iss".to_owned());
        }
        let patient = canonical_uuid("sub", &w.sub)?;
        let id = canonical_uuid("jti", &w.jti)?;
        // The doctor is one of the requesting server's users.
        match w.act.sub.rsplit_once('@') {
            Some((user, domain)) if !user.is_empty() && domain == w.azp => {}
            _ => return Err("act.sub must be <username>@<azp>".to_owned()),
        }
        if w.exp <= w.nbf {
            return Err("exp must be after nbf".to_owned());
        }
        let cert_sha256 = URL_SAFE_NO_PAD
            .decode(&w.cnf.x5t_s256)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                "cnf.x5t#S256 must be unpadded base64url of 32 bytes (a SHA-256)".to_owned()
            })?;
        Ok(GrantClaims {
            issuer: w.iss,
            patient,
            client: w.azp,
            actor: w.act.sub,
            role: w.scope,
            not_before: w.nbf,
            expires_at: w.exp,
            issued_at: w.iat,
            id,
            cert_sha256,
        })
    }
}

/// A UUID in its one accepted spelling: lower-case hyphenated, so that a
/// grant id compares equal as text wherever it is stored.
fn canonical_uuid(name: &str, text: &str) -> Result<Uuid, String> {
    match Uuid::try_parse(text) {
        Ok(id) if id.hyphenated().to_string() == text => Ok(id),
        _ => Err(format!("{name} must be a lower-case hyphenated UUID")),
    }
}

/// Signs a grant token with this server's signing key (`kid` = its
/// selector).
pub fn issue(key: &SigningKey, claims: &GrantClaims) -> Result<String, SignError> {
    jws::sign(key, GRANT_TYP, claims)
}

/// Verifies a grant token this server issued (or, through
/// [`verify_delivered`], one issued to it): header profile, signature with
/// `key` (the caller picked it by the token's `kid`), `exp`/`nbf`/`iat`
/// against `now` ± `skew`, `iss` and `aud` equal to `expect_issuer`, then
/// the claims' structure. Does not check the certificate binding (the
/// caller has the connection) nor revocation.
pub fn verify_grant(
    token: &str,
    key: &VerifyingKey,
    expect_issuer: &str,
    now: SystemTime,
    skew: Duration,
) -> Result<GrantClaims, GrantError> {
    if token.len() > MAX_GRANT_BYTES {
        return Err(GrantError::TooLarge);
    }
    let expect = Expect::typ(GRANT_TYP, skew);
    verify_parsed(jws::parse(token, &expect)?, key, expect_issuer, now)
}

fn verify_parsed(
    unverified: jws::Unverified<'_>,
    key: &VerifyingKey,
    expect_issuer: &str,
    now: SystemTime,
) -> Result<GrantClaims, GrantError> {
    // Read as the wire struct first, so that a token of another issuer or
    // audience is named as such rather than as malformed claims.
    let wire = unverified.verify::<WireClaims>(key, now)?.claims;
    if wire.iss != expect_issuer {
        return Err(GrantError::WrongIssuer {
            expected: expect_issuer.to_owned(),
            found: clip(&wire.iss),
        });
    }
    if wire.aud != expect_issuer {
        return Err(GrantError::WrongAudience {
            expected: expect_issuer.to_owned(),
            found: clip(&wire.aud),
        });
    }
    GrantClaims::try_from(wire).map_err(|e| GrantError::Jwt(JwtError::Claims(e)))
}

/// For server2: verifies a token server1 delivered for one of our
/// doctors. On top of [`verify_grant`] (with server1's key, found by the
/// token's `kid` in server1's DNS), it must name us as `azp` and be bound
/// to our own federation certificate, the one we will present.
pub fn verify_delivered(
    token: &str,
    key: &VerifyingKey,
    expect_issuer: &str,
    expect_client: &str,
    own_cert_sha256: &[u8; 32],
    now: SystemTime,
    skew: Duration,
) -> Result<GrantClaims, GrantError> {
    let claims = verify_grant(token, key, expect_issuer, now, skew)?;
    if claims.client != expect_client {
        return Err(GrantError::WrongClient {
            expected: expect_client.to_owned(),
            found: clip(&claims.client),
        });
    }
    if claims.cert_sha256 != *own_cert_sha256 {
        return Err(GrantError::WrongCertificate);
    }
    Ok(claims)
}

/// At most this much of a value read from a token goes into an error.
fn clip(s: &str) -> String {
    s.chars().take(255).collect()
}

/// Whether `b` may appear in RFC 6750's `b64token` before its trailing
/// `=`s: `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`. Written
/// without branches (comparisons joined by `|`) so that [`all_bytes`]
/// checks many bytes per instruction.
#[inline(always)]
fn is_b64token_char(b: u8) -> bool {
    let digit = b.wrapping_sub(b'0') < 10;
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    digit
        | letter
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// Whether `b` is allowed in a header value that [`HeaderValue::to_str`]
/// accepts: visible ASCII, space or horizontal tab.
///
/// [`HeaderValue::to_str`]: http::HeaderValue::to_str
#[inline(always)]
fn is_visible_or_blank(b: u8) -> bool {
    (b.wrapping_sub(0x20) < 0x5f) | (b == b'\t')
}

/// Whether every byte of `bytes` satisfies `pred`. A grant token is
/// several hundred bytes and is checked on every data request: each
/// block of 32 is folded without an early exit, which the compiler turns
/// into vector compares (a byte at a time with a table took about 0.4 µs
/// of a 606-byte token in a profile of the data path).
#[inline(always)]
fn all_bytes(bytes: &[u8], pred: impl Fn(u8) -> bool) -> bool {
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if !block.iter().fold(true, |ok, &b| ok & pred(b)) {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| pred(b))
}

/// The one `Authorization: Bearer` token of a request, `None` without an
/// `Authorization` header.
///
/// Refused: two or more `Authorization` headers, or one carrying a list
/// (an intermediary may fold two headers into one, joined by a comma)
/// → [`GrantError::SeveralTokens`]; another scheme →
/// [`GrantError::NotBearer`]; a token that is not RFC 6750 `b64token`
/// syntax → [`GrantError::MalformedAuthorization`]. The scheme is
/// case-insensitive. Tokens are read from this header only: the query
/// form (`?access_token=`) and form bodies are never looked at.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, GrantError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GrantError::SeveralTokens);
    }
    // What `HeaderValue::to_str` checks, many bytes at a time. Bytes that
    // pass are ASCII, so `from_utf8` (word by word) cannot fail after it.
    let not_visible = GrantError::MalformedAuthorization("not visible ASCII");
    let bytes = value.as_bytes();
    if !all_bytes(bytes, is_visible_or_blank) {
        return Err(not_visible);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| not_visible)?
        .trim_matches([' ', '\t']);
    let (scheme, credentials) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(GrantError::NotBearer);
    }
    let token = credentials.trim_start_matches(' ');
    if token.contains(',') {
        return Err(GrantError::SeveralTokens);
    }
    if token.is_empty() {
        return Err(GrantError::MalformedAuthorization("no token after Bearer"));
    }
    // RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~"
    // / "+" / "/" ) *"="
    let body = token.trim_end_matches('=');
    let b64token = !body.is_empty() && all_bytes(body.as_bytes(), is_b64token_char);
    if !b64token {
        return Err(GrantError::MalformedAuthorization(
            "the token is not b64token syntax",
        ));
    }
    Ok(Some(token))
}

/// Verifies grant tokens on the federation listener, each token's
/// signature once.
///
/// An Ed25519 verification costs ~60-100 µs; a data request carries the
/// same token until it expires, so verified tokens are kept in a bounded
/// cache. A hit re-checks what can change between two requests: the times
/// against `now` (with the skew) and the certificate binding against the
/// connection the token came on. Entries leave the cache at the token's
/// `exp` at the latest. Revocation is not checked here: see the module
/// docs.
///
/// The cache key is the token's last 64 characters, which lie in its
/// signature (384 bits of an Ed25519 signature over the header and
/// claims), and the entry keeps the whole token, which a hit compares byte
/// for byte: only a token string that was itself verified is ever
/// accepted, and a forgery that copies a cached token's signature is a
/// miss, then a failed verification. Keying by SHA-256 of the token text
/// would cost ~500 ns per request for a 650-byte token even with the
/// CPU's SHA extensions, more than the whole hit otherwise; the signature
/// already is an unforgeable digest of the token.
pub struct GrantVerifier {
    issuer: String,
    /// Signing keys by selector; `None` for a key given without one, which
    /// is tried for any `kid`.
    keys: Vec<(Option<String>, VerifyingKey)>,
    expect: Expect,
    cache: Cache<[u8; KEY_LEN], Cached>,
    verifications: AtomicU64,
}

/// A verified token in the cache.
#[derive(Clone)]
struct Cached {
    /// The whole token, compared on every hit.
    token: Arc<str>,
    claims: Arc<GrantClaims>,
    /// Until `exp`, from the `now` of the verification.
    ttl: Duration,
}

/// Per-entry expiry: each token leaves the cache at its own `exp`.
struct UntilExp;

impl moka::Expiry<[u8; KEY_LEN], Cached> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; KEY_LEN],
        value: &Cached,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl std::fmt::Debug for GrantVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantVerifier")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl GrantVerifier {
    /// A verifier for tokens issued by `issuer` (this server) and signed by
    /// one of `keys` (current, next and previous signing keys). These keys
    /// carry no selector, so each is tried in turn on a cache miss (three
    /// at most, the current one first); prefer
    /// [`GrantVerifier::with_selectors`], which picks the key by `kid`.
    pub fn new(issuer: &str, keys: Vec<VerifyingKey>, skew: Duration, capacity: u64) -> Self {
        Self::build(
            issuer,
            keys.into_iter().map(|k| (None, k)).collect(),
            skew,
            capacity,
        )
    }

    /// As [`GrantVerifier::new`], with each key's selector: a token is
    /// verified only with the key its `kid` names, and a `kid` that names
    /// none is refused as [`GrantError::UnknownKey`] without any signature
    /// arithmetic.
    pub fn with_selectors(
        issuer: &str,
        keys: Vec<(String, VerifyingKey)>,
        skew: Duration,
        capacity: u64,
    ) -> Self {
        Self::build(
            issuer,
            keys.into_iter().map(|(s, k)| (Some(s), k)).collect(),
            skew,
            capacity,
        )
    }

    fn build(
        issuer: &str,
        keys: Vec<(Option<String>, VerifyingKey)>,
        skew: Duration,
        capacity: u64,
    ) -> Self {
        GrantVerifier {
            issuer: issuer.to_owned(),
            keys,
            expect: Expect::typ(GRANT_TYP, skew),
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExp)
                .build(),
            verifications: AtomicU64::new(0),
        }
    }

    /// Checks `token` as presented on a connection whose client
    /// certificate has SHA-256 `presented_cert_sha256`, at `now`.
    ///
    /// The first time a token is seen: everything [`verify_grant`] checks.
    /// Every time, cached or not: `exp`/`nbf`/`iat` against `now` with the
    /// skew, and `cnf` against the presented certificate
    /// ([`GrantError::WrongCertificate`]: a token copied onto another
    /// connection). Not revocation.
    pub fn check(
        &self,
        token: &str,
        presented_cert_sha256: &[u8; 32],
        now: SystemTime,
    ) -> Result<Arc<GrantClaims>, GrantError> {
        if token.len() > MAX_GRANT_BYTES {
            return Err(GrantError::TooLarge);
        }
        // Shorter than a key: not a token of ours, verification says why.
        let key = token.as_bytes().last_chunk::<KEY_LEN>();
        let hit = key
            .and_then(|k| self.cache.get(k))
            .filter(|c| *c.token == *token);
        let claims = match hit {
            Some(hit) => {
                check_times(&hit.claims, &self.expect, unix_seconds(now))?;
                hit.claims
            }
            None => {
                let claims = Arc::new(self.verify(token, now)?);
                let left = claims.expires_at.saturating_sub(unix_seconds(now));
                // A token accepted within the skew after its exp is not
                // kept: the entry must not outlive exp.
                if let (Some(key), true) = (key, left > 0) {
                    self.cache.insert(
                        *key,
                        Cached {
                            token: Arc::from(token),
                            claims: claims.clone(),
                            ttl: Duration::from_secs(left.unsigned_abs()),
                        },
                    );
                }
                claims
            }
        };
        if claims.cert_sha256 != *presented_cert_sha256 {
            return Err(GrantError::WrongCertificate);
        }
        Ok(claims)
    }

    /// Signature verifications done so far (cache misses that got as far
    /// as the signature), for metrics and tests.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Tokens currently cached (approximate, as moka counts).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// A full verification with the key the `kid` selects.
    fn verify(&self, token: &str, now: SystemTime) -> Result<GrantClaims, GrantError> {
        let kid = jws::parse(token, &self.expect)?.kid().to_owned();
        let named: Vec<&VerifyingKey> = self
            .keys
            .iter()
            .filter(|(s, _)| s.as_deref() == Some(kid.as_str()))
            .map(|(_, k)| k)
            .collect();
        let candidates: Vec<&VerifyingKey> = if named.is_empty() {
            self.keys
                .iter()
                .filter(|(s, _)| s.is_none())
                .map(|(_, k)| k)
                .collect()
        } else {
            named
        };
        if candidates.is_empty() {
            return Err(GrantError::UnknownKey { kid });
        }
        let mut last = None;
        for key in candidates {
            self.verifications.fetch_add(1, Ordering::Relaxed);
            // `verify` consumes the parsed token; parsing again is a few
            // hundred nanoseconds against tens of microseconds of Ed25519.
            match verify_parsed(jws::parse(token, &self.expect)?, key, &self.issuer, now) {
                Err(e @ GrantError::Jwt(JwtError::BadSignature { .. })) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(GrantError::UnknownKey { kid }))
    }
}

/// The time rules of [`jws`] (`docs/protocol.md` § Signed objects),
/// applied again to claims verified earlier, with the same errors.
fn check_times(claims: &GrantClaims, expect: &Expect, now: i64) -> Result<(), GrantError> {
    let tolerance = expect.clock_skew.as_secs();
    let skew = i64::try_from(tolerance).unwrap_or(i64::MAX);
    let ago = now.saturating_sub(claims.expires_at);
    if ago >= skew {
        return Err(JwtError::Expired { ago, tolerance }.into());
    }
    let ahead = claims.not_before.saturating_sub(now);
    if ahead > skew {
        return Err(JwtError::NotYetValid { ahead, tolerance }.into());
    }
    let ahead = claims.issued_at.saturating_sub(now);
    if ahead > skew {
        return Err(JwtError::IssuedInFuture { ahead, tolerance }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
