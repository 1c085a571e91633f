-- mdgate store, schema version 2 (SQLite): the requesting server's side.
--
-- Conventions as in 0001_initial_schema.sql (ms INTEGER times from the
-- caller's clock, lower-case hyphenated UUID text, lower-case FQDNs,
-- STRICT tables). Never edit this file after release; add 0003_*.sql.
--
-- One exception to 0001's "secrets are never stored": this side must show
-- the doctor the request code (the patient types it on the home server),
-- and must present the grant token on every data request, so both are kept
-- in plain text, and only as long as they are useful: the code is cleared
-- as soon as the request is decided, the token lives with the grant.

-- Requests a local doctor sent to a patient's home server, and the grant
-- received for each. id is minted here and is also the idempotency key
-- the home server sees. Lifecycle:
--
--   sending --ack--> pending --decision--> approved --> revoked | expired
--      |                |
--      +----------------+--> denied | voided | expired | cancelled | failed
--
-- 'sending': queued in the outbox, the home server has not acknowledged;
-- 'failed': the home server refused the request itself (reason says why).
CREATE TABLE outgoing_requests (
    id                  TEXT    NOT NULL PRIMARY KEY
                        CHECK (length(id) = 36 AND id = lower(id)),
    kind                TEXT    NOT NULL CHECK (kind IN ('access', 'transfer')),
    -- The local doctor's upstream username, and access.md user id.
    doctor              TEXT    NOT NULL CHECK (length(doctor) BETWEEN 1 AND 128),
    doctor_upstream_id  INTEGER NOT NULL,
    -- <patient federation id>@<home server>.
    patient_address     TEXT    NOT NULL
                        CHECK (length(patient_address) BETWEEN 3 AND 320
                               AND patient_address LIKE '_%@_%'),
    -- The home server. No foreign key to peers: we may ask a server that
    -- has never contacted us.
    server_fqdn         TEXT    NOT NULL
                        CHECK (length(server_fqdn) BETWEEN 1 AND 253
                               AND server_fqdn = lower(server_fqdn)),
    role                TEXT    NOT NULL CHECK (length(role) BETWEEN 1 AND 64),
    duration_ms         INTEGER NOT NULL CHECK (duration_ms > 0),
    -- The request code shown to the doctor while the request is open.
    code                TEXT    CHECK (code IS NULL OR length(code) BETWEEN 1 AND 64),
    state               TEXT    NOT NULL DEFAULT 'sending'
                        CHECK (state IN ('sending', 'pending', 'approved', 'denied',
                                         'voided', 'expired', 'cancelled', 'revoked',
                                         'failed')),
    -- Machine-readable reason given by the home server (failed, denied,
    -- voided); never free text from a person.
    reason              TEXT    CHECK (reason IS NULL OR length(reason) BETWEEN 1 AND 200),
    -- The grant received on approval: its jti, the token (a compact JWS),
    -- and what it allows. Kept after revocation or expiry for the record.
    grant_id            TEXT    UNIQUE CHECK (grant_id IS NULL OR length(grant_id) = 36),
    token               TEXT    CHECK (token IS NULL OR length(token) BETWEEN 1 AND 8192),
    grant_role          TEXT    CHECK (grant_role IS NULL OR length(grant_role) BETWEEN 1 AND 64),
    grant_not_before    INTEGER,
    grant_expires_at    INTEGER CHECK (grant_expires_at IS NULL
                                       OR grant_expires_at > grant_not_before),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL CHECK (updated_at >= created_at),
    -- When the request code expires.
    expires_at          INTEGER NOT NULL CHECK (expires_at > created_at),
    -- The grant's fields come together or not at all.
    CONSTRAINT outgoing_requests_grant_complete
        CHECK ((grant_id IS NULL) = (token IS NULL)
               AND (grant_id IS NULL) = (grant_role IS NULL)
               AND (grant_id IS NULL) = (grant_not_before IS NULL)
               AND (grant_id IS NULL) = (grant_expires_at IS NULL)),
    -- Approved or revoked means a grant was received; only those states,
    -- and expired (a grant that ran out), can hold one.
    CONSTRAINT outgoing_requests_grant_iff_granted
        CHECK ((state NOT IN ('approved', 'revoked') OR grant_id IS NOT NULL)
               AND (grant_id IS NULL OR state IN ('approved', 'revoked', 'expired'))),
    -- The code is shown only while the request is open: never once decided.
    CONSTRAINT outgoing_requests_code_only_while_open
        CHECK (code IS NULL OR state IN ('sending', 'pending'))
) STRICT;

-- The doctor's list of requests, newest first. Lookups by grant (server1
-- names the grant in revocations) use the index of UNIQUE (grant_id).
CREATE INDEX outgoing_requests_doctor ON outgoing_requests (doctor, created_at DESC);

-- Server1 side: the certificate the requesting server presented with its
-- request (SHA-256, as x5t#S256), so that the grant issued later, on the
-- patient's own connection, is bound to it. NULL only for requests stored
-- by schema version 1.
ALTER TABLE access_requests ADD COLUMN requester_cert_sha256 BLOB
    CHECK (requester_cert_sha256 IS NULL OR length(requester_cert_sha256) = 32);

-- Server1 side: live grants (unrevoked, by expiry) to warm the grant cache
-- at start.
CREATE INDEX grants_live ON grants (expires_at) WHERE revoked_at IS NULL;
