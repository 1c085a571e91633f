//! Page sessions: the cookie, the server-side map, and the CSRF tokens.
//!
//! A signed-in browser holds only a random 256-bit id in a cookie. The
//! map goes from the id's SHA-256 to the [`Session`] (which holds the
//! user's access.md session, a credential), so a dump of the map gives no
//! usable cookie. The map is bounded (`[access] sessions`); a session ends
//! after `session_idle` unused or `session_max` in any case, measured by
//! the injected [`Clock`] so tests can move time. moka's own expiry (with
//! the same limits, in real time) only reclaims memory.
//!
//! Cookies, all `HttpOnly; SameSite=Strict; Path=/`:
//!
//! | cookie | on TLS | on plain HTTP | set |
//! |---|---|---|---|
//! | session | `__Host-mdgate` (`Secure`) | `mdgate` | at sign-in (a new id each time), cleared at sign-out |
//! | sign-in | `__Host-mdgate-signin` (`Secure`) | `mdgate-signin` | by the sign-in page, cleared at sign-in |
//!
//! The `__Host-` prefix makes the browser refuse the cookie unless it is
//! `Secure`, has `Path=/` and no `Domain`, so no sibling host can plant
//! one. Plain HTTP deployments (tests, a TLS terminator in front) get the
//! unprefixed names, which browsers would reject with the prefix.
//!
//! CSRF tokens are HMAC-SHA-256 (a key made at start) over a purpose label
//! and the cookie's id: one token per session, nothing stored, checked in
//! constant time. The sign-in form, which has no session yet, is bound
//! the same way to the sign-in cookie.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{self, HeaderMap};
use rand::RngCore as _;
use ring::hmac;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::dns::Clock;
use crate::federation::access::NewInvitation;
use crate::upstream::SignedInUser;

/// Which cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieKind {
    Session,
    SignIn,
}

impl CookieKind {
    /// The cookie's name on a TLS or a plain connection.
    pub fn name(self, tls: bool) -> &'static str {
        match (self, tls) {
            (CookieKind::Session, true) => "__Host-mdgate",
            (CookieKind::Session, false) => "mdgate",
            (CookieKind::SignIn, true) => "__Host-mdgate-signin",
            (CookieKind::SignIn, false) => "mdgate-signin",
        }
    }

    /// What a CSRF token bound to this cookie is for.
    fn purpose(self) -> &'static [u8] {
        match self {
            CookieKind::Session => b"mdgate-web-csrf/session\0",
            CookieKind::SignIn => b"mdgate-web-csrf/sign-in\0",
        }
    }
}

/// A random 256-bit cookie id. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// A fresh id from the operating system's generator (through
    /// `thread_rng`, a CSPRNG seeded and reseeded from it).
    pub fn random() -> SessionId {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        SessionId(b)
    }

    /// The cookie value: 43 characters of base64url.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses a cookie value; anything but 43 base64url characters that
    /// decode to 32 bytes is no id.
    pub fn decode(value: &str) -> Option<SessionId> {
        if value.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(SessionId(bytes.try_into().ok()?))
    }

    /// The map key: the id's SHA-256.
    fn key(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

/// The value of cookie `name` in the request, if exactly one well-formed
/// id is there. Several cookies of one name (a planted one beside ours)
/// count as none: the user signs in again rather than act in a session
/// someone else chose.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<SessionId> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n == name {
                if found.is_some() {
                    return None;
                }
                found = Some(SessionId::decode(v.trim_matches('"'))?);
            }
        }
    }
    found
}

