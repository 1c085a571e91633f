//! The audit log's hash chain: canonical entry bytes, the hash, and a
//! verifier that walks stored rows. No I/O here; the SQL side only feeds
//! rows in and stores what comes out.
//!
//! # Hash
//!
//! `hash(n) = SHA-256(prev_hash(n) || entry_bytes(n))`, with
//! `prev_hash(1)` = 32 zero bytes ([`GENESIS`]) and
//! `prev_hash(n) = hash(n - 1)`. `entry_bytes` is, in this order:
//!
//! | field     | encoding                                                   |
//! |-----------|------------------------------------------------------------|
//! | tag       | the 16 ASCII bytes `mdgate.audit.v1\n`                     |
//! | `seq`     | i64, 8 bytes big-endian                                    |
//! | `at`      | i64 Unix milliseconds, 8 bytes big-endian                  |
//! | `kind`    | u32 big-endian byte length, then UTF-8                     |
//! | `actor`   | u32 big-endian byte length, then UTF-8                     |
//! | `patient` | `0x00` if absent; else `0x01`, u32 length, UTF-8 (the     |
//! |           | lower-case hyphenated UUID)                                |
//! | `detail`  | u32 big-endian byte length, then the stored JSON text     |
//!
//! Length prefixes make the encoding unambiguous (no two entries share
//! bytes), and `seq` inside the hash means rows cannot be renumbered. The
//! detail is hashed exactly as stored; mdgate stores it in the canonical
//! form of [`canonical_json`] (object keys sorted by their UTF-8 bytes, no
//! insignificant whitespace), so a verifier outside mdgate can rebuild the
//! bytes from the parsed JSON as well.
//!
//! # What verification can and cannot detect
//!
//! Walking the rows in `seq` order from 1, [`ChainVerifier`] detects:
//!
//! * a changed field in any row: that row's hash no longer matches;
//! * a changed row whose hash was recomputed: the next row's `prev_hash` no
//!   longer matches;
//! * a deleted row anywhere but the end, including the first rows: a gap in
//!   `seq` (mdgate assigns `seq` itself, previous + 1);
//! * with a recorded head (see [`AuditHead`]): a deleted tail, or a chain
//!   rewritten up to or past the recorded point.
//!
//! It cannot detect, without a head recorded outside the database, the
//! deletion of the last entries, nor a rewrite of every row from some point
//! to the end with recomputed hashes: the hash is unkeyed, so whoever can
//! write the file can rebuild a consistent suffix. Callers should therefore
//! record [`AuditHead`]s somewhere the database holder cannot rewrite (log
//! shipping, a peer, a backup) and pass the last one to the verifier.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// Domain-separation tag at the start of every entry's bytes.
const TAG: &[u8; 16] = b"mdgate.audit.v1\n";

/// The fields of one entry that the hash covers, borrowed as stored.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a> {
    pub seq: i64,
    pub at: i64,
    pub kind: &'a str,
    pub actor: &'a str,
    pub patient: Option<&'a str>,
    /// The JSON text exactly as stored.
    pub detail: &'a str,
}

/// The head of the chain: the last entry's sequence number and hash.
///
/// Recorded outside the database, it lets [`ChainVerifier`] detect a
/// deleted tail or a rewritten chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: [u8; 32],
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Number of entries checked.
    pub entries: u64,
    /// `seq` of the last entry, 0 for an empty log.
    pub last_seq: i64,
    /// Hash of the last entry, [`GENESIS`] for an empty log.
    pub last_hash: [u8; 32],
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at entry {seq}: {reason}")]
pub struct AuditBreak {
    /// The first sequence number at which the chain does not hold.
    pub seq: i64,
    pub reason: BreakReason,
}

