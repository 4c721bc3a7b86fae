//! Local stand-ins for the providers' APIs: real HTTP servers on loopback
//! that speak enough of each protocol for an agent's workflow, check the
//! token the way the provider does, and record every request they receive,
//! so a test can assert exactly what reached the provider, or that nothing did.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// What a stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent on the wire.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every header value and the body, to search for what must not be there.
    pub fn everything(&self) -> String {
        let mut all = format!("{} {}\n", self.method, self.target);
        for (name, value) in &self.headers {
            all.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
        }
        all.push_str(&String::from_utf8_lossy(&self.body));
        all
    }
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    /// `Authorization` values the provider accepts.
    accepted: Arc<Vec<String>>,
    release: Arc<tokio::sync::Notify>,
    /// What each token reaches, for introspection: Railway project tokens →
    /// their environment id; GitHub installation tokens → their repositories.
    /// A Railway token not listed is an account token (every environment).
    reach: Arc<Vec<(String, Vec<String>)>>,
}

pub struct StandIn {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Railway's GraphQL API: `POST|GET /graphql/v2`, a bearer token.
    pub async fn railway(tokens: &[&str]) -> StandIn {
        StandIn::railway_reaching(tokens, &[]).await
    }

    /// Railway, where each `(token, environment id)` is a project token.
    pub async fn railway_reaching(tokens: &[&str], project_tokens: &[(&str, &str)]) -> StandIn {
        let app = Router::new().route("/graphql/v2", get(railway_graphql).post(railway_graphql));
        let reach = project_tokens
            .iter()
            .map(|(t, env)| (format!("Bearer {t}"), vec![(*env).to_owned()]))
            .collect();
        StandIn::serve(app, tokens.iter().map(|t| format!("Bearer {t}")).collect(), reach).await
    }

    /// GitHub's REST API: a few endpoints of a repository, `token` or bearer auth.
    pub async fn github(tokens: &[&str]) -> StandIn {
        StandIn::github_reaching(tokens, &[]).await
    }

    /// GitHub, where each `(token, repositories)` is an installation token.
    pub async fn github_reaching(tokens: &[&str], installations: &[(&str, &[&str])]) -> StandIn {
        let app = Router::new()
            .route("/installation/repositories", get(github_installation_repositories))
            .route("/repos/{owner}/{repo}/contents/{*path}", get(github_content))
            .route("/repos/{owner}/{repo}/git/refs", axum::routing::post(github_create_ref))
            .route("/repos/{owner}/{repo}/pulls", axum::routing::post(github_create_pull))
            .route("/graphql", axum::routing::post(github_graphql))
            // Archives whose size is the ref asked for, and one held back.
            .route("/repos/{owner}/{repo}/tarball/{bytes}", get(download))
            .route("/repos/{owner}/{repo}/zipball/{ref}", get(slow));
        let accepted = tokens
            .iter()
            .flat_map(|t| [format!("Bearer {t}"), format!("token {t}")])
            .collect();
        let reach = installations
            .iter()
            .map(|(t, repos)| (format!("Bearer {t}"), repos.iter().map(|r| (*r).to_owned()).collect()))
            .collect();
        StandIn::serve(app, accepted, reach).await
    }

    /// A git host: every request goes to the real `git http-backend` (CGI)
    /// serving the repositories under `root`, with the token in `Basic`
    /// (`x-access-token:TOKEN`) as GitHub takes it.
    pub async fn git_host(root: std::path::PathBuf, tokens: &[&str]) -> StandIn {
        use base64::Engine;
        let app = Router::new().route(
            "/{*path}",
            axum::routing::any(move |request: Request| git_cgi(root.clone(), request)),
        );
        let accepted = tokens
            .iter()
            .map(|t| {
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{t}"));
                format!("Basic {basic}")
            })
            .collect();
        StandIn::serve(app, accepted, Vec::new()).await
    }

    /// Any REST API: answers every request with what it received;
    /// `/base/v1/reflect/…` reflects its headers, as debug endpoints do.
    pub async fn http(tokens: &[&str]) -> StandIn {
        StandIn::serve(
            Router::new().route("/base/v1/reflect/{id}", get(reflect)),
            tokens.iter().map(|t| format!("Bearer {t}")).collect(),
            Vec::new(),
        )
        .await
    }

