-- mdgate store, schema version 3 (SQLite): patient transfers.
--
-- Conventions as in 0001_initial_schema.sql. Never edit this file after
-- release; add 0004_*.sql.
--
-- One row per transfer on each server taking part. The id is the request
-- id minted by the new home ("target") and is the same on both sides.
-- State names and the transitions allowed between them are in
-- docs/protocol.md § Transfer and src/transfer/machine.rs; the store only
-- guarantees that a transition is applied against the version it was
-- computed from (compare-and-set), together with its outbox messages and
-- audit entries.
--
-- data holds the side's working fields as JSON (file names, hashes,
-- counts, the signed approval, the new address). The patient's key is
-- kept by the old home only from approval until the ciphertext is made,
-- and is removed from data in the same transaction that records the
-- export; the new home never stores it.
CREATE TABLE transfers (
    id          TEXT    NOT NULL PRIMARY KEY
                CHECK (length(id) = 36 AND id = lower(id)),
    side        TEXT    NOT NULL CHECK (side IN ('source', 'target')),
    state       TEXT    NOT NULL CHECK (length(state) BETWEEN 1 AND 32),
    -- The other server.
    peer_fqdn   TEXT    NOT NULL
                CHECK (length(peer_fqdn) BETWEEN 1 AND 253 AND peer_fqdn = lower(peer_fqdn)),
    -- source: the local patient's federation id; target: the patient's
    -- new federation id, once the account exists here.
    patient     TEXT    CHECK (patient IS NULL OR (length(patient) = 36 AND patient = lower(patient))),
    -- The requesting doctor, user@fqdn.
    doctor      TEXT    NOT NULL CHECK (length(doctor) BETWEEN 3 AND 320),
    data        TEXT    NOT NULL CHECK (json_valid(data)),
    version     INTEGER NOT NULL CHECK (version >= 1),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX transfers_patient ON transfers (patient);
CREATE INDEX transfers_state ON transfers (state, updated_at);
