//! The access flow's server-to-server side: what the federation listener
//! does with each message (docs/protocol.md § Access), and the calls this
//! server makes to peers for its doctors.
//!
//! Every handler here gets the peer already authenticated by mutual TLS
//! (`tls::PeerId`). Each message is checked whole before anything is
//! written, and each write is idempotent, so a retried or replayed message
//! changes nothing the second time.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::wire::{self, AccessRequestMsg, DecisionMsg, ErrorMsg, RequestStatusMsg, RevocationMsg};
use super::{audit, millis, now_ms, Access, AccessError, LiveGrant};
use crate::policy::{self, BodyRule, GrantFacts, RequestFacts, Role};
use crate::store::chain::{self, Scalar};
use crate::store::{
    self, CanonicalRecord, Effects, NewAccessRequest, OutgoingState, OutgoingUpdate, ReceivedGrant,
    RequestKind, RequestState, StoreError,
};
use crate::tls::PeerId;
use crate::upstream::{ApiRequest, UpstreamId};

/// Largest message body accepted on the federation API.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A refusal on the federation API: status and machine-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PeerError {
    pub status: StatusCode,
    pub reason: &'static str,
    /// For `patient_moved`: the new address.
    pub moved_to: Option<String>,
    /// For `patient_moved`: the redirect signed by this server.
    pub redirect: Option<String>,
    /// For time errors: the skew observed, in seconds.
    pub skew_seconds: Option<i64>,
}

impl PeerError {
    pub fn new(status: StatusCode, reason: &'static str) -> PeerError {
        PeerError {
            status,
            reason,
            moved_to: None,
            redirect: None,
            skew_seconds: None,
        }
    }

    pub fn bad(reason: &'static str) -> PeerError {
        PeerError::new(StatusCode::BAD_REQUEST, reason)
    }

    pub fn internal() -> PeerError {
        PeerError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorMsg {
        ErrorMsg {
            error: self.reason.to_owned(),
            moved_to: self.moved_to.clone(),
            redirect: self.redirect.clone(),
            skew_seconds: self.skew_seconds,
        }
    }
}

fn store_failed(context: &'static str) -> impl Fn(StoreError) -> PeerError {
    move |e| {
        tracing::error!(error = %e, "{context}");
        match e {
            StoreError::Busy => PeerError::new(StatusCode::SERVICE_UNAVAILABLE, "busy"),
            _ => PeerError::internal(),
        }
    }
}

/// Reads a JSON message body (at most [`MAX_MESSAGE`] bytes).
pub async fn read_json<T: serde::de::DeserializeOwned, B>(body: B) -> Result<T, PeerError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = read_limited(body, MAX_MESSAGE).await?;
    serde_json::from_slice(&bytes).map_err(|_| PeerError::bad("invalid_message"))
}

/// Reads a body of at most `limit` bytes.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, PeerError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(PeerError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        )),
        Err(_) => Err(PeerError::bad("body_unreadable")),
    }
}

fn secs_to_ms(s: i64) -> i64 {
    s.saturating_mul(1000)
}

fn status_msg(
    req: &store::AccessRequest,
    token: Option<String>,
    revoked_at: Option<i64>,
) -> RequestStatusMsg {
    RequestStatusMsg {
        id: req.id,
        state: req.state.as_str().to_owned(),
        expires_at: req.expires_at / 1000,
        token,
        revoked_at,
    }
}

// ------------------------------------------------------------- server1

