//! The audit journal: where the data path's audit entries become durable.
//!
//! Every read under a grant is written to the audit log before its answer
//! leaves (DESIGN invariants 5 and 6). A commit of SQLite's WAL costs far
//! more than the flush it ends with (pages, locks, a statement, a round
//! trip to the connection's thread), so the data path does not commit to
//! the database: it appends its entries to this file, a preallocated ring
//! written with one synchronous direct write (`O_DIRECT | O_DSYNC`) per
//! group, and answers once that returns. A copier then moves the entries, in order, into the
//! store's hash-chained `audit_log`, many per transaction, and records in
//! the same transaction how far it got (the `audit_journal` row). After a
//! crash the entries past that point are copied at the next start, so an
//! entry acknowledged by the journal is never lost and never copied twice.
//!
//! An entry's place in the chain (`seq`, `prev_hash`, `hash`) is given
//! when it is copied. Every write transaction of the owning store copies
//! the entries acknowledged so far before it appends its own, so the chain
//! keeps the order in which entries were acknowledged; the page readers
//! copy first too, so they see every acknowledged entry.
//!
//! One store owns a journal at a time: it holds an exclusive `flock` on
//! the file. Another store opened on the same database (another process,
//! a test, `mdgate transfers`) finds it locked and appends straight to
//! the log; the chain stays one because the copier, like every writer,
//! builds on the head it reads inside its write transaction.
//!
//! # File format
//!
//! All integers big-endian. A header block, then the ring:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `MDGAJNL1` |
//! | 8..16 | capacity: the file's full size, header included |
//! | 16..32 | the journal's random id |
//! | 32..48 | the first 16 bytes of SHA-256 of bytes 0..32 |
//! | 48..4096 | zero |
//!
//! Frames follow the header, one per entry, each
//! `len: u32 | body (len bytes) | check (16 bytes)`, where `check` is the
//! first 16 bytes of SHA-256(journal id ‖ len ‖ body) and the body is
//! `jseq: u64 | at: i64 | kind (u16 length, UTF-8) | actor (u16 length,
//! UTF-8) | patient (0x00, or 0x01 and the 16 bytes of the UUID) | detail
//! (u32 length, the canonical JSON text)`.
//!
//! Each group of frames starts on a 4 KiB block boundary and is written
//! as whole blocks, zeros after its last frame: a byte of an acknowledged
//! group is never written again.
//!
//! Positions are logical byte offsets that only grow; the ring maps one to
//! `4096 + pos % span` (`span` = capacity - 4096). A frame starts at a
//! position only if a frame of the largest size ([`MAX_FRAME`]) would fit
//! before the end of the ring; otherwise it starts at the next lap. The
//! writer never overwrites a frame that is not yet copied: when the ring
//! is full, appends fail rather than wait. The file grows in steps of
//! zeros up to its capacity (so that a flush never has to write new
//! extents' metadata), then wraps.
//!
//! Reading back from the recorded position, frames are taken while each
//! one's check holds and its `jseq` is the next expected (zeros after a
//! frame send the reader to the next block, where the next group starts):
//! a torn write at the end fails its check, and a frame left from an
//! earlier lap has an older `jseq`, so either ends the scan.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Notify, OwnedMutexGuard};
use uuid::Uuid;

use super::chain;
use super::error::StoreError;
use super::model::AuditRecord;
use relay::Relay;

mod relay;

/// The unit of the journal's writes: every group starts on a block
/// boundary and is written as whole blocks.
pub(super) const BLOCK: u64 = 4096;
/// The header block; frames start here.
pub(super) const HEADER_LEN: u64 = BLOCK;
/// Largest frame, all fields included. The data path's entries are a few
/// hundred bytes.
pub const MAX_FRAME: usize = 64 * 1024;
/// The ring's size, header included: at least 16,000 groups (a block
/// each, more for large ones), several seconds of the heaviest load
/// between two copies, which come every fraction of a second.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// The file grows by this much at a time, written as zeros and synced: a
/// small step keeps the disk free for the writer's flushes in between
/// (a 256 KiB step took 0.4 ms here, 16 MiB 14 to 53 ms).
pub(super) const GROWTH: u64 = 256 << 10;
/// The most the copier keeps the file grown ahead of the writer: the
/// writer itself never has to stop for it unless it outruns the copier.
pub(super) const AHEAD: u64 = 16 << 20;
/// Most entries in one group (one write, one flush).
const MAX_GROUP: usize = 1024;
/// Pending entries that wake the copier before its next tick.
pub(super) const COPY_SOON: usize = 2048;

