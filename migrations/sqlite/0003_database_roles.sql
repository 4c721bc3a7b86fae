-- PostgreSQL roles created for leases (postgres providers). The broker
-- records a role before it creates it, and only ever ends roles it has a row
-- for; `dropped_at` is set once the role is gone from its server.
CREATE TABLE database_roles (
    role        TEXT PRIMARY KEY,
    lease_id    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    env         TEXT NOT NULL,
    agent       TEXT NOT NULL,
    database    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    dropped_at  INTEGER
);
CREATE INDEX database_roles_live ON database_roles (expires_at) WHERE dropped_at IS NULL;
CREATE INDEX database_roles_lease ON database_roles (lease_id);
