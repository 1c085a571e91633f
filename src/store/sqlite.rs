//! The SQLite implementation of [`Store`]: opening, migrating, and every
//! query.
//!
//! One pool of connections, all configured the same way (WAL,
//! `synchronous = FULL`, foreign keys, busy timeout). Opening and
//! migrating happen first on a single connection inside one `BEGIN
//! IMMEDIATE` transaction, so two processes starting on the same file
//! cannot both apply a migration, and a failed upgrade leaves the schema
//! as it was. Reads go straight to the pool; writes that read first take
//! the write lock up front (`BEGIN IMMEDIATE`).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments as _, ConnectOptions, Connection, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::chain::{
    self, AuditBreak, AuditHead, AuditVerification, ChainVerifier, EntryFields, StoredRow, GENESIS,
};
use super::error::{ConflictKind, StoreError};
use super::journal::{self, AuditJournal, Checkpoint, CopyGuard, Durable, Opened};
use super::model::*;
use super::schema::{self, Applied, Embedded};
use super::{Store, StoreFuture, MAX_PAGE};

/// The SQLite migrations, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another writer's lock before failing
/// with [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite has one writer at a time; more connections only help readers.
const POOL_SIZE: u32 = 8;
/// `outbox.last_error` is cut to this many bytes (the schema allows 1024
/// characters, so bytes always fit).
const MAX_ERROR_BYTES: usize = 1024;

// Column lists, one per table, in the order the `*_from_row` functions
// read them. Macros rather than consts so that `concat!` builds each query
// as one `&'static str` (statements are then cached by sqlx).
macro_rules! peer_cols {
    () => {
        "fqdn, first_seen, last_seen, state"
    };
}
macro_rules! key_cols {
    () => {
        "fqdn, selector, purpose, algorithm, key_material, fetched_at, expires_at, revoked"
    };
}
macro_rules! patient_cols {
    () => {
        "federation_id, upstream_id, created_at, moved_to"
    };
}
macro_rules! invitation_cols {
    () => {
        "id, patient, token_hash, created_at, expires_at, used_at"
    };
}
macro_rules! request_cols {
    () => {
        "id, kind, patient, invitation, server_fqdn, requester_cert_sha256, doctor, role, \
         duration_ms, code_hash, attempts, state, created_at, expires_at, decided_at, \
         idempotency_key"
    };
}
macro_rules! grant_cols {
    () => {
        "id, request_id, patient, server_fqdn, server_key_sha256, doctor, role, not_before, \
         expires_at, revoked_at"
    };
}
macro_rules! outbox_cols {
    () => {
        "id, destination, kind, payload, idempotency_key, created_at, attempts, \
         next_attempt_at, delivered_at, last_error"
    };
}
macro_rules! outgoing_cols {
    () => {
        "id, kind, doctor, doctor_upstream_id, patient_address, server_fqdn, role, \
         duration_ms, code, state, reason, grant_id, token, grant_role, grant_not_before, \
         grant_expires_at, created_at, updated_at, expires_at"
    };
}
macro_rules! transfer_cols {
    () => {
        "id, side, state, peer_fqdn, patient, doctor, data, version, created_at, updated_at"
    };
}
macro_rules! audit_cols {
    () => {
        "seq, at, kind, actor, patient, detail, prev_hash, hash"
    };
}

/// `(seq, hash)` of the audit log's last entry; `(0, GENESIS)` when empty.
type ChainHead = (i64, [u8; 32]);

/// The SQLite store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection of its own for appending audit entries, the writes of
    /// the data path, held outside any pool:
    /// - its page cache stays warm: in WAL mode a connection rereads the
    ///   pages it caches whenever another connection committed since its
    ///   last transaction, so appends handed round the main pool reread the
    ///   log's last pages every time;
    /// - sqlx's pool pings a connection each time it is returned, a second
    ///   round trip to SQLite's thread after every commit;
    /// - appends queue on this lock rather than on SQLite's write lock.
    ///
    /// Opened at the first append; dropped after a failed one, so that the
    /// next opens a fresh connection.
    audit_conn: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    /// How to open it.
    audit_options: SqliteConnectOptions,
    /// The chain head as of this store's last audit append: `(seq, hash)`,
    /// `(0, GENESIS)` for an empty log. Only a hint: an append built on it
    /// checks it in the same statement ([`guarded_audit_insert`]) and falls
    /// back to reading the head inside a write transaction when another
    /// writer moved it.
    audit_head: Arc<Mutex<Option<ChainHead>>>,
    /// The audit journal, when this store owns it (see [`journal`]): the
    /// data path's entries become durable there and are copied into
    /// `audit_log` by the copier thread, and by every write transaction
    /// before it appends entries of its own.
    journal: Option<Arc<AuditJournal>>,
    /// The copier thread, joined on close.
    copier: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// The database file.
    path: std::path::PathBuf,
}

/// How often the copier moves the journal's entries into the log when
/// fewer than [`journal::COPY_SOON`] are waiting.
const COPY_TICK: Duration = Duration::from_millis(200);
/// Most journal entries copied in one statement group of a transaction.
const COPY_BATCH: usize = 4096;

impl SqliteStore {
    /// Opens `path` (creating it, mode 0600, if missing), applies pending
    /// migrations and starts the pool.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        SqliteStore::open_with_journal_capacity(path, journal::DEFAULT_CAPACITY).await
    }

    /// [`SqliteStore::open`] with an audit journal ring of `capacity`
    /// bytes (tests use small rings).
    pub(super) async fn open_with_journal_capacity(
        path: &Path,
        capacity: u64,
    ) -> Result<Self, StoreError> {
        let options = connect_options(path)?;
        let mut conn = connect_first(path, &options).await?;
        let report = prepare(&mut conn).await?;
        for (version, description) in &report.applied {
            tracing::info!(
                store.path = %path.display(),
                migration.version = version,
                migration.description = %description,
                "applied store migration"
            );
        }
        conn.close().await?;
        let mut store = SqliteStore::start(path, options, POOL_SIZE).await?;
        store.open_journal(path, capacity).await?;
        Ok(store)
    }

    /// What the journal's writer and copiers share, for tests.
    #[cfg(test)]
    pub(super) fn journal_shared(&self) -> Option<Arc<journal::Shared>> {
        self.journal.as_ref().map(|j| j.shared().clone())
    }

    /// Opens the audit journal beside `path` unless another store holds
    /// it, pairs it with this database, copies what a crash left in it,
    /// and starts the copier.
    async fn open_journal(&mut self, path: &Path, capacity: u64) -> Result<(), StoreError> {
        let checkpoint = read_checkpoint(&self.pool).await?;
        let (journal, register, warning) = match journal::open(path, checkpoint, capacity)? {
            Opened::Owned {
                journal,
                register,
                warning,
            } => (journal, register, warning),
            Opened::HeldElsewhere => {
                tracing::info!(
                    store.path = %path.display(),
                    "the audit journal is held by another mdgate process; this one appends \
                     to the audit log directly"
                );
                return Ok(());
            }
        };
        if let Some(warning) = warning {
            tracing::warn!(store.path = %path.display(), "{warning}");
        }
        if let Some(cp) = register {
            write_checkpoint(&self.pool, cp).await?;
        }
        let shared = journal.shared().clone();
        let recovered = shared.pending_len();
        copy_journal(&self.pool, &shared).await?;
        if recovered > 0 {
            tracing::info!(
                store.path = %path.display(),
                entries = recovered,
                "copied audit entries left in the journal into the audit log"
            );
        }
        let options = self.audit_options.clone();
        let copier = std::thread::Builder::new()
            .name("mdgate-audit-copy".into())
            .spawn(move || run_copier(options, shared))
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: format!("cannot start the audit copier: {e}"),
            })?;
        self.journal = Some(Arc::new(journal));
        *self.copier.lock().unwrap_or_else(PoisonError::into_inner) = Some(copier);
        Ok(())
    }

    /// Copies every entry the journal has acknowledged into the log, so
    /// that a read sees them.
    async fn sync_journal(&self) -> Result<(), StoreError> {
        match &self.journal {
            Some(j) => copy_journal(&self.pool, j.shared()).await,
            None => Ok(()),
        }
    }

    /// Opens an existing store file for reading only (`mdgate audit`): no
    /// file is created, no migration is applied, nothing is written, so
    /// verifying a copy kept as evidence leaves it as it was. A schema newer
    /// than this binary's, or with modified migrations, is refused as
    /// [`SqliteStore::open`] refuses it; an older one is read as it is.
    pub async fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let mut conn = options.connect().await.map_err(|e| open_error(path, e))?;
        let applied = read_applied(&mut conn).await?;
        if applied.is_empty() {
            return Err(StoreError::Open {
                path: path.to_owned(),
                reason: "not an mdgate store (no schema recorded)".to_owned(),
            });
        }
        schema::check_applied(&applied, &embedded())?;
        conn.close().await?;
        SqliteStore::start(path, options, 2).await
    }

    /// The pool of up to `connections` on a checked file, and the audit
    /// connection's settings (opened at the first append).
    async fn start(
        path: &Path,
        options: SqliteConnectOptions,
        connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A ping per acquire is a round trip to the connection's thread
            // for nothing: a local file does not drop connections, and a
            // failing one reports its error on use.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(path, e))?;
        Ok(SqliteStore {
            pool,
            audit_conn: Arc::default(),
            audit_options: options,
            audit_head: Arc::default(),
            journal: None,
            copier: Arc::default(),
            path: path.to_owned(),
        })
    }

    /// The pool, for tests that read per-connection pragmas.
    #[cfg(test)]
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs `pragma` on the audit appends' own connection, for tests.
    #[cfg(test)]
    pub(super) async fn audit_conn_pragma(&self, pragma: &str) -> Result<String, StoreError> {
        let mut slot = self.audit_conn.lock().await;
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.audit_options.connect().await?),
        };
        let row = sqlx::query(pragma).fetch_one(&mut *conn).await?;
        Ok(match row.try_get::<i64, _>(0) {
            Ok(n) => n.to_string(),
            Err(_) => row.try_get::<String, _>(0)?,
        })
    }

    /// Appends `records` at the head of the chain. With the head known from
    /// the last append, one statement does it all (check the head, insert
    /// every row, commit: one round trip to SQLite's thread and one fsync);
    /// otherwise, or when another writer moved the head meanwhile, a write
    /// transaction reads the head first.
    async fn append_audit_records(
        &self,
        records: Vec<AuditRecord>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if self.journal.is_some() {
            // After the entries the journal acknowledged before these.
            let mut tx = self.write_tx().await?;
            tx.copy_journal_in().await?;
            let entries = append_audit_batch_in(&mut tx, records).await?;
            tx.commit().await?;
            return Ok(entries);
        }
        let mut slot = self.audit_conn.lock().await;
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.audit_options.connect().await?),
        };
        let result = self.append_audit_on(conn, records).await;
        if result.is_err() {
            // Whatever state the connection is in, the next append starts
            // on a fresh one.
            if let Some(conn) = slot.take() {
                let _ = conn.close().await;
            }
        }
        result
    }

    async fn append_audit_on(
        &self,
        conn: &mut SqliteConnection,
        records: Vec<AuditRecord>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let hint = *self
            .audit_head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let records = match hint {
            Some(head) if records.len() <= AUDIT_ROWS_PER_INSERT => {
                let (entries, columns) = chain_records(head, records);
                match guarded_audit_insert(&mut *conn, head, &entries, &columns).await {
                    Ok(true) => {
                        self.remember_audit_head(&entries);
                        return Ok(entries);
                    }
                    // Moved, or the snapshot went stale before the write
                    // (SQLITE_BUSY_SNAPSHOT): nothing was written.
                    Ok(false) | Err(_) => entries.into_iter().map(AuditRecord::from).collect(),
                }
            }
            _ => records,
        };
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let entries = append_audit_batch_in(&mut tx, records).await?;
        tx.commit().await?;
        self.remember_audit_head(&entries);
        Ok(entries)
    }

    fn remember_audit_head(&self, entries: &[AuditEntry]) {
        if let Some(last) = entries.last() {
            *self
                .audit_head
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((last.seq, last.hash));
        }
    }

    /// A transaction holding SQLite's write lock from the start, and,
    /// taken before it, the journal's copy lock (always in that order, so
    /// that the copier and a writer never wait for each other's lock).
    async fn write_tx(&self) -> Result<WriteTx, StoreError> {
        let copy = match &self.journal {
            Some(j) => Some(j.shared().lock_copy().await),
            None => None,
        };
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, copy })
    }
}

