//! The broker over HTTP: mint → verify → revoke → refuse, scope stripping,
//! TTL clamping, protected environments, key rotation, forged credentials
//! and bad input — against a real server and a real SQLite file.

mod common;

use std::time::SystemTime;

use common::{TestBroker, claims, header};
use serde_json::json;
use valetkey::admin::{self, Actor};
use valetkey::store::RevokeTarget;

#[tokio::test]
async fn mint_verify_revoke_refuse() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let (status, minted) = t.mint(&key, json!({ "agent": "claude", "env": "staging" })).await;
    assert_eq!(status, 201, "{minted}");
    let credential = minted["credential"].as_str().unwrap();
    assert!(credential.starts_with("vk1."));
    assert_eq!(header(credential)["alg"], "EdDSA");
    let c = claims(credential);
    for claim in ["iss", "aud", "sub", "env", "grants", "exp", "iat", "nbf", "jti", "sid"] {
        assert!(c.get(claim).is_some(), "claim {claim} missing: {c}");
    }
    assert_eq!(c["sub"], "claude");
    assert_eq!(c["jti"], minted["lease_id"]);
    assert_eq!(minted["env_vars"]["VALETKEY_CREDENTIAL"], credential);
    assert_eq!(minted["env_vars"]["RAILWAY_API_TOKEN"], credential);
    assert_eq!(
        minted["env_vars"]["RAILWAY_GRAPHQL_URL"],
        format!("{}/p/railway/graphql/v2", t.url)
    );

    let (status, me) = t.whoami(credential).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["agent"], "claude");
    assert_eq!(me["env"], "staging");
    let railway: Vec<&str> = me["grants"]["railway"]["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scope"].as_str().unwrap())
        .collect();
    assert_eq!(railway, ["deployment:deploy", "read", "variable:write"]);

    // The agent's launcher ends its session: the next request is refused.
    let sid = minted["session_id"].as_str().unwrap();
    let (status, ended) = t
        .send(t.http.delete(format!("{}/v1/sessions/{sid}", t.url)).bearer_auth(&key))
        .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["revoked_leases"], json!([minted["lease_id"]]));
    let (status, refused) = t.whoami(credential).await;
    assert_eq!((status, refused["type"].as_str()), (401, Some("credential_revoked")));
    assert_eq!(refused["lease_id"], minted["lease_id"]);

    // A revocation written to the store by another broker on it is
    // followed by the broker within its sync interval.
    let (_, second) = t.mint(&key, json!({ "env": "staging" })).await;
    let credential = second["credential"].as_str().unwrap();
    assert_eq!(t.whoami(credential).await.0, 200);
    let other_process = valetkey::store::SqliteStore::open_in(&t.data_dir()).await.unwrap();
    let lease = second["lease_id"].as_str().unwrap().to_owned();
    admin::revoke(
        &other_process,
        &RevokeTarget::Lease(lease),
        &Actor::admin("alice"),
        SystemTime::now(),
    )
    .await
    .unwrap();
    common::eventually("revocation never reached the broker", async || {
        t.whoami(credential).await.1["type"] == "credential_revoked"
    })
    .await;

    // Every step is in the audit trail, and the chain holds.
    let events = t.broker.store().audit_events().await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["agent_added", "mint", "revoke"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    assert_eq!(valetkey::audit::verify(&events, &[], |_| false).broken, None);
    t.stop().await;
}

#[tokio::test]
async fn destructive_scopes_are_stripped_and_explained() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let (status, minted) = t
        .mint(
            &key,
            json!({ "env": "staging", "providers": ["railway"], "scopes": ["read", "volume:delete", "backup:delete", "variable:write"] }),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["grants"], json!({ "railway": ["read", "variable:write"] }));
    assert_eq!(
        claims(minted["credential"].as_str().unwrap())["grants"],
        json!({ "railway": ["read", "variable:write"] })
    );
    let stripped: Vec<(String, String)> = minted["stripped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(
                s["why"]
                    .as_str()
                    .unwrap()
                    .contains("never placed in an agent credential")
            );
            (
                s["scope"].as_str().unwrap().into(),
                s["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        stripped,
        [
            ("backup:delete".to_owned(), "catastrophic".to_owned()),
            ("volume:delete".to_owned(), "destructive".to_owned())
        ]
    );

    // Asking for nothing but destructive scopes gets a refusal, not an empty credential.
    let before = t.row_counts().await;
    let (status, refused) = t
        .mint(&key, json!({ "env": "staging", "scopes": ["volume:delete"] }))
        .await;
    assert_eq!((status, refused["type"].as_str()), (403, Some("nothing_grantable")));
    assert!(refused["event_id"].is_string());
    // It names what was asked and why each was stripped.
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("asked for (volume:delete)")
            && detail.contains("`volume:delete` (destructive scopes are never"),
        "{detail}"
    );
    let after = t.row_counts().await;
    assert_eq!(
        after.iter().find(|(t, _)| *t == "leases"),
        before.iter().find(|(t, _)| *t == "leases")
    );
    t.stop().await;
}

