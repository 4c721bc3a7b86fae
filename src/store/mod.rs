//! Persistence behind one trait. SQLite (embedded) is the default; PostgreSQL
//! joins when several replicas serve. Callers never branch on the backend.
//!
//! The store keeps records; it decides nothing. Secrets reach it only sealed
//! (`secrets::Sealed`) or hashed.

mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::audit;
use crate::secrets::Sealed;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} `{name}` already exists")]
    Conflict { what: &'static str, name: String },
    #[error("cannot open the store at {location}: {source}")]
    Open { location: String, source: sqlx::Error },
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
    /// A batch of audit appends failed together; every waiter gets the cause.
    #[error("the audit trail could not be written: {0}")]
    AuditWrite(String),
    #[error("a record could not be re-sealed under the new master key, so nothing was: {0}")]
    Reseal(String),
    #[error("the store is sealed under another master key than the one being rotated; nothing was re-sealed")]
    MasterKeyMoved,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub name: String,
    pub key_id: String,
    pub key_hash: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKeyRecord {
    /// The person (or `bootstrap`) the key belongs to; one key per name.
    pub name: String,
    pub key_id: String,
    pub key_hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub public_key: Vec<u8>,
    /// The PKCS#8 private key, sealed for `signing-key:KID`.
    pub sealed: Sealed,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct SecretRecord {
    pub name: String,
    pub sealed: Sealed,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub session_id: String,
    pub agent: String,
    pub env: String,
    pub grants: BTreeMap<String, Vec<String>>,
    pub kid: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// A PostgreSQL role the broker created for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseRole {
    pub role: String,
    pub lease_id: String,
    pub provider: String,
    pub env: String,
    pub agent: String,
    pub database: String,
    pub created_at: i64,
    /// The lease's expiry, which is also the role's `VALID UNTIL`.
    pub expires_at: i64,
    pub dropped_at: Option<i64>,
}

/// What to revoke: one lease, every lease of a session, or of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    Lease(String),
    Session(String),
    Agent(String),
}

/// What `delete_admin_key` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminKeyRemoval {
    Removed,
    NotFound,
    /// It is the last live key: removing it would leave no one to administer.
    LastLive,
}

/// A revoked lease, as the revocation feed carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub seq: i64,
    pub lease_id: String,
    pub expires_at: i64,
}

/// Opens a record sealed under the old master key and seals it under the
/// new one: (record id, sealed) → sealed.
pub type Reseal<'r> =
    dyn for<'a, 'b> Fn(&'a str, &'b Sealed) -> Result<Sealed, crate::secrets::SecretsError> + Sync + 'r;

#[async_trait]
pub trait Store: Send + Sync {
    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The id of the master key the store is sealed under, once recorded.
    async fn master_key_id(&self) -> Result<Option<String>, StoreError>;
    /// The id of the master key the store is sealed under: the one recorded,
    /// or `key_id` when none was, which is then recorded.
    async fn claim_master_key_id(&self, key_id: &str, at: i64) -> Result<String, StoreError>;
    /// Re-seals every sealed record (secrets, signing keys) with `reseal`
    /// and records `new_id`, in one transaction that also holds off every
    /// other write; only while `old_id` is the recorded id. Returns how many
    /// records it re-sealed.
    async fn reseal_all(&self, old_id: &str, new_id: &str, at: i64, reseal: &Reseal<'_>) -> Result<usize, StoreError>;
    /// Succeeds when the store takes a durable write (readiness).
    async fn probe_write(&self, now: i64) -> Result<(), StoreError>;

    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    async fn agent_by_key_id(&self, key_id: &str) -> Result<Option<AgentRecord>, StoreError>;
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Removes the agent; false when there was none.
    async fn delete_agent(&self, name: &str) -> Result<bool, StoreError>;

    /// Adds a key; `Conflict` when its name already has one.
    async fn insert_admin_key(&self, key: &AdminKeyRecord) -> Result<(), StoreError>;
    async fn admin_key(&self, key_id: &str) -> Result<Option<AdminKeyRecord>, StoreError>;
    /// Every admin key, expired ones too, by name.
    async fn list_admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError>;
    /// Removes the key of `name`, unless it is the last one alive at `now`
    /// (checked in the same transaction, so two removals cannot both pass).
    async fn delete_admin_key(&self, name: &str, now: i64) -> Result<AdminKeyRemoval, StoreError>;
    /// Replaces the bootstrap key with `key` when no key is alive at `now`;
    /// false (and nothing written) when one is.
    async fn replace_bootstrap_admin_key(&self, key: &AdminKeyRecord, now: i64) -> Result<bool, StoreError>;

    /// Adds a new active key and retires the previous one at `created_at`.
    async fn rotate_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError>;
    /// Every key, newest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// The latest expiry among leases signed by `kid`.
    async fn last_expiry_signed_by(&self, kid: &str) -> Result<Option<i64>, StoreError>;

    async fn put_secret(&self, secret: &SecretRecord) -> Result<(), StoreError>;
    async fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Every stored secret's name and when it was last set (unix seconds).
    async fn secret_ages(&self) -> Result<Vec<(String, i64)>, StoreError>;

    async fn insert_lease(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Records a lease and the event of its mint in one durable write,
    /// committed with whatever audit appends are queued beside it.
    async fn insert_lease_with_event(
        &self,
        lease: &Lease,
        event: &audit::Event,
        at_ms: i64,
    ) -> Result<audit::Record, StoreError>;
    async fn lease(&self, id: &str) -> Result<Option<Lease>, StoreError>;
    /// The agent whose leases carry this session id.
    async fn session_agent(&self, session_id: &str) -> Result<Option<String>, StoreError>;
    /// Revokes every live lease the target covers and appends each to the
    /// revocation feed, in one transaction. Returns the leases revoked now.
    async fn revoke(&self, target: &RevokeTarget, now: i64) -> Result<Vec<Revocation>, StoreError>;
    /// The feed after `seq`, leaving out leases that expired before `now`.
    async fn revocations_since(&self, seq: i64, now: i64) -> Result<Vec<Revocation>, StoreError>;

    /// Records roles about to be created; before they are, so a role can
    /// never exist on a server without the store knowing it.
    async fn insert_database_roles(&self, roles: &[DatabaseRole]) -> Result<(), StoreError>;
    /// Roles still there whose lease ended (expired by `now`, or revoked).
    async fn database_roles_due(&self, now: i64) -> Result<Vec<DatabaseRole>, StoreError>;
    /// Roles not yet dropped, by environment and creation.
    async fn live_database_roles(&self) -> Result<Vec<DatabaseRole>, StoreError>;
    /// Marks a role gone; false when it already was.
    async fn database_role_dropped(&self, role: &str, at: i64) -> Result<bool, StoreError>;

    /// Appends an event to the chain; durable when this returns.
    async fn append_audit(&self, event: &audit::Event, at_ms: i64) -> Result<audit::Record, StoreError>;
    /// Events in chain order.
    async fn audit_events(&self) -> Result<Vec<audit::Record>, StoreError>;
    /// Events that match, in chain order.
    async fn search_audit(&self, filter: &audit::Filter) -> Result<Vec<audit::Record>, StoreError>;
    /// The newest event's position and hash.
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;
    async fn insert_checkpoint(&self, checkpoint: &audit::Checkpoint) -> Result<(), StoreError>;
    /// Checkpoints, oldest first.
    async fn checkpoints(&self) -> Result<Vec<audit::Checkpoint>, StoreError>;
    /// The position the newest checkpoint signs, if any.
    async fn last_checkpoint_seq(&self) -> Result<Option<i64>, StoreError>;
}