const MAGIC: &[u8; 8] = b"MDGAJNL1";
const CHECK_LEN: usize = 16;

/// Where copying stands, as recorded in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub journal_id: [u8; 16],
    /// `jseq` of the first entry not yet copied.
    pub next_jseq: u64,
    /// Logical position of that entry's frame.
    pub next_pos: u64,
}

/// An audit record with its detail already in the canonical JSON text
/// that the chain hashes ([`chain::canonical_json`]'s form): what the
/// journal keeps. The data path writes its detail straight in that form
/// ([`chain::canonical_flat`]) rather than building a `serde_json::Value`
/// for every read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRecord {
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub patient: Option<Uuid>,
    pub detail: String,
}

impl From<AuditRecord> for CanonicalRecord {
    fn from(r: AuditRecord) -> Self {
        CanonicalRecord {
            detail: chain::canonical_json(&r.detail),
            at: r.at,
            kind: r.kind,
            actor: r.actor,
            patient: r.patient,
        }
    }
}

/// A durable entry waiting to be copied into the log.
#[derive(Debug)]
pub(super) struct Durable {
    pub jseq: u64,
    /// Logical position just past its frame.
    pub end: u64,
    pub entry: CanonicalRecord,
}

/// Why an append was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("audit journal write failed: {0}")]
    Io(String),
    /// The ring holds no room: the copier is behind (the database is
    /// failing or locked).
    #[error("audit journal full: entries are not being copied into the log")]
    Full,
    #[error("audit entry too large for the journal ({0} bytes)")]
    TooLarge(usize),
    /// A write failed earlier; the journal takes no more entries until the
    /// store is opened again.
    #[error("audit journal unavailable after a write failure")]
    Unavailable,
}

/// Called after each group: entries, seconds until durable, success.
pub type Observer = Box<dyn Fn(usize, f64, bool) + Send + Sync>;

struct Job {
    entry: CanonicalRecord,
    done: oneshot::Sender<Result<(), JournalError>>,
    /// Where the answer goes through: the appending runtime's relay.
    relay: Option<Arc<Relay>>,
}

/// What the writer and the copiers share.
pub(super) struct Shared {
    id: [u8; 16],
    capacity: u64,
    /// Durable entries not yet copied, in `jseq` order.
    pending: Mutex<VecDeque<Arc<Durable>>>,
    /// Everything before this logical position is copied.
    copied_pos: AtomicU64,
    /// `false` once a write failed.
    usable: AtomicBool,
    /// Held by whoever copies, from before its write transaction begins
    /// until it ends, so that copies never overlap.
    copy_lock: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the copier before its tick.
    copy_soon: Notify,
    stop: AtomicBool,
    observer: Mutex<Option<Observer>>,
    /// Bytes of the file written (zeros included) and made durable; the
    /// writer never writes a group past it without growing the file
    /// first.
    allocated: AtomicU64,
    /// Physical end of the writer's last group.
    written_to: AtomicU64,
    /// The file, for growing it; held while growing.
    grow: Mutex<File>,
}

impl Shared {
    /// Where the writer's last group ended in the file.
    pub(super) fn written_to(&self) -> u64 {
        self.written_to.load(Ordering::Acquire)
    }

