//! Rule packs: what a provider kind's operations are, as data.
//!
//! A pack (`config/providers/<kind>.toml`) names the kind's scopes with their
//! tiers and the operations that need each scope: GraphQL root fields for
//! `railway`, method and path patterns for `github` and `http`. Ops add
//! operations in their configuration with the same `OperationRule` shape; an
//! operation's tier is always its scope's.
//!
//! A rule either grants a scope or refuses, saying why. A rule whose scope an
//! agent may hold names its operation exactly (no wildcard) and binds what it
//! touches (resources, or `resource_free`): `CompiledRule::compile` refuses
//! anything else, for the built-in packs and for ops' rules alike.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ProviderKind;
use super::graphql::OperationType;
use super::rest::{IdTemplate, PathPattern};
use super::schema::NestedPack;
use crate::policy::Tier;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePack {
    pub kind: ProviderKind,
    pub scopes: BTreeMap<String, ScopeRule>,
    /// The kinds of resource whose ids the provider reads without regard to
    /// case (GitHub's `owner/repo`, not its GraphQL node ids).
    #[serde(default)]
    pub case_insensitive: Vec<String>,
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
    /// Argument and input-field names that carry resource ids → the kind of
    /// resource. A field named like a kind takes an `id` of that kind.
    pub id_arguments: BTreeMap<String, String>,
    /// How the fields nested under a root field are judged, against the
    /// kind's schema (`schema.rs`).
    #[serde(default)]
    pub nested: Option<NestedPack>,
    /// Whether what lies under a resource is one environment's share of it
    /// (Railway: a service's deployments), so that reading it under a
    /// resource several environments share reaches the others' share. Not
    /// so where a shared resource's objects are the whole resource's
    /// (GitHub: a repository's pull requests), read as its REST routes are.
    #[serde(default = "per_environment")]
    pub objects_per_environment: bool,
}

fn per_environment() -> bool {
    true
}

/// One operation rule, from a pack or from ops' configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRule {
    /// GraphQL: the root field; a final `*` matches every field it begins
    /// (a wildcard: destructive and catastrophic scopes only).
    #[serde(default)]
    pub field: Option<String>,
    /// GraphQL: several root fields that share the rest of the rule.
    #[serde(default)]
    pub fields: Vec<String>,
    /// GraphQL: `mutation` (the default) or `query`.
    #[serde(default)]
    pub operation: Option<OperationType>,
    /// GraphQL: the kind of resource the field's `id` argument names.
    #[serde(default)]
    pub id: Option<String>,
    /// REST: `GET`, `POST`, … or `*` (a wildcard: destructive and
    /// catastrophic scopes only). `GET` covers `HEAD` too.
    #[serde(default)]
    pub method: Option<String>,
    /// REST: the path pattern (`{param}`, `{*param}`, and the wildcards `*`
    /// and a final `**`, for destructive and catastrophic scopes only).
    #[serde(default)]
    pub path: Option<String>,
    /// REST: several paths that share the rest of the rule.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Resource ids built from path parameters (REST) or from a field's
    /// arguments (GraphQL: `{owner}/{name}` from `repository(owner:, name:)`).
    #[serde(default)]
    pub resources: Vec<ResourceTemplate>,
    /// REST: query parameters that each name one resource, parameter →
    /// kind (`railway up`'s `?serviceId=`). Each must be given exactly once,
    /// not empty, in no other spelling a server could read as it, in a
    /// query string of at most 100 parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// GraphQL: the resources a search names in its query string's
    /// qualifiers (GitHub's search syntax, `providers/github.rs`).
    #[serde(default)]
    pub search: Option<SearchRule>,
    /// GraphQL: the rule applies only when each argument (a dotted path
    /// into input objects, `input.force`) has exactly this value.
    #[serde(default)]
    pub when: BTreeMap<String, serde_json::Value>,
    /// The scope the operation needs; a rule that refuses names none.
    #[serde(default)]
    pub scope: Option<String>,
    /// The operation touches no environment's resources (the caller's own
    /// identity, rate limits, public metadata). Reads only.
    #[serde(default)]
    pub resource_free: bool,
    /// GraphQL, with `resource_free`: besides its own scalar fields, the
    /// identity of the objects it refers to may be selected (what a token is
    /// for: its project and environment, by id and name), never their data.
    #[serde(default)]
    pub shows_references: bool,
    /// The operation is refused, and why: it reaches resources in a way the
    /// broker cannot bind to an environment.
    #[serde(default)]
    pub refuse: Option<String>,
    /// The operation acts only inside the environment its environment id
    /// names (a service instance), so shared resources it names are not at
    /// risk beyond that environment.
    #[serde(default)]
    pub within_environment: bool,
    /// GraphQL: an argument whose value makes the operation need a stricter
    /// scope (`replace: true` deletes what a collection leaves out).
    #[serde(default)]
    pub stricter: Option<StricterRule>,
}

