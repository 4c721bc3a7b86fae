//! The running broker's state and its operations on the request path:
//! authenticate launcher keys, admin keys and credentials; mint; revoke;
//! follow the store for revocations and key rotations made elsewhere.
//!
//! Decisions are delegated to `policy` (pure); this module does the I/O
//! around them and never returns a refusal without having recorded it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;

use crate::admin::{self, Actor, AdminError};
use crate::alerts::{Alert, Alerter};
use crate::audit::{Event, EventKind};
use crate::config::{Config, TemplateValues, expand_template};
use crate::credentials::{
    self, Claims, Expected, KeyError, KeyRing, OpaqueKind, RevocationSet, VerifiedCache, VerifyError,
};
use crate::database_check::DatabaseFinding;
use crate::databases::{DatabaseError, Databases, Ended, LeaseFacts};
use crate::introspect::{Outcome, TokenReach};
use crate::policy::{self, MintPlan, MintRefusal, MintRequest, Rules, Tier};
use crate::providers::postgres::{Login, RolePlan, role_comment};
use crate::providers::{Classifier, ProviderKind};
use crate::secrets::{EnvLookup, ExposeSecret, MasterKey, RealTokens, SecretString};
use crate::store::{AdminKeyRecord, AgentRecord, DatabaseRole, Lease, Revocation, RevokeTarget, Store, StoreError};
use crate::time::{unix_ms, unix_secs};

/// How many verified credentials are kept in memory.
const VERIFIED_CACHE_CAPACITY: u64 = 100_000;
/// How often readiness may write to the store to prove it takes writes.
const WRITE_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credential was presented")]
    Missing,
    #[error(transparent)]
    Credential(#[from] VerifyError),
    #[error("the credential of agent `{}` for `{}` (lease `{}`) was revoked", claims.sub, claims.env, claims.jti)]
    Revoked { claims: Arc<Claims> },
    /// A session credential whose launcher stopped its heartbeat.
    #[error(
        "the session of agent `{}` for `{}` (lease `{}`) has ended: the `valetkey run` that launched it stopped telling the broker it is alive",
        claims.sub, claims.env, claims.jti
    )]
    SessionEnded { claims: Arc<Claims> },
    /// Something that is not a valetkey credential: a provider's own token
    /// that reached the agent, most likely.
    #[error(
        "this is not a valetkey credential: it looks like {looks_like} (fingerprint {fingerprint}); it was not forwarded"
    )]
    RawProviderToken {
        looks_like: &'static str,
        fingerprint: String,
    },
    #[error("the launcher key is not valid")]
    LauncherKey,
    #[error("the admin key is not valid")]
    AdminKey,
    #[error("the admin key of `{name}` expired at {}", crate::time::rfc3339(*expired_at))]
    AdminKeyExpired { name: String, expired_at: i64 },
    /// Too many refusals from one client: this one was not even recorded.
    #[error("too many refused requests came from this address; this one was not processed")]
    RateLimited,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refused credential, with the event that recorded it when the refusal
/// was one ops must hear about.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RefusedCredential {
    pub error: AuthError,
    pub event_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("{refusal}")]
    Refused { refusal: MintRefusal, event_id: String },
    #[error("{}", agent_mismatch(holder, asked))]
    AgentMismatch {
        holder: String,
        asked: String,
        event_id: String,
    },
    /// A database role the credential needs could not be made; the
    /// credential was revoked before anyone held it.
    #[error("{error}")]
    Database { error: DatabaseError, event_id: String },
    #[error("the broker has no active signing key")]
    NoSigningKey,
    #[error(transparent)]
    Token(#[from] credentials::TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A launcher asked for another agent than its key's: a typo of the key's
/// own name is told so; another name means another agent's key is needed.
fn agent_mismatch(holder: &str, asked: &str) -> String {
    let typo = strsim::damerau_levenshtein(holder, asked) <= 2.max(holder.len() / 3);
    if typo {
        format!(
            "this launcher key is agent `{holder}`'s, not `{asked}`'s: did you mean `{holder}`? Pass --agent \
             {holder}, or leave --agent out (the key names its agent)"
        )
    } else {
        format!(
            "this launcher key is agent `{holder}`'s, not `{asked}`'s: to launch `{asked}`, use its own launcher \
             key (`valetkey agent add {asked}` issues one); to launch `{holder}`, leave --agent out"
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the operation rules of provider `{provider}` do not compile: {message}")]
    Rules { provider: String, message: String },
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] crate::forward::CaError),
}

pub use crate::secrets::TokenStatus;

pub use crate::secrets::live::SecretUser;

/// A fresh credential and everything the agent needs to use it.
pub struct Minted {
    pub credential: SecretString,
    pub claims: Claims,
    pub plan: MintPlan,
    /// The variables to set in the agent's environment. Values may hold the
    /// credential, so all of them are secret.
    pub env_vars: BTreeMap<String, SecretString>,
    /// The ports of the databases the credential logs in to.
    pub database_ports: Vec<u16>,
    pub event_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// The store takes writes and a signing key is loaded.
    pub ready: bool,
    /// Ready, but a provider's real token did not load: its requests are refused.
    pub degraded: bool,
    pub store: Result<(), String>,
    pub active_kid: Option<String>,
    pub provider_tokens: Vec<TokenStatus>,
    /// What each real token reaches, from the last introspection.
    pub token_reach: Vec<TokenReach>,
    /// What the PostgreSQL servers let agents' roles do past their grants.
    pub database_findings: Vec<DatabaseFinding>,
    /// Alerts that found the queue full and went to the log only.
    pub alerts_dropped: u64,
    /// PostgreSQL roles of leases that are not yet dropped.
    pub database_roles: Vec<RoleView>,
}

/// A live database role, as `valetkey status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RoleView {
    pub role: String,
    pub provider: String,
    pub env: String,
    pub agent: String,
    pub database: String,
    pub lease_id: String,
    pub created_at: String,
    pub expires_at: String,
}