#[tokio::test]
async fn ttl_is_clamped_to_grant_and_server_maximums() {
    let t = TestBroker::start().await;
    let claude = t.add_agent("claude").await;
    let oncall = t.add_agent("oncall").await;
    let cases = [
        // (key, env, providers, ttl asked, expected seconds, limited by)
        (&claude, "staging", json!(["railway"]), json!(null), 900, json!(null)),
        (&claude, "staging", json!(["railway"]), json!(60), 60, json!(null)),
        (
            &claude,
            "staging",
            json!(["railway"]),
            json!("2h"),
            1800,
            json!({ "by": "grant_max", "provider": "railway" }),
        ),
        (
            &claude,
            "staging",
            json!(["github"]),
            json!("2h"),
            3600,
            json!({ "by": "server_max" }),
        ),
        (
            &oncall,
            "production",
            json!(["railway"]),
            json!(null),
            600,
            json!({ "by": "grant_max", "provider": "railway" }),
        ),
    ];
    for (key, env, providers, ttl, want, limit) in cases {
        let mut body = json!({ "env": env, "providers": providers });
        if !ttl.is_null() {
            body["ttl"] = ttl.clone();
        }
        let (status, minted) = t.mint(key, body).await;
        assert_eq!(status, 201, "{minted}");
        assert_eq!(minted["expires_in"], want, "{env} {ttl}");
        assert_eq!(minted["ttl_limited_by"], limit, "{env} {ttl}");
        let c = claims(minted["credential"].as_str().unwrap());
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), want);
    }
    t.stop().await;
}

#[tokio::test]
async fn protected_environments_need_an_explicit_grant() {
    let t = TestBroker::start().await;
    let claude = t.add_agent("claude").await;
    let oncall = t.add_agent("oncall").await;
    let (status, refused) = t.mint(&claude, json!({ "env": "production" })).await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (403, Some("protected_environment")),
        "{refused}"
    );
    assert!(refused["event_id"].is_string());
    // The words an agent reads are part of the guardrail: any change to them is reviewed.
    let id = refused["event_id"].as_str().unwrap().to_owned();
    let without_id = move |value: insta::internals::Content, _: insta::internals::ContentPath<'_>| {
        value.as_str().unwrap_or_default().replace(&id, "[event id]")
    };
    insta::assert_json_snapshot!("protected_environment", refused, {
        ".event_id" => "[event id]",
        ".message" => insta::dynamic_redaction(without_id.clone()),
        ".errors[].message" => insta::dynamic_redaction(without_id),
    });
    let events = t.broker.store().audit_events().await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.id.as_str()),
        ("mint_refused", refused["event_id"].as_str().unwrap())
    );

    let (status, minted) = t.mint(&oncall, json!({ "env": "production" })).await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["grants"], json!({ "railway": ["read"] }));

    // A launcher key cannot be used to launch another agent.
    let (status, refused) = t.mint(&oncall, json!({ "agent": "claude", "env": "production" })).await;
    assert_eq!((status, refused["type"].as_str()), (403, Some("agent_mismatch")));
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("agent `oncall`'s") && detail.contains("use its own launcher key"),
        "{detail}"
    );
    // A typo of the key's own agent is told the right name.
    let (status, refused) = t.mint(&oncall, json!({ "agent": "oncal", "env": "production" })).await;
    assert_eq!((status, refused["type"].as_str()), (403, Some("agent_mismatch")));
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("did you mean `oncall`?") && detail.contains("leave --agent out"),
        "{detail}"
    );
    t.stop().await;
}

