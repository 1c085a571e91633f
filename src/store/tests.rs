//! Store tests against real SQLite files in temporary directories.
//!
//! Tampering tests open their own connection to the file, as someone
//! holding the file would, and change rows behind the store's back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tempfile::TempDir;
use uuid::Uuid;

use super::sqlite::SqliteStore;
use super::*;

mod journal;
mod outgoing;
mod server1;

fn cfg(path: &Path) -> config::Store {
    config::Store::Sqlite {
        path: path.to_owned(),
    }
}

async fn fresh() -> (TempDir, PathBuf, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    let store = open(&cfg(&path)).await.unwrap();
    (dir, path, store)
}

/// A plain connection to the file: no migrations, no store.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

fn audit(n: i64, patient: Option<Uuid>) -> AuditRecord {
    AuditRecord {
        at: 1_700_000_000_000 + n,
        kind: "record.read".into(),
        actor: "doc@server2.example".into(),
        patient,
        detail: json!({ "n": n, "route": "/api/history" }),
    }
}

fn message(key: &str, payload: serde_json::Value, at: UnixMillis) -> NewOutboxMessage {
    NewOutboxMessage {
        destination: "server2.example".into(),
        kind: "grant.token".into(),
        payload,
        idempotency_key: key.into(),
        created_at: at,
        next_attempt_at: at,
    }
}

// --- opening, pragmas, migrations

#[tokio::test]
async fn open_creates_a_durable_wal_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    assert!(!path.exists());
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(path.exists());

    // Per-connection settings, read through the pool the store uses.
    let pool = store.pool();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous must be FULL (2)");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(busy >= 1000, "busy_timeout is {busy} ms");

    store.ping().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "database file mode {mode:o}");
    }
}

#[tokio::test]
async fn new_stores_use_16_kib_pages_and_existing_ones_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |store: &SqliteStore| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>("PRAGMA page_size")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    let new = dir.path().join("new.db");
    let store = SqliteStore::open(&new).await.unwrap();
    assert_eq!(page_size(&store).await, 16384);

    // A database made before (SQLite's default 4 KiB pages) stays as it
    // is, and the store works on it.
    let old = dir.path().join("old.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&old)
        .create_if_missing(true)
        .page_size(4096)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE before_mdgate (x INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let store = SqliteStore::open(&old).await.unwrap();
    assert_eq!(page_size(&store).await, 4096);
    for n in 0..200 {
        store
            .append_audit(audit(n, Some(Uuid::nil())))
            .await
            .unwrap();
    }
    assert_eq!(
        store.verify_audit(None).await.unwrap().unwrap().entries,
        200
    );
}

#[tokio::test]
async fn missing_directory_is_a_clear_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("mdgate.db");
    let err = open(&cfg(&path)).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no-such-dir"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(
        !path.parent().unwrap().exists(),
        "must not create the directory"
    );

    // A directory where the file should be.
    let err = open(&cfg(dir.path())).await.unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    std::fs::write(
        &path,
        b"definitely not sqlite, but long enough to have a header",
    )
    .unwrap();
    let err = open(&cfg(&path)).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

#[tokio::test]
async fn migrations_are_applied_once_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");

    let report = migrate(&cfg(&path)).await.unwrap();
    assert_eq!(
        report.applied,
        vec![
            (1, "initial schema".to_owned()),
            (2, "outgoing requests".to_owned()),
            (3, "transfers".to_owned()),
            (4, "audit log hashes unindexed".to_owned()),
            (5, "audit journal".to_owned())
        ]
    );
    assert_eq!(report.current, supported_schema_version());

    let again = migrate(&cfg(&path)).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.current, 5);

    // Reopening keeps data and applies nothing.
    let store = open(&cfg(&path)).await.unwrap();
    store.touch_peer("server2.example", 5).await.unwrap();
    store.close().await.unwrap();
    let store = open(&cfg(&path)).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    assert_eq!(store.peers().await.unwrap().len(), 1);
    let mut conn = raw(&path).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 5);
}

