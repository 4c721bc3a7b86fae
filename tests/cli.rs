//! The `valetkey` binary as people and agents use it: `run`, `env`,
//! `whoami`, `serve`, `secret set`, `config check`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{BIN, TestBroker, serve};
use serde_json::Value;

fn valetkey(t: &TestBroker, key: &str) -> Command {
    // Agents work in a directory of their own: `run` refuses to launch
    // where real tokens lie (this crate's tests hold sample ones).
    let work = t.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VALETKEY_URL", &t.url)
        .env("VALETKEY_AGENT_KEY", key);
    cmd
}

/// The directory holding the binary under test, for an agent's PATH.
fn bin_dir() -> String {
    std::path::Path::new(BIN).parent().unwrap().display().to_string()
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
    assert!(stderr.contains("session for agent claude in staging"), "{stderr}");

    let (status, body) = t.whoami(&credential).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (401, Some("credential_revoked")),
        "{body}"
    );
    t.stop().await;
}

/// One launcher key launches several agents at once, each confined with a
/// credential of its own; the key reaches `run` through its environment
/// here, and the environment of none of them holds it.
#[tokio::test(flavor = "multi_thread")]
async fn several_runs_share_one_launcher_key() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let script = "sleep 0.5; printf '%s\\n' \"$VALETKEY_CREDENTIAL\"; env | grep -c \"$0\" || true";
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = run_sh(&t, &key, "staging", script);
            // `sh -c SCRIPT ARG0`: the child greps its own environment for the key.
            cmd.arg(&key);
            tokio::spawn(output(cmd))
        })
        .collect();
    let mut credentials = std::collections::BTreeSet::new();
    for run in runs {
        let out = run.await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let (credential, key_seen) = stdout.split_at(stdout.find('\n').unwrap_or(stdout.len()));
        assert!(credential.starts_with("vk1."), "{stdout}");
        assert_eq!(key_seen.trim(), "0", "the agent's environment holds the launcher key");
        credentials.insert(credential.to_owned());
    }
    assert_eq!(credentials.len(), 3);
    t.stop().await;
}

