//! A human can say yes: held requests bound to their digest, approvers
//! deciding with their own factor, an approved request forwarded once, and
//! everything else refused, recorded, and sent nowhere. The agent's side
//! of it through MCP too: its tools, over stdio and HTTP, with the official
//! Python SDK as the client.

mod common;

use std::time::{Duration, SystemTime};

use common::fixture::{Fixture, refusal};
use serde_json::{Value, json};

const APPROVERS: &str = r#"
[approvers.alice]
providers = ["*"]
environments = ["*"]

[approvers.bob]
providers = ["railway"]
environments = ["staging", "production"]

[approvers.carol]
description = "staging only"
providers = ["railway"]
environments = ["staging"]

[approvers.dana]
description = "the first to enroll, who vouches for the others"
providers = ["*"]
environments = ["*"]
"#;

/// The incident's call: the volume staging and production share.
const INCIDENT: &str = "mutation { volumeDelete(volumeId: \"vol_db\") }";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An approver's authenticator app.
struct App {
    name: &'static str,
    secret: Vec<u8>,
}

impl App {
    /// The code the app shows `steps` steps from now (a code is taken once,
    /// so each use in a test takes its own step).
    fn code(&self, steps: i64) -> String {
        let at = now() as i64 + steps * 30;
        valetkey::approvals::totp::code_at(&self.secret, at as u64)
    }

    /// A six-digit code that is none of those the app shows around now.
    fn wrong(&self) -> String {
        let near: Vec<String> = (-2..=2).map(|s| self.code(s)).collect();
        (0..)
            .map(|n: u32| format!("{:06}", n * 7919 % 1_000_000))
            .find(|c| !near.contains(c))
            .unwrap()
    }
}

async fn post(f: &Fixture, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = f.broker.http.post(format!("{}/v1{path}", f.broker.url)).json(&body);
    if let Some(b) = bearer {
        request = request.bearer_auth(b);
    }
    f.broker.send(request).await
}

async fn get(f: &Fixture, path: &str, bearer: &str) -> (u16, Value) {
    f.broker
        .send(
            f.broker
                .http
                .get(format!("{}/v1{path}", f.broker.url))
                .bearer_auth(bearer),
        )
        .await
}

