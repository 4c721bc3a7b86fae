//! Every credential mismatch has a name: the agent gets a problem+json that
//! says what was presented and what was expected, nothing reaches the
//! provider that should not, the event is recorded, and ops hear about it on
//! their webhook.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::fixture::*;
use common::upstream::Webhook;
use serde_json::{Value, json};

/// Everything the broker logs in this test binary, at trace level.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn with_webhook(github_token: &str) -> (Fixture, Webhook) {
    captured_log();
    let hook = Webhook::start(0).await;
    let extra = format!("\n[alerts]\nwebhook = \"{}\"\nbackoff = \"10ms\"\n", hook.url);
    (Fixture::start_with(&extra, github_token).await, hook)
}

/// The problem+json an agent reads: exactly these members, the guidance
/// that tells it to stop, and an event id to quote.
fn assert_problem_shape(problem: &Value, extra: &[&str]) {
    let mut keys: Vec<&str> = problem.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = vec![
        "agent_guidance",
        "detail",
        "errors",
        "event_id",
        "message",
        "status",
        "title",
        "type",
    ];
    want.extend_from_slice(extra);
    want.sort_unstable();
    assert_eq!(keys, want, "{problem}");
    // What unmodified tools print (`message`; GraphQL's `errors`) is the
    // whole refusal: its type, detail, event and guidance.
    let message = problem["message"].as_str().unwrap();
    for part in ["type", "detail", "event_id", "agent_guidance"] {
        let said = problem[part].as_str().unwrap().trim_end_matches('.');
        assert!(message.contains(said), "{part}: {message}");
    }
    assert_eq!(problem["errors"], json!([{ "message": message }]));
    // What every mismatch tells an agent: stop; no other credentials; no
    // deleting, recreating or reconfiguring; quote the event id to a human.
    let guidance = problem["agent_guidance"].as_str().unwrap();
    for must in [
        "Stop",
        "other credentials or tokens",
        "delete, recreate or reconfigure",
        "event id",
    ] {
        assert!(guidance.contains(must), "guidance without `{must}`: {guidance}");
    }
}

#[tokio::test]
async fn another_environments_resource_is_a_credential_mismatch() {
    let (f, hook) = with_webhook(GITHUB_STAGING).await;
    let (status, problem) = f
        .graphql(json!({ "query": "{ metrics(volumeId: \"vol_prod_only\", measurements: [DISK_USAGE_GB], startDate: \"2026-11-01T00:00:00Z\") { measurement } }" }))
        .await;
    assert_eq!(refusal(status, &problem), (403, "credential_mismatch"), "{problem}");
    assert_problem_shape(&problem, &["operations"]);
    assert_eq!(
        problem["detail"],
        "query metrics touches volume `vol_prod_only`, which belongs to production, but this credential is for `staging`"
    );
    let guidance = problem["agent_guidance"].as_str().unwrap();
    assert!(guidance.starts_with("Stop."), "{guidance}");
    assert_eq!(f.railway.count(), 0);

    let event_id = problem["event_id"].as_str().unwrap();
    let event = f.event(event_id).await;
    assert_eq!(
        (event["kind"].as_str(), event["refusal"].as_str()),
        (Some("proxy_refused"), Some("credential_mismatch"))
    );
    let alert = hook.alert("credential_mismatch").await;
    assert_eq!(alert["event_id"], event_id);
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.contains("Agent `claude`") && text.contains("vol_prod_only"),
        "{text}"
    );
}

#[tokio::test]
async fn the_incident_is_a_shared_resource_and_ops_hear_of_it() {
    let (f, hook) = with_webhook(GITHUB_STAGING).await;
    let (status, problem) = f
        .graphql(json!({ "query": "mutation { volumeDelete(volumeId: \"vol_db\") }" }))
        .await;
    assert_eq!(refusal(status, &problem), (403, "shared_resource"), "{problem}");
    // No approver is configured here: the refusal says it cannot be approved.
    assert_problem_shape(&problem, &["operations", "approval_unavailable"]);
    assert_eq!(f.railway.count(), 0);
    let alert = hook.alert("shared_resource").await;
    assert_eq!(alert["event_id"], problem["event_id"]);
    assert_eq!(
        alert["detail"]["operations"][0]["resources"][0]["owners"],
        json!(["staging", "production"])
    );
}

