//! A real broker for tests: the server started in-process on an ephemeral
//! port, with a real SQLite file in a temporary data dir.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;
use valetkey::admin::{self, Actor};
use valetkey::broker::Broker;
use valetkey::secrets::ExposeSecret;
use valetkey::server::{self, ServeOptions};

/// An allowed proxy request's audit event, as the benchmarks append it.
pub fn proxy_event() -> valetkey::audit::Event {
    valetkey::audit::Event {
        kind: valetkey::audit::EventKind::ProxyAllowed,
        actor: "agent:claude".into(),
        agent: Some("claude".into()),
        session_id: Some("bench".into()),
        env: Some("staging".into()),
        detail: serde_json::json!({ "provider": "railway", "operations": ["mutation variableUpsert"] }),
    }
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_valetkey");

/// The variables HTTP clients take a proxy from, in both cases.
pub const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub mod corpus;
pub mod fixture;
pub mod outside;
pub mod upstream;

pub const CONFIG: &str = r#"
[credentials]
default_ttl = "15m"
max_ttl = "1h"

[environments.staging]
[environments.dev]
[environments.production]
protected = true

[providers.railway]
kind = "railway"
agent_env = { RAILWAY_API_TOKEN = "{credential}", RAILWAY_GRAPHQL_URL = "{proxy_url}/graphql/v2" }
tokens = { staging = { stored = "railway-staging" }, dev = { stored = "railway-dev" }, production = { env = "RAILWAY_PRODUCTION_TOKEN" } }

[providers.github]
kind = "github"
agent_env = { GH_TOKEN = "{credential}" }
tokens = { staging = { env = "GITHUB_STAGING_TOKEN" } }

[agents.claude]
grants = [
  { provider = "railway", environments = ["*"], scopes = ["read", "variable:write", "deployment:deploy"], max_ttl = "30m" },
  { provider = "github", environments = ["staging"], scopes = ["read", "pulls:write"] },
]

[agents.oncall]
grants = [{ provider = "railway", environments = ["production"], scopes = ["read"], max_ttl = "10m" }]

[introspection]
enabled = false
"#;

pub struct TestBroker {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub broker: Arc<Broker>,
    pub admin_key: String,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(CONFIG, BTreeMap::new()).await
    }

    pub async fn start_with(config: &str, env: BTreeMap<String, String>) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("valetkey.toml");
        std::fs::write(&config_path, config).unwrap();
        let server = server::prepare(ServeOptions {
            config: config_path,
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.path().join("data")),
            dev: true,
            insecure_listen: false,
            master_key: None,
            env: Box::new(move |k| env.get(k).cloned()),
        })
        .await
        .unwrap();
        let admin_key = match &server.bootstrap_admin_key {
            Some(path) => std::fs::read_to_string(path).unwrap().trim().to_owned(),
            None => panic!("a new broker writes a bootstrap admin key"),
        };
        let url = format!("http://{}", server.local_addr());
        let broker = server.broker();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestBroker {
            url,
            dir,
            broker,
            admin_key,
            http: http(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The master key the broker created, as someone on its host could read it.
    pub fn master_key(&self) -> valetkey::secrets::MasterKey {
        let text = std::fs::read_to_string(self.data_dir().join("master.key")).unwrap();
        valetkey::secrets::MasterKey::from_base64(&text, valetkey::secrets::MasterKeyOrigin::Env).unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    /// Registers an agent; returns its launcher key.
    pub async fn add_agent(&self, name: &str) -> String {
        let key = admin::add_agent(
            self.broker.store(),
            self.broker.config(),
            name,
            &Actor::admin("alice"),
            SystemTime::now(),
        )
        .await
        .unwrap();
        key.expose_secret().to_owned()
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = resp.json().await.unwrap();
        if status >= 400 {
            assert_eq!(ctype, "application/problem+json", "{body}");
            for field in ["type", "title", "status", "detail", "agent_guidance"] {
                assert!(body.get(field).is_some(), "problem without {field}: {body}");
            }
        }
        (status, body)
    }

    pub async fn mint(&self, key: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}/v1/credentials", self.url))
                .bearer_auth(key)
                .json(&body),
        )
        .await
    }

    /// `run`'s heartbeat for `session`, with `bearer` (its launcher key, or
    /// whatever a test tries instead).
    pub async fn heartbeat(&self, bearer: &str, session: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}/v1/sessions/{session}/heartbeat", self.url))
                .bearer_auth(bearer),
        )
        .await
    }

    pub async fn whoami(&self, credential: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}/v1/whoami", self.url)).bearer_auth(credential))
            .await
    }

    /// Signs any header and claims with the broker's signing key `kid`, as
    /// someone who stole it could: `forge(header, claims)` → `vk1.…`.
    pub async fn forger(&self, kid: &str) -> impl Fn(Value, Value) -> String + use<> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let record = self
            .broker
            .store()
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.kid == kid)
            .unwrap();
        let pkcs8 = self
            .master_key()
            .open(&format!("signing-key:{kid}"), &record.sealed)
            .unwrap();
        let signer = jsonwebtoken::EncodingKey::from_ed_der(&pkcs8);
        move |head: Value, body: Value| {
            let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
            let message = format!("{}.{}", b64(&head), b64(&body));
            let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &signer, jsonwebtoken::Algorithm::EdDSA).unwrap();
            format!("vk1.{message}.{sig}")
        }
    }

    /// A connection to the broker's database file, as an auditor would open it.
    pub async fn db(&self) -> sqlx::SqlitePool {
        let db = self.data_dir().join("valetkey.db");
        sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap()
    }

    /// Row counts of every table, to show a request changed nothing.
    pub async fn row_counts(&self) -> Vec<(&'static str, i64)> {
        let pool = self.db().await;
        let mut counts = Vec::new();
        for table in [
            "agents",
            "admin_keys",
            "signing_keys",
            "secrets",
            "leases",
            "revocations",
            "audit_events",
        ] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap();
            counts.push((table, n));
        }
        pool.close().await;
        counts
    }
}

