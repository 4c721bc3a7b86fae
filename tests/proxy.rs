//! The proxy path end to end: a real broker in front of local stand-ins for
//! Railway, GitHub and a generic API. A refused request must reach nobody; an
//! allowed one must arrive exactly as sent, with the real token and without
//! the agent's credential.

mod common;
#[path = "forward/mod.rs"]
mod forward;

use common::fixture::*;
use serde_json::{Value, json};

#[tokio::test]
async fn the_incident_is_refused_recorded_and_reaches_nobody() {
    let f = Fixture::start().await;
    let granted = common::claims(&f.credential)["grants"]["railway"].clone();
    assert!(!granted.as_array().unwrap().contains(&json!("volume:delete")));

    let (status, body) = f
        .graphql(json!({ "query": "mutation { volumeDelete(volumeId: \"vol_db\") }" }))
        .await;
    assert_eq!(refusal(status, &body), (403, "shared_resource"), "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("vol_db") && detail.contains("staging and production"),
        "{detail}"
    );
    assert!(body["agent_guidance"].as_str().unwrap().contains("Do not retry"));
    assert_eq!(body["operations"][0]["name"], "mutation volumeDelete");
    assert_eq!(f.railway.count(), 0, "a refused request reached the upstream");

    let event = f.event(body["event_id"].as_str().unwrap()).await;
    assert_eq!(event["kind"], "proxy_refused");
    assert_eq!(event["refusal"], "shared_resource");
    assert_eq!(event["operations"][0]["name"], "mutation volumeDelete");
    assert_eq!(event["operations"][0]["resources"][0]["id"], "vol_db");
    assert_eq!(
        event["operations"][0]["resources"][0]["owners"],
        json!(["staging", "production"])
    );

    // The same mutation on a volume of staging alone needs a human; on one of
    // production it is a mismatch. Neither reaches the upstream.
    let (status, body) = f
        .graphql(json!({ "query": "mutation { volumeDelete(volumeId: \"vol_scratch\") }" }))
        .await;
    assert_eq!(refusal(status, &body), (403, "approval_required"), "{body}");
    let (status, body) = f
        .graphql(json!({ "query": "mutation { volumeDelete(volumeId: \"vol_prod_only\") }" }))
        .await;
    assert_eq!(refusal(status, &body), (403, "credential_mismatch"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("credential is for `staging`"));
    assert_eq!(f.railway.count(), 0);
}

#[tokio::test]
async fn benign_railway_work_arrives_exactly_with_the_real_token() {
    let f = Fixture::start().await;
    let read = json!({
        "query": "query P($id: String!, $env: String!) { project(id: $id) { name } environment(id: $env) { serviceInstances { edges { node { serviceId serviceName } } } } }",
        "variables": { "id": "proj_1", "env": "env_stg" }
    });
    let raw = serde_json::to_vec(&read).unwrap();
    let resp = f
        .broker
        .http
        .post(f.url("railway/graphql/v2"))
        .bearer_auth(&f.credential)
        .header("content-type", "application/json")
        .header("x-request-id", "r-1")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "data": { "ok": true } }));

    let redeploy = json!({
        "query": "mutation { serviceInstanceRedeploy(serviceId: \"svc_api\", environmentId: \"env_stg\") }"
    });
    let (status, body) = f.graphql(redeploy.clone()).await;
    assert_eq!(status, 200, "{body}");

    // Project tokens travel in `Project-Access-Token`; the credential may too.
    let resp = f
        .broker
        .http
        .post(f.url("railway/graphql/v2"))
        .header("project-access-token", &f.credential)
        .json(&json!({ "query": "{ me { name } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let received = f.railway.received();
    assert_eq!(received.len(), 3);
    let first = &received[0];
    assert_eq!((first.method.as_str(), first.target.as_str()), ("POST", "/graphql/v2"));
    assert_eq!(first.body.as_ref(), raw.as_slice(), "the body changed on the way");
    assert_eq!(first.header("x-request-id"), Some("r-1"));
    for r in &received {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {RAILWAY_STAGING}").as_str())
        );
        assert!(!r.everything().contains("vk1."), "the agent's credential went upstream");
        assert!(!r.everything().contains(RAILWAY_PRODUCTION));
        assert!(r.header("project-access-token").is_none());
        let host = r.header("host").unwrap();
        assert_eq!(format!("http://{host}"), f.railway.url);
    }
    let audit = f.audit_text().await;
    assert_eq!(audit.matches("proxy_allowed").count(), 3, "{audit}");
    assert!(audit.contains("mutation serviceInstanceRedeploy"));
}

/// The Railway CLI's own documents (tests/fixtures/railway-cli/) through the
/// proxy: `railway variables --set` in staging is forwarded as sent with the
/// real token; an environment copied from production and `railway down` are
/// refused and reach nobody.
#[tokio::test]
async fn the_railway_clis_documents_are_forwarded_or_refused_by_their_binding() {
    let f = Fixture::start().await;
    let document =
        |name: &str| std::fs::read_to_string(format!("tests/fixtures/railway-cli/mutations/{name}.graphql")).unwrap();
    let set = json!({
        "query": document("VariableCollectionUpsert"),
        "variables": { "projectId": "proj_1", "environmentId": "env_stg", "serviceId": "svc_api", "variables": { "LOG_LEVEL": "debug" } }
    });
    let (status, body) = f.graphql(set.clone()).await;
    assert_eq!(status, 200, "{body}");
    let received = f.railway.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body.as_ref(), serde_json::to_vec(&set).unwrap().as_slice());
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {RAILWAY_STAGING}").as_str())
    );

    let copy = json!({
        "query": document("EnvironmentCreate"),
        "variables": { "projectId": "proj_1", "name": "pr-7", "sourceId": "env_prod" }
    });
    let (status, body) = f.graphql(copy).await;
    assert_eq!(refusal(status, &body), (403, "credential_mismatch"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("env_prod"), "{body}");

    let down = json!({ "query": document("DeploymentRemove"), "variables": { "id": "dep_stg" } });
    let (status, body) = f.graphql(down).await;
    assert_eq!(refusal(status, &body), (403, "approval_required"), "{body}");
    assert_eq!(body["operations"][0]["name"], "mutation deploymentRemove");

    assert_eq!(f.railway.count(), 1, "a refused request reached the upstream");
    let audit = f.audit_text().await;
    assert!(audit.contains("mutation variableCollectionUpsert"), "{audit}");
    assert!(audit.contains("mutation environmentCreate"), "{audit}");
}