    /// Grows the file with zeros, a step at a time, until `ahead` bytes
    /// (at most [`AHEAD`]) past the writer's last group are allocated, or
    /// the ring is whole. The copier calls this between copies, with what
    /// the writer wrote since its last tick, so that the writer does not
    /// stop for it; a write failure is only logged (the writer grows the
    /// file itself when it must).
    pub(super) fn grow_ahead(&self, ahead: u64) {
        let ahead = ahead.min(AHEAD);
        loop {
            let want = (self.written_to.load(Ordering::Acquire) + ahead).min(self.capacity);
            let have = self.allocated.load(Ordering::Acquire);
            if have >= want {
                return;
            }
            // One step at a time, the lock released and the disk left to
            // the writer for a moment in between.
            {
                let file = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(e) = grow_once(&file, &self.allocated, self.capacity, have + GROWTH) {
                    tracing::warn!(error = %e, "cannot extend the audit journal ahead of its writer");
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Number of durable entries not yet copied.
    pub(super) fn pending_len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until the copier should run: woken, stopped or `tick` passed.
    /// Returns `false` once stopped.
    pub(super) async fn wait_for_work(&self, tick: std::time::Duration) -> bool {
        if self.stop.load(Ordering::Acquire) {
            return false;
        }
        let _ = tokio::time::timeout(tick, self.copy_soon.notified()).await;
        !self.stop.load(Ordering::Acquire)
    }

    /// Takes the copy lock (before any write transaction begins).
    pub(super) async fn lock_copy(self: &Arc<Self>) -> CopyGuard {
        let lock = self.copy_lock.clone().lock_owned().await;
        CopyGuard {
            _lock: lock,
            shared: self.clone(),
            taken: 0,
        }
    }
}

/// The right to copy pending entries, held across one write transaction.
pub(super) struct CopyGuard {
    _lock: OwnedMutexGuard<()>,
    shared: Arc<Shared>,
    taken: usize,
}

impl CopyGuard {
    /// Up to `limit` pending entries after those already taken in this
    /// transaction, and where copying stands before them; `None` when
    /// there are none. The caller inserts them and records the checkpoint,
    /// then calls [`taken`](Self::taken).
    pub(super) fn next_batch(&self, limit: usize) -> Option<(Vec<Arc<Durable>>, Checkpoint)> {
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let batch: Vec<_> = pending
            .iter()
            .skip(self.taken)
            .take(limit)
            .cloned()
            .collect();
        let first = batch.first()?;
        let next_pos = match self.taken.checked_sub(1).and_then(|i| pending.get(i)) {
            Some(last_taken) => last_taken.end,
            None => self.shared.copied_pos.load(Ordering::Acquire),
        };
        let from = Checkpoint {
            journal_id: self.shared.id,
            next_jseq: first.jseq,
            next_pos,
        };
        Some((batch, from))
    }

    /// Notes that `n` more entries were copied in this transaction.
    pub(super) fn taken(&mut self, n: usize) {
        self.taken += n;
    }

    /// The transaction committed: the entries taken are in the log.
    pub(super) fn committed(self) {
        if self.taken == 0 {
            return;
        }
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut end = None;
        for _ in 0..self.taken {
            if let Some(d) = pending.pop_front() {
                end = Some(d.end);
            }
        }
        if let Some(end) = end {
            self.shared.copied_pos.store(end, Ordering::Release);
        }
    }
}

/// The owning store's handle on its journal.
pub struct AuditJournal {
    shared: Arc<Shared>,
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditJournal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditJournal {
    /// Appends `record`; returns once it is on stable storage. It joins
    /// the audit log's chain when copied, after every entry acknowledged
    /// before it.
    pub async fn append(&self, record: impl Into<CanonicalRecord>) -> Result<(), JournalError> {
        let entry = record.into();
        let (done, wait) = oneshot::channel();
        let relay = relay::here();
        {
            let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = jobs.as_ref().ok_or(JournalError::Unavailable)?;
            tx.send(Job { entry, done, relay })
                .map_err(|_| JournalError::Unavailable)?;
        }
        wait.await.unwrap_or(Err(JournalError::Unavailable))
    }

    /// Whether appends can be made here (no write has failed).
    pub fn is_usable(&self) -> bool {
        self.shared.usable.load(Ordering::Acquire)
    }

    /// A probe of how many entries are durable here and not yet copied
    /// into the log, for the metrics; it keeps no hold on the journal (0
    /// once it is gone).
    pub fn pending_probe(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let shared = Arc::downgrade(&self.shared);
        move || shared.upgrade().map_or(0, |s| s.pending_len())
    }

    /// Calls `observer` after each group: how many entries, the seconds
    /// from the group's start until it was durable, and whether it was.
    pub fn set_observer(&self, observer: Observer) {
        *self
            .shared
            .observer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops taking entries and waits for the writer to finish the groups
    /// already handed to it; stops the copier's loop.
    pub(super) fn stop(&self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        self.shared.stop.store(true, Ordering::Release);
        self.shared.copy_soon.notify_one();
    }
}

impl Drop for AuditJournal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What opening found.
pub(super) enum Opened {
    /// This store owns the journal. Its recovered entries are pending;
    /// `register`, when set, must be written as the database's checkpoint
    /// before anything is appended (a new journal, or one the database
    /// did not know).
    Owned {
        journal: AuditJournal,
        register: Option<Checkpoint>,
        /// Something the operator should hear about.
        warning: Option<String>,
    },
    /// Another store holds the file's lock.
    HeldElsewhere,
}

/// The journal file of the database at `db`.
pub fn journal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-audit");
    PathBuf::from(name)
}

/// Opens (creating if missing) and locks the journal beside `db`, reads
/// back the entries past `checkpoint`, and starts the writer. They stay
/// pending until copied.
pub(super) fn open(
    db: &Path,
    checkpoint: Option<Checkpoint>,
    capacity: u64,
) -> Result<Opened, StoreError> {
    let path = journal_path(db);
    let fail = |reason: String| StoreError::Open {
        path: path.clone(),
        reason,
    };
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| fail(format!("cannot open the audit journal: {e}")))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Opened::HeldElsewhere),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(fail(format!("cannot lock the audit journal: {e}")))
        }
    }
    if !existed {
        sync_parent(&path).map_err(|e| fail(format!("cannot sync its directory: {e}")))?;
    }
    let header = match read_header(&file).map_err(|e| fail(e.to_string()))? {
        Some(h) => h,
        None => {
            // Never written, or the header is damaged. Damaged with
            // entries behind it is not something to paper over.
            if let Some(cp) = checkpoint {
                if read_frame(&file, &cp.journal_id, capacity_of(&file)?, cp.next_pos)
                    .ok()
                    .flatten()
                    .is_some_and(|(jseq, _, _)| jseq == cp.next_jseq)
                {
                    return Err(fail(
                        "the audit journal's header is damaged but entries follow it; \
                         keep the file for inspection and restore it or move it aside"
                            .to_owned(),
                    ));
                }
            }
            init(&file, capacity).map_err(|e| fail(format!("cannot create the journal: {e}")))?
        }
    };
    let (start, register, warning) = match checkpoint {
        Some(cp) if cp.journal_id == header.id => (cp, None, None),
        other => {
            let used = read_frame(&file, &header.id, header.capacity, 0)
                .map_err(|e| fail(e.to_string()))?
                .is_some();
            if used {
                return Err(fail(format!(
                    "the audit journal {} holds entries that this database does not know of \
                     (was the database restored from a backup?); move the journal aside to \
                     start, and keep it: its entries were acknowledged",
                    hex::encode(header.id)
                )));
            }
            let fresh = Checkpoint {
                journal_id: header.id,
                next_jseq: 1,
                next_pos: 0,
            };
            let warning = other.map(|cp| {
                format!(
                    "the audit journal {} named by the database is gone; entries it held \
                     after {} (if any) are not in the audit log; a new journal was started",
                    hex::encode(cp.journal_id),
                    cp.next_jseq.saturating_sub(1)
                )
            });
            (fresh, Some(fresh), warning)
        }
    };
    let (recovered, end, next_jseq) =
        scan(&file, &header, start).map_err(|e| fail(e.to_string()))?;
    let allocated = file
        .metadata()
        .map_err(|e| fail(e.to_string()))?
        .len()
        .max(HEADER_LEN);
    // A handle of its own (not a dup of the locked one): the lock then
    // goes with the writer's handle alone.
    let grow = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| fail(format!("cannot open the audit journal twice: {e}")))?;
    let shared = Arc::new(Shared {
        id: header.id,
        capacity: header.capacity,
        pending: Mutex::new(recovered.into_iter().map(Arc::new).collect()),
        copied_pos: AtomicU64::new(start.next_pos),
        usable: AtomicBool::new(true),
        copy_lock: Arc::default(),
        copy_soon: Notify::new(),
        stop: AtomicBool::new(false),
        observer: Mutex::new(None),
        allocated: AtomicU64::new(allocated),
        written_to: AtomicU64::new(physical(block_ceil(end), span(header.capacity))),
        grow: Mutex::new(grow),
    });
    let direct = open_direct(&path);
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        file,
        direct,
        shared: shared.clone(),
        pos: block_ceil(end),
        jseq: next_jseq,
        buf: AlignedBuf::new(GROUP_BYTES),
        frame: Vec::with_capacity(1024),
        carry: VecDeque::new(),
    };
    let handle = std::thread::Builder::new()
        .name("mdgate-audit-journal".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| fail(format!("cannot start the journal's writer: {e}")))?;
    Ok(Opened::Owned {
        journal: AuditJournal {
            shared,
            path,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        },
        register,
        warning,
    })
}

