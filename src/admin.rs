//! Ops' operations behind the admin API: admins, agents, secrets, signing
//! keys, revocation, the audit trail's verification and report. Each change
//! writes the store and an audit event naming who made it, and returns plain
//! data. The running broker is the only caller: it is the store's one writer.

use std::time::{Duration, SystemTime};

use crate::audit::{Event, EventKind};
use crate::config::{Config, valid_name};
use crate::credentials::{self, IssuedKey, KeyError, OpaqueKind};
use crate::secrets::{ExposeSecret, MasterKey, SecretString, SecretsError, secret_record_id};
use crate::store::{
    AdminKeyRecord, AdminKeyRemoval, AgentRecord, Revocation, RevokeTarget, SecretRecord, Store, StoreError,
};
use crate::time::{unix_ms, unix_secs};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("`{name}` is not a valid {what} name: use 1 to 63 lowercase letters, digits, `-` and `_`")]
    InvalidName { what: &'static str, name: String },
    #[error("agent `{name}` has no [agents.{name}] section in the configuration; add its grants there first")]
    AgentNotConfigured { name: String },
    #[error("agent `{name}` already has a launcher key; `valetkey agent remove {name}` first to issue a new one")]
    AgentExists { name: String },
    #[error("there is no agent `{name}`")]
    UnknownAgent { name: String },
    #[error("admin `{name}` already has a key; `valetkey admin remove {name}` first to issue a new one")]
    AdminExists { name: String },
    #[error("there is no admin `{name}`; `valetkey admin list` shows who there is")]
    UnknownAdmin { name: String },
    #[error("`{name}` holds the last live admin key; add another admin before removing it")]
    LastAdmin { name: String },
    #[error("`bootstrap` names the key the broker writes at first start; choose the admin's own name")]
    ReservedAdminName,
    #[error("an admin key lives between 1 minute and {} days; asked for {asked}", ADMIN_MAX_TTL.as_secs() / 86_400)]
    AdminTtl { asked: String },
    #[error(
        "the master key comes from VALETKEY_MASTER_KEY, which the broker cannot replace; \
         keep it in a file ([keys] master_key_file) to rotate it"
    )]
    MasterKeyInEnvironment,
    #[error("the secret is empty: pass the token on standard input")]
    EmptySecret,
    #[error("there is no stored secret `{name}`; `valetkey secret list` shows those there are")]
    UnknownSecret { name: String },
    /// Removing it would leave these without a token mid-run; replacing it
    /// is `secret set`, which takes effect at once.
    #[error(
        "stored secret `{name}` is the real token of {}: remove it from their `tokens` in the configuration \
         (and restart) first, or replace its value with `valetkey secret set {name}`",
        users.join(", ")
    )]
    SecretInUse { name: String, users: Vec<String> },
    #[error("the system's random number generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Ca(#[from] crate::forward::CaError),
}

/// Who did an admin operation, as the audit trail names them.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl Actor {
    /// A named admin, authenticated by their own key.
    pub fn admin(name: &str) -> Actor {
        Actor(format!("admin:{name}"))
    }

    pub fn agent(name: &str) -> Actor {
        Actor(format!("agent:{name}"))
    }

    /// A human approver, proven by their factor.
    pub fn approver(name: &str) -> Actor {
        Actor(format!("approver:{name}"))
    }

    pub fn broker() -> Actor {
        Actor("broker".into())
    }
}

pub(crate) async fn audit_event(
    store: &dyn Store,
    actor: &Actor,
    kind: EventKind,
    agent: Option<&str>,
    detail: serde_json::Value,
    now: SystemTime,
) -> Result<String, StoreError> {
    let event = Event {
        kind,
        actor: actor.0.clone(),
        agent: agent.map(str::to_owned),
        session_id: None,
        env: None,
        detail,
    };
    Ok(store.append_audit(&event, unix_ms(now)).await?.id)
}

fn issue(kind: OpaqueKind) -> Result<IssuedKey, AdminError> {
    credentials::issue_opaque_key(kind).map_err(|_| AdminError::Random)
}

/// Registers an agent named in the configuration; returns its launcher key,
/// which is shown once and never stored.
pub async fn add_agent(
    store: &dyn Store,
    config: &Config,
    name: &str,
    actor: &Actor,
    now: SystemTime,
) -> Result<SecretString, AdminError> {
    if !valid_name(name) {
        return Err(AdminError::InvalidName {
            what: "agent",
            name: name.to_owned(),
        });
    }
    if !config.agents.contains_key(name) {
        return Err(AdminError::AgentNotConfigured { name: name.to_owned() });
    }
    let key = issue(OpaqueKind::Launcher)?;
    let record = AgentRecord {
        name: name.to_owned(),
        key_id: key.key_id.clone(),
        key_hash: key.hash.clone(),
        created_at: unix_secs(now),
    };
    store.insert_agent(&record).await.map_err(|e| match e {
        StoreError::Conflict { .. } => AdminError::AgentExists { name: name.to_owned() },
        other => other.into(),
    })?;
    audit_event(
        store,
        actor,
        EventKind::AgentAdded,
        Some(name),
        serde_json::json!({ "key_id": key.key_id }),
        now,
    )
    .await?;
    Ok(key.key)
}

