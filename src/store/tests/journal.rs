//! The audit journal: acknowledged entries reach the chain once, in the
//! order they were acknowledged, across crashes, torn writes and laps of
//! the ring.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::store::journal::{self, JournalError, BLOCK, HEADER_LEN, MAX_FRAME};

/// The `n` of every entry in the log, in chain order.
async fn logged_ns(store: &dyn Store) -> Vec<i64> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = store.audit_entries(from, MAX_PAGE).await.unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        from = last.seq + 1;
        out.extend(page.iter().map(|e| e.detail["n"].as_i64().unwrap()));
    }
}

/// A store whose journal ring holds `capacity` bytes.
async fn with_ring(capacity: u64) -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    let store = SqliteStore::open_with_journal_capacity(&path, capacity)
        .await
        .unwrap();
    (dir, path, store)
}

async fn checkpoint(path: &Path) -> (i64, i64) {
    let mut conn = raw(path).await;
    let row = sqlx::query("SELECT next_jseq, next_pos FROM audit_journal")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Appends are acknowledged by the journal; the log has them once the
/// copier (or a read) moved them, in order, and the chain verifies.
#[tokio::test]
async fn journaled_entries_reach_the_chain_in_order() {
    let (_dir, path, store) = fresh().await;
    let journal = store.audit_journal().expect("the store owns its journal");
    assert!(journal.path().ends_with("mdgate.db-audit"));
    for n in 1..=20 {
        journal.append(audit(n, None)).await.unwrap();
    }
    // Read back through the store: the read copies what was acknowledged.
    assert_eq!(logged_ns(&*store).await, (1..=20).collect::<Vec<_>>());
    let checked = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(checked.entries, 20);
    assert_eq!(checkpoint(&path).await.0, 21, "all 20 copied");
    // The copier also runs on its own.
    for n in 21..=30 {
        journal.append(audit(n, None)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while checkpoint(&path).await.0 != 31 {
        assert!(Instant::now() < deadline, "the copier never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(journal.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "journal file mode {mode:o}");
    }
    store.close().await.unwrap();
}

/// A state change's entries follow every entry the journal acknowledged
/// before it, in the same transaction.
#[tokio::test]
async fn a_state_change_comes_after_the_entries_acknowledged_before_it() {
    let f = fixture().await;
    let (store, patient) = (&f.store, f.patient);
    let journal = store.audit_journal().unwrap();
    for n in 1..=3 {
        journal.append(audit(n, Some(patient))).await.unwrap();
    }
    store
        .set_patient_moved(
            patient,
            "x@server3.example",
            Effects::none().with_audit(audit(4, Some(patient))),
        )
        .await
        .unwrap();
    journal.append(audit(5, Some(patient))).await.unwrap();
    assert_eq!(logged_ns(&**store).await, [1, 2, 3, 4, 5]);
    let mine = store
        .audit_entries_for_patient(patient, 0, 10)
        .await
        .unwrap();
    assert_eq!(mine.len(), 5);
    store.verify_audit(None).await.unwrap().unwrap();
}

/// The process is killed (SIGKILL) while it appends: every entry it was
/// told was durable is in the log after the next start, exactly once, and
/// the chain verifies.
#[tokio::test]
async fn acknowledged_entries_survive_a_kill() {
    let (_dir, path, store) = fresh().await;
    store.close().await.unwrap();
    drop(store);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store::tests::journal::journal_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("MDGATE_TEST_JOURNAL_CHILD", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (acked, killed) = tokio::task::spawn_blocking(move || {
        let mut acked = BTreeSet::new();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.len() < 3000 && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(n) = line.strip_prefix("acked ") {
                        acked.insert(n.parse::<i64>().unwrap());
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        // What the child wrote before it died is still in the pipe.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("acked ") {
                acked.insert(n.parse::<i64>().unwrap());
            }
        }
        (acked, status)
    })
    .await
    .unwrap();
    assert!(!killed.success(), "the child was killed, not finished");
    assert!(
        acked.len() >= 3000,
        "the child acknowledged {}",
        acked.len()
    );
    let (copied_before, _) = checkpoint(&path).await;
    assert!(
        ((copied_before - 1) as usize) < acked.len(),
        "some acknowledged entries were still only in the journal"
    );
    // `mdgate audit` (read only) counts them in the file and moves
    // nothing.
    let reader = open_read_only(&cfg(&path)).await.unwrap();
    let waiting = reader.audit_journal_pending().await.unwrap();
    assert!(
        (copied_before - 1) as usize + waiting as usize >= acked.len(),
        "{copied_before} copied + {waiting} in the journal < {} acknowledged",
        acked.len()
    );
    reader.close().await.unwrap();
    assert_eq!(checkpoint(&path).await.0, copied_before);

    let store = open(&cfg(&path)).await.unwrap();
    assert_eq!(store.audit_journal_pending().await.unwrap(), 0);
    let logged = logged_ns(&*store).await;
    assert_eq!(logged.len() as u64, (copied_before - 1) as u64 + waiting);
    let unique: BTreeSet<i64> = logged.iter().copied().collect();
    assert_eq!(unique.len(), logged.len(), "no entry copied twice");
    let lost: Vec<_> = acked.difference(&unique).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let checked = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(checked.entries as usize, logged.len());
    // Appends go on after the recovered ones.
    let journal = store.audit_journal().unwrap();
    journal.append(audit(-1, None)).await.unwrap();
    assert_eq!(logged_ns(&*store).await.last(), Some(&-1));
}

/// The child of `acknowledged_entries_survive_a_kill`: appends through the
/// journal, eight at a time, printing each acknowledged entry, until it
/// is killed. Does nothing in a normal test run.
#[test]
fn journal_writer_child() {
    let Some(path) = std::env::var_os("MDGATE_TEST_JOURNAL_CHILD") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(Path::new(&path)).await.unwrap();
        let journal = store.audit_journal().unwrap();
        let mut n = 0;
        loop {
            let appends = (0..8).map(|_| {
                n += 1;
                let k = n;
                async move { journal.append(audit(k, None)).await.map(|()| k) }
            });
            let mut out = String::new();
            for result in futures_util::future::join_all(appends).await {
                out.push_str(&format!("acked {}\n", result.unwrap()));
            }
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_bytes()).unwrap();
            stdout.flush().unwrap();
        }
    });
}

/// A torn write at the journal's end (garbage where the next frame
/// goes) is not an entry: the entries before it are copied, and appends
/// continue over it.
#[tokio::test]
async fn a_torn_tail_is_ignored_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let shared = store.journal_shared().unwrap();
    {
        // Hold the copy lock so that nothing is copied before the "crash".
        let _hold = shared.lock_copy().await;
        let journal = store.audit_journal().unwrap();
        for n in 1..=5 {
            journal.append(audit(n, None)).await.unwrap();
        }
        // Simulate a crash: the writer stops, nothing more is copied.
        let jpath = journal.path().to_owned();
        std::mem::forget(_hold);
        drop(store);
        let end = std::fs::metadata(&jpath).unwrap().len();
        assert!(end > HEADER_LEN);
        // A frame whose length is right but whose bytes are not all there.
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&jpath)
            .unwrap();
        let mut torn = vec![0u8; 300];
        torn[..4].copy_from_slice(&200u32.to_be_bytes());
        torn[4..40].fill(0xAB);
        let frames = frames_end(&jpath);
        file.write_all_at(&torn, frames).unwrap();
        file.sync_all().unwrap();
    }
    // The forgotten guard keeps the old journal's copy lock, not the file
    // lock: the file lock went with the dropped store's writer.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(logged_ns(&store).await, [1, 2, 3, 4, 5]);
    let journal = store.audit_journal().unwrap();
    journal.append(audit(6, None)).await.unwrap();
    store.close().await.unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(logged_ns(&store).await, [1, 2, 3, 4, 5, 6]);
    store.verify_audit(None).await.unwrap().unwrap();
}

