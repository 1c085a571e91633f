//! [`UpstreamIdentity`]: an access.md account mdgate logs in as, with its
//! one cookie jar.
//!
//! access.md keeps sessions in memory, so every upstream restart ends them
//! and the next request answers 401. [`UpstreamIdentity::call`] then logs
//! in again with the stored password and retries the request **once**; a
//! second 401 is an error, never a loop. Re-logins are serialised: the
//! session slot is a `tokio` mutex held across the login, and every session
//! carries an epoch, so when many requests meet the same dead session at
//! once the first logs in and the others pick up its new session.
//!
//! A login the upstream refuses (403: the password changed, or the account
//! is gone) is remembered for [`REFUSED_LOGIN_COOLDOWN`]: calls in that
//! window fail at once without sending anything, so a wrong password costs
//! the upstream one login attempt per window, not one per request.
//!
//! Logins are sent without a cookie (a login sent with a session would
//! authenticate that session and answer with no cookie, §1.1), and the
//! upstream's cookie is only ever sent back to the upstream.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::access::{AccessMd, ApiRequest, Login, Reply, LOGIN_ROUTE};
use super::error::UpstreamError;
use super::model::{Role, UpstreamId};
use super::ops::Op;
use super::secret::{Secret, SecretFormatError, SessionCookie};
use crate::config::{self, SecretError};

/// How long a refused login stops further attempts by the same identity.
pub const REFUSED_LOGIN_COOLDOWN: Duration = Duration::from_secs(30);

/// An access.md account mdgate holds the password of.
pub struct UpstreamIdentity {
    username: String,
    password: Secret,
    access: AccessMd,
    session: tokio::sync::Mutex<Slot>,
    /// Who the account is, learned at each login.
    account: Mutex<Option<Account>>,
    /// Login requests sent, for metrics and tests.
    logins: AtomicU64,
}

/// What a login taught about an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// The account's user id upstream.
    pub id: UpstreamId,
    pub role: Role,
}

/// Why an identity cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The password file cannot be used (missing, not private, unreadable).
    #[error("upstream account {username}: {source}")]
    PasswordFile {
        username: String,
        #[source]
        source: SecretError,
    },
    /// The password file's content is not a usable password.
    #[error("upstream account {username}: {source} ({})", path.display())]
    PasswordFormat {
        username: String,
        path: std::path::PathBuf,
        #[source]
        source: SecretFormatError,
    },
}

/// The session slot: the current state and a counter of login attempts,
/// so a caller can tell whether the session it saw fail is still current.
struct Slot {
    epoch: u64,
    state: State,
}

enum State {
    /// Not logged in (never, or the last attempt failed in transit).
    Empty,
    Active(SessionCookie),
    /// The upstream refused the last login at this time.
    Refused {
        at: Instant,
        kind: Refusal,
    },
}

#[derive(Clone, Copy)]
enum Refusal {
    Credentials,
    DuplicateUsername,
}

impl Refusal {
    fn error(self) -> UpstreamError {
        match self {
            Refusal::Credentials => UpstreamError::CredentialsRejected { route: LOGIN_ROUTE },
            Refusal::DuplicateUsername => UpstreamError::DuplicateUsername { route: LOGIN_ROUTE },
        }
    }
}

impl UpstreamIdentity {
    /// An identity that has not logged in yet.
    pub fn new(access: AccessMd, username: impl Into<String>, password: Secret) -> Self {
        UpstreamIdentity {
            username: username.into(),
            password,
            access,
            session: tokio::sync::Mutex::new(Slot {
                epoch: 0,
                state: State::Empty,
            }),
            account: Mutex::new(None),
            logins: AtomicU64::new(0),
        }
    }

    /// An identity for a configured account: reads its password file
    /// (owner-only, checked again on the open handle).
    pub fn from_account(
        access: &AccessMd,
        account: &config::UpstreamAccount,
    ) -> Result<Self, IdentityError> {
        let bytes = config::read_secret_file(&account.password_file).map_err(|source| {
            IdentityError::PasswordFile {
                username: account.username.clone(),
                source,
            }
        })?;
        let password =
            Secret::from_file_bytes(bytes).map_err(|source| IdentityError::PasswordFormat {
                username: account.username.clone(),
                path: account.password_file.clone(),
                source,
            })?;
        Ok(UpstreamIdentity::new(
            access.clone(),
            account.username.clone(),
            password,
        ))
    }