#[tokio::test]
async fn newer_schema_is_refused_with_an_actionable_message() {
    let (_dir, path, store) = fresh().await;
    store.close().await.unwrap();
    let mut conn = raw(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (7, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let err = open(&cfg(&path)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 7,
                supported: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "store schema version 7 is newer than this mdgate supports (5): upgrade mdgate, \
         or restore the backup taken before the upgrade"
    );
    // `mdgate migrate` refuses the same way and changes nothing.
    assert!(matches!(
        migrate(&cfg(&path)).await,
        Err(StoreError::SchemaTooNew { .. })
    ));
}

#[tokio::test]
async fn modified_migration_is_refused() {
    let (_dir, path, store) = fresh().await;
    store.close().await.unwrap();
    let mut conn = raw(&path).await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = X'DEADBEEF' WHERE version = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let err = open(&cfg(&path)).await.unwrap_err();
    match &err {
        StoreError::MigrationModified {
            version,
            description,
        } => {
            assert_eq!(*version, 1);
            assert_eq!(description, "initial schema");
        }
        other => panic!("expected MigrationModified, got {other:?}"),
    }
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

/// A database as a version-1 mdgate left it: only 0001 applied, by sqlx's
/// migrator, from the very file this binary embeds.
async fn version_1_database(path: &Path) {
    let sources = tempfile::tempdir().unwrap();
    std::fs::write(
        sources.path().join("0001_initial_schema.sql"),
        include_str!("../../migrations/sqlite/0001_initial_schema.sql"),
    )
    .unwrap();
    let v1 = sqlx::migrate::Migrator::new(sources.path()).await.unwrap();
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await
        .unwrap();
    v1.run(&mut conn).await.unwrap();
    // Some server1 state written by the old version.
    for sql in [
        "INSERT INTO peers (fqdn, first_seen, last_seen) VALUES ('server2.example', 1, 1)",
        "INSERT INTO patients (federation_id, upstream_id, created_at) \
         VALUES ('00000000-0000-4000-8000-000000000001', 42, 1)",
        "INSERT INTO invitations (id, patient, token_hash, created_at, expires_at, used_at) \
         VALUES ('00000000-0000-4000-8000-000000000002', \
                 '00000000-0000-4000-8000-000000000001', zeroblob(32), 10, 1000, 20)",
        "INSERT INTO access_requests (id, kind, patient, invitation, server_fqdn, doctor, \
         role, duration_ms, code_hash, created_at, expires_at, idempotency_key) \
         VALUES ('00000000-0000-4000-8000-000000000003', 'access', \
                 '00000000-0000-4000-8000-000000000001', \
                 '00000000-0000-4000-8000-000000000002', 'server2.example', \
                 'dr.who@server2.example', 'doctor', 1000, zeroblob(32), 20, 600, 'k')",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    // Three audit entries chained as version 1 wrote them.
    let mut prev = chain::GENESIS;
    for seq in 1..=3 {
        let detail = format!("{{\"n\":{seq}}}");
        let hash = chain::entry_hash(
            &prev,
            &chain::EntryFields {
                seq,
                at: 100 + seq,
                kind: "record.read",
                actor: "dr.who@server2.example",
                patient: Some("00000000-0000-4000-8000-000000000001"),
                detail: &detail,
            },
        );
        sqlx::query(
            "INSERT INTO audit_log (seq, at, kind, actor, patient, detail, prev_hash, hash) \
             VALUES (?1, ?2, 'record.read', 'dr.who@server2.example', \
                     '00000000-0000-4000-8000-000000000001', ?3, ?4, ?5)",
        )
        .bind(seq)
        .bind(100 + seq)
        .bind(&detail)
        .bind(prev.as_slice())
        .bind(hash.as_slice())
        .execute(&mut conn)
        .await
        .unwrap();
        prev = hash;
    }
    conn.close().await.unwrap();
}

/// The one-statement append writes only on the head it was built on.
#[tokio::test]
async fn the_guarded_append_writes_only_on_its_head() {
    use super::sqlite::{chain_records, guarded_audit_insert};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("mdgate.db"))
        .await
        .unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let empty = (0, chain::GENESIS);
    let (first, cols) = chain_records(empty, vec![audit(1, None), audit(2, None)]);
    assert!(guarded_audit_insert(&mut conn, empty, &first, &cols)
        .await
        .unwrap());
    // Built on the empty log again: refused, nothing written.
    let (again, cols) = chain_records(empty, vec![audit(3, None)]);
    assert!(!guarded_audit_insert(&mut conn, empty, &again, &cols)
        .await
        .unwrap());
    // Built on an entry that is not the last: refused.
    let old = (first[0].seq, first[0].hash);
    let (fork, cols) = chain_records(old, vec![audit(3, None)]);
    assert!(!guarded_audit_insert(&mut conn, old, &fork, &cols)
        .await
        .unwrap());
    // On the head: written.
    let head = (first[1].seq, first[1].hash);
    let (next, cols) = chain_records(head, vec![audit(3, None)]);
    assert!(guarded_audit_insert(&mut conn, head, &next, &cols)
        .await
        .unwrap());
    let checked = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!((checked.entries, checked.last_hash), (3, next[0].hash));
}

/// Large groups: up to 512 entries go in one guarded statement, more in
/// a transaction split into several inserts; the chain is one either way.
#[tokio::test]
async fn large_audit_groups_stay_one_chain() {
    let (_dir, _path, store) = fresh().await;
    store.append_audit(audit(0, None)).await.unwrap();
    let one_statement: Vec<_> = (1..=512).map(|n| audit(n, None)).collect();
    let written = store.append_audit_batch(one_statement).await.unwrap();
    assert_eq!((written[0].seq, written[511].seq), (2, 513));
    let several: Vec<_> = (513..1113).map(|n| audit(n, None)).collect();
    let written = store.append_audit_batch(several).await.unwrap();
    assert_eq!((written[0].seq, written[599].seq), (514, 1113));
    // 77 = 64 + 8 + 5 × 1: every statement size in one transaction.
    let odd: Vec<_> = (1113..1190).map(|n| audit(n, None)).collect();
    let written = store.append_audit_batch(odd).await.unwrap();
    assert_eq!((written[0].seq, written[76].seq), (1114, 1190));
    let stored = store.audit_entries(1114, 100).await.unwrap();
    assert_eq!(stored, written, "stored in order, as reported");
    let checked = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(
        (checked.entries, checked.last_hash),
        (1190, written[76].hash)
    );
}

/// A store without the journal (another store on the file holds it)
/// appends on a connection of its own, outside the pool and set up as the
/// others (WAL, `synchronous = FULL`): appends go on while every pooled
/// connection is taken, e.g. by pages reading, and the chain stays one
/// with the state changes that append through the main pool.
#[tokio::test]
async fn audit_appends_have_their_own_durable_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    let owner = SqliteStore::open(&path).await.unwrap();
    assert!(owner.audit_journal().is_some());
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(
        store.audit_journal().is_none(),
        "the journal is the owner's"
    );
    let sync = store.audit_conn_pragma("PRAGMA synchronous").await.unwrap();
    assert_eq!(sync, "2", "FULL");
    let mode = store
        .audit_conn_pragma("PRAGMA journal_mode")
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    let mut held = Vec::new();
    for _ in 0..store.pool().options().get_max_connections() {
        held.push(store.pool().acquire().await.unwrap());
    }
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.append_audit(audit(1, None)),
    )
    .await
    .expect("not waiting for the main pool")
    .unwrap();
    assert_eq!(first.seq, 1);
    drop(held);

    // A state change's entry goes through the main pool; the next append
    // on the audit connection builds on it.
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await.unwrap();
    let moved = super::sqlite::append_audit_batch_in(&mut tx, vec![audit(2, None)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(moved[0].seq, 2);
    let third = store.append_audit(audit(3, None)).await.unwrap();
    assert_eq!((third.seq, third.prev_hash), (3, moved[0].hash));
    let checked = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(checked.entries, 3);
}

/// Each store remembers the head it last wrote; two stores on one file
/// (two processes, or the data path's writer and another writer) keep
/// moving it under each other, in turn and at once. The chain stays one.
#[tokio::test]
async fn appends_from_two_stores_on_one_file_stay_one_chain() {
    let (_dir, path, a) = fresh().await;
    let b = open(&cfg(&path)).await.unwrap();
    let mut n = 0;
    let mut next = || {
        n += 1;
        audit(n, None)
    };
    for _ in 0..5 {
        a.append_audit_batch(vec![next(), next()]).await.unwrap();
        b.append_audit(next()).await.unwrap();
        // A transition's entries, written inside its own transaction.
        a.append_audit(next()).await.unwrap();
    }
    let (x, y) = tokio::join!(
        a.append_audit_batch(vec![next(), next(), next()]),
        b.append_audit_batch(vec![next(), next(), next()]),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let checked = a.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(checked.entries, 26);
    let mut seqs: Vec<i64> = x.iter().chain(&y).map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (21..=26).collect::<Vec<_>>());
    // Every entry stored is the one its writer was told about.
    let stored = a.audit_entries(1, 100).await.unwrap();
    for e in x.iter().chain(&y) {
        assert_eq!(stored[(e.seq - 1) as usize].hash, e.hash);
    }
    // The order of the records within each batch is kept.
    let ns = |es: &[AuditEntry]| {
        es.iter()
            .map(|e| e.detail["n"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ns(&x), [21, 22, 23]);
    assert_eq!(ns(&y), [24, 25, 26]);
}

#[tokio::test]
async fn the_audit_log_keeps_its_chain_through_the_version_4_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    version_1_database(&path).await;
    let store = open(&cfg(&path)).await.unwrap();
    let checked = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!((checked.entries, checked.last_seq), (3, 3));
    let patient: Uuid = "00000000-0000-4000-8000-000000000001".parse().unwrap();
    let mine = store
        .audit_entries_for_patient(patient, 0, 10)
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // Appends continue the old chain, singly and in a group.
    let one = store.append_audit(audit(4, None)).await.unwrap();
    assert_eq!((one.seq, one.prev_hash), (4, checked.last_hash));
    let group = store
        .append_audit_batch(vec![audit(5, Some(patient)), audit(6, None)])
        .await
        .unwrap();
    assert_eq!(group.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    let checked = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!((checked.entries, checked.last_hash), (6, group[1].hash));
    store.close().await.unwrap();
    // The rebuilt table is still append-only.
    let mut conn = raw(&path).await;
    for sql in [
        "DELETE FROM audit_log WHERE seq = 2",
        "UPDATE audit_log SET detail = '{}' WHERE seq = 2",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // A second entry at an existing place is refused (no fork).
    let err = sqlx::query(
        "INSERT INTO audit_log (seq, at, kind, actor, detail, prev_hash, hash) \
         VALUES (6, 1, 'x', 'y', '{}', zeroblob(32), zeroblob(32))",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_to_version_2() {
    assert_eq!(supported_schema_version(), 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    version_1_database(&path).await;

    // `mdgate migrate` applies 0002 to 0005, keeping the data.
    let report = migrate(&cfg(&path)).await.unwrap();
    assert_eq!(
        report.applied,
        vec![
            (2, "outgoing requests".to_owned()),
            (3, "transfers".to_owned()),
            (4, "audit log hashes unindexed".to_owned()),
            (5, "audit journal".to_owned())
        ]
    );
    assert_eq!(report.current, 5);
    let store = open(&cfg(&path)).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    let patient = store.patient_by_upstream_id(42).await.unwrap().unwrap();
    let invitations = store
        .invitations_for_patient(patient.federation_id, 10)
        .await
        .unwrap();
    assert_eq!(invitations.len(), 1);
    assert!(store.live_grants(0, 10).await.unwrap().is_empty());
    // A request stored by version 1 has no requester certificate; the
    // sweeper finds it like any other.
    let old = store.expired_pending_requests(600, 10).await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].requester_cert_sha256, None);

    // The new table works on the upgraded file.
    let new = NewOutgoingRequest {
        id: Uuid::new_v4(),
        kind: RequestKind::Access,
        doctor: "dr.who".into(),
        doctor_upstream_id: 7,
        patient_address: "00000000-0000-4000-8000-000000000009@server1.example".into(),
        server_fqdn: "server1.example".into(),
        role: "doctor".into(),
        duration_ms: 1_000,
        code: "ABCDE-FGHJK".into(),
        created_at: 5,
        expires_at: 10,
    };
    let created = store
        .create_outgoing_request(new, Effects::none())
        .await
        .unwrap();
    assert_eq!(created.value.state, OutgoingState::Sending);

    // Opening a version-1 file directly upgrades it the same way.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdgate.db");
    version_1_database(&path).await;
    let store = open(&cfg(&path)).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    assert!(store.patient_by_upstream_id(42).await.unwrap().is_some());
}

// --- durability
// --- durability

#[tokio::test]
async fn acknowledged_writes_survive_an_abandoned_pool() {
    let (_dir, path, store) = fresh().await;
    store.touch_peer("server2.example", 10).await.unwrap();
    let entry = store.append_audit(audit(1, None)).await.unwrap();
    store
        .enqueue(message("k1", json!({"t": 1}), 10))
        .await
        .unwrap();

    // A crash image: copy the files as they are on disk right now, with the
    // pool still open and nothing checkpointed.
    let crash = tempfile::tempdir().unwrap();
    let copy = crash.path().join("mdgate.db");
    std::fs::copy(&path, &copy).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(wal.exists(), "WAL file expected beside the database");
    std::fs::copy(&wal, format!("{}-wal", copy.display())).unwrap();

    // And the pool itself is abandoned without a graceful close.
    std::mem::forget(store);

    for p in [&path, &copy] {
        let reopened = open(&cfg(p)).await.unwrap();
        assert!(reopened.peer("server2.example").await.unwrap().is_some());
        assert_eq!(
            reopened.audit_head().await.unwrap().unwrap().hash,
            entry.hash
        );
        assert_eq!(reopened.due(10, 10).await.unwrap().len(), 1);
        assert!(reopened.verify_audit(None).await.unwrap().is_ok());
    }
}

// --- audit log

#[tokio::test]
async fn audit_chain_verifies_after_appends() {
    let (_dir, _path, store) = fresh().await;
    let empty = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!((empty.entries, empty.last_seq), (0, 0));
    assert!(store.audit_head().await.unwrap().is_none());

    let patient = Uuid::new_v4();
    let mut last = None;
    for n in 1..=20 {
        let p = (n % 2 == 0).then_some(patient);
        let e = store.append_audit(audit(n, p)).await.unwrap();
        assert_eq!(e.seq, n);
        if let Some(prev) = last {
            assert_eq!(e.prev_hash, prev);
        } else {
            assert_eq!(e.prev_hash, chain::GENESIS);
        }
        last = Some(e.hash);
    }
    let ok = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(ok.entries, 20);
    assert_eq!(ok.last_seq, 20);
    assert_eq!(Some(ok.last_hash), last);
    let head = store.audit_head().await.unwrap().unwrap();
    assert_eq!((head.seq, Some(head.hash)), (20, last));
    assert!(store.verify_audit(Some(head)).await.unwrap().is_ok());

    // Reading back gives what was written, detail included.
    let page = store.audit_entries(5, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(page[0].detail, json!({"n": 5, "route": "/api/history"}));
    let mine = store
        .audit_entries_for_patient(patient, 0, 100)
        .await
        .unwrap();
    assert_eq!(mine.len(), 10);
    assert!(mine
        .iter()
        .all(|e| e.patient == Some(patient) && e.seq % 2 == 0));
    let later = store
        .audit_entries_for_patient(patient, 15, 2)
        .await
        .unwrap();
    assert_eq!(
        later.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![16, 18]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_keep_one_linear_chain() {
    let (_dir, _path, store) = fresh().await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..25 {
                    store.append_audit(audit(t * 100 + i, None)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let ok = store.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(ok.entries, 200);
    assert_eq!(ok.last_seq, 200);
}

/// Removes the append-only triggers, as someone editing the file would.
async fn tamper(path: &Path, sql: &str) {
    let mut conn = raw(path).await;
    sqlx::query("DROP TRIGGER audit_log_no_update")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER audit_log_no_delete")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

async fn ten_entries() -> (TempDir, PathBuf, Arc<dyn Store>) {
    let (dir, path, store) = fresh().await;
    for n in 1..=10 {
        store.append_audit(audit(n, None)).await.unwrap();
    }
    (dir, path, store)
}

#[tokio::test]
async fn the_log_is_append_only_through_sql() {
    let (_dir, path, _store) = ten_entries().await;
    let mut conn = raw(&path).await;
    for sql in [
        "UPDATE audit_log SET actor = 'x' WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 3",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}

#[tokio::test]
async fn an_updated_row_is_found() {
    let (_dir, path, store) = ten_entries().await;
    tamper(
        &path,
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 4",
    )
    .await;
    let broken = store.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 4);
    assert_eq!(broken.reason, BreakReason::HashMismatch);

    // Changing only the detail's formatting is a change too.
    let (_dir, path, store) = ten_entries().await;
    tamper(
        &path,
        "UPDATE audit_log SET detail = '{\"n\": 7,\"route\":\"/api/history\"}' WHERE seq = 7",
    )
    .await;
    let broken = store.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!((broken.seq, broken.reason), (7, BreakReason::HashMismatch));
}

#[tokio::test]
async fn a_deleted_middle_row_is_found() {
    let (_dir, path, store) = ten_entries().await;
    tamper(&path, "DELETE FROM audit_log WHERE seq = 6").await;
    let broken = store.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 6);
    assert_eq!(broken.reason, BreakReason::Missing { next_present: 7 });
    assert!(broken.to_string().contains("entry 6"), "{broken}");
}

#[tokio::test]
async fn a_deleted_tail_is_found_only_against_a_recorded_head() {
    let (_dir, path, store) = ten_entries().await;
    let head = store.audit_head().await.unwrap().unwrap();
    tamper(&path, "DELETE FROM audit_log WHERE seq > 8").await;
    // The documented limit: the shortened chain is consistent in itself.
    assert_eq!(store.verify_audit(None).await.unwrap().unwrap().entries, 8);
    let broken = store.verify_audit(Some(head)).await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 9);
    assert_eq!(broken.reason, BreakReason::Truncated { recorded_seq: 10 });
}

// --- outbox

#[tokio::test]
async fn enqueue_is_idempotent_by_key() {
    let (_dir, _path, store) = fresh().await;
    let first = store
        .enqueue(message("grant-1", json!({"b": 1, "a": [1, 2]}), 100))
        .await
        .unwrap();
    assert!(first.changed);
    // The same message again, keys in another order: the same row.
    let again = store
        .enqueue(message("grant-1", json!({"a": [1, 2], "b": 1}), 200))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.value, first.value);
    assert_eq!(again.value.created_at, 100);
    // The key reused for something else is refused.
    let err = store
        .enqueue(message("grant-1", json!({"b": 2}), 300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::IdempotencyKey,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.due(1_000, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn outbox_retries_until_delivered() {
    let (_dir, _path, store) = fresh().await;
    let a = store
        .enqueue(message("a", json!(1), 100))
        .await
        .unwrap()
        .value;
    let b = store
        .enqueue(message("b", json!(2), 50))
        .await
        .unwrap()
        .value;
    store.enqueue(message("c", json!(3), 500)).await.unwrap();

    // Due by time, earliest first, bounded by the limit.
    let due = store.due(100, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![b.id, a.id]
    );
    assert_eq!(store.due(100, 1).await.unwrap()[0].id, b.id);

    let long_error = "é".repeat(2000);
    store.mark_failed(b.id, 1_000, &long_error).await.unwrap();
    let due = store.due(100, 10).await.unwrap();
    assert_eq!(due.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a.id]);
    let retried = store.due(1_000, 10).await.unwrap();
    let b_now = retried.iter().find(|m| m.id == b.id).unwrap();
    assert_eq!(b_now.attempts, 1);
    assert_eq!(b_now.next_attempt_at, 1_000);
    let stored_error = b_now.last_error.as_deref().unwrap();
    assert!(stored_error.len() <= 1024 && stored_error.chars().all(|c| c == 'é'));

    store.mark_delivered(b.id, 1_001).await.unwrap();
    store.mark_delivered(b.id, 1_002).await.unwrap(); // again: no-op
    store.mark_failed(b.id, 5_000, "late report").await.unwrap(); // ignored
    assert!(store
        .due(10_000, 10)
        .await
        .unwrap()
        .iter()
        .all(|m| m.id != b.id));

    assert!(matches!(
        store.mark_delivered(9_999, 1).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.mark_failed(9_999, 1, "x").await,
        Err(StoreError::NotFound { .. })
    ));
}

// --- peers and keys

fn key(selector: &str, material: &[u8], expires_at: UnixMillis) -> PeerKey {
    PeerKey {
        fqdn: "server2.example".into(),
        selector: selector.into(),
        purpose: KeyPurpose::Signing,
        algorithm: "ed25519".into(),
        key: material.to_vec(),
        fetched_at: 100,
        expires_at,
        revoked: false,
    }
}

#[tokio::test]
async fn peers_and_their_key_cache() {
    let (_dir, _path, store) = fresh().await;
    let p = store.touch_peer("server2.example", 100).await.unwrap();
    assert_eq!(
        (p.first_seen, p.last_seen, p.state),
        (100, 100, PeerState::Active)
    );
    let p = store.touch_peer("server2.example", 300).await.unwrap();
    assert_eq!((p.first_seen, p.last_seen), (100, 300));
    // A clock going back does not move last_seen back.
    let p = store.touch_peer("server2.example", 200).await.unwrap();
    assert_eq!(p.last_seen, 300);
    let err = store.touch_peer("Server2.Example", 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::Check,
                ..
            }
        ),
        "{err:?}"
    );
    let p = store
        .set_peer_state("server2.example", PeerState::Blocked)
        .await
        .unwrap();
    assert_eq!(p.state, PeerState::Blocked);
    assert!(matches!(
        store
            .set_peer_state("nobody.example", PeerState::Active)
            .await,
        Err(StoreError::NotFound { what: "peer" })
    ));

    // Keys: unknown peer, insert, replace (rotation), revoke, purge.
    let mut orphan = key("s1", b"k", 1_000);
    orphan.fqdn = "nobody.example".into();
    assert!(matches!(
        store.upsert_peer_key(orphan).await,
        Err(StoreError::NotFound { what: "peer" })
    ));
    store
        .upsert_peer_key(key("s1", b"old", 1_000))
        .await
        .unwrap();
    store
        .upsert_peer_key(key("s2", b"next", 5_000))
        .await
        .unwrap();
    store
        .upsert_peer_key(key("s1", b"new", 2_000))
        .await
        .unwrap();
    let keys = store.peer_keys("server2.example").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].key, b"new");
    assert_eq!(keys[0].expires_at, 2_000);
    // An empty key is allowed only as a revocation.
    let err = store
        .upsert_peer_key(key("s3", b"", 1_000))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::Check,
                ..
            }
        ),
        "{err:?}"
    );
    let mut empty = key("s3", b"", 1_000);
    empty.revoked = true;
    store.upsert_peer_key(empty).await.unwrap();

    store
        .revoke_peer_key("server2.example", "s2")
        .await
        .unwrap();
    let s2 = store
        .peer_key("server2.example", "s2")
        .await
        .unwrap()
        .unwrap();
    assert!(s2.revoked);
    assert!(matches!(
        store.revoke_peer_key("server2.example", "nope").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.purge_expired_peer_keys(2_000).await.unwrap(), 2);
    let left = store.peer_keys("server2.example").await.unwrap();
    assert_eq!(
        left.iter().map(|k| k.selector.as_str()).collect::<Vec<_>>(),
        ["s2"]
    );
}

// --- patients, requests, grants

struct Fixture {
    _dir: TempDir,
    store: Arc<dyn Store>,
    patient: Uuid,
    token: [u8; 32],
}

async fn fixture() -> Fixture {
    let (dir, _path, store) = fresh().await;
    let patient = Uuid::new_v4();
    store
        .insert_patient(Patient {
            federation_id: patient,
            upstream_id: 42,
            created_at: 1,
            moved_to: None,
        })
        .await
        .unwrap();
    store.touch_peer("server2.example", 1).await.unwrap();
    let token = [7; 32];
    store
        .insert_invitation(Invitation {
            id: Uuid::new_v4(),
            patient,
            token_hash: token,
            created_at: 10,
            expires_at: 1_000,
            used_at: None,
        })
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        patient,
        token,
    }
}

fn new_request(f: &Fixture, key: &str) -> NewAccessRequest {
    NewAccessRequest {
        id: Uuid::new_v4(),
        kind: RequestKind::Access,
        patient: f.patient,
        invitation_token_hash: f.token,
        server_fqdn: "server2.example".into(),
        requester_cert_sha256: [3; 32],
        doctor: "dr.who@server2.example".into(),
        role: "doctor".into(),
        duration_ms: 3_600_000,
        code_hash: [9; 32],
        created_at: 100,
        expires_at: 600,
        idempotency_key: key.into(),
    }
}

fn grant_for(r: &AccessRequest) -> Grant {
    Grant {
        id: Uuid::new_v4(),
        request_id: r.id,
        patient: r.patient,
        server_fqdn: r.server_fqdn.clone(),
        server_key_sha256: [3; 32],
        doctor: r.doctor.clone(),
        role: r.role.clone(),
        not_before: 200,
        expires_at: 200 + r.duration_ms,
        revoked_at: None,
    }
}

#[tokio::test]
async fn patients_are_unique_and_can_move() {
    let f = fixture().await;
    let dup = Patient {
        federation_id: Uuid::new_v4(),
        upstream_id: 42,
        created_at: 2,
        moved_to: None,
    };
    let err = f.store.insert_patient(dup).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::Unique,
                ..
            }
        ),
        "{err:?}"
    );
    // The message names the column, not the value.
    assert!(err.to_string().contains("patients.upstream_id"), "{err}");
    assert!(!err.to_string().contains("42"), "{err}");

    let by_upstream = f.store.patient_by_upstream_id(42).await.unwrap().unwrap();
    assert_eq!(by_upstream.federation_id, f.patient);
    let moved = f
        .store
        .set_patient_moved(
            f.patient,
            "abc@server3.example",
            Effects::none().with_audit(audit(1, Some(f.patient))),
        )
        .await
        .unwrap();
    assert_eq!(moved.moved_to.as_deref(), Some("abc@server3.example"));
    assert_eq!(f.store.audit_entries(1, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_request_uses_up_its_invitation_and_replays_idempotently() {
    let f = fixture().await;
    let req = new_request(&f, "req-1");
    let created = f
        .store
        .create_access_request(
            req.clone(),
            Effects::none().with_audit(audit(1, Some(f.patient))),
        )
        .await
        .unwrap();
    assert!(created.changed);
    assert_eq!(created.value.state, RequestState::Pending);
    assert_eq!(created.value.attempts, 0);
    let inv = f
        .store
        .invitation_by_token_hash(f.token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inv.used_at, Some(100));

    // The peer retries: same row, no second audit entry.
    let replay = f
        .store
        .create_access_request(
            NewAccessRequest {
                id: Uuid::new_v4(),
                ..req.clone()
            },
            Effects::none().with_audit(audit(2, Some(f.patient))),
        )
        .await
        .unwrap();
    assert!(!replay.changed);
    assert_eq!(replay.value.id, created.value.id);
    assert_eq!(f.store.audit_entries(1, 10).await.unwrap().len(), 1);

    // Same key, different request: refused.
    let err = f
        .store
        .create_access_request(
            NewAccessRequest {
                role: "nurse".into(),
                ..req.clone()
            },
            Effects::none(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            kind: ConflictKind::IdempotencyKey,
            ..
        }
    ));

    // A new request on the used invitation: no live invitation.
    let err = f
        .store
        .create_access_request(new_request(&f, "req-2"), Effects::none())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: "live invitation"
            }
        ),
        "{err:?}"
    );

    let pending = f
        .store
        .pending_requests_for_patient(f.patient)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
}

#[tokio::test]
async fn wrong_codes_void_the_request() {
    let f = fixture().await;
    let r = f
        .store
        .create_access_request(new_request(&f, "k"), Effects::none())
        .await
        .unwrap()
        .value;
    let once = f
        .store
        .record_wrong_code(r.id, 3, 110, Effects::none())
        .await
        .unwrap();
    assert_eq!((once.attempts, once.state), (1, RequestState::Pending));
    f.store
        .record_wrong_code(r.id, 3, 120, Effects::none())
        .await
        .unwrap();
    let voided = f
        .store
        .record_wrong_code(r.id, 3, 130, Effects::none())
        .await
        .unwrap();
    assert_eq!((voided.attempts, voided.state), (3, RequestState::Voided));
    assert_eq!(voided.decided_at, Some(130));
    let err = f
        .store
        .record_wrong_code(r.id, 3, 140, Effects::none())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::State,
                ..
            }
        ),
        "{err:?}"
    );
    let err = f
        .store
        .approve_request(grant_for(&r), 150, Effects::none())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::State,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(f
        .store
        .grants_for_patient(f.patient)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn approval_creates_a_grant_with_its_effects_atomically() {
    let f = fixture().await;
    let r = f
        .store
        .create_access_request(new_request(&f, "k"), Effects::none())
        .await
        .unwrap()
        .value;
    // A prior message holds the key the approval's message will reuse.
    f.store
        .enqueue(message("token-k", json!("other"), 1))
        .await
        .unwrap();

    // The effect conflicts: nothing of the approval may remain.
    let effects = Effects::none()
        .with_outbox(message("token-k", json!({"token": "T"}), 200))
        .with_audit(audit(1, Some(f.patient)));
    let err = f
        .store
        .approve_request(grant_for(&r), 200, effects)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            kind: ConflictKind::IdempotencyKey,
            ..
        }
    ));
    let still = f.store.access_request(r.id).await.unwrap().unwrap();
    assert_eq!(still.state, RequestState::Pending);
    assert!(f
        .store
        .grants_for_patient(f.patient)
        .await
        .unwrap()
        .is_empty());
    assert!(f.store.audit_head().await.unwrap().is_none());

    // A grant for someone else is refused, as is one bound to another
    // certificate than the request came with.
    assert_eq!(r.requester_cert_sha256, Some([3; 32]));
    let mut wrong = grant_for(&r);
    wrong.doctor = "other@server2.example".into();
    assert!(f
        .store
        .approve_request(wrong, 200, Effects::none())
        .await
        .is_err());
    let other_cert = Grant {
        server_key_sha256: [4; 32],
        ..grant_for(&r)
    };
    let err = f
        .store
        .approve_request(other_cert, 200, Effects::none())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                kind: ConflictKind::Check,
                ..
            }
        ),
        "{err:?}"
    );

    // Expired requests cannot be approved.
    assert!(matches!(
        f.store
            .approve_request(grant_for(&r), 600, Effects::none())
            .await,
        Err(StoreError::Conflict {
            kind: ConflictKind::State,
            ..
        })
    ));

    let effects = Effects::none()
        .with_outbox(message("token-k2", json!({"token": "T"}), 200))
        .with_audit(audit(1, Some(f.patient)));
    let g = f
        .store
        .approve_request(grant_for(&r), 200, effects)
        .await
        .unwrap();
    assert_eq!(f.store.grant(g.id).await.unwrap(), Some(g.clone()));
    let approved = f.store.access_request(r.id).await.unwrap().unwrap();
    assert_eq!(
        (approved.state, approved.decided_at),
        (RequestState::Approved, Some(200))
    );
    assert_eq!(f.store.due(200, 10).await.unwrap().len(), 2);
    assert_eq!(f.store.audit_head().await.unwrap().map(|h| h.seq), Some(1));
    assert!(f
        .store
        .pending_requests_for_patient(f.patient)
        .await
        .unwrap()
        .is_empty());

    // Approving twice is refused; the one grant stays.
    assert!(f
        .store
        .approve_request(grant_for(&r), 210, Effects::none())
        .await
        .is_err());
    assert_eq!(
        f.store.grants_for_patient(f.patient).await.unwrap().len(),
        1
    );

    // Revocation keeps the first time and is idempotent.
    let first = f
        .store
        .revoke_grant(
            g.id,
            300,
            Effects::none().with_audit(audit(2, Some(f.patient))),
        )
        .await
        .unwrap();
    assert!(first.changed);
    assert_eq!(first.value.revoked_at, Some(300));
    assert!(!first.value.is_live(250));
    let second = f
        .store
        .revoke_grant(
            g.id,
            400,
            Effects::none().with_audit(audit(3, Some(f.patient))),
        )
        .await
        .unwrap();
    assert!(!second.changed);
    assert_eq!(second.value.revoked_at, Some(300));
    assert_eq!(f.store.audit_head().await.unwrap().map(|h| h.seq), Some(2));
    assert!(matches!(
        f.store
            .revoke_grant(Uuid::new_v4(), 1, Effects::none())
            .await,
        Err(StoreError::NotFound { what: "grant" })
    ));
    assert!(f.store.verify_audit(None).await.unwrap().is_ok());
}