/// The position after the last group of the journal at `jpath` (first
/// lap only): groups start on block boundaries, zeros pad each to its end.
fn frames_end(jpath: &Path) -> u64 {
    let bytes = std::fs::read(jpath).unwrap();
    let len_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
    };
    let mut at = HEADER_LEN as usize;
    loop {
        let mut len = len_at(at);
        if len == 0 && !at.is_multiple_of(BLOCK as usize) {
            at = at.div_ceil(BLOCK as usize) * BLOCK as usize;
            len = len_at(at);
        }
        if len == 0 {
            return at as u64;
        }
        at += 4 + len + 16;
    }
}

/// A small ring goes round many times; the writer never overwrites what
/// is not copied, entries left after a lap are recovered, and a full ring
/// refuses appends (nothing is overwritten) until the copier catches up.
#[tokio::test]
async fn the_ring_wraps_and_refuses_to_overwrite_uncopied_entries() {
    let capacity = HEADER_LEN + 3 * MAX_FRAME as u64;
    let (_dir, path, store) = with_ring(capacity).await;
    let big = |n: i64| AuditRecord {
        detail: json!({ "n": n, "pad": "x".repeat(4000) }),
        ..audit(n, None)
    };
    let mut n = 0;
    // About 48 entries a lap; ten laps, read back (copied) every 20.
    for _ in 0..25 {
        for _ in 0..20 {
            n += 1;
            store.audit_journal().unwrap().append(big(n)).await.unwrap();
        }
        let logged = logged_ns(&store).await;
        assert_eq!(logged.len() as i64, n);
    }
    // Now hold the copier off and fill the ring.
    let shared = store.journal_shared().unwrap();
    let hold = shared.lock_copy().await;
    let mut full = None;
    for _ in 0..200 {
        n += 1;
        match store.audit_journal().unwrap().append(big(n)).await {
            Ok(()) => {}
            Err(e) => {
                full = Some(e);
                n -= 1;
                break;
            }
        }
    }
    assert!(matches!(full, Some(JournalError::Full)), "{full:?}");
    drop(hold);
    // Copied, the ring has room again.
    assert_eq!(logged_ns(&store).await.len() as i64, n);
    n += 1;
    store.audit_journal().unwrap().append(big(n)).await.unwrap();
    // Entries left uncopied, many laps in, are recovered after a
    // restart.
    let hold = shared.lock_copy().await;
    for _ in 0..30 {
        n += 1;
        store.audit_journal().unwrap().append(big(n)).await.unwrap();
    }
    std::mem::forget(hold);
    drop(shared);
    drop(store);
    let store = SqliteStore::open_with_journal_capacity(&path, capacity)
        .await
        .unwrap();
    assert_eq!(logged_ns(&store).await, (1..=n).collect::<Vec<_>>());
    store.verify_audit(None).await.unwrap().unwrap();
    assert!(
        std::fs::metadata(journal::journal_path(&path))
            .unwrap()
            .len()
            <= capacity
    );
}

