//! Classification: an HTTP request to a provider → the operations it would
//! perform and the canonical path to forward. Pure: the request comes in as
//! plain parts, the rules were compiled once at start.
//!
//! Before any rule is tried, what a server could read as something other
//! than the request the broker sees is refused: a method spelled in lower
//! case, TRACE and CONNECT, a method override in a header, the query string
//! or an inspected body, a `Connection` header naming a header the broker
//! reads, and a path that does not normalise one way only.
//!
//! Rules from ops' configuration are tried before the pack's. When both name
//! a request, the stricter wins: ops extend a pack, never weaken it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use http::{HeaderMap, Method, header};

use super::git::{self, GitSpec, KnownCommit, Oid};
use super::graphql::{self, Escape, GraphqlLimits, IdSpec, OperationType, Returns, RootField};
use super::pack::{CompiledRule, Matcher, OperationRule, RuleGrant};
use super::rest::{self, PathPattern, PatternTrie};
use super::schema::Schema;
use super::{ProviderKind, github};
use crate::policy::{Beyond, ENVIRONMENT_KIND, Operation, ResourceRef, Tier};

/// End-to-end headers the broker reads or replaces: a `Connection` header
/// that names one would have it removed after classification, and the
/// upstream would read the request without it.
const RELIED_ON: [&str; 9] = [
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "authorization",
    "project-access-token",
    "proxy-authorization",
    "cookie",
];

/// The scope a git tree that names `.github` needs (GitHub's pack).
const WORKFLOWS_SCOPE: &str = "workflows:write";

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
        "the request carries {place}, which asks the server to treat it as another method; send the real method instead"
    )]
    MethodOverride { place: String },
    #[error("{method} requests never go through the broker: {why}")]
    MethodRefused { method: String, why: &'static str },
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
            ClassifyError::MethodRefused { .. } => "method_refused",
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
    /// git's smart HTTP traffic, for the provider's git host rather than
    /// its API.
    pub git: bool,
    /// Commits outside a push's pack whose `.github` the push was compared
    /// with as unknown: learned (`classify_knowing`), they may settle it.
    pub learn: BTreeSet<Oid>,
}

/// One provider's compiled rules.
#[derive(Debug, Clone)]
pub struct Classifier {
    kind: ProviderKind,
    ops_rules: RuleList,
    pack_rules: RuleList,
    graphql: Option<GraphqlSpec>,
    /// GitHub: where git trees are made, and the tier of the scope a tree
    /// naming `.github` needs.
    trees: Option<(PathPattern, Tier)>,
    /// GitHub: git's smart HTTP protocol.
    git: Option<GitSpec>,
}

