-- Sessions kept alive by their launcher's heartbeat (`valetkey run`): such a
-- lease's `expires_at` is the deadline the last heartbeat set, moved forward
-- by each one; `session_ends_at` is the hard end no heartbeat passes (the
-- credential's own `exp`). NULL for a lease with a fixed expiry.
ALTER TABLE leases ADD COLUMN session_ends_at INTEGER;
CREATE INDEX leases_heartbeat ON leases (expires_at) WHERE session_ends_at IS NOT NULL AND revoked_at IS NULL;
