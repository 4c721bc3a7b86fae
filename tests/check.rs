//! `POST /v1/check` answers what the proxy would do, from the same engine:
//! every case of the proxy's corpus gets the same answer from both, and a
//! check sends nothing upstream and records nothing.

mod common;

use common::fixture::*;
use serde_json::{Value, json};

async fn check(f: &Fixture, body: &Value) -> (u16, Value) {
    f.broker
        .send(
            f.broker
                .http
                .post(format!("{}/v1/check", f.broker.url))
                .bearer_auth(&f.credential)
                .json(body),
        )
        .await
}

#[tokio::test]
async fn check_and_the_proxy_agree_on_the_whole_corpus() {
    let f = Fixture::start().await;
    for case in common::corpus::cases() {
        let counts = || (f.railway.count(), f.github.count(), f.api.count());
        let rows = f.broker.row_counts().await;
        let before = counts();
        let (status, answer) = check(&f, &case.with_credential(&f.credential).as_check()).await;
        assert_eq!(status, 200, "{}: {answer}", case.name);
        assert_eq!(counts(), before, "{}: a check reached an upstream", case.name);
        assert_eq!(
            f.broker.row_counts().await,
            rows,
            "{}: a check wrote to the store",
            case.name
        );
        let checked = match answer["decision"].as_str() {
            Some("allow") => "allow".to_owned(),
            Some("refuse") => answer["refusal"]["type"].as_str().unwrap().to_owned(),
            other => panic!("{}: decision {other:?}", case.name),
        };

        let (status, proxied) = f.send_case(&case).await;
        let proxied = if (200..300).contains(&status) {
            "allow".to_owned()
        } else {
            proxied["type"].as_str().unwrap_or("<none>").to_owned()
        };

        assert_eq!(checked, proxied, "{}: check and proxy disagree", case.name);
        assert_eq!(checked, case.expect, "{}: {answer}", case.name);
        if case.expect != "allow" {
            assert!(answer["refusal"]["agent_guidance"].is_string(), "{}", case.name);
            assert!(
                answer["refusal"].get("event_id").is_none(),
                "{}: a check has no event",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn a_graphql_check_names_operations_resources_and_owners() {
    let f = Fixture::start().await;
    let (status, answer) = check(
        &f,
        &json!({ "provider": "railway", "graphql": { "query": "mutation { volumeDelete(volumeId: \"vol_db\") }" } }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "refuse");
    assert_eq!(answer["env"], "staging");
    assert_eq!(answer["path"], "/graphql/v2");
    assert_eq!(answer["refusal"]["type"], "shared_resource");
    assert_eq!(answer["operations"][0]["name"], "mutation volumeDelete");
    assert_eq!(answer["operations"][0]["tier"], "destructive");
    assert_eq!(
        answer["operations"][0]["resources"][0],
        json!({ "kind": "volume", "id": "vol_db", "owners": ["staging", "production"] })
    );

    let (_, allowed) = check(
        &f,
        &json!({ "provider": "railway", "graphql": {
            "query": "query($id: String!) { project(id: $id) { name } }",
            "variables": { "id": "proj_1" }
        } }),
    )
    .await;
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert!(allowed.get("refusal").is_none());
    assert_eq!(f.railway.count(), 0);
}

#[tokio::test]
async fn a_bad_check_is_a_clear_error() {
    let f = Fixture::start().await;
    for (body, kind) in [
        (
            json!({ "provider": "api", "graphql": { "query": "{ a }" } }),
            "malformed_request",
        ),
        (json!({ "provider": "github", "method": "GET" }), "malformed_request"),
        (
            json!({ "provider": "github", "method": "GET", "path": "repos" }),
            "malformed_request",
        ),
        (
            json!({ "provider": "nowhere", "method": "GET", "path": "/" }),
            "unknown_provider",
        ),
        (
            json!({ "provider": "github", "method": "GET", "path": "/", "extra": 1 }),
            "invalid_request",
        ),
    ] {
        let (status, problem) = check(&f, &body).await;
        assert!((400..500).contains(&status), "{body}: {problem}");
        assert_eq!(problem["type"], kind, "{body}: {problem}");
    }
}