/// A write transaction of the store ([`SqliteStore::write_tx`]).
pub(super) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    copy: Option<CopyGuard>,
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl WriteTx {
    /// Writes a state change's outbox messages and audit entries; the
    /// entries follow every entry the journal acknowledged before them.
    async fn apply_effects(&mut self, effects: &Effects) -> Result<(), StoreError> {
        for message in &effects.outbox {
            enqueue_in(&mut self.tx, message).await?;
        }
        if !effects.audit.is_empty() {
            self.copy_journal_in().await?;
            append_audit_batch_in(&mut self.tx, effects.audit.clone()).await?;
        }
        Ok(())
    }

    /// Copies the journal's acknowledged entries in this transaction.
    async fn copy_journal_in(&mut self) -> Result<(), StoreError> {
        if let Some(guard) = self.copy.as_mut() {
            copy_in(&mut self.tx, guard).await?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if let Some(guard) = self.copy {
            guard.committed();
        }
        Ok(())
    }
}

/// Copies the journal entries pending now into the log, on a pooled
/// connection (see [`copy_journal_on`]).
async fn copy_journal(pool: &SqlitePool, shared: &Arc<journal::Shared>) -> Result<(), StoreError> {
    if shared.pending_len() == 0 {
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    copy_journal_on(&mut conn, shared).await
}

/// Copies the journal entries pending now into the log, in transactions
/// of at most [`COPY_BATCH`] entries. Entries acknowledged meanwhile wait
/// for the next copy: chasing the writer would commit small batches
/// back to back.
async fn copy_journal_on(
    conn: &mut SqliteConnection,
    shared: &Arc<journal::Shared>,
) -> Result<(), StoreError> {
    let mut left = shared.pending_len();
    while left > 0 {
        let mut guard = shared.lock_copy().await;
        let Some((batch, from)) = guard.next_batch(COPY_BATCH.min(left)) else {
            return Ok(());
        };
        left -= batch.len();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        insert_journal_batch(&mut tx, &batch, from).await?;
        guard.taken(batch.len());
        tx.commit().await?;
        guard.committed();
    }
    Ok(())
}

/// Copies every entry pending in `guard`'s journal within `conn`'s
/// transaction (not yet committed).
async fn copy_in(conn: &mut SqliteConnection, guard: &mut CopyGuard) -> Result<(), StoreError> {
    while let Some((batch, from)) = guard.next_batch(COPY_BATCH) {
        insert_journal_batch(&mut *conn, &batch, from).await?;
        guard.taken(batch.len());
    }
    Ok(())
}

/// The copier's scheduling priority (nice): below the workers, so that a
/// copy (a few milliseconds of CPU every tick) or a step of growth never
/// delays a request on a shared core, yet with enough of a busy core to
/// keep up with the heaviest load (nice 10 weighs about a tenth of the
/// default; a copy needs a few percent).
const COPIER_NICE: i32 = 10;

/// The copier thread: moves the journal's entries into the log every
/// [`COPY_TICK`], or sooner when many are waiting, and grows the journal
/// ahead of its writer, until the journal stops. It runs at a lower
/// priority, on a connection of its own opened from this thread, so that
/// the connection's SQLite thread inherits that priority too.
fn run_copier(options: SqliteConnectOptions, shared: Arc<journal::Shared>) {
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), COPIER_NICE)
    {
        tracing::debug!(error = %e, "cannot lower the audit copier's priority");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit copier's runtime");
            return;
        }
    };
    runtime.block_on(async {
        let mut conn: Option<SqliteConnection> = None;
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut written = shared.written_to();
        while shared.wait_for_work(COPY_TICK).await {
            // Room for five ticks at the rate of the last one (a lap's
            // wrap reads as one step).
            let now = shared.written_to();
            if now != written {
                let rate = now.checked_sub(written).unwrap_or(journal::GROWTH);
                shared.grow_ahead(rate.saturating_mul(5).max(journal::GROWTH));
                written = now;
            }
            if shared.pending_len() == 0 {
                continue;
            }
            let result = match conn.as_mut() {
                Some(c) => copy_journal_on(c, &shared).await,
                None => match options.connect().await {
                    Ok(c) => copy_journal_on(conn.insert(c), &shared).await,
                    Err(e) => Err(e.into()),
                },
            };
            match result {
                Ok(()) => {
                    if failing_since.take().is_some() {
                        tracing::info!("audit entries are being copied into the log again");
                    }
                }
                Err(e) => {
                    // A fresh connection next time; retried at the next
                    // tick; said once, then every minute.
                    if let Some(c) = conn.take() {
                        let _ = c.close().await;
                    }
                    let now = tokio::time::Instant::now();
                    if failing_since
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                    {
                        tracing::error!(
                            error = %e,
                            pending = shared.pending_len(),
                            "cannot copy audit entries from the journal into the log"
                        );
                        failing_since = Some(now);
                    }
                }
            }
        }
        if let Some(c) = conn.take() {
            let _ = c.close().await;
        }
    });
}

/// Inserts `batch` at the head of the chain and moves the checkpoint past
/// it, in the caller's transaction. `from` is where the checkpoint must
/// stand: if it does not, another process copied, and nothing is written.
async fn insert_journal_batch(
    conn: &mut SqliteConnection,
    batch: &[Arc<Durable>],
    from: Checkpoint,
) -> Result<(), StoreError> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    let (mut seq, mut prev_hash) = audit_head_in(&mut *conn).await?;
    // The chain's fields of each row, computed before binding.
    let mut rows = Vec::with_capacity(batch.len());
    for d in batch {
        seq += 1;
        let e = &d.entry;
        let patient = e.patient.map(uuid_text);
        let fields = EntryFields {
            seq,
            at: e.at,
            kind: &e.kind,
            actor: &e.actor,
            patient: patient.as_deref(),
            detail: &e.detail,
        };
        let hash = chain::entry_hash(&prev_hash, &fields);
        rows.push((seq, patient, prev_hash, hash));
        prev_hash = hash;
    }
    let bound: Vec<AuditRow<'_>> = rows
        .iter()
        .zip(batch)
        .map(|((seq, patient, prev, hash), d)| AuditRow {
            seq: *seq,
            at: d.entry.at,
            kind: &d.entry.kind,
            actor: &d.entry.actor,
            patient: patient.as_deref(),
            detail: &d.entry.detail,
            prev_hash: prev,
            hash,
        })
        .collect();
    insert_audit_rows(&mut *conn, &bound).await?;
    let moved = sqlx::query(
        "UPDATE audit_journal SET next_jseq = ?1, next_pos = ?2 \
         WHERE id = 1 AND journal_id = ?3 AND next_jseq = ?4 AND next_pos = ?5",
    )
    .bind(as_stored(last.jseq + 1)?)
    .bind(as_stored(last.end)?)
    .bind(from.journal_id.as_slice())
    .bind(as_stored(from.next_jseq)?)
    .bind(as_stored(from.next_pos)?)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(StoreError::conflict(
            ConflictKind::State,
            "the audit journal's checkpoint moved: another process copied from it",
        ));
    }
    Ok(())
}