/// Invites (as admin), redeems and confirms, as the approver would.
async fn enroll(f: &Fixture, name: &'static str) -> App {
    let (status, invited) = post(
        f,
        &format!("/approvers/{name}/invitations"),
        Some(&f.broker.admin_key),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{invited}");
    let code = invited["enrollment_code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("vke_"));
    let (status, redeemed) = post(
        f,
        &format!("/approvers/{name}/enrollment"),
        None,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(status, 200, "{redeemed}");
    let uri = redeemed["otpauth_uri"].as_str().unwrap();
    let secret = totp_rs::TOTP::from_url(uri).unwrap().secret.clone();
    let app = App { name, secret };
    // The code cannot be redeemed twice.
    let (status, again) = post(
        f,
        &format!("/approvers/{name}/enrollment"),
        None,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(refusal(status, &again), (401, "enrollment_code_invalid"));
    // Confirmed with the step of now: `code(1)` is then each approver's
    // next code (a step behind could fall out of the window).
    let (status, confirmed) = post(
        f,
        &format!("/approvers/{name}/confirmation"),
        None,
        json!({ "code": app.code(0) }),
    )
    .await;
    assert_eq!(status, 200, "{confirmed}");
    app
}

/// `dana` enrolls first (her factor is in use at once), then each of
/// `names`, whose factors await her vouch; she vouches for them all with
/// one code.
async fn team<const N: usize>(f: &Fixture, names: [&'static str; N]) -> [App; N] {
    let dana = enroll(f, "dana").await;
    let mut apps = Vec::new();
    for name in names {
        let app = enroll(f, name).await;
        let in_use = f.broker.broker.store().factor(name).await.unwrap();
        assert!(
            in_use.is_none(),
            "{name}'s factor is in use before anyone vouched for it"
        );
        apps.push(app);
    }
    let (status, vouched) = post(
        f,
        "/approvers/vouch",
        None,
        json!({ "approver": "dana", "code": dana.code(1), "approvers": names.as_slice() }),
    )
    .await;
    assert_eq!(status, 200, "{vouched}");
    apps.try_into().unwrap_or_else(|_| unreachable!())
}

async fn decide(f: &Fixture, id: &str, app: &App, code: &str, verb: &str) -> (u16, Value) {
    let mut body = json!({ "approver": app.name, "code": code });
    if verb == "deny" {
        body["reason"] = json!("not during the migration");
    }
    post(f, &format!("/approvals/{id}/{verb}"), None, body).await
}

/// The agent's request, with the approval named or not.
async fn send(f: &Fixture, credential: &str, query: &str, approval: Option<&str>) -> (u16, Value) {
    let mut request = f
        .broker
        .http
        .post(f.url("railway/graphql/v2"))
        .bearer_auth(credential)
        .json(&json!({ "query": query }));
    if let Some(id) = approval {
        request = request.header("Valetkey-Approval", id);
    }
    f.broker.send(request).await
}

/// The agent waiting for the decision on `id` (up to a minute).
fn long_poll(f: &Fixture, id: &str) -> tokio::task::JoinHandle<Value> {
    let (http, url, credential) = (
        f.broker.http.clone(),
        format!("{}/v1/approvals/{id}?wait=60s", f.broker.url),
        f.credential.clone(),
    );
    tokio::spawn(async move {
        let answer = http.get(url).bearer_auth(credential).send().await.unwrap();
        answer.json::<Value>().await.unwrap()
    })
}

/// The events of `kind`: who recorded each, and its detail.
async fn events_of(f: &Fixture, kind: &str) -> Vec<(String, Value)> {
    let events = f.broker.broker.store().audit_events().await.unwrap();
    events
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| (e.actor, serde_json::from_str(&e.detail).unwrap()))
        .collect()
}

async fn event_kinds(f: &Fixture) -> Vec<String> {
    let pool = f.broker.db().await;
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM audit_events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    kinds
}

#[tokio::test]
async fn the_incidents_delete_needs_two_approvers_and_is_sent_exactly_once() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let [alice, bob, carol] = team(&f, ["alice", "bob", "carol"]).await;

    // Held: refused with an approval to wait for, and sent nowhere.
    let (status, held) = send(&f, &f.credential, INCIDENT, None).await;
    assert_eq!(refusal(status, &held), (403, "shared_resource"), "{held}");
    let id = held["approval_id"].as_str().expect("an approval id").to_owned();
    assert_eq!(held["approvers_needed"], 2);
    assert_eq!(held["approval_status"], "pending");
    assert!(
        held["approval_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/approvals/{id}"))
    );
    assert!(held["agent_guidance"].as_str().unwrap().contains("Valetkey-Approval"));
    // The same request again finds the same approval: no flood.
    let (_, again) = send(&f, &f.credential, INCIDENT, None).await;
    assert_eq!(again["approval_id"], id.as_str());

    // The agent sees it pending.
    let (status, seen) = get(&f, &format!("/approvals/{id}"), &f.credential).await;
    assert_eq!((status, seen["status"].as_str()), (200, Some("pending")), "{seen}");

    // Nobody but an approver with their factor decides.
    let code = alice.code(1);
    for bearer in [f.key.as_str(), f.credential.as_str()] {
        let (status, body) = post(
            &f,
            &format!("/approvals/{id}/approve"),
            Some(bearer),
            json!({ "approver": "alice", "code": code }),
        )
        .await;
        assert_eq!(refusal(status, &body), (403, "approval_forbidden"), "{body}");
    }
    let (status, body) = post(
        &f,
        &format!("/approvals/{id}/approve"),
        Some(&f.broker.admin_key),
        json!({ "approver": "alice" }),
    )
    .await;
    assert_eq!(refusal(status, &body), (401, "approval_factor_required"));
    let (status, body) = decide(&f, &id, &carol, &carol.code(1), "approve").await;
    assert_eq!(refusal(status, &body), (403, "approver_not_allowed"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("production"));
    let (status, body) = decide(&f, &id, &bob, &bob.wrong(), "approve").await;
    assert_eq!(refusal(status, &body), (401, "approval_code_invalid"));

    // One approver is not enough.
    let (status, body) = decide(&f, &id, &alice, &code, "approve").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")), "{body}");
    assert_eq!(body["approved_by"], json!(["alice"]));
    let (status, body) = decide(&f, &id, &alice, &code, "approve").await;
    assert_eq!(
        refusal(status, &body),
        (403, "approver_not_allowed"),
        "alice twice is not two approvers"
    );
    let (status, body) = send(&f, &f.credential, INCIDENT, Some(&id)).await;
    assert_eq!(refusal(status, &body), (403, "approval_pending"));
    assert_eq!(
        f.railway.count(),
        0,
        "nothing reached Railway before the second approval"
    );

    // The agent long-polls; the second approver's yes ends its wait.
    let poll = long_poll(&f, &id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = decide(&f, &id, &bob, &bob.code(1), "approve").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("approved")), "{body}");
    assert_eq!(poll.await.unwrap()["status"], "approved");

    // Anything but the identical request of the same session is refused.
    let (status, body) = send(
        &f,
        &f.credential,
        "mutation { volumeDelete(volumeId: \"vol_scratch\") }",
        Some(&id),
    )
    .await;
    assert_eq!(refusal(status, &body), (403, "approval_mismatch"), "{body}");
    let (status, body) = send(&f, &f.credential, &format!("{INCIDENT} "), Some(&id)).await;
    assert_eq!(
        refusal(status, &body),
        (403, "approval_mismatch"),
        "one more byte is another request"
    );
    let (_, minted) = f.broker.mint(&f.key, json!({ "env": "staging" })).await;
    let other_session = minted["credential"].as_str().unwrap();
    let (status, body) = send(&f, other_session, INCIDENT, Some(&id)).await;
    assert_eq!(refusal(status, &body), (403, "approval_unknown"), "{body}");
    assert_eq!(f.railway.count(), 0);

    // The identical request goes, once.
    let (status, body) = send(&f, &f.credential, INCIDENT, Some(&id)).await;
    assert_eq!(status, 200, "{body}");
    let received = f.railway.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("authorization"),
        Some("Bearer rw-staging-7c1f0d2e9a")
    );
    assert!(
        received[0].header("valetkey-approval").is_none(),
        "the header is the broker's"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&received[0].body).unwrap(),
        json!({ "query": INCIDENT })
    );
    let (status, body) = send(&f, &f.credential, INCIDENT, Some(&id)).await;
    assert_eq!(refusal(status, &body), (403, "approval_used"));
    let (status, body) = send(&f, &f.credential, INCIDENT, None).await;
    assert_eq!(refusal(status, &body), (403, "shared_resource"));
    assert_ne!(body["approval_id"], id.as_str(), "a used approval is not found again");
    assert_eq!(f.railway.count(), 1, "sent exactly once");

    let kinds = event_kinds(&f).await;
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("approval_requested"), 2);
    assert_eq!(count("approval_granted"), 2);
    assert_eq!(count("approval_used"), 1);
    assert_eq!(count("approver_enrolled"), 4);
    assert_eq!(count("approver_vouched"), 3);
    // The launcher key, the credential, no factor, carol, bob's wrong code,
    // alice's second approval.
    assert!(count("approval_refused") >= 6, "{kinds:?}");
    let text = f.audit_text().await;
    for app in [&alice, &bob, &carol] {
        let (_, base32) = valetkey::approvals::totp::provisioning(&app.secret, app.name);
        assert!(
            !text.contains(base32.as_str()),
            "a factor's secret reached the audit trail"
        );
    }
}

#[tokio::test]
async fn an_identical_request_uses_its_approval_without_the_header_and_approvals_expire() {
    let extra = format!("{APPROVERS}\n[approvals]\nexecute_within = \"2s\"\n");
    let f = Fixture::start_with(&extra, common::fixture::GITHUB_STAGING).await;
    let [alice, bob, carol] = team(&f, ["alice", "bob", "carol"]).await;
    let scratch = "mutation { volumeDelete(volumeId: \"vol_scratch\") }";

    // Staging's own volume: one approver.
    let (status, held) = send(&f, &f.credential, scratch, None).await;
    assert_eq!(refusal(status, &held), (403, "approval_required"), "{held}");
    assert_eq!(held["approvers_needed"], 1);
    let id = held["approval_id"].as_str().unwrap().to_owned();
    let alices = alice.code(1);
    let (status, body) = decide(&f, &id, &alice, &alices, "approve").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("approved")), "{body}");
    // A tool that cannot add a header sends the same request again, and
    // again at once: one of the racing copies goes.
    let sends = (0..8).map(|_| send(&f, &f.credential, scratch, None));
    let answers = futures_util::future::join_all(sends).await;
    let sent = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(sent, 1, "{answers:?}");
    assert_eq!(f.railway.count(), 1);

    // Approved from the command line, as bob would; the agent's script
    // waits for it with `approval wait`. Then not sent in time.
    let (_, held) = send(&f, &f.credential, scratch, None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    let out = tokio::process::Command::new(common::BIN)
        .args([
            "approve",
            &id,
            "--as",
            "bob",
            "--code",
            &bob.code(1),
            "--url",
            &f.broker.url,
        ])
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("approved") && printed.contains("(owned by staging)"),
        "{printed}"
    );
    let out = tokio::process::Command::new(common::BIN)
        .args(["approval", "wait", &id, "--timeout", "10s", "--url", &f.broker.url])
        .env("VALETKEY_CREDENTIAL", &f.credential)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("Valetkey-Approval: {id}")));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, body) = send(&f, &f.credential, scratch, Some(&id)).await;
    assert_eq!(refusal(status, &body), (403, "approval_expired"), "{body}");
    assert_eq!(f.railway.count(), 1, "an expired approval sends nothing");
    common::eventually("the expiry recorded", async || {
        event_kinds(&f).await.iter().any(|k| k == "approval_expired")
    })
    .await;

    // Denied, with a reason the agent reads.
    let (_, held) = send(&f, &f.credential, scratch, None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    // A code is taken once: alice's, used above, does not decide again.
    let (status, body) = decide(&f, &id, &alice, &alices, "approve").await;
    assert_eq!(refusal(status, &body), (401, "approval_code_invalid"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("used already"), "{body}");
    let (status, body) = decide(&f, &id, &carol, &carol.code(1), "deny").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("denied")), "{body}");
    let (_, seen) = get(&f, &format!("/approvals/{id}"), &f.credential).await;
    assert_eq!(seen["reason"], "not during the migration");
    let (status, body) = send(&f, &f.credential, scratch, Some(&id)).await;
    assert_eq!(refusal(status, &body), (403, "approval_denied"));
    assert_eq!(f.railway.count(), 1);
    let out = tokio::process::Command::new(common::BIN)
        .args(["approval", "wait", &id, "--url", &f.broker.url])
        .env("VALETKEY_CREDENTIAL", &f.credential)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "a denial ends the wait with 3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not during the migration"));
}

