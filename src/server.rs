//! Starting the broker: configuration, data dir, master key, store, keys and
//! listener, in that order, each failure named; then serving until told to
//! stop, finishing the requests in flight.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;

use crate::admin::{self, AdminError};
use crate::broker::{Broker, StartError};
use crate::config::{self, Config, ConfigError, Diagnostic};
use crate::secrets::{EnvLookup, MasterKey, MasterKeyOrigin, MasterKeySettings, SecretsError, Zeroizing};
use crate::store::{SqliteStore, Store, StoreError};

/// How often a broker follows the store for changes made elsewhere.
const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// How often database roles of ended leases are looked for: revocations by
/// another broker on the same store and expiries end their roles within
/// this. Revocations through this broker end them at once.
const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// How often the PostgreSQL servers are asked what PUBLIC and pg_hba.conf
/// let agents' roles do (and once at start).
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create the data dir {}: {source}", path.display())]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(
        "refusing to start: other users could change what the broker trusts or read its secrets:\n{}",
        .0.iter().map(|u| format!("  - {u}")).collect::<Vec<_>>().join("\n")
    )]
    Untrusted(Vec<crate::trust::Untrusted>),
    #[error(
        "the master key from {origin} is not the one the store is sealed under: it was rotated \
         (`valetkey keys rotate-master`) or belongs to another data dir; start with the current key"
    )]
    MasterKeyMismatch { origin: MasterKeyOrigin },
    #[error("cannot inspect {}: {source}", path.display())]
    Inspect { path: PathBuf, source: std::io::Error },
    #[error(
        "refusing to listen on {addr} in clear: credentials, launcher and admin keys would cross the network \
         readable by anyone on the path. Serve HTTPS (`[server] tls = {{ cert = \"…\", key = \"…\" }}`), or \
         listen on a loopback address (127.0.0.1:8700) behind a proxy that terminates TLS (list it in [server] \
         trusted_proxies), or pass --insecure-listen to accept that"
    )]
    InsecureListen { addr: SocketAddr },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Where the broker keeps its state, from flags, the environment and config.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub store_url: String,
    pub master_key_file: PathBuf,
}

impl Paths {
    /// `data_dir` is `--data-dir` / `VALETKEY_DATA_DIR` when given.
    pub fn resolve(config: &Config, data_dir: Option<&Path>) -> Paths {
        let data_dir = data_dir
            .map(Path::to_owned)
            .or_else(|| config.server.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("valetkey-data"));
        let store_url = config
            .storage
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("valetkey.db").display()));
        let master_key_file = config
            .keys
            .master_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("master.key"));
        Paths {
            data_dir,
            store_url,
            master_key_file,
        }
    }

    /// Creates the data dir (mode 0700) if it is missing.
    pub fn create_data_dir(&self) -> Result<(), ServeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.data_dir)
            .map_err(|source| ServeError::DataDir {
                path: self.data_dir.clone(),
                source,
            })
    }

    pub async fn open_store(&self) -> Result<Arc<dyn Store>, ServeError> {
        self.create_data_dir()?;
        Ok(Arc::new(SqliteStore::open(&self.store_url).await?))
    }

    /// Every file the broker trusts, with what it is to it.
    fn trusted(&self, config_file: &Path, config: &Config) -> Vec<(PathBuf, crate::trust::Kind)> {
        use crate::trust::Kind;
        let mut files = vec![
            (config_file.to_owned(), Kind::Config),
            (self.data_dir.clone(), Kind::SecretDir),
            (self.master_key_file.clone(), Kind::SecretFile),
            (self.data_dir.join(BOOTSTRAP_KEY_FILE), Kind::SecretFile),
        ];
        if let Ok(options) = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&self.store_url) {
            files.push((options.get_filename().to_owned(), Kind::SecretFile));
        }
        if let Some(tls) = &config.server.tls {
            files.push((tls.cert.clone(), Kind::Config));
            files.push((tls.key.clone(), Kind::SecretFile));
        }
        for provider in config.providers.values() {
            for source in provider.get_ref().tokens.values() {
                if let crate::config::TokenSource::File(path) = source.get_ref() {
                    files.push((path.clone(), Kind::SecretFile));
                }
            }
        }
        files
    }

    /// Refuses files other users could change, or read when they hold
    /// secrets, of those [`Self::trusted`] names.
    fn check_trust(trusted: &[(PathBuf, crate::trust::Kind)]) -> Result<(), ServeError> {
        let me = nix::unistd::geteuid();
        let me_name = nix::unistd::User::from_uid(me)
            .ok()
            .flatten()
            .map_or_else(|| me.to_string(), |u| u.name);
        let mut untrusted = Vec::new();
        for (path, kind) in trusted {
            let facts = crate::trust::inspect(path, *kind).map_err(|source| ServeError::Inspect {
                path: path.clone(),
                source,
            })?;
            untrusted.extend(facts.iter().flat_map(|f| crate::trust::judge(f, me.as_raw(), &me_name)));
        }
        if untrusted.is_empty() {
            Ok(())
        } else {
            Err(ServeError::Untrusted(untrusted))
        }
    }

    pub fn master_key(
        &self,
        env: Option<Zeroizing<String>>,
        create: bool,
    ) -> Result<(MasterKey, MasterKeyOrigin), ServeError> {
        if create {
            self.create_data_dir()?;
        }
        Ok(MasterKey::load(MasterKeySettings {
            env,
            file: &self.master_key_file,
            create,
        })?)
    }
}