    async fn serve(routes: Router<Shared>, accepted: Vec<String>, reach: Vec<(String, Vec<String>)>) -> StandIn {
        let shared = Shared {
            received: Arc::default(),
            accepted: Arc::new(accepted),
            release: Arc::default(),
            reach: Arc::new(reach),
        };
        let app = routes
            .fallback(echo)
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandIn { url, shared, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// Lets `/slow` send the rest of its body.
    pub fn release(&self) {
        self.shared.release.notify_one();
    }

    /// Asserts that `response`, this stand-in's `/slow` answer as it reached
    /// the agent, streamed: its first chunk arrived while the stand-in still
    /// held the rest back (a broker that buffered the answer would never
    /// deliver it), then the rest once released.
    pub async fn assert_slow_answer_streamed(&self, response: reqwest::Response) {
        use futures_util::StreamExt;
        let mut stream = response.bytes_stream();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .expect("the first chunk did not arrive before the upstream finished")
            .unwrap()
            .unwrap();
        assert_eq!(first.as_ref(), b"first;");
        self.release();
        let rest = stream.next().await.unwrap().unwrap();
        assert_eq!(rest.as_ref(), b"rest");
    }
}

/// Records the request, then checks its token as the provider would.
async fn record(State(shared): State<Shared>, request: Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    shared.received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let authorized = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| shared.accepted.iter().any(|a| a == v));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn reach_of<'a>(shared: &'a Shared, headers: &HeaderMap) -> Option<&'a Vec<String>> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    shared.reach.iter().find(|(t, _)| t == auth).map(|(_, r)| r)
}

async fn railway_graphql(State(shared): State<Shared>, request: Request) -> Response {
    let reach = reach_of(&shared, request.headers()).cloned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query = parsed.get("query").and_then(Value::as_str).unwrap_or_default();
    // Introspection, as Railway answers it: a project token names its
    // environment; an account token is not a project token and sees every
    // project with all its environments.
    if query.contains("projectToken") {
        return axum::Json(match reach {
            Some(envs) => json!({ "data": { "projectToken": { "projectId": "proj_1", "environmentId": envs[0] } } }),
            None => json!({ "data": null, "errors": [{ "message": "Not Authorized" }] }),
        })
        .into_response();
    }
    if query.contains("projects") {
        return axum::Json(
            json!({ "data": { "projects": { "edges": [{ "node": { "id": "proj_1", "environments": { "edges": [
            { "node": { "id": "env_stg", "name": "staging" } },
            { "node": { "id": "env_prod", "name": "production" } }
        ] } } }] } } }),
        )
        .into_response();
    }
    let answer = |r: &Value| {
        if r.get("query").and_then(Value::as_str).is_some() {
            json!({ "data": { "ok": true } })
        } else {
            json!({ "errors": [{ "message": "No query document supplied" }] })
        }
    };
    let reply = match &parsed {
        Value::Array(batch) => Value::Array(batch.iter().map(answer).collect()),
        Value::Null => json!({ "data": { "ok": true } }),
        one => answer(one),
    };
    axum::Json(reply).into_response()
}

async fn github_installation_repositories(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    match reach_of(&shared, &headers) {
        Some(repos) => {
            let list: Vec<Value> = repos.iter().map(|r| json!({ "full_name": r })).collect();
            axum::Json(json!({ "total_count": list.len(), "repositories": list })).into_response()
        }
        None => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({ "message": "not an installation token" })),
        )
            .into_response(),
    }
}

async fn github_content(Path((owner, repo, path)): Path<(String, String, String)>) -> Response {
    axum::Json(json!({ "type": "file", "path": path, "repository": format!("{owner}/{repo}"), "content": "aGVsbG8=" }))
        .into_response()
}

async fn github_create_ref(Path((_owner, _repo)): Path<(String, String)>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    (
        StatusCode::CREATED,
        axum::Json(json!({ "ref": body["ref"], "object": { "sha": body["sha"] } })),
    )
        .into_response()
}