/// `POST access-requests`: a peer asks for one of our patients.
pub async fn accept_request(
    access: &Access,
    peer: &PeerId,
    msg: AccessRequestMsg,
) -> Result<(StatusCode, RequestStatusMsg), PeerError> {
    let now = now_ms();
    // The doctor must be the peer's: nobody speaks for another server.
    let Some((user, domain)) = msg.doctor.rsplit_once('@') else {
        return Err(PeerError::bad("invalid_doctor"));
    };
    if domain != peer.fqdn() || user.is_empty() || msg.doctor.len() > 320 {
        return Err(PeerError::new(StatusCode::FORBIDDEN, "doctor_not_of_peer"));
    }
    let kind = match msg.kind.as_str() {
        "access" => RequestKind::Access,
        "transfer" => RequestKind::Transfer,
        _ => return Err(PeerError::bad("invalid_kind")),
    };
    let role: Role = msg
        .role
        .parse()
        .map_err(|_| PeerError::bad("invalid_role"))?;
    let max = access.parts().limits.max_grant;
    if msg.duration <= 0
        || u64::try_from(msg.duration).map_or(true, |d| Duration::from_secs(d) > max)
    {
        return Err(PeerError::bad("duration_too_long"));
    }
    let code_hash: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&msg.code_hash)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(PeerError::bad("invalid_code_hash"))?;
    let invitation_hash = super::code::invitation_hash(&msg.invitation)
        .ok_or(PeerError::bad("invalid_invitation"))?;
    let code_ttl = super::duration_ms(access.parts().limits.code_ttl);
    let expires_at = secs_to_ms(msg.expires_at).min(now + code_ttl);
    if expires_at <= now {
        return Err(PeerError::bad("already_expired"));
    }

    let store = access.store();
    let patient = store
        .patient(msg.patient)
        .await
        .map_err(store_failed("cannot read the patient"))?
        .ok_or(PeerError::new(StatusCode::NOT_FOUND, "unknown_patient"))?;
    if let Some(to) = patient.moved_to {
        let mut e = PeerError::new(StatusCode::GONE, "patient_moved");
        e.redirect = crate::federation::transfer::moved_token(
            access,
            &access.address(patient.federation_id),
            &to,
        );
        e.moved_to = Some(to);
        return Err(e);
    }
    // A replay of a request already taken: the same answer, nothing new.
    // (The invitation is used up by the first, so it must come first.)
    store
        .touch_peer(peer.fqdn(), now)
        .await
        .map_err(store_failed("cannot record the peer"))?;
    if let Some(peer_row) = store
        .peer(peer.fqdn())
        .await
        .map_err(store_failed("cannot read the peer"))?
    {
        if peer_row.state == store::PeerState::Blocked {
            return Err(PeerError::new(StatusCode::FORBIDDEN, "peer_blocked"));
        }
    }
    let new = NewAccessRequest {
        id: msg.id,
        kind,
        patient: patient.federation_id,
        invitation_token_hash: invitation_hash,
        server_fqdn: peer.fqdn().to_owned(),
        requester_cert_sha256: *peer.cert_sha256(),
        doctor: msg.doctor.clone(),
        role: role.as_str().to_owned(),
        duration_ms: secs_to_ms(msg.duration),
        code_hash,
        created_at: now,
        expires_at,
        idempotency_key: msg.id.as_hyphenated().to_string(),
    };
    let address = access.address(patient.federation_id);
    let mut effects = Effects::none().with_audit(audit(
        "access.requested",
        &msg.doctor,
        Some(patient.federation_id),
        serde_json::json!({"request": msg.id, "doctor": msg.doctor, "server": peer.fqdn(),
            "role": role.as_str(), "duration_s": msg.duration}),
    ));
    if let Some(hook) = access.webhook(
        "access.requested",
        serde_json::json!({"patient": address, "doctor": msg.doctor, "server": peer.fqdn(),
            "role": role.as_str(), "request": msg.id}),
    ) {
        effects = effects.with_outbox(hook);
    }
    match store.create_access_request(new, effects).await {
        Ok(outcome) => {
            if outcome.changed {
                access.kick();
                tracing::info!(request = %msg.id, peer.fqdn = peer.fqdn(), "access request received");
            }
            let status = if outcome.changed {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((status, status_msg(&outcome.value, None, None)))
        }
        Err(StoreError::NotFound { .. }) => {
            Err(PeerError::new(StatusCode::FORBIDDEN, "invitation_invalid"))
        }
        Err(StoreError::Conflict {
            kind: store::ConflictKind::IdempotencyKey,
            ..
        }) => Err(PeerError::new(StatusCode::CONFLICT, "request_id_reused")),
        Err(StoreError::Conflict { .. }) => {
            Err(PeerError::new(StatusCode::FORBIDDEN, "invitation_invalid"))
        }
        Err(e) => Err(store_failed("cannot store the access request")(e)),
    }
}