/// Why the chain is broken at [`AuditBreak::seq`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// The entry is missing; the next entry present has `next_present`.
    Missing { next_present: i64 },
    /// The entry's `prev_hash` is not the previous entry's hash: the
    /// previous entry was altered (and rehashed), or entries were removed.
    BrokenLink,
    /// The entry's content does not match its stored hash: altered.
    HashMismatch,
    /// The entry's hash differs from the head recorded earlier: the chain
    /// was rewritten up to this point.
    HeadMismatch,
    /// The log ends before the recorded head: entries `seq..=recorded_seq`
    /// were deleted.
    Truncated { recorded_seq: i64 },
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakReason::Missing { next_present } => {
                write!(f, "entry missing (next present entry is {next_present})")
            }
            BreakReason::BrokenLink => f.write_str("prev_hash does not match the previous entry"),
            BreakReason::HashMismatch => f.write_str("content does not match its hash"),
            BreakReason::HeadMismatch => f.write_str("hash differs from the recorded head"),
            BreakReason::Truncated { recorded_seq } => {
                write!(f, "log ends before the recorded head {recorded_seq}")
            }
        }
    }
}

/// The canonical bytes of one entry (see the module docs).
pub fn entry_bytes(e: &EntryFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        TAG.len() + 16 + 4 * 4 + 1 + e.kind.len() + e.actor.len() + e.detail.len() + 36,
    );
    out.extend_from_slice(TAG);
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.at.to_be_bytes());
    put_str(&mut out, e.kind);
    put_str(&mut out, e.actor);
    match e.patient {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            put_str(&mut out, p);
        }
    }
    put_str(&mut out, e.detail);
    out
}