/// A second handle on the journal for the groups' writes, with
/// `O_DIRECT | O_DSYNC`; `None` where the filesystem refuses direct I/O
/// (tmpfs, some network filesystems): the writer then uses the page cache
/// and `fdatasync`.
fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .ok()
}

/// How many entries the journal beside `db` holds past `checkpoint`
/// (acknowledged, not yet copied into the log), read without taking the
/// journal's lock or writing anything: for `mdgate audit verify`, on a
/// live store or a copy. A journal the database does not name is read
/// from its start. No journal: 0.
pub(super) fn count_uncopied(db: &Path, checkpoint: Option<Checkpoint>) -> io::Result<u64> {
    let file = match File::open(journal_path(db)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let Some(header) = read_header(&file)? else {
        return Ok(0);
    };
    let from = match checkpoint {
        Some(cp) if cp.journal_id == header.id => cp,
        _ => Checkpoint {
            journal_id: header.id,
            next_jseq: 1,
            next_pos: 0,
        },
    };
    Ok(scan(&file, &header, from)?.0.len() as u64)
}

fn capacity_of(file: &File) -> Result<u64, StoreError> {
    // Only used to bound a read when the header is unreadable.
    Ok(file
        .metadata()
        .map_err(|e| StoreError::corrupt(format!("audit journal: {e}")))?
        .len()
        .max(DEFAULT_CAPACITY))
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

struct Header {
    id: [u8; 16],
    capacity: u64,
}

/// The first [`CHECK_LEN`] bytes of SHA-256 over `parts`, in order: the
/// header's and every frame's check.
fn check(parts: &[&[u8]]) -> [u8; CHECK_LEN] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
    }
    let digest = h.finalize();
    let mut out = [0; CHECK_LEN];
    out.copy_from_slice(&digest[..CHECK_LEN]);
    out
}

