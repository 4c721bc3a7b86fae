//! The PostgreSQL servers of `postgres` providers: one small pool per
//! (provider, environment), connected as the admin its token names, running
//! the statements `providers::postgres` writes. It decides nothing: which
//! roles to create or end is the broker's call.
//!
//! Roles are created in batches (group commit, as the audit trail is
//! written): whatever creations have queued go in one transaction, whose
//! grants then take the server-wide lock once for all of them.
//!
//! The admin URL is a real secret: it is parsed once at start, held only
//! inside the pool's options, and no message here ever quotes it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::config::DatabaseConfig;
use crate::providers::postgres::{
    self, Login, OTHER_DATABASES, OVERDUE_SESSIONS, OWNER_COMMENT, ROLE_PREFIX, RolePlan, SessionLimits,
    TERMINATE_SESSIONS, create_roles, disable_role, drop_owned, remove_role,
};
use crate::providers::postgres_findings as findings;
use crate::secrets::{ExposeSecret, SecretString, Zeroizing};

/// Connections each pool keeps to its server: role changes are serialised
/// on the server anyway.
const POOL_SIZE: u32 = 4;
/// Longest wait for a lock or a statement.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a connection: a mint waits this long on a server that
/// is down before it is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most roles one creation transaction makes.
const MAX_BATCH: usize = 32;
/// Creation transactions in flight per server: the roles' own creation (the
/// server hashes each verifier) overlaps; their grants queue on the lock.
const CREATORS: usize = 2;
/// Query parameters of the admin URL that agents' URLs keep; anything else
/// (`user`, `password`, …) stays with the admin.
const KEPT_PARAMETERS: [&str; 4] = ["sslmode", "sslrootcert", "connect_timeout", "target_session_attrs"];

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("provider `{provider}` has no admin connection for `{env}` (see `valetkey status`)")]
    NoConnection { provider: String, env: String },
    #[error("the PostgreSQL server of `{provider}` for `{env}` failed: {message}")]
    Server {
        provider: String,
        env: String,
        message: String,
    },
    #[error("cannot make a password: the system's random source or the task computing its verifier failed")]
    Random,
}

/// How ending a role went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Logins stopped, `sessions` open sessions ended, the role dropped.
    Dropped { sessions: i64 },
    /// The server has no such role (ended before, or never created).
    AlreadyGone,
    /// A role of that name exists but the broker did not make it for this
    /// lease: left alone.
    NotOurs,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Dropped { .. } => "dropped",
            Ended::AlreadyGone => "already_gone",
            Ended::NotOurs => "not_ours",
        }
    }
}

struct Creation {
    plan: RolePlan,
    done: oneshot::Sender<Result<(), String>>,
}

struct Target {
    pool: PgPool,
    /// To the tasks that create roles in batches.
    creations: mpsc::Sender<Creation>,
    /// The server as agents reach it: no user, password or path.
    agent_base: url::Url,
    database: String,
    settings: DatabaseConfig,
    /// Whether the last look for sessions past their limits failed: an
    /// outage is reported once, not every second.
    watch_failing: std::sync::atomic::AtomicBool,
}

/// Every postgres provider's servers, by (provider, environment).
#[derive(Default)]
pub struct Databases {
    targets: BTreeMap<(String, String), Target>,
}

impl Databases {
    /// Builds a pool per admin URL (connecting lazily, so a server that is
    /// down does not stop the broker). Returns why each unusable one is.
    pub fn open(
        admin_urls: BTreeMap<(String, String), (SecretString, DatabaseConfig)>,
    ) -> (Databases, BTreeMap<(String, String), String>) {
        let mut targets = BTreeMap::new();
        let mut problems = BTreeMap::new();
        for (key, (url, settings)) in admin_urls {
            match target(url.expose_secret(), settings) {
                Ok(t) => {
                    targets.insert(key, t);
                }
                Err(why) => {
                    problems.insert(key, why.to_owned());
                }
            }
        }
        (Databases { targets }, problems)
    }