#[tokio::test]
async fn an_expired_credential_is_named_with_how_to_get_a_new_one() {
    let (f, hook) = with_webhook(GITHUB_STAGING).await;
    let kid = common::header(&f.credential)["kid"].as_str().unwrap().to_owned();
    let mut claims = common::claims(&f.credential);
    claims["exp"] = json!(claims["iat"].as_u64().unwrap() - 1);
    claims["nbf"] = json!(claims["iat"].as_u64().unwrap() - 60);
    let expired = (f.broker.forger(&kid).await)(json!({ "alg": "EdDSA", "kid": kid, "typ": "JWT" }), claims.clone());

    let (status, problem) = f.get("github/repos/acme/api/contents/README.md", &expired).await;
    assert_eq!(refusal(status, &problem), (401, "credential_expired"), "{problem}");
    assert_problem_shape(&problem, &["env", "expired_at", "lease_id"]);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("agent `claude` for `staging`") && detail.contains("expired at"),
        "{detail}"
    );
    assert_eq!(problem["lease_id"], claims["jti"]);
    let guidance = problem["agent_guidance"].as_str().unwrap();
    assert!(guidance.contains("valetkey run") && guidance.contains("do not look for other credentials"));
    assert_eq!(f.github.count(), 0);

    let event = f.event(problem["event_id"].as_str().unwrap()).await;
    assert_eq!(event["kind"], "credential_refused");
    assert_eq!(event["refusal"], "credential_expired");
    assert_eq!(event["route"], "/p/github");
    let alert = hook.alert("credential_expired").await;
    assert_eq!(alert["event_id"], problem["event_id"]);
}

#[tokio::test]
async fn a_revoked_credential_is_named_recorded_and_alerted() {
    let (f, hook) = with_webhook(GITHUB_STAGING).await;
    let sid = common::claims(&f.credential)["sid"].as_str().unwrap().to_owned();
    let resp = f
        .broker
        .http
        .delete(format!("{}/v1/sessions/{sid}", f.broker.url))
        .bearer_auth(&f.broker.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let (status, problem) = f.graphql(json!({ "query": "{ me { name } }" })).await;
    assert_eq!(refusal(status, &problem), (401, "credential_revoked"), "{problem}");
    assert_problem_shape(&problem, &["env", "lease_id"]);
    assert!(problem["detail"].as_str().unwrap().contains(&sid));
    assert_eq!(f.railway.count(), 0);
    let event = f.event(problem["event_id"].as_str().unwrap()).await;
    assert_eq!(event["refusal"], "credential_revoked");
    hook.alert("credential_revoked").await;
}

#[tokio::test]
async fn a_real_provider_token_is_refused_never_forwarded_and_never_written_down() {
    const LEAKED: &str = "ghp_R3alLookingPersonalAccessToken0123456789";
    const ANOTHER: &str =
        "github_pat_11AAAAAAA0SecondLeaked_TokenForOrderingTheAlertsOfTwoLeaks0123456789abcdefghijklmn";
    let (f, hook) = with_webhook(GITHUB_STAGING).await;
    let send = async |token: &str| {
        f.broker
            .send(
                f.broker
                    .http
                    .get(f.url("github/repos/acme/api/contents/README.md"))
                    .header("authorization", format!("token {token}")),
            )
            .await
    };

    let (status, problem) = send(LEAKED).await;
    assert_eq!(refusal(status, &problem), (401, "raw_provider_token"), "{problem}");
    assert_problem_shape(&problem, &[]);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("a GitHub personal access token")
    );
    assert!(
        problem["agent_guidance"]
            .as_str()
            .unwrap()
            .contains("Never use provider tokens")
    );
    let event = f.event(problem["event_id"].as_str().unwrap()).await;
    assert_eq!(event["refusal"], "raw_provider_token");
    let fingerprint = event["fingerprint"].as_str().unwrap().to_owned();
    assert!(fingerprint.starts_with("hmac-sha256:"));

    // The same token again is one alert; the next token's alert follows it
    // in the queue, so by then a second alert for the first would be there.
    let (_, again) = send(LEAKED).await;
    assert_eq!(again["type"], "raw_provider_token");
    // Beside a valid credential, or in the query string, it is the same leak.
    let beside = f
        .broker
        .http
        .get(f.url("github/repos/acme/api/contents/README.md"))
        .bearer_auth(&f.credential)
        .header("project-access-token", LEAKED);
    let in_query = f
        .broker
        .http
        .get(f.url(&format!(
            "github/repos/acme/api/contents/README.md?access_token={LEAKED}"
        )))
        .bearer_auth(&f.credential);
    for request in [beside, in_query] {
        let (status, problem) = f.broker.send(request).await;
        assert_eq!(refusal(status, &problem), (401, "raw_provider_token"), "{problem}");
    }
    let (_, other) = send(ANOTHER).await;
    assert!(other["detail"].as_str().unwrap().contains("fine-grained"));
    let second = hook.alert("raw_provider_token").await;
    assert!(second["text"].as_str().unwrap().contains(&fingerprint));
    common::eventually("the second token's alert arrives", async || {
        hook.received()
            .iter()
            .filter(|a| a["kind"] == "raw_provider_token")
            .count()
            >= 2
    })
    .await;
    let alerts = hook.received();
    let raw: Vec<&Value> = alerts.iter().filter(|a| a["kind"] == "raw_provider_token").collect();
    assert_eq!(raw.len(), 2, "identical alerts were not collapsed: {raw:#?}");
    assert_ne!(raw[0]["detail"]["fingerprint"], raw[1]["detail"]["fingerprint"]);

    assert_eq!(f.github.count(), 0, "a raw token reached GitHub");
    let log = String::from_utf8_lossy(&captured_log().lock().unwrap()).into_owned();
    assert!(
        log.contains(&fingerprint),
        "the alert log line is not in the captured log"
    );
    for token in [LEAKED, ANOTHER] {
        assert!(!log.contains(token), "a raw token is in the log");
        assert!(
            !f.audit_text().await.contains(token),
            "a raw token is in the audit trail"
        );
        assert!(
            !serde_json::to_string(&alerts).unwrap().contains(token),
            "a raw token is in an alert"
        );
    }
}

