//! The configuration's serde types, with their defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{self, Tier};
use crate::providers::{Classifier, GraphqlLimits, NODE_KIND, OperationRule, ProviderKind, RuleError};

pub type Span = std::ops::Range<usize>;

/// A whole configuration file. Named sections (`[agents.NAME]`, …) are kept
/// with the span of their name, so problems can point at it.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub keys: KeysConfig,
    pub proxy: ProxyConfig,
    pub alerts: AlertsConfig,
    pub introspection: IntrospectionConfig,
    pub audit: AuditConfig,
    pub run: RunConfig,
    pub approvals: ApprovalsConfig,
    pub console: ConsoleConfig,
    pub forward_proxy: ForwardProxyConfig,
    pub credentials: Spanned<CredentialsConfig>,
    pub environments: BTreeMap<String, Spanned<EnvironmentConfig>>,
    pub providers: BTreeMap<String, Spanned<ProviderConfig>>,
    pub resources: Vec<Spanned<ResourceConfig>>,
    pub agents: BTreeMap<String, Spanned<AgentConfig>>,
    pub approvers: BTreeMap<String, Spanned<ApproverConfig>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            keys: KeysConfig::default(),
            proxy: ProxyConfig::default(),
            alerts: AlertsConfig::default(),
            introspection: IntrospectionConfig::default(),
            audit: AuditConfig::default(),
            run: RunConfig::default(),
            approvals: ApprovalsConfig::default(),
            console: ConsoleConfig::default(),
            forward_proxy: ForwardProxyConfig::default(),
            credentials: Spanned::new(0..0, CredentialsConfig::default()),
            environments: BTreeMap::new(),
            providers: BTreeMap::new(),
            resources: Vec::new(),
            agents: BTreeMap::new(),
            approvers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the broker listens on.
    pub listen: SocketAddr,
    /// URL agents use to reach the broker; defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// Where the SQLite store and the dev master key live. Overridden by
    /// `--data-dir` and `VALETKEY_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// Largest request body the /v1 API accepts.
    pub max_body_bytes: usize,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the
    /// client; every other peer is the client itself.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Refusals before authentication that one client address may cause to
    /// be recorded, per second; past `unauthenticated_burst` at once they
    /// are answered 429 and recorded nowhere.
    pub unauthenticated_rate: f64,
    pub unauthenticated_burst: u32,
    /// A request's head must arrive whole within this, counted from when
    /// the connection starts waiting for it (an idle keep-alive connection
    /// is closed after it too).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection on which nothing is read or written for this long is
    /// closed; keep it above `[proxy] timeout`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request body must arrive whole within this.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections served at once; beyond, new ones are answered 503.
    pub max_connections: usize,
    /// Connections served at once from one address (a trusted proxy is
    /// held to `max_connections` only).
    pub max_connections_per_client: usize,
    /// The same from this host, where every local agent connects from.
    pub max_connections_per_local_client: usize,
    /// Serve HTTPS with this certificate and key (needed to listen on an
    /// address other machines reach).
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            public_url: None,
            data_dir: None,
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            unauthenticated_rate: 2.0,
            unauthenticated_burst: 20,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(180),
            body_read_timeout: Duration::from_secs(120),
            max_connections: 8192,
            max_connections_per_client: 256,
            max_connections_per_local_client: 4096,
            tls: None,
        }
    }
}

/// The certificate the broker serves HTTPS with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1); readable by the
    /// broker's user only.
    pub key: PathBuf,
}

