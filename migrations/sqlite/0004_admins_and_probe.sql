-- Admin keys belong to named people and expire. A key from before this
-- version was the first admin key, which could have been printed to a log
-- or journal: the upgrade retires it, and the broker, finding no live admin
-- key at start, writes a fresh bootstrap key to admin.key in the data dir.
ALTER TABLE admin_keys ADD COLUMN name TEXT NOT NULL DEFAULT 'bootstrap';
ALTER TABLE admin_keys ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE admin_keys SET expires_at = created_at;
CREATE UNIQUE INDEX admin_keys_name ON admin_keys (name);

-- One row readiness rewrites, to prove the store still takes a write.
CREATE TABLE store_probe (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  INTEGER NOT NULL
);
INSERT INTO store_probe (id, at) VALUES (1, 0);
