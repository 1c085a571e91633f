//! The audit commands' logic: head syntax, times, reports, and paged
//! export against a real SQLite store.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::config;
use crate::store::AuditRecord;

const PATIENT: Uuid = Uuid::from_u128(0x0b8f_1d3e_5a57_4a39_9d3b_1f0c_1a2b_3c4d);

async fn store(dir: &Path) -> Arc<dyn Store> {
    crate::store::open(&config::Store::Sqlite {
        path: dir.join("mdgate.db"),
    })
    .await
    .expect("store")
}

fn record(n: i64) -> AuditRecord {
    AuditRecord {
        at: 1_795_500_000_000 + n,
        kind: "record.read".into(),
        actor: "drhouse@server2.example.org".into(),
        patient: (n % 2 == 0).then_some(PATIENT),
        detail: json!({"n": n, "route": "/api/history"}),
    }
}

#[test]
fn head_round_trips_through_its_text_form() {
    let head = AuditHead {
        seq: 42,
        hash: [0xab; 32],
    };
    let text = format_head(Some(head));
    assert_eq!(text, format!("42:{}", "ab".repeat(32)));
    assert_eq!(parse_head(&text), Ok(head));
    assert_eq!(format_head(None), format!("0:{}", "0".repeat(64)));
    for bad in [
        "42",
        "x:ab",
        "-1:00",
        "42:abcd",
        &format!("42:{}", "zz".repeat(32)),
    ] {
        assert!(parse_head(bad).is_err(), "{bad}");
    }
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339_millis(1_795_500_000_123),
        "2026-11-24T06:00:00.123Z"
    );
    assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
}

#[test]
fn reports_say_where_and_why() {
    let intact = VerifyReport {
        recorded: None,
        result: Ok(AuditVerification {
            entries: 3,
            last_seq: 3,
            last_hash: [1; 32],
        }),
        journal_pending: 0,
    };
    assert!(intact.ok());
    assert!(intact.human().starts_with(&format!(
        "audit log intact: 3 entries, head 3 {}\n",
        "01".repeat(32)
    )));
    assert!(!intact.human().contains("journal"));
    assert_eq!(intact.to_json()["head"]["seq"], 3);
    // Entries still in the journal are said, not counted in the chain.
    let waiting = VerifyReport {
        journal_pending: 2,
        ..intact.clone()
    };
    assert!(waiting.ok());
    assert!(
        waiting
            .human()
            .contains("2 more entries are in the audit journal"),
        "{}",
        waiting.human()
    );
    assert_eq!(waiting.to_json()["journal_pending"], 2);
    assert_eq!(waiting.to_json()["entries"], 3);

    let cases = [
        (
            BreakReason::HashMismatch,
            "hash_mismatch",
            "entry 3 does not match its hash",
        ),
        (
            BreakReason::BrokenLink,
            "broken_link",
            "does not link to entry 2",
        ),
        (
            BreakReason::Missing { next_present: 4 },
            "entry_missing",
            "entry 3 is missing",
        ),
        (
            BreakReason::Missing { next_present: 6 },
            "entry_missing",
            "entries 3 to 5 are missing",
        ),
        (BreakReason::HeadMismatch, "head_mismatch", "rewritten"),
        (
            BreakReason::Truncated { recorded_seq: 7 },
            "truncated",
            "entries 3 to 7 were deleted",
        ),
    ];
    for (reason, name, words) in cases {
        let report = VerifyReport {
            recorded: None,
            result: Err(AuditBreak { seq: 3, reason }),
            journal_pending: 0,
        };
        assert!(!report.ok());
        let text = report.human();
        assert!(text.starts_with("audit log BROKEN at entry 3: "), "{text}");
        assert!(text.contains(words), "{text}");
        assert!(text.contains("entries 1 to 2 are intact"), "{text}");
        let json = report.to_json();
        assert_eq!(json["ok"], false);
        assert_eq!(json["broken_at"], 3);
        assert_eq!(json["reason"], name);
    }
}

#[tokio::test]
async fn export_pages_through_every_entry() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let mut appended = Vec::new();
    for n in 1..=7 {
        appended.push(store.append_audit(record(n)).await.expect("append"));
    }

    let mut out = Vec::new();
    let written = export_paged(&*store, None, 1, 2, &mut out)
        .await
        .expect("export");
    assert_eq!(written, 7);
    let lines: Vec<Value> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let expected: Vec<Value> = appended.iter().map(entry_json).collect();
    assert_eq!(lines, expected);
    assert_eq!(
        lines[1],
        json!({
            "seq": 2,
            "at": "2026-11-24T06:00:00.002Z",
            "at_ms": 1_795_500_000_002i64,
            "kind": "record.read",
            "actor": "drhouse@server2.example.org",
            "patient": PATIENT.hyphenated().to_string(),
            "detail": {"n": 2, "route": "/api/history"},
            "prev_hash": hex::encode(appended[0].hash),
            "hash": hex::encode(appended[1].hash),
        })
    );

    // From a sequence number, and one patient's entries only.
    let mut out = Vec::new();
    assert_eq!(
        export_paged(&*store, None, 6, 2, &mut out)
            .await
            .expect("from"),
        2
    );
    let mut out = Vec::new();
    assert_eq!(
        export_paged(&*store, Some(PATIENT), 1, 2, &mut out)
            .await
            .expect("patient"),
        3
    );
    let seqs: Vec<i64> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["seq"]
                .as_i64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [2, 4, 6]);

    // The public entry point (MAX_PAGE) gives the same.
    let mut out = Vec::new();
    assert_eq!(export(&*store, None, 1, &mut out).await.expect("export"), 7);

    let report = verify(&*store, None).await.expect("verify");
    assert!(report.ok());
    let head = store.audit_head().await.expect("head");
    assert_eq!(head.map(|h| h.seq), Some(7));
    store.close().await.expect("close");
}

#[tokio::test]
async fn an_empty_log_exports_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let mut out = Vec::new();
    assert_eq!(export(&*store, None, 1, &mut out).await.expect("export"), 0);
    assert!(out.is_empty());
    let report = verify(&*store, None).await.expect("verify");
    assert!(report.human().starts_with(&format!(
        "audit log intact: 0 entries, head 0 {}",
        "0".repeat(64)
    )));
    store.close().await.expect("close");
}
