//! `mdgate audit verify|export|head`, run as the binary on a store filled
//! through the `Store` API, then tampered with as someone holding the
//! database file would: with their own SQLite connection, dropping the
//! append-only triggers first.

use std::path::{Path, PathBuf};
use std::process::Command;

use mdgate::config;
use mdgate::store::{AuditEntry, AuditRecord};
use mdgate::tls::pki::TestCa;
use serde_json::{json, Value};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;
use uuid::Uuid;

use crate::gate::{self, GateOptions, FQDN};

const BIN: &str = env!("CARGO_BIN_EXE_mdgate");
const PATIENT: Uuid = Uuid::from_u128(0x0b8f_1d3e_5a57_4a39_9d3b_1f0c_1a2b_3c4d);

/// A configuration and a store holding `entries`.
struct Setup {
    _dir: TempDir,
    config: PathBuf,
    db: PathBuf,
    entries: Vec<AuditEntry>,
}

async fn setup(count: i64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new().unwrap();
    let (cert, key) = ca.issue(&[FQDN]).unwrap();
    gate::write_pair(dir.path(), "public", &cert, &key);
    let config = dir.path().join("mdgate.toml");
    std::fs::write(
        &config,
        gate::config_text(dir.path(), &GateOptions::new("127.0.0.1:7000")),
    )
    .unwrap();
    let db = dir.path().join("mdgate.db");
    let store = mdgate::store::open(&config::Store::Sqlite { path: db.clone() })
        .await
        .unwrap();
    let mut entries = Vec::new();
    for n in 1..=count {
        let record = AuditRecord {
            at: 1_795_500_000_000 + n * 1000,
            kind: if n % 2 == 0 {
                "record.read".into()
            } else {
                "access.approved".into()
            },
            actor: "drhouse@server2.example.org".into(),
            patient: (n % 2 == 0).then_some(PATIENT),
            detail: json!({"n": n, "route": "/api/history"}),
        };
        entries.push(store.append_audit(record).await.unwrap());
    }
    store.close().await.unwrap();
    Setup {
        _dir: dir,
        config,
        db,
        entries,
    }
}

