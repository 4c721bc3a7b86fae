//! Held requests from the command line: approvers approve or deny with a
//! code of their own factor (`approve`, `deny`), enroll that factor
//! themselves (`approver enroll`, `confirm`); admins issue enrollment codes
//! and list what is held; agents and scripts wait for a decision
//! (`approval wait`) with their credential.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::admin::{Admin, carries_keys_safely, named, path_segment, text};
use super::client::Client;
use super::{AdminArgs, CliError, Remote};

/// Each long poll's wait: under the client's own timeout.
const POLL_WAIT: &str = "25s";

/// A client for calls that carry a code or a factor's secret: over https,
/// or in clear only to this machine.
fn private_client(remote: &Remote) -> Result<Client, CliError> {
    if !carries_keys_safely(&remote.url) {
        return Err(CliError::Usage(format!(
            "refusing to send an approver's code or factor to {} in clear: reach the broker over https, or from its own machine",
            remote.url
        )));
    }
    Ok(Client::new(remote)?)
}

/// A line typed on standard input, after `prompt`.
fn typed(prompt: &str) -> Result<String, CliError> {
    eprint!("{prompt}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|source| CliError::Io {
            action: format!("read {prompt}"),
            source,
        })?;
    Ok(line.trim().to_owned())
}

/// The code given, else one typed.
fn code_or_prompt(code: Option<String>) -> Result<String, CliError> {
    match code {
        Some(code) => Ok(code),
        None => typed("the 6-digit code your authenticator app shows now"),
    }
}

/// POSTs `body` with a code of the caller's own factor (given, or typed)
/// added, over a connection fit to carry it.
async fn with_code(remote: &Remote, path: &str, mut body: Value, code: Option<String>) -> Result<Value, CliError> {
    let client = private_client(remote)?;
    body["code"] = json!(code_or_prompt(code)?);
    Ok(client.approvals(Method::POST, path, None, Some(&body), None).await?)
}

fn approval_id(id: &str) -> Result<String, CliError> {
    uuid::Uuid::parse_str(id).map(|u| u.to_string()).map_err(|_| {
        CliError::Usage(format!(
            "`{id}` is not an approval id (a UUID, as the refusal's `approval_id`)"
        ))
    })
}

fn print_approval(a: &Value) {
    println!("approval {}: {}", text(&a["id"]), text(&a["status"]));
    if let Some(summary) = a["summary"].as_str() {
        println!("{summary}");
    }
    let approved: Vec<&str> = a["approved_by"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "approved by {} of {} needed{}",
        approved.len(),
        a["approvers_needed"],
        if approved.is_empty() {
            String::new()
        } else {
            format!(" ({})", approved.join(", "))
        }
    );
    match a["status"].as_str() {
        Some("pending") => println!("decide by {}", text(&a["decide_by"])),
        Some("approved") => println!("the agent may send it once, until {}", text(&a["execute_by"])),
        Some("denied") => println!("denied by {}: {}", text(&a["denied_by"]), text(&a["reason"])),
        _ => {}
    }
}

pub async fn decide(
    remote: Remote,
    id: &str,
    approver: &str,
    code: Option<String>,
    reason: Option<String>,
) -> Result<ExitCode, CliError> {
    let id = approval_id(id)?;
    named("approver", approver)?;
    let (verb, body) = match reason {
        None => ("approve", json!({ "approver": approver })),
        Some(reason) => ("deny", json!({ "approver": approver, "reason": reason })),
    };
    let answer = with_code(&remote, &format!("/approvals/{id}/{verb}"), body, code).await?;
    print_approval(&answer);
    Ok(ExitCode::SUCCESS)
}

/// Waits while the approval is pending. Exits 0 when approved, 3 when
/// denied, expired or used, 1 when `timeout` passes first.
pub async fn wait(remote: Remote, id: &str, timeout: Duration) -> Result<ExitCode, CliError> {
    let id = approval_id(id)?;
    let credential = super::run::session_credential()?;
    let client = Client::for_agent(&remote)?;
    let started = Instant::now();
    loop {
        let answer = client
            .approvals(
                Method::GET,
                &format!("/approvals/{id}?wait={POLL_WAIT}"),
                Some(&credential),
                None,
                Some(Duration::from_secs(60)),
            )
            .await?;
        match answer["status"].as_str() {
            Some("pending") if started.elapsed() < timeout => continue,
            Some("pending") => {
                print_approval(&answer);
                eprintln!("still pending after {}", humantime::format_duration(timeout));
                return Ok(ExitCode::FAILURE);
            }
            Some("approved") => {
                print_approval(&answer);
                eprintln!("send the identical request again, with the header `Valetkey-Approval: {id}`");
                return Ok(ExitCode::SUCCESS);
            }
            _ => {
                print_approval(&answer);
                return Ok(ExitCode::from(3));
            }
        }
    }
}