/// A journal sequence number or position as SQLite stores it.
fn as_stored(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::corrupt("audit journal position out of range"))
}

/// The journal this database is paired with, and how far it was copied.
async fn read_checkpoint(pool: &SqlitePool) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query("SELECT journal_id, next_jseq, next_pos FROM audit_journal WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: Vec<u8> = row.try_get("journal_id")?;
    let journal_id = <[u8; 16]>::try_from(id.as_slice())
        .map_err(|_| StoreError::corrupt("audit_journal.journal_id is not 16 bytes"))?;
    let number = |col: &str| -> Result<u64, StoreError> {
        let n: i64 = row.try_get(col)?;
        u64::try_from(n).map_err(|_| StoreError::corrupt(format!("audit_journal.{col} < 0")))
    };
    Ok(Some(Checkpoint {
        journal_id,
        next_jseq: number("next_jseq")?,
        next_pos: number("next_pos")?,
    }))
}

/// Pairs the database with a journal (new, or one it did not know).
async fn write_checkpoint(pool: &SqlitePool, cp: Checkpoint) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_journal (id, journal_id, next_jseq, next_pos) VALUES (1, ?1, ?2, ?3) \
         ON CONFLICT (id) DO UPDATE SET journal_id = excluded.journal_id, \
         next_jseq = excluded.next_jseq, next_pos = excluded.next_pos",
    )
    .bind(cp.journal_id.as_slice())
    .bind(as_stored(cp.next_jseq)?)
    .bind(as_stored(cp.next_pos)?)
    .execute(pool)
    .await?;
    Ok(())
}

/// `mdgate migrate`: applies pending migrations on one connection.
pub(super) async fn migrate(path: &Path) -> Result<MigrationReport, StoreError> {
    let options = connect_options(path)?;
    let mut conn = connect_first(path, &options).await?;
    let report = prepare(&mut conn).await?;
    conn.close().await?;
    Ok(report)
}

/// The highest migration version built into this binary.
pub(super) fn supported_version() -> i64 {
    embedded().iter().map(|m| m.version).max().unwrap_or(0)
}

fn embedded() -> Vec<Embedded<'static>> {
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Embedded {
            version: m.version,
            description: &m.description,
            checksum: &m.checksum,
        })
        .collect()
}

/// The page size of a database this store creates (SQLite's default is
/// 4 KiB). The audit log is most of what the store writes: every
/// federated read adds a row, and each page of rows is written twice, to
/// the WAL at commit and to the database at checkpoint, each frame with
/// its own system calls. At 16 KiB the copier and its SQLite thread cost
/// 2.7 µs of the server core per read against 2.9–3.1 at 4 KiB (64 KiB:
/// 2.4, but every small state change would then write 64 KiB a page it
/// touches). A database that exists keeps its page size: SQLite ignores
/// the setting once the file has pages.
const PAGE_SIZE: u32 = 16 * 1024;

fn connect_options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    prepare_file(path)?;
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .page_size(PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT))
}

/// Checks the location before SQLite does (its own message is only
/// "unable to open database file"), and creates a missing file readable by
/// its owner only: it holds patients' grants and audit trail. SQLite gives
/// the `-wal` and `-shm` files the same mode.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let fail = |reason: String| StoreError::Open {
        path: path.to_owned(),
        reason,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail(format!("{} is not a directory", parent.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(fail(format!(
                "directory {} does not exist; create it, writable by the mdgate user",
                parent.display()
            )))
        }
        Err(e) => return Err(fail(format!("cannot access {}: {e}", parent.display()))),
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(fail("is a directory, not a database file".into())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_file(path).map_err(|e| fail(format!("cannot create the file: {e}")))?;
            // Make the new directory entry durable too.
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| fail(format!("cannot sync {}: {e}", parent.display())))
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // Another process created it in between: fine, SQLite opens it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The first connection: opens the file and checks that WAL is on (SQLite
/// silently keeps the old mode where WAL is impossible, e.g. on some
/// network filesystems).
async fn connect_first(
    path: &Path,
    options: &SqliteConnectOptions,
) -> Result<SqliteConnection, StoreError> {
    let mut conn = options.connect().await.map_err(|e| open_error(path, e))?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.to_owned(),
            reason: format!(
                "cannot use WAL journal mode (still {mode:?}); put the database on a local \
                 filesystem"
            ),
        });
    }
    Ok(conn)
}

/// Checks the schema, applies pending migrations, reports what changed.
async fn prepare(conn: &mut SqliteConnection) -> Result<MigrationReport, StoreError> {
    // One write transaction around check and migrations: sqlx runs each
    // migration in a savepoint inside it.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let before = read_applied(&mut tx).await?;
    let embedded = embedded();
    schema::check_applied(&before, &embedded)?;
    MIGRATOR
        .run(&mut *tx)
        .await
        .map_err(|e| migrate_error(e, &embedded))?;
    let after = read_applied(&mut tx).await?;
    tx.commit().await?;

    let applied = after
        .iter()
        .filter(|a| !before.iter().any(|b| b.version == a.version))
        .map(|a| {
            let description = embedded
                .iter()
                .find(|m| m.version == a.version)
                .map_or_else(String::new, |m| m.description.to_owned());
            (a.version, description)
        })
        .collect();
    Ok(MigrationReport {
        applied,
        current: schema::current_version(&after),
    })
}

async fn read_applied(conn: &mut SqliteConnection) -> Result<Vec<Applied>, StoreError> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let rows =
        sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                checksum: r.try_get("checksum")?,
                success: r.try_get("success")?,
            })
        })
        .collect()
}

/// Maps the migrator's errors; the cases [`schema::check_applied`] covers
/// only reach here if the database changed in between.
fn migrate_error(e: MigrateError, embedded: &[Embedded<'_>]) -> StoreError {
    let describe = |v: i64| {
        embedded
            .iter()
            .find(|m| m.version == v)
            .map_or_else(String::new, |m| m.description.to_owned())
    };
    match e {
        MigrateError::VersionMismatch(version) => StoreError::MigrationModified {
            version,
            description: describe(version),
        },
        MigrateError::Execute(e) => StoreError::from(e),
        MigrateError::ExecuteMigration(e, version) => StoreError::Migration {
            reason: format!("migration {version} ({}) failed: {e}", describe(version)),
        },
        other => StoreError::Migration {
            reason: other.to_string(),
        },
    }
}

// --- row decoding

fn uuid_at(row: &SqliteRow, col: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(col)?;
    Uuid::parse_str(&text).map_err(|_| StoreError::corrupt(format!("{col} is not a UUID")))
}

fn hash_at(row: &SqliteRow, col: &str) -> Result<[u8; 32], StoreError> {
    let bytes: Vec<u8> = row.try_get(col)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::corrupt(format!("{col} is not 32 bytes")))
}

fn optional_hash_at(row: &SqliteRow, col: &str) -> Result<Option<[u8; 32]>, StoreError> {
    let bytes: Option<Vec<u8>> = row.try_get(col)?;
    bytes
        .map(|b| {
            <[u8; 32]>::try_from(b.as_slice())
                .map_err(|_| StoreError::corrupt(format!("{col} is not 32 bytes")))
        })
        .transpose()
}

fn u32_at(row: &SqliteRow, col: &str) -> Result<u32, StoreError> {
    let n: i64 = row.try_get(col)?;
    u32::try_from(n).map_err(|_| StoreError::corrupt(format!("{col} out of range")))
}

fn json_at(row: &SqliteRow, col: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|_| StoreError::corrupt(format!("{col} is not JSON")))
}

fn text_enum_at<T>(
    row: &SqliteRow,
    col: &str,
    parse: fn(&str) -> Result<T, UnknownValue>,
) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    parse(&text).map_err(StoreError::corrupt)
}

