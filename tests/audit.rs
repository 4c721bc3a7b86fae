//! The audit trail holds: tampering with the real database file is found by
//! `valetkey audit verify` at the event it concerns; a broker that cannot
//! record refuses and forwards nothing; a broker killed mid-burst loses no
//! event of a request its client saw succeed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::fixture::*;
use common::upstream::StandIn;
use common::{BIN, TestBroker};
use serde_json::json;

/// A data dir and config holding a chain of at least eight events, the
/// newest signed by a checkpoint.
async fn recorded_chain() -> (tempfile::TempDir, PathBuf) {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    for env in ["staging", "dev", "production", "staging"] {
        t.mint(&key, json!({ "env": env })).await;
    }
    t.add_agent("oncall").await;
    let signed = t.broker.checkpoint(SystemTime::now()).await.unwrap();
    assert!(signed.is_some());
    let config = t.dir.path().join("valetkey.toml");
    let keep = tempfile::tempdir().unwrap();
    copy_dir(&t.data_dir(), &keep.path().join("data"));
    std::fs::copy(&config, keep.path().join("valetkey.toml")).unwrap();
    // The keys as the broker publishes them, which an auditor saves.
    let jwks = t.http.get(format!("{}/v1/audit/keys", t.url)).send().await.unwrap();
    std::fs::write(keep.path().join("jwks.json"), jwks.text().await.unwrap()).unwrap();
    t.stop().await;
    let path = keep.path().to_owned();
    (keep, path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// `valetkey audit verify --db COPY --jwks KEYS` (offline, no broker, no
/// master key) on a copy of the chain after `tamper` ran SQL on its
/// database file: (exit code, output).
async fn verify_after(base: &Path, tamper: &[&str]) -> (Option<i32>, String) {
    verify_copy(base, tamper, &[]).await
}

/// `verify_after`, with more arguments to `audit verify`.
async fn verify_copy(base: &Path, tamper: &[&str], more: &[&str]) -> (Option<i32>, String) {
    let more: Vec<String> = more.iter().map(|a| a.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&base.join("data"), &dir.path().join("data"));
    let db = dir.path().join("data/valetkey.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    for statement in tamper {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let jwks = base.join("jwks.json");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["audit", "verify", "--db"])
            .arg(&db)
            .arg("--jwks")
            .arg(&jwks)
            .args(&more)
            .env_remove("VALETKEY_MASTER_KEY")
            .env_remove("VALETKEY_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[tokio::test]
async fn tampering_with_the_database_file_is_found_where_it_happened() {
    let (_keep, base) = recorded_chain().await;
    let (code, text) = verify_after(&base, &[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("intact: 8 events") && text.contains("checkpoint signs event 8, at 20"),
        "{text}"
    );
    // A copy whose tail was cut after its newest checkpoint verifies: only
    // that checkpoint's signed time says how much could be missing.
    let (code, text) = verify_copy(&base, &[], &["--fresh-within", "1h"]).await;
    assert_eq!(code, Some(0), "{text}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (code, text) = verify_copy(&base, &[], &["--fresh-within", "10ms"]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("STALE: intact: 8 events"), "{text}");
    let (code, text) = verify_copy(&base, &[], &["--fresh-within", "soon"]).await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("--fresh-within `soon` is not a duration"), "{text}");

    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "an edited event",
            vec![r#"UPDATE audit_events SET detail = '{"edited":true}' WHERE seq = 4"#],
            "BROKEN at event 4: event 4: its contents do not match its hash",
        ),
        (
            "a deleted event",
            vec!["DELETE FROM audit_events WHERE seq = 3"],
            "BROKEN at event 3: event 3 is missing: the chain jumps from 2 to 4",
        ),
        (
            "an inserted event",
            vec![
                "UPDATE audit_events SET seq = -seq WHERE seq >= 3",
                "UPDATE audit_events SET seq = 1 - seq WHERE seq < 0",
                "INSERT INTO audit_events (seq, id, at_ms, kind, actor, agent, session_id, env, detail, prev_hash, hash)
                 SELECT 3, 'forged', at_ms, 'mint', 'agent:claude', 'claude', NULL, 'production', '{}', hash, hash
                 FROM audit_events WHERE seq = 2",
            ],
            "BROKEN at event 3: event 3: its contents do not match its hash",
        ),
        (
            "two events swapped",
            vec![
                "UPDATE audit_events SET seq = -1 WHERE seq = 5",
                "UPDATE audit_events SET seq = 5 WHERE seq = 6",
                "UPDATE audit_events SET seq = 6 WHERE seq = -1",
            ],
            "BROKEN at event 5: event 5: its contents do not match its hash",
        ),
        (
            "a cut-off tail",
            vec!["DELETE FROM audit_events WHERE seq > 5"],
            "BROKEN at event 6: the chain ends at event 5, but a checkpoint signed event",
        ),
        (
            "a forged checkpoint",
            vec!["UPDATE audit_checkpoints SET signature = 'AAAA'"],
            "does not verify",
        ),
        (
            "its checkpoints removed, so nothing signed vouches for it",
            vec!["DELETE FROM audit_checkpoints"],
            "UNVOUCHED: 8 events and no checkpoint signed",
        ),
    ];
    for (what, tamper, expected) in cases {
        let (code, text) = verify_after(&base, &tamper).await;
        assert_eq!(code, Some(1), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
    }
}

#[tokio::test]
async fn a_chain_rewritten_hashes_and_all_is_caught_by_its_checkpoint() {
    let (_keep, base) = recorded_chain().await;
    // Rebuild the chain from event 2 on, as someone who can write the file
    // (but not sign) would: every hash recomputed to fit.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&base.join("data"), &dir.path().join("data"));
    let store = valetkey::store::SqliteStore::open_in(&dir.path().join("data"))
        .await
        .unwrap();
    let mut events = valetkey::store::Store::audit_events(&store).await.unwrap();
    drop(store);
    events[1].detail = r#"{"rewritten":true}"#.into();
    let mut prev = events[0].hash.clone();
    let mut statements = Vec::new();
    for e in events.iter_mut().skip(1) {
        e.prev_hash = prev.clone();
        e.hash = e.compute_hash();
        prev = e.hash.clone();
        statements.push(format!(
            "UPDATE audit_events SET detail = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            e.detail, e.prev_hash, e.hash, e.seq
        ));
    }
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    let (code, text) = verify_after(&base, &refs).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("now has another hash (events up to it were rewritten)"),
        "{text}"
    );

    // Someone who can write the file plants a key of their own in it and
    // signs the rewritten head with it: the checkpoint is checked against
    // the keys the broker published, so it still does not verify.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let last = events.last().unwrap();
    let message = valetkey::audit::Checkpoint::message(last.seq, &last.hash, last.at_ms);
    let signer = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &signer, jsonwebtoken::Algorithm::EdDSA).unwrap();
    let public = hex::encode(ring::signature::KeyPair::public_key(&pair).as_ref());
    statements.push("DELETE FROM audit_checkpoints".into());
    statements.push(format!(
        "INSERT INTO audit_checkpoints (seq, head_hash, at_ms, kid, signature) VALUES ({}, '{}', {}, 'planted', '{signature}')",
        last.seq, last.hash, last.at_ms
    ));
    statements.push(format!(
        "INSERT INTO signing_keys (kid, public_key, nonce, ciphertext, created_at, retired_at) VALUES ('planted', X'{public}', X'00', X'00', 0, 0)"
    ));
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    let (code, text) = verify_after(&base, &refs).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not verify"), "{text}");

    // Had the planted key been published, the same file would verify: what
    // the verification trusts is the published set, nothing in the file.
    let mut published: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("jwks.json")).unwrap()).unwrap();
    let x = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ring::signature::KeyPair::public_key(&pair).as_ref(),
    );
    published["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "planted", "x": x }));
    let forged_base = tempfile::tempdir().unwrap();
    copy_dir(&base.join("data"), &forged_base.path().join("data"));
    std::fs::write(forged_base.path().join("jwks.json"), published.to_string()).unwrap();
    let (code, text) = verify_after(forged_base.path(), &refs).await;
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test]
async fn when_the_audit_store_cannot_record_nothing_is_forwarded() {
    let f = Fixture::start().await;
    let pool = f.broker.db().await;
    sqlx::query(
        "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_events
         BEGIN SELECT RAISE(ABORT, 'the audit store is read-only'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let allowed =
        json!({ "query": "query P($id: String!) { project(id: $id) { name } }", "variables": { "id": "proj_1" } });
    let (status, problem) = f.graphql(allowed).await;
    assert_eq!(refusal(status, &problem), (503, "store_unavailable"), "{problem}");
    let (status, problem) = f.get("github/repos/acme/api/contents/README.md", &f.credential).await;
    assert_eq!(refusal(status, &problem), (503, "store_unavailable"), "{problem}");
    assert_eq!(
        f.railway.count() + f.github.count(),
        0,
        "a request went upstream unrecorded"
    );

    // A mint whose event cannot be written leaves no lease behind: the two
    // are one write.
    let key = f.key.clone();
    let leases = |counts: Vec<(&str, i64)>| counts.iter().find(|(t, _)| *t == "leases").unwrap().1;
    let before = leases(f.broker.row_counts().await);
    let (status, problem) = f.broker.mint(&key, json!({ "env": "staging" })).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (503, Some("store_unavailable")),
        "{problem}"
    );
    assert_eq!(
        leases(f.broker.row_counts().await),
        before,
        "a lease was written without its event"
    );
}

const KILL_CONFIG: &str = r#"
[environments.staging]

[providers.github]
kind = "github"
upstream = "GITHUB_URL"
tokens = { staging = { env = "GITHUB_STAGING" } }

[[resources]]
provider = "github"
kind = "repository"
id = "acme/api"
environments = ["staging"]

[agents.claude]
grants = [{ provider = "github", environments = ["staging"], scopes = ["read"] }]

[introspection]
enabled = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_mid_burst_loses_no_event_its_clients_saw_succeed() {
    let github = StandIn::github(&[GITHUB_STAGING]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(&config, KILL_CONFIG.replace("GITHUB_URL", &github.url)).unwrap();
    let env = [("GITHUB_STAGING", GITHUB_STAGING)];
    let served = common::serve(dir.path(), &config, &env);
    let data = dir.path().join("data");
    let key = common::add_agent_with_cli(&served.url, &data, "claude");
    let http = common::http();
    let minted = served.mint(&key, json!({ "env": "staging" })).await;
    let credential = minted["credential"].as_str().unwrap().to_owned();

    // A burst from eight clients; the broker dies once a few dozen succeeded.
    let succeeded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..8 {
        let (http, url, credential, succeeded) =
            (http.clone(), served.url.clone(), credential.clone(), succeeded.clone());
        clients.push(tokio::spawn(async move {
            for n in 0..1000 {
                let file = format!("c{client}-n{n}");
                let sent = http
                    .get(format!("{url}/p/github/repos/acme/api/contents/{file}"))
                    .bearer_auth(&credential)
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                let ok = response.status() == 200;
                // Success is what the client saw: a whole 200 answer.
                if response.bytes().await.is_ok() && ok {
                    succeeded.lock().unwrap().push(file);
                }
            }
        }));
    }
    common::eventually("the burst is under way", async || succeeded.lock().unwrap().len() >= 40).await;
    served.kill();
    for c in clients {
        c.await.unwrap();
    }
    let seen: Vec<String> = succeeded.lock().unwrap().clone();

    // Restarted on the same data dir: every success has its event, and the
    // chain verifies against the keys the broker publishes.
    let again = common::serve(dir.path(), &config, &env);
    let jwks = http
        .get(format!("{}/v1/audit/keys", again.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
    again.stop();
    let store = valetkey::store::SqliteStore::open_in(&data).await.unwrap();
    let events = valetkey::store::Store::audit_events(&store).await.unwrap();
    let recorded: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.kind == "proxy_allowed")
        .filter_map(|e| {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).ok()?;
            detail["path"].as_str()?.rsplit('/').next().map(str::to_owned)
        })
        .collect();
    let missing: Vec<&String> = seen.iter().filter(|f| !recorded.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} successes have no event: {missing:?}",
        missing.len(),
        seen.len()
    );
    drop(store);
    let out = Command::new(BIN)
        .args(["audit", "verify", "--db"])
        .arg(data.join("valetkey.db"))
        .arg("--jwks")
        .arg(dir.path().join("jwks.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("intact:"), "{text}");
}

/// `valetkey audit …` against a running broker, with its bootstrap admin key.
fn audit_cli(t: &TestBroker, args: &[&str]) -> Command {
    let mut cmd = common::admin_cli(&t.url, &t.data_dir().join("admin.key"));
    cmd.arg("audit").args(args);
    cmd
}

#[tokio::test]
async fn people_tail_and_search_the_trail_and_tools_page_through_it() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    t.add_agent("oncall").await;
    t.mint(&key, json!({ "env": "staging" })).await;
    t.mint(&key, json!({ "env": "production" })).await;

    // Tools: the admin API, filtered and paged.
    let get = |query: &str| {
        t.http
            .get(format!("{}/v1/audit/events?{query}", t.url))
            .bearer_auth(&t.admin_key)
    };
    let (status, page) = t.send(get("agent=claude&type=mint")).await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "mint");
    assert_eq!(events[0]["env"], "staging");
    assert!(
        events[0]["detail"]["lease_id"].is_string(),
        "the detail is JSON, not text"
    );
    let (_, first) = t.send(get("limit=2")).await;
    let after = first["next_after"].as_i64().unwrap();
    let (_, second) = t.send(get(&format!("limit=2&after={after}"))).await;
    assert_eq!(second["events"][0]["seq"].as_i64().unwrap(), after + 1);
    let (_, recent) = t.send(get("since=1h&type=mint_refused")).await;
    assert_eq!(recent["events"].as_array().unwrap().len(), 1);
    for (query, kind) in [
        ("since=yesterday-ish", "invalid_request"),
        ("limit=0", "invalid_request"),
        ("color=red", "invalid_request"),
    ] {
        let (status, problem) = t.send(get(query)).await;
        assert_eq!((status, problem["type"].as_str().unwrap()), (400, kind), "{query}");
    }
    let (status, _) = t
        .send(t.http.get(format!("{}/v1/audit/events", t.url)).bearer_auth(&key))
        .await;
    assert_eq!(status, 401, "a launcher key is not an admin key");

    // People: search and tail.
    let out = tokio::task::spawn_blocking({
        let mut cmd = audit_cli(
            &t,
            &["search", "--agent", "claude", "--type", "mint_refused", "--since", "1h"],
        );
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("mint_refused") && text.contains("claude@production"),
        "{text}"
    );

    // The running broker verifies its own chain for an admin.
    let out = tokio::task::spawn_blocking({
        let mut cmd = audit_cli(&t, &["verify"]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("intact: "), "{text}");

    let mut follow = KillOnDrop(
        audit_cli(&t, &["tail", "-n", "2", "--follow", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = follow.0.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                lines.lock().unwrap().push(line.unwrap());
            }
        })
    };
    common::eventually("tail prints the newest two", async || lines.lock().unwrap().len() >= 2).await;
    t.mint(&key, json!({ "env": "dev" })).await;
    common::eventually("tail --follow prints the new event", async || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("\"mint\"") && l.contains("\"dev\""))
    })
    .await;
    drop(follow);
    reader.join().unwrap();
    let printed = lines.lock().unwrap().clone();
    let seqs: Vec<i64> = printed
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "tail skipped or repeated: {seqs:?}"
    );
    t.stop().await;
}

/// A child process that dies with the test, even when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_json_lines_sink_holds_every_event_in_chain_order_and_no_secret() {
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = sink_dir.path().join("audit.jsonl");
    let config = format!("{}\n[audit]\njsonl_file = \"{}\"\n", common::CONFIG, sink.display());
    let t = TestBroker::start_with(&config, Default::default()).await;
    let key = t.add_agent("claude").await;
    let (_, minted) = t.mint(&key, json!({ "env": "staging" })).await;
    t.mint(&key, json!({ "env": "production" })).await;
    let credential = minted["credential"].as_str().unwrap().to_owned();

    let store = t.broker.store();
    let mut lines: Vec<serde_json::Value> = Vec::new();
    common::eventually("the sink catches up with the store", async || {
        let events = valetkey::store::Store::audit_events(store).await.unwrap();
        lines = std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        !events.is_empty() && lines.len() == events.len()
    })
    .await;
    let events = valetkey::store::Store::audit_events(store).await.unwrap();
    for (line, event) in lines.iter().zip(&events) {
        assert_eq!(
            line,
            &event.to_json(),
            "the sink differs from the store at {}",
            event.seq
        );
    }
    let text = std::fs::read_to_string(&sink).unwrap();
    assert!(
        !text.contains(&credential) && !text.contains(&key),
        "a credential or key is in the sink"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777, 0o600);
    t.stop().await;
}

#[tokio::test]
async fn the_permission_report_comes_in_three_formats_and_holds_no_secret() {
    const LEAKED: &str = "ghp_LeakedIntoTheReportTest0123456789abcd";
    let f = Fixture::start().await;
    f.graphql(json!({ "query": "mutation { volumeDelete(volumeId: \"vol_db\") }" }))
        .await;
    f.graphql(
        json!({ "query": "query P($id: String!) { project(id: $id) { name } }", "variables": { "id": "proj_1" } }),
    )
    .await;
    f.broker
        .send(
            f.broker
                .http
                .get(f.url("github/repos/acme/api/contents/README.md"))
                .header("authorization", format!("token {LEAKED}")),
        )
        .await;

    let out_dir = tempfile::tempdir().unwrap();
    let html_path = out_dir.path().join("report.html");
    let run = |args: Vec<String>| {
        let mut cmd = common::admin_cli(&f.broker.url, &f.broker.data_dir().join("admin.key"));
        cmd.args(["audit", "report", "--since", "1d"]).args(args);
        cmd
    };
    let mut outputs = Vec::new();
    for args in [
        vec!["--format".to_owned(), "json".to_owned()],
        vec!["--format".to_owned(), "md".to_owned()],
        vec![
            "--format".to_owned(),
            "html".to_owned(),
            "--out".to_owned(),
            html_path.display().to_string(),
        ],
    ] {
        let mut cmd = run(args);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        outputs.push(String::from_utf8(out.stdout).unwrap());
    }
    let html = std::fs::read_to_string(&html_path).unwrap();

    let report: serde_json::Value = serde_json::from_str(&outputs[0]).unwrap();
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "raw_provider_token",
        "destructive_attempts",
        "mismatches",
        "shared_resource_touched",
        "unused_scope",
        "chain_integrity",
    ] {
        assert!(kinds.contains(&kind), "json lacks {kind}: {kinds:?}");
    }
    let md = &outputs[1];
    assert!(
        md.contains("## Summary") && md.contains("[critical] 1 real provider token reached agents"),
        "{md}"
    );
    // The HTML is one self-contained file a person opens: summary first,
    // then the chart, then the findings.
    assert!(html.starts_with("<!doctype html>"));
    let (summary, chart, findings) = (
        html.find("id=\"summary\""),
        html.find("<svg"),
        html.find("id=\"findings\""),
    );
    assert!(
        summary < chart && chart < findings && summary.is_some(),
        "sections out of order"
    );
    assert!(html.contains("[critical] 1 real provider token reached agents"));
    assert!(!html.contains("src=") && !html.contains("href=") && !html.contains("@import"));

    for text in [&outputs[0], &outputs[1], &html] {
        for secret in [
            LEAKED,
            RAILWAY_STAGING,
            RAILWAY_PRODUCTION,
            GITHUB_STAGING,
            API_STAGING,
            f.credential.as_str(),
        ] {
            assert!(!text.contains(secret), "a secret is in a report");
        }
    }
}

#[tokio::test]
async fn serve_writes_permission_audits_on_a_schedule_and_posts_a_summary() {
    let hook = common::upstream::Webhook::start(0).await;
    let reports = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[audit.schedule]\ninterval = \"1s\"\nwindow = \"30d\"\ndirectory = \"{}\"\nwebhook = \"{}\"\n",
        common::CONFIG,
        reports.path().display(),
        hook.url
    );
    let t = TestBroker::start_with(&config, Default::default()).await;
    let key = t.add_agent("claude").await;
    t.mint(&key, json!({ "env": "production" })).await;
    let summary = hook.alert("audit_report").await;
    assert!(
        summary["text"]
            .as_str()
            .unwrap()
            .starts_with("valetkey permission audit"),
        "{summary}"
    );
    let mut written: Vec<String> = Vec::new();
    common::eventually("the three reports are written", async || {
        written = std::fs::read_dir(reports.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ["html", "json", "md"]
            .iter()
            .all(|ext| written.iter().any(|w| w.ends_with(ext)))
    })
    .await;
    let json_name = written.iter().find(|w| w.ends_with(".json")).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.path().join(json_name)).unwrap()).unwrap();
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "chain_integrity")
    );
    t.stop().await;
}
