//! The transfer's server-to-server exchanges, both ends:
//!
//! * old home → new home: the ciphertext in pieces (`PUT
//!   transfers/{id}/ciphertext` with `Content-Range`), resumed from what
//!   the new home says it has (`GET transfers/{id}`);
//! * new home → old home: the confirmation (`POST
//!   transfers/{id}/confirmation`, through the outbox), after which the
//!   old home revokes the patient's grants and leaves a redirect.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use super::wire::{self, ConfirmationMsg, ReceiptMsg};
use super::{advance, ensure_spool, path, save, TransferData};
use crate::federation::access::{audit, peer_send, Access, PeerError};
use crate::store::{Effects, StoreError, Transfer, TransferSide};
use crate::tls::PeerId;
use crate::transfer::machine::{source, target};

fn store_failed(context: &'static str) -> impl Fn(StoreError) -> PeerError {
    move |e| {
        tracing::error!(error = %e, "{context}");
        PeerError::internal()
    }
}

/// The transfer `id` on `side` whose other server is `peer`, or 404.
async fn own(
    access: &Access,
    peer: &PeerId,
    id: Uuid,
    side: TransferSide,
) -> Result<Transfer, PeerError> {
    access
        .store()
        .transfer(id)
        .await
        .map_err(store_failed("cannot read the transfer"))?
        .filter(|t| t.side == side && t.peer_fqdn == peer.fqdn())
        .ok_or(PeerError::new(StatusCode::NOT_FOUND, "unknown_transfer"))
}

fn receipt(t: &Transfer, data: &TransferData) -> ReceiptMsg {
    let done = matches!(
        t.state.as_str(),
        target::RECEIVED | target::IMPORTING | target::IMPORTED | target::CONFIRMED
    );
    ReceiptMsg {
        id: t.id,
        state: t.state.clone(),
        received: data.received,
        sha256: if done {
            data.cipher_sha256.clone()
        } else {
            None
        },
    }
}

// ------------------------------------------------------------- new home

/// `GET transfers/{id}`: how much ciphertext the new home holds.
pub async fn status(access: &Access, peer: &PeerId, id: Uuid) -> Result<ReceiptMsg, PeerError> {
    let t = own(access, peer, id, TransferSide::Target).await?;
    Ok(receipt(&t, &TransferData::of(&t)))
}

/// Parses `Content-Range: bytes a-b/total`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let v = headers.get(http::header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total) = (a.parse().ok()?, b.parse().ok()?, total.parse().ok()?);
    (a <= b && b < total).then_some((a, b, total))
}

