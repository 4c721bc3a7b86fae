//! Commands that run on the broker's host: `serve`, and the admin commands
//! that open the store directly.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use super::{CliError, Local};
use crate::admin::{self, Actor};
use crate::audit;
use crate::config::{self, Severity};
use crate::secrets::{ExposeSecret, MasterKeyOrigin, SecretString, Zeroizing};
use crate::server::{self, FirstAdminKey, Paths, ServeOptions};
use crate::store::{RevokeTarget, Store};
use crate::time::rfc3339;

fn master_key_env() -> Option<Zeroizing<String>> {
    std::env::var("VALETKEY_MASTER_KEY").ok().map(Zeroizing::new)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn serve(local: Local, listen: Option<SocketAddr>, dev: bool) -> Result<ExitCode, CliError> {
    init_logging();
    // Listen for SIGTERM before the port opens: a stop that arrives while the
    // broker starts is then a graceful stop, not the default kill.
    let shutdown = server::shutdown_signal();
    let server = server::prepare(ServeOptions {
        config: local.config.clone(),
        listen,
        data_dir: local.data_dir,
        dev,
        master_key: master_key_env(),
        env: Box::new(|var| std::env::var(var).ok()),
    })
    .await?;
    for warning in &server.warnings {
        tracing::warn!("{warning}");
    }
    if let MasterKeyOrigin::Created(path) = &server.master_key_origin {
        tracing::warn!(
            "DEV MODE: created a new master key at {}. Everything in the store is encrypted under it: \
             back it up, and never use --dev in production",
            path.display()
        );
    }
    match &server.first_admin_key {
        Some(FirstAdminKey::Show(key)) => eprintln!(
            "\n  The admin key (shown once, stored only as a hash):\n\n    {}\n\n  \
             Keep it in a password manager: the admin API needs it.\n",
            key.expose_secret()
        ),
        Some(FirstAdminKey::Written(path)) => {
            tracing::warn!("DEV MODE: wrote the first admin key to {} (mode 0600)", path.display())
        }
        None => {}
    }
    let broker = server.broker();
    for t in broker.token_status() {
        match &t.problem {
            None => tracing::info!(provider = %t.provider, env = %t.env, "real token loaded from {}", t.source),
            Some(why) => tracing::warn!(
                provider = %t.provider, env = %t.env,
                "no real token from {}: {why}; requests for this provider and environment will be refused",
                t.source
            ),
        }
    }
    tracing::info!(
        addr = %server.local_addr(),
        data_dir = %server.paths.data_dir.display(),
        config = %local.config.display(),
        "valetkey is serving"
    );
    server.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

pub fn config_check(path: &Path) -> Result<ExitCode, CliError> {
    let diagnostics = config::check_file(path)?;
    for d in &diagnostics {
        println!("{d}");
    }
    let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = diagnostics.len() - errors;
    println!("{}: {errors} error(s), {warnings} warning(s)", path.display());
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct Opened {
    config: config::Config,
    paths: Paths,
    store: Arc<dyn Store>,
}

async fn open(local: &Local) -> Result<Opened, CliError> {
    let loaded = config::load(&local.config)?;
    let paths = Paths::resolve(&loaded.config, local.data_dir.as_deref());
    let store = paths.open_store().await?;
    Ok(Opened {
        config: loaded.config,
        paths,
        store,
    })
}

pub async fn secret_set(local: Local, name: &str) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let (master, _) = opened.paths.master_key(master_key_env(), false)?;
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|source| CliError::Io {
            action: "read the secret from standard input".into(),
            source,
        })?;
    let value = SecretString::from(text.trim_end_matches(['\r', '\n']));
    admin::set_secret(
        opened.store.as_ref(),
        &master,
        name,
        &value,
        &Actor::cli(),
        SystemTime::now(),
    )
    .await?;
    eprintln!("stored secret `{name}`; restart the broker to use a changed token");
    Ok(ExitCode::SUCCESS)
}

pub async fn keys_rotate(local: Local) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let (master, _) = opened.paths.master_key(master_key_env(), false)?;
    let kid = admin::rotate_signing_key(opened.store.as_ref(), &master, &Actor::cli(), SystemTime::now()).await?;
    println!("{kid}");
    eprintln!("new signing key {kid} is active; the previous key verifies until what it signed expires");
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_verify(local: Local, json: bool) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let (master, _) = opened.paths.master_key(master_key_env(), false)?;
    let v = admin::verify_audit(opened.store.as_ref(), &master).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        match &v.broken {
            None => println!(
                "intact: {} events, {} checkpoints{}",
                v.events,
                v.checkpoints,
                v.last_checkpoint
                    .map(|s| format!("; the newest verified checkpoint signs event {s}"))
                    .unwrap_or_else(|| "; no checkpoint yet, so a cut-off tail would not show".into())
            ),
            Some(broken) => println!("BROKEN at event {}: {broken}", broken.seq()),
        }
    }
    Ok(if v.broken.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn audit_report(
    local: Local,
    since: &str,
    format: super::ReportFormat,
    out: Option<std::path::PathBuf>,
) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let (master, _) = opened.paths.master_key(master_key_env(), false)?;
    let store = opened.store.as_ref();
    let now_ms = crate::time::unix_ms(SystemTime::now());
    let since_ms = audit::parse_since(since, now_ms).map_err(CliError::Usage)?;
    let report = admin::audit_report(store, &master, &opened.config.rules(), since_ms, now_ms).await?;
    let text = match format {
        super::ReportFormat::Md => audit::report::markdown(&report),
        super::ReportFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        super::ReportFormat::Html => audit::report::html(&report),
    };
    match out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|source| CliError::Io {
                action: format!("write the report to {}", path.display()),
                source,
            })?;
            eprintln!("wrote {} ({} findings)", path.display(), report.findings.len());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `audit tail --follow` looks for new events.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub async fn audit_tail(local: Local, lines: i64, follow: bool, json: bool) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let store = opened.store.as_ref();
    let mut filter = audit::Filter {
        limit: lines.max(0),
        newest: true,
        ..audit::Filter::default()
    };
    let mut last = None;
    loop {
        let records = store.search_audit(&filter).await.map_err(admin::AdminError::from)?;
        for r in &records {
            print_event(r, json);
        }
        last = records.last().map(|r| r.seq).or(last).or(Some(0));
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::io::stdout().flush().ok();
        tokio::time::sleep(FOLLOW_EVERY).await;
        filter = audit::Filter {
            after_seq: last,
            limit: 1000,
            ..audit::Filter::default()
        };
    }
}

