//! The access flow (docs/protocol.md § Access, `seed/flows.md` § "Patient
//! data access") as one service both sides of the flow call:
//!
//! * the patient's home (server1): the patient's page lists pending
//!   requests, approves one with the doctor's code, denies, revokes, and
//!   reads the patient's own audit entries; the federation listener takes
//!   access requests from peers and serves data under a grant;
//! * the doctor's home (server2): the doctor's page starts a request from
//!   the patient's QR payload, follows it, and reads the remote record
//!   through the egress client with the delivered grant token.
//!
//! The web pages (`crate::web`) hold the signed-in user
//! ([`upstream::SignedInUser`]) and call the methods here; every method
//! checks that the user may act on what it names.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use uuid::Uuid;

use crate::policy::{Role, RouteId};
use crate::store::{self, UnixMillis};
use crate::upstream::{self, Secret, SignInError, SignedInUser};

/// What the patient's page shows.
#[derive(Debug, Clone)]
pub struct PatientOverview {
    /// The patient's federation address, `<federation id>@<fqdn>`.
    pub address: String,
    pub patient: store::Patient,
    /// Requests waiting for the patient, oldest first.
    pub pending: Vec<store::AccessRequest>,
    /// The patient's grants, live first, then ended ones, newest first.
    pub grants: Vec<store::Grant>,
    /// The patient's own audit entries, newest first (at most 200).
    pub log: Vec<store::AuditEntry>,
}

/// A fresh invitation for the patient's QR code. `payload` is what the QR
/// code carries (docs/protocol.md § Invitations); the token inside is
/// shown once and only its hash is stored.
#[derive(Clone)]
pub struct NewInvitation {
    pub payload: String,
    pub expires_at: UnixMillis,
}

/// One request a local doctor sent, as the doctor's page shows it.
#[derive(Clone)]
pub struct DoctorRequest {
    pub id: Uuid,
    /// The patient's address, `<federation id>@<server1 fqdn>`.
    pub patient_address: String,
    /// server1.
    pub server: String,
    pub role: Role,
    pub duration: Duration,
    /// The code to show the patient while the request is open.
    pub code: Option<String>,
    /// `sending`, `pending`, `approved`, `denied`, `voided`, `expired`,
    /// `cancelled`, `revoked` or `failed`.
    pub state: &'static str,
    /// server1's machine-readable reason for a refusal, if any.
    pub reason: Option<String>,
    pub created_at: UnixMillis,
    /// When the code (and the open request) expires.
    pub expires_at: UnixMillis,
    /// The grant's role and end, once approved.
    pub granted_role: Option<Role>,
    pub grant_expires_at: Option<UnixMillis>,
    /// Whether the record can be read now (approved, unexpired).
    pub readable: bool,
}