#[derive(Debug, Clone)]
struct GraphqlSpec {
    paths: Vec<Vec<String>>,
    id_arguments: BTreeMap<String, String>,
    kinds: BTreeSet<String>,
    limits: GraphqlLimits,
    schema: Option<&'static Schema>,
    objects_per_environment: bool,
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
            .unwrap_or_else(|e| panic!("built-in rule pack `{kind}` has a bad operation: {e}"))
            .into_iter()
            .flatten()
            .collect();
        let pack_rules = RuleList::new(pack_rules);
        let mut errors = Vec::new();
        let mut ops_rules = Vec::new();
        for (index, rule) in extra.iter().enumerate() {
            match CompiledRule::compile(rule, kind, tiers) {
                Ok(r) => ops_rules.extend(r),
                Err(message) => errors.push(RuleError { index, message }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ops_rules = RuleList::new(ops_rules);
        let graphql = pack.graphql.as_ref().map(|g| GraphqlSpec {
            paths: g
                .paths
                .iter()
                .map(|p| rest::normalize(p).expect("built-in GraphQL path"))
                .collect(),
            kinds: g.id_arguments.values().cloned().collect(),
            id_arguments: g.id_arguments.clone(),
            limits,
            schema: kind.schema(),
            objects_per_environment: g.objects_per_environment,
        });
        let trees = (kind == ProviderKind::Github).then(|| {
            let pattern = PathPattern::parse("/repos/{owner}/{repo}/git/trees").expect("a fixed pattern");
            (
                pattern,
                tiers.get(WORKFLOWS_SCOPE).copied().unwrap_or(Tier::Catastrophic),
            )
        });
        let git = (kind == ProviderKind::Github).then(|| GitSpec::new(tiers));
        Ok(Classifier {
            kind,
            ops_rules,
            pack_rules,
            graphql,
            trees,
            git,
        })
    }

    /// Branches ops protect (`protected_branches`): a push to one needs
    /// at least `branch:protected`. Only the github kind pushes.
    pub fn protect_branches(&mut self, patterns: &[String]) {
        if let Some(git) = &mut self.git {
            git.protect(patterns);
        }
    }

    /// Whether the request is a git push, whose body is read whole (under
    /// `[proxy] max_inspected_push_bytes`).
    pub fn is_git_push(&self, method: &Method, path: &str) -> bool {
        self.git.is_some()
            && rest::normalize(path).is_ok_and(|segments| {
                matches!(git::recognise(method, &segments, None), Some(Ok((git::Route::Push, _))))
            })
    }

    /// Whether the body must be read (bounded) before classification: a
    /// GraphQL request, a POST whose body a framework could read a method
    /// override from, a git tree. Other bodies stream to the upstream
    /// untouched.
    pub fn needs_body(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        if *method != Method::POST {
            return false;
        }
        if self.is_graphql(path) {
            return true;
        }
        let overridable = match super::body::media_type(headers) {
            Ok(Some(media)) => {
                media.is("application/x-www-form-urlencoded")
                    || media.is("multipart/form-data")
                    || (media.is_json() && self.kind == ProviderKind::Http)
            }
            Ok(None) => false,
            // Read it, so that classification names what is wrong.
            Err(_) => true,
        };
        overridable || self.is_tree(path) || self.is_git_push(method, path)
    }

    /// Whether a path is the GraphQL endpoint's.
    fn is_graphql(&self, path: &str) -> bool {
        self.graphql
            .as_ref()
            .is_some_and(|spec| rest::normalize(path).is_ok_and(|s| spec.paths.contains(&s)))
    }

    fn is_tree(&self, path: &str) -> bool {
        let Some((pattern, _)) = &self.trees else {
            return false;
        };
        rest::normalize(path).is_ok_and(|segments| pattern.matches(&segments).is_some())
    }

    pub fn classify(&self, request: &RequestView<'_>) -> Result<Classified, ClassifyError> {
        self.classify_knowing(request, &HashMap::new())
    }

    /// `classify`, with what was learned of commits outside a git push's
    /// pack.
    pub fn classify_knowing(
        &self,
        request: &RequestView<'_>,
        known: &HashMap<Oid, KnownCommit>,
    ) -> Result<Classified, ClassifyError> {
        check_method(request.method)?;
        check_headers(request.headers)?;
        for (name, _) in url::form_urlencoded::parse(request.query.unwrap_or_default().as_bytes()) {
            if is_override_parameter(&name) {
                return Err(ClassifyError::MethodOverride {
                    place: format!("the query parameter `{name}`"),
                });
            }
        }
        let segments = rest::normalize(request.path).map_err(ClassifyError::Malformed)?;
        let path = rest::encode(&segments);
        if let Some(spec) = &self.git
            && let Some(recognised) = git::recognise(request.method, &segments, request.query)
        {
            let (route, repository) = recognised?;
            let (operations, learn) = spec.operations(route, &repository, request.headers, request.body, known)?;
            return Ok(Classified {
                operations,
                path,
                git: true,
                learn,
            });
        }
        let operations = match &self.graphql {
            Some(spec) if spec.paths.contains(&segments) => self.graphql_operations(spec, request)?,
            _ => {
                if let Some(body) = request.body {
                    check_body(request.headers, body)?;
                }
                vec![self.rest_operation(request, &segments, &path)?]
            }
        };
        Ok(Classified {
            operations,
            path,
            git: false,
            learn: BTreeSet::new(),
        })
    }

    /// The most specific matching rule of ops and of the pack; the stricter
    /// if both.
    fn pick<'a, T>(
        &'a self,
        find: impl Fn(&'a RuleList) -> Option<(&'a CompiledRule, T)>,
    ) -> Option<(&'a CompiledRule, T)> {
        let ops = find(&self.ops_rules);
        let pack = find(&self.pack_rules);
        match (ops, pack) {
            (Some(ops), Some(pack)) if pack.0.grant.strictness() > ops.0.grant.strictness() => Some(pack),
            (Some(ops), _) => Some(ops),
            (None, pack) => pack,
        }
    }

    fn rest_operation(
        &self,
        request: &RequestView<'_>,
        segments: &[String],
        path: &str,
    ) -> Result<Operation, ClassifyError> {
        let method = request.method.as_str();
        let picked = self.pick(|rules| rules.find_path(method, segments));
        let Some((rule, captures)) = picked else {
            return Ok(unknown(format!("{method} {path}")));
        };
        let mut resources: Vec<ResourceRef> = rule
            .resources
            .iter()
            .map(|(kind, template)| ResourceRef {
                kind: kind.clone(),
                id: template.render(&captures),
            })
            .collect();
        let refused = match query_resources(&rule.query, request.query.unwrap_or_default()) {
            Ok(named) => {
                resources.extend(named);
                None
            }
            Err(why) => Some(why),
        };
        let mut op = operation(rule, rule.name(), resources);
        if let Some(why) = refused {
            op.refused_by_pack = Some(why);
            op.resource_free = false;
        }
        if let Some((pattern, tier)) = &self.trees
            && method == "POST"
            && pattern.matches(segments).is_some()
            && github::tree_touches_workflows(request.body.unwrap_or_default())?
            && op.tier < *tier
        {
            op.name = format!("{} (naming `.github`)", op.name);
            op.scope = Some(WORKFLOWS_SCOPE.to_owned());
            op.tier = *tier;
        }
        Ok(op)
    }

    fn graphql_operations(
        &self,
        spec: &GraphqlSpec,
        request: &RequestView<'_>,
    ) -> Result<Vec<Operation>, ClassifyError> {
        let ids = IdSpec {
            arguments: &spec.id_arguments,
            kinds: &spec.kinds,
            schema: spec.schema,
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
        let picked = self.pick(|rules| {
            rules
                .find_field(field.operation, &field.name, &field.arguments)
                .map(|rule| (rule, ()))
        });
        let Some((rule, ())) = picked else {
            return unknown(format!("{} {}", field.operation, field.name));
        };
        let name = format!("{} {}{}", field.operation, field.name, rule.conditions());
        let mut resources = Vec::new();
        graphql::collect_ids(
            &field.arguments,
            rule.id_kind.as_deref(),
            &spec.id_arguments,
            &mut resources,
        );
        let named = named_resources(rule, &field.arguments);
        let refusal = named.as_ref().err().cloned();
        for resource in named.unwrap_or_default() {
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
        let named_by_arguments = resources.len();
        for nested in field.nested {
            if !resources.contains(&nested) {
                resources.push(nested);
            }
        }
        let mut op = operation(rule, name, resources);
        if let Some(stricter) = &rule.stricter
            && stricter.tier > op.tier
            && stricter.applies(&field.arguments)
        {
            op.name = format!("{} (with `{}`)", op.name, stricter.argument);
            op.scope = Some(stricter.scope.clone());
            op.tier = stricter.tier;
        }
        if let Some(why) = refusal {
            op.refused_by_pack = Some(why);
            op.resource_free = false;
        }
        // Railway reads the environment a mutation acts in from the field's
        // own `environmentId` or its `input`'s; an id deeper in a value
        // (inside a JSON setting) confines nothing.
        op.within_environment &= environment_at_top(&field.arguments, &spec.id_arguments);
        let named_by_id = rule.id_kind.is_some();
        // A resource's nested objects are its in every environment it spans,
        // whatever else the arguments name (a mutation's `environmentId`
        // does not filter the service it answers with), unless the resource
        // is an environment. One environment's objects listed under what
        // the arguments name (a volume's instances) need an environment of
        // ours among them; one such object named by its own id is its
        // environment's, and the nested walk keeps its reads there. Only
        // the identity of what a resource refers to (a project's
        // environments and services, by id and name) is no environment's
        // data: it is what the CLI reads first.
        op.named_by_arguments = match field.returns {
            Returns::Resource if rule.id_kind.as_deref() != Some(ENVIRONMENT_KIND) => 0,
            _ => named_by_arguments,
        };
        op.nested_objects = spec.objects_per_environment
            && match field.returns {
                Returns::EnvironmentData => !named_by_id,
                Returns::NoEnvironment => false,
                Returns::Resource | Returns::Unknown => field.reads_own_objects,
            };
        op.beyond = field.escape.map(|escape| match escape {
            Escape::Unknown { .. } => Beyond::UnknownField(escape.to_string()),
            Escape::Across { .. } => Beyond::Across(escape.to_string()),
        });
        // A field that touches no environment's resources may still lead to
        // objects that do (`me { projects { … } }`): only its own leaves are
        // free to read.
        let leads_to_objects = if rule.shows_references {
            field.reads_own_objects
        } else {
            field.selects_objects
        };
        if op.resource_free && leads_to_objects {
            op.resource_free = false;
            op.name = format!("{} with nested selections", op.name);
        }
        op
    }

    /// The kinds of resource the rules bind ids as: what `[[resources]]`
    /// entries of this provider must be listed as to bind.
    pub fn resource_kinds(&self) -> BTreeSet<String> {
        let rules = self.ops_rules.rules.iter().chain(&self.pack_rules.rules);
        let mut kinds: BTreeSet<String> = rules
            .flat_map(|r| {
                r.id_kind
                    .iter()
                    .cloned()
                    .chain(r.resources.iter().map(|(kind, _)| kind.clone()))
            })
            .collect();
        if let Some(spec) = &self.graphql {
            kinds.extend(spec.kinds.iter().cloned());
        }
        kinds
    }

    /// Where a GraphQL provider's endpoint is, under the upstream.
    pub fn graphql_path(&self) -> Option<String> {
        self.graphql
            .as_ref()
            .and_then(|g| g.paths.first())
            .map(|p| rest::encode(p))
    }
}

/// One list of compiled rules (ops' or the pack's), most specific first,
/// indexed so that the first rule found is the most specific that matches: a
/// trie of path patterns per method, and field names.
#[derive(Debug, Clone)]
struct RuleList {
    rules: Vec<CompiledRule>,
    /// Method → the REST rules of that method and of any method; `None` →
    /// those of any method alone, for methods no rule names.
    paths: HashMap<Option<String>, PatternTrie>,
    /// Field name → the GraphQL rules naming it and every prefix rule, in order.
    fields: HashMap<String, Vec<usize>>,
    /// The GraphQL prefix rules, for field names no rule names exactly.
    prefixes: Vec<usize>,
}

impl RuleList {
    fn new(mut rules: Vec<CompiledRule>) -> RuleList {
        // Stable: equally specific rules keep their order.
        rules.sort_by_cached_key(|r| std::cmp::Reverse(r.specificity()));
        let mut paths: HashMap<Option<String>, PatternTrie> = HashMap::new();
        let methods: BTreeSet<Option<String>> = rules
            .iter()
            .filter_map(|r| match &r.matcher {
                Matcher::Rest { method, .. } => Some(method.clone()),
                Matcher::Field { .. } => None,
            })
            .chain([None])
            .collect();
        let mut fields: HashMap<String, Vec<usize>> = HashMap::new();
        let mut prefixes = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.matcher {
                Matcher::Rest { method, pattern } => {
                    for m in &methods {
                        if method.is_none() || method == m {
                            paths.entry(m.clone()).or_default().insert(pattern, i);
                        }
                    }
                }
                Matcher::Field {
                    name, prefix: false, ..
                } => fields.entry(name.clone()).or_default().push(i),
                Matcher::Field { .. } => prefixes.push(i),
            }
        }
        for list in fields.values_mut() {
            list.extend(&prefixes);
            list.sort_unstable();
        }
        RuleList {
            rules,
            paths,
            fields,
            prefixes,
        }
    }

    /// The most specific rule of `method` whose pattern `segments` match.
    fn find_path(&self, method: &str, segments: &[String]) -> Option<(&CompiledRule, BTreeMap<String, String>)> {
        // A GET rule covers HEAD.
        let method = if method == "HEAD" { "GET" } else { method };
        let trie = self
            .paths
            .get(&Some(method.to_owned()))
            .or_else(|| self.paths.get(&None))?;
        let mut found = None;
        trie.visit(segments, &mut |i| {
            let rule = &self.rules[i];
            if let Matcher::Rest { pattern, .. } = &rule.matcher
                && let Some(captures) = pattern.matches(segments)
            {
                found = Some((rule, captures));
                return true;
            }
            false
        });
        found
    }

    /// The first rule naming a root field of this kind, with these
    /// arguments.
    fn find_field(
        &self,
        operation: OperationType,
        field: &str,
        arguments: &[(String, serde_json::Value)],
    ) -> Option<&CompiledRule> {
        let candidates = self.fields.get(field).unwrap_or(&self.prefixes);
        candidates
            .iter()
            .map(|&i| &self.rules[i])
            .filter(|rule| rule.applies_to(arguments))
            .find(|rule| match &rule.matcher {
                Matcher::Field {
                    operation: o,
                    name,
                    prefix,
                } => {
                    *o == operation
                        && if *prefix {
                            field.starts_with(name.as_str())
                        } else {
                            field == name
                        }
                }
                Matcher::Rest { .. } => false,
            })
    }
}

/// The operation a matched rule names.
fn operation(rule: &CompiledRule, name: String, resources: Vec<ResourceRef>) -> Operation {
    let (scope, tier, refused_by_pack) = match &rule.grant {
        RuleGrant::Scope { scope, tier } => (Some(scope.clone()), *tier, None),
        RuleGrant::Refuse { reason } => (None, Tier::Catastrophic, Some(reason.clone())),
    };
    Operation {
        name,
        scope,
        tier,
        named_by_arguments: resources.len(),
        resources,
        within_environment: rule.within_environment,
        resource_free: rule.resource_free && refused_by_pack.is_none(),
        refused_by_pack,
        nested_objects: false,
        beyond: None,
    }
}

/// An operation no rule names; refused by `policy::decide`.
fn unknown(name: String) -> Operation {
    Operation {
        name,
        scope: None,
        tier: Tier::Catastrophic,
        resources: Vec::new(),
        named_by_arguments: 0,
        within_environment: false,
        resource_free: false,
        refused_by_pack: None,
        nested_objects: false,
        beyond: None,
    }
}

/// The most parameters a query string whose parameters name resources may
/// have.
const MAX_QUERY_PAIRS: usize = 100;

/// The resources a REST rule's query parameters name (`parameters`:
/// parameter → kind), or why the request is refused: a parameter absent,
/// empty or given twice, or another spelling a server could read as it
/// (`serviceId[]`, `[serviceId]`, `serviceid`), or a query string longer
/// than a server reads whole.
fn query_resources(parameters: &[(String, String)], query: &str) -> Result<Vec<ResourceRef>, String> {
    if parameters.is_empty() {
        return Ok(Vec::new());
    }
    // Servers stop reading a long query string without an error (Node's
    // `qs` after 1,000 pairs): past that, one would not read what the
    // broker bound.
    if query.split('&').count() > MAX_QUERY_PAIRS {
        return Err(format!(
            "its query string holds more than {MAX_QUERY_PAIRS} query parameters, past which a server may stop reading it"
        ));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut out = Vec::new();
    for (parameter, kind) in parameters {
        // `[serviceId]`, `serviceId[]`, `a.serviceId`, `SERVICEID`: a server
        // parsing nested names may read any name holding it as it.
        let wanted = parameter.to_ascii_lowercase();
        if let Some((other, _)) = pairs
            .iter()
            .find(|(name, _)| name != parameter && name.to_ascii_lowercase().contains(&wanted))
        {
            return Err(format!(
                "its query parameter `{other}` may be read as `{parameter}`, which names the {kind}; send `{parameter}` alone"
            ));
        }
        let values: Vec<&str> = pairs
            .iter()
            .filter(|(name, _)| name == parameter)
            .map(|(_, value)| value.as_str())
            .collect();
        match values[..] {
            [id] if !id.is_empty() => out.push(ResourceRef {
                kind: kind.clone(),
                id: id.to_owned(),
            }),
            [] | [_] => {
                return Err(format!(
                    "its query parameter `{parameter}` must name one {kind}, so that the broker knows which"
                ));
            }
            _ => return Err(format!("its query parameter `{parameter}` is given more than once")),
        }
    }
    Ok(out)
}

/// The resources a GraphQL rule makes of a field's arguments: its id
/// templates, and the qualifiers of its search. Otherwise why the field is
/// refused: an argument that does not make one id, or a search that names
/// no resource or reaches beyond what it names.
fn named_resources(rule: &CompiledRule, arguments: &[(String, serde_json::Value)]) -> Result<Vec<ResourceRef>, String> {
    let mut out = Vec::new();
    for (kind, template) in &rule.resources {
        let id = template.render_arguments(arguments).map_err(|argument| {
            format!(
                "its `{argument}` argument must be a non-empty string that names one {kind} (no `/`), so that the broker knows which"
            )
        })?;
        out.push(ResourceRef { kind: kind.clone(), id });
    }
    if let Some(search) = &rule.search {
        let query = arguments
            .iter()
            .find(|(n, _)| *n == search.argument)
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default();
        for id in github::search_scope(query, &search.qualifier)? {
            out.push(ResourceRef {
                kind: search.kind.clone(),
                id,
            });
        }
    }
    Ok(out)
}

/// Whether an environment id is an argument of the field or a field of one
/// of its input objects.
fn environment_at_top(arguments: &[(String, serde_json::Value)], id_arguments: &BTreeMap<String, String>) -> bool {
    let environment = |name: &str, value: &serde_json::Value| {
        value.is_string() && id_arguments.get(name).is_some_and(|kind| kind == ENVIRONMENT_KIND)
    };
    arguments.iter().any(|(name, value)| {
        environment(name, value)
            || value
                .as_object()
                .is_some_and(|o| o.iter().any(|(n, v)| environment(n, v)))
    })
}

/// Methods are case-sensitive, and servers disagree on lowercase ones (some
/// read `delete` as DELETE, some as an unknown method); TRACE echoes the
/// request, real token included; CONNECT is a tunnel nothing can classify.
fn check_method(method: &Method) -> Result<(), ClassifyError> {
    let text = method.as_str();
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(ClassifyError::Malformed(format!(
            "the method `{text}` is not written in capitals; methods are case-sensitive and servers disagree on this one: send `{}`",
            text.to_ascii_uppercase()
        )));
    }
    let why = match text {
        "TRACE" => "the server would echo the request back, with the real token the broker adds",
        "CONNECT" => "a tunnel carries requests the broker cannot classify",
        _ => return Ok(()),
    };
    Err(ClassifyError::MethodRefused {
        method: text.to_owned(),
        why,
    })
}

fn check_headers(headers: &HeaderMap) -> Result<(), ClassifyError> {
    if let Some(name) = headers.keys().find(|n| is_override_header(n.as_str())) {
        return Err(ClassifyError::MethodOverride {
            place: format!("the header `{name}`"),
        });
    }
    // `Proxy-Connection` is the same header to the servers that still read it.
    for value in headers
        .get_all(header::CONNECTION)
        .iter()
        .chain(headers.get_all("proxy-connection"))
    {
        let text = value
            .to_str()
            .map_err(|_| ClassifyError::Malformed("the `Connection` header is not text".into()))?;
        for token in text.split(',').map(|t| t.trim().to_ascii_lowercase()) {
            if RELIED_ON.contains(&token.as_str()) || is_override_header(&token) {
                return Err(ClassifyError::Malformed(format!(
                    "the `Connection` header names `{token}`, which the broker reads: removed after classification, the upstream would read the request without it"
                )));
            }
        }
    }
    Ok(())
}

/// A header that could ask a server to run another method: any name with
/// `method` or `verb` in it, `-` and `_` alike (`X-HTTP-Method-Override`,
/// `X_Method_Override`, `X-Original-Method`, `X-HTTP-Verb`), but CORS's
/// request header.
fn is_override_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('_', "-");
    (name.contains("method") || name.contains("verb")) && name != "access-control-request-method"
}

/// A query or body field that frameworks read as the method to run:
/// `_method` (Rails, Laravel, Symfony) and every `…method-override`
/// spelling, compared as PHP reads names (`-`, `.`, space and `[` become
/// `_`; a backslash escape goes).
fn is_override_parameter(name: &str) -> bool {
    let name: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| *c != '\\')
        .map(|c| if matches!(c, '-' | '.' | ' ' | '[') { '_' } else { c })
        .collect();
    (name.starts_with('_') && name.trim_start_matches('_') == "method")
        || name.contains("method_override")
        || name.ends_with("http_method")
}