/// `railway up`'s upload (a gzip tarball to a REST route beside the GraphQL
/// endpoint) is streamed to the upstream as sent, with the real token, when
/// it deploys in staging; one into production reaches nobody.
#[tokio::test]
async fn railway_ups_upload_is_forwarded_in_staging_and_refused_in_production() {
    use std::io::Write as _;
    let f = Fixture::start().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"./index.js\0console.log('hi')").unwrap();
    let tarball = gz.finish().unwrap();
    let up = |env: &str| {
        f.broker
            .http
            .post(f.url(&format!(
                "railway/project/proj_1/environment/{env}/up?serviceId=svc_api"
            )))
            .bearer_auth(&f.credential)
            .header("content-type", "application/gzip")
            .body(tarball.clone())
    };
    let (status, body) = f.broker.send(up("env_stg")).await;
    assert_eq!(status, 200, "{body}");
    let received = f.railway.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].target,
        "/project/proj_1/environment/env_stg/up?serviceId=svc_api"
    );
    assert_eq!(received[0].body.as_ref(), tarball.as_slice());
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {RAILWAY_STAGING}").as_str())
    );

    let (status, body) = f.broker.send(up("env_prod")).await;
    assert_eq!(refusal(status, &body), (403, "credential_mismatch"), "{body}");
    assert_eq!(f.railway.count(), 1, "a refused upload reached the upstream");
    let audit = f.audit_text().await;
    assert!(
        audit.contains("POST /project/{project}/environment/{environment}/up"),
        "{audit}"
    );
}