#[tokio::test]
async fn guessing_codes_locks_the_approver_and_floods_are_not_recorded() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let [alice] = team(&f, ["alice"]).await;
    let (_, held) = send(&f, &f.credential, INCIDENT, None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    // Guesses sent at once: no more than five are ever checked, then
    // alice's code is locked, even the right one.
    let wrong = alice.wrong();
    let guesses = (0..30).map(|_| decide(&f, &id, &alice, &wrong, "approve"));
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|(_, b)| b["type"] == "approval_code_invalid")
        .count();
    assert!(
        (1..=5).contains(&checked),
        "{checked} guesses were checked: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(s, b)| *s == 401 || b["type"] == "approver_locked" || b["type"] == "rate_limited")
    );
    let (status, body) = decide(&f, &id, &alice, &alice.code(1), "approve").await;
    assert_eq!(status, 429, "locked, or past the rate of refusals: {body}");
    let (_, seen) = get(&f, &format!("/approvals/{id}"), &f.credential).await;
    assert_eq!(seen["status"], "pending");
    let factor = f.broker.broker.store().factor("alice").await.unwrap().unwrap();
    assert!(
        factor.failures <= 5 && factor.locked_until > 0,
        "{} attempts counted",
        factor.failures
    );
    // Whoever sends junk in a loop has only so much of it recorded.
    let mallory = App {
        name: "mallory",
        secret: alice.secret.clone(),
    };
    let mut limited = 0;
    for _ in 0..40 {
        let (status, body) = decide(&f, &id, &mallory, "123456", "approve").await;
        match refusal(status, &body) {
            (404, "unknown_approver") => {}
            (429, "rate_limited") => limited += 1,
            other => panic!("{other:?}: {body}"),
        }
    }
    assert!(limited > 0, "a flood is cut off");
    let recorded = event_kinds(&f)
        .await
        .iter()
        .filter(|k| *k == "approval_refused")
        .count();
    assert!(recorded < 30, "{recorded} refusals recorded");
}

#[tokio::test]
async fn a_request_no_approver_may_release_says_so_and_holds_nothing() {
    // No approvers configured.
    let f = Fixture::start().await;
    let (status, body) = send(&f, &f.credential, INCIDENT, None).await;
    assert_eq!(refusal(status, &body), (403, "shared_resource"));
    assert!(body.get("approval_id").is_none(), "{body}");
    assert!(
        body["approval_unavailable"].as_str().unwrap().contains("names 0"),
        "{body}"
    );
    // Another environment's volume is no approver's to release.
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let (status, body) = send(
        &f,
        &f.credential,
        "mutation { volumeDelete(volumeId: \"vol_prod_only\") }",
        None,
    )
    .await;
    assert_eq!(refusal(status, &body), (403, "credential_mismatch"));
    assert!(
        body.get("approval_id").is_none() && body.get("approval_unavailable").is_none(),
        "{body}"
    );
    assert!(!event_kinds(&f).await.iter().any(|k| k == "approval_requested"));
    assert_eq!(f.railway.count(), 0);
}

