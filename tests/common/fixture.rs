//! The proxy fixture: a broker in front of stand-ins for Railway, GitHub and
//! a generic HTTP API, with a resource map that mirrors Railway's (one
//! project holds every environment) and an agent holding every grantable
//! scope in staging.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::TestBroker;
use super::upstream::StandIn;

pub const RAILWAY_STAGING: &str = "rw-staging-7c1f0d2e9a";
pub const RAILWAY_PRODUCTION: &str = "rw-production-5be44a01c3";
pub const GITHUB_STAGING: &str = "ghs_stagingStandInToken0042";
pub const API_STAGING: &str = "api-staging-token-9911";

pub const CONFIG: &str = r#"
[environments.staging]
[environments.production]
protected = true

[providers.railway]
kind = "railway"
upstream = "RAILWAY_URL"
agent_env = { RAILWAY_API_TOKEN = "{credential}", RAILWAY_GRAPHQL_URL = "{proxy_url}/graphql/v2" }
tokens = { staging = { env = "RAILWAY_STAGING" }, production = { env = "RAILWAY_PRODUCTION" } }

[providers.github]
kind = "github"
upstream = "GITHUB_URL"
tokens = { staging = { env = "GITHUB_STAGING" } }

[providers.api]
kind = "http"
upstream = "API_URL/base"
tokens = { staging = { env = "API_STAGING" } }
unknown_resources = "allow_reads"
operations = [
  { method = "GET", path = "/v1/items/{id}", scope = "read", resources = [{ kind = "item", id = "{id}" }] },
  { method = "DELETE", path = "/v1/items/{id}", scope = "delete", resources = [{ kind = "item", id = "{id}" }] },
  { method = "POST", path = "/v1/items/{id}/notes", scope = "write", resources = [{ kind = "item", id = "{id}" }] },
  { method = "GET", path = "/v1/reflect/{id}", scope = "read", resources = [{ kind = "item", id = "{id}" }] },
]

# One Railway project holds both environments; its services and the volume
# of the incident exist in both.
[[resources]]
provider = "railway"
kind = "project"
id = "proj_1"
environments = ["staging", "production"]

[[resources]]
provider = "railway"
kind = "environment"
id = "env_stg"
environments = ["staging"]

[[resources]]
provider = "railway"
kind = "environment"
id = "env_prod"
environments = ["production"]

[[resources]]
provider = "railway"
kind = "service"
id = "svc_api"
environments = ["staging", "production"]

[[resources]]
provider = "railway"
kind = "deployment"
id = "dep_stg"
environments = ["staging"]

[[resources]]
provider = "railway"
kind = "volume"
id = "vol_db"
environments = ["staging", "production"]

[[resources]]
provider = "railway"
kind = "volume"
id = "vol_scratch"
environments = ["staging"]

[[resources]]
provider = "railway"
kind = "volume"
id = "vol_prod_only"
environments = ["production"]

[[resources]]
provider = "github"
kind = "repository"
id = "acme/api"
environments = ["staging"]
node_ids = ["R_acme_api"]

[[resources]]
provider = "github"
kind = "repository"
id = "acme/infra"
environments = ["production"]

[[resources]]
provider = "api"
kind = "item"
id = "7"
environments = ["staging"]

[agents.claude]
grants = [
  { provider = "railway", environments = ["staging"], scopes = ["read", "variable:write", "domain:write", "service:write", "deployment:deploy"] },
  { provider = "github", environments = ["staging"], scopes = ["read", "contents:write", "pulls:write"] },
  { provider = "api", environments = ["staging"], scopes = ["read", "write"] },
]
"#;

