//! Ops' commands (`admin`, `agent`, `secret`, `keys`, `revoke`, `audit`,
//! `status`): clients of the running broker's admin API, authenticated by
//! the admin's own key. None of them opens the store: the broker is its one
//! writer.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::{AdminArgs, CliError, ReportFormat};
use crate::secrets::{ExposeSecret, SecretString, Zeroizing};

/// Where an admin keeps their key when they pass no flag.
pub(super) fn default_key_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("valetkey").join("admin.key"))
}

/// The admin key: `--admin-key-file` (or `VALETKEY_ADMIN_KEY_FILE`), else
/// `VALETKEY_ADMIN_KEY`, else the admin's own file under `~/.config`.
fn admin_key(args: &AdminArgs) -> Result<SecretString, ClientError> {
    if let Some(path) = &args.admin_key_file {
        return super::read_key_file(path, "admin key");
    }
    if let Ok(key) = std::env::var("VALETKEY_ADMIN_KEY")
        && !key.trim().is_empty()
    {
        return Ok(SecretString::from(key.trim()));
    }
    let default = default_key_file();
    match &default {
        Some(path) if path.exists() => super::read_key_file(path, "admin key"),
        _ => Err(ClientError::NoAdminKey {
            default: default.map_or("~/.config/valetkey/admin.key".into(), |p| p.display().to_string()),
        }),
    }
}

/// The broker and the key every admin command talks to it with.
pub(super) struct Admin {
    client: Client,
    key: SecretString,
}

/// Whether an admin key may be sent to `url`: over https, or in clear only
/// to this machine.
pub(super) fn carries_keys_safely(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(name))) => name.eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}

impl Admin {
    pub(super) fn new(args: &AdminArgs) -> Result<Admin, CliError> {
        if !carries_keys_safely(&args.remote.url) {
            return Err(CliError::Usage(format!(
                "refusing to send an admin key to {} in clear: reach the broker over https (its own, \
                 `[server] tls`, or a proxy's that terminates TLS in front of it), or from its own machine",
                args.remote.url
            )));
        }
        Ok(Admin {
            key: admin_key(args)?,
            client: Client::new(&args.remote)?,
        })
    }

    pub(super) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        Ok(self.client.admin(method, path, &self.key, body).await?)
    }
}

fn io(action: &str) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        action: action.to_owned(),
        source,
    }
}

pub(super) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

