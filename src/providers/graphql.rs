//! What a GraphQL-over-HTTP request would execute: every root field of every
//! operation in every document of the request, seen through aliases,
//! fragments, inline fragments and variables, with the arguments each root
//! field receives and the resource ids nested fields name.
//!
//! Ambiguity is refused rather than resolved: duplicate JSON keys, input
//! object fields, arguments, variables, operations and fragments; two fields
//! under one response key; a document in both the URL and the body; an
//! encoded body or a charset other than UTF-8; unknown request fields,
//! directives other than `@skip` and `@include`, unused variables and
//! fragments, and type-system definitions. Each is an error, so that the
//! upstream cannot read the request differently from the broker. `@skip` and
//! `@include` are evaluated as the server does. Every operation of a document
//! is classified, not only the one `operationName` selects, so a mutation
//! cannot hide behind a name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::{Parser, SyntaxKind};
use http::{HeaderMap, Method, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ClassifyError;
use super::json::strict as strict_json;
use super::schema::Schema;
use crate::policy::ResourceRef;

mod confine;

pub use confine::{Escape, Returns};

/// Field visits (through fragments) after which a document is refused,
/// whatever the configured limits: fragment fan-out grows exponentially.
const MAX_FIELD_VISITS: usize = 10_000;

/// The fields of a GraphQL request, in a JSON body or as URL parameters.
const REQUEST_FIELDS: [&str; 4] = ["query", "operationName", "variables", "extensions"];

/// Limits on what a GraphQL request may be; ops tune them per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlLimits {
    /// Largest document, in bytes.
    pub max_document_bytes: usize,
    /// Deepest field nesting, root fields being depth 1.
    pub max_depth: usize,
    /// Most aliases in one document.
    pub max_aliases: usize,
    /// Most requests in one batched array.
    pub max_batch: usize,
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: 32 * 1024,
            // `gh pr view` selects 13 levels deep (a commit's check runs).
            max_depth: 16,
            max_aliases: 30,
            max_batch: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationType {
    Query,
    Mutation,
}

impl fmt::Display for OperationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
        })
    }
}

/// What the analysis needs to know of the provider: how ids are named, and
/// its schema, when the broker has it.
pub struct IdSpec<'a> {
    /// Argument (and input field) name → the kind of resource it names.
    pub arguments: &'a BTreeMap<String, String>,
    /// Fields named like a kind (`volume`, `project`) take an `id` of that kind.
    pub kinds: &'a BTreeSet<String>,
    /// With it, nested selections are typed and held within what their root
    /// field is bound to (`RootField::escape`).
    pub schema: Option<&'a Schema>,
}

/// A root field an operation would execute.
#[derive(Debug, Clone, PartialEq)]
pub struct RootField {
    pub operation: OperationType,
    pub name: String,
    /// Arguments with variables and defaults substituted.
    pub arguments: Vec<(String, Value)>,
    /// Ids named in the arguments of fields nested under this one.
    pub nested: Vec<ResourceRef>,
    /// Whether the field selects objects under it (fields with selections
    /// of their own), which may belong to any environment.
    pub selects_objects: bool,
    /// Whether what it selects under it reads objects of the resource it is
    /// bound to, not only the identity of those it refers to (by the
    /// schema; without one, `selects_objects`).
    pub reads_own_objects: bool,
    /// What it returns, by the provider's schema.
    pub returns: Returns,
    /// Where its selection leaves what the field is bound to, judged by the
    /// provider's schema (none without one).
    pub escape: Option<Escape>,
    /// Whether this is the operation the server runs (`operationName`'s, or
    /// the document's only one). The others are classified too.
    pub selected: bool,
}

/// One GraphQL request: a document and what goes with it.
#[derive(Debug, Default)]
struct Request {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Map<String, Value>,
    persisted: Option<String>,
}

/// Reads the GraphQL requests an HTTP request carries and lists the root
/// fields they would execute.
pub fn root_fields(
    method: &Method,
    query_string: Option<&str>,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    limits: &GraphqlLimits,
    ids: &IdSpec<'_>,
) -> Result<Vec<RootField>, ClassifyError> {
    let requests = read_requests(method, query_string, headers, body, limits)?;
    let mut fields = Vec::new();
    for request in requests {
        fields.extend(analyze(&request, limits, ids)?);
    }
    Ok(fields)
}