#[tokio::test]
async fn approvers_are_told_reminded_and_an_undecided_request_expires() {
    let hook = common::upstream::Webhook::start(0).await;
    let extra = format!(
        "{APPROVERS}\n[alerts]\nwebhook = \"{}\"\nbackoff = \"10ms\"\n\n[approvals]\ndecide_within = \"4s\"\n",
        hook.url
    );
    let f = Fixture::start_with(&extra, common::fixture::GITHUB_STAGING).await;
    let (_, held) = send(&f, &f.credential, INCIDENT, None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    // Told once, with the blast radius and how to decide.
    let told = hook.alert("approval_requested").await;
    let text = told["text"].as_str().unwrap();
    assert!(
        text.contains(&id) && text.contains("volume `vol_db` (owned by staging and production)"),
        "{text}"
    );
    assert!(text.contains(&format!("valetkey approve {id}")), "{text}");
    assert!(
        text.contains("delete volumes and the data on them"),
        "the pack's words: {text}"
    );
    // Reminded in the last quarter of the deciding clock, then expired.
    let reminder = hook.alert("approval_reminder").await;
    assert!(reminder["text"].as_str().unwrap().contains(&id));
    common::eventually("the undecided request expires", async || {
        event_kinds(&f).await.iter().any(|k| k == "approval_expired")
    })
    .await;
    let (_, seen) = get(&f, &format!("/approvals/{id}"), &f.credential).await;
    assert_eq!(seen["status"], "expired");
    let reminders = hook
        .received()
        .iter()
        .filter(|a| a["kind"] == "approval_reminder")
        .count();
    assert_eq!(reminders, 1, "one reminder, however often the broker looks");
    assert_eq!(f.railway.count(), 0);
}

/// The console in a real browser: tests/console/approve.py, in headless
/// Chromium with a virtual authenticator, registers alice's passkey with
/// her enrollment code, signs in, checks what a page must refuse, and gives
/// the second approval the incident's delete needs (bob gave the first with
/// his code). The agent's long poll returns `approved`; the request is sent
/// once. Screenshots go to `console-screenshots` in the target's tmp dir.
#[tokio::test(flavor = "multi_thread")]
async fn an_approver_signs_in_with_a_passkey_and_approves_in_the_console() {
    let extra = format!("{APPROVERS}\n[console]\nenabled = true\n");
    let f = Fixture::start_with(&extra, common::fixture::GITHUB_STAGING).await;
    // dana enrolled first; alice's passkey awaits her vouch, which the
    // browser's run asks for once alice has registered; bob's code factor
    // awaits one too, which alice gives in the console.
    let dana = enroll(&f, "dana").await;
    let bob = enroll(&f, "bob").await;
    let (status, invited) = post(&f, "/approvers/alice/invitations", Some(&f.broker.admin_key), json!({})).await;
    assert_eq!(status, 200, "{invited}");
    let code = invited["enrollment_code"].as_str().unwrap().to_owned();

    let (_, held) = send(&f, &f.credential, INCIDENT, None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    let poll = long_poll(&f, &id);

    let port = f.broker.url.rsplit(':').next().unwrap().to_owned();
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/.venv/bin/python");
    let missing = common::outside::file_missing(std::path::Path::new("/usr/bin/chromium")).or_else(|| {
        common::outside::file_missing(&venv).map(|why| format!("{why} (scripts/test installs Playwright there)"))
    });
    if !common::outside::present("chromium", missing) {
        return;
    }
    let out = python("tests/console/approve.py")
        .env("CONSOLE", format!("http://localhost:{port}/console"))
        .env("APPROVER", "alice")
        .env("CODE", &code)
        .env("APPROVAL", &id)
        .env("VOUCHER", "dana")
        .env("VOUCHER_CODE", dana.code(1))
        .env("VOUCH_FOR", "alice")
        .env("VOUCH_IN_CONSOLE", "bob")
        .env("SHOTS", &shots)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser's run failed:\n{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(checks["no_csrf"], 403);
    assert_eq!(checks["other_origin"], 403);
    assert_eq!(checks["form_without_csrf"], 403);
    assert_eq!(checks["console_vouch"], "bob");
    for shot in ["queue.png", "approval.png", "approved.png", "approval-phone.png"] {
        assert!(
            shots.join(shot).metadata().unwrap().len() > 10_000,
            "{shot} is not a screenshot"
        );
    }

    // alice approved in the browser; bob's code gives the second approval,
    // which ends the agent's wait; the request goes once.
    let (status, body) = decide(&f, &id, &bob, &bob.code(1), "approve").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("approved")), "{body}");
    assert_eq!(body["approved_by"], json!(["alice", "bob"]));
    assert_eq!(poll.await.unwrap()["status"], "approved");
    assert_eq!(f.railway.count(), 0, "approving sends nothing by itself");
    let (status, body) = send(&f, &f.credential, INCIDENT, Some(&id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.railway.count(), 1);
    let factors = async |kind: &str| -> Vec<String> {
        let events = events_of(&f, kind).await;
        events
            .iter()
            .map(|(_, d)| d["factor"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        factors("approval_granted").await,
        ["passkey", "totp"],
        "each approval names its factor"
    );
    assert_eq!(factors("approver_enrolled").await, ["totp", "totp", "passkey"]);
    let vouched = events_of(&f, "approver_vouched").await;
    let (_, by_alice) = vouched
        .iter()
        .find(|(actor, _)| actor == "approver:alice")
        .expect("alice vouched in the console");
    assert_eq!(by_alice["approver"], "bob");
}

#[tokio::test]
async fn another_variable_is_another_request_and_a_body_past_the_bound_cannot_be_held() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let [alice] = team(&f, ["alice"]).await;
    let by_variable = |id: &str| {
        json!({
            "query": "mutation Drop($id: String!) { volumeDelete(volumeId: $id) }",
            "variables": { "id": id },
            "operationName": "Drop",
        })
    };
    let send_json = |body: Value, approval: Option<String>| {
        let mut request = f
            .broker
            .http
            .post(f.url("railway/graphql/v2"))
            .bearer_auth(&f.credential)
            .json(&body);
        if let Some(id) = approval {
            request = request.header("Valetkey-Approval", id);
        }
        f.broker.send(request)
    };
    let (_, held) = send_json(by_variable("vol_scratch"), None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    let (status, _) = decide(&f, &id, &alice, &alice.code(1), "approve").await;
    assert_eq!(status, 200);
    // The same document with another variable is another request.
    let (status, body) = send_json(by_variable("vol_db"), Some(id.clone())).await;
    assert_eq!(refusal(status, &body), (403, "approval_mismatch"), "{body}");
    assert_eq!(f.railway.count(), 0);
    let (status, body) = send_json(by_variable("vol_scratch"), Some(id)).await;
    assert_eq!(status, 200, "{body}");

    // A delete whose body the broker would not read whole cannot be bound.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let (status, body) = f
        .broker
        .send(
            f.broker
                .http
                .delete(f.url("api/v1/items/7"))
                .bearer_auth(&f.credential)
                .header("content-type", "application/octet-stream")
                .body(big),
        )
        .await;
    assert_eq!(refusal(status, &body), (403, "approval_required"), "{body}");
    assert!(body.get("approval_id").is_none(), "{body}");
    assert!(
        body["approval_unavailable"]
            .as_str()
            .unwrap()
            .contains("over 1048576 bytes"),
        "{body}"
    );
    assert_eq!(f.api.count(), 0);
}

#[tokio::test]
async fn a_request_the_broker_could_not_send_is_not_held() {
    // No GitHub token for staging: approved, a branch's deletion could not
    // be sent, so it is not held (and no approver is asked).
    let f = Fixture::start_with(APPROVERS, "").await;
    let (status, body) = f
        .broker
        .send(
            f.broker
                .http
                .delete(f.url("github/repos/acme/api/git/refs/heads/old"))
                .bearer_auth(&f.credential),
        )
        .await;
    assert_eq!(refusal(status, &body), (403, "approval_required"), "{body}");
    assert!(body.get("approval_id").is_none(), "{body}");
    assert!(
        body["approval_unavailable"]
            .as_str()
            .unwrap()
            .contains("holds no token"),
        "{body}"
    );
    assert!(!event_kinds(&f).await.iter().any(|k| k == "approval_requested"));
}

#[tokio::test]
async fn a_request_whose_credential_ends_is_no_longer_held() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let (_, held) = send(&f, &f.credential, INCIDENT, None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    let lease = common::claims(&f.credential)["jti"].as_str().unwrap().to_owned();
    let (status, _) = post(&f, "/revocations", Some(&f.broker.admin_key), json!({ "lease": lease })).await;
    assert_eq!(status, 200);
    common::eventually("the held request expires with its credential", async || {
        event_kinds(&f).await.iter().any(|k| k == "approval_expired")
    })
    .await;
    let (_, seen) = get(&f, &format!("/approvals/{id}"), &f.broker.admin_key).await;
    assert_eq!(seen["status"], "expired");
    let expired = events_of(&f, "approval_expired").await;
    assert_eq!(expired[0].1["clock"], "credential");
}

/// What one stolen admin key could do: issue enrollment codes, redeem them
/// and register factors for approvers. None of them is in use until an
/// enrolled approver vouches for it, so the key makes no approver, let
/// alone the second of two, and replaces no one's factor.
#[tokio::test]
async fn an_admin_key_alone_makes_no_approver() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let [alice] = team(&f, ["alice"]).await;
    let forged_bob = enroll(&f, "bob").await;
    let forged_alice = enroll(&f, "alice").await;
    // While the planted factor waits, bob cannot register his own beside it
    // (a vouch would put in use whatever waits): he is told, and so would
    // the approver asked to vouch be, by `approver list`.
    let (_, invited) = post(&f, "/approvers/bob/invitations", Some(&f.broker.admin_key), json!({})).await;
    let (status, body) = post(
        &f,
        "/approvers/bob/enrollment",
        None,
        json!({ "code": invited["enrollment_code"] }),
    )
    .await;
    assert_eq!(refusal(status, &body), (409, "enrollment_waiting"), "{body}");
    let (_, listed) = get(&f, "/approvers", &f.broker.admin_key).await;
    let bob = listed["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob["awaiting_vouch"][0]["factor"], "totp", "{listed}");
    let (_, held) = send(&f, &f.credential, INCIDENT, None).await;
    let id = held["approval_id"].as_str().unwrap().to_owned();

    let (status, body) = decide(&f, &id, &forged_bob, &forged_bob.code(1), "approve").await;
    assert_eq!(refusal(status, &body), (409, "approver_not_enrolled"), "{body}");
    let (status, body) = decide(&f, &id, &forged_alice, &forged_alice.code(1), "approve").await;
    assert_eq!(
        refusal(status, &body),
        (401, "approval_code_invalid"),
        "alice's own factor is still hers: {body}"
    );
    let (status, body) = post(
        &f,
        "/approvers/vouch",
        None,
        json!({ "approver": "bob", "code": forged_bob.code(1), "approvers": ["bob", "alice"] }),
    )
    .await;
    assert_eq!(refusal(status, &body), (409, "approver_not_enrolled"), "{body}");
    let (status, body) = decide(&f, &id, &alice, &alice.code(1), "approve").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")), "{body}");
    assert_eq!(f.railway.count(), 0);
}

#[tokio::test]
async fn a_held_requests_query_string_is_bound_but_never_kept() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let [alice] = team(&f, ["alice"]).await;
    let held_with = |query: &'static str| {
        f.broker.send(
            f.broker
                .http
                .post(format!("{}?{query}", f.url("railway/graphql/v2")))
                .bearer_auth(&f.credential)
                .json(&json!({ "query": "mutation { volumeDelete(volumeId: \"vol_scratch\") }" })),
        )
    };
    let (_, held) = held_with("sig=QUERYSECRET123").await;
    let id = held["approval_id"].as_str().unwrap().to_owned();
    let (_, seen) = get(&f, &format!("/approvals/{id}"), &f.broker.admin_key).await;
    assert_eq!(seen["path"], "/graphql/v2");
    assert!(
        seen["summary"].as_str().unwrap().contains("query string of 18 bytes"),
        "{seen}"
    );
    let (status, _) = decide(&f, &id, &alice, &alice.code(1), "approve").await;
    assert_eq!(status, 200);
    // Another query is another request.
    let (_, other) = held_with("sig=QUERYSECRET124").await;
    assert_ne!(other["approval_id"], id.as_str());
    assert!(
        !f.audit_text().await.contains("QUERYSECRET"),
        "a query string reached the audit trail"
    );
    let pool = f.broker.db().await;
    let paths: Vec<String> = sqlx::query_scalar("SELECT path FROM approvals")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(paths.iter().all(|p| !p.contains('?')), "{paths:?}");

    // Approvers are not flooded: a session holds at most ten at once (the
    // approved one and the other above count).
    for n in 0..8 {
        let (_, held) = f
            .broker
            .send(
                f.broker
                    .http
                    .post(format!("{}?n={n}", f.url("railway/graphql/v2")))
                    .bearer_auth(&f.credential)
                    .json(&json!({ "query": "mutation { volumeDelete(volumeId: \"vol_scratch\") }" })),
            )
            .await;
        assert!(held["approval_id"].is_string(), "{held}");
    }
    let (status, full) = held_with("one=more").await;
    assert_eq!(refusal(status, &full), (403, "approval_required"));
    assert!(
        full["approval_unavailable"].as_str().unwrap().contains("holds 10"),
        "{full}"
    );
}

/// `script` (under the repository) run by the tests' Python, whose
/// virtual environment scripts/test makes (Playwright, the MCP SDK).
fn python(script: &str) -> tokio::process::Command {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("tests/console/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs it",
        python.display()
    );
    let mut command = tokio::process::Command::new(python);
    command.arg(root.join(script));
    command
}

/// Runs tests/mcp/client.py, the official MCP Python SDK, over `transport`
/// (`stdio`: it starts `valetkey mcp`; `http`: the broker's /mcp) with
/// `credential`, calling `calls` in order; its JSON report.
async fn mcp_client(f: &Fixture, transport: &str, credential: &str, calls: &Value) -> Value {
    let out = python("tests/mcp/client.py")
        .env("TRANSPORT", transport)
        .env("VALETKEY", common::BIN)
        .env("VALETKEY_URL", &f.broker.url)
        .env("VALETKEY_CREDENTIAL", credential)
        .env("CALLS", calls.to_string())
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client over {transport} failed:\n{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(printed.trim()).unwrap()
}

/// What the agent's HTTP API answers, success or problem alike.
async fn api(f: &Fixture, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
    let mut request = f
        .broker
        .http
        .request(method, format!("{}/v1{path}", f.broker.url))
        .bearer_auth(&f.credential);
    if let Some(body) = body {
        request = request.json(body);
    }
    f.broker.send(request).await.1
}

fn without(mut value: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(key);
    }
    value
}

/// The MCP server, with the official Python SDK as its client, over stdio
/// (`valetkey mcp`, a client of the HTTP API) and over the broker's /mcp
/// (in-process): the same tools, each answering what the HTTP API answers.
/// A refused check reaches no upstream; `request_approval` holds the
/// described request as the proxy would, so the agent's identical request
/// (sent by curl) spends the approval once a human gave it.
#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_tools_answer_as_the_http_api_over_stdio_and_over_http() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let [bob] = team(&f, ["bob"]).await;
    // A refusal through the proxy, to explain.
    let (status, refused) = send(
        &f,
        &f.credential,
        "mutation { volumeDelete(volumeId: \"vol_prod_only\") }",
        None,
    )
    .await;
    assert_eq!(refusal(status, &refused), (403, "credential_mismatch"), "{refused}");
    let refused_event = refused["event_id"].as_str().unwrap();

    let scratch = "mutation { volumeDelete(volumeId: \"vol_scratch\") }";
    let shared = json!({ "provider": "railway", "graphql": { "query": INCIDENT } });
    let allowed = json!({ "provider": "railway", "graphql": {
        "query": "query($id: String!) { project(id: $id) { name } }", "variables": { "id": "proj_1" } } });
    let approvable = json!({ "provider": "railway", "graphql": { "query": scratch } });
    let calls = json!([
        { "tool": "whoami" },
        { "tool": "check", "arguments": shared },
        { "tool": "check", "arguments": allowed },
        { "tool": "explain_refusal", "arguments": { "event_id": refused_event } },
        { "tool": "explain_refusal", "arguments": { "event_id": "no-such-event" } },
        { "tool": "request_approval", "arguments": approvable },
        { "tool": "approval_status", "arguments": { "approval_id": "$5.refusal.approval_id", "wait_seconds": 1 } },
        { "tool": "request_approval", "arguments": allowed },
    ]);
    let over_stdio = mcp_client(&f, "stdio", &f.credential, &calls).await;
    let over_http = mcp_client(&f, "http", &f.credential, &calls).await;
    assert_eq!(f.railway.count(), 0, "no tool sends anything upstream");

    // What the HTTP API answers the same questions.
    use reqwest::Method;
    let whoami = api(&f, Method::GET, "/whoami", None).await;
    let checked_shared = api(&f, Method::POST, "/check", Some(&shared)).await;
    let checked_allowed = api(&f, Method::POST, "/check", Some(&allowed)).await;
    let explained = api(&f, Method::GET, &format!("/events/{refused_event}"), None).await;
    let unknown_event = api(&f, Method::GET, "/events/no-such-event", None).await;
    let held = api(&f, Method::POST, "/approvals", Some(&approvable)).await;
    let id = held["refusal"]["approval_id"]
        .as_str()
        .expect("the request is held")
        .to_owned();
    let status = api(&f, Method::GET, &format!("/approvals/{id}"), None).await;
    let not_needed = api(&f, Method::POST, "/approvals", Some(&allowed)).await;
    // Told later, a refusal's next step is the guidance it came with.
    assert_eq!(explained["next_step"], refused["agent_guidance"]);

    for report in [&over_stdio, &over_http] {
        let names: Vec<&str> = report["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        for tool in [
            "whoami",
            "check",
            "explain_refusal",
            "request_approval",
            "approval_status",
        ] {
            assert!(names.contains(&tool), "{tool} is not listed: {names:?}");
        }
        assert_eq!(report["resources"][0]["uri"], "valetkey://docs/AGENTS.md");
        assert!(
            report["instructions"]
                .as_str()
                .unwrap()
                .contains("Credentials and providers (valetkey)")
        );
        let calls = report["calls"].as_array().unwrap();
        let answer = |i: usize| calls[i]["answer"].clone();
        for call in calls {
            assert_eq!(
                call["answer"], call["text"],
                "the text content is the structured answer"
            );
        }
        assert_eq!(
            without(answer(0), "/expires_in"),
            without(whoami.clone(), "/expires_in")
        );
        assert_eq!(answer(1), checked_shared);
        assert_eq!(answer(1)["decision"], "refuse");
        assert_eq!(answer(2), checked_allowed);
        assert_eq!(answer(3), explained);
        assert_eq!(answer(3)["refusal"], "credential_mismatch");
        assert!(answer(3)["next_step"].as_str().unwrap().contains("another environment"));
        assert!(calls[4]["is_error"].as_bool().unwrap(), "{}", calls[4]);
        assert_eq!(answer(4), unknown_event);
        assert_eq!(answer(4)["type"], "event_unknown");
        // The same request of the same session is held once: every way of
        // asking finds the same approval. Each asking records its refusal.
        assert_eq!(answer(5)["refusal"]["approval_id"], id.as_str(), "{}", answer(5));
        assert_eq!(
            without(answer(5), "/refusal/event_id"),
            without(held.clone(), "/refusal/event_id")
        );
        assert_eq!(answer(6), status);
        assert_eq!(answer(6)["status"], "pending");
        assert_eq!(answer(7), not_needed);
        assert_eq!(answer(7)["decision"], "allow");
    }
    assert_eq!(over_stdio["tools"], over_http["tools"]);

    // Approved, the agent's identical request goes once: curl sends exactly
    // the headers request_approval described (none but Content-Type).
    let (code, body) = decide(&f, &id, &bob, &bob.code(1), "approve").await;
    assert_eq!(code, 200, "{body}");
    let after = mcp_client(
        &f,
        "http",
        &f.credential,
        &json!([{ "tool": "approval_status", "arguments": { "approval_id": id } }]),
    )
    .await;
    assert_eq!(after["calls"][0]["answer"]["status"], "approved");
    let curl = |approval: &str| {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-H",
                "User-Agent:",
                "-H",
                "Accept:",
            ])
            .args(["-H", &format!("Authorization: Bearer {}", f.credential)])
            .args(["-H", &format!("Valetkey-Approval: {approval}")])
            .args(["--data-binary", &json!({ "query": scratch }).to_string()])
            .arg(f.url("railway/graphql/v2"))
            .output()
            .unwrap()
    };
    let sent = curl(&id);
    assert!(sent.status.success());
    let answer: Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert!(
        answer.get("type").is_none(),
        "the approved request was refused: {answer}"
    );
    assert_eq!(f.railway.count(), 1);
    let again: Value = serde_json::from_slice(&curl(&id).stdout).unwrap();
    assert_eq!(again["type"], "approval_used");
    assert_eq!(f.railway.count(), 1);
}

