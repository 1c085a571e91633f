//! Durable state: peers and their DNS keys, patients, invitations, access
//! requests, grants, the outbox to peers, and the hash-chained audit log.
//!
//! Both sides of the flows live here. As the patient's home server
//! ("server1"): patients, invitations, the access requests received from
//! peers and the grants issued for them. As the requesting server
//! ("server2"): the outgoing requests our doctors sent, each with the grant
//! received for it ([`OutgoingRequest`], [`OutgoingState`]).
//!
//! Everything else in mdgate talks to the [`Store`] trait through an
//! `Arc<dyn Store>` obtained from [`open`]; SQL exists only under this
//! module. The trait is object-safe: each method returns a boxed future
//! ([`StoreFuture`]), which is what `async-trait` would generate, written
//! out so that the crate needs no extra dependency.
//!
//! # Data flow
//!
//! * [`open`] creates the SQLite file if missing, checks the schema version
//!   against the migrations built into the binary (`store::schema`), applies the
//!   missing ones, then hands out a pooled `SqliteStore`.
//! * Flows change state through methods that take [`Effects`]: the outbox
//!   messages and audit entries that belong to the change commit in the same
//!   transaction, so a crash leaves all of them or none, and a retry with the
//!   same idempotency key finds the first attempt's result instead of
//!   writing twice (DESIGN invariant 5).
//! * Every audit entry is chained to the previous one by SHA-256 ([`chain`]:
//!   the encoding, and what verification can and cannot detect).
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous = FULL`: a commit
//! returns only after the WAL is on stable storage, so anything a method
//! has returned `Ok` for survives a crash or power loss. Writes that read
//! before they write (the audit append, state transitions) open their
//! transaction with `BEGIN IMMEDIATE`, taking SQLite's single write lock up
//! front, so concurrent writers queue on the busy timeout instead of
//! failing on a stale snapshot.
//!
//! # Schema versions
//!
//! Migrations live in `migrations/sqlite/NNNN_description.sql` and are
//! embedded at build time. A release never edits a migration once shipped:
//! the checksum recorded in `_sqlx_migrations` would no longer match and
//! mdgate refuses to start ([`StoreError::MigrationModified`]). A database
//! migrated by a newer mdgate is refused ([`StoreError::SchemaTooNew`]), as
//! older code cannot know what the newer schema means. Take a backup (copy
//! the file with `sqlite3 mdgate.db ".backup copy.db"`) before upgrading.
//!
//! # PostgreSQL, later
//!
//! A hospital runs several instances on one PostgreSQL. That will be a
//! `PgStore` implementing the same [`Store`] trait, chosen by a
//! `config::Store::Postgres` variant in [`open`], with its own migrations
//! under `migrations/postgres/` carrying the same version numbers and
//! meaning as the SQLite ones (types differ: `BIGINT` times, `BYTEA`
//! hashes, `UUID` ids, `JSONB` payloads, named CHECK constraints kept
//! identical so error mapping stays shared). What changes:
//!
//! * the audit append serialises on the chain head with
//!   `pg_advisory_xact_lock` (or `SELECT ... FOR UPDATE` on a head row)
//!   instead of SQLite's single writer; the primary key on `seq` still
//!   forbids a fork;
//! * `due` claims rows with `FOR UPDATE SKIP LOCKED` and a lease, since
//!   several instances deliver the outbox;
//! * revocations `NOTIFY` a channel so every instance drops cached grants;
//! * connection errors must not echo the connection URL (it may carry a
//!   password): the URL is read from a secret file and never formatted.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::config;

pub mod chain;
mod error;
pub mod journal;
mod model;
mod schema;
mod sqlite;

pub use chain::{AuditBreak, AuditHead, AuditVerification, BreakReason};
pub use error::{ConflictKind, StoreError};
pub use journal::{AuditJournal, CanonicalRecord, JournalError};
pub use model::{
    AccessRequest, AuditEntry, AuditRecord, Effects, Grant, Invitation, KeyPurpose,
    MigrationReport, NewAccessRequest, NewOutboxMessage, NewOutgoingRequest, OutboxMessage,
    Outcome, OutgoingRequest, OutgoingState, OutgoingUpdate, Patient, Peer, PeerKey, PeerState,
    ReceivedGrant, RequestKind, RequestState, Transfer, TransferSide, UnixMillis, UnknownValue,
};

/// The future every [`Store`] method returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Durable state behind one interface, whatever the database.
///
/// Times are always passed in by the caller (its clock), never read here.
/// Methods that change a flow's state take [`Effects`] and apply them in
/// the same transaction.
pub trait Store: Send + Sync + fmt::Debug {
    // --- health and lifecycle

    /// A round trip to the database (for `/ready`).
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// The schema version (highest applied migration).
    fn schema_version(&self) -> StoreFuture<'_, i64>;

    /// Closes the pool, waiting for connections in use; later calls fail.
    fn close(&self) -> StoreFuture<'_, ()>;

    // --- audit log

    /// The audit journal, when this store has one it can write: appends
    /// there return once durable and join the chain, in order, shortly
    /// after ([`journal`]). `None`: append with
    /// [`append_audit_batch`](Store::append_audit_batch).
    fn audit_journal(&self) -> Option<&AuditJournal> {
        None
    }

    /// Entries the audit journal acknowledged that are not yet in the log
    /// (0 without a journal). A store that owns the journal copies them
    /// shortly; one that does not (another process's, or a copy read by
    /// `mdgate audit`) counts them in the file, changing nothing.
    fn audit_journal_pending(&self) -> StoreFuture<'_, u64> {
        Box::pin(async { Ok(0) })
    }

    /// Appends an entry at the head of the chain, in its own transaction.
    fn append_audit(&self, record: AuditRecord) -> StoreFuture<'_, AuditEntry>;

    /// Appends entries in order at the head of the chain, all in one
    /// transaction (one commit, one fsync): all are durable or none.
    fn append_audit_batch(&self, records: Vec<AuditRecord>) -> StoreFuture<'_, Vec<AuditEntry>>;

    /// Entries with `seq >= from_seq`, ascending, at most `limit` (capped at
    /// [`MAX_PAGE`]).
    fn audit_entries(&self, from_seq: i64, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>>;

    /// The patient's entries with `seq >= from_seq`, ascending, at most
    /// `limit` (capped at [`MAX_PAGE`]).
    fn audit_entries_for_patient(
        &self,
        patient: Uuid,
        from_seq: i64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<AuditEntry>>;

    /// The last entry's `seq` and hash, `None` for an empty log. Record it
    /// outside the database to detect a later truncation or rewrite.
    fn audit_head(&self) -> StoreFuture<'_, Option<AuditHead>>;

    /// Walks the whole chain. The outer error is a database failure; the
    /// inner one says where the chain breaks. `recorded` is a head recorded
    /// earlier, if any (see [`chain`] for what is detectable without it).
    fn verify_audit(
        &self,
        recorded: Option<AuditHead>,
    ) -> StoreFuture<'_, Result<AuditVerification, AuditBreak>>;

    // --- peers and their DNS keys

    /// Records that the peer was seen at `now`, creating it as active.
    fn touch_peer<'a>(&'a self, fqdn: &'a str, now: UnixMillis) -> StoreFuture<'a, Peer>;

    fn peer<'a>(&'a self, fqdn: &'a str) -> StoreFuture<'a, Option<Peer>>;

    /// All peers, by FQDN.
    fn peers(&self) -> StoreFuture<'_, Vec<Peer>>;

    /// Sets the administrator's decision on a peer.
    fn set_peer_state<'a>(&'a self, fqdn: &'a str, state: PeerState) -> StoreFuture<'a, Peer>;

    /// Inserts or replaces the cached record for `(fqdn, selector)`. The peer
    /// must exist ([`StoreError::NotFound`] otherwise).
    fn upsert_peer_key(&self, key: PeerKey) -> StoreFuture<'_, ()>;

    /// The peer's cached keys, by selector.
    fn peer_keys<'a>(&'a self, fqdn: &'a str) -> StoreFuture<'a, Vec<PeerKey>>;

    fn peer_key<'a>(&'a self, fqdn: &'a str, selector: &'a str)
        -> StoreFuture<'a, Option<PeerKey>>;

    /// Marks a cached key revoked.
    fn revoke_peer_key<'a>(&'a self, fqdn: &'a str, selector: &'a str) -> StoreFuture<'a, ()>;

    /// Deletes cached keys that expired before `now`; returns how many.
    fn purge_expired_peer_keys(&self, now: UnixMillis) -> StoreFuture<'_, u64>;

    // --- patients and invitations

    fn insert_patient(&self, patient: Patient) -> StoreFuture<'_, ()>;

    fn patient(&self, federation_id: Uuid) -> StoreFuture<'_, Option<Patient>>;

    fn patient_by_upstream_id(&self, upstream_id: i64) -> StoreFuture<'_, Option<Patient>>;

    /// Leaves a redirect: the patient now lives at `address`.
    fn set_patient_moved<'a>(
        &'a self,
        federation_id: Uuid,
        address: &'a str,
        effects: Effects,
    ) -> StoreFuture<'a, Patient>;

    fn insert_invitation(&self, invitation: Invitation) -> StoreFuture<'_, ()>;

    fn invitation_by_token_hash(&self, token_hash: [u8; 32])
        -> StoreFuture<'_, Option<Invitation>>;

    /// The patient's invitations, used and expired included, newest first,
    /// at most `limit` (capped at [`MAX_PAGE`]).
    fn invitations_for_patient(
        &self,
        patient: Uuid,
        limit: u32,
    ) -> StoreFuture<'_, Vec<Invitation>>;

    /// Withdraws an invitation: marks it used at `now` so that it can no
    /// longer be presented. An invitation already used keeps its first
    /// time; an unknown id is [`StoreError::NotFound`].
    fn revoke_invitation(&self, id: Uuid, now: UnixMillis) -> StoreFuture<'_, ()>;

    // --- access requests and grants

    /// Records a request from a peer, using up the live invitation it
    /// presented ([`StoreError::NotFound`] `"live invitation"` if there is
    /// none). The patient and the peer must exist. Idempotent on `(server_fqdn, idempotency_key)`: a replay
    /// with the same content returns the stored request
    /// (`changed = false`), different content is a conflict.
    fn create_access_request(
        &self,
        request: NewAccessRequest,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<AccessRequest>>;

    fn access_request(&self, id: Uuid) -> StoreFuture<'_, Option<AccessRequest>>;

    /// The patient's pending requests, oldest first.
    fn pending_requests_for_patient(&self, patient: Uuid) -> StoreFuture<'_, Vec<AccessRequest>>;

    /// Pending requests whose code expired (`expires_at <= now`), earliest
    /// expiry first, at most `limit` (capped at [`MAX_PAGE`]): the expiry
    /// sweeper closes them with [`Store::close_request`].
    fn expired_pending_requests(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> StoreFuture<'_, Vec<AccessRequest>>;

    /// Counts a wrong code; at `max_attempts` the request becomes
    /// [`RequestState::Voided`]. Only for pending requests.
    fn record_wrong_code(
        &self,
        id: Uuid,
        max_attempts: u32,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, AccessRequest>;

    /// Ends a pending request without a grant: denied, voided, expired or
    /// cancelled (approval goes through [`Store::approve_request`]).
    fn close_request(
        &self,
        id: Uuid,
        to: RequestState,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, AccessRequest>;

    /// Approves the pending, unexpired request `grant.request_id` and
    /// stores the grant, which must match the request (patient, server,
    /// doctor, role), all in one transaction with `effects`.
    fn approve_request(
        &self,
        grant: Grant,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Grant>;

    fn grant(&self, id: Uuid) -> StoreFuture<'_, Option<Grant>>;

    /// The grant issued for a request, if it was approved.
    fn grant_for_request(&self, request_id: Uuid) -> StoreFuture<'_, Option<Grant>>;

    /// The patient's grants, revoked and expired included, newest first.
    fn grants_for_patient(&self, patient: Uuid) -> StoreFuture<'_, Vec<Grant>>;

    /// The grants held by a peer, revoked and expired included, newest
    /// first (e.g. to review them when the peer's key changes).
    fn grants_for_server<'a>(&'a self, fqdn: &'a str) -> StoreFuture<'a, Vec<Grant>>;

    /// Grants neither revoked nor expired at `now` (including those whose
    /// `not_before` is still ahead), latest expiry first, at most `limit`
    /// (capped at [`MAX_PAGE`]): to warm the grant cache at start.
    fn live_grants(&self, now: UnixMillis, limit: u32) -> StoreFuture<'_, Vec<Grant>>;

    /// Revokes a grant at `now`. Revoking twice keeps the first time and
    /// returns `changed = false` without applying `effects` again.
    fn revoke_grant(
        &self,
        id: Uuid,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<Grant>>;

    // --- outbox

    /// Queues a message; idempotent on its key (same content: the stored
    /// message, `changed = false`; different content: a conflict).
    fn enqueue(&self, message: NewOutboxMessage) -> StoreFuture<'_, Outcome<OutboxMessage>>;

    /// Undelivered messages due at `now`, earliest first, at most `limit`.
    fn due(&self, now: UnixMillis, limit: u32) -> StoreFuture<'_, Vec<OutboxMessage>>;

    /// The message queued under `idempotency_key`, delivered or not.
    fn outbox_message<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> StoreFuture<'a, Option<OutboxMessage>>;

    /// How many messages are not delivered yet (due or waiting to retry).
    fn pending_outbox_count(&self) -> StoreFuture<'_, u64>;

    /// Marks a message delivered (again: no-op).
    fn mark_delivered(&self, id: i64, now: UnixMillis) -> StoreFuture<'_, ()>;

    /// Records a failed attempt and when to try next. `error` must not
    /// carry secrets; it is cut to 1024 bytes. A late report on a message
    /// already delivered is ignored.
    fn mark_failed<'a>(
        &'a self,
        id: i64,
        next_attempt_at: UnixMillis,
        error: &'a str,
    ) -> StoreFuture<'a, ()>;

    // --- outgoing requests (our doctors' requests to other servers)

    /// Records a request a local doctor is sending, in state
    /// [`OutgoingState::Sending`], with `effects` (typically the outbox
    /// message carrying it). Idempotent on `id`: a replay with the same
    /// content (kind, doctor, patient, server, role, duration and, while
    /// it is still stored, the code; times are not compared) returns the
    /// stored request with `changed = false` and does not apply `effects`
    /// again; different content is a [`ConflictKind::IdempotencyKey`]
    /// conflict.
    fn create_outgoing_request(
        &self,
        request: NewOutgoingRequest,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<OutgoingRequest>>;

    fn outgoing_request(&self, id: Uuid) -> StoreFuture<'_, Option<OutgoingRequest>>;

    /// The request that received grant `grant_id` (its `jti`).
    fn outgoing_request_by_grant(&self, grant_id: Uuid)
        -> StoreFuture<'_, Option<OutgoingRequest>>;

    /// The doctor's requests (by upstream username), newest first, at most
    /// `limit` (capped at [`MAX_PAGE`]).
    fn outgoing_requests_for_doctor<'a>(
        &'a self,
        doctor: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<OutgoingRequest>>;

    /// Moves a request to `update.state` at `now`, with `effects`, in one
    /// transaction. Allowed: `Sending → Pending`; `Sending | Pending →
    /// Approved | Denied | Voided | Expired | Cancelled | Failed`;
    /// `Approved → Revoked | Expired` ([`OutgoingState::can_move_to`]).
    ///
    /// * `update.grant` is required for `Approved` and refused otherwise
    ///   ([`ConflictKind::Check`]); the stored grant stays through
    ///   revocation and expiry.
    /// * The same state again (e.g. `Pending → Pending`, a replayed
    ///   decision carrying the same grant) changes nothing and returns
    ///   `changed = false` without applying `effects`; `Approved` again
    ///   with another grant is a [`ConflictKind::State`] conflict.
    /// * Any other move is a [`ConflictKind::Transition`] conflict; an
    ///   unknown id is [`StoreError::NotFound`].
    /// * The code is cleared on entering `Approved` or a final state;
    ///   `reason` replaces the stored one.
    fn update_outgoing_request(
        &self,
        id: Uuid,
        update: OutgoingUpdate,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<OutgoingRequest>>;

    // --- transfers (both sides)

    /// Records a new transfer with its effects. The id is the idempotency
    /// key: the same transfer again returns the stored row with
    /// `changed = false`; the id with another side, peer or doctor is a
    /// [`ConflictKind::IdempotencyKey`] conflict.
    fn insert_transfer(
        &self,
        transfer: Transfer,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<Transfer>>;

    fn transfer(&self, id: Uuid) -> StoreFuture<'_, Option<Transfer>>;

    /// The patient approved the pending transfer request `transfer.id`:
    /// in one transaction the request becomes `approved` and the transfer
    /// row is inserted, with `effects`. A request that is not a pending,
    /// unexpired transfer request is a [`ConflictKind::State`] conflict.
    fn approve_transfer(
        &self,
        transfer: Transfer,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Transfer>;

    /// Writes `next` (state, patient, data) over the row, with its
    /// effects, only if the stored version is still `next.version`; the
    /// stored version becomes `next.version + 1`. A stale version is a
    /// [`ConflictKind::State`] conflict and changes nothing.
    fn update_transfer(&self, next: Transfer, effects: Effects) -> StoreFuture<'_, Transfer>;

    /// Transfers, newest first; only those in `states` when not empty.
    fn transfers<'a>(&'a self, states: &'a [&'a str], limit: u32)
        -> StoreFuture<'a, Vec<Transfer>>;

    /// A patient's transfers (by local federation id), newest first.
    fn transfers_for_patient(&self, patient: Uuid) -> StoreFuture<'_, Vec<Transfer>>;
}

