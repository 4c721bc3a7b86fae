//! The agent side: `run` (mint, launch, revoke at exit), `env`, `whoami`
//! and `check`; and `status`, which anyone who can reach the broker may ask.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::unistd::Pid;
use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::{CheckArgs, CliError, EnvFormat, MintArgs, Remote};
use crate::secrets::{ExposeSecret, SecretString, Zeroizing};

fn launcher_key(args: &MintArgs) -> Result<SecretString, ClientError> {
    let text = match (&args.key_file, args.key_fd) {
        (Some(path), _) => return super::read_key_file(path, "launcher key"),
        (None, Some(fd)) => read_key_fd(fd)?,
        (None, None) => Zeroizing::new(std::env::var("VALETKEY_AGENT_KEY").map_err(|_| ClientError::NoLauncherKey)?),
    };
    let key = text.trim();
    if key.is_empty() {
        return Err(ClientError::NoLauncherKey);
    }
    Ok(SecretString::from(key))
}

/// Reads `--key-fd` to its end and closes it, so the agent does not
/// inherit it.
fn read_key_fd(fd: i32) -> Result<Zeroizing<String>, ClientError> {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let shown = format!("descriptor {fd}");
    let fail = |source| ClientError::KeyFile {
        path: shown.clone(),
        source,
    };
    if fd == 1 || fd == 2 || std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(fail(std::io::Error::from_raw_os_error(nix::libc::EBADF)));
    }
    // SAFETY: the descriptor is open (checked above), is not one the
    // standard library writes to, and nothing else in this process uses it:
    // `run` was given it to read the key from.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut text = Zeroizing::new(String::new());
    (&mut file).take(64 * 1024).read_to_string(&mut text).map_err(fail)?;
    Ok(text)
}

/// `/proc/PID/environ` shows the environment a process started with,
/// whatever it removes later, and a root process can read it: a launcher
/// key that arrived in the environment is handed through a pipe to a new
/// image of `run` that starts without it.
pub(super) fn without_key_in_environment(args: &MintArgs) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    use std::os::unix::process::CommandExt;
    let Some(key) = std::env::var_os("VALETKEY_AGENT_KEY") else {
        return Ok(());
    };
    let key = Zeroizing::new(key.into_encoded_bytes());
    let io = |action: &str| {
        let action = action.to_owned();
        move |source| CliError::Io { action, source }
    };
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let at = argv.iter().position(|a| a == "run").map_or(argv.len(), |i| i + 1);
    if args.key_file.is_none() && args.key_fd.is_none() {
        let (read, write) = nix::unistd::pipe().map_err(|e| io("make a pipe for the launcher key")(e.into()))?;
        std::fs::File::from(write)
            .write_all(&key)
            .map_err(io("pass the launcher key on"))?;
        // Left open across the exec: the new image reads it and closes it.
        let fd = read.into_raw_fd();
        argv.splice(at..at, ["--key-fd".into(), fd.to_string().into()]);
    }
    let exe = std::env::current_exe().map_err(io("find valetkey's own executable"))?;
    let err = std::process::Command::new(exe)
        .arg0(&argv[0])
        .args(&argv[1..])
        .env_remove("VALETKEY_AGENT_KEY")
        .exec();
    Err(io("restart without the launcher key in the environment")(err))
}

struct Minted {
    session_id: String,
    /// How often to tell the broker the session is alive, for a session.
    heartbeat: Option<std::time::Duration>,
    vars: BTreeMap<String, SecretString>,
    /// What the broker adds to the agent's confinement; `None` when its
    /// answer did not say, which confines nothing safely.
    isolation: Option<crate::isolation::Settings>,
    credential: SecretString,
    /// The forward proxy's settings; `None` when it is off.
    forward: Option<super::proxy_env::Settings>,
}

async fn mint(
    client: &Client,
    key: &SecretString,
    args: &MintArgs,
    tokens_in_reach: &[crate::scan::Finding],
    session: bool,
) -> Result<Minted, CliError> {
    let mut body = json!({ "env": args.env, "session": session });
    if let Some(agent) = &args.agent {
        body["agent"] = json!(agent);
    }
    if !tokens_in_reach.is_empty() {
        body["tokens_in_reach"] = json!(tokens_in_reach);
    }
    if let Some(ttl) = args.ttl {
        body["ttl"] = json!(ttl.as_secs());
    }
    if !args.providers.is_empty() {
        body["providers"] = json!(args.providers);
    }
    if !args.scopes.is_empty() {
        body["scopes"] = json!(args.scopes);
    }
    let answer = client.mint(key, &body).await?;
    for line in super::mint_notes::notes(&answer, args.ttl) {
        eprintln!("valetkey: {line}");
    }
    let vars = answer["env_vars"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), SecretString::from(v))))
        .collect();
    let heartbeat = answer["heartbeat"]["interval_seconds"]
        .as_u64()
        .map(|s| std::time::Duration::from_secs(s.max(1)));
    let (agent, env, until, lease) = (
        answer["agent"].as_str().unwrap_or("?"),
        answer["env"].as_str().unwrap_or("?"),
        answer["expires_at"].as_str().unwrap_or("?"),
        answer["lease_id"].as_str().unwrap_or("?"),
    );
    match (session, heartbeat) {
        (true, Some(_)) => eprintln!(
            "valetkey: session for agent {agent} in {env}: its credential works while this `run` lives, until {until} at the latest (lease {lease})"
        ),
        (true, None) => return Err(broker_says_nothing()),
        (false, _) => eprintln!("valetkey: credential for agent {agent} in {env} until {until} (lease {lease})"),
    }
    Ok(Minted {
        heartbeat,
        session_id: answer["session_id"].as_str().unwrap_or_default().to_owned(),
        vars,
        isolation: serde_json::from_value(answer["isolation"].clone()).ok(),
        credential: SecretString::from(answer["credential"].as_str().unwrap_or_default()),
        forward: serde_json::from_value(answer["forward_proxy"].clone()).ok(),
    })
}