/// A launcher who is not root, a developer, runs the agent confined as
/// themselves: PID 1 keeps, across its start, what it needs of the user
/// namespace's capabilities. Run as root, the test launches as `nobody`.
#[tokio::test(flavor = "multi_thread")]
async fn a_launcher_who_is_not_root_runs_the_agent_confined_as_themselves() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let base = tempfile::tempdir().unwrap();
    let (work, home) = (base.path().join("work"), base.path().join("home"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(home.join(".config/gh")).unwrap();
    std::fs::write(
        home.join(".config/gh/hosts.yml"),
        "github.com:\n    oauth_token: gho_fake\n",
    )
    .unwrap();
    let as_root = nix::unistd::geteuid().is_root();
    let (uid, gid) = if as_root {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        for path in [
            base.path(),
            &work,
            &home,
            &home.join(".config"),
            &home.join(".config/gh"),
        ] {
            std::os::unix::fs::chown(path, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
        }
        (nobody.uid.as_raw(), nobody.gid.as_raw())
    } else {
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    };
    let bin_dir = bin_dir();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(&work)
        .env_clear()
        .env("PATH", format!("{bin_dir}:/usr/bin:/bin"))
        .env("HOME", &home)
        .env("VALETKEY_URL", &t.url)
        .env("VALETKEY_AGENT_KEY", &key)
        .args(["run", "--agent", "claude", "--env", "staging", "--", "sh", "-c"])
        .arg(
            "id -u; echo hello > made; cat \"$HOME/.config/gh/hosts.yml\" 2>/dev/null || echo hidden; \
             valetkey whoami > /dev/null && echo reached; echo by-its-path >> /dev/stdout",
        );
    if as_root {
        cmd.uid(uid).gid(gid);
    }
    // Its output goes to a file of its launcher's, which it may open again
    // by path (`/dev/stdout`), as scripts do.
    let output_file = base.path().join("output");
    let file = std::fs::File::create(&output_file).unwrap();
    std::os::unix::fs::chown(&output_file, Some(uid), Some(gid)).unwrap();
    cmd.stdout(file);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = std::fs::read_to_string(&output_file).unwrap();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![uid.to_string().as_str(), "hidden", "reached", "by-its-path"],
        "{stderr}"
    );
    let made = std::fs::metadata(work.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (uid, gid));
    t.stop().await;
}

/// What comes back read-only into the agent's home (a toolchain) stays
/// read-only down to the mounts inside it. The launcher here is root in a
/// user namespace of its own, as in a container, which mounts a tmpfs in
/// its `~/.local/bin`.
#[tokio::test(flavor = "multi_thread")]
async fn a_mount_inside_a_read_only_grant_is_read_only_too() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let base = tempfile::tempdir().unwrap();
    let (work, home) = (base.path().join("work"), base.path().join("home"));
    let tools = home.join(".local/bin");
    std::fs::create_dir_all(tools.join("cache")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let bin_dir = bin_dir();
    let script = format!(
        "mount -t tmpfs none {cache} && exec {BIN} run --agent claude --env staging -- sh -c \
         'echo planted > {cache}/planted 2>/dev/null && echo written || echo refused; \
          echo mine > made && echo work-written'",
        cache = tools.join("cache").display()
    );
    let mut cmd = Command::new("unshare");
    cmd.current_dir(&work)
        .env_clear()
        .env("PATH", format!("{bin_dir}:/usr/bin:/bin"))
        .env("HOME", &home)
        .env("VALETKEY_URL", &t.url)
        .env("VALETKEY_AGENT_KEY", &key)
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "refused\nwork-written\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("you are root without the machine's root privileges"),
        "{stderr}"
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

    // A program that sets no handler of its own is ended by the signal: the
    // agent starts with no signal blocked, whatever its supervisors block.
    let mut cmd = valetkey(&t, &key);
    cmd.args(["run", "--agent", "claude", "--env", "staging", "--"])
        .args([
            "/usr/bin/python3",
            "-c",
            "import signal, sys, time\n\
             blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])\n\
             print(sorted(int(s) for s in blocked), flush=True)\n\
             time.sleep(30)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let (code, blocked) = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        (child.wait().unwrap().code(), line)
    })
    .await
    .unwrap();
    assert_eq!(blocked.trim(), "[]", "the agent starts with signals blocked");
    assert_eq!(code, Some(128 + 15), "SIGTERM did not end the agent");
    t.stop().await;
}

/// A terminal's Ctrl-C reaches the agent once: the terminal delivers it to
/// the whole foreground process group, and neither `run` nor its helpers
/// pass it on again (an agent reads a second Ctrl-C as "quit").
#[tokio::test(flavor = "multi_thread")]
async fn a_terminals_ctrl_c_reaches_the_agent_once() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ctrl_c.py");
    let work = t.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    for isolation in [&[][..], &["--no-isolation"][..]] {
        let mut fixture_cmd = Command::new("/usr/bin/python3");
        fixture_cmd
            .current_dir(&work)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("VALETKEY_URL", &t.url)
            .env("VALETKEY_AGENT_KEY", &key)
            .arg(&fixture)
            .arg(BIN)
            .args(["run", "--agent", "claude", "--env", "staging"])
            .args(isolation);
        let out = output(fixture_cmd).await;
        let seen = String::from_utf8_lossy(&out.stdout);
        assert!(seen.contains("sigints 1"), "{isolation:?}: {seen}");
    }
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
    let bin_dir = bin_dir();
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
    // The provider's own, and the forward proxy's (tests/forward).
    let forward = |k: &str| {
        k.to_ascii_uppercase().contains("PROXY")
            || k.starts_with("GIT_CONFIG_")
            || [
                "SSL_CERT_FILE",
                "NODE_EXTRA_CA_CERTS",
                "npm_config_cafile",
                "RAILWAY_TOKEN",
            ]
            .contains(&k)
            || vars[k].ends_with("ca-bundle.pem")
    };
    assert_eq!(
        vars.keys().filter(|k| !forward(k)).collect::<Vec<_>>(),
        [
            "RAILWAY_API_TOKEN",
            "RAILWAY_GRAPHQL_URL",
            "VALETKEY_CREDENTIAL",
            "VALETKEY_URL"
        ]
    );
    assert_eq!(vars["RAILWAY_TOKEN"], vars["VALETKEY_CREDENTIAL"]);
    assert!(vars["HTTPS_PROXY"].contains(&vars["VALETKEY_CREDENTIAL"]));

    let mut cmd = valetkey(&t, &key);
    cmd.args(["env", "--agent", "claude", "--env", "staging", "--format", "shell"]);
    let out = output(cmd).await;
    let shell = String::from_utf8(out.stdout).unwrap();
    // What `run` removes, then what it sets.
    let mut lines = shell.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("unset SSL_CERT_DIR ")),
        "{shell}"
    );
    assert!(lines.all(|l| l.starts_with("export ")), "{shell}");

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
        )
        + "\n[approvers.dana]\nproviders = [\"*\"]\nenvironments = [\"*\"]\n";
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");

    // First start creates the master key and the bootstrap admin key; with
    // it ops name themselves, and store the token with their own key.
    let first = serve(dir.path(), &config, &[]);
    let bootstrap = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let alice_file = dir.path().join("home/alice.key");
    let out = common::admin_cli(&first.url, &data.join("admin.key"))
        .args(["admin", "add", "alice", "--out"])
        .arg(&alice_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut printed = vec![String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)];
    let alice = std::fs::read_to_string(&alice_file).unwrap().trim().to_owned();
    let mut set = common::admin_cli(&first.url, &alice_file)
        .args(["secret", "set", "railway-staging"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(set.stdin.take().unwrap(), "{STORED}").unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    printed.push(String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr));
    assert_eq!(first.stop(), Some(0), "SIGTERM is a graceful stop");

    let served = serve(dir.path(), &config, &[("GITHUB_STAGING_TOKEN", FROM_ENV)]);
    let http = common::http();
    let out = common::admin_cli(&served.url, &alice_file)
        .args(["agent", "add", "claude"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // An approver enrolls: the code an admin issues, and the factor's secret
    // shown to the approver once, are secrets too.
    let out = common::admin_cli(&served.url, &alice_file)
        .args(["approver", "invite", "dana"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let enrollment = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = std::process::Command::new(common::BIN)
        .args([
            "approver",
            "enroll",
            "dana",
            "--code",
            &enrollment,
            "--url",
            &served.url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let uri = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let factor = totp_rs::TOTP::from_url(&uri).unwrap();
    let base32 = factor.get_secret_base32();
    let out = std::process::Command::new(common::BIN)
        .args(["approver", "confirm", "dana", "--url", &served.url, "--code"])
        .arg(factor.generate_current().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut answers = Vec::new();
    let minted = served.mint(&key, serde_json::json!({ "env": "staging" })).await;
    answers.push(minted.to_string());
    let credential = minted["credential"].as_str().unwrap();
    for (path, auth) in [
        ("/v1/whoami", credential),
        ("/readyz", alice.as_str()),
        ("/healthz", credential),
        ("/.well-known/jwks.json", credential),
        ("/v1/admins", alice.as_str()),
    ] {
        let text = http
            .get(format!("{}{path}", served.url))
            .bearer_auth(auth)
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
    // A credential, and a provider's token, where the broker quotes the
    // request (the path): refused, recorded and logged as marks.
    const FOUND: &str = "ghp_FOUNDinAfileByTheAgent0123456789abcd";
    let mut quoted = Vec::new();
    for path in [
        format!("/p/github/repos/acme/api/contents/{credential}"),
        format!("/p/github/{FOUND}"),
    ] {
        let response = http
            .get(format!("{}{path}", served.url))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{path}");
        quoted.push(response.text().await.unwrap());
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
    assert!(
        audit
            .iter()
            .any(|e| e.contains("secret_set") && e.contains("\"actor\":\"admin:alice\"")),
        "the secret is attributed to the admin who stored it"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.contains("admin_added") && e.contains("\"actor\":\"admin:bootstrap\""))
    );
    // Every file of the data dir but the bootstrap key's own, which is
    // where ops read it from.
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "admin.key" {
            files.push(std::fs::read(path).unwrap());
        }
    }
    for token in [STORED, FROM_ENV, FOUND, bootstrap.as_str(), alice.as_str()] {
        assert!(!log.contains(token), "a secret is in the log");
        assert!(!sink.contains(token), "a secret is in the audit sink");
        assert!(
            !answers.iter().any(|a| a.contains(token)),
            "a secret is in an API answer"
        );
        assert!(
            !printed.iter().any(|p| p.contains(token)),
            "a secret is in what an admin command printed"
        );
        assert!(
            !audit.iter().any(|e| e.contains(token)),
            "a secret is in the audit trail"
        );
        for bytes in &files {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "a secret is in plaintext in the database"
            );
        }
    }
    // The enrollment code and the factor: only the approver saw them.
    for secret in [enrollment.as_str(), uri.as_str(), base32.as_str()] {
        assert!(
            !log.contains(secret) && !sink.contains(secret),
            "an approver's secret was logged"
        );
        assert!(
            !audit.iter().any(|e| e.contains(secret)),
            "an approver's secret is in the audit trail"
        );
        for bytes in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "an approver's secret is in plaintext in the database"
            );
        }
    }
    assert!(audit.iter().any(|e| e.contains("approver_enrolled")));
    // The launcher key and the credential are secrets too: the log has neither.
    assert!(!log.contains(&key) && !log.contains(credential));
    assert!(!sink.contains(&key) && !sink.contains(credential));
    assert!(!audit.iter().any(|e| e.contains(credential)));
    assert!(!quoted.iter().any(|a| a.contains(credential) || a.contains(FOUND)));
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

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// An admin command's outcome: (success, stdout, stderr).
fn admin(url: &str, key_file: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = common::admin_cli(url, key_file).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `valetkey status --json` as an admin: whether it exited 0, and how the
/// real token of `provider` in `env` loaded.
fn token_status(url: &str, key_file: &std::path::Path, provider: &str, env: &str) -> (bool, Value) {
    let (ok, status, _) = admin(url, key_file, &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    let token = status["provider_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["provider"] == provider && t["env"] == env)
        .unwrap()
        .clone();
    (ok, token)
}

/// Admins are people: a key per name, written 0600 or shown once, listed,
/// refused the moment it is removed or expires; every change is the named
/// admin's in the audit trail; the last live key cannot be removed; and a
/// broker that finds no live key at start writes a fresh bootstrap key to a
/// 0600 file, never to its log.
#[tokio::test(flavor = "multi_thread")]
async fn admins_are_named_removable_and_expiring() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    let data = dir.path().join("data");
    let served = serve(dir.path(), &config, &[]);
    let bootstrap = data.join("admin.key");
    assert_eq!(mode(&bootstrap), 0o600);
    let first_bootstrap = std::fs::read_to_string(&bootstrap).unwrap();

    // The bootstrap key names alice; her key goes to a new 0600 file.
    let alice = dir.path().join("home/.config/valetkey/admin.key");
    let alice_arg = alice.display().to_string();
    let (ok, stdout, stderr) = admin(
        &served.url,
        &bootstrap,
        &["admin", "add", "alice", "--ttl", "2h", "--out", &alice_arg],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty() && stderr.contains("expires at"), "{stdout}{stderr}");
    assert_eq!((mode(&alice), mode(alice.parent().unwrap())), (0o600, 0o700));
    let alice_key = std::fs::read_to_string(&alice).unwrap().trim().to_owned();
    assert!(alice_key.starts_with("vka_"));

    let (ok, _, stderr) = admin(&served.url, &alice, &["agent", "add", "claude"]);
    assert!(ok, "{stderr}");
    let (ok, listed, _) = admin(&served.url, &alice, &["admin", "list"]);
    assert!(
        ok && listed.contains("alice\t") && listed.contains("bootstrap\t"),
        "{listed}"
    );
    assert!(!listed.contains(&alice_key), "a key is listed");

    // Refusals name the problem and change nothing.
    for (args, expected) in [
        (vec!["admin", "add", "alice"], "admin_exists"),
        (vec!["admin", "add", "bootstrap"], "`bootstrap` names the key"),
        (vec!["admin", "add", "Bob!"], "not a valid admin name"),
        (
            vec!["admin", "add", "bob", "--ttl", "400d"],
            "between 1 minute and 365 days",
        ),
        (vec!["admin", "add", "bob", "--ttl", "soon"], "is not a duration"),
        (vec!["admin", "remove", "carol"], "unknown_admin"),
    ] {
        let (ok, _, stderr) = admin(&served.url, &alice, &args);
        assert!(!ok && stderr.contains(expected), "{args:?}: {stderr}");
    }
    let (_, listed_again, _) = admin(&served.url, &alice, &["admin", "list"]);
    assert_eq!(listed_again, listed, "a refused command changed the admins");

    // Nor does a key go to another machine in clear.
    let (ok, _, stderr) = admin("http://192.0.2.1:8700", &alice, &["admin", "list"]);
    assert!(!ok && stderr.contains("in clear"), "{stderr}");

    // A key file others can read is refused, as ssh refuses one.
    let loose = dir.path().join("loose.key");
    std::fs::write(&loose, &alice_key).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (ok, _, stderr) = admin(&served.url, &loose, &["admin", "list"]);
    assert!(!ok && stderr.contains("chmod 600"), "{stderr}");

    // Removed: refused at once. The last live key cannot be removed.
    let (ok, _, stderr) = admin(&served.url, &alice, &["admin", "remove", "bootstrap"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = admin(&served.url, &bootstrap, &["agent", "list"]);
    assert!(!ok && stderr.contains("admin_key_invalid"), "{stderr}");
    let (ok, _, stderr) = admin(&served.url, &alice, &["admin", "remove", "alice"]);
    assert!(!ok && stderr.contains("last_admin"), "{stderr}");

    // Every change is the named admin's.
    let (ok, events, _) = admin(&served.url, &alice, &["audit", "search", "--json"]);
    assert!(ok);
    let actor_of = |kind: &str| -> Vec<String> {
        events
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["kind"] == kind)
            .map(|e| e["actor"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(actor_of("admin_key_created"), ["broker"]);
    assert_eq!(actor_of("admin_added"), ["admin:bootstrap"]);
    assert_eq!(actor_of("agent_added"), ["admin:alice"]);
    assert_eq!(actor_of("admin_removed"), ["admin:alice"]);

    // Alice's key expires; the broker, restarted with no live key, writes a
    // new bootstrap key in place of the old file.
    assert_eq!(served.stop(), Some(0));
    let db = data.join("valetkey.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE admin_keys SET expires_at = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let served = serve(dir.path(), &config, &[]);
    let (ok, _, stderr) = admin(&served.url, &alice, &["agent", "list"]);
    assert!(!ok && stderr.contains("admin_key_expired"), "{stderr}");
    let second_bootstrap = std::fs::read_to_string(&bootstrap).unwrap();
    assert_ne!(second_bootstrap, first_bootstrap);
    assert_eq!(mode(&bootstrap), 0o600);
    let (ok, listed, stderr) = admin(&served.url, &bootstrap, &["admin", "list"]);
    assert!(ok, "{stderr}");
    assert!(listed.contains("alice\t") && listed.contains("EXPIRED"), "{listed}");
    assert_eq!(served.stop(), Some(0));

    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("bootstrap admin key was written to"),
        "the log is not what was captured"
    );
    for key in [first_bootstrap.trim(), second_bootstrap.trim(), alice_key.as_str()] {
        assert!(!log.contains(key), "an admin key is in the log");
    }
}

/// Under `run` the agent holds no admin key even when its launcher's shell
/// did, so the admin commands it tries fail, and the admin API refuses the
/// credential and the launcher key alike: nothing is registered.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_under_run_cannot_act_as_an_admin() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let home = tempfile::tempdir().unwrap();
    let bin_dir = bin_dir();
    let script = r#"
        env | grep -c '^VALETKEY_ADMIN' ; echo "---"
        valetkey agent add oncall; echo "agent add exited $?"
        curl -s -o /dev/null -w 'api with the credential: %{http_code}\n' \
             -H "Authorization: Bearer $VALETKEY_CREDENTIAL" -H 'Content-Type: application/json' \
             -d '{"name":"oncall"}' "$VALETKEY_URL/v1/agents"
    "#;
    let mut cmd = run_sh(&t, &key, "staging", script);
    cmd.env("VALETKEY_ADMIN_KEY", &t.admin_key)
        .env("VALETKEY_ADMIN_KEY_FILE", t.data_dir().join("admin.key"))
        .env("HOME", home.path())
        .env(
            "PATH",
            format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default()),
        );
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("0\n---"), "the agent holds an admin key: {stdout}");
    assert!(stdout.contains("agent add exited 1"), "{stdout}{stderr}");
    assert!(stderr.contains("no admin key"), "{stderr}");
    assert!(stdout.contains("api with the credential: 401"), "{stdout}");
    let (status, problem) = t
        .send(
            t.http
                .post(format!("{}/v1/agents", t.url))
                .bearer_auth(&key)
                .json(&serde_json::json!({ "name": "oncall" })),
        )
        .await;
    assert_eq!((status, problem["type"].as_str()), (401, Some("admin_key_invalid")));
    assert!(
        problem["agent_guidance"].as_str().unwrap().contains("ask a human"),
        "{problem}"
    );
    let agents = t.broker.store().list_agents().await.unwrap();
    assert_eq!(agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["claude"]);
}

/// `serve` refuses to start while other users could change what it trusts
/// (the configuration, the data dir, the master key, their directories) or
/// read its secrets, naming each file with the command that fixes it; run,
/// those commands make it start.
#[test]
fn serve_refuses_files_others_could_change_or_read() {
    fn chmod(path: std::path::PathBuf, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    type Loosen = fn(&std::path::Path);
    let cases: [(&str, Loosen, &str); 6] = [
        (
            "config behind a link",
            |d| {
                std::fs::create_dir(d.join("open")).unwrap();
                std::fs::rename(d.join("etc/valetkey.toml"), d.join("open/valetkey.toml")).unwrap();
                std::os::unix::fs::symlink(d.join("open/valetkey.toml"), d.join("etc/valetkey.toml")).unwrap();
                chmod(d.join("open"), 0o777);
            },
            "open is above",
        ),
        (
            "config",
            |d| chmod(d.join("etc/valetkey.toml"), 0o664),
            "etc/valetkey.toml can be written by other users",
        ),
        (
            "config dir",
            |d| chmod(d.join("etc"), 0o777),
            "can be written by other users, who could replace it",
        ),
        (
            "config owner",
            |d| std::os::unix::fs::chown(d.join("etc/valetkey.toml"), Some(65534), None).unwrap(),
            "is owned by uid 65534",
        ),
        (
            "data dir",
            |d| chmod(d.join("data"), 0o755),
            "data holds secrets and can be read or entered by other users",
        ),
        (
            "master key",
            |d| chmod(d.join("data/master.key"), 0o644),
            "master.key holds secrets",
        ),
    ];
    for (what, loosen, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/valetkey.toml"), common::CONFIG).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        chmod(dir.path().join("data"), 0o700);
        let master = dir.path().join("data/master.key");
        std::fs::write(&master, "l2c0SJkXzWkqTtVq0nZNzKx6mOa4Fm0R1bX1mOvc9bA=\n").unwrap();
        chmod(master, 0o600);
        loosen(dir.path());
        let start = || {
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(dir.path().join("etc/valetkey.toml"))
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .env_remove("VALETKEY_MASTER_KEY")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let out = exited(start());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("refusing to start") && stderr.contains(expected),
            "{what}: {stderr}"
        );
        assert!(
            !dir.path().join("data/valetkey.db").exists(),
            "{what}: the store was opened"
        );

        // The fixes it names, run as they are written, let it start.
        for fix in stderr
            .lines()
            .filter_map(|l| l.split_once("; fix: ").map(|(_, fix)| fix))
        {
            assert!(
                Command::new("sh").args(["-c", fix]).status().unwrap().success(),
                "{fix}"
            );
        }
        let log = log_until_serving(start());
        assert!(
            log.contains("valetkey is serving"),
            "{what}: still refused after its fixes: {log}"
        );
    }
}

/// `serve --user NAME`, started as root, becomes that user before it reads
/// anything: what it creates is that user's, and nothing of it runs as root.
#[test]
fn serve_started_as_root_becomes_its_own_user() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test starts the broker as root, as an init system would; run the suite as root");
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a `nobody` user");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    for path in [dir.path(), config.as_path()] {
        std::os::unix::fs::chown(path, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--dev",
            "--user",
            "nobody",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("VALETKEY_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("valetkey is serving") {
        if stderr.read_line(&mut log).unwrap() == 0 {
            break;
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("valetkey is serving"), "{log}");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_owned();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    let expected = nobody.uid.to_string();
    assert_eq!(uids, [expected.as_str(); 4], "real, effective, saved and file uid");
    for file in ["data", "data/master.key", "data/admin.key", "data/valetkey.db"] {
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path().join(file)).unwrap());
        assert_eq!(owner, nobody.uid.as_raw(), "{file} is not the broker user's");
    }
    assert!(!log.contains("the broker runs as root"), "{log}");

    let out = Command::new(BIN)
        .args(["serve", "--user", "no-such-user-here", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("there is no such user"),
        "{stderr}"
    );
}

/// A data dir the previous release made (`tests/fixtures/upgrade`, by the
/// binary of e27a72a: a dev master key, its first admin key, a stored
/// token, agent `claude` and a mint) upgrades in place: the schema is
/// migrated, the stored token still opens, the launcher key still mints, the
/// chain still verifies; the old admin key, which that release could print to
/// a log, is retired, and a fresh bootstrap key is written in its place.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_of_the_previous_release_upgrades_in_place() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(fixture.join("data")).unwrap() {
        let entry = entry.unwrap();
        let to = data.join(entry.file_name());
        std::fs::copy(entry.path(), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.path().join("valetkey.toml");
    std::fs::copy(fixture.join("valetkey.toml"), &config).unwrap();
    let old_admin = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let launcher = std::fs::read_to_string(fixture.join("launcher.key"))
        .unwrap()
        .trim()
        .to_owned();

    // Started once with a wrong key, the upgraded store refuses it and
    // records nothing that would lock its own key out.
    let wrong = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("VALETKEY_MASTER_KEY", "l2c0SJkXzWkqTtVq0nZNzKx6mOa4Fm0R1bX1mOvc9bA=")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not the one the store is sealed under"), "{stderr}");

    let served = serve(dir.path(), &config, &[]);
    let old_admin_file = dir.path().join("old-admin.key");
    std::fs::write(&old_admin_file, &old_admin).unwrap();
    std::fs::set_permissions(&old_admin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, _, stderr) = admin(&served.url, &old_admin_file, &["agent", "list"]);
    assert!(
        !ok && stderr.contains("admin_key_invalid"),
        "the old key was replaced: {stderr}"
    );

    let bootstrap = data.join("admin.key");
    assert_ne!(std::fs::read_to_string(&bootstrap).unwrap(), old_admin);
    let (ok, listed, stderr) = admin(&served.url, &bootstrap, &["agent", "list"]);
    assert!(ok && listed.starts_with("claude\t"), "{listed}{stderr}");

    let minted = served.mint(&launcher, serde_json::json!({ "env": "staging" })).await;
    assert!(
        minted["credential"].as_str().is_some_and(|c| c.starts_with("vk1.")),
        "{minted}"
    );

    let (ok, railway) = token_status(&served.url, &bootstrap, "railway", "staging");
    assert!(
        railway["problem"].is_null(),
        "the stored token no longer opens: {railway}"
    );
    assert!(!ok, "the fixture stores no token for the other environments: degraded");

    let (ok, verified, stderr) = admin(&served.url, &bootstrap, &["audit", "verify", "--json"]);
    assert!(ok, "{verified}{stderr}");
    let verified: Value = serde_json::from_str(&verified).unwrap();
    assert!(verified["events"].as_u64().unwrap() >= 6, "{verified}");
    assert!(verified["last_checkpoint"].is_number(), "{verified}");
    assert_eq!(served.stop(), Some(0));
}

/// `valetkey scan` finds the tokens of each kind lying in a tree (an env
/// file, a provider CLI's config, AWS credentials, source code), reports
/// file, line, kind and a fingerprint, prints no value, skips what it must
/// not read, and exits by what it found.
#[test]
fn scan_reports_tokens_lying_around_and_prints_none() {
    const GHP: &str = "ghp_R3alLookingT0kenValue0123456789abcd";
    const RAILWAY: &str = "0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c";
    const PG_PASSWORD: &str = "pw-s3cret-pw";
    const GENERIC: &str = "q8Jx2LmN4pRt6VwY9zBc";
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |path: &str, text: String| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "app/.env",
        format!(
            "PORT=8080\nGH_TOKEN={GHP}\nRAILWAY_TOKEN={RAILWAY}\n\
             DATABASE_URL=postgres://app:{PG_PASSWORD}@db.internal:5432/app\nSTRIPE_API_TOKEN={GENERIC}\n"
        ),
    );
    write(
        ".railway/config.json",
        format!("{{\n  \"user\": {{\n    \"token\": \"{RAILWAY}\"\n  }}\n}}\n"),
    );
    write(
        ".aws/credentials",
        format!("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {AWS_SECRET}\n"),
    );
    write(
        "app/src/client.py",
        format!("# service {RAILWAY}\nclient = Github(\"{GHP}\")\n"),
    );
    write(
        "app/README.md",
        "Set GH_TOKEN to a ghp_ token; never commit it.\n".into(),
    );
    write("app/node_modules/pkg/.env", format!("GH_TOKEN={GHP}\n"));
    write("app/.git/config", format!("token = {GHP}\n"));

    let out = Command::new(BIN).arg("scan").arg(root).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    let found: Vec<(String, String)> = stdout
        .lines()
        .map(|l| {
            let (place, kind) = l.split_once(": ").unwrap();
            (
                place.strip_prefix(&format!("{}/", root.display())).unwrap().to_owned(),
                kind.to_owned(),
            )
        })
        .collect();
    let places: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        places,
        [
            ".aws/credentials:2",
            ".aws/credentials:3",
            ".railway/config.json:3",
            "app/.git/config:1",
            "app/.env:2",
            "app/.env:3",
            "app/.env:4",
            "app/.env:5",
            "app/src/client.py:2",
        ],
        "{stdout}"
    );
    for (place, needle) in [
        (".aws/credentials:2", "AWS access key id"),
        (".aws/credentials:3", "AWS secret access key"),
        (".railway/config.json:3", "Railway"),
        ("app/.env:2", "GitHub personal access token"),
        ("app/.env:3", "Railway"),
        ("app/.env:4", "database URL with a password"),
        ("app/.env:5", "STRIPE_API_TOKEN"),
    ] {
        let kind = &found.iter().find(|(p, _)| p == place).unwrap().1;
        assert!(
            kind.contains(needle) && kind.contains("(fingerprint "),
            "{place}: {kind}"
        );
    }
    // The same token has the same fingerprint wherever it lies.
    let fingerprint = |place: &str| {
        found
            .iter()
            .find(|(p, _)| p == place)
            .unwrap()
            .1
            .rsplit_once(' ')
            .unwrap()
            .1
            .to_owned()
    };
    assert_eq!(fingerprint("app/.env:2"), fingerprint("app/src/client.py:2"));
    assert_eq!(fingerprint("app/.env:3"), fingerprint(".railway/config.json:3"));

    let json = Command::new(BIN).args(["scan", "--json"]).arg(root).output().unwrap();
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 9);
    for printed in [
        stdout.as_ref(),
        stderr.as_ref(),
        String::from_utf8_lossy(&json.stdout).as_ref(),
    ] {
        for secret in [GHP, RAILWAY, PG_PASSWORD, GENERIC, AWS_SECRET, "AKIAIOSFODNN7EXAMPLE"] {
            assert!(!printed.contains(secret), "a token was printed: {printed}");
        }
    }

    let clean = Command::new(BIN)
        .arg("scan")
        .arg(root.join("app/src/../README.md"))
        .output()
        .unwrap();
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(clean.stdout.is_empty());
}

/// `run` scans the directory the agent will work in and refuses to launch
/// while a real token lies there; `--allow-tokens` launches anyway, and
/// the broker records it (file, line, kind, fingerprint: never the value).
#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_to_launch_beside_real_tokens_unless_told_and_recorded() {
    const GHP: &str = "ghp_R3alLookingT0kenValue0123456789abcd";
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let work = t.dir.path().join("work");
    std::fs::create_dir_all(work.join("app")).unwrap();
    std::fs::write(work.join("app/.env"), format!("PORT=1\nGH_TOKEN={GHP}\n")).unwrap();
    let mints = async || {
        common::audit_lines(t.broker.store())
            .await
            .iter()
            .filter(|e| e.contains("\"kind\":\"mint\""))
            .count()
    };

    let out = output(run_sh(&t, &key, "staging", "echo launched")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("launched"));
    assert!(
        stderr.contains("./app/.env:2: a GitHub personal access token") && stderr.contains("refusing to launch"),
        "{stderr}"
    );
    assert_eq!(
        mints().await,
        0,
        "a credential was minted for a launch that was refused"
    );

    // Fingerprints are keyed with the launcher's own scan key, made at
    // first use.
    let home = t.dir.path().join("launcher-home");
    let mut allowed = valetkey(&t, &key);
    allowed.env("HOME", &home).args([
        "run",
        "--allow-tokens",
        "--agent",
        "claude",
        "--env",
        "staging",
        "--",
        "echo",
        "launched",
    ]);
    let out = output(allowed).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("launched"));
    assert!(stderr.contains("launching with 1 real token(s)"), "{stderr}");
    let audit = common::audit_lines(t.broker.store()).await;
    let event: Value = serde_json::from_str(audit.iter().find(|e| e.contains("tokens_in_reach")).unwrap()).unwrap();
    assert_eq!(event["agent"], "claude");
    assert_eq!(event["env"], "staging");
    let detail: Value = serde_json::from_str(event["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["tokens"][0]["path"], "./app/.env");
    assert_eq!(detail["tokens"][0]["line"], 2);
    let scan_key = std::fs::read(home.join(".config/valetkey/scan.key")).unwrap();
    assert_eq!(
        detail["tokens"][0]["fingerprint"].as_str().unwrap(),
        valetkey::scan::FingerprintKey::from_bytes(&scan_key, true).fingerprint(GHP)
    );
    assert!(
        !audit.iter().any(|e| e.contains(GHP)),
        "the token is in the audit trail"
    );
    assert!(!stderr.contains(GHP));

    // A launcher cannot fill the trail through that field.
    let (status, problem) = t
        .mint(
            &key,
            serde_json::json!({ "env": "staging", "tokens_in_reach": [{ "path": "x", "line": 1, "kind": "k", "fingerprint": GHP }] }),
        )
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (422, Some("invalid_request")),
        "{problem}"
    );
}

/// `secret import FILE:LINE NAME` moves the one token on that line into the
/// broker and out of the file (the rest of the file, and its mode, kept),
/// printing no value; a line without a token changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn secret_import_moves_a_found_token_into_the_broker() {
    use std::os::unix::fs::PermissionsExt;
    const GHP: &str = "ghp_R3alLookingT0kenValue0123456789abcd";
    let t = TestBroker::start().await;
    let env_file = t.dir.path().join("project/.env");
    std::fs::create_dir_all(env_file.parent().unwrap()).unwrap();
    let before = format!("PORT=8080\r\nGH_TOKEN={GHP} # staging\r\nDEBUG=1\n");
    std::fs::write(&env_file, &before).unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let key_file = t.data_dir().join("admin.key");
    let import = |place: String| {
        let mut cmd = common::admin_cli(&t.url, &key_file);
        cmd.args(["secret", "import", &place, "github-staging"]);
        cmd
    };

    let out = output(import(format!("{}:1", env_file.display()))).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no real token lies at"),
        "{stderr}"
    );
    // Through a link, the rewrite would replace the link and leave the token.
    let link = t.dir.path().join("project/.env.link");
    std::os::unix::fs::symlink(&env_file, &link).unwrap();
    let out = output(import(format!("{}:2", link.display()))).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is a link"), "{stderr}");
    std::fs::remove_file(&link).unwrap();
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), before);
    assert!(t.broker.store().secret("github-staging").await.unwrap().is_none());

    let out = output(import(format!("{}:2", env_file.display()))).await;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("Rotate it at its provider"), "{printed}");
    assert!(!printed.contains(GHP), "the token was printed");
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "PORT=8080\r\nGH_TOKEN=valetkey-secret:github-staging # staging\r\nDEBUG=1\n"
    );
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let stored = t.broker.store().secret("github-staging").await.unwrap().unwrap();
    let opened = t.master_key().open("secret:github-staging", &stored.sealed).unwrap();
    assert_eq!(opened.as_slice(), GHP.as_bytes());
    let audit = common::audit_lines(t.broker.store()).await;
    assert!(
        audit
            .iter()
            .any(|e| e.contains("secret_set") && e.contains("admin:bootstrap"))
    );

    let rescan = Command::new(BIN)
        .arg("scan")
        .arg(env_file.parent().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        rescan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rescan.stdout)
    );
}

