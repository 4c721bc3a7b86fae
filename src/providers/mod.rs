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

    /// The git host a provider of this kind serves clones and pushes from.
    pub fn default_git_upstream(self) -> Option<&'static str> {
        match self {
            ProviderKind::Github => Some("https://github.com"),
            ProviderKind::Railway | ProviderKind::Http | ProviderKind::Postgres => None,
        }
    }

    /// Whether the provider reads ids without regard to case (GitHub's
    /// `owner/repo`), so the resource map must too.
    pub fn ids_case_insensitive(self) -> bool {
        self == ProviderKind::Github
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
    fn every_railway_root_field_the_pack_names_is_in_railways_schema() {
        let schema = ProviderKind::Railway.schema().expect("Railway's pack reads its schema");
        assert!(schema.source().starts_with("railwayapp/cli@"), "{}", schema.source());
        for rule in &ProviderKind::Railway.pack().operations {
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
        for kind in [ProviderKind::Github, ProviderKind::Http, ProviderKind::Postgres] {
            assert!(kind.schema().is_none(), "{kind}");
        }
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