/// The forward proxy's variables for the agent, with the CA bundle written
/// into `dir`; none when the broker's forward proxy is off.
async fn forward_variables(
    client: &Client,
    minted: &Minted,
    dir: &Path,
) -> Result<Vec<(String, SecretString)>, CliError> {
    let Some(settings) = &minted.forward else {
        return Ok(Vec::new());
    };
    let pem = client.ca_pem().await?;
    let bundle = super::proxy_env::write_bundle(dir, &pem).map_err(|source| CliError::Io {
        action: format!("write the CA bundle into {}", dir.display()),
        source,
    })?;
    let broker = url::Url::parse(client.base()).map_err(|e| CliError::Usage(format!("the broker's URL: {e}")))?;
    Ok(super::proxy_env::variables(
        &broker,
        &minted.credential,
        settings,
        &bundle,
        super::proxy_env::inherited_git_config(),
    ))
}

/// A directory of this run's own for the CA bundle, made fresh (never one
/// that was there before), locked while the run lives and removed when it
/// ends. Those of this user's earlier runs that ended without removing
/// theirs (killed) are removed first.
fn run_directory(session_id: &str) -> Result<RunDirectory, CliError> {
    use std::os::unix::fs::DirBuilderExt;
    let temp = std::env::temp_dir();
    sweep_run_directories(&temp);
    let path = temp.join(format!("{RUN_DIRECTORY_PREFIX}{session_id}"));
    let failed = |source| CliError::Io {
        action: format!("make {}", path.display()),
        source,
    };
    std::fs::DirBuilder::new().mode(0o755).create(&path).map_err(failed)?;
    let lock = std::fs::File::create_new(path.join(RUN_LOCK))
        .map_err(failed)
        .and_then(|file| {
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|(_, errno)| failed(errno.into()))
        });
    match lock {
        Ok(lock) => Ok(RunDirectory { path, _lock: lock }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&path);
            Err(e)
        }
    }
}

const RUN_DIRECTORY_PREFIX: &str = "valetkey-run-";

/// The file a living run holds locked in its directory. A directory
/// without one (a run of an older valetkey) is never swept.
const RUN_LOCK: &str = ".run.lock";

