//! The server-to-server messages of the transfer flow and the tokens it
//! signs (docs/protocol.md § Transfer). The request itself is an
//! `AccessRequestMsg` of kind `transfer`; the patient's decision travels
//! as a `DecisionMsg` without a token.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Paths under [`crate::federation::PREFIX`].
pub const TRANSFERS: &str = "transfers";
/// Outbox kind of the new home's confirmation.
pub const KIND_CONFIRMATION: &str = "transfer-confirmation";

/// `typ` of the approval the old home signs for the patient to carry.
pub const APPROVAL_TYP: &str = "mdgate-transfer-approval+jwt";
/// `typ` of the signed redirect left at the old address.
pub const MOVED_TYP: &str = "mdgate-moved+jwt";

/// Largest ciphertext piece in one `PUT` that a new home accepts.
pub const PIECE: usize = 4 * 1024 * 1024;
/// The piece an old home sends: smaller than [`PIECE`], since each piece
/// is held whole in memory on both sides while it crosses (this bounds a
/// transfer's memory, whatever the record's size), and fsynced by the new
/// home, which 1 MiB pieces keep cheap beside the transfer.
pub const SEND_PIECE: usize = 1024 * 1024;
/// The header naming the whole ciphertext's SHA-256 (hex) on each piece.
pub const SHA256_HEADER: &str = "x-mdgate-ciphertext-sha256";

/// `GET /federation/v1/transfers/{id}` (new home → old home's question),
/// and the answer to each ciphertext piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptMsg {
    pub id: Uuid,
    /// The new home's state (`approved`, `receiving`, `received`, ...).
    pub state: String,
    /// Ciphertext bytes stored so far, in order from the start.
    pub received: u64,
    /// Hex SHA-256 of the whole ciphertext, once all of it arrived and
    /// matched the declared hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST /federation/v1/transfers/{id}/confirmation`: the new home
/// imported the record and the patient lives there now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationMsg {
    pub id: Uuid,
    /// `<new federation id>@<new home>`.
    pub new_address: String,
    /// Hex SHA-256 of the bundle as the manifest states it.
    pub bundle_sha256: String,
    /// Records written to the new home's upstream, per part.
    pub imported: Imported,
}

/// Counts of what the import wrote upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imported {
    pub profile: u64,
    pub symptoms: u64,
    pub vitals: u64,
}

/// The claims of the approval: the patient approved moving `sub` from
/// `iss` to `aud` under transfer `transfer`, with the key whose
/// fingerprint is `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalClaims {
    pub iss: String,
    /// The patient's federation id at the old home.
    pub sub: Uuid,
    pub aud: String,
    pub transfer: Uuid,
    /// Hex `SealKey::fingerprint` of the patient's key.
    pub key: String,
    /// The requesting doctor, `user@aud`.
    pub doctor: String,
    pub iat: i64,
    pub exp: i64,
}

/// The claims of a redirect: `sub` (an address at `iss`) moved to
/// `moved_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovedClaims {
    pub iss: String,
    pub sub: String,
    pub moved_to: String,
    pub iat: i64,
    pub exp: i64,
}
