//! Upstream token introspection: what each real token can reach, asked of
//! the provider itself. A "staging" token that can touch production is the
//! incident's precondition; the broker looks for it at start and on a
//! schedule, and reports it as a finding (log, `/readyz`, alert).
//!
//! The questions are I/O (`ask_*`); what the answers mean is pure (`reach`,
//! `railway_environments`, `github_repositories`) and tested on its own.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::ProviderConfig;
use crate::policy::ProviderResources;
use crate::providers::ProviderKind;
use crate::secrets::{ExposeSecret, SecretString};

/// What one real token was found to reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenReach {
    pub provider: String,
    /// The environment the token is configured for.
    pub env: String,
    pub checked_at: String,
    pub outcome: Outcome,
    /// What the provider said, in words.
    pub detail: String,
    /// The environments the token reaches, as the resource map names them.
    pub reaches: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The token reaches its environment only.
    Confined,
    /// The token reaches beyond its environment.
    Finding,
    /// The provider could not say (unreachable, the token refused, no way
    /// to ask for this kind).
    Unknown,
}

/// Ids of `kind` the provider says the token reaches → the verdict on them.
pub fn reach(
    env: &str,
    ids: &[String],
    map: &ProviderResources,
    kind: &str,
    what: &str,
) -> (Outcome, Vec<String>, String) {
    let mut envs = BTreeSet::new();
    let mut unmapped = Vec::new();
    for id in ids {
        match map.owners(kind, id) {
            Some(owners) => envs.extend(owners.iter().cloned()),
            None => unmapped.push(id.clone()),
        }
    }
    let beyond: Vec<&String> = envs.iter().filter(|e| *e != env).collect();
    let reaches: Vec<String> = envs.iter().cloned().collect();
    if !beyond.is_empty() {
        let names: Vec<&str> = beyond.iter().map(|e| e.as_str()).collect();
        return (
            Outcome::Finding,
            reaches,
            format!(
                "the token configured for `{env}` reaches {what} of {}: it can act outside its environment",
                names.join(" and ")
            ),
        );
    }
    if ids.is_empty() {
        return (
            Outcome::Unknown,
            reaches,
            format!("the provider named no {what} for this token"),
        );
    }
    let mut detail = format!(
        "the token reaches {} {what} of `{env}` only",
        ids.len() - unmapped.len()
    );
    if !unmapped.is_empty() {
        detail.push_str(&format!(
            "; {} more not in the resource map ({})",
            unmapped.len(),
            unmapped.join(", ")
        ));
    }
    (Outcome::Confined, reaches, detail)
}

/// Railway: the environments a token reaches. A project token names its
/// one environment; an account or workspace token lists every project's.
pub fn railway_environments(project_token: &Value, projects: Option<&Value>) -> Vec<String> {
    if let Some(env) = project_token
        .pointer("/data/projectToken/environmentId")
        .and_then(Value::as_str)
    {
        return vec![env.to_owned()];
    }
    let mut ids = Vec::new();
    let projects = projects
        .and_then(|p| p.pointer("/data/projects/edges"))
        .and_then(Value::as_array);
    for project in projects.into_iter().flatten() {
        let envs = project.pointer("/node/environments/edges").and_then(Value::as_array);
        for env in envs.into_iter().flatten() {
            if let Some(id) = env.pointer("/node/id").and_then(Value::as_str) {
                ids.push(id.to_owned());
            }
        }
    }
    ids
}