    fn target(&self, provider: &str, env: &str) -> Result<&Target, DatabaseError> {
        self.targets
            .get(&(provider.to_owned(), env.to_owned()))
            .ok_or_else(|| DatabaseError::NoConnection {
                provider: provider.to_owned(),
                env: env.to_owned(),
            })
    }

    /// The role for one lease on `provider`'s server in `env`, with a fresh
    /// password, and the login the agent gets for it.
    pub async fn plan(&self, provider: &str, lease: &LeaseFacts<'_>) -> Result<(RolePlan, Login), DatabaseError> {
        let target = self.target(provider, lease.env)?;
        let role = postgres::role_name(lease.agent, lease.lease_id);
        let rng = ring::rand::SystemRandom::new();
        let mut secret = Zeroizing::new([0u8; 32]);
        let mut salt = [0u8; 16];
        rng.fill(secret.as_mut()).map_err(|_| DatabaseError::Random)?;
        rng.fill(&mut salt).map_err(|_| DatabaseError::Random)?;
        use base64::Engine;
        let password = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_ref()));
        // PBKDF2 takes a while: off the async workers.
        let secret_copy = password.clone();
        let rounds = target.settings.scram_iterations;
        let verifier = tokio::task::spawn_blocking(move || postgres::scram_verifier(&secret_copy, &salt, rounds))
            .await
            .map_err(|_| DatabaseError::Random)?;
        let has = |scope: &str| lease.scopes.iter().any(|s| s == scope);
        let plan = RolePlan {
            role: role.clone(),
            password: verifier,
            comment: postgres::role_comment(lease.agent, lease.env, lease.lease_id),
            valid_until: crate::time::rfc3339(lease.expires_at),
            database: target.database.clone(),
            schemas: target.settings.schemas.clone(),
            table_owner: target.settings.table_owner.clone(),
            read: has("read"),
            write: has("write"),
            update: has("update"),
            // Offered only where ops set the bound.
            guarded_update: target.settings.max_update_rows.filter(|_| has("update:guarded")),
            delete: has("delete"),
            connection_limit: target.settings.connection_limit,
            limits: limits(&target.settings),
        };
        let login = postgres::login(&target.agent_base, &target.database, &role, &password);
        Ok((plan, login))
    }

    /// Creates the role, all of it or nothing, in a batch with whatever
    /// other creations are queued for the same server.
    pub async fn create(&self, provider: &str, env: &str, plan: &RolePlan) -> Result<(), DatabaseError> {
        let target = self.target(provider, env)?;
        let failed = server(provider, env);
        let (done, answer) = oneshot::channel();
        let creation = Creation {
            plan: plan.clone(),
            done,
        };
        let stopped = || failed("the broker's role creator stopped".to_owned());
        target.creations.send(creation).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(&failed)
    }

    /// Moves `role`'s `VALID UNTIL` to `until` (unix seconds), if it is the
    /// one the broker created with `comment`. False when it is not there
    /// or not ours.
    pub async fn extend(
        &self,
        provider: &str,
        env: &str,
        role: &str,
        comment: &str,
        until: i64,
    ) -> Result<bool, DatabaseError> {
        if !role.starts_with(ROLE_PREFIX) {
            return Ok(false);
        }
        let target = self.target(provider, env)?;
        let failed = server(provider, env);
        let mut tx = target.pool.begin().await.map_err(&failed)?;
        let found: Option<Option<String>> = sqlx::query_scalar(OWNER_COMMENT)
            .bind(role)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&failed)?;
        if found.flatten().as_deref() != Some(comment) {
            return Ok(false);
        }
        let statement = postgres::extend_role(role, &crate::time::rfc3339(until));
        tx.execute(sqlx::AssertSqlSafe(statement)).await.map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        Ok(true)
    }

    /// Ends `role` if it is the one the broker created with `comment`:
    /// logins stopped, open sessions ended, what it made dropped in every
    /// database, its privileges revoked, the role dropped.
    pub async fn end(&self, provider: &str, env: &str, role: &str, comment: &str) -> Result<Ended, DatabaseError> {
        if !role.starts_with(ROLE_PREFIX) {
            return Ok(Ended::NotOurs);
        }
        let target = self.target(provider, env)?;
        let failed = server(provider, env);
        let mut tx = target.pool.begin().await.map_err(&failed)?;
        tx.execute(postgres::lock()).await.map_err(&failed)?;
        let found: Option<Option<String>> = sqlx::query_scalar(OWNER_COMMENT)
            .bind(role)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&failed)?;
        match found {
            None => return Ok(Ended::AlreadyGone),
            Some(found) if found.as_deref() != Some(comment) => return Ok(Ended::NotOurs),
            Some(_) => {}
        }
        tx.execute(sqlx::AssertSqlSafe(disable_role(role)))
            .await
            .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        let sessions: i64 = sqlx::query_scalar(TERMINATE_SESSIONS)
            .bind(role)
            .fetch_one(&target.pool)
            .await
            .map_err(&failed)?;
        let elsewhere: Vec<String> = sqlx::query_scalar(OTHER_DATABASES)
            .bind(role)
            .fetch_all(&target.pool)
            .await
            .map_err(&failed)?;
        for database in elsewhere {
            let options = target.pool.connect_options().as_ref().clone().database(&database);
            let mut conn = options.connect().await.map_err(&failed)?;
            conn.execute(sqlx::AssertSqlSafe(drop_owned(role)))
                .await
                .map_err(&failed)?;
            let _ = conn.close().await;
        }
        run(&target.pool, remove_role(role))
            .await
            .map_err(server(provider, env))?;
        Ok(Ended::Dropped { sessions })
    }

    /// Ends, on the servers of `live` (the (provider, environment) pairs
    /// with live roles), the sessions of the broker's roles that outlast
    /// their limits (an agent can turn its own timeouts off, and a lock it
    /// holds blocks the application). Returns how many were ended per
    /// server, and why a server could not say, the first time only.
    pub async fn end_overdue_sessions(
        &self,
        grace: Duration,
        live: &std::collections::BTreeSet<(String, String)>,
    ) -> Vec<((String, String), Result<i64, DatabaseError>)> {
        use std::sync::atomic::Ordering;
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for (key, target) in self.targets.iter().filter(|(key, _)| live.contains(*key)) {
            let (provider, env) = key;
            let [statement, lock, idle_in_transaction, idle] = limits(&target.settings).overdue_binds(grace_ms);
            let ended = sqlx::query_scalar(OVERDUE_SESSIONS)
                .bind(statement)
                .bind(lock)
                .bind(idle_in_transaction)
                .bind(idle)
                .fetch_one(&target.pool)
                .await
                .map_err(server(provider, env));
            let failed_before = target.watch_failing.swap(ended.is_err(), Ordering::Relaxed);
            if ended.is_ok() || !failed_before {
                out.push((key.clone(), ended));
            }
        }
        out
    }
}

