-- mdgate store, schema version 5 (SQLite): how far the audit journal has
-- been copied into the audit log.
--
-- Conventions as in 0001_initial_schema.sql. Never edit this file after
-- release; add 0006_*.sql.
--
-- The data path's audit entries become durable in the audit journal, a
-- file beside the database (`<database>-audit`, src/store/journal.rs),
-- and are copied from there into audit_log, many per transaction. The
-- copy and this row change in the same transaction, so after a crash the
-- entries past next_jseq are copied once, at the next start, and none
-- twice. One row: the journal this database is paired with.
CREATE TABLE audit_journal (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    -- The random id in the journal file's header.
    journal_id  BLOB    NOT NULL CHECK (length(journal_id) = 16),
    -- Sequence number (in the journal) of the first entry not yet copied.
    next_jseq   INTEGER NOT NULL CHECK (next_jseq >= 1),
    -- Logical position of that entry's frame in the journal's ring.
    next_pos    INTEGER NOT NULL CHECK (next_pos >= 0)
) STRICT;