#[tokio::test]
async fn rotated_keys_keep_verifying_what_they_signed() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let (_, before) = t.mint(&key, json!({ "env": "staging" })).await;
    let old = before["credential"].as_str().unwrap().to_owned();
    let old_kid = header(&old)["kid"].as_str().unwrap().to_owned();

    let (status, rotated) = t
        .send(
            t.http
                .post(format!("{}/v1/keys/rotate", t.url))
                .bearer_auth(&t.admin_key),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_kid = rotated["active_kid"].as_str().unwrap();
    assert_ne!(new_kid, old_kid);

    let (_, after) = t.mint(&key, json!({ "env": "staging" })).await;
    assert_eq!(header(after["credential"].as_str().unwrap())["kid"], new_kid);
    assert_eq!(t.whoami(&old).await.0, 200, "the old key stopped verifying");
    assert_eq!(t.whoami(after["credential"].as_str().unwrap()).await.0, 200);

    let (_, jwks) = t.send(t.http.get(format!("{}/.well-known/jwks.json", t.url))).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&new_kid) && kids.contains(&old_kid.as_str()), "{jwks}");
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["crv"] == "Ed25519" && k.get("d").is_none())
    );

    // Rotation needs the admin key.
    let (status, refused) = t
        .send(t.http.post(format!("{}/v1/keys/rotate", t.url)).bearer_auth(&key))
        .await;
    assert_eq!((status, refused["type"].as_str()), (401, Some("admin_key_invalid")));
    t.stop().await;
}

#[tokio::test]
async fn forged_credentials_are_refused_each_by_name() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let (_, minted) = t.mint(&key, json!({ "env": "staging" })).await;
    let real = minted["credential"].as_str().unwrap();
    let good = claims(real);
    let kid = header(real)["kid"].as_str().unwrap().to_owned();

    // Sign with the broker's own key, as someone who stole it could.
    let forge = t.forger(&kid).await;
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let head = json!({ "alg": "EdDSA", "kid": kid });
    let exp = good["exp"].as_i64().unwrap();

    let cases = vec![
        (
            "alg none",
            format!("vk1.{}.{}.", b64(&json!({ "alg": "none", "kid": kid })), b64(&good)),
            "credential_algorithm_rejected",
        ),
        (
            "alg NoNe",
            format!("vk1.{}.{}.", b64(&json!({ "alg": "NoNe", "kid": kid })), b64(&good)),
            "credential_algorithm_rejected",
        ),
        (
            "unknown kid",
            forge(json!({ "alg": "EdDSA", "kid": "not-a-key" }), good.clone()),
            "credential_unknown_key",
        ),
        (
            "string exp",
            forge(head.clone(), with("exp", json!(exp.to_string()))),
            "credential_claims_invalid",
        ),
        (
            "wrong audience",
            forge(head.clone(), with("aud", json!("elsewhere"))),
            "credential_wrong_audience",
        ),
        (
            "expired",
            forge(head.clone(), with("exp", json!(1_000_000_000))),
            "credential_expired",
        ),
        (
            "not a credential",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyz".to_owned(),
            "raw_provider_token",
        ),
        ("vk1. and nothing after", "vk1.".to_owned(), "credential_malformed"),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (name, token, want) in cases {
        let (status, body) = t.whoami(&token).await;
        assert_eq!((status, body["type"].as_str()), (401, Some(want)), "{name}: {body}");
        seen.insert(want);
    }
    assert_eq!(
        seen.len(),
        7,
        "each negative case has its own type (both alg cases share one)"
    );
    let (status, body) = t.send(t.http.get(format!("{}/v1/whoami", t.url))).await;
    assert_eq!((status, body["type"].as_str()), (401, Some("credential_missing")));
    t.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_problem_and_changes_nothing() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let url = format!("{}/v1/credentials", t.url);
    let before = t.row_counts().await;

    let cases = vec![
        (
            "malformed JSON",
            t.http
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body("{\"env\": "),
            400,
            "malformed_request",
        ),
        (
            "wrong content type",
            t.http
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "text/plain")
                .body("{\"env\":\"staging\"}"),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            t.http
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(format!("{{\"env\":\"{}\"}}", "x".repeat(200_000))),
            413,
            "body_too_large",
        ),
        (
            "unknown field",
            t.http
                .post(&url)
                .bearer_auth(&key)
                .json(&json!({ "env": "staging", "admin": true })),
            422,
            "invalid_request",
        ),
        (
            "bad ttl",
            t.http
                .post(&url)
                .bearer_auth(&key)
                .json(&json!({ "env": "staging", "ttl": "soon" })),
            422,
            "invalid_request",
        ),
        (
            "unknown agent",
            t.http
                .post(&url)
                .bearer_auth("vkl_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                .json(&json!({ "env": "staging" })),
            401,
            "launcher_key_invalid",
        ),
        (
            "no key",
            t.http.post(&url).json(&json!({ "env": "staging" })),
            401,
            "credential_missing",
        ),
        (
            "unknown path",
            t.http.get(format!("{}/v2/nothing", t.url)),
            404,
            "not_found",
        ),
    ];
    for (name, req, want_status, want_type) in cases {
        let (status, body) = t.send(req).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (want_status, Some(want_type)),
            "{name}: {body}"
        );
    }
    assert_eq!(t.row_counts().await, before, "bad input changed the store");
    t.stop().await;
}

