//! The broker asks each provider what each real token reaches. A token that
//! reaches beyond the environment it is configured for is a finding: in
//! `/readyz`, in `valetkey status`, in the audit trail, and alerted.

mod common;

use std::collections::BTreeMap;

use common::TestBroker;
use common::upstream::{StandIn, Webhook};
use serde_json::Value;

/// A Railway account token: not a project token, it sees every environment.
const RAILWAY_ACCOUNT: &str = "0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c";
/// A Railway project token of production.
const RAILWAY_PROJECT_PROD: &str = "5a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
/// A GitHub installation token whose installation holds staging's repo only.
const GITHUB_INSTALLATION: &str = "ghs_installationOfStagingOnly";

const CONFIG: &str = r#"
[environments.staging]
[environments.production]
protected = true

[introspection]
enabled = true
interval = "1h"

[alerts]
webhook = "WEBHOOK"
backoff = "10ms"

[providers.railway]
kind = "railway"
upstream = "RAILWAY_URL"
tokens = { staging = { env = "RAILWAY_STAGING" }, production = { env = "RAILWAY_PRODUCTION" } }

[providers.github]
kind = "github"
upstream = "GITHUB_URL"
tokens = { staging = { env = "GITHUB_STAGING" } }

[[resources]]
provider = "railway"
kind = "environment"
id = "env_stg"
environments = ["staging"]

[[resources]]
provider = "railway"
kind = "environment"
id = "env_prod"
environments = ["production"]

[[resources]]
provider = "github"
kind = "repository"
id = "acme/api"
environments = ["staging"]
"#;

#[tokio::test]
async fn a_staging_token_that_reaches_production_is_a_finding_and_a_confined_one_is_not() {
    let railway = StandIn::railway_reaching(
        &[RAILWAY_ACCOUNT, RAILWAY_PROJECT_PROD],
        &[(RAILWAY_PROJECT_PROD, "env_prod")],
    )
    .await;
    let github = StandIn::github_reaching(&[GITHUB_INSTALLATION], &[(GITHUB_INSTALLATION, &["acme/api"])]).await;
    let hook = Webhook::start(0).await;
    let config = CONFIG
        .replace("RAILWAY_URL", &railway.url)
        .replace("GITHUB_URL", &github.url)
        .replace("WEBHOOK", &hook.url);
    let env = BTreeMap::from([
        // The incident's precondition: staging is given an account token.
        ("RAILWAY_STAGING".to_owned(), RAILWAY_ACCOUNT.to_owned()),
        ("RAILWAY_PRODUCTION".to_owned(), RAILWAY_PROJECT_PROD.to_owned()),
        ("GITHUB_STAGING".to_owned(), GITHUB_INSTALLATION.to_owned()),
    ]);
    let t = TestBroker::start_with(&config, env).await;

    let mut ready = Value::Null;
    common::eventually("introspection reports every token", async || {
        ready = t
            .http
            .get(format!("{}/readyz", t.url))
            .bearer_auth(&t.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["token_reach"].as_array().is_some_and(|r| r.len() == 3)
    })
    .await;
    let reach = |provider: &str, env: &str| -> Value {
        ready["token_reach"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["provider"] == provider && r["env"] == env)
            .cloned()
            .unwrap()
    };
    let staging = reach("railway", "staging");
    assert_eq!(staging["outcome"], "finding", "{staging}");
    assert_eq!(staging["reaches"], serde_json::json!(["production", "staging"]));
    assert!(
        staging["detail"]
            .as_str()
            .unwrap()
            .contains("environments of production")
    );
    assert_eq!(reach("railway", "production")["outcome"], "confined");
    assert_eq!(reach("github", "staging")["outcome"], "confined");
    assert_eq!(ready["status"], "ready", "a finding does not stop the broker serving");

    let alert = hook.alert("token_reach").await;
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.contains("`railway` token configured for `staging` reaches production"),
        "{text}"
    );
    assert_eq!(alert["detail"]["configured_for"], "staging");
    assert_eq!(
        hook.received().iter().filter(|a| a["kind"] == "token_reach").count(),
        1,
        "only the staging token is a finding"
    );
    let audit = common::audit_lines(t.broker.store()).await;
    assert_eq!(audit.iter().filter(|e| e.contains("token_reach_finding")).count(), 1);
    for token in [RAILWAY_ACCOUNT, RAILWAY_PROJECT_PROD, GITHUB_INSTALLATION] {
        assert!(!audit.iter().any(|e| e.contains(token)));
        assert!(!hook.received().iter().any(|a| a.to_string().contains(token)));
    }

    // The provider was asked with each token, the way it expects it.
    let asked: Vec<String> = railway
        .received()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert!(asked.contains(&format!("Bearer {RAILWAY_ACCOUNT}")));
    assert!(asked.contains(&format!("Bearer {RAILWAY_PROJECT_PROD}")));
    assert_eq!(github.received()[0].target, "/installation/repositories?per_page=100");

    // `valetkey status` shows it, and exits 3 for a finding.
    let mut status = common::admin_cli(&t.url, &t.data_dir().join("admin.key"));
    status.arg("status");
    let out = tokio::task::spawn_blocking(move || status.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("railway    staging      FINDING"), "{text}");
    assert!(text.contains("github     staging      ok"), "{text}");
}
