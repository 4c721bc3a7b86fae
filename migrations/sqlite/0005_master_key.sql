-- Which master key the store's records are sealed under: a keyed
-- fingerprint of it, never the key. A broker started with another key is
-- refused, and one that finds the next key of a rotation cut short between
-- its commit and the key file's rename finishes it.
CREATE TABLE master_key (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    key_id  TEXT NOT NULL,
    set_at  INTEGER NOT NULL
);