/// The `Set-Cookie` value that stores `id`.
pub fn set_cookie(kind: CookieKind, tls: bool, id: &SessionId) -> String {
    format!(
        "{}={}; Path=/; {}HttpOnly; SameSite=Strict",
        kind.name(tls),
        id.encode(),
        if tls { "Secure; " } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(kind: CookieKind, tls: bool) -> String {
    format!(
        "{}=; Path=/; Max-Age=0; {}HttpOnly; SameSite=Strict",
        kind.name(tls),
        if tls { "Secure; " } else { "" }
    )
}

/// Makes and checks CSRF tokens.
pub struct Csrf {
    key: hmac::Key,
}

impl Csrf {
    /// A key from 32 random bytes (tokens die with the process, as the
    /// sessions do).
    pub fn random() -> Csrf {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        Csrf::with_key(&k)
    }

    pub fn with_key(key: &[u8]) -> Csrf {
        Csrf {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    fn message(kind: CookieKind, id: &SessionId) -> Vec<u8> {
        let mut m = kind.purpose().to_vec();
        m.extend_from_slice(&id.0);
        m
    }

    /// The token for forms of the session (or sign-in cookie) `id`.
    pub fn token(&self, kind: CookieKind, id: &SessionId) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &Self::message(kind, id)))
    }

    /// Whether `token` is the one for `id` (constant time).
    pub fn verify(&self, kind: CookieKind, id: &SessionId, token: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token.as_bytes()) else {
            return false;
        };
        hmac::verify(&self.key, &Self::message(kind, id), &tag).is_ok()
    }
}

/// An invitation the patient's page shows, and when it was made.
#[derive(Clone)]
pub struct ShownInvitation {
    pub invitation: NewInvitation,
    /// Milliseconds since the epoch: a request received after this used it
    /// (the page shows one invitation at a time).
    pub minted_at: i64,
}

/// One signed-in browser.
pub struct Session {
    pub user: SignedInUser,
    created: Instant,
    last_seen: Mutex<Instant>,
    /// The patient's current invitation, shown until it is used, expires,
    /// or the patient asks for a new one.
    pub invitation: Mutex<Option<ShownInvitation>>,
    /// A message for the next page (after a redirect).
    notice: Mutex<Option<String>>,
}

impl Session {
    /// Leaves a message for the next page.
    pub fn set_notice(&self, text: impl Into<String>) {
        *lock(&self.notice) = Some(text.into());
    }

    /// Takes the message left for this page.
    pub fn take_notice(&self) -> Option<String> {
        lock(&self.notice).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these small locks leaves a value that
    // is still consistent (a plain replace), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server-side session map.
pub struct Sessions {
    map: moka::future::Cache<[u8; 32], Arc<Session>>,
    idle: Duration,
    max: Duration,
    clock: Arc<dyn Clock>,
}

impl Sessions {
    pub fn new(capacity: u64, idle: Duration, max: Duration, clock: Arc<dyn Clock>) -> Sessions {
        Sessions {
            map: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .time_to_live(max)
                .build(),
            idle,
            max,
            clock,
        }
    }

    /// Starts a session for `user` under a new id.
    pub async fn create(&self, user: SignedInUser) -> SessionId {
        let id = SessionId::random();
        let now = self.clock.now();
        let session = Session {
            user,
            created: now,
            last_seen: Mutex::new(now),
            invitation: Mutex::new(None),
            notice: Mutex::new(None),
        };
        self.map.insert(id.key(), Arc::new(session)).await;
        id
    }

    /// The live session of `id`, marked as used now; an expired one is
    /// dropped.
    pub async fn get(&self, id: &SessionId) -> Option<Arc<Session>> {
        let key = id.key();
        let session = self.map.get(&key).await?;
        let now = self.clock.now();
        let expired = {
            let mut last = lock(&session.last_seen);
            let expired = now.saturating_duration_since(session.created) >= self.max
                || now.saturating_duration_since(*last) >= self.idle;
            if !expired {
                *last = now;
            }
            expired
        };
        if expired {
            self.map.invalidate(&key).await;
            return None;
        }
        Some(session)
    }

    /// Ends the session of `id` (sign-out, or its access.md session ended).
    pub async fn remove(&self, id: &SessionId) {
        self.map.invalidate(&id.key()).await;
    }

    /// Sessions held, after moka's pending housekeeping.
    pub async fn count(&self) -> u64 {
        self.map.run_pending_tasks().await;
        self.map.entry_count()
    }
}