/// `PUT transfers/{id}/ciphertext`: one piece of the ciphertext.
pub async fn piece(
    access: &Access,
    peer: &PeerId,
    id: Uuid,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<ReceiptMsg, PeerError> {
    let t = own(access, peer, id, TransferSide::Target).await?;
    let mut data = TransferData::of(&t);
    let (first, last, total) =
        content_range(headers).ok_or(PeerError::bad("invalid_content_range"))?;
    if last - first + 1 != body.len() as u64 {
        return Err(PeerError::bad("content_range_length_mismatch"));
    }
    let declared = headers
        .get(wire::SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or(PeerError::bad("invalid_ciphertext_sha256"))?;
    match t.state.as_str() {
        // `requested`: the ciphertext overtook the decision message.
        target::REQUESTED | target::APPROVED | target::RECEIVING => {}
        target::RECEIVED | target::IMPORTING | target::IMPORTED | target::CONFIRMED => {
            // A replay after the end: the same answer if it is the same
            // ciphertext.
            if data.cipher_sha256.as_deref() == Some(declared.as_str()) {
                return Ok(receipt(&t, &data));
            }
            return Err(PeerError::new(StatusCode::CONFLICT, "already_received"));
        }
        _ => return Err(PeerError::new(StatusCode::CONFLICT, "transfer_closed")),
    }
    if t.state == target::RECEIVING
        && (data.cipher_len != Some(total) || data.cipher_sha256.as_deref() != Some(&declared))
    {
        return Err(PeerError::new(StatusCode::CONFLICT, "ciphertext_changed"));
    }
    if first > data.received {
        return Err(PeerError::new(StatusCode::CONFLICT, "offset_ahead"));
    }
    ensure_spool(access).await.map_err(|e| {
        tracing::error!(error = %e, "cannot create the spool directory");
        PeerError::internal()
    })?;
    let part_path = path(access, id, "sealed.part");
    let io = |e: std::io::Error| {
        tracing::error!(error = %e, transfer = %id, "cannot write ciphertext");
        PeerError::internal()
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part_path)
        .await
        .map_err(io)?;
    file.seek(std::io::SeekFrom::Start(first))
        .await
        .map_err(io)?;
    file.write_all(&body).await.map_err(io)?;
    file.set_len(last + 1).await.map_err(io)?;
    file.sync_data().await.map_err(io)?;
    drop(file);
    data.received = last + 1;
    data.cipher_len = Some(total);
    data.cipher_sha256 = Some(declared.clone());
    // Ciphertext means the patient approved: the code is no longer shown.
    data.code = None;

    if data.received < total {
        let t = if t.state != target::RECEIVING {
            advance(access, &t, target::RECEIVING, &data, None, Effects::none()).await
        } else {
            save(access, &t, &data).await
        }
        .map_err(|e| match e {
            StoreError::Conflict { .. } => PeerError::new(StatusCode::CONFLICT, "busy"),
            e => store_failed("cannot record a piece")(e),
        })?;
        return Ok(receipt(&t, &data));
    }
    // All of it: check the whole before saying so.
    let actual = file_sha256(&part_path).await.map_err(io)?;
    if actual != declared {
        data.received = 0;
        let _ = tokio::fs::remove_file(&part_path).await;
        let _ = save(access, &t, &data).await;
        return Err(PeerError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ciphertext_hash_mismatch",
        ));
    }
    tokio::fs::rename(&part_path, path(access, id, "sealed"))
        .await
        .map_err(io)?;
    let effects = Effects::none().with_audit(audit(
        "transfer.received",
        peer.fqdn(),
        None,
        serde_json::json!({"transfer": id, "bytes": total, "ciphertext_sha256": declared}),
    ));
    let t = advance(access, &t, target::RECEIVED, &data, None, effects)
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => PeerError::new(StatusCode::CONFLICT, "busy"),
            e => store_failed("cannot record the receipt")(e),
        })?;
    tracing::info!(transfer = %id, bytes = total, "transfer ciphertext received");
    Ok(receipt(&t, &data))
}

pub(crate) async fn file_sha256(p: &std::path::Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(p).await?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex::encode(hash.finalize()))
}

/// The old home's decision about a transfer we asked for.
pub(crate) async fn decision(
    access: &Access,
    peer: &PeerId,
    id: Uuid,
    state: &str,
) -> Result<(), PeerError> {
    let t = own(access, peer, id, TransferSide::Target).await?;
    let to = match state {
        "approved" => target::APPROVED,
        "denied" => target::DENIED,
        "voided" => target::VOIDED,
        "expired" => target::EXPIRED,
        "cancelled" => target::CANCELLED,
        _ => return Err(PeerError::bad("invalid_state")),
    };
    if t.state != target::REQUESTED {
        // A replay, or the ciphertext came first: nothing to do.
        return Ok(());
    }
    let mut data = TransferData::of(&t);
    data.code = None;
    let effects = Effects::none().with_audit(audit(
        &format!("transfer.{to}"),
        peer.fqdn(),
        None,
        serde_json::json!({"transfer": id}),
    ));
    match advance(access, &t, to, &data, None, effects).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(store_failed("cannot record the decision")(e)),
    }
}