/// Largest page the listing methods return.
pub const MAX_PAGE: u32 = 1000;

/// Opens (creating if needed) and migrates the configured store.
///
/// Refuses a database with a newer or modified schema; see [`StoreError`].
pub async fn open(cfg: &config::Store) -> Result<Arc<dyn Store>, StoreError> {
    match cfg {
        config::Store::Sqlite { path } => {
            let store = sqlite::SqliteStore::open(path).await?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the configured store's existing file for reading only: no
/// migration, no write (`mdgate audit`, which may be pointed at a copy kept
/// as evidence). Writes through the returned store fail.
pub async fn open_read_only(cfg: &config::Store) -> Result<Arc<dyn Store>, StoreError> {
    match cfg {
        config::Store::Sqlite { path } => {
            let store = sqlite::SqliteStore::open_read_only(path).await?;
            Ok(Arc::new(store))
        }
    }
}

/// Applies pending migrations (for `mdgate migrate`) and reports them.
pub async fn migrate(cfg: &config::Store) -> Result<MigrationReport, StoreError> {
    match cfg {
        config::Store::Sqlite { path } => sqlite::migrate(path).await,
    }
}

/// The newest schema version this binary supports.
pub fn supported_schema_version() -> i64 {
    sqlite::supported_version()
}

#[cfg(test)]
mod tests;
