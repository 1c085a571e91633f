-- mdgate store, schema version 4 (SQLite): the audit log without indexes
-- on its hashes.
--
-- Conventions as in 0001_initial_schema.sql. Never edit this file after
-- release; add 0005_*.sql.
--
-- Version 1 declared `prev_hash` and `hash` UNIQUE. Each of those is a
-- B-tree keyed by random 32-byte values, so every append dirtied a random
-- page in both, and a group commit of 8 entries wrote about three times
-- the pages it needs (measured: 1.2 ms against 0.4 ms per commit on the
-- benchmark machine). They guarded nothing the chain does not: `seq` is
-- the primary key and appends happen under the write lock, so two entries
-- cannot claim the same place, and `mdgate audit verify` recomputes every
-- hash and link. The patient index and the append-only triggers stay.
--
-- SQLite cannot drop a UNIQUE constraint, so the table is rebuilt with
-- the same rows. Dropping a table fires none of its triggers.

CREATE TABLE audit_log_v4 (
    seq        INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    actor      TEXT    NOT NULL CHECK (length(actor) BETWEEN 1 AND 320),
    patient    TEXT    CHECK (patient IS NULL OR length(patient) = 36),
    detail     TEXT    NOT NULL CHECK (json_valid(detail)),
    prev_hash  BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash       BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

INSERT INTO audit_log_v4 (seq, at, kind, actor, patient, detail, prev_hash, hash)
    SELECT seq, at, kind, actor, patient, detail, prev_hash, hash
    FROM audit_log ORDER BY seq;

DROP TABLE audit_log;
ALTER TABLE audit_log_v4 RENAME TO audit_log;

-- A patient reads their own entries.
CREATE INDEX audit_log_patient ON audit_log (patient, seq) WHERE patient IS NOT NULL;

-- Append-only, as a guard against mistakes in our own code. The hash chain,
-- not these triggers, is the protection against someone holding the file.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
