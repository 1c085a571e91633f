//! The transfer flow (docs/protocol.md § Transfer, `seed/flows.md`
//! § "Patient transfer"): a doctor on the new home asks, the patient
//! approves on the old home with the doctor's code and a key their
//! browser made, the old home exports the whole record, seals it with that
//! key and streams it over; the patient hands the key and the signed
//! approval to the new home, which checks, imports and confirms; the old
//! home leaves a signed redirect.
//!
//! Every step is a state of [`crate::transfer::machine`], written to the
//! store before anything that depends on it is acknowledged, with its
//! messages in the same transaction (the outbox) or re-derived from the
//! state on restart (the worker, [`run`]), so that a crash of either
//! server at any step resumes without loss or repetition.
//!
//! Files live in the spool directory ([`spool_dir`]), named by transfer
//! id: `<id>.sealed` (the ciphertext, on both sides), `<id>.bundle` (the
//! new home's checked plaintext, kept to show the doctor) and
//! `<id>.cursor` (how far the import got). A `.part` suffix marks a file
//! being written; it is renamed only once complete and flushed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::access::{self, audit, code, now_ms, Access, AccessError};
use crate::store::{self, Effects, StoreError, Transfer, TransferSide};
use crate::transfer::machine::{self, source, target};
use crate::upstream::{self, SignedInUser};

mod export;
mod import;
pub mod peer;
pub mod wire;

pub use import::{hand_over, HandOver, HandOverError};

/// How many transfers the worker looks at per round.
const BATCH: u32 = 50;
/// Longest wait between rounds when nothing kicks the worker.
const IDLE: Duration = Duration::from_secs(2);
/// Lifetime of the approval the patient carries to the new home.
const APPROVAL_TTL: Duration = Duration::from_secs(7 * 86_400);

/// The spool directory for a store: `transfers/` beside the database
/// file.
pub fn spool_dir(store: &crate::config::Store) -> PathBuf {
    match store {
        crate::config::Store::Sqlite { path } => path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join("transfers"),
    }
}

/// The working fields of a transfer (`store::Transfer::data`). Which are
/// set depends on the side and the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferData {
    /// The patient's address at the old home.
    pub patient_address: String,
    /// Target: the code to show the patient, while the request is open.
    pub code: Option<String>,
    /// Target: the requesting doctor's upstream id.
    pub doctor_upstream_id: Option<i64>,
    /// When the open request expires (ms).
    pub expires_at: i64,
    /// Source: the patient's key (base64url) from approval until export.
    pub key: Option<String>,
    /// Hex fingerprint of the patient's key.
    pub key_fingerprint: Option<String>,
    /// Source: the approval the patient carries (a compact JWS).
    pub approval: Option<String>,
    pub cipher_len: Option<u64>,
    /// Hex SHA-256 of the whole ciphertext.
    pub cipher_sha256: Option<String>,
    /// Target: ciphertext bytes stored so far.
    pub received: u64,
    /// Hex SHA-256 of the bundle (the manifest's).
    pub bundle_sha256: Option<String>,
    /// Records per part, from the manifest.
    pub counts: Vec<(String, u64)>,
    /// Target: the account the patient created here.
    pub username: Option<String>,
    pub upstream_id: Option<i64>,
    /// The patient's address at the new home.
    pub new_address: Option<String>,
    pub imported: wire::Imported,
    /// Why the transfer failed, or the last retryable error (no secrets).
    pub reason: Option<String>,
    /// Source: delivery or export attempts so far, and the next one (ms).
    pub attempts: u32,
    pub next_attempt_at: i64,
}

impl TransferData {
    pub fn of(t: &Transfer) -> TransferData {
        serde_json::from_value(t.data.clone()).unwrap_or_default()
    }

    fn value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A transfer as the pages show it.
#[derive(Debug, Clone)]
pub struct TransferView {
    pub transfer: Transfer,
    pub data: TransferData,
}

impl TransferView {
    fn new(transfer: Transfer) -> TransferView {
        let data = TransferData::of(&transfer);
        TransferView { transfer, data }
    }

