//! The proxy's test corpus: requests an agent might send, evasions included,
//! and what the broker must answer to each under the fixture's configuration
//! (a staging credential with every grantable scope). One table drives the
//! proxy tests and the `check` tests, so the two cannot drift apart.
#![allow(dead_code)]

use serde_json::{Value, json};

/// Written in a case where the agent's credential goes: replaced by it
/// when the case is sent.
pub const CREDENTIAL: &str = "{credential}";

#[derive(Clone)]
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
    /// The case with the agent's credential where it says `{credential}`.
    pub fn with_credential(&self, credential: &str) -> Case {
        Case {
            target: self.target.replace(CREDENTIAL, credential),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (*n, v.replace(CREDENTIAL, credential)))
                .collect(),
            body: self.body.as_ref().map(|b| b.replace(CREDENTIAL, credential)),
            ..self.clone()
        }
    }

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
            json!({ "query": "{ metrics(volumeId: \"vol_prod_only\", measurements: [DISK_USAGE_GB], startDate: \"2026-11-01T00:00:00Z\") { measurement } }" }),
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
            json!({ "query": format!("{{ {}id{} }}", "project(id: \"proj_1\") { ".repeat(17), " }".repeat(17)) }),
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
            "malformed_request",
        ),
        rest(
            "a dot segment",
            "github",
            "DELETE",
            "/repos/acme/x/../api",
            "malformed_request",
        ),
        rest(
            "slashes and dots",
            "github",
            "DELETE",
            "//repos/acme/./api/",
            "malformed_request",
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
            "malformed_request",
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
            "GitHub's GraphQL API without a document",
            "github",
            "POST",
            "/graphql",
            "unsupported_media_type",
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
    cases.extend(ambiguity());
    cases.extend(paths_and_methods());
    cases.extend(bound_reads());
    cases.extend(overrides());
    cases.extend(misplaced());
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

/// Class 1: what a server could resolve another way than the broker.
fn ambiguity() -> Vec<Case> {
    let upsert = |input: &str| json!({ "query": format!("mutation {{ variableUpsert(input: {input}) }}") });
    vec![
        graphql(
            "an input object naming a field twice",
            upsert("{ projectId: \"proj_1\", environmentId: \"env_stg\", environmentId: \"env_prod\", serviceId: \"svc_api\", name: \"K\", value: \"v\" }"),
            "malformed_request",
        ),
        graphql(
            "a nested input object naming a field twice",
            upsert("{ environmentId: \"env_stg\", meta: { tags: [{ environmentId: \"env_stg\", environmentId: \"env_prod\" }] } }"),
            "malformed_request",
        ),
        Case {
            body: Some(r#"{"query": "mutation($i: VariableUpsertInput!) { variableUpsert(input: $i) }", "variables": {"i": {"environmentId": "env_stg", "environmentId": "env_prod"}}}"#.into()),
            ..graphql("variables naming a field twice", json!({}), "malformed_request")
        },
        graphql(
            "an argument named twice",
            json!({ "query": "mutation { volumeDelete(volumeId: \"vol_scratch\", volumeId: \"vol_prod_only\") }" }),
            "malformed_request",
        ),
        graphql(
            "a variable defined twice",
            json!({ "query": "mutation($v: String!, $v: String!) { volumeDelete(volumeId: $v) }", "variables": { "v": "vol_scratch" } }),
            "malformed_request",
        ),
        graphql(
            "two fields under one response key",
            json!({ "query": "{ v: project(id: \"proj_1\") { id } v: environment(id: \"env_prod\") { id } }" }),
            "malformed_request",
        ),
        graphql(
            "two operations and no operationName",
            json!({ "query": "query A { me { name } } mutation B { volumeDelete(volumeId: \"vol_db\") }" }),
            "malformed_request",
        ),
        graphql(
            "a directive the broker does not evaluate",
            json!({ "query": "{ project(id: \"proj_1\") @defer { name } }" }),
            "malformed_request",
        ),
        graphql(
            "a skipped field still parsed and its kept neighbour classified",
            json!({ "query": "mutation { a: volumeDelete(volumeId: \"vol_prod_only\") @skip(if: true) b: volumeDelete(volumeId: \"vol_db\") }" }),
            "shared_resource",
        ),
        Case {
            headers: vec![("content-type", "application/json; charset=utf-8; charset=utf-16".into())],
            ..graphql("a content type naming its charset twice", json!({ "query": "{ me { name } }" }), "malformed_request")
        },
        Case {
            headers: vec![("content-type", "application/json; charset=utf-16".into())],
            ..graphql("a body in another charset", json!({ "query": "{ me { name } }" }), "unsupported_media_type")
        },
        Case {
            headers: vec![
                ("content-type", "application/json".into()),
                ("connection", "keep-alive, Content-Type".into()),
            ],
            ..graphql("a Connection header naming the content type", json!({ "query": "{ me { name } }" }), "malformed_request")
        },
        Case {
            headers: vec![("connection", "authorization".into())],
            ..rest("a Connection header naming the credential header", "github", "GET", "/repos/acme/api/pulls", "malformed_request")
        },
        graphql(
            "a batch of two reads",
            json!([{ "query": "{ me { name } }" }, { "query": "{ me { id } }", "operationName": null }]),
            "allow",
        ),
        Case {
            body: Some(r#"[{"query": "{ me { name } }"}, {"query": "{ me { id } }", "query": "mutation { volumeDelete(volumeId: \"vol_db\") }"}]"#.into()),
            ..graphql("a batch hiding a duplicate key", json!({}), "malformed_request")
        },
    ]
}

/// Class 3: paths and methods with one meaning or none.
fn paths_and_methods() -> Vec<Case> {
    vec![
        rest(
            "an encoded slash in a segment",
            "github",
            "GET",
            "/repos/acme/api%2F..%2Finfra/contents/x",
            "malformed_request",
        ),
        rest(
            "an encoded dot-dot-slash",
            "github",
            "GET",
            "/repos/acme/api/contents/..%2F..%2Finfra",
            "malformed_request",
        ),
        rest(
            "an overlong UTF-8 dot",
            "github",
            "GET",
            "/repos/acme/%c0%ae%c0%ae/infra/contents/x",
            "malformed_request",
        ),
        rest(
            "an encoded NUL",
            "github",
            "GET",
            "/repos/acme/api%00/contents/x",
            "malformed_request",
        ),
        rest(
            "a double-encoded dot segment",
            "github",
            "GET",
            "/repos/acme/%252e%252e/infra",
            "malformed_request",
        ),
        rest(
            "a matrix parameter",
            "github",
            "DELETE",
            "/repos/acme/api;jsessionid=1",
            "malformed_request",
        ),
        rest(
            "an encoded semicolon",
            "github",
            "GET",
            "/repos/acme/infra%3Bx/contents/x",
            "malformed_request",
        ),
        rest(
            "an empty segment",
            "github",
            "GET",
            "/repos//acme/api",
            "malformed_request",
        ),
        rest(
            "a trailing slash",
            "github",
            "GET",
            "/repos/acme/api/contents/README.md/",
            "allow",
        ),
        rest(
            "a method in lower case",
            "github",
            "delete",
            "/repos/acme/api",
            "malformed_request",
        ),
        rest(
            "a method in mixed case",
            "github",
            "Get",
            "/repos/acme/api/pulls",
            "malformed_request",
        ),
        rest("TRACE", "github", "TRACE", "/repos/acme/api", "method_refused"),
        rest("OPTIONS", "github", "OPTIONS", "/repos/acme/api", "unknown_operation"),
        rest("HEAD reads as GET", "github", "HEAD", "/repos/acme/api", "allow"),
        rest(
            "a GraphQL request by PUT",
            "railway",
            "PUT",
            "/graphql/v2",
            "malformed_request",
        ),
    ]
}

/// Class 4: reads must name what they read, and writes that run code later
/// need their own scope.
fn bound_reads() -> Vec<Case> {
    let tree = |path: &str| {
        json!({ "base_tree": "abc", "tree": [{ "path": path, "mode": "100644", "type": "blob", "content": "x" }] })
            .to_string()
    };
    vec![
        rest(
            "a repository by number",
            "github",
            "GET",
            "/repositories/4242",
            "unknown_operation",
        ),
        rest(
            "a repository's file by number",
            "github",
            "GET",
            "/repositories/4242/contents/prod.tf",
            "unknown_operation",
        ),
        rest(
            "a search naming production",
            "github",
            "GET",
            "/search/code?q=repo:acme/infra+password",
            "unknown_operation",
        ),
        rest(
            "every repository of the token",
            "github",
            "GET",
            "/user/repos",
            "unknown_operation",
        ),
        rest(
            "an unmapped organization",
            "github",
            "GET",
            "/orgs/acme/repos",
            "unknown_resource",
        ),
        rest("the token's own identity", "github", "GET", "/user", "allow"),
        rest("rate limits", "github", "GET", "/rate_limit", "allow"),
        rest(
            "an issue of a staging repository",
            "github",
            "GET",
            "/repos/acme/api/issues/1",
            "allow",
        ),
        rest(
            "an issue of a production repository",
            "github",
            "GET",
            "/repos/acme/infra/issues/1",
            "credential_mismatch",
        ),
        rest(
            "a fullwidth dot-dot, which an NFKC server reads as `..`",
            "github",
            "GET",
            "/repos/acme/api/%EF%BC%8E%EF%BC%8E/infra",
            "malformed_request",
        ),
        rest(
            "a route GitHub does not have",
            "github",
            "GET",
            "/repos/acme/api/something-new",
            "unknown_operation",
        ),
        graphql(
            "every project of the account",
            json!({ "query": "{ projects { edges { node { id name } } } }" }),
            "unknown_operation",
        ),
        graphql("who the token is", json!({ "query": "{ me { name email } }" }), "allow"),
        graphql(
            "projects under who the token is",
            json!({ "query": "{ me { projects { edges { node { environments { edges { node { id } } } } } } } }" }),
            "unknown_operation",
        ),
        graphql(
            "the environments of a shared project",
            json!({ "query": "{ environments(projectId: \"proj_1\") { edges { node { id name } } } }" }),
            "shared_resource",
        ),
        graphql(
            "a shared project's services and environments by id and name (a directory)",
            json!({ "query": "{ project(id: \"proj_1\") { services { edges { node { id name } } } environments { edges { node { id name } } } } }" }),
            "allow",
        ),
        graphql(
            "a shared project's deployments, read through the project",
            json!({ "query": "{ project(id: \"proj_1\") { deployments { edges { node { id } } } } }" }),
            "shared_resource",
        ),
        graphql(
            "a shared project's deployments, by what they refer to through an interface",
            json!({ "query": "{ project(id: \"proj_1\") { deployments { edges { node { ... on Node { id } environment { id } } } } } }" }),
            "shared_resource",
        ),
        graphql(
            "a shared project's own fields",
            json!({ "query": "{ project(id: \"proj_1\") { id name } }" }),
            "allow",
        ),
        graphql(
            "our environment's service instances, their deployments and whose service each is",
            json!({ "query": "{ environment(id: \"env_stg\") { name serviceInstances { edges { node { serviceName latestDeployment { id status } service { id name } } } } variables { edges { node { name } } } } }" }),
            "allow",
        ),
        graphql(
            "the decrypted variables of the environment ours was forked from",
            json!({ "query": "{ environment(id: \"env_stg\") { sourceEnvironment { config(decryptVariables: true) } } }" }),
            "shared_resource",
        ),
        graphql(
            "every environment's deployments of a service, reached from our environment",
            json!({ "query": "{ environment(id: \"env_stg\") { serviceInstances { edges { node { service { deployments { edges { node { id url } } } } } } } } }" }),
            "shared_resource",
        ),
        graphql(
            "a volume's instances everywhere, through a fragment and aliases",
            json!({ "query": "query Q { e: environment(id: \"env_stg\") { ...V } } fragment V on Environment { volumeInstances { edges { node { v: volume { all: volumeInstances { edges { node { environmentId mountPath } } } } } } } }" }),
            "shared_resource",
        ),
        graphql(
            "another environment's services, through an inline fragment on the reference",
            json!({ "query": "{ environment(id: \"env_stg\") { sourceEnvironment { ... on Environment { serviceInstances { edges { node { id } } } } } } }" }),
            "shared_resource",
        ),
        graphql(
            "a field Railway's schema does not have, under our environment",
            json!({ "query": "{ environment(id: \"env_stg\") { secrets { name value } } }" }),
            "unknown_operation",
        ),
        graphql(
            "a shared project's deployments beside a nested field naming our environment",
            json!({ "query": "{ project(id: \"proj_1\") { deployments { edges { node { id } } } e: environment(id: \"env_stg\") { id } } }" }),
            "shared_resource",
        ),
        graphql(
            "every environment's instances of a shared volume, leaves only",
            json!({ "query": "{ adminVolumeInstancesForVolume(volumeId: \"vol_db\") { environmentId mountPath currentSizeMB } }" }),
            "shared_resource",
        ),
        graphql(
            "a shared project's usage, by environment",
            json!({ "query": "{ usage(projectId: \"proj_1\", measurements: [CPU_USAGE], groupBy: [ENVIRONMENT_ID]) { measurement value } }" }),
            "shared_resource",
        ),
        graphql(
            "our environment's instances, as the Railway CLI reads them (with the shared project)",
            json!({ "query": "query EnvironmentInstances($id: String!) { environment(id: $id, projectId: \"proj_1\") { serviceInstances { edges { node { id serviceName } } } volumeInstances { edges { node { id mountPath } } } } }", "variables": { "id": "env_stg" } }),
            "allow",
        ),
        graphql(
            "Railway's regions, for a shared project",
            json!({ "query": "{ regions(projectId: \"proj_1\") { name country deploymentConstraints { deprecationInfo { isDeprecated } } } }" }),
            "allow",
        ),
        graphql(
            "a shared service's settings, which Railway changes in every environment that is not a fork",
            json!({ "query": "mutation { serviceInstanceUpdate(serviceId: \"svc_api\", environmentId: \"env_stg\", input: { startCommand: \"x\" }) }" }),
            "shared_resource",
        ),
        graphql(
            "a variable of a shared service, our environment named only deep inside a value",
            json!({ "query": "mutation { variableUpsert(input: { projectId: \"proj_1\", serviceId: \"svc_api\", name: \"A\", value: \"b\", extra: { environmentId: \"env_stg\" } }) }" }),
            "shared_resource",
        ),
        graphql(
            "an admin invite code to the whole project",
            json!({ "query": "{ projectInviteCode(projectId: \"proj_1\", role: ADMIN) { code } }" }),
            "unknown_operation",
        ),
        graphql(
            "a bucket's S3 credentials",
            json!({ "query": "{ bucketS3Credentials(projectId: \"proj_1\", environmentId: \"env_stg\", bucketId: \"b\") { accessKeyId secretAccessKey } }" }),
            "unknown_operation",
        ),
        graphql(
            "an id past 2^53, which a JavaScript server rounds",
            json!({ "query": "{ project(id: 9007199254740993) { id } }" }),
            "malformed_request",
        ),
        graphql(
            "projects by a list of ids",
            json!({ "query": "{ projectsByIds(ids: [\"proj_1\"]) { id } }" }),
            "unknown_operation",
        ),
        graphql(
            "a query field Railway may add",
            json!({ "query": "{ somethingNew(id: \"x\") { id } }" }),
            "unknown_operation",
        ),
        Case {
            headers: vec![("content-type", "application/json".into())],
            body: Some(json!({ "message": "ci", "content": "b24=" }).to_string()),
            ..rest(
                "a workflow through the contents API",
                "github",
                "PUT",
                "/repos/acme/api/contents/.github/workflows/deploy.yml",
                "scope_not_granted",
            )
        },
        Case {
            headers: vec![("content-type", "application/json".into())],
            body: Some(tree(".github/workflows/deploy.yml")),
            ..rest(
                "a workflow through a git tree",
                "github",
                "POST",
                "/repos/acme/api/git/trees",
                "scope_not_granted",
            )
        },
        Case {
            headers: vec![("content-type", "application/json".into())],
            body: Some(tree("src/lib.rs")),
            ..rest(
                "a git tree of ordinary files",
                "github",
                "POST",
                "/repos/acme/api/git/trees",
                "allow",
            )
        },
    ]
}

/// Class 5: a method override in every spelling and place.
fn overrides() -> Vec<Case> {
    let mut cases = Vec::new();
    for header in ["X_HTTP_Method_Override", "x-http-method", "X-Original-Method"] {
        cases.push(Case {
            headers: vec![(header, "DELETE".into())],
            ..rest(
                "a method-override header, spelled otherwise",
                "github",
                "GET",
                "/repos/acme/api/pulls",
                "method_override_refused",
            )
        });
    }
    for query in ["%5Fmethod=DELETE", "_METHOD=DELETE", "x-http-method-override=DELETE"] {
        cases.push(rest(
            "a method-override parameter, spelled otherwise",
            "github",
            "POST",
            &format!("/repos/acme/api/pulls?{query}"),
            "method_override_refused",
        ));
    }
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", "text=hi&_method=DELETE".to_owned()),
        (
            "multipart/form-data; boundary=XyZ",
            "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n".to_owned(),
        ),
        ("application/json", r#"{"text": "hi", "_method": "DELETE"}"#.to_owned()),
    ] {
        cases.push(Case {
            headers: vec![("content-type", content_type.into())],
            body: Some(body),
            ..rest(
                "a method override in the body",
                "api",
                "POST",
                "/v1/items/7/notes",
                "method_override_refused",
            )
        });
    }
    cases.push(Case {
        headers: vec![("content-type", "application/json".into())],
        body: Some(r#"{"text": "hi"}"#.into()),
        ..rest("a note on an item", "api", "POST", "/v1/items/7/notes", "allow")
    });
    cases
}

/// Class 6: the agent's credential anywhere a provider would receive it.
fn misplaced() -> Vec<Case> {
    vec![
        Case {
            headers: vec![("x-api-key", CREDENTIAL.into())],
            ..rest(
                "the credential in another header",
                "github",
                "GET",
                "/repos/acme/api/pulls",
                "credential_misplaced",
            )
        },
        Case {
            headers: vec![("cookie", format!("session=1; token={CREDENTIAL}"))],
            ..rest(
                "the credential in a cookie",
                "github",
                "GET",
                "/repos/acme/api/pulls",
                "credential_misplaced",
            )
        },
        rest(
            "the credential in the query string",
            "github",
            "GET",
            &format!("/repos/acme/api/pulls?access_token={CREDENTIAL}"),
            "credential_misplaced",
        ),
        graphql(
            "the credential in a GraphQL variable",
            json!({ "query": "mutation($v: String!) { variableUpsert(input: { projectId: \"proj_1\", environmentId: \"env_stg\", serviceId: \"svc_api\", name: \"TOKEN\", value: $v }) }", "variables": { "v": CREDENTIAL } }),
            "credential_misplaced",
        ),
        Case {
            headers: vec![("x-doc", "send vk1.eyJ... as a bearer token".into())],
            ..rest(
                "a header that only mentions the format",
                "github",
                "GET",
                "/repos/acme/api/issues",
                "allow",
            )
        },
    ]
}