/// Readiness answers anyone a bare status, its detail only to an admin;
/// a real token that did not load makes it `degraded` (and `status` exit
/// non-zero); a store that takes no write makes it not ready.
#[tokio::test]
async fn health_and_readiness() {
    let env = [("GITHUB_STAGING_TOKEN".to_owned(), "ghp_from_env".to_owned())].into();
    let t = TestBroker::start_with(common::CONFIG, env).await;
    let launcher = t.add_agent("claude").await;
    let (status, body) = t.send(t.http.get(format!("{}/healthz", t.url))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let readyz = format!("{}/readyz", t.url);

    // Anyone: the status, nothing else. Railway's staging token is stored
    // nowhere yet, so the broker serves, degraded.
    let (status, body) = t.send(t.http.get(&readyz)).await;
    assert_eq!((status, &body), (200, &json!({ "status": "degraded" })));
    let (status, body) = t.send(t.http.get(&readyz).bearer_auth(&launcher)).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (401, Some("admin_key_invalid")),
        "{body}"
    );

    // An admin: the detail.
    let (status, body) = t.send(t.http.get(&readyz).bearer_auth(&t.admin_key)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")), "{body}");
    assert_eq!(body["store"], "ok");
    assert!(body["active_kid"].is_string());
    let tokens = body["provider_tokens"].as_array().unwrap();
    let github = tokens.iter().find(|t| t["provider"] == "github").unwrap();
    assert_eq!(github["problem"], json!(null), "{github}");
    let railway = tokens
        .iter()
        .find(|t| t["provider"] == "railway" && t["env"] == "staging")
        .unwrap();
    assert!(
        railway["problem"]
            .as_str()
            .unwrap()
            .contains("valetkey secret set railway-staging")
    );
    assert!(!body.to_string().contains("ghp_from_env"));
    let status_cli = || {
        let mut cmd = common::admin_cli(&t.url, &t.data_dir().join("admin.key"));
        cmd.arg("status");
        cmd
    };
    let out = tokio::task::spawn_blocking({
        let mut cmd = status_cli();
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "degraded is not a clean bill: {text}");
    assert!(text.contains("degraded") && text.contains("NOT LOADED"), "{text}");

    // The store stops taking writes: not ready, within the probe's second.
    let pool = t.db().await;
    sqlx::query("CREATE TRIGGER probe_fails BEFORE UPDATE ON store_probe BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    common::eventually("readiness sees the store refuse writes", async || {
        let resp = t.http.get(&readyz).send().await.unwrap();
        resp.status() == 503 && resp.json::<serde_json::Value>().await.unwrap()["status"] == "not_ready"
    })
    .await;
    let resp = t.http.get(&readyz).bearer_auth(&t.admin_key).send().await.unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["store"].as_str().unwrap().contains("disk full"), "{body}");
    t.stop().await;
}