pub struct Broker {
    config: Arc<Config>,
    rules: Rules,
    store: Arc<dyn Store>,
    /// The key the store's records are sealed under; a rotation swaps it.
    master: RwLock<Arc<MasterKey>>,
    /// Where the master key came from: a rotation writes the next one there.
    master_origin: crate::secrets::MasterKeyOrigin,
    /// The master key this process started with, for keyed fingerprints
    /// only: the real tokens' fingerprints were made with it, so a leaked
    /// one is recognised across a rotation until the next start.
    fingerprinter: Arc<MasterKey>,
    /// Held by every write that seals a record, and by a rotation, so that
    /// nothing is sealed under a key the rotation is retiring.
    sealing: tokio::sync::Mutex<()>,
    ring: RwLock<Arc<KeyRing>>,
    ring_version: Mutex<Vec<(String, Option<i64>)>>,
    verified: VerifiedCache,
    revoked: RevocationSet,
    revocation_cursor: AtomicI64,
    /// The real tokens, their fingerprints and their redactor; replaced
    /// whole when a stored secret changes.
    real: RwLock<Arc<RealTokens>>,
    /// Each proxied provider's compiled rules.
    classifiers: BTreeMap<String, Classifier>,
    /// The one pooled client every upstream request goes through.
    upstream: reqwest::Client,
    alerts: Alerter,
    /// What each real token was last found to reach.
    reach: RwLock<Vec<TokenReach>>,
    database_findings: RwLock<Vec<DatabaseFinding>>,
    /// The last store write probe and when it ran: readiness answers anyone,
    /// so the store takes at most one probe write per `WRITE_PROBE_EVERY`.
    write_probe: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    /// The servers of postgres providers, whose tokens are admin URLs.
    databases: Databases,
    /// Refusals before authentication that a client may cause to be recorded.
    unauthenticated: crate::ratelimit::PeerLimiter,
    /// Refusals before authentication, recorded or not.
    refused_unauthenticated: std::sync::atomic::AtomicU64,
    /// One reaping at a time; roles that failed to end, with when to try
    /// again and the next wait (doubling, so a server that is down is not
    /// hammered nor the log flooded).
    reaping: tokio::sync::Mutex<BTreeMap<String, (SystemTime, std::time::Duration)>>,
    /// The deadlines of sessions kept alive by heartbeats (`heartbeat`).
    deadlines: crate::heartbeat::Deadlines,
    /// The forward proxy's CA and the leaves it issued.
    forward: crate::forward::Authority,
}

/// First wait before a role that failed to end is tried again; it doubles
/// up to `REAP_BACKOFF_MAX`.
const REAP_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);
const REAP_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(300);
/// How long after its creation a role the server does not have may still be
/// on its way (its creation queued or uncommitted).
const CREATION_GRACE_SECS: i64 = 30;

