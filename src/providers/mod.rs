//! Provider kinds, their rule packs, and classification: what a request to
//! a provider would do.
//!
//! A rule pack (`config/providers/<kind>.toml`) is data compiled into the
//! binary: the scopes a kind knows, the tier of each, and the operations that
//! need them. Ops extend a pack from their own configuration and may raise a
//! scope's tier, never lower it. The packs are parsed once, on first use; a
//! pack that does not parse is a bug in this build, caught by the tests.
//! Nothing here does I/O.

mod body;
mod classify;
pub mod git;
mod github;
mod graphql;
mod json;
mod pack;
pub mod postgres;
pub mod postgres_findings;
mod rest;
mod schema;

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

pub use classify::{Classified, Classifier, ClassifyError, RequestView, RuleError};
pub use graphql::{GraphqlLimits, IdSpec, OperationType, RootField, root_fields};
pub use pack::{GraphqlPack, OperationRule, ResourceTemplate, RulePack, ScopeRule};
pub use schema::{FieldType, NestedPack, Schema};

/// The kind of resource a GraphQL node id names (GitHub's `repositoryId`,
/// `pullRequestId`): it binds through the `node_ids` ops list with a
/// resource, and is unknown otherwise.
pub const NODE_KIND: &str = "node";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Railway's GraphQL API.
    Railway,
    /// GitHub's REST API.
    Github,
    /// Any HTTP API, with scopes named by ops.
    Http,
    /// PostgreSQL dynamic roles (not proxied).
    Postgres,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Railway,
        ProviderKind::Github,
        ProviderKind::Http,
        ProviderKind::Postgres,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Railway => "railway",
            ProviderKind::Github => "github",
            ProviderKind::Http => "http",
            ProviderKind::Postgres => "postgres",
        }
    }

    /// The upstream a provider of this kind talks to when ops name none.
    pub fn default_upstream(self) -> Option<&'static str> {
        match self {
            ProviderKind::Railway => Some("https://backboard.railway.com"),
            ProviderKind::Github => Some("https://api.github.com"),
            ProviderKind::Http | ProviderKind::Postgres => None,
        }
    }

    /// The public hosts the forward proxy serves for a provider of this
    /// kind unless ops name others: the API's, and GitHub's git host.
    pub fn default_hosts(self) -> &'static [&'static str] {
        match self {
            ProviderKind::Railway => &["backboard.railway.com", "backboard.railway.app"],
            ProviderKind::Github => &["api.github.com", "github.com"],
            ProviderKind::Http | ProviderKind::Postgres => &[],
        }
    }

    /// The git host a provider of this kind serves clones and pushes from.
    pub fn default_git_upstream(self) -> Option<&'static str> {
        match self {
            ProviderKind::Github => Some("https://github.com"),
            ProviderKind::Railway | ProviderKind::Http | ProviderKind::Postgres => None,
        }
    }

    /// The kinds of resource whose ids the provider reads without regard
    /// to case (GitHub's `owner/repo`), so the resource map must too.
    pub fn case_insensitive_kinds(self) -> std::collections::BTreeSet<String> {
        self.pack().case_insensitive.iter().cloned().collect()
    }

    /// The built-in rule pack of this kind.
    pub fn pack(self) -> &'static RulePack {
        &PACKS[self as usize]
    }

    /// The built-in GraphQL schema of this kind, read as its pack's
    /// `[graphql.nested]` says.
    pub fn schema(self) -> Option<&'static Schema> {
        SCHEMAS[self as usize].as_ref()
    }

    fn source(self) -> &'static str {
        match self {
            ProviderKind::Railway => include_str!("../../config/providers/railway.toml"),
            ProviderKind::Github => include_str!("../../config/providers/github.toml"),
            ProviderKind::Http => include_str!("../../config/providers/http.toml"),
            ProviderKind::Postgres => include_str!("../../config/providers/postgres.toml"),
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

static SCHEMAS: LazyLock<Vec<Option<Schema>>> = LazyLock::new(|| {
    ProviderKind::ALL
        .iter()
        .map(|kind| {
            let json = match kind {
                ProviderKind::Railway => include_str!("../../config/providers/railway.schema.json"),
                ProviderKind::Github => include_str!("../../config/providers/github.schema.json"),
                _ => return None,
            };
            let nested = kind.pack().graphql.as_ref().and_then(|g| g.nested.as_ref());
            let nested = nested.unwrap_or_else(|| panic!("rule pack `{kind}` has a schema and no [graphql.nested]"));
            Some(Schema::parse(json, nested).unwrap_or_else(|e| panic!("built-in schema of `{kind}`: {e}")))
        })
        .collect()
});

static PACKS: LazyLock<Vec<RulePack>> = LazyLock::new(|| {
    ProviderKind::ALL
        .iter()
        .map(|kind| {
            let pack = RulePack::parse(kind.source())
                .unwrap_or_else(|e| panic!("built-in rule pack `{kind}` does not parse: {e}"));
            assert_eq!(pack.kind, *kind, "rule pack file of `{kind}` names another kind");
            pack
        })
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_pack_parses_and_names_its_kind() {
        for kind in ProviderKind::ALL {
            let pack = kind.pack();
            assert_eq!(pack.kind, kind);
            assert!(pack.scopes.contains_key("read"), "{kind} has no read scope");
        }
    }

    #[test]
    fn every_built_in_operation_compiles_against_its_packs_scopes() {
        for kind in ProviderKind::ALL {
            let pack = kind.pack();
            let tiers = pack.scopes.iter().map(|(n, s)| (n.clone(), s.tier)).collect();
            if matches!(kind, ProviderKind::Postgres | ProviderKind::Http) {
                assert!(pack.operations.is_empty(), "{kind}'s operations are ops' to name");
                continue;
            }
            assert!(!pack.operations.is_empty(), "{kind} names no operation");
            // Panics, naming the rule, when a built-in rule is wrong.
            Classifier::new(kind, &[], &tiers, GraphqlLimits::default()).unwrap();
        }
    }

    #[test]
    fn every_graphql_root_field_a_pack_names_is_in_its_schema() {
        for (kind, source) in [
            (ProviderKind::Railway, "railwayapp/cli@"),
            (ProviderKind::Github, "@octokit/graphql-schema@"),
        ] {
            let schema = kind.schema().expect("the pack reads its schema");
            assert!(schema.source().starts_with(source), "{}", schema.source());
            let graphql_rules = kind
                .pack()
                .operations
                .iter()
                .filter(|r| r.field.is_some() || !r.fields.is_empty());
            for rule in graphql_rules {
                let operation = rule.operation.unwrap_or(OperationType::Mutation);
                let root = schema.root(operation);
                for field in rule.field.iter().chain(&rule.fields) {
                    let known = match field.strip_suffix('*') {
                        Some(prefix) => schema.fields(root).any(|f| f.starts_with(prefix)),
                        None => schema.field(root, field) != FieldType::Unknown,
                    };
                    assert!(
                        known,
                        "the pack names {operation} `{field}`, which {} lacks",
                        schema.source()
                    );
                }
            }
        }
        for kind in [ProviderKind::Http, ProviderKind::Postgres] {
            assert!(kind.schema().is_none(), "{kind}");
        }
    }

    #[test]
    fn node_ids_are_read_as_written_and_repositories_without_regard_to_case() {
        let github = ProviderKind::Github.case_insensitive_kinds();
        assert!(github.contains("repository") && !github.contains(NODE_KIND));
        let ids = &ProviderKind::Github.pack().graphql.as_ref().unwrap().id_arguments;
        assert!(ids.values().all(|kind| kind == NODE_KIND), "{ids:?}");
        assert!(ProviderKind::Railway.case_insensitive_kinds().is_empty());
    }

    #[test]
    fn the_incident_scopes_can_never_be_held() {
        let railway = ProviderKind::Railway.pack();
        for scope in ["volume:delete", "backup:delete", "environment:delete", "project:delete"] {
            let tier = railway.tier(scope).unwrap_or_else(|| panic!("{scope} missing"));
            assert!(!tier.agent_may_hold(), "{scope} is {tier}");
        }
    }
}
