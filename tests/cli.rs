//! The `valetkey` binary as people and agents use it: `run`, `env`,
//! `whoami`, `serve`, `secret set`, `config check`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{BIN, TestBroker, serve};
use serde_json::Value;

fn valetkey(t: &TestBroker, key: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VALETKEY_URL", &t.url)
        .env("VALETKEY_AGENT_KEY", key);
    cmd
}

/// Runs a command to completion off the async runtime, which serves the broker.
async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `valetkey run --agent claude --env ENV -- sh -c SCRIPT`.
fn run_sh(t: &TestBroker, key: &str, env: &str, script: &str) -> Command {
    let mut cmd = valetkey(t, key);
    cmd.args(["run", "--agent", "claude", "--env", env, "--", "sh", "-c", script]);
    cmd
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_injects_credentials_and_revokes_them_when_the_child_exits() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let out = output(run_sh(&t, &key, "staging", "printenv; exit 7")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the child's status is the exit status: {stderr}"
    );
    let env = parse_env(&String::from_utf8(out.stdout).unwrap());

    let credential = env
        .get("VALETKEY_CREDENTIAL")
        .expect("VALETKEY_CREDENTIAL is set")
        .clone();
    assert!(credential.starts_with("vk1."));
    assert_eq!(env.get("VALETKEY_URL"), Some(&t.url));
    assert_eq!(env.get("RAILWAY_API_TOKEN"), Some(&credential));
    assert_eq!(env.get("GH_TOKEN"), Some(&credential));
    assert_eq!(
        env.get("RAILWAY_GRAPHQL_URL"),
        Some(&format!("{}/p/railway/graphql/v2", t.url))
    );
    assert!(
        !env.contains_key("VALETKEY_AGENT_KEY"),
        "the agent must never see the launcher key"
    );
    assert!(!env.values().any(|v| v.contains(&key)));
    assert!(stderr.contains("credential for agent claude in staging"), "{stderr}");

    let (status, body) = t.whoami(&credential).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (401, Some("credential_revoked")),
        "{body}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_passes_signals_to_the_child() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let mut cmd = run_sh(
        &t,
        &key,
        "staging",
        r#"trap 'echo "got TERM"; exit 3' TERM; echo ready; while :; do sleep 0.05; done"#,
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let (code, lines) = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        (child.wait().unwrap().code(), rest)
    })
    .await
    .unwrap();
    assert_eq!(lines.trim(), "got TERM");
    assert_eq!(code, Some(3));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_to_launch_when_the_broker_refuses() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let out = output(run_sh(&t, &key, "production", "echo launched")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the command ran anyway");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("protected_environment") && stderr.contains("event id"),
        "{stderr}"
    );

    let out = output(run_sh(&t, "", "staging", "true")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VALETKEY_AGENT_KEY"));
    t.stop().await;
}

/// The launcher key and the credential go to the broker itself, never
/// through a proxy somebody set in the environment.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_never_sends_keys_through_a_proxy_variable() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let proxy = common::upstream::StandIn::http(&[]).await;
    let mut cmd = run_sh(&t, &key, "staging", "valetkey whoami >/dev/null && echo reached");
    cmd.env("NO_PROXY", "").env("no_proxy", "");
    for var in common::PROXY_VARIABLES {
        cmd.env(var, &proxy.url);
    }
    // `valetkey` itself, for the child's `whoami`.
    let bin_dir = std::path::Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    cmd.env("PATH", path);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "reached", "{stderr}");
    assert_eq!(proxy.count(), 0, "the CLI went through the proxy");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn env_prints_the_same_variables_and_whoami_explains_them() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let mut cmd = valetkey(&t, &key);
    cmd.args([
        "env",
        "--agent",
        "claude",
        "--env",
        "staging",
        "--provider",
        "railway",
        "--format",
        "json",
    ]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vars: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        vars.keys().collect::<Vec<_>>(),
        [
            "RAILWAY_API_TOKEN",
            "RAILWAY_GRAPHQL_URL",
            "VALETKEY_CREDENTIAL",
            "VALETKEY_URL"
        ]
    );

    let mut cmd = valetkey(&t, &key);
    cmd.args(["env", "--agent", "claude", "--env", "staging", "--format", "shell"]);
    let out = output(cmd).await;
    let shell = String::from_utf8(out.stdout).unwrap();
    assert!(shell.lines().all(|l| l.starts_with("export ")), "{shell}");

    let mut cmd = valetkey(&t, "");
    cmd.env("VALETKEY_CREDENTIAL", &vars["VALETKEY_CREDENTIAL"])
        .args(["whoami"]);
    let out = output(cmd).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("agent claude in environment staging"), "{text}");
    assert!(text.contains("variable:write"), "{text}");
    assert!(text.contains("never:"), "{text}");
    t.stop().await;
}