/// A stricter scope for one argument's values, in a rule that grants a
/// scope. It applies unless the argument is absent, null or one of
/// `unless`: a value nobody listed needs the stricter scope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StricterRule {
    /// The argument, or an input field under it: `input.replace`.
    pub argument: String,
    /// The values the rule's own scope covers.
    #[serde(default)]
    pub unless: Vec<serde_json::Value>,
    /// A destructive or catastrophic scope: a stricter variant exists to
    /// need a human.
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceTemplate {
    pub kind: String,
    pub id: String,
}

/// Where a search names what it reads: the `qualifier:` terms of the query
/// string in `argument`, each an id of `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRule {
    pub argument: String,
    pub qualifier: String,
    pub kind: String,
}

/// A rule ready to match.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub matcher: Matcher,
    /// What the rule grants; `Refuse` rules grant nothing.
    pub grant: RuleGrant,
    pub id_kind: Option<String>,
    pub resources: Vec<(String, IdTemplate)>,
    /// REST: query parameter → the kind of resource it names.
    pub query: Vec<(String, String)>,
    pub search: Option<SearchRule>,
    /// Argument paths and the values the rule applies to.
    pub when: Vec<(Vec<String>, serde_json::Value)>,
    pub resource_free: bool,
    pub shows_references: bool,
    pub within_environment: bool,
    pub stricter: Option<Stricter>,
}

/// A `StricterRule`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stricter {
    pub argument: String,
    path: Vec<String>,
    unless: Vec<serde_json::Value>,
    pub scope: String,
    pub tier: Tier,
}

impl Stricter {
    fn compile(rule: &StricterRule, tiers: &BTreeMap<String, Tier>) -> Result<Stricter, String> {
        let path: Vec<String> = rule.argument.split('.').map(str::to_owned).collect();
        if path
            .iter()
            .any(|name| name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(format!(
                "`stricter.argument` `{}` is not an argument name, or argument and input-field names joined by `.`",
                rule.argument
            ));
        }
        let tier = *tiers
            .get(&rule.scope)
            .ok_or_else(|| format!("`stricter.scope` `{}` is not a scope of this provider", rule.scope))?;
        if tier.agent_may_hold() {
            return Err(format!(
                "`stricter.scope` `{}` is {tier}: a stricter variant names a destructive or catastrophic scope, which needs a human",
                rule.scope
            ));
        }
        Ok(Stricter {
            argument: rule.argument.clone(),
            path,
            unless: rule.unless.clone(),
            scope: rule.scope.clone(),
            tier,
        })
    }

