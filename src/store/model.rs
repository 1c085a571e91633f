//! The records the store keeps, as plain Rust values (no SQL types leak out).
//!
//! Times are [`UnixMillis`] taken from the caller's clock; identifiers
//! mdgate mints are [`Uuid`]s; hashes are 32 raw bytes. Enums that are
//! stored as text have `as_str`, the exact spelling the schema's CHECK
//! constraints accept.

use std::fmt;

use serde_json::Value;
use uuid::Uuid;

use super::error::{ConflictKind, StoreError};

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;

/// A federation peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Lower-case FQDN, no trailing dot.
    pub fqdn: String,
    pub first_seen: UnixMillis,
    pub last_seen: UnixMillis,
    pub state: PeerState,
}

/// Whether mdgate talks to a peer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Active,
    /// Blocked by the administrator.
    Blocked,
}

/// One cached DNS key record of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKey {
    pub fqdn: String,
    pub selector: String,
    pub purpose: KeyPurpose,
    /// The algorithm named by the record (e.g. `ed25519`, `sha256`).
    pub algorithm: String,
    /// For [`KeyPurpose::Tls`], the SHA-256 of the SubjectPublicKeyInfo; for
    /// [`KeyPurpose::Signing`], the public key. Empty when revoked.
    pub key: Vec<u8>,
    pub fetched_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// The peer published an empty key under this selector.
    pub revoked: bool,
}

/// What a published key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The peer's mutual-TLS certificate key.
    Tls,
    /// The peer's grant-token signing key.
    Signing,
}

/// A local patient known to the federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    pub federation_id: Uuid,
    /// The patient's id in the upstream access.md.
    pub upstream_id: i64,
    pub created_at: UnixMillis,
    /// The patient's new address after a transfer away.
    pub moved_to: Option<String>,
}

/// An invitation minted for the patient's QR code. Only the token's hash
/// is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: Uuid,
    pub patient: Uuid,
    pub token_hash: [u8; 32],
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub used_at: Option<UnixMillis>,
}

/// Access to the record, or the patient's whole transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Access,
    Transfer,
}

/// Where a request stands. Only `Pending` can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for the patient.
    Pending,
    /// The patient typed the right code and approved.
    Approved,
    /// The patient refused.
    Denied,
    /// Too many wrong codes.
    Voided,
    /// Nobody decided in time.
    Expired,
    /// Withdrawn by the requesting server.
    Cancelled,
}

/// A request to create, as received from the requesting server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccessRequest {
    pub id: Uuid,
    pub kind: RequestKind,
    pub patient: Uuid,
    /// Hash of the invitation token the requester presented; the
    /// invitation must be live and the patient's, and is used up.
    pub invitation_token_hash: [u8; 32],
    pub server_fqdn: String,
    /// SHA-256 of the certificate the requesting server presented (its
    /// mutual-TLS identity): the grant will be bound to it.
    pub requester_cert_sha256: [u8; 32],
    /// `user@server` of the requesting doctor.
    pub doctor: String,
    pub role: String,
    /// How long the grant should last, as asked.
    pub duration_ms: i64,
    /// Hash of the request code the doctor holds (never the code).
    pub code_hash: [u8; 32],
    /// Also the time the invitation must still be live at.
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// Scoped to `server_fqdn`.
    pub idempotency_key: String,
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub id: Uuid,
    pub kind: RequestKind,
    pub patient: Uuid,
    pub invitation: Uuid,
    pub server_fqdn: String,
    /// SHA-256 of the requesting server's certificate, as presented with
    /// the request. `None` only for requests stored before schema
    /// version 2.
    pub requester_cert_sha256: Option<[u8; 32]>,
    pub doctor: String,
    pub role: String,
    pub duration_ms: i64,
    pub code_hash: [u8; 32],
    /// Wrong codes typed so far.
    pub attempts: u32,
    pub state: RequestState,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub decided_at: Option<UnixMillis>,
    pub idempotency_key: String,
}

/// The row an idempotent write left behind, and whether this call wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    pub value: T,
    /// `false` when the write had already happened (same idempotency key,
    /// grant already revoked, ...); the call's [`Effects`] were then not
    /// applied again.
    pub changed: bool,
}