/// A journal with entries that the database does not know of (the
/// database was restored from a backup) is refused with a clear error,
/// and nothing is changed; a missing journal is replaced by a new one.
#[tokio::test]
async fn a_journal_of_another_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.append_audit(audit(1, None)).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    // A copy of the database as it is now: its journal is empty.
    let backup = dir.path().join("backup.db");
    std::fs::copy(&path, &backup).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    let shared = store.journal_shared().unwrap();
    let hold = shared.lock_copy().await;
    store
        .audit_journal()
        .unwrap()
        .append(audit(2, None))
        .await
        .unwrap();
    std::mem::forget(hold);
    drop(shared);
    drop(store);
    // Restore the backup over the database, keeping the journal, in
    // another database's place: its journal id is not the file's.
    let jpath = journal::journal_path(&path);
    let journal_before = std::fs::read(&jpath).unwrap();
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(dir.path().join("mdgate.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("mdgate.db-shm"));
    std::fs::copy(&backup, &path).unwrap();
    let mut conn = raw(&path).await;
    sqlx::query("UPDATE audit_journal SET journal_id = randomblob(16)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("does not know of"), "{msg}");
    assert!(msg.contains("move the journal aside"), "{msg}");
    assert_eq!(std::fs::read(&jpath).unwrap(), journal_before, "unchanged");
    // Moved aside, a new journal starts.
    std::fs::rename(&jpath, dir.path().join("kept-journal")).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .audit_journal()
        .unwrap()
        .append(audit(3, None))
        .await
        .unwrap();
    assert_eq!(logged_ns(&store).await, [1, 3]);
}

/// The copier grows the file ahead of the writer in small steps, never
/// past the ring's capacity; what the writer wrote is always inside it.
#[tokio::test]
async fn the_file_is_grown_ahead_of_the_writer_within_its_capacity() {
    let capacity = HEADER_LEN + 64 * MAX_FRAME as u64;
    let (_dir, path, store) = with_ring(capacity).await;
    let jpath = journal::journal_path(&path);
    let journal = store.audit_journal().unwrap();
    journal.append(audit(1, None)).await.unwrap();
    let shared = store.journal_shared().unwrap();
    let written = shared.written_to();
    let len = || std::fs::metadata(&jpath).unwrap().len();
    assert!(len() >= written, "the group is inside the file");
    shared.grow_ahead(1 << 20);
    assert!(
        len() >= written + (1 << 20),
        "{} < {}",
        len(),
        written + (1 << 20)
    );
    assert!(len() < written + (1 << 20) + 2 * journal::GROWTH);
    shared.grow_ahead(u64::MAX);
    assert_eq!(len(), capacity, "never past the ring");
    // The grown part is zeros: no frame past the one written.
    let bytes = std::fs::read(&jpath).unwrap();
    assert!(bytes[written as usize..].iter().all(|b| *b == 0));
    journal.append(audit(2, None)).await.unwrap();
    assert_eq!(logged_ns(&store).await, [1, 2]);
}