/// The header, or `None` when the file has none (empty, zeros, damaged).
fn read_header(file: &File) -> io::Result<Option<Header>> {
    let mut raw = [0u8; 48];
    match file.read_exact_at(&mut raw, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if &raw[..8] != MAGIC || raw[32..48] != check(&[&raw[..32]]) {
        return Ok(None);
    }
    let capacity = u64::from_be_bytes(raw[8..16].try_into().unwrap_or_default());
    if capacity < HEADER_LEN + 2 * MAX_FRAME as u64 || capacity % BLOCK != 0 {
        return Ok(None);
    }
    let mut id = [0; 16];
    id.copy_from_slice(&raw[16..32]);
    Ok(Some(Header { id, capacity }))
}

/// Writes a new header (new id) over an empty or damaged file.
fn init(file: &File, capacity: u64) -> io::Result<Header> {
    let capacity = block_floor(capacity.max(HEADER_LEN + 2 * MAX_FRAME as u64));
    let id = *Uuid::new_v4().as_bytes();
    let mut block = vec![0u8; HEADER_LEN as usize];
    block[..8].copy_from_slice(MAGIC);
    block[8..16].copy_from_slice(&capacity.to_be_bytes());
    block[16..32].copy_from_slice(&id);
    let sum = check(&[&block[..32]]);
    block[32..48].copy_from_slice(&sum);
    file.set_len(0)?;
    file.write_all_at(&block, 0)?;
    file.sync_all()?;
    Ok(Header { id, capacity })
}

fn span(capacity: u64) -> u64 {
    capacity - HEADER_LEN
}

/// Where a frame at logical `pos` starts: `pos`, or the next lap's start
/// when a largest frame would not fit before the ring's end.
fn place(pos: u64, span: u64) -> u64 {
    let off = pos % span;
    if off + MAX_FRAME as u64 > span {
        pos - off + span
    } else {
        pos
    }
}

fn physical(pos: u64, span: u64) -> u64 {
    HEADER_LEN + pos % span
}

fn frame_len(e: &CanonicalRecord) -> usize {
    4 + 8
        + 8
        + 2
        + e.kind.len()
        + 2
        + e.actor.len()
        + 1
        + if e.patient.is_some() { 16 } else { 0 }
        + 4
        + e.detail.len()
        + CHECK_LEN
}

fn frame_check(id: &[u8; 16], len_and_body: &[u8]) -> [u8; CHECK_LEN] {
    check(&[id, len_and_body])
}

/// Appends `e`'s frame to `out`. The caller checked its size.
fn encode(out: &mut Vec<u8>, id: &[u8; 16], jseq: u64, e: &CanonicalRecord) {
    let start = out.len();
    let body_len = frame_len(e) - 4 - CHECK_LEN;
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&jseq.to_be_bytes());
    out.extend_from_slice(&e.at.to_be_bytes());
    out.extend_from_slice(&(e.kind.len() as u16).to_be_bytes());
    out.extend_from_slice(e.kind.as_bytes());
    out.extend_from_slice(&(e.actor.len() as u16).to_be_bytes());
    out.extend_from_slice(e.actor.as_bytes());
    match e.patient {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            out.extend_from_slice(p.as_bytes());
        }
    }
    out.extend_from_slice(&(e.detail.len() as u32).to_be_bytes());
    out.extend_from_slice(e.detail.as_bytes());
    let sum = frame_check(id, &out[start..]);
    out.extend_from_slice(&sum);
}