/// The answers `gh pr list` and `gh pr create` need, by the operation
/// their documents name (tests/fixtures/gh); `acme/api` is `R_acme_api`.
async fn github_graphql(body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let query = body["query"].as_str().unwrap_or_default();
    let owner = json!({ "id": "U_1", "login": "octo", "name": "Octo" });
    let repo = json!({
        "id": "R_acme_api", "name": "api", "owner": { "login": "acme" }, "hasIssuesEnabled": true,
        "description": "", "hasWikiEnabled": false, "viewerPermission": "WRITE",
        "defaultBranchRef": { "name": "main" },
    });
    let data = if query.contains("createPullRequest") {
        let number = 8;
        json!({ "createPullRequest": { "pullRequest": { "id": "PR_8", "url": format!("https://github.com/acme/api/pull/{number}") } } })
    } else if query.contains("PullRequestForBranch") {
        json!({ "repository": { "pullRequests": { "nodes": [] }, "defaultBranchRef": { "name": "main" } } })
    } else if query.contains("RepositoryInfo") {
        let mut info = repo.clone();
        info["parent"] = Value::Null;
        for allowed in ["mergeCommitAllowed", "rebaseMergeAllowed", "squashMergeAllowed"] {
            info[allowed] = json!(true);
        }
        json!({ "repository": info })
    } else if query.contains("PullRequestList") {
        json!({ "repository": { "pullRequests": {
            "totalCount": 1,
            "nodes": [{ "number": 7, "title": "Fix the flaky test", "state": "OPEN",
                        "url": "https://github.com/acme/api/pull/7", "headRefName": "topic",
                        "headRepositoryOwner": owner, "isCrossRepository": false, "isDraft": false,
                        "createdAt": "2026-12-01T00:00:00Z" }],
            "pageInfo": { "hasNextPage": false, "endCursor": null },
        } } })
    } else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "message": "the stand-in knows no such query" })),
        )
            .into_response();
    };
    axum::Json(json!({ "data": data })).into_response()
}

async fn github_create_pull(Path((_owner, _repo)): Path<(String, String)>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    (
        StatusCode::CREATED,
        axum::Json(json!({ "number": 1, "title": body["title"], "state": "open" })),
    )
        .into_response()
}

/// What a careless debug endpoint answers: the request's `Authorization`
/// in a response header, and a body of `REFLECT_BYTES` that carries it raw,
/// inside `Basic` base64 and percent-encoded (as a form would, every byte in
/// lower case, and a few bytes only), sent in chunks of a prime size so that
/// copies straddle chunk boundaries. `?mode=` encodes the body whatever the
/// request accepts: `gzip`, `double` (gzip twice, the header twice),
/// `identity-gzip` (two headers, the first harmless), `hidden` (the
/// encoding named in `Connection`, as if hop-by-hop).
async fn reflect(headers: HeaderMap, request: Request) -> Response {
    use base64::Engine;
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let token = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    let spellings = [
        format!("authorization: {auth}"),
        format!("basic: Basic {basic}"),
        format!(
            "query: ?token={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        ),
        format!(
            "lower: {}",
            token.bytes().map(|b| format!("%{b:02x}")).collect::<String>()
        ),
        format!(
            "some: {}",
            token
                .bytes()
                .enumerate()
                .map(|(i, b)| if i % 4 == 1 {
                    format!("%{b:02X}")
                } else {
                    char::from(b).to_string()
                })
                .collect::<String>()
        ),
    ];
    let mut body = Vec::with_capacity(REFLECT_BYTES + 4096);
    let mut i = 0usize;
    while body.len() < REFLECT_BYTES {
        body.extend_from_slice(&vec![b'.'; 997 + i % 13]);
        body.extend_from_slice(spellings[i % spellings.len()].as_bytes());
        body.push(b'\n');
        i += 1;
    }
    let gzip = |bytes: &[u8]| {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };
    let mode = url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut response_headers = vec![
        ("x-debug-authorization", auth.clone()),
        ("x-debug-basic", format!("Basic {basic}")),
    ];
    match mode.as_str() {
        "gzip" => {
            body = gzip(&body);
            response_headers.push(("content-encoding", "gzip".into()));
        }
        "double" => {
            body = gzip(&gzip(&body));
            response_headers.push(("content-encoding", "gzip".into()));
            response_headers.push(("content-encoding", "gzip".into()));
        }
        "identity-gzip" => {
            body = gzip(&body);
            response_headers.push(("content-encoding", "identity".into()));
            response_headers.push(("content-encoding", "gzip".into()));
        }
        "hidden" => {
            body = gzip(&body);
            response_headers.push(("connection", "content-encoding".into()));
            response_headers.push(("content-encoding", "x-gzip".into()));
        }
        _ => {}
    }
    let length = body.len();
    let chunks: Vec<Result<Bytes, std::io::Error>> = body.chunks(4093).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    for (name, value) in response_headers {
        response.headers_mut().append(name, value.parse().unwrap());
    }
    response.headers_mut().insert("content-length", length.into());
    response
}

/// The size of a reflected body before encoding.
pub const REFLECT_BYTES: usize = 2 << 20;

/// `bytes` bytes, produced 64 KiB at a time and never held whole.
async fn download(Path((_owner, _repo, bytes)): Path<(String, String, u64)>) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let stream = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= bytes {
            return None;
        }
        let n = CHUNK.min(bytes - sent);
        Some((Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; n as usize])), sent + n))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-length", bytes.to_string().parse().unwrap());
    response
}