#[tokio::test]
async fn admin_api_manages_agents_and_revocations() {
    let t = TestBroker::start().await;
    let agents = format!("{}/v1/agents", t.url);

    let (status, refused) = t.send(t.http.post(&agents).json(&json!({ "name": "claude" }))).await;
    assert_eq!((status, refused["type"].as_str()), (401, Some("credential_missing")));
    let (status, refused) = t
        .send(
            t.http
                .post(&agents)
                .bearer_auth(&t.admin_key)
                .json(&json!({ "name": "stranger" })),
        )
        .await;
    assert_eq!((status, refused["type"].as_str()), (422, Some("agent_not_configured")));

    let (status, added) = t
        .send(
            t.http
                .post(&agents)
                .bearer_auth(&t.admin_key)
                .json(&json!({ "name": "claude" })),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    let key = added["launcher_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("vkl_"));
    let (status, again) = t
        .send(
            t.http
                .post(&agents)
                .bearer_auth(&t.admin_key)
                .json(&json!({ "name": "claude" })),
        )
        .await;
    assert_eq!((status, again["type"].as_str()), (409, Some("agent_exists")));

    let (status, listed) = t.send(t.http.get(&agents).bearer_auth(&t.admin_key)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["agents"][0]["name"], "claude");
    assert!(
        !listed.to_string().contains(&key),
        "the launcher key is shown once only"
    );

    let (_, a) = t.mint(&key, json!({ "env": "staging" })).await;
    let (_, b) = t.mint(&key, json!({ "env": "dev" })).await;
    let (status, revoked) = t
        .send(
            t.http
                .post(format!("{}/v1/revocations", t.url))
                .bearer_auth(&t.admin_key)
                .json(&json!({ "agent": "claude" })),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked_leases"].as_array().unwrap().len(), 2);
    for minted in [&a, &b] {
        let (status, body) = t.whoami(minted["credential"].as_str().unwrap()).await;
        assert_eq!((status, body["type"].as_str()), (401, Some("credential_revoked")));
    }

    let (_, c) = t.mint(&key, json!({ "env": "staging" })).await;
    let (status, removed) = t
        .send(t.http.delete(format!("{agents}/claude")).bearer_auth(&t.admin_key))
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["revoked_leases"], json!([c["lease_id"]]));
    let (status, refused) = t.mint(&key, json!({ "env": "staging" })).await;
    assert_eq!((status, refused["type"].as_str()), (401, Some("launcher_key_invalid")));
    t.stop().await;
}

#[tokio::test]
async fn a_rotation_made_by_another_broker_reaches_this_one() {
    let t = TestBroker::start().await;
    let key = t.add_agent("claude").await;
    let (_, before) = t.mint(&key, json!({ "env": "staging" })).await;
    let old_kid = header(before["credential"].as_str().unwrap())["kid"].clone();

    let other_process = valetkey::store::SqliteStore::open_in(&t.data_dir()).await.unwrap();
    let master = t.master_key();
    let new_kid = admin::rotate_signing_key(&other_process, &master, &Actor::admin("alice"), SystemTime::now())
        .await
        .unwrap();

    common::eventually("the broker never loaded the new key", async || {
        let (_, minted) = t.mint(&key, json!({ "env": "staging" })).await;
        header(minted["credential"].as_str().unwrap())["kid"] == new_kid.as_str()
    })
    .await;
    assert_ne!(old_kid, new_kid.as_str());
    assert_eq!(t.whoami(before["credential"].as_str().unwrap()).await.0, 200);
    t.stop().await;
}

/// Hostile clients against the real binary: idle sockets and slowloris
/// heads are closed after `header_read_timeout`, a dribbled body after
/// `body_read_timeout`, connections beyond the per-client cap are answered
/// 503 and closed, and all the while a legitimate request is served.
#[tokio::test]
async fn slow_and_idle_sockets_are_closed_and_a_real_request_is_still_served() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valetkey.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[server]\nheader_read_timeout = \"1s\"\nidle_timeout = \"3s\"\nbody_read_timeout = \"2s\"\n",
            common::CONFIG
        ),
    )
    .unwrap();
    let served = common::serve(dir.path(), &config, &[]);
    let addr = served.url.strip_prefix("http://").unwrap().to_owned();
    let connect = || {
        let s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let healthz = |addr: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    /// Seconds until the server closes the socket (read gives EOF or an error).
    fn closed_after(mut s: TcpStream, since: Instant) -> f64 {
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return since.elapsed().as_secs_f64(),
                Ok(_) => continue,
            }
        }
    }

    let start = Instant::now();
    // 200 idle sockets and 20 that send a head one byte at a time.
    let idle: Vec<TcpStream> = (0..200).map(|_| connect()).collect();
    let slow: Vec<TcpStream> = (0..20).map(|_| connect()).collect();
    let dribble = {
        let mut slow: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaa" {
                for s in &mut slow {
                    let _ = s.write_all(&[*byte]);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // A body dribbled after its head (with a bearer, so the body is read:
    // without one the request is refused before it is).
    let mut body = connect();
    body.write_all(
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
    )
    .unwrap();
    let body_writer = {
        let mut body = body.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..40 {
                if body.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // A legitimate request is served meanwhile.
    assert!(
        healthz(&addr).starts_with("HTTP/1.1 200"),
        "not served beside the hostile sockets"
    );

    let idle_closed: Vec<f64> = idle.into_iter().map(|s| closed_after(s, start)).collect();
    let slow_closed: Vec<f64> = slow.into_iter().map(|s| closed_after(s, start)).collect();
    let body_closed = closed_after(body, start);
    for t in idle_closed.iter().chain(&slow_closed) {
        assert!(*t < 6.0, "a socket without a whole head stayed open {t:.1}s");
    }
    assert!(
        slow_closed.iter().all(|t| *t >= 0.9),
        "closed before the timeout: {slow_closed:?}"
    );
    assert!(
        (1.5..6.0).contains(&body_closed),
        "the dribbled body stayed {body_closed:.1}s"
    );
    dribble.join().unwrap();
    body_writer.join().unwrap();

    served.stop();

    // At the per-client cap (every loopback address is one client) the
    // longest-idle connection makes room: idle sockets cannot keep an agent
    // out. A broker whose heads and bodies may take long, so that nothing
    // held times out on its own.
    std::fs::write(
        &config,
        format!(
            "{}\n[server]\nheader_read_timeout = \"60s\"\nbody_read_timeout = \"60s\"\nmax_connections_per_local_client = 50\n",
            common::CONFIG
        ),
    )
    .unwrap();
    let served = common::serve(dir.path(), &config, &[]);
    let addr = served.url.strip_prefix("http://").unwrap().to_owned();
    // A socket from one of this host's loopback addresses.
    let loopback = |host: &str| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let from: std::net::SocketAddr = format!("{host}:0").parse().unwrap();
        socket.bind(&from.into()).unwrap();
        let to: std::net::SocketAddr = addr.parse().unwrap();
        socket.connect(&to.into()).unwrap();
        let s: TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let idle: Vec<TcpStream> = (0..50)
        .map(|i| loopback(if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" }))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        assert!(
            healthz(&addr).starts_with("HTTP/1.1 200"),
            "an agent was kept out by idle sockets"
        );
    }
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            matches!((&**s).read(&mut [0u8; 64]), Ok(0))
        })
        .count();
    // The first request took an idle socket's place; each later one the
    // place the one before gave back, unless it came before the server had
    // finished closing the one before (a slot is given back when its
    // connection's task ends): at most one per request, never the lot.
    assert!(
        (1..=5).contains(&closed),
        "{closed} idle sockets were closed to make room for 5 requests"
    );
    drop(idle);

    // Busy connections (a request being read: its head in, its body still
    // coming) are not closed: past the cap with all of them busy, a
    // connection is answered 503 and closed.
    let key = common::add_agent_with_cli(&served.url, &dir.path().join("data"), "claude");
    let minted = served.mint(&key, serde_json::json!({ "env": "staging" })).await;
    let credential = minted["credential"].as_str().unwrap().to_owned();
    let busy: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = loopback("127.0.0.1");
            let head = format!(
                "POST /p/railway/graphql/v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {credential}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            );
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    // The broker takes the busy ones in as it gets to them (on a loaded
    // machine, not all within a set time): a connection past them all is
    // answered 503, tried a few times.
    let mut tries = 0;
    let answer = loop {
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = loopback("127.0.0.4");
        let mut answer = String::new();
        let _ = extra.read_to_string(&mut answer);
        tries += 1;
        if answer.starts_with("HTTP/1.1 503") || tries == 3 {
            break answer;
        }
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"type\":\"too_many_connections\""), "{answer}");
    // Once they close, requests are served again.
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !healthz(&addr).starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "never served again after the cap");
        std::thread::sleep(Duration::from_millis(100));
    }
    served.stop();
}