/// Runs `mdgate audit <args> -c <config>`: exit code, stdout, stderr.
fn audit(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("audit")
        .args(args)
        .arg("-c")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Changes the file behind mdgate's back.
pub async fn tamper(db: &Path, statements: &[&str]) {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap();
    for sql in statements {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

fn head_text(e: &AuditEntry) -> String {
    format!("{}:{}", e.seq, hex::encode(e.hash))
}

#[tokio::test]
async fn verify_and_head_on_an_intact_log() {
    let s = setup(5).await;
    let last = &s.entries[4];
    let (code, stdout, stderr) = audit(&s.config, &["verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "audit log intact: 5 entries, head 5 {}\n",
            hex::encode(last.hash)
        )),
        "{stdout}"
    );

    let (code, stdout, _) = audit(&s.config, &["head"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), head_text(last));

    let (code, stdout, stderr) = audit(&s.config, &["verify", "--head", &head_text(last)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, _) = audit(&s.config, &["verify", "--json"]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["entries"], 5);
    assert_eq!(report["head"]["hash"], hex::encode(last.hash));
}

#[tokio::test]
async fn verify_names_an_altered_entry() {
    let s = setup(5).await;
    tamper(
        &s.db,
        &[
            "DROP TRIGGER audit_log_no_update",
            r#"UPDATE audit_log SET detail = '{"n":3,"route":"/api/profile"}' WHERE seq = 3"#,
        ],
    )
    .await;
    let (code, stdout, stderr) = audit(&s.config, &["verify"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "audit log BROKEN at entry 3: the content of entry 3 does not match its hash"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("entries 1 to 2 are intact"), "{stderr}");

    let (code, stdout, _) = audit(&s.config, &["verify", "--json"]);
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["broken_at"], 3);
    assert_eq!(report["reason"], "hash_mismatch");
}

#[tokio::test]
async fn verify_finds_a_deleted_entry() {
    let s = setup(5).await;
    tamper(
        &s.db,
        &[
            "DROP TRIGGER audit_log_no_delete",
            "DELETE FROM audit_log WHERE seq = 2",
        ],
    )
    .await;
    let (code, stdout, stderr) = audit(&s.config, &["verify"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("audit log BROKEN at entry 2: entry 2 is missing (deleted)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_deleted_tail_is_found_with_the_recorded_head() {
    let s = setup(5).await;
    let (_, recorded, _) = audit(&s.config, &["head"]);
    let recorded = recorded.trim().to_owned();
    tamper(
        &s.db,
        &[
            "DROP TRIGGER audit_log_no_delete",
            "DELETE FROM audit_log WHERE seq >= 4",
        ],
    )
    .await;
    // Without the head this is undetectable (store::chain says so), and
    // the output says how to close that gap.
    let (code, stdout, _) = audit(&s.config, &["verify"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("3 entries"), "{stdout}");
    assert!(stdout.contains("--head"), "{stdout}");
    let (code, stdout, stderr) = audit(&s.config, &["verify", "--head", &recorded]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("the recorded head is entry 5: entries 4 to 5 were deleted"),
        "{stderr}"
    );
}

#[tokio::test]
async fn export_prints_every_entry_as_a_json_line() {
    let s = setup(6).await;
    let (code, stdout, stderr) = audit(&s.config, &["export"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 6);
    for (line, entry) in lines.iter().zip(&s.entries) {
        assert_eq!(line["seq"], entry.seq);
        assert_eq!(line["at_ms"], entry.at);
        assert_eq!(line["kind"], entry.kind.as_str());
        assert_eq!(line["actor"], entry.actor.as_str());
        assert_eq!(
            line["patient"],
            json!(entry.patient.map(|p| p.hyphenated().to_string()))
        );
        assert_eq!(line["detail"], entry.detail);
        assert_eq!(line["prev_hash"], hex::encode(entry.prev_hash));
        assert_eq!(line["hash"], hex::encode(entry.hash));
    }
    assert_eq!(lines[0]["at"], "2026-11-24T06:00:01.000Z");

    let (code, stdout, _) = audit(
        &s.config,
        &["export", "--patient", &PATIENT.to_string(), "--from", "3"],
    );
    assert_eq!(code, 0);
    let seqs: Vec<i64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [4, 6]);
}

#[tokio::test]
async fn a_missing_store_or_a_bad_head_is_an_error() {
    let s = setup(1).await;
    std::fs::remove_file(&s.db).unwrap();
    let (code, _, stderr) = audit(&s.config, &["verify"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no store at"), "{stderr}");
    assert!(!s.db.exists(), "verify must not create a store");

    let (code, _, stderr) = audit(&s.config, &["verify", "--head", "5:abcd"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("64 hexadecimal digits"), "{stderr}");
}

/// `audit` opens the store read-only: a copy kept as evidence, here one
/// whose schema predates this binary (migration 4 not recorded), is
/// verified, exported and read as it is, with no migration applied and no
/// byte of it changed.
#[tokio::test]
async fn verifying_a_copy_writes_nothing_to_it() {
    let s = setup(4).await;
    // As an older mdgate left it: version 4 not applied.
    tamper(&s.db, &["DELETE FROM _sqlx_migrations WHERE version = 4"]).await;
    let bytes = std::fs::read(&s.db).unwrap();
    let (code, stdout, stderr) = audit(&s.config, &["verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("4 entries"), "{stdout}");
    let (code, stdout, _) = audit(&s.config, &["export"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 4);
    let (code, _, _) = audit(&s.config, &["head"]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&s.db).unwrap(), bytes, "the file changed");
    let mut conn = SqliteConnectOptions::new()
        .filename(&s.db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 5], "no migration applied");
    conn.close().await.unwrap();

    // Something that is not a store is refused, not created or migrated.
    std::fs::write(&s.db, b"").unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", s.db.display()));
    }
    let (code, _, stderr) = audit(&s.config, &["verify"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not an mdgate store"), "{stderr}");
    assert_eq!(std::fs::read(&s.db).unwrap(), b"", "the file changed");
}

/// A commit is durable through `fdatasync`, not `fsync`: the SQLite that
/// sqlx bundles falls back to `fsync` unless built with `HAVE_FDATASYNC`
/// (`.cargo/config.toml`), and `fsync` also forces out the inode for a new
/// mtime, a second device flush for every audited read. Traced with
/// `strace` on `mdgate migrate`, which creates the store and commits its
/// schema; skipped where `strace` is missing or may not trace (`.ci/run`
/// installs it).
#[tokio::test]
async fn commits_sync_with_fdatasync() {
    let s = setup(0).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", s.db.display()));
    }
    let trace = s.db.with_file_name("syncs.trace");
    let run = Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(BIN)
        .arg("migrate")
        .arg("-c")
        .arg(&s.config)
        .env_remove("RUST_LOG")
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: cannot run strace ({e}); apt-get install strace");
            return;
        }
    };
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    if !out.status.success() && text.is_empty() {
        eprintln!(
            "skipped: strace cannot trace here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // strace prints the file behind each descriptor by its resolved path.
    let real = std::fs::canonicalize(&s.db).unwrap();
    let wal = format!("{}-wal>", real.display());
    let db = format!("{}>", real.display());
    let on = |call: &str, file: &str| {
        text.lines()
            .filter(|l| l.contains(&format!(" {call}(")) && l.contains(file))
            .count()
    };
    assert!(
        on("fdatasync", &wal) > 0,
        "no fdatasync of the WAL:\n{text}"
    );
    assert_eq!(on("fsync", &wal), 0, "fsync of the WAL:\n{text}");
    assert_eq!(on("fsync", &db), 0, "fsync of the database:\n{text}");
}