/// One chunk, then the rest only once the test calls `release`.
async fn slow(State(shared): State<Shared>) -> Response {
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let shared = shared.clone();
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from_static(b"first;")), 1)),
                1 => {
                    shared.release.notified().await;
                    Some((Ok(Bytes::from_static(b"rest")), 2))
                }
                _ => None,
            }
        }
    });
    Response::new(Body::from_stream(stream))
}

/// Answers with what it received; with `?redirect_to=URL`, a 307 to `URL`,
/// as a provider's API may answer (a moved resource, a download link).
async fn echo(request: Request) -> Response {
    let method = request.method().to_string();
    let target = request.uri().to_string();
    let redirect = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "redirect_to")
        .map(|(_, v)| v.into_owned());
    if let Some(to) = redirect {
        return (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, to)]).into_response();
    }
    axum::Json(json!({ "method": method, "target": target })).into_response()
}

/// A chat-style webhook that records every alert posted to it. The first
/// `failures` posts get a 503, to make the sender retry.
pub struct Webhook {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Webhook {
    pub async fn start(failures: usize) -> Webhook {
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let store = received.clone();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::Json<Value>| {
                let store = store.clone();
                let attempts = attempts.clone();
                async move {
                    if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < failures {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    store.lock().unwrap().push(body.0);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Webhook { url, received, task }
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// The first alert of `kind`, waiting for it to arrive.
    pub async fn alert(&self, kind: &str) -> Value {
        let mut found = None;
        super::eventually(&format!("an alert of kind {kind} reaches the webhook"), async || {
            found = self.received().into_iter().find(|a| a["kind"] == kind);
            found.is_some()
        })
        .await;
        found.unwrap()
    }
}

/// One request through `git http-backend`, as a web server runs it.
async fn git_cgi(root: std::path::PathBuf, request: Request) -> Response {
    use tokio::io::AsyncWriteExt;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 256 << 20).await.unwrap();
    let mut command = tokio::process::Command::new("/usr/lib/git-core/git-http-backend");
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string());
    for (header, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(value) = parts.headers.get(header) {
            command.env(variable, value.to_str().unwrap());
        }
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)))
        .unwrap_or_else(|| {
            panic!(
                "git http-backend wrote no headers: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let mut response = Response::new(Body::from(out[split.1..].to_vec()));
    for line in String::from_utf8_lossy(&out[..split.0]).lines() {
        let (name, value) = line.split_once(':').unwrap();
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            *response.status_mut() = StatusCode::from_u16(value[..3].parse().unwrap()).unwrap();
        } else {
            response.headers_mut().append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_str(value).unwrap(),
            );
        }
    }
    response
}