/// Decodes a body; `None` when it does not parse.
fn decode(body: &[u8]) -> Option<(u64, CanonicalRecord)> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
        fn len16(&mut self) -> Option<usize> {
            Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize)
        }
        fn text(&mut self, n: usize) -> Option<String> {
            String::from_utf8(self.take(n)?.to_vec()).ok()
        }
    }
    let mut c = Cursor(body);
    let jseq = c.u64()?;
    let at = c.u64()? as i64;
    let n = c.len16()?;
    let kind = c.text(n)?;
    let n = c.len16()?;
    let actor = c.text(n)?;
    let patient = match c.take(1)?[0] {
        0 => None,
        1 => Some(Uuid::from_slice(c.take(16)?).ok()?),
        _ => return None,
    };
    let n = u32::from_be_bytes(c.take(4)?.try_into().ok()?) as usize;
    let detail = c.text(n)?;
    if !c.0.is_empty() {
        return None;
    }
    Some((
        jseq,
        CanonicalRecord {
            at,
            kind,
            actor,
            patient,
            detail,
        },
    ))
}

/// The frame placed for logical `pos` (see [`place`]), if one is there and
/// its check holds: its `jseq`, entry and the position after it.
fn read_frame(
    file: &File,
    id: &[u8; 16],
    capacity: u64,
    pos: u64,
) -> io::Result<Option<(u64, CanonicalRecord, u64)>> {
    let span = span(capacity);
    let start = place(pos, span);
    let at = physical(start, span);
    let mut len = [0u8; 4];
    match file.read_exact_at(&mut len, at) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let body_len = u32::from_be_bytes(len) as usize;
    let total = 4 + body_len + CHECK_LEN;
    if body_len == 0 || total > MAX_FRAME {
        return Ok(None);
    }
    let mut frame = vec![0u8; total];
    match file.read_exact_at(&mut frame, at) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (signed, check) = frame.split_at(4 + body_len);
    if frame_check(id, signed) != check {
        return Ok(None);
    }
    Ok(decode(&signed[4..]).map(|(jseq, entry)| (jseq, entry, start + total as u64)))
}

/// Every frame from `from` on, in order: the entries, the position after
/// the last, and the next `jseq`. Zeros after a frame are the padding of
/// its group's last block: the next group, if any, starts at the next
/// block.
fn scan(file: &File, header: &Header, from: Checkpoint) -> io::Result<(Vec<Durable>, u64, u64)> {
    let span = span(header.capacity);
    let (mut pos, mut jseq) = (from.next_pos, from.next_jseq);
    let mut out = Vec::new();
    while pos - from.next_pos < span {
        let found = match read_frame(file, &header.id, header.capacity, pos)? {
            Some(frame) => Some(frame),
            None if pos % BLOCK != 0 => {
                read_frame(file, &header.id, header.capacity, block_ceil(pos))?
            }
            None => None,
        };
        match found {
            Some((found, entry, end)) if found == jseq => {
                out.push(Durable { jseq, end, entry });
                pos = end;
                jseq += 1;
            }
            _ => break,
        }
    }
    Ok((out, pos, jseq))
}

