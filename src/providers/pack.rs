//! Rule packs: what a provider kind's operations are, as data.
//!
//! A pack (`config/providers/<kind>.toml`) names the kind's scopes with their
//! tiers and the operations that need each scope: GraphQL root fields for
//! `railway`, method and path patterns for `github` and `http`. Ops add
//! operations in their configuration with the same `OperationRule` shape; an
//! operation's tier is always its scope's.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ProviderKind;
use super::graphql::OperationType;
use super::rest::{IdTemplate, PathPattern};
use crate::policy::Tier;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePack {
    pub kind: ProviderKind,
    pub scopes: BTreeMap<String, ScopeRule>,
    /// Where a GraphQL kind's endpoint is and how its ids are named.
    #[serde(default)]
    pub graphql: Option<GraphqlPack>,
    #[serde(default)]
    pub operations: Vec<OperationRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    pub tier: Tier,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlPack {
    /// The endpoint's paths under the upstream URL; any other path is an
    /// unknown operation.
    pub paths: Vec<String>,
    /// The scope every query field needs unless a `query` rule names it.
    pub query_scope: String,
    /// Argument and input-field names that carry resource ids → the kind of
    /// resource. A field named like a kind takes an `id` of that kind.
    pub id_arguments: BTreeMap<String, String>,
}

/// One operation rule, from a pack or from ops' configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRule {
    /// GraphQL: the root field; a final `*` matches every field it begins.
    #[serde(default)]
    pub field: Option<String>,
    /// GraphQL: `mutation` (the default) or `query`.
    #[serde(default)]
    pub operation: Option<OperationType>,
    /// GraphQL: the kind of resource the field's `id` argument names.
    #[serde(default)]
    pub id: Option<String>,
    /// REST: `GET`, `POST`, … or `*`. `GET` covers `HEAD` too.
    #[serde(default)]
    pub method: Option<String>,
    /// REST: the path pattern (`{param}`, `*`, a final `**`).
    #[serde(default)]
    pub path: Option<String>,
    /// REST: resource ids built from path parameters.
    #[serde(default)]
    pub resources: Vec<ResourceTemplate>,
    pub scope: String,
    /// The operation acts only inside the environment its environment id
    /// names (a service instance), so shared resources it names are not at
    /// risk beyond that environment.
    #[serde(default)]
    pub within_environment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceTemplate {
    pub kind: String,
    pub id: String,
}

/// A rule ready to match.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub matcher: Matcher,
    pub scope: String,
    pub tier: Tier,
    pub id_kind: Option<String>,
    pub resources: Vec<(String, IdTemplate)>,
    pub within_environment: bool,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    Field {
        operation: OperationType,
        name: String,
        prefix: bool,
    },
    Rest {
        /// `None` matches every method.
        method: Option<String>,
        pattern: PathPattern,
    },
}

impl CompiledRule {
    /// Checks a rule against its provider kind and scopes.
    pub fn compile(
        rule: &OperationRule,
        kind: ProviderKind,
        tiers: &BTreeMap<String, Tier>,
    ) -> Result<CompiledRule, String> {
        let tier = *tiers.get(&rule.scope).ok_or_else(|| {
            format!(
                "scope `{}` is not a scope of this provider (known: {})",
                rule.scope,
                tiers.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let graphql = rule.field.is_some() || rule.operation.is_some() || rule.id.is_some();
        let rest = rule.method.is_some() || rule.path.is_some() || !rule.resources.is_empty();
        let matcher = match kind {
            ProviderKind::Railway => {
                if rest {
                    return Err("a GraphQL provider's rules name a `field`, not a method, path or resources".into());
                }
                let field = rule.field.as_deref().ok_or("the rule names no `field`")?;
                let (name, prefix) = match field.strip_suffix('*') {
                    Some(stem) => (stem, true),
                    None => (field, false),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`{field}` is not a GraphQL field name (a final `*` is allowed)"
                    ));
                }
                Matcher::Field {
                    operation: rule.operation.unwrap_or(OperationType::Mutation),
                    name: name.to_owned(),
                    prefix,
                }
            }
            ProviderKind::Github | ProviderKind::Http => {
                if graphql {
                    return Err("a REST provider's rules name a `method` and a `path`, not a field".into());
                }
                let method = rule.method.as_deref().ok_or("the rule names no `method`")?;
                let method = match method {
                    "*" => None,
                    m if !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase()) => Some(m.to_owned()),
                    m => return Err(format!("method `{m}` is not an HTTP method in capitals, or `*`")),
                };
                let path = rule.path.as_deref().ok_or("the rule names no `path`")?;
                Matcher::Rest {
                    method,
                    pattern: PathPattern::parse(path)?,
                }
            }
            ProviderKind::Postgres => {
                return Err("postgres providers are not proxied and take no operation rules".into());
            }
        };
        let resources = match &matcher {
            Matcher::Rest { pattern, .. } => rule
                .resources
                .iter()
                .map(|r| Ok((r.kind.clone(), IdTemplate::parse(&r.id, pattern)?)))
                .collect::<Result<_, String>>()?,
            Matcher::Field { .. } => Vec::new(),
        };
        Ok(CompiledRule {
            matcher,
            scope: rule.scope.clone(),
            tier,
            id_kind: rule.id.clone(),
            resources,
            within_environment: rule.within_environment,
        })
    }

    /// What an operation matched by this rule is called.
    pub fn name(&self) -> String {
        match &self.matcher {
            Matcher::Field { operation, name, .. } => format!("{operation} {name}"),
            Matcher::Rest { method, pattern } => format!("{} {}", method.as_deref().unwrap_or("*"), pattern.as_str()),
        }
    }
}

impl RulePack {
    pub fn parse(text: &str) -> Result<RulePack, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn tier(&self, scope: &str) -> Option<Tier> {
        self.scopes.get(scope).map(|s| s.tier)
    }
}
