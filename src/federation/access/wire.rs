//! The server-to-server messages of the access flow, as JSON
//! (docs/protocol.md § Access). Unknown fields are refused so two
//! implementations cannot read one message differently.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Paths, under [`crate::federation::PREFIX`].
pub const ACCESS_REQUESTS: &str = "access-requests";
pub const DECISIONS: &str = "decisions";
pub const REVOCATIONS: &str = "revocations";

/// Outbox message kinds.
pub const KIND_ACCESS_REQUEST: &str = "access-request";
pub const KIND_DECISION: &str = "decision";
pub const KIND_REVOCATION: &str = "revocation";
pub const KIND_WEBHOOK: &str = "webhook";

/// `POST /federation/v1/access-requests`: server2 asks server1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestMsg {
    /// Chosen by server2; the idempotency key.
    pub id: Uuid,
    /// `access` (this flow) or `transfer`.
    pub kind: String,
    /// The patient's federation id on server1.
    pub patient: Uuid,
    /// The invitation token from the patient's QR code.
    pub invitation: String,
    /// `<username>@<server2 fqdn>`; the domain must be the sending peer.
    pub doctor: String,
    pub role: String,
    /// Seconds asked for.
    pub duration: i64,
    /// base64url of the code hash (`code::code_hash`).
    pub code_hash: String,
    /// When server2 stops showing the code (Unix seconds).
    pub expires_at: i64,
}

/// server1's answer to an access request, and to
/// `GET /federation/v1/access-requests/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestStatusMsg {
    pub id: Uuid,
    /// `pending`, `approved`, `denied`, `voided`, `expired`, `cancelled`.
    pub state: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// The grant token, only when approved and only to the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Set once the grant was revoked (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// `POST /federation/v1/decisions`: server1 tells server2 how the patient
/// decided (through the outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionMsg {
    pub request: Uuid,
    /// `approved`, `denied`, `voided`, `expired`.
    pub state: String,
    /// The grant token when approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /federation/v1/revocations`: server1 tells server2 a grant ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationMsg {
    pub request: Uuid,
    pub grant: Uuid,
    /// Unix milliseconds.
    pub revoked_at: i64,
}

/// An error body of the federation API: `{"error": reason, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
    /// With `moved_to`: a JWS (`mdgate-moved+jwt`) by the old home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_seconds: Option<i64>,
}

/// The outbox payload of a message to a peer: where, what, and the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerPost {
    /// Path under the federation prefix.
    pub path: String,
    pub body: serde_json::Value,
}