/// Removes an agent's launcher key and revokes every credential it holds.
pub async fn remove_agent(
    store: &dyn Store,
    name: &str,
    actor: &Actor,
    now: SystemTime,
) -> Result<Vec<Revocation>, AdminError> {
    if !store.delete_agent(name).await? {
        return Err(AdminError::UnknownAgent { name: name.to_owned() });
    }
    let revoked = store
        .revoke(&RevokeTarget::Agent(name.to_owned()), unix_secs(now))
        .await?;
    let leases: Vec<&str> = revoked.iter().map(|r| r.lease_id.as_str()).collect();
    audit_event(
        store,
        actor,
        EventKind::AgentRemoved,
        Some(name),
        serde_json::json!({ "revoked_leases": leases }),
        now,
    )
    .await?;
    Ok(revoked)
}

/// Revokes leases; returns those revoked now (already revoked or expired
/// leases are left as they are).
pub async fn revoke(
    store: &dyn Store,
    target: &RevokeTarget,
    actor: &Actor,
    now: SystemTime,
) -> Result<Vec<Revocation>, AdminError> {
    let revoked = store.revoke(target, unix_secs(now)).await?;
    let (what, value, agent) = match target {
        RevokeTarget::Lease(id) => ("lease", id, None),
        RevokeTarget::Session(sid) => ("session", sid, None),
        RevokeTarget::Agent(name) => ("agent", name, Some(name.as_str())),
    };
    let leases: Vec<&str> = revoked.iter().map(|r| r.lease_id.as_str()).collect();
    audit_event(
        store,
        actor,
        EventKind::Revoke,
        agent,
        serde_json::json!({ "target": { what: value }, "revoked_leases": leases }),
        now,
    )
    .await?;
    Ok(revoked)
}

/// Stores a real token, sealed under the master key.
pub async fn set_secret(
    store: &dyn Store,
    master: &MasterKey,
    name: &str,
    value: &SecretString,
    actor: &Actor,
    now: SystemTime,
) -> Result<(), AdminError> {
    if !valid_name(name) {
        return Err(AdminError::InvalidName {
            what: "secret",
            name: name.to_owned(),
        });
    }
    if value.expose_secret().trim().is_empty() {
        return Err(AdminError::EmptySecret);
    }
    let sealed = master.seal(&secret_record_id(name), value.expose_secret().as_bytes())?;
    let at = unix_secs(now);
    let created_at = store.secret(name).await?.map_or(at, |s| s.created_at);
    store
        .put_secret(&SecretRecord {
            name: name.to_owned(),
            sealed,
            created_at,
            updated_at: at,
        })
        .await?;
    audit_event(
        store,
        actor,
        EventKind::SecretSet,
        None,
        serde_json::json!({ "name": name }),
        now,
    )
    .await?;
    Ok(())
}

/// Removes a stored secret no provider uses.
pub async fn remove_secret(store: &dyn Store, name: &str, actor: &Actor, now: SystemTime) -> Result<(), AdminError> {
    if !store.delete_secret(name).await? {
        return Err(AdminError::UnknownSecret { name: name.to_owned() });
    }
    audit_event(
        store,
        actor,
        EventKind::SecretRemoved,
        None,
        serde_json::json!({ "name": name }),
        now,
    )
    .await?;
    Ok(())
}

/// Makes a new signing key the active one; the old one keeps verifying
/// until what it signed has expired. Returns the new kid.
pub async fn rotate_signing_key(
    store: &dyn Store,
    master: &MasterKey,
    actor: &Actor,
    now: SystemTime,
) -> Result<String, AdminError> {
    let previous = store.signing_keys().await?.into_iter().find(|k| k.retired_at.is_none());
    let key = credentials::new_signing_key(master, unix_secs(now))?;
    store.rotate_signing_key(&key).await?;
    let kind = if previous.is_some() {
        EventKind::SigningKeyRotated
    } else {
        EventKind::SigningKeyCreated
    };
    audit_event(
        store,
        actor,
        kind,
        None,
        serde_json::json!({ "kid": key.kid, "retired": previous.map(|p| p.kid) }),
        now,
    )
    .await?;
    Ok(key.kid)
}