#[tokio::test]
async fn closing_a_request() {
    let f = fixture().await;
    let r = f
        .store
        .create_access_request(new_request(&f, "k"), Effects::none())
        .await
        .unwrap()
        .value;
    assert!(matches!(
        f.store
            .close_request(r.id, RequestState::Approved, 1, Effects::none())
            .await,
        Err(StoreError::Conflict {
            kind: ConflictKind::State,
            ..
        })
    ));
    let denied = f
        .store
        .close_request(r.id, RequestState::Denied, 150, Effects::none())
        .await
        .unwrap();
    assert_eq!(
        (denied.state, denied.decided_at),
        (RequestState::Denied, Some(150))
    );
    assert!(matches!(
        f.store
            .close_request(r.id, RequestState::Expired, 160, Effects::none())
            .await,
        Err(StoreError::Conflict {
            kind: ConflictKind::State,
            ..
        })
    ));
    assert!(matches!(
        f.store
            .close_request(Uuid::new_v4(), RequestState::Denied, 1, Effects::none())
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

// --- error classification from real SQLite errors

#[tokio::test]
async fn a_held_write_lock_is_busy() {
    let (_dir, path, _store) = fresh().await;
    let mut holder = raw(&path).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut other = SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(std::time::Duration::ZERO)
        .connect()
        .await
        .unwrap();
    let err = sqlx::query("INSERT INTO peers (fqdn, first_seen, last_seen) VALUES ('a.b', 1, 1)")
        .execute(&mut other)
        .await
        .unwrap_err();
    let err = StoreError::from(err);
    assert!(matches!(err, StoreError::Busy), "{err:?}");
    assert!(err.is_transient());
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
}

#[tokio::test]
async fn corrupt_values_are_reported_as_corrupt() {
    let (_dir, path, store) = fresh().await;
    store.touch_peer("server2.example", 1).await.unwrap();
    // A value the CHECK would refuse, written with checks off.
    let mut conn = raw(&path).await;
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE peers SET state = 'weird'")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.peer("server2.example").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("unknown peer state"), "{err}");
    let rows = sqlx::query("SELECT count(*) AS n FROM peers")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.get::<i64, _>("n"), 1);
}

#[tokio::test]
async fn a_batch_of_audit_entries_commits_together_and_chains() {
    let (_dir, _path, store) = fresh().await;
    store.append_audit(audit(1, None)).await.unwrap();
    let batch = store
        .append_audit_batch(vec![audit(2, None), audit(3, None), audit(4, None)])
        .await
        .unwrap();
    let seqs: Vec<i64> = batch.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert_eq!(batch[1].prev_hash, batch[0].hash);
    store
        .verify_audit(None)
        .await
        .unwrap()
        .expect("chain intact");
    assert!(store
        .append_audit_batch(Vec::new())
        .await
        .unwrap()
        .is_empty());
}
