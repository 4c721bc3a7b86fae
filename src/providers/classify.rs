//! Classification: an HTTP request to a provider → the operations it would
//! perform and the canonical path to forward. Pure: the request comes in as
//! plain parts, the rules were compiled once at start.
//!
//! Rules from ops' configuration are tried before the pack's. When both name
//! a request, the stricter tier wins: ops extend a pack, never weaken it.

use std::collections::{BTreeMap, BTreeSet};

use http::{HeaderMap, Method};

use super::ProviderKind;
use super::graphql::{self, GraphqlLimits, IdSpec, OperationType, RootField};
use super::pack::{CompiledRule, Matcher, OperationRule};
use super::rest;
use crate::policy::{Operation, ResourceRef, Tier};

/// Headers that ask a server to treat a request as another method. The
/// broker classifies the method it sees, so these are refused outright.
const METHOD_OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(
        "persisted queries are refused: the broker must see the document it forwards, and a hash names a document it cannot see"
    )]
    PersistedQuery,
    #[error(
        "GraphQL subscriptions are refused: the broker forwards requests it can classify once, not long-lived streams"
    )]
    Subscription,
    #[error("the request has {found} {what}, over the limit of {limit}")]
    TooComplex {
        what: &'static str,
        limit: usize,
        found: usize,
    },
    #[error(
        "the request carries `{header}`, which asks the server to treat it as another method; send the real method instead"
    )]
    MethodOverride { header: String },
}

impl ClassifyError {
    /// The reason as the audit trail keeps it. A malformed request's detail
    /// may quote the request (a parser names the token it choked on, which
    /// can be a variable's value), so only the agent, who sent it, sees that.
    pub fn audit_reason(&self) -> String {
        match self {
            ClassifyError::Malformed(_) => "the request cannot be read one way only".to_owned(),
            other => other.to_string(),
        }
    }

    /// The stable problem type.
    pub fn kind(&self) -> &'static str {
        match self {
            ClassifyError::Malformed(_) => "malformed_request",
            ClassifyError::UnsupportedMediaType(_) => "unsupported_media_type",
            ClassifyError::PersistedQuery => "persisted_query_refused",
            ClassifyError::Subscription => "subscription_refused",
            ClassifyError::TooComplex { .. } => "request_too_complex",
            ClassifyError::MethodOverride { .. } => "method_override_refused",
        }
    }
}

/// A request as classification sees it. `path` is the raw path after
/// `/p/{provider}`; `body` is present when `needs_body` said so.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub operations: Vec<Operation>,
    /// The canonical path, percent-encoded, to forward upstream.
    pub path: String,
}

/// One provider's compiled rules.
#[derive(Debug, Clone)]
pub struct Classifier {
    ops_rules: Vec<CompiledRule>,
    pack_rules: Vec<CompiledRule>,
    graphql: Option<GraphqlSpec>,
}

#[derive(Debug, Clone)]
struct GraphqlSpec {
    paths: Vec<Vec<String>>,
    query_scope: String,
    query_tier: Tier,
    id_arguments: BTreeMap<String, String>,
    kinds: BTreeSet<String>,
    limits: GraphqlLimits,
}

/// A rule of ops' configuration that does not compile, by its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub index: usize,
    pub message: String,
}