fn block_ceil(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

fn block_floor(n: u64) -> u64 {
    n - n % BLOCK
}

/// A buffer whose usable part starts on a block boundary in memory, as
/// `O_DIRECT` requires (found within a plain allocation, no `unsafe`).
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> AlignedBuf {
        let storage = vec![0u8; capacity + BLOCK as usize];
        let misalign = storage.as_ptr() as usize % BLOCK as usize;
        let start = (BLOCK as usize - misalign) % BLOCK as usize;
        AlignedBuf {
            storage,
            start,
            len: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.storage.len() - BLOCK as usize
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.start + self.len;
        self.storage[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Zeros up to the next block boundary.
    fn pad(&mut self) {
        let to = block_ceil(self.len as u64) as usize;
        self.storage[self.start + self.len..self.start + to].fill(0);
        self.len = to;
    }

    fn slice(&self, from: usize, to: usize) -> &[u8] {
        &self.storage[self.start + from..self.start + to]
    }
}

/// Bytes of one group at most (whole blocks).
const GROUP_BYTES: usize = 1 << 20;

/// The thread that writes and flushes groups.
struct Writer {
    /// Buffered: the header, growth, reads.
    file: File,
    /// `O_DIRECT | O_DSYNC` where the filesystem allows it: each write is
    /// on stable storage when it returns, without the page cache. `None`:
    /// buffered writes and `fdatasync`.
    direct: Option<File>,
    shared: Arc<Shared>,
    /// Logical position where the next group starts (a block boundary).
    pos: u64,
    jseq: u64,
    buf: AlignedBuf,
    frame: Vec<u8>,
    /// Jobs that did not fit in the last group, first in the next.
    carry: VecDeque<Job>,
}

/// Where a group's bytes go: a run of whole blocks.
struct Run {
    /// Logical position of its first block.
    at: u64,
    from: usize,
    to: usize,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let mut jobs: Vec<Job> = self.carry.drain(..).collect();
            if jobs.is_empty() {
                match rx.recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => return,
                }
                // Let the threads this one just interrupted run first: where
                // a worker shares the core, it finishes the requests it has
                // in hand, and their entries join this group instead of
                // each waiting for a flush of its own (measured: groups of
                // 6 instead of 3 at 8 connections, a third less of the
                // journal's CPU per entry). Returns at once when nothing
                // else wants the core.
                std::thread::yield_now();
            }
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.group(jobs);
        }
    }

    /// Writes the jobs' entries as one group, starting on a fresh block
    /// (so no acknowledged byte is ever written again), then answers every
    /// job.
    fn group(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        if !self.shared.usable.load(Ordering::Acquire) {
            for job in jobs {
                let _ = job.done.send(Err(JournalError::Unavailable));
            }
            return;
        }
        let span = span(self.shared.capacity);
        // The block holding the first uncopied frame, and everything after
        // it, must not be written over.
        let copied = block_floor(self.shared.copied_pos.load(Ordering::Acquire));
        self.buf.clear();
        let mut runs: Vec<Run> = Vec::with_capacity(2);
        let mut durable = Vec::with_capacity(jobs.len());
        let mut accepted = Vec::with_capacity(jobs.len());
        let mut cur = self.pos;
        let mut jseq = self.jseq;
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let size = frame_len(&job.entry);
            if size > MAX_FRAME
                || job.entry.kind.len() > u16::MAX as usize
                || job.entry.actor.len() > u16::MAX as usize
            {
                let _ = job.done.send(Err(JournalError::TooLarge(size)));
                continue;
            }
            let start = place(cur, span);
            let end = start + size as u64;
            if block_ceil(end) - copied > span {
                let _ = job.done.send(Err(JournalError::Full));
                continue;
            }
            let wraps = start != cur;
            let used = block_ceil(self.buf.len as u64) as usize;
            if used + block_ceil(size as u64) as usize + BLOCK as usize > self.buf.capacity() {
                // The rest waits for the next group, in order.
                self.carry.push_back(job);
                self.carry.extend(jobs.by_ref());
                break;
            }
            if wraps || runs.is_empty() {
                if let Some(last) = runs.last_mut() {
                    self.buf.pad();
                    last.to = self.buf.len;
                }
                runs.push(Run {
                    at: start,
                    from: self.buf.len,
                    to: self.buf.len,
                });
            }
            self.frame.clear();
            encode(&mut self.frame, &self.shared.id, jseq, &job.entry);
            self.buf.push(&self.frame);
            durable.push(Durable {
                jseq,
                end,
                entry: job.entry,
            });
            accepted.push((job.done, job.relay));
            cur = end;
            jseq += 1;
        }
        if accepted.is_empty() {
            return;
        }
        self.buf.pad();
        if let Some(last) = runs.last_mut() {
            last.to = self.buf.len;
        }
        let result = self.write(&runs, span);
        let elapsed = started.elapsed().as_secs_f64();
        if let Some(observe) = self
            .shared
            .observer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            observe(accepted.len(), elapsed, result.is_ok());
        }
        match result {
            Ok(()) => {
                self.pos = block_ceil(cur);
                self.jseq = jseq;
                let wake = {
                    let mut pending = self
                        .shared
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    pending.extend(durable.into_iter().map(Arc::new));
                    pending.len() >= COPY_SOON
                };
                if wake {
                    self.shared.copy_soon.notify_one();
                }
                relay::answer_all(accepted, &Ok(()));
            }
            Err(e) => {
                // After a failed write or flush the file's state is
                // unknown: take no more entries here.
                self.shared.usable.store(false, Ordering::Release);
                tracing::error!(
                    error = %e,
                    entries = accepted.len(),
                    "audit journal write failed; the journal is closed until the next start"
                );
                relay::answer_all(accepted, &Err(JournalError::Io(e.to_string())));
            }
        }
    }

    fn write(&mut self, runs: &[Run], span: u64) -> io::Result<()> {
        for run in runs {
            let at = physical(run.at, span);
            let end = at + (run.to - run.from) as u64;
            if self.shared.allocated.load(Ordering::Acquire) < end {
                // Zeros ahead of the frames, so that writing a group never
                // allocates (the flush then carries no extent changes).
                // Normally done ahead by the copier; here only when the
                // writer outran it.
                let file = self
                    .shared
                    .grow
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                while self.shared.allocated.load(Ordering::Acquire) < end {
                    grow_once(&file, &self.shared.allocated, self.shared.capacity, end)?;
                }
            }
            let bytes = self.buf.slice(run.from, run.to);
            if let Some(direct) = &self.direct {
                match direct.write_all_at(bytes, at) {
                    Ok(()) => continue,
                    // Opened, but direct I/O refused on write: from now on
                    // through the page cache.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        tracing::info!(
                            "the audit journal's filesystem refuses direct I/O; using fdatasync"
                        );
                        self.direct = None;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.file.write_all_at(bytes, at)?;
        }
        if self.direct.is_none() {
            self.file.sync_data()?;
        }
        if let Some(last) = runs.last() {
            let end = physical(run_end(last), span);
            self.shared.written_to.store(end, Ordering::Release);
        }
        Ok(())
    }
}

