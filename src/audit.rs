//! The audit log as an administrator handles it: `mdgate audit verify`,
//! `mdgate audit export` and `mdgate audit head` (`docs/operations.md` §
//! Audit log).
//!
//! The log itself (append, the hash chain, the walk that verifies it) is
//! the store's: `store::chain` defines the hash and what a verification
//! can and cannot detect. This module turns the store's answers into
//! what a person or a script reads:
//!
//! ```text
//! Store::verify_audit(recorded head?) ──▶ VerifyReport ──▶ one line (exit 0), or where and why
//!                                                         the chain breaks and what to do (exit 1);
//!                                                         or JSON
//! Store::audit_entries(from, MAX_PAGE) … ──▶ one JSON object per line (bounded memory)
//! Store::audit_head ──▶ SEQ:HASH, to record outside the database
//! ```

use std::io::{self, Write};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::store::{
    chain::GENESIS, AuditBreak, AuditEntry, AuditHead, AuditVerification, BreakReason, Store,
    StoreError, MAX_PAGE,
};

/// Why an audit command could not do its work (not: the log is broken,
/// which is a [`VerifyReport`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

/// The outcome of `mdgate audit verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The head given with `--head`, if any.
    pub recorded: Option<AuditHead>,
    pub result: Result<AuditVerification, AuditBreak>,
    /// Entries in the audit journal, acknowledged but not yet copied into
    /// the log (so not part of the chain verified).
    pub journal_pending: u64,
}

/// Walks the whole chain (see [`Store::verify_audit`]).
pub async fn verify(
    store: &dyn Store,
    recorded: Option<AuditHead>,
) -> Result<VerifyReport, StoreError> {
    let result = store.verify_audit(recorded).await?;
    let journal_pending = store.audit_journal_pending().await?;
    Ok(VerifyReport {
        recorded,
        result,
        journal_pending,
    })
}

impl VerifyReport {
    /// Whether the chain holds.
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }

    /// What a person reads: one line when intact, else where the chain
    /// breaks, what that means and what to do.
    pub fn human(&self) -> String {
        match &self.result {
            Ok(v) => {
                let mut out = format!(
                    "audit log intact: {} entries, head {} {}\n",
                    v.entries,
                    v.last_seq,
                    hex::encode(v.last_hash)
                );
                match self.recorded {
                    Some(head) => out.push_str(&format!(
                        "the recorded head {} is part of the chain\n",
                        head.seq
                    )),
                    None => out.push_str(
                        "note: without --head, deleting the newest entries, or rewriting every \
                         entry from some point on, cannot be detected; keep the output of \
                         `mdgate audit head` outside this database and pass it with --head\n",
                    ),
                }
                out.push_str(&self.journal_line());
                out
            }
            Err(broken) => {
                let mut out = format!(
                    "audit log BROKEN at entry {}: {}\n",
                    broken.seq,
                    explain(broken)
                );
                out.push_str(&format!(
                    "entries 1 to {} are intact.\n",
                    broken.seq.saturating_sub(1)
                ));
                out.push_str(
                    "what to do: stop relying on this log past that point; keep a copy of the \
                     database file as evidence (sqlite3 FILE \".backup COPY\"); compare with a \
                     backup (`mdgate audit export --from SEQ` on both); find who could write the \
                     file (its owner, backups, the host's administrators).\n",
                );
                out.push_str(&self.journal_line());
                out
            }
        }
    }

    /// A line about entries still in the audit journal, if any.
    fn journal_line(&self) -> String {
        match self.journal_pending {
            0 => String::new(),
            n => format!(
                "{n} more entr{} in the audit journal (the store's `-audit` file), acknowledged \
                 and not yet copied into the log: mdgate copies them within a second while it \
                 runs, or when it next starts\n",
                if n == 1 { "y is" } else { "ies are" }
            ),
        }
    }

    /// The same as JSON, for scripts and monitoring.
    pub fn to_json(&self) -> Value {
        let recorded = self.recorded.map(|h| head_json(&h));
        match &self.result {
            Ok(v) => json!({
                "ok": true,
                "entries": v.entries,
                "head": {"seq": v.last_seq, "hash": hex::encode(v.last_hash)},
                "recorded_head": recorded,
                "journal_pending": self.journal_pending,
            }),
            Err(broken) => json!({
                "ok": false,
                "broken_at": broken.seq,
                "reason": break_reason(&broken.reason),
                "message": explain(broken),
                "recorded_head": recorded,
                "journal_pending": self.journal_pending,
            }),
        }
    }
}

