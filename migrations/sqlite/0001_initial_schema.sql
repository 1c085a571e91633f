-- mdgate store, schema version 1 (SQLite).
--
-- Conventions (see src/store.rs for the why):
-- * Timestamps are INTEGER Unix milliseconds, supplied by the caller's clock.
-- * Identifiers minted by mdgate (patients, invitations, requests, grants)
--   are UUIDs as lower-case hyphenated TEXT (36 characters).
-- * Secrets are never stored: tokens and request codes are stored as a
--   32-byte hash (BLOB) computed by the caller.
-- * Server names are lower-case FQDNs without a trailing dot.
-- * Every table is STRICT so that a value of the wrong type is refused
--   instead of silently stored.
--
-- This file is applied once and recorded with its checksum in
-- _sqlx_migrations: never edit it after release; add 0002_*.sql instead.

-- Federation peers: every server that has contacted us or that we contact.
CREATE TABLE peers (
    fqdn        TEXT    NOT NULL PRIMARY KEY
                CHECK (length(fqdn) BETWEEN 1 AND 253 AND fqdn = lower(fqdn)),
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL CHECK (last_seen >= first_seen),
    -- 'blocked' is an administrator's decision; DNS keys alone never block.
    state       TEXT    NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'blocked'))
) STRICT;

-- The DNS key cache: one row per published selector record of a peer.
-- For purpose 'tls' the material is the SHA-256 of the certificate's
-- SubjectPublicKeyInfo; for 'signing' it is the raw public key. A revoked
-- record (the peer published an empty key) keeps an empty material.
CREATE TABLE peer_keys (
    fqdn          TEXT    NOT NULL REFERENCES peers (fqdn) ON DELETE CASCADE,
    selector      TEXT    NOT NULL CHECK (length(selector) BETWEEN 1 AND 63),
    purpose       TEXT    NOT NULL CHECK (purpose IN ('tls', 'signing')),
    algorithm     TEXT    NOT NULL CHECK (length(algorithm) BETWEEN 1 AND 32),
    key_material  BLOB    NOT NULL CHECK (length(key_material) <= 4096),
    fetched_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL CHECK (expires_at >= fetched_at),
    revoked       INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    PRIMARY KEY (fqdn, selector),
    CONSTRAINT peer_keys_material_unless_revoked
        CHECK (revoked = 1 OR length(key_material) > 0)
) STRICT;

-- Cache expiry sweeps.
CREATE INDEX peer_keys_expires_at ON peer_keys (expires_at);

-- Local patients known to the federation. upstream_id is the access.md
-- patient id; moved_to is the new address once the patient transferred
-- away (the redirect left behind).
CREATE TABLE patients (
    federation_id  TEXT    NOT NULL PRIMARY KEY
                   CHECK (length(federation_id) = 36
                          AND federation_id = lower(federation_id)),
    upstream_id    INTEGER NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    moved_to       TEXT    CHECK (moved_to IS NULL
                                  OR (length(moved_to) BETWEEN 3 AND 320
                                      AND moved_to LIKE '_%@_%'))
) STRICT;

-- Invitations carried by the patient's QR code. A request needs a live one
-- (unused, unexpired), so strangers cannot prompt the patient.
CREATE TABLE invitations (
    id          TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    patient     TEXT    NOT NULL
                REFERENCES patients (federation_id) ON DELETE CASCADE,
    token_hash  BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL CHECK (expires_at > created_at),
    used_at     INTEGER CHECK (used_at IS NULL OR used_at >= created_at)
) STRICT;

CREATE INDEX invitations_patient ON invitations (patient);

