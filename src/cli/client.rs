//! The broker's HTTP API, as the CLI uses it: agents' commands with their
//! credential or launcher key, ops' commands with an admin key.

use std::time::Duration;

use serde_json::Value;

use crate::secrets::{ExposeSecret, SecretString};

/// Who reads what the CLI prints: the refusal's `agent_guidance` is
/// written for an agent, and only an agent's commands (`whoami`, `check`,
/// `approval wait`) print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Operator,
    Agent,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `reason` is the innermost cause's text: reqwest's own says only that
    /// sending failed.
    #[error(
        "cannot reach the broker at {}: {reason}\n  start it with `valetkey serve`, or point --url (VALETKEY_URL) at \
         where it runs",
        shown(url)
    )]
    Unreachable { url: String, reason: String },
    #[error("{}", refusal_text(*audience, kind, detail, guidance, event_id.as_deref()))]
    Refused {
        status: u16,
        kind: String,
        detail: String,
        guidance: String,
        event_id: Option<String>,
        /// The problem+json as the broker sent it.
        problem: Box<Value>,
        audience: Audience,
    },
    #[error(
        "the broker at {} answered {status} with a body that is not valetkey's; check that --url (VALETKEY_URL) names the broker",
        shown(url)
    )]
    Unexpected { url: String, status: u16 },
    #[error("no launcher key: pass --key-file or --key-fd, or set VALETKEY_AGENT_KEY")]
    NoLauncherKey,
    #[error(
        "no credential: VALETKEY_CREDENTIAL is not set, so this runs outside an agent's session. Start one with \
         `valetkey run --env ENV --key-file KEY -- COMMAND` (the command, and this one inside it, get the \
         credential), or print its variables with `valetkey env --env ENV --key-file KEY`"
    )]
    NoCredential,
    #[error("cannot read the key file {path}: {source}{}", key_file_help(source))]
    KeyFile { path: String, source: std::io::Error },
    #[error(
        "no admin key: pass --admin-key-file (or set VALETKEY_ADMIN_KEY_FILE), or keep yours in {default}; \
         the broker wrote a bootstrap key to admin.key in its data dir at first start"
    )]
    NoAdminKey { default: String },
    #[error("{path} can be read by other users than its owner; `chmod 600 {path}` and try again")]
    KeyFileOpen { path: String },
    #[error("{path} holds no {what}")]
    NotAKey { path: String, what: &'static str },
    #[error("cannot read the broker's CA certificate {path} (--ca-file, VALETKEY_CA_FILE): {reason}")]
    CaFile { path: String, reason: String },
}

/// A URL as a message may show it: without a user, a password, a query or
/// a fragment, any of which may hold a secret someone put in `--url`.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "the URL given (not a URL: check --url or VALETKEY_URL)".to_owned(),
    }
}

/// Where a key file that is not there comes from.
fn key_file_help(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::NotFound => {
            "\n  check the path; `valetkey agent add NAME` prints an agent's launcher key once, and `valetkey admin \
             add NAME --out FILE` writes an admin's key"
        }
        _ => "",
    }
}

/// A refusal as its reader should see it: an operator gets what happened
/// and the event to look up, an agent also the guidance written for it.
fn refusal_text(audience: Audience, kind: &str, detail: &str, guidance: &str, event_id: Option<&str>) -> String {
    let mut text = format!("the broker refused ({kind}): {detail}");
    match audience {
        Audience::Agent if !guidance.is_empty() => {
            text.push('\n');
            text.push_str(guidance);
        }
        Audience::Operator => {
            if let Some(step) = operator_step(kind) {
                text.push_str("\n  ");
                text.push_str(step);
            }
        }
        Audience::Agent => {}
    }
    if let Some(id) = event_id {
        text.push_str(&format!("\nevent id: {id}"));
    }
    text
}

