//! Signing local users in to mdgate's pages with their access.md account,
//! and acting with a patient's own session.
//!
//! [`sign_in`] forwards the username and password to access.md's login
//! (R1), learns the account's id, role and name from the answer, and keeps
//! **only the upstream session**: the password is taken by value and
//! dropped (and wiped, best effort) before `sign_in` returns, and
//! [`SignedInUser`] has no field that could hold it. Whoever keeps the
//! session (the `web` module's own session store) keeps an access.md
//! credential, so [`SessionCookie`] never prints.
//!
//! [`PatientSession`] is a signed-in patient's session used by mdgate on
//! the patient's behalf: minting a link code (R11) at approval time,
//! reading the patient's doctor (R4), and appending (R12 symptoms, R13
//! vitals, R6 profile). It cannot log in again (there is no password), so
//! a 401 ([`UpstreamError::Unauthorized`]) means the patient must sign in
//! again, typically after an upstream restart.

use std::fmt;

use super::access::AccessMd;
use super::error::UpstreamError;
use super::model::{
    Doctor, MedicalProfile, NewSymptom, ProfileUpdate, Question, Role, SecurityCode, UpstreamId,
    Vitals,
};
use super::ops::{self, Op};
use super::secret::{Secret, SessionCookie};

/// A local user signed in through access.md. No password: see the module
/// docs.
#[derive(Clone)]
pub struct SignedInUser {
    /// The account's id upstream (a patient's id in doctor routes).
    pub upstream_id: UpstreamId,
    /// The username as typed (access.md matches it exactly).
    pub username: String,
    pub role: Role,
    /// "First Last", or the username when the account has no names.
    pub display_name: String,
    /// The upstream session the login created.
    pub session: SessionCookie,
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// access.md answered 403: unknown username or wrong password.
    #[error("wrong username or password")]
    WrongCredentials,
    /// Several access.md accounts have this username, so none can log in
    /// (the admin created a doctor twice).
    #[error("several access.md accounts share this username")]
    DuplicateAccount,
    /// The account's role is not one mdgate knows.
    #[error("the access.md account has a role mdgate does not know")]
    UnknownRole,
    /// access.md is down, overloaded or too slow: try again later.
    #[error("access.md is unavailable: {0}")]
    Unavailable(#[source] UpstreamError),
    /// access.md answered something a login never returns.
    #[error("access.md answered the sign-in unexpectedly: {0}")]
    Upstream(#[source] UpstreamError),
    /// The sign-in worked upstream but mdgate could not record it (its
    /// store failed); the detail is logged.
    #[error("mdgate could not record the sign-in")]
    Internal,
}

/// Signs a local user in (R1, sent without a cookie). The password is
/// consumed: it is dropped when this returns, whatever the outcome.
pub async fn sign_in(
    access: &AccessMd,
    username: &str,
    password: Secret,
) -> Result<SignedInUser, SignInError> {
    let login = access.login(username, &password).await;
    drop(password);
    let login = match login {
        Ok(login) => login,
        Err(UpstreamError::CredentialsRejected { .. }) => {
            return Err(SignInError::WrongCredentials)
        }
        Err(UpstreamError::DuplicateUsername { .. }) => return Err(SignInError::DuplicateAccount),
        Err(e) if e.is_unavailable() => return Err(SignInError::Unavailable(e)),
        Err(e) => return Err(SignInError::Upstream(e)),
    };
    if login.user.user_role == Role::Unknown {
        return Err(SignInError::UnknownRole);
    }
    Ok(SignedInUser {
        upstream_id: login.user.id,
        username: username.to_owned(),
        role: login.user.user_role,
        display_name: login.user.display_name(),
        session: login.session,
    })
}

impl SignedInUser {
    /// The session as a patient's, for linking and appends; `None` unless
    /// the user is a patient.
    pub fn patient_session(&self, access: &AccessMd) -> Option<PatientSession> {
        (self.role == Role::Patient)
            .then(|| PatientSession::new(access.clone(), self.upstream_id, self.session.clone()))
    }
}

impl fmt::Debug for SignedInUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedInUser")
            .field("upstream_id", &self.upstream_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("display_name", &self.display_name)
            .field("session", &self.session)
            .finish()
    }
}

/// A patient's live upstream session (from their sign-in), used on their
/// behalf. No re-login: a 401 means the patient must sign in again.
pub struct PatientSession {
    access: AccessMd,
    upstream_id: UpstreamId,
    session: SessionCookie,
}

impl PatientSession {
    /// `upstream_id` must be the id the session belongs to (the sign-in's
    /// [`SignedInUser::upstream_id`]).
    pub fn new(access: AccessMd, upstream_id: UpstreamId, session: SessionCookie) -> Self {
        PatientSession {
            access,
            upstream_id,
            session,
        }
    }

    /// The patient's id upstream.
    pub fn upstream_id(&self) -> UpstreamId {
        self.upstream_id
    }

    /// Runs a typed operation with the patient's session.
    pub async fn run<T>(&self, op: Op<T>) -> Result<T, UpstreamError> {
        let reply = self.access.send(op.request(), Some(&self.session)).await?;
        op.decode(&reply)
    }

    /// R4: the patient's doctor, `None` when they have none.
    pub async fn doctor(&self) -> Result<Option<Doctor>, UpstreamError> {
        self.run(ops::doctor_of_patient()).await
    }

    /// R11: a new link code (the previous one stops working).
    pub async fn mint_code(&self) -> Result<SecurityCode, UpstreamError> {
        self.run(ops::mint_code()).await
    }

    /// R9: questions the patient has not answered yet.
    pub async fn unanswered_questions(&self) -> Result<Vec<Question>, UpstreamError> {
        self.run(ops::unanswered_questions()).await
    }

    /// R7: the patient's profile.
    pub async fn profile(&self) -> Result<MedicalProfile, UpstreamError> {
        self.run(ops::own_profile()).await
    }

    /// R12: appends a symptom (the server stamps the time).
    pub async fn report_symptom(&self, symptom: &NewSymptom) -> Result<(), UpstreamError> {
        self.run(ops::report_symptom(symptom)?).await
    }

    /// R13: appends a vitals measurement (the server stamps the time).
    pub async fn report_vitals(&self, vitals: &Vitals) -> Result<(), UpstreamError> {
        self.run(ops::report_vitals(vitals)?).await
    }

    /// R6: replaces the profile with these ten fields (never an `id`).
    pub async fn replace_profile(&self, profile: &ProfileUpdate) -> Result<(), UpstreamError> {
        self.run(ops::replace_profile(profile)?).await
    }
}

impl fmt::Debug for PatientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientSession")
            .field("upstream_id", &self.upstream_id)
            .field("session", &self.session)
            .finish()
    }
}