/// The variables the fixture's configuration reads its real tokens from.
pub fn token_variables(github_token: &str) -> BTreeMap<String, String> {
    [
        ("RAILWAY_STAGING", RAILWAY_STAGING),
        ("RAILWAY_PRODUCTION", RAILWAY_PRODUCTION),
        ("GITHUB_STAGING", github_token),
        ("API_STAGING", API_STAGING),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub struct Fixture {
    pub broker: TestBroker,
    pub railway: StandIn,
    pub github: StandIn,
    pub api: StandIn,
    pub credential: String,
    /// The launcher key of `claude`.
    pub key: String,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with("", GITHUB_STAGING).await
    }

    /// With `extra` appended to the configuration (an `[alerts]` section),
    /// and `github_token` as the broker's GitHub token for staging (the
    /// stand-in accepts only `GITHUB_STAGING`).
    pub async fn start_with(extra: &str, github_token: &str) -> Fixture {
        let railway = StandIn::railway(&[RAILWAY_STAGING, RAILWAY_PRODUCTION]).await;
        let github = StandIn::github(&[GITHUB_STAGING]).await;
        let api = StandIn::http(&[API_STAGING]).await;
        let config = CONFIG
            .replace("RAILWAY_URL", &railway.url)
            .replace("GITHUB_URL", &github.url)
            .replace("API_URL", &api.url)
            + extra
            // What the tokens reach is asked in tests/introspection.rs; here
            // the stand-ins must see only what agents send.
            + if extra.contains("[introspection]") { "" } else { "\n[introspection]\nenabled = false\n" };
        let broker = TestBroker::start_with(&config, token_variables(github_token)).await;
        let key = broker.add_agent("claude").await;
        // Ask for everything, destructive scopes included: they are stripped.
        let (status, minted) = broker
            .mint(
                &key,
                json!({ "env": "staging", "scopes": ["read", "variable:write", "domain:write", "service:write", "deployment:deploy", "volume:delete", "backup:delete", "contents:write", "pulls:write", "write", "delete"] }),
            )
            .await;
        assert_eq!(status, 201, "{minted}");
        let credential = minted["credential"].as_str().unwrap().to_owned();
        Fixture {
            broker,
            railway,
            github,
            api,
            credential,
            key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/p/{path}", self.broker.url)
    }

    pub async fn graphql(&self, body: Value) -> (u16, Value) {
        self.broker
            .send(
                self.broker
                    .http
                    .post(self.url("railway/graphql/v2"))
                    .bearer_auth(&self.credential)
                    .json(&body),
            )
            .await
    }

    /// `GET /p/{path}` with `credential` as a bearer token: (status, answer).
    pub async fn get(&self, path: &str, credential: &str) -> (u16, Value) {
        self.broker
            .send(self.broker.http.get(self.url(path)).bearer_auth(credential))
            .await
    }

    /// The audit event a refusal names.
    pub async fn event(&self, id: &str) -> Value {
        let pool = self.broker.db().await;
        let (kind, detail): (String, String) = sqlx::query_as("SELECT kind, detail FROM audit_events WHERE id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        let mut detail: Value = serde_json::from_str(&detail).unwrap();
        detail["kind"] = Value::String(kind);
        detail
    }

    /// Every audit event's kind and detail, as text.
    pub async fn audit_text(&self) -> String {
        super::audit_lines(self.broker.broker.store()).await.join("\n")
    }

    /// Sends a corpus case through the proxy, byte for byte, with this
    /// fixture's credential: (status, answer).
    pub async fn send_case(&self, case: &super::corpus::Case) -> (u16, Value) {
        let case = case.with_credential(&self.credential);
        let bearer = format!("Bearer {}", self.credential);
        let mut headers: Vec<(&str, &str)> = vec![("Authorization", bearer.as_str())];
        headers.extend(case.headers.iter().map(|(n, v)| (*n, v.as_str())));
        let target = format!("/p/{}{}", case.provider, case.target);
        let body = case.body.as_deref().unwrap_or_default().as_bytes();
        super::raw_request(&self.broker.url, case.method, &target, &headers, body).await
    }
}

pub fn refusal(status: u16, body: &Value) -> (u16, &str) {
    (status, body["type"].as_str().unwrap_or("<none>"))
}