/// How to start a broker. Everything from the process environment is passed
/// in here, so tests never change their own environment.
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// Create a missing master key.
    pub dev: bool,
    /// Listen on an address other machines reach, in clear.
    pub insecure_listen: bool,
    /// The value of VALETKEY_MASTER_KEY.
    pub master_key: Option<Zeroizing<String>>,
    /// Looks up environment variables for `{ env = "VAR" }` token sources.
    pub env: Box<EnvLookup>,
}

/// The name of the bootstrap admin key's file in the data dir.
pub const BOOTSTRAP_KEY_FILE: &str = "admin.key";

pub struct Server {
    broker: Arc<Broker>,
    listener: TcpListener,
    /// HTTPS, when `[server] tls` names a certificate.
    tls: Option<Arc<rustls::ServerConfig>>,
    pub paths: Paths,
    pub master_key_origin: MasterKeyOrigin,
    /// Where a new bootstrap admin key was written (mode 0600), when no
    /// admin key was alive at start. It is never printed.
    pub bootstrap_admin_key: Option<PathBuf>,
    pub warnings: Vec<Diagnostic>,
}

pub async fn prepare(opts: ServeOptions) -> Result<Server, ServeError> {
    let loaded = config::load(&opts.config)?;
    let mut config = loaded.config;
    let addr = opts.listen.unwrap_or(config.server.listen);
    if !addr.ip().is_loopback() && config.server.tls.is_none() && !opts.insecure_listen {
        return Err(ServeError::InsecureListen { addr });
    }
    let paths = Paths::resolve(&config, opts.data_dir.as_deref());
    paths.create_data_dir()?;
    let trusted = paths.trusted(&opts.config, &config);
    Paths::check_trust(&trusted)?;
    let tls = config.server.tls.as_ref().map(crate::tls::server_config).transpose()?;
    // `run` hides these from the agents it launches.
    config.run.broker_files = trusted
        .into_iter()
        .map(|(path, _)| std::path::absolute(&path).unwrap_or(path))
        .collect();
    let (master, master_key_origin) = paths.master_key(opts.master_key, opts.dev)?;

    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    config.server.listen = bound;

    let store = paths.open_store().await?;
    let now = SystemTime::now();
    let master = sealed_under(store.as_ref(), master, &master_key_origin, now).await?;
    let bootstrap = paths.data_dir.join(BOOTSTRAP_KEY_FILE);
    let bootstrap_admin_key = admin::ensure_admin_key(store.as_ref(), &bootstrap, now)
        .await?
        .then_some(bootstrap);
    let broker = Broker::start(
        Arc::new(config),
        store,
        master,
        master_key_origin.clone(),
        opts.env.as_ref(),
        now,
    )
    .await?;
    Ok(Server {
        broker: Arc::new(broker),
        listener,
        tls,
        paths,
        master_key_origin,
        bootstrap_admin_key,
        warnings: loaded.warnings,
    })
}