/// Every case of the corpus (tests/common/corpus.rs), sent byte for byte:
/// the answer the table names, and a refused request reaches nobody.
#[tokio::test]
async fn the_corpus_is_decided_as_expected_and_refusals_reach_nobody() {
    let f = Fixture::start().await;
    for case in common::corpus::cases() {
        let counts = || (f.railway.count(), f.github.count(), f.api.count());
        let before = counts();
        let (status, answer) = f.send_case(&case).await;
        let after = counts();
        if case.expect == "allow" {
            assert!((200..300).contains(&status), "{}: {status} {answer}", case.name);
            let sent = (after.0 - before.0) + (after.1 - before.1) + (after.2 - before.2);
            assert_eq!(sent, 1, "{}: the upstream did not receive it exactly once", case.name);
            // With the real token, and without the agent's credential anywhere.
            let (upstream, token) = match case.provider {
                "railway" => (&f.railway, RAILWAY_STAGING),
                "github" => (&f.github, GITHUB_STAGING),
                _ => (&f.api, API_STAGING),
            };
            let received = upstream.received().pop().unwrap();
            assert_eq!(
                received.header("authorization"),
                Some(format!("Bearer {token}").as_str()),
                "{}",
                case.name
            );
            let jwt = f.credential.strip_prefix("vk1.").unwrap();
            assert!(
                !received.everything().contains(jwt),
                "{}: the credential went upstream",
                case.name
            );
        } else {
            assert_eq!(answer["type"], case.expect, "{}: {answer}", case.name);
            assert!((400..500).contains(&status), "{}: {status}", case.name);
            assert_eq!(after, before, "{}: a refused request reached an upstream", case.name);
            assert!(answer["event_id"].is_string(), "{}: not recorded", case.name);
        }
    }
}