impl ServerConfig {
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if self.tls.is_some() => format!("https://{}", self.listen),
            None => format!("http://{}", self.listen),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH`; defaults to `valetkey.db` in the data dir.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// File holding the base64 master key; defaults to `master.key` in the
    /// data dir. `VALETKEY_MASTER_KEY` takes precedence.
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Longest wait for a connection to an upstream.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest a whole exchange with an upstream may take, response body
    /// included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest request body the broker reads to classify it (GraphQL
    /// requests). Bodies it need not read stream through unbounded.
    pub max_inspected_body_bytes: usize,
    /// Largest git push (`git-receive-pack`) the broker reads to classify
    /// it: the ref updates and the pack, whose commits say whether a push
    /// only moves branches forward and what it changes. A larger push is
    /// refused, naming this setting.
    pub max_inspected_push_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(120),
            max_inspected_body_bytes: 1024 * 1024,
            max_inspected_push_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often the broker signs a checkpoint of the chain's head (when it
    /// moved). Events after the newest checkpoint can be cut off unseen.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// A file the broker appends every event to, one JSON object a line,
    /// for SIEMs to ship (mode 0600). It follows the store, so events that
    /// CLI commands write reach it too, in chain order.
    pub jsonl_file: Option<PathBuf>,
    /// Permission audits written by `serve` on a schedule.
    pub schedule: Option<ReportSchedule>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(60),
            jsonl_file: None,
            schedule: None,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSchedule {
    /// How often a report is written (the first one after one interval).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Where the reports go: `valetkey-audit-TIME.{html,json,md}`.
    pub directory: PathBuf,
    /// The window each report covers. Default "30d".
    #[serde(default = "thirty_days", with = "humantime_serde")]
    pub window: Duration,
    /// Where a one-line summary is posted (JSON with `text`) after each report.
    #[serde(default)]
    pub webhook: Option<String>,
}

fn thirty_days() -> Duration {
    Duration::from_secs(30 * 24 * 60 * 60)
}

/// The webhook URL often carries a secret: never printed.
impl std::fmt::Debug for ReportSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSchedule")
            .field("interval", &self.interval)
            .field("directory", &self.directory)
            .field("window", &self.window)
            .field("webhook", &self.webhook.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// What `valetkey run` lets the agent reach, beyond its defaults (the
/// working directory, the system read-only, the broker's port). The broker
/// hands it to `run` with each credential; `~/` is the launcher's home.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// More paths hidden from the agent (credential stores of other tools).
    pub hide: Vec<PathBuf>,
    /// More paths the agent may read and execute (toolchains).
    pub read: Vec<PathBuf>,
    /// More paths the agent may write (caches shared between runs).
    pub write: Vec<PathBuf>,
    /// More TCP ports the agent may connect to, on any address.
    pub allow_connect: Vec<u16>,
    /// The broker's own files (configuration, data dir, keys, token
    /// files), absolute; filled in when the broker starts, never read.
    #[serde(skip)]
    pub broker_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntrospectionConfig {
    /// Ask each provider what each real token reaches, at start and then
    /// every `interval`.
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alerts are posted as JSON with a `text` field (chat webhooks
    /// take it as is). Without one, alerts are log lines only.
    pub webhook: Option<String>,
    /// Identical alerts within this window are one alert.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Alerts waiting for delivery; past this, new ones are logged only.
    pub queue_capacity: usize,
    /// Delivery attempts per alert, with doubling waits from `backoff`.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook: None,
            dedupe_window: Duration::from_secs(10 * 60),
            queue_capacity: 1000,
            max_attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// The webhook URL often carries a secret (chat webhooks do): never printed.
impl std::fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("webhook", &self.webhook.as_ref().map(|_| "(set)"))
            .field("dedupe_window", &self.dedupe_window)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// The longest a session `valetkey run` keeps alive may last.
    #[serde(with = "humantime_serde")]
    pub max_session: Duration,
    /// How often `valetkey run` tells the broker its session is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long after its last heartbeat a session's credential stops
    /// working: the bound on a stolen credential once its `run` is gone.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    pub issuer: String,
    pub audience: String,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        let limits = policy::CredentialLimits::default();
        Self {
            default_ttl: limits.default_ttl,
            max_ttl: limits.max_ttl,
            max_session: limits.max_session,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            issuer: "valetkey".into(),
            audience: "valetkey".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Agents never hold credentials for a protected environment unless a
    /// grant names it explicitly (`"*"` does not reach it).
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URL of the upstream API; defaults per kind.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    /// The host names the forward proxy serves for this provider (its
    /// requests are inspected, with the broker's CA); default: the kind's
    /// public hosts (`api.github.com` and `github.com`; Railway's
    /// `backboard.railway.com` and `.app`), or an `http` provider's
    /// upstream host.
    #[serde(default)]
    pub hosts: Option<Vec<Spanned<String>>>,
    /// Base URL of the git host, for git's smart HTTP traffic (clone,
    /// fetch, push); defaults per kind (github: `https://github.com`).
    #[serde(default)]
    pub git_upstream: Option<Spanned<String>>,
    /// Branches a push to which needs `branch:protected` at least
    /// (github): names, `*` matching any run of characters, `/` included,
    /// letters in any case.
    #[serde(default)]
    pub protected_branches: Vec<Spanned<String>>,
    /// How the real token is sent upstream.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Environment variables an agent gets for this provider. Values may use
    /// `{credential}`, `{proxy_url}`, `{broker_url}`, `{env}` and `{provider}`.
    #[serde(default)]
    pub agent_env: BTreeMap<Spanned<String>, Spanned<String>>,
    /// The real token for each environment.
    #[serde(default)]
    pub tokens: BTreeMap<Spanned<String>, Spanned<TokenSource>>,
    /// Scopes beyond the kind's rule pack, or built-in scopes raised to a
    /// stricter tier.
    #[serde(default)]
    pub scopes: BTreeMap<Spanned<String>, Spanned<Tier>>,
    /// Operations beyond the kind's rule pack (see `config/providers/`).
    #[serde(default)]
    pub operations: Vec<Spanned<OperationRule>>,
    /// What to do with ids that are not in the resource map.
    #[serde(default)]
    pub unknown_resources: UnknownResources,
    /// Limits on GraphQL requests (GraphQL kinds only).
    #[serde(default)]
    pub graphql: GraphqlLimits,
    /// What agents' roles reach in each environment (postgres only); an
    /// environment with a token and no entry gets the defaults.
    #[serde(default)]
    pub databases: BTreeMap<Spanned<String>, Spanned<DatabaseConfig>>,
}