/// The master key the store is sealed under: `master` when it is the one
/// the store records (or the store records none yet); the next key of a
/// rotation cut short between its commit and its rename, which is then
/// renamed into place; otherwise the start is refused.
async fn sealed_under(
    store: &dyn Store,
    master: MasterKey,
    origin: &MasterKeyOrigin,
    now: SystemTime,
) -> Result<MasterKey, ServeError> {
    let recorded = match store.master_key_id().await? {
        Some(recorded) => recorded,
        None => {
            // A store from before keys were recorded, or a new one: the key
            // must open what is sealed in it before it is recorded, or a
            // wrong key given once would lock the right one out.
            crate::credentials::KeyRing::open(&store.signing_keys().await?, &master)
                .map_err(|_| ServeError::MasterKeyMismatch { origin: origin.clone() })?;
            store
                .claim_master_key_id(&master.key_id(), crate::time::unix_secs(now))
                .await?
        }
    };
    if recorded == master.key_id() {
        return Ok(master);
    }
    if let MasterKeyOrigin::File(file) | MasterKeyOrigin::Created(file) = origin {
        let next = crate::secrets::next_key_file(file);
        if let Ok(text) = std::fs::read_to_string(&next).map(Zeroizing::new)
            && let Ok(key) = MasterKey::from_base64(&text, MasterKeyOrigin::File(next.clone()))
            && key.key_id() == recorded
        {
            std::fs::rename(&next, file).map_err(|source| SecretsError::Io {
                action: "rename into place",
                path: next.clone(),
                source,
            })?;
            tracing::warn!(
                "finished a master key rotation that was cut short: {} now holds the key the store is sealed under",
                file.display()
            );
            return Ok(key);
        }
    }
    Err(ServeError::MasterKeyMismatch { origin: origin.clone() })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.broker.config().server.listen
    }

    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let mut tasks = Vec::new();
        let broker = self.broker.clone();
        tasks.push(every(SYNC_INTERVAL, move || {
            let broker = broker.clone();
            async move {
                if let Err(e) = broker.sync(SystemTime::now()).await {
                    tracing::warn!(error = %e, "cannot follow the store for revocations and key changes");
                }
            }
        }));
        let broker = self.broker.clone();
        tasks.push(every(SYNC_INTERVAL, move || {
            let broker = broker.clone();
            async move {
                let now = SystemTime::now();
                if let Err(e) = broker.expire_approvals(now).await {
                    tracing::warn!(error = %e, "cannot record which approvals ran out of time");
                }
                if let Err(e) = broker.remind_approvers(now).await {
                    tracing::warn!(error = %e, "cannot read which approvals to remind approvers of");
                }
            }
        }));
        let broker = self.broker.clone();
        tasks.push(every(self.broker.config().audit.checkpoint_interval, move || {
            let broker = broker.clone();
            async move {
                if let Err(e) = broker.checkpoint(SystemTime::now()).await {
                    tracing::error!(error = %e, "cannot sign a checkpoint of the audit trail");
                }
            }
        }));
        if let Some(path) = self.broker.config().audit.jsonl_file.clone() {
            let broker = self.broker.clone();
            // A failing sink is logged and restarted; the trail in the store
            // is what requests depend on.
            tasks.push(every(SINK_RESTART, move || {
                let (broker, path) = (broker.clone(), path.clone());
                async move {
                    if let Err(e) = crate::audit::sink::follow(broker.store(), &path).await {
                        tracing::error!(error = %e, "the audit JSON-lines sink stopped; restarting it");
                    }
                }
            }));
        }
        if let Some(schedule) = self.broker.config().audit.schedule.clone() {
            let broker = self.broker.clone();
            tasks.push(tokio::spawn(async move {
                let first = tokio::time::Instant::now() + schedule.interval;
                let mut tick = tokio::time::interval_at(first, schedule.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = scheduled_report(&broker, &schedule).await {
                        tracing::error!(error = %e, "cannot write the scheduled permission audit");
                    }
                }
            }));
        }
        if self.broker.has_databases() {
            // The first run, at start, ends the roles of leases that ended
            // while the broker was down.
            let broker = self.broker.clone();
            tasks.push(every(REAP_INTERVAL, move || {
                let broker = broker.clone();
                async move {
                    if let Err(e) = broker.reap_roles(SystemTime::now()).await {
                        tracing::error!(error = %e, "cannot read which database roles are due to end");
                    }
                    crate::session_limits::end_overdue(broker.store(), broker.databases()).await;
                }
            }));
        }
        let broker = self.broker.clone();
        tasks.push(every(DATABASE_CHECK_INTERVAL, move || {
            let broker = broker.clone();
            async move {
                if let Err(e) = broker.check_databases(SystemTime::now()).await {
                    tracing::warn!(error = %e, "cannot record what the database servers let agents do");
                }
            }
        }));
        let introspection = &self.broker.config().introspection;
        if introspection.enabled {
            let broker = self.broker.clone();
            tasks.push(every(introspection.interval, move || {
                let broker = broker.clone();
                async move {
                    if let Err(e) = broker.introspect(SystemTime::now()).await {
                        tracing::error!(error = %e, "cannot record what the real tokens reach");
                    }
                }
            }));
        }
        let app = crate::api::router(self.broker.clone()).layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // The path only: a query string may carry what it should not,
                // and the path is scrubbed of what an agent put in it.
                let path = crate::audit::scrub::text(req.uri().path());
                tracing::info_span!("request", method = %req.method(), path = %path)
            }),
        );
        let app = crate::forward::wrap(app, self.broker.clone());
        let server = &self.broker.config().server;
        let caps = crate::listener::caps(server, crate::listener::raise_descriptor_limit());
        let served = crate::listener::serve(self.listener, self.tls, app, server, caps, shutdown)
            .await
            .map_err(ServeError::Serve);
        for task in tasks {
            task.abort();
        }
        // The last word: what was recorded up to the stop is signed.
        if let Err(e) = self.broker.checkpoint(SystemTime::now()).await {
            tracing::error!(error = %e, "cannot sign the final checkpoint of the audit trail");
        }
        served
    }
}