pub async fn admin_add(
    args: AdminArgs,
    name: &str,
    ttl: Option<String>,
    out: Option<PathBuf>,
) -> Result<ExitCode, CliError> {
    named("admin", name)?;
    let admin = Admin::new(&args)?;
    if let Some(path) = &out
        && std::fs::symlink_metadata(path).is_ok()
    {
        return Err(CliError::Usage(format!(
            "{} exists; choose another --out, or remove it first (nothing was issued)",
            path.display()
        )));
    }
    let mut body = json!({ "name": name });
    if let Some(ttl) = ttl {
        body["ttl"] = json!(ttl);
    }
    let answer = admin.call(Method::POST, "/admins", Some(&body)).await?;
    let key = SecretString::from(text(&answer["admin_key"]));
    match out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io("create the key file's directory"))?;
            }
            if let Err(e) = crate::secrets::write_private(&path, key.expose_secret().as_bytes()) {
                // The key is issued and stored only as a hash: shown here, or lost.
                println!("{}", key.expose_secret());
                eprintln!(
                    "{e}. The admin key of `{name}` is printed above instead (shown once): keep it in a file \
                     only you can read"
                );
                return Ok(ExitCode::FAILURE);
            }
            eprintln!(
                "admin key of `{name}` written to {} (mode 0600); it expires at {}",
                path.display(),
                text(&answer["expires_at"])
            );
        }
        None => {
            println!("{}", key.expose_secret());
            eprintln!(
                "admin key of `{name}` (shown once, stored only as a hash); it expires at {}. \
                 Keep it in ~/.config/valetkey/admin.key (mode 0600), out of any agent's reach",
                text(&answer["expires_at"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn admin_list(args: AdminArgs) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?.call(Method::GET, "/admins", None).await?;
    for a in answer["admins"].as_array().into_iter().flatten() {
        let state = if a["live"].as_bool() == Some(true) {
            "expires"
        } else {
            "EXPIRED"
        };
        println!(
            "{}\tkey {}\tadded {}\t{state} {}",
            text(&a["name"]),
            text(&a["key_id"]),
            text(&a["created_at"]),
            text(&a["expires_at"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn admin_remove(args: AdminArgs, name: &str) -> Result<ExitCode, CliError> {
    named("admin", name)?;
    Admin::new(&args)?
        .call(Method::DELETE, &format!("/admins/{}", path_segment(name)), None)
        .await?;
    eprintln!("removed the admin key of `{name}`; the broker refuses it from now on");
    Ok(ExitCode::SUCCESS)
}

/// Refuses a name the broker would refuse, before anything is sent: a
/// name is a path segment of the call.
pub(super) fn named(what: &'static str, name: &str) -> Result<(), CliError> {
    if crate::config::valid_name(name) {
        return Ok(());
    }
    Err(CliError::Admin(crate::admin::AdminError::InvalidName {
        what,
        name: name.to_owned(),
    }))
}

/// A name as one path segment: names are checked by the broker, but a `/`
/// or `?` must not change which route is called.
pub(super) fn path_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

pub async fn agent_add(args: AdminArgs, name: &str) -> Result<ExitCode, CliError> {
    named("agent", name)?;
    let answer = Admin::new(&args)?
        .call(Method::POST, "/agents", Some(&json!({ "name": name })))
        .await?;
    let key = SecretString::from(text(&answer["launcher_key"]));
    println!("{}", key.expose_secret());
    eprintln!(
        "launcher key for agent `{name}` (shown once, stored only as a hash).\n\
         Give it to whoever launches the agent, not to the agent: \
         valetkey run --agent {name} --env ENV --key-file FILE -- CMD"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn agent_list(args: AdminArgs) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?.call(Method::GET, "/agents", None).await?;
    let agents = answer["agents"].as_array().cloned().unwrap_or_default();
    if agents.is_empty() {
        eprintln!("no agent is registered; `valetkey agent add NAME` registers one");
    }
    for a in &agents {
        let note = if a["configured"].as_bool() == Some(true) {
            ""
        } else {
            "  (not in the configuration: it can mint nothing)"
        };
        println!(
            "{}\tkey {}\tadded {}{note}",
            text(&a["name"]),
            text(&a["key_id"]),
            text(&a["created_at"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn agent_remove(args: AdminArgs, name: &str) -> Result<ExitCode, CliError> {
    named("agent", name)?;
    let answer = Admin::new(&args)?
        .call(Method::DELETE, &format!("/agents/{}", path_segment(name)), None)
        .await?;
    let revoked = answer["revoked_leases"].as_array().map_or(0, Vec::len);
    eprintln!("removed agent `{name}`; revoked {revoked} live credential(s)");
    Ok(ExitCode::SUCCESS)
}

pub async fn secret_set(args: AdminArgs, name: &str) -> Result<ExitCode, CliError> {
    named("secret", name)?;
    let admin = Admin::new(&args)?;
    let mut value = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut value)
        .map_err(io("read the secret from standard input"))?;
    let value = value.trim_end_matches(['\r', '\n']);
    if value.trim().is_empty() {
        return Err(CliError::Usage(
            "the secret is empty: pass the token on standard input (nothing was stored)".into(),
        ));
    }
    let answer = store_secret(&admin, name, value).await?;
    eprintln!("{}", secret_stored(name, &answer));
    Ok(ExitCode::SUCCESS)
}

/// What storing a secret changed, in words.
fn secret_stored(name: &str, answer: &Value) -> String {
    let users: Vec<String> = answer["used_by"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            format!(
                "{} in {} from {}",
                text(&u["provider"]),
                text(&u["env"]),
                text(&u["in_use_from"])
            )
        })
        .collect();
    if users.is_empty() {
        format!(
            "stored secret `{name}`; no provider uses it yet: name it in a provider's `tokens` \
             (`{{ stored = \"{name}\" }}`) and restart the broker"
        )
    } else {
        format!("stored secret `{name}`; in use by {}", users.join(", "))
    }
}

/// Stores a token through the admin API; the body holds it only for the call.
async fn store_secret(admin: &Admin, name: &str, value: &str) -> Result<Value, CliError> {
    let body = Zeroizing::new(json!({ "value": value }).to_string());
    let body: Value = serde_json::from_str(&body).map_err(|e| CliError::Usage(e.to_string()))?;
    admin
        .call(Method::PUT, &format!("/secrets/{}", path_segment(name)), Some(&body))
        .await
}

/// `secret list`: names, ages and users, never values.
pub async fn secret_list(args: AdminArgs) -> Result<ExitCode, CliError> {
    let admin = Admin::new(&args)?;
    let answer = admin.call(Method::GET, "/secrets", None).await?;
    let secrets = answer["secrets"].as_array().cloned().unwrap_or_default();
    if secrets.is_empty() {
        eprintln!("no stored secret; `valetkey secret set NAME` stores one (read from standard input)");
    }
    for s in &secrets {
        let users: Vec<String> = s["used_by"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| format!("{}/{}", text(&u["provider"]), text(&u["env"])))
            .collect();
        let users = if users.is_empty() {
            "used by no provider".to_owned()
        } else {
            users.join(", ")
        };
        println!("{:<24} set {}  {users}", text(&s["name"]), text(&s["set_at"]));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn secret_remove(args: AdminArgs, name: &str) -> Result<ExitCode, CliError> {
    named("secret", name)?;
    let admin = Admin::new(&args)?;
    admin
        .call(Method::DELETE, &format!("/secrets/{}", path_segment(name)), None)
        .await?;
    eprintln!("removed stored secret `{name}`");
    Ok(ExitCode::SUCCESS)
}

/// `secret import FILE:LINE NAME`: the one token `scan` finds on that line
/// goes to the broker, then leaves the file (replaced in place, atomically,
/// the file's mode kept). Nothing in the file changes unless it was stored.
pub async fn secret_import(args: AdminArgs, place: &str, name: &str) -> Result<ExitCode, CliError> {
    named("secret", name)?;
    let usage = || {
        CliError::Usage(format!(
            "`{place}` is not FILE:LINE; write it as `valetkey scan` prints it"
        ))
    };
    let (file, line) = place.rsplit_once(':').ok_or_else(usage)?;
    let line: usize = line.parse().ok().filter(|n| *n > 0).ok_or_else(usage)?;
    let path = PathBuf::from(file);
    let admin = Admin::new(&args)?;
    // The file is replaced by a rewritten copy: through a link, or with a
    // second name, the token would stay where the other name points.
    let meta = std::fs::symlink_metadata(&path).map_err(io("read the file to import from"))?;
    if meta.file_type().is_symlink() || meta.nlink() > 1 {
        return Err(CliError::Usage(format!(
            "{file} is a link or has other names; import from the file itself (nothing was stored)"
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io("read the file to import from"))?);
    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let hits: Vec<_> = crate::scan::scan_text(&file_name, &text)
        .into_iter()
        .filter(|h| h.line == line)
        .collect();
    let hit = match hits.as_slice() {
        [hit] => hit,
        [] => {
            return Err(CliError::Usage(format!(
                "no real token lies at {place}; `valetkey scan {file}` lists where they are"
            )));
        }
        more => {
            return Err(CliError::Usage(format!(
                "{place} holds {} tokens; put each on a line of its own, then import them one by one",
                more.len()
            )));
        }
    };
    // Where the line starts in the text, whatever its line ending.
    let start: usize = text.split_inclusive('\n').take(line - 1).map(str::len).sum();
    let token = start + hit.span.start..start + hit.span.end;
    store_secret(&admin, name, &text[token.clone()]).await?;

    let marker = format!("valetkey-secret:{name}");
    let rewritten = Zeroizing::new(format!("{}{marker}{}", &text[..token.start], &text[token.end..]));
    let replace = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut suffix = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix)
            .map_err(|_| std::io::Error::other("the random number generator failed"))?;
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!(".valetkey-import-{}", hex::encode(suffix)));
        let staged = PathBuf::from(staged);
        let written = (|| {
            // A new file, never one planted in its place, with the mode and
            // (where allowed) the owner of the one it replaces.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .mode(meta.mode() & 0o7777)
                .open(&staged)?;
            let _ = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()));
            f.set_permissions(meta.permissions())?;
            f.write_all(rewritten.as_bytes())?;
            f.sync_all()?;
            // Someone wrote to the file meanwhile: their change is not lost.
            if *Zeroizing::new(std::fs::read_to_string(&path)?) != *text {
                return Err(std::io::Error::other(
                    "the file changed while the token was being imported",
                ));
            }
            std::fs::rename(&staged, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&staged);
        }
        written
    };
    if let Err(e) = replace() {
        return Err(CliError::Io {
            action: format!(
                "remove the token from {} (it is stored as `{name}` in the broker; delete it from the file by hand)",
                path.display()
            ),
            source: e,
        });
    }
    eprintln!(
        "stored {} as secret `{name}`, and {place} now reads `{marker}` in its place.\n\
         Rotate it at its provider now: it lay where anything running as you could read it. \
         Then give the broker the new one (`valetkey secret set {name}`) and name it in the configuration \
         (`tokens = {{ ENV = {{ stored = \"{name}\" }} }}`)",
        hit.kind
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn keys_rotate(args: AdminArgs) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?.call(Method::POST, "/keys/rotate", None).await?;
    let kid = text(&answer["active_kid"]);
    println!("{kid}");
    eprintln!("new signing key {kid} is active; the previous key verifies until what it signed expires");
    Ok(ExitCode::SUCCESS)
}

pub async fn ca_show(remote: super::Remote) -> Result<ExitCode, CliError> {
    print!("{}", Client::new(&remote)?.ca_pem().await?);
    Ok(ExitCode::SUCCESS)
}

pub async fn ca_rotate(args: AdminArgs) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?.call(Method::POST, "/ca/rotate", None).await?;
    print!("{}", text(&answer["certificate"]));
    eprintln!(
        "the forward proxy's CA is now {}: new connections get leaf certificates from it; agents trust it from \
         their next `valetkey run` (a running one keeps the old bundle until it restarts)",
        text(&answer["ca"])
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn keys_rotate_master(args: AdminArgs) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?
        .call(Method::POST, "/keys/rotate-master", None)
        .await?;
    println!("{}", text(&answer["key_id"]));
    eprintln!(
        "the broker's master key file now holds a new key, and {} sealed record(s) moved under it; the old \
         key opens nothing in the store any more (it still opens backups taken before: destroy or keep them \
         accordingly). Back up the new key file",
        answer["resealed"]
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(
    args: AdminArgs,
    lease: Option<String>,
    session: Option<String>,
    agent: Option<String>,
) -> Result<ExitCode, CliError> {
    let body = match (lease, session, agent) {
        (Some(id), None, None) => json!({ "lease": id }),
        (None, Some(sid), None) => json!({ "session": sid }),
        (None, None, Some(name)) => json!({ "agent": name }),
        _ => {
            return Err(CliError::Usage(
                "name one thing to revoke: LEASE, --session SID or --agent NAME".into(),
            ));
        }
    };
    let answer = Admin::new(&args)?
        .call(Method::POST, "/revocations", Some(&body))
        .await?;
    let revoked = answer["revoked_leases"].as_array().cloned().unwrap_or_default();
    for lease in &revoked {
        println!("{}", text(lease));
    }
    eprintln!(
        "revoked {} live credential(s); every broker refuses them within a second, and their database roles end",
        revoked.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_verify(args: AdminArgs, json: bool) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?.call(Method::GET, "/audit/verify", None).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer["verification"]).unwrap_or_default()
        );
    } else {
        println!("{}", text(&answer["summary"]));
    }
    Ok(if answer["intact"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn audit_report(
    args: AdminArgs,
    since: &str,
    format: ReportFormat,
    out: Option<PathBuf>,
) -> Result<ExitCode, CliError> {
    let admin = Admin::new(&args)?;
    let format = match format {
        ReportFormat::Md => "md",
        ReportFormat::Json => "json",
        ReportFormat::Html => "html",
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("since", since)
        .append_pair("format", format)
        .finish();
    let text = admin
        .client
        .admin_text(&format!("/audit/report?{query}"), &admin.key)
        .await?;
    match out {
        Some(path) => {
            std::fs::write(&path, &text).map_err(io("write the report"))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `audit tail --follow` asks for new events.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Most events one page of the audit API holds.
const PAGE: i64 = 1000;

pub async fn audit_tail(args: AdminArgs, lines: i64, follow: bool, json: bool) -> Result<ExitCode, CliError> {
    let admin = Admin::new(&args)?;
    let mut last = 0;
    if lines > 0 {
        let page = admin
            .call(
                Method::GET,
                &format!("/audit/events?newest=true&limit={}", lines.min(PAGE)),
                None,
            )
            .await?;
        last = print_page(&page, json);
    } else {
        // Only what comes next: start from the head.
        let page = admin
            .call(Method::GET, "/audit/events?newest=true&limit=1", None)
            .await?;
        last = page["next_after"].as_i64().unwrap_or(last);
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::io::stdout().flush().ok();
        tokio::time::sleep(FOLLOW_EVERY).await;
        let page = admin
            .call(Method::GET, &format!("/audit/events?after={last}&limit={PAGE}"), None)
            .await?;
        let next = print_page(&page, json);
        last = last.max(next);
    }
}

pub struct SearchArgs {
    pub agent: Option<String>,
    pub env: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub limit: i64,
}

pub async fn audit_search(args: AdminArgs, search: SearchArgs, json: bool) -> Result<ExitCode, CliError> {
    let admin = Admin::new(&args)?;
    let mut after = 0;
    let mut printed = 0;
    while printed < search.limit {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("agent", &search.agent),
            ("env", &search.env),
            ("type", &search.kind),
            ("since", &search.since),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.append_pair("after", &after.to_string());
        query.append_pair("limit", &(search.limit - printed).min(PAGE).to_string());
        let page = admin
            .call(Method::GET, &format!("/audit/events?{}", query.finish()), None)
            .await?;
        let count = page["events"].as_array().map_or(0, Vec::len) as i64;
        if count == 0 {
            break;
        }
        after = print_page(&page, json);
        printed += count;
    }
    if !json {
        eprintln!("{printed} event(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a page of events; returns the position to continue after.
fn print_page(page: &Value, json: bool) -> i64 {
    for e in page["events"].as_array().into_iter().flatten() {
        print_event(e, json);
    }
    page["next_after"].as_i64().unwrap_or(0)
}

/// One event on one line: time, position, kind, who, where, and its detail.
fn print_event(e: &Value, json: bool) {
    if json {
        println!("{e}");
        return;
    }
    let whom = match (e["agent"].as_str(), e["env"].as_str()) {
        (Some(a), Some(env)) => format!("{a}@{env}"),
        (Some(a), None) => a.to_owned(),
        (None, Some(env)) => format!("@{env}"),
        (None, None) => "-".into(),
    };
    println!(
        "{} #{:<6} {:<28} {:<20} {:<24} {}",
        text(&e["at"]),
        e["seq"],
        text(&e["kind"]),
        text(&e["actor"]),
        whom,
        readable_times(&e["detail"])
    );
}

/// The detail with its times in the one format `at` is in (RFC 3339, UTC):
/// events record them as unix seconds or milliseconds (`expires_at`).
fn readable_times(detail: &Value) -> Value {
    match detail {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = match v.as_i64() {
                        // Milliseconds from 1973 on; seconds before 5138.
                        Some(n) if k.ends_with("_at") && n >= 100_000_000_000 => crate::time::rfc3339_ms(n).into(),
                        Some(n) if k.ends_with("_at") && n > 0 => crate::time::rfc3339(n).into(),
                        _ => readable_times(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(readable_times).collect()),
        other => other.clone(),
    }
}

pub async fn status(args: AdminArgs, json: bool) -> Result<ExitCode, CliError> {
    let admin = Admin::new(&args)?;
    let state = admin.client.readiness(&admin.key).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&state).unwrap_or_default());
    } else {
        super::run::print_status(&state, &args.remote.url);
    }
    let findings = state["token_reach"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["outcome"] == "finding")
        .count()
        + state["database_findings"].as_array().map_or(0, Vec::len);
    Ok(match (state["status"].as_str(), findings) {
        (Some("ready"), 0) => ExitCode::SUCCESS,
        (Some("ready" | "degraded"), n) if n > 0 => ExitCode::from(super::run::REFUSED),
        _ => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::{carries_keys_safely, readable_times};
    use serde_json::json;

    #[test]
    fn times_in_an_events_detail_are_rfc3339_like_its_at() {
        let detail = json!({
            "lease_id": "l1",
            "expires_at": 1_700_000_900,
            "roles": [{ "created_at": 1_700_000_000_123_i64, "ttl_seconds": 900 }],
        });
        assert_eq!(
            readable_times(&detail),
            json!({
                "lease_id": "l1",
                "expires_at": "2023-11-14T22:28:20Z",
                "roles": [{ "created_at": "2023-11-14T22:13:20.123Z", "ttl_seconds": 900 }],
            })
        );
    }

    #[test]
    fn admin_keys_travel_in_clear_only_within_the_machine() {
        for url in [
            "http://127.0.0.1:8700",
            "http://127.9.9.9:8700",
            "http://[::1]:8700",
            "http://localhost:8700",
            "https://valetkey.internal",
            "https://10.0.0.5:8700",
        ] {
            assert!(carries_keys_safely(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8700",
            "http://valetkey.internal:8700",
            "http://localhost.evil.example:8700",
            "http://0.0.0.0:8700",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            assert!(!carries_keys_safely(url), "{url}");
        }
    }
}