/// Creates the first signing key if there is none; true when it did.
/// Moves the store from `old` to a new master key, kept in `file`: the
/// next key is written beside it (`.next`), every sealed record is re-sealed
/// under it in one transaction that records its id, then it is renamed over
/// the key file. A start that finds the store's id on the `.next` file
/// finishes a rotation cut short there; a start with the old key is
/// refused. Returns the new key and how many records were re-sealed.
pub async fn rotate_master(
    store: &dyn Store,
    old: &MasterKey,
    file: &std::path::Path,
    now: SystemTime,
) -> Result<(MasterKey, usize), AdminError> {
    let (new, text) = MasterKey::generate()?;
    let next = crate::secrets::next_key_file(file);
    // A leftover holds a key no store was ever sealed under: a broker
    // started on this store would have finished a rotation it belonged to.
    let _ = std::fs::remove_file(&next);
    crate::secrets::write_private(&next, text.as_bytes())?;
    let resealed = store
        .reseal_all(&old.key_id(), &new.key_id(), unix_secs(now), &|record, sealed| {
            new.seal(record, &old.open(record, sealed)?)
        })
        .await;
    let resealed = match resealed {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&next);
            return Err(e.into());
        }
    };
    if let Err(e) = std::fs::rename(&next, file) {
        // The store is sealed under the new key: the next start finds it
        // in the `.next` file and finishes the rename.
        tracing::error!(
            "the store is re-sealed under the new master key, but {} could not be renamed over {}: {e}; \
             the next start finishes it",
            next.display(),
            file.display()
        );
    }
    Ok((new, resealed))
}

/// Verifies the audit chain and its checkpoints. Checkpoint signatures are
/// checked with keys opened under the master key: a key row someone added to
/// the store without it does not verify anything.
pub async fn verify_audit(store: &dyn Store, master: &MasterKey) -> Result<crate::audit::Verification, AdminError> {
    let records = store.audit_events().await?;
    verify_records(store, master, &records).await
}

/// `verify_audit` of records already read.
async fn verify_records(
    store: &dyn Store,
    master: &MasterKey,
    records: &[crate::audit::Record],
) -> Result<crate::audit::Verification, AdminError> {
    let checkpoints = store.checkpoints().await?;
    let keys = store.signing_keys().await?;
    let ring = credentials::KeyRing::open(&keys, master)?;
    Ok(crate::audit::verify(records, &checkpoints, |c| {
        ring.get(&c.kid).is_some_and(|key| {
            key.verifies(
                crate::audit::Checkpoint::message(c.seq, &c.head_hash, c.at_ms).as_bytes(),
                &c.signature,
            )
        })
    }))
}

/// Verifies the audit chain of a store (a copy of a broker's database file)
/// against keys the broker published: no master key is needed, and a key
/// row added to the copy verifies nothing.
pub async fn verify_audit_published(
    store: &dyn Store,
    keys: &credentials::PublishedKeys,
) -> Result<crate::audit::Verification, AdminError> {
    let records = store.audit_events().await?;
    let checkpoints = store.checkpoints().await?;
    Ok(crate::audit::verify(&records, &checkpoints, |c| {
        keys.verifies(
            &c.kid,
            crate::audit::Checkpoint::message(c.seq, &c.head_hash, c.at_ms).as_bytes(),
            &c.signature,
        )
    }))
}

/// A permission audit of the events in [since_ms, now_ms], with the chain
/// verified under the master key.
pub async fn audit_report(
    store: &dyn Store,
    master: &MasterKey,
    rules: &crate::policy::Rules,
    since_ms: i64,
    now_ms: i64,
) -> Result<crate::audit::report::Report, AdminError> {
    let events = store.audit_events().await?;
    let verification = verify_records(store, master, &events).await?;
    let agents: Vec<String> = store.list_agents().await?.into_iter().map(|a| a.name).collect();
    let secrets = store.secret_ages().await?;
    let keys: Vec<(String, i64, bool)> = store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| (k.kid, k.created_at, k.retired_at.is_none()))
        .collect();
    let facts = crate::audit::report::Facts {
        registered_agents: &agents,
        secrets: &secrets,
        signing_keys: &keys,
        verification: &verification,
    };
    Ok(crate::audit::report::build(rules, &events, &facts, since_ms, now_ms))
}

pub async fn ensure_signing_key(store: &dyn Store, master: &MasterKey, now: SystemTime) -> Result<bool, AdminError> {
    if store.signing_keys().await?.iter().any(|k| k.retired_at.is_none()) {
        return Ok(false);
    }
    rotate_signing_key(store, master, &Actor::broker(), now).await?;
    Ok(true)
}