// ------------------------------------------------------------- old home

/// Sends the ciphertext of `t` (state `exported`) from where the new home
/// stands, piece by piece; records `delivered` once it confirms the whole
/// with the right hash.
pub(super) async fn deliver(access: &Access, t: &Transfer) -> Result<(), String> {
    let data = TransferData::of(t);
    let total = data.cipher_len.ok_or("no ciphertext length")?;
    let sha = data.cipher_sha256.clone().ok_or("no ciphertext hash")?;
    let base = format!(
        "{}{}/{}",
        crate::federation::PREFIX,
        wire::TRANSFERS,
        t.id.as_hyphenated()
    );
    let (status, body) = peer_send(
        access,
        &t.peer_fqdn,
        Method::GET,
        &base,
        HeaderMap::new(),
        None,
    )
    .await
    .map_err(|e| format!("{}: {e}", e.reason()))?;
    if !status.is_success() {
        return Err(format!("the new home answered {}", status.as_u16()));
    }
    let mut receipt: ReceiptMsg =
        serde_json::from_slice(&body).map_err(|_| "the new home's status is malformed")?;
    let mut file = tokio::fs::File::open(path(access, t.id, "sealed"))
        .await
        .map_err(|e| format!("spool open: {e}"))?;
    while receipt.sha256.is_none() {
        let first = receipt.received.min(total);
        if first >= total && total > 0 {
            return Err("the new home has every byte but no receipt".to_owned());
        }
        file.seek(std::io::SeekFrom::Start(first))
            .await
            .map_err(|e| format!("spool seek: {e}"))?;
        let want = usize::try_from((total - first).min(wire::SEND_PIECE as u64)).unwrap_or(0);
        // A fresh buffer per piece, handed to the request without a copy.
        let mut buf = vec![0u8; want];
        file.read_exact(&mut buf)
            .await
            .map_err(|e| format!("spool read: {e}"))?;
        let mut headers = HeaderMap::new();
        let range = format!("bytes {first}-{}/{total}", first + want as u64 - 1);
        headers.insert(
            http::header::CONTENT_RANGE,
            HeaderValue::from_str(&range).map_err(|_| "bad range")?,
        );
        headers.insert(
            wire::SHA256_HEADER,
            HeaderValue::from_str(&sha).map_err(|_| "bad hash")?,
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let (status, body) = peer_send(
            access,
            &t.peer_fqdn,
            Method::PUT,
            &format!("{base}/ciphertext"),
            headers,
            Some(Bytes::from(buf)),
        )
        .await
        .map_err(|e| format!("{}: {e}", e.reason()))?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<crate::federation::access::wire::ErrorMsg>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("status_{}", status.as_u16()));
            return Err(format!("the new home refused a piece: {reason}"));
        }
        receipt =
            serde_json::from_slice(&body).map_err(|_| "the new home's receipt is malformed")?;
    }
    if receipt.sha256.as_deref() != Some(sha.as_str()) {
        return Err("the new home confirmed another hash".to_owned());
    }
    let mut data = data;
    data.attempts = 0;
    data.next_attempt_at = 0;
    data.reason = None;
    let fid = t.patient;
    let mut effects = Effects::none().with_audit(audit(
        "transfer.delivered",
        &t.peer_fqdn,
        fid,
        serde_json::json!({"transfer": t.id, "bytes": total, "ciphertext_sha256": sha}),
    ));
    if let Some(hook) = access.webhook(
        "transfer.delivered",
        serde_json::json!({"patient": data.patient_address, "server": t.peer_fqdn, "request": t.id}),
    ) {
        effects = effects.with_outbox(hook);
    }
    advance(access, t, source::DELIVERED, &data, None, effects)
        .await
        .map_err(|e| format!("store: {e}"))?;
    tracing::info!(transfer = %t.id, bytes = total, "transfer delivered");
    Ok(())
}

