//! Commands that read files rather than ask the broker: `serve`, `config
//! check`, the offline verification of a copy of the trail, and `scan`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use super::{CliError, Local};
use crate::admin;
use crate::config::{self, Severity};
use crate::secrets::{MasterKeyOrigin, Zeroizing};
use crate::server::{self, ServeOptions};

fn master_key_env() -> Option<Zeroizing<String>> {
    std::env::var("VALETKEY_MASTER_KEY").ok().map(Zeroizing::new)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only where a terminal reads them: a log file or journal
    // gets plain text.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Becomes `name` (started as root), or checks that we already are it.
/// Done before any file is read, so everything the broker creates is owned
/// by its own user, and nothing it does afterwards runs as root.
fn become_user(name: &str) -> Result<(), CliError> {
    use nix::unistd::{Uid, User, geteuid, setgid, setgroups, setuid};
    let fail = |what: &str, e: nix::Error| CliError::Usage(format!("cannot {what} for --user {name}: {e}"));
    let user = User::from_name(name)
        .map_err(|e| fail("look up the user", e))?
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--user {name}: there is no such user; create it with `useradd --system {name}`"
            ))
        })?;
    if geteuid() == user.uid {
        return Ok(());
    }
    if !geteuid().is_root() {
        return Err(CliError::Usage(format!(
            "--user {name} needs the broker to be started as root (it runs as uid {})",
            geteuid()
        )));
    }
    setgroups(&[user.gid]).map_err(|e| fail("drop supplementary groups", e))?;
    setgid(user.gid).map_err(|e| fail("change group", e))?;
    setuid(user.uid).map_err(|e| fail("change user", e))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(CliError::Usage(format!(
            "--user {name}: root could be regained after dropping to it"
        )));
    }
    Ok(())
}