/// What an operator can do about a refusal whose detail does not say it
/// (the detail is written for every reader, the agent's guidance for the
/// agent alone).
fn operator_step(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "nothing_grantable" => {
            "the detail says why each scope was left out: one no grant gives is added to the agent's grants in \
             the broker's configuration ([agents.NAME] grants; then `valetkey config check` and a restart); a \
             destructive or catastrophic one is never granted, whatever the grants say: a human approves such an \
             operation one request at a time"
        }
        "protected_environment" | "no_grant" | "provider_not_granted" => {
            "the agent's grants are in the broker's configuration ([agents.NAME] grants): change them there if it \
             should have this, check the file with `valetkey config check`, and restart the broker"
        }
        "launcher_key_invalid" => {
            "check the key file or VALETKEY_AGENT_KEY; `valetkey agent list` shows the registered agents, and \
             `valetkey agent add NAME` registers one and prints its key"
        }
        "admin_key_invalid" => {
            "check --admin-key-file (VALETKEY_ADMIN_KEY_FILE); `valetkey admin list`, run with a live key, shows \
             whose keys are alive"
        }
        _ => return None,
    })
}

/// Why a request did not reach the broker, in the words of its innermost
/// cause (connection refused, a name that does not resolve, a timeout).
fn unreachable(url: &str, error: &reqwest::Error) -> ClientError {
    let innermost = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();
    let reason = if error.is_timeout() {
        "it did not answer in time".to_owned()
    } else {
        innermost
    };
    ClientError::Unreachable {
        url: url.to_owned(),
        reason,
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    audience: Audience,
}

impl Client {
    /// A client of the broker at `remote.url`, which also trusts the
    /// certificate in `remote.ca_file` (a broker serving its own HTTPS).
    pub fn new(remote: &super::Remote) -> Result<Client, ClientError> {
        Client::with_audience(remote, Audience::Operator)
    }

    /// A client whose refusals are printed for an agent, guidance included.
    pub fn for_agent(remote: &super::Remote) -> Result<Client, ClientError> {
        Client::with_audience(remote, Audience::Agent)
    }

    fn with_audience(remote: &super::Remote, audience: Audience) -> Result<Client, ClientError> {
        let base = remote.url.as_str();
        // reqwest is built without a TLS provider; ring is the one we use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The launcher key and credentials go to the broker named, never to
        // a proxy from the environment.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(path) = &remote.ca_file {
            let failed = |reason: String| ClientError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
            if certificates.is_empty() {
                return Err(failed("it holds no PEM certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| unreachable(base, &e))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            audience,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = request.send().await.map_err(|e| unreachable(&self.base, &e))?;
        self.send_answered(response).await
    }

    /// The JSON of a success, or the broker's refusal as an error.
    async fn send_answered(&self, response: reqwest::Response) -> Result<Value, ClientError> {
        let url = self.base.clone();
        let status = response.status().as_u16();
        let body: Value = response.json().await.map_err(|_| ClientError::Unexpected {
            url: url.clone(),
            status,
        })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        match text("type") {
            Some(kind) => Err(ClientError::Refused {
                status,
                kind,
                detail: text("detail").unwrap_or_default(),
                guidance: text("agent_guidance").unwrap_or_default(),
                event_id: text("event_id"),
                problem: Box::new(body),
                audience: self.audience,
            }),
            None => Err(ClientError::Unexpected { url, status }),
        }
    }

    pub async fn mint(&self, launcher_key: &SecretString, body: &Value) -> Result<Value, ClientError> {
        self.send(
            self.http
                .post(format!("{}/v1/credentials", self.base))
                .bearer_auth(launcher_key.expose_secret())
                .json(body),
        )
        .await
    }

    pub async fn isolation(&self, launcher_key: &SecretString) -> Result<Value, ClientError> {
        self.send(
            self.http
                .get(format!("{}/v1/isolation", self.base))
                .bearer_auth(launcher_key.expose_secret()),
        )
        .await
    }

    /// The forward proxy's CA certificate (public: no key is sent).
    pub async fn ca_pem(&self) -> Result<String, ClientError> {
        let url = format!("{}/v1/ca.pem", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        if !response.status().is_success() {
            return self.send_answered(response).await.map(|_| String::new());
        }
        let status = response.status().as_u16();
        response
            .text()
            .await
            .map_err(|_| ClientError::Unexpected { url, status })
    }

    /// The broker's URL, as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn end_session(&self, launcher_key: &SecretString, session_id: &str) -> Result<Value, ClientError> {
        self.send(
            self.http
                .delete(format!("{}/v1/sessions/{session_id}", self.base))
                .bearer_auth(launcher_key.expose_secret()),
        )
        .await
    }

    /// Tells the broker the session is alive; a late answer is no answer.
    pub async fn heartbeat(
        &self,
        launcher_key: &SecretString,
        session_id: &str,
        wait: Duration,
    ) -> Result<Value, ClientError> {
        self.send(
            self.http
                .post(format!("{}/v1/sessions/{session_id}/heartbeat", self.base))
                .bearer_auth(launcher_key.expose_secret())
                .timeout(wait),
        )
        .await
    }

    /// An admin API call; JSON in and out.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        admin_key: &SecretString,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}/v1{path}", self.base))
            .bearer_auth(admin_key.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// A GET with an admin key, answered whatever its status.
    async fn get(&self, url: &str, admin_key: &SecretString) -> Result<reqwest::Response, ClientError> {
        self.http
            .get(url)
            .bearer_auth(admin_key.expose_secret())
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))
    }

    /// An admin API call whose answer is text (a rendered report).
    pub async fn admin_text(&self, path: &str, admin_key: &SecretString) -> Result<String, ClientError> {
        let url = format!("{}/v1{path}", self.base);
        let response = self.get(&url, admin_key).await?;
        if response.status().is_success() {
            return response
                .text()
                .await
                .map_err(|_| ClientError::Unexpected { url, status: 200 });
        }
        self.send_answered(response).await.map(|_| String::new())
    }

    /// `/readyz`, which answers its JSON with 503 too when not ready; the
    /// detail only to an admin key.
    pub async fn readiness(&self, admin_key: &SecretString) -> Result<Value, ClientError> {
        let url = format!("{}/readyz", self.base);
        let response = self.get(&url, admin_key).await?;
        let status = response.status().as_u16();
        match status {
            200 | 503 => response
                .json()
                .await
                .map_err(|_| ClientError::Unexpected { url, status }),
            _ => self.send_answered(response).await,
        }
    }

    pub async fn check(&self, credential: &SecretString, request: &Value) -> Result<Value, ClientError> {
        self.send(
            self.http
                .post(format!("{}/v1/check", self.base))
                .bearer_auth(credential.expose_secret())
                .json(request),
        )
        .await
    }

    /// A call of the approvals API: with the agent's credential or an admin
    /// key as bearer, or none (approvers prove themselves in the body).
    /// `timeout` past the default for a long poll.
    pub async fn approvals(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&SecretString>,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, ClientError> {
        let mut request = self.http.request(method, format!("{}/v1{path}", self.base));
        if let Some(key) = bearer {
            request = request.bearer_auth(key.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        self.send(request).await
    }

    /// One event of the credential's own session, explained.
    pub async fn event(&self, credential: &SecretString, id: &str) -> Result<Value, ClientError> {
        let id = super::admin::path_segment(id);
        self.send(
            self.http
                .get(format!("{}/v1/events/{id}", self.base))
                .bearer_auth(credential.expose_secret()),
        )
        .await
    }

    pub async fn whoami(&self, credential: &SecretString) -> Result<Value, ClientError> {
        self.send(
            self.http
                .get(format!("{}/v1/whoami", self.base))
                .bearer_auth(credential.expose_secret()),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_in_a_message_shows_no_password_query_or_fragment() {
        let error = ClientError::Unreachable {
            url: "http://alice:s3cret-pass@127.0.0.1:1/v1?token=abc#frag".into(),
            reason: "Connection refused".into(),
        };
        let text = error.to_string();
        assert!(
            text.starts_with("cannot reach the broker at http://127.0.0.1:1/v1: Connection refused"),
            "{text}"
        );
        for secret in ["alice", "s3cret-pass", "token=abc", "frag"] {
            assert!(!text.contains(secret), "{text}");
        }
        let error = ClientError::Unexpected {
            url: "https://u:p@broker.example/".into(),
            status: 404,
        };
        assert!(
            error
                .to_string()
                .starts_with("the broker at https://broker.example answered 404"),
            "{error}"
        );
    }
}