/// `POST transfers/{id}/confirmation`: the new home imported the record.
/// Revokes the patient's grants, leaves the redirect, and blocks the old
/// record from federation.
pub async fn confirmation(
    access: &Access,
    peer: &PeerId,
    id: Uuid,
    msg: ConfirmationMsg,
) -> Result<(), PeerError> {
    if msg.id != id {
        return Err(PeerError::bad("id_mismatch"));
    }
    let t = own(access, peer, id, TransferSide::Source).await?;
    let mut data = TransferData::of(&t);
    let new = crate::federation::access::code::parse_address(&msg.new_address)
        .map_err(|_| PeerError::bad("invalid_new_address"))?;
    if new.fqdn != peer.fqdn() {
        return Err(PeerError::new(StatusCode::FORBIDDEN, "address_not_of_peer"));
    }
    match t.state.as_str() {
        source::MOVED if data.new_address.as_deref() == Some(msg.new_address.as_str()) => {
            return Ok(())
        }
        source::DELIVERED => {}
        _ => return Err(PeerError::new(StatusCode::CONFLICT, "not_delivered")),
    }
    if data.bundle_sha256.as_deref() != Some(msg.bundle_sha256.as_str()) {
        return Err(PeerError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bundle_mismatch",
        ));
    }
    let fid = t.patient.ok_or_else(PeerError::internal)?;
    // Grants first (each tells its holder); then the move itself.
    let grants = access
        .store()
        .grants_for_patient(fid)
        .await
        .map_err(store_failed("cannot list grants"))?;
    let now = crate::federation::access::now_ms();
    for g in grants.iter().filter(|g| g.is_live(now)) {
        access
            .revoke_grant(g, &data.patient_address)
            .await
            .map_err(|_| PeerError::internal())?;
    }
    access
        .store()
        .set_patient_moved(
            fid,
            &msg.new_address,
            Effects::none().with_audit(audit(
                "patient.moved",
                &data.patient_address,
                Some(fid),
                serde_json::json!({"transfer": id, "moved_to": msg.new_address}),
            )),
        )
        .await
        .map_err(store_failed("cannot record the move"))?;
    data.new_address = Some(msg.new_address.clone());
    data.imported = msg.imported;
    let effects = Effects::none().with_audit(audit(
        "transfer.confirmed",
        peer.fqdn(),
        Some(fid),
        serde_json::json!({"transfer": id, "moved_to": msg.new_address,
            "imported": msg.imported}),
    ));
    match advance(access, &t, source::MOVED, &data, None, effects).await {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(PeerError::new(StatusCode::CONFLICT, "busy"));
        }
        Err(e) => return Err(store_failed("cannot record the confirmation")(e)),
    }
    // The ciphertext has served its purpose.
    let _ = tokio::fs::remove_file(path(access, id, "sealed")).await;
    tracing::info!(transfer = %id, moved_to = %msg.new_address, "patient moved; redirect in place");
    Ok(())
}

/// The new home's confirmation went through: the transfer is complete.
pub(crate) async fn confirmed(access: &Access, id: Uuid) {
    let Ok(Some(t)) = access.store().transfer(id).await else {
        return;
    };
    if t.side != TransferSide::Target || t.state != target::IMPORTED {
        return;
    }
    let data = TransferData::of(&t);
    let effects = Effects::none().with_audit(audit(
        "transfer.completed",
        "mdgate",
        t.patient,
        serde_json::json!({"transfer": id, "old_address": data.patient_address}),
    ));
    if let Err(e) = advance(access, &t, target::CONFIRMED, &data, None, effects).await {
        tracing::debug!(error = %e, "transfer already confirmed");
    }
}

/// For the outbox: whether `id` is a transfer this server asked for.
pub(crate) async fn is_target(access: &Access, id: Uuid) -> bool {
    matches!(access.store().transfer(id).await, Ok(Some(t)) if t.side == TransferSide::Target)
}
