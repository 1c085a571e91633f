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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use rand::Rng as _;
use uuid::Uuid;

use crate::policy::{Role, RouteId};
use crate::store::{
    self, AuditRecord, Effects, NewOutboxMessage, NewOutgoingRequest, OutgoingState,
    OutgoingUpdate, ReceivedGrant, RequestKind, RequestState, Store, StoreError, UnixMillis,
};
use crate::upstream::{self, LinkError, Secret, SignInError, SignedInUser, UpstreamError};

mod auditor;
pub mod code;
mod grants;
pub mod peer;
pub mod wire;

pub use auditor::{AuditError, Auditor};
pub use grants::{GrantCache, LiveGrant};
pub use peer::{send as peer_send, PeerError};

use code::Address;
use wire::{DecisionMsg, PeerPost, RevocationMsg};

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

impl std::fmt::Debug for DoctorRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoctorRequest")
            .field("id", &self.id)
            .field("patient_address", &self.patient_address)
            .field("role", &self.role)
            .field("state", &self.state)
            .field("reason", &self.reason)
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NewInvitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewInvitation")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
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
            AccessError::Peer { reason } => match reason.as_str() {
                "invitation_invalid" => "The patient's QR code was already used or has \
                    expired. Ask the patient to show a new one."
                    .to_owned(),
                "unknown_patient" => "The patient's server does not know this patient. \
                    Check the QR code with the patient."
                    .to_owned(),
                "patient_moved" => "This patient has moved to another server. Ask the \
                    patient for their new QR code."
                    .to_owned(),
                "upstream_unavailable" | "patient_unreachable" => "The patient's record \
                    server is not answering right now. Please try again in a minute."
                    .to_owned(),
                "grant_revoked" => "The patient has revoked this access.".to_owned(),
                "grant_expired" | "token_expired" => "This access has expired.".to_owned(),
                _ => format!(
                    "The other server could not complete this ({reason}). Nothing was \
                     changed here; please try again later."
                ),
            },
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

/// Everything the access flow needs, built by `serve`.
pub struct AccessParts {
    pub fqdn: String,
    pub store: Arc<dyn Store>,
    pub upstream: upstream::AccessMd,
    pub accounts: Arc<upstream::Accounts>,
    pub signing: crate::token::SigningKey,
    /// Verifies this server's own grant tokens (current, next and previous
    /// signing keys).
    pub verifier: crate::token::GrantVerifier,
    pub egress: Arc<crate::federation::egress::Egress>,
    pub resolver: Arc<crate::dns::KeyResolver>,
    /// This server's federation certificate (what server1 binds grants to).
    pub own_cert: Arc<crate::tls::CertReloader>,
    pub limits: crate::config::Access,
    /// Where transfers keep their ciphertext and bundles (created on use).
    pub transfer_dir: std::path::PathBuf,
    pub skew: Duration,
    pub policy: crate::policy::Policy,
    pub webhook: Option<crate::notify::Webhook>,
    pub metrics: Arc<crate::admin::Metrics>,
}

/// The access flow of this server. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    parts: AccessParts,
    grants: GrantCache,
    /// Group commit of the data path's audit entries.
    auditor: Auditor,
    /// Wakes the outbox worker when a message was queued.
    kick: tokio::sync::Notify,
    /// Wakes the transfer worker.
    transfer_kick: tokio::sync::Notify,
    /// Set when the server stops: long-running work (imports) ends.
    halted: std::sync::atomic::AtomicBool,
    /// Transfers whose import runs in this process now.
    importing: std::sync::Mutex<std::collections::HashSet<Uuid>>,
}

