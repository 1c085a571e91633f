//! The new home's hand-over and import.
//!
//! The patient brings the key and the approval the old home signed, and
//! chooses a username and password for their account here. In order, and
//! nothing written upstream until every check passed:
//!
//! 1. the approval: signed by the old home's DNS-published key
//!    (`approval_signature`), issued by the server this transfer came
//!    from (`approval_issuer`), for this server (`approval_audience`) and
//!    this transfer (`approval_transfer`), for this very key
//!    (`approval_key`), unexpired (`approval_expired`);
//! 2. the ciphertext opens with the key (`wrong_key`, `ciphertext_damaged`,
//!    `ciphertext_truncated`) into a bundle whose manifest is signed by the
//!    old home and matches every part (`manifest_*`, `bundle_format`); the
//!    checked plaintext is kept as `<id>.bundle`;
//! 3. the account is created (R5; `username_taken`) and signed in, and the
//!    transfer becomes `importing`: from here it can only finish;
//! 4. profile, symptoms and vitals are written as the patient (the only
//!    clinical writes access.md has), each counted in `<id>.cursor` before
//!    the next, so an interrupted import resumes after the last write
//!    (the patient signs in again: the password is never stored);
//! 5. `imported`, with the confirmation to the old home in the same
//!    transaction.
//!
//! Answers and questions have no upstream write a patient can make; they,
//! and the original times of everything, stay in the kept bundle, which
//! the doctor's page shows.

use std::io::SeekFrom;
use std::time::SystemTime;

use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use super::wire::{self, ApprovalClaims, ConfirmationMsg, Imported};
use super::{advance, path, TransferData};
use crate::federation::access::{audit, Access};
use crate::store::{Effects, Transfer};
use crate::transfer::bundle::{BundleReader, Item, Part};
use crate::transfer::machine::target;
use crate::transfer::seal::{Opener, SealError, SealKey};
use crate::upstream::{
    ops, MedicalProfile, NewPatientAccount, NewSymptom, PatientSession, ProfileUpdate, Secret,
    SignUp, UpstreamError, Vitals,
};

/// Longest line of a bundle.
const MAX_LINE: usize = 1024 * 1024;
const READ: usize = 256 * 1024;

/// What the patient submits on the hand-over page.
pub struct HandOver {
    pub key: String,
    pub approval: String,
    pub username: String,
    pub password: Secret,
}