/// `/mcp` takes only a live credential: without one, or with another
/// token, it answers problem+json and no tool runs. An agent reads only
/// its own session's events: another session's event id is unknown to it.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_http_needs_a_credential_and_an_agent_reads_only_its_sessions_events() {
    let f = Fixture::start().await;
    let initialize = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "curl", "version": "1" } } });
    let post = |bearer: Option<&str>| {
        let mut request = f
            .broker
            .http
            .post(format!("{}/mcp", f.broker.url))
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        request
    };
    let (status, body) = f.broker.send(post(None)).await;
    assert_eq!(refusal(status, &body), (401, "credential_missing"));
    let (status, body) = f.broker.send(post(Some("vk1.not.a-credential"))).await;
    assert_eq!(status, 401, "{body}");
    let answer = post(Some(&f.credential)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["result"]["serverInfo"]["name"], "valetkey", "{answer}");

    // This session's refusal, asked about from another session of the same
    // agent, is no event it may read.
    let (_, refused) = f.get("github/repos/acme/infra", &f.credential).await;
    let event = refused["event_id"].as_str().unwrap().to_owned();
    let (_, minted) = f.broker.mint(&f.key, json!({ "env": "staging" })).await;
    let other_session = minted["credential"].as_str().unwrap();
    let read = |credential: &str| {
        f.broker
            .http
            .get(format!("{}/v1/events/{event}", f.broker.url))
            .bearer_auth(credential)
    };
    let (status, body) = f.broker.send(read(&f.credential)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refused"], true);
    let (status, body) = f.broker.send(read(other_session)).await;
    assert_eq!(refusal(status, &body), (404, "event_unknown"), "{body}");

    // No approver is configured here: asking ahead says so, and what to do
    // instead, and nothing is held or sent.
    let (status, body) = f
        .broker
        .send(
            f.broker
                .http
                .post(format!("{}/v1/approvals", f.broker.url))
                .bearer_auth(&f.credential)
                .json(&json!({ "provider": "railway", "graphql": {
                    "query": "mutation { volumeDelete(volumeId: \"vol_scratch\") }" } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let refused = &body["refusal"];
    assert!(refused.get("approval_id").is_none(), "{body}");
    assert!(
        refused["approval_unavailable"].as_str().unwrap().contains("names 0"),
        "{body}"
    );
    assert!(refused["agent_guidance"].as_str().unwrap().contains("ask a human"));
    assert!(f.broker.broker.store().open_approvals().await.unwrap().is_empty());
    assert_eq!(f.railway.count(), 0);
}

/// A provider's token of a known format, as an agent might find one.
const GHP: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";

/// The agent's credential, or a provider's token, put where the broker
/// records what a request aimed at (the path, the query, a header's name, a
/// path it cannot classify) is in no event of the audit trail, no answer,
/// no explanation of `GET /v1/events/{id}` and nothing MCP's
/// explain_refusal says: each is recorded and told with a mark instead.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_tokens_misplaced_in_a_request_are_recorded_and_told_nowhere() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let c = f.credential.clone();
    let lower = c.to_ascii_lowercase();
    let encoded: String = GHP.bytes().map(|b| format!("%{b:02X}")).collect();
    let http = &f.broker.http;
    let requests = [
        http.get(f.url(&format!("github/repos/acme/api/contents/{c}"))),
        http.get(f.url(&format!("github/repos/acme/api/contents/a?ref={c}"))),
        http.get(f.url("github/repos/acme/api")).header(lower.as_str(), "1"),
        http.get(f.url(&format!("github/repos/acme/infra/contents/{GHP}"))),
        http.get(f.url(&format!("github/repos/acme/api/contents/{GHP}"))),
        http.get(f.url(&format!("github/repos/acme/api/contents/x{encoded}"))),
        http.get(f.url(&format!("github/repos/acme/api?access_token={GHP}"))),
        http.get(f.url(&format!("github/{GHP}"))),
        http.delete(f.url(&format!("api/v1/{GHP}/7"))),
        // Held for approval: what approvers are shown is scrubbed too.
        http.delete(f.url(&format!("github/repos/acme/api/git/refs/heads/{GHP}"))),
    ];
    let mut told = Vec::new();
    let mut events = Vec::new();
    for request in requests {
        let answer = request.bearer_auth(&c).send().await.unwrap();
        let refused = !answer.status().is_success();
        let text = answer.text().await.unwrap();
        if let Some(id) = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["event_id"].as_str().map(str::to_owned))
        {
            events.push(id);
        }
        // What an upstream answered a request it was sent is its own.
        if refused {
            told.push(text);
        }
    }
    // Described rather than sent, the request is quoted back scrubbed too.
    for path in [format!("/{GHP}"), format!("/repos/acme/infra/contents/{GHP}")] {
        let ask = json!({ "provider": "github", "method": "GET", "path": path });
        let (status, body) = post(&f, "/check", Some(&c), ask).await;
        assert_eq!((status, &body["decision"]), (200, &json!("refuse")), "{body}");
        told.push(body.to_string());
    }
    let misplaced = events_of(&f, "proxy_refused")
        .await
        .into_iter()
        .filter(|(_, d)| d["refusal"] == "credential_misplaced")
        .count();
    assert_eq!(misplaced, 3, "{}", f.audit_text().await);
    assert!(events.len() >= 6, "{told:?}");
    let mut explained = Vec::new();
    for id in &events {
        let (status, body) = get(&f, &format!("/events/{id}"), &c).await;
        if status == 200 {
            explained.push(body);
        }
    }
    // The path is still told, the credential in it as a mark.
    assert!(
        explained.iter().any(|e| e["what"]
            .as_str()
            .unwrap()
            .contains("contents/[redacted: a valetkey credential]")),
        "{explained:?}"
    );
    let calls: Vec<Value> = events
        .iter()
        .map(|id| json!({ "tool": "explain_refusal", "arguments": { "event_id": id } }))
        .collect();
    let over_mcp = mcp_client(&f, "http", &c, &Value::Array(calls)).await;
    assert!(over_mcp["calls"][0]["answer"]["what"].is_string(), "{over_mcp}");

    let held = f.broker.broker.store().open_approvals().await.unwrap();
    assert_eq!(held.len(), 1, "{told:?}");
    assert!(
        held[0]
            .path
            .ends_with("/heads/[redacted: a GitHub personal access token]")
    );
    let audit = f.audit_text().await;
    let everything = [
        audit.clone(),
        told.join("\n"),
        serde_json::to_string(&explained).unwrap(),
        over_mcp.to_string(),
    ];
    for (what, text) in ["the audit trail", "the answers", "the explanations", "MCP"]
        .iter()
        .zip(&everything)
    {
        let decoded = percent_encoding::percent_decode_str(text).decode_utf8_lossy();
        for secret in [c.as_str(), lower.as_str(), GHP] {
            assert!(!decoded.contains(secret), "{what} holds {secret}: {text}");
        }
        assert_eq!(
            valetkey::credentials::credentials_in(decoded.as_bytes()).count(),
            0,
            "{what}"
        );
    }
}

/// `POST /v1/approvals` (and `/v1/check`) run the proxy's checks before
/// judging: a provider's token in the query string is refused as leaked and
/// recorded, a body past what the broker inspects is refused, and neither
/// is held for approval.
#[tokio::test(flavor = "multi_thread")]
async fn asking_ahead_runs_the_proxys_checks_before_judging() {
    let extra = format!("{APPROVERS}\n[proxy]\nmax_inspected_body_bytes = 2048\n");
    let f = Fixture::start_with(&extra, common::fixture::GITHUB_STAGING).await;
    let percent: String = GHP.bytes().map(|b| format!("%{b:02x}")).collect();
    let sk = format!("sk_live_{}", "a1".repeat(16));
    for path in [
        format!("/v1/items/7?access_token={GHP}"),
        format!("/v1/items/7?x=1&{GHP}"),
        format!("/v1/items/7?t={percent}"),
        format!("/v1/items/7?key={sk}"),
    ] {
        for route in ["/approvals", "/check"] {
            let ask = json!({ "provider": "api", "method": "DELETE", "path": path });
            let (status, body) = post(&f, route, Some(&f.credential), ask).await;
            assert_eq!(
                refusal(status, &body),
                (401, "raw_provider_token"),
                "{route} {path}: {body}"
            );
            assert!(body["event_id"].is_string(), "the leak is recorded: {body}");
        }
    }
    let big = format!(
        "mutation {{ volumeDelete(volumeId: \"vol_scratch\") }} # {}",
        "x".repeat(2048)
    );
    let ask = json!({ "provider": "railway", "graphql": { "query": big } });
    let (status, body) = post(&f, "/approvals", Some(&f.credential), ask).await;
    assert_eq!(refusal(status, &body), (413, "request_too_large"), "{body}");
    assert!(f.broker.broker.store().open_approvals().await.unwrap().is_empty());
    assert!(events_of(&f, "proxy_refused").await.is_empty());
    assert_eq!(events_of(&f, "credential_refused").await.len(), 8);
    assert_eq!((f.api.count(), f.railway.count()), (0, 0));
}

/// `/mcp`'s transport refusals (rmcp's own answers) are problem+json with a
/// stable type, as every refusal an agent sees.
#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_transports_refusals_are_problems() {
    let f = Fixture::start().await;
    let message = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }).to_string();
    let accepting = |accept: &str| {
        f.broker
            .http
            .post(format!("{}/mcp", f.broker.url))
            .bearer_auth(&f.credential)
            .header("Accept", accept)
    };
    let post = || accepting("application/json, text/event-stream");
    let json = |r: reqwest::RequestBuilder| r.header("Content-Type", "application/json");
    let cases = [
        (
            f.broker
                .http
                .get(format!("{}/mcp", f.broker.url))
                .bearer_auth(&f.credential),
            405,
            "method_not_allowed",
        ),
        (
            f.broker
                .http
                .delete(format!("{}/mcp", f.broker.url))
                .bearer_auth(&f.credential),
            405,
            "method_not_allowed",
        ),
        (
            json(accepting("application/json")).body(message.clone()),
            406,
            "not_acceptable",
        ),
        (
            json(post())
                .header("Origin", "https://evil.example")
                .body(message.clone()),
            403,
            "origin_refused",
        ),
        (
            post().header("Content-Type", "text/plain").body(message.clone()),
            415,
            "unsupported_media_type",
        ),
        (json(post()).body(format!("[{message}]")), 415, "malformed_request"),
        (json(post()).body("{\"jsonrpc\": "), 415, "malformed_request"),
        (json(post()).body(" ".repeat(128 * 1024)), 413, "request_too_large"),
    ];
    for (request, status, kind) in cases {
        let (got, body) = f.broker.send(request).await;
        assert_eq!(refusal(got, &body), (status, kind), "{body}");
    }
    let answer = f
        .broker
        .http
        .get(format!("{}/mcp", f.broker.url))
        .bearer_auth(&f.credential)
        .send()
        .await
        .unwrap();
    assert!(answer.headers().get("allow").is_some(), "405 keeps its Allow header");
    // A JSON-RPC answer is left as it is.
    let (status, body) = f.broker.send(json(post()).body(message)).await;
    assert_eq!(status, 200, "{body}");
}

