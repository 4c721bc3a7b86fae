//! The agent side: `run` (mint, launch, revoke at exit), `env`, `whoami`
//! and `check`; and `status`, which anyone who can reach the broker may ask.

use std::collections::BTreeMap;
use std::process::ExitCode;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

use super::client::{Client, ClientError};
use super::{CheckArgs, CliError, EnvFormat, MintArgs, Remote};
use crate::secrets::{ExposeSecret, SecretString, Zeroizing};

/// Signals passed on to the child, so it can shut down cleanly.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn launcher_key(args: &MintArgs) -> Result<SecretString, ClientError> {
    let text = match &args.key_file {
        Some(path) => return super::read_key_file(path, "launcher key"),
        None => Zeroizing::new(std::env::var("VALETKEY_AGENT_KEY").map_err(|_| ClientError::NoLauncherKey)?),
    };
    let key = text.trim();
    if key.is_empty() {
        return Err(ClientError::NoLauncherKey);
    }
    Ok(SecretString::from(key))
}

struct Minted {
    session_id: String,
    vars: BTreeMap<String, SecretString>,
}

async fn mint(
    client: &Client,
    key: &SecretString,
    args: &MintArgs,
    tokens_in_reach: &[crate::scan::Finding],
) -> Result<Minted, CliError> {
    let mut body = json!({ "agent": args.agent, "env": args.env });
    if !tokens_in_reach.is_empty() {
        body["tokens_in_reach"] = json!(tokens_in_reach);
    }
    if let Some(ttl) = &args.ttl {
        body["ttl"] = json!(ttl);
    }
    if !args.providers.is_empty() {
        body["providers"] = json!(args.providers);
    }
    if !args.scopes.is_empty() {
        body["scopes"] = json!(args.scopes);
    }
    let answer = client.mint(key, &body).await?;
    for s in answer["stripped"].as_array().into_iter().flatten() {
        eprintln!(
            "valetkey: not granted: {}{} ({})",
            s["provider"].as_str().map(|p| format!("{p} ")).unwrap_or_default(),
            s["scope"].as_str().unwrap_or("?"),
            s["why"].as_str().unwrap_or("?")
        );
    }
    let vars = answer["env_vars"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), SecretString::from(v))))
        .collect();
    eprintln!(
        "valetkey: credential for agent {} in {} until {} (lease {})",
        answer["agent"].as_str().unwrap_or("?"),
        answer["env"].as_str().unwrap_or("?"),
        answer["expires_at"].as_str().unwrap_or("?"),
        answer["lease_id"].as_str().unwrap_or("?"),
    );
    Ok(Minted {
        session_id: answer["session_id"].as_str().unwrap_or_default().to_owned(),
        vars,
    })
}

/// The real tokens lying in the working directory the agent is launched
/// in; refused unless the launcher allows them.
fn tokens_in_reach(allow: bool) -> Result<Vec<crate::scan::Finding>, CliError> {
    let report = crate::scan::scan_paths(&[".".into()], crate::scan::Limits::default());
    if report.incomplete {
        eprintln!(
            "valetkey: the scan of the working directory stopped after {} files; what lies past them was not checked",
            report.files_read
        );
    }
    for (path, why) in &report.skipped {
        eprintln!("valetkey: not scanned for tokens: {}: {why}", path.display());
    }
    for f in &report.findings {
        eprintln!("valetkey: {f}");
    }
    if report.findings.is_empty() {
        return Ok(report.findings);
    }
    if allow {
        eprintln!(
            "valetkey: launching with {} real token(s) in the agent's reach (--allow-tokens); the broker records and alerts it",
            report.findings.len()
        );
        return Ok(report.findings);
    }
    Err(CliError::TokensInReach {
        count: report.findings.len(),
    })
}

/// The key files a process running as the launcher can read: until `run`
/// isolates the agent, it can read them too.
fn warn_of_key_files(args: &MintArgs) {
    let files: Vec<String> = [
        args.key_file.clone(),
        std::env::var_os("VALETKEY_ADMIN_KEY_FILE").map(std::path::PathBuf::from),
        super::admin::default_key_file(),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.is_file())
    .map(|p| p.display().to_string())
    .collect();
    if !files.is_empty() {
        eprintln!(
            "valetkey: warning: the agent runs as you and `run` does not isolate it yet, so it can read {}; \
             with them it can act beyond its credential. Run agents as another user than the one holding these keys",
            files.join(", ")
        );
    }
}

pub async fn run(args: MintArgs, allow_tokens: bool, command: Vec<String>) -> Result<ExitCode, CliError> {
    let key = launcher_key(&args)?;
    let in_reach = tokens_in_reach(allow_tokens)?;
    warn_of_key_files(&args);
    let client = Client::new(&args.remote.url)?;
    let mut streams = Vec::new();
    for sig in FORWARDED {
        let stream = signal(SignalKind::from_raw(sig as i32)).map_err(|source| CliError::Io {
            action: format!("listen for {sig}"),
            source,
        })?;
        streams.push((sig, stream));
    }
    let minted = mint(&client, &key, &args, &in_reach).await?;

    let mut child = tokio::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        // The launcher key mints credentials and an admin key changes the
        // broker; the agent must never hold either.
        .env_remove("VALETKEY_AGENT_KEY")
        .env_remove("VALETKEY_ADMIN_KEY")
        .env_remove("VALETKEY_ADMIN_KEY_FILE")
        .envs(minted.vars.iter().map(|(k, v)| (k, v.expose_secret())));
    let spawned = child.spawn();
    let status = match spawned {
        Err(source) => {
            end_session(&client, &key, &minted.session_id).await;
            return Err(CliError::Io {
                action: format!("start `{}`", command[0]),
                source,
            });
        }
        Ok(mut child) => {
            let forwarders: Vec<_> = match child.id() {
                Some(id) => streams
                    .into_iter()
                    .map(|(sig, mut stream)| {
                        let pid = Pid::from_raw(id as i32);
                        tokio::spawn(async move {
                            while stream.recv().await.is_some() {
                                let _ = kill(pid, sig);
                            }
                        })
                    })
                    .collect(),
                None => Vec::new(),
            };
            let status = child.wait().await;
            forwarders.iter().for_each(|f| f.abort());
            status
        }
    };
    end_session(&client, &key, &minted.session_id).await;
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

async fn end_session(client: &Client, key: &SecretString, session_id: &str) {
    if let Err(e) = client.end_session(key, session_id).await {
        eprintln!(
            "valetkey: WARNING: could not revoke session {session_id}: {e}\n\
             valetkey: its credential stays valid until it expires; revoke it with `valetkey revoke --session {session_id}`"
        );
    }
}

pub async fn env(args: MintArgs, format: EnvFormat) -> Result<ExitCode, CliError> {
    let key = launcher_key(&args)?;
    let client = Client::new(&args.remote.url)?;
    let minted = mint(&client, &key, &args, &[]).await?;
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

pub async fn whoami(remote: Remote, json: bool) -> Result<ExitCode, CliError> {
    let credential = std::env::var("VALETKEY_CREDENTIAL").map_err(|_| ClientError::NoCredential)?;
    let client = Client::new(&remote.url)?;
    let me = client.whoami(&SecretString::from(credential)).await?;
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
    let credential = std::env::var("VALETKEY_CREDENTIAL").map_err(|_| ClientError::NoCredential)?;
    let request = check_request(args)?;
    let client = Client::new(&remote.url)?;
    let answer = client.check(&SecretString::from(credential), &request).await?;
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