#[test]
fn config_check_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[environments.staging]\n\n[agents.a]\ngrants = [{ provider = \"nope\", environments = [\"prod\"], scopes = [\"read\"] }]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let at = format!("{}:4:", path.display());
    assert_eq!(text.matches(&at).count(), 2, "{text}");
    assert!(
        text.contains("provider `nope`") && text.contains("environment `prod`"),
        "{text}"
    );
    assert!(text.contains("2 error(s)"), "{text}");

    let out = Command::new(BIN)
        .args(["config", "check", "--config", "config/valetkey.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A broker started by its binary, with its log captured.
#[test]
fn serve_without_a_master_key_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--config",
            "config/valetkey.toml",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("VALETKEY_MASTER_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VALETKEY_MASTER_KEY") && stderr.contains("master_key_file"),
        "{stderr}"
    );
    assert!(!dir.path().join("data/master.key").exists());
}

/// The real tokens never appear in the log (at trace level), in any API
/// answer, in the audit trail, or in plaintext anywhere in the database files.
#[tokio::test(flavor = "multi_thread")]
async fn real_tokens_never_leak() {
    const STORED: &str = "rlwy_REAL_staging_token_6b1f0c93e2d84a57";
    const FROM_ENV: &str = "ghp_REALgithubTOKENfromTheEnvironment42";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    // Both providers point at stand-ins, so the tokens travel the proxy too.
    let railway = common::upstream::StandIn::railway(&[STORED]).await;
    let github = common::upstream::StandIn::github(&[FROM_ENV]).await;
    let text = common::CONFIG
        .replace(
            "kind = \"railway\"",
            &format!("kind = \"railway\"\nupstream = \"{}\"", railway.url),
        )
        .replace(
            "kind = \"github\"",
            &format!("kind = \"github\"\nupstream = \"{}\"", github.url),
        )
        // Introspection sends the real tokens too; it runs at start.
        .replace("[introspection]\nenabled = false", "[introspection]\nenabled = true")
        + &format!(
            "\n[audit]\njsonl_file = \"{}\"\n",
            dir.path().join("audit.jsonl").display()
        );
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");

    // First start creates the master key; then the token is stored as ops do.
    let first = serve(dir.path(), &config, &[]);
    assert_eq!(first.stop(), Some(0), "SIGTERM is a graceful stop");
    let mut set = Command::new(BIN)
        .args(["secret", "set", "railway-staging", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(set.stdin.take().unwrap(), "{STORED}").unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let served = serve(dir.path(), &config, &[("GITHUB_STAGING_TOKEN", FROM_ENV)]);
    let http = common::http();
    let key = common::add_agent_with_cli(&config, &data, "claude");
    let mut answers = Vec::new();
    let minted = served.mint(&key, serde_json::json!({ "env": "staging" })).await;
    answers.push(minted.to_string());
    let credential = minted["credential"].as_str().unwrap();
    for path in ["/v1/whoami", "/readyz", "/healthz", "/.well-known/jwks.json"] {
        let text = http
            .get(format!("{}{path}", served.url))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        answers.push(text);
    }
    let proxied = [
        http.post(format!("{}/p/railway/graphql/v2", served.url))
            .json(&serde_json::json!({ "query": "{ me { name } }" })),
        http.get(format!("{}/p/github/user", served.url)),
    ];
    for request in proxied {
        let response = request.bearer_auth(credential).send().await.unwrap();
        assert_eq!(response.status(), 200);
        answers.push(response.text().await.unwrap());
    }
    assert_eq!(
        railway.received()[0].header("authorization"),
        Some(format!("Bearer {STORED}").as_str())
    );
    assert_eq!(
        github.received()[0].header("authorization"),
        Some(format!("Bearer {FROM_ENV}").as_str())
    );
    let ready: Value = serde_json::from_str(&answers[2]).unwrap();
    assert!(
        ready["provider_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["provider"] == "railway" && t["env"] == "staging" && t["problem"].is_null()),
        "the stored token did not load: {ready}"
    );
    let sink = dir.path().join("audit.jsonl");
    common::eventually("the audit sink has the proxied requests", async || {
        std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .matches("proxy_allowed")
            .count()
            == 2
    })
    .await;
    assert_eq!(served.stop(), Some(0));
    let sink = std::fs::read_to_string(&sink).unwrap();

    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("real token loaded"), "the log is not what was captured");
    assert!(log.contains("token reach"), "introspection did not run: {log}");
    let store = valetkey::store::SqliteStore::open_in(&data).await.unwrap();
    let audit = common::audit_lines(&store).await;
    assert!(audit.iter().any(|e| e.contains("secret_set")));
    assert_eq!(audit.iter().filter(|e| e.contains("proxy_allowed")).count(), 2);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        files.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for token in [STORED, FROM_ENV] {
        assert!(!log.contains(token), "a real token is in the log");
        assert!(!sink.contains(token), "a real token is in the audit sink");
        assert!(
            !answers.iter().any(|a| a.contains(token)),
            "a real token is in an API answer"
        );
        assert!(
            !audit.iter().any(|e| e.contains(token)),
            "a real token is in the audit trail"
        );
        for bytes in &files {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "a real token is in plaintext in the database"
            );
        }
    }
    // The launcher key and the credential are secrets too: the log has neither.
    assert!(!log.contains(&key) && !log.contains(credential));
    assert!(!sink.contains(&key) && !sink.contains(credential));
}

#[tokio::test]
async fn check_says_what_the_proxy_would_do_and_exits_by_it() {
    let f = common::fixture::Fixture::start().await;
    let check = |args: &[&str]| {
        let mut cmd = valetkey(&f.broker, "");
        cmd.env("VALETKEY_CREDENTIAL", &f.credential).arg("check").args(args);
        cmd
    };
    let out = output(check(&[
        "--provider",
        "railway",
        "--graphql",
        "mutation { volumeDelete(volumeId: \"vol_db\") }",
    ]))
    .await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("refused (shared_resource):"), "{text}");
    assert!(text.contains("volume vol_db  owned by staging, production"), "{text}");

    let out = output(check(&[
        "--provider",
        "railway",
        "--graphql",
        "query($id: String!) { project(id: $id) { name } }",
        "--variables",
        r#"{"id": "proj_1"}"#,
    ]))
    .await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("allowed: railway in staging"), "{text}");

    let out = output(check(&[
        "--provider",
        "github",
        "--method",
        "delete",
        "--path",
        "/repos/acme/api",
        "--json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["refusal"]["type"], "approval_required");
    assert_eq!(answer["operations"][0]["tier"], "catastrophic");

    let out = output(check(&["--provider", "github", "--variables", "{}"])).await;
    assert_eq!(out.status.code(), Some(2), "clap refuses --variables without --graphql");
    assert_eq!(f.railway.count() + f.github.count(), 0, "a check reached an upstream");
}