/// The name of the key the broker writes when no admin key is alive.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap";
/// How long the bootstrap key lives: long enough to name the first admins,
/// short enough that a copy of it left behind soon opens nothing.
pub const BOOTSTRAP_TTL: Duration = Duration::from_secs(24 * 3600);
/// An admin key's lifetime unless one is asked for.
pub const ADMIN_DEFAULT_TTL: Duration = Duration::from_secs(90 * 86_400);
/// The longest an admin key may live.
pub const ADMIN_MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

/// An admin key just issued: shown once, stored only as a hash.
pub struct IssuedAdmin {
    pub key: SecretString,
    pub key_id: String,
    pub expires_at: i64,
}

/// Issues a key to a named person, attributed to them in the audit trail.
pub async fn add_admin(
    store: &dyn Store,
    name: &str,
    ttl: Duration,
    actor: &Actor,
    now: SystemTime,
) -> Result<IssuedAdmin, AdminError> {
    if !valid_name(name) {
        return Err(AdminError::InvalidName {
            what: "admin",
            name: name.to_owned(),
        });
    }
    if name == BOOTSTRAP_ADMIN {
        return Err(AdminError::ReservedAdminName);
    }
    if ttl < Duration::from_secs(60) || ttl > ADMIN_MAX_TTL {
        return Err(AdminError::AdminTtl {
            asked: humantime::format_duration(ttl).to_string(),
        });
    }
    let key = issue(OpaqueKind::Admin)?;
    let record = AdminKeyRecord {
        name: name.to_owned(),
        key_id: key.key_id.clone(),
        key_hash: key.hash.clone(),
        created_at: unix_secs(now),
        expires_at: unix_secs(now + ttl),
    };
    store.insert_admin_key(&record).await.map_err(|e| match e {
        StoreError::Conflict { .. } => AdminError::AdminExists { name: name.to_owned() },
        other => other.into(),
    })?;
    audit_event(
        store,
        actor,
        EventKind::AdminAdded,
        None,
        serde_json::json!({ "admin": name, "key_id": key.key_id, "expires_at": record.expires_at }),
        now,
    )
    .await?;
    Ok(IssuedAdmin {
        key: key.key,
        key_id: key.key_id,
        expires_at: record.expires_at,
    })
}

/// Removes a person's admin key; never the last live one.
pub async fn remove_admin(store: &dyn Store, name: &str, actor: &Actor, now: SystemTime) -> Result<(), AdminError> {
    match store.delete_admin_key(name, unix_secs(now)).await? {
        AdminKeyRemoval::Removed => {}
        AdminKeyRemoval::NotFound => return Err(AdminError::UnknownAdmin { name: name.to_owned() }),
        AdminKeyRemoval::LastLive => return Err(AdminError::LastAdmin { name: name.to_owned() }),
    }
    audit_event(
        store,
        actor,
        EventKind::AdminRemoved,
        None,
        serde_json::json!({ "admin": name }),
        now,
    )
    .await?;
    Ok(())
}

/// Issues a new bootstrap key when no admin key is alive (first start, or
/// every key expired or removed) and writes it to `file`, readable by the
/// broker's user only, never to a log; true when it did. The key is in a
/// file (`FILE.new`) before it is live, so a failure leaves no live key
/// that no one holds; a crash between the two leaves it in `FILE.new`.
pub async fn ensure_admin_key(store: &dyn Store, file: &std::path::Path, now: SystemTime) -> Result<bool, AdminError> {
    let key = issue(OpaqueKind::Admin)?;
    let record = AdminKeyRecord {
        name: BOOTSTRAP_ADMIN.to_owned(),
        key_id: key.key_id.clone(),
        key_hash: key.hash.clone(),
        created_at: unix_secs(now),
        expires_at: unix_secs(now + BOOTSTRAP_TTL),
    };
    let mut staged = file.as_os_str().to_owned();
    staged.push(".new");
    let staged = std::path::PathBuf::from(staged);
    let _ = std::fs::remove_file(&staged);
    crate::secrets::write_private(&staged, key.key.expose_secret().as_bytes())?;
    let replaced = store.replace_bootstrap_admin_key(&record, unix_secs(now)).await;
    if !matches!(replaced, Ok(true)) {
        let _ = std::fs::remove_file(&staged);
        return Ok(replaced?);
    }
    std::fs::rename(&staged, file).map_err(|source| SecretsError::Io {
        action: "rename into place",
        path: staged.clone(),
        source,
    })?;
    audit_event(
        store,
        &Actor::broker(),
        EventKind::AdminKeyCreated,
        None,
        serde_json::json!({ "admin": BOOTSTRAP_ADMIN, "key_id": key.key_id, "expires_at": record.expires_at }),
        now,
    )
    .await?;
    Ok(true)
}