fn read_requests(
    method: &Method,
    query_string: Option<&str>,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    limits: &GraphqlLimits,
) -> Result<Vec<Request>, ClassifyError> {
    let params = query_params(query_string)?;
    let has_body = body.is_some_and(|b| !b.is_empty())
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if *method == Method::GET || *method == Method::HEAD {
        if has_body {
            return Err(ClassifyError::Malformed(
                "a GraphQL GET request must not carry a body".into(),
            ));
        }
        let mut object = Map::new();
        for (key, value) in params {
            let value = match key.as_str() {
                "query" | "operationName" => Value::String(value),
                "variables" | "extensions" => strict_json(value.as_bytes())
                    .map_err(|e| ClassifyError::Malformed(format!("the `{key}` parameter is not JSON: {e}")))?,
                _ => continue,
            };
            object.insert(key, value);
        }
        return Ok(vec![request_from(Value::Object(object))?]);
    }
    if *method != Method::POST {
        return Err(ClassifyError::Malformed(format!(
            "GraphQL requests are GET or POST, not {method}"
        )));
    }
    if let Some((key, _)) = params.iter().find(|(k, _)| REQUEST_FIELDS.contains(&k.as_str())) {
        return Err(ClassifyError::Malformed(format!(
            "a POST request carries `{key}` in its URL as well as a body; send the whole GraphQL request in the body"
        )));
    }
    super::body::unencoded(headers)?;
    let body = body.unwrap_or_default();
    let media = super::body::media_type(headers)?;
    match media.as_ref().map(|m| m.essence.as_str()) {
        Some("application/json") => {
            match strict_json(body).map_err(|e| ClassifyError::Malformed(format!("the body is not JSON: {e}")))? {
                Value::Array(batch) => {
                    if batch.is_empty() {
                        return Err(ClassifyError::Malformed("the batch is empty".into()));
                    }
                    if batch.len() > limits.max_batch {
                        return Err(ClassifyError::TooComplex {
                            what: "requests in one batch",
                            limit: limits.max_batch,
                            found: batch.len(),
                        });
                    }
                    batch.into_iter().map(request_from).collect()
                }
                object => Ok(vec![request_from(object)?]),
            }
        }
        Some("application/graphql") => {
            let text =
                std::str::from_utf8(body).map_err(|_| ClassifyError::Malformed("the body is not UTF-8".into()))?;
            Ok(vec![Request {
                query: Some(text.to_owned()),
                ..Request::default()
            }])
        }
        Some(other) => Err(ClassifyError::UnsupportedMediaType(format!(
            "content type `{other}` is not a GraphQL request; send `application/json` or `application/graphql`"
        ))),
        None => Err(ClassifyError::UnsupportedMediaType(
            "the request has no content type; send `Content-Type: application/json`".into(),
        )),
    }
}

/// The URL's parameters; a repeated one is refused, since servers disagree
/// on which repetition wins.
fn query_params(query_string: Option<&str>) -> Result<Vec<(String, String)>, ClassifyError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query_string.unwrap_or_default().as_bytes()) {
        if params.iter().any(|(k, _)| *k == key) {
            return Err(ClassifyError::Malformed(format!(
                "the URL parameter `{key}` is repeated"
            )));
        }
        params.push((key.into_owned(), value.into_owned()));
    }
    Ok(params)
}