/// `GET access-requests/{id}`: the requester asks where its request is.
/// The token is handed out again here, to the requester only.
pub async fn request_status(
    access: &Access,
    peer: &PeerId,
    id: Uuid,
) -> Result<RequestStatusMsg, PeerError> {
    let store = access.store();
    let req = store
        .access_request(id)
        .await
        .map_err(store_failed("cannot read the request"))?
        .filter(|r| r.server_fqdn == peer.fqdn())
        .ok_or(PeerError::new(StatusCode::NOT_FOUND, "unknown_request"))?;
    if req.state != RequestState::Approved {
        return Ok(status_msg(&req, None, None));
    }
    let grant = store
        .grant_for_request(id)
        .await
        .map_err(store_failed("cannot read the grant"))?
        .ok_or_else(PeerError::internal)?;
    if let Some(at) = grant.revoked_at {
        return Ok(status_msg(&req, None, Some(at)));
    }
    // The decision message carries the token; read it from there rather
    // than signing a second one.
    let token = store
        .outbox_message(&format!("decision:{id}"))
        .await
        .map_err(store_failed("cannot read the decision"))?
        .and_then(|m| serde_json::from_value::<wire::PeerPost>(m.payload).ok())
        .and_then(|p| serde_json::from_value::<DecisionMsg>(p.body).ok())
        .and_then(|d| d.token);
    Ok(status_msg(&req, token, None))
}

/// The audit detail of a data access, `{"grant","route","server","status"}`,
/// written straight in its canonical form: no `serde_json::Value` built
/// and dropped on every read.
pub fn access_detail(route: &str, grant: Uuid, server: &str, status: StatusCode) -> String {
    let mut grant_text = Uuid::encode_buffer();
    chain::canonical_flat(&mut [
        ("route", Scalar::Str(route)),
        (
            "grant",
            Scalar::Str(grant.hyphenated().encode_lower(&mut grant_text)),
        ),
        ("server", Scalar::Str(server)),
        ("status", Scalar::Int(i64::from(status.as_u16()))),
    ])
}