/// A test whose server or tool is missing fails, saying how to get it,
/// unless VALETKEY_TEST_ALLOW_SKIP names it; then it says loudly it skipped.
#[test]
fn a_missing_server_fails_unless_its_skip_is_named() {
    use common::outside::{Decision, decide};
    assert_eq!(decide("t", "postgres", None, None), Decision::Run);
    let Decision::Fail(message) = decide("t", "postgres", Some("not set"), Some("chromium")) else {
        panic!("a skip of another thing allowed this one");
    };
    assert!(
        message.contains("scripts/test") && message.contains("VALETKEY_TEST_ALLOW_SKIP=postgres"),
        "{message}"
    );
    let Decision::Skip(line) = decide("t", "postgres", Some("not set"), Some("chromium, postgres")) else {
        panic!("named, yet not skipped");
    };
    assert!(line.contains("SKIPPED t") && line.contains("did NOT test"), "{line}");
}

const OLD_TOKEN: &str = "api-token-old-5f0c2a9d71";
const NEW_TOKEN: &str = "api-token-new-b83e6d1f40";
const OTHER_TOKEN: &str = "other-token-0c1d2e3f4a5b";

/// A token `secret set` replaced may still work at its provider (it is
/// often replaced because it leaked): until the broker restarts it is
/// still redacted in answers and recognised as a leaked real token. A
/// stored secret the re-read cannot open keeps the token read before, and
/// the `secret set` says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_token_is_still_caught_and_an_unreadable_one_stays_in_use() {
    let api = common::upstream::StandIn::http(&[OLD_TOKEN, NEW_TOKEN, OTHER_TOKEN]).await;
    let t = TestBroker::start_with(&common::stored_tokens_config(&api.url), Default::default()).await;
    let alice = Actor::admin("alice");
    let set = |name: &'static str, value: &'static str| {
        let (t, alice) = (&t, &alice);
        async move {
            t.broker
                .set_secret(
                    name,
                    &valetkey::secrets::SecretString::from(value),
                    alice,
                    SystemTime::now(),
                )
                .await
                .unwrap()
        }
    };
    set("api-staging", OLD_TOKEN).await;
    set("other-staging", OTHER_TOKEN).await;
    set("api-staging", NEW_TOKEN).await;
    let (status, body) = t.whoami(OLD_TOKEN).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (401, Some("raw_provider_token")),
        "{body}"
    );
    let mut answer = format!("{{\"echo\":\"{OLD_TOKEN}\"}}").into_bytes();
    t.broker.redactor().redact(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains(OLD_TOKEN),
        "the replaced token reached an agent"
    );

    let key = t.add_agent("claude").await;
    let (_, minted) = t.mint(&key, json!({ "env": "staging" })).await;
    let credential = minted["credential"].as_str().unwrap().to_owned();
    let other = || async {
        t.http
            .get(format!("{}/p/other/v1/reflect/7", t.url))
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(other().await, 200);
    // `other-staging` no longer opens (a store that failed this once).
    sqlx::query("UPDATE secrets SET ciphertext = X'00' WHERE name = 'other-staging'")
        .execute(&t.db().await)
        .await
        .unwrap();
    let (_, unreadable) = set("api-staging", NEW_TOKEN).await;
    assert_eq!(
        unreadable
            .iter()
            .map(|u| (u.provider.as_str(), u.env.as_str()))
            .collect::<Vec<_>>(),
        [("other", "staging")]
    );
    assert_eq!(other().await, 200, "a working token was taken away by a failed re-read");
    t.stop().await;
}

/// An id in a route's path that does not decode (`%FF` is no UTF-8) is
/// refused as problem+json like every other refusal, on every kind of route.
#[tokio::test]
async fn a_path_parameter_that_does_not_decode_is_a_problem() {
    let t = TestBroker::start().await;
    for (method, path) in [
        (reqwest::Method::POST, "/v1/sessions/%FF/heartbeat"),
        (reqwest::Method::DELETE, "/v1/sessions/%FF"),
        (reqwest::Method::GET, "/v1/approvals/%FF"),
        (reqwest::Method::DELETE, "/v1/agents/%FF"),
        (reqwest::Method::GET, "/v1/events/%FF"),
    ] {
        let answer = t
            .http
            .request(method.clone(), format!("{}{path}", t.url))
            .bearer_auth("vkl_0000000000000000_x")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{method} {path}");
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["type"], "malformed_request", "{method} {path}: {body}");
    }
    t.stop().await;
}