/// Writes that must commit together with a state change: messages for
/// peers and audit entries. A state-changing method applies them in the
/// same transaction, so a crash leaves either all or none of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub outbox: Vec<NewOutboxMessage>,
    pub audit: Vec<AuditRecord>,
}

impl Effects {
    /// No side effects.
    pub fn none() -> Self {
        Effects::default()
    }

    /// Adds an audit entry.
    pub fn with_audit(mut self, record: AuditRecord) -> Self {
        self.audit.push(record);
        self
    }

    /// Adds a message for a peer.
    pub fn with_outbox(mut self, message: NewOutboxMessage) -> Self {
        self.outbox.push(message);
        self
    }
}

/// A grant: what the patient approved, bound to the requesting server's
/// key. `id` is the token's `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: Uuid,
    pub request_id: Uuid,
    pub patient: Uuid,
    pub server_fqdn: String,
    /// SHA-256 of the requesting server's certificate (x5t#S256).
    pub server_key_sha256: [u8; 32],
    pub doctor: String,
    pub role: String,
    pub not_before: UnixMillis,
    pub expires_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

impl Grant {
    /// Usable at `now`: not revoked and within its validity window.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        self.revoked_at.is_none() && self.not_before <= now && now < self.expires_at
    }
}

/// A message to put in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxMessage {
    /// FQDN of the receiving peer.
    pub destination: String,
    pub kind: String,
    pub payload: Value,
    /// Globally unique; sent along so the receiver can drop duplicates.
    pub idempotency_key: String,
    pub created_at: UnixMillis,
    /// First delivery attempt; usually `created_at`.
    pub next_attempt_at: UnixMillis,
}

/// A message in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: i64,
    pub destination: String,
    pub kind: String,
    pub payload: Value,
    pub idempotency_key: String,
    pub created_at: UnixMillis,
    /// Delivery attempts made so far (failed ones, plus the successful one).
    pub attempts: u32,
    pub next_attempt_at: UnixMillis,
    pub delivered_at: Option<UnixMillis>,
    /// The last failure, as given to `mark_failed` (never secrets).
    pub last_error: Option<String>,
}

/// An audit entry to append. The chain fields are computed by the store.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub at: UnixMillis,
    /// Dotted event name, e.g. `grant.created`, `record.read`.
    pub kind: String,
    /// Who acted: an address (`user@server`), `patient`, `admin`, `system`.
    pub actor: String,
    pub patient: Option<Uuid>,
    /// Event details; stored in canonical JSON form. No secrets.
    pub detail: Value,
}

impl From<AuditEntry> for AuditRecord {
    /// The record an entry was made from (its place in the chain dropped).
    fn from(e: AuditEntry) -> Self {
        AuditRecord {
            at: e.at,
            kind: e.kind,
            actor: e.actor,
            patient: e.patient,
            detail: e.detail,
        }
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: UnixMillis,
    pub kind: String,
    pub actor: String,
    pub patient: Option<Uuid>,
    pub detail: Value,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Where one of our doctors' requests to another server stands (the
/// requesting server's side of the flows).
///
/// ```text
/// Sending --ack--> Pending --decision--> Approved --> Revoked | Expired
///    |                |
///    +----------------+--> Denied | Voided | Expired | Cancelled | Failed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutgoingState {
    /// Queued in the outbox; the patient's server has not acknowledged it.
    Sending,
    /// The patient's server acknowledged it; waiting for the patient.
    Pending,
    /// The patient approved; the grant was received.
    Approved,
    /// The patient refused.
    Denied,
    /// Too many wrong codes typed on the patient's server.
    Voided,
    /// Nobody decided before the code expired, or the grant ran out.
    Expired,
    /// Withdrawn by us.
    Cancelled,
    /// The patient revoked the grant.
    Revoked,
    /// The patient's server refused the request itself (see the reason).
    Failed,
}

impl OutgoingState {
    /// Whether nothing can happen to the request any more. `Approved` is
    /// not final: the grant can still be revoked or expire.
    pub fn is_final(self) -> bool {
        match self {
            OutgoingState::Sending | OutgoingState::Pending | OutgoingState::Approved => false,
            OutgoingState::Denied
            | OutgoingState::Voided
            | OutgoingState::Expired
            | OutgoingState::Cancelled
            | OutgoingState::Revoked
            | OutgoingState::Failed => true,
        }
    }