/// Waits until `check` holds: for what another process wrote to the store,
/// which a broker learns within its sync interval.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The claims of a credential, read without verifying (the broker verified it).
pub fn claims(credential: &str) -> Value {
    use base64::Engine;
    let payload = credential.strip_prefix("vk1.").unwrap().split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn header(credential: &str) -> Value {
    use base64::Engine;
    let head = credential.strip_prefix("vk1.").unwrap().split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Sends a request exactly as written, path included: HTTP clients resolve
/// dot segments (even encoded ones) before sending, which would hide what the
/// broker itself must handle. Returns the status and the body as JSON.
pub async fn raw_request(
    base_url: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        // One chunk is enough for the small JSON answers this is used for.
        body.split_once("\r\n")
            .map(|(_, rest)| rest)
            .unwrap_or_default()
            .rsplit_once("\r\n0\r\n")
            .map(|(b, _)| b)
            .unwrap_or_default()
            .to_owned()
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Every audit event as one line of JSON, in chain order: the text tests
/// search for what must (not) have been recorded.
pub async fn audit_lines(store: &dyn valetkey::store::Store) -> Vec<String> {
    store
        .audit_events()
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect()
}

/// `valetkey agent add NAME` as ops run it against the broker at `url`,
/// with the bootstrap admin key in `data`; returns the launcher key.
pub fn add_agent_with_cli(url: &str, data: &std::path::Path, name: &str) -> String {
    let out = admin_cli(url, &data.join("admin.key"))
        .args(["agent", "add", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The CLI as an admin runs it: the broker at `url`, the key in `key_file`,
/// nothing inherited from the test's environment that could stand in.
pub fn admin_cli(url: &str, key_file: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("VALETKEY_URL", url)
        .env("VALETKEY_ADMIN_KEY_FILE", key_file)
        .env_remove("VALETKEY_ADMIN_KEY")
        .env_remove("VALETKEY_CONFIG")
        .env_remove("VALETKEY_DATA_DIR");
    cmd
}

/// The broker binary, serving in a child process.
pub struct Served {
    pub child: std::process::Child,
    pub url: String,
}

/// A test that fails before it stops its broker leaves no broker behind.
impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `valetkey serve --dev` on a free port with `dir/data`, logging at trace
/// level to `dir/serve.log`; returns once the port answers.
pub fn serve(dir: &std::path::Path, config: &std::path::Path, extra_env: &[(&str, &str)]) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !serving(port) {
        assert!(std::time::Instant::now() < deadline, "the broker did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Served { child, url }
}

/// Whether a broker answers on `port`: the port opens before start-up ends
/// (the bootstrap admin key is written after it), the answers only once
/// it has.
fn serving(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let mut answer = String::new();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

impl Served {
    /// `POST /v1/credentials` with a launcher key; the answer, whatever its status.
    pub async fn mint(&self, key: &str, body: Value) -> Value {
        http()
            .post(format!("{}/v1/credentials", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// SIGTERM, and the exit code.
    pub fn stop(mut self) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap().code()
    }

    /// SIGKILL: no shutdown, no final checkpoint.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Two `http` providers whose staging tokens are stored secrets
/// (`api-staging`, `other-staging`); `claude` reads item 7 of both.
pub fn stored_tokens_config(url: &str) -> String {
    format!(
        r#"
[environments.staging]
[providers.api]
kind = "http"
upstream = "{url}/base"
tokens = {{ staging = {{ stored = "api-staging" }} }}
operations = [{{ method = "GET", path = "/v1/reflect/{{id}}", scope = "read", resources = [{{ kind = "item", id = "{{id}}" }}] }}]
[providers.other]
kind = "http"
upstream = "{url}/base"
tokens = {{ staging = {{ stored = "other-staging" }} }}
operations = [{{ method = "GET", path = "/v1/reflect/{{id}}", scope = "read", resources = [{{ kind = "item", id = "{{id}}" }}] }}]
[[resources]]
provider = "api"
kind = "item"
id = "7"
environments = ["staging"]
[[resources]]
provider = "other"
kind = "item"
id = "7"
environments = ["staging"]
[agents.claude]
grants = [{{ provider = "api", environments = ["staging"], scopes = ["read"] }}, {{ provider = "other", environments = ["staging"], scopes = ["read"] }}]
[introspection]
enabled = false
"#
    )
}
