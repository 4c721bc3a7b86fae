//! Persistence behind one trait. SQLite (embedded) is the default; PostgreSQL
//! joins when several replicas serve. Callers never branch on the backend.
//!
//! The store keeps records; it decides nothing. Secrets reach it only sealed
//! (`secrets::Sealed`) or hashed.

mod sqlite;
mod sqlite_approvals;

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

/// The forward proxy's CA: its certificate and its PKCS#8 key, sealed for
/// `forward-ca:ID`.
#[derive(Debug, Clone)]
pub struct CaRecord {
    pub id: String,
    pub cert_der: Vec<u8>,
    pub sealed: Sealed,
    pub created_at: i64,
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
    /// For a session kept alive by heartbeats, the deadline the last one
    /// set; otherwise the credential's expiry.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Set for a session kept alive by heartbeats: the end no heartbeat
    /// moves `expires_at` past (the credential's own `exp`).
    pub session_ends_at: Option<i64>,
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

/// A one-time enrollment code for a named approver, stored as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    pub code_hash: Vec<u8>,
    pub approver: String,
    /// The admin who issued it.
    pub issued_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An approver's confirmed code factor.
#[derive(Debug, Clone)]
pub struct FactorRecord {
    pub approver: String,
    /// Sealed for `approvals::flow::factor_record_id(approver)`.
    pub sealed: Sealed,
    pub enrolled_at: i64,
    /// The last TOTP step a code of this factor was taken for.
    pub last_step: i64,
    /// Wrong codes in a row.
    pub failures: i64,
    /// Unix seconds; codes are refused before this.
    pub locked_until: i64,
}

/// What taking an enrollment code came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentTaken {
    Taken,
    /// Not issued for this approver, used, or expired.
    NotValid,
    /// A factor the approver registered at this time (unix seconds) awaits
    /// a vouch already: no other may be registered meanwhile, so a vouch
    /// puts in use exactly the one its voucher was told of.
    Waiting(i64),
}