/// Where a postgres provider's roles live in one environment. The admin
/// connection is the provider's token for it: a `postgres://` URL whose
/// role may create roles and grant on the schemas below.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The database the roles reach; default: the admin URL's.
    pub database: Option<String>,
    /// The schemas whose tables (now and future) the roles' scopes cover.
    pub schemas: Vec<String>,
    /// The role that creates the application's tables, so tables it makes
    /// later are covered too; default: the admin URL's role.
    pub table_owner: Option<String>,
    /// Most connections one role may hold at once.
    pub connection_limit: u32,
    /// The host and port agents connect to, when not the admin URL's.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// PBKDF2 rounds of the roles' SCRAM verifiers. The passwords are 256
    /// random bits, so fewer rounds weaken nothing; they make each mint
    /// faster (the server hashes at `CREATE ROLE`), for client libraries
    /// that accept fewer than 4096 (libpq accepts any count from 1).
    pub scram_iterations: u32,
    /// Longest statement of an agent's session.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Longest wait for a lock.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// Longest an agent's session may sit idle inside a transaction
    /// (holding its locks).
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: Duration,
    /// Longest an agent's session may sit idle.
    #[serde(with = "humantime_serde")]
    pub idle_session_timeout: Duration,
    /// Offer the `update:guarded` scope: UPDATE, at most this many rows per
    /// statement, held by a trigger inside PostgreSQL. Default: not offered.
    pub max_update_rows: Option<u32>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            database: None,
            schemas: vec!["public".into()],
            table_owner: None,
            connection_limit: 5,
            host: None,
            port: None,
            scram_iterations: crate::providers::postgres::SCRAM_ITERATIONS,
            statement_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(60),
            idle_session_timeout: Duration::from_secs(600),
            max_update_rows: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownResources {
    /// Refuse every operation on an id the resource map does not name.
    #[default]
    Deny,
    /// Allow reads of unknown ids; refuse everything else on them.
    AllowReads,
}

impl ProviderConfig {
    pub fn upstream(&self) -> Option<&str> {
        match &self.upstream {
            Some(u) => Some(u.get_ref().as_str()),
            None => self.kind.default_upstream(),
        }
    }