impl std::fmt::Debug for HandOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOver")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a hand-over was refused. Each has its own machine-readable
/// [`reason`](HandOverError::reason) and a sentence for the page.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    #[error("{reason}: {detail}")]
    Refused {
        reason: &'static str,
        detail: String,
    },
    #[error("not found")]
    NotFound,
    #[error("the transfer is {0}")]
    State(String),
    #[error("access.md: {0}")]
    Upstream(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl HandOverError {
    fn refused(reason: &'static str, detail: impl Into<String>) -> Self {
        HandOverError::Refused {
            reason,
            detail: detail.into(),
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            HandOverError::Refused { reason, .. } => reason,
            HandOverError::NotFound => "unknown_transfer",
            HandOverError::State(_) => "transfer_state",
            HandOverError::Upstream(_) => "upstream_unavailable",
            HandOverError::Internal(_) => "internal",
        }
    }

    /// A sentence for the patient.
    pub fn message(&self) -> String {
        match self {
            HandOverError::Refused { reason, .. } => match *reason {
                "username_taken" => "That username is taken on this server. Please choose \
                    another; nothing was changed."
                    .to_owned(),
                "wrong_credentials" => "That username and password do not match the account \
                    you created here. Please try again."
                    .to_owned(),
                "wrong_key" | "approval_key" => "The key does not fit this transfer. Use the \
                    link from your old server's page on the device where you approved."
                    .to_owned(),
                "bad_input" => "Please fill in every field.".to_owned(),
                r => format!(
                    "This transfer cannot be accepted ({r}). Nothing was imported. Ask your \
                     old server's page for a new link, or start a new transfer."
                ),
            },
            HandOverError::NotFound => "There is no such transfer on this server.".to_owned(),
            HandOverError::State(s) => format!("This transfer is {s}."),
            HandOverError::Upstream(_) => "The record server is not answering right now. \
                Nothing more was changed; please try again in a minute."
                .to_owned(),
            HandOverError::Internal(_) => {
                "Something went wrong on this server. Please try again.".to_owned()
            }
        }
    }
}

fn internal(e: impl std::fmt::Display) -> HandOverError {
    HandOverError::Internal(e.to_string())
}

/// Checks the hand-over of transfer `id` and, when everything holds,
/// creates the account and starts the import in the background. Returns
/// once the import is running (or done).
pub async fn hand_over(
    access: &Access,
    id: Uuid,
    form: HandOver,
) -> Result<Transfer, HandOverError> {
    let t = access
        .store()
        .transfer(id)
        .await
        .map_err(internal)?
        .filter(|t| t.side == crate::store::TransferSide::Target)
        .ok_or(HandOverError::NotFound)?;
    if form.username.trim().is_empty() || form.password.expose().is_empty() {
        return Err(HandOverError::refused(
            "bad_input",
            "empty username or password",
        ));
    }
    match t.state.as_str() {
        target::RECEIVED => first_hand_over(access, t, form).await,
        target::IMPORTING => resume(access, t, form).await,
        target::IMPORTED | target::CONFIRMED => Err(HandOverError::refused(
            "already_imported",
            "this approval was already used",
        )),
        s => Err(HandOverError::State(s.to_owned())),
    }
}

async fn first_hand_over(
    access: &Access,
    t: Transfer,
    form: HandOver,
) -> Result<Transfer, HandOverError> {
    let key = SealKey::from_b64url(&form.key)
        .map_err(|_| HandOverError::refused("wrong_key", "the key is not 32 bytes base64url"))?;
    check_approval(access, &t, &form.approval, &key).await?;
    let mut data = TransferData::of(&t);
    let (manifest_sha, patient) = open_and_check(access, &t, &key).await?;

    // The account: the names from the record.
    let first = patient.get("firstName").and_then(|v| v.as_str());
    let last = patient.get("lastName").and_then(|v| v.as_str());
    let phone = patient.get("telephoneNumber").and_then(|v| v.as_str());
    let upstream = &access.parts().upstream;
    let op = ops::sign_up(&NewPatientAccount {
        username: form.username.trim(),
        password: form.password.expose(),
        telephone_number: phone,
        first_name: first,
        last_name: last,
    })
    .map_err(|e| HandOverError::refused("bad_input", e.to_string()))?;
    let reply = upstream
        .send(op.request(), None)
        .await
        .map_err(|e| HandOverError::Upstream(e.to_string()))?;
    match op
        .decode(&reply)
        .map_err(|e| HandOverError::Upstream(e.to_string()))?
    {
        SignUp::Created => {}
        SignUp::UsernameTaken => {
            return Err(HandOverError::refused(
                "username_taken",
                "the username exists upstream",
            ))
        }
    }
    let login = upstream
        .login(form.username.trim(), &form.password)
        .await
        .map_err(|e| HandOverError::Upstream(e.to_string()))?;
    let upstream_id = login.user.id;
    let patient_row = access
        .ensure_patient(upstream_id.0)
        .await
        .map_err(internal)?;
    data.username = Some(form.username.trim().to_owned());
    data.upstream_id = Some(upstream_id.0);
    data.new_address = Some(access.address(patient_row.federation_id));
    data.bundle_sha256 = Some(manifest_sha);
    data.key_fingerprint = Some(hex::encode(key.fingerprint()));
    let effects = Effects::none().with_audit(audit(
        "transfer.handed_over",
        data.new_address.as_deref().unwrap_or("-"),
        Some(patient_row.federation_id),
        serde_json::json!({"transfer": t.id, "old_address": data.patient_address}),
    ));
    let t = advance(
        access,
        &t,
        target::IMPORTING,
        &data,
        Some(patient_row.federation_id),
        effects,
    )
    .await
    .map_err(internal)?;
    let session = PatientSession::new(upstream.clone(), upstream_id, login.session);
    spawn_import(access, t.clone(), session);
    Ok(t)
}

/// An import interrupted (restart): the patient signs in again.
async fn resume(access: &Access, t: Transfer, form: HandOver) -> Result<Transfer, HandOverError> {
    let data = TransferData::of(&t);
    if access.is_importing(t.id) {
        return Ok(t);
    }
    if data.username.as_deref() != Some(form.username.trim()) {
        return Err(HandOverError::refused(
            "wrong_credentials",
            "not the account created for this transfer",
        ));
    }
    let upstream = &access.parts().upstream;
    let login = match upstream.login(form.username.trim(), &form.password).await {
        Ok(l) => l,
        Err(UpstreamError::CredentialsRejected { .. }) => {
            return Err(HandOverError::refused(
                "wrong_credentials",
                "access.md refused the login",
            ))
        }
        Err(e) => return Err(HandOverError::Upstream(e.to_string())),
    };
    if Some(login.user.id.0) != data.upstream_id {
        return Err(HandOverError::refused(
            "wrong_credentials",
            "another account",
        ));
    }
    let session = PatientSession::new(upstream.clone(), login.user.id, login.session);
    spawn_import(access, t.clone(), session);
    Ok(t)
}

fn spawn_import(access: &Access, t: Transfer, session: PatientSession) {
    if !access.start_import(t.id) {
        return;
    }
    let access = access.clone();
    tokio::spawn(async move {
        let id = t.id;
        match import(&access, &t, &session).await {
            Ok(counts) => tracing::info!(transfer = %id, ?counts, "record imported"),
            Err(e) => {
                tracing::warn!(transfer = %id, error = %e, "import interrupted; the patient can resume it")
            }
        }
        access.end_import(id);
    });
}

/// The approval, checked as the module docs say.
async fn check_approval(
    access: &Access,
    t: &Transfer,
    token: &str,
    key: &SealKey,
) -> Result<ApprovalClaims, HandOverError> {
    use crate::token::jws;
    let expect = jws::Expect::typ(wire::APPROVAL_TYP, access.parts().skew);
    let unverified = jws::parse(token.trim(), &expect)
        .map_err(|e| HandOverError::refused("approval_malformed", e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    let iss: Iss = unverified
        .peek_unverified()
        .map_err(|e| HandOverError::refused("approval_malformed", e.to_string()))?;
    if iss.iss != t.peer_fqdn {
        return Err(HandOverError::refused(
            "approval_issuer",
            format!(
                "issued by {}, the transfer came from {}",
                iss.iss, t.peer_fqdn
            ),
        ));
    }
    let vk = peer_key(access, &t.peer_fqdn, unverified.kid())
        .await
        .map_err(|why| HandOverError::refused("approval_signature", why))?;
    let verified = unverified
        .verify::<ApprovalClaims>(&vk, SystemTime::now())
        .map_err(|e| match e {
            jws::JwtError::Expired { .. } => {
                HandOverError::refused("approval_expired", e.to_string())
            }
            jws::JwtError::BadSignature { .. } => {
                HandOverError::refused("approval_signature", e.to_string())
            }
            e => HandOverError::refused("approval_malformed", e.to_string()),
        })?;
    let claims = verified.claims;
    if claims.aud != access.fqdn() {
        return Err(HandOverError::refused(
            "approval_audience",
            format!("for {}", claims.aud),
        ));
    }
    if claims.transfer != t.id {
        return Err(HandOverError::refused(
            "approval_transfer",
            "the approval is for another transfer",
        ));
    }
    if claims.key != hex::encode(key.fingerprint()) {
        return Err(HandOverError::refused(
            "approval_key",
            "the approval names another key",
        ));
    }
    let data = TransferData::of(t);
    if format!("{}@{}", claims.sub.as_hyphenated(), claims.iss) != data.patient_address {
        return Err(HandOverError::refused(
            "approval_transfer",
            "the approval is for another patient",
        ));
    }
    Ok(claims)
}

/// A peer's signing key `kid`, from its DNS zone.
pub(crate) async fn peer_key(
    access: &Access,
    fqdn: &str,
    kid: &str,
) -> Result<crate::token::VerifyingKey, String> {
    let record = access
        .parts()
        .resolver
        .signing_key(fqdn, kid)
        .await
        .map_err(|e| format!("no DNS key {kid} for {fqdn}: {}", e.as_str()))?;
    let crate::dns::record::KeyMaterial::Spki(der) = &record.material else {
        return Err(format!("the DNS key {kid} of {fqdn} is not a public key"));
    };
    crate::token::VerifyingKey::from_spki_der(der).map_err(|e| e.to_string())
}

fn seal_refusal(e: SealError) -> HandOverError {
    let reason = match &e {
        // The approval already matched the key's fingerprint: a first
        // chunk that does not open is damage, not a wrong key.
        SealError::WrongKey => "ciphertext_damaged",
        SealError::Damaged { .. } | SealError::Header | SealError::TrailingData => {
            "ciphertext_damaged"
        }
        SealError::Truncated => "ciphertext_truncated",
        SealError::Io(_) => return internal(e),
        _ => "ciphertext_damaged",
    };
    HandOverError::refused(reason, e.to_string())
}

/// Opens `<id>.sealed` with `key`, checks the bundle and its manifest, and
/// keeps the plaintext as `<id>.bundle`. Returns the manifest's hash and
/// the patient record (for the account's names).
async fn open_and_check(
    access: &Access,
    t: &Transfer,
    key: &SealKey,
) -> Result<(String, serde_json::Value), HandOverError> {
    let sealed = path(access, t.id, "sealed");
    let part = path(access, t.id, "bundle.part");
    let mut input = tokio::fs::File::open(&sealed).await.map_err(internal)?;
    let mut output = tokio::fs::File::create(&part).await.map_err(internal)?;
    let mut opener = Opener::new(key);
    let mut reader = BundleReader::new(MAX_LINE);
    let mut buf = vec![0u8; READ];
    let mut plain = Vec::with_capacity(READ + 64 * 1024);
    let mut patient = serde_json::Value::Null;
    let bundle_error =
        |e: crate::transfer::bundle::BundleError| HandOverError::refused(e.reason(), e.to_string());
    loop {
        let n = input.read(&mut buf).await.map_err(internal)?;
        if n == 0 {
            break;
        }
        plain.clear();
        opener.push(&buf[..n], &mut plain).map_err(seal_refusal)?;
        reader
            .feed(&plain, &mut |item| {
                if let Item::Record {
                    part: Part::Patient,
                    data,
                } = item
                {
                    patient = serde_json::from_str(data.get()).unwrap_or_default();
                }
                Ok(())
            })
            .map_err(bundle_error)?;
        output.write_all(&plain).await.map_err(internal)?;
    }
    plain.clear();
    opener.finish(&mut plain).map_err(seal_refusal)?;
    reader.feed(&plain, &mut |_| Ok(())).map_err(bundle_error)?;
    output.write_all(&plain).await.map_err(internal)?;
    let read = reader.finish().map_err(bundle_error)?;
    let (iss, kid) = read.signer().map_err(bundle_error)?;
    if iss != t.peer_fqdn {
        return Err(HandOverError::refused(
            "manifest_issuer",
            format!("signed by {iss}"),
        ));
    }
    let vk = peer_key(access, &iss, &kid)
        .await
        .map_err(|why| HandOverError::refused("manifest_signature", why))?;
    let manifest = read
        .verify(&vk, &t.peer_fqdn, t.id, SystemTime::now())
        .map_err(bundle_error)?;
    let data = TransferData::of(t);
    if manifest.source != data.patient_address {
        return Err(HandOverError::refused(
            "manifest_transfer",
            "the bundle is another patient's",
        ));
    }
    output.sync_all().await.map_err(internal)?;
    drop(output);
    tokio::fs::rename(&part, path(access, t.id, "bundle"))
        .await
        .map_err(internal)?;
    Ok((manifest.sha256, patient))
}

/// How far an import got: records written per part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    profile: u64,
    symptoms: u64,
    vitals: u64,
}

impl Cursor {
    fn bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.profile.to_le_bytes());
        out[8..16].copy_from_slice(&self.symptoms.to_le_bytes());
        out[16..].copy_from_slice(&self.vitals.to_le_bytes());
        out
    }

    fn parse(b: &[u8]) -> Cursor {
        let at = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        Cursor {
            profile: at(0),
            symptoms: at(8),
            vitals: at(16),
        }
    }
}