/// Why an action on the pages failed. [`AccessError::message`] is written
/// for the person using the page; nothing in it is internal detail.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("not found")]
    NotFound,
    /// The thing named belongs to someone else (shown as not found).
    #[error("not yours")]
    NotYours,
    /// The signed-in account has the wrong role for this page.
    #[error("wrong role")]
    WrongRole,
    #[error("wrong code, {attempts_left} attempts left")]
    WrongCode { attempts_left: u32 },
    /// The request is no longer pending (`state` is its state).
    #[error("request is {state}")]
    Closed { state: &'static str },
    #[error("invalid input: {0}")]
    BadInput(&'static str),
    /// No upstream account mdgate holds can reach the patient, and linking
    /// is impossible; `why` is a sentence for the patient.
    #[error("patient unreachable: {why}")]
    Unreachable { why: String },
    /// The user's access.md session ended (upstream restart): sign in again.
    #[error("access.md session ended")]
    SessionEnded,
    #[error("access.md is unavailable")]
    UpstreamUnavailable,
    /// The other server refused or could not be reached; `reason` is
    /// machine-readable.
    #[error("peer: {reason}")]
    Peer { reason: String },
    #[error("internal error")]
    Internal,
}

impl AccessError {
    /// A sentence for the page.
    pub fn message(&self) -> String {
        match self {
            AccessError::NotFound | AccessError::NotYours => "There is no such item.".to_owned(),
            AccessError::WrongRole => "This page is not for your kind of account.".to_owned(),
            AccessError::WrongCode { attempts_left: 0 } => {
                "That code is wrong, and that was the last try: the request is void. \
                 Ask the doctor to start a new request."
                    .to_owned()
            }
            AccessError::WrongCode { attempts_left } => format!(
                "That code is wrong. Check the code the doctor shows you; {attempts_left} \
                 {} left.",
                if *attempts_left == 1 { "try" } else { "tries" }
            ),
            AccessError::Closed { state } => format!("This request is already {state}."),
            AccessError::BadInput(what) => format!("Please check the form: {what}."),
            AccessError::Unreachable { why } => why.clone(),
            AccessError::SessionEnded => {
                "Your session with the record server has ended. Please sign in again.".to_owned()
            }
            AccessError::UpstreamUnavailable => {
                "The record server is not answering right now. Nothing was changed; \
                 please try again in a minute."
                    .to_owned()
            }
            AccessError::Peer { reason } => format!(
                "The other server could not complete this ({reason}). Nothing was changed \
                 here; please try again later."
            ),
            AccessError::Internal => {
                "Something went wrong on this server. Nothing was changed; please try again."
                    .to_owned()
            }
        }
    }

    /// The HTTP status of a page showing this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AccessError::NotFound | AccessError::NotYours => StatusCode::NOT_FOUND,
            AccessError::WrongRole => StatusCode::FORBIDDEN,
            AccessError::WrongCode { .. } | AccessError::BadInput(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AccessError::Closed { .. } | AccessError::Unreachable { .. } => StatusCode::CONFLICT,
            AccessError::SessionEnded => StatusCode::UNAUTHORIZED,
            AccessError::UpstreamUnavailable | AccessError::Peer { .. } => StatusCode::BAD_GATEWAY,
            AccessError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The access flow of this server.
pub struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    fqdn: String,
}

impl Access {
    /// This server's FQDN.
    pub fn fqdn(&self) -> &str {
        &self.inner.fqdn
    }

    /// Signs a local user in through access.md (the password is dropped
    /// before this returns). A patient gets a federation id on first
    /// sign-in.
    pub async fn sign_in(
        &self,
        username: &str,
        password: Secret,
    ) -> Result<SignedInUser, SignInError> {
        let _ = (username, password);
        todo!("access flow: sign_in")
    }

    // ------------------------------------------------------------ patient

    /// The patient's page. [`AccessError::WrongRole`] for a doctor.
    pub async fn patient_overview(
        &self,
        user: &SignedInUser,
    ) -> Result<PatientOverview, AccessError> {
        let _ = user;
        todo!("access flow: patient_overview")
    }

    /// A new single-use invitation for the patient's QR code.
    pub async fn new_invitation(&self, user: &SignedInUser) -> Result<NewInvitation, AccessError> {
        let _ = user;
        todo!("access flow: new_invitation")
    }

    /// Approves the patient's pending request with the code the doctor
    /// shows, optionally for a lower role or a shorter time than asked.
    /// Links the patient to the federation account first when no account
    /// mdgate holds reaches them.
    pub async fn approve(
        &self,
        user: &SignedInUser,
        request: Uuid,
        code: &str,
        role: Option<Role>,
        duration: Option<Duration>,
    ) -> Result<store::Grant, AccessError> {
        let _ = (user, request, code, role, duration);
        todo!("access flow: approve")
    }

    pub async fn deny(&self, user: &SignedInUser, request: Uuid) -> Result<(), AccessError> {
        let _ = (user, request);
        todo!("access flow: deny")
    }

    /// Revokes one of the patient's grants, effective on the next request.
    pub async fn revoke(&self, user: &SignedInUser, grant: Uuid) -> Result<(), AccessError> {
        let _ = (user, grant);
        todo!("access flow: revoke")
    }

    // ------------------------------------------------------------- doctor

    /// Starts a request from the patient's QR payload (or the address
    /// pasted with its invitation). [`AccessError::WrongRole`] for a patient.
    pub async fn start_request(
        &self,
        user: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError> {
        let _ = (user, payload, role, duration);
        todo!("access flow: start_request")
    }

    /// The doctor's requests, newest first.
    pub async fn doctor_requests(
        &self,
        user: &SignedInUser,
    ) -> Result<Vec<DoctorRequest>, AccessError> {
        let _ = user;
        todo!("access flow: doctor_requests")
    }

    /// One of the doctor's requests.
    pub async fn doctor_request(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError> {
        let _ = (user, id);
        todo!("access flow: doctor_request")
    }

    /// Reads one part of the remote record under the request's grant: the
    /// JSON as server1 returned it.
    pub async fn remote_read(
        &self,
        user: &SignedInUser,
        request: Uuid,
        route: RouteId,
    ) -> Result<serde_json::Value, AccessError> {
        let _ = (user, request, route);
        todo!("access flow: remote_read")
    }

    /// Asks the remote patient a question (contributor grants): `question`
    /// is the JSON body of access.md's R28 (`upstream::NewQuestion`).
    pub async fn remote_ask(
        &self,
        user: &SignedInUser,
        request: Uuid,
        question: &upstream::NewQuestion,
    ) -> Result<(), AccessError> {
        let _ = (user, request, question);
        let _: Option<Bytes> = None;
        todo!("access flow: remote_ask")
    }

    /// The WebFinger (RFC 7033) answer for `resource` (`acct:<fid>@<fqdn>`
    /// or `<fid>@<fqdn>`), or `None` when it names no patient here.
    pub async fn webfinger(
        &self,
        resource: &str,
    ) -> Result<Option<serde_json::Value>, AccessError> {
        let _ = resource;
        todo!("access flow: webfinger")
    }
}