/// A stable name for each kind of break.
pub fn break_reason(reason: &BreakReason) -> &'static str {
    match reason {
        BreakReason::Missing { .. } => "entry_missing",
        BreakReason::BrokenLink => "broken_link",
        BreakReason::HashMismatch => "hash_mismatch",
        BreakReason::HeadMismatch => "head_mismatch",
        BreakReason::Truncated { .. } => "truncated",
    }
}

/// What a break means, in words an administrator can act on.
fn explain(broken: &AuditBreak) -> String {
    let seq = broken.seq;
    match &broken.reason {
        BreakReason::HashMismatch => format!(
            "the content of entry {seq} does not match its hash: the entry was altered after it \
             was written"
        ),
        BreakReason::BrokenLink => format!(
            "entry {seq} does not link to entry {}: that entry was altered and its hash \
             recomputed, or entries were removed or inserted before {seq}",
            seq - 1
        ),
        BreakReason::Missing { next_present } if *next_present == seq + 1 => {
            format!("entry {seq} is missing (deleted); the next entry present is {next_present}")
        }
        BreakReason::Missing { next_present } => format!(
            "entries {seq} to {} are missing (deleted); the next entry present is {next_present}",
            next_present - 1
        ),
        BreakReason::HeadMismatch => format!(
            "entry {seq} differs from the head recorded earlier: the log was rewritten up to or \
             past that entry"
        ),
        BreakReason::Truncated { recorded_seq } if *recorded_seq == seq => format!(
            "the log ends at entry {} but the recorded head is entry {recorded_seq}: entry \
             {seq} was deleted",
            seq - 1
        ),
        BreakReason::Truncated { recorded_seq } => format!(
            "the log ends at entry {} but the recorded head is entry {recorded_seq}: entries \
             {seq} to {recorded_seq} were deleted",
            seq - 1
        ),
    }
}

/// The head as `SEQ:HASHHEX`, the form `--head` takes. An empty log's
/// head is `0:` and 64 zeros, which any log satisfies.
pub fn format_head(head: Option<AuditHead>) -> String {
    let head = head.unwrap_or(AuditHead {
        seq: 0,
        hash: GENESIS,
    });
    format!("{}:{}", head.seq, hex::encode(head.hash))
}

/// Parses `SEQ:HASHHEX` (a clap value parser).
pub fn parse_head(text: &str) -> Result<AuditHead, String> {
    let (seq, hash) = text
        .split_once(':')
        .ok_or("expected SEQ:HASH, as `mdgate audit head` prints")?;
    let seq: i64 = seq
        .parse()
        .ok()
        .filter(|s| *s >= 0)
        .ok_or("SEQ must be a non-negative integer")?;
    let hash = hex::decode(hash)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or("HASH must be 64 hexadecimal digits (SHA-256)")?;
    Ok(AuditHead { seq, hash })
}

fn head_json(head: &AuditHead) -> Value {
    json!({"seq": head.seq, "hash": hex::encode(head.hash)})
}

/// One entry as an export line's JSON object.
pub fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq,
        "at": rfc3339_millis(e.at),
        "at_ms": e.at,
        "kind": e.kind,
        "actor": e.actor,
        "patient": e.patient.map(|p| p.hyphenated().to_string()),
        "detail": e.detail,
        "prev_hash": hex::encode(e.prev_hash),
        "hash": hex::encode(e.hash),
    })
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds,
/// `2026-11-22T10:00:00.000Z`.
pub fn rfc3339_millis(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Outside years -9999..=9999: not a time mdgate writes.
        Err(_) => format!("invalid({ms})"),
    }
}

/// Writes every entry with `seq >= from` (only `patient`'s, if given) as
/// one JSON object per line, a page of [`MAX_PAGE`] at a time. Returns
/// how many were written.
pub async fn export(
    store: &dyn Store,
    patient: Option<Uuid>,
    from: i64,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    export_paged(store, patient, from, MAX_PAGE, out).await
}

async fn export_paged(
    store: &dyn Store,
    patient: Option<Uuid>,
    from: i64,
    page: u32,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let page = page.clamp(1, MAX_PAGE);
    let mut next = from.max(1);
    let mut written = 0u64;
    loop {
        let entries = match patient {
            Some(p) => store.audit_entries_for_patient(p, next, page).await?,
            None => store.audit_entries(next, page).await?,
        };
        let Some(last) = entries.last() else {
            break;
        };
        next = last.seq.saturating_add(1);
        for e in &entries {
            serde_json::to_writer(&mut *out, &entry_json(e)).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        out.flush()?;
        if entries.len() < page as usize {
            break;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests;