/// An inspected REST body: unencoded, and naming no method override.
fn check_body(headers: &HeaderMap, body: &[u8]) -> Result<(), ClassifyError> {
    super::body::unencoded(headers)?;
    let Some(media) = super::body::media_type(headers)? else {
        return Ok(());
    };
    if let Some(name) = super::body::field_names(&media, body)?
        .into_iter()
        .find(|n| is_override_parameter(n))
    {
        return Err(ClassifyError::MethodOverride {
            place: format!("the body field `{name}`"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    /// The tiers of a kind's built-in scopes.
    fn tiers(kind: ProviderKind) -> BTreeMap<String, Tier> {
        kind.pack().scopes.iter().map(|(n, s)| (n.clone(), s.tier)).collect()
    }

    fn classifier(kind: ProviderKind, extra: &[OperationRule]) -> Classifier {
        Classifier::new(kind, extra, &tiers(kind), GraphqlLimits::default()).unwrap()
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

    /// Why Railway's schema says a query reads beyond what it names, if it does.
    fn beyond(query: &str) -> Option<Beyond> {
        let ops = gql(json!({ "query": query })).unwrap();
        assert_eq!(ops.len(), 1, "{query}");
        ops[0].beyond.clone()
    }

    #[test]
    fn nested_selections_stay_within_what_the_root_field_names() {
        for within in [
            "{ environment(id: \"e\") { id name config meta { branch } serviceInstances { edges { node { id serviceName \
               latestDeployment { id status instances { status } } domains { serviceDomains { domain } } \
               service { id name __typename } } } } variables { edges { node { name } } } \
               volumeInstances { edges { node { mountPath volume { id name } } } } sourceEnvironment { id name } } }",
            "{ deployment(id: \"d\") { id status environment { name } service { id } creator { email } } }",
            "{ deployments(input: { projectId: \"p\", environmentId: \"e\" }) { edges { node { id meta } } pageInfo { hasNextPage } } }",
            "{ deploymentLogs(deploymentId: \"d\") { message attributes { key value } tags { serviceId } } }",
            "{ deployment(id: \"d\") { service @skip(if: true) { deployments { edges { node { id } } } } } }",
            "{ environment(id: \"e\") { ... on Environment { deployments { edges { node { id } } } } } }",
            "mutation { serviceDomainCreate(input: { environmentId: \"e\", serviceId: \"s\" }) { id domain } }",
            "{ environment(id: \"e\") { ... on Environment { ... on Deployment { id } } } }",
        ] {
            assert_eq!(beyond(within), None, "{within}");
        }
    }

    #[test]
    fn what_a_root_field_returns_says_whose_its_objects_are() {
        // One environment's objects under what the arguments name: an
        // environment among them narrows which.
        let ops = gql(json!({ "query": "{ adminVolumeInstancesForVolume(volumeId: \"v\") { mountPath } }" })).unwrap();
        assert!(ops[0].nested_objects);
        assert_eq!(ops[0].named_by_arguments, 1);
        // The resource itself: its own fields are free to read, and an
        // environment among the arguments does not narrow what lies under it.
        let ops = gql(json!({ "query": "{ project(id: \"p\") { id name } }" })).unwrap();
        assert!(!ops[0].nested_objects);
        assert_eq!(ops[0].named_by_arguments, 0);
        let ops = gql(json!({ "query": "{ variables(projectId: \"p\", environmentId: \"e\") }" })).unwrap();
        assert_eq!(ops[0].named_by_arguments, 2);
    }

    /// Under a resource, the identity of what it refers to (a project's
    /// environments and services) is a directory; a field of what it holds
    /// (its deployments, even their ids or a count of them) is its objects,
    /// in every environment it spans.
    #[test]
    fn references_under_a_resource_are_not_its_objects() {
        let nested = |query: &str| gql(json!({ "query": query })).unwrap()[0].nested_objects;
        for directory in [
            "{ project(id: \"p\") { name workspace { name } services { edges { node { id name } } } } }",
            "{ project(id: \"p\") { environments { edges { node { id name canAccess deletedAt \
             unmergedChangesCount __typename } } } } }",
            "{ project(id: \"p\") { environments { edges { node { __typename id } } } } }",
            "{ project(id: \"p\") { ... on Project { baseEnvironment { id name } } } }",
        ] {
            assert!(!nested(directory), "{directory}");
        }
        for objects in [
            "{ project(id: \"p\") { deployments { edges { node { id } } } } }",
            "{ project(id: \"p\") { deployments { totalCount } } }",
            "{ project(id: \"p\") { environments { pageInfo { hasNextPage } } } }",
            "{ project(id: \"p\") { ... on Project { deployments { edges { node { status } } } } } }",
            // That they exist is theirs too: through an interface, their type
            // name, or only what they refer to.
            "{ project(id: \"p\") { deployments(first: 100) { edges { node { ... on Node { id } } } } } }",
            "{ project(id: \"p\") { deployments { edges { node { __typename } } } } }",
            "{ project(id: \"p\") { deployments { edges { __typename } } } }",
            "{ project(id: \"p\") { deployments { edges { node { environment { id name } service { id } } } } } }",
            "{ project(id: \"p\") { deployments { edges { cursor node { environment { id } } } } } }",
            // What the schema lacks, or what is read past a reference.
            "{ project(id: \"p\") { nothing { id } } }",
            "{ project(id: \"p\") { services { edges { node { deployments { edges { node { id } } } } } } } }",
        ] {
            assert!(nested(objects), "{objects}");
        }
    }

    #[test]
    fn a_mutation_is_confined_to_an_environment_only_by_its_own_environment_id() {
        let within = |query: &str| gql(json!({ "query": query })).unwrap()[0].within_environment;
        assert!(within(
            "mutation { serviceInstanceRedeploy(serviceId: \"s\", environmentId: \"e\") }"
        ));
        assert!(within(
            "mutation { variableUpsert(input: { serviceId: \"s\", environmentId: \"e\", name: \"A\", value: \"b\" }) }"
        ));
        // Deeper than the input's own fields, an environment id is a value.
        assert!(!within(
            "mutation { variableUpsert(input: { serviceId: \"s\", name: \"A\", value: \"b\", x: { environmentId: \"e\" } }) }"
        ));
        // Railway updates every environment that is not a fork.
        assert!(!within(
            "mutation { serviceInstanceUpdate(serviceId: \"s\", environmentId: \"e\", input: {}) }"
        ));
    }

    #[test]
    fn a_nested_reference_to_what_spans_environments_selects_only_its_id_and_name() {
        for (query, place, field) in [
            (
                "{ deployment(id: \"d\") { service { deployments { edges { node { id } } } } } }",
                "deployment.service",
                "deployments",
            ),
            (
                "{ environment(id: \"e\") { sourceEnvironment { config(decryptVariables: true) } } }",
                "environment.sourceEnvironment",
                "config",
            ),
            (
                "{ deployment(id: \"d\") { environment { serviceInstances { edges { node { id } } } } } }",
                "deployment.environment",
                "serviceInstances",
            ),
            (
                "{ deployment(id: \"d\") { s: service { p: project { id } } } }",
                "deployment.service",
                "project",
            ),
            (
                "query { deployment(id: \"d\") { ...F } } fragment F on Deployment { service { project { name } } }",
                "deployment.service",
                "project",
            ),
            (
                "{ environment(id: \"e\") { sourceEnvironment { ... on Environment { variables { edges { node { name } } } } } } }",
                "environment.sourceEnvironment",
                "variables",
            ),
            (
                "{ project(id: \"p\") { environments { edges { node { deployments { edges { node { id } } } } } } } }",
                "project.environments.edges.node",
                "deployments",
            ),
            (
                "mutation M { serviceInstanceRedeploy(environmentId: \"e\", serviceId: \"s\") }\n\
                 query Q { volumeInstance(id: \"v\") { volume { volumeInstances { edges { node { id } } } } } }",
                "volumeInstance.volume",
                "volumeInstances",
            ),
        ] {
            let ops = gql(json!({ "query": query, "operationName": "Q" })).or_else(|_| gql(json!({ "query": query })));
            let why = ops
                .unwrap()
                .iter()
                .find_map(|o| match &o.beyond {
                    Some(Beyond::Across(why)) => Some(why.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{query} reads across nothing"));
            assert!(why.contains(&format!("`{field}` under `{place}`")), "{query}: {why}");
        }
    }

    #[test]
    fn a_nested_field_railways_schema_lacks_is_refused_by_name() {
        for (query, parent, field) in [
            ("{ deployment(id: \"d\") { id secrets } }", "Deployment", "secrets"),
            ("{ environment(id: \"e\") { ... on Nothing { id } } }", "Nothing", "id"),
            ("{ deployment(id: \"d\") { status { code } } }", "Deployment", "status"),
        ] {
            let Some(Beyond::UnknownField(why)) = beyond(query) else {
                panic!("{query}")
            };
            assert!(
                why.contains(&format!("`{field}`")) && why.contains(parent),
                "{query}: {why}"
            );
        }
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
        let deep = format!("{{ {}x{} }}", "a { ".repeat(16), " }".repeat(16));
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
            "query": "query($p: String!) { project(id: $p) { name services { edges { node { id } } } } v: volumeInstanceBackupList(volumeInstanceId: \"vi_9\") { id } }",
            "variables": { "p": "p1" }
        }))
        .unwrap();
        assert_eq!(names(&ops), ["query project", "query volumeInstanceBackupList"]);
        assert_eq!(ops[0].tier, Tier::Read);
        assert_eq!(ids(&ops[0]), [("project", "p1")]);
        assert_eq!(ids(&ops[1]), [("volumeInstance", "vi_9")]);

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
            scope: Some("read".into()),
            ..OperationRule::default()
        };
        let new = OperationRule {
            field: Some("somethingNew".into()),
            scope: Some("service:write".into()),
            id: Some("service".into()),
            ..OperationRule::default()
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

    #[test]
    fn queries_are_named_one_by_one_and_must_name_what_they_read() {
        // A query field no rule names is unknown, like a mutation.
        let ops = gql(json!({ "query": "{ somethingNew { id } }" })).unwrap();
        assert_eq!(ops[0].scope, None);
        assert_eq!(ops[0].refused_by_pack, None);
        // `me` touches no environment's resources, its scalars only.
        let ops = gql(json!({ "query": "{ me { name email } }" })).unwrap();
        assert!(ops[0].resource_free);
        let ops = gql(json!({ "query": "{ me { name projects { edges { node { id } } } } }" })).unwrap();
        assert!(!ops[0].resource_free);
        assert_eq!(ops[0].name, "query me with nested selections");
        // What a project token is for: its references' identity, never more.
        let ops =
            gql(json!({ "query": "{ projectToken { id project { id name } environment { id name } } }" })).unwrap();
        assert!(ops[0].resource_free, "{:?}", ops[0]);
        for deeper in [
            "{ projectToken { project { deployments { edges { node { id } } } } } }",
            "{ projectToken { environment { variables { edges { node { name } } } } } }",
        ] {
            let ops = gql(json!({ "query": deeper })).unwrap();
            assert!(!ops[0].resource_free, "{deeper}");
        }
        // A list of ids is refused by the pack, with its reason.
        let ops = gql(json!({ "query": "{ projectsByIds(ids: [\"p1\"]) { id } }" })).unwrap();
        assert!(ops[0].refused_by_pack.as_deref().unwrap().contains("project(id"));
        // `projects` binds the workspace it is asked about, and nothing without one.
        let ops = gql(json!({ "query": "{ projects(workspaceId: \"w1\") { edges { node { id } } } }" })).unwrap();
        assert_eq!(ids(&ops[0]), [("workspace", "w1")]);
        let ops = gql(json!({ "query": "{ projects { edges { node { id } } } }" })).unwrap();
        assert!(ops[0].resources.is_empty() && !ops[0].resource_free);
    }

    #[test]
    fn duplicates_anywhere_in_a_graphql_request_are_refused() {
        for (query, variables) in [
            // The review's example: the same input field twice, at any depth.
            (
                "mutation { variableUpsert(input: { environmentId: \"A\", environmentId: \"B\", name: \"K\" }) }",
                json!(null),
            ),
            (
                "mutation { variableUpsert(input: { x: { y: [{ environmentId: \"A\" environmentId: \"B\" }] } }) }",
                json!(null),
            ),
            (
                "mutation($e: String) { variableUpsert(input: { environmentId: $e, environmentId: \"B\" }) }",
                json!({"e": "A"}),
            ),
            (
                "mutation($v: String = \"a\") { variableUpsert(input: { a: { b: 1, b: 2 } }) x: volumeDelete(volumeId: $v) }",
                json!(null),
            ),
            // The same argument twice.
            (
                "mutation { volumeDelete(volumeId: \"a\", volumeId: \"b\") }",
                json!(null),
            ),
            // A variable defined twice.
            (
                "mutation($v: String, $v: String) { volumeDelete(volumeId: $v) }",
                json!({"v": "a"}),
            ),
            // Two operations of one name, two fragments of one name.
            ("query A { me { name } } query A { me { id } }", json!(null)),
            (
                "{ ...F } fragment F on Query { me { id } } fragment F on Query { me { name } }",
                json!(null),
            ),
            // Two fields under one response key, at the root or below.
            (
                "mutation { a: volumeDelete(volumeId: \"x\") a: volumeDelete(volumeId: \"y\") }",
                json!(null),
            ),
            (
                "mutation { a: volumeDelete(volumeId: \"x\") a: serviceDelete(id: \"x\") }",
                json!(null),
            ),
            (
                "{ project(id: \"p\") { s: service(id: \"a\") { id } s: service(id: \"b\") { id } } }",
                json!(null),
            ),
            (
                "{ p: project(id: \"p\") { e: environment(id: \"a\") { id } } p: project(id: \"p\") { e: environment(id: \"b\") { id } } }",
                json!(null),
            ),
            // Under a skipped field too: servers validate before they skip.
            (
                "mutation { volumeDelete(volumeId: \"a\") @skip(if: true) { x(input: { a: 1, a: 2 }) } }",
                json!(null),
            ),
            (
                "{ me @include(if: false) { project(id: \"a\", id: \"b\") { id } } }",
                json!(null),
            ),
            // In a variable's default, used or not by the request.
            (
                "query($i: In = { a: 1, a: 2 }) { me { x(input: $i) } }",
                json!({"i": {"a": 1}}),
            ),
        ] {
            let got = gql(json!({ "query": query, "variables": variables }));
            assert_eq!(
                got.map(|o| names(&o).join(",")).unwrap_err().kind(),
                "malformed_request",
                "{query}"
            );
        }
        // A variable past 2^53 is refused as the literal is; 2^53 itself is read exactly.
        let big =
            json!({ "query": "query($p: ID!) { project(id: $p) { id } }", "variables": { "p": 9007199254740993u64 } });
        assert_eq!(gql(big).unwrap_err().kind(), "malformed_request");
        let ops = gql(json!({ "query": "{ project(id: 9007199254740992) { id } }" })).unwrap();
        assert_eq!(ids(&ops[0]), [("project", "9007199254740992")]);
        // The same root field selected twice runs once, with both selections:
        // what either copy reads under it counts.
        let ops = gql(
            json!({ "query": "{ project(id: \"p\") { id } project(id: \"p\") { service(serviceId: \"s\") { id } } }" }),
        )
        .unwrap();
        assert_eq!(ops.len(), 1);
        assert!(ops[0].nested_objects);
        assert!(ids(&ops[0]).contains(&("service", "s")), "{:?}", ids(&ops[0]));
        // The same field selected twice the same way runs once.
        let ops = gql(json!({ "query": "mutation { volumeDelete(volumeId: \"x\") volumeDelete(volumeId: \"x\") }" }))
            .unwrap();
        assert_eq!(names(&ops), ["mutation volumeDelete"]);
    }

    #[test]
    fn what_graphql_servers_refuse_is_refused() {
        for query in [
            // Unused variables and fragments; variables used but not defined.
            "query($v: String) { me { name } }",
            "{ me { name } } fragment F on Query { me { id } }",
            "{ project(id: $p) { id } }",
            // Several operations and no operationName.
            "query A { me { name } } query B { me { id } }",
            // Directives the broker does not evaluate, anywhere.
            "{ me @defer { name } }",
            "query @live { me { name } }",
            "query($v: String @deprecated) { project(id: $v) { id } }",
            "{ ...F } fragment F on Query @x { me { name } }",
            "{ me @skip(if: true) @skip(if: false) { name } }",
            "{ me @skip(if: \"yes\") { name } }",
            "{ me @include { name } }",
            // A fragment on another root type, at the root.
            "mutation { ... on Query { me { name } } }",
            "{ ...F } fragment F on Mutation { volumeDelete(volumeId: \"v\") }",
            // What the parser recovers from but a server does not: an
            // argument or an input field without a value.
            "{ project(id) { id } }",
            "{ project(firs, id: \"p\") { id } }",
            "mutation { variableUpsert(input: { environmentId }) }",
            // An integer past 2^53, which a JavaScript server rounds to
            // another id, written or skipped.
            "{ project(id: 9007199254740993) { id } }",
            "{ project(id: -123456789012345678901234567890) { id } }",
            "{ me @skip(if: true) { project(id: 18446744073709551617) { id } } }",
            // Same key, same value, written differently: servers compare as written.
            "query($p: String = \"p\") { project(id: $p) { id } project(id: \"p\") { id } }",
            // A non-null variable without a value, and a value of the wrong scalar.
            "query($p: String!) { project(id: $p) { id } }",
        ] {
            assert_eq!(
                gql(json!({ "query": query })).unwrap_err().kind(),
                "malformed_request",
                "{query}"
            );
        }
    }

    #[test]
    fn variables_must_fit_the_scalar_types_the_document_declares() {
        for (query, variables) in [
            ("query($p: String!) { project(id: $p) { id } }", json!({ "p": null })),
            ("query($p: String) { project(id: $p) { id } }", json!({ "p": 5 })),
            (
                "query($p: [String!]) { project(id: $p) { id } }",
                json!({ "p": ["a", null] }),
            ),
            (
                "query($n: Int) { deployments(first: $n, input: { serviceId: \"s\" }) { id } }",
                json!({ "n": 3_000_000_000u64 }),
            ),
            (
                "query($b: Boolean!) { me @skip(if: $b) { name } }",
                json!({ "b": "true" }),
            ),
        ] {
            let got = gql(json!({ "query": query, "variables": variables }));
            assert_eq!(
                got.map(|_| ()).unwrap_err().kind(),
                "malformed_request",
                "{query} {variables}"
            );
        }
        let ok = gql(
            json!({ "query": "query($p: ID!, $x: MyInput) { project(id: $p) { id } variables(projectId: \"p\", environmentId: \"e\", serviceId: \"s\") @include(if: true) x: project(id: \"q\") { id } }", "variables": { "p": "p1" } }),
        );
        assert!(ok.is_err(), "an unused variable is still refused");
        let ok = gql(json!({ "query": "query($p: ID!) { project(id: $p) { id } }", "variables": { "p": 7 } })).unwrap();
        assert_eq!(ids(&ok[0]), [("project", "7")]);
    }

    #[test]
    fn skip_and_include_are_evaluated_as_the_server_does() {
        let ops = gql(json!({
            "query": "mutation($no: Boolean!) { a: volumeDelete(volumeId: \"a\") @skip(if: true) b: volumeDelete(volumeId: \"b\") @include(if: $no) c: volumeDelete(volumeId: \"c\") @include(if: true) ... @skip(if: false) { d: volumeDelete(volumeId: \"d\") } }",
            "variables": { "no": false }
        }))
        .unwrap();
        let all: Vec<_> = ops.iter().flat_map(|o| ids(o)).map(|(_, id)| id.to_owned()).collect();
        assert_eq!(all, ["c", "d"]);
        // A variable without a value leaves an input field out, not null.
        let ops = gql(json!({
            "query": "mutation($e: String) { variableUpsert(input: { environmentId: $e, serviceId: \"s\" }) }"
        }))
        .unwrap();
        assert_eq!(ids(&ops[0]), [("service", "s")]);
    }

    #[test]
    fn deep_nesting_is_refused_by_a_limit() {
        for depth in [100, 20_000] {
            let list = format!("{}\"v\"{}", "[".repeat(depth), "]".repeat(depth));
            let query = format!("mutation {{ volumeDelete(volumeId: {list}) }}");
            assert!(gql(json!({ "query": query })).is_err(), "{depth}");
            let object = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
            let query = format!("mutation {{ variableUpsert(input: {object}) }}");
            assert!(gql(json!({ "query": query })).is_err(), "{depth}");
        }
        let deep_json = format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000));
        let body = format!(
            "{{\"query\": \"mutation($v: String) {{ volumeDelete(volumeId: $v) }}\", \"variables\": {{\"v\": {deep_json}}}}}"
        );
        assert_eq!(
            post(&railway(), "application/json", &body).unwrap_err().kind(),
            "malformed_request"
        );
    }

    use proptest::prelude::*;

    /// Documents from GraphQL's own tokens, in any order: the reader's
    /// input as a fuzzer would make it.
    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "(",
            ")",
            "[",
            "]",
            ":",
            "$v",
            "$w",
            "@skip(if: true)",
            "@include(if: $b)",
            "...",
            "... on Query",
            "... on Mutation",
            "fragment F on Query",
            "fragment G on Mutation",
            "...F",
            "...G",
            "query",
            "mutation",
            "subscription",
            "Q",
            "volumeDelete",
            "volumeId",
            "project",
            "id",
            "me",
            "name",
            "environment",
            "sourceEnvironment",
            "service",
            "deployments",
            "edges",
            "node",
            "__typename",
            "... on Environment",
            "fragment H on Deployment",
            "...H",
            "a:",
            "\"vol_1\"",
            "\"\"\"x\"\"\"",
            "1",
            "-2.5e3",
            "true",
            "null",
            "ENUM",
            ",",
            "#c\n",
            "=",
            "String!",
            "[String]",
            "\\u0041",
            "\"\\u00",
            "\u{0}",
            "𝔊",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|t| t.join(" "))
    }

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// Any document, variables and operationName: classified or refused,
        /// never a panic, and an allowed document names only fields the
        /// pack knows or unknown operations (which policy refuses).
        #[test]
        fn fuzz_graphql_reader_never_panics(
            query in token_soup(),
            variables in prop::sample::select(vec!["null", "{}", "{\"v\": \"vol_1\"}", "{\"v\": [1, {\"a\": null}]}", "{\"b\": true}", "[]", "\"x\""]),
            operation in prop::sample::select(vec!["null", "\"Q\"", "\"X\"", "1"]),
            raw in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            static RAILWAY: std::sync::LazyLock<Classifier> = std::sync::LazyLock::new(railway);
            let c = &*RAILWAY;
            let body = format!("{{\"query\": {}, \"variables\": {variables}, \"operationName\": {operation}}}", serde_json::to_string(&query).unwrap());
            let _ = post(c, "application/json", &body);
            let _ = post(c, "application/graphql", &query);
            let _ = c.classify(&RequestView {
                method: &Method::POST,
                path: "/graphql/v2",
                query: None,
                headers: &headers("application/json"),
                body: Some(&raw),
            });
            let encoded: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("query", &query).finish();
            let _ = c.classify(&RequestView {
                method: &Method::GET,
                path: "/graphql/v2",
                query: Some(&encoded),
                headers: &HeaderMap::new(),
                body: None,
            });
        }

        /// Any REST request: classified or refused, never a panic.
        #[test]
        fn fuzz_rest_classifier_never_panics(
            method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "get", "PURGE"]),
            path in "(/[a-z0-9%.;{}*~-]{0,12}){0,8}/?",
            query in "[a-z_=&%0-9.-]{0,30}",
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            static GITHUB: std::sync::LazyLock<Classifier> = std::sync::LazyLock::new(|| classifier(ProviderKind::Github, &[]));
            let gh = &*GITHUB;
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let h = headers("application/json");
            let _ = gh.classify(&RequestView { method: &m, path: &path, query: Some(&query), headers: &h, body: Some(&body) });
            let _ = gh.needs_body(&m, &path, &h);
        }
    }

    #[test]
    fn lenient_rules_are_refused_where_an_agent_could_hold_their_scope() {
        let http_tiers = tiers(ProviderKind::Http);
        let rule = |text: &str| -> OperationRule { toml::from_str(text).unwrap() };
        let bad = [
            (
                rule("method = \"GET\"\npath = \"/**\"\nscope = \"read\"\nresource_free = true"),
                "`**`",
            ),
            (
                rule(
                    "method = \"GET\"\npath = \"/v1/*/items\"\nscope = \"read\"\nresources = [{ kind = \"x\", id = \"x\" }]",
                ),
                "",
            ),
            (
                rule(
                    "method = \"*\"\npath = \"/v1/items/{id}\"\nscope = \"write\"\nresources = [{ kind = \"item\", id = \"{id}\" }]",
                ),
                "any method",
            ),
            (
                rule("method = \"GET\"\npath = \"/v1/items\"\nscope = \"read\""),
                "names no resource",
            ),
            (
                rule("method = \"POST\"\npath = \"/v1/items\"\nscope = \"write\"\nresource_free = true"),
                "only reads",
            ),
            (
                rule(
                    "method = \"GET\"\npath = \"/v1/items\"\nscope = \"read\"\nresource_free = true\nshows_references = true",
                ),
                "`shows_references`",
            ),
            (
                rule("method = \"GET\"\npath = \"/v1/items\"\nscope = \"read\"\nquery = { \"id[]\" = \"item\" }"),
                "not a query parameter name",
            ),
            (
                rule(
                    "method = \"GET\"\npath = \"/v1/items\"\nscope = \"read\"\nresource_free = true\nquery = { id = \"item\" }",
                ),
                "one or the other",
            ),
            (
                rule("method = \"GET\"\npath = \"/v1/items\"\nrefuse = \" \""),
                "say why",
            ),
            (
                rule("method = \"GET\"\npath = \"/v1/items\"\nscope = \"read\"\nrefuse = \"x\""),
                "not both",
            ),
            // Spanning parameters and parameters first are wildcards too.
            (
                rule("method = \"GET\"\npath = \"/{*rest}\"\nscope = \"read\"\nresource_free = true"),
                "begins with a parameter",
            ),
            (
                rule("method = \"GET\"\npath = \"/{a}\"\nscope = \"read\"\nresource_free = true"),
                "begins with a parameter",
            ),
            (
                rule(
                    "method = \"GET\"\npath = \"/{o}/{r}\"\nscope = \"read\"\nresources = [{ kind = \"r\", id = \"{o}/{r}\" }]",
                ),
                "begins with a parameter",
            ),
            (
                rule("method = \"GET\"\npath = \"/v1/{*rest}\"\nscope = \"read\"\nresource_free = true"),
                "spans segments",
            ),
            (
                rule(
                    "method = \"POST\"\npath = \"/v1/{*rest}\"\nscope = \"write\"\nresources = [{ kind = \"x\", id = \"{rest}\" }]",
                ),
                "spans segments",
            ),
            (
                rule(
                    "method = \"GET\"\npath = \"/v1/items/{*rest}\"\nscope = \"read\"\nresources = [{ kind = \"x\", id = \"f-{rest}\" }]",
                ),
                "spans segments",
            ),
        ];
        for (r, says) in &bad {
            let errors = Classifier::new(
                ProviderKind::Http,
                std::slice::from_ref(r),
                &http_tiers,
                GraphqlLimits::default(),
            )
            .unwrap_err();
            assert!(errors[0].message.contains(says), "{r:?}: {}", errors[0].message);
        }
        // Wildcards where matching more is stricter, and exact bound rules, compile.
        for ok in [
            "method = \"DELETE\"\npath = \"/v1/**\"\nscope = \"delete\"",
            "method = \"*\"\npath = \"/admin/**\"\nrefuse = \"administration\"",
            "method = \"GET\"\npath = \"/v1/status\"\nscope = \"read\"\nresource_free = true",
            "method = \"GET\"\npath = \"/v1/search\"\nscope = \"read\"\nquery = { item = \"item\" }",
            "method = \"GET\"\npath = \"/v1/files/{bucket}/{*path}\"\nscope = \"read\"\nresources = [{ kind = \"bucket\", id = \"{bucket}\" }]",
        ] {
            Classifier::new(ProviderKind::Http, &[rule(ok)], &http_tiers, GraphqlLimits::default()).unwrap();
        }
        let railway_tiers = tiers(ProviderKind::Railway);
        let prefix = rule("field = \"serviceInstanceDeploy*\"\nscope = \"deployment:deploy\"");
        let errors = Classifier::new(
            ProviderKind::Railway,
            &[prefix],
            &railway_tiers,
            GraphqlLimits::default(),
        )
        .unwrap_err();
        assert!(errors[0].message.contains("name prefix"), "{}", errors[0].message);
        // Beside a GraphQL endpoint, a REST rule that could match it in
        // another spelling (`/GraphQL/v2`, a wildcard) would forward GraphQL
        // unread; a fixed first segment of its own is needed.
        for path in ["/**", "/{p}/v2", "/GRAPHQL/v3"] {
            let wide = rule(&format!(
                "method = \"POST\"\npath = \"{path}\"\nscope = \"volume:delete\""
            ));
            let errors =
                Classifier::new(ProviderKind::Railway, &[wide], &railway_tiers, GraphqlLimits::default()).unwrap_err();
            assert!(
                errors[0].message.contains("GraphQL endpoint"),
                "{path}: {}",
                errors[0].message
            );
        }
    }

    #[test]
    fn a_stricter_argument_is_checked_where_it_is_written() {
        let rule = |text: &str| -> OperationRule { toml::from_str(text).unwrap() };
        let railway_tiers = tiers(ProviderKind::Railway);
        let upsert = "field = \"variableUpsert\"\nscope = \"variable:write\"\nwithin_environment = true\n";
        for (stricter, says) in [
            (
                "stricter = { argument = \"input.value\", scope = \"variable:write\" }",
                "destructive or catastrophic",
            ),
            (
                "stricter = { argument = \"input.value\", scope = \"no:such\" }",
                "not a scope",
            ),
            (
                "stricter = { argument = \"input..value\", scope = \"variable:delete\" }",
                "not an argument name",
            ),
            (
                "stricter = { argument = \"\", scope = \"variable:delete\" }",
                "not an argument name",
            ),
        ] {
            let errors = Classifier::new(
                ProviderKind::Railway,
                &[rule(&format!("{upsert}{stricter}"))],
                &railway_tiers,
                GraphqlLimits::default(),
            )
            .unwrap_err();
            assert!(errors[0].message.contains(says), "{stricter}: {}", errors[0].message);
        }
        let refusing = rule(
            "field = \"variableUpsert\"\nrefuse = \"no\"\nstricter = { argument = \"input\", scope = \"variable:delete\" }",
        );
        let errors = Classifier::new(
            ProviderKind::Railway,
            &[refusing],
            &railway_tiers,
            GraphqlLimits::default(),
        )
        .unwrap_err();
        assert!(
            errors[0].message.contains("nothing to make stricter"),
            "{}",
            errors[0].message
        );
        let http_tiers = tiers(ProviderKind::Http);
        let rest_rule = rule(
            "method = \"POST\"\npath = \"/v1/items/{id}\"\nscope = \"write\"\nresources = [{ kind = \"item\", id = \"{id}\" }]\nstricter = { argument = \"force\", scope = \"delete\" }",
        );
        let errors =
            Classifier::new(ProviderKind::Http, &[rest_rule], &http_tiers, GraphqlLimits::default()).unwrap_err();
        assert!(errors[0].message.contains("not both"), "{}", errors[0].message);
    }

    #[test]
    fn a_stricter_argument_applies_unless_its_value_is_absent_null_or_listed() {
        let ops = [toml::from_str::<OperationRule>(
            "field = \"variableUpsert\"\nscope = \"variable:write\"\nwithin_environment = true\nstricter = { argument = \"input.value\", unless = [\"safe\", 1], scope = \"variable:delete\" }",
        )
        .unwrap()];
        let c = classifier(ProviderKind::Railway, &ops);
        let scope_of = |input: &str| {
            let body = json!({ "query": format!("mutation {{ variableUpsert(input: {input}) }}") });
            let ops = post(&c, "application/json", &body.to_string()).unwrap().operations;
            (ops[0].scope.clone().unwrap(), ops[0].name.clone())
        };
        for held in [
            "{ environmentId: \"env_stg\" }",
            "{ environmentId: \"env_stg\", value: null }",
            "{ environmentId: \"env_stg\", value: \"safe\" }",
            "{ environmentId: \"env_stg\", value: 1 }",
            "null",
        ] {
            assert_eq!(scope_of(held).0, "variable:write", "{held}");
        }
        for stricter in [
            "{ environmentId: \"env_stg\", value: \"other\" }",
            "{ environmentId: \"env_stg\", value: [\"safe\"] }",
            "{ environmentId: \"env_stg\", value: { a: 1 } }",
            // Where the path goes on, a value that is not an input object
            // cannot be read: stricter.
            "\"safe\"",
        ] {
            let (scope, name) = scope_of(stricter);
            assert_eq!(scope, "variable:delete", "{stricter}");
            assert_eq!(name, "mutation variableUpsert (with `input.value`)");
        }
        // Variables are read as they are substituted.
        let body = json!({
            "query": "mutation M($v: String) { variableUpsert(input: { environmentId: \"e\", value: $v }) }",
            "variables": { "v": "other" }
        });
        let ops = post(&c, "application/json", &body.to_string()).unwrap().operations;
        assert_eq!(ops[0].scope.as_deref(), Some("variable:delete"));
        // The pack's own: `replace: true` deletes what the collection leaves out.
        let replace = |value: &str| {
            gql(json!({ "query": format!("mutation {{ variableCollectionUpsert(input: {{ environmentId: \"e\", replace: {value} }}) }}") }))
                .unwrap()[0]
                .scope
                .clone()
                .unwrap()
        };
        assert_eq!(replace("false"), "variable:write");
        assert_eq!(replace("true"), "variable:delete");
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

    fn request(
        c: &Classifier,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Option<&[u8]>,
    ) -> Result<Classified, ClassifyError> {
        c.classify(&RequestView {
            method: &Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            query,
            headers: &headers,
            body,
        })
    }

    #[test]
    fn github_paths_are_classified_after_normalisation() {
        let gh = classifier(ProviderKind::Github, &[]);
        for spelling in ["/repos/acme/api", "/REPOS/acme/api/", "/repos/acme/%61pi"] {
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
        for spelling in [
            "//repos/acme/api",
            "/repos/acme/api/pulls/..",
            "/repos/x/%2e%2e/acme/api",
            "/repos/acme/api;x=1",
        ] {
            let got = rest(&gh, Method::DELETE, spelling, HeaderMap::new());
            assert_eq!(got.unwrap_err().kind(), "malformed_request", "{spelling}");
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
            (Method::GET, "/repos/acme/api/contents/src/deep/main.rs", "read"),
            (Method::GET, "/repos/acme/api/contents", "read"),
            (Method::GET, "/repos/acme/api/branches/feature/x/protection", "read"),
            (Method::HEAD, "/repos/acme/api", "read"),
            (Method::GET, "/user", "read"),
            (Method::GET, "/rate_limit", "read"),
            (Method::GET, "/orgs/acme/repos", "read"),
            (Method::PUT, "/repos/acme/api/contents/src/main.rs", "contents:write"),
            (
                Method::PUT,
                "/repos/acme/api/contents/.github/workflows/ci.yml",
                "workflows:write",
            ),
            (
                Method::DELETE,
                "/repos/acme/api/contents/.github/actions/setup/action.yml",
                "workflows:write",
            ),
            (
                Method::PUT,
                "/repos/acme/api/contents/.GITHUB/workflows/ci.yml",
                "workflows:write",
            ),
            (
                Method::PUT,
                "/repos/acme/api/contents/docs/.github/x.md",
                "contents:write",
            ),
            (Method::POST, "/repos/acme/api/git/refs", "contents:write"),
            (Method::POST, "/repos/acme/api/pulls", "pulls:write"),
        ];
        for (method, path, scope) in cases {
            let got = rest(&gh, method.clone(), path, HeaderMap::new()).unwrap();
            assert_eq!(got.operations[0].scope.as_deref(), Some(scope), "{method} {path}");
            assert!(
                got.operations[0].resource_free || !got.operations[0].resources.is_empty(),
                "{method} {path} binds nothing"
            );
        }
        let got = rest(&gh, Method::GET, "/repos/acme/api/contents/a/b.rs", HeaderMap::new()).unwrap();
        assert_eq!(ids(&got.operations[0]), [("repository", "acme/api")]);
        let got = rest(
            &gh,
            Method::GET,
            "/orgs/acme/teams/t/repos/acme/infra",
            HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(
            ids(&got.operations[0]),
            [("organization", "acme"), ("repository", "acme/infra")]
        );
        // GitHub's GraphQL endpoint is read as GraphQL; beside it, REST.
        let err = rest(&gh, Method::POST, "/graphql", HeaderMap::new()).unwrap_err();
        assert_eq!(err.kind(), "unsupported_media_type");
        assert!(gh.needs_body(&Method::POST, "/graphql", &HeaderMap::new()));
        assert!(!gh.needs_body(&Method::POST, "/repos/acme/api/pulls", &HeaderMap::new()));
        let got = rest(&gh, Method::POST, "/graphql/v2", HeaderMap::new()).unwrap();
        assert_eq!(got.operations[0].scope, None);
        assert_eq!(got.operations[0].name, "POST /graphql/v2");
    }

    #[test]
    fn alternative_addresses_and_unbound_reads_are_refused_by_the_pack() {
        let gh = classifier(ProviderKind::Github, &[]);
        for (method, path, why) in [
            ("GET", "/repositories/123", "by number"),
            ("GET", "/repositories/123/contents/prod.tf", "by number"),
            ("DELETE", "/repositories/123", "by number"),
            ("GET", "/search/code", "search"),
            ("GET", "/user/repos", "across every environment"),
            ("GET", "/user/emails", "across every environment"),
            ("GET", "/user/42", "account by number"),
            ("GET", "/teams/7/repos", "team by number"),
            ("GET", "/installation/repositories", "every repository"),
            ("GET", "/gists/abc", "gists"),
        ] {
            let got = request(&gh, method, path, Some("q=repo:acme/infra"), HeaderMap::new(), None).unwrap();
            let reason = got.operations[0]
                .refused_by_pack
                .as_deref()
                .unwrap_or_else(|| panic!("{path}"));
            assert!(reason.contains(why), "{path}: {reason}");
        }
        // Anything no rule names stays unknown.
        let got = rest(&gh, Method::GET, "/something/new", HeaderMap::new()).unwrap();
        assert_eq!(
            (
                got.operations[0].scope.as_ref(),
                got.operations[0].refused_by_pack.as_ref()
            ),
            (None, None)
        );
    }

    #[test]
    fn a_git_tree_naming_github_needs_the_workflow_scope() {
        let gh = classifier(ProviderKind::Github, &[]);
        let tree = |path: &str| {
            json!({ "tree": [{ "path": path, "mode": "100644", "type": "blob", "content": "x" }] }).to_string()
        };
        assert!(gh.needs_body(&Method::POST, "/repos/acme/api/git/trees", &HeaderMap::new()));
        assert!(!gh.needs_body(&Method::POST, "/repos/acme/api/git/blobs", &headers("application/json")));
        for (path, scope) in [
            ("src/lib.rs", "contents:write"),
            (".github/workflows/deploy.yml", "workflows:write"),
        ] {
            let body = tree(path);
            let got = request(
                &gh,
                "POST",
                "/repos/acme/api/git/trees",
                None,
                headers("application/json"),
                Some(body.as_bytes()),
            )
            .unwrap();
            assert_eq!(got.operations[0].scope.as_deref(), Some(scope), "{path}");
            assert_eq!(ids(&got.operations[0]), [("repository", "acme/api")]);
        }
        let got = request(
            &gh,
            "POST",
            "/repos/acme/api/git/trees",
            None,
            headers("application/json"),
            Some(b"{\"tree\": 1}"),
        );
        assert_eq!(got.unwrap_err().kind(), "malformed_request");
    }

    #[test]
    fn methods_have_one_spelling_and_trace_and_connect_never_pass() {
        let gh = classifier(ProviderKind::Github, &[]);
        for method in ["delete", "Delete", "get", "pOST"] {
            let got = request(&gh, method, "/repos/acme/api", None, HeaderMap::new(), None);
            assert_eq!(got.unwrap_err().kind(), "malformed_request", "{method}");
        }
        for method in ["TRACE", "CONNECT"] {
            let got = request(&gh, method, "/repos/acme/api", None, HeaderMap::new(), None);
            assert_eq!(got.unwrap_err().kind(), "method_refused", "{method}");
        }
        // OPTIONS is unknown unless a rule names it; HEAD reads as GET does.
        let got = request(&gh, "OPTIONS", "/repos/acme/api", None, HeaderMap::new(), None).unwrap();
        assert_eq!(got.operations[0].scope, None);
        let got = request(&gh, "HEAD", "/repos/acme/api/pulls", None, HeaderMap::new(), None).unwrap();
        assert_eq!(got.operations[0].scope.as_deref(), Some("read"));
        let got = request(
            &railway(),
            "get",
            "/graphql/v2",
            Some("query=%7Bme%7Bname%7D%7D"),
            HeaderMap::new(),
            None,
        );
        assert_eq!(got.unwrap_err().kind(), "malformed_request");
    }

    #[test]
    fn method_overrides_are_refused_in_every_spelling_and_place() {
        let gh = classifier(ProviderKind::Github, &[]);
        for name in [
            "X-HTTP-Method-Override",
            "X-HTTP-Method",
            "X-Method-Override",
            "x_http_method_override",
            "X-Http_Method",
            "X-Original-Method",
            "X-Forwarded-Method",
            "X-HTTP-Verb",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("DELETE"),
            );
            let got = rest(&gh, Method::POST, "/repos/acme/api/pulls", h);
            assert_eq!(got.unwrap_err().kind(), "method_override_refused", "{name}");
        }
        for query in [
            "_method=DELETE",
            "a=1&%5Fmethod=DELETE",
            "_METHOD=delete",
            "x-http-method-override=DELETE",
            "__method=DELETE",
            // What PHP reads as `_method`: `.`, space and `[` become `_`.
            ".method=DELETE",
            "%20method=DELETE",
            "%5Bmethod=DELETE",
            "x.http.method=DELETE",
        ] {
            let got = request(
                &gh,
                "POST",
                "/repos/acme/api/pulls",
                Some(query),
                HeaderMap::new(),
                None,
            );
            assert_eq!(got.unwrap_err().kind(), "method_override_refused", "{query}");
        }
        let ok = request(
            &gh,
            "GET",
            "/repos/acme/api/pulls",
            Some("method=squash&sort=updated"),
            HeaderMap::new(),
            None,
        );
        assert!(ok.is_ok());
        let mut cors = HeaderMap::new();
        cors.insert("access-control-request-method", HeaderValue::from_static("GET"));
        assert!(rest(&gh, Method::GET, "/repos/acme/api/pulls", cors).is_ok());

        // In an inspected body: a form, a multipart form, JSON (generic APIs).
        let api = classifier(ProviderKind::Http, &[toml::from_str("method = \"POST\"\npath = \"/v1/items/{id}\"\nscope = \"write\"\nresources = [{ kind = \"item\", id = \"{id}\" }]").unwrap()]);
        let multipart = "--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n";
        for (content_type, body) in [
            ("application/x-www-form-urlencoded", "name=x&_method=DELETE"),
            ("multipart/form-data; boundary=B", multipart),
            ("application/json", "{\"_method\": \"DELETE\"}"),
            ("text/json", "{\"_method\": \"DELETE\"}"),
            ("application/vnd.api+json", "{\"x.http.method\": \"DELETE\"}"),
            (
                "multipart/form-data; boundary=B",
                "--B\r\nContent-Disposition: form-data; name*=UTF-8''_method\r\n\r\nDELETE\r\n--B--\r\n",
            ),
            (
                "multipart/form-data; boundary=B",
                "--B\r\nContent-Disposition: form-data; name=\"_met\\hod\"\r\n\r\nDELETE\r\n--B--\r\n",
            ),
        ] {
            assert!(
                api.needs_body(&Method::POST, "/v1/items/7", &headers(content_type)),
                "{content_type}"
            );
            let got = request(
                &api,
                "POST",
                "/v1/items/7",
                None,
                headers(content_type),
                Some(body.as_bytes()),
            );
            assert_eq!(got.unwrap_err().kind(), "method_override_refused", "{content_type}");
        }
        let got = request(
            &api,
            "POST",
            "/v1/items/7",
            None,
            headers("application/json"),
            Some(b"{\"name\": \"x\"}"),
        )
        .unwrap();
        assert_eq!(got.operations[0].scope.as_deref(), Some("write"));
    }

    #[test]
    fn a_connection_header_cannot_remove_what_the_broker_read() {
        let gh = classifier(ProviderKind::Github, &[]);
        for named in [
            "content-type",
            "Content-Length",
            "keep-alive, content-encoding",
            "transfer-encoding",
            "authorization",
            "project-access-token",
            "x-http-method-override",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_str(named).unwrap());
            let got = rest(&gh, Method::GET, "/repos/acme/api", h);
            assert_eq!(got.unwrap_err().kind(), "malformed_request", "{named}");
            // `Proxy-Connection` is read as `Connection` by the servers that still read it.
            let mut h = HeaderMap::new();
            h.insert("proxy-connection", HeaderValue::from_str(named).unwrap());
            let got = rest(&gh, Method::GET, "/repos/acme/api", h);
            assert_eq!(
                got.unwrap_err().kind(),
                "malformed_request",
                "proxy-connection: {named}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-trace"));
        assert!(rest(&gh, Method::GET, "/repos/acme/api", h).is_ok());
    }

    #[test]
    fn http_providers_follow_ops_rules_only() {
        let bare = classifier(ProviderKind::Http, &[]);
        assert_eq!(
            rest(&bare, Method::GET, "/v1/items/7", HeaderMap::new())
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
        let wrong_scope: OperationRule =
            toml::from_str("method = \"GET\"\npath = \"/a\"\nscope = \"nope\"\nresource_free = true").unwrap();
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
