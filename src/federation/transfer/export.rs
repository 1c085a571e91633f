//! The old home's export: the whole record, read through the upstream
//! account that reaches the patient, written as a bundle and sealed with
//! the patient's key into `<id>.sealed`, in one streaming pass.
//!
//! Memory stays bounded by one upstream element plus one seal chunk: the
//! long lists (vitals above all, each element embedding the whole
//! patient) are split element by element as the bytes arrive
//! ([`crate::transfer::jsonarray`]), never held whole. An export that
//! fails leaves only a `.part` file, which the next attempt overwrites;
//! the key is dropped from the store in the same write that records the
//! export.

use std::time::SystemTime;

use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::{advance, ensure_spool, path, TransferData};
use crate::federation::access::{audit, Access};
use crate::store::{Effects, Transfer};
use crate::transfer::bundle::{BundleHeader, BundleWriter, Part};
use crate::transfer::jsonarray::ArraySplitter;
use crate::transfer::machine::source;
use crate::transfer::seal::{SealKey, Sealer};
use crate::upstream::{ops, UpstreamId, UpstreamIdentity};

/// Plaintext gathered before sealing (one seal chunk).
const FLUSH: usize = 64 * 1024;
/// Largest single element of an upstream list.
const MAX_ELEMENT: usize = 1024 * 1024;

/// Where the export writes: plaintext in, ciphertext to the file.
struct Sink {
    file: tokio::fs::File,
    sealer: Sealer,
    plain: Vec<u8>,
    cipher: Vec<u8>,
    hash: Sha256,
    len: u64,
}

impl Sink {
    async fn flush(&mut self, all: bool) -> Result<(), String> {
        if self.plain.len() < FLUSH && !all {
            return Ok(());
        }
        self.sealer
            .push(&self.plain, &mut self.cipher)
            .map_err(|e| format!("seal: {e}"))?;
        self.plain.clear();
        self.write_cipher().await
    }

    async fn write_cipher(&mut self) -> Result<(), String> {
        self.hash.update(&self.cipher);
        self.len += self.cipher.len() as u64;
        self.file
            .write_all(&self.cipher)
            .await
            .map_err(|e| format!("spool write: {e}"))?;
        self.cipher.clear();
        Ok(())
    }
}