    /// The host names the forward proxy serves for this provider, in lower
    /// case: ops' `hosts`, else the kind's, else the upstream's host.
    pub fn forward_hosts(&self) -> Vec<String> {
        if let Some(hosts) = &self.hosts {
            return hosts.iter().map(|h| h.get_ref().to_ascii_lowercase()).collect();
        }
        let defaults = self.kind.default_hosts();
        if !defaults.is_empty() || self.kind == ProviderKind::Postgres {
            return defaults.iter().map(|h| (*h).to_owned()).collect();
        }
        self.upstream()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase()))
            .into_iter()
            .collect()
    }

    /// Where git's smart HTTP traffic goes.
    pub fn git_upstream(&self) -> Option<&str> {
        match &self.git_upstream {
            Some(u) => Some(u.get_ref().as_str()),
            None => self.kind.default_git_upstream(),
        }
    }

    pub fn token(&self, env: &str) -> Option<&TokenSource> {
        self.tokens.get(env).map(Spanned::get_ref)
    }

    /// What ops leave out and the kind implies: a postgres provider whose
    /// `agent_env` is empty gives `DATABASE_URL`.
    pub(crate) fn fill_defaults(&mut self, span: Span) {
        if self.kind == ProviderKind::Postgres && self.agent_env.is_empty() {
            self.agent_env.insert(
                Spanned::new(span.clone(), "DATABASE_URL".to_owned()),
                Spanned::new(span, "{database_url}".to_owned()),
            );
        }
    }

    /// Where the roles of `env` live (postgres providers).
    pub fn database(&self, env: &str) -> DatabaseConfig {
        self.databases.get(env).map(|d| d.get_ref().clone()).unwrap_or_default()
    }

    /// Scope → tier: the kind's pack, with ops' additions applied. A scope ops
    /// try to lower keeps the pack's tier (and `config check` reports it).
    pub fn scope_tiers(&self) -> BTreeMap<String, Tier> {
        let mut tiers: BTreeMap<String, Tier> = self
            .kind
            .pack()
            .scopes
            .iter()
            .map(|(name, rule)| (name.clone(), rule.tier))
            .collect();
        for (name, tier) in &self.scopes {
            let tier = *tier.get_ref();
            tiers
                .entry(name.get_ref().clone())
                .and_modify(|t| *t = (*t).max(tier))
                .or_insert(tier);
        }
        tiers
    }

    /// The provider's classifier: the kind's pack plus ops' operations.
    pub fn classifier(&self) -> Result<Classifier, Vec<RuleError>> {
        let extra: Vec<OperationRule> = self.operations.iter().map(|o| o.get_ref().clone()).collect();
        let mut classifier = Classifier::new(self.kind, &extra, &self.scope_tiers(), self.graphql)?;
        let protected: Vec<String> = self.protected_branches.iter().map(|p| p.get_ref().clone()).collect();
        classifier.protect_branches(&protected);
        Ok(classifier)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Header that carries the real token upstream.
    pub header: String,
    /// Text placed before the token in that header.
    pub prefix: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            header: "Authorization".into(),
            prefix: "Bearer ".into(),
        }
    }
}

/// Where a real token comes from. The value is read when the broker starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum TokenSource {
    /// An environment variable of the broker's process.
    Env(String),
    /// A file holding only the token.
    File(PathBuf),
    /// A secret stored encrypted with `valetkey secret set NAME`.
    Stored(String),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Env(v) => write!(f, "environment variable {v}"),
            TokenSource::File(p) => write!(f, "file {}", p.display()),
            TokenSource::Stored(n) => write!(f, "stored secret `{n}`"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub provider: Spanned<String>,
    /// What the provider calls it: `volume`, `service`, `repository`, …
    pub kind: String,
    pub id: Spanned<String>,
    /// The environments that own it. More than one makes it shared.
    pub environments: Vec<Spanned<String>>,
    /// The provider's GraphQL node ids that stand for it (a GitHub
    /// repository's `R_kgDO…`), which bind as it does.
    #[serde(default)]
    pub node_ids: Vec<Spanned<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// The clocks of a held request (`[approvals]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long approvers have to decide on a held request.
    #[serde(with = "humantime_serde")]
    pub decide_within: Duration,
    /// How long the agent then has to send it again.
    #[serde(with = "humantime_serde")]
    pub execute_within: Duration,
    /// The longest an agent's `GET /v1/approvals/{id}?wait=` waits.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Wrong codes in a row after which an approver's code factor is
    /// locked, and for how long.
    pub lock_after_failures: u32,
    #[serde(with = "humantime_serde")]
    pub lock_for: Duration,
    /// How long an enrollment code an admin issues may be redeemed.
    #[serde(with = "humantime_serde")]
    pub enrollment_ttl: Duration,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            decide_within: Duration::from_secs(30 * 60),
            execute_within: Duration::from_secs(10 * 60),
            max_wait: Duration::from_secs(60),
            lock_after_failures: 5,
            lock_for: Duration::from_secs(15 * 60),
            enrollment_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The web console (`[console]`), where approvers sign in with a passkey.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Off unless enabled.
    pub enabled: bool,
    /// The origin browsers reach the console at (`https://valetkey.internal:8700`):
    /// passkeys are bound to its host, which must be a name, never an IP
    /// address. Default for a broker listening on loopback:
    /// `http://localhost:PORT` (`https://` with `[server] tls`).
    pub origin: Option<String>,
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            origin: None,
            session_ttl: Duration::from_secs(8 * 60 * 60),
        }
    }
}