impl Databases {
    /// What each server lets agents' roles do beyond their grants: PUBLIC's
    /// privileges and `pg_hba.conf`'s rules, as findings with their fixes.
    pub async fn findings(&self) -> Vec<((String, String), Result<Vec<findings::Finding>, DatabaseError>)> {
        let mut out = Vec::new();
        for (key, target) in &self.targets {
            let (provider, env) = key;
            out.push((
                key.clone(),
                server_findings(target).await.map_err(server(provider, env)),
            ));
        }
        out
    }
}

async fn server_findings(target: &Target) -> Result<Vec<findings::Finding>, sqlx::Error> {
    let pool = &target.pool;
    let public = findings::PublicPrivileges {
        database: target.database.clone(),
        connect_elsewhere: sqlx::query_scalar(findings::PUBLIC_CONNECT).fetch_all(pool).await?,
        temp: sqlx::query_scalar(findings::PUBLIC_TEMP).fetch_one(pool).await?,
        create_in: sqlx::query_scalar(findings::PUBLIC_CREATE).fetch_all(pool).await?,
        definers: sqlx::query_scalar(findings::PUBLIC_DEFINERS).fetch_all(pool).await?,
        group_extra: if sqlx::query_scalar(findings::GROUP_EXISTS).fetch_one(pool).await? {
            sqlx::query_scalar(findings::GROUP_EXTRA).fetch_all(pool).await?
        } else {
            Vec::new()
        },
    };
    // Only superusers read the rules; not reading them is a finding too.
    let rules: Option<Vec<findings::HbaRule>> =
        sqlx::query_as::<_, (i32, String, Vec<String>, Vec<String>, String, String, String, bool)>(findings::HBA_RULES)
            .fetch_all(pool)
            .await
            .ok()
            .map(|rows| {
                rows.into_iter()
                    .map(
                        |(line, kind, databases, users, address, netmask, method, error)| findings::HbaRule {
                            line,
                            kind,
                            databases,
                            users,
                            address,
                            netmask,
                            method,
                            error,
                        },
                    )
                    .collect()
            });
    let mut found = findings::public_findings(&public);
    found.extend(findings::hba_findings(rules.as_deref(), &target.database));
    // Like the rules, readable by superusers only (not reading it is named
    // with them).
    let changed: Option<bool> = sqlx::query_scalar(findings::HBA_CHANGED_SINCE_LOAD)
        .fetch_one(pool)
        .await
        .ok();
    found.extend(changed.and_then(findings::hba_reload_finding));
    Ok(found)
}