/// Removes the run directories in `temp` that are this user's and whose
/// lock no living run holds: a run killed before it could remove its own
/// leaves it. One made in the last minute may not be locked yet: left.
fn sweep_run_directories(temp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(temp) else { return };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(RUN_DIRECTORY_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let young = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age.as_secs() < 60);
        if !meta.is_dir() || meta.uid() != uid || young {
            continue;
        }
        let Ok(lock) = std::fs::File::open(path.join(RUN_LOCK)) else {
            continue;
        };
        if nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

struct RunDirectory {
    path: PathBuf,
    /// `RUN_LOCK`, held while the run lives (its descriptor is not
    /// inherited by the agent), so that another run knows it for a living
    /// one's.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Drop for RunDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The real tokens lying in the working directory the agent is launched
/// in, except those in `hidden` (which the agent will not see); refused
/// unless the launcher allows them.
fn tokens_in_reach(
    allow: bool,
    hidden: &[PathBuf],
    key: &crate::scan::FingerprintKey,
) -> Result<Vec<crate::scan::Finding>, CliError> {
    let report = crate::scan::scan_paths(&[".".into()], crate::scan::Limits::default(), key);
    if report.incomplete {
        eprintln!(
            "valetkey: the scan of the working directory stopped after {} files; what lies past them was not checked",
            report.files_read
        );
    }
    for (path, why) in &report.skipped {
        eprintln!("valetkey: not scanned for tokens: {}: {why}", path.display());
    }
    let (out_of_reach, findings): (Vec<_>, Vec<_>) = report
        .findings
        .into_iter()
        .partition(|f| std::fs::canonicalize(&f.path).is_ok_and(|p| hidden.iter().any(|h| p.starts_with(h))));
    for f in &out_of_reach {
        eprintln!("valetkey: {f} (hidden from the agent)");
    }
    for f in &findings {
        eprintln!("valetkey: {f}");
    }
    if findings.is_empty() {
        return Ok(findings);
    }
    if allow {
        eprintln!(
            "valetkey: launching with {} real token(s) in the agent's reach (--allow-tokens); the broker records and alerts it",
            findings.len()
        );
        return Ok(findings);
    }
    Err(CliError::TokensInReach { count: findings.len() })
}

/// The environment variable `isolated-exec` reads its plan from.
const PLAN_VARIABLE: &str = "VALETKEY_ISOLATION";

/// The key files the launcher named or keeps in the usual place.
fn key_files(args: &MintArgs) -> Vec<PathBuf> {
    [
        args.key_file.clone(),
        std::env::var_os("VALETKEY_ADMIN_KEY_FILE").map(PathBuf::from),
        super::admin::default_key_file(),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.is_file())
    .collect()
}

fn warn_unconfined(args: &MintArgs) {
    let files: Vec<String> = key_files(args).iter().map(|p| p.display().to_string()).collect();
    let keys = if files.is_empty() {
        String::new()
    } else {
        format!("{}, ", files.join(", "))
    };
    eprintln!(
        "valetkey: warning: --no-isolation: the agent runs as you, unconfined. It can read {keys}the broker's data \
         dir and configuration if you can, other tools' tokens (~/.config/gh, ~/.aws, ~/.railway, ~/.netrc, …) and \
         any file you can; it can connect to every provider directly, past the broker; and if `run` is killed, \
         nothing ends the processes it leaves (its credential stops working all the same)"
    );
}

/// Without the broker's files to hide, a confinement would hide nothing of
/// the broker's: refused rather than guessed.
fn broker_says_nothing() -> CliError {
    CliError::Usage(
        "refusing to launch: the broker did not say which of its files to hide from the agent (an older \
         broker?); upgrade it, or launch with --no-isolation"
            .into(),
    )
}

/// Landlock allows a port on every address: a web port for the broker is
/// every provider's port too.
fn warn_of_a_shared_broker_port(args: &MintArgs) {
    if let Some(port) = broker_port(args).filter(|p| [80, 443, 8080, 8443].contains(p)) {
        eprintln!(
            "valetkey: warning: the broker is on port {port}, which the agent may then reach on every address: \
             providers included, past the broker. Serve the broker on a port of its own (8700)"
        );
    }
}

/// This machine as the launcher sees it.
fn launcher(args: &MintArgs) -> Result<crate::isolation::Launcher, CliError> {
    let cwd = std::env::current_dir().map_err(|source| CliError::Io {
        action: "find the working directory".into(),
        source,
    })?;
    Ok(crate::isolation::Launcher {
        cwd,
        home: std::env::var_os("HOME").map(PathBuf::from),
        path_var: std::env::var_os("PATH"),
        key_files: key_files(args),
        broker_port: broker_port(args),
    })
}

fn broker_port(args: &MintArgs) -> Option<u16> {
    url::Url::parse(&args.remote.url)
        .ok()
        .and_then(|u| u.port_or_known_default())
}

/// What both helpers do first: die with their parent (unless it is gone
/// already: the lifeline says), and take the plan `run` handed them (saying
/// why when there is none). Returns the plan and the lifeline.
fn helper_start(lifeline: i32) -> Option<(crate::isolation::Plan, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    if let Err(e) = crate::isolation::die_with_parent() {
        eprintln!("valetkey: not launching the agent: {e}");
        return None;
    }
    if lifeline <= 2 || std::fs::symlink_metadata(format!("/proc/self/fd/{lifeline}")).is_err() {
        eprintln!(
            "valetkey: isolated-exec and isolated-init are helpers of `valetkey run`; launch agents with `valetkey run`"
        );
        return None;
    }
    // SAFETY: the parent made this descriptor for this process alone (open,
    // checked above, and not a standard one); nothing else here uses it.
    let lifeline = unsafe { OwnedFd::from_raw_fd(lifeline) };
    if crate::isolation::parent_is_gone(&lifeline) {
        eprintln!("valetkey: not launching the agent: `run` ended while it was starting");
        return None;
    }
    let plan = std::env::var(PLAN_VARIABLE)
        .ok()
        .and_then(|text| serde_json::from_str::<crate::isolation::Plan>(&text).ok());
    if plan.is_none() {
        eprintln!(
            "valetkey: isolated-exec and isolated-init are helpers of `valetkey run`; launch agents with `valetkey run`"
        );
    }
    Some((plan?, lifeline))
}

/// `run`'s helper, a fresh single-threaded process: makes the agent's
/// namespaces and mounts, then starts and waits for `isolated-init`, the
/// first process inside them. Exits 126 when it cannot.
pub(super) fn isolated_exec(lifeline: i32, command: &[String]) -> ExitCode {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let Some((plan, from_run)) = helper_start(lifeline) else {
        return ExitCode::from(126);
    };
    // Checked: from here on the parent-death signal covers it.
    drop(from_run);
    // Held open across the mounts, which may hide where it lies (a build
    // under /tmp).
    let own = match std::fs::File::open("/proc/self/exe") {
        Ok(own) => own,
        Err(e) => {
            eprintln!("valetkey: refusing to launch the agent: cannot open valetkey's own executable: {e}");
            return ExitCode::from(126);
        }
    };
    if let Err(e) = crate::isolation::prepare(&plan) {
        eprintln!("valetkey: refusing to launch the agent: {e}");
        return ExitCode::from(126);
    }
    let lifeline = match crate::isolation::Lifeline::new() {
        Ok(lifeline) => lifeline,
        Err(e) => {
            eprintln!("valetkey: refusing to launch the agent: {e}");
            return ExitCode::from(126);
        }
    };
    let mut child = std::process::Command::new(format!("/proc/self/fd/{}", own.as_raw_fd()));
    child
        .arg0("valetkey")
        .arg("isolated-init")
        .arg("--lifeline")
        .arg(lifeline.inherited().to_string())
        .arg("--")
        .args(command);
    supervised(child, "the agent's first process")
}

/// The first process of the agent's PID namespace: confines itself, then
/// starts the agent's command and stays to reap and pass signals on; when
/// the command exits, so does everything it left running.
pub(super) fn isolated_init(lifeline: i32, command: &[String]) -> ExitCode {
    let Some((plan, lifeline)) = helper_start(lifeline) else {
        return ExitCode::from(126);
    };
    match crate::isolation::confine(&plan) {
        Err(e) => {
            eprintln!("valetkey: refusing to launch the agent: {e}");
            return ExitCode::from(126);
        }
        Ok(gaps) => {
            for gap in gaps {
                eprintln!(
                    "valetkey: warning: this kernel lacks {}, so {}",
                    gap.mechanism, gap.leaves_open
                );
            }
        }
    }
    // Confined, and dying with the helper again: unless it is gone already.
    if crate::isolation::parent_is_gone(&lifeline) {
        eprintln!("valetkey: not launching the agent: `run` ended while it was being confined");
        return ExitCode::from(126);
    }
    drop(lifeline);
    let mut child = std::process::Command::new(&command[0]);
    child.args(&command[1..]).env_remove(PLAN_VARIABLE);
    supervised(child, &format!("`{}`", command[0]))
}

fn supervised(child: std::process::Command, what: &str) -> ExitCode {
    match crate::isolation::supervise(child) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("valetkey: cannot start {what}: {e}");
            ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

pub async fn run(
    args: MintArgs,
    allow_tokens: bool,
    isolate: bool,
    command: Vec<String>,
) -> Result<ExitCode, CliError> {
    // This process holds the launcher key: no core dump of it, and no
    // reading its memory by a process of the same user.
    let _ = nix::sys::prctl::set_dumpable(false);
    let key = launcher_key(&args)?;
    let client = Client::new(&args.remote)?;
    if isolate {
        warn_of_a_shared_broker_port(&args);
    }
    // Made (at first use) before the paths to hide are read: the scan key
    // lies with the launcher's other valetkey files, out of the agent's reach.
    let fingerprints = crate::scan::FingerprintKey::for_this_user();
    // This machine's side of the confinement, read once: the scan leaves out
    // what it hides, and the plan adds the credential's database ports.
    let inputs = if isolate {
        let settings = serde_json::from_value(client.isolation(&key).await?).map_err(|_| broker_says_nothing())?;
        let inputs = crate::isolation::gather(&settings, &launcher(&args)?);
        if inputs.launcher.uid == 0 && !inputs.may_id_map {
            eprintln!(
                "valetkey: warning: you are root without the machine's root privileges (in a container's user \
                 namespace, or without CAP_SYS_ADMIN), so you may not id-map this machine's file systems: the \
                 agent runs as that root, so it owns root's files wherever it may read. Launch it as an \
                 unprivileged user to keep them from it"
            );
        }
        if !inputs.unreadable.is_empty() {
            eprintln!(
                "valetkey: warning: the agent runs as an unprivileged user of its own, which may not read these \
                 `[run] read` grants by their mode: {}. Make them readable by others (`chmod o+rX`) or leave them out",
                inputs
                    .unreadable
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let unlocated = &inputs.unlocated_sockets;
        if !unlocated.is_empty() {
            eprintln!(
                "valetkey: warning: {} Unix socket(s) listening here cannot be found by the name they were bound \
                 with (a relative name, or moved since): on kernels whose Landlock is older than ABI 9 the agent \
                 may reach them if it finds them: {}",
                unlocated.len(),
                unlocated.join(", ")
            );
        }
        Some(inputs)
    } else {
        warn_unconfined(&args);
        None
    };
    let hidden: Vec<PathBuf> = inputs
        .iter()
        .flat_map(|i| i.secrets.iter().map(|s| s.path.clone()))
        .collect();
    let in_reach = tokens_in_reach(allow_tokens, &hidden, &fingerprints)?;
    let forwarder = crate::isolation::Forwarder::listen().map_err(|source| CliError::Io {
        action: "listen for signals to pass on".into(),
        source,
    })?;
    let minted = mint(&client, &key, &args, &in_reach, true).await?;
    let mut alive = minted
        .heartbeat
        .map(|every| keep_alive(client.clone(), key.clone(), minted.session_id.clone(), every));
    let forwarded = async {
        let dir = run_directory(&minted.session_id)?;
        let vars = forward_variables(&client, &minted, &dir.path).await?;
        Ok::<_, CliError>((dir, vars))
    };
    let (run_dir, forward_vars) = match forwarded.await {
        Ok(forwarded) => forwarded,
        Err(e) => {
            end_session(&client, &key, &minted.session_id, alive.take()).await;
            return Err(e);
        }
    };
    let mut inputs = inputs;
    if let Some(inputs) = inputs.as_mut() {
        inputs.read.push(run_dir.path.clone());
    }
    // What git would take from the working directory as yours, before the
    // agent starts (compared when it ends).
    let mut repository = None;
    let mut lifeline = None;
    let mut child = if let Some(mut inputs) = inputs {
        let plan = minted
            .isolation
            .as_ref()
            .ok_or_else(broker_says_nothing)
            .and_then(|settings| {
                inputs.connect.extend(&settings.connect);
                Ok(crate::isolation::plan(&inputs)?)
            })
            .and_then(|plan| {
                serde_json::to_string(&plan).map_err(|_| {
                    CliError::Usage(
                        "refusing to launch: a path the agent would be granted or hidden from is not UTF-8; \
                     launch it from a directory whose path is"
                            .into(),
                    )
                })
            });
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                end_session(&client, &key, &minted.session_id, alive.take()).await;
                return Err(e);
            }
        };
        repository = Some((inputs.cwd.clone(), crate::isolation::git::snapshot(&inputs.cwd)));
        let helper = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let made = crate::isolation::Lifeline::new().map_err(|source| CliError::Io {
            action: "make the helper's lifeline".into(),
            source,
        });
        let made = match made {
            Ok(made) => made,
            Err(e) => {
                end_session(&client, &key, &minted.session_id, alive.take()).await;
                return Err(e);
            }
        };
        let mut child = tokio::process::Command::new(helper);
        child
            .arg("isolated-exec")
            .arg("--lifeline")
            .arg(made.inherited().to_string())
            .arg("--")
            .args(&command)
            .env(PLAN_VARIABLE, plan);
        lifeline = Some(made);
        child
    } else {
        let mut child = tokio::process::Command::new(&command[0]);
        child.args(&command[1..]);
        child
    };
    // Launcher and admin keys, and real tokens, never reach the agent; the
    // credential's own variables replace them.
    let settings = minted.isolation.clone().unwrap_or_default();
    for (name, value) in std::env::vars_os() {
        let (name, value) = (name.to_string_lossy(), value.to_string_lossy());
        if let Some(why) = settings.withholds(&name, &value) {
            child.env_remove(name.as_ref());
            if !crate::isolation::TOKEN_VARIABLES.contains(&name.as_ref()) && !minted.vars.contains_key(name.as_ref()) {
                eprintln!("valetkey: not passing {name} on to the agent: {why}");
            }
        }
    }
    if !forward_vars.is_empty() {
        for name in super::proxy_env::REMOVED {
            child.env_remove(name);
        }
    }
    child.envs(minted.vars.iter().map(|(k, v)| (k, v.expose_secret())));
    child.envs(forward_vars.iter().map(|(k, v)| (k, v.expose_secret())));
    let spawned = child.spawn();
    // The helper holds the reading end now; this process holds the writing
    // end until the agent has ended.
    let _lifeline = lifeline.map(crate::isolation::Lifeline::started);
    let status = match spawned {
        Err(source) => {
            end_session(&client, &key, &minted.session_id, alive.take()).await;
            return Err(CliError::Io {
                action: format!("start `{}`", command[0]),
                source,
            });
        }
        Ok(mut child) => {
            let forwarding = child.id().map(|id| forwarder.start(Pid::from_raw(id as i32)));
            let status = child.wait().await;
            if let Some(forwarding) = forwarding {
                forwarding.close();
            }
            status
        }
    };
    end_session(&client, &key, &minted.session_id, alive.take()).await;
    if let Some((cwd, before)) = repository {
        review_repository(&cwd, &before);
    }
    let status = status.map_err(|source| CliError::Io {
        action: format!("wait for `{}`", command[0]),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Moves aside what the agent wrote that would lead your git to settings of
/// its own, and names the repositories it made or changed, whose config may
/// name programs git runs.
fn review_repository(cwd: &Path, before: &crate::isolation::git::Snapshot) {
    use crate::isolation::git::{Change, changes, quarantine, snapshot};
    let found = changes(before, &snapshot(cwd));
    match quarantine(cwd, &found) {
        Ok(moved) => {
            for (from, to) in moved {
                eprintln!(
                    "valetkey: the agent wrote {}, which would make git read settings of its own (and run the \
                     programs they name) as this repository's: moved it to {}",
                    from.display(),
                    to.display()
                );
            }
        }
        Err(e) => eprintln!(
            "valetkey: WARNING: the agent wrote what would lead git to settings of its own, and it could not be \
             moved aside ({e}): remove .git/commondir, .git/config.worktree and a `config` beside `HEAD`, \
             `objects` and `refs` in this directory before running git here"
        ),
    }
    for change in &found {
        let warning = match change {
            Change::Redirect(_) => continue,
            Change::Settings(path) => format!("the agent changed the git settings in {}", path.display()),
            Change::Repository(path) => format!("the agent made or changed the repository at {}", path.display()),
            Change::Broken => "the agent left .git as git no longer takes it, so git looks further, into what the \
                               agent wrote"
                .into(),
            Change::Incomplete => "this directory holds too many files to review them all for repositories the \
                                   agent made"
                .into(),
        };
        eprintln!(
            "valetkey: warning: {warning}; git run there reads config and hooks, which may name programs \
             (core.fsmonitor, a hook): review them before running git there"
        );
    }
}

/// Tells the broker every `every` that the session is alive, until dropped
/// (when the agent has ended). Says once when the broker cannot be
/// reached, and when the session has ended, which no heartbeat undoes.
fn keep_alive(client: Client, key: SecretString, session_id: String, every: std::time::Duration) -> KeepAlive {
    KeepAlive(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut failing = false;
        loop {
            ticks.tick().await;
            match client.heartbeat(&key, &session_id, every).await {
                Ok(_) if failing => {
                    eprintln!("valetkey: the broker is reachable again; session {session_id} goes on");
                    failing = false;
                }
                Ok(_) => {}
                // Only the broker saying the session is over ends the
                // heartbeat: a busy or failing broker (503, 429) is asked
                // again at the next beat, as an unreachable one is.
                Err(ClientError::Refused { kind, detail, .. }) if session_over(&kind) => {
                    eprintln!(
                        "valetkey: the agent's session has ended and its credential no longer works: {detail}\n\
                         valetkey: the agent keeps running, but the broker refuses it; end it and launch it again"
                    );
                    return;
                }
                Err(e) if !failing => {
                    eprintln!(
                        "valetkey: WARNING: cannot tell the broker that session {session_id} is alive ({e}); \
                         its credential stops working if this lasts past the broker's heartbeat timeout"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }))
}

/// Whether the broker's refusal of a heartbeat says no heartbeat can keep
/// the session alive any longer; anything else (a busy or failing broker)
/// is worth another try.
fn session_over(kind: &str) -> bool {
    matches!(
        kind,
        "session_ended" | "not_a_session" | "launcher_key_invalid" | "not_found"
    )
}

/// The heartbeat task, stopped when dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Revokes the session, its heartbeat stopped first (a heartbeat after the
/// revocation would be told the session ended).
async fn end_session(client: &Client, key: &SecretString, session_id: &str, alive: Option<KeepAlive>) {
    drop(alive);
    if let Err(e) = client.end_session(key, session_id).await {
        eprintln!(
            "valetkey: WARNING: could not revoke session {session_id}: {e}\n\
             valetkey: its credential stays valid until it expires; revoke it with `valetkey revoke --session {session_id}`"
        );
    }
}

pub async fn env(args: MintArgs, format: EnvFormat) -> Result<ExitCode, CliError> {
    let key = launcher_key(&args)?;
    let client = Client::new(&args.remote)?;
    let mut minted = mint(&client, &key, &args, &[], false).await?;
    if minted.forward.is_some() {
        let dir = bundle_directory()?;
        for (name, value) in forward_variables(&client, &minted, &dir).await? {
            minted.vars.insert(name, value);
        }
    }
    let mut out = String::new();
    match format {
        EnvFormat::Json => {
            let map: BTreeMap<&str, &str> = minted
                .vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.expose_secret()))
                .collect();
            out = serde_json::to_string_pretty(&map).unwrap_or_default();
            out.push('\n');
        }
        EnvFormat::Dotenv | EnvFormat::Shell => {
            // What `run` removes from the agent's environment, a shell
            // removes too; a dotenv file cannot say it.
            if matches!(format, EnvFormat::Shell) && minted.forward.is_some() {
                out.push_str(&format!("unset {}\n", super::proxy_env::REMOVED.join(" ")));
            }
            for (k, v) in &minted.vars {
                let quoted = shlex::try_quote(v.expose_secret())
                    .map_err(|_| CliError::Usage(format!("{k} holds a NUL byte")))?;
                if matches!(format, EnvFormat::Shell) {
                    out.push_str("export ");
                }
                out.push_str(&format!("{k}={quoted}\n"));
            }
        }
    }
    print!("{out}");
    eprintln!(
        "valetkey: session {} is not revoked when you are done; it expires by itself, or `valetkey revoke --session {}`",
        minted.session_id, minted.session_id
    );
    Ok(ExitCode::SUCCESS)
}

/// Where `valetkey env` keeps the CA bundle its variables name: it must
/// outlive the command. Under the user's cache directory, or, with no home,
/// a directory of the user's own in the temporary directory (one that
/// another user made first, or a link, is refused).
fn bundle_directory() -> Result<PathBuf, CliError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let failed = |dir: &Path, source: std::io::Error| CliError::Io {
        action: format!("make {}", dir.display()),
        source,
    };
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache {
        let dir = cache.join("valetkey");
        std::fs::create_dir_all(&dir).map_err(|e| failed(&dir, e))?;
        return Ok(dir);
    }
    let uid = nix::unistd::getuid().as_raw();
    let dir = std::env::temp_dir().join(format!("valetkey-{uid}"));
    match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(failed(&dir, e)),
        _ => {}
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| failed(&dir, e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(CliError::Usage(format!(
            "{} is not a directory of yours that only you may write: remove it, or set HOME",
            dir.display()
        )));
    }
    Ok(dir)
}

/// The credential of the session this runs in, which an agent's commands
/// present.
pub(super) fn session_credential() -> Result<SecretString, ClientError> {
    match std::env::var("VALETKEY_CREDENTIAL") {
        Ok(credential) if !credential.trim().is_empty() => Ok(SecretString::from(credential)),
        _ => Err(ClientError::NoCredential),
    }
}

pub async fn whoami(remote: Remote, json: bool) -> Result<ExitCode, CliError> {
    let credential = session_credential()?;
    let client = Client::for_agent(&remote)?;
    let me = client.whoami(&credential).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&me).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    println!("agent {} in environment {}", s(&me["agent"]), s(&me["env"]));
    println!(
        "valid until {} ({}s left); lease {}, session {}",
        s(&me["expires_at"]),
        me["expires_in"],
        s(&me["lease_id"]),
        s(&me["session_id"])
    );
    println!("lifetime: {}", s(&me["lifetime"]));
    for (provider, view) in me["grants"].as_object().into_iter().flatten() {
        println!("\n{provider}  via {}", s(&view["proxy_url"]));
        for scope in view["scopes"].as_array().into_iter().flatten() {
            println!(
                "  {:<20} {:<8} {}",
                s(&scope["scope"]),
                scope["tier"].as_str().unwrap_or(""),
                scope["description"].as_str().unwrap_or("")
            );
        }
    }
    println!("\nnever: {}", s(&me["never"]));
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `check` when the proxy would refuse the request.
pub(super) const REFUSED: u8 = 3;

pub async fn check(remote: Remote, args: CheckArgs, json: bool) -> Result<ExitCode, CliError> {
    let credential = session_credential()?;
    let request = check_request(args)?;
    let client = Client::for_agent(&remote)?;
    let answer = client.check(&credential, &request).await?;
    let refused = answer["decision"] != "allow";
    if json {
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    } else {
        print_check(&answer);
    }
    Ok(if refused {
        ExitCode::from(REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

fn check_request(args: CheckArgs) -> Result<Value, CliError> {
    if let Some(query) = args.graphql {
        let variables = match args.variables {
            Some(text) => Some(
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| CliError::Usage(format!("--variables is not JSON: {e}")))?,
            ),
            None => None,
        };
        return Ok(json!({
            "provider": args.provider,
            "graphql": { "query": query, "variables": variables, "operationName": args.operation_name },
        }));
    }
    let (Some(method), Some(path)) = (args.method, args.path) else {
        return Err(CliError::Usage(
            "describe the request with --graphql, or with --method and --path".into(),
        ));
    };
    let mut headers = serde_json::Map::new();
    for header in args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("--header `{header}` is not `Name: value`")))?;
        headers.insert(name.trim().to_owned(), Value::String(value.trim().to_owned()));
    }
    Ok(json!({
        "provider": args.provider,
        "method": method.to_uppercase(),
        "path": path,
        "headers": headers,
        "body": args.body,
    }))
}

fn print_check(answer: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    match answer["refusal"].as_object() {
        None => println!(
            "allowed: {} in {} would be forwarded to {}",
            s(&answer["provider"]),
            s(&answer["env"]),
            s(&answer["path"])
        ),
        Some(refusal) => {
            println!("refused ({}): {}", s(&refusal["type"]), s(&refusal["detail"]));
            println!("\n{}", s(&refusal["agent_guidance"]));
        }
    }
    for op in answer["operations"].as_array().into_iter().flatten() {
        println!(
            "\n  {}  scope {}  ({})",
            s(&op["name"]),
            op["scope"].as_str().unwrap_or("none"),
            s(&op["tier"])
        );
        for r in op["resources"].as_array().into_iter().flatten() {
            let owners = match r["owners"].as_array() {
                Some(o) => o.iter().map(&s).collect::<Vec<_>>().join(", "),
                None => "not in the resource map".into(),
            };
            println!("    {} {}  owned by {owners}", s(&r["kind"]), s(&r["id"]));
        }
    }
}

pub(super) fn print_status(state: &Value, url: &str) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    println!("broker {url}: {}", s(&state["status"]));
    println!("  store: {}", s(&state["store"]));
    println!("  signing key: {}", state["active_kid"].as_str().unwrap_or("none"));
    println!("\nreal tokens:");
    for t in state["provider_tokens"].as_array().into_iter().flatten() {
        let loaded = match t["problem"].as_str() {
            None => "loaded".to_owned(),
            Some(why) => format!("NOT LOADED: {why}"),
        };
        println!(
            "  {:<10} {:<12} {} ({})",
            s(&t["provider"]),
            s(&t["env"]),
            loaded,
            s(&t["source"])
        );
    }
    print_roles(state);
    print_database_findings(state);
    let reach = state["token_reach"].as_array().cloned().unwrap_or_default();
    if reach.is_empty() {
        println!("\nwhat the tokens reach: not asked yet (or introspection is off)");
        return;
    }
    println!("\nwhat the tokens reach:");
    for r in &reach {
        let mark = match r["outcome"].as_str() {
            Some("finding") => "FINDING",
            Some("confined") => "ok",
            _ => "unknown",
        };
        println!(
            "  {:<10} {:<12} {:<8} {}",
            s(&r["provider"]),
            s(&r["env"]),
            mark,
            s(&r["detail"])
        );
    }
}

/// What the database servers let agents' roles do past their grants.
fn print_database_findings(state: &Value) {
    let findings = state["database_findings"].as_array().cloned().unwrap_or_default();
    if findings.is_empty() {
        return;
    }
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    println!("\ndatabase servers: agents' roles get past their grants");
    for f in &findings {
        println!("  FINDING {} {}: {}", s(&f["provider"]), s(&f["env"]), s(&f["what"]));
        println!("    fix: {}", s(&f["fix"]));
    }
}

/// Live database roles, per environment.
fn print_roles(state: &Value) {
    let roles = state["database_roles"].as_array().cloned().unwrap_or_default();
    if roles.is_empty() {
        println!("\ndatabase roles: none live");
        return;
    }
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let mut env = String::new();
    println!("\ndatabase roles:");
    for r in &roles {
        if s(&r["env"]) != env {
            env = s(&r["env"]);
            println!("  {env}:");
        }
        println!(
            "    {:<40} {:<10} {:<12} agent {:<12} until {}  (lease {})",
            s(&r["role"]),
            s(&r["provider"]),
            s(&r["database"]),
            s(&r["agent"]),
            s(&r["expires_at"]),
            s(&r["lease_id"])
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{session_over, sweep_run_directories};

    /// A killed run's directory is swept; a living run's (locked), one just
    /// made, one without a lock file (an older valetkey's run) and anything
    /// else are left.
    #[test]
    fn only_directories_no_living_run_holds_are_swept() {
        let temp = tempfile::tempdir().unwrap();
        let make = |name: &str, age_secs: u64| {
            let path = temp.path().join(name);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("ca-bundle.pem"), "certificates").unwrap();
            if name != "valetkey-run-older-valetkey" {
                std::fs::write(path.join(super::RUN_LOCK), "").unwrap();
            }
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
            std::fs::File::open(&path).unwrap().set_modified(when).unwrap();
            path
        };
        let killed = make("valetkey-run-killed", 600);
        let living = make("valetkey-run-living", 600);
        let just_made = make("valetkey-run-new", 0);
        let other = make("something-else", 600);
        let unmarked = make("valetkey-run-older-valetkey", 600);
        let _held = nix::fcntl::Flock::lock(
            std::fs::File::open(living.join(super::RUN_LOCK)).unwrap(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        sweep_run_directories(temp.path());
        assert!(!killed.exists());
        assert!(living.exists() && just_made.exists() && other.exists() && unmarked.exists());
    }

    #[test]
    fn only_the_broker_saying_the_session_is_over_stops_the_heartbeat() {
        for over in ["session_ended", "not_a_session", "launcher_key_invalid", "not_found"] {
            assert!(session_over(over), "{over}");
        }
        for busy in [
            "store_unavailable",
            "too_many_connections",
            "rate_limited",
            "internal_error",
        ] {
            assert!(!session_over(busy), "{busy} is worth another heartbeat");
        }
    }
}