    pub fn state(&self) -> &str {
        &self.transfer.state
    }
}

/// Moves `t` to `to` with `data` and `effects`, if the machine allows it.
pub(crate) async fn advance(
    access: &Access,
    t: &Transfer,
    to: &str,
    data: &TransferData,
    patient: Option<Uuid>,
    effects: Effects,
) -> Result<Transfer, StoreError> {
    if t.state != to && !machine::can_move(t.side, &t.state, to) {
        return Err(StoreError::conflict(
            store::ConflictKind::State,
            format!("transfer cannot go from {} to {to}", t.state),
        ));
    }
    let mut next = t.clone();
    next.state = to.to_owned();
    next.data = data.value();
    next.patient = patient.or(t.patient);
    next.updated_at = now_ms();
    let stored = access.store().update_transfer(next, effects).await?;
    access.kick();
    access.kick_transfers();
    Ok(stored)
}

/// Writes `data` without changing the state (progress, retry times).
pub(crate) async fn save(
    access: &Access,
    t: &Transfer,
    data: &TransferData,
) -> Result<Transfer, StoreError> {
    let mut next = t.clone();
    next.data = data.value();
    next.updated_at = now_ms();
    access.store().update_transfer(next, Effects::none()).await
}

pub(crate) fn path(access: &Access, id: Uuid, suffix: &str) -> PathBuf {
    access
        .parts()
        .transfer_dir
        .join(format!("{}.{suffix}", id.as_hyphenated()))
}

/// Creates the spool directory (owner-only) if missing.
pub(crate) async fn ensure_spool(access: &Access) -> std::io::Result<()> {
    let dir = &access.parts().transfer_dir;
    tokio::fs::create_dir_all(dir).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- doctor

/// The doctor on the new home starts a transfer from the patient's QR
/// payload; the answer carries the code to show the patient.
pub async fn start(
    access: &Access,
    user: &SignedInUser,
    payload: &str,
) -> Result<TransferView, AccessError> {
    Access::doctor_of(user)?;
    let (address, invitation) = code::parse_payload(payload)
        .map_err(|_| AccessError::BadInput("the QR code is not a valid mdgate patient code"))?;
    if address.fqdn == access.fqdn() {
        return Err(AccessError::BadInput(
            "this patient is already on this server",
        ));
    }
    let doctor = access.doctor_address(user);
    if user.username.is_empty() || doctor.len() > 320 {
        return Err(AccessError::BadInput(
            "the username is too long for a federation address",
        ));
    }
    let limits = &access.parts().limits;
    let id = Uuid::new_v4();
    let code = code::new_code(rand::Rng::gen::<u64>(&mut rand::thread_rng()));
    let hash = code::code_hash(id, &code).ok_or(AccessError::Internal)?;
    let now = now_ms();
    let expires_at = now + access::duration_ms(limits.code_ttl);
    let msg = access::wire::AccessRequestMsg {
        id,
        kind: "transfer".to_owned(),
        patient: address.patient,
        invitation,
        doctor: doctor.clone(),
        // A transfer grants no reading: the role and duration only keep
        // the request's shape; the duration is the code's life.
        role: crate::policy::Role::Viewer.as_str().to_owned(),
        duration: i64::try_from(limits.code_ttl.as_secs().max(1)).unwrap_or(600),
        code_hash: base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, hash),
        expires_at: expires_at / 1000,
    };
    let data = TransferData {
        patient_address: address.to_string(),
        code: Some(code),
        doctor_upstream_id: Some(user.upstream_id.0),
        expires_at,
        ..TransferData::default()
    };
    let row = Transfer {
        id,
        side: TransferSide::Target,
        state: target::REQUESTED.to_owned(),
        peer_fqdn: address.fqdn.clone(),
        patient: None,
        doctor: doctor.clone(),
        data: data.value(),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let key = format!("access-request:{id}");
    let effects = Effects::none()
        .with_audit(audit(
            "transfer.requested",
            &doctor,
            None,
            serde_json::json!({"transfer": id, "patient": address.to_string()}),
        ))
        .with_outbox(access.peer_message_after(
            &address.fqdn,
            access::wire::ACCESS_REQUESTS,
            key.clone(),
            serde_json::to_value(msg).unwrap_or_default(),
            5_000,
        ));
    access
        .store()
        .insert_transfer(row, effects)
        .await
        .map_err(access::internal("cannot store the transfer"))?;
    if let Ok(Some(msg)) = access.store().outbox_message(&key).await {
        super::outbox::deliver(access, &msg).await;
    }
    doctor_transfer(access, user, id).await
}

/// The doctor's transfers on this server (the new home), newest first.
pub async fn doctor_transfers(
    access: &Access,
    user: &SignedInUser,
) -> Result<Vec<TransferView>, AccessError> {
    Access::doctor_of(user)?;
    let doctor = access.doctor_address(user);
    let rows = access
        .store()
        .transfers(&[], store::MAX_PAGE)
        .await
        .map_err(access::internal("cannot list transfers"))?;
    Ok(rows
        .into_iter()
        .filter(|t| t.side == TransferSide::Target && t.doctor == doctor)
        .map(TransferView::new)
        .collect())
}

/// One of the doctor's transfers.
pub async fn doctor_transfer(
    access: &Access,
    user: &SignedInUser,
    id: Uuid,
) -> Result<TransferView, AccessError> {
    Access::doctor_of(user)?;
    let t = access
        .store()
        .transfer(id)
        .await
        .map_err(access::internal("cannot read the transfer"))?
        .ok_or(AccessError::NotFound)?;
    if t.side != TransferSide::Target || t.doctor != access.doctor_address(user) {
        return Err(AccessError::NotYours);
    }
    Ok(TransferView::new(t))
}

/// The kept bundle of an imported transfer, for its doctor.
pub async fn doctor_bundle(
    access: &Access,
    user: &SignedInUser,
    id: Uuid,
) -> Result<PathBuf, AccessError> {
    let view = doctor_transfer(access, user, id).await?;
    if !matches!(
        view.state(),
        target::IMPORTING | target::IMPORTED | target::CONFIRMED
    ) {
        return Err(AccessError::Closed {
            state: "not imported yet",
        });
    }
    Ok(path(access, id, "bundle"))
}

// --------------------------------------------------------------- patient

/// The patient approves a pending transfer request with the doctor's code
/// and the key their browser made (base64url of 32 bytes).
pub async fn approve(
    access: &Access,
    user: &SignedInUser,
    request: Uuid,
    typed_code: &str,
    key: &str,
) -> Result<TransferView, AccessError> {
    let patient = access.patient_of(user).await?;
    let req = access.own_pending(&patient, request).await?;
    if req.kind != store::RequestKind::Transfer {
        return Err(AccessError::BadInput("this request is not a transfer"));
    }
    let key = crate::transfer::seal::SealKey::from_b64url(key).map_err(|_| {
        AccessError::BadInput("your browser did not make an encryption key; enable JavaScript")
    })?;
    let good = code::code_hash(req.id, typed_code)
        .is_some_and(|h| access::constant_time_eq(&h, &req.code_hash));
    if !good {
        return Err(access.wrong_code(&req).await);
    }
    access.ensure_reachable(user, &patient).await?;

    let fid = patient.federation_id;
    let now = SystemTime::now();
    let iat = crate::token::unix_seconds(now);
    let fingerprint = hex::encode(key.fingerprint());
    let claims = wire::ApprovalClaims {
        iss: access.fqdn().to_owned(),
        sub: fid,
        aud: req.server_fqdn.clone(),
        transfer: req.id,
        key: fingerprint.clone(),
        doctor: req.doctor.clone(),
        iat,
        exp: iat + i64::try_from(APPROVAL_TTL.as_secs()).unwrap_or(0),
    };
    let approval = crate::token::jws::sign(&access.parts().signing, wire::APPROVAL_TYP, &claims)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign a transfer approval");
            AccessError::Internal
        })?;
    let data = TransferData {
        patient_address: access.address(fid),
        key: Some(key.to_b64url()),
        key_fingerprint: Some(fingerprint),
        approval: Some(approval),
        ..TransferData::default()
    };
    let row = Transfer {
        id: req.id,
        side: TransferSide::Source,
        state: source::APPROVED.to_owned(),
        peer_fqdn: req.server_fqdn.clone(),
        patient: Some(fid),
        doctor: req.doctor.clone(),
        data: data.value(),
        version: 1,
        created_at: access::millis(now),
        updated_at: access::millis(now),
    };
    let decision = access::wire::DecisionMsg {
        request: req.id,
        state: "approved".to_owned(),
        token: None,
    };
    let mut effects = Effects::none()
        .with_audit(audit(
            "transfer.approved",
            &access.address(fid),
            Some(fid),
            serde_json::json!({"transfer": req.id, "doctor": req.doctor, "server": req.server_fqdn}),
        ))
        .with_outbox(access.peer_message(
            &req.server_fqdn,
            access::wire::DECISIONS,
            format!("decision:{}", req.id),
            serde_json::to_value(decision).unwrap_or_default(),
        ));
    if let Some(hook) = access.webhook(
        "transfer.approved",
        serde_json::json!({"patient": access.address(fid), "doctor": req.doctor,
            "server": req.server_fqdn, "request": req.id}),
    ) {
        effects = effects.with_outbox(hook);
    }
    let stored = access
        .store()
        .approve_transfer(row, access::millis(now), effects)
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => AccessError::Closed { state: "decided" },
            e => access::internal("cannot store the approval")(e),
        })?;
    access.kick();
    access.kick_transfers();
    Ok(TransferView::new(stored))
}

