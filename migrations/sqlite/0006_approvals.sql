-- Requests held for a human's approval, bound to a digest of exactly what
-- would be forwarded. One pending or approved approval per session and
-- digest: a repeated request finds it instead of asking again.
CREATE TABLE approvals (
    id               TEXT PRIMARY KEY,
    digest           TEXT NOT NULL,
    agent            TEXT NOT NULL,
    session_id       TEXT NOT NULL,
    lease_id         TEXT NOT NULL,
    provider         TEXT NOT NULL,
    env              TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    approvers_needed INTEGER NOT NULL,
    tier             TEXT NOT NULL,
    environments     TEXT NOT NULL,
    operations       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    decide_by_ms     INTEGER NOT NULL,
    execute_by_ms    INTEGER,
    decided_at_ms    INTEGER,
    used_at_ms       INTEGER,
    denied_by        TEXT,
    reason           TEXT
);
CREATE UNIQUE INDEX approvals_open ON approvals (session_id, digest) WHERE state IN ('pending', 'approved');
CREATE INDEX approvals_state ON approvals (state);

-- One row per approver who approved: two distinct approvers are two rows.
CREATE TABLE approval_votes (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    approver    TEXT NOT NULL,
    factor      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (approval_id, approver)
);

-- One-time enrollment codes an admin issues for a named approver, hashed.
CREATE TABLE approver_enrollments (
    code_hash  BLOB PRIMARY KEY,
    approver   TEXT NOT NULL,
    issued_by  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

-- A code factor redeemed but not yet confirmed with a first code, sealed
-- under the master key for `approver-factor-pending:NAME`.
CREATE TABLE approver_pending_factors (
    approver   TEXT PRIMARY KEY,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- An approver's confirmed code factor, sealed for `approver-factor:NAME`;
-- `last_step` is the last TOTP step used (a code is taken once).
CREATE TABLE approver_factors (
    approver     TEXT PRIMARY KEY,
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    enrolled_at  INTEGER NOT NULL,
    last_step    INTEGER NOT NULL,
    failures     INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0
);