/// What `vote_approval` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Recorded; the approval as it stands after it (approved once the
    /// votes reach the number needed).
    Counted(Box<crate::approvals::Approval>),
    /// The approval was not pending (or past its clock) when the vote came.
    NotPending,
    /// This approver had voted already.
    Repeated,
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

    /// The CA that issues the forward proxy's leaf certificates now.
    async fn current_ca(&self) -> Result<Option<CaRecord>, StoreError>;
    /// Makes `ca` the current CA unless one is already (another broker on
    /// the store made it first), and answers the current one.
    async fn adopt_ca(&self, ca: &CaRecord) -> Result<CaRecord, StoreError>;
    /// Retires the current CA and makes `ca` current, in one transaction.
    async fn rotate_ca(&self, ca: &CaRecord) -> Result<(), StoreError>;

    async fn put_secret(&self, secret: &SecretRecord) -> Result<(), StoreError>;
    async fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Every stored secret's name and when it was last set (unix seconds).
    async fn secret_ages(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Removes a stored secret; whether there was one.
    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError>;

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
    /// Leases neither revoked nor expired at `now`, newest first, at most `limit`.
    async fn live_leases(&self, now: i64, limit: i64) -> Result<Vec<Lease>, StoreError>;
    /// The agent whose leases carry this session id.
    async fn session_agent(&self, session_id: &str) -> Result<Option<String>, StoreError>;
    /// Every lease of a session, oldest first.
    async fn session_leases(&self, session_id: &str) -> Result<Vec<Lease>, StoreError>;
    /// Revokes every live lease the target covers and appends each to the
    /// revocation feed, in one transaction. Returns the leases revoked now.
    async fn revoke(&self, target: &RevokeTarget, now: i64) -> Result<Vec<Revocation>, StoreError>;
    /// The feed after `seq`, leaving out leases that expired before `now`.
    async fn revocations_since(&self, seq: i64, now: i64) -> Result<Vec<Revocation>, StoreError>;
    /// Moves the deadline of the session's heartbeat leases that are still
    /// alive at `now` (neither revoked nor past their deadline) to `until`,
    /// never past their session's end, in one statement: a session that
    /// missed its heartbeats stays ended. Returns each lease moved, with
    /// its new deadline.
    async fn keep_session_alive(
        &self,
        session_id: &str,
        until: i64,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError>;
    /// The deadlines of every heartbeat lease alive at `now`, by lease id.
    async fn session_deadlines(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError>;

    /// Records roles about to be created; before they are, so a role can
    /// never exist on a server without the store knowing it.
    async fn insert_database_roles(&self, roles: &[DatabaseRole]) -> Result<(), StoreError>;
    /// Roles still there whose lease ended (expired by `now`, or revoked).
    async fn database_roles_due(&self, now: i64) -> Result<Vec<DatabaseRole>, StoreError>;
    /// Roles not yet dropped, by environment and creation.
    async fn live_database_roles(&self) -> Result<Vec<DatabaseRole>, StoreError>;
    /// Marks a role gone; false when it already was.
    async fn database_role_dropped(&self, role: &str, at: i64) -> Result<bool, StoreError>;
    /// The roles of a lease not yet dropped.
    async fn lease_database_roles(&self, lease_id: &str) -> Result<Vec<DatabaseRole>, StoreError>;
    /// Records a role's new `VALID UNTIL`.
    async fn database_role_extended(&self, role: &str, expires_at: i64) -> Result<(), StoreError>;

    /// Holds a request: `approval`, unless the same session holds the same
    /// digest pending or approved and not past its clock, which is returned
    /// instead. True when `approval` was inserted; `None` when the session
    /// already holds `most_open` others (one transaction).
    async fn hold_request(
        &self,
        approval: &crate::approvals::Approval,
        most_open: i64,
        now_ms: i64,
    ) -> Result<Option<(crate::approvals::Approval, bool)>, StoreError>;
    async fn approval(&self, id: &str) -> Result<Option<crate::approvals::Approval>, StoreError>;
    /// The approved approval of this session's request with `digest`, if one
    /// is approved and not past its clock.
    async fn approved_for(
        &self,
        session_id: &str,
        digest: &str,
        now_ms: i64,
    ) -> Result<Option<crate::approvals::Approval>, StoreError>;
    /// Approvals not yet decided, and approved ones not yet used, oldest first.
    async fn open_approvals(&self) -> Result<Vec<crate::approvals::Approval>, StoreError>;
    /// Records `approver`'s approval while the approval is pending and
    /// within its clock, and marks it approved (with `execute_by_ms`) once
    /// the votes reach the number needed: one transaction.
    async fn vote_approval(
        &self,
        id: &str,
        approver: &str,
        factor: &str,
        now_ms: i64,
        execute_by_ms: i64,
    ) -> Result<Vote, StoreError>;
    /// Denies a pending approval within its clock; false when it was not.
    async fn deny_approval(&self, id: &str, approver: &str, reason: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Spends an approval: approved, within its clock, for this session and
    /// digest, becomes used, in one conditional update. True for the one
    /// caller that spent it.
    async fn spend_approval(&self, id: &str, session_id: &str, digest: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Marks expired every pending or approved approval past its clock at
    /// `now_ms`, or whose lease was revoked or ran out, and returns them.
    async fn expire_approvals(&self, now_ms: i64) -> Result<Vec<crate::approvals::Approval>, StoreError>;

    async fn insert_enrollment(&self, enrollment: &EnrollmentRecord) -> Result<(), StoreError>;
    /// Takes the enrollment code (unused, unexpired, for `approver`) and
    /// keeps `pending` as the approver's factor to confirm, replacing an
    /// earlier unconfirmed one: one transaction, after dropping factors that
    /// waited for a vouch since before `cutoff`. Nothing is taken while a
    /// factor of the approver's awaits a vouch.
    async fn redeem_enrollment(
        &self,
        code_hash: &[u8],
        approver: &str,
        pending: &Sealed,
        cutoff: i64,
        now: i64,
    ) -> Result<EnrollmentTaken, StoreError>;
    /// Takes the enrollment code on its own, for a passkey registered in
    /// the console, with the same rules.
    async fn take_enrollment(
        &self,
        code_hash: &[u8],
        approver: &str,
        cutoff: i64,
        now: i64,
    ) -> Result<EnrollmentTaken, StoreError>;
    /// The approver's code factor not yet in use: sealed, with the step of
    /// its first code once confirmed (it then awaits a vouch).
    async fn pending_factor(&self, approver: &str) -> Result<Option<(Sealed, Option<i64>)>, StoreError>;
    /// Adds a passkey (sealed), awaiting a vouch; false when that
    /// credential is registered already (it is never overwritten).
    async fn put_passkey(
        &self,
        approver: &str,
        credential_id: &str,
        sealed: &Sealed,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Rewrites a passkey in use (its signature counter moved).
    async fn update_passkey(&self, approver: &str, credential_id: &str, sealed: &Sealed) -> Result<(), StoreError>;
    /// The approver's passkeys in use: (credential id, sealed).
    async fn passkeys(&self, approver: &str) -> Result<Vec<(String, Sealed)>, StoreError>;
    /// Factors awaiting a vouch: approver, kind (`totp`, `passkey`), when
    /// registered.
    async fn awaiting_vouch(&self) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// Puts in use the approver's factors awaiting a vouch, after dropping
    /// those waiting since before `cutoff`: the confirmed code factor read
    /// as `(sealed for use, step, the pending row's nonce)` if that row is
    /// still the one waiting, and any passkey waiting; one transaction.
    /// Returns which kinds it put in use.
    async fn vouch_factors(
        &self,
        approver: &str,
        totp: Option<(&Sealed, i64, &[u8])>,
        voucher: &str,
        cutoff: i64,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// The approver confirmed their pending code factor with its first code
    /// (taken at `step`). When no approver named in `configured` (a JSON
    /// array) has a code factor in use, it is put in use at once (`sealed`,
    /// sealed for use) and `true` returned; otherwise it waits for a vouch,
    /// with the step noted. One transaction.
    async fn confirm_factor(
        &self,
        approver: &str,
        sealed: &Sealed,
        step: i64,
        configured: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    async fn factor(&self, approver: &str) -> Result<Option<FactorRecord>, StoreError>;
    /// Every confirmed factor, by approver.
    async fn factors(&self) -> Result<Vec<FactorRecord>, StoreError>;
    /// Takes `step` for the approver's factor if it is later than the last
    /// one taken (a code is used once, even by two racing requests), and
    /// takes back the attempts counted up to this one (`attempt`); a lock
    /// that later attempts reached stays.
    async fn take_factor_step(
        &self,
        approver: &str,
        step: i64,
        attempt: i64,
        lock_after: i64,
    ) -> Result<bool, StoreError>;
    /// Counts an attempt at the approver's code before it is checked, in one
    /// statement: `None` while the factor is locked (or there is none); the
    /// attempt that reaches `lock_after` locks it until `lock_until`.
    /// Returns the attempts counted since the last right code.
    async fn reserve_attempt(
        &self,
        approver: &str,
        lock_after: i64,
        now: i64,
        lock_until: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Appends an event to the chain; durable when this returns.
    async fn append_audit(&self, event: &audit::Event, at_ms: i64) -> Result<audit::Record, StoreError>;
    /// Events in chain order.
    async fn audit_events(&self) -> Result<Vec<audit::Record>, StoreError>;
    /// Event `id`, only when session `session_id` recorded it: what an
    /// agent may read of the trail is its own session's events.
    async fn session_event(&self, id: &str, session_id: &str) -> Result<Option<audit::Record>, StoreError>;
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