/// One write to do.
enum Write {
    Profile(ProfileUpdate),
    Symptom(NewSymptom),
    Vitals(Vitals),
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
}

/// Writes the kept bundle's profile, symptoms and vitals as the patient,
/// from the cursor on; records `imported` with the confirmation.
async fn import(
    access: &Access,
    t: &Transfer,
    session: &PatientSession,
) -> Result<Imported, String> {
    let cursor_path = path(access, t.id, "cursor");
    let mut cursor_file = tokio::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&cursor_path)
        .await
        .map_err(|e| format!("cursor: {e}"))?;
    let mut raw = Vec::new();
    cursor_file
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("cursor: {e}"))?;
    let mut done = Cursor::parse(&raw);
    let mut seen = Cursor::default();

    let mut input = tokio::fs::File::open(path(access, t.id, "bundle"))
        .await
        .map_err(|e| format!("bundle: {e}"))?;
    let mut reader = BundleReader::new(MAX_LINE);
    let mut buf = vec![0u8; READ];
    let mut pending: Vec<Write> = Vec::new();
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| format!("bundle: {e}"))?;
        if n == 0 {
            break;
        }
        let mut bad = None;
        reader
            .feed(&buf[..n], &mut |item| {
                let Item::Record { part, data } = item else {
                    return Ok(());
                };
                let data: serde_json::Value = match serde_json::from_str(data.get()) {
                    Ok(v) => v,
                    Err(e) => {
                        bad = Some(format!("{part}: {e}"));
                        return Ok(());
                    }
                };
                match part {
                    Part::Profile => {
                        seen.profile += 1;
                        if seen.profile > done.profile {
                            match serde_json::from_value::<MedicalProfile>(data) {
                                Ok(p) => pending.push(Write::Profile(ProfileUpdate::from(&p))),
                                Err(e) => bad = Some(format!("profile: {e}")),
                            }
                        }
                    }
                    Part::Symptom => {
                        seen.symptoms += 1;
                        if seen.symptoms > done.symptoms {
                            let code = data
                                .get("symptomCode")
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                                .to_owned();
                            let note = data.get("note").and_then(|v| v.as_str()).map(str::to_owned);
                            pending.push(Write::Symptom(NewSymptom {
                                symptom_code: code,
                                note,
                            }));
                        }
                    }
                    Part::Vitals => {
                        seen.vitals += 1;
                        if seen.vitals > done.vitals {
                            pending.push(Write::Vitals(Vitals {
                                heart_beats_per_minute: number(&data, "heartBeatsPerMinute"),
                                systolic_pressure: number(&data, "systolicPressure"),
                                diastolic_pressure: number(&data, "diastolicPressure"),
                                blood_oxygenation: number(&data, "bloodOxygenation"),
                                breathing_rate: number(&data, "breathingRate"),
                            }));
                        }
                    }
                    Part::Patient | Part::Answer | Part::Question => {}
                }
                Ok(())
            })
            .map_err(|e| format!("bundle: {e}"))?;
        if let Some(bad) = bad {
            return Err(bad);
        }
        for w in pending.drain(..) {
            if access.halted() {
                return Err("the server is stopping".to_owned());
            }
            write_one(session, &w).await.map_err(|e| e.to_string())?;
            match w {
                Write::Profile(_) => done.profile += 1,
                Write::Symptom(_) => done.symptoms += 1,
                Write::Vitals(_) => done.vitals += 1,
            }
            cursor_file
                .seek(SeekFrom::Start(0))
                .await
                .map_err(|e| format!("cursor: {e}"))?;
            cursor_file
                .write_all(&done.bytes())
                .await
                .map_err(|e| format!("cursor: {e}"))?;
        }
    }
    cursor_file
        .sync_all()
        .await
        .map_err(|e| format!("cursor: {e}"))?;
    let imported = Imported {
        profile: done.profile,
        symptoms: done.symptoms,
        vitals: done.vitals,
    };
    let current = access
        .store()
        .transfer(t.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the transfer vanished")?;
    let mut data = TransferData::of(&current);
    data.imported = imported;
    let msg = ConfirmationMsg {
        id: t.id,
        new_address: data.new_address.clone().unwrap_or_default(),
        bundle_sha256: data.bundle_sha256.clone().unwrap_or_default(),
        imported,
    };
    let mut effects = Effects::none()
        .with_audit(audit(
            "transfer.imported",
            "mdgate",
            current.patient,
            serde_json::json!({"transfer": t.id, "imported": imported}),
        ))
        .with_outbox(access.peer_message(
            &t.peer_fqdn,
            &format!("{}/{}/confirmation", wire::TRANSFERS, t.id.as_hyphenated()),
            format!("transfer-confirmation:{}", t.id),
            serde_json::to_value(msg).unwrap_or_default(),
        ));
    effects.outbox[0].kind = wire::KIND_CONFIRMATION.to_owned();
    advance(access, &current, target::IMPORTED, &data, None, effects)
        .await
        .map_err(|e| e.to_string())?;
    Ok(imported)
}

async fn write_one(session: &PatientSession, w: &Write) -> Result<(), UpstreamError> {
    match w {
        Write::Profile(p) => session.replace_profile(p).await,
        Write::Symptom(s) => session.report_symptom(s).await,
        Write::Vitals(v) => session.report_vitals(v).await,
    }
}
