//! The proxy's test corpus: requests an agent might send, evasions included,
//! and what the broker must answer to each under the fixture's configuration
//! (a staging credential with every grantable scope). One table drives the
//! proxy tests and the `check` tests, so the two cannot drift apart.
#![allow(dead_code)]

use serde_json::{Value, json};

pub struct Case {
    pub name: &'static str,
    pub provider: &'static str,
    pub method: &'static str,
    /// Path under `/p/{provider}`, query string included, byte for byte.
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
    /// `allow`, or the problem type of the refusal.
    pub expect: &'static str,
}

impl Case {
    /// The `/v1/check` request describing this case.
    pub fn as_check(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Value::String(v.clone())))
            .collect();
        json!({
            "provider": self.provider,
            "method": self.method,
            "path": self.target,
            "headers": headers,
            "body": self.body,
        })
    }
}

fn graphql(name: &'static str, body: Value, expect: &'static str) -> Case {
    Case {
        name,
        provider: "railway",
        method: "POST",
        target: "/graphql/v2".into(),
        headers: vec![("content-type", "application/json".into())],
        body: Some(body.to_string()),
        expect,
    }
}

fn rest(name: &'static str, provider: &'static str, method: &'static str, target: &str, expect: &'static str) -> Case {
    Case {
        name,
        provider,
        method,
        target: target.into(),
        headers: vec![],
        body: None,
        expect,
    }
}