    /// Whether the request code is still shown in this state (it is
    /// cleared once the request is decided).
    pub fn keeps_code(self) -> bool {
        matches!(self, OutgoingState::Sending | OutgoingState::Pending)
    }

    /// Whether a request may move from `self` to the different state `to`.
    /// Staying in the same state is a replay, not a transition (see
    /// [`Store::update_outgoing_request`](super::Store::update_outgoing_request)).
    pub fn can_move_to(self, to: OutgoingState) -> bool {
        use OutgoingState::*;
        matches!(
            (self, to),
            (Sending, Pending)
                | (
                    Sending | Pending,
                    Approved | Denied | Voided | Expired | Cancelled | Failed
                )
                | (Approved, Revoked | Expired)
        )
    }
}

/// A request one of our doctors is sending to a patient's home server.
#[derive(Clone, PartialEq, Eq)]
pub struct NewOutgoingRequest {
    /// Minted here; also the idempotency key the home server sees.
    pub id: Uuid,
    pub kind: RequestKind,
    /// The doctor's upstream username (1..=128 characters).
    pub doctor: String,
    /// The doctor's access.md user id.
    pub doctor_upstream_id: i64,
    /// `<patient federation id>@<home server>`.
    pub patient_address: String,
    /// The home server, lower-case.
    pub server_fqdn: String,
    pub role: String,
    /// How long the grant should last, as asked.
    pub duration_ms: i64,
    /// The request code shown to the doctor (a secret: redacted in `Debug`).
    pub code: String,
    pub created_at: UnixMillis,
    /// When the code expires.
    pub expires_at: UnixMillis,
}

/// A stored request of one of our doctors, with the grant received for it.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    pub id: Uuid,
    pub kind: RequestKind,
    pub doctor: String,
    pub doctor_upstream_id: i64,
    pub patient_address: String,
    pub server_fqdn: String,
    pub role: String,
    pub duration_ms: i64,
    /// The request code, while the request is open (`Sending`, `Pending`);
    /// `None` once decided. A secret: redacted in `Debug`.
    pub code: Option<String>,
    pub state: OutgoingState,
    /// The home server's machine-readable reason (failed, denied, voided).
    pub reason: Option<String>,
    /// The grant, once received; kept after revocation or expiry.
    pub grant: Option<ReceivedGrant>,
    pub created_at: UnixMillis,
    /// The last state change.
    pub updated_at: UnixMillis,
    /// When the code expires.
    pub expires_at: UnixMillis,
}

/// A grant the patient's home server issued for one of our requests.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedGrant {
    /// The token's `jti`.
    pub id: Uuid,
    /// The grant token (compact JWS), presented on every data request. A
    /// secret: redacted in `Debug`.
    pub token: String,
    /// The role granted (may be narrower than asked).
    pub role: String,
    pub not_before: UnixMillis,
    pub expires_at: UnixMillis,
}

/// A state change of an [`OutgoingRequest`], as a peer message (or our own
/// decision) tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingUpdate {
    pub state: OutgoingState,
    /// The home server's machine-readable reason, at most 200 characters.
    pub reason: Option<String>,
    /// Exactly for [`OutgoingState::Approved`]: the grant received.
    pub grant: Option<ReceivedGrant>,
}

/// What [`plan_outgoing_update`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpdatePlan {
    /// Write the new state and apply the effects.
    Apply,
    /// Already done (a replayed message): change nothing, apply no effects.
    Replay,
}

