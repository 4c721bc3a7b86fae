//! The `valetkey` command line. `serve` runs the broker; every other command
//! talks to it over HTTP: ops' commands with an admin key (`admin.rs`),
//! agents' with a launcher key or credential (`run.rs`). Only `serve`,
//! `config check`, `audit verify --db` of a copy and `scan` read files
//! instead (`local.rs`).

mod admin;
mod approvals;
mod client;
mod local;
mod mcp;
mod mint_notes;
mod proxy_env;
mod run;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::secrets::{SecretString, Zeroizing};

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::ClientError;

/// Everything the CLI can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Isolation(#[from] crate::isolation::PlanError),
    #[error("{0}")]
    Usage(String),
    #[error(
        "refusing to launch: {count} real token(s) lie in the working directory (listed above), where the agent \
         could read them and use them instead of its credential. Move each into the broker \
         (`valetkey secret import FILE:LINE NAME`) and rotate it at its provider, or launch the agent in a \
         directory of its own; `--allow-tokens` launches anyway, and the broker records and alerts it"
    )]
    TokensInReach { count: usize },
    #[error("cannot {action}: {source}")]
    Io { action: String, source: std::io::Error },
}

#[derive(Parser, Debug)]
#[command(
    name = "valetkey",
    version,
    about = "A least-privilege credential broker for AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Local {
    /// The configuration file.
    #[arg(long, short, env = "VALETKEY_CONFIG", default_value = "valetkey.toml")]
    config: PathBuf,
    /// Where the store and the dev master key live (default: [server] data_dir, else ./valetkey-data).
    #[arg(long, env = "VALETKEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The broker's URL.
    #[arg(long, env = "VALETKEY_URL", default_value = "http://127.0.0.1:8700")]
    url: String,
    /// A PEM certificate to trust for the broker's HTTPS, besides the
    /// system's (the broker's own, or the CA that issued it).
    #[arg(long, env = "VALETKEY_CA_FILE")]
    ca_file: Option<PathBuf>,
}