pub async fn show(args: AdminArgs, id: &str) -> Result<ExitCode, CliError> {
    let id = approval_id(id)?;
    let answer = Admin::new(&args)?
        .call(Method::GET, &format!("/approvals/{id}"), None)
        .await?;
    print_approval(&answer);
    Ok(ExitCode::SUCCESS)
}

pub async fn list(args: AdminArgs) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?.call(Method::GET, "/approvals", None).await?;
    let open = answer["approvals"].as_array().cloned().unwrap_or_default();
    if open.is_empty() {
        eprintln!("no request is held for approval");
    }
    for (i, a) in open.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_approval(a);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn invite(args: AdminArgs, name: &str) -> Result<ExitCode, CliError> {
    named("approver", name)?;
    let answer = Admin::new(&args)?
        .call(
            Method::POST,
            &format!("/approvers/{}/invitations", path_segment(name)),
            None,
        )
        .await?;
    println!("{}", text(&answer["enrollment_code"]));
    eprintln!(
        "enrollment code for approver `{name}` (shown once; until {}). Give it to {name} alone: they redeem it \
         with `valetkey approver enroll {name} --code CODE` and register their own factor. Their enrollment is \
         recorded and alerted.",
        text(&answer["expires_at"])
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn enroll(remote: Remote, name: &str, code: Option<String>) -> Result<ExitCode, CliError> {
    named("approver", name)?;
    let client = private_client(&remote)?;
    let code = match code {
        Some(code) => code,
        None => typed("your enrollment code")?,
    };
    let answer = client
        .approvals(
            Method::POST,
            &format!("/approvers/{}/enrollment", path_segment(name)),
            None,
            Some(&json!({ "code": code })),
            None,
        )
        .await?;
    println!("{}", text(&answer["otpauth_uri"]));
    eprintln!(
        "Add this to your authenticator app (the URI above, or the secret {} typed in), then confirm it with the \
         code the app shows: valetkey approver confirm {name} --code CODE. It is shown once and works only once \
         confirmed.",
        text(&answer["secret"])
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn confirm(remote: Remote, name: &str, code: Option<String>) -> Result<ExitCode, CliError> {
    named("approver", name)?;
    let answer = with_code(
        &remote,
        &format!("/approvers/{}/confirmation", path_segment(name)),
        json!({}),
        code,
    )
    .await?;
    if answer["in_use"].as_bool() == Some(true) {
        eprintln!(
            "approver `{name}` registered a code factor, in use now; `valetkey approve ID --as {name}` takes its codes"
        );
    } else {
        eprintln!(
            "approver `{name}` registered a code factor; it is in use once an enrolled approver vouches for it: \
             valetkey approver vouch {name} --as THEM"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn vouch(
    remote: Remote,
    voucher: &str,
    approvers: &[String],
    code: Option<String>,
) -> Result<ExitCode, CliError> {
    for name in std::iter::once(voucher).chain(approvers.iter().map(String::as_str)) {
        named("approver", name)?;
    }
    let body = json!({ "approver": voucher, "approvers": approvers });
    let answer = with_code(&remote, "/approvers/vouch", body, code).await?;
    for v in answer["vouched"].as_array().into_iter().flatten() {
        let factors: Vec<&str> = v["factors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        eprintln!(
            "approver `{}`: {} in use now",
            text(&v["approver"]),
            factors.join(" and ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn approvers(args: AdminArgs) -> Result<ExitCode, CliError> {
    let answer = Admin::new(&args)?.call(Method::GET, "/approvers", None).await?;
    let list = answer["approvers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        eprintln!("no approver is configured; name them in `[approvers.NAME]`");
    }
    for a in &list {
        let join = |v: &Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut factor = match a["enrolled_at"].as_str() {
            Some(at) => format!("code factor since {at}"),
            None => "no code factor".into(),
        };
        for waiting in a["awaiting_vouch"].as_array().into_iter().flatten() {
            factor.push_str(&format!(
                "; a {} registered {} awaits a vouch",
                text(&waiting["factor"]),
                text(&waiting["registered_at"])
            ));
        }
        let locked = a["locked_until"]
            .as_str()
            .map(|u| format!("  (code locked until {u})"))
            .unwrap_or_default();
        println!(
            "{}\tproviders {}\tenvironments {}\ttiers {}\t{factor}{locked}",
            text(&a["name"]),
            join(&a["providers"]),
            join(&a["environments"]),
            join(&a["tiers"])
        );
    }
    Ok(ExitCode::SUCCESS)
}