fn limits(settings: &DatabaseConfig) -> SessionLimits {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    SessionLimits {
        statement_ms: ms(settings.statement_timeout),
        lock_ms: ms(settings.lock_timeout),
        idle_in_transaction_ms: ms(settings.idle_in_transaction_timeout),
        idle_session_ms: ms(settings.idle_session_timeout),
    }
}

/// What a role is made for.
pub struct LeaseFacts<'a> {
    pub agent: &'a str,
    pub env: &'a str,
    pub lease_id: &'a str,
    /// Unix seconds: the role's `VALID UNTIL`.
    pub expires_at: i64,
    pub scopes: &'a [String],
}

/// A creator: takes what has queued (up to `MAX_BATCH`), creates it in one
/// transaction, answers each caller. When a batch fails, each of its roles
/// is tried on its own, so one bad role fails only its own mint. Ends when
/// the broker drops its `Databases`.
async fn create_batches(pool: PgPool, queue: Arc<Mutex<mpsc::Receiver<Creation>>>) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let plans: Vec<RolePlan> = batch.iter().map(|c| c.plan.clone()).collect();
        let together = run(&pool, create_roles(&plans)).await;
        match together {
            Ok(()) => batch.into_iter().for_each(|c| drop(c.done.send(Ok(())))),
            Err(e) if batch.len() == 1 => batch.into_iter().for_each(|c| drop(c.done.send(Err(e.clone())))),
            Err(_) => {
                for c in batch {
                    let alone = run(&pool, c.plan.create()).await;
                    let _ = c.done.send(alone);
                }
            }
        }
    }
}

/// Runs statements as one implicit transaction, in one round trip.
async fn run(pool: &PgPool, statements: Vec<String>) -> Result<(), String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statements.join(";\n")))
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Maps a failure on `provider`'s server in `env` (a driver error, or the
/// text a creator answered with) to the one error that names it.
fn server<E: std::fmt::Display>(provider: &str, env: &str) -> impl Fn(E) -> DatabaseError {
    let (provider, env) = (provider.to_owned(), env.to_owned());
    move |e| DatabaseError::Server {
        provider: provider.clone(),
        env: env.clone(),
        message: e.to_string(),
    }
}