/// Decides what `update` does to a request in state `from` holding
/// `stored_grant`; pure, so that the whole table is a unit test.
///
/// * a grant comes with `Approved` and with nothing else;
/// * the same state again is a replay if it says nothing new: for
///   `Approved`, the very grant already stored (another grant is a
///   conflict); for any other state, always (the first reason stays);
/// * otherwise the move must be allowed by [`OutgoingState::can_move_to`],
///   else a [`ConflictKind::Transition`] conflict.
pub(crate) fn plan_outgoing_update(
    from: OutgoingState,
    stored_grant: Option<&ReceivedGrant>,
    update: &OutgoingUpdate,
) -> Result<UpdatePlan, StoreError> {
    let to = update.state;
    match (to, &update.grant) {
        (OutgoingState::Approved, None) => {
            return Err(StoreError::conflict(
                ConflictKind::Check,
                "an outgoing request becomes approved only with the grant received",
            ))
        }
        (OutgoingState::Approved, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(StoreError::conflict(
                ConflictKind::Check,
                format!("a grant comes only with approval, not with {to}"),
            ))
        }
    }
    if from == to {
        return match (stored_grant, &update.grant) {
            (Some(stored), Some(new)) if stored != new => Err(StoreError::conflict(
                ConflictKind::State,
                "outgoing request already approved with another grant",
            )),
            _ => Ok(UpdatePlan::Replay),
        };
    }
    if from.can_move_to(to) {
        Ok(UpdatePlan::Apply)
    } else {
        Err(StoreError::conflict(
            ConflictKind::Transition { from, to },
            format!("outgoing request is {from}, cannot become {to}"),
        ))
    }
}

/// Prints `"<redacted>"` in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Debug for NewOutgoingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewOutgoingRequest")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("doctor", &self.doctor)
            .field("doctor_upstream_id", &self.doctor_upstream_id)
            .field("patient_address", &self.patient_address)
            .field("server_fqdn", &self.server_fqdn)
            .field("role", &self.role)
            .field("duration_ms", &self.duration_ms)
            .field("code", &Redacted)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for OutgoingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingRequest")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("doctor", &self.doctor)
            .field("doctor_upstream_id", &self.doctor_upstream_id)
            .field("patient_address", &self.patient_address)
            .field("server_fqdn", &self.server_fqdn)
            .field("role", &self.role)
            .field("duration_ms", &self.duration_ms)
            .field("code", &self.code.as_ref().map(|_| Redacted))
            .field("state", &self.state)
            .field("reason", &self.reason)
            .field("grant", &self.grant)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for ReceivedGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedGrant")
            .field("id", &self.id)
            .field("token", &Redacted)
            .field("role", &self.role)
            .field("not_before", &self.not_before)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Versions applied by a `migrate` run, and the resulting version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// `(version, description)` of each migration applied by this run, in
    /// order; empty when the schema was already current.
    pub applied: Vec<(i64, String)>,
    /// The schema version after the run.
    pub current: i64,
}

/// A stored text value that is not one of the enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.value)
    }
}