/// A data request under a grant: checks everything, forwards what the
/// policy permits, writes the access to the audit log.
pub async fn data(
    access: &Access,
    peer: &PeerId,
    req: http::Request<hyper::body::Incoming>,
) -> Result<(StatusCode, Option<HeaderValue>, Bytes), PeerError> {
    let now = SystemTime::now();
    let now_ms = millis(now);
    let token = crate::token::bearer(req.headers())
        .map_err(|e| PeerError::new(StatusCode::UNAUTHORIZED, e.reason()))?
        .ok_or(PeerError::new(StatusCode::UNAUTHORIZED, "token_missing"))?;
    let claims = access
        .parts()
        .verifier
        .check(token, peer.cert_sha256(), now)
        .map_err(|e| {
            let mut err = PeerError::new(StatusCode::UNAUTHORIZED, e.reason());
            err.skew_seconds = e.observed_skew();
            err
        })?;
    if claims.client != peer.fqdn() {
        return Err(PeerError::new(StatusCode::FORBIDDEN, "token_not_for_peer"));
    }
    let live = match access.grants().get(&claims.id) {
        Some(live) => live,
        None => {
            let store = access.store();
            let grant = store
                .grant(claims.id)
                .await
                .map_err(store_failed("cannot read the grant"))?
                .ok_or(PeerError::new(StatusCode::UNAUTHORIZED, "grant_unknown"))?;
            let patient = store
                .patient(grant.patient)
                .await
                .map_err(store_failed("cannot read the patient"))?
                .ok_or_else(PeerError::internal)?;
            if let Some(to) = patient.moved_to {
                let mut e = PeerError::new(StatusCode::GONE, "patient_moved");
                e.moved_to = Some(to);
                return Err(e);
            }
            access
                .grants()
                .insert(LiveGrant::new(grant, patient.upstream_id))
        }
    };
    if live.is_revoked() {
        return Err(PeerError::new(StatusCode::UNAUTHORIZED, "grant_revoked"));
    }
    if !live.is_live(now_ms) {
        return Err(PeerError::new(StatusCode::UNAUTHORIZED, "grant_expired"));
    }
    if live.grant.patient != claims.patient || live.grant.server_fqdn != peer.fqdn() {
        return Err(PeerError::new(
            StatusCode::UNAUTHORIZED,
            "token_grant_mismatch",
        ));
    }
    // The lower of the token's and the stored role.
    let stored_role: Role = live.grant.role.parse().map_err(|_| PeerError::internal())?;
    let role = stored_role.min(claims.role);
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().as_bytes())
        .unwrap_or(b"");
    let has_body = !http_body::Body::is_end_stream(&body);
    let facts = RequestFacts {
        method: &parts.method,
        target,
        headers: &parts.headers,
        has_body,
    };
    let grant_facts = GrantFacts {
        patient_fid: claims.patient,
        upstream_patient_id: live.upstream_patient_id,
        role,
    };
    let permit = access
        .parts()
        .policy
        .decide(&facts, &grant_facts)
        .map_err(|deny| {
            tracing::info!(
                peer.fqdn = peer.fqdn(),
                reason = deny.reason.label(),
                "data request denied by policy"
            );
            PeerError::new(deny.reason.status(), deny.reason.label())
        })?;
    let upstream_body = match permit.body {
        BodyRule::None => None,
        BodyRule::QuestionWhitelist => {
            let raw = read_limited(body, policy::MAX_QUESTION_BODY).await?;
            let filtered = policy::filter_question(&raw)
                .map_err(|e| PeerError::new(StatusCode::UNPROCESSABLE_ENTITY, e.reason()))?;
            Some(Bytes::from(filtered))
        }
    };
    let identity = access
        .parts()
        .accounts
        .identity_for_patient(UpstreamId(live.upstream_patient_id))
        .await
        .ok_or(PeerError::new(
            StatusCode::BAD_GATEWAY,
            "patient_unreachable",
        ))?;
    let route = permit.route.as_str();
    let api = match upstream_body {
        Some(b) => ApiRequest::with_json(
            route,
            permit.upstream_method.clone(),
            &permit.upstream_path_and_query,
            b,
        ),
        None => ApiRequest::new(
            route,
            permit.upstream_method.clone(),
            &permit.upstream_path_and_query,
        ),
    }
    .map_err(|_| PeerError::internal())?;
    let reply = identity.call(&api).await.map_err(|e| {
        tracing::warn!(error = %e, "upstream failed on a federation data request");
        PeerError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable")
    })?;
    // Written before the answer leaves: every access is on record.
    let kind = if permit.upstream_method == Method::GET {
        "record.read"
    } else {
        "record.question"
    };
    let detail = access_detail(route, live.grant.id, peer.fqdn(), reply.status());
    access
        .auditor()
        .append_canonical(CanonicalRecord {
            at: super::now_ms(),
            kind: kind.to_owned(),
            actor: live.grant.doctor.clone(),
            patient: Some(live.grant.patient),
            detail,
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit entry");
            PeerError::internal()
        })?;
    Ok((
        reply.status(),
        reply.content_type().cloned(),
        reply.body().clone(),
    ))
}

// ------------------------------------------------------------- server2

/// `POST decisions`: server1 tells us how the patient decided.
pub async fn accept_decision(
    access: &Access,
    peer: &PeerId,
    msg: DecisionMsg,
) -> Result<(), PeerError> {
    let store = access.store();
    let row = store
        .outgoing_request(msg.request)
        .await
        .map_err(store_failed("cannot read the request"))?
        .filter(|r| r.server_fqdn == peer.fqdn());
    let Some(row) = row else {
        // A transfer's decision carries no token.
        if msg.token.is_none()
            && crate::federation::transfer::peer::is_target(access, msg.request).await
        {
            return crate::federation::transfer::peer::decision(
                access,
                peer,
                msg.request,
                &msg.state,
            )
            .await;
        }
        return Err(PeerError::new(StatusCode::NOT_FOUND, "unknown_request"));
    };
    let (state, grant) = match msg.state.as_str() {
        "approved" => {
            let token = msg
                .token
                .as_deref()
                .ok_or(PeerError::bad("token_missing"))?;
            let grant = check_delivered(access, &row, token).await?;
            (OutgoingState::Approved, Some(grant))
        }
        "denied" => (OutgoingState::Denied, None),
        "voided" => (OutgoingState::Voided, None),
        "expired" => (OutgoingState::Expired, None),
        "cancelled" => (OutgoingState::Cancelled, None),
        _ => return Err(PeerError::bad("invalid_state")),
    };
    apply(access, &row, state, grant, "decision").await
}