#[tokio::test]
async fn a_rejected_real_token_is_the_operators_problem_not_the_agents() {
    let (f, hook) = with_webhook("ghs_revokedByGitHubLongAgo").await;
    let (status, problem) = f.get("github/repos/acme/api/contents/README.md", &f.credential).await;
    assert_eq!(
        refusal(status, &problem),
        (502, "upstream_credential_mismatch"),
        "{problem}"
    );
    assert_problem_shape(&problem, &[]);
    assert_eq!(
        problem["detail"],
        "provider `github` rejected the broker's own token for `staging` (HTTP 401): the broker's configuration is wrong, not your request"
    );
    let guidance = problem["agent_guidance"].as_str().unwrap();
    assert!(
        guidance.contains("operator problem") && guidance.contains("wait"),
        "{guidance}"
    );
    assert!(
        !problem.to_string().contains("Bad credentials"),
        "the upstream's answer reached the agent"
    );

    // The request was allowed and sent once, with the broker's (wrong) token.
    let received = f.github.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("authorization"),
        Some("Bearer ghs_revokedByGitHubLongAgo")
    );

    let event = f.event(problem["event_id"].as_str().unwrap()).await;
    assert_eq!(event["kind"], "upstream_credential_mismatch");
    assert_eq!(event["upstream_status"], 401);
    let alert = hook.alert("upstream_credential_mismatch").await;
    assert_eq!(alert["detail"]["provider"], "github");
    assert_eq!(alert["detail"]["upstream_status"], 401);
    assert!(alert["text"].as_str().unwrap().contains("for `staging` with HTTP 401"));
    assert!(!alert.to_string().contains("ghs_revokedByGitHubLongAgo"));
}

#[tokio::test]
async fn alerts_are_retried_until_the_webhook_takes_them() {
    captured_log();
    let hook = Webhook::start(2).await;
    let extra = format!("\n[alerts]\nwebhook = \"{}\"\nbackoff = \"10ms\"\n", hook.url);
    let f = Fixture::start_with(&extra, GITHUB_STAGING).await;
    let (_, problem) = f
        .graphql(json!({ "query": "mutation { volumeDelete(volumeId: \"vol_db\") }" }))
        .await;
    let alert = hook.alert("shared_resource").await;
    assert_eq!(alert["event_id"], problem["event_id"]);
}

