//! Durable audit entries for the data path.
//!
//! Every read or question under a grant is written to the audit log before
//! its answer leaves. Where the store keeps an audit journal
//! (`store::journal`), an entry goes there: the journal's writer flushes
//! whatever is queued as one group, with one synchronous write, and the
//! entry joins the chain when the store copies it into the log.
//!
//! Otherwise (another process holds the journal, or a journal write
//! failed), requests hand their entry to their thread's writer task, which
//! takes everything queued meanwhile and appends it in one statement: each
//! request still waits until its own entry is durable, but concurrent
//! requests share the commit.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::admin::Metrics;
use crate::store::{AuditRecord, CanonicalRecord, JournalError, Store, StoreError};

/// Most entries in one transaction.
const MAX_BATCH: usize = 256;
/// Entries waiting for the writer before senders wait too.
const QUEUE: usize = 4096;

type Job = (AuditRecord, oneshot::Sender<Result<(), Arc<StoreError>>>);
/// A thread and the queue of its writer task.
type Writer = (ThreadId, mpsc::Sender<Job>);

/// The handle requests append through. Cheap to clone.
///
/// Each thread that appends gets its own writer task, spawned on that
/// thread's runtime at its first append: mdgate's workers are
/// single-threaded runtimes, so a request, its writer and the wake-up after
/// the commit stay on one thread instead of crossing to another and back
/// for every group. Writers on several threads share the store's chain;
/// the store keeps it one (an append checks the head it builds on).
#[derive(Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    writers: Arc<Mutex<Vec<Writer>>>,
}

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log write failed: {0}")]
    Store(Arc<StoreError>),
    #[error("{0}")]
    Journal(JournalError),
    #[error("the audit writer stopped")]
    Stopped,
    #[error("an audit detail is not JSON: {0}")]
    Detail(String),
}

impl Auditor {
    /// An auditor appending to `store`; writers start with the first
    /// append on each thread. Each group commit is counted in `metrics`
    /// (`mdgate_audit_group_entries`, `mdgate_audit_commit_duration_seconds`,
    /// `mdgate_audit_write_failures`).
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Auditor {
        if let Some(journal) = store.audit_journal() {
            metrics.watch_audit_journal(Box::new(journal.pending_probe()));
            let metrics = metrics.clone();
            journal.set_observer(Box::new(move |entries, seconds, ok| {
                metrics.audit_commit(entries, seconds, ok)
            }));
        }
        Auditor {
            store,
            metrics,
            writers: Arc::default(),
        }
    }

    /// Appends `record`; returns once it is durable. Must be called on a
    /// Tokio runtime.
    pub async fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        if let Some(journal) = self.store.audit_journal() {
            return journal.append(record).await.map_err(AuditError::Journal);
        }
        let (done, wait) = oneshot::channel();
        self.writer_here()
            .send((record, done))
            .await
            .map_err(|_| AuditError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Store(e)),
            Err(_) => Err(AuditError::Stopped),
        }
    }

    /// Appends `record`, whose detail is already canonical JSON (the data
    /// path's, written without a `serde_json::Value`); returns once it is
    /// durable. Where the store has no journal, the detail is read back
    /// into a value for the store's own append.
    pub async fn append_canonical(&self, record: CanonicalRecord) -> Result<(), AuditError> {
        if let Some(journal) = self.store.audit_journal() {
            return journal.append(record).await.map_err(AuditError::Journal);
        }
        let detail =
            serde_json::from_str(&record.detail).map_err(|e| AuditError::Detail(e.to_string()))?;
        self.append(AuditRecord {
            at: record.at,
            kind: record.kind,
            actor: record.actor,
            patient: record.patient,
            detail,
        })
        .await
    }

    /// This thread's writer, started on the current runtime if it has
    /// none or its runtime has ended.
    fn writer_here(&self) -> mpsc::Sender<Job> {
        let here = std::thread::current().id();
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        writers.retain(|(_, tx)| !tx.is_closed());
        if let Some((_, tx)) = writers.iter().find(|(id, _)| *id == here) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(self.store.clone(), self.metrics.clone(), rx));
        writers.push((here, tx.clone()));
        tx
    }
}