/// Verifies a grant token delivered for `row` with server1's DNS key.
async fn check_delivered(
    access: &Access,
    row: &store::OutgoingRequest,
    token: &str,
) -> Result<ReceivedGrant, PeerError> {
    let kid = token_kid(token).ok_or(PeerError::bad("token_malformed"))?;
    let record = access
        .parts()
        .resolver
        .signing_key(&row.server_fqdn, &kid)
        .await
        .map_err(|e| {
            tracing::warn!(peer.fqdn = %row.server_fqdn, reason = e.as_str(), "no DNS key for a delivered token");
            PeerError::new(StatusCode::UNAUTHORIZED, "signing_key_unknown")
        })?;
    let crate::dns::record::KeyMaterial::Spki(der) = &record.material else {
        return Err(PeerError::new(
            StatusCode::UNAUTHORIZED,
            "signing_key_unknown",
        ));
    };
    let key = crate::token::VerifyingKey::from_spki_der(der)
        .map_err(|_| PeerError::new(StatusCode::UNAUTHORIZED, "signing_key_unknown"))?;
    let own = own_cert_sha256(access);
    let claims = crate::token::verify_delivered(
        token,
        &key,
        &row.server_fqdn,
        access.fqdn(),
        &own,
        SystemTime::now(),
        access.parts().skew,
    )
    .map_err(|e| {
        let mut err = PeerError::new(StatusCode::UNAUTHORIZED, e.reason());
        err.skew_seconds = e.observed_skew();
        err
    })?;
    let address =
        super::code::parse_address(&row.patient_address).map_err(|_| PeerError::internal())?;
    let asked: Role = row.role.parse().map_err(|_| PeerError::internal())?;
    if claims.patient != address.patient
        || claims.actor != format!("{}@{}", row.doctor, access.fqdn())
        || claims.role > asked
    {
        return Err(PeerError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "token_does_not_match_request",
        ));
    }
    Ok(ReceivedGrant {
        id: claims.id,
        token: token.to_owned(),
        role: claims.role.as_str().to_owned(),
        not_before: secs_to_ms(claims.not_before),
        expires_at: secs_to_ms(claims.expires_at),
    })
}

/// The `kid` of a compact JWS, unverified (to pick the key).
fn token_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("kid")?.as_str().map(str::to_owned)
}

/// The SHA-256 of the certificate this server presents to peers.
pub fn own_cert_sha256(access: &Access) -> [u8; 32] {
    let cert = access.parts().own_cert.current();
    cert.certified_key()
        .cert
        .first()
        .map(|c| Sha256::digest(c.as_ref()).into())
        .unwrap_or([0; 32])
}

/// Moves our request to `state` (idempotent), with an audit entry.
async fn apply(
    access: &Access,
    row: &store::OutgoingRequest,
    state: OutgoingState,
    grant: Option<ReceivedGrant>,
    via: &str,
) -> Result<(), PeerError> {
    let kind = format!("grant.{}", state.as_str());
    let effects = Effects::none().with_audit(audit(
        &kind,
        &row.server_fqdn,
        None,
        serde_json::json!({"request": row.id, "via": via, "doctor": row.doctor,
            "patient": row.patient_address, "grant": grant.as_ref().map(|g| g.id)}),
    ));
    match access
        .store()
        .update_outgoing_request(
            row.id,
            OutgoingUpdate {
                state,
                reason: None,
                grant,
            },
            now_ms(),
            effects,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => {
            Err(PeerError::new(StatusCode::CONFLICT, "state_conflict"))
        }
        Err(e) => Err(store_failed("cannot update the request")(e)),
    }
}