impl Broker {
    /// Brings the store up to what serving needs (a signing key) and loads
    /// the in-memory state. `env` looks up the broker's environment variables.
    pub async fn start(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        master: MasterKey,
        master_origin: crate::secrets::MasterKeyOrigin,
        env: &EnvLookup,
        now: SystemTime,
    ) -> Result<Broker, StartError> {
        admin::ensure_signing_key(store.as_ref(), &master, now).await?;
        let forward =
            crate::forward::Authority::load(store.as_ref(), &master, config.forward_proxy.leaf_ttl, now).await?;
        let mut real = RealTokens::read(&config, store.as_ref(), &master, env, &master).await;
        let admin_urls = real
            .database_urls()
            .into_iter()
            .filter_map(|((provider, env_name), url)| {
                let settings = config.providers.get(&provider)?.get_ref().database(&env_name);
                Some(((provider, env_name), (url, settings)))
            })
            .collect();
        let (databases, unusable) = Databases::open(admin_urls);
        real.mark_unusable(&unusable);
        let mut classifiers = BTreeMap::new();
        for (name, p) in &config.providers {
            let p = p.get_ref();
            if p.kind == ProviderKind::Postgres {
                continue;
            }
            let classifier = p.classifier().map_err(|errors| StartError::Rules {
                provider: name.clone(),
                message: errors.into_iter().map(|e| e.message).collect::<Vec<_>>().join("; "),
            })?;
            classifiers.insert(name.clone(), classifier);
        }
        let upstream = upstream_client(&config.proxy).map_err(StartError::Client)?;
        let alerts = Alerter::start(&config.alerts, upstream.clone());
        let unauthenticated =
            crate::ratelimit::PeerLimiter::new(config.server.unauthenticated_rate, config.server.unauthenticated_burst);
        let master = Arc::new(master);
        let broker = Broker {
            rules: config.rules(),
            config,
            store,
            fingerprinter: master.clone(),
            master: RwLock::new(master),
            master_origin,
            sealing: tokio::sync::Mutex::new(()),
            ring: RwLock::new(Arc::new(KeyRing::default())),
            ring_version: Mutex::new(Vec::new()),
            verified: VerifiedCache::new(VERIFIED_CACHE_CAPACITY),
            revoked: RevocationSet::default(),
            revocation_cursor: AtomicI64::new(0),
            real: RwLock::new(Arc::new(real)),
            classifiers,
            upstream,
            alerts,
            reach: RwLock::new(Vec::new()),
            database_findings: RwLock::new(Vec::new()),
            write_probe: tokio::sync::Mutex::new(None),
            databases,
            unauthenticated,
            refused_unauthenticated: std::sync::atomic::AtomicU64::new(0),
            reaping: tokio::sync::Mutex::new(BTreeMap::new()),
            deadlines: crate::heartbeat::Deadlines::default(),
            forward,
        };
        broker.sync(now).await?;
        Ok(broker)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The forward proxy's CA.
    pub fn forward(&self) -> &crate::forward::Authority {
        &self.forward
    }

    /// The postgres providers' servers.
    pub fn databases(&self) -> &Databases {
        &self.databases
    }

    /// Whether any postgres provider is configured, so roles may need ending.
    pub(crate) fn deadlines(&self) -> &crate::heartbeat::Deadlines {
        &self.deadlines
    }

    pub fn has_databases(&self) -> bool {
        self.config
            .providers
            .values()
            .any(|p| p.get_ref().kind == ProviderKind::Postgres)
    }

    pub fn token_status(&self) -> Vec<TokenStatus> {
        self.real().status()
    }

    /// The real tokens as they are now: the proxy takes one snapshot per
    /// request, for the token it sends and the redactor of the answer.
    pub(crate) fn real_tokens(&self) -> Arc<RealTokens> {
        self.real()
    }

    fn real(&self) -> Arc<RealTokens> {
        self.real.read().expect("real tokens lock").clone()
    }

    /// Puts a new set of real tokens in use (`secrets::live`).
    pub(crate) fn swap_real_tokens(&self, next: RealTokens) {
        *self.real.write().expect("real tokens lock") = Arc::new(next);
    }

    /// The key leaked tokens' fingerprints are made with: the one this
    /// process started with.
    pub(crate) fn fingerprinter(&self) -> &MasterKey {
        &self.fingerprinter
    }

    /// Whether there is a real token for (provider, env); the proxy's
    /// forwarding step reads it from `real_tokens`.
    pub(crate) fn has_upstream_token(&self, provider: &str, env: &str) -> bool {
        self.real().token(provider, env).is_some()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The names of the providers reachable through `/p/`.
    pub fn proxied_providers(&self) -> Vec<String> {
        self.classifiers.keys().cloned().collect()
    }

    /// The compiled rules of a proxied provider.
    pub fn classifier(&self, provider: &str) -> Option<&Classifier> {
        self.classifiers.get(provider)
    }

    /// What overwrites the real tokens in upstream answers.
    pub fn redactor(&self) -> Arc<crate::proxy::redact::Redactor> {
        self.real().redactor()
    }

    pub fn upstream_client(&self) -> &reqwest::Client {
        &self.upstream
    }

    pub fn alerts(&self) -> &Alerter {
        &self.alerts
    }

    /// Records an event that ops must hear about, then alerts them (`kind`
    /// names the problem, as the agent's problem type does); the alert names
    /// the event. Returns the event id.
    pub async fn record_and_alert(
        &self,
        event: Event,
        kind: &'static str,
        text: String,
        key: String,
        now: SystemTime,
    ) -> Result<String, StoreError> {
        let detail = event.detail.clone();
        let event_id = self.store.append_audit(&event, unix_ms(now)).await?.id;
        self.alerts.raise(Alert {
            kind,
            text,
            detail,
            event_id: Some(event_id.clone()),
            key,
        });
        Ok(event_id)
    }

    /// `authenticate`, recording (and alerting) the refusals that say
    /// something about the agent's situation. `route` says where it was
    /// presented, `client` who presented it (refusals a client may cause to
    /// be recorded are rate-limited).
    pub async fn authenticate_at(
        &self,
        token: &str,
        route: &str,
        now: SystemTime,
        client: IpAddr,
    ) -> Result<Arc<Claims>, RefusedCredential> {
        match self.authenticate(token, now) {
            Ok(claims) => Ok(claims),
            Err(error) => Err(self.refused(error, route, now, client).await),
        }
    }

    /// What a value that is not a valetkey credential is: a leaked token
    /// when it has a known format or is one of the broker's own real
    /// tokens; junk otherwise, refused as malformed and only counted.
    fn foreign(&self, token: &str) -> AuthError {
        let fingerprint = self.fingerprinter.fingerprint(token);
        let looks_like = match credentials::foreign_token_format(token) {
            Some(format) => format,
            None if self.real().is_real(&fingerprint) => "one of the broker's own real tokens",
            None => {
                return AuthError::Credential(VerifyError::Malformed {
                    why: "it is neither a valetkey credential nor a token of a known format",
                });
            }
        };
        AuthError::RawProviderToken {
            looks_like,
            fingerprint,
        }
    }

    /// Refuses a provider's own token found elsewhere in a request (a query
    /// parameter): recorded and alerted as a leaked token.
    pub async fn refuse_foreign_token(
        &self,
        token: &str,
        route: &str,
        now: SystemTime,
        client: IpAddr,
    ) -> RefusedCredential {
        self.refused(self.foreign(token), route, now, client).await
    }

    /// Whether a refusal of a request nothing authenticated, from `client`,
    /// may still be recorded: within the same rate as credential refusals.
    pub fn may_record_unauthenticated(&self, client: IpAddr, now: SystemTime) -> bool {
        self.refused_unauthenticated.fetch_add(1, Ordering::Relaxed);
        self.unauthenticated.allow(client, now)
    }

    /// Refusals before authentication so far, recorded or not.
    pub fn refused_unauthenticated(&self) -> u64 {
        self.refused_unauthenticated.load(Ordering::Relaxed)
    }

    async fn refused(&self, error: AuthError, route: &str, now: SystemTime, client: IpAddr) -> RefusedCredential {
        self.refused_unauthenticated.fetch_add(1, Ordering::Relaxed);
        if recordable(&error) && !self.unauthenticated.allow(client, now) {
            return RefusedCredential {
                error: AuthError::RateLimited,
                event_id: None,
            };
        }
        match self.record_credential_refusal(&error, route, now).await {
            Ok(event_id) => RefusedCredential { error, event_id },
            Err(store) => RefusedCredential {
                error: AuthError::Store(store),
                event_id: None,
            },
        }
    }

    /// Records and alerts a refused credential that says something about
    /// the agent's situation: an expired or revoked credential still in use,
    /// or a provider's own token where the credential belongs. Other
    /// refusals are bad input: nothing is recorded and `None` comes back.
    async fn record_credential_refusal(
        &self,
        error: &AuthError,
        route: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        let mut detail = serde_json::json!({ "route": route });
        let (claims, refusal, text, key): (Option<&Claims>, &'static str, String, String) = match error {
            AuthError::Credential(VerifyError::Expired { claims }) => (
                Some(claims),
                "credential_expired",
                format!(
                    "Agent `{}` used its expired credential for `{}` at {route} (lease {}); it was refused and told to get a new one.",
                    claims.sub, claims.env, claims.jti
                ),
                format!("credential_expired:{}", claims.jti),
            ),
            AuthError::Revoked { claims } => (
                Some(claims),
                "credential_revoked",
                format!(
                    "Agent `{}` used its revoked credential for `{}` at {route} (lease {}); it was refused.",
                    claims.sub, claims.env, claims.jti
                ),
                format!("credential_revoked:{}", claims.jti),
            ),
            AuthError::SessionEnded { claims } => (
                Some(claims),
                "session_ended",
                format!(
                    "Agent `{}` used the credential of its ended session for `{}` at {route} (lease {}): the `valetkey run` that launched it is gone, so the credential may have been copied out of the session. It was refused.",
                    claims.sub, claims.env, claims.jti
                ),
                format!("session_ended:{}", claims.jti),
            ),
            AuthError::RawProviderToken {
                looks_like,
                fingerprint,
            } => {
                detail["looks_like"] = (*looks_like).into();
                detail["fingerprint"] = fingerprint.clone().into();
                (
                    None,
                    "raw_provider_token",
                    format!(
                        "A real token ({looks_like}, {fingerprint}) was sent to the broker at {route}: it has reached an agent. It was not forwarded. Rotate it, and find how the agent got it."
                    ),
                    format!("raw_provider_token:{fingerprint}"),
                )
            }
            _ => return Ok(None),
        };
        detail["refusal"] = refusal.into();
        if let Some(c) = claims {
            detail["lease_id"] = c.jti.clone().into();
            detail["expires_at"] = crate::time::rfc3339(c.exp as i64).into();
        }
        let event = Event {
            kind: EventKind::CredentialRefused,
            actor: claims.map_or_else(|| "unknown".to_owned(), |c| Actor::agent(&c.sub).0),
            agent: claims.map(|c| c.sub.clone()),
            session_id: claims.map(|c| c.sid.clone()),
            env: claims.map(|c| c.env.clone()),
            detail,
        };
        self.record_and_alert(event, refusal, text, key, now).await.map(Some)
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().expect("key ring lock").clone()
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.ring().jwks()
    }

    /// Learns what other processes changed in the store: revocations (by
    /// following the feed) and signing keys (by reloading the ring when the
    /// set of keys changed).
    pub async fn sync(&self, now: SystemTime) -> Result<(), KeyError> {
        let secs = unix_secs(now);
        let cursor = self.revocation_cursor.load(Ordering::Acquire);
        let feed = self.store.revocations_since(cursor, secs).await?;
        self.learn_revocations(&feed);
        let deadlines = self.store.session_deadlines(secs).await?;
        self.deadlines.learn(&deadlines, secs);

        let records = self.store.signing_keys().await?;
        let version: Vec<(String, Option<i64>)> = records.iter().map(|k| (k.kid.clone(), k.retired_at)).collect();
        let changed = *self.ring_version.lock().expect("ring version lock") != version;
        if changed {
            // A session's credential lives up to `max_session`.
            let creds = self.config.credentials.get_ref();
            let longest = creds.max_ttl.max(creds.max_session).as_secs() as i64;
            let ring = credentials::load_ring(self.store.as_ref(), &self.master(), secs, longest).await?;
            *self.ring.write().expect("key ring lock") = Arc::new(ring);
            *self.ring_version.lock().expect("ring version lock") = version;
        }
        Ok(())
    }

    fn learn_revocations(&self, revocations: &[Revocation]) {
        for r in revocations {
            self.revoked.insert(r.lease_id.clone(), r.expires_at);
            self.revocation_cursor.fetch_max(r.seq, Ordering::AcqRel);
        }
    }

    pub async fn authenticate_launcher(&self, key: &str) -> Result<AgentRecord, AuthError> {
        let key_id = credentials::parse_opaque_key(OpaqueKind::Launcher, key).ok_or(AuthError::LauncherKey)?;
        let agent = self
            .store
            .agent_by_key_id(key_id)
            .await?
            .ok_or(AuthError::LauncherKey)?;
        if !credentials::verify_opaque_key(&SecretString::from(key), &agent.key_hash) {
            return Err(AuthError::LauncherKey);
        }
        Ok(agent)
    }

    /// The admin a key belongs to, while it lives.
    pub async fn authenticate_admin(&self, key: &str, now: SystemTime) -> Result<AdminKeyRecord, AuthError> {
        let key_id = credentials::parse_opaque_key(OpaqueKind::Admin, key).ok_or(AuthError::AdminKey)?;
        let record = self.store.admin_key(key_id).await?.ok_or(AuthError::AdminKey)?;
        if !credentials::verify_opaque_key(&SecretString::from(key), &record.key_hash) {
            return Err(AuthError::AdminKey);
        }
        if unix_secs(now) >= record.expires_at {
            return Err(AuthError::AdminKeyExpired {
                name: record.name,
                expired_at: record.expires_at,
            });
        }
        Ok(record)
    }

    /// Verifies a credential: cached after the first full check, revocation
    /// checked every time.
    pub fn authenticate(&self, token: &str, now: SystemTime) -> Result<Arc<Claims>, AuthError> {
        if !token.starts_with(credentials::PREFIX) {
            return Err(self.foreign(token));
        }
        let secs = unix_secs(now).max(0) as u64;
        let key = VerifiedCache::key(token);
        let claims = match self.verified.get(&key) {
            Some(claims) if secs < claims.exp => claims,
            Some(claims) => {
                return Err(VerifyError::Expired {
                    claims: Box::new((*claims).clone()),
                }
                .into());
            }
            None => {
                let creds = self.config.credentials.get_ref();
                let expected = Expected {
                    issuer: &creds.issuer,
                    audience: &creds.audience,
                };
                let claims = Arc::new(credentials::verify(token, &self.ring(), &expected, secs)?);
                self.verified.insert(key, claims.clone());
                claims
            }
        };
        if self.revoked.contains(&claims.jti) {
            return Err(AuthError::Revoked { claims });
        }
        if claims.hb
            && !self
                .deadlines
                .alive(&claims.jti, secs as i64, self.first_deadline(&claims))
        {
            return Err(AuthError::SessionEnded { claims });
        }
        Ok(claims)
    }

    /// Mints a credential for `agent`. `asked_agent` is the agent the caller
    /// believes it is launching; a launcher key of another agent is refused.
    pub async fn mint(
        &self,
        agent: &AgentRecord,
        asked_agent: Option<&str>,
        request: &MintRequest,
        now: SystemTime,
    ) -> Result<Minted, MintError> {
        if let Some(asked) = asked_agent
            && asked != agent.name
        {
            let event_id = self
                .record_refusal(
                    agent,
                    request,
                    "agent_mismatch",
                    &format!("asked for agent `{asked}`"),
                    now,
                )
                .await?;
            return Err(MintError::AgentMismatch {
                holder: agent.name.clone(),
                asked: asked.to_owned(),
                event_id,
            });
        }
        let plan = match policy::plan_mint(&self.rules, &agent.name, request) {
            Ok(plan) => plan,
            Err(refusal) => {
                let event_id = self
                    .record_refusal(agent, request, refusal_kind(&refusal), &refusal.to_string(), now)
                    .await?;
                return Err(MintError::Refused { refusal, event_id });
            }
        };

        let ring = self.ring();
        let key = ring.active().ok_or(MintError::NoSigningKey)?;
        let issued_at = unix_secs(now);
        let expires_at = issued_at + plan.ttl.as_secs() as i64;
        let creds = self.config.credentials.get_ref();
        let claims = Claims {
            iss: creds.issuer.clone(),
            aud: creds.audience.clone(),
            sub: agent.name.clone(),
            env: plan.env.clone(),
            grants: plan
                .grants
                .iter()
                .map(|(p, scopes)| (p.clone(), scopes.iter().cloned().collect()))
                .collect(),
            iat: issued_at as u64,
            nbf: issued_at as u64,
            exp: expires_at as u64,
            jti: uuid::Uuid::now_v7().to_string(),
            sid: uuid::Uuid::new_v4().to_string(),
            hb: request.session,
        };
        let credential = credentials::sign(&claims, key)?;
        // Planned before the lease exists: a provider without a server
        // refuses the mint with nothing to undo.
        let roles = match self.plan_roles(&claims).await {
            Ok(roles) => roles,
            Err(error) => {
                let event_id = self
                    .record_refusal(agent, request, "database_unavailable", &error.to_string(), now)
                    .await?;
                return Err(MintError::Database { error, event_id });
            }
        };
        let lease = Lease {
            id: claims.jti.clone(),
            session_id: claims.sid.clone(),
            agent: agent.name.clone(),
            env: plan.env.clone(),
            grants: claims.grants.clone(),
            kid: key.kid.clone(),
            issued_at,
            expires_at: self.first_deadline(&claims),
            revoked_at: None,
            session_ends_at: claims.hb.then_some(expires_at),
        };
        let event = Event {
            kind: EventKind::Mint,
            actor: Actor::agent(&agent.name).0,
            agent: Some(agent.name.clone()),
            session_id: Some(claims.sid.clone()),
            env: Some(plan.env.clone()),
            detail: serde_json::json!({
                "lease_id": claims.jti,
                "kid": key.kid,
                "grants": claims.grants,
                "stripped": plan.stripped,
                "ttl_seconds": plan.ttl.as_secs(),
                "ttl_limited_by": plan.ttl_limited_by,
                "expires_at": expires_at,
                "session": claims.hb,
            }),
        };
        let (logins, event_id) = if roles.is_empty() {
            // The common case: the lease and its event are one write, which
            // shares its commit with every other mint and event queued.
            let record = self.store.insert_lease_with_event(&lease, &event, unix_ms(now)).await?;
            (BTreeMap::new(), record.id)
        } else {
            // Database roles are recorded against a lease that exists, so
            // the lease goes first, then the roles, then the events.
            self.store.insert_lease(&lease).await?;
            let logins = self.create_roles(agent, request, &claims, roles, now).await?;
            match self.store.append_audit(&event, unix_ms(now)).await {
                Ok(record) => (logins, record.id),
                Err(e) => {
                    self.abandon(&claims, true, now).await;
                    return Err(e.into());
                }
            }
        };
        if claims.hb {
            self.deadlines.set(&claims.jti, lease.expires_at);
        }
        let env_vars = self.env_vars(&credential, &plan, &logins);
        Ok(Minted {
            credential,
            claims,
            plan,
            env_vars,
            database_ports: logins.values().map(|l| l.port).collect(),
            event_id,
        })
    }

    /// A new credential's lease deadline, which is also its roles' `VALID
    /// UNTIL`: its expiry, or for a session the deadline its mint sets
    /// (`heartbeat`).
    fn first_deadline(&self, claims: &Claims) -> i64 {
        let (issued, ends) = (claims.iat as i64, claims.exp as i64);
        if !claims.hb {
            return ends;
        }
        let timeout = self.config.credentials.get_ref().heartbeat_timeout.as_secs() as i64;
        crate::heartbeat::deadline(issued, timeout, ends)
    }

    /// A role, with its password and the agent's login, for each postgres
    /// provider the credential holds.
    async fn plan_roles(&self, claims: &Claims) -> Result<Vec<(String, RolePlan, Login)>, DatabaseError> {
        let mut roles = Vec::new();
        for (provider, scopes) in &claims.grants {
            let postgres =
                self.config.providers.get(provider).map(|p| p.get_ref().kind) == Some(ProviderKind::Postgres);
            if !postgres {
                continue;
            }
            let lease = LeaseFacts {
                agent: &claims.sub,
                env: &claims.env,
                lease_id: &claims.jti,
                expires_at: self.first_deadline(claims),
                scopes,
            };
            let (plan, login) = self.databases.plan(provider, &lease).await?;
            roles.push((provider.clone(), plan, login));
        }
        Ok(roles)
    }

    /// Records, then creates, the credential's database roles. If one
    /// cannot be made, the credential is revoked before anyone holds it and
    /// the roles made so far are ended; the mint is refused, recorded.
    async fn create_roles(
        &self,
        agent: &AgentRecord,
        request: &MintRequest,
        claims: &Claims,
        roles: Vec<(String, RolePlan, Login)>,
        now: SystemTime,
    ) -> Result<BTreeMap<String, Login>, MintError> {
        let mut logins = BTreeMap::new();
        let records: Vec<DatabaseRole> = roles
            .iter()
            .map(|(provider, plan, _)| DatabaseRole {
                role: plan.role.clone(),
                lease_id: claims.jti.clone(),
                provider: provider.clone(),
                env: claims.env.clone(),
                agent: claims.sub.clone(),
                database: plan.database.clone(),
                created_at: claims.iat as i64,
                expires_at: self.first_deadline(claims),
                dropped_at: None,
            })
            .collect();
        self.store.insert_database_roles(&records).await?;
        for (provider, plan, login) in roles {
            if let Err(error) = self.databases.create(&provider, &claims.env, &plan).await {
                tracing::warn!(%provider, env = %claims.env, agent = %claims.sub, error = %error, "cannot create a database role; the mint is refused");
                self.abandon(claims, !logins.is_empty(), now).await;
                let event_id = self
                    .record_refusal(agent, request, "database_unavailable", &error.to_string(), now)
                    .await?;
                return Err(MintError::Database { error, event_id });
            }
            let privileges: Vec<&str> = [("read", plan.read), ("write", plan.write), ("delete", plan.delete)]
                .iter()
                .filter(|(_, held)| *held)
                .map(|(name, _)| *name)
                .collect();
            let event = Event {
                kind: EventKind::DatabaseRoleCreated,
                actor: Actor::broker().0,
                agent: Some(claims.sub.clone()),
                session_id: Some(claims.sid.clone()),
                env: Some(claims.env.clone()),
                detail: serde_json::json!({
                    "provider": provider,
                    "role": plan.role,
                    "lease_id": claims.jti,
                    "database": plan.database,
                    "schemas": plan.schemas,
                    "scopes": privileges,
                    "valid_until": plan.valid_until,
                    "connection_limit": plan.connection_limit,
                }),
            };
            if let Err(e) = self.store.append_audit(&event, unix_ms(now)).await {
                self.abandon(claims, true, now).await;
                return Err(e.into());
            }
            logins.insert(provider, login);
        }
        Ok(logins)
    }

    /// A mint that fails once its lease is written: the lease is revoked
    /// (nobody holds its credential) and, when some of its roles were made,
    /// they are ended now, as far as the store and the servers let; the
    /// reaper finishes the rest.
    async fn abandon(&self, claims: &Claims, roles_made: bool, now: SystemTime) {
        match self
            .store
            .revoke(&RevokeTarget::Lease(claims.jti.clone()), unix_secs(now))
            .await
        {
            Ok(revoked) => self.learn_revocations(&revoked),
            Err(e) => {
                tracing::warn!(lease = %claims.jti, error = %e, "cannot revoke the lease of a failed mint; its roles end when it expires")
            }
        }
        if roles_made {
            self.end_roles_now(now).await;
        }
    }

    /// Ends the roles of leases just revoked, without waiting for the
    /// reaper; what fails here is the reaper's to finish.
    async fn end_roles_now(&self, now: SystemTime) {
        // Without postgres providers there are no roles: a revocation (every
        // `run` ends with one) need not read the store for them.
        if !self.has_databases() {
            return;
        }
        if let Err(e) = self.reap_roles(now).await {
            tracing::warn!(error = %e, "cannot end the database roles of revoked leases now; the reaper will");
        }
    }

    /// Ends every database role whose lease ended (expired, or revoked here
    /// or by another process) and records each. A role that cannot be ended
    /// now is tried again later, waiting longer each time. Returns how many
    /// were ended.
    pub async fn reap_roles(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut retry = self.reaping.lock().await;
        let secs = unix_secs(now);
        let mut ended = 0;
        // A server that fails once in a pass is not asked again in it: each
        // attempt can take a whole connect timeout.
        let mut failing = std::collections::BTreeSet::new();
        for r in self.store.database_roles_due(secs).await? {
            if retry.get(&r.role).is_some_and(|(at, _)| now < *at) {
                continue;
            }
            let server = (r.provider.clone(), r.env.clone());
            let comment = role_comment(&r.agent, &r.env, &r.lease_id);
            let ending = if failing.contains(&server) {
                None
            } else {
                Some(self.databases.end(&r.provider, &r.env, &r.role, &comment).await)
            };
            let outcome = match ending {
                Some(Ok(outcome)) => outcome,
                failed => {
                    let wait = retry
                        .get(&r.role)
                        .map_or(REAP_BACKOFF, |(_, w)| (*w * 2).min(REAP_BACKOFF_MAX));
                    if let Some(Err(e)) = failed {
                        tracing::warn!(role = %r.role, provider = %r.provider, env = %r.env, error = %e, retry_in = ?wait, "cannot end a database role whose lease ended");
                        failing.insert(server);
                    }
                    retry.insert(r.role.clone(), (now + wait, wait));
                    continue;
                }
            };
            // Not there yet may mean its creation has not committed yet (a
            // lease of a second or two): look again before calling it gone.
            if outcome == Ended::AlreadyGone && r.created_at > secs - CREATION_GRACE_SECS {
                continue;
            }
            retry.remove(&r.role);
            if !self.store.database_role_dropped(&r.role, secs).await? {
                continue;
            }
            ended += 1;
            let why = if r.expires_at <= secs { "expired" } else { "revoked" };
            let sessions = match outcome {
                Ended::Dropped { sessions } => sessions,
                Ended::AlreadyGone | Ended::NotOurs => 0,
            };
            tracing::info!(role = %r.role, provider = %r.provider, env = %r.env, why, outcome = outcome.as_str(), sessions, "database role ended");
            if outcome == Ended::NotOurs {
                tracing::warn!(role = %r.role, provider = %r.provider, env = %r.env, "a role of this name exists but the broker did not create it for this lease: left alone");
            }
            let event = Event {
                kind: EventKind::DatabaseRoleDropped,
                actor: Actor::broker().0,
                agent: Some(r.agent.clone()),
                session_id: None,
                env: Some(r.env.clone()),
                detail: serde_json::json!({
                    "provider": r.provider,
                    "role": r.role,
                    "lease_id": r.lease_id,
                    "database": r.database,
                    "why": why,
                    "outcome": outcome.as_str(),
                    "sessions_ended": sessions,
                }),
            };
            self.store.append_audit(&event, unix_ms(now)).await?;
        }
        Ok(ended)
    }

    async fn record_refusal(
        &self,
        agent: &AgentRecord,
        request: &MintRequest,
        kind: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<String, StoreError> {
        let event = Event {
            kind: EventKind::MintRefused,
            actor: Actor::agent(&agent.name).0,
            agent: Some(agent.name.clone()),
            session_id: None,
            env: Some(request.env.clone()),
            detail: serde_json::json!({
                "refusal": kind,
                "reason": reason,
                "providers": request.providers,
                "scopes": request.scopes,
                "ttl_seconds": request.ttl.map(|t| t.as_secs()),
            }),
        };
        Ok(self.store.append_audit(&event, unix_ms(now)).await?.id)
    }

    pub fn broker_url(&self) -> String {
        self.config.server.public_url()
    }

    pub fn proxy_url(&self, provider: &str) -> String {
        format!("{}/p/{provider}", self.broker_url())
    }

    fn env_vars(
        &self,
        credential: &SecretString,
        plan: &MintPlan,
        logins: &BTreeMap<String, Login>,
    ) -> BTreeMap<String, SecretString> {
        let broker_url = self.broker_url();
        let mut vars = BTreeMap::new();
        vars.insert(
            "VALETKEY_CREDENTIAL".to_owned(),
            SecretString::from(credential.expose_secret()),
        );
        vars.insert("VALETKEY_URL".to_owned(), SecretString::from(broker_url.as_str()));
        for provider in plan.grants.keys() {
            let Some(p) = self.config.providers.get(provider) else {
                continue;
            };
            let proxy_url = self.proxy_url(provider);
            let values = TemplateValues {
                credential: credential.expose_secret(),
                proxy_url: &proxy_url,
                broker_url: &broker_url,
                env: &plan.env,
                provider,
                database: logins.get(provider),
            };
            for (var, template) in &p.get_ref().agent_env {
                // Templates were checked when the configuration loaded.
                if let Ok(value) = expand_template(template.get_ref(), &values) {
                    vars.insert(var.get_ref().clone(), SecretString::from(value));
                }
            }
        }
        vars
    }

    /// Revokes leases here and in the store; this broker refuses them from
    /// the next request on, other replicas once they follow the feed.
    pub async fn revoke(
        &self,
        target: &RevokeTarget,
        actor: &Actor,
        now: SystemTime,
    ) -> Result<Vec<Revocation>, AdminError> {
        let revoked = admin::revoke(self.store.as_ref(), target, actor, now).await?;
        self.learn_revocations(&revoked);
        self.end_roles_now(now).await;
        Ok(revoked)
    }

    pub async fn remove_agent(
        &self,
        name: &str,
        actor: &Actor,
        now: SystemTime,
    ) -> Result<Vec<Revocation>, AdminError> {
        let revoked = admin::remove_agent(self.store.as_ref(), name, actor, now).await?;
        self.learn_revocations(&revoked);
        self.end_roles_now(now).await;
        Ok(revoked)
    }

    pub async fn rotate_signing_key(&self, actor: &Actor, now: SystemTime) -> Result<String, AdminError> {
        let (_sealing, master) = self.sealing().await;
        let kid = admin::rotate_signing_key(self.store.as_ref(), &master, actor, now).await?;
        self.sync(now).await?;
        Ok(kid)
    }

    /// The agent that owns a session, if the session exists.
    pub async fn session_agent(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.store.session_agent(session_id).await
    }

    /// What the provider's rule pack says a scope does.
    pub fn scope_description(&self, provider: &str, scope: &str) -> Option<String> {
        let pack = self.config.providers.get(provider)?.get_ref().kind.pack();
        pack.scopes.get(scope).map(|s| s.description.clone())
    }

    /// What the holder of `claims` may do, and until when.
    pub fn describe(&self, claims: &Claims, now: SystemTime) -> WhoAmI {
        let grants = claims
            .grants
            .iter()
            .map(|(provider, scopes)| {
                let tiers = self.rules.scopes.get(provider);
                let scopes = scopes
                    .iter()
                    .map(|scope| ScopeView {
                        scope: scope.clone(),
                        tier: tiers.and_then(|t| t.get(scope)).copied(),
                        description: self.scope_description(provider, scope),
                    })
                    .collect();
                (
                    provider.clone(),
                    ProviderView {
                        proxy_url: self.proxy_url(provider),
                        scopes,
                    },
                )
            })
            .collect();
        WhoAmI {
            agent: claims.sub.clone(),
            env: claims.env.clone(),
            lease_id: claims.jti.clone(),
            session_id: claims.sid.clone(),
            issued_at: crate::time::rfc3339(claims.iat as i64),
            expires_at: crate::time::rfc3339(claims.exp as i64),
            expires_in: (claims.exp as i64 - unix_secs(now)).max(0),
            lifetime: if claims.hb {
                "a session: this credential works while the `valetkey run` that launched you lives, and never past its expiry; it does not need renewing"
            } else {
                "a fixed expiry: this credential stops working at its expiry and is not renewed"
            },
            grants,
            never: "destructive and catastrophic operations (deleting volumes, backups, services, environments, projects, repositories) are never possible with this credential; they need a human's approval",
        }
    }

    /// Whether the store took a write, probed at most once a second.
    async fn probe_store(&self) -> Result<(), String> {
        let mut last = self.write_probe.lock().await;
        if let Some((at, outcome)) = last.as_ref()
            && at.elapsed() < WRITE_PROBE_EVERY
        {
            return outcome.clone();
        }
        let outcome = self
            .store
            .probe_write(unix_secs(SystemTime::now()))
            .await
            .map_err(|e| e.to_string());
        *last = Some((std::time::Instant::now(), outcome.clone()));
        outcome
    }

    pub async fn readiness(&self) -> Readiness {
        let store = self.probe_store().await;
        let active_kid = self.ring().active().map(|k| k.kid.clone());
        let database_roles = self
            .store
            .live_database_roles()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|r| RoleView {
                role: r.role,
                provider: r.provider,
                env: r.env,
                agent: r.agent,
                database: r.database,
                lease_id: r.lease_id,
                created_at: crate::time::rfc3339(r.created_at),
                expires_at: crate::time::rfc3339(r.expires_at),
            })
            .collect();
        let ready = store.is_ok() && active_kid.is_some();
        Readiness {
            ready,
            degraded: ready && self.token_status().iter().any(|t| t.problem.is_some()),
            store,
            active_kid,
            provider_tokens: self.token_status(),
            token_reach: self.reach.read().expect("reach lock").clone(),
            database_findings: self.database_findings.read().expect("findings lock").clone(),
            alerts_dropped: self.alerts.dropped(),
            database_roles,
        }
    }

    /// A permission audit of the events since `since_ms`.
    pub async fn audit_report(
        &self,
        since_ms: i64,
        now: SystemTime,
    ) -> Result<crate::audit::report::Report, AdminError> {
        admin::audit_report(self.store.as_ref(), &self.master(), &self.rules, since_ms, unix_ms(now)).await
    }

    /// The audit chain and its checkpoints, verified with the keys opened
    /// under the master key.
    pub async fn verify_audit(&self) -> Result<crate::audit::Verification, AdminError> {
        admin::verify_audit(self.store.as_ref(), &self.master()).await
    }

    /// The key the store is sealed under now.
    pub(crate) fn master(&self) -> Arc<MasterKey> {
        self.master.read().expect("master key lock").clone()
    }

    /// The key to seal a new record with, and the lock every write that
    /// seals holds while it writes, so a rotation never leaves it behind.
    pub(crate) async fn sealing(&self) -> (tokio::sync::MutexGuard<'_, ()>, Arc<MasterKey>) {
        let guard = self.sealing.lock().await;
        (guard, self.master())
    }

    /// Replaces the master key (`admin::rotate_master`) and uses the new one
    /// from then on. Returns the new key's id and how many records were
    /// re-sealed.
    pub async fn rotate_master(&self, actor: &Actor, now: SystemTime) -> Result<(String, usize), AdminError> {
        use crate::secrets::MasterKeyOrigin;
        let file = match &self.master_origin {
            MasterKeyOrigin::File(file) | MasterKeyOrigin::Created(file) => file,
            MasterKeyOrigin::Env => return Err(AdminError::MasterKeyInEnvironment),
        };
        let (_sealing, old) = self.sealing().await;
        let (new, resealed) = admin::rotate_master(self.store.as_ref(), &old, file, now).await?;
        let (old_id, new_id) = (old.key_id(), new.key_id());
        // In use before the event is written: the store is sealed under it.
        *self.master.write().expect("master key lock") = Arc::new(new);
        admin::audit_event(
            self.store.as_ref(),
            actor,
            EventKind::MasterKeyRotated,
            None,
            serde_json::json!({ "old_key_id": old_id, "key_id": new_id, "resealed": resealed }),
            now,
        )
        .await?;
        Ok((new_id, resealed))
    }

    /// Signs a checkpoint of the audit chain's head with the active signing
    /// key, when the head moved since the last one. Returns its position.
    pub async fn checkpoint(&self, now: SystemTime) -> Result<Option<i64>, KeyError> {
        let Some((seq, head_hash)) = self.store.audit_head().await? else {
            return Ok(None);
        };
        let last = self.store.last_checkpoint_seq().await?.unwrap_or(0);
        if seq <= last {
            return Ok(None);
        }
        let ring = self.ring();
        let key = ring.active().ok_or(KeyError::Invalid {
            kid: "(no active key)".into(),
        })?;
        let at_ms = unix_ms(now);
        let signature = key.sign_bytes(crate::audit::Checkpoint::message(seq, &head_hash, at_ms).as_bytes())?;
        self.store
            .insert_checkpoint(&crate::audit::Checkpoint {
                seq,
                head_hash,
                at_ms,
                kid: key.kid.clone(),
                signature,
            })
            .await?;
        Ok(Some(seq))
    }

    /// Asks each provider what each loaded real token reaches; a token that
    /// reaches beyond its environment is logged, recorded and alerted.
    pub async fn introspect(&self, now: SystemTime) -> Result<Vec<TokenReach>, StoreError> {
        let mut results = Vec::new();
        let real = self.real();
        for ((provider, env), token) in real.proxied() {
            let Some(config) = self.config.providers.get(provider).map(|p| p.get_ref()) else {
                continue;
            };
            let empty = policy::ProviderResources::default();
            let map = self.rules.resources.get(provider).unwrap_or(&empty);
            let found = crate::introspect::introspect(&self.upstream, provider, config, env, token, map, now).await;
            match found.outcome {
                Outcome::Confined => tracing::info!(%provider, %env, "token reach: {}", found.detail),
                Outcome::Unknown => tracing::warn!(%provider, %env, "token reach unknown: {}", found.detail),
                Outcome::Finding => {
                    let event = Event {
                        kind: EventKind::TokenReachFinding,
                        actor: Actor::broker().0,
                        agent: None,
                        session_id: None,
                        env: Some(env.clone()),
                        detail: serde_json::json!({
                            "provider": provider,
                            "configured_for": env,
                            "reaches": found.reaches,
                            "detail": found.detail,
                        }),
                    };
                    let text = format!(
                        "The real `{provider}` token configured for `{env}` reaches {}: {}. An agent in `{env}` could act there through it; give `{env}` a token confined to it.",
                        found.reaches.join(", "),
                        found.detail
                    );
                    let key = format!("token_reach:{provider}:{env}:{}", found.reaches.join(","));
                    self.record_and_alert(event, "token_reach", text, key, now).await?;
                }
            }
            results.push(found);
        }
        *self.reach.write().expect("reach lock") = results.clone();
        Ok(results)
    }

    /// Asks each PostgreSQL server what it lets agents' roles do past their
    /// grants (`database_check`), and keeps the answer for readiness.
    pub async fn check_databases(&self, now: SystemTime) -> Result<Vec<DatabaseFinding>, StoreError> {
        let all = crate::database_check::check(self, now).await?;
        *self.database_findings.write().expect("findings lock") = all.clone();
        Ok(all)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WhoAmI {
    pub agent: String,
    pub env: String,
    pub lease_id: String,
    pub session_id: String,
    pub issued_at: String,
    pub expires_at: String,
    pub expires_in: i64,
    /// Whether the credential lives with its session or to a fixed time.
    pub lifetime: &'static str,
    pub grants: BTreeMap<String, ProviderView>,
    pub never: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderView {
    pub proxy_url: String,
    pub scopes: Vec<ScopeView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScopeView {
    pub scope: String,
    pub tier: Option<Tier>,
    pub description: Option<String>,
}

/// The client for upstream APIs: pooled, with both timeouts, never following
/// a redirect (it could carry the real token to another host) and ignoring
/// proxy environment variables (the broker decides where tokens go).
fn upstream_client(proxy: &crate::config::ProxyConfig) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a TLS provider; ring is the one we use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(proxy.connect_timeout)
        .timeout(proxy.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build()
}

/// Whether a refused credential is recorded and alerted: it says something
/// about the agent's situation (its credential expired or was revoked, a real
/// token reached it). The same test decides what the rate limit guards.
fn recordable(error: &AuthError) -> bool {
    matches!(
        error,
        AuthError::Credential(VerifyError::Expired { .. })
            | AuthError::Revoked { .. }
            | AuthError::SessionEnded { .. }
            | AuthError::RawProviderToken { .. }
    )
}

/// The stable name of a refusal, as problem types and audit events say it.
pub fn refusal_kind(refusal: &MintRefusal) -> &'static str {
    match refusal {
        MintRefusal::UnknownEnvironment { .. } => "unknown_environment",
        MintRefusal::AgentNotConfigured { .. } => "agent_not_configured",
        MintRefusal::ProtectedEnvironment { .. } => "protected_environment",
        MintRefusal::NoGrant { .. } => "no_grant",
        MintRefusal::UnknownProvider { .. } => "unknown_provider",
        MintRefusal::ProviderNotGranted { .. } => "provider_not_granted",
        MintRefusal::NothingGrantable { .. } => "nothing_grantable",
        MintRefusal::TtlTooShort => "invalid_ttl",
    }
}