/// Milliseconds since the epoch of `t`.
pub fn millis(t: SystemTime) -> UnixMillis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn now_ms() -> UnixMillis {
    millis(SystemTime::now())
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Maps a store failure to the page error, logging the detail.
pub(crate) fn internal(context: &'static str) -> impl Fn(StoreError) -> AccessError {
    move |e| {
        tracing::error!(error = %e, "{context}");
        match e {
            StoreError::Busy => AccessError::Internal,
            _ => AccessError::Internal,
        }
    }
}

pub(crate) fn upstream_error(e: UpstreamError) -> AccessError {
    match e {
        UpstreamError::Unauthorized { .. } => AccessError::SessionEnded,
        e if e.is_unavailable() => AccessError::UpstreamUnavailable,
        e => {
            tracing::warn!(error = %e, "access.md answered unexpectedly");
            AccessError::UpstreamUnavailable
        }
    }
}

pub(crate) fn audit(
    kind: &str,
    actor: &str,
    patient: Option<Uuid>,
    detail: serde_json::Value,
) -> AuditRecord {
    AuditRecord {
        at: now_ms(),
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        patient,
        detail,
    }
}

impl Access {
    /// Must be called within a Tokio runtime (the audit writer starts on it).
    pub fn new(parts: AccessParts) -> Access {
        let auditor = Auditor::start(parts.store.clone(), parts.metrics.clone());
        Access {
            inner: Arc::new(Inner {
                parts,
                auditor,
                grants: GrantCache::new(100_000),
                kick: tokio::sync::Notify::new(),
                transfer_kick: tokio::sync::Notify::new(),
                importing: std::sync::Mutex::new(std::collections::HashSet::new()),
                halted: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// This server's FQDN.
    pub fn fqdn(&self) -> &str {
        &self.inner.parts.fqdn
    }

    pub(crate) fn parts(&self) -> &AccessParts {
        &self.inner.parts
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.inner.parts.store
    }

    pub(crate) fn auditor(&self) -> &Auditor {
        &self.inner.auditor
    }

    pub(crate) fn grants(&self) -> &GrantCache {
        &self.inner.grants
    }

    /// Wakes the outbox worker.
    pub(crate) fn kick(&self) {
        self.inner.kick.notify_one();
    }

    /// Wakes the transfer worker.
    pub(crate) fn kick_transfers(&self) {
        self.inner.transfer_kick.notify_one();
    }

    /// Waits until [`Access::kick_transfers`] or `timeout`.
    pub(crate) async fn transfers_kicked(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.transfer_kick.notified()).await;
    }

    /// The server is stopping: background work ends at its next step.
    pub fn halt(&self) {
        self.inner
            .halted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn halted(&self) -> bool {
        self.inner.halted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the import of `id` as running here; `false` if it already is.
    pub(crate) fn start_import(&self, id: Uuid) -> bool {
        self.inner
            .importing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id)
    }

    pub(crate) fn end_import(&self, id: Uuid) {
        self.inner
            .importing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    pub(crate) fn is_importing(&self, id: Uuid) -> bool {
        self.inner
            .importing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
    }

    /// Waits until [`Access::kick`] or `timeout`.
    pub(crate) async fn kicked(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.kick.notified()).await;
    }

    pub(crate) fn address(&self, patient: Uuid) -> String {
        Address {
            patient,
            fqdn: self.fqdn().to_owned(),
        }
        .to_string()
    }

    /// A webhook event for `effects`, when a webhook is configured.
    pub(crate) fn webhook(
        &self,
        event: &str,
        fields: serde_json::Value,
    ) -> Option<NewOutboxMessage> {
        self.inner.parts.webhook.as_ref()?;
        let now = now_ms();
        let mut body = serde_json::json!({
            "event": event,
            "at": httpdate::fmt_http_date(SystemTime::now()),
        });
        if let (Some(b), serde_json::Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        Some(NewOutboxMessage {
            destination: "webhook".to_owned(),
            kind: wire::KIND_WEBHOOK.to_owned(),
            payload: body,
            idempotency_key: format!("webhook:{}", Uuid::new_v4()),
            created_at: now,
            next_attempt_at: now,
        })
    }

    pub(crate) fn peer_message(
        &self,
        to: &str,
        path: &str,
        key: String,
        body: serde_json::Value,
    ) -> NewOutboxMessage {
        self.peer_message_after(to, path, key, body, 0)
    }

    /// A message the worker takes only `delay_ms` from now (the caller
    /// sends it itself first).
    pub(crate) fn peer_message_after(
        &self,
        to: &str,
        path: &str,
        key: String,
        body: serde_json::Value,
        delay_ms: i64,
    ) -> NewOutboxMessage {
        let now = now_ms();
        let post = PeerPost {
            path: path.to_owned(),
            body,
        };
        NewOutboxMessage {
            destination: to.to_owned(),
            kind: path.to_owned(),
            payload: serde_json::to_value(post).unwrap_or(serde_json::Value::Null),
            idempotency_key: key,
            created_at: now,
            next_attempt_at: now + delay_ms,
        }
    }

    /// Signs a local user in through access.md (the password is dropped
    /// before this returns). A patient gets a federation id on first
    /// sign-in.
    pub async fn sign_in(
        &self,
        username: &str,
        password: Secret,
    ) -> Result<SignedInUser, SignInError> {
        let user = upstream::sign_in(&self.inner.parts.upstream, username, password).await?;
        if user.role == upstream::Role::Patient {
            if let Err(e) = self.ensure_patient(user.upstream_id.0).await {
                tracing::error!(error = %e, "cannot register the patient");
                return Err(SignInError::Internal);
            }
        }
        Ok(user)
    }

    /// The patient row for an upstream id, created on first use.
    pub(crate) async fn ensure_patient(
        &self,
        upstream_id: i64,
    ) -> Result<store::Patient, StoreError> {
        let store = self.store();
        if let Some(p) = store.patient_by_upstream_id(upstream_id).await? {
            return Ok(p);
        }
        let patient = store::Patient {
            federation_id: Uuid::new_v4(),
            upstream_id,
            created_at: now_ms(),
            moved_to: None,
        };
        match store.insert_patient(patient.clone()).await {
            Ok(()) => Ok(patient),
            // Two first sign-ins at once: the other one won.
            Err(StoreError::Conflict { .. }) => store
                .patient_by_upstream_id(upstream_id)
                .await?
                .ok_or(StoreError::NotFound { what: "patient" }),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn patient_of(
        &self,
        user: &SignedInUser,
    ) -> Result<store::Patient, AccessError> {
        if user.role != upstream::Role::Patient {
            return Err(AccessError::WrongRole);
        }
        self.ensure_patient(user.upstream_id.0)
            .await
            .map_err(internal("cannot read the patient"))
    }

    // ------------------------------------------------------------ patient

    /// The patient's page. [`AccessError::WrongRole`] for a doctor.
    pub async fn patient_overview(
        &self,
        user: &SignedInUser,
    ) -> Result<PatientOverview, AccessError> {
        let patient = self.patient_of(user).await?;
        let fid = patient.federation_id;
        let store = self.store();
        let now = now_ms();
        let mut pending = store
            .pending_requests_for_patient(fid)
            .await
            .map_err(internal("cannot list requests"))?;
        // Expired ones are closed by the sweeper; never show them.
        pending.retain(|r| r.expires_at > now);
        let mut grants = store
            .grants_for_patient(fid)
            .await
            .map_err(internal("cannot list grants"))?;
        grants.sort_by_key(|g| (!g.is_live(now), std::cmp::Reverse(g.not_before)));
        // The newest 200 entries: page from the start, keep the tail.
        let mut log = Vec::new();
        let mut from = 0;
        loop {
            let page = store
                .audit_entries_for_patient(fid, from, store::MAX_PAGE)
                .await
                .map_err(internal("cannot read the audit log"))?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            let full = page.len() as u32 == store::MAX_PAGE;
            log.extend(page);
            if log.len() > 200 {
                log.drain(..log.len() - 200);
            }
            if !full {
                break;
            }
        }
        log.reverse();
        Ok(PatientOverview {
            address: self.address(fid),
            patient,
            pending,
            grants,
            log,
        })
    }

    /// A new single-use invitation for the patient's QR code.
    pub async fn new_invitation(&self, user: &SignedInUser) -> Result<NewInvitation, AccessError> {
        let patient = self.patient_of(user).await?;
        if let Some(to) = &patient.moved_to {
            let _ = to;
            return Err(AccessError::Closed { state: "moved" });
        }
        let token = code::new_invitation_token(rand::thread_rng().gen());
        let hash = code::invitation_hash(&token).ok_or(AccessError::Internal)?;
        let now = now_ms();
        let expires_at = now + duration_ms(self.inner.parts.limits.invitation_ttl);
        self.store()
            .insert_invitation(store::Invitation {
                id: Uuid::new_v4(),
                patient: patient.federation_id,
                token_hash: hash,
                created_at: now,
                expires_at,
                used_at: None,
            })
            .await
            .map_err(internal("cannot store the invitation"))?;
        let address = Address {
            patient: patient.federation_id,
            fqdn: self.fqdn().to_owned(),
        };
        Ok(NewInvitation {
            payload: code::payload(&address, &token),
            expires_at,
        })
    }

    /// The patient's pending request `id`, or why not.
    pub(crate) async fn own_pending(
        &self,
        patient: &store::Patient,
        id: Uuid,
    ) -> Result<store::AccessRequest, AccessError> {
        let req = self
            .store()
            .access_request(id)
            .await
            .map_err(internal("cannot read the request"))?
            .ok_or(AccessError::NotFound)?;
        if req.patient != patient.federation_id {
            return Err(AccessError::NotYours);
        }
        if req.state != RequestState::Pending {
            return Err(AccessError::Closed {
                state: req.state.as_str(),
            });
        }
        if req.expires_at <= now_ms() {
            self.close(&req, RequestState::Expired, "patient").await?;
            return Err(AccessError::Closed { state: "expired" });
        }
        Ok(req)
    }

    /// Ends a pending request without a grant and tells the requester.
    pub(crate) async fn close(
        &self,
        req: &store::AccessRequest,
        to: RequestState,
        actor: &str,
    ) -> Result<(), AccessError> {
        let now = now_ms();
        let kind = format!("access.{}", to.as_str());
        let mut effects = Effects::none()
            .with_audit(audit(
                &kind,
                actor,
                Some(req.patient),
                serde_json::json!({"request": req.id, "doctor": req.doctor, "server": req.server_fqdn}),
            ))
            .with_outbox(self.decision(req, to.as_str(), None));
        if let Some(hook) = self.webhook(
            &kind,
            serde_json::json!({"patient": self.address(req.patient), "doctor": req.doctor,
                "server": req.server_fqdn, "role": req.role, "request": req.id}),
        ) {
            effects = effects.with_outbox(hook);
        }
        match self.store().close_request(req.id, to, now, effects).await {
            Ok(_) => {}
            // Someone else closed it meanwhile: fine, nothing to add.
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(internal("cannot close the request")(e)),
        }
        self.kick();
        Ok(())
    }

    fn decision(
        &self,
        req: &store::AccessRequest,
        state: &str,
        token: Option<String>,
    ) -> NewOutboxMessage {
        let msg = DecisionMsg {
            request: req.id,
            state: state.to_owned(),
            token,
        };
        self.peer_message(
            &req.server_fqdn,
            wire::DECISIONS,
            format!("decision:{}", req.id),
            serde_json::to_value(msg).unwrap_or_default(),
        )
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
        let patient = self.patient_of(user).await?;
        let req = self.own_pending(&patient, request).await?;
        if req.kind != RequestKind::Access {
            return Err(AccessError::BadInput(
                "this request is not an access request",
            ));
        }
        let asked_role: Role = req.role.parse().map_err(|_| AccessError::Internal)?;
        let role = role.unwrap_or(asked_role);
        if role > asked_role {
            return Err(AccessError::BadInput(
                "the role cannot be higher than asked",
            ));
        }
        let asked = Duration::from_millis(u64::try_from(req.duration_ms).unwrap_or(0));
        let duration = duration.unwrap_or(asked);
        if duration > asked || duration.is_zero() {
            return Err(AccessError::BadInput(
                "the duration cannot be longer than asked",
            ));
        }
        let duration = duration.min(self.inner.parts.limits.max_grant);

        // The code first: a wrong code changes nothing but the count.
        let good =
            code::code_hash(req.id, code).is_some_and(|h| constant_time_eq(&h, &req.code_hash));
        if !good {
            return Err(self.wrong_code(&req).await);
        }

        self.ensure_reachable(user, &patient).await?;

        let cert = req.requester_cert_sha256.ok_or_else(|| {
            tracing::error!(request = %req.id, "request has no requester certificate");
            AccessError::Internal
        })?;
        let now = SystemTime::now();
        let now_s = crate::token::unix_seconds(now);
        let grant_id = Uuid::new_v4();
        let claims = crate::token::GrantClaims {
            issuer: self.fqdn().to_owned(),
            patient: patient.federation_id,
            client: req.server_fqdn.clone(),
            actor: req.doctor.clone(),
            role,
            not_before: now_s,
            expires_at: now_s + i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 2),
            issued_at: now_s,
            id: grant_id,
            cert_sha256: cert,
        };
        let token = crate::token::issue_grant(&self.inner.parts.signing, &claims).map_err(|e| {
            tracing::error!(error = %e, "cannot sign a grant");
            AccessError::Internal
        })?;
        let grant = store::Grant {
            id: grant_id,
            request_id: req.id,
            patient: patient.federation_id,
            server_fqdn: req.server_fqdn.clone(),
            server_key_sha256: cert,
            doctor: req.doctor.clone(),
            role: role.as_str().to_owned(),
            not_before: claims.not_before * 1000,
            expires_at: claims.expires_at * 1000,
            revoked_at: None,
        };
        let mut effects = Effects::none()
            .with_audit(audit(
                "access.approved",
                &self.address(patient.federation_id),
                Some(patient.federation_id),
                serde_json::json!({"request": req.id, "grant": grant_id, "doctor": req.doctor,
                    "server": req.server_fqdn, "role": role.as_str(),
                    "expires_at": grant.expires_at}),
            ))
            .with_outbox(self.decision(&req, "approved", Some(token)));
        if let Some(hook) = self.webhook(
            "access.granted",
            serde_json::json!({"patient": self.address(patient.federation_id), "doctor": req.doctor,
                "server": req.server_fqdn, "role": role.as_str(), "request": req.id}),
        ) {
            effects = effects.with_outbox(hook);
        }
        let grant = self
            .store()
            .approve_request(grant, millis(now), effects)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => AccessError::Closed { state: "decided" },
                e => internal("cannot store the grant")(e),
            })?;
        self.kick();
        Ok(grant)
    }

    /// Makes sure an upstream account mdgate holds reaches the patient,
    /// linking them to the federation account with their own session
    /// when none does.
    pub(crate) async fn ensure_reachable(
        &self,
        user: &SignedInUser,
        patient: &store::Patient,
    ) -> Result<(), AccessError> {
        let accounts = &self.inner.parts.accounts;
        let upstream_id = upstream::UpstreamId(patient.upstream_id);
        if accounts.identity_for_patient(upstream_id).await.is_none() {
            let session = user
                .patient_session(&self.inner.parts.upstream)
                .ok_or(AccessError::WrongRole)?;
            match accounts.link_patient(&session).await {
                Ok(outcome) => {
                    tracing::info!(?outcome, "patient made reachable for federation");
                }
                Err(e) => return Err(link_error(e)),
            }
        }
        Ok(())
    }

    pub(crate) async fn wrong_code(&self, req: &store::AccessRequest) -> AccessError {
        let max = self.inner.parts.limits.code_attempts;
        let voids = req.attempts + 1 >= max;
        let mut effects = Effects::none().with_audit(audit(
            "access.wrong_code",
            &self.address(req.patient),
            Some(req.patient),
            serde_json::json!({"request": req.id, "attempt": req.attempts + 1}),
        ));
        if voids {
            effects = effects
                .with_audit(audit(
                    "access.voided",
                    &self.address(req.patient),
                    Some(req.patient),
                    serde_json::json!({"request": req.id, "doctor": req.doctor, "server": req.server_fqdn}),
                ))
                .with_outbox(self.decision(req, "voided", None));
        }
        match self
            .store()
            .record_wrong_code(req.id, max, now_ms(), effects)
            .await
        {
            Ok(after) => {
                self.kick();
                AccessError::WrongCode {
                    attempts_left: max.saturating_sub(after.attempts),
                }
            }
            Err(StoreError::Conflict { .. }) => AccessError::Closed { state: "decided" },
            Err(e) => internal("cannot count a wrong code")(e),
        }
    }

    pub async fn deny(&self, user: &SignedInUser, request: Uuid) -> Result<(), AccessError> {
        let patient = self.patient_of(user).await?;
        let req = self.own_pending(&patient, request).await?;
        self.close(
            &req,
            RequestState::Denied,
            &self.address(patient.federation_id),
        )
        .await
    }

    /// Revokes one of the patient's grants, effective on the next request.
    pub async fn revoke(&self, user: &SignedInUser, grant: Uuid) -> Result<(), AccessError> {
        let patient = self.patient_of(user).await?;
        let g = self
            .store()
            .grant(grant)
            .await
            .map_err(internal("cannot read the grant"))?
            .ok_or(AccessError::NotFound)?;
        if g.patient != patient.federation_id {
            return Err(AccessError::NotYours);
        }
        self.revoke_grant(&g, &self.address(patient.federation_id))
            .await
    }

    /// Revokes `g` (idempotent) and tells its holder.
    pub(crate) async fn revoke_grant(
        &self,
        g: &store::Grant,
        actor: &str,
    ) -> Result<(), AccessError> {
        let now = now_ms();
        let notice = RevocationMsg {
            request: g.request_id,
            grant: g.id,
            revoked_at: now,
        };
        let mut effects = Effects::none()
            .with_audit(audit(
                "access.revoked",
                actor,
                Some(g.patient),
                serde_json::json!({"grant": g.id, "request": g.request_id, "doctor": g.doctor, "server": g.server_fqdn}),
            ))
            .with_outbox(self.peer_message(
                &g.server_fqdn,
                wire::REVOCATIONS,
                format!("revocation:{}", g.id),
                serde_json::to_value(notice).unwrap_or_default(),
            ));
        if let Some(hook) = self.webhook(
            "access.revoked",
            serde_json::json!({"patient": self.address(g.patient), "doctor": g.doctor,
                "server": g.server_fqdn, "role": g.role, "request": g.request_id}),
        ) {
            effects = effects.with_outbox(hook);
        }
        // The cache first: from here on no request passes, even before
        // the commit returns.
        self.grants().revoke(g.id);
        self.store()
            .revoke_grant(g.id, now, effects)
            .await
            .map_err(internal("cannot revoke the grant"))?;
        self.kick();
        Ok(())
    }

    // ------------------------------------------------------------- doctor

    pub(crate) fn doctor_of(user: &SignedInUser) -> Result<(), AccessError> {
        if user.role != upstream::Role::Doctor {
            return Err(AccessError::WrongRole);
        }
        Ok(())
    }

    pub(crate) fn doctor_address(&self, user: &SignedInUser) -> String {
        format!("{}@{}", user.username, self.fqdn())
    }

    /// Starts a request from the patient's QR payload (or the address
    /// pasted with its invitation). [`AccessError::WrongRole`] for a patient.
    pub async fn start_request(
        &self,
        user: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError> {
        Self::doctor_of(user)?;
        let (address, invitation) = code::parse_payload(payload).map_err(|e| {
            AccessError::BadInput(match e {
                code::PayloadError::Scheme => "the QR code is not an mdgate patient code",
                code::PayloadError::Address
                | code::PayloadError::PatientId
                | code::PayloadError::Server => "the patient address in the QR code is malformed",
                code::PayloadError::Invitation => "the QR code has no valid invitation",
            })
        })?;
        if address.fqdn == self.fqdn() {
            return Err(AccessError::BadInput(
                "this patient is on this server: no federation request is needed",
            ));
        }
        if duration.is_zero() || duration > self.inner.parts.limits.max_grant {
            return Err(AccessError::BadInput(
                "the duration is longer than this server allows",
            ));
        }
        if user.username.len() > 128 || user.username.is_empty() {
            return Err(AccessError::BadInput(
                "the username is too long for a federation address",
            ));
        }
        let id = Uuid::new_v4();
        let code = code::new_code(rand::thread_rng().gen::<u64>());
        let hash = code::code_hash(id, &code).ok_or(AccessError::Internal)?;
        let now = now_ms();
        let expires_at = now + duration_ms(self.inner.parts.limits.code_ttl);
        let msg = wire::AccessRequestMsg {
            id,
            kind: "access".to_owned(),
            patient: address.patient,
            invitation,
            doctor: self.doctor_address(user),
            role: role.as_str().to_owned(),
            duration: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            code_hash: URL_SAFE_NO_PAD.encode(hash),
            expires_at: expires_at / 1000,
        };
        let new = NewOutgoingRequest {
            id,
            kind: RequestKind::Access,
            doctor: user.username.clone(),
            doctor_upstream_id: user.upstream_id.0,
            patient_address: address.to_string(),
            server_fqdn: address.fqdn.clone(),
            role: role.as_str().to_owned(),
            duration_ms: duration_ms(duration),
            code,
            created_at: now,
            expires_at,
        };
        let effects = Effects::none()
            .with_audit(audit(
                "request.sent",
                &self.doctor_address(user),
                None,
                serde_json::json!({"request": id, "patient": address.to_string(), "role": role.as_str()}),
            ))
            .with_outbox(self.peer_message_after(
                &address.fqdn,
                wire::ACCESS_REQUESTS,
                format!("access-request:{id}"),
                serde_json::to_value(msg).unwrap_or_default(),
                5_000,
            ));
        self.store()
            .create_outgoing_request(new, effects)
            .await
            .map_err(internal("cannot store the request"))?;
        // Deliver now so the doctor sees at once whether server1 took it;
        // the outbox retries if this attempt fails.
        if let Ok(Some(msg)) = self
            .store()
            .outbox_message(&format!("access-request:{id}"))
            .await
        {
            crate::federation::outbox::deliver(self, &msg).await;
        }
        self.doctor_request(user, id).await
    }

    /// The doctor's requests, newest first.
    pub async fn doctor_requests(
        &self,
        user: &SignedInUser,
    ) -> Result<Vec<DoctorRequest>, AccessError> {
        Self::doctor_of(user)?;
        let rows = self
            .store()
            .outgoing_requests_for_doctor(&user.username, 200)
            .await
            .map_err(internal("cannot list requests"))?;
        Ok(rows.into_iter().map(doctor_view).collect())
    }

    async fn own_outgoing(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<store::OutgoingRequest, AccessError> {
        Self::doctor_of(user)?;
        let row = self
            .store()
            .outgoing_request(id)
            .await
            .map_err(internal("cannot read the request"))?
            .ok_or(AccessError::NotFound)?;
        if row.doctor != user.username || row.doctor_upstream_id != user.upstream_id.0 {
            return Err(AccessError::NotYours);
        }
        Ok(row)
    }

    /// One of the doctor's requests. While it is open, asks server1 for
    /// its state (a missed decision message is picked up this way).
    pub async fn doctor_request(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError> {
        let mut row = self.own_outgoing(user, id).await?;
        if row.state == OutgoingState::Pending && row.expires_at > now_ms() {
            if let Ok(Some(updated)) = peer::fetch_status(self, &row).await {
                row = updated;
            }
        } else if matches!(row.state, OutgoingState::Pending | OutgoingState::Sending)
            && row.expires_at <= now_ms()
        {
            if let Ok(o) = self
                .store()
                .update_outgoing_request(
                    row.id,
                    OutgoingUpdate {
                        state: OutgoingState::Expired,
                        reason: None,
                        grant: None,
                    },
                    now_ms(),
                    Effects::none(),
                )
                .await
            {
                row = o.value;
            }
        }
        Ok(doctor_view(row))
    }

    /// The doctor's approved, unexpired request with its token.
    async fn readable(
        &self,
        user: &SignedInUser,
        request: Uuid,
    ) -> Result<(store::OutgoingRequest, ReceivedGrant, Address), AccessError> {
        let row = self.own_outgoing(user, request).await?;
        let now = now_ms();
        let grant = match (&row.state, &row.grant) {
            (OutgoingState::Approved, Some(g)) if g.expires_at > now => g.clone(),
            (OutgoingState::Approved, Some(_)) => {
                return Err(AccessError::Closed { state: "expired" })
            }
            _ => {
                return Err(AccessError::Closed {
                    state: row.state.as_str(),
                })
            }
        };
        let address =
            code::parse_address(&row.patient_address).map_err(|_| AccessError::Internal)?;
        Ok((row, grant, address))
    }

    /// Reads one part of the remote record under the request's grant: the
    /// JSON as server1 returned it.
    pub async fn remote_read(
        &self,
        user: &SignedInUser,
        request: Uuid,
        route: RouteId,
    ) -> Result<serde_json::Value, AccessError> {
        if route.rule().method != http::Method::GET {
            return Err(AccessError::BadInput(
                "this part of the record cannot be read",
            ));
        }
        let (row, grant, address) = self.readable(user, request).await?;
        let path = route.federation_path(&address.patient);
        let body = peer::data_request(self, &row, &grant, http::Method::GET, &path, None).await?;
        serde_json::from_slice(&body).map_err(|_| AccessError::Peer {
            reason: "invalid_json".to_owned(),
        })
    }

    /// Asks the remote patient a question (contributor grants): `question`
    /// is the JSON body of access.md's R28 (`upstream::NewQuestion`).
    pub async fn remote_ask(
        &self,
        user: &SignedInUser,
        request: Uuid,
        question: &upstream::NewQuestion,
    ) -> Result<(), AccessError> {
        let (row, grant, address) = self.readable(user, request).await?;
        if grant.role != Role::Contributor.as_str() {
            return Err(AccessError::BadInput(
                "this grant does not allow asking questions",
            ));
        }
        let body = serde_json::to_vec(question).map_err(|_| AccessError::Internal)?;
        let path = RouteId::AskQuestion.federation_path(&address.patient);
        peer::data_request(
            self,
            &row,
            &grant,
            http::Method::POST,
            &path,
            Some(Bytes::from(body)),
        )
        .await?;
        Ok(())
    }

    /// The WebFinger (RFC 7033) answer for `resource` (`acct:<fid>@<fqdn>`
    /// or `<fid>@<fqdn>`), or `None` when it names no patient here.
    pub async fn webfinger(
        &self,
        resource: &str,
    ) -> Result<Option<serde_json::Value>, AccessError> {
        let Ok(address) = code::parse_address(resource) else {
            return Ok(None);
        };
        if address.fqdn != self.fqdn() {
            return Ok(None);
        }
        let Some(patient) = self
            .store()
            .patient(address.patient)
            .await
            .map_err(internal("cannot read the patient"))?
        else {
            return Ok(None);
        };
        let subject = format!("acct:{address}");
        let mut links = vec![serde_json::json!({
            "rel": "https://mdgate.org/rel/federation",
            "href": format!("https://{}{}records/{}", self.fqdn(), crate::federation::PREFIX,
                address.patient.as_hyphenated()),
        })];
        let mut aliases = Vec::new();
        let mut properties = serde_json::Map::new();
        if let Some(moved) = &patient.moved_to {
            links.push(serde_json::json!({"rel": "https://mdgate.org/rel/moved-to", "href": format!("acct:{moved}")}));
            aliases.push(format!("acct:{moved}"));
            if let Some(token) =
                crate::federation::transfer::moved_token(self, &address.to_string(), moved)
            {
                properties.insert(
                    "https://mdgate.org/ns/moved-proof".to_owned(),
                    serde_json::Value::String(token),
                );
            }
        }
        Ok(Some(serde_json::json!({
            "subject": subject,
            "aliases": aliases,
            "links": links,
            "properties": properties,
        })))
    }
}

/// Compares two hashes without an early exit.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn link_error(e: LinkError) -> AccessError {
    match e {
        LinkError::NoFederationAccount => AccessError::Unreachable {
            why: "This server cannot share your record yet: it has no federation account \
                  configured. Nothing was shared. Please tell the server's administrator."
                .to_owned(),
        },
        LinkError::HasAnotherDoctor { doctor_name, .. } => AccessError::Unreachable {
            why: format!(
                "Your record is held by your doctor {doctor_name}, whose account this server \
                 cannot use for sharing. Nothing was shared. Ask {doctor_name} to enroll with \
                 the server's administrator, then approve again."
            ),
        },
        LinkError::PatientSessionExpired => AccessError::SessionEnded,
        LinkError::NotLinked { .. } => AccessError::Unreachable {
            why: "The record server did not accept the link needed to share your record. \
                  Nothing was shared; please try again."
                .to_owned(),
        },
        LinkError::FederationAccount(e) => {
            tracing::error!(error = %e, "the federation account cannot act");
            AccessError::Unreachable {
                why: "This server's federation account is not working. Nothing was shared. \
                      Please tell the server's administrator."
                    .to_owned(),
            }
        }
        LinkError::Upstream(e) => upstream_error(e),
    }
}

fn doctor_view(row: store::OutgoingRequest) -> DoctorRequest {
    let now = now_ms();
    let role = row.role.parse().unwrap_or(Role::Viewer);
    let granted_role = row.grant.as_ref().and_then(|g| g.role.parse().ok());
    let grant_expires_at = row.grant.as_ref().map(|g| g.expires_at);
    let readable =
        row.state == OutgoingState::Approved && grant_expires_at.is_some_and(|e| e > now);
    DoctorRequest {
        id: row.id,
        patient_address: row.patient_address,
        server: row.server_fqdn,
        role,
        duration: Duration::from_millis(u64::try_from(row.duration_ms).unwrap_or(0)),
        code: row.code,
        state: row.state.as_str(),
        reason: row.reason,
        created_at: row.created_at,
        expires_at: row.expires_at,
        granted_role,
        grant_expires_at,
        readable,
    }
}