impl Classifier {
    /// Compiles the kind's pack and ops' `extra` rules against the
    /// provider's scope tiers (pack and ops' scopes together).
    pub fn new(
        kind: ProviderKind,
        extra: &[OperationRule],
        tiers: &BTreeMap<String, Tier>,
        limits: GraphqlLimits,
    ) -> Result<Classifier, Vec<RuleError>> {
        let pack = kind.pack();
        let pack_rules = pack
            .operations
            .iter()
            .map(|r| CompiledRule::compile(r, kind, tiers))
            .collect::<Result<Vec<_>, String>>()
            .unwrap_or_else(|e| panic!("built-in rule pack `{kind}` has a bad operation: {e}"));
        let mut errors = Vec::new();
        let mut ops_rules = Vec::new();
        for (index, rule) in extra.iter().enumerate() {
            match CompiledRule::compile(rule, kind, tiers) {
                Ok(r) => ops_rules.push(r),
                Err(message) => errors.push(RuleError { index, message }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let graphql = pack.graphql.as_ref().map(|g| GraphqlSpec {
            paths: g
                .paths
                .iter()
                .map(|p| rest::normalize(p).expect("built-in GraphQL path"))
                .collect(),
            query_tier: tiers.get(&g.query_scope).copied().unwrap_or(Tier::Catastrophic),
            query_scope: g.query_scope.clone(),
            kinds: g.id_arguments.values().cloned().collect(),
            id_arguments: g.id_arguments.clone(),
            limits,
        });
        Ok(Classifier {
            ops_rules,
            pack_rules,
            graphql,
        })
    }

    /// Whether the body must be read (bounded) before classification. Other
    /// bodies stream to the upstream untouched.
    pub fn needs_body(&self, method: &Method) -> bool {
        self.graphql.is_some() && *method == Method::POST
    }

    pub fn classify(&self, request: &RequestView<'_>) -> Result<Classified, ClassifyError> {
        if let Some(header) = METHOD_OVERRIDES.iter().find(|h| request.headers.contains_key(**h)) {
            return Err(ClassifyError::MethodOverride {
                header: (*header).to_owned(),
            });
        }
        if url::form_urlencoded::parse(request.query.unwrap_or_default().as_bytes()).any(|(k, _)| k == "_method") {
            return Err(ClassifyError::MethodOverride {
                header: "_method".into(),
            });
        }
        let segments = rest::normalize(request.path).map_err(ClassifyError::Malformed)?;
        let path = rest::encode(&segments);
        let operations = match &self.graphql {
            Some(spec) if spec.paths.contains(&segments) => self.graphql_operations(spec, request)?,
            Some(_) => vec![unknown(format!("{} {path}", request.method))],
            None => vec![self.rest_operation(request.method, &segments, &path)],
        };
        Ok(Classified { operations, path })
    }

    /// The first matching rule of ops and of the pack; the stricter if both.
    fn pick<T>(&self, matches: impl Fn(&CompiledRule) -> Option<T>) -> Option<(&CompiledRule, T)> {
        let ops = self.ops_rules.iter().find_map(|r| matches(r).map(|m| (r, m)));
        let pack = self.pack_rules.iter().find_map(|r| matches(r).map(|m| (r, m)));
        match (ops, pack) {
            (Some(ops), Some(pack)) if pack.0.tier > ops.0.tier => Some(pack),
            (Some(ops), _) => Some(ops),
            (None, pack) => pack,
        }
    }

    fn rest_operation(&self, method: &Method, segments: &[String], path: &str) -> Operation {
        let method = method.as_str();
        let picked = self.pick(|rule| match &rule.matcher {
            Matcher::Rest { method: m, pattern } => {
                let method_matches = match m.as_deref() {
                    None => true,
                    Some("GET") => method == "GET" || method == "HEAD",
                    Some(m) => m == method,
                };
                if method_matches {
                    pattern.matches(segments)
                } else {
                    None
                }
            }
            Matcher::Field { .. } => None,
        });
        let Some((rule, captures)) = picked else {
            return unknown(format!("{method} {path}"));
        };
        Operation {
            name: rule.name(),
            scope: Some(rule.scope.clone()),
            tier: rule.tier,
            resources: rule
                .resources
                .iter()
                .map(|(kind, template)| ResourceRef {
                    kind: kind.clone(),
                    id: template.render(&captures),
                })
                .collect(),
            within_environment: rule.within_environment,
        }
    }

    fn graphql_operations(
        &self,
        spec: &GraphqlSpec,
        request: &RequestView<'_>,
    ) -> Result<Vec<Operation>, ClassifyError> {
        let ids = IdSpec {
            arguments: &spec.id_arguments,
            kinds: &spec.kinds,
        };
        let fields = graphql::root_fields(
            request.method,
            request.query,
            request.headers,
            request.body,
            &spec.limits,
            &ids,
        )?;
        Ok(fields.into_iter().map(|f| self.graphql_operation(spec, f)).collect())
    }

    fn graphql_operation(&self, spec: &GraphqlSpec, field: RootField) -> Operation {
        let name = format!("{} {}", field.operation, field.name);
        let picked = self.pick(|rule| match &rule.matcher {
            Matcher::Field {
                operation,
                name,
                prefix,
            } if *operation == field.operation => {
                let hit = if *prefix {
                    field.name.starts_with(name.as_str())
                } else {
                    field.name == *name
                };
                hit.then_some(())
            }
            _ => None,
        });
        let (scope, tier, id_kind, within) = match (picked, field.operation) {
            (Some((rule, ())), _) => (
                Some(rule.scope.clone()),
                rule.tier,
                rule.id_kind.clone(),
                rule.within_environment,
            ),
            (None, OperationType::Query) => (
                Some(spec.query_scope.clone()),
                spec.query_tier,
                spec.kinds.get(&field.name).cloned(),
                false,
            ),
            (None, OperationType::Mutation) => return unknown(name),
        };
        let mut resources = Vec::new();
        graphql::collect_ids(&field.arguments, id_kind.as_deref(), &spec.id_arguments, &mut resources);
        for nested in field.nested {
            if !resources.contains(&nested) {
                resources.push(nested);
            }
        }
        Operation {
            name,
            scope,
            tier,
            resources,
            within_environment: within,
        }
    }

    /// Where a GraphQL provider's endpoint is, under the upstream.
    pub fn graphql_path(&self) -> Option<String> {
        self.graphql
            .as_ref()
            .and_then(|g| g.paths.first())
            .map(|p| rest::encode(p))
    }
}

/// An operation no rule names; refused by `policy::decide`.
fn unknown(name: String) -> Operation {
    Operation {
        name,
        scope: None,
        tier: Tier::Catastrophic,
        resources: Vec::new(),
        within_environment: false,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn classifier(kind: ProviderKind, extra: &[OperationRule]) -> Classifier {
        let tiers: BTreeMap<String, Tier> = kind.pack().scopes.iter().map(|(n, s)| (n.clone(), s.tier)).collect();
        Classifier::new(kind, extra, &tiers, GraphqlLimits::default()).unwrap()
    }

    fn railway() -> Classifier {
        classifier(ProviderKind::Railway, &[])
    }

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        h
    }

    fn post(c: &Classifier, content_type: &str, body: &str) -> Result<Classified, ClassifyError> {
        c.classify(&RequestView {
            method: &Method::POST,
            path: "/graphql/v2",
            query: None,
            headers: &headers(content_type),
            body: Some(body.as_bytes()),
        })
    }

    fn gql(body: serde_json::Value) -> Result<Vec<Operation>, ClassifyError> {
        post(&railway(), "application/json", &body.to_string()).map(|c| c.operations)
    }

    fn names(ops: &[Operation]) -> Vec<&str> {
        ops.iter().map(|o| o.name.as_str()).collect()
    }

    fn ids(op: &Operation) -> Vec<(&str, &str)> {
        op.resources.iter().map(|r| (r.kind.as_str(), r.id.as_str())).collect()
    }

    #[test]
    fn the_incident_mutation_is_a_destructive_volume_delete() {
        let ops = gql(json!({"query": "mutation { volumeDelete(volumeId: \"vol_1\") }"})).unwrap();
        assert_eq!(names(&ops), ["mutation volumeDelete"]);
        assert_eq!(ops[0].scope.as_deref(), Some("volume:delete"));
        assert_eq!(ops[0].tier, Tier::Destructive);
        assert_eq!(ids(&ops[0]), [("volume", "vol_1")]);
    }

    #[test]
    fn aliases_fragments_and_inline_fragments_do_not_hide_a_field() {
        for query in [
            "mutation { harmless: volumeDelete(volumeId: \"vol_1\") }",
            "mutation { ...F } fragment F on Mutation { volumeDelete(volumeId: \"vol_1\") }",
            "mutation { ... on Mutation { ... { volumeDelete(volumeId: \"vol_1\") } } }",
            "mutation { ...A } fragment A on Mutation { ...B } fragment B on Mutation { x: volumeDelete(volumeId: \"vol_1\") }",
            "mutation {\n # volumeDelete is a comment here\n volumeDelete(volumeId: \"vol\\u005f1\") }",
            "mutation { __typename volumeDelete(volumeId: \"\"\"vol_1\"\"\") }",
        ] {
            let ops = gql(json!({ "query": query })).unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(names(&ops), ["mutation volumeDelete"], "{query}");
            assert_eq!(ids(&ops[0]), [("volume", "vol_1")], "{query}");
        }
    }

    #[test]
    fn variables_and_their_defaults_name_the_resources() {
        let ops = gql(json!({
            "query": "mutation M($v: String!) { volumeDelete(volumeId: $v) }",
            "variables": { "v": "vol_2" }
        }))
        .unwrap();
        assert_eq!(ids(&ops[0]), [("volume", "vol_2")]);

        let ops =
            gql(json!({ "query": "mutation M($v: String! = \"vol_3\") { volumeDelete(volumeId: $v) }" })).unwrap();
        assert_eq!(ids(&ops[0]), [("volume", "vol_3")]);

        let ops = gql(json!({
            "query": "mutation U($input: VariableUpsertInput!) { variableUpsert(input: $input) }",
            "variables": { "input": { "projectId": "p1", "environmentId": "e1", "serviceId": "s1", "name": "K", "value": "secret" } }
        }))
        .unwrap();
        assert_eq!(ops[0].scope.as_deref(), Some("variable:write"));
        assert!(ops[0].within_environment);
        let mut found = ids(&ops[0]);
        found.sort();
        assert_eq!(found, [("environment", "e1"), ("project", "p1"), ("service", "s1")]);
    }

    #[test]
    fn every_operation_of_a_document_is_classified_whatever_operation_name_says() {
        let ops = gql(json!({
            "query": "query Look { me { name } } mutation Drop { volumeDelete(volumeId: \"vol_1\") }",
            "operationName": "Look"
        }))
        .unwrap();
        assert_eq!(names(&ops), ["query me", "mutation volumeDelete"]);
        let err = gql(json!({ "query": "query A { me { name } }", "operationName": "B" })).unwrap_err();
        assert_eq!(err.kind(), "malformed_request");
    }

    #[test]
    fn batched_arrays_are_classified_element_by_element() {
        let ops = gql(json!([
            { "query": "{ me { name } }" },
            { "query": "mutation { projectDelete(id: \"p1\") }" }
        ]))
        .unwrap();
        assert_eq!(names(&ops), ["query me", "mutation projectDelete"]);
        assert_eq!(ops[1].tier, Tier::Catastrophic);
        assert_eq!(ids(&ops[1]), [("project", "p1")]);
        let too_many: Vec<_> = (0..11).map(|_| json!({"query": "{ me { name } }"})).collect();
        assert_eq!(gql(json!(too_many)).unwrap_err().kind(), "request_too_complex");
        assert_eq!(gql(json!([])).unwrap_err().kind(), "malformed_request");
    }

    #[test]
    fn get_requests_and_graphql_bodies_are_read_too() {
        let c = railway();
        let query = "query=mutation%20%7B%20volumeDelete(volumeId%3A%20%22vol_1%22)%20%7D";
        let got = c
            .classify(&RequestView {
                method: &Method::GET,
                path: "/graphql/v2",
                query: Some(query),
                headers: &HeaderMap::new(),
                body: None,
            })
            .unwrap();
        assert_eq!(names(&got.operations), ["mutation volumeDelete"]);

        let got = post(
            &c,
            "application/graphql; charset=utf-8",
            "mutation { serviceDelete(id: \"s1\") }",
        )
        .unwrap();
        assert_eq!(names(&got.operations), ["mutation serviceDelete"]);
        assert_eq!(ids(&got.operations[0]), [("service", "s1")]);
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        let c = railway();
        let cases: Vec<(Result<Classified, ClassifyError>, &str)> = vec![
            (
                post(
                    &c,
                    "application/json",
                    r#"{"query": "{ me { id } }", "query": "mutation { volumeDelete(volumeId: \"v\") }"}"#,
                ),
                "malformed_request",
            ),
            (
                post(
                    &c,
                    "application/json",
                    r#"{"query": "mutation($v: String) { volumeDelete(volumeId: $v) }", "variables": {"v": "a", "v": "b"}}"#,
                ),
                "malformed_request",
            ),
            (
                post(
                    &c,
                    "application/json",
                    r#"{"query": "{ me { id } }", "documentId": "x"}"#,
                ),
                "malformed_request",
            ),
            (post(&c, "text/plain", "{ me { id } }"), "unsupported_media_type"),
            (
                post(&c, "application/json", r#"{"query": "type Query { a: Int }"}"#),
                "malformed_request",
            ),
            (
                post(
                    &c,
                    "application/json",
                    r#"{"query": "mutation { volumeDelete(volumeId: "#,
                ),
                "malformed_request",
            ),
            (
                post(&c, "application/json", r#"{"query": "{ a } { b }"}"#),
                "malformed_request",
            ),
            (
                post(
                    &c,
                    "application/json",
                    r#"{"query": "{ ...F } fragment F on Query { ...F }"}"#,
                ),
                "malformed_request",
            ),
            (
                post(&c, "application/json", r#"{"query": "subscription { logs { line } }"}"#),
                "subscription_refused",
            ),
            (
                post(
                    &c,
                    "application/json",
                    r#"{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}}"#,
                ),
                "persisted_query_refused",
            ),
            (
                post(
                    &c,
                    "application/json",
                    r#"{"query": "{ me { id } }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}}"#,
                ),
                "persisted_query_refused",
            ),
        ];
        for (i, (got, kind)) in cases.into_iter().enumerate() {
            assert_eq!(got.map(|c| c.operations).unwrap_err().kind(), kind, "case {i}");
        }

        let mut encoded = headers("application/json");
        encoded.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let got = c.classify(&RequestView {
            method: &Method::POST,
            path: "/graphql/v2",
            query: None,
            headers: &encoded,
            body: Some(b"\x1f\x8b"),
        });
        assert_eq!(got.unwrap_err().kind(), "unsupported_media_type");

        let got = c.classify(&RequestView {
            method: &Method::POST,
            path: "/graphql/v2",
            query: Some("query=%7B%20me%20%7B%20id%20%7D%20%7D"),
            headers: &headers("application/json"),
            body: Some(br#"{"query": "mutation { volumeDelete(volumeId: \"v\") }"}"#),
        });
        assert_eq!(got.unwrap_err().kind(), "malformed_request");

        let got = c.classify(&RequestView {
            method: &Method::POST,
            path: "/graphql/v2",
            query: Some("variables=%7B%22v%22%3A%22vol_prod%22%7D"),
            headers: &headers("application/json"),
            body: Some(
                br#"{"query": "mutation($v: String) { volumeDelete(volumeId: $v) }", "variables": {"v": "vol_stg"}}"#,
            ),
        });
        assert_eq!(got.unwrap_err().kind(), "malformed_request");
    }

    #[test]
    fn a_persisted_query_with_its_own_document_is_classified() {
        let query = "{ me { id } }";
        let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, query.as_bytes()));
        let ops =
            gql(json!({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})).unwrap();
        assert_eq!(names(&ops), ["query me"]);
    }

    #[test]
    fn limits_on_depth_aliases_and_size_hold() {
        let deep = format!("{{ {}x{} }}", "a { ".repeat(12), " }".repeat(12));
        assert_eq!(gql(json!({ "query": deep })).unwrap_err().kind(), "request_too_complex");
        let shallow = format!("{{ {}x{} }}", "a { ".repeat(10), " }".repeat(10));
        assert!(gql(json!({ "query": shallow })).is_ok());

        let aliases: String = (0..31).map(|i| format!("a{i}: me {{ id }} ")).collect();
        assert_eq!(
            gql(json!({ "query": format!("{{ {aliases} }}") })).unwrap_err().kind(),
            "request_too_complex"
        );
        let big = format!("{{ me {{ {} }} }}", "id ".repeat(12_000));
        assert_eq!(gql(json!({ "query": big })).unwrap_err().kind(), "request_too_complex");

        // Fragments that fan out exponentially are stopped, not expanded.
        let mut bomb = String::from("{ ...F0 }");
        for i in 0..30 {
            bomb.push_str(&format!(" fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1));
        }
        bomb.push_str(" fragment F30 on Query { me { id } }");
        assert_eq!(gql(json!({ "query": bomb })).unwrap_err().kind(), "request_too_complex");
    }

    #[test]
    fn queries_are_reads_that_still_name_their_resources() {
        let ops = gql(json!({
            "query": "query($p: String!) { project(id: $p) { name services { edges { node { id } } } } v: volume(id: \"vol_9\") { id } }",
            "variables": { "p": "p1" }
        }))
        .unwrap();
        assert_eq!(names(&ops), ["query project", "query volume"]);
        assert_eq!(ops[0].tier, Tier::Read);
        assert_eq!(ids(&ops[0]), [("project", "p1")]);
        assert_eq!(ids(&ops[1]), [("volume", "vol_9")]);

        let nested = gql(json!({ "query": "{ project(id: \"p1\") { environment(id: \"e9\") { name } } }" })).unwrap();
        assert_eq!(ids(&nested[0]), [("project", "p1"), ("environment", "e9")]);
    }

    #[test]
    fn unknown_mutations_and_paths_are_unknown_operations() {
        let ops = gql(json!({ "query": "mutation { somethingNew(id: \"x\") }" })).unwrap();
        assert_eq!(ops[0].scope, None);
        let got = railway()
            .classify(&RequestView {
                method: &Method::POST,
                path: "/graphql/internal",
                query: None,
                headers: &headers("application/json"),
                body: Some(b"{}"),
            })
            .unwrap();
        assert_eq!(names(&got.operations), ["POST /graphql/internal"]);
        assert_eq!(got.operations[0].scope, None);
    }

    #[test]
    fn prefix_rules_and_ops_rules_apply_and_ops_cannot_lower_a_tier() {
        let ops = gql(json!({ "query": "mutation { projectTransferToWorkspace(projectId: \"p1\") }" })).unwrap();
        assert_eq!(ops[0].scope.as_deref(), Some("project:transfer"));

        let lower = OperationRule {
            field: Some("volumeDelete".into()),
            operation: None,
            id: None,
            method: None,
            path: None,
            resources: vec![],
            scope: "read".into(),
            within_environment: false,
        };
        let new = OperationRule {
            field: Some("somethingNew".into()),
            scope: "service:write".into(),
            id: Some("service".into()),
            ..lower.clone()
        };
        let c = classifier(ProviderKind::Railway, &[lower, new]);
        let got = post(
            &c,
            "application/json",
            &json!({"query": "mutation { volumeDelete(volumeId: \"v\") somethingNew(id: \"s\") }"}).to_string(),
        )
        .unwrap();
        assert_eq!(got.operations[0].scope.as_deref(), Some("volume:delete"));
        assert_eq!(got.operations[1].scope.as_deref(), Some("service:write"));
        assert_eq!(ids(&got.operations[1]), [("service", "s")]);
    }

    fn rest(c: &Classifier, method: Method, path: &str, headers: HeaderMap) -> Result<Classified, ClassifyError> {
        c.classify(&RequestView {
            method: &method,
            path,
            query: None,
            headers: &headers,
            body: None,
        })
    }

    #[test]
    fn github_paths_are_classified_after_normalisation() {
        let gh = classifier(ProviderKind::Github, &[]);
        for spelling in [
            "/repos/acme/api",
            "/REPOS/acme/api/",
            "//repos/acme/api",
            "/repos/acme/api/pulls/..",
            "/repos/x/%2e%2e/acme/api",
            "/repos/acme/%61pi",
        ] {
            let got = rest(&gh, Method::DELETE, spelling, HeaderMap::new()).unwrap();
            assert_eq!(got.operations[0].scope.as_deref(), Some("repo:delete"), "{spelling}");
            assert_eq!(got.operations[0].tier, Tier::Catastrophic, "{spelling}");
            assert_eq!(ids(&got.operations[0]), [("repository", "acme/api")], "{spelling}");
            assert!(
                got.path.eq_ignore_ascii_case("/repos/acme/api"),
                "{spelling}: {}",
                got.path
            );
        }
        let cases = [
            (
                Method::DELETE,
                "/repos/acme/api/git/refs/heads/feature/x",
                "branch:delete",
            ),
            (Method::PATCH, "/repos/acme/api/git/refs/heads/main", "branch:delete"),
            (
                Method::DELETE,
                "/repos/acme/api/branches/main/protection",
                "protection:delete",
            ),
            (
                Method::DELETE,
                "/repos/acme/api/environments/prod",
                "environment:delete",
            ),
            (
                Method::DELETE,
                "/repos/acme/api/actions/secrets/TOKEN",
                "secrets:delete",
            ),
            (Method::DELETE, "/repos/acme/api/releases/12", "release:delete"),
            (Method::GET, "/repos/acme/api/contents/README.md", "read"),
            (Method::HEAD, "/repos/acme/api", "read"),
            (Method::GET, "/user", "read"),
            (Method::PUT, "/repos/acme/api/contents/src/main.rs", "contents:write"),
            (Method::POST, "/repos/acme/api/git/refs", "contents:write"),
            (Method::POST, "/repos/acme/api/pulls", "pulls:write"),
        ];
        for (method, path, scope) in cases {
            let got = rest(&gh, method.clone(), path, HeaderMap::new()).unwrap();
            assert_eq!(got.operations[0].scope.as_deref(), Some(scope), "{method} {path}");
        }
        let got = rest(&gh, Method::POST, "/graphql", HeaderMap::new()).unwrap();
        assert_eq!(got.operations[0].scope, None);
        assert_eq!(got.operations[0].name, "POST /graphql");
    }

    #[test]
    fn method_overrides_are_refused() {
        let gh = classifier(ProviderKind::Github, &[]);
        let mut h = HeaderMap::new();
        h.insert("X-HTTP-Method-Override", HeaderValue::from_static("DELETE"));
        assert_eq!(
            rest(&gh, Method::POST, "/repos/acme/api", h).unwrap_err().kind(),
            "method_override_refused"
        );
        let got = gh.classify(&RequestView {
            method: &Method::POST,
            path: "/repos/acme/api",
            query: Some("_method=DELETE"),
            headers: &HeaderMap::new(),
            body: None,
        });
        assert_eq!(got.unwrap_err().kind(), "method_override_refused");
    }

    #[test]
    fn http_providers_read_by_default_and_follow_ops_rules() {
        let bare = classifier(ProviderKind::Http, &[]);
        assert_eq!(
            rest(&bare, Method::GET, "/v1/items/7", HeaderMap::new())
                .unwrap()
                .operations[0]
                .scope
                .as_deref(),
            Some("read")
        );
        assert_eq!(
            rest(&bare, Method::POST, "/v1/items", HeaderMap::new())
                .unwrap()
                .operations[0]
                .scope,
            None
        );
        let rule: OperationRule = toml::from_str(
            r#"method = "DELETE"
path = "/v1/items/{id}"
scope = "delete"
resources = [{ kind = "item", id = "{id}" }]"#,
        )
        .unwrap();
        let ruled = classifier(ProviderKind::Http, &[rule]);
        let got = rest(&ruled, Method::DELETE, "/v1/items/7", HeaderMap::new()).unwrap();
        assert_eq!(got.operations[0].scope.as_deref(), Some("delete"));
        assert_eq!(got.operations[0].tier, Tier::Destructive);
        assert_eq!(ids(&got.operations[0]), [("item", "7")]);
    }

    #[test]
    fn bad_ops_rules_are_named_by_index() {
        let tiers: BTreeMap<String, Tier> = [("read".to_owned(), Tier::Read)].into();
        let wrong_scope: OperationRule = toml::from_str("method = \"GET\"\npath = \"/a\"\nscope = \"nope\"").unwrap();
        let field_on_rest: OperationRule = toml::from_str("field = \"x\"\nscope = \"read\"").unwrap();
        let errors = Classifier::new(
            ProviderKind::Http,
            &[wrong_scope, field_on_rest],
            &tiers,
            GraphqlLimits::default(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.contains("scope `nope`"));
        assert_eq!(errors[1].index, 1);
    }
}