/// The patient's transfers away from this server, newest first.
pub async fn patient_transfers(
    access: &Access,
    user: &SignedInUser,
) -> Result<Vec<TransferView>, AccessError> {
    let patient = access.patient_of(user).await?;
    let rows = access
        .store()
        .transfers_for_patient(patient.federation_id)
        .await
        .map_err(access::internal("cannot list transfers"))?;
    Ok(rows
        .into_iter()
        .filter(|t| t.side == TransferSide::Source)
        .map(TransferView::new)
        .collect())
}

/// The new home's hand-over page for transfer `id`: what it needs to
/// show (no sign-in: the patient has no account there yet).
pub async fn handover_view(access: &Access, id: Uuid) -> Result<TransferView, AccessError> {
    let t = access
        .store()
        .transfer(id)
        .await
        .map_err(access::internal("cannot read the transfer"))?
        .filter(|t| t.side == TransferSide::Target)
        .ok_or(AccessError::NotFound)?;
    Ok(TransferView::new(t))
}

/// Whether the import of `id` runs in this process now.
pub fn import_running(access: &Access, id: Uuid) -> bool {
    access.is_importing(id)
}

/// The signed redirect for an old address, for WebFinger and refusals.
pub fn moved_token(access: &Access, old_address: &str, moved_to: &str) -> Option<String> {
    let iat = crate::token::unix_seconds(SystemTime::now());
    let claims = wire::MovedClaims {
        iss: access.fqdn().to_owned(),
        sub: old_address.to_owned(),
        moved_to: moved_to.to_owned(),
        iat,
        exp: iat + 86_400,
    };
    crate::token::jws::sign(&access.parts().signing, wire::MOVED_TYP, &claims).ok()
}