    /// The access.md username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The account as the last successful login showed it.
    pub fn account(&self) -> Option<Account> {
        *self.account.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many login requests this identity has sent.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// The account's upstream id. Only a login shows it (access.md has no
    /// "who am I" route for doctors), so this logs in when it is not known
    /// yet, even if an adopted session is still alive.
    pub async fn upstream_id(&self) -> Result<UpstreamId, UpstreamError> {
        if let Some(account) = self.account() {
            return Ok(account.id);
        }
        let mut slot = self.session.lock().await;
        // Another caller may have logged in while this one waited.
        if let Some(account) = self.account() {
            return Ok(account.id);
        }
        if let State::Refused { at, kind } = &slot.state {
            if at.elapsed() < REFUSED_LOGIN_COOLDOWN {
                return Err(kind.error());
            }
        }
        self.login_locked(&mut slot).await?;
        self.learned().map(|a| a.id)
    }

    /// Logs in now, whatever the state of the current session (an explicit
    /// request, so a recent refusal does not stop it).
    pub async fn login(&self) -> Result<Account, UpstreamError> {
        let mut slot = self.session.lock().await;
        self.login_locked(&mut slot).await?;
        self.learned()
    }

    /// The account after a successful login, which always records it.
    fn learned(&self) -> Result<Account, UpstreamError> {
        self.account().ok_or(UpstreamError::UnexpectedBody {
            route: LOGIN_ROUTE,
            what: "the login did not show the account",
        })
    }

    /// Uses a session obtained elsewhere (for example a doctor's live
    /// session, handed over at enrollment) until it stops working; the
    /// password is used only after that.
    pub async fn adopt_session(&self, session: SessionCookie) {
        let mut slot = self.session.lock().await;
        slot.epoch += 1;
        slot.state = State::Active(session);
    }

    /// Sends a request as this account: logs in first when there is no
    /// session, and on a 401 logs in again and retries once. Retrying a
    /// write is safe: access.md's access manager answers 401 before any
    /// handler runs, so the refused request changed nothing.
    pub async fn call(&self, request: &ApiRequest) -> Result<Reply, UpstreamError> {
        let (epoch, session) = self.session_for(None).await?;
        let reply = self.access.send(request, Some(&session)).await?;
        if reply.status() != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        tracing::info!(
            upstream.account = %self.username,
            upstream.route = request.route(),
            "access.md no longer knows the session (restarted?); logging in again"
        );
        let (_, session) = self.session_for(Some(epoch)).await?;
        let reply = self.access.send(request, Some(&session)).await?;
        if reply.status() == StatusCode::UNAUTHORIZED {
            // A fresh session refused: the account lacks the route's role.
            return Err(UpstreamError::Unauthorized {
                route: request.route(),
            });
        }
        Ok(reply)
    }

    /// Like [`call`](Self::call), but the body is left unread
    /// ([`AccessMd::open`]) so that it can be streamed. A 401 is retried
    /// once after a new login, as for `call`.
    pub async fn open(
        &self,
        request: &ApiRequest,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let (epoch, session) = self.session_for(None).await?;
        let response = self.access.open(request, Some(&session)).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        drop(response);
        let (_, session) = self.session_for(Some(epoch)).await?;
        let response = self.access.open(request, Some(&session)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(UpstreamError::Unauthorized {
                route: request.route(),
            });
        }
        Ok(response)
    }

    /// Runs a typed operation as this account (see [`call`](Self::call)).
    pub async fn run<T>(&self, op: Op<T>) -> Result<T, UpstreamError> {
        let reply = self.call(op.request()).await?;
        op.decode(&reply)
    }

    /// The session to send with. `stale` is the epoch of a session that
    /// just got a 401: if it is still the current one, log in again; if
    /// another caller already did, use theirs (or their failure).
    async fn session_for(&self, stale: Option<u64>) -> Result<(u64, SessionCookie), UpstreamError> {
        let mut slot = self.session.lock().await;
        match &slot.state {
            State::Active(session) if Some(slot.epoch) != stale => {
                return Ok((slot.epoch, session.clone()));
            }
            State::Refused { at, kind } if at.elapsed() < REFUSED_LOGIN_COOLDOWN => {
                return Err(kind.error());
            }
            State::Active(_) | State::Refused { .. } | State::Empty => {}
        }
        let session = self.login_locked(&mut slot).await?;
        Ok((slot.epoch, session))
    }

    /// Logs in while holding the slot, so one login is in flight at a time.
    async fn login_locked(&self, slot: &mut Slot) -> Result<SessionCookie, UpstreamError> {
        slot.epoch += 1;
        // Should this future be dropped mid-login, the next caller starts
        // from a clean slate rather than from the dead session.
        slot.state = State::Empty;
        self.logins.fetch_add(1, Ordering::Relaxed);
        match self.access.login(&self.username, &self.password).await {
            Ok(Login { user, session }) => {
                self.remember(Account {
                    id: user.id,
                    role: user.user_role,
                });
                tracing::info!(
                    upstream.account = %self.username,
                    upstream.user_id = %user.id,
                    "logged in to access.md"
                );
                slot.state = State::Active(session.clone());
                Ok(session)
            }
            Err(e) => {
                let refusal = match e {
                    UpstreamError::CredentialsRejected { .. } => Some(Refusal::Credentials),
                    UpstreamError::DuplicateUsername { .. } => Some(Refusal::DuplicateUsername),
                    _ => None,
                };
                if let Some(kind) = refusal {
                    slot.state = State::Refused {
                        at: Instant::now(),
                        kind,
                    };
                }
                tracing::warn!(
                    upstream.account = %self.username,
                    "login to access.md failed: {e}"
                );
                Err(e)
            }
        }
    }

    fn remember(&self, account: Account) {
        let mut known = self.account.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(before) = *known {
            if before.id != account.id {
                tracing::warn!(
                    upstream.account = %self.username,
                    upstream.user_id = %account.id,
                    upstream.previous_user_id = %before.id,
                    "the access.md account now has another id (was it recreated?)"
                );
            }
        }
        *known = Some(account);
    }
}

impl fmt::Debug for UpstreamIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamIdentity")
            .field("username", &self.username)
            .field("account", &self.account())
            .field("password", &self.password)
            .field("session", &format_args!("[redacted]"))
            .finish()
    }
}
