-- Approvers' passkeys (the console's factor), each sealed under the master
-- key for `approver-passkey:NAME:CREDENTIAL_ID`: the sealed JSON holds the
-- public key and its signature counter, so one written without the master
-- key opens nothing.
CREATE TABLE approver_passkeys (
    approver      TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (approver, credential_id)
);