// ---------------------------------------------------------------- worker

/// Drives the old home's side: exports approved transfers and delivers
/// exported ones, with backoff, until `shutdown` turns true. Everything
/// it does is derived from the stored state, so a restart resumes.
pub async fn run(access: Access, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match access
            .store()
            .transfers(&[source::APPROVED, source::EXPORTED], BATCH)
            .await
        {
            Ok(rows) => {
                let now = now_ms();
                for t in rows {
                    if t.side != TransferSide::Source {
                        continue;
                    }
                    if TransferData::of(&t).next_attempt_at > now {
                        continue;
                    }
                    step(&access, t).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read transfers"),
        }
        tokio::select! {
            _ = access.transfers_kicked(IDLE) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One step of an old-home transfer; failures are retried later.
async fn step(access: &Access, t: Transfer) {
    let result = match t.state.as_str() {
        source::APPROVED => export::export(access, &t).await,
        source::EXPORTED => peer::deliver(access, &t).await,
        _ => Ok(()),
    };
    if let Err(why) = result {
        let mut data = TransferData::of(&t);
        data.attempts += 1;
        let delay = backoff(data.attempts);
        data.next_attempt_at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(0);
        data.reason = Some(why.clone());
        tracing::info!(transfer = %t.id, state = %t.state, attempts = data.attempts, error = %why, "transfer step failed; will retry");
        // A stale version means another step moved it: fine.
        if let Ok(current) = access.store().transfer(t.id).await {
            if let Some(current) = current.filter(|c| c.version == t.version) {
                let _ = save(access, &current, &data).await;
            }
        }
    }
}

/// 1 s doubling to 10 min.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(10)).min(Duration::from_secs(600))
}

/// The old home refused our transfer request for good (the outbox saw a
/// final 4xx): marks the target transfer `failed` with `reason`.
pub(crate) async fn request_refused(access: &Access, id: Uuid, reason: &str) {
    let Ok(Some(t)) = access.store().transfer(id).await else {
        return;
    };
    if t.side != TransferSide::Target || t.state != target::REQUESTED {
        return;
    }
    let mut data = TransferData::of(&t);
    data.reason = Some(reason.to_owned());
    data.code = None;
    let effects = Effects::none().with_audit(audit(
        "transfer.refused",
        &t.peer_fqdn,
        None,
        serde_json::json!({"transfer": id, "reason": reason}),
    ));
    let _ = advance(access, &t, target::FAILED, &data, None, effects).await;
}

/// The upstream account this server holds that reaches the patient, for
/// the export.
pub(crate) async fn identity_for(
    access: &Access,
    upstream_id: i64,
) -> Option<&upstream::UpstreamIdentity> {
    access
        .parts()
        .accounts
        .identity_for_patient(upstream::UpstreamId(upstream_id))
        .await
}

/// One line of `mdgate transfers list`: where a transfer stands and what
/// the admin is left to do upstream.
pub async fn admin_list(
    store: &dyn crate::store::Store,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut out = Vec::new();
    for t in store.transfers(&[], store::MAX_PAGE).await? {
        let data = TransferData::of(&t);
        let upstream_id = match (t.side, t.patient) {
            (TransferSide::Source, Some(fid)) => store.patient(fid).await?.map(|p| p.upstream_id),
            _ => data.upstream_id,
        };
        let todo = match (t.side, t.state.as_str()) {
            (TransferSide::Source, source::MOVED) => format!(
                "access.md has no delete route: the old record (patient id {}) is still \
                 upstream; delete it or keep it under your retention rules. Federation \
                 requests for it are refused with the redirect.",
                upstream_id.map_or("?".to_owned(), |i| i.to_string())
            ),
            (TransferSide::Source, source::DELIVERED) => {
                "waiting for the patient to hand over the key at the new home".to_owned()
            }
            (TransferSide::Target, target::RECEIVED) => {
                "waiting for the patient to hand over the key here".to_owned()
            }
            (TransferSide::Target, target::IMPORTING) => {
                "import interrupted or running; the patient resumes it by signing in on the \
                 hand-over page"
                    .to_owned()
            }
            _ => String::new(),
        };
        out.push(serde_json::json!({
            "id": t.id,
            "side": t.side.as_str(),
            "state": t.state,
            "peer": t.peer_fqdn,
            "doctor": t.doctor,
            "old_address": data.patient_address,
            "new_address": data.new_address,
            "upstream_patient_id": upstream_id,
            "imported": data.imported,
            "reason": data.reason,
            "updated_at": t.updated_at,
            "todo": todo,
        }));
    }
    Ok(out)
}