/// Text spellings of a stored enum, one table for both directions.
macro_rules! text_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The spelling stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            /// Parses a stored spelling.
            pub fn parse(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(UnknownValue { what: $what, value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(PeerState, "peer state", { Active => "active", Blocked => "blocked" });
text_enum!(KeyPurpose, "key purpose", { Tls => "tls", Signing => "signing" });
text_enum!(RequestKind, "request kind", { Access => "access", Transfer => "transfer" });
text_enum!(RequestState, "request state", {
    Pending => "pending",
    Approved => "approved",
    Denied => "denied",
    Voided => "voided",
    Expired => "expired",
    Cancelled => "cancelled",
});
text_enum!(OutgoingState, "outgoing request state", {
    Sending => "sending",
    Pending => "pending",
    Approved => "approved",
    Denied => "denied",
    Voided => "voided",
    Expired => "expired",
    Cancelled => "cancelled",
    Revoked => "revoked",
    Failed => "failed",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_spellings_round_trip() {
        for s in [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Voided,
            RequestState::Expired,
            RequestState::Cancelled,
        ] {
            assert_eq!(RequestState::parse(s.as_str()), Ok(s));
        }
        assert_eq!(KeyPurpose::parse("tls"), Ok(KeyPurpose::Tls));
        assert_eq!(PeerState::Blocked.to_string(), "blocked");
        assert_eq!(
            RequestKind::parse("Access").unwrap_err().to_string(),
            "unknown request kind \"Access\""
        );
    }

    #[test]
    fn outgoing_states() {
        use OutgoingState::*;
        let all = [
            Sending, Pending, Approved, Denied, Voided, Expired, Cancelled, Revoked, Failed,
        ];
        for s in all {
            assert_eq!(OutgoingState::parse(s.as_str()), Ok(s));
            let open = matches!(s, Sending | Pending | Approved);
            assert_eq!(s.is_final(), !open, "{s}");
            // Nothing leaves a final state.
            if s.is_final() {
                assert!(all.iter().all(|t| !s.can_move_to(*t)), "{s}");
            }
        }
        assert_eq!(Failed.to_string(), "failed");
        assert!(OutgoingState::parse("Sending").is_err());
    }

    #[test]
    fn outgoing_update_plans() {
        use OutgoingState::*;
        let grant = ReceivedGrant {
            id: Uuid::nil(),
            token: "t".into(),
            role: "viewer".into(),
            not_before: 1,
            expires_at: 2,
        };
        let update = |state, grant: Option<&ReceivedGrant>| OutgoingUpdate {
            state,
            reason: None,
            grant: grant.cloned(),
        };
        let plan = |from, stored, u: &OutgoingUpdate| plan_outgoing_update(from, stored, u);
        assert_eq!(
            plan(Sending, None, &update(Pending, None)).ok(),
            Some(UpdatePlan::Apply)
        );
        assert_eq!(
            plan(Pending, None, &update(Pending, None)).ok(),
            Some(UpdatePlan::Replay)
        );
        assert_eq!(
            plan(Approved, Some(&grant), &update(Approved, Some(&grant))).ok(),
            Some(UpdatePlan::Replay)
        );
        let other = ReceivedGrant {
            role: "editor".into(),
            ..grant.clone()
        };
        assert!(matches!(
            plan(Approved, Some(&grant), &update(Approved, Some(&other))),
            Err(StoreError::Conflict {
                kind: ConflictKind::State,
                ..
            })
        ));
        assert!(matches!(
            plan(Pending, None, &update(Approved, None)),
            Err(StoreError::Conflict {
                kind: ConflictKind::Check,
                ..
            })
        ));
        assert!(matches!(
            plan(Approved, Some(&grant), &update(Revoked, Some(&grant))),
            Err(StoreError::Conflict {
                kind: ConflictKind::Check,
                ..
            })
        ));
        let err = plan(Approved, Some(&grant), &update(Pending, None)).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::Transition {
                    from: Approved,
                    to: Pending
                },
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "store conflict (transition approved -> pending): outgoing request is approved, \
             cannot become pending"
        );
    }

    #[test]
    fn grant_liveness() {
        let g = Grant {
            id: Uuid::nil(),
            request_id: Uuid::nil(),
            patient: Uuid::nil(),
            server_fqdn: "s2.example".into(),
            server_key_sha256: [0; 32],
            doctor: "d@s2.example".into(),
            role: "doctor".into(),
            not_before: 100,
            expires_at: 200,
            revoked_at: None,
        };
        assert!(!g.is_live(99));
        assert!(g.is_live(100));
        assert!(!g.is_live(200));
        let revoked = Grant {
            revoked_at: Some(150),
            ..g
        };
        assert!(!revoked.is_live(120));
    }
}

/// Which side of a transfer this server is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferSide {
    /// The patient's old home (server1): exports, seals and delivers.
    Source,
    /// The new home (server2): receives, imports and confirms.
    Target,
}

text_enum!(TransferSide, "transfer side", { Source => "source", Target => "target" });

/// One transfer as this server keeps it. `state` is the state machine's
/// spelling (`crate::transfer::machine`), `data` its working fields; the
/// store checks neither, only that an update starts from `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub id: Uuid,
    pub side: TransferSide,
    pub state: String,
    pub peer_fqdn: String,
    pub patient: Option<Uuid>,
    pub doctor: String,
    pub data: serde_json::Value,
    /// Starts at 1; each update adds one.
    pub version: i64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}
