//! Group commit for the audit entries of the data path.
//!
//! Every read or question under a grant is written to the audit log before
//! its answer leaves, and a commit waits for the disk (`synchronous =
//! FULL`). One commit per request would cap the federation listener at the
//! disk's fsync rate, so requests hand their entry to one writer task, which
//! takes everything queued meanwhile and appends it in one transaction:
//! each request still waits until its own entry is durable, but concurrent
//! requests share the fsync.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditRecord, Store, StoreError};

/// Most entries in one transaction.
const MAX_BATCH: usize = 256;
/// Entries waiting for the writer before senders wait too.
const QUEUE: usize = 4096;

type Job = (AuditRecord, oneshot::Sender<Result<(), Arc<StoreError>>>);

/// The handle requests append through. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Job>,
}

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log write failed: {0}")]
    Store(Arc<StoreError>),
    #[error("the audit writer stopped")]
    Stopped,
}

impl Auditor {
    /// Starts the writer on the current Tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Auditor {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(store, rx));
        Auditor { tx }
    }

    /// Appends `record`; returns once it is durable.
    pub async fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((record, done))
            .await
            .map_err(|_| AuditError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Store(e)),
            Err(_) => Err(AuditError::Stopped),
        }
    }
}

async fn write(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>) {
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
        let result = store
            .append_audit_batch(records)
            .await
            .map(|_| ())
            .map_err(Arc::new);
        if let Err(e) = &result {
            tracing::error!(error = %e, entries = waiters.len(), "audit log write failed");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}