-- Requests received from peer servers for one of our patients (the
-- patient's home-server side of both flows). The request code itself is
-- never stored, only its hash; attempts counts wrong codes typed by the
-- patient. The idempotency key is scoped to the requesting server so that
-- one peer cannot pre-empt another peer's keys.
CREATE TABLE access_requests (
    id               TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    kind             TEXT    NOT NULL CHECK (kind IN ('access', 'transfer')),
    patient          TEXT    NOT NULL REFERENCES patients (federation_id),
    invitation       TEXT    NOT NULL UNIQUE REFERENCES invitations (id),
    server_fqdn      TEXT    NOT NULL REFERENCES peers (fqdn),
    doctor           TEXT    NOT NULL
                     CHECK (length(doctor) BETWEEN 3 AND 320 AND doctor LIKE '_%@_%'),
    role             TEXT    NOT NULL CHECK (length(role) BETWEEN 1 AND 64),
    duration_ms      INTEGER NOT NULL CHECK (duration_ms > 0),
    code_hash        BLOB    NOT NULL CHECK (length(code_hash) = 32),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'approved', 'denied',
                                      'voided', 'expired', 'cancelled')),
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL CHECK (expires_at > created_at),
    decided_at       INTEGER,
    idempotency_key  TEXT    NOT NULL
                     CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    UNIQUE (server_fqdn, idempotency_key),
    -- A decision time exactly when the request left 'pending'.
    CONSTRAINT access_requests_decided_iff_not_pending
        CHECK ((state = 'pending') = (decided_at IS NULL))
) STRICT;

-- The patient's list of pending prompts, and expiry sweeps.
CREATE INDEX access_requests_patient_state ON access_requests (patient, state);
CREATE INDEX access_requests_pending_expiry ON access_requests (expires_at)
    WHERE state = 'pending';

-- Grants issued by the patient's approval. id is the token's jti. The grant
-- is bound to the requesting server's TLS key (x5t#S256), one doctor and
-- one role. At most one grant per request.
CREATE TABLE grants (
    id                 TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    request_id         TEXT    NOT NULL UNIQUE REFERENCES access_requests (id),
    patient            TEXT    NOT NULL REFERENCES patients (federation_id),
    server_fqdn        TEXT    NOT NULL REFERENCES peers (fqdn),
    server_key_sha256  BLOB    NOT NULL CHECK (length(server_key_sha256) = 32),
    doctor             TEXT    NOT NULL
                       CHECK (length(doctor) BETWEEN 3 AND 320 AND doctor LIKE '_%@_%'),
    role               TEXT    NOT NULL CHECK (length(role) BETWEEN 1 AND 64),
    not_before         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL CHECK (expires_at > not_before),
    revoked_at         INTEGER
) STRICT;

-- The patient's list of grants; a peer's grants (e.g. when its key rotates).
CREATE INDEX grants_patient ON grants (patient);
CREATE INDEX grants_server ON grants (server_fqdn);

-- Durable outbox of messages to peers. A message stays until delivered;
-- the idempotency key travels with it so the receiver can drop duplicates.
-- No foreign key on destination: we may write to a server that has never
-- contacted us.
CREATE TABLE outbox (
    id               INTEGER NOT NULL PRIMARY KEY,
    destination      TEXT    NOT NULL
                     CHECK (length(destination) BETWEEN 1 AND 253
                            AND destination = lower(destination)),
    kind             TEXT    NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    idempotency_key  TEXT    NOT NULL UNIQUE
                     CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER,
    last_error       TEXT    CHECK (last_error IS NULL OR length(last_error) <= 1024)
) STRICT;

-- The delivery worker's query: undelivered messages by due time.
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

-- The hash-chained audit log. hash = SHA-256(prev_hash || canonical entry
-- bytes), see src/store/chain.rs. seq is assigned by mdgate (previous + 1),
-- never by SQLite, so a gap means a deleted row. patient has no foreign key
-- on purpose: deleting a patient must never delete (or be blocked by) its
-- audit trail.
CREATE TABLE audit_log (
    seq        INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    actor      TEXT    NOT NULL CHECK (length(actor) BETWEEN 1 AND 320),
    patient    TEXT    CHECK (patient IS NULL OR length(patient) = 36),
    detail     TEXT    NOT NULL CHECK (json_valid(detail)),
    prev_hash  BLOB    NOT NULL UNIQUE CHECK (length(prev_hash) = 32),
    hash       BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32)
) STRICT;

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