/// An approval is its session's, as its events are: another session of the
/// same agent reads it as unknown, over HTTP and MCP alike, and is told what
/// that means.
#[tokio::test(flavor = "multi_thread")]
async fn another_session_of_the_same_agent_does_not_see_an_approval() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let ask = json!({ "provider": "railway", "graphql": {
        "query": "mutation { volumeDelete(volumeId: \"vol_scratch\") }" } });
    let (status, held) = post(&f, "/approvals", Some(&f.credential), ask).await;
    assert_eq!(status, 200, "{held}");
    let id = held["refusal"]["approval_id"].as_str().unwrap().to_owned();
    let (status, mine) = get(&f, &format!("/approvals/{id}"), &f.credential).await;
    assert_eq!((status, mine["status"].as_str()), (200, Some("pending")), "{mine}");

    let (_, minted) = f.broker.mint(&f.key, json!({ "env": "staging" })).await;
    let other = minted["credential"].as_str().unwrap().to_owned();
    let (status, body) = get(&f, &format!("/approvals/{id}"), &other).await;
    assert_eq!(refusal(status, &body), (404, "approval_unknown"), "{body}");
    let guidance = body["agent_guidance"].as_str().unwrap();
    assert_eq!(
        guidance,
        valetkey::api::next_step("approval_unknown", false),
        "the live answer and the guidance told later agree"
    );
    assert!(!guidance.contains("not a permission problem"), "{guidance}");
    let over_mcp = mcp_client(
        &f,
        "http",
        &other,
        &json!([{ "tool": "approval_status", "arguments": { "approval_id": id } }]),
    )
    .await;
    assert_eq!(over_mcp["calls"][0]["answer"], body, "{over_mcp}");
}