/// Exports transfer `t` (state `approved`) and records `exported`.
pub(super) async fn export(access: &Access, t: &Transfer) -> Result<(), String> {
    let mut data = TransferData::of(t);
    let key = data
        .key
        .as_deref()
        .ok_or("the key is missing")
        .and_then(|k| SealKey::from_b64url(k).map_err(|_| "the stored key is malformed"))?;
    let fid = t.patient.ok_or("the transfer names no patient")?;
    let patient = access
        .store()
        .patient(fid)
        .await
        .map_err(|e| format!("store: {e}"))?
        .ok_or("the patient is unknown")?;
    let identity = super::identity_for(access, patient.upstream_id)
        .await
        .ok_or("no upstream account reaches the patient")?;
    ensure_spool(access)
        .await
        .map_err(|e| format!("spool directory: {e}"))?;
    let part_path = path(access, t.id, "sealed.part");
    let file = tokio::fs::File::create(&part_path)
        .await
        .map_err(|e| format!("spool create: {e}"))?;
    let mut sink = Sink {
        file,
        sealer: Sealer::new(&key),
        plain: Vec::with_capacity(FLUSH * 2),
        cipher: Vec::with_capacity(FLUSH * 2),
        hash: Sha256::new(),
        len: 0,
    };
    let header = BundleHeader {
        transfer: t.id,
        source: data.patient_address.clone(),
        created: crate::federation::access::millis(SystemTime::now()),
    };
    let mut writer = BundleWriter::new(&header, &mut sink.plain);
    let id = UpstreamId(patient.upstream_id);

    // The two single objects.
    for (part, request) in [
        (Part::Patient, ops::patient(id).request().clone()),
        (Part::Profile, ops::patient_profile(id).request().clone()),
    ] {
        let reply = identity
            .call(&request)
            .await
            .map_err(|e| format!("upstream: {e}"))?;
        if reply.status() != http::StatusCode::OK {
            return Err(format!(
                "upstream answered {} to {}",
                reply.status().as_u16(),
                request.route()
            ));
        }
        writer
            .push(part, reply.body(), &mut sink.plain)
            .map_err(|e| format!("bundle: {e}"))?;
    }
    // The lists, streamed.
    for (part, request) in [
        (Part::Vitals, ops::patient_vitals(id).request().clone()),
        (Part::Symptom, ops::patient_symptoms(id).request().clone()),
        (Part::Answer, ops::patient_answers(id).request().clone()),
        (Part::Question, ops::patient_questions(id).request().clone()),
    ] {
        stream_list(identity, &request, part, &mut writer, &mut sink).await?;
    }
    let signing = &access.parts().signing;
    let manifest = writer
        .finish(
            signing,
            access.fqdn(),
            fid,
            SystemTime::now(),
            &mut sink.plain,
        )
        .map_err(|e| format!("bundle: {e}"))?;
    sink.flush(true).await?;
    let Sink {
        mut file,
        sealer,
        mut cipher,
        hash,
        len,
        ..
    } = sink;
    sealer
        .finish(&mut cipher)
        .map_err(|e| format!("seal: {e}"))?;
    let mut hash = hash;
    hash.update(&cipher);
    let len = len + cipher.len() as u64;
    file.write_all(&cipher)
        .await
        .map_err(|e| format!("spool write: {e}"))?;
    file.sync_all()
        .await
        .map_err(|e| format!("spool sync: {e}"))?;
    drop(file);
    tokio::fs::rename(&part_path, path(access, t.id, "sealed"))
        .await
        .map_err(|e| format!("spool rename: {e}"))?;

    let sha = hex::encode(hash.finalize());
    data.key = None;
    data.cipher_len = Some(len);
    data.cipher_sha256 = Some(sha.clone());
    data.bundle_sha256 = Some(manifest.sha256.clone());
    data.counts = manifest
        .parts
        .iter()
        .map(|p| (p.part.as_str().to_owned(), p.count))
        .collect();
    data.attempts = 0;
    data.next_attempt_at = 0;
    data.reason = None;
    let effects = Effects::none().with_audit(audit(
        "transfer.exported",
        "mdgate",
        Some(fid),
        serde_json::json!({"transfer": t.id, "bytes": len, "ciphertext_sha256": sha,
            "bundle_sha256": manifest.sha256, "parts": data.counts}),
    ));
    advance(access, t, source::EXPORTED, &data, None, effects)
        .await
        .map_err(|e| format!("store: {e}"))?;
    tracing::info!(transfer = %t.id, bytes = len, "record exported and sealed");
    Ok(())
}

/// Reads one upstream list as it arrives, element by element, into the
/// bundle.
async fn stream_list(
    identity: &UpstreamIdentity,
    request: &crate::upstream::ApiRequest,
    part: Part,
    writer: &mut BundleWriter,
    sink: &mut Sink,
) -> Result<(), String> {
    let response = identity
        .open(request)
        .await
        .map_err(|e| format!("upstream: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!(
            "upstream answered {} to {}",
            response.status().as_u16(),
            request.route()
        ));
    }
    let mut body = response.into_body();
    let mut splitter = ArraySplitter::new(MAX_ELEMENT);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("upstream body: {e}"))?;
        let Ok(bytes) = frame.into_data() else {
            continue;
        };
        let plain = &mut sink.plain;
        splitter
            .feed(&bytes, &mut |element: &[u8]| {
                writer.push(part, element, plain)
            })
            .map_err(|e| format!("{}: {e}", request.route()))?;
        sink.flush(false).await?;
    }
    splitter
        .finish::<crate::transfer::bundle::BundleError>()
        .map_err(|e| format!("{}: {e}", request.route()))?;
    Ok(())
}