fn request_from(value: Value) -> Result<Request, ClassifyError> {
    let Value::Object(object) = value else {
        return Err(ClassifyError::Malformed(
            "a GraphQL request must be a JSON object (or an array of them)".into(),
        ));
    };
    let mut request = Request::default();
    for (key, value) in object {
        match (key.as_str(), value) {
            (_, Value::Null) => {}
            ("query", Value::String(q)) => request.query = Some(q),
            ("operationName", Value::String(n)) => request.operation_name = Some(n),
            ("variables", Value::Object(v)) => request.variables = v,
            ("extensions", Value::Object(ext)) => {
                if let Some(pq) = ext.get("persistedQuery") {
                    let hash = pq.get("sha256Hash").and_then(Value::as_str).unwrap_or_default();
                    request.persisted = Some(hash.to_owned());
                }
            }
            (field, v) if REQUEST_FIELDS.contains(&field) => {
                return Err(ClassifyError::Malformed(format!(
                    "`{key}` has the wrong type ({})",
                    json_type(&v)
                )));
            }
            (other, _) => {
                return Err(ClassifyError::Malformed(format!(
                    "unknown GraphQL request field `{other}`; the broker accepts query, operationName, variables and extensions"
                )));
            }
        }
    }
    match (&request.query, &request.persisted) {
        (None, Some(_)) => return Err(ClassifyError::PersistedQuery),
        (Some(query), Some(hash)) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, query.as_bytes());
            if !hash.eq_ignore_ascii_case(&hex::encode(digest.as_ref())) {
                return Err(ClassifyError::PersistedQuery);
            }
        }
        (None, None) => {
            return Err(ClassifyError::Malformed(
                "the request has no GraphQL document (`query`)".into(),
            ));
        }
        (Some(_), None) => {}
    }
    Ok(request)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn analyze(request: &Request, limits: &GraphqlLimits, ids: &IdSpec<'_>) -> Result<Vec<RootField>, ClassifyError> {
    let text = request.query.as_deref().unwrap_or_default();
    if text.len() > limits.max_document_bytes {
        return Err(ClassifyError::TooComplex {
            what: "bytes in the document",
            limit: limits.max_document_bytes,
            found: text.len(),
        });
    }
    // The parser's own limit guards its stack; the depth limit below is exact.
    let tree = Parser::new(text).recursion_limit(limits.max_depth * 2 + 32).parse();
    if let Some(error) = tree.errors().next() {
        return Err(malformed(format!(
            "the GraphQL document does not parse: {}",
            error.message()
        )));
    }
    let document = tree.document();
    let aliases = complete(&document)?;
    if aliases > limits.max_aliases {
        return Err(ClassifyError::TooComplex {
            what: "aliases",
            limit: limits.max_aliases,
            found: aliases,
        });
    }

    let mut fragments: HashMap<String, cst::FragmentDefinition> = HashMap::new();
    let mut operations = Vec::new();
    for definition in document.definitions() {
        match definition {
            cst::Definition::OperationDefinition(op) => {
                no_directives(op.directives(), "an operation")?;
                operations.push(op);
            }
            cst::Definition::FragmentDefinition(f) => {
                let name = name_text(f.fragment_name().and_then(|n| n.name()));
                no_directives(f.directives(), "a fragment definition")?;
                if fragments.insert(name.clone(), f).is_some() {
                    return Err(malformed(format!("fragment `{name}` is defined twice")));
                }
            }
            _ => {
                return Err(malformed(
                    "the document holds type-system definitions, which cannot be executed",
                ));
            }
        }
    }
    if operations.is_empty() {
        return Err(malformed("the document holds no operation"));
    }
    let names: Vec<Option<String>> = operations
        .iter()
        .map(|op| op.name().map(|n| name_text(Some(n))))
        .collect();
    if names.len() > 1 && names.iter().any(Option::is_none) {
        return Err(malformed(
            "an anonymous operation must be the only operation of its document",
        ));
    }
    if let Some(name) = first_repeated(names.iter().flatten()) {
        return Err(malformed(format!("two operations are named `{name}`")));
    }
    match &request.operation_name {
        Some(wanted) if !names.iter().flatten().any(|n| n == wanted) => {
            return Err(malformed(format!(
                "operationName `{wanted}` names no operation of the document"
            )));
        }
        None if names.len() > 1 => {
            return Err(malformed(
                "the document holds several operations and no operationName says which one to run",
            ));
        }
        _ => {}
    }

    let mut walk = Walk {
        fragments: &fragments,
        limits,
        ids,
        visits: 0,
        spread: BTreeSet::new(),
        checked: Default::default(),
        under: HashMap::new(),
    };
    let mut fields = Vec::new();
    for (op, name) in operations.iter().zip(&names) {
        let kind = match op.operation_type() {
            None => OperationType::Query,
            Some(t) if t.query_token().is_some() => OperationType::Query,
            Some(t) if t.mutation_token().is_some() => OperationType::Mutation,
            Some(_) => return Err(ClassifyError::Subscription),
        };
        let scope = Scope::new(&request.variables, op)?;
        let selected = match &request.operation_name {
            Some(wanted) => name.as_deref() == Some(wanted.as_str()),
            None => true,
        };
        let Some(set) = op.selection_set() else { continue };
        // What a server validates, before any directive is evaluated.
        walk.checked.clear();
        walk.under.clear();
        walk.check(&set, &scope, Some(kind), 1)?;
        let roots = walk.flatten(&set, &scope, Some(kind), &mut Vec::new(), false)?;
        // One response key, one execution: a field selected twice the same
        // way runs once, with both sub-selections merged, so what either
        // copy reads under it counts.
        let mut seen: Vec<(Selected, Option<usize>)> = Vec::new();
        for field in roots {
            let name = name_text(field.name());
            let arguments = arguments(&field, &scope)?;
            let confine::RootUnder {
                ids: nested,
                returns,
                escape,
                reads_own,
            } = walk.root_under(kind, &field, &scope)?;
            let selects_objects = field
                .selection_set()
                .is_some_and(|s| s.selections().any(|sel| !is_leaf(&sel)));
            let key = response_key(&field);
            if let Some((_, at)) = seen
                .iter()
                .find(|((k, n, a), _)| *k == key && *n == name && *a == arguments)
            {
                if let Some(merged) = at.map(|i| &mut fields[i]) {
                    let merged: &mut RootField = merged;
                    merged.selects_objects |= selects_objects;
                    merged.reads_own_objects |= reads_own;
                    if merged.escape.is_none() {
                        merged.escape = escape;
                    }
                    for id in nested {
                        if !merged.nested.contains(&id) {
                            merged.nested.push(id);
                        }
                    }
                }
                continue;
            }
            if name == "__typename" {
                seen.push(((key, name, arguments), None));
                continue;
            }
            seen.push(((key, name.clone(), arguments.clone()), Some(fields.len())));
            fields.push(RootField {
                operation: kind,
                name,
                arguments,
                selects_objects,
                reads_own_objects: reads_own,
                returns,
                escape,
                nested,
                selected,
            });
        }
        scope.all_used()?;
    }
    if let Some(unused) = fragments.keys().find(|f| !walk.spread.contains(*f)) {
        return Err(malformed(format!("fragment `{unused}` is defined but never spread")));
    }
    Ok(fields)
}