    /// Whether the arguments (variables substituted) need the stricter
    /// scope. A value that is not an input object where the path goes on
    /// cannot be read, so it does.
    pub fn applies(&self, arguments: &[(String, serde_json::Value)]) -> bool {
        let (first, rest) = self.path.split_first().expect("a compiled path has a name");
        let mut value = match arguments.iter().find(|(name, _)| name == first) {
            Some((_, value)) => value,
            None => return false,
        };
        for name in rest {
            value = match value {
                serde_json::Value::Null => return false,
                serde_json::Value::Object(fields) => match fields.get(name) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return true,
            };
        }
        !value.is_null() && !self.unless.contains(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleGrant {
    Scope { scope: String, tier: Tier },
    Refuse { reason: String },
}

impl RuleGrant {
    /// How strict the rule is: a refusal is stricter than every scope.
    pub fn strictness(&self) -> u8 {
        match self {
            RuleGrant::Scope { tier, .. } => *tier as u8,
            RuleGrant::Refuse { .. } => u8::MAX,
        }
    }
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
    /// Checks a rule against its provider kind and scopes; one compiled rule
    /// for each field or path it names.
    pub fn compile(
        rule: &OperationRule,
        kind: ProviderKind,
        tiers: &BTreeMap<String, Tier>,
    ) -> Result<Vec<CompiledRule>, String> {
        let grant = match (&rule.scope, &rule.refuse) {
            (Some(scope), None) => RuleGrant::Scope {
                scope: scope.clone(),
                tier: *tiers.get(scope).ok_or_else(|| {
                    format!(
                        "scope `{scope}` is not a scope of this provider (known: {})",
                        tiers.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?,
            },
            (None, Some(reason)) if !reason.trim().is_empty() => RuleGrant::Refuse { reason: reason.clone() },
            (None, Some(_)) => return Err("`refuse` must say why the operation is refused".into()),
            (Some(_), Some(_)) => return Err("a rule names a `scope` or `refuse`s, not both".into()),
            (None, None) => return Err("the rule names no `scope` (or `refuse = \"why\"`)".into()),
        };
        let graphql = rule.field.is_some()
            || !rule.fields.is_empty()
            || rule.operation.is_some()
            || rule.id.is_some()
            || rule.stricter.is_some()
            || rule.search.is_some()
            || !rule.when.is_empty();
        let stricter = match (&rule.stricter, &grant) {
            (None, _) => None,
            (Some(s), RuleGrant::Scope { .. }) => Some(Stricter::compile(s, tiers)?),
            (Some(_), RuleGrant::Refuse { .. }) => {
                return Err("a rule that refuses has nothing to make stricter; drop `stricter`".into());
            }
        };
        let rest = rule.method.is_some() || rule.path.is_some() || !rule.paths.is_empty() || !rule.query.is_empty();
        if let Some(bad) = rule
            .query
            .keys()
            .find(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(format!(
                "`{bad}` is not a query parameter name (letters, digits, `_` and `-`)"
            ));
        }
        // GitHub and Railway speak both: a rule is GraphQL when it names a
        // field, REST when it names a method or a path.
        let matchers = match (kind, graphql || (kind == ProviderKind::Railway && !rest)) {
            (ProviderKind::Postgres, _) => {
                return Err("postgres providers are not proxied and take no operation rules".into());
            }
            (_, true) if rest => {
                return Err("a rule names a GraphQL `field` or a REST `method` and `path`, not both".into());
            }
            (ProviderKind::Http, true) => {
                return Err("a REST provider's rules name a `method` and a `path`, not a field".into());
            }
            (ProviderKind::Railway | ProviderKind::Github, true) => {
                let names = one_or_many(&rule.field, &rule.fields, "field")?;
                let operation = rule.operation.unwrap_or(OperationType::Mutation);
                names
                    .iter()
                    .map(|field| {
                        let (name, prefix) = match field.strip_suffix('*') {
                            Some(stem) => (stem, true),
                            None => (field.as_str(), false),
                        };
                        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                            return Err(format!(
                                "`{field}` is not a GraphQL field name (a final `*` is allowed)"
                            ));
                        }
                        Ok(Matcher::Field {
                            operation,
                            name: name.to_owned(),
                            prefix,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?
            }
            (ProviderKind::Railway | ProviderKind::Github | ProviderKind::Http, false) => {
                let method = rule.method.as_deref().ok_or("the rule names no `method`")?;
                let method = match method {
                    "*" => None,
                    m if !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase()) => Some(m.to_owned()),
                    m => return Err(format!("method `{m}` is not an HTTP method in capitals, or `*`")),
                };
                // The first segment of the kind's GraphQL endpoints
                // (`graphql`): what lies under it may be GraphQL too, which
                // a REST rule would forward unread.
                let first = |path: &str| {
                    path.trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                };
                let endpoints: Vec<String> = kind
                    .pack()
                    .graphql
                    .iter()
                    .flat_map(|g| &g.paths)
                    .map(|p| first(p))
                    .collect();
                one_or_many(&rule.path, &rule.paths, "path")?
                    .iter()
                    .map(|path| {
                        let pattern = PathPattern::parse(path)?;
                        // Matched without regard to case by the server, or
                        // by a wildcard or parameter, the endpoint too.
                        if !endpoints.is_empty() && (endpoints.contains(&first(path)) || !pattern.starts_fixed()) {
                            return Err(format!(
                                "`{path}` could match where the GraphQL endpoint is: begin it with a fixed segment other than the endpoint's, and name the endpoint's root fields with `field`"
                            ));
                        }
                        Ok(Matcher::Rest {
                            method: method.clone(),
                            pattern,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?
            }
        };
        let when = rule
            .when
            .iter()
            .map(|(path, value)| {
                let steps: Vec<String> = path.split('.').map(str::to_owned).collect();
                if steps.iter().any(String::is_empty) {
                    return Err(format!(
                        "`when` names `{path}`, which is not an argument path (`input.force`)"
                    ));
                }
                Ok((steps, value.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        matchers
            .into_iter()
            .map(|matcher| {
                let resources = match &matcher {
                    Matcher::Rest { pattern, .. } => rule
                        .resources
                        .iter()
                        .map(|r| Ok((r.kind.clone(), IdTemplate::parse(&r.id, pattern)?)))
                        .collect::<Result<_, String>>()?,
                    Matcher::Field { .. } => rule
                        .resources
                        .iter()
                        .map(|r| Ok((r.kind.clone(), IdTemplate::parse_arguments(&r.id)?)))
                        .collect::<Result<_, String>>()?,
                };
                let compiled = CompiledRule {
                    matcher,
                    grant: grant.clone(),
                    id_kind: rule.id.clone(),
                    resources,
                    query: rule.query.clone().into_iter().collect(),
                    search: rule.search.clone(),
                    when: when.clone(),
                    resource_free: rule.resource_free,
                    shows_references: rule.shows_references,
                    within_environment: rule.within_environment,
                    stricter: stricter.clone(),
                };
                compiled.check_leniency(rule)?;
                Ok(compiled)
            })
            .collect()
    }

    /// A rule that grants a scope an agent may hold must name its operation
    /// exactly and bind what it touches: an operation the provider adds
    /// later must never ride on a wildcard, and an unbound read could read
    /// any environment. Wildcards stay allowed where matching more is
    /// stricter (destructive and catastrophic scopes, refusals).
    fn check_leniency(&self, rule: &OperationRule) -> Result<(), String> {
        let name = self.name();
        if self.shows_references && !(self.resource_free && matches!(self.matcher, Matcher::Field { .. })) {
            return Err(format!(
                "rule `{name}` has `shows_references`, which only a `resource_free` GraphQL read may have"
            ));
        }
        let RuleGrant::Scope { scope, tier } = &self.grant else {
            return Ok(());
        };
        let wildcard = match &self.matcher {
            Matcher::Field { prefix: true, .. } => Some("a name prefix (`…*`)".to_owned()),
            Matcher::Field { .. } => None,
            Matcher::Rest { method: None, .. } => Some("any method (`*`)".to_owned()),
            Matcher::Rest { pattern, .. } => pattern.wildcard().map(|w| format!("the path wildcard `{w}`")),
        };
        if let Some(wildcard) = wildcard
            && tier.agent_may_hold()
        {
            return Err(format!(
                "rule `{name}` grants `{scope}` ({tier}) to whatever {wildcard} matches: an operation the provider adds later would be granted too. Name each operation exactly (a file path inside a route is `{{*path}}`), or use this wildcard only with a destructive or catastrophic scope"
            ));
        }
        if let Matcher::Rest { pattern, .. } = &self.matcher
            && tier.agent_may_hold()
        {
            if !pattern.starts_fixed() {
                return Err(format!(
                    "rule `{name}` grants `{scope}` ({tier}) and its path begins with a parameter, so it matches routes nobody named; begin it with a fixed segment"
                ));
            }
            if let Some((span, before)) = pattern.span() {
                let binds_before = !self.resources.is_empty()
                    && self
                        .resources
                        .iter()
                        .all(|(_, id)| id.params().all(|p| before.contains(&p)));
                if self.resource_free || !binds_before {
                    return Err(format!(
                        "rule `{name}` grants `{scope}` ({tier}) with `{{*{span}}}`, which spans segments: outside a route bound to a resource by the parameters before it, it matches operations nobody named. Use it only after them, as in `/repos/{{owner}}/{{repo}}/contents/{{*path}}` with the repository as the resource"
                    ));
                }
            }
        }
        if self.resource_free {
            if *tier != Tier::Read {
                return Err(format!(
                    "rule `{name}` is `resource_free` but grants `{scope}` ({tier}): only reads may touch no environment's resources"
                ));
            }
            if !rule.resources.is_empty() || rule.id.is_some() || rule.search.is_some() || !rule.query.is_empty() {
                return Err(format!(
                    "rule `{name}` is `resource_free` and names resources too; it is one or the other"
                ));
            }
        }
        let unbound_rest =
            matches!(self.matcher, Matcher::Rest { .. }) && self.resources.is_empty() && self.query.is_empty();
        if unbound_rest && tier.agent_may_hold() && !self.resource_free {
            return Err(format!(
                "rule `{name}` grants `{scope}` ({tier}) and names no resource, so the broker could not tell which environment a request touches. Add `resources = [{{ kind = \"…\", id = \"{{param}}\" }}]`, or `resource_free = true` if it touches no environment's resources"
            ));
        }
        Ok(())
    }

    /// How specific the rule's matcher is: rules are tried most specific
    /// first, so `GET /user/emails` wins over `GET /user/{account_id}`
    /// whatever their order in a list.
    pub fn specificity(&self) -> Vec<u8> {
        match &self.matcher {
            Matcher::Field { prefix, .. } => vec![if *prefix { 0 } else { 1 }, u8::from(!self.when.is_empty())],
            Matcher::Rest { method, pattern } => {
                let mut ranks = pattern.specificity();
                ranks.push(u8::from(method.is_some()));
                ranks
            }
        }
    }

    /// Whether a field's arguments have the values the rule's `when` names.
    pub fn applies_to(&self, arguments: &[(String, serde_json::Value)]) -> bool {
        self.when.iter().all(|(path, expected)| {
            let (first, rest) = path.split_first().expect("a compiled path has a step");
            let mut value = arguments.iter().find(|(n, _)| n == first).map(|(_, v)| v);
            for step in rest {
                value = value.and_then(|v| v.get(step.as_str()));
            }
            value == Some(expected)
        })
    }

    /// The rule's `when`, as an operation's name shows it.
    pub fn conditions(&self) -> String {
        self.when
            .iter()
            .map(|(path, value)| format!(" ({} = {value})", path.join(".")))
            .collect()
    }

    /// What an operation matched by this rule is called.
    pub fn name(&self) -> String {
        match &self.matcher {
            Matcher::Field {
                operation,
                name,
                prefix,
            } => format!(
                "{operation} {name}{}{}",
                if *prefix { "*" } else { "" },
                self.conditions()
            ),
            Matcher::Rest { method, pattern } => format!("{} {}", method.as_deref().unwrap_or("*"), pattern.as_str()),
        }
    }
}

/// `field` or `fields` (`path` or `paths`): exactly one of the two spellings.
fn one_or_many(one: &Option<String>, many: &[String], what: &str) -> Result<Vec<String>, String> {
    match (one, many) {
        (Some(one), []) => Ok(vec![one.clone()]),
        (None, many) if !many.is_empty() => Ok(many.to_vec()),
        (Some(_), _) => Err(format!("the rule names `{what}` and `{what}s`; use one")),
        (None, _) => Err(format!("the rule names no `{what}`")),
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