/// Asked ahead, a GraphQL request is held as the broker wrote its body;
/// the answer says exactly what to send, and sending that spends the
/// approval, whatever JSON the agent itself would have written.
#[tokio::test(flavor = "multi_thread")]
async fn the_request_to_send_once_approved_is_in_the_answer_and_spends_it() {
    let f = Fixture::start_with(APPROVERS, common::fixture::GITHUB_STAGING).await;
    let [bob] = team(&f, ["bob"]).await;
    let ask = json!({ "provider": "railway", "graphql": {
        "operationName": "Drop",
        "variables": { "v": "vol_scratch" },
        "query": "mutation Drop($v: String!) { volumeDelete(volumeId: $v) }" } });
    let (status, held) = post(&f, "/approvals", Some(&f.credential), ask).await;
    assert_eq!(status, 200, "{held}");
    let id = held["refusal"]["approval_id"].as_str().unwrap().to_owned();
    let send = &held["send_once_approved"];
    assert_eq!(send["method"], "POST", "{held}");
    assert_eq!(send["url"].as_str().unwrap(), f.url("railway/graphql/v2"));
    let (code, body) = decide(&f, &id, &bob, &bob.code(1), "approve").await;
    assert_eq!(code, 200, "{body}");

    let mut curl = std::process::Command::new("curl");
    curl.args([
        "-sS",
        "-X",
        send["method"].as_str().unwrap(),
        "-H",
        "User-Agent:",
        "-H",
        "Accept:",
    ])
    .args(["-H", &format!("Authorization: Bearer {}", f.credential)])
    .args(["-H", &format!("Valetkey-Approval: {id}")]);
    for (name, value) in send["headers"].as_object().unwrap() {
        curl.args(["-H", &format!("{name}: {}", value.as_str().unwrap())]);
    }
    let sent = curl
        .args(["--data-binary", send["body"].as_str().unwrap()])
        .arg(send["url"].as_str().unwrap())
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert!(
        answer.get("type").is_none(),
        "the approved request was refused: {answer}"
    );
    assert_eq!(f.railway.count(), 1);
    let (_, after) = get(&f, &format!("/approvals/{id}"), &f.credential).await;
    assert_eq!(after["status"], "used", "{after}");
}