async fn write(store: Arc<dyn Store>, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (records, waiters): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let started = Instant::now();
        let result = store
            .append_audit_batch(records)
            .await
            .map(|_| ())
            .map_err(Arc::new);
        metrics.audit_commit(
            waiters.len(),
            started.elapsed().as_secs_f64(),
            result.is_ok(),
        );
        if let Err(e) = &result {
            tracing::error!(error = %e, entries = waiters.len(), "audit log write failed");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn record(n: i64) -> AuditRecord {
        AuditRecord {
            at: 1_700_000_000_000 + n,
            kind: "record.read".into(),
            actor: "dr@two.example".into(),
            patient: None,
            detail: serde_json::json!({ "n": n }),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// What every entry's group commit left in the metrics: `entries`
    /// counted, no failure.
    fn assert_counted(metrics: &Metrics, entries: u32) {
        let text = metrics.encode();
        assert!(
            text.contains(&format!("mdgate_audit_group_entries_sum {entries}.0")),
            "{text}"
        );
        assert!(
            text.contains("mdgate_audit_write_failures_total 0"),
            "{text}"
        );
    }

    /// Two worker threads, each on its own single-threaded runtime (as
    /// mdgate runs them), append `per_thread` entries each through
    /// `auditor`, all at once; every append must be acknowledged.
    fn append_from_two_threads(auditor: &Auditor, per_thread: i64) {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let auditor = auditor.clone();
                std::thread::spawn(move || {
                    runtime().block_on(async {
                        let appends = (0..per_thread).map(|i| auditor.append(record(w * 1000 + i)));
                        for result in futures_util::future::join_all(appends).await {
                            result.expect("durable");
                        }
                    })
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
    }

    /// With the store's journal, appends from two threads are durable when
    /// acknowledged, every one of them reaches the chain, in one chain,
    /// and each group is counted in the metrics.
    #[test]
    fn appends_go_through_the_journal_into_one_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config::Store::Sqlite {
            path: dir.path().join("mdgate.db"),
        };
        let rt = runtime();
        let store = rt.block_on(crate::store::open(&cfg)).expect("store");
        assert!(store.audit_journal().is_some());
        let metrics = Arc::new(Metrics::new());
        let auditor = Auditor::start(store.clone(), metrics.clone());
        append_from_two_threads(&auditor, 50);
        assert!(
            auditor.writers.lock().expect("lock").is_empty(),
            "no writer tasks"
        );
        let checked = rt
            .block_on(store.verify_audit(None))
            .expect("read")
            .expect("one chain");
        assert_eq!(checked.entries, 100);
        assert_counted(&metrics, 100);
        // Reading the log copied everything: no backlog left.
        assert!(
            metrics
                .encode()
                .contains("mdgate_audit_journal_pending 0\n"),
            "{}",
            metrics.encode()
        );
        rt.block_on(store.close()).expect("close");
    }

    /// Without the journal (another store holds it), each thread gets its
    /// own writer task, every entry is durable once acknowledged, and the
    /// chain is one. A runtime that ended leaves no stale writer.
    #[test]
    fn without_the_journal_each_thread_writes_through_its_own_writer_into_one_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config::Store::Sqlite {
            path: dir.path().join("mdgate.db"),
        };
        let owner = runtime().block_on(crate::store::open(&cfg)).expect("store");
        let store = runtime().block_on(crate::store::open(&cfg)).expect("store");
        assert!(owner.audit_journal().is_some());
        assert!(store.audit_journal().is_none());
        let metrics = Arc::new(Metrics::new());
        let auditor = Auditor::start(store.clone(), metrics.clone());
        append_from_two_threads(&auditor, 50);
        assert_eq!(
            auditor.writers.lock().expect("lock").len(),
            2,
            "one writer per thread"
        );
        let rt = runtime();
        let checked = rt
            .block_on(store.verify_audit(None))
            .expect("read")
            .expect("one chain");
        assert_eq!(checked.entries, 100);
        // The workers' runtimes are gone, and their writers with them: an
        // append from here starts a writer of its own.
        rt.block_on(auditor.append(record(5000))).expect("durable");
        assert_eq!(auditor.writers.lock().expect("lock").len(), 1);
        let checked = rt
            .block_on(store.verify_audit(None))
            .expect("read")
            .expect("one chain");
        assert_eq!(checked.entries, 101);
        // Every entry was counted in a group commit, none failed.
        assert_counted(&metrics, 101);
    }

    /// A record whose detail is already canonical lands as the same entry
    /// with the journal and without it; a detail that is not JSON is
    /// refused and changes nothing.
    #[test]
    fn canonical_records_land_with_and_without_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config::Store::Sqlite {
            path: dir.path().join("mdgate.db"),
        };
        let rt = runtime();
        let owner = rt.block_on(crate::store::open(&cfg)).expect("store");
        let other = rt.block_on(crate::store::open(&cfg)).expect("store");
        assert!(owner.audit_journal().is_some());
        assert!(other.audit_journal().is_none());
        let canonical = |n: i64| CanonicalRecord {
            at: 1_700_000_000_000 + n,
            kind: "record.read".into(),
            actor: "dr@two.example".into(),
            patient: None,
            detail: crate::store::chain::canonical_flat(&mut [
                ("status", crate::store::chain::Scalar::Int(200)),
                ("n", crate::store::chain::Scalar::Int(n)),
            ]),
        };
        let metrics = Arc::new(Metrics::new());
        let through_journal = Auditor::start(owner.clone(), metrics.clone());
        let direct = Auditor::start(other.clone(), metrics);
        rt.block_on(through_journal.append_canonical(canonical(1)))
            .expect("durable");
        rt.block_on(direct.append_canonical(canonical(2)))
            .expect("durable");
        let mut bad = canonical(3);
        bad.detail = "{not json".into();
        let refused = rt
            .block_on(direct.append_canonical(bad))
            .expect_err("not JSON");
        assert!(matches!(refused, AuditError::Detail(_)), "{refused:?}");

        // The journal's entry joins the chain when copied, so possibly
        // after the direct one.
        let entries = rt.block_on(owner.audit_entries(0, 10)).expect("read");
        let mut details: Vec<_> = entries.iter().map(|e| e.detail.clone()).collect();
        details.sort_by_key(|d| d["n"].as_i64());
        assert_eq!(
            details,
            [
                serde_json::json!({"n": 1, "status": 200}),
                serde_json::json!({"n": 2, "status": 200}),
            ]
        );
        rt.block_on(owner.verify_audit(None))
            .expect("read")
            .expect("one chain");
    }
}