/// The parser recovers from some omissions without an error (`f(a)`, an
/// argument with no value; `{ b }`, an input field with no value), which a
/// server refuses to parse. Every node the broker reads must be whole.
/// Returns how many aliases the document has (counted in the same pass).
fn complete(document: &cst::Document) -> Result<usize, ClassifyError> {
    let mut aliases = 0;
    for node in document.syntax().descendants() {
        let kind = node.kind();
        if kind == SyntaxKind::ALIAS {
            aliases += 1;
        }
        let missing = match kind {
            SyntaxKind::ARGUMENT => cst::Argument::cast(node)
                .filter(|a| a.name().is_some() && a.value().is_some())
                .is_none(),
            SyntaxKind::OBJECT_FIELD => cst::ObjectField::cast(node)
                .filter(|f| f.name().is_some() && f.value().is_some())
                .is_none(),
            SyntaxKind::DIRECTIVE => cst::Directive::cast(node).filter(|d| d.name().is_some()).is_none(),
            SyntaxKind::FIELD => cst::Field::cast(node).filter(|f| f.name().is_some()).is_none(),
            SyntaxKind::ALIAS => cst::Alias::cast(node).filter(|a| a.name().is_some()).is_none(),
            SyntaxKind::FRAGMENT_SPREAD => cst::FragmentSpread::cast(node)
                .filter(|s| s.fragment_name().and_then(|n| n.name()).is_some())
                .is_none(),
            SyntaxKind::FRAGMENT_DEFINITION => cst::FragmentDefinition::cast(node)
                .filter(|f| {
                    f.fragment_name().and_then(|n| n.name()).is_some()
                        && f.type_condition().and_then(|t| t.named_type()).is_some()
                        && f.selection_set().is_some()
                })
                .is_none(),
            SyntaxKind::TYPE_CONDITION => cst::TypeCondition::cast(node)
                .filter(|t| t.named_type().and_then(|n| n.name()).is_some())
                .is_none(),
            SyntaxKind::OPERATION_DEFINITION => cst::OperationDefinition::cast(node)
                .filter(|o| o.selection_set().is_some())
                .is_none(),
            SyntaxKind::VARIABLE_DEFINITION => cst::VariableDefinition::cast(node)
                .filter(|d| d.variable().and_then(|v| v.name()).is_some() && d.ty().is_some())
                .is_none(),
            SyntaxKind::DEFAULT_VALUE => cst::DefaultValue::cast(node).filter(|d| d.value().is_some()).is_none(),
            _ => false,
        };
        if missing {
            return Err(malformed(format!(
                "the GraphQL document does not parse: {} is incomplete",
                format!("{kind:?}").to_lowercase().replace('_', " ")
            )));
        }
    }
    Ok(aliases)
}

/// A root field as selected: response key, field name, arguments.
type Selected = (String, String, Vec<(String, Value)>);

fn malformed(message: impl Into<String>) -> ClassifyError {
    ClassifyError::Malformed(message.into())
}

fn first_repeated<'a>(items: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    let mut seen = BTreeSet::new();
    items.into_iter().find(|item| !seen.insert(*item))
}

fn name_text(name: Option<cst::Name>) -> String {
    name.map(|n| n.text().to_string()).unwrap_or_default()
}

fn response_key(field: &cst::Field) -> String {
    match field.alias().and_then(|a| a.name()) {
        Some(alias) => alias.text().to_string(),
        None => name_text(field.name()),
    }
}

/// A selection with no selection set of its own (a scalar or enum field).
fn is_leaf(selection: &cst::Selection) -> bool {
    matches!(selection, cst::Selection::Field(f) if f.selection_set().is_none())
}

/// Directives where the broker does not evaluate them: refused, since they
/// could change what runs (`@defer`, a server's own directives).
fn no_directives(directives: Option<cst::Directives>, place: &str) -> Result<(), ClassifyError> {
    match directives.and_then(|d| d.directives().next()) {
        Some(d) => Err(malformed(format!(
            "directive `@{}` on {place} is refused: the broker reads only @skip and @include, on selections",
            name_text(d.name())
        ))),
        None => Ok(()),
    }
}