/// GitHub: the repositories (`owner/name`) a token reaches, from
/// `/installation/repositories` or `/user/repos`.
pub fn github_repositories(answer: &Value) -> Vec<String> {
    let list = answer
        .get("repositories")
        .and_then(Value::as_array)
        .or_else(|| answer.as_array());
    list.into_iter()
        .flatten()
        .filter_map(|r| r.get("full_name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    #[error("the provider answered HTTP {0}")]
    Status(u16),
    #[error("the provider's answer is not JSON")]
    NotJson,
}

/// What a Railway token reaches is environments; a GitHub token, repositories.
const RAILWAY_REACH: &str = "environments";
const GITHUB_REACH: &str = "repositories";

/// Asks the provider what `token` reaches and judges the answer.
pub async fn introspect(
    client: &reqwest::Client,
    provider: &str,
    config: &ProviderConfig,
    env: &str,
    token: &SecretString,
    map: &ProviderResources,
    now: SystemTime,
) -> TokenReach {
    let (outcome, reaches, detail) = match ask(client, config, token).await {
        Ok(Some((ids, what))) => {
            let kind = if what == RAILWAY_REACH {
                "environment"
            } else {
                "repository"
            };
            reach(env, &ids, map, kind, what)
        }
        Ok(None) => (
            Outcome::Unknown,
            Vec::new(),
            format!("provider kind `{}` cannot be asked what a token reaches", config.kind),
        ),
        Err(e) => (Outcome::Unknown, Vec::new(), e.to_string()),
    };
    TokenReach {
        provider: provider.to_owned(),
        env: env.to_owned(),
        checked_at: crate::time::rfc3339(crate::time::unix_secs(now)),
        outcome,
        detail,
        reaches,
    }
}

async fn ask(
    client: &reqwest::Client,
    config: &ProviderConfig,
    token: &SecretString,
) -> Result<Option<(Vec<String>, &'static str)>, AskError> {
    let base = config.upstream().unwrap_or_default().trim_end_matches('/');
    match config.kind {
        ProviderKind::Railway => {
            let url = format!("{base}/graphql/v2");
            let scoped = post_graphql(
                client,
                config,
                token,
                &url,
                "{ projectToken { projectId environmentId } }",
            )
            .await?;
            let projects = if scoped.pointer("/data/projectToken").is_some_and(|v| !v.is_null()) {
                None
            } else {
                Some(
                    post_graphql(
                        client,
                        config,
                        token,
                        &url,
                        "{ projects { edges { node { id environments { edges { node { id name } } } } } } }",
                    )
                    .await?,
                )
            };
            Ok(Some((railway_environments(&scoped, projects.as_ref()), RAILWAY_REACH)))
        }
        ProviderKind::Github => {
            let installation = get(
                client,
                config,
                token,
                &format!("{base}/installation/repositories?per_page=100"),
            )
            .await;
            let answer = match installation {
                Ok(answer) => answer,
                Err(AskError::Status(401 | 403 | 404)) => {
                    get(client, config, token, &format!("{base}/user/repos?per_page=100")).await?
                }
                Err(e) => return Err(e),
            };
            Ok(Some((github_repositories(&answer), GITHUB_REACH)))
        }
        ProviderKind::Http | ProviderKind::Postgres => Ok(None),
    }
}

fn authorized(
    request: reqwest::RequestBuilder,
    config: &ProviderConfig,
    token: &SecretString,
) -> reqwest::RequestBuilder {
    let mut value =
        match reqwest::header::HeaderValue::from_str(&format!("{}{}", config.auth.prefix, token.expose_secret())) {
            Ok(v) => v,
            Err(_) => return request,
        };
    value.set_sensitive(true);
    request.header(config.auth.header.as_str(), value)
}

async fn post_graphql(
    client: &reqwest::Client,
    config: &ProviderConfig,
    token: &SecretString,
    url: &str,
    query: &str,
) -> Result<Value, AskError> {
    let request = client.post(url).json(&json!({ "query": query }));
    answer(authorized(request, config, token).send().await).await
}

async fn get(
    client: &reqwest::Client,
    config: &ProviderConfig,
    token: &SecretString,
    url: &str,
) -> Result<Value, AskError> {
    let request = client
        .get(url)
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "valetkey");
    answer(authorized(request, config, token).send().await).await
}

async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Value, AskError> {
    let response = sent.map_err(|e| AskError::Unreachable(crate::proxy::error_chain(e)))?;
    if !response.status().is_success() {
        return Err(AskError::Status(response.status().as_u16()));
    }
    response.json().await.map_err(|_| AskError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ProviderResources {
        let entry = |kind: &str, id: &str, env: &str| ((kind.to_owned(), id.to_owned()), vec![env.to_owned()]);
        ProviderResources {
            owners: [
                entry("environment", "env_stg", "staging"),
                entry("environment", "env_prod", "production"),
                entry("repository", "acme/api", "staging"),
                entry("repository", "acme/infra", "production"),
            ]
            .into(),
            unknown_reads: false,
            case_insensitive: ["repository".to_owned()].into(),
        }
    }

    #[test]
    fn a_staging_token_that_reaches_production_is_a_finding() {
        let (outcome, reaches, detail) = reach("staging", &["env_prod".into()], &map(), "environment", "environments");
        assert_eq!(outcome, Outcome::Finding);
        assert_eq!(reaches, ["production"]);
        assert!(detail.contains("environments of production"), "{detail}");

        let (outcome, _, _) = reach(
            "staging",
            &["env_stg".into(), "env_prod".into()],
            &map(),
            "environment",
            "environments",
        );
        assert_eq!(outcome, Outcome::Finding);
    }

    #[test]
    fn a_confined_token_is_not_a_finding_and_unmapped_ids_are_named() {
        let (outcome, reaches, detail) = reach("staging", &["env_stg".into()], &map(), "environment", "environments");
        assert_eq!((outcome, reaches), (Outcome::Confined, vec!["staging".to_owned()]));
        assert!(detail.contains("1 environments of `staging` only"), "{detail}");
        let (outcome, _, detail) = reach(
            "staging",
            &["Acme/API".into(), "acme/new".into()],
            &map(),
            "repository",
            "repositories",
        );
        assert_eq!(outcome, Outcome::Confined);
        assert!(detail.contains("acme/new"), "{detail}");
        let (outcome, _, _) = reach("staging", &[], &map(), "repository", "repositories");
        assert_eq!(outcome, Outcome::Unknown);
    }

    #[test]
    fn provider_answers_are_read_into_ids() {
        let project = json!({ "data": { "projectToken": { "projectId": "p", "environmentId": "env_prod" } } });
        assert_eq!(railway_environments(&project, None), ["env_prod"]);
        let account = json!({ "data": { "projects": { "edges": [
            { "node": { "id": "p", "environments": { "edges": [{ "node": { "id": "env_stg" } }, { "node": { "id": "env_prod" } }] } } }
        ] } } });
        let not_project = json!({ "errors": [{ "message": "Not Authorized" }], "data": null });
        assert_eq!(
            railway_environments(&not_project, Some(&account)),
            ["env_stg", "env_prod"]
        );

        let installation = json!({ "total_count": 1, "repositories": [{ "full_name": "acme/api" }] });
        assert_eq!(github_repositories(&installation), ["acme/api"]);
        let user = json!([{ "full_name": "acme/api" }, { "full_name": "acme/infra" }]);
        assert_eq!(github_repositories(&user), ["acme/api", "acme/infra"]);
    }
}