pub async fn serve(
    local: Local,
    listen: Option<SocketAddr>,
    dev: bool,
    user: Option<String>,
    insecure_listen: bool,
) -> Result<ExitCode, CliError> {
    init_logging();
    if let Some(name) = &user {
        become_user(name)?;
    }
    // No core dump and no ptrace by other processes of the same user: the
    // broker's memory holds the master key and every real token.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("cannot make the broker non-dumpable: {e}");
    }
    if nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "the broker runs as root; anything else running as root here (an agent not under `valetkey run`, \
             too) can read its data dir and memory. Run it as its own user: `valetkey serve --user valetkey` started as root, or the systemd \
             unit in deploy/"
        );
    }
    // Listen for SIGTERM before the port opens: a stop that arrives while the
    // broker starts is then a graceful stop, not the default kill.
    let shutdown = server::shutdown_signal();
    let server = server::prepare(ServeOptions {
        config: local.config.clone(),
        listen,
        data_dir: local.data_dir,
        dev,
        insecure_listen,
        master_key: master_key_env(),
        env: Box::new(|var| std::env::var(var).ok()),
    })
    .await?;
    for warning in &server.warnings {
        tracing::warn!("{warning}");
    }
    if !server.local_addr().ip().is_loopback() {
        tracing::warn!(
            addr = %server.local_addr(),
            "--insecure-listen: serving in clear on an address other machines reach; credentials and keys cross the network readable"
        );
    }
    if let MasterKeyOrigin::Created(path) = &server.master_key_origin {
        tracing::warn!(
            "DEV MODE: created a new master key at {}. Everything in the store is encrypted under it: \
             back it up, and never use --dev in production",
            path.display()
        );
    }
    if let Some(path) = &server.bootstrap_admin_key {
        tracing::warn!(
            "no admin key was alive, so a bootstrap admin key was written to {} (mode 0600, readable by this \
             user only; it expires in {}). Name each admin with it: `valetkey admin add NAME --admin-key-file {} \
             --out ~/.config/valetkey/admin.key`, then `valetkey admin remove bootstrap`",
            path.display(),
            format!("{} hours", admin::BOOTSTRAP_TTL.as_secs() / 3600),
            path.display()
        );
    }
    let broker = server.broker();
    for t in broker.token_status() {
        match &t.problem {
            None => tracing::info!(provider = %t.provider, env = %t.env, "real token loaded from {}", t.source),
            Some(why) => tracing::warn!(
                provider = %t.provider, env = %t.env,
                "no real token for this provider and environment ({why}): its requests are refused until there \
                 is one (a stored secret: `valetkey secret set NAME`, used at once; a variable or a file: set it \
                 and restart the broker)"
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

/// `init`: the starter configuration, written only where no file is, and
/// the steps from it to a launched agent.
pub fn init(path: &Path, providers: &[config::StarterProvider], agent: &str) -> Result<ExitCode, CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !config::valid_name(agent) {
        return Err(CliError::Usage(format!(
            "`{agent}` is not a valid agent name: use 1 to 63 lowercase letters, digits, `-` and `_`"
        )));
    }
    let text = config::starter(providers, agent);
    // Not writable by others whatever the umask: `serve` refuses a
    // configuration another user could change.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path);
    let mut file = match file {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::Usage(format!(
                "{} already exists, and init never overwrites a file: edit it (`valetkey config check` checks it), \
                 or name another with --config",
                path.display()
            )));
        }
        other => other.map_err(|source| CliError::Io {
            action: format!("write {}", path.display()),
            source,
        })?,
    };
    file.write_all(text.as_bytes()).map_err(|source| CliError::Io {
        action: format!("write {}", path.display()),
        source,
    })?;
    let shown = path.display();
    let mut providers = providers.to_vec();
    providers.sort();
    providers.dedup();
    let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
    let secrets: String = providers
        .iter()
        .map(|&p| {
            format!(
                "       printf '%s' \"$TOKEN\" | valetkey secret set {}\n",
                config::starter_secret(p, "staging")
            )
        })
        .collect();
    println!(
        "wrote {shown}: environments staging and production (protected), provider(s) {}, agent {agent} \
         (reads and everyday changes in staging).\n\
         Next:\n\
         \x20 1. Start the broker, in a terminal of its own (--dev makes a master key in ./valetkey-data):\n\
         \x20      valetkey serve --config {shown} --dev\n\
         \x20 2. In another terminal (commands find the broker at VALETKEY_URL, default http://127.0.0.1:8700), \
         name yourself an admin with the bootstrap key it wrote, then retire that key and delete its file:\n\
         \x20      valetkey admin add YOUR-NAME --admin-key-file valetkey-data/admin.key --out ~/.config/valetkey/admin.key\n\
         \x20      valetkey admin remove bootstrap && rm valetkey-data/admin.key\n\
         \x20 3. Give the broker each real token for staging (read from standard input):\n\
         {secrets}\
         \x20 4. Register the agent; its launcher key is printed once, keep it where the agent does not work:\n\
         \x20      (umask 077 && valetkey agent add {agent} > ~/.config/valetkey/{agent}.key)\n\
         \x20 5. From the directory the agent works in (not this one: `run` refuses to launch beside the \
         broker's own files), launch it:\n\
         \x20      valetkey run --env staging --key-file ~/.config/valetkey/{agent}.key -- COMMAND\n\
         Then list the ids your providers know in the resource map at the end of {shown} (an id it does not \
         list is refused), and check each edit with `valetkey config check --config {shown}`.",
        names.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `audit verify --db COPY --jwks KEYS`: a copy of the database file,
/// verified offline against the keys the broker published.
pub async fn audit_verify_copy(
    db: &Path,
    jwks: &Path,
    fresh_within: Option<&str>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let fresh_within = fresh_within
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| CliError::Usage(format!("--fresh-within `{text}` is not a duration ({e}); write `2h`")))
        })
        .transpose()?;
    let text = std::fs::read_to_string(jwks).map_err(|source| CliError::Io {
        action: format!("read the published keys {}", jwks.display()),
        source,
    })?;
    let published: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not JSON ({e}); save the broker's /.well-known/jwks.json",
            jwks.display()
        ))
    })?;
    let keys = crate::credentials::PublishedKeys::from_jwks(&published).map_err(|e| {
        CliError::Usage(format!(
            "{}: {e}; save the broker's /.well-known/jwks.json",
            jwks.display()
        ))
    })?;
    if !db.is_file() {
        return Err(CliError::Usage(format!(
            "{} is not a file: pass a copy of the broker's valetkey.db",
            db.display()
        )));
    }
    let store = crate::store::SqliteStore::open_copy(db)
        .await
        .map_err(admin::AdminError::from)?;
    let v = admin::verify_audit_published(&store, &keys).await?;
    // A copy's chain can be rebuilt from its start by anyone who can write
    // it (the hashes use no key): only a signed checkpoint vouches for it.
    let vouched = v.broken.is_none() && v.last_checkpoint.is_some();
    // Only a checkpoint signed recently enough says the copy's tail is all
    // there: the time is part of what the broker signed.
    let stale = match (fresh_within, v.last_checkpoint_at_ms) {
        (Some(bound), Some(at)) if vouched => {
            let age_ms = crate::time::unix_ms(std::time::SystemTime::now()).saturating_sub(at);
            (age_ms > i64::try_from(bound.as_millis()).unwrap_or(i64::MAX)).then_some(at)
        }
        _ => None,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if v.broken.is_none() && !vouched {
        println!(
            "UNVOUCHED: {} events and no checkpoint signed by the published keys: a chain rebuilt from its start \
             would look the same",
            v.events
        );
    } else if let Some(at) = stale {
        println!(
            "STALE: {}; but that checkpoint, at {}, is older than --fresh-within: events cut off after it would \
             not show. Take a fresher copy",
            v.summary(),
            crate::time::rfc3339_ms(at)
        );
    } else {
        println!("{}", v.summary());
    }
    Ok(if vouched && stale.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `valetkey scan [PATH…]`: real tokens lying in files. Exits 0 when there
/// is none, 3 when there are.
pub fn scan(paths: Vec<std::path::PathBuf>, json: bool) -> Result<ExitCode, CliError> {
    let paths = if paths.is_empty() { vec![".".into()] } else { paths };
    // A path named that is not there would otherwise end in "no real token
    // found", which says the opposite of what happened.
    for path in &paths {
        std::fs::symlink_metadata(path).map_err(|source| CliError::Io {
            action: format!("scan {}", path.display()),
            source,
        })?;
    }
    let key = crate::scan::FingerprintKey::for_this_user();
    let report = crate::scan::scan_paths(&paths, crate::scan::Limits::default(), &key);
    if !key.lasting && !report.findings.is_empty() {
        eprintln!(
            "valetkey: cannot read or make ~/.config/valetkey/scan.key: these fingerprints compare only with \
             each other"
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        for (path, why) in &report.skipped {
            eprintln!("valetkey: not scanned: {}: {why}", path.display());
        }
    }
    if report.incomplete {
        eprintln!(
            "valetkey: the scan stopped after {} files; scan the rest by naming its directories",
            report.files_read
        );
    }
    if report.findings.is_empty() {
        eprintln!("no real token found in {} file(s)", report.files_read);
        return Ok(ExitCode::SUCCESS);
    }
    let files: std::collections::BTreeSet<_> = report.findings.iter().map(|f| &f.path).collect();
    eprintln!(
        "{} real token(s) in {} file(s), where anything running as you (an agent too) can read them. \
         Give each to the broker (`valetkey secret set NAME`), delete it from the file, and rotate it at \
         its provider: it has been lying in reach",
        report.findings.len(),
        files.len()
    );
    Ok(ExitCode::from(3))
}