/// A pool and the agents' view of the server, from an admin URL. The reason
/// it cannot be used never quotes the URL.
fn target(admin_url: &str, settings: DatabaseConfig) -> Result<Target, &'static str> {
    const NOT_A_URL: &str = "the admin connection is not a `postgres://user:password@host:port/database` URL";
    let parsed = url::Url::parse(admin_url).map_err(|_| NOT_A_URL)?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(NOT_A_URL);
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the admin connection's URL names no host: agents connect over TCP");
    }
    let options = PgConnectOptions::from_str(admin_url).map_err(|_| NOT_A_URL)?;
    let database = settings
        .database
        .clone()
        .or_else(|| options.get_database().map(str::to_owned))
        .unwrap_or_else(|| options.get_username().to_owned());
    let options = options
        .database(&database)
        .application_name("valetkey")
        .options([
            ("statement_timeout", TIMEOUT.as_millis().to_string()),
            ("lock_timeout", TIMEOUT.as_millis().to_string()),
        ])
        // Statements carry password verifiers; they are never logged.
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options);
    let mut agent_base = parsed.clone();
    let _ = agent_base.set_username("");
    let _ = agent_base.set_password(None);
    agent_base.set_path("");
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| KEPT_PARAMETERS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    agent_base.set_query(None);
    if !kept.is_empty() {
        agent_base.query_pairs_mut().extend_pairs(kept);
    }
    if let Some(host) = &settings.host {
        agent_base
            .set_host(Some(host))
            .map_err(|_| "`host` is not a host name")?;
    }
    if let Some(port) = settings.port {
        let _ = agent_base.set_port(Some(port));
    }
    let (creations, queue) = mpsc::channel(4 * MAX_BATCH);
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..CREATORS {
        tokio::spawn(create_batches(pool.clone(), queue.clone()));
    }
    Ok(Target {
        pool,
        creations,
        agent_base,
        database,
        settings,
        watch_failing: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_agents_url_keeps_nothing_of_the_admins_credentials() {
        let settings = DatabaseConfig {
            database: Some("app".into()),
            ..DatabaseConfig::default()
        };
        let t = target(
            "postgres://admin:hunter2@db.internal:6543/postgres?sslmode=require&password=hunter2",
            settings,
        )
        .unwrap();
        assert_eq!(t.agent_base.as_str(), "postgres://db.internal:6543?sslmode=require");
        assert_eq!(t.database, "app");
        let login = postgres::login(&t.agent_base, &t.database, "vk_a_1", "pw");
        assert_eq!(login.url, "postgres://vk_a_1:pw@db.internal:6543/app?sslmode=require");
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_watched_is_reported_once_per_outage_and_only_with_live_roles() {
        // Nothing listens on port 1: the connection is refused at once.
        let url = SecretString::from("postgres://admin:hunter2@127.0.0.1:1/app".to_owned());
        let key = ("appdb".to_owned(), "staging".to_owned());
        let (databases, problems) = Databases::open(BTreeMap::from([(key.clone(), (url, DatabaseConfig::default()))]));
        assert!(problems.is_empty());
        let grace = Duration::from_secs(1);
        let none = std::collections::BTreeSet::new();
        assert!(databases.end_overdue_sessions(grace, &none).await.is_empty());
        let live = std::collections::BTreeSet::from([key.clone()]);
        let first = databases.end_overdue_sessions(grace, &live).await;
        assert_eq!(first.len(), 1);
        let why = first[0].1.as_ref().unwrap_err().to_string();
        assert!(!why.contains("hunter2"), "{why}");
        assert!(
            databases.end_overdue_sessions(grace, &live).await.is_empty(),
            "reported twice"
        );
    }

    #[tokio::test]
    async fn a_bad_admin_url_is_named_without_being_quoted() {
        for bad in [
            "hunter2",
            "mysql://root:hunter2@h/db",
            "postgres:///db?password=hunter2",
        ] {
            let why = target(bad, DatabaseConfig::default()).err().unwrap();
            assert!(!why.contains("hunter2"), "{why}");
        }
    }
}