/// An upstream that reflects the request's `Authorization` (in a response
/// header, and all through a 2 MiB body streamed in chunks that split the
/// copies) hands the agent the real token unless the broker overwrites it:
/// raw, inside `Basic` base64, percent-encoded in every way. An answer the
/// upstream encodes anyway, however it spells the encoding, is not passed on.
#[tokio::test]
async fn a_real_token_echoed_by_the_upstream_never_reaches_the_agent() {
    use base64::Engine;
    let (f, hook) = with_webhook(GITHUB_STAGING).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{API_STAGING}"));
    let response = f
        .broker
        .http
        .get(f.url("api/v1/reflect/7"))
        .bearer_auth(&f.credential)
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.headers()["x-debug-authorization"].to_str().unwrap().to_owned();
    assert_eq!(echoed.len(), format!("Bearer {API_STAGING}").len(), "{echoed}");
    assert!(echoed.starts_with("Bearer REDACTED"), "{echoed}");
    let echoed_basic = response.headers()["x-debug-basic"].to_str().unwrap().to_owned();
    assert!(!echoed_basic.contains(&basic[12..basic.len() - 4]), "{echoed_basic}");
    let declared = response.content_length();
    let body = response.bytes().await.unwrap();
    assert_eq!(declared, Some(body.len() as u64), "Content-Length no longer true");
    assert!(body.len() >= common::upstream::REFLECT_BYTES, "{} bytes", body.len());
    // Every spelling the stand-in used, decoded back: none is the token.
    let text = String::from_utf8_lossy(&body);
    let decoded = String::from_utf8_lossy(&percent_encoding::percent_decode(&body).collect::<Vec<u8>>()).into_owned();
    for (name, haystack) in [("as sent", &*text), ("percent-decoded", decoded.as_str())] {
        assert!(!haystack.contains(API_STAGING), "the token reached the agent ({name})");
        assert!(
            !haystack.contains(&basic[12..basic.len() - 4]),
            "the Basic value reached the agent ({name})"
        );
    }
    assert!(text.matches("REDACTED").count() > 1000);
    assert_eq!(f.api.received()[0].header("accept-encoding"), Some("identity"));

    // Encoded whatever was asked: refused, and nothing of the body passed on.
    for mode in ["gzip", "double", "identity-gzip", "hidden"] {
        let (status, problem) = f.get(&format!("api/v1/reflect/7?mode={mode}"), &f.credential).await;
        assert_eq!(
            refusal(status, &problem),
            (502, "upstream_unreadable"),
            "{mode}: {problem}"
        );
    }

    let alert = hook.alert("token_echoed").await;
    let event = f.event(alert["event_id"].as_str().unwrap()).await;
    assert_eq!(event["kind"], "token_echoed");
    assert_eq!(event["provider"], "api");
    assert!(event["fingerprints"][0].as_str().unwrap().starts_with("hmac-sha256:"));
    let audit = f.audit_text().await;
    assert!(!audit.contains(API_STAGING) && !audit.contains(&basic));
    assert!(!String::from_utf8_lossy(&captured_log().lock().unwrap()).contains(API_STAGING));
}

/// Junk where the credential belongs is counted, never recorded; tokens
/// that look leaked are recorded and alerted only up to the client's bucket;
/// and a real agent on the same address keeps working throughout.
#[tokio::test]
async fn a_flood_of_junk_costs_bounded_rows_and_alerts_and_locks_out_nobody() {
    use futures_util::StreamExt;
    let (f, hook) = with_webhook(GITHUB_STAGING).await;
    let rows = || async {
        f.broker
            .row_counts()
            .await
            .into_iter()
            .find(|(t, _)| *t == "audit_events")
            .unwrap()
            .1
    };
    let before = rows().await;
    let started = std::time::Instant::now();
    const FLOOD: usize = 10_000;
    let answers: Vec<(usize, u16, String)> = futures_util::stream::iter(0..FLOOD)
        .map(|i| {
            let f = &f;
            async move {
                let token = match i % 2 {
                    0 => format!("junk-value-{i}-{}", i * 7919),
                    _ => format!("ghp_{:0>36}", i * 104_729),
                };
                let (status, body) = f.get("github/repos/acme/api/issues", &token).await;
                let kind = body["type"].as_str().unwrap_or_default().to_owned();
                // Every hundredth request, the real agent.
                if i % 100 == 0 {
                    let (status, body) = f.get("github/repos/acme/api/issues", &f.credential).await;
                    assert_eq!(status, 200, "the agent was locked out after {i}: {body}");
                }
                (i, status, kind)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    for (i, status, kind) in &answers {
        match i % 2 {
            0 => assert_eq!((*status, kind.as_str()), (401, "credential_malformed"), "{i}"),
            _ => assert!(
                matches!(
                    (*status, kind.as_str()),
                    (401, "raw_provider_token") | (429, "rate_limited")
                ),
                "{i}: {status} {kind}"
            ),
        }
    }
    let limited = answers.iter().filter(|(_, s, _)| *s == 429).count();
    assert!(limited > 4000, "only {limited} refusals were rate-limited");

    // The allowed requests of the agent are recorded too; the flood may add
    // a burst and then two a second.
    let agent_requests = (FLOOD / 100) as i64;
    let bound = 20 + (2.0 * elapsed).ceil() as i64 + 1;
    let added = rows().await - before - agent_requests;
    assert!(
        added <= bound,
        "the flood wrote {added} events in {elapsed:.1}s (bound {bound})"
    );
    assert!(added >= 20, "leaked-looking tokens were not recorded at all ({added})");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let alerts = hook
        .received()
        .iter()
        .filter(|a| a["kind"] == "raw_provider_token")
        .count() as i64;
    assert!(alerts <= bound, "{alerts} alerts (bound {bound})");

    let (_, ready) = f
        .broker
        .send(
            f.broker
                .http
                .get(format!("{}/readyz", f.broker.url))
                .bearer_auth(&f.broker.admin_key),
        )
        .await;
    assert!(
        ready["refused_unauthenticated"].as_u64().unwrap() >= FLOOD as u64,
        "{ready}"
    );
    assert_eq!(
        f.github.count(),
        FLOOD / 100,
        "only the agent's requests reached GitHub"
    );
}