pub struct SearchArgs {
    pub agent: Option<String>,
    pub env: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub limit: i64,
}

pub async fn audit_search(local: Local, args: SearchArgs, json: bool) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let now_ms = crate::time::unix_ms(SystemTime::now());
    let since_ms = args
        .since
        .map(|s| audit::parse_since(&s, now_ms))
        .transpose()
        .map_err(CliError::Usage)?;
    let filter = audit::Filter {
        agent: args.agent,
        env: args.env,
        kind: args.kind,
        since_ms,
        after_seq: None,
        limit: args.limit,
        newest: false,
    };
    let records = opened
        .store
        .search_audit(&filter)
        .await
        .map_err(admin::AdminError::from)?;
    for r in &records {
        print_event(r, json);
    }
    if !json {
        eprintln!("{} event(s)", records.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// One event on one line: time, position, kind, who, where, and its detail.
fn print_event(r: &audit::Record, json: bool) {
    if json {
        println!("{}", r.to_json());
        return;
    }
    let whom = match (&r.agent, &r.env) {
        (Some(a), Some(e)) => format!("{a}@{e}"),
        (Some(a), None) => a.clone(),
        (None, Some(e)) => format!("@{e}"),
        (None, None) => "-".into(),
    };
    println!(
        "{} #{:<6} {:<28} {:<20} {:<24} {}",
        crate::time::rfc3339_ms(r.at_ms),
        r.seq,
        r.kind,
        r.actor,
        whom,
        r.detail
    );
}

pub async fn agent_add(local: Local, name: &str) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let key = admin::add_agent(
        opened.store.as_ref(),
        &opened.config,
        name,
        &Actor::cli(),
        SystemTime::now(),
    )
    .await?;
    println!("{}", key.expose_secret());
    eprintln!(
        "launcher key for agent `{name}` (shown once, stored only as a hash).\n\
         Give it to whoever launches the agent, not to the agent: \
         VALETKEY_AGENT_KEY=… valetkey run --agent {name} --env ENV -- CMD"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn agent_list(local: Local) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let agents = opened.store.list_agents().await.map_err(admin::AdminError::from)?;
    if agents.is_empty() {
        eprintln!("no agent is registered; `valetkey agent add NAME` registers one");
    }
    for a in agents {
        let note = if opened.config.agents.contains_key(&a.name) {
            ""
        } else {
            "  (not in the configuration: it can mint nothing)"
        };
        println!("{}\tkey {}\tadded {}{note}", a.name, a.key_id, rfc3339(a.created_at));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn agent_remove(local: Local, name: &str) -> Result<ExitCode, CliError> {
    let opened = open(&local).await?;
    let revoked = admin::remove_agent(opened.store.as_ref(), name, &Actor::cli(), SystemTime::now()).await?;
    eprintln!("removed agent `{name}`; revoked {} live credential(s)", revoked.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(
    local: Local,
    lease: Option<String>,
    session: Option<String>,
    agent: Option<String>,
) -> Result<ExitCode, CliError> {
    let target = match (lease, session, agent) {
        (Some(id), None, None) => RevokeTarget::Lease(id),
        (None, Some(sid), None) => RevokeTarget::Session(sid),
        (None, None, Some(name)) => RevokeTarget::Agent(name),
        _ => {
            return Err(CliError::Usage(
                "name one thing to revoke: LEASE, --session SID or --agent NAME".into(),
            ));
        }
    };
    let opened = open(&local).await?;
    let revoked = admin::revoke(opened.store.as_ref(), &target, &Actor::cli(), SystemTime::now()).await?;
    for r in &revoked {
        println!("{}", r.lease_id);
    }
    eprintln!(
        "revoked {} live credential(s); every broker refuses them within a second; a running broker also ends any database roles they had",
        revoked.len()
    );
    Ok(ExitCode::SUCCESS)
}