/// Variables in effect for one operation, and which of them were used.
struct Scope<'a> {
    variables: &'a Map<String, Value>,
    defined: BTreeSet<String>,
    defaults: HashMap<String, cst::Value>,
    used: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Scope<'a> {
    fn new(variables: &'a Map<String, Value>, op: &cst::OperationDefinition) -> Result<Scope<'a>, ClassifyError> {
        let mut defined = BTreeSet::new();
        let mut defaults = HashMap::new();
        for def in op
            .variable_definitions()
            .map(|defs| defs.variable_definitions().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            no_directives(def.directives(), "a variable definition")?;
            let name = def
                .variable()
                .and_then(|v| v.name())
                .map(|n| n.text().to_string())
                .unwrap_or_default();
            if !defined.insert(name.clone()) {
                return Err(malformed(format!("variable `${name}` is defined twice")));
            }
            let default = def.default_value().and_then(|d| d.value());
            if let Some(ty) = def.ty() {
                match variables.get(&name) {
                    Some(value) => coerces(&ty, value).map_err(|why| {
                        malformed(format!("variable `${name}` is declared `{}` but {why}", type_text(&ty)))
                    })?,
                    None if default.is_none() && matches!(ty, cst::Type::NonNullType(_)) => {
                        return Err(malformed(format!(
                            "variable `${name}` is declared `{}` and has no value",
                            type_text(&ty)
                        )));
                    }
                    None => {}
                }
            }
            if let Some(default) = default {
                well_formed(&default, &mut |_| {
                    Err(malformed("a variable's default value must be a constant"))
                })?;
                defaults.insert(name, default);
            }
        }
        Ok(Scope {
            variables,
            defined,
            defaults,
            used: Default::default(),
        })
    }

    /// A variable's value; `None` when it has neither a value nor a default
    /// (the server then leaves the argument or input field out).
    fn variable(&self, name: &str) -> Result<Option<Value>, ClassifyError> {
        if !self.defined.contains(name) {
            return Err(malformed(format!(
                "variable `${name}` is used but the operation does not define it"
            )));
        }
        self.used.borrow_mut().insert(name.to_owned());
        match (self.variables.get(name), self.defaults.get(name)) {
            (Some(given), _) => Ok(Some(given.clone())),
            // A default is a constant: resolved without variables, so one
            // default cannot refer to another (or to itself).
            (None, Some(default)) => Ok(Some(constant(default)?)),
            (None, None) => Ok(None),
        }
    }

    /// Records the variables a value names, refusing one the operation does
    /// not define: what a server checks before running anything.
    fn mention(&self, value: &cst::Value) -> Result<(), ClassifyError> {
        well_formed(value, &mut |name| self.variable(name).map(|_| ()))
    }

    /// Every defined variable must be used: servers refuse a document
    /// that defines one it never uses.
    fn all_used(&self) -> Result<(), ClassifyError> {
        let used = self.used.borrow();
        match self.defined.iter().find(|v| !used.contains(*v)) {
            Some(unused) => Err(malformed(format!("variable `${unused}` is defined but never used"))),
            None => Ok(()),
        }
    }

    /// A value with variables substituted. An input object's field or an
    /// argument whose variable has no value is absent, as the server leaves
    /// it; in a list it is null.
    fn resolve(&self, value: &cst::Value) -> Result<Option<Value>, ClassifyError> {
        Ok(Some(match value {
            cst::Value::Variable(v) => {
                let name = v.name().map(|n| n.text().to_string()).unwrap_or_default();
                return self.variable(&name);
            }
            cst::Value::ListValue(list) => Value::Array(
                list.values()
                    .map(|v| Ok(self.resolve(&v)?.unwrap_or(Value::Null)))
                    .collect::<Result<_, ClassifyError>>()?,
            ),
            // A field named twice was refused by `well_formed` before.
            cst::Value::ObjectValue(object) => {
                let mut out = Map::new();
                for field in object.object_fields() {
                    let Some(value) = field.value() else { continue };
                    if let Some(v) = self.resolve(&value)? {
                        out.insert(name_text(field.name()), v);
                    }
                }
                Value::Object(out)
            }
            other => scalar(other),
        }))
    }
}