fn peer_from_row(row: &SqliteRow) -> Result<Peer, StoreError> {
    Ok(Peer {
        fqdn: row.try_get("fqdn")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        state: text_enum_at(row, "state", PeerState::parse)?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<PeerKey, StoreError> {
    Ok(PeerKey {
        fqdn: row.try_get("fqdn")?,
        selector: row.try_get("selector")?,
        purpose: text_enum_at(row, "purpose", KeyPurpose::parse)?,
        algorithm: row.try_get("algorithm")?,
        key: row.try_get("key_material")?,
        fetched_at: row.try_get("fetched_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked: row.try_get("revoked")?,
    })
}

fn patient_from_row(row: &SqliteRow) -> Result<Patient, StoreError> {
    Ok(Patient {
        federation_id: uuid_at(row, "federation_id")?,
        upstream_id: row.try_get("upstream_id")?,
        created_at: row.try_get("created_at")?,
        moved_to: row.try_get("moved_to")?,
    })
}

fn invitation_from_row(row: &SqliteRow) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        id: uuid_at(row, "id")?,
        patient: uuid_at(row, "patient")?,
        token_hash: hash_at(row, "token_hash")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
    })
}

fn request_from_row(row: &SqliteRow) -> Result<AccessRequest, StoreError> {
    Ok(AccessRequest {
        id: uuid_at(row, "id")?,
        kind: text_enum_at(row, "kind", RequestKind::parse)?,
        patient: uuid_at(row, "patient")?,
        invitation: uuid_at(row, "invitation")?,
        server_fqdn: row.try_get("server_fqdn")?,
        requester_cert_sha256: optional_hash_at(row, "requester_cert_sha256")?,
        doctor: row.try_get("doctor")?,
        role: row.try_get("role")?,
        duration_ms: row.try_get("duration_ms")?,
        code_hash: hash_at(row, "code_hash")?,
        attempts: u32_at(row, "attempts")?,
        state: text_enum_at(row, "state", RequestState::parse)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
        idempotency_key: row.try_get("idempotency_key")?,
    })
}

fn grant_from_row(row: &SqliteRow) -> Result<Grant, StoreError> {
    Ok(Grant {
        id: uuid_at(row, "id")?,
        request_id: uuid_at(row, "request_id")?,
        patient: uuid_at(row, "patient")?,
        server_fqdn: row.try_get("server_fqdn")?,
        server_key_sha256: hash_at(row, "server_key_sha256")?,
        doctor: row.try_get("doctor")?,
        role: row.try_get("role")?,
        not_before: row.try_get("not_before")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn outbox_from_row(row: &SqliteRow) -> Result<OutboxMessage, StoreError> {
    Ok(OutboxMessage {
        id: row.try_get("id")?,
        destination: row.try_get("destination")?,
        kind: row.try_get("kind")?,
        payload: json_at(row, "payload")?,
        idempotency_key: row.try_get("idempotency_key")?,
        created_at: row.try_get("created_at")?,
        attempts: u32_at(row, "attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        delivered_at: row.try_get("delivered_at")?,
        last_error: row.try_get("last_error")?,
    })
}

fn outgoing_from_row(row: &SqliteRow) -> Result<OutgoingRequest, StoreError> {
    // The schema keeps the grant's columns all set or all NULL; grant_id
    // stands for them.
    let grant_id: Option<String> = row.try_get("grant_id")?;
    let grant = match grant_id {
        None => None,
        Some(_) => Some(ReceivedGrant {
            id: uuid_at(row, "grant_id")?,
            token: row.try_get("token")?,
            role: row.try_get("grant_role")?,
            not_before: row.try_get("grant_not_before")?,
            expires_at: row.try_get("grant_expires_at")?,
        }),
    };
    Ok(OutgoingRequest {
        id: uuid_at(row, "id")?,
        kind: text_enum_at(row, "kind", RequestKind::parse)?,
        doctor: row.try_get("doctor")?,
        doctor_upstream_id: row.try_get("doctor_upstream_id")?,
        patient_address: row.try_get("patient_address")?,
        server_fqdn: row.try_get("server_fqdn")?,
        role: row.try_get("role")?,
        duration_ms: row.try_get("duration_ms")?,
        code: row.try_get("code")?,
        state: text_enum_at(row, "state", OutgoingState::parse)?,
        reason: row.try_get("reason")?,
        grant,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    let patient: Option<String> = row.try_get("patient")?;
    let patient = patient
        .map(|p| Uuid::parse_str(&p))
        .transpose()
        .map_err(|_| StoreError::corrupt("audit_log.patient is not a UUID"))?;
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        patient,
        detail: json_at(row, "detail")?,
        prev_hash: hash_at(row, "prev_hash")?,
        hash: hash_at(row, "hash")?,
    })
}

fn stored_from_row(row: &SqliteRow) -> Result<StoredRow, StoreError> {
    Ok(StoredRow {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        patient: row.try_get("patient")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// UUIDs are stored lower-case hyphenated.
fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn page(limit: u32) -> i64 {
    i64::from(limit.min(MAX_PAGE))
}

/// The longest prefix of `s` of at most `max` bytes ending on a character
/// boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// --- writes shared by several methods; each runs on a connection already
// inside a `BEGIN IMMEDIATE` transaction.

/// Most rows in one `INSERT`, and in one guarded statement: 8 values a
/// row, 4,096 in all, stays far below SQLite's limit of 32,766 bound
/// values, and above the data path's largest group (256 entries), so a
/// group under the heaviest load still commits in one statement.
const AUDIT_ROWS_PER_INSERT: usize = 512;

/// Appends `records` in order at the head of the chain: one read of the
/// head, the hashes chained in memory, and one multi-row `INSERT` per
/// [`AUDIT_ROWS_PER_INSERT`] entries. The data path's group commit goes
/// through here, so its cost per entry is a hash, not two statements.
/// The caller's write lock (`BEGIN IMMEDIATE`) makes reading the head and
/// inserting one step; the primary key on `seq` would refuse a fork anyway.
pub(super) async fn append_audit_batch_in(
    conn: &mut SqliteConnection,
    records: Vec<AuditRecord>,
) -> Result<Vec<AuditEntry>, StoreError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let head = audit_head_in(&mut *conn).await?;
    let (entries, columns) = chain_records(head, records);
    let bound: Vec<AuditRow<'_>> = entries
        .iter()
        .zip(&columns)
        .map(|(e, c)| AuditRow {
            seq: e.seq,
            at: e.at,
            kind: &e.kind,
            actor: &e.actor,
            patient: c.patient.as_deref(),
            detail: &c.detail,
            prev_hash: &e.prev_hash,
            hash: &e.hash,
        })
        .collect();
    insert_audit_rows(&mut *conn, &bound).await?;
    Ok(entries)
}

/// One chained row of `audit_log`, as bound.
struct AuditRow<'a> {
    seq: i64,
    at: i64,
    kind: &'a str,
    actor: &'a str,
    patient: Option<&'a str>,
    detail: &'a str,
    prev_hash: &'a [u8; 32],
    hash: &'a [u8; 32],
}

/// Statement sizes, in rows, that inserts of audit rows are cut into:
/// each one's text is built once and its prepared statement reused, and a
/// statement's 8 values a row are bound into arguments sized up front.
/// (Text and arguments built row by row, growing as they went, cost the
/// copier about a fifth of its CPU in reallocations.)
const AUDIT_INSERT_SIZES: [usize; 4] = [AUDIT_ROWS_PER_INSERT, 64, 8, 1];

/// `INSERT INTO audit_log (columns) VALUES (?, …), …` for
/// `AUDIT_INSERT_SIZES[size]` rows.
fn audit_insert_sql(size: usize) -> &'static str {
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        AUDIT_INSERT_SIZES
            .iter()
            .map(|&n| {
                let row = "(?, ?, ?, ?, ?, ?, ?, ?)";
                let mut sql = String::with_capacity(64 + n * (row.len() + 2));
                sql.push_str(concat!(
                    "INSERT INTO audit_log (",
                    audit_cols!(),
                    ") VALUES "
                ));
                for i in 0..n {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(row);
                }
                sql
            })
            .collect()
    });
    &texts[size]
}

/// Inserts `rows`, in order, in statements of [`AUDIT_INSERT_SIZES`].
async fn insert_audit_rows(
    conn: &mut SqliteConnection,
    rows: &[AuditRow<'_>],
) -> Result<(), StoreError> {
    let encode = |e| StoreError::from(sqlx::Error::Encode(e));
    let mut rest = rows;
    // The largest size that the rows left fill; none once they are all in
    // (every size is at least 1).
    while let Some((size, &n)) = AUDIT_INSERT_SIZES
        .iter()
        .enumerate()
        .find(|&(_, &n)| n <= rest.len())
    {
        let (chunk, after) = rest.split_at(n);
        rest = after;
        let mut args = SqliteArguments::default();
        args.reserve(n * 8, 0);
        for row in chunk {
            args.add(row.seq).map_err(encode)?;
            args.add(row.at).map_err(encode)?;
            args.add(row.kind).map_err(encode)?;
            args.add(row.actor).map_err(encode)?;
            args.add(row.patient).map_err(encode)?;
            args.add(row.detail).map_err(encode)?;
            args.add(row.prev_hash.as_slice()).map_err(encode)?;
            args.add(row.hash.as_slice()).map_err(encode)?;
        }
        sqlx::query_with(audit_insert_sql(size), args)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The chain's head as the caller's transaction sees it: `(seq, hash)`
/// of the last entry, `(0, GENESIS)` for an empty log.
async fn audit_head_in(conn: &mut SqliteConnection) -> Result<ChainHead, StoreError> {
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match head {
        None => (0, GENESIS),
        Some(row) => (row.try_get("seq")?, hash_at(&row, "hash")?),
    })
}

/// The text columns of an entry as stored.
pub(super) struct AuditColumns {
    detail: String,
    patient: Option<String>,
}

impl AuditColumns {
    /// The hashed fields of `record` at `seq`, with these columns.
    fn fields<'a>(&'a self, seq: i64, record: &'a AuditRecord) -> EntryFields<'a> {
        EntryFields {
            seq,
            at: record.at,
            kind: &record.kind,
            actor: &record.actor,
            patient: self.patient.as_deref(),
            detail: &self.detail,
        }
    }
}

/// Chains `records` after `head` (`(seq, hash)` of the last entry,
/// `(0, GENESIS)` for an empty log).
pub(super) fn chain_records(
    head: (i64, [u8; 32]),
    records: Vec<AuditRecord>,
) -> (Vec<AuditEntry>, Vec<AuditColumns>) {
    let (mut seq, mut prev_hash) = head;
    let mut entries = Vec::with_capacity(records.len());
    let mut columns = Vec::with_capacity(records.len());
    for record in records {
        seq += 1;
        let columns_of = AuditColumns {
            detail: chain::canonical_json(&record.detail),
            patient: record.patient.map(uuid_text),
        };
        let hash = chain::entry_hash(&prev_hash, &columns_of.fields(seq, &record));
        entries.push(AuditEntry {
            seq,
            at: record.at,
            kind: record.kind,
            actor: record.actor,
            patient: record.patient,
            detail: record.detail,
            prev_hash,
            hash,
        });
        columns.push(columns_of);
        prev_hash = hash;
    }
    (entries, columns)
}

/// `VALUES (...), (...)` for `entries`, in [`audit_cols!`] order.
fn push_audit_rows<'a>(
    query: &mut sqlx::QueryBuilder<'a, Sqlite>,
    entries: &'a [AuditEntry],
    columns: &'a [AuditColumns],
) {
    query.push_values(entries.iter().zip(columns), |mut b, (e, c)| {
        b.push_bind(e.seq)
            .push_bind(e.at)
            .push_bind(e.kind.as_str())
            .push_bind(e.actor.as_str())
            .push_bind(c.patient.as_deref())
            .push_bind(c.detail.as_str())
            .push_bind(e.prev_hash.as_slice())
            .push_bind(e.hash.as_slice());
    });
}

/// One statement, in autocommit: inserts `entries` only if the chain's
/// last entry is still `head`. `Ok(false)`: it is not, and nothing was
/// written. SQLite runs the statement as one transaction, so the check and
/// the rows are one step, and a write by another connection since this
/// statement's snapshot fails it with `SQLITE_BUSY_SNAPSHOT` rather than
/// letting it fork the chain.
pub(super) async fn guarded_audit_insert(
    conn: &mut SqliteConnection,
    head: (i64, [u8; 32]),
    entries: &[AuditEntry],
    columns: &[AuditColumns],
) -> Result<bool, StoreError> {
    let mut insert = sqlx::QueryBuilder::<Sqlite>::new(concat!(
        "INSERT INTO audit_log (",
        audit_cols!(),
        ") SELECT * FROM ("
    ));
    push_audit_rows(&mut insert, entries, columns);
    if head.0 == 0 {
        insert.push(") WHERE NOT EXISTS (SELECT 1 FROM audit_log)");
    } else {
        insert
            .push(") WHERE EXISTS (SELECT 1 FROM audit_log WHERE seq = ")
            .push_bind(head.0)
            .push(" AND hash = ")
            .push_bind(head.1.to_vec())
            .push(" AND seq = (SELECT max(seq) FROM audit_log))");
    }
    let done = insert.build().execute(conn).await?;
    Ok(done.rows_affected() == entries.len() as u64)
}

async fn enqueue_in(
    conn: &mut SqliteConnection,
    message: &NewOutboxMessage,
) -> Result<Outcome<OutboxMessage>, StoreError> {
    let payload = chain::canonical_json(&message.payload);
    let inserted = sqlx::query(concat!(
        "INSERT INTO outbox (destination, kind, payload, idempotency_key, created_at, \
         next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING ",
        outbox_cols!()
    ))
    .bind(&message.destination)
    .bind(&message.kind)
    .bind(&payload)
    .bind(&message.idempotency_key)
    .bind(message.created_at)
    .bind(message.next_attempt_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok(Outcome {
            value: outbox_from_row(&row)?,
            changed: true,
        });
    }
    let row = sqlx::query(concat!(
        "SELECT ",
        outbox_cols!(),
        ", payload AS raw_payload FROM outbox WHERE idempotency_key = ?1"
    ))
    .bind(&message.idempotency_key)
    .fetch_one(&mut *conn)
    .await?;
    let raw: String = row.try_get("raw_payload")?;
    let existing = outbox_from_row(&row)?;
    if existing.destination != message.destination
        || existing.kind != message.kind
        || raw != payload
    {
        return Err(StoreError::conflict(
            ConflictKind::IdempotencyKey,
            "outbox idempotency key reused for a different message",
        ));
    }
    Ok(Outcome {
        value: existing,
        changed: false,
    })
}

async fn request_in(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<AccessRequest>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        request_cols!(),
        " FROM access_requests WHERE id = ?1"
    ))
    .bind(uuid_text(id))
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(request_from_row)
    .transpose()
}

async fn transfer_in(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<Transfer>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        transfer_cols!(),
        " FROM transfers WHERE id = ?1"
    ))
    .bind(uuid_text(id))
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(transfer_from_row)
    .transpose()
}

