//! What a GraphQL-over-HTTP request would execute: every root field of every
//! operation in every document of the request, seen through aliases,
//! fragments, inline fragments and variables, with the arguments each root
//! field receives and the resource ids nested fields name.
//!
//! Ambiguity is refused rather than resolved: duplicate JSON keys, a document
//! in both the URL and the body, an encoded body, unknown request fields and
//! type-system definitions are errors, so that the upstream cannot read the
//! request differently from the broker. Every operation of a document is
//! classified, not only the one `operationName` selects, so a mutation cannot
//! hide behind a name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::{Parser, SyntaxKind};
use http::{HeaderMap, Method, header};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::ClassifyError;
use crate::policy::ResourceRef;

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
            max_depth: 12,
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

/// What the analysis needs to know about ids.
pub struct IdSpec<'a> {
    /// Argument (and input field) name → the kind of resource it names.
    pub arguments: &'a BTreeMap<String, String>,
    /// Fields named like a kind (`volume`, `project`) take an `id` of that kind.
    pub kinds: &'a BTreeSet<String>,
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
    for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        if headers.get_all(&name).iter().count() > 1 {
            return Err(ClassifyError::Malformed(format!(
                "the request has more than one `{name}` header"
            )));
        }
    }
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
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ClassifyError::UnsupportedMediaType(format!(
            "the body is encoded (`{}`); the broker reads GraphQL bodies only unencoded",
            String::from_utf8_lossy(encoding.as_bytes())
        )));
    }
    let body = body.unwrap_or_default();
    match content_type(headers).as_deref() {
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

fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
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
        return Err(ClassifyError::Malformed(format!(
            "the GraphQL document does not parse: {}",
            error.message()
        )));
    }
    let document = tree.document();
    let aliases = document
        .syntax()
        .descendants()
        .filter(|n| n.kind() == SyntaxKind::ALIAS)
        .count();
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
            cst::Definition::OperationDefinition(op) => operations.push(op),
            cst::Definition::FragmentDefinition(f) => {
                let name = name_text(f.fragment_name().and_then(|n| n.name()));
                if fragments.insert(name.clone(), f).is_some() {
                    return Err(ClassifyError::Malformed(format!("fragment `{name}` is defined twice")));
                }
            }
            _ => {
                return Err(ClassifyError::Malformed(
                    "the document holds type-system definitions, which cannot be executed".into(),
                ));
            }
        }
    }
    if operations.is_empty() {
        return Err(ClassifyError::Malformed("the document holds no operation".into()));
    }
    let names: Vec<Option<String>> = operations
        .iter()
        .map(|op| op.name().map(|n| name_text(Some(n))))
        .collect();
    if names.len() > 1 && names.iter().any(Option::is_none) {
        return Err(ClassifyError::Malformed(
            "an anonymous operation must be the only operation of its document".into(),
        ));
    }
    let distinct: BTreeSet<&String> = names.iter().flatten().collect();
    if distinct.len() < names.iter().flatten().count() {
        return Err(ClassifyError::Malformed("two operations share a name".into()));
    }
    if let Some(wanted) = &request.operation_name
        && !distinct.contains(wanted)
    {
        return Err(ClassifyError::Malformed(format!(
            "operationName `{wanted}` names no operation of the document"
        )));
    }

    let mut walk = Walk {
        fragments: &fragments,
        limits,
        ids,
        visits: 0,
    };
    let mut fields = Vec::new();
    for op in &operations {
        let kind = match op.operation_type() {
            None => OperationType::Query,
            Some(t) if t.query_token().is_some() => OperationType::Query,
            Some(t) if t.mutation_token().is_some() => OperationType::Mutation,
            Some(_) => return Err(ClassifyError::Subscription),
        };
        let scope = Scope {
            variables: &request.variables,
            defaults: op
                .variable_definitions()
                .map(|defs| {
                    defs.variable_definitions()
                        .filter_map(|d| {
                            let name = d.variable()?.name()?.text().to_string();
                            Some((name, d.default_value()?.value()?))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let Some(set) = op.selection_set() else { continue };
        let mut roots = Vec::new();
        walk.flatten(&set, &mut Vec::new(), &mut roots)?;
        for field in roots {
            let name = name_text(field.name());
            if name == "__typename" {
                continue;
            }
            let mut nested = Vec::new();
            walk.children(&field, 2, &scope, &mut nested)?;
            fields.push(RootField {
                operation: kind,
                arguments: arguments(&field, &scope),
                name,
                nested,
            });
        }
    }
    Ok(fields)
}

fn name_text(name: Option<cst::Name>) -> String {
    name.map(|n| n.text().to_string()).unwrap_or_default()
}

/// Variables in effect for one operation.
struct Scope<'a> {
    variables: &'a Map<String, Value>,
    defaults: HashMap<String, cst::Value>,
}

impl Scope<'_> {
    fn resolve(&self, value: &cst::Value) -> Value {
        match value {
            cst::Value::Variable(v) => {
                let name = v.name().map(|n| n.text().to_string()).unwrap_or_default();
                match (self.variables.get(&name), self.defaults.get(&name)) {
                    (Some(given), _) => given.clone(),
                    // A default is a constant: resolved without variables, so
                    // one default cannot refer to another (or to itself).
                    (None, Some(default)) => Scope {
                        variables: &Map::new(),
                        defaults: HashMap::new(),
                    }
                    .resolve(default),
                    (None, None) => Value::Null,
                }
            }
            cst::Value::StringValue(s) => Value::String(String::from(s)),
            cst::Value::IntValue(n) => number(&n.syntax().text().to_string()),
            cst::Value::FloatValue(n) => number(&n.syntax().text().to_string()),
            cst::Value::BooleanValue(b) => Value::Bool(b.true_token().is_some()),
            cst::Value::NullValue(_) => Value::Null,
            cst::Value::EnumValue(e) => Value::String(e.text().to_string()),
            cst::Value::ListValue(list) => Value::Array(list.values().map(|v| self.resolve(&v)).collect()),
            cst::Value::ObjectValue(object) => Value::Object(
                object
                    .object_fields()
                    .filter_map(|f| Some((name_text(f.name()), self.resolve(&f.value()?))))
                    .collect(),
            ),
        }
    }
}

fn number(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn arguments(field: &cst::Field, scope: &Scope<'_>) -> Vec<(String, Value)> {
    field
        .arguments()
        .map(|args| {
            args.arguments()
                .filter_map(|a| Some((name_text(a.name()), scope.resolve(&a.value()?))))
                .collect()
        })
        .unwrap_or_default()
}

struct Walk<'a> {
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    limits: &'a GraphqlLimits,
    ids: &'a IdSpec<'a>,
    visits: usize,
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
    /// inline fragments, in order.
    fn flatten(
        &mut self,
        set: &cst::SelectionSet,
        spreading: &mut Vec<String>,
        out: &mut Vec<cst::Field>,
    ) -> Result<(), ClassifyError> {
        for selection in set.selections() {
            self.count()?;
            match selection {
                cst::Selection::Field(f) => out.push(f),
                cst::Selection::InlineFragment(inline) => {
                    if let Some(inner) = inline.selection_set() {
                        self.flatten(&inner, spreading, out)?;
                    }
                }
                cst::Selection::FragmentSpread(spread) => {
                    let name = name_text(spread.fragment_name().and_then(|n| n.name()));
                    if spreading.contains(&name) {
                        return Err(ClassifyError::Malformed(format!("fragment `{name}` spreads itself")));
                    }
                    let fragment = self
                        .fragments
                        .get(&name)
                        .ok_or_else(|| ClassifyError::Malformed(format!("fragment `{name}` is not defined")))?;
                    if let Some(inner) = fragment.selection_set() {
                        spreading.push(name);
                        self.flatten(&inner, spreading, out)?;
                        spreading.pop();
                    }
                }
            }
        }
        Ok(())
    }

    /// Walks the fields under `field` (at `depth`), collecting the ids their
    /// arguments name and enforcing the depth limit.
    fn children(
        &mut self,
        field: &cst::Field,
        depth: usize,
        scope: &Scope<'_>,
        out: &mut Vec<ResourceRef>,
    ) -> Result<(), ClassifyError> {
        let Some(set) = field.selection_set() else {
            return Ok(());
        };
        if depth > self.limits.max_depth {
            return Err(ClassifyError::TooComplex {
                what: "levels of field nesting",
                limit: self.limits.max_depth,
                found: depth,
            });
        }
        let mut fields = Vec::new();
        self.flatten(&set, &mut Vec::new(), &mut fields)?;
        for child in fields {
            let name = name_text(child.name());
            let id_kind = self.ids.kinds.get(&name).map(String::as_str);
            collect_ids(&arguments(&child, scope), id_kind, self.ids.arguments, out);
            self.children(&child, depth + 1, scope, out)?;
        }
        Ok(())
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

/// JSON with every object's keys distinct: servers disagree on which of two
/// equal keys wins, so a request that has them is refused.
fn strict_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue::deserialize(&mut de)?.0;
    de.end()?;
    Ok(value)
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("the key `{key}` appears twice")));
            }
            let StrictValue(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}
