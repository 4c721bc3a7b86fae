-- The forward proxy's certificate authority: its certificate (public) and
-- its private key sealed under the master key for `forward-ca:ID`, so every
-- broker on this store serves the same CA. One row has no `retired_at`: the
-- CA that issues leaf certificates now; `valetkey ca rotate` retires it.
CREATE TABLE forward_cas (
    id         TEXT PRIMARY KEY,
    cert_der   BLOB NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
CREATE UNIQUE INDEX forward_cas_current ON forward_cas ((1)) WHERE retired_at IS NULL;