/// `keys rotate-master` re-seals every secret and signing key under a new
/// master key and replaces the key file: the broker goes on serving, a
/// restart opens everything with the new key, the old key opens nothing and
/// is refused at start, and a rotation cut short before its rename is
/// finished by the next start.
#[tokio::test(flavor = "multi_thread")]
async fn the_master_key_rotates_and_the_old_one_opens_nothing() {
    use std::os::unix::fs::PermissionsExt;
    const STORED: &str = "rlwy_rotation_test_stored_token_0001";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    let data = dir.path().join("data");
    let master_file = data.join("master.key");
    let served = serve(dir.path(), &config, &[]);
    let admin_key = data.join("admin.key");
    let mut set = common::admin_cli(&served.url, &admin_key)
        .args(["secret", "set", "railway-staging"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(set.stdin.take().unwrap(), "{STORED}").unwrap();
    assert!(set.wait_with_output().unwrap().status.success());
    let (ok, launcher, _) = admin(&served.url, &admin_key, &["agent", "add", "claude"]);
    assert!(ok);
    let launcher = launcher.trim().to_owned();
    let before = served.mint(&launcher, serde_json::json!({ "env": "staging" })).await;
    let credential = before["credential"].as_str().unwrap().to_owned();
    let old_key = std::fs::read_to_string(&master_file).unwrap();

    let (ok, key_id, stderr) = admin(&served.url, &admin_key, &["keys", "rotate-master"]);
    assert!(ok, "{stderr}");
    assert!(key_id.starts_with("hmac-sha256:"), "{key_id}");
    let new_key = std::fs::read_to_string(&master_file).unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(
        std::fs::metadata(&master_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!data.join("master.key.next").exists());
    // Serving goes on: what was minted before still verifies, minting works.
    let whoami = common::http()
        .get(format!("{}/v1/whoami", served.url))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
    assert!(served.mint(&launcher, serde_json::json!({ "env": "staging" })).await["credential"].is_string());
    assert_eq!(served.stop(), Some(0));

    // The old key opens nothing in the store.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("valetkey.db").display()))
        .await
        .unwrap();
    let (nonce, ciphertext): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT nonce, ciphertext FROM secrets WHERE name = 'railway-staging'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    let sealed = valetkey::secrets::Sealed { nonce, ciphertext };
    let old = valetkey::secrets::MasterKey::from_base64(&old_key, valetkey::secrets::MasterKeyOrigin::Env).unwrap();
    let new = valetkey::secrets::MasterKey::from_base64(&new_key, valetkey::secrets::MasterKeyOrigin::Env).unwrap();
    assert!(old.open("secret:railway-staging", &sealed).is_err());
    assert_eq!(
        new.open("secret:railway-staging", &sealed).unwrap().as_slice(),
        STORED.as_bytes()
    );

    // Restarted with the new key: the stored token loads, the chain verifies.
    let served = serve(dir.path(), &config, &[]);
    let (_, railway) = token_status(&served.url, &admin_key, "railway", "staging");
    assert!(railway["problem"].is_null(), "{railway}");
    let (ok, verified, _) = admin(&served.url, &admin_key, &["audit", "verify"]);
    assert!(ok && verified.starts_with("intact"), "{verified}");
    let (_, events, _) = admin(
        &served.url,
        &admin_key,
        &["audit", "search", "--type", "master_key_rotated", "--json"],
    );
    assert_eq!(events.lines().count(), 1, "{events}");
    assert_eq!(served.stop(), Some(0));

    // The old key is refused at start.
    std::fs::write(&master_file, &old_key).unwrap();
    let start = || {
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("VALETKEY_MASTER_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = exited(start());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not the one the store is sealed under"), "{stderr}");

    // A rotation cut short between its commit and its rename: the next key
    // waits beside the old one, and the start finishes it.
    std::fs::write(data.join("master.key.next"), &new_key).unwrap();
    std::fs::set_permissions(data.join("master.key.next"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = log_until_serving(start());
    assert!(
        log.contains("finished a master key rotation that was cut short"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&master_file).unwrap(), new_key);
    assert!(!data.join("master.key.next").exists());
    for key in [old_key.trim(), new_key.trim()] {
        assert!(!log.contains(key));
        assert!(
            !std::fs::read_to_string(dir.path().join("serve.log"))
                .unwrap()
                .contains(key)
        );
    }
}

/// `serve` refuses, before it touches anything, to listen in clear on an
/// address other machines reach, unless told to with `--insecure-listen`.
#[test]
fn serve_refuses_to_listen_in_clear_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    let serve = |extra: &[&str]| {
        Command::new(BIN)
            .args(["serve", "--dev", "--listen", "0.0.0.0:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = exited(serve(&[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 in clear"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused start created the data dir"
    );

    let log = log_until_serving(serve(&["--insecure-listen"]));
    assert!(log.contains("valetkey is serving"), "{log}");
    assert!(
        log.contains("serving in clear on an address other machines reach"),
        "{log}"
    );
}

/// A `serve` child's log (its standard error, piped) up to the line that
/// says it serves, or to its end; the child is then stopped.
fn log_until_serving(mut child: std::process::Child) -> String {
    let mut log = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let serving = line.contains("valetkey is serving");
        log.push(line);
        if serving {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    log.join("\n")
}

/// A child that should exit on its own, within 20 seconds; killed past
/// them, so a start that was not refused fails the test instead of hanging it.
fn exited(mut child: std::process::Child) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An agent under `run` tries every way around the broker the threat model
/// names (keys, other tools' tokens, direct connections, the broker's own
/// process, the admin API) and each fails, while it still reaches the
/// broker and its working directory. The same attempts unconfined succeed,
/// so each refusal is the isolation's doing. The project is laid out as the
/// README's, with the broker's data dir inside the agent's working
/// directory. It lies once under the build's directory (outside /tmp where
/// the checkout is, so that Landlock, not the private /tmp, keeps the
/// sibling directory out of reach), and once in /tmp, which the agent gets
/// a private copy of with its grants mounted back.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_under_run_reaches_nothing_but_the_broker_and_its_work() {
    escape_attempts(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_under_run_in_tmp_reaches_nothing_but_the_broker_and_its_work() {
    escape_attempts(&std::env::temp_dir()).await;
}

async fn escape_attempts(parent: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir_in(parent).unwrap();
    // The way to the project passes a directory closed to all but its
    // owner, as a home of mode 0700 is.
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // In a directory on PATH, which the agent may read: a file only its
    // owner may read (root's, when the tests run as root), and a secret
    // `[run]` hides, which the test replaces while the agent runs.
    let tools = base.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let owner_only = tools.join("owner-only.key");
    std::fs::write(&owner_only, "only-for-its-owner\n").unwrap();
    std::fs::set_permissions(&owner_only, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hidden = tools.join("hidden.key");
    std::fs::write(&hidden, "hidden-at-launch\n").unwrap();
    let as_root = nix::unistd::geteuid().is_root();
    let project = base.path().join("project");
    std::fs::create_dir_all(project.join("infra/vk")).unwrap();
    let config = project.join("infra/vk/valetkey.toml");
    std::fs::write(
        &config,
        format!("{}\n[run]\nhide = [\"{}\"]\n", common::CONFIG, hidden.display()),
    )
    .unwrap();
    let served = serve(&project, &config, &[]);
    let data = project.join("data");
    let key = common::add_agent_with_cli(&served.url, &data, "claude");

    let keys = base.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key_file = keys.join("launcher.key");
    std::fs::write(&key_file, &key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = base.path().join("home");
    std::fs::create_dir_all(home.join(".config/gh")).unwrap();
    let gh_hosts = home.join(".config/gh/hosts.yml");
    std::fs::write(&gh_hosts, "github.com:\n    oauth_token: gho_fake\n").unwrap();
    std::fs::create_dir(base.path().join("other")).unwrap();
    let sibling = base.path().join("other/.env");
    std::fs::write(&sibling, "GITHUB_TOKEN=ghp_fake\n").unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/escape_attempts.py"),
        project.join("escape_attempts.py"),
    )
    .unwrap();
    // The project is a repository: what git runs from it must stay as the
    // developer left it.
    let git = Command::new("git")
        .arg("init")
        .arg("-q")
        .arg(&project)
        .output()
        .unwrap();
    assert!(git.status.success(), "{}", String::from_utf8_lossy(&git.stderr));
    // A service listening on a Unix socket where the agent works, open to
    // every user (so only the confinement keeps the agent from it).
    std::fs::create_dir(project.join("services")).unwrap();
    let service_socket = project.join("services/app.sock");
    let _service = std::os::unix::net::UnixListener::bind(&service_socket).unwrap();
    std::fs::set_permissions(&service_socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    // One moved after it was bound: the system knows it by its old name,
    // which `run` cannot hide, and says so.
    let moved_socket = project.join("services/moved.sock");
    let _moved = std::os::unix::net::UnixListener::bind(moved_socket.with_extension("new")).unwrap();
    std::fs::rename(moved_socket.with_extension("new"), &moved_socket).unwrap();
    let provider = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin_dir = bin_dir();

    let attempt = |confined: bool| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&project)
            .env_clear()
            .env("PATH", format!("{bin_dir}:{}:/usr/bin:/bin", tools.display()))
            .env("HOME", &home)
            .env("VALETKEY_URL", &served.url)
            .env("VALETKEY_AGENT_KEY", &key)
            .env("PROBE_DATA", &data)
            .env("PROBE_OWNER_ONLY", &owner_only)
            .env("PROBE_UNIX_SOCKET", &service_socket)
            .env("PROBE_HIDDEN", &hidden)
            .env("PROBE_KEY_FILE", &key_file)
            .env("PROBE_LAUNCHER_KEY_SHA256", sha256_hex(&key))
            .env("PROBE_GH_HOSTS", &gh_hosts)
            .env("PROBE_SIBLING_FILE", &sibling)
            .env("PROBE_PROVIDER_PORT", provider.local_addr().unwrap().port().to_string())
            .env("PROBE_UDP_PORT", udp.local_addr().unwrap().port().to_string())
            .env("PROBE_PG_SOCKET", "/var/run/postgresql/.s.PGSQL.5432")
            .env("PROBE_BROKER_PID", served.child.id().to_string())
            .env("PROBE_BIN", BIN)
            .env("PROBE_FREE_PORT", free_port.to_string())
            // Real tokens in the launcher's environment: one the broker
            // reads, one any tool would.
            .env("GITHUB_STAGING_TOKEN", "tk-1")
            .env("SOME_TOOL_SETTING", "ghp_abcdefghij0123456789ABCDEFGHIJ987654")
            .args(["run", "--agent", "claude", "--env", "staging", "--key-file"])
            .arg(&key_file);
        if !confined {
            // Unconfined, the broker's keys in the working directory are
            // in the agent's reach: `run` launches only when told.
            cmd.args(["--no-isolation", "--allow-tokens"]);
        }
        let out = cmd
            .args(["--", "/usr/bin/python3", "escape_attempts.py"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let results: BTreeMap<String, String> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{stderr}", String::from_utf8_lossy(&out.stdout)));
        (results, stderr)
    };

    let survived = |confined: bool| {
        let survivor = project.join("survivor");
        let _ = std::fs::remove_file(&survivor);
        let _ = std::fs::remove_file(project.join("written-by-the-agent"));
        // When the agent asks, the hidden file is replaced, as `passwd`
        // replaces /etc/shadow.
        let (ask, done) = (project.join("replace-now"), project.join("replaced"));
        let _ = std::fs::remove_file(&done);
        let replacer = {
            let (hidden, ask, done) = (hidden.clone(), ask.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..600 {
                    if std::fs::remove_file(&ask).is_ok() {
                        let next = hidden.with_extension("next");
                        std::fs::write(&next, "written-during-the-run\n").unwrap();
                        std::fs::rename(&next, &hidden).unwrap();
                        std::fs::write(&done, "").unwrap();
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            })
        };
        let outcome = attempt(confined);
        replacer.join().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        (outcome, survivor.exists())
    };
    let head = std::fs::read(project.join(".git/HEAD")).unwrap();
    let git_left_as_it_was = || {
        let _ = std::fs::remove_file(project.join(".git/commondir"));
        let _ = std::fs::remove_dir_all(project.join(".git-evil"));
        let _ = std::fs::remove_dir_all(project.join("nested"));
        for made in ["HEAD", "config"] {
            let _ = std::fs::remove_file(project.join(made));
        }
        for made in ["objects", "refs"] {
            let _ = std::fs::remove_dir_all(project.join(made));
        }
        std::fs::write(project.join(".git/HEAD"), &head).unwrap();
    };
    let ((unconfined, stderr), survivor) = survived(false);
    git_left_as_it_was();
    assert!(survivor, "unconfined, a process the agent started outlives run");
    assert!(
        stderr.contains("--no-isolation: the agent runs as you, unconfined"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&key_file.display().to_string()),
        "the warning names the key file: {stderr}"
    );
    // Neither mode passes a real token on, nor has the launcher key in a
    // starting environment: those two are `run`'s own, whatever isolation.
    let not_isolation = |name: &str| match name {
        "find the launcher key in /proc/PPID/environ" => Some("refused: readable, without the key"),
        "find a real token in the environment" => Some("refused: none"),
        "leave a process running after run" => Some("refused: launched: the test decides"),
        _ => None,
    };
    for (name, outcome) in &unconfined {
        assert_eq!(outcome, not_isolation(name).unwrap_or("ok"), "unconfined, {name}");
    }
    assert_eq!(unconfined.len(), 35);
    for var in ["GITHUB_STAGING_TOKEN", "SOME_TOOL_SETTING"] {
        assert!(
            stderr.contains(&format!("not passing {var} on to the agent")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("ghp_"), "a token value was printed: {stderr}");

    let ((confined, stderr), survivor) = survived(true);
    assert!(!survivor, "confined, a process the agent started outlived run");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("warning") && !l.contains("warning: the agent"))
        .collect();
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("lacks Landlock rules for Unix sockets")
                || w.contains("cannot be found by the name they were bound with")),
        "this machine lacks only Landlock's Unix socket rules: {stderr}"
    );
    assert!(
        stderr.contains(&moved_socket.with_extension("new").display().to_string()),
        "the socket that could not be hidden is named: {stderr}"
    );
    // Launched by root, the agent runs as an unprivileged user; launched by
    // anyone else, as its launcher, who owns the file.
    let owners = [
        "read a file only its owner may read",
        "change the mode of a file of the launcher's",
    ];
    for (name, outcome) in &confined {
        // Written, as the agent may write its work; `run` deals with them
        // when the agent ends (below).
        let allowed = [
            "reach the broker",
            "write and read the working directory",
            "know its own name",
            "lead git to settings of its own",
            "make a repository",
            "make the working directory a repository",
        ];
        if allowed.contains(&name.as_str()) || (!as_root && owners.contains(&name.as_str())) {
            assert_eq!(outcome, "ok", "confined, {name}");
        } else {
            assert!(outcome.starts_with("refused: "), "confined, {name}: {outcome}");
        }
    }
    assert_eq!(confined.len(), 35);
    // What would lead git to the agent's settings is moved aside, and the
    // repository the agent made is named; git here runs nothing of it.
    assert!(!project.join(".git/commondir").exists(), "{stderr}");
    assert!(!project.join("config").exists(), "{stderr}");
    for moved in [".git/commondir", "config"] {
        assert!(
            stderr.contains(&format!("the agent wrote {moved}, which would make git read settings"))
                && stderr.contains(&format!("moved it to {moved}.valetkey-quarantined-")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("the agent made or changed the repository at nested/.git"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the agent left .git as git no longer takes it"),
        "{stderr}"
    );
    // Git, run here as the agent left it, runs nothing of the agent's.
    let status = Command::new("git")
        .arg("-C")
        .arg(&project)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        !project.join("pwned-by-git").exists(),
        "git ran the agent's core.fsmonitor: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    git_left_as_it_was();
    let status = Command::new("git")
        .arg("-C")
        .arg(&project)
        .arg("status")
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(!project.join("pwned-by-git").exists());
    assert_eq!(
        std::fs::read_to_string(project.join("written-by-the-agent")).unwrap(),
        "hello",
        "the agent's work lands in the real working directory"
    );
    use std::os::unix::fs::MetadataExt;
    let written = std::fs::metadata(project.join("written-by-the-agent")).unwrap();
    assert_eq!(
        (written.uid(), written.gid()),
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()),
        "what the agent writes is its launcher's"
    );
    assert_eq!(
        std::fs::metadata(&owner_only).unwrap().mode() & 0o777,
        0o600,
        "the launcher's file kept its mode"
    );
    // Nothing under run registered an agent.
    let (ok, stdout, _) = admin(&served.url, &data.join("admin.key"), &["agent", "list"]);
    assert!(ok && stdout.contains("claude"), "{stdout}");

    // Launched inside the data dir, the agent would be granted a secret:
    // refused before anything starts, and its credential revoked.
    let out = Command::new(BIN)
        .current_dir(&data)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("VALETKEY_URL", &served.url)
        .args(["run", "--agent", "claude", "--env", "staging", "--key-file"])
        .arg(&key_file)
        .args(["--", "sh", "-c", "echo launched"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "the command ran anyway");
    assert!(
        stderr.contains(&format!(
            "which lies inside {}, a path that holds secrets",
            data.display()
        )),
        "{stderr}"
    );
    let lease = stderr
        .split("(lease ")
        .nth(1)
        .and_then(|l| l.split(')').next())
        .unwrap();
    let (_, events, _) = admin(
        &served.url,
        &data.join("admin.key"),
        &["audit", "search", "--type", "revoke", "--json"],
    );
    assert!(events.contains(lease), "the credential was not revoked: {events}");
    served.stop();
}

/// With `[server] tls`, the broker serves HTTPS itself, and may then listen
/// where other machines reach it without --insecure-listen: curl and the
/// CLI (trusting the certificate through VALETKEY_CA_FILE) reach it, clear
/// HTTP gets no answer, a client that does not trust the certificate is
/// refused, and a key that is not the certificate's stops the start.
#[test]
fn the_broker_serves_https_with_its_own_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = write("cert.pem", &issued.cert.pem(), 0o644);
    write("key.pem", &issued.signing_key.serialize_pem(), 0o600);
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    write("other-key.pem", &other.signing_key.serialize_pem(), 0o600);
    let config = |key: &str| {
        write(
            "valetkey.toml",
            &format!(
                "[server]\ntls = {{ cert = \"cert.pem\", key = \"{key}\" }}\n{}",
                common::CONFIG
            ),
            0o600,
        )
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let serve = || {
        Command::new(BIN)
            .current_dir(dir.path())
            .args([
                "serve",
                "--dev",
                "--config",
                "valetkey.toml",
                "--data-dir",
                "data",
                "--listen",
            ])
            .arg(format!("0.0.0.0:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    config("other-key.pem");
    let refused = exited(serve());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("do not go together"), "{stderr}");

    config("key.pem");
    let served = common::Served {
        child: serve(),
        url: format!("https://127.0.0.1:{port}"),
    };
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .output()
            .unwrap()
    };
    let healthz = format!("{}/healthz", served.url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = loop {
        let out = curl(&["--cacert", cert.to_str().unwrap(), "-w", " %{http_code}", &healthz]);
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker did not start over https"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(answer.ends_with(" 200"), "{answer}");
    let clear = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(!clear.status.success(), "clear HTTP was answered");
    let untrusted = curl(&[&healthz]);
    assert!(
        !untrusted.status.success(),
        "a certificate curl does not trust was accepted"
    );

    let admin_key = dir.path().join("data/admin.key");
    let trusted = common::admin_cli(&served.url, &admin_key)
        .env("VALETKEY_CA_FILE", &cert)
        .args(["agent", "list"])
        .output()
        .unwrap();
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let untrusted = common::admin_cli(&served.url, &admin_key)
        .env_remove("VALETKEY_CA_FILE")
        .args(["agent", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the broker at {}", served.url)),
        "{stderr}"
    );
    served.stop();
}

/// The test configuration with every clock of a session in seconds: a
/// fixed-expiry credential lives 2 s, a session up to a minute while its
/// `run` heartbeats every second, and 3 s past its last heartbeat.
fn session_config() -> String {
    common::CONFIG.replace(
        "default_ttl = \"15m\"\nmax_ttl = \"1h\"\n",
        "default_ttl = \"2s\"\nmax_ttl = \"2s\"\nmax_session = \"1m\"\nheartbeat_interval = \"1s\"\nheartbeat_timeout = \"3s\"\n",
    )
}

/// `valetkey run --no-isolation` of `script` in the background, its
/// credential written where the test reads it, as an agent that copied
/// it out would.
fn run_in_background(t: &TestBroker, key: &str, script: &str) -> (std::process::Child, String) {
    let copied = t.dir.path().join("copied-credential");
    let _ = std::fs::remove_file(&copied);
    let mut cmd = valetkey(t, key);
    cmd.args([
        "run",
        "--agent",
        "claude",
        "--env",
        "staging",
        "--no-isolation",
        "--",
        "sh",
        "-c",
    ])
    .arg(format!(
        "printf %s \"$VALETKEY_CREDENTIAL\" > {}.tmp && mv {0}.tmp {0}; {script}",
        copied.display()
    ))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !copied.exists() {
        assert!(std::time::Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, std::fs::read_to_string(&copied).unwrap())
}

/// How long until `credential` is refused as `kind`, polled every 100 ms
/// for up to `within`; panics past it.
async fn refused_within(
    t: &TestBroker,
    credential: &str,
    kind: &str,
    within: std::time::Duration,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    loop {
        let (status, body) = t.whoami(credential).await;
        if status == 401 {
            assert_eq!(body["type"], kind, "{body}");
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still valid after {within:?}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_lives_while_its_run_does_and_dies_within_seconds_of_a_sigkill() {
    let t = TestBroker::start_with(&session_config(), BTreeMap::new()).await;
    let key = t.add_agent("claude").await;
    let (mut run, credential) = run_in_background(&t, &key, "exec sleep 60");

    // Four fixed TTLs (2 s each) pass; the one string keeps working.
    let (status, body) = t.whoami(&credential).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["lifetime"].as_str().unwrap().starts_with("a session"), "{body}");
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (status, body) = t.whoami(&credential).await;
        assert_eq!(status, 200, "the session ended while its run lived: {body}");
    }

    // SIGKILL: no revocation is sent; the missing heartbeat ends it within
    // the heartbeat timeout (3 s) and the next second's sweep.
    run.kill().unwrap();
    run.wait().unwrap();
    let took = refused_within(&t, &credential, "session_ended", std::time::Duration::from_secs(6)).await;
    assert!(
        took <= std::time::Duration::from_secs(5),
        "ended {took:?} after the kill"
    );
    let (_, body) = t.whoami(&credential).await;
    assert!(
        body["agent_guidance"].as_str().unwrap().contains("valetkey run"),
        "{body}"
    );

    // Its launcher's key cannot bring it back: an ended session stays ended.
    let session = common::claims(&credential)["sid"].as_str().unwrap().to_owned();
    let (status, body) = t.heartbeat(&key, &session).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["type"], "session_ended", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no heartbeat reached the broker"),
        "{body}"
    );
    // Nor can a heartbeat that arrived before the deadline and is handled
    // after it: the store compares with its own clock at the write.
    let agent = t.broker.authenticate_launcher(&key).await.unwrap();
    let issued =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(common::claims(&credential)["iat"].as_u64().unwrap());
    let late = t.broker.heartbeat(&agent, &session, issued).await;
    assert!(late.is_err(), "a late heartbeat revived the session: {late:?}");
    assert_eq!(t.whoami(&credential).await.0, 401);
    // An admin's revocation of the ended session is recorded all the same.
    let revoked = t
        .broker
        .revoke(
            &valetkey::store::RevokeTarget::Session(session.clone()),
            &valetkey::admin::Actor::broker(),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_live_session_ends_it_within_a_second_and_run_says_so() {
    let t = TestBroker::start_with(&session_config(), BTreeMap::new()).await;
    let key = t.add_agent("claude").await;
    let (run, credential) = run_in_background(&t, &key, "sleep 4");
    let session = common::claims(&credential)["sid"].as_str().unwrap().to_owned();
    let admin_file = t.dir.path().join("admin.key");
    std::fs::write(&admin_file, &t.admin_key).unwrap();
    std::fs::set_permissions(&admin_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let revoke = common::admin_cli(&t.url, &admin_file)
        .args(["revoke", "--session", &session])
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    refused_within(&t, &credential, "credential_revoked", std::time::Duration::from_secs(1)).await;
    let out = output_of(run).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the agent's session has ended and its credential no longer works"),
        "run tells its launcher: {stderr}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_launcher_keeps_a_session_alive_and_env_keeps_a_fixed_expiry() {
    let t = TestBroker::start_with(&session_config(), BTreeMap::new()).await;
    let key = t.add_agent("claude").await;
    let other = t.add_agent("oncall").await;
    let (mut run, credential) = run_in_background(&t, &key, "exec sleep 60");
    let session = common::claims(&credential)["sid"].as_str().unwrap().to_owned();
    // The agent holds its credential, never the launcher key: the credential
    // keeps nothing alive, nor does another agent's launcher key.
    let (status, body) = t.heartbeat(&credential, &session).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (401, Some("launcher_key_invalid")),
        "{body}"
    );
    let (status, body) = t.heartbeat(&other, &session).await;
    assert_eq!((status, body["type"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = t.heartbeat(&key, &session).await;
    assert_eq!(status, 200, "{body}");
    run.kill().unwrap();
    run.wait().unwrap();

    // `env` has no run to heartbeat: its credential lives its TTL, and no
    // heartbeat extends it.
    let out = output({
        let mut cmd = valetkey(&t, &key);
        cmd.args(["env", "--agent", "claude", "--env", "staging"]);
        cmd
    })
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vars = parse_env(&String::from_utf8(out.stdout).unwrap());
    let fixed = vars["VALETKEY_CREDENTIAL"].trim_matches('\'').to_owned();
    let claims = common::claims(&fixed);
    assert!(claims.get("hb").is_none(), "{claims}");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 2);
    let sid = claims["sid"].as_str().unwrap();
    let (status, body) = t.heartbeat(&key, sid).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "not_a_session", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("fixed expiry"), "{body}");
    refused_within(&t, &fixed, "credential_expired", std::time::Duration::from_secs(4)).await;
    t.stop().await;
}

/// Waits for a child started with piped stderr, off the runtime.
async fn output_of(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_at_its_longest_length_whatever_the_heartbeat() {
    let t = TestBroker::start_with(&session_config(), BTreeMap::new()).await;
    let key = t.add_agent("claude").await;
    let (status, answer) = t
        .mint(
            &key,
            serde_json::json!({ "agent": "claude", "env": "staging", "session": true, "ttl": "4s" }),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["heartbeat"]["interval_seconds"], 1, "{answer}");
    let credential = answer["credential"].as_str().unwrap().to_owned();
    let session = answer["session_id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let body = loop {
        let (status, body) = t.heartbeat(&key, session).await;
        if status != 200 {
            assert_eq!((status, body["type"].as_str()), (410, Some("session_ended")), "{body}");
            break body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "heartbeats kept it past its end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("longest length"), "{body}");
    assert_eq!(t.whoami(&credential).await.1["type"], "credential_expired");
    t.stop().await;
}
/// Every error the CLI can print for a file that is not there: each says
/// what is missing once (no cause repeated down its chain) and what to do.
#[test]
fn every_error_for_a_missing_file_says_it_once_with_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let m = missing.to_str().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(
        &config,
        format!("[keys]\nmaster_key_file = \"{m}/master.key\"\n[environments.staging]\n"),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let missing_config = format!("{m}/v.toml");
    // The arguments, the variables, and the words of the next step.
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            vec!["serve".into(), "--config".into(), format!("{m}/valetkey.toml")],
            vec![],
            &["--config", "VALETKEY_CONFIG", "valetkey init", "config/valetkey.toml"],
        ),
        (
            vec!["config".into(), "check".into()],
            vec![("VALETKEY_CONFIG", missing_config.as_str())],
            &["--config", "VALETKEY_CONFIG", "valetkey init"],
        ),
        (
            vec![
                "serve".into(),
                "--config".into(),
                c.into(),
                "--data-dir".into(),
                m.into(),
            ],
            vec![],
            &["master"],
        ),
        (
            vec![
                "agent".into(),
                "list".into(),
                "--admin-key-file".into(),
                format!("{m}/admin.key"),
            ],
            vec![],
            &["key file", "valetkey admin add NAME --out FILE"],
        ),
        (
            vec![
                "env".into(),
                "--env".into(),
                "staging".into(),
                "--key-file".into(),
                format!("{m}/claude.key"),
            ],
            vec![],
            &["key file", "valetkey agent add NAME"],
        ),
        (
            vec!["whoami".into(), "--ca-file".into(), format!("{m}/ca.pem")],
            vec![("VALETKEY_CREDENTIAL", "vk1.x")],
            &["--ca-file"],
        ),
        (
            vec![
                "audit".into(),
                "verify".into(),
                "--db".into(),
                format!("{m}/v.db"),
                "--jwks".into(),
                format!("{m}/k.json"),
            ],
            vec![],
            &[],
        ),
        (vec!["scan".into(), format!("{m}/src")], vec![], &[]),
    ];
    for (args, env, next_step) in cases {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("VALETKEY_CONFIG")
            .env_remove("VALETKEY_MASTER_KEY")
            .env("VALETKEY_URL", "http://127.0.0.1:9")
            .envs(env)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            stderr.matches("No such file or directory").count() <= 1,
            "{args:?} says the cause once: {stderr}"
        );
        assert!(stderr.contains(m), "{args:?} names the file: {stderr}");
        for words in next_step {
            assert!(stderr.contains(words), "{args:?} says `{words}`: {stderr}");
        }
    }
}

#[test]
fn an_unreachable_broker_says_to_start_it_or_check_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["env", "--env", "staging"])
        .env("VALETKEY_AGENT_KEY", "vkl_x")
        .env("VALETKEY_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Connection refused"),
        "the cause, not reqwest's wrapper: {stderr}"
    );
    assert!(!stderr.contains("error sending request"), "{stderr}");
    assert!(
        stderr.contains("`valetkey serve`") && stderr.contains("VALETKEY_URL"),
        "the next step: {stderr}"
    );
}

#[test]
fn an_agents_command_outside_a_session_says_how_to_get_one() {
    for args in [
        &["check", "--provider", "railway", "--method", "GET", "--path", "/"][..],
        &["whoami"],
        &["approval", "wait", "0190b5a4-7a53-7000-8000-000000000000"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("VALETKEY_CREDENTIAL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("VALETKEY_CREDENTIAL is not set") && stderr.contains("`valetkey run --env ENV"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn runs_usage_shows_only_what_is_required() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert_eq!(usage, "Usage: valetkey run [OPTIONS] --env <ENV> -- <COMMAND>...");
    // `--ttl` takes what its help says it takes.
    assert!(help.contains("seconds (900) or a duration (15m, 1h30m)"), "{help}");
    let refused = Command::new(BIN)
        .args(["run", "--env", "staging", "--ttl", "soon", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("write seconds (900) or a duration (15m, 1h30m)"),
        "{stderr}"
    );
}

/// `run` and `env` speak to whoever launches the agent: the refusal's
/// detail and what ops can do, never the guidance written for the agent;
/// an agent's own commands get that guidance.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_speak_to_their_reader() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let out = output(run_sh(&t, &key, "production", "echo launched")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.stdout.is_empty(), "the command ran anyway");
    assert!(stderr.contains("environment `production` is protected"), "{stderr}");
    assert!(
        stderr.contains("[agents.NAME] grants"),
        "the operator's next step: {stderr}"
    );
    assert!(
        !stderr.contains("Do not try another environment"),
        "the agent's guidance: {stderr}"
    );

    // A typo of the agent's name is told the right one, not a credential problem.
    let mut cmd = valetkey(&t, &key);
    cmd.args(["env", "--agent", "claud", "--env", "staging"]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(agent_mismatch)") && stderr.contains("did you mean `claude`?"),
        "{stderr}"
    );
    assert!(!stderr.contains("credential_mismatch"), "{stderr}");

    // Without --agent the key names it; what is stripped and a lifetime cut
    // short are said in words.
    let mut cmd = valetkey(&t, &key);
    cmd.args([
        "env",
        "--env",
        "staging",
        "--provider",
        "railway",
        "--scope",
        "read",
        "--scope",
        "volume:delete",
        "--ttl",
        "2h",
    ]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not granted: railway scope `volume:delete`: destructive scopes are never placed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the credential lives 30m, not the 2h asked for") && stderr.contains("grant for `railway`"),
        "{stderr}"
    );
    // Seconds, as the help says.
    let mut cmd = valetkey(&t, &key);
    cmd.args(["env", "--env", "staging", "--ttl", "600", "--format", "json"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vars: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    let claims = common::claims(&vars["VALETKEY_CREDENTIAL"]);
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600);

    // Nothing grantable names what was asked and why each was stripped.
    let mut cmd = valetkey(&t, &key);
    cmd.args(["env", "--env", "staging", "--scope", "volume:delete"]);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(nothing_grantable)")
            && stderr.contains("asked for (volume:delete)")
            && stderr.contains("destructive scopes are never placed"),
        "{stderr}"
    );

    // An agent's own command: the guidance is for it.
    let mut cmd = valetkey(&t, "");
    cmd.env("VALETKEY_CREDENTIAL", "vk1.not-a-credential").arg("whoami");
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(credential_malformed)") && stderr.contains("Stop"),
        "{stderr}"
    );

    // `audit tail` says every time one way.
    let out = output({
        let mut cmd = common::admin_cli(&t.url, &t.data_dir().join("admin.key"));
        cmd.args(["audit", "tail", "-n", "50"]);
        cmd
    })
    .await;
    let tail = String::from_utf8_lossy(&out.stdout);
    assert!(tail.contains("\"expires_at\":\"20"), "{tail}");
    assert!(!tail.contains("\"expires_at\":1"), "{tail}");
    t.stop().await;
}

#[test]
fn serve_logs_to_a_file_without_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    let served = serve(dir.path(), &config, &[]);
    served.stop();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains("\x1b["), "colour codes in a log file: {log}");
}

/// `secret set` takes effect in the running broker at once: the proxy
/// sends the new token from the next request, and the redactor knows it
/// (an upstream that echoes it does not hand it to the agent). `secret
/// list` shows names, ages and users, never a value; `secret rm` refuses
/// a secret a provider uses.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_set_listed_and_removed_in_the_running_broker() {
    const OLD: &str = "api-token-old-5f0c2a9d71";
    const NEW: &str = "api-token-new-b83e6d1f40";
    let api = common::upstream::StandIn::http(&[OLD, NEW]).await;
    let config = common::stored_tokens_config(&api.url);
    let t = TestBroker::start_with(&config, BTreeMap::new()).await;
    let key_file = t.data_dir().join("admin.key");
    let cli = |args: &[&str], stdin: &str| {
        let mut cmd = common::admin_cli(&t.url, &key_file);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let key = t.add_agent("claude").await;
    let (_, minted) = t.mint(&key, serde_json::json!({ "env": "staging" })).await;
    let credential = minted["credential"].as_str().unwrap().to_owned();
    let reflect = || async {
        let answer = t
            .http
            .get(format!("{}/p/api/v1/reflect/7", t.url))
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    // No token yet: refused, nothing sent.
    let (status, _) = reflect().await;
    assert_eq!(status, 503);
    assert_eq!(api.count(), 0);

    for (token, _) in [(OLD, "first"), (NEW, "replaced")] {
        let (ok, _, stderr) = tokio::task::block_in_place(|| cli(&["secret", "set", "api-staging"], token));
        assert!(ok, "{stderr}");
        assert!(stderr.contains("in use by api in staging from now"), "{stderr}");
        let (status, answer) = reflect().await;
        assert_eq!(status, 200, "{answer}");
        let sent = api
            .received()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap()
            .to_owned();
        assert_eq!(sent, format!("Bearer {token}"), "the broker sent the token just set");
        assert!(!answer.contains(token), "the echoed token reached the agent");
    }
    // The new token is one of the broker's own: presented as a credential,
    // it is a leak, not junk.
    let (status, refused) = t.whoami(NEW).await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (401, Some("raw_provider_token")),
        "{refused}"
    );

    let (ok, listed, stderr) = tokio::task::block_in_place(|| cli(&["secret", "list"], ""));
    assert!(ok, "{stderr}");
    assert!(
        listed.contains("api-staging") && listed.contains("api/staging"),
        "{listed}"
    );
    assert!(
        !listed.contains(OLD) && !listed.contains(NEW) && !stderr.contains(NEW),
        "{listed}"
    );

    let (ok, _, stderr) = tokio::task::block_in_place(|| cli(&["secret", "rm", "api-staging"], ""));
    assert!(!ok);
    assert!(
        stderr.contains("(secret_in_use)")
            && stderr.contains("api in staging")
            && stderr.contains("secret set api-staging"),
        "{stderr}"
    );
    let (status, _) = reflect().await;
    assert_eq!(status, 200, "a refused removal changes nothing");

    let (ok, _, stderr) = tokio::task::block_in_place(|| cli(&["secret", "set", "spare"], "spare-value-1234567"));
    assert!(ok && stderr.contains("no provider uses it yet"), "{stderr}");
    let (ok, _, stderr) = tokio::task::block_in_place(|| cli(&["secret", "rm", "spare"], ""));
    assert!(ok, "{stderr}");
    let (_, listed, _) = tokio::task::block_in_place(|| cli(&["secret", "list"], ""));
    assert!(!listed.contains("spare"), "{listed}");
    let (ok, _, stderr) = tokio::task::block_in_place(|| cli(&["secret", "rm", "spare"], ""));
    assert!(!ok && stderr.contains("no stored secret `spare`"), "{stderr}");
    t.stop().await;
}

/// `init` writes a configuration that `config check` passes and `serve`
/// serves, with an agent that can be launched; it never overwrites.
#[tokio::test(flavor = "multi_thread")]
async fn init_writes_a_starter_that_serves_and_launches() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    let init = || {
        Command::new(BIN)
            .args(["init", "--provider", "railway", "--provider", "github", "--config"])
            .arg(&config)
            .env_remove("VALETKEY_CONFIG")
            .output()
            .unwrap()
    };
    let out = init();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for step in [
        "valetkey serve --config",
        "valetkey secret set railway-staging",
        "valetkey agent add claude",
        "valetkey run --env staging",
    ] {
        assert!(said.contains(step), "the next steps name `{step}`: {said}");
    }
    let written = std::fs::read_to_string(&config).unwrap();
    let again = init();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        written,
        "the file was changed"
    );

    let check = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let checked = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && checked.contains("0 error(s), 0 warning(s)"),
        "{checked}"
    );

    let served = serve(dir.path(), &config, &[]);
    let key = common::add_agent_with_cli(&served.url, &dir.path().join("data"), "claude");
    let admin_key = dir.path().join("data/admin.key");
    let mut set = common::admin_cli(&served.url, &admin_key);
    set.args(["secret", "set", "railway-staging"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = set.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"rw-starter-token-41d2").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(work.path())
        .args(["env", "--env", "staging", "--format", "json"])
        .env("VALETKEY_URL", &served.url)
        .env("VALETKEY_AGENT_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vars: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        vars.contains_key("RAILWAY_API_TOKEN") && vars.contains_key("GH_TOKEN"),
        "{vars:?}"
    );
    let (_, status) = token_status(&served.url, &admin_key, "railway", "staging");
    assert!(
        status["problem"].is_null(),
        "the stored token is in use at once: {status}"
    );
    served.stop();
}

#[test]
fn completions_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        for command in ["serve", "init", "secret", "run", "key-file"] {
            assert!(script.contains(command), "{shell} completes `{command}`");
        }
        assert!(!script.contains("isolated-"), "{shell} offers `run`'s hidden helpers");
    }
    // bash itself completes with it.
    let script = String::from_utf8(Command::new(BIN).args(["completions", "bash"]).output().unwrap().stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("valetkey.bash"), script).unwrap();
    let out = Command::new("bash")
        .current_dir(dir.path())
        .args([
            "-c",
            "source valetkey.bash; COMP_WORDS=(valetkey sec); COMP_CWORD=1; COMP_LINE='valetkey sec'; COMP_POINT=12; \
             _valetkey valetkey sec valetkey; echo \"${COMPREPLY[@]}\"",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secret");
}

/// A reader that stops early (`| head`) ends the command quietly, as it
/// ends any Unix tool, not with a panic on the failed write.
#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let mut child = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The script is larger than a pipe holds: the rest is written to a pipe
    // nobody reads any more.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("_valetkey()"), "{first}");
    assert!(stderr.is_empty(), "{stderr}");
}