/// `POST revocations`: server1 ended a grant we hold.
pub async fn accept_revocation(
    access: &Access,
    peer: &PeerId,
    msg: RevocationMsg,
) -> Result<(), PeerError> {
    let row = access
        .store()
        .outgoing_request(msg.request)
        .await
        .map_err(store_failed("cannot read the request"))?
        .filter(|r| r.server_fqdn == peer.fqdn())
        .ok_or(PeerError::new(StatusCode::NOT_FOUND, "unknown_request"))?;
    match row.state {
        OutgoingState::Revoked => Ok(()),
        OutgoingState::Approved if row.grant.as_ref().is_some_and(|g| g.id == msg.grant) => {
            apply(access, &row, OutgoingState::Revoked, None, "revocation").await
        }
        _ => Err(PeerError::new(StatusCode::CONFLICT, "no_such_grant")),
    }
}

/// Asks server1 where our request stands and applies the answer.
pub async fn fetch_status(
    access: &Access,
    row: &store::OutgoingRequest,
) -> Result<Option<store::OutgoingRequest>, AccessError> {
    let path = format!(
        "{}{}/{}",
        crate::federation::PREFIX,
        wire::ACCESS_REQUESTS,
        row.id
    );
    let bytes = match send(
        access,
        &row.server_fqdn,
        Method::GET,
        &path,
        HeaderMap::new(),
        None,
    )
    .await
    {
        Ok((StatusCode::OK, bytes)) => bytes,
        Ok(_) | Err(_) => return Ok(None),
    };
    let Ok(status) = serde_json::from_slice::<RequestStatusMsg>(&bytes) else {
        return Ok(None);
    };
    let (state, grant) = match (
        status.state.as_str(),
        status.token.as_deref(),
        status.revoked_at,
    ) {
        ("pending", _, _) => return Ok(None),
        ("approved", _, Some(_)) => (OutgoingState::Revoked, None),
        ("approved", Some(token), None) => match check_delivered(access, row, token).await {
            Ok(g) => (OutgoingState::Approved, Some(g)),
            Err(e) => {
                tracing::warn!(reason = e.reason, "a fetched grant token was refused");
                return Ok(None);
            }
        },
        ("denied", _, _) => (OutgoingState::Denied, None),
        ("voided", _, _) => (OutgoingState::Voided, None),
        ("expired", _, _) => (OutgoingState::Expired, None),
        ("cancelled", _, _) => (OutgoingState::Cancelled, None),
        _ => return Ok(None),
    };
    if state == OutgoingState::Revoked && row.state != OutgoingState::Approved {
        return Ok(None);
    }
    if apply(access, row, state, grant, "fetch").await.is_err() {
        return Ok(None);
    }
    access
        .store()
        .outgoing_request(row.id)
        .await
        .map_err(|_| AccessError::Internal)
}

/// One exchange with a peer: status and the body (bounded).
pub async fn send(
    access: &Access,
    fqdn: &str,
    method: Method,
    path: &str,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Result<(StatusCode, Bytes), crate::federation::egress::EgressError> {
    let resp = access
        .parts()
        .egress
        .send_with(fqdn, method, path, headers, body)
        .await?;
    let status = resp.response.status();
    let bytes = read_limited(resp.response.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    Ok((status, bytes))
}

/// A data request to server1 under our grant.
pub async fn data_request(
    access: &Access,
    row: &store::OutgoingRequest,
    grant: &ReceivedGrant,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<Bytes, AccessError> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {}", grant.token))
        .map_err(|_| AccessError::Internal)?;
    headers.insert(http::header::AUTHORIZATION, value);
    let (status, bytes) = send(access, &row.server_fqdn, method, path, headers, body)
        .await
        .map_err(|e| AccessError::Peer {
            reason: e.reason().to_owned(),
        })?;
    if status.is_success() {
        return Ok(bytes);
    }
    let reason = serde_json::from_slice::<ErrorMsg>(&bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("status_{}", status.as_u16()));
    // What server1 says about the grant is the truth: follow it here.
    let ended = match reason.as_str() {
        "grant_revoked" => Some(OutgoingState::Revoked),
        "grant_expired" | "token_expired" => Some(OutgoingState::Expired),
        _ => None,
    };
    if let Some(state) = ended {
        let _ = apply(access, row, state, None, "data").await;
        return Err(AccessError::Closed {
            state: state.as_str(),
        });
    }
    Err(AccessError::Peer { reason })
}
