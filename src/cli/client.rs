//! The broker's HTTP API, as the agent-side commands use it.

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
    },
    #[error("the broker at {url} answered {status} with a body that is not valetkey's")]
    Unexpected { url: String, status: u16 },
    #[error("no launcher key: set VALETKEY_AGENT_KEY, or pass --key-file")]
    NoLauncherKey,
    #[error("no credential: VALETKEY_CREDENTIAL is not set (are you running under `valetkey run`?)")]
    NoCredential,
    #[error("cannot read the launcher key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Result<Client, ClientError> {
        // reqwest is built without a TLS provider; ring is the one we use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The launcher key and credentials go to the broker named, never to
        // a proxy from the environment.
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ClientError::Unreachable {
                url: base.to_owned(),
                source,
            })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let url = self.base.clone();
        let response = request.send().await.map_err(|source| ClientError::Unreachable {
            url: url.clone(),
            source,
        })?;
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

    pub async fn end_session(&self, launcher_key: &SecretString, session_id: &str) -> Result<Value, ClientError> {
        self.send(
            self.http
                .delete(format!("{}/v1/sessions/{session_id}", self.base))
                .bearer_auth(launcher_key.expose_secret()),
        )
        .await
    }

    /// `/readyz`, which answers its JSON with 503 too when not ready.
    pub async fn readiness(&self) -> Result<Value, ClientError> {
        let url = format!("{}/readyz", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        match status {
            200 | 503 => response
                .json()
                .await
                .map_err(|_| ClientError::Unexpected { url, status }),
            _ => Err(ClientError::Unexpected { url, status }),
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

    pub async fn whoami(&self, credential: &SecretString) -> Result<Value, ClientError> {
        self.send(
            self.http
                .get(format!("{}/v1/whoami", self.base))
                .bearer_auth(credential.expose_secret()),
        )
        .await
    }
}
