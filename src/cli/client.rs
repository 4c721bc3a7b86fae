//! The broker's HTTP API, as the CLI uses it: agents' commands with their
//! credential or launcher key, ops' commands with an admin key.

use std::time::Duration;

use serde_json::Value;

use crate::secrets::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the broker at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the broker refused ({kind}): {detail}\n{guidance}{}", event_id.as_ref().map(|id| format!("\nevent id: {id}")).unwrap_or_default())]
    Refused {
        status: u16,
        kind: String,
        detail: String,
        guidance: String,
        event_id: Option<String>,
        /// The problem+json as the broker sent it.
        problem: Box<Value>,
    },
    #[error("the broker at {url} answered {status} with a body that is not valetkey's")]
    Unexpected { url: String, status: u16 },
    #[error("no launcher key: pass --key-file or --key-fd, or set VALETKEY_AGENT_KEY")]
    NoLauncherKey,
    #[error("no credential: VALETKEY_CREDENTIAL is not set (are you running under `valetkey run`?)")]
    NoCredential,
    #[error("cannot read the key file {path}: {source}")]
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

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client of the broker at `remote.url`, which also trusts the
    /// certificate in `remote.ca_file` (a broker serving its own HTTPS).
    pub fn new(remote: &super::Remote) -> Result<Client, ClientError> {
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
        let http = builder.build().map_err(|source| ClientError::Unreachable {
            url: base.to_owned(),
            source,
        })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = request.send().await.map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
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
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })
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