/// Logical position just past a run.
fn run_end(run: &Run) -> u64 {
    run.at + (run.to - run.from) as u64
}

/// Appends one step of zeros to the file (at least up to `want`, at most
/// to `capacity`) and makes it durable, size included.
fn grow_once(file: &File, allocated: &AtomicU64, capacity: u64, want: u64) -> io::Result<()> {
    let from = allocated.load(Ordering::Acquire);
    if from >= want.min(capacity) {
        return Ok(());
    }
    let step = GROWTH.max(want - from).min(capacity - from);
    let zeros = vec![0u8; step as usize];
    file.write_all_at(&zeros, from)?;
    file.sync_all()?;
    allocated.store(from + step, Ordering::Release);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> CanonicalRecord {
        CanonicalRecord {
            at: 1_700_000_000_000 + n,
            kind: "record.read".into(),
            actor: "dr.who@two.example".into(),
            patient: (n % 2 == 0).then(Uuid::new_v4),
            detail: format!(r#"{{"n":{n}}}"#),
        }
    }

    #[test]
    fn frames_round_trip_and_checks_catch_damage() {
        let id = [7u8; 16];
        let e = entry(4);
        let mut buf = Vec::new();
        encode(&mut buf, &id, 42, &e);
        assert_eq!(buf.len(), frame_len(&e));
        let body_len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        let (signed, check) = buf.split_at(4 + body_len);
        assert_eq!(frame_check(&id, signed), check);
        assert_eq!(decode(&signed[4..]), Some((42, e)));
        // Another journal's id, or one changed byte: the check fails.
        assert_ne!(frame_check(&[8u8; 16], signed), check);
        let mut damaged = signed.to_vec();
        damaged[20] ^= 1;
        assert_ne!(frame_check(&id, &damaged), check);
    }

    #[test]
    fn a_frame_never_straddles_the_end_of_the_ring() {
        let span = 10 * MAX_FRAME as u64;
        assert_eq!(place(0, span), 0);
        let last_start = span - MAX_FRAME as u64;
        assert_eq!(place(last_start, span), last_start);
        assert_eq!(place(last_start + 1, span), span);
        assert_eq!(place(span + 5, span), span + 5);
        assert_eq!(physical(span + 5, span), HEADER_LEN + 5);
    }
}