/// `SHA-256(prev_hash || entry_bytes(entry))`.
pub fn entry_hash(prev_hash: &[u8; 32], e: &EntryFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(entry_bytes(e));
    h.finalize().into()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Fields are bounded far below 4 GiB by the schema's CHECKs (and the
    // detail by the request size limits); saturating keeps this total.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// JSON text with object keys sorted by their UTF-8 bytes and no
/// whitespace. Strings and numbers are written as `serde_json` writes them.
pub fn canonical_json(v: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    write_canonical(v, &mut out);
    // Only serde_json's output and ASCII punctuation went in: UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A value of a flat detail object written by [`canonical_flat`].
#[derive(Debug, Clone, Copy)]
pub enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
}

/// A flat JSON object of strings and integers, exactly as
/// [`canonical_json`] writes the same object, without building a `Value`
/// (its map, a `String` per key and per value) first: for details written
/// on every request. Keys are sorted here; each must appear once.
pub fn canonical_flat(fields: &mut [(&str, Scalar<'_>)]) -> String {
    fields.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    debug_assert!(
        fields.windows(2).all(|w| w[0].0 != w[1].0),
        "a key appears twice"
    );
    let mut out = Vec::with_capacity(128);
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_plain(*key, &mut out);
        out.push(b':');
        match value {
            Scalar::Str(s) => write_plain(*s, &mut out),
            Scalar::Int(n) => write_plain(n, &mut out),
        }
    }
    out.push(b'}');
    // As in `canonical_json`: serde_json's output and ASCII punctuation.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes a scalar or a string as `serde_json` does (straight into `out`,
/// without building a `String` per value).
fn write_plain<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and these values always serialise.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => write_plain(v, out),
        Value::String(s) => write_plain(s.as_str(), out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sort explicitly: serde_json's map order depends on its
            // `preserve_order` feature, which any crate in the build may
            // turn on.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_plain(k.as_str(), out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

/// One stored row as read back, unparsed, so that a tampered row is
/// reported as a break rather than failing to decode.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub patient: Option<String>,
    pub detail: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl StoredRow {
    fn fields(&self) -> EntryFields<'_> {
        EntryFields {
            seq: self.seq,
            at: self.at,
            kind: &self.kind,
            actor: &self.actor,
            patient: self.patient.as_deref(),
            detail: &self.detail,
        }
    }
}

/// Checks rows fed in ascending `seq` order, starting from the first.
#[derive(Debug)]
pub struct ChainVerifier {
    recorded: Option<AuditHead>,
    next_seq: i64,
    prev_hash: [u8; 32],
    entries: u64,
}

impl ChainVerifier {
    /// A verifier for a whole log; `recorded` is a head recorded earlier,
    /// if the caller has one.
    pub fn new(recorded: Option<AuditHead>) -> Self {
        ChainVerifier {
            recorded,
            next_seq: 1,
            prev_hash: GENESIS,
            entries: 0,
        }
    }

    /// Checks the next row. After an error the verifier should be dropped.
    pub fn push(&mut self, row: &StoredRow) -> Result<(), AuditBreak> {
        let at = |reason| AuditBreak {
            seq: self.next_seq,
            reason,
        };
        if row.seq != self.next_seq {
            // Rows come in ascending order from a primary key, so a
            // different seq can only be a later one: entries are missing.
            return Err(at(BreakReason::Missing {
                next_present: row.seq,
            }));
        }
        if row.prev_hash.as_slice() != self.prev_hash.as_slice() {
            return Err(at(BreakReason::BrokenLink));
        }
        let computed = entry_hash(&self.prev_hash, &row.fields());
        if row.hash.as_slice() != computed.as_slice() {
            return Err(at(BreakReason::HashMismatch));
        }
        if let Some(head) = self.recorded {
            if head.seq == row.seq && head.hash != computed {
                return Err(at(BreakReason::HeadMismatch));
            }
        }
        self.prev_hash = computed;
        self.next_seq += 1;
        self.entries += 1;
        Ok(())
    }

    /// Ends the walk: checks the recorded head was reached.
    pub fn finish(self) -> Result<AuditVerification, AuditBreak> {
        let last_seq = self.next_seq - 1;
        if let Some(head) = self.recorded {
            if head.seq > last_seq {
                return Err(AuditBreak {
                    seq: self.next_seq,
                    reason: BreakReason::Truncated {
                        recorded_seq: head.seq,
                    },
                });
            }
        }
        Ok(AuditVerification {
            entries: self.entries,
            last_seq,
            last_hash: self.prev_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn row(seq: i64, prev: [u8; 32], detail: &str) -> StoredRow {
        let mut r = StoredRow {
            seq,
            at: 1_700_000_000_000 + seq,
            kind: "record.read".into(),
            actor: "dr@server2.example".into(),
            patient: Some("0b8f1d3e-5a57-4a39-9d3b-1f0c1a2b3c4d".into()),
            detail: detail.into(),
            prev_hash: prev.to_vec(),
            hash: Vec::new(),
        };
        r.hash = entry_hash(&prev, &r.fields()).to_vec();
        r
    }

    fn chain(n: i64) -> Vec<StoredRow> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let r = row(seq, prev, &format!("{{\"n\":{seq}}}"));
                prev.copy_from_slice(&r.hash);
                r
            })
            .collect()
    }

    fn verify(
        rows: &[StoredRow],
        head: Option<AuditHead>,
    ) -> Result<AuditVerification, AuditBreak> {
        let mut v = ChainVerifier::new(head);
        for r in rows {
            v.push(r)?;
        }
        v.finish()
    }

    #[test]
    fn encoding_is_unambiguous() {
        let base = EntryFields {
            seq: 1,
            at: 2,
            kind: "ab",
            actor: "c",
            patient: None,
            detail: "{}",
        };
        // Moving a byte from one field to the next changes the bytes.
        let shifted = EntryFields {
            kind: "a",
            actor: "bc",
            ..base
        };
        assert_ne!(entry_bytes(&base), entry_bytes(&shifted));
        // An absent patient differs from an empty one.
        let empty = EntryFields {
            patient: Some(""),
            ..base
        };
        assert_ne!(entry_bytes(&base), entry_bytes(&empty));
        assert!(entry_bytes(&base).starts_with(b"mdgate.audit.v1\n"));
    }

    #[test]
    fn hash_is_stable() {
        // Pinned so that a change of encoding cannot slip in unnoticed:
        // every stored log would stop verifying.
        let e = EntryFields {
            seq: 1,
            at: 1_700_000_000_000,
            kind: "grant.created",
            actor: "patient",
            patient: Some("0b8f1d3e-5a57-4a39-9d3b-1f0c1a2b3c4d"),
            detail: "{\"a\":1}",
        };
        assert_eq!(
            hex::encode(entry_hash(&GENESIS, &e)),
            PINNED_HASH,
            "the audit hash encoding changed"
        );
        assert_ne!(entry_hash(&[1; 32], &e), entry_hash(&GENESIS, &e));
    }

    /// Computed independently from the table in the module docs (a few
    /// lines of Python with `struct.pack('>q', ...)` and `hashlib`).
    const PINNED_HASH: &str = "004182e383647c9c66dcf1202374a33474cb2044bb3dc2a5eae8b18bf3446cc7";

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = json!({"b": [ {"z": 1, "a": null} ], "a": "x\"y", "ä": true, "A": 1.5});
        assert_eq!(
            canonical_json(&v),
            r#"{"A":1.5,"a":"x\"y","b":[{"a":null,"z":1}],"ä":true}"#
        );
        // Round trip: parsing the canonical text gives the same value and
        // the same text again.
        let back: Value = serde_json::from_str(&canonical_json(&v)).unwrap();
        assert_eq!(back, v);
        assert_eq!(canonical_json(&back), canonical_json(&v));
    }

    /// The text is what serde_json's own `Display` writes for each scalar
    /// and key, as the canonical form has always been (the earlier writer
    /// built it from `Value::to_string`).
    #[test]
    fn canonical_json_writes_scalars_as_serde_json_displays_them() {
        fn reference(v: &Value) -> String {
            match v {
                Value::Array(items) => {
                    let inner: Vec<String> = items.iter().map(reference).collect();
                    format!("[{}]", inner.join(","))
                }
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                    let inner: Vec<String> = keys
                        .into_iter()
                        .map(|k| format!("{}:{}", Value::String(k.clone()), reference(&map[k])))
                        .collect();
                    format!("{{{}}}", inner.join(","))
                }
                scalar => scalar.to_string(),
            }
        }
        let v = json!({
            "ctl": "\u{0}\u{1f}\t\n\"\\/", "uni": "é中😀\u{2028}", "big": u64::MAX,
            "neg": i64::MIN, "f": 0.1, "e": 1e300, "z": -0.0, "nested": [[], {}, [null, true]],
            "\u{7f}key": "x", "": ""
        });
        assert_eq!(canonical_json(&v), reference(&v));
    }

    /// The data path's detail, written without a `Value`, is the very
    /// text `canonical_json` writes for the same object: whatever the
    /// strings hold, whatever order the fields come in.
    #[test]
    fn canonical_flat_is_canonical_json() {
        let cases: &[(&str, &str, i64)] = &[
            ("vitals", "server2.example", 200),
            ("ctl \u{0}\u{1f}\t\n\"\\/", "é中😀\u{2028}\u{7f}", -1),
            ("", "", i64::MIN),
            ("a", "b", i64::MAX),
        ];
        for &(route, server, status) in cases {
            let mut fields = [
                ("status", Scalar::Int(status)),
                ("server", Scalar::Str(server)),
                ("route", Scalar::Str(route)),
                ("grant", Scalar::Str("0b8f1d3e-5a57-4a39-9d3b-1f0c1a2b3c4d")),
            ];
            let want = canonical_json(&json!({
                "route": route, "server": server, "status": status,
                "grant": "0b8f1d3e-5a57-4a39-9d3b-1f0c1a2b3c4d",
            }));
            assert_eq!(canonical_flat(&mut fields), want);
            fields.reverse();
            assert_eq!(canonical_flat(&mut fields), want);
        }
        // Keys are sorted by their bytes, as `canonical_json` sorts them.
        assert_eq!(
            canonical_flat(&mut [
                ("ä", Scalar::Int(1)),
                ("a", Scalar::Int(2)),
                ("A", Scalar::Int(3))
            ]),
            r#"{"A":3,"a":2,"ä":1}"#
        );
        assert_eq!(canonical_flat(&mut []), "{}");
    }

    proptest! {
        #[test]
        fn canonical_flat_matches_canonical_json_for_any_fields(
            fields in prop::collection::btree_map(
                ".{0,8}",
                prop_oneof![
                    any::<i64>().prop_map(Err::<String, i64>),
                    ".{0,24}".prop_map(Ok::<String, i64>),
                ],
                0..6,
            )
        ) {
            let value = Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), match v { Ok(s) => json!(s), Err(n) => json!(n) }))
                    .collect(),
            );
            let mut flat: Vec<(&str, Scalar<'_>)> = fields
                .iter()
                .rev()
                .map(|(k, v)| (k.as_str(), match v { Ok(s) => Scalar::Str(s), Err(n) => Scalar::Int(*n) }))
                .collect();
            prop_assert_eq!(canonical_flat(&mut flat), canonical_json(&value));
        }
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(
            verify(&[], None).unwrap(),
            AuditVerification {
                entries: 0,
                last_seq: 0,
                last_hash: GENESIS
            }
        );
        let rows = chain(5);
        let ok = verify(&rows, None).unwrap();
        assert_eq!(ok.entries, 5);
        assert_eq!(ok.last_seq, 5);
        assert_eq!(ok.last_hash.as_slice(), rows[4].hash.as_slice());
    }

    #[test]
    fn altered_field_is_a_hash_mismatch_at_that_row() {
        let mut rows = chain(5);
        rows[2].actor = "mallory@evil.example".into();
        let err = verify(&rows, None).unwrap_err();
        assert_eq!((err.seq, err.reason), (3, BreakReason::HashMismatch));
    }

    #[test]
    fn rehashed_row_breaks_the_next_link() {
        let mut rows = chain(5);
        rows[2].detail = "{\"n\":99}".into();
        let prev: [u8; 32] = rows[1].hash.as_slice().try_into().unwrap();
        rows[2].hash = entry_hash(&prev, &rows[2].fields()).to_vec();
        let err = verify(&rows, None).unwrap_err();
        assert_eq!((err.seq, err.reason), (4, BreakReason::BrokenLink));
    }

    #[test]
    fn deleted_rows_are_gaps() {
        let mut rows = chain(5);
        rows.remove(2);
        let err = verify(&rows, None).unwrap_err();
        assert_eq!(
            (err.seq, err.reason),
            (3, BreakReason::Missing { next_present: 4 })
        );

        let rows = chain(5);
        let err = verify(&rows[1..], None).unwrap_err();
        assert_eq!(
            (err.seq, err.reason),
            (1, BreakReason::Missing { next_present: 2 })
        );
    }

    #[test]
    fn tail_deletion_needs_a_recorded_head() {
        let rows = chain(5);
        let head = AuditHead {
            seq: 5,
            hash: rows[4].hash.as_slice().try_into().unwrap(),
        };
        // Without the head, a truncated log looks intact: the documented
        // limit.
        assert!(verify(&rows[..3], None).is_ok());
        let err = verify(&rows[..3], Some(head)).unwrap_err();
        assert_eq!(
            (err.seq, err.reason),
            (4, BreakReason::Truncated { recorded_seq: 5 })
        );
        // The head in the middle of a longer log is fine.
        assert_eq!(verify(&chain(8), Some(head)).unwrap().entries, 8);
    }

    #[test]
    fn rewritten_chain_is_caught_by_the_head() {
        let rows = chain(5);
        let head = AuditHead {
            seq: 4,
            hash: rows[3].hash.as_slice().try_into().unwrap(),
        };
        // Rewrite from row 3 on with consistent hashes.
        let mut forged = rows[..2].to_vec();
        let mut prev: [u8; 32] = rows[1].hash.as_slice().try_into().unwrap();
        for seq in 3..=5 {
            let r = row(seq, prev, "{\"forged\":true}");
            prev.copy_from_slice(&r.hash);
            forged.push(r);
        }
        assert!(verify(&forged, None).is_ok());
        let err = verify(&forged, Some(head)).unwrap_err();
        assert_eq!((err.seq, err.reason), (4, BreakReason::HeadMismatch));
    }
}
