//! `valetkey mcp`: the MCP server on stdio, for an agent's client (Claude
//! Code, Cursor, Codex) to start as a subprocess. It is a client of the
//! broker's HTTP API with the credential `valetkey run` put in the
//! environment, so its tools answer what the API answers; and
//! `--print-config` prints the snippet each client needs to start it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use reqwest::Method;
use rmcp::ServiceExt;
use rmcp::model::Extensions;
use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::{CliError, Remote};
use crate::mcp::{Answer, Ask, Server};
use crate::secrets::SecretString;

/// The MCP clients `--print-config` knows.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum McpClient {
    Claude,
    Cursor,
    Codex,
}

/// Serves MCP on standard input and output until the client closes them.
pub async fn serve(remote: Remote) -> Result<ExitCode, CliError> {
    let credential = SecretString::from(std::env::var("VALETKEY_CREDENTIAL").map_err(|_| ClientError::NoCredential)?);
    let ask: Arc<dyn Ask> = Arc::new(OverHttp {
        client: Client::new(&remote)?,
        credential,
    });
    let failed = |e: &dyn std::fmt::Display| CliError::Io {
        action: "serve MCP on standard input and output".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let running = Server::new(ask)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| failed(&e))?;
    running.waiting().await.map_err(|e| failed(&e))?;
    Ok(ExitCode::SUCCESS)
}

/// The broker's HTTP API, as the credential in the environment.
struct OverHttp {
    client: Client,
    credential: SecretString,
}

/// The API's answer, its refusal's problem+json as it came, or a problem
/// saying the broker could not be asked.
fn answered(answer: Result<Value, ClientError>) -> Answer {
    answer.map_err(|e| match e {
        ClientError::Refused { problem, .. } => *problem,
        other => json!({
            "type": "broker_unreachable",
            "title": "The broker could not be asked",
            // The agent reads this: what happened, without the operator's
            // next step (starting the broker) that the CLI's text adds.
            "detail": match &other {
                ClientError::Unreachable { url, reason } => format!("cannot reach the broker at {url}: {reason}"),
                other => other.to_string(),
            },
            "agent_guidance": "This is a problem between this MCP server and the broker, not a refusal. Wait and try again; if it persists, tell a human, quoting the detail. Do not reach providers another way.",
        }),
    })
}

#[async_trait::async_trait]
impl Ask for OverHttp {
    async fn whoami(&self, _: &Extensions) -> Answer {
        answered(self.client.whoami(&self.credential).await)
    }

    async fn check(&self, _: &Extensions, request: Value) -> Answer {
        answered(self.client.check(&self.credential, &request).await)
    }

    async fn explain(&self, _: &Extensions, event_id: &str) -> Answer {
        answered(self.client.event(&self.credential, event_id).await)
    }

    async fn request_approval(&self, _: &Extensions, request: Value) -> Answer {
        answered(
            self.client
                .approvals(Method::POST, "/approvals", Some(&self.credential), Some(&request), None)
                .await,
        )
    }

    async fn approval(&self, _: &Extensions, id: &str, wait: Duration) -> Answer {
        let path = format!("/approvals/{}?wait={}s", super::admin::path_segment(id), wait.as_secs());
        let timeout = wait + Duration::from_secs(30);
        answered(
            self.client
                .approvals(Method::GET, &path, Some(&self.credential), None, Some(timeout))
                .await,
        )
    }
}

/// The snippet that makes `client` start `valetkey mcp` with the broker's
/// URL and the credential from the environment it was launched in.
/// Where the client reads its configuration, and the snippet to put
/// there: only the snippet goes to standard output, so `> .mcp.json` makes
/// a file the client parses.
pub fn config(client: McpClient, program: &str) -> (String, String) {
    match client {
        McpClient::Claude => {
            let json = json!({
                "mcpServers": {
                    "valetkey": {
                        "type": "stdio",
                        "command": program,
                        "args": ["mcp"],
                        "env": {
                            "VALETKEY_URL": "${VALETKEY_URL}",
                            "VALETKEY_CREDENTIAL": "${VALETKEY_CREDENTIAL}",
                        },
                    }
                }
            });
            (
                format!(".mcp.json in the project (or: claude mcp add --scope project valetkey -- {program} mcp)"),
                format!("{}\n", serde_json::to_string_pretty(&json).unwrap_or_default()),
            )
        }
        McpClient::Cursor => {
            let json = json!({
                "mcpServers": {
                    "valetkey": {
                        "command": program,
                        "args": ["mcp"],
                        "env": {
                            "VALETKEY_URL": "${env:VALETKEY_URL}",
                            "VALETKEY_CREDENTIAL": "${env:VALETKEY_CREDENTIAL}",
                        },
                    }
                }
            });
            (
                ".cursor/mcp.json in the project (or ~/.cursor/mcp.json)".to_owned(),
                format!("{}\n", serde_json::to_string_pretty(&json).unwrap_or_default()),
            )
        }
        McpClient::Codex => {
            let command = toml::Value::String(program.to_owned());
            (
                "~/.codex/config.toml (or .codex/config.toml in a trusted project)".to_owned(),
                format!(
                    "[mcp_servers.valetkey]\n\
                 command = {command}\n\
                 args = [\"mcp\"]\n\
                 # Forwarded from the environment Codex was launched in (`valetkey run`).\n\
                 env_vars = [\"VALETKEY_URL\", \"VALETKEY_CREDENTIAL\"]\n"
                ),
            )
        }
    }
}

/// `valetkey mcp --print-config CLIENT`.
pub fn print_config(client: McpClient) -> ExitCode {
    // The path of this binary: the client starts it without a shell's PATH.
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_else(|| "valetkey".to_owned());
    let (place, snippet) = config(client, &program);
    print!("{snippet}");
    eprintln!(
        "valetkey: put this in {place}. The client reads VALETKEY_URL and VALETKEY_CREDENTIAL from its own \
         environment: launch it with `valetkey run --env ENV --key-file KEY -- CLIENT`"
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_clients_snippet_parses_and_starts_valetkey_mcp_with_the_credential_from_the_environment() {
        for client in [McpClient::Claude, McpClient::Cursor] {
            let (_, text) = config(client, "/usr/local/bin/valetkey");
            let json: Value = serde_json::from_str(&text).unwrap();
            let server = &json["mcpServers"]["valetkey"];
            assert_eq!(server["command"], "/usr/local/bin/valetkey");
            assert_eq!(server["args"], json!(["mcp"]));
            assert!(
                server["env"]["VALETKEY_CREDENTIAL"]
                    .as_str()
                    .unwrap()
                    .contains("VALETKEY_CREDENTIAL}")
            );
        }
        let (_, text) = config(McpClient::Codex, "/usr/local/bin/valetkey");
        let toml: toml::Table = toml::from_str(&text).unwrap();
        let server = &toml["mcp_servers"]["valetkey"];
        assert_eq!(server["command"].as_str(), Some("/usr/local/bin/valetkey"));
        assert_eq!(server["env_vars"].as_array().unwrap().len(), 2);
    }
}
