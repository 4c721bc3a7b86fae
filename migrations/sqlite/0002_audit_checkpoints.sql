-- Signed checkpoints of the audit chain's head. A checkpoint commits to the
-- hash of event `seq`; the signature is the broker's signing key's, so a
-- chain cut short or rewritten after a checkpoint no longer matches it.
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    head_hash   TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    kid         TEXT NOT NULL,
    signature   TEXT NOT NULL
);
