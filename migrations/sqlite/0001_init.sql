-- valetkey store, version 1. Times are unix seconds unless named *_ms.
-- No column holds a secret in plaintext: launcher and admin keys are kept as
-- SHA-256 hashes, real tokens and signing keys sealed under the master key.

CREATE TABLE agents (
    name        TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL UNIQUE,
    key_hash    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE admin_keys (
    key_id      TEXT PRIMARY KEY,
    key_hash    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    public_key  BLOB NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    -- NULL for the one active key.
    retired_at  INTEGER
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;

CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE leases (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL,
    agent       TEXT NOT NULL,
    env         TEXT NOT NULL,
    grants      TEXT NOT NULL,
    kid         TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX leases_session ON leases (session_id);
CREATE INDEX leases_agent ON leases (agent, expires_at);
CREATE INDEX leases_kid ON leases (kid, expires_at);

-- One row per revoked lease, in revocation order: every replica follows this
-- feed to learn revocations made elsewhere.
CREATE TABLE revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    lease_id    TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER NOT NULL
);

-- The audit trail: each event commits to the previous one's hash.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    at_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    agent       TEXT,
    session_id  TEXT,
    env         TEXT,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