fn transfer_from_row(row: &SqliteRow) -> Result<Transfer, StoreError> {
    let patient: Option<String> = row.try_get("patient")?;
    let data: String = row.try_get("data")?;
    Ok(Transfer {
        id: uuid_at(row, "id")?,
        side: text_enum_at(row, "side", TransferSide::parse)?,
        state: row.try_get("state")?,
        peer_fqdn: row.try_get("peer_fqdn")?,
        patient: patient
            .map(|p| Uuid::parse_str(&p))
            .transpose()
            .map_err(|_| StoreError::corrupt("transfer patient is not a UUID"))?,
        doctor: row.try_get("doctor")?,
        data: serde_json::from_str(&data)
            .map_err(|_| StoreError::corrupt("transfer data is not JSON"))?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

async fn outgoing_in(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<OutgoingRequest>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        outgoing_cols!(),
        " FROM outgoing_requests WHERE id = ?1"
    ))
    .bind(uuid_text(id))
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(outgoing_from_row)
    .transpose()
}

/// Whether a replayed creation describes the stored request. Times are
/// not compared (a retry may be stamped later); the code only while it is
/// still stored.
fn same_outgoing(stored: &OutgoingRequest, new: &NewOutgoingRequest) -> bool {
    stored.kind == new.kind
        && stored.doctor == new.doctor
        && stored.doctor_upstream_id == new.doctor_upstream_id
        && stored.patient_address == new.patient_address
        && stored.server_fqdn == new.server_fqdn
        && stored.role == new.role
        && stored.duration_ms == new.duration_ms
        && stored.code.as_ref().is_none_or(|code| *code == new.code)
}

/// Why a pending-only update matched no row.
async fn not_pending(conn: &mut SqliteConnection, id: Uuid) -> StoreError {
    match request_in(conn, id).await {
        Ok(Some(r)) => StoreError::conflict(
            ConflictKind::State,
            format!("access request is {}, not pending", r.state),
        ),
        Ok(None) => StoreError::NotFound {
            what: "access request",
        },
        Err(e) => e,
    }
}

impl Store for SqliteStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn schema_version(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            Ok(schema::current_version(&read_applied(&mut conn).await?))
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if let Some(journal) = &self.journal {
                // The writer finishes the groups handed to it; the copier
                // stops; what they left is copied here, so a clean stop
                // leaves the journal empty.
                let stopping = journal.clone();
                let copier = self
                    .copier
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let _ = tokio::task::spawn_blocking(move || {
                    stopping.stop();
                    if let Some(copier) = copier {
                        let _ = copier.join();
                    }
                })
                .await;
                copy_journal(&self.pool, journal.shared()).await?;
            }
            if let Some(conn) = self.audit_conn.lock().await.take() {
                conn.close().await?;
            }
            self.pool.close().await;
            Ok(())
        })
    }

    fn audit_journal(&self) -> Option<&AuditJournal> {
        self.journal.as_deref().filter(|j| j.is_usable())
    }

    fn audit_journal_pending(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            if let Some(journal) = &self.journal {
                return Ok(journal.shared().pending_len() as u64);
            }
            // A schema older than the journal has no checkpoint table.
            let has_table: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_journal'",
            )
            .fetch_optional(&self.pool)
            .await?;
            let checkpoint = match has_table {
                Some(_) => read_checkpoint(&self.pool).await?,
                None => None,
            };
            journal::count_uncopied(&self.path, checkpoint)
                .map_err(|e| StoreError::corrupt(format!("cannot read the audit journal: {e}")))
        })
    }

    fn append_audit(&self, record: AuditRecord) -> StoreFuture<'_, AuditEntry> {
        Box::pin(async move {
            self.append_audit_records(vec![record])
                .await?
                .pop()
                .ok_or_else(|| StoreError::corrupt("an audit append returned no entry"))
        })
    }

    fn append_audit_batch(&self, records: Vec<AuditRecord>) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(self.append_audit_records(records))
    }

    fn audit_entries(&self, from_seq: i64, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(async move {
            self.sync_journal().await?;
            sqlx::query(concat!(
                "SELECT ",
                audit_cols!(),
                " FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
            ))
            .bind(from_seq)
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(audit_from_row)
            .collect()
        })
    }

    fn audit_entries_for_patient(
        &self,
        patient: Uuid,
        from_seq: i64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(async move {
            self.sync_journal().await?;
            sqlx::query(concat!(
                "SELECT ",
                audit_cols!(),
                " FROM audit_log WHERE patient = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3"
            ))
            .bind(uuid_text(patient))
            .bind(from_seq)
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(audit_from_row)
            .collect()
        })
    }

    fn audit_head(&self) -> StoreFuture<'_, Option<AuditHead>> {
        Box::pin(async move {
            self.sync_journal().await?;
            let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| {
                Ok(AuditHead {
                    seq: r.try_get("seq")?,
                    hash: hash_at(&r, "hash")?,
                })
            })
            .transpose()
        })
    }

    fn verify_audit(
        &self,
        recorded: Option<AuditHead>,
    ) -> StoreFuture<'_, Result<AuditVerification, AuditBreak>> {
        Box::pin(async move {
            self.sync_journal().await?;
            let mut conn = self.pool.acquire().await?;
            // One statement, hence one consistent snapshot, streamed so a
            // long log is never held in memory. Appends made meanwhile are
            // not seen.
            let mut rows = sqlx::query(concat!(
                "SELECT ",
                audit_cols!(),
                " FROM audit_log ORDER BY seq"
            ))
            .fetch(&mut *conn);
            let mut verifier = ChainVerifier::new(recorded);
            while let Some(row) = rows.try_next().await? {
                if let Err(broken) = verifier.push(&stored_from_row(&row)?) {
                    return Ok(Err(broken));
                }
            }
            Ok(verifier.finish())
        })
    }

    fn touch_peer<'a>(&'a self, fqdn: &'a str, now: UnixMillis) -> StoreFuture<'a, Peer> {
        Box::pin(async move {
            let row = sqlx::query(concat!(
                "INSERT INTO peers (fqdn, first_seen, last_seen, state) \
                 VALUES (?1, ?2, ?2, 'active') \
                 ON CONFLICT (fqdn) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen) \
                 RETURNING ",
                peer_cols!()
            ))
            .bind(fqdn)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
            peer_from_row(&row)
        })
    }

    fn peer<'a>(&'a self, fqdn: &'a str) -> StoreFuture<'a, Option<Peer>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                peer_cols!(),
                " FROM peers WHERE fqdn = ?1"
            ))
            .bind(fqdn)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(peer_from_row)
            .transpose()
        })
    }

    fn peers(&self) -> StoreFuture<'_, Vec<Peer>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                peer_cols!(),
                " FROM peers ORDER BY fqdn"
            ))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(peer_from_row)
            .collect()
        })
    }

    fn set_peer_state<'a>(&'a self, fqdn: &'a str, state: PeerState) -> StoreFuture<'a, Peer> {
        Box::pin(async move {
            let row = sqlx::query(concat!(
                "UPDATE peers SET state = ?2 WHERE fqdn = ?1 RETURNING ",
                peer_cols!()
            ))
            .bind(fqdn)
            .bind(state.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "peer" })?;
            peer_from_row(&row)
        })
    }

    fn upsert_peer_key(&self, key: PeerKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let result = sqlx::query(
                "INSERT INTO peer_keys (fqdn, selector, purpose, algorithm, key_material, \
                 fetched_at, expires_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (fqdn, selector) DO UPDATE SET purpose = excluded.purpose, \
                 algorithm = excluded.algorithm, key_material = excluded.key_material, \
                 fetched_at = excluded.fetched_at, expires_at = excluded.expires_at, \
                 revoked = excluded.revoked",
            )
            .bind(&key.fqdn)
            .bind(&key.selector)
            .bind(key.purpose.as_str())
            .bind(&key.algorithm)
            .bind(&key.key)
            .bind(key.fetched_at)
            .bind(key.expires_at)
            .bind(key.revoked)
            .execute(&self.pool)
            .await;
            match result.map_err(StoreError::from) {
                Ok(_) => Ok(()),
                // The only foreign key is the peer.
                Err(StoreError::Conflict {
                    kind: ConflictKind::ForeignKey,
                    ..
                }) => Err(StoreError::NotFound { what: "peer" }),
                Err(e) => Err(e),
            }
        })
    }

    fn peer_keys<'a>(&'a self, fqdn: &'a str) -> StoreFuture<'a, Vec<PeerKey>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM peer_keys WHERE fqdn = ?1 ORDER BY selector"
            ))
            .bind(fqdn)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_from_row)
            .collect()
        })
    }

    fn peer_key<'a>(
        &'a self,
        fqdn: &'a str,
        selector: &'a str,
    ) -> StoreFuture<'a, Option<PeerKey>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM peer_keys WHERE fqdn = ?1 AND selector = ?2"
            ))
            .bind(fqdn)
            .bind(selector)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
        })
    }

    fn revoke_peer_key<'a>(&'a self, fqdn: &'a str, selector: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let done =
                sqlx::query("UPDATE peer_keys SET revoked = 1 WHERE fqdn = ?1 AND selector = ?2")
                    .bind(fqdn)
                    .bind(selector)
                    .execute(&self.pool)
                    .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound { what: "peer key" });
            }
            Ok(())
        })
    }

    fn purge_expired_peer_keys(&self, now: UnixMillis) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM peer_keys WHERE expires_at <= ?1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn insert_patient(&self, patient: Patient) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO patients (federation_id, upstream_id, created_at, moved_to) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(uuid_text(patient.federation_id))
            .bind(patient.upstream_id)
            .bind(patient.created_at)
            .bind(&patient.moved_to)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn patient(&self, federation_id: Uuid) -> StoreFuture<'_, Option<Patient>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                patient_cols!(),
                " FROM patients WHERE federation_id = ?1"
            ))
            .bind(uuid_text(federation_id))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(patient_from_row)
            .transpose()
        })
    }

    fn patient_by_upstream_id(&self, upstream_id: i64) -> StoreFuture<'_, Option<Patient>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                patient_cols!(),
                " FROM patients WHERE upstream_id = ?1"
            ))
            .bind(upstream_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(patient_from_row)
            .transpose()
        })
    }

    fn set_patient_moved<'a>(
        &'a self,
        federation_id: Uuid,
        address: &'a str,
        effects: Effects,
    ) -> StoreFuture<'a, Patient> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let row = sqlx::query(concat!(
                "UPDATE patients SET moved_to = ?2 WHERE federation_id = ?1 RETURNING ",
                patient_cols!()
            ))
            .bind(uuid_text(federation_id))
            .bind(address)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound { what: "patient" })?;
            let patient = patient_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(patient)
        })
    }

    fn insert_invitation(&self, invitation: Invitation) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO invitations (id, patient, token_hash, created_at, expires_at, \
                 used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(uuid_text(invitation.id))
            .bind(uuid_text(invitation.patient))
            .bind(invitation.token_hash.as_slice())
            .bind(invitation.created_at)
            .bind(invitation.expires_at)
            .bind(invitation.used_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn invitation_by_token_hash(
        &self,
        token_hash: [u8; 32],
    ) -> StoreFuture<'_, Option<Invitation>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                invitation_cols!(),
                " FROM invitations WHERE token_hash = ?1"
            ))
            .bind(token_hash.as_slice())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(invitation_from_row)
            .transpose()
        })
    }

    fn invitations_for_patient(
        &self,
        patient: Uuid,
        limit: u32,
    ) -> StoreFuture<'_, Vec<Invitation>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                invitation_cols!(),
                " FROM invitations WHERE patient = ?1 ORDER BY created_at DESC, id LIMIT ?2"
            ))
            .bind(uuid_text(patient))
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(invitation_from_row)
            .collect()
        })
    }

    fn revoke_invitation(&self, id: Uuid, now: UnixMillis) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            // Never before its creation (the schema's CHECK): a clock that
            // stepped back must not make the withdrawal fail.
            let done = sqlx::query(
                "UPDATE invitations SET used_at = max(?2, created_at) \
                 WHERE id = ?1 AND used_at IS NULL",
            )
            .bind(uuid_text(id))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM invitations WHERE id = ?1")
                        .bind(uuid_text(id))
                        .fetch_optional(&mut *tx)
                        .await?;
                found.ok_or(StoreError::NotFound { what: "invitation" })?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn create_access_request(
        &self,
        request: NewAccessRequest,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<AccessRequest>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let existing = sqlx::query(concat!(
                "SELECT ",
                request_cols!(),
                " FROM access_requests WHERE server_fqdn = ?1 AND idempotency_key = ?2"
            ))
            .bind(&request.server_fqdn)
            .bind(&request.idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                let stored = request_from_row(&row)?;
                // The certificate is not compared: a retry may come after
                // the peer rolled its TLS key; the request keeps the first.
                let same = stored.kind == request.kind
                    && stored.patient == request.patient
                    && stored.doctor == request.doctor
                    && stored.role == request.role
                    && stored.duration_ms == request.duration_ms
                    && stored.code_hash == request.code_hash;
                if !same {
                    return Err(StoreError::conflict(
                        ConflictKind::IdempotencyKey,
                        "access request idempotency key reused for a different request",
                    ));
                }
                return Ok(Outcome {
                    value: stored,
                    changed: false,
                });
            }
            // Use up the invitation: it must be the patient's, unused and
            // unexpired at the request's creation time.
            let invitation: Option<String> = sqlx::query_scalar(
                "UPDATE invitations SET used_at = ?3 WHERE token_hash = ?1 AND patient = ?2 \
                 AND used_at IS NULL AND expires_at > ?3 RETURNING id",
            )
            .bind(request.invitation_token_hash.as_slice())
            .bind(uuid_text(request.patient))
            .bind(request.created_at)
            .fetch_optional(&mut *tx)
            .await?;
            let invitation = invitation.ok_or(StoreError::NotFound {
                what: "live invitation",
            })?;
            let row = sqlx::query(concat!(
                "INSERT INTO access_requests (id, kind, patient, invitation, server_fqdn, \
                 requester_cert_sha256, doctor, role, duration_ms, code_hash, created_at, \
                 expires_at, idempotency_key) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING ",
                request_cols!()
            ))
            .bind(uuid_text(request.id))
            .bind(request.kind.as_str())
            .bind(uuid_text(request.patient))
            .bind(&invitation)
            .bind(&request.server_fqdn)
            .bind(request.requester_cert_sha256.as_slice())
            .bind(&request.doctor)
            .bind(&request.role)
            .bind(request.duration_ms)
            .bind(request.code_hash.as_slice())
            .bind(request.created_at)
            .bind(request.expires_at)
            .bind(&request.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
            let stored = request_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(Outcome {
                value: stored,
                changed: true,
            })
        })
    }

    fn access_request(&self, id: Uuid) -> StoreFuture<'_, Option<AccessRequest>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            request_in(&mut conn, id).await
        })
    }

    fn pending_requests_for_patient(&self, patient: Uuid) -> StoreFuture<'_, Vec<AccessRequest>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                request_cols!(),
                " FROM access_requests WHERE patient = ?1 AND state = 'pending' \
                 ORDER BY created_at, id"
            ))
            .bind(uuid_text(patient))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(request_from_row)
            .collect()
        })
    }

    fn expired_pending_requests(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> StoreFuture<'_, Vec<AccessRequest>> {
        Box::pin(async move {
            // Served by the partial index access_requests_pending_expiry.
            sqlx::query(concat!(
                "SELECT ",
                request_cols!(),
                " FROM access_requests WHERE state = 'pending' AND expires_at <= ?1 \
                 ORDER BY expires_at, id LIMIT ?2"
            ))
            .bind(now)
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(request_from_row)
            .collect()
        })
    }

    fn record_wrong_code(
        &self,
        id: Uuid,
        max_attempts: u32,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, AccessRequest> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            // SET expressions see the row as it was before the update.
            let row = sqlx::query(concat!(
                "UPDATE access_requests SET attempts = attempts + 1, \
                 state = CASE WHEN attempts + 1 >= ?2 THEN 'voided' ELSE state END, \
                 decided_at = CASE WHEN attempts + 1 >= ?2 THEN ?3 ELSE decided_at END \
                 WHERE id = ?1 AND state = 'pending' RETURNING ",
                request_cols!()
            ))
            .bind(uuid_text(id))
            .bind(i64::from(max_attempts))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(not_pending(&mut tx, id).await);
            };
            let request = request_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(request)
        })
    }

    fn close_request(
        &self,
        id: Uuid,
        to: RequestState,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, AccessRequest> {
        Box::pin(async move {
            if matches!(to, RequestState::Pending | RequestState::Approved) {
                return Err(StoreError::conflict(
                    ConflictKind::State,
                    format!("close_request cannot move a request to {to}"),
                ));
            }
            let mut tx = self.write_tx().await?;
            let row = sqlx::query(concat!(
                "UPDATE access_requests SET state = ?2, decided_at = ?3 \
                 WHERE id = ?1 AND state = 'pending' RETURNING ",
                request_cols!()
            ))
            .bind(uuid_text(id))
            .bind(to.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(not_pending(&mut tx, id).await);
            };
            let request = request_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(request)
        })
    }

    fn approve_request(
        &self,
        grant: Grant,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Grant> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let request =
                request_in(&mut tx, grant.request_id)
                    .await?
                    .ok_or(StoreError::NotFound {
                        what: "access request",
                    })?;
            if request.state != RequestState::Pending {
                return Err(StoreError::conflict(
                    ConflictKind::State,
                    format!("access request is {}, not pending", request.state),
                ));
            }
            if now >= request.expires_at {
                return Err(StoreError::conflict(
                    ConflictKind::State,
                    "access request has expired",
                ));
            }
            // Role and validity are the patient's choice at approval; who
            // the grant is for is fixed by the request, down to the
            // certificate the requesting server presented (requests stored
            // before schema version 2 did not record it).
            if grant.patient != request.patient
                || grant.server_fqdn != request.server_fqdn
                || grant.doctor != request.doctor
                || request
                    .requester_cert_sha256
                    .is_some_and(|cert| cert != grant.server_key_sha256)
            {
                return Err(StoreError::conflict(
                    ConflictKind::Check,
                    "grant does not match its request (patient, server, certificate or doctor)",
                ));
            }
            sqlx::query(
                "UPDATE access_requests SET state = 'approved', decided_at = ?2 WHERE id = ?1",
            )
            .bind(uuid_text(request.id))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO grants (id, request_id, patient, server_fqdn, server_key_sha256, \
                 doctor, role, not_before, expires_at, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .bind(uuid_text(grant.id))
            .bind(uuid_text(grant.request_id))
            .bind(uuid_text(grant.patient))
            .bind(&grant.server_fqdn)
            .bind(grant.server_key_sha256.as_slice())
            .bind(&grant.doctor)
            .bind(&grant.role)
            .bind(grant.not_before)
            .bind(grant.expires_at)
            .bind(grant.revoked_at)
            .execute(&mut *tx)
            .await?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(grant)
        })
    }

    fn grant(&self, id: Uuid) -> StoreFuture<'_, Option<Grant>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                grant_cols!(),
                " FROM grants WHERE id = ?1"
            ))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(grant_from_row)
            .transpose()
        })
    }

    fn grant_for_request(&self, request_id: Uuid) -> StoreFuture<'_, Option<Grant>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                grant_cols!(),
                " FROM grants WHERE request_id = ?1"
            ))
            .bind(uuid_text(request_id))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(grant_from_row)
            .transpose()
        })
    }

    fn grants_for_server<'a>(&'a self, fqdn: &'a str) -> StoreFuture<'a, Vec<Grant>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                grant_cols!(),
                " FROM grants WHERE server_fqdn = ?1 ORDER BY not_before DESC, id"
            ))
            .bind(fqdn)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(grant_from_row)
            .collect()
        })
    }

    fn live_grants(&self, now: UnixMillis, limit: u32) -> StoreFuture<'_, Vec<Grant>> {
        Box::pin(async move {
            // Served by the partial index grants_live.
            sqlx::query(concat!(
                "SELECT ",
                grant_cols!(),
                " FROM grants WHERE revoked_at IS NULL AND expires_at > ?1 \
                 ORDER BY expires_at DESC, id LIMIT ?2"
            ))
            .bind(now)
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(grant_from_row)
            .collect()
        })
    }

    fn grants_for_patient(&self, patient: Uuid) -> StoreFuture<'_, Vec<Grant>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                grant_cols!(),
                " FROM grants WHERE patient = ?1 ORDER BY not_before DESC, id"
            ))
            .bind(uuid_text(patient))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(grant_from_row)
            .collect()
        })
    }

    fn revoke_grant(
        &self,
        id: Uuid,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<Grant>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let revoked = sqlx::query(concat!(
                "UPDATE grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL \
                 RETURNING ",
                grant_cols!()
            ))
            .bind(uuid_text(id))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = revoked {
                let grant = grant_from_row(&row)?;
                tx.apply_effects(&effects).await?;
                tx.commit().await?;
                return Ok(Outcome {
                    value: grant,
                    changed: true,
                });
            }
            let row = sqlx::query(concat!(
                "SELECT ",
                grant_cols!(),
                " FROM grants WHERE id = ?1"
            ))
            .bind(uuid_text(id))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound { what: "grant" })?;
            Ok(Outcome {
                value: grant_from_row(&row)?,
                changed: false,
            })
        })
    }

    fn enqueue(&self, message: NewOutboxMessage) -> StoreFuture<'_, Outcome<OutboxMessage>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let outcome = enqueue_in(&mut tx, &message).await?;
            tx.commit().await?;
            Ok(outcome)
        })
    }

    fn due(&self, now: UnixMillis, limit: u32) -> StoreFuture<'_, Vec<OutboxMessage>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                outbox_cols!(),
                " FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ?1 \
                 ORDER BY next_attempt_at, id LIMIT ?2"
            ))
            .bind(now)
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(outbox_from_row)
            .collect()
        })
    }

    fn outbox_message<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> StoreFuture<'a, Option<OutboxMessage>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                outbox_cols!(),
                " FROM outbox WHERE idempotency_key = ?1"
            ))
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(outbox_from_row)
            .transpose()
        })
    }

    fn pending_outbox_count(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
                    .fetch_one(&self.pool)
                    .await?;
            u64::try_from(n).map_err(|_| StoreError::corrupt("negative outbox count"))
        })
    }

    fn mark_delivered(&self, id: i64, now: UnixMillis) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1 \
                 WHERE id = ?1 AND delivered_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                outbox_exists(&mut tx, id).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn mark_failed<'a>(
        &'a self,
        id: i64,
        next_attempt_at: UnixMillis,
        error: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, \
                 last_error = ?3 WHERE id = ?1 AND delivered_at IS NULL",
            )
            .bind(id)
            .bind(next_attempt_at)
            .bind(truncate_utf8(error, MAX_ERROR_BYTES))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                outbox_exists(&mut tx, id).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn create_outgoing_request(
        &self,
        request: NewOutgoingRequest,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<OutgoingRequest>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            if let Some(stored) = outgoing_in(&mut tx, request.id).await? {
                if !same_outgoing(&stored, &request) {
                    return Err(StoreError::conflict(
                        ConflictKind::IdempotencyKey,
                        "outgoing request id reused for a different request",
                    ));
                }
                return Ok(Outcome {
                    value: stored,
                    changed: false,
                });
            }
            let row = sqlx::query(concat!(
                "INSERT INTO outgoing_requests (id, kind, doctor, doctor_upstream_id, \
                 patient_address, server_fqdn, role, duration_ms, code, state, created_at, \
                 updated_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'sending', ?10, ?10, ?11) \
                 RETURNING ",
                outgoing_cols!()
            ))
            .bind(uuid_text(request.id))
            .bind(request.kind.as_str())
            .bind(&request.doctor)
            .bind(request.doctor_upstream_id)
            .bind(&request.patient_address)
            .bind(&request.server_fqdn)
            .bind(&request.role)
            .bind(request.duration_ms)
            .bind(&request.code)
            .bind(request.created_at)
            .bind(request.expires_at)
            .fetch_one(&mut *tx)
            .await?;
            let stored = outgoing_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(Outcome {
                value: stored,
                changed: true,
            })
        })
    }

    fn outgoing_request(&self, id: Uuid) -> StoreFuture<'_, Option<OutgoingRequest>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            outgoing_in(&mut conn, id).await
        })
    }

    fn outgoing_request_by_grant(
        &self,
        grant_id: Uuid,
    ) -> StoreFuture<'_, Option<OutgoingRequest>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                outgoing_cols!(),
                " FROM outgoing_requests WHERE grant_id = ?1"
            ))
            .bind(uuid_text(grant_id))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(outgoing_from_row)
            .transpose()
        })
    }

    fn outgoing_requests_for_doctor<'a>(
        &'a self,
        doctor: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<OutgoingRequest>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                outgoing_cols!(),
                " FROM outgoing_requests WHERE doctor = ?1 \
                 ORDER BY created_at DESC, id LIMIT ?2"
            ))
            .bind(doctor)
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(outgoing_from_row)
            .collect()
        })
    }

    fn update_outgoing_request(
        &self,
        id: Uuid,
        update: OutgoingUpdate,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<OutgoingRequest>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let stored = outgoing_in(&mut tx, id)
                .await?
                .ok_or(StoreError::NotFound {
                    what: "outgoing request",
                })?;
            match plan_outgoing_update(stored.state, stored.grant.as_ref(), &update)? {
                UpdatePlan::Replay => {
                    return Ok(Outcome {
                        value: stored,
                        changed: false,
                    })
                }
                UpdatePlan::Apply => {}
            }
            let to = update.state;
            let grant = update.grant.as_ref();
            // The grant's columns change only when one is given (approval);
            // updated_at never goes back, even if the caller's clock did.
            let row = sqlx::query(concat!(
                "UPDATE outgoing_requests SET state = ?2, reason = ?3, \
                 code = CASE WHEN ?4 THEN code ELSE NULL END, \
                 grant_id = coalesce(?5, grant_id), token = coalesce(?6, token), \
                 grant_role = coalesce(?7, grant_role), \
                 grant_not_before = coalesce(?8, grant_not_before), \
                 grant_expires_at = coalesce(?9, grant_expires_at), \
                 updated_at = max(updated_at, ?10) \
                 WHERE id = ?1 RETURNING ",
                outgoing_cols!()
            ))
            .bind(uuid_text(id))
            .bind(to.as_str())
            .bind(&update.reason)
            .bind(to.keeps_code())
            .bind(grant.map(|g| uuid_text(g.id)))
            .bind(grant.map(|g| g.token.as_str()))
            .bind(grant.map(|g| g.role.as_str()))
            .bind(grant.map(|g| g.not_before))
            .bind(grant.map(|g| g.expires_at))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let value = outgoing_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(Outcome {
                value,
                changed: true,
            })
        })
    }

    fn insert_transfer(
        &self,
        transfer: Transfer,
        effects: Effects,
    ) -> StoreFuture<'_, Outcome<Transfer>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            if let Some(stored) = transfer_in(&mut tx, transfer.id).await? {
                if stored.side != transfer.side
                    || stored.peer_fqdn != transfer.peer_fqdn
                    || stored.doctor != transfer.doctor
                {
                    return Err(StoreError::conflict(
                        ConflictKind::IdempotencyKey,
                        "transfer id reused for a different transfer",
                    ));
                }
                return Ok(Outcome {
                    value: stored,
                    changed: false,
                });
            }
            let row = sqlx::query(concat!(
                "INSERT INTO transfers (id, side, state, peer_fqdn, patient, doctor, data, \
                 version, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9) RETURNING ",
                transfer_cols!()
            ))
            .bind(uuid_text(transfer.id))
            .bind(transfer.side.as_str())
            .bind(&transfer.state)
            .bind(&transfer.peer_fqdn)
            .bind(transfer.patient.map(uuid_text))
            .bind(&transfer.doctor)
            .bind(transfer.data.to_string())
            .bind(transfer.created_at)
            .bind(transfer.updated_at)
            .fetch_one(&mut *tx)
            .await?;
            let stored = transfer_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(Outcome {
                value: stored,
                changed: true,
            })
        })
    }

    fn approve_transfer(
        &self,
        transfer: Transfer,
        now: UnixMillis,
        effects: Effects,
    ) -> StoreFuture<'_, Transfer> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE access_requests SET state = 'approved', decided_at = ?2 \
                 WHERE id = ?1 AND state = 'pending' AND kind = 'transfer' AND expires_at > ?2",
            )
            .bind(uuid_text(transfer.id))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::conflict(
                    ConflictKind::State,
                    "not a pending, unexpired transfer request",
                ));
            }
            let row = sqlx::query(concat!(
                "INSERT INTO transfers (id, side, state, peer_fqdn, patient, doctor, data, \
                 version, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8) RETURNING ",
                transfer_cols!()
            ))
            .bind(uuid_text(transfer.id))
            .bind(transfer.side.as_str())
            .bind(&transfer.state)
            .bind(&transfer.peer_fqdn)
            .bind(transfer.patient.map(uuid_text))
            .bind(&transfer.doctor)
            .bind(transfer.data.to_string())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let stored = transfer_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    fn transfer(&self, id: Uuid) -> StoreFuture<'_, Option<Transfer>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            transfer_in(&mut conn, id).await
        })
    }

    fn update_transfer(&self, next: Transfer, effects: Effects) -> StoreFuture<'_, Transfer> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let row = sqlx::query(concat!(
                "UPDATE transfers SET state = ?2, patient = ?3, data = ?4, \
                 version = version + 1, updated_at = ?5 \
                 WHERE id = ?1 AND version = ?6 RETURNING ",
                transfer_cols!()
            ))
            .bind(uuid_text(next.id))
            .bind(&next.state)
            .bind(next.patient.map(uuid_text))
            .bind(next.data.to_string())
            .bind(next.updated_at)
            .bind(next.version)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(match transfer_in(&mut tx, next.id).await? {
                    None => StoreError::NotFound { what: "transfer" },
                    Some(_) => StoreError::conflict(
                        ConflictKind::State,
                        "transfer changed since it was read",
                    ),
                });
            };
            let stored = transfer_from_row(&row)?;
            tx.apply_effects(&effects).await?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    fn transfers<'a>(
        &'a self,
        states: &'a [&'a str],
        limit: u32,
    ) -> StoreFuture<'a, Vec<Transfer>> {
        Box::pin(async move {
            let states = serde_json::to_string(states).unwrap_or_else(|_| "[]".to_owned());
            sqlx::query(concat!(
                "SELECT ",
                transfer_cols!(),
                " FROM transfers WHERE json_array_length(?1) = 0 \
                  OR state IN (SELECT value FROM json_each(?1)) \
                  ORDER BY created_at DESC, id LIMIT ?2"
            ))
            .bind(states)
            .bind(page(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(transfer_from_row)
            .collect()
        })
    }

    fn transfers_for_patient(&self, patient: Uuid) -> StoreFuture<'_, Vec<Transfer>> {
        Box::pin(async move {
            sqlx::query(concat!(
                "SELECT ",
                transfer_cols!(),
                " FROM transfers WHERE patient = ?1 ORDER BY created_at DESC, id LIMIT ?2"
            ))
            .bind(uuid_text(patient))
            .bind(page(MAX_PAGE))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(transfer_from_row)
            .collect()
        })
    }
}

/// `Ok` if the outbox message exists, `NotFound` otherwise.
async fn outbox_exists(conn: &mut SqliteConnection, id: i64) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM outbox WHERE id = ?1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    found.map(|_| ()).ok_or(StoreError::NotFound {
        what: "outbox message",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        // "é" is two bytes: cutting at 2 would split it.
        assert_eq!(truncate_utf8("aéb", 2), "a");
    }

    #[test]
    fn binary_embeds_the_initial_migration() {
        let embedded = embedded();
        assert_eq!(embedded.first().map(|m| m.version), Some(1));
        assert!(supported_version() >= 1);
    }
}