pub fn cases() -> Vec<Case> {
    let incident = "mutation { volumeDelete(volumeId: \"vol_db\") }";
    let mut cases = vec![
        graphql("the incident", json!({ "query": incident }), "shared_resource"),
        graphql(
            "a staging-only volume",
            json!({ "query": "mutation { volumeDelete(volumeId: \"vol_scratch\") }" }),
            "approval_required",
        ),
        graphql(
            "a production volume",
            json!({ "query": "mutation { volumeDelete(volumeId: \"vol_prod_only\") }" }),
            "credential_mismatch",
        ),
        graphql(
            "reading production",
            json!({ "query": "{ volume(id: \"vol_prod_only\") { name } }" }),
            "credential_mismatch",
        ),
        graphql(
            "an alias",
            json!({ "query": "mutation { ok: volumeDelete(volumeId: \"vol_db\") }" }),
            "shared_resource",
        ),
        graphql(
            "a fragment",
            json!({ "query": "mutation { ...Gone } fragment Gone on Mutation { volumeDelete(volumeId: \"vol_db\") }" }),
            "shared_resource",
        ),
        graphql(
            "an inline fragment",
            json!({ "query": "mutation { ... on Mutation { volumeDelete(volumeId: \"vol_db\") } }" }),
            "shared_resource",
        ),
        graphql(
            "a variable",
            json!({ "query": "mutation D($v: String!) { volumeDelete(volumeId: $v) }", "variables": { "v": "vol_db" } }),
            "shared_resource",
        ),
        graphql(
            "a default value",
            json!({ "query": "mutation D($v: String! = \"vol_db\") { volumeDelete(volumeId: $v) }" }),
            "shared_resource",
        ),
        graphql(
            "a mutation behind operationName",
            json!({
                "query": "query Harmless { me { name } } mutation Drop { volumeDelete(volumeId: \"vol_db\") }",
                "operationName": "Harmless"
            }),
            "shared_resource",
        ),
        graphql(
            "comments and string escapes",
            json!({ "query": "mutation {\n# volumeDelete(volumeId: \"vol_scratch\")\n volumeDelete(volumeId: \"vol\\u005fdb\") }" }),
            "shared_resource",
        ),
        graphql(
            "a batched array",
            json!([{ "query": "{ me { name } }" }, { "query": incident }]),
            "shared_resource",
        ),
        graphql(
            "an unknown mutation",
            json!({ "query": "mutation { volumeWipe(volumeId: \"vol_scratch\") }" }),
            "unknown_operation",
        ),
        graphql(
            "a redeploy pinned to production's environment",
            json!({ "query": "mutation { serviceInstanceRedeploy(serviceId: \"svc_api\", environmentId: \"env_prod\") }" }),
            "credential_mismatch",
        ),
        graphql(
            "a write naming no resource",
            json!({ "query": "mutation { variableUpsert(input: { name: \"K\", value: \"v\" }) }" }),
            "unknown_resource",
        ),
        graphql(
            "a persisted query",
            json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" } } }),
            "persisted_query_refused",
        ),
        graphql(
            "a subscription",
            json!({ "query": "subscription { deploymentLogs(deploymentId: \"d\") { message } }" }),
            "subscription_refused",
        ),
        graphql(
            "a document too deep",
            json!({ "query": format!("{{ {}id{} }}", "project(id: \"proj_1\") { ".repeat(13), " }".repeat(13)) }),
            "request_too_complex",
        ),
        Case {
            body: Some(
                r#"{"query": "{ me { name } }", "query": "mutation { volumeDelete(volumeId: \"vol_db\") }"}"#.into(),
            ),
            ..graphql("duplicate JSON keys", json!({}), "malformed_request")
        },
        Case {
            headers: vec![
                ("content-type", "application/json".into()),
                ("content-encoding", "gzip".into()),
            ],
            ..graphql(
                "an encoded body",
                json!({ "query": "{ me { name } }" }),
                "unsupported_media_type",
            )
        },
        Case {
            headers: vec![("content-type", "application/graphql".into())],
            body: Some(incident.into()),
            ..graphql("application/graphql", json!({}), "shared_resource")
        },
        Case {
            method: "GET",
            target: format!(
                "/graphql/v2?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("query", incident)
                    .finish()
            ),
            headers: vec![],
            body: None,
            ..graphql("a GET carrying a mutation", json!({}), "shared_resource")
        },
        Case {
            target: "/graphql/internal".into(),
            ..graphql(
                "another path on the host",
                json!({ "query": "{ me { name } }" }),
                "unknown_operation",
            )
        },
        graphql(
            "reading a project",
            json!({ "query": "query P($id: String!) { project(id: $id) { name } }", "variables": { "id": "proj_1" } }),
            "allow",
        ),
        graphql(
            "redeploying the staging instance of a shared service",
            json!({ "query": "mutation { serviceInstanceRedeploy(serviceId: \"svc_api\", environmentId: \"env_stg\") }" }),
            "allow",
        ),
        rest(
            "deleting a repository",
            "github",
            "DELETE",
            "/repos/acme/api",
            "approval_required",
        ),
        rest(
            "an encoded dot segment",
            "github",
            "DELETE",
            "/repos/acme/x/%2e%2e/api",
            "approval_required",
        ),
        rest(
            "a dot segment",
            "github",
            "DELETE",
            "/repos/acme/x/../api",
            "approval_required",
        ),
        rest(
            "slashes and dots",
            "github",
            "DELETE",
            "//repos/acme/./api/",
            "approval_required",
        ),
        rest(
            "case and encoding",
            "github",
            "DELETE",
            "/REPOS/acme/%61pi",
            "approval_required",
        ),
        rest(
            "deleting a branch",
            "github",
            "DELETE",
            "/repos/acme/api/git/refs/heads/main",
            "approval_required",
        ),
        rest(
            "moving a branch",
            "github",
            "PATCH",
            "/repos/acme/api/git/refs/heads/main",
            "approval_required",
        ),
        rest(
            "removing branch protection",
            "github",
            "DELETE",
            "/repos/acme/api/branches/main/protection",
            "approval_required",
        ),
        rest(
            "another environment's repository",
            "github",
            "GET",
            "/repos/acme/infra/contents/prod.tf",
            "credential_mismatch",
        ),
        rest(
            "climbing into another repository",
            "github",
            "GET",
            "/repos/acme/api/%2e%2e/infra/contents/prod.tf",
            "credential_mismatch",
        ),
        rest(
            "an unmapped repository",
            "github",
            "PUT",
            "/repos/acme/unmapped/contents/x",
            "unknown_resource",
        ),
        rest(
            "a scope not held",
            "github",
            "POST",
            "/repos/acme/api/issues",
            "scope_not_granted",
        ),
        rest(
            "GitHub's GraphQL API",
            "github",
            "POST",
            "/graphql",
            "unknown_operation",
        ),
        rest(
            "climbing above the root",
            "github",
            "GET",
            "/repos/acme/api/%2e%2e/%2e%2e/%2e%2e/%2e%2e",
            "malformed_request",
        ),
        rest(
            "an encoded backslash",
            "github",
            "GET",
            "/repos/acme/api%5C..%5Cinfra",
            "malformed_request",
        ),
        rest(
            "the _method parameter",
            "github",
            "POST",
            "/repos/acme/api/pulls?_method=DELETE",
            "method_override_refused",
        ),
        rest(
            "reading content",
            "github",
            "GET",
            "/repos/acme/api/contents/README.md",
            "allow",
        ),
        rest(
            "listing issues",
            "github",
            "GET",
            "/repos/Acme/API/issues?state=open",
            "allow",
        ),
        rest("an http rule", "api", "DELETE", "/v1/items/7", "approval_required"),
        rest("an http read of an unknown id", "api", "GET", "/v1/items/99", "allow"),
        rest(
            "an http write of an unknown id",
            "api",
            "POST",
            "/v1/items/8/notes",
            "unknown_resource",
        ),
        rest(
            "an http request no rule names",
            "api",
            "PUT",
            "/v1/other",
            "unknown_operation",
        ),
    ];
    for header in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"] {
        cases.push(Case {
            headers: vec![(header, "DELETE".into())],
            ..rest(
                "a method-override header",
                "github",
                "POST",
                "/repos/acme/api/pulls",
                "method_override_refused",
            )
        });
    }
    cases
}