/// What a server refuses of a value as written, wherever it stands (under
/// `@skip` too): an input object naming a field twice, and an integer past
/// 2^53, which servers read differently (a JavaScript one rounds it, so the
/// id the broker binds would not be the one executed). `variable` is told
/// each variable the value names.
fn well_formed(
    value: &cst::Value,
    variable: &mut dyn FnMut(&str) -> Result<(), ClassifyError>,
) -> Result<(), ClassifyError> {
    match value {
        cst::Value::Variable(v) => variable(&name_text(v.name())),
        cst::Value::IntValue(n) => exact_integer(&n.syntax().text().to_string()),
        cst::Value::ListValue(list) => list.values().try_for_each(|v| well_formed(&v, variable)),
        cst::Value::ObjectValue(object) => {
            let mut names = BTreeSet::new();
            for field in object.object_fields() {
                let name = name_text(field.name());
                if !names.insert(name.clone()) {
                    return Err(malformed(format!(
                        "the input object names field `{name}` twice; servers disagree on which one counts"
                    )));
                }
                if let Some(v) = field.value() {
                    well_formed(&v, variable)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn exact_integer(text: &str) -> Result<(), ClassifyError> {
    match text.parse::<i64>() {
        Ok(n) if n.unsigned_abs() <= crate::providers::json::EXACT_INTEGER => Ok(()),
        _ => Err(malformed(format!(
            "the integer {text} is past 2^53, where servers round it differently; send it as a string"
        ))),
    }
}

/// Whether a variable's value fits the type the document declares for it,
/// as far as the built-in scalars say (a server refuses a value that does
/// not; an input type of the provider's is the provider's to check).
fn coerces(ty: &cst::Type, value: &Value) -> Result<(), String> {
    match ty {
        cst::Type::NonNullType(inner) => {
            if value.is_null() {
                return Err("its value is null".into());
            }
            match (inner.named_type(), inner.list_type()) {
                (Some(named), _) => coerces(&cst::Type::NamedType(named), value),
                (_, Some(list)) => coerces(&cst::Type::ListType(list), value),
                _ => Ok(()),
            }
        }
        cst::Type::ListType(list) => {
            let Some(inner) = list.ty() else { return Ok(()) };
            match value {
                Value::Null => Ok(()),
                Value::Array(items) => items.iter().try_for_each(|item| coerces(&inner, item)),
                one => coerces(&inner, one),
            }
        }
        cst::Type::NamedType(named) => {
            let fits = match (name_text(named.name()).as_str(), value) {
                (_, Value::Null) => true,
                ("String", v) => v.is_string(),
                ("Boolean", v) => v.is_boolean(),
                ("Int", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                ("Int", _) => false,
                ("Float", v) => v.is_number(),
                ("ID", v) => v.is_string() || v.as_i64().is_some(),
                _ => true,
            };
            if fits {
                Ok(())
            } else {
                Err(format!("its value is {}", json_type(value)))
            }
        }
    }
}

fn type_text(ty: &cst::Type) -> String {
    ty.syntax().text().to_string().split_whitespace().collect()
}

/// A default value: a constant, in which a variable is an error.
fn constant(value: &cst::Value) -> Result<Value, ClassifyError> {
    let none = Map::new();
    let scope = Scope {
        variables: &none,
        defined: BTreeSet::new(),
        defaults: HashMap::new(),
        used: Default::default(),
    };
    scope
        .resolve(value)
        .map_err(|_| malformed("a variable's default value must be a constant"))
        .map(|v| v.unwrap_or(Value::Null))
}

fn scalar(value: &cst::Value) -> Value {
    match value {
        cst::Value::StringValue(s) => Value::String(String::from(s)),
        cst::Value::IntValue(n) => number(&n.syntax().text().to_string()),
        cst::Value::FloatValue(n) => number(&n.syntax().text().to_string()),
        cst::Value::BooleanValue(b) => Value::Bool(b.true_token().is_some()),
        cst::Value::EnumValue(e) => Value::String(e.text().to_string()),
        _ => Value::Null,
    }
}

fn number(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A field's arguments with variables substituted (`check` refused one
/// named twice before); one whose variable has no value is left out.
fn arguments(field: &cst::Field, scope: &Scope<'_>) -> Result<Vec<(String, Value)>, ClassifyError> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for argument in field.arguments().iter().flat_map(|a| a.arguments()) {
        let name = name_text(argument.name());
        let Some(value) = argument.value() else { continue };
        if let Some(v) = scope.resolve(&value)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// A field's arguments as written, by name, for comparing two fields under
/// one response key: servers compare them as written (`$v` and `"x"` differ
/// even when `$v` is `"x"`), so the broker does too.
fn written_arguments(field: &cst::Field) -> BTreeMap<String, String> {
    field
        .arguments()
        .iter()
        .flat_map(|a| a.arguments())
        .map(|a| (name_text(a.name()), a.value().map(|v| written(&v)).unwrap_or_default()))
        .collect()
}

/// A value as written, with formatting and escapes normalised the way a
/// GraphQL printer normalises them.
fn written(value: &cst::Value) -> String {
    match value {
        cst::Value::Variable(v) => format!("${}", v.name().map(|n| n.text().to_string()).unwrap_or_default()),
        cst::Value::StringValue(s) => {
            let block = s.syntax().text().to_string().starts_with("\"\"\"");
            let text = serde_json::to_string(&String::from(s)).unwrap_or_default();
            if block { format!("block{text}") } else { text }
        }
        cst::Value::IntValue(n) => n.syntax().text().to_string(),
        cst::Value::FloatValue(n) => n.syntax().text().to_string(),
        cst::Value::BooleanValue(b) => b.true_token().is_some().to_string(),
        cst::Value::NullValue(_) => "null".to_owned(),
        cst::Value::EnumValue(e) => e.text().to_string(),
        cst::Value::ListValue(list) => {
            format!("[{}]", list.values().map(|v| written(&v)).collect::<Vec<_>>().join(","))
        }
        cst::Value::ObjectValue(object) => format!(
            "{{{}}}",
            object
                .object_fields()
                .map(|f| format!(
                    "{}:{}",
                    name_text(f.name()),
                    f.value().map(|v| written(&v)).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Whether `@skip` and `@include` let a selection run; any other directive
/// is refused.
fn included(directives: Option<cst::Directives>, scope: &Scope<'_>) -> Result<bool, ClassifyError> {
    let mut run = true;
    let mut seen = BTreeSet::new();
    for directive in directives.iter().flat_map(|d| d.directives()) {
        let name = name_text(directive.name());
        if name != "skip" && name != "include" {
            return Err(malformed(format!(
                "directive `@{name}` is refused: the broker reads only @skip and @include"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(malformed(format!("directive `@{name}` is used twice on one selection")));
        }
        let mut condition = None;
        for argument in directive.arguments().iter().flat_map(|a| a.arguments()) {
            let arg = name_text(argument.name());
            if arg != "if" || condition.is_some() {
                return Err(malformed(format!("`@{name}` takes one argument, `if`")));
            }
            condition = Some(argument.value().map(|v| scope.resolve(&v)).transpose()?.flatten());
        }
        let value = match condition {
            Some(Some(Value::Bool(b))) => b,
            _ => {
                return Err(malformed(format!(
                    "`@{name}(if: …)` must be given a boolean, literally or through a variable"
                )));
            }
        };
        run &= if name == "skip" { !value } else { value };
    }
    Ok(run)
}

struct Walk<'a> {
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    limits: &'a GraphqlLimits,
    ids: &'a IdSpec<'a>,
    visits: usize,
    /// The fragments some operation spreads.
    spread: BTreeSet<String>,
    /// Selection sets `check` has validated in the current operation, and at
    /// what depth: a fragment spread many times is validated once.
    checked: std::collections::HashSet<(apollo_parser::TextRange, usize)>,
    /// What `under` found under each selection set, at each position, in
    /// the current operation: a fragment spread many times is walked once.
    under: HashMap<(apollo_parser::TextRange, Option<confine::Position>), confine::Under>,
}

impl Walk<'_> {
    fn count(&mut self) -> Result<(), ClassifyError> {
        self.visits += 1;
        if self.visits > MAX_FIELD_VISITS {
            return Err(ClassifyError::TooComplex {
                what: "field visits through fragments",
                limit: MAX_FIELD_VISITS,
                found: self.visits,
            });
        }
        Ok(())
    }

    /// The fields one selection set selects, through fragment spreads and
    /// inline fragments, in order, leaving out what `@skip` and `@include`
    /// leave out unless `every` is set (what a server validates). At the
    /// root (`root` is the operation's kind), a type condition must name the
    /// operation's own root type.
    fn flatten(
        &mut self,
        set: &cst::SelectionSet,
        scope: &Scope<'_>,
        root: Option<OperationType>,
        spreading: &mut Vec<String>,
        every: bool,
    ) -> Result<Vec<cst::Field>, ClassifyError> {
        let fields = self.flatten_on(set, scope, root, spreading, every, None)?;
        Ok(fields.into_iter().map(|(field, _)| field).collect())
    }

    /// `flatten`, with the type condition each field is selected under (the
    /// innermost fragment's), if any.
    fn flatten_on(
        &mut self,
        set: &cst::SelectionSet,
        scope: &Scope<'_>,
        root: Option<OperationType>,
        spreading: &mut Vec<String>,
        every: bool,
        on: Option<&str>,
    ) -> Result<Vec<(cst::Field, Option<String>)>, ClassifyError> {
        let mut out = Vec::new();
        for selection in set.selections() {
            self.count()?;
            match selection {
                cst::Selection::Field(f) => {
                    if included(f.directives(), scope)? || every {
                        out.push((f, on.map(str::to_owned)));
                    }
                }
                cst::Selection::InlineFragment(inline) => {
                    let condition = inline
                        .type_condition()
                        .and_then(|t| t.named_type())
                        .map(|t| name_text(t.name()));
                    root_type(root, condition.as_deref())?;
                    if (included(inline.directives(), scope)? || every)
                        && let Some(inner) = inline.selection_set()
                    {
                        let on = condition.as_deref().or(on);
                        out.extend(self.flatten_on(&inner, scope, root, spreading, every, on)?);
                    }
                }
                cst::Selection::FragmentSpread(spread) => {
                    let name = name_text(spread.fragment_name().and_then(|n| n.name()));
                    if spreading.contains(&name) {
                        return Err(malformed(format!("fragment `{name}` spreads itself")));
                    }
                    let fragment = self
                        .fragments
                        .get(&name)
                        .ok_or_else(|| malformed(format!("fragment `{name}` is not defined")))?;
                    self.spread.insert(name.clone());
                    let condition = fragment
                        .type_condition()
                        .and_then(|t| t.named_type())
                        .map(|t| name_text(t.name()));
                    root_type(root, condition.as_deref())?;
                    if (included(spread.directives(), scope)? || every)
                        && let Some(inner) = fragment.selection_set()
                    {
                        spreading.push(name);
                        let on = condition.as_deref().or(on);
                        out.extend(self.flatten_on(&inner, scope, root, spreading, every, on)?);
                        spreading.pop();
                    }
                }
            }
        }
        Ok(out)
    }

    /// What a server validates of a selection set and everything under it,
    /// whatever `@skip` and `@include` say: fragments, root types, the depth
    /// limit, fields under one response key, and which variables are used.
    fn check(
        &mut self,
        set: &cst::SelectionSet,
        scope: &Scope<'_>,
        root: Option<OperationType>,
        depth: usize,
    ) -> Result<(), ClassifyError> {
        if depth > self.limits.max_depth {
            return Err(ClassifyError::TooComplex {
                what: "levels of field nesting",
                limit: self.limits.max_depth,
                found: depth,
            });
        }
        if !self.checked.insert((set.syntax().text_range(), depth)) {
            return Ok(());
        }
        let fields = self.flatten(set, scope, root, &mut Vec::new(), true)?;
        self.no_conflicts(&fields, scope)?;
        for field in &fields {
            let mut names = BTreeSet::new();
            for argument in field.arguments().iter().flat_map(|a| a.arguments()) {
                let name = name_text(argument.name());
                if !names.insert(name.clone()) {
                    return Err(malformed(format!(
                        "field `{}` names argument `{name}` twice; servers disagree on which one counts",
                        name_text(field.name())
                    )));
                }
                if let Some(value) = argument.value() {
                    scope.mention(&value)?;
                }
            }
            if let Some(inner) = field.selection_set() {
                self.check(&inner, scope, None, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Fields that answer under one response key must be the same field
    /// with the same arguments, at every level: otherwise the server
    /// refuses the document or picks one, and the broker would have to
    /// guess which.
    fn no_conflicts(&mut self, fields: &[cst::Field], scope: &Scope<'_>) -> Result<(), ClassifyError> {
        let mut groups: BTreeMap<String, Vec<&cst::Field>> = BTreeMap::new();
        for field in fields {
            groups.entry(response_key(field)).or_default().push(field);
        }
        for (key, group) in groups {
            // A key used once has nothing to agree with.
            if group.len() == 1 {
                continue;
            }
            let first = group[0];
            let name = name_text(first.name());
            let args = written_arguments(first);
            let mut children = Vec::new();
            for field in &group {
                if name_text(field.name()) != name || written_arguments(field) != args {
                    return Err(malformed(format!(
                        "two different fields answer as `{key}`; give each its own alias"
                    )));
                }
                if let Some(set) = field.selection_set() {
                    children.extend(self.flatten(&set, scope, None, &mut Vec::new(), true)?);
                }
            }
            self.no_conflicts(&children, scope)?;
        }
        Ok(())
    }
}

/// At the root, a fragment's type condition must be the operation's root
/// type: anything else never runs there, or runs where the broker did not
/// look.
fn root_type(root: Option<OperationType>, condition: Option<&str>) -> Result<(), ClassifyError> {
    let (Some(kind), Some(condition)) = (root, condition) else {
        return Ok(());
    };
    let expected = match kind {
        OperationType::Query => "Query",
        OperationType::Mutation => "Mutation",
    };
    if condition == expected {
        Ok(())
    } else {
        Err(malformed(format!(
            "a fragment on `{condition}` is spread at the root of a {kind}, whose type is `{expected}`"
        )))
    }
}

/// Ids in a field's arguments: arguments and input fields named like
/// `volumeId`, at any depth, and the field's own `id` when `id_kind` says
/// what it names.
pub fn collect_ids(
    arguments: &[(String, Value)],
    id_kind: Option<&str>,
    id_arguments: &BTreeMap<String, String>,
    out: &mut Vec<ResourceRef>,
) {
    for (name, value) in arguments {
        let kind = match name.as_str() {
            "id" => id_kind,
            other => id_arguments.get(other).map(String::as_str),
        };
        match kind {
            Some(kind) => push_ids(kind, value, out),
            None => nested_ids(value, id_arguments, out),
        }
    }
}

fn nested_ids(value: &Value, id_arguments: &BTreeMap<String, String>, out: &mut Vec<ResourceRef>) {
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                match id_arguments.get(name) {
                    Some(kind) => push_ids(kind, v, out),
                    None => nested_ids(v, id_arguments, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| nested_ids(v, id_arguments, out)),
        _ => {}
    }
}

fn push_ids(kind: &str, value: &Value, out: &mut Vec<ResourceRef>) {
    let id = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => return items.iter().for_each(|v| push_ids(kind, v, out)),
        _ => return,
    };
    let resource = ResourceRef {
        kind: kind.to_owned(),
        id,
    };
    if !out.contains(&resource) {
        out.push(resource);
    }
}