// How an ops command reaches the broker's admin API. (A `//` comment: a
// flattened struct's doc would become the help of every command using it.)
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    #[command(flatten)]
    remote: Remote,
    /// The file holding your admin key, mode 0600 (default:
    /// VALETKEY_ADMIN_KEY, else ~/.config/valetkey/admin.key).
    #[arg(long, env = "VALETKEY_ADMIN_KEY_FILE")]
    admin_key_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct MintArgs {
    /// The agent to launch (default: the launcher key's agent; when given,
    /// it must be that agent).
    #[arg(long)]
    agent: Option<String>,
    /// The environment the credential is for.
    #[arg(long)]
    env: String,
    /// Lifetime: seconds (900) or a duration (15m, 1h30m); default and
    /// limits from the broker's config.
    #[arg(long, value_parser = crate::policy::parse_lifetime)]
    ttl: Option<std::time::Duration>,
    /// Only these providers (repeatable; default: every granted one).
    #[arg(long = "provider")]
    providers: Vec<String>,
    /// Only these scopes (repeatable; default: every granted one).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// File holding the launcher key, mode 0600 (default: --key-fd, else
    /// VALETKEY_AGENT_KEY).
    #[arg(long, conflicts_with = "key_fd")]
    key_file: Option<PathBuf>,
    /// Read the launcher key from this open file descriptor (0 for
    /// standard input), to its end.
    #[arg(long)]
    key_fd: Option<i32>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a starter configuration for the providers you name, with a
    /// staging and a protected production environment and a first agent;
    /// prints what to do next. Never overwrites a file.
    Init {
        /// Where to write it.
        #[arg(long, short, env = "VALETKEY_CONFIG", default_value = "valetkey.toml")]
        config: PathBuf,
        /// A provider the agent works with (repeatable).
        #[arg(long = "provider", value_enum, required = true)]
        providers: Vec<crate::config::StarterProvider>,
        /// The first agent's name.
        #[arg(long, default_value = "claude")]
        agent: String,
    },
    /// Print a completion script for your shell: `source <(valetkey
    /// completions bash)`, or save it where your shell loads completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run the broker.
    Serve {
        #[command(flatten)]
        local: Local,
        /// Address to listen on (default: [server] listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Development mode: create a missing master key in the data dir.
        /// Never in production.
        #[arg(long)]
        dev: bool,
        /// Started as root, become this user before reading anything (the
        /// broker's own user, which owns its data dir).
        #[arg(long)]
        user: Option<String>,
        /// Serve on an address other machines reach, in clear (refused
        /// without this: put a TLS-terminating proxy in front instead).
        #[arg(long)]
        insecure_listen: bool,
    },
    /// Admins: the people whose keys the admin API takes.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Find real provider tokens lying in files (default: the current
    /// directory): file, line, kind and a fingerprint, never the value.
    /// Exits 0 when there is none, 3 when there are.
    Scan {
        /// Files and directories (recursively; `.git`, `target` and
        /// `node_modules` are skipped).
        paths: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration and report every problem.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The real tokens the broker keeps, encrypted: set, list, remove.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The forward proxy's certificate authority: with no subcommand,
    /// prints its certificate (PEM), which `run` adds to the agent's trust.
    Ca {
        #[command(subcommand)]
        command: Option<CaCommand>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Register, list and remove agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Revoke a lease, a session or every credential of an agent.
    Revoke {
        /// The lease id to revoke.
        lease: Option<String>,
        #[arg(long, conflicts_with_all = ["lease", "agent"])]
        session: Option<String>,
        #[arg(long, conflicts_with_all = ["lease", "session"])]
        agent: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run a command with a fresh credential in its environment; the
    /// credential is revoked when the command exits.
    Run {
        #[command(flatten)]
        mint: MintArgs,
        /// Launch even though real tokens lie in the working directory,
        /// where the agent can read them; the broker records and alerts it.
        #[arg(long)]
        allow_tokens: bool,
        /// Launch the agent unconfined: it can then read every file you can
        /// (the broker's keys, other tools' tokens) and reach any provider
        /// directly.
        #[arg(long)]
        no_isolation: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// `run`'s helper: makes the namespaces and mounts VALETKEY_ISOLATION
    /// says, then starts `isolated-init` in them.
    #[command(hide = true, name = "isolated-exec")]
    IsolatedExec {
        /// The reading end of `run`'s lifeline.
        #[arg(long)]
        lifeline: i32,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The first process of the agent's namespaces: confines itself, then
    /// starts the agent's command and waits for it.
    #[command(hide = true, name = "isolated-init")]
    IsolatedInit {
        /// The reading end of the helper's lifeline.
        #[arg(long)]
        lifeline: i32,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print the variables `run` would set, for containers and CI.
    Env {
        #[command(flatten)]
        mint: MintArgs,
        #[arg(long, value_enum, default_value = "dotenv")]
        format: EnvFormat,
    },
    /// What the credential in VALETKEY_CREDENTIAL may do, and until when.
    Whoami {
        #[command(flatten)]
        remote: Remote,
        /// Print the broker's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// The running broker's state: store, signing key, real tokens and what
    /// each reaches, what the database servers let agents' roles do. Exits 0
    /// when ready with no finding, 1 when not ready or degraded (a real
    /// token did not load), 3 when a token reaches beyond its environment or
    /// a database server lets agents' roles past their grants.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the broker's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held request, with a code of your own factor. A request
    /// needing two approvers is released by the second.
    Approve {
        /// The approval id (the refusal's `approval_id`).
        id: String,
        /// Your approver name, as configured in `[approvers.NAME]`.
        #[arg(long = "as", env = "VALETKEY_APPROVER")]
        approver: String,
        /// The code your authenticator app shows (asked for when left out).
        #[arg(long)]
        code: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Deny a held request, with a code of your own factor and a reason the
    /// agent reads.
    Deny {
        id: String,
        #[arg(long = "as", env = "VALETKEY_APPROVER")]
        approver: String,
        #[arg(long)]
        code: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Held requests: wait for a decision (agents, scripts), show and list
    /// them (admins).
    Approval {
        #[command(subcommand)]
        command: ApprovalCommand,
    },
    /// Approvers' factors: admins issue enrollment codes, approvers redeem
    /// them and register their own.
    Approver {
        #[command(subcommand)]
        command: ApproverCommand,
    },
    /// The MCP server for an agent's client (Claude Code, Cursor, Codex), on
    /// standard input and output, with the credential from VALETKEY_CREDENTIAL.
    Mcp {
        #[command(flatten)]
        remote: Remote,
        /// Print the configuration snippet that makes this client start it.
        #[arg(long, value_enum)]
        print_config: Option<mcp::McpClient>,
    },
    /// Ask the broker what the proxy would do with a request, before sending
    /// it: nothing goes upstream. Exits 0 when it would be allowed, 3 when
    /// refused.
    Check {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        request: CheckArgs,
        /// Print the broker's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The provider, as in the proxy URL (`railway`, `github`, …).
    #[arg(long)]
    pub provider: String,
    /// A GraphQL document (for GraphQL providers).
    #[arg(long, conflicts_with_all = ["method", "path", "body"])]
    pub graphql: Option<String>,
    /// The GraphQL variables, as JSON.
    #[arg(long, requires = "graphql")]
    pub variables: Option<String>,
    /// The GraphQL operation to run, when the document has several.
    #[arg(long, requires = "graphql")]
    pub operation_name: Option<String>,
    /// The HTTP method (REST providers).
    #[arg(long, requires = "path")]
    pub method: Option<String>,
    /// The path under the provider's proxy URL, query string included.
    #[arg(long, requires = "method")]
    pub path: Option<String>,
    /// The request body.
    #[arg(long)]
    pub body: Option<String>,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum ApprovalCommand {
    /// Wait while it is pending, with VALETKEY_CREDENTIAL. Exits 0 when
    /// approved, 3 when denied, expired or used, 1 when `--timeout` passes.
    Wait {
        id: String,
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        remote: Remote,
    },
    /// What was asked, its blast radius and where it stands.
    Show {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// What is held and not yet sent.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ApproverCommand {
    /// Issue a one-time enrollment code for a configured approver (admin).
    Invite {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Redeem your enrollment code: prints your new factor for your
    /// authenticator app.
    Enroll {
        name: String,
        /// The enrollment code (asked for when left out).
        #[arg(long)]
        code: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Confirm your new factor with the code your app shows.
    Confirm {
        name: String,
        #[arg(long)]
        code: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Vouch, with a code of your own factor, for the factors other
    /// approvers registered: they are in use from then on.
    Vouch {
        /// The approvers whose new factors you vouch for.
        #[arg(required = true)]
        approvers: Vec<String>,
        /// Your approver name.
        #[arg(long = "as", env = "VALETKEY_APPROVER")]
        voucher: String,
        #[arg(long)]
        code: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// The configured approvers and whether each has a factor (admin).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Every problem of a configuration at once, with file, line and fix.
    Check {
        /// The configuration file.
        #[arg(long, short, env = "VALETKEY_CONFIG", default_value = "valetkey.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum SecretCommand {
    /// Store a real token (read from standard input), encrypted; the
    /// running broker uses it at once.
    Set {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The stored secrets: names, when each was set, which providers use
    /// it. Never a value.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a stored secret; refused while a provider's token is it.
    #[command(alias = "remove")]
    Rm {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Move a token `valetkey scan` found into the broker: stored as NAME,
    /// and replaced in the file by `valetkey-secret:NAME`.
    Import {
        /// Where the token lies, as `scan` prints it: FILE:LINE.
        place: String,
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Issue a key to a named person (shown once, stored as a hash).
    Add {
        name: String,
        /// How long the key lives (default 90d, at most 365d).
        #[arg(long)]
        ttl: Option<String>,
        /// Write the key to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The admins and when each key expires.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a person's key; the broker refuses it at once.
    Remove {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Walk the hash chain and its signed checkpoints; report the first
    /// broken link. Exits 0 when intact, 1 when not. With --db, verifies a
    /// copy of the database file offline against published keys.
    Verify {
        #[command(flatten)]
        admin: AdminArgs,
        /// A copy of the broker's database file, read without a broker.
        #[arg(long, requires = "jwks")]
        db: Option<PathBuf>,
        /// The broker's published keys (a saved `GET /v1/audit/keys`: every
        /// signing key, retired ones too), which the checkpoints' signatures
        /// are checked against.
        #[arg(long, requires = "db")]
        jwks: Option<PathBuf>,
        /// With --db: fail unless the copy's newest signed checkpoint is at
        /// most this old (`2h`): events cut off after it would not show.
        #[arg(long, requires = "db")]
        fresh_within: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The newest events; with --follow, then every new one as it comes.
    Tail {
        #[command(flatten)]
        admin: AdminArgs,
        /// How many of the newest events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// A permission audit over a window: unused grants, destructive
    /// attempts, mismatches, leaked tokens, shared and unknown resources,
    /// stale secrets and keys, the chain's integrity.
    Report {
        #[command(flatten)]
        admin: AdminArgs,
        /// The window: `30d`, `12h`, or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, value_enum, default_value = "md")]
        format: ReportFormat,
        /// Write the report here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Events that match, oldest first.
    Search {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        env: Option<String>,
        /// The event kind: mint, proxy_refused, credential_refused, …
        #[arg(long = "type")]
        kind: Option<String>,
        /// `30d`, `12h`, or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ReportFormat {
    Md,
    Json,
    Html,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// A new active signing key; the old one verifies what it signed.
    Rotate {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A new master key: every secret and signing key is re-sealed under
    /// it at once, the key file is replaced, and the old key opens nothing
    /// in the store from then on.
    RotateMaster {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// A new CA: leaf certificates come from it from the next connection,
    /// and each agent trusts it from its next `run`.
    Rotate {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Register an agent named in the configuration; its launcher key is
    /// printed once.
    Add {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The registered agents.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove an agent: its launcher key and live credentials stop working.
    Remove {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum EnvFormat {
    Dotenv,
    Json,
    Shell,
}

/// Runs the command line; returns the process's exit code.
pub fn main() -> Result<ExitCode, CliError> {
    let cli = Cli::parse();
    match &cli.command {
        // Both replace this process, which must still be single-threaded.
        Command::IsolatedExec { lifeline, command } => return Ok(run::isolated_exec(*lifeline, command)),
        Command::IsolatedInit { lifeline, command } => return Ok(run::isolated_init(*lifeline, command)),
        Command::Run { mint, .. } => run::without_key_in_environment(mint)?,
        // The broker and `run` (which forwards signals to its agent) keep
        // Rust's ignored SIGPIPE; serve's sockets report a closed peer as
        // an error. Every other command prints for a reader who may stop
        // reading (`| head`): it ends quietly then, as Unix tools do,
        // instead of panicking on the failed write.
        Command::Serve { .. } => {}
        _ => {
            // SAFETY: single-threaded still (the runtime starts below), and
            // SIG_DFL installs no handler of ours.
            let _ = unsafe {
                nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
            };
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            action: "start the async runtime".into(),
            source,
        })?;
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve {
            local,
            listen,
            dev,
            user,
            insecure_listen,
        } => local::serve(local, listen, dev, user, insecure_listen).await,
        Command::Config {
            command: ConfigCommand::Check { config },
        } => local::config_check(&config),
        Command::Init {
            config,
            providers,
            agent,
        } => local::init(&config, &providers, &agent),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // `run`'s own helpers are hidden from help, and from completion too
            // (clap_complete lists hidden subcommands).
            let full = Cli::command();
            let visible = full.get_subcommands().filter(|c| !c.is_hide_set()).cloned();
            let mut shown = clap::Command::new("valetkey")
                .version(env!("CARGO_PKG_VERSION"))
                .subcommands(visible);
            clap_complete::generate(shell, &mut shown, "valetkey", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan { paths, json } => local::scan(paths, json),
        Command::Admin { command } => match command {
            AdminCommand::Add { name, ttl, out, admin } => admin::admin_add(admin, &name, ttl, out).await,
            AdminCommand::List { admin } => admin::admin_list(admin).await,
            AdminCommand::Remove { name, admin } => admin::admin_remove(admin, &name).await,
        },
        Command::Secret {
            command: SecretCommand::Set { name, admin },
        } => admin::secret_set(admin, &name).await,
        Command::Secret {
            command: SecretCommand::Import { place, name, admin },
        } => admin::secret_import(admin, &place, &name).await,
        Command::Secret {
            command: SecretCommand::List { admin },
        } => admin::secret_list(admin).await,
        Command::Secret {
            command: SecretCommand::Rm { name, admin },
        } => admin::secret_remove(admin, &name).await,
        Command::Keys {
            command: KeysCommand::Rotate { admin },
        } => admin::keys_rotate(admin).await,
        Command::Keys {
            command: KeysCommand::RotateMaster { admin },
        } => admin::keys_rotate_master(admin).await,
        Command::Ca { command: None, remote } => admin::ca_show(remote).await,
        Command::Ca {
            command: Some(CaCommand::Rotate { admin }),
            ..
        } => admin::ca_rotate(admin).await,
        Command::Audit { command } => match command {
            AuditCommand::Verify {
                db: Some(db),
                jwks: Some(jwks),
                fresh_within,
                json,
                ..
            } => local::audit_verify_copy(&db, &jwks, fresh_within.as_deref(), json).await,
            AuditCommand::Verify { admin, json, .. } => admin::audit_verify(admin, json).await,
            AuditCommand::Report {
                admin,
                since,
                format,
                out,
            } => admin::audit_report(admin, &since, format, out).await,
            AuditCommand::Tail {
                admin,
                lines,
                follow,
                json,
            } => admin::audit_tail(admin, lines, follow, json).await,
            AuditCommand::Search {
                admin,
                agent,
                env,
                kind,
                since,
                limit,
                json,
            } => {
                let filter = admin::SearchArgs {
                    agent,
                    env,
                    kind,
                    since,
                    limit,
                };
                admin::audit_search(admin, filter, json).await
            }
        },
        Command::Agent { command } => match command {
            AgentCommand::Add { name, admin } => admin::agent_add(admin, &name).await,
            AgentCommand::List { admin } => admin::agent_list(admin).await,
            AgentCommand::Remove { name, admin } => admin::agent_remove(admin, &name).await,
        },
        Command::Revoke {
            lease,
            session,
            agent,
            admin,
        } => admin::revoke(admin, lease, session, agent).await,
        Command::Run {
            mint,
            allow_tokens,
            no_isolation,
            command,
        } => run::run(mint, allow_tokens, !no_isolation, command).await,
        Command::IsolatedExec { .. } | Command::IsolatedInit { .. } => Err(CliError::Usage(
            "isolated-exec and isolated-init run before the runtime".into(),
        )),
        Command::Env { mint, format } => run::env(mint, format).await,
        Command::Whoami { remote, json } => run::whoami(remote, json).await,
        Command::Check { remote, request, json } => run::check(remote, request, json).await,
        Command::Mcp {
            print_config: Some(client),
            ..
        } => Ok(mcp::print_config(client)),
        Command::Mcp { remote, .. } => mcp::serve(remote).await,
        Command::Status { admin, json } => admin::status(admin, json).await,
        Command::Approve {
            id,
            approver,
            code,
            remote,
        } => approvals::decide(remote, &id, &approver, code, None).await,
        Command::Deny {
            id,
            approver,
            code,
            reason,
            remote,
        } => approvals::decide(remote, &id, &approver, code, Some(reason)).await,
        Command::Approval { command } => match command {
            ApprovalCommand::Wait { id, timeout, remote } => approvals::wait(remote, &id, timeout).await,
            ApprovalCommand::Show { id, admin } => approvals::show(admin, &id).await,
            ApprovalCommand::List { admin } => approvals::list(admin).await,
        },
        Command::Approver { command } => match command {
            ApproverCommand::Invite { name, admin } => approvals::invite(admin, &name).await,
            ApproverCommand::Enroll { name, code, remote } => approvals::enroll(remote, &name, code).await,
            ApproverCommand::Confirm { name, code, remote } => approvals::confirm(remote, &name, code).await,
            ApproverCommand::Vouch {
                approvers,
                voucher,
                code,
                remote,
            } => approvals::vouch(remote, &voucher, &approvers, code).await,
            ApproverCommand::List { admin } => approvals::approvers(admin).await,
        },
    }
}

/// Reads a key from a file only its owner can read, as ssh treats its keys.
fn read_key_file(path: &Path, what: &'static str) -> Result<SecretString, ClientError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ClientError::KeyFile {
        path: shown.clone(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ClientError::KeyFileOpen { path: shown });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| ClientError::KeyFile {
        path: shown.clone(),
        source,
    })?);
    let key = text.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(ClientError::NotAKey { path: shown, what });
    }
    Ok(SecretString::from(key))
}