#[tokio::test]
async fn oversized_and_unreadable_graphql_is_refused_without_leaking_it() {
    let f = Fixture::start().await;
    let http = &f.broker.http;
    let huge = http
        .post(f.url("railway/graphql/v2"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .bearer_auth(&f.credential);
    let (status, problem) = f.broker.send(huge).await;
    assert_eq!(refusal(status, &problem), (413, "request_too_large"), "{problem}");

    let elsewhere = http
        .post(f.url("railway/graphql/internal"))
        .json(&json!({ "query": "{ me { name } }" }))
        .bearer_auth(&f.credential);
    let (status, problem) = f.broker.send(elsewhere).await;
    assert_eq!(refusal(status, &problem), (403, "unknown_operation"), "{problem}");

    assert_eq!(f.railway.count(), 0, "an evasion reached the upstream");
}

#[tokio::test]
async fn github_work_flows_and_encoded_paths_do_not_slip_past_rules() {
    let f = Fixture::start().await;
    let http = &f.broker.http;

    // Reading content, creating a branch, opening a pull request.
    let (status, body) = f
        .broker
        .send(
            http.get(f.url("github/repos/acme/api/contents/README.md"))
                .header("authorization", format!("token {}", f.credential)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["repository"], "acme/api");
    let (status, body) = f
        .broker
        .send(
            http.post(f.url("github/repos/acme/api/git/refs"))
                .bearer_auth(&f.credential)
                .json(&json!({ "ref": "refs/heads/fix", "sha": "abc123" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = f
        .broker
        .send(
            http.post(f.url("github/repos/Acme/API/pulls"))
                .bearer_auth(&f.credential)
                .json(&json!({ "title": "Fix", "head": "fix", "base": "main" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = f.get("github/repos/acme/api/issues?state=open", &f.credential).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["target"], "/repos/acme/api/issues?state=open");
    let allowed = f.github.count();
    assert_eq!(allowed, 4);
    for r in f.github.received() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {GITHUB_STAGING}").as_str())
        );
        assert!(!r.everything().contains("vk1."));
    }
    assert_eq!(
        f.github.received()[1].body.as_ref(),
        br#"{"ref":"refs/heads/fix","sha":"abc123"}"#
    );

    let bearer = format!("Bearer {}", f.credential);
    let auth = [("Authorization", bearer.as_str())];

    // The path forwarded is the normalised one: each segment decoded once
    // and escaped again, the trailing slash dropped, the file path whole.
    let (status, _) = common::raw_request(
        &f.broker.url,
        "GET",
        "/p/github/repos/%61cme/api/contents/src/my%20file.rs/",
        &auth,
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        f.github.received().last().unwrap().target,
        "/repos/acme/api/contents/src/my%20file.rs"
    );
    // A segment that decodes to a separator or a dot segment reaches nobody.
    let before = f.github.count();
    for target in [
        "/p/github/repos/acme/x/%2E%2E/api/contents/a",
        "/p/github/repos/acme/api/contents/a%2Fb",
        "/p/github/repos/acme/api/contents/..%2F..%2Finfra%2Fcontents%2Fprod.tf",
    ] {
        let (status, problem) = common::raw_request(&f.broker.url, "GET", target, &auth, b"").await;
        assert_eq!(
            refusal(status, &problem),
            (400, "malformed_request"),
            "{target}: {problem}"
        );
    }
    assert_eq!(f.github.count(), before);
}

#[tokio::test]
async fn http_providers_follow_ops_rules_and_keep_the_query_string() {
    let f = Fixture::start().await;
    let http = &f.broker.http;
    let (status, body) = f.get("api/v1/items/7?fields=name", &f.credential).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["target"], "/base/v1/items/7?fields=name");
    // Ops let this provider's unknown ids be read, and only read.
    let (status, body) = f.get("api/v1/items/99", &f.credential).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = f
        .broker
        .send(
            http.post(f.url("api/v1/items/7/notes"))
                .bearer_auth(&f.credential)
                .json(&json!({ "text": "hello" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.api.received()[2].body.as_ref(), br#"{"text":"hello"}"#);
    assert_eq!(
        f.api.received()[2].header("authorization"),
        Some(format!("Bearer {API_STAGING}").as_str())
    );

    for (method, path, expected) in [
        (reqwest::Method::DELETE, "api/v1/items/7", "approval_required"),
        (reqwest::Method::POST, "api/v1/items/8/notes", "unknown_resource"),
        (reqwest::Method::PUT, "api/v1/other", "unknown_operation"),
    ] {
        let (_, problem) = f
            .broker
            .send(http.request(method.clone(), f.url(path)).bearer_auth(&f.credential))
            .await;
        assert_eq!(problem["type"], expected, "{method} {path}: {problem}");
    }
    assert_eq!(f.api.count(), 3);
}

#[tokio::test]
async fn requests_without_a_usable_credential_reach_nobody() {
    let f = Fixture::start().await;
    let http = &f.broker.http;
    let read = json!({ "query": "{ me { name } }" });
    let before = f.broker.row_counts().await;

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(f.url("railway/graphql/v2")).json(&read),
            401,
            "credential_missing",
        ),
        (
            http.post(f.url("railway/graphql/v2"))
                .bearer_auth("vk1.not-a-jwt")
                .json(&read),
            401,
            "credential_malformed",
        ),
        (
            http.post(f.url("railway/graphql/v2"))
                .bearer_auth(&f.credential)
                .header("project-access-token", "vk1.other")
                .json(&read),
            401,
            "credential_ambiguous",
        ),
        (
            http.get(f.url("nowhere/x")).bearer_auth(&f.credential),
            404,
            "unknown_provider",
        ),
    ];
    for (request, status, kind) in cases {
        let (got, problem) = f.broker.send(request).await;
        assert_eq!((got, problem["type"].as_str().unwrap()), (status, kind), "{problem}");
    }
    assert_eq!(
        f.broker.row_counts().await,
        before,
        "a refusal before authentication wrote something"
    );

    // Revoked: the session ends, the next request is refused.
    let sid = common::claims(&f.credential)["sid"].as_str().unwrap().to_owned();
    let resp = http
        .delete(format!("{}/v1/sessions/{sid}", f.broker.url))
        .bearer_auth(&f.broker.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, problem) = f
        .broker
        .send(
            http.post(f.url("railway/graphql/v2"))
                .bearer_auth(&f.credential)
                .json(&read),
        )
        .await;
    assert_eq!(refusal(status, &problem), (401, "credential_revoked"));
    assert_eq!(f.railway.count(), 0);
}

#[tokio::test]
async fn a_credential_without_the_provider_is_refused_as_a_mismatch() {
    let f = Fixture::start().await;
    let (status, minted) = f
        .broker
        .mint(
            &common_key(&f).await,
            json!({ "env": "staging", "providers": ["railway"] }),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let railway_only = minted["credential"].as_str().unwrap();
    let (status, problem) = f.get("github/repos/acme/api/contents/README.md", railway_only).await;
    assert_eq!(refusal(status, &problem), (403, "credential_mismatch"), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no scope on provider `github`")
    );
    assert_eq!(f.github.count(), 0);
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_clear_502_and_no_secret_is_recorded() {
    let f = Fixture::start().await;
    let (status, body) = f.graphql(json!({ "query": "{ me { name } }" })).await;
    assert_eq!(status, 200, "{body}");
    let audit = f.audit_text().await;
    for secret in [
        RAILWAY_STAGING,
        RAILWAY_PRODUCTION,
        GITHUB_STAGING,
        API_STAGING,
        f.credential.as_str(),
    ] {
        assert!(!audit.contains(secret), "the audit trail holds a secret");
    }
    // Stop the stand-in: the next allowed request has nowhere to go.
    let Fixture {
        railway,
        broker,
        credential,
        ..
    } = f;
    drop(railway);
    let (status, problem) = broker
        .send(
            broker
                .http
                .post(format!("{}/p/railway/graphql/v2", broker.url))
                .bearer_auth(&credential)
                .json(&json!({ "query": "{ me { name } }" })),
        )
        .await;
    assert_eq!(refusal(status, &problem), (502, "upstream_unreachable"), "{problem}");
    assert!(problem["event_id"].is_string());
    assert!(!problem.to_string().contains(RAILWAY_STAGING));
}

/// A second launcher key for `claude`, to mint a narrower credential.
async fn common_key(f: &Fixture) -> String {
    valetkey::admin::remove_agent(
        f.broker.broker.store(),
        "claude",
        &valetkey::admin::Actor::admin("alice"),
        std::time::SystemTime::now(),
    )
    .await
    .unwrap();
    f.broker.add_agent("claude").await
}

/// A provider's redirect goes back to the agent as it came: the broker
/// follows none, so the real token never travels to where it points.
#[tokio::test]
async fn an_upstream_redirect_is_passed_back_not_followed() {
    let f = Fixture::start().await;
    let elsewhere = common::upstream::StandIn::http(&[]).await;
    let target = format!("{}/collect", elsewhere.url);
    // An agent-side client that follows nothing either, to see the answer.
    let agent = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let resp = agent
        .get(f.url(&format!("api/v1/items/7?redirect_to={target}")))
        .bearer_auth(&f.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 307);
    assert_eq!(resp.headers()["location"], target.as_str());
    assert_eq!(f.api.count(), 1);
    assert_eq!(elsewhere.count(), 0, "the broker followed the redirect");
}

/// Proxy variables in the broker's environment are ignored: the real token
/// goes to the provider itself, never through a proxy somebody set.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_variables_in_the_brokers_environment_are_ignored() {
    let api = common::upstream::StandIn::http(&[API_STAGING]).await;
    let proxy = common::upstream::StandIn::http(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("valetkey.toml");
    let config = CONFIG
        .replace("RAILWAY_URL", &api.url)
        .replace("GITHUB_URL", &api.url)
        .replace("API_URL", &api.url)
        + "\n[introspection]\nenabled = false\n";
    std::fs::write(&config_path, config).unwrap();
    let mut env = vec![
        ("RAILWAY_STAGING", RAILWAY_STAGING),
        ("RAILWAY_PRODUCTION", RAILWAY_PRODUCTION),
        ("GITHUB_STAGING", GITHUB_STAGING),
        ("API_STAGING", API_STAGING),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    for var in common::PROXY_VARIABLES {
        env.push((var, proxy.url.as_str()));
    }
    let served = common::serve(dir.path(), &config_path, &env);
    let key = common::add_agent_with_cli(&served.url, &dir.path().join("data"), "claude");
    let minted = served.mint(&key, json!({ "env": "staging" })).await;
    let credential = minted["credential"].as_str().expect("a credential");
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/p/api/v1/items/7", served.url))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api.count(), 1);
    assert_eq!(proxy.count(), 0, "the broker went through the proxy");
    served.stop();
}

/// git over the broker: `git` itself, against the real `git http-backend`
/// behind a stand-in for GitHub's git host, through `/p/github/…`.
mod git_over_https {
    use std::path::{Path, PathBuf};

    use super::common::upstream::StandIn;
    use super::common::{TestBroker, audit_lines};
    use super::*;

    /// The fixture's repository map and agents, with the git host, `main`
    /// protected, and an agent that may change workflows and push to `main`.
    async fn start(host: &StandIn) -> (TestBroker, String, String) {
        let config = CONFIG
            .replace("RAILWAY_URL", "http://127.0.0.1:9")
            .replace("API_URL", "http://127.0.0.1:9")
            .replace(
                "upstream = \"GITHUB_URL\"",
                &format!(
                    "upstream = \"http://127.0.0.1:9\"\ngit_upstream = \"{}\"\nprotected_branches = [\"main\"]",
                    host.url
                ),
            )
            + r#"
[agents.deployer]
grants = [{ provider = "github", environments = ["staging"], scopes = ["read", "contents:write", "workflows:write", "branch:protected"] }]

[agents.forwarded]
grants = [{ provider = "github", environments = ["staging"], scopes = ["read", "contents:write"] }]

[introspection]
enabled = false
"#;
        let broker = TestBroker::start_with(&config, token_variables(GITHUB_STAGING)).await;
        let mut credentials = Vec::new();
        for (agent, scopes) in [
            ("claude", json!(["read", "contents:write"])),
            (
                "deployer",
                json!(["read", "contents:write", "workflows:write", "branch:protected"]),
            ),
        ] {
            let key = broker.add_agent(agent).await;
            let (status, minted) = broker.mint(&key, json!({ "env": "staging", "scopes": scopes })).await;
            assert_eq!(status, 201, "{minted}");
            credentials.push(minted["credential"].as_str().unwrap().to_owned());
        }
        let deployer = credentials.pop().unwrap();
        (broker, credentials.pop().unwrap(), deployer)
    }

    /// `git ARGS` in `dir`, with nothing of the machine's own configuration
    /// and `environment` set as the caller says: (success, stderr and
    /// stdout).
    async fn git_with(
        dir: &Path,
        args: &[&str],
        environment: impl FnOnce(&mut tokio::process::Command),
    ) -> (bool, String) {
        let mut command = tokio::process::Command::new("git");
        command
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir);
        environment(&mut command);
        let out = command
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
        )
    }

    /// `git ARGS` in `dir`, its home there and no credential helper.
    async fn git(dir: &Path, args: &[&str]) -> (bool, String) {
        let args = [&["-c", "credential.helper="][..], args].concat();
        git_with(dir, &args, |command| {
            command.env("HOME", dir);
        })
        .await
    }

    async fn ok(dir: &Path, args: &[&str]) -> String {
        let (success, out) = git(dir, args).await;
        assert!(success, "git {args:?}: {out}");
        out
    }

    /// The bare repository's refs, as the host holds them.
    async fn refs(bare: &Path) -> String {
        ok(bare, &["for-each-ref", "--format=%(refname) %(objectname)"]).await
    }

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn remote(broker: &TestBroker, credential: &str) -> String {
        format!(
            "{}/p/github/acme/api.git",
            broker.url.replacen("http://", &format!("http://x:{credential}@"), 1)
        )
    }

    /// A bare repository `acme/api` under `root`, as the git host serves
    /// it: `main` and `feature` at a seed commit with 40 files and a
    /// workflow.
    async fn seeded(root: &Path) -> PathBuf {
        let bare: PathBuf = root.join("acme/api.git");
        std::fs::create_dir_all(&bare).unwrap();
        ok(&bare, &["init", "-q", "--bare", "-b", "main"]).await;
        ok(&bare, &["config", "uploadpack.allowFilter", "true"]).await;
        ok(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]).await;
        let seed = tempfile::tempdir().unwrap();
        let s = seed.path();
        ok(s, &["init", "-q", "-b", "main"]).await;
        for i in 0..40 {
            write(s, &format!("src/f{i}.txt"), &format!("{i}\n"));
        }
        write(s, ".github/workflows/ci.yml", "on: push\n");
        ok(s, &["add", "-A"]).await;
        ok(s, &["commit", "-qm", "seed"]).await;
        ok(
            s,
            &["push", "-q", bare.to_str().unwrap(), "main", "main:refs/heads/feature"],
        )
        .await;
        bare
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn clones_pushes_and_what_a_push_rewrites_or_runs_are_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let bare = seeded(root.path()).await;
        let host = StandIn::git_host(root.path().to_owned(), &[GITHUB_STAGING]).await;
        let (broker, claude, deployer) = start(&host).await;
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        ok(w, &["clone", "-q", &remote(&broker, &claude), "api"]).await;
        let w = &w.join("api");
        assert!(w.join(".github/workflows/ci.yml").exists());
        let received = host.received();
        assert!(
            received.iter().any(|r| r.target.ends_with("/git-upload-pack")),
            "{received:?}"
        );
        for r in &received {
            assert!(r.target.starts_with("/acme/api.git/"), "{}", r.target);
            assert!(
                !r.everything().contains("vk1."),
                "the agent's credential went to the git host"
            );
        }

        // A new branch on top of main: contents:write (the parent's `.github`
        // learned from the host), and it lands.
        ok(w, &["checkout", "-q", "-b", "topic"]).await;
        write(w, "src/f1.txt", "changed\n");
        ok(w, &["commit", "-qam", "topic"]).await;
        ok(w, &["push", "-q", "origin", "topic"]).await;
        let topic = ok(w, &["rev-parse", "HEAD"]).await;
        assert!(
            refs(&bare)
                .await
                .contains(&format!("refs/heads/topic {}", topic.trim()))
        );
        let learned = host
            .received()
            .iter()
            .filter(|r| r.body.windows(13).any(|w| w == b"filter tree:1"))
            .count();
        assert!(learned >= 1, "the broker did not ask the host for the parent's tree");
        // A fast-forward of it too.
        write(w, "src/f2.txt", "changed\n");
        ok(w, &["commit", "-qam", "more"]).await;
        ok(w, &["push", "-q", "origin", "topic"]).await;

        // Deleting a branch and forcing a rewrite: held for a human, and the
        // host's refs do not move.
        let before = refs(&bare).await;
        let (pushed, out) = git(w, &["push", "origin", "--delete", "feature"]).await;
        assert!(!pushed, "{out}");
        ok(w, &["commit", "-q", "--amend", "-m", "rewritten"]).await;
        let (pushed, out) = git(w, &["push", "--force", "origin", "topic"]).await;
        assert!(!pushed, "{out}");
        assert_eq!(refs(&bare).await, before);
        let audit = audit_lines(broker.broker.store()).await.join("\n");
        assert!(audit.contains("git push: delete refs/heads/feature"), "{audit}");
        assert!(
            audit.contains("git push: rewrite (not a fast-forward the pack proves) refs/heads/topic"),
            "{audit}"
        );
        assert_eq!(audit.matches(r#"refusal\":\"approval_required"#).count(), 2, "{audit}");
        assert!(
            !audit.contains("cannot be told"),
            "the parents were not learned: {audit}"
        );

        // A workflow change needs workflows:write.
        ok(w, &["checkout", "-q", "-B", "wf", "origin/main"]).await;
        write(w, ".github/workflows/x.yml", "on: workflow_dispatch\n");
        ok(w, &["add", "-A"]).await;
        ok(w, &["commit", "-qm", "workflow"]).await;
        let (pushed, out) = git(w, &["push", "origin", "wf"]).await;
        assert!(!pushed, "{out}");
        assert!(!refs(&bare).await.contains("refs/heads/wf"));
        ok(w, &["push", "-q", &remote(&broker, &deployer), "wf"]).await;
        assert!(refs(&bare).await.contains("refs/heads/wf"));

        // A protected branch needs the deploy tier, even fast-forwarded.
        ok(w, &["checkout", "-q", "-B", "main", "origin/main"]).await;
        write(w, "src/f3.txt", "changed\n");
        ok(w, &["commit", "-qam", "to main"]).await;
        let (pushed, out) = git(w, &["push", "origin", "main"]).await;
        assert!(!pushed, "{out}");
        ok(w, &["push", "-q", &remote(&broker, &deployer), "main"]).await;
        let main = ok(w, &["rev-parse", "HEAD"]).await;
        assert!(refs(&bare).await.contains(&format!("refs/heads/main {}", main.trim())));
        let audit = audit_lines(broker.broker.store()).await.join("\n");
        assert!(audit.contains("git push: commits changing .github"), "{audit}");
        assert!(audit.contains("a protected branch"), "{audit}");
    }

    /// git as an agent runs it under `valetkey run`, with nothing but the
    /// variables `run` sets (`valetkey env` prints the same): clone and push
    /// go to `https://github.com/…` through the forward proxy.
    #[tokio::test(flavor = "multi_thread")]
    async fn git_reaches_github_through_the_forward_proxy_with_only_the_variables_run_sets() {
        let root = tempfile::tempdir().unwrap();
        let bare = seeded(root.path()).await;
        let host = StandIn::git_host(root.path().to_owned(), &[GITHUB_STAGING]).await;
        let (broker, _, _) = start(&host).await;
        let key = broker.add_agent("forwarded").await;
        let home = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(super::common::BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("VALETKEY_URL", &broker.url)
            .env("VALETKEY_AGENT_KEY", &key)
            .args(["env", "--agent", "forwarded", "--env", "staging", "--format", "json"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let vars: std::collections::BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
        let git = |dir: PathBuf, args: &'static [&'static str]| {
            let vars = vars.clone();
            let home = home.path().to_owned();
            async move {
                git_with(&dir, args, |command| {
                    command
                        .env_clear()
                        .envs(&vars)
                        .env("PATH", std::env::var("PATH").unwrap_or_default())
                        .env("HOME", home);
                })
                .await
            }
        };
        let work = tempfile::tempdir().unwrap();
        let (cloned, out) = git(
            work.path().to_owned(),
            &["clone", "-q", "https://github.com/acme/api.git", "api"],
        )
        .await;
        assert!(cloned, "{out}");
        let w = work.path().join("api");
        assert!(w.join(".github/workflows/ci.yml").exists());
        write(&w, "src/f1.txt", "changed\n");
        let (_, out) = git(w.clone(), &["checkout", "-q", "-b", "topic"]).await;
        assert!(out.is_empty(), "{out}");
        let (committed, out) = git(w.clone(), &["commit", "-qam", "topic"]).await;
        assert!(committed, "{out}");
        let (pushed, out) = git(w.clone(), &["push", "-q", "origin", "topic"]).await;
        assert!(pushed, "{out}");
        assert!(refs(&bare).await.contains("refs/heads/topic"));

        let before = refs(&bare).await;
        let (pushed, out) = git(w.clone(), &["push", "origin", "--delete", "feature"]).await;
        assert!(!pushed, "{out}");
        assert_eq!(refs(&bare).await, before, "a refused push moved the host's refs");
        for r in host.received() {
            assert!(
                !r.everything().contains("vk1."),
                "the agent's credential went to the git host"
            );
        }
    }
}