/// The forward proxy (`[forward_proxy]`): the broker as `HTTPS_PROXY`, so
/// tools that cannot be pointed at `/p/{provider}` reach providers through
/// it all the same.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardProxyConfig {
    /// On unless turned off: `run` points every tool at it.
    pub enabled: bool,
    /// Hosts (`registry.npmjs.org`, `*.pypi.org`, `host:port`) whose
    /// CONNECTs are tunnelled uninspected, never carrying a credential.
    /// Port 443 unless one is named. A provider's host is never one.
    pub passthrough: Vec<String>,
    /// How long a leaf certificate the broker's CA issues for a provider's
    /// host is valid.
    #[serde(with = "humantime_serde")]
    pub leaf_ttl: Duration,
}

impl Default for ForwardProxyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            passthrough: Vec::new(),
            leaf_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl Config {
    /// The console's origin: as configured, or `localhost` on the listening
    /// port for a loopback listener. `None` when neither applies.
    pub fn console_origin(&self) -> Option<url::Url> {
        match &self.console.origin {
            Some(origin) => url::Url::parse(origin).ok(),
            None if self.server.listen.ip().is_loopback() => {
                let scheme = if self.server.tls.is_some() { "https" } else { "http" };
                url::Url::parse(&format!("{scheme}://localhost:{}", self.server.listen.port())).ok()
            }
            None => None,
        }
    }
}

/// A human who may approve held requests (`[approvers.NAME]`), and which.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverConfig {
    #[serde(default)]
    pub description: Option<String>,
    /// Providers, or `"*"` for all.
    pub providers: Vec<String>,
    /// Environments, or `"*"` for all: an approver approves a request only
    /// when every environment it reaches is one of these.
    pub environments: Vec<String>,
    /// The tiers, or every tier when left out.
    #[serde(default = "every_tier")]
    pub tiers: Vec<policy::Tier>,
}

fn every_tier() -> Vec<policy::Tier> {
    policy::Tier::ALL.to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub grants: Vec<Spanned<GrantConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub provider: Spanned<String>,
    /// Environment names, or `"*"` for every environment that is not protected.
    pub environments: Vec<Spanned<String>>,
    pub scopes: Vec<Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    pub max_ttl: Option<Duration>,
}

impl Config {
    /// The facts mint decisions need, as plain data.
    pub fn rules(&self) -> policy::Rules {
        policy::Rules {
            environments: self
                .environments
                .iter()
                .map(|(name, env)| (name.clone(), env.get_ref().protected))
                .collect(),
            scopes: self
                .providers
                .iter()
                .map(|(name, p)| (name.clone(), p.get_ref().scope_tiers()))
                .collect(),
            agents: self
                .agents
                .iter()
                .map(|(name, agent)| {
                    let grants = agent
                        .get_ref()
                        .grants
                        .iter()
                        .map(|g| {
                            let g = g.get_ref();
                            policy::Grant {
                                provider: g.provider.get_ref().clone(),
                                environments: strings(&g.environments),
                                scopes: strings(&g.scopes),
                                max_ttl: g.max_ttl,
                            }
                        })
                        .collect();
                    (name.clone(), grants)
                })
                .collect(),
            limits: policy::CredentialLimits {
                default_ttl: self.credentials.get_ref().default_ttl,
                max_ttl: self.credentials.get_ref().max_ttl,
                max_session: self.credentials.get_ref().max_session,
            },
            resources: self.resource_map(),
        }
    }

    fn resource_map(&self) -> BTreeMap<String, policy::ProviderResources> {
        let mut map: BTreeMap<String, policy::ProviderResources> = self
            .providers
            .iter()
            .map(|(name, p)| {
                let p = p.get_ref();
                let resources = policy::ProviderResources {
                    owners: BTreeMap::new(),
                    unknown_reads: p.unknown_resources == UnknownResources::AllowReads,
                    case_insensitive: p.kind.case_insensitive_kinds(),
                };
                (name.clone(), resources)
            })
            .collect();
        for r in &self.resources {
            let r = r.get_ref();
            let Some(provider) = map.get_mut(r.provider.get_ref()) else {
                continue;
            };
            let ids = std::iter::once((r.kind.as_str(), r.id.get_ref()))
                .chain(r.node_ids.iter().map(|n| (NODE_KIND, n.get_ref())));
            for (kind, id) in ids {
                let id = provider.key(kind, id);
                provider
                    .owners
                    .entry((kind.to_owned(), id))
                    .or_default()
                    .extend(strings(&r.environments));
            }
        }
        map
    }
}

fn strings(values: &[Spanned<String>]) -> Vec<String> {
    values.iter().map(|v| v.get_ref().clone()).collect()
}