#[derive(Debug, thiserror::Error)]
enum ScheduleError {
    #[error(transparent)]
    Report(#[from] crate::admin::AdminError),
    #[error("cannot create {}: {source}", path.display())]
    Directory { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] SecretsError),
}

/// Writes one permission audit in every format and posts its summary.
async fn scheduled_report(broker: &Broker, schedule: &crate::config::ReportSchedule) -> Result<(), ScheduleError> {
    use crate::audit::report;
    let now = SystemTime::now();
    let since_ms = crate::time::unix_ms(now) - schedule.window.as_millis() as i64;
    let report = broker.audit_report(since_ms, now).await?;
    let stamp = crate::time::rfc3339(crate::time::unix_secs(now)).replace([':', '-'], "");
    let texts = [
        ("html", report::html(&report)),
        ("json", serde_json::to_string_pretty(&report).unwrap_or_default()),
        ("md", report::markdown(&report)),
    ];
    std::fs::create_dir_all(&schedule.directory).map_err(|source| ScheduleError::Directory {
        path: schedule.directory.clone(),
        source,
    })?;
    for (ext, text) in texts {
        let path = schedule.directory.join(format!("valetkey-audit-{stamp}.{ext}"));
        crate::secrets::write_private(&path, text.as_bytes())?;
    }
    let worst = report.findings.first().map(|f| f.severity.as_str()).unwrap_or("info");
    let summary = format!(
        "valetkey permission audit {} to {}: {} findings (most severe: {worst}); {} requests allowed, {} refused. Reports in {}.",
        report.since,
        report.until,
        report.findings.len(),
        report.allowed,
        report.refused,
        schedule.directory.display()
    );
    tracing::info!("{summary}");
    if let Some(url) = &schedule.webhook {
        let posted = broker
            .upstream_client()
            .post(url)
            .timeout(std::time::Duration::from_secs(10))
            .json(&serde_json::json!({ "text": summary, "kind": "audit_report", "findings": report.findings.len() }))
            .send()
            .await;
        if let Err(e) = posted {
            tracing::warn!(error = %crate::proxy::error_chain(e), "cannot post the audit summary");
        }
    }
    Ok(())
}

/// How long a stopped audit sink waits before it starts again.
const SINK_RESTART: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `work` now and then every `period` (never two at once), until the
/// task is aborted.
fn every<F, Fut>(period: std::time::Duration, mut work: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work().await;
        }
    })
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        let (Ok(mut int), Ok(mut term)) = streams else {
            tracing::error!("cannot listen for SIGINT/SIGTERM; stop the broker with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
    }
}
