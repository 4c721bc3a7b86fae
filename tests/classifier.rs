//! The GraphQL classifier against the reference implementation.
//!
//! A generator writes GraphQL-over-HTTP requests (aliases, fragments and
//! spreads in any order, inline fragments, `@skip`/`@include`, variables
//! and defaults, escapes and block strings, batches, operationName choices,
//! duplicates and other faults, and some requests mangled byte by byte).
//! Each goes through the broker's classifier and policy, and through
//! graphql-js (tests/js/graphql-reference.mjs), which reports the root
//! fields and coerced arguments it would execute for the chosen operation.
//! Every disagreement must be a refusal by the broker; no request may be
//! allowed that the reference refuses or reads otherwise. So that a broker
//! refusing everything cannot pass, at least half the requests must be
//! allowed and agree with graphql-js field for field and argument for
//! argument.
//!
//! `VALETKEY_DIFF_CASES` sets how many requests (default 4000) and
//! `VALETKEY_DIFF_SEED` the seed; CI runs the default, longer runs are by
//! hand.
//!
//! GitHub's GraphQL pack is held to the documents the real `gh` sends
//! (tests/fixtures/gh, captured verbatim): each is bound to the repository it
//! names with the scope of the REST route that does the same, and variants
//! that leave the repository are refused.

#[path = "common/outside.rs"]
mod outside;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Map, Value, json};
use valetkey::policy::{self, Access, Operation, ProviderResources, Refusal, Rules, Tier};
use valetkey::providers::{Classifier, GraphqlLimits, IdSpec, ProviderKind, RequestView, root_fields};

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same requests, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The faults a request may carry, each one thing a server could read
/// differently or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    DuplicateInputField,
    DuplicateArgument,
    DuplicateVariable,
    DuplicateOperation,
    DuplicateFragment,
    ConflictingAlias,
    UnusedVariable,
    UnusedFragment,
    UndefinedVariable,
    NoOperationName,
    WrongOperationName,
    UnknownDirective,
    FragmentCycle,
    WrongRootType,
    MissingSkipCondition,
}

const FAULTS: [Fault; 15] = [
    Fault::DuplicateInputField,
    Fault::DuplicateArgument,
    Fault::DuplicateVariable,
    Fault::DuplicateOperation,
    Fault::DuplicateFragment,
    Fault::ConflictingAlias,
    Fault::UnusedVariable,
    Fault::UnusedFragment,
    Fault::UndefinedVariable,
    Fault::NoOperationName,
    Fault::WrongOperationName,
    Fault::UnknownDirective,
    Fault::FragmentCycle,
    Fault::WrongRootType,
    Fault::MissingSkipCondition,
];

/// One operation being written: its variables and fragments grow as
/// fields use them.
struct Writer<'a> {
    rng: &'a mut Rng,
    vars: Vec<(String, String, Option<String>)>,
    values: Map<String, Value>,
    fragments: Vec<String>,
    count: usize,
}

/// String literals as GraphQL writes them, and what they mean.
const STRINGS: [(&str, &str); 7] = [
    ("\"plain\"", "plain"),
    ("\"a\\nb\"", "a\nb"),
    ("\"q\\\"x\"", "q\"x"),
    ("\"\\u00e9t\\u00e9\"", "été"),
    ("\"tab\\tand\\\\slash\\/\"", "tab\tand\\slash/"),
    ("\"\"\"\n    block\n      indented\n  \"\"\"", "block\n  indented"),
    ("\"\"\"with \\\"\"\" inside\"\"\"", "with \"\"\" inside"),
];

impl Writer<'_> {
    fn fresh(&mut self, stem: &str) -> String {
        self.count += 1;
        format!("{stem}{}", self.count)
    }

    /// A value for an argument of type String: a literal, or a variable
    /// with a value, a default, or (rarely) neither.
    fn string(&mut self, id: &str) -> String {
        if self.rng.chance(30) {
            let name = self.fresh("v");
            let ty = if self.rng.chance(50) { "String" } else { "String!" };
            match self.rng.below(10) {
                0 => self.vars.push((name.clone(), "String".into(), None)),
                1 => self.vars.push((name.clone(), ty.into(), Some(format!("\"{id}\"")))),
                _ => {
                    self.vars.push((name.clone(), ty.into(), None));
                    self.values.insert(name.clone(), json!(id));
                }
            }
            return format!("${name}");
        }
        format!("\"{id}\"")
    }

    /// An input object with ids, other fields and escapes, literal or as a
    /// JSON variable.
    fn input(&mut self, ids: &[(&str, &str)]) -> String {
        if self.rng.chance(25) {
            let name = self.fresh("i");
            let mut object = Map::new();
            for (k, v) in ids {
                object.insert((*k).to_owned(), json!(v));
            }
            object.insert("name".into(), json!("KEY"));
            object.insert("value".into(), json!(self.rng.pick(&STRINGS).1));
            self.vars.push((name.clone(), "JSON".into(), None));
            self.values.insert(name.clone(), Value::Object(object));
            return format!("${name}");
        }
        let mut fields: Vec<String> = ids.iter().map(|(k, v)| format!("{k}: {}", self.string(v))).collect();
        fields.push("name: \"KEY\"".into());
        fields.push(format!("value: {}", self.rng.pick(&STRINGS).0));
        if self.rng.chance(20) {
            fields.push("meta: { tags: [\"a\", 2, 2.5, true, null, ENUM_VALUE] }".into());
        }
        format!("{{ {} }}", fields.join(", "))
    }

    /// `@skip`/`@include`, sometimes, with a literal or a Boolean variable.
    fn directive(&mut self) -> String {
        if !self.rng.chance(15) {
            return String::new();
        }
        let which = if self.rng.chance(50) { "skip" } else { "include" };
        let condition = if self.rng.chance(50) {
            self.rng.pick(&["true", "false"]).to_string()
        } else {
            let name = self.fresh("b");
            self.vars.push((name.clone(), "Boolean!".into(), None));
            self.values.insert(name.clone(), json!(self.rng.chance(50)));
            format!("${name}")
        };
        format!(" @{which}(if: {condition})")
    }

    fn alias(&mut self) -> String {
        if self.rng.chance(30) {
            format!("{}: ", self.fresh("a"))
        } else {
            String::new()
        }
    }

    /// One root field of a query or a mutation, mostly aimed at staging.
    fn root(&mut self, mutation: bool) -> String {
        let production = self.rng.chance(3);
        let env = if production { "env_prod" } else { "env_stg" };
        let field = if mutation {
            match self.rng.below(20) {
                0..=7 => {
                    let input = self.input(&[
                        ("projectId", "proj_1"),
                        ("environmentId", env),
                        ("serviceId", "svc_api"),
                    ]);
                    format!("variableUpsert(input: {input})")
                }
                8..=13 => format!(
                    "serviceInstanceRedeploy(serviceId: {}, environmentId: {})",
                    self.string("svc_api"),
                    self.string(env)
                ),
                14..=18 => format!("deploymentRestart(id: {})", self.string("dep_stg")),
                _ => format!("volumeDelete(volumeId: {})", self.string("vol_stg")),
            }
        } else {
            let node = "{ id name }";
            match self.rng.below(12) {
                0..=2 => format!("project(id: {}) {node}", self.string("proj_1")),
                // Objects under an environment: its own, typed by Railway's
                // schema as the broker types them.
                3 => format!(
                    "environment(id: {}) {{ id serviceInstances {{ edges {{ node {{ id }} }} }} }}",
                    self.string(env)
                ),
                4..=5 => format!("environment(id: {}) {node}", self.string(env)),
                6 => format!("service(id: {}) {node}", self.string("svc_api")),
                7..=8 => format!(
                    "variables(projectId: {}, environmentId: {}, serviceId: {})",
                    self.string("proj_1"),
                    self.string(env),
                    self.string("svc_api")
                ),
                9 => {
                    let input = self.input(&[("projectId", "proj_1"), ("environmentId", env)]);
                    format!("deployments(input: {input}, first: 5) {{ edges {{ node {{ id }} }} }}")
                }
                _ => "me { name email }".to_owned(),
            }
        };
        let alias = self.alias();
        let directive = self.directive();
        match self.rng.below(10) {
            // In a fragment of its own, spread here.
            0 | 1 => {
                let name = self.fresh("F");
                let on = if mutation { "Mutation" } else { "Query" };
                self.fragments
                    .push(format!("fragment {name} on {on} {{ {alias}{field}{directive} }}"));
                format!("...{name}")
            }
            // In an inline fragment, with or without a type condition.
            2 => {
                let on = match (mutation, self.rng.chance(50)) {
                    (_, false) => "",
                    (true, true) => " on Mutation",
                    (false, true) => " on Query",
                };
                format!("...{on}{} {{ {alias}{field} }}", self.directive())
            }
            _ => format!("{alias}{field}{directive}"),
        }
    }
}

/// One operation's text, its variables' values, and its name.
fn operation(rng: &mut Rng, name: Option<String>, mutation: bool) -> (String, Map<String, Value>, Vec<String>) {
    let mut w = Writer {
        rng,
        vars: Vec::new(),
        values: Map::new(),
        fragments: Vec::new(),
        count: 0,
    };
    let prefix = name.clone().unwrap_or_default();
    w.count = prefix.len() * 100;
    let n = 1 + w.rng.below(3);
    let roots: Vec<String> = (0..n).map(|_| w.root(mutation)).collect();
    let vars = if w.vars.is_empty() {
        String::new()
    } else {
        let defs: Vec<String> = w
            .vars
            .iter()
            .map(|(n, t, d)| match d {
                Some(d) => format!("${n}: {t} = {d}"),
                None => format!("${n}: {t}"),
            })
            .collect();
        format!("({})", defs.join(", "))
    };
    let keyword = if mutation { "mutation" } else { "query" };
    let head = match (&name, vars.is_empty(), mutation) {
        (None, true, false) if w.rng.chance(50) => String::new(),
        (None, _, _) => format!("{keyword}{vars} "),
        (Some(n), _, _) => format!("{keyword} {n}{vars} "),
    };
    let separator = *w.rng.pick(&[" ", "\n", " , ", " # a comment\n"]);
    let text = format!("{head}{{ {} }}", roots.join(separator));
    (text, w.values, w.fragments)
}

/// One GraphQL request: a document, its variables, maybe an operationName.
fn request(rng: &mut Rng, fault: Fault) -> Value {
    let mutation = rng.chance(30);
    let several = rng.chance(12) || matches!(fault, Fault::NoOperationName | Fault::WrongOperationName);
    let mut parts = Vec::new();
    let mut variables = Map::new();
    let mut fragments = Vec::new();
    let mut names = Vec::new();
    let count = if several { 2 } else { 1 };
    for i in 0..count {
        let name = (several || rng.chance(40)).then(|| format!("Op{}", i + rng.below(3) * 10));
        let kind = if i == 0 { mutation } else { rng.chance(30) };
        let (text, values, frags) = operation(rng, name.clone(), kind);
        parts.push(text);
        variables.extend(values);
        fragments.extend(frags);
        names.extend(name);
    }
    let mut operation_name = match (names.len(), rng.chance(30)) {
        (0, _) => None,
        (1, false) => None,
        (_, _) => Some(rng.pick(&names).clone()),
    };
    let mut document = parts.join("\n");
    let mut fragment_text = fragments.join("\n");
    match fault {
        Fault::None => {}
        Fault::DuplicateInputField => {
            document = format!(
                "mutation D {{ variableUpsert(input: {{ environmentId: \"env_stg\", meta: {{ environmentId: \"env_stg\", environmentId: \"env_prod\" }} }}) }}\n{document}"
            );
            operation_name = Some("D".into());
        }
        Fault::DuplicateArgument => {
            document = format!("query D {{ project(id: \"proj_1\", id: \"proj_2\") {{ id }} }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::DuplicateVariable => {
            document = format!("query D($x: String, $x: String) {{ project(id: $x) {{ id }} }}\n{document}");
            variables.insert("x".into(), json!("proj_1"));
            operation_name = Some("D".into());
        }
        Fault::DuplicateOperation => {
            document = format!("query D {{ me {{ name }} }}\nquery D {{ me {{ id }} }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::DuplicateFragment => {
            fragment_text.push_str("\nfragment Twice on Query { me { id } }\nfragment Twice on Query { me { name } }");
            document = format!("query D {{ ...Twice }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::ConflictingAlias => {
            document = format!(
                "query D {{ x: project(id: \"proj_1\") {{ id }} x: environment(id: \"env_prod\") {{ id }} }}\n{document}"
            );
            operation_name = Some("D".into());
        }
        Fault::UnusedVariable => {
            document = format!("query D($unused: String) {{ me {{ name }} }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::UnusedFragment => fragment_text.push_str("\nfragment Unused on Query { me { id } }"),
        Fault::UndefinedVariable => {
            document = format!("query D {{ project(id: $nowhere) {{ id }} }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::NoOperationName => operation_name = None,
        Fault::WrongOperationName => operation_name = Some("Elsewhere".into()),
        Fault::UnknownDirective => {
            document = format!("query D {{ me @defer {{ name }} }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::FragmentCycle => {
            fragment_text.push_str("\nfragment C1 on Query { ...C2 }\nfragment C2 on Query { ...C1 }");
            document = format!("query D {{ ...C1 }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::WrongRootType => {
            document = format!("query D {{ ... on Mutation {{ volumeDelete(volumeId: \"vol_stg\") }} }}\n{document}");
            operation_name = Some("D".into());
        }
        Fault::MissingSkipCondition => {
            document = format!("query D($b: Boolean!) {{ me @skip(if: $b) {{ name }} }}\n{document}");
            operation_name = Some("D".into());
        }
    }
    // Fragments before or after the operations.
    let query = if rng.chance(50) {
        format!("{document}\n{fragment_text}")
    } else {
        format!("{fragment_text}\n{document}")
    };
    let mut body = Map::new();
    body.insert("query".into(), json!(query));
    if !variables.is_empty() || rng.chance(10) {
        body.insert("variables".into(), Value::Object(variables));
    }
    if let Some(name) = operation_name {
        body.insert("operationName".into(), json!(name));
    }
    Value::Object(body)
}

/// A request body: one request or a batch, and sometimes a few bytes of it
/// mangled (most such bodies do not parse; the point is that none passes
/// the broker and means something else to the reference).
fn body(rng: &mut Rng) -> String {
    let fault = if rng.chance(12) {
        *rng.pick(&FAULTS)
    } else {
        Fault::None
    };
    let text = if rng.chance(8) {
        json!([request(rng, Fault::None), request(rng, fault)]).to_string()
    } else {
        request(rng, fault).to_string()
    };
    if !rng.chance(5) {
        return text;
    }
    let mut bytes = text.into_bytes();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len());
        match rng.below(3) {
            0 => {
                bytes.remove(at);
            }
            1 => bytes.insert(at, *rng.pick(b"{}()[]:$@.!\"\\ ,#=a1")),
            _ => bytes[at] = *rng.pick(b"{}()[]:$@.!\"\\ ,#=a1"),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What the broker makes of a body: refused (and the problem type), or
/// allowed with the selected operations' root fields and arguments.
enum Broker {
    Refused(String),
    Allowed(Vec<String>),
}

struct Engine {
    classifier: Classifier,
    rules: Rules,
    scopes: Vec<String>,
    id_arguments: BTreeMap<String, String>,
    kinds: BTreeSet<String>,
}

impl Engine {
    fn new() -> Engine {
        let kind = ProviderKind::Railway;
        let (classifier, rules, _) = railway_staging();
        let graphql = kind.pack().graphql.as_ref().unwrap();
        Engine {
            classifier,
            rules,
            scopes: ["read", "variable:write", "deployment:deploy"]
                .map(String::from)
                .to_vec(),
            id_arguments: graphql.id_arguments.clone(),
            kinds: graphql.id_arguments.values().cloned().collect(),
        }
    }

    fn judge(&self, body: &str) -> Broker {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let view = RequestView {
            method: &Method::POST,
            path: "/graphql/v2",
            query: None,
            headers: &headers,
            body: Some(body.as_bytes()),
        };
        let classified = match self.classifier.classify(&view) {
            Ok(c) => c,
            Err(e) => return Broker::Refused(e.kind().to_owned()),
        };
        let access = Access {
            env: "staging",
            provider: "railway",
            scopes: Some(&self.scopes),
        };
        if let Some(refusal) = policy::decide(&self.rules, &access, &classified.operations).refusal {
            return Broker::Refused(refusal.kind().to_owned());
        }
        let ids = IdSpec {
            arguments: &self.id_arguments,
            kinds: &self.kinds,
            // The generated documents are of the reference schema, not a
            // provider's: only what the document itself says is compared.
            schema: None,
        };
        let fields = root_fields(
            &Method::POST,
            None,
            &headers,
            Some(body.as_bytes()),
            &GraphqlLimits::default(),
            &ids,
        )
        .expect("classified once, read again");
        let mut selected: Vec<String> = fields
            .into_iter()
            .filter(|f| f.selected)
            .map(|f| json!([f.name, Value::Object(f.arguments.into_iter().collect())]).to_string())
            .collect();
        selected.sort();
        Broker::Allowed(selected)
    }
}

/// What graphql-js makes of a body.
enum Reference {
    Runs(Vec<String>),
    Refuses(String),
    /// Refused only for what the provider's own schema says (a field,
    /// argument or type it does not have): the provider runs nothing.
    SchemaRefuses(String),
}

/// graphql-js's answers to the bodies, in order; `None` only when the test
/// may be skipped without node (`common::outside`).
fn reference(bodies: &[String]) -> Option<Vec<Reference>> {
    let script = "tests/js/graphql-reference.mjs";
    let missing = outside::program_missing("node")
        .or_else(|| outside::file_missing(std::path::Path::new("tests/js/node_modules/graphql")));
    if !outside::present("node", missing) {
        return None;
    }
    let mut child = Command::new("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs the reference");
    let mut stdin = child.stdin.take().unwrap();
    let lines = bodies.to_vec();
    let writer = std::thread::spawn(move || {
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    });
    let out = BufReader::new(child.stdout.take().unwrap());
    let answers: Vec<Reference> = out
        .lines()
        .map(|line| {
            let answer: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let error = || answer["error"].as_str().unwrap_or_default().to_owned();
            if answer["ok"] == true {
                let mut fields: Vec<String> = answer["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.to_string())
                    .collect();
                fields.sort();
                Reference::Runs(fields)
            } else if answer["schema"] == true {
                Reference::SchemaRefuses(error())
            } else {
                Reference::Refuses(error())
            }
        })
        .collect();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    Some(answers)
}

#[test]
fn the_graphql_classifier_agrees_with_graphql_js_or_refuses() {
    let cases: usize = std::env::var("VALETKEY_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = std::env::var("VALETKEY_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe);
    // splitmix64 of the seed: every seed a different, non-zero state.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut rng = Rng((z ^ (z >> 31)) | 1);
    // JSON escapes the newlines inside strings and the mangling adds none:
    // each body is one line to the reference.
    let bodies: Vec<String> = (0..cases).map(|_| body(&mut rng)).collect();
    assert!(bodies.iter().all(|b| !b.contains('\n')));
    let engine = Engine::new();
    let Some(answers) = reference(&bodies) else { return };
    assert_eq!(answers.len(), bodies.len());

    let mut agree = 0;
    let mut stricter: BTreeMap<String, usize> = BTreeMap::new();
    let mut both_refuse = 0;
    let mut schema_refuses: Vec<&str> = Vec::new();
    let mut violations = Vec::new();
    for (body, reference) in bodies.iter().zip(&answers) {
        match (engine.judge(body), reference) {
            (Broker::Allowed(ours), Reference::Runs(theirs)) if ours == *theirs => agree += 1,
            (Broker::Allowed(ours), Reference::Runs(theirs)) => {
                violations.push(format!("{body}\n  broker: {ours:?}\n  graphql-js: {theirs:?}"))
            }
            (Broker::Allowed(ours), Reference::Refuses(why)) => violations.push(format!(
                "{body}\n  broker allowed {ours:?}\n  graphql-js refused: {why}"
            )),
            // The provider refuses it whole for its own schema's sake.
            (Broker::Allowed(_), Reference::SchemaRefuses(why)) => schema_refuses.push(why),
            (Broker::Refused(kind), Reference::Runs(_)) => *stricter.entry(kind).or_insert(0) += 1,
            (Broker::Refused(_), _) => both_refuse += 1,
        }
    }
    eprintln!(
        "differential, {cases} requests (seed {seed}): {agree} allowed and agreeing; {both_refuse} refused by both; {} refused by the broker alone {stricter:?}; {} allowed by the broker and refused by the provider's schema (nothing runs; the first: {:?}); {} allowed against the reference",
        stricter.values().sum::<usize>(),
        schema_refuses.len(),
        schema_refuses.first(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} requests the broker allowed and graphql-js refused or read otherwise; the first:\n{}",
        violations.len(),
        violations.iter().take(3).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        agree * 2 >= cases,
        "only {agree} of {cases} requests were allowed and agreed"
    );
}

/// One request the Railway CLI sends, with the variables it would send in
/// staging, and what the broker makes of it.
struct CliCase {
    command: &'static str,
    /// Under tests/fixtures/railway-cli/: the CLI's own document, verbatim.
    document: &'static str,
    variables: Value,
    /// Each operation: its name and scope.
    operations: &'static [(&'static str, &'static str)],
    /// Every resource the request binds, `kind id`, sorted.
    resources: &'static [&'static str],
    /// `allow`, or the refusal's kind.
    decision: &'static str,
}

fn cli_cases() -> Vec<CliCase> {
    let case = |command, document, variables, operations, resources, decision| CliCase {
        command,
        document,
        variables,
        operations,
        resources,
        decision,
    };
    vec![
        // Most commands first read the linked project: its environments and
        // services by id and name, which are no environment's data, so a
        // staging credential may read them under a project production shares.
        case(
            "status (and most commands, first)",
            "queries/Project.graphql",
            json!({ "id": "proj_1" }),
            &[("query project", "read")],
            &["project proj_1"],
            "allow",
        ),
        // With `RAILWAY_TOKEN` set (as `run` sets it), the CLI asks what the
        // token is for instead: the project and environment, by id and name.
        case(
            "status (with RAILWAY_TOKEN)",
            "queries/ProjectToken.graphql",
            json!({}),
            &[("query projectToken", "read")],
            &[],
            "allow",
        ),
        // Then the linked environment's instances.
        case(
            "status (the environment)",
            "queries/EnvironmentInstances.graphql",
            json!({ "environmentId": "env_stg", "projectId": "proj_1" }),
            &[("query environment", "read")],
            &["environment env_stg", "project proj_1"],
            "allow",
        ),
        case(
            "status (production's environment)",
            "queries/EnvironmentInstances.graphql",
            json!({ "environmentId": "env_prod", "projectId": "proj_1" }),
            &[("query environment", "read")],
            &["environment env_prod", "project proj_1"],
            "credential_mismatch",
        ),
        case(
            "variables",
            "queries/ServiceVariablesForEdit.graphql",
            json!({ "projectId": "proj_1", "environmentId": "env_stg", "serviceId": "svc_api" }),
            &[
                ("query variables", "read"),
                ("query variablesForServiceDeployment", "read"),
                ("query environment", "read"),
            ],
            &[
                "environment env_stg",
                "environment env_stg",
                "environment env_stg",
                "project proj_1",
                "project proj_1",
                "project proj_1",
                "service svc_api",
                "service svc_api",
            ],
            "allow",
        ),
        case(
            "down (its deployments, first)",
            "queries/Deployments.graphql",
            json!({ "input": { "projectId": "proj_1", "environmentId": "env_stg", "serviceId": "svc_api" }, "first": 1 }),
            &[("query deployments", "read")],
            &["environment env_stg", "project proj_1", "service svc_api"],
            "allow",
        ),
        // `railway up` polls its deployment's status; the upload itself is
        // below, in the test.
        case(
            "up",
            "queries/DeploymentStatus.graphql",
            json!({ "id": "dep_stg" }),
            &[("query deployment", "read")],
            &["deployment dep_stg"],
            "allow",
        ),
        case(
            "variables --set",
            "mutations/VariableCollectionUpsert.graphql",
            json!({ "projectId": "proj_1", "environmentId": "env_stg", "serviceId": "svc_api", "variables": { "LOG_LEVEL": "debug" }, "skipDeploys": null }),
            &[("mutation variableCollectionUpsert", "variable:write")],
            &["environment env_stg", "project proj_1", "service svc_api"],
            "allow",
        ),
        case(
            "variables --set (in production)",
            "mutations/VariableCollectionUpsert.graphql",
            json!({ "projectId": "proj_1", "environmentId": "env_prod", "serviceId": "svc_api", "variables": { "LOG_LEVEL": "debug" } }),
            &[("mutation variableCollectionUpsert", "variable:write")],
            &["environment env_prod", "project proj_1", "service svc_api"],
            "credential_mismatch",
        ),
        case(
            "volume add",
            "mutations/VolumeCreate.graphql",
            json!({ "projectId": "proj_1", "environmentId": "env_stg", "serviceId": "svc_api", "mountPath": "/data" }),
            &[("mutation volumeCreate", "volume:write")],
            &["environment env_stg", "project proj_1", "service svc_api"],
            "allow",
        ),
        case(
            "volume add (no environment: the project's, every environment's)",
            "mutations/VolumeCreate.graphql",
            json!({ "projectId": "proj_1", "mountPath": "/data" }),
            &[("mutation volumeCreate", "volume:write")],
            &["project proj_1"],
            "shared_resource",
        ),
        case(
            "add",
            "mutations/ServiceCreate.graphql",
            json!({ "name": "worker", "projectId": "proj_1", "environmentId": "env_stg", "source": { "image": "redis:7" } }),
            &[("mutation serviceCreate", "service:write")],
            &["environment env_stg", "project proj_1"],
            "allow",
        ),
        case(
            "redeploy",
            "mutations/DeploymentRedeploy.graphql",
            json!({ "id": "dep_stg" }),
            &[("mutation deploymentRedeploy", "deployment:deploy")],
            &["deployment dep_stg"],
            "allow",
        ),
        case(
            "redeploy --from-source",
            "mutations/ServiceInstanceDeployLatestCommit.graphql",
            json!({ "environmentId": "env_stg", "serviceId": "svc_api" }),
            &[("mutation serviceInstanceDeploy", "deployment:deploy")],
            &["environment env_stg", "service svc_api"],
            "allow",
        ),
        case(
            "restart",
            "mutations/DeploymentRestart.graphql",
            json!({ "id": "dep_stg" }),
            &[("mutation deploymentRestart", "deployment:deploy")],
            &["deployment dep_stg"],
            "allow",
        ),
        case(
            "down",
            "mutations/DeploymentRemove.graphql",
            json!({ "id": "dep_stg" }),
            &[("mutation deploymentRemove", "deployment:delete")],
            &["deployment dep_stg"],
            "approval_required",
        ),
        case(
            "down (a production deployment)",
            "mutations/DeploymentRemove.graphql",
            json!({ "id": "dep_prod" }),
            &[("mutation deploymentRemove", "deployment:delete")],
            &["deployment dep_prod"],
            "credential_mismatch",
        ),
        case(
            "environment new --duplicate staging",
            "mutations/EnvironmentCreate.graphql",
            json!({ "projectId": "proj_1", "name": "pr-7", "sourceId": "env_stg", "applyChangesInBackground": true }),
            &[("mutation environmentCreate", "environment:write")],
            &["environment env_stg", "project proj_1"],
            "allow",
        ),
        case(
            "environment new --duplicate production",
            "mutations/EnvironmentCreate.graphql",
            json!({ "projectId": "proj_1", "name": "pr-7", "sourceId": "env_prod" }),
            &[("mutation environmentCreate", "environment:write")],
            &["environment env_prod", "project proj_1"],
            "credential_mismatch",
        ),
        case(
            "environment new (from nothing, in the shared project)",
            "mutations/EnvironmentCreate.graphql",
            json!({ "projectId": "proj_1", "name": "pr-7", "sourceId": null }),
            &[("mutation environmentCreate", "environment:write")],
            &["project proj_1"],
            "shared_resource",
        ),
        case(
            "volume detach",
            "mutations/VolumeDetach.graphql",
            json!({ "environmentId": "env_stg", "volumeId": "vol_stg" }),
            &[("mutation volumeInstanceUpdate", "volume:attach")],
            &["environment env_stg", "volume vol_stg"],
            "approval_required",
        ),
        case(
            "scale",
            "mutations/EnvironmentPatchCommit.graphql",
            json!({ "environmentId": "env_stg", "patch": { "services": { "svc_api": { "deploy": { "numReplicas": 2 } } } } }),
            &[("mutation environmentPatchCommit", "environment:apply")],
            &["environment env_stg"],
            "approval_required",
        ),
        case(
            "volume delete",
            "mutations/VolumeDelete.graphql",
            json!({ "id": "vol_stg" }),
            &[("mutation volumeDelete", "volume:delete")],
            &["volume vol_stg"],
            "approval_required",
        ),
        case(
            "any command's telemetry",
            "mutations/CliEventTrack.graphql",
            json!({ "input": { "command": "up", "projectId": "proj_1", "environmentId": "env_stg", "success": true } }),
            &[("mutation cliEventTrack", "read")],
            &["environment env_stg", "project proj_1"],
            "allow",
        ),
    ]
}

/// A Railway classifier and a resource map of one project shared by staging
/// and production, judged for a staging credential holding every scope an
/// agent may hold.
fn railway_staging() -> (Classifier, Rules, Vec<String>) {
    let kind = ProviderKind::Railway;
    let tiers: BTreeMap<String, Tier> = kind.pack().scopes.iter().map(|(n, s)| (n.clone(), s.tier)).collect();
    let classifier = Classifier::new(kind, &[], &tiers, GraphqlLimits::default()).unwrap();
    let both = &["staging", "production"][..];
    let owners = [
        ("project", "proj_1", both),
        ("service", "svc_api", both),
        ("service", "svc_prod", &["production"]),
        ("environment", "env_stg", &["staging"]),
        ("environment", "env_prod", &["production"]),
        ("deployment", "dep_stg", &["staging"]),
        ("deployment", "dep_prod", &["production"]),
        ("volume", "vol_stg", &["staging"]),
    ]
    .into_iter()
    .map(|(kind, id, envs)| {
        (
            (kind.to_owned(), id.to_owned()),
            envs.iter().map(|e| (*e).to_owned()).collect(),
        )
    })
    .collect();
    let mut rules = Rules::default();
    rules.resources.insert(
        "railway".into(),
        ProviderResources {
            owners,
            unknown_reads: false,
            case_insensitive: Default::default(),
        },
    );
    let held = tiers
        .iter()
        .filter(|(_, tier)| tier.agent_may_hold())
        .map(|(scope, _)| scope.clone())
        .collect();
    (classifier, rules, held)
}

/// What the broker decides for a request to Railway from a staging
/// credential: the decision and its refusal's kind, if any.
fn judge_railway(method: &Method, path: &str, query: Option<&str>, body: Option<&[u8]>) -> (policy::Decision, String) {
    let (classifier, rules, held) = railway_staging();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let view = RequestView {
        method,
        path,
        query,
        headers: &headers,
        body,
    };
    let classified = classifier.classify(&view).expect("the request reads one way");
    let access = Access {
        env: "staging",
        provider: "railway",
        scopes: Some(&held),
    };
    let decision = policy::decide(&rules, &access, &classified.operations);
    let kind = decision.refusal.as_ref().map_or("allow", |r| r.kind()).to_owned();
    (decision, kind)
}

/// The documents the Railway CLI itself sends (tests/fixtures/railway-cli/),
/// for the commands an agent runs in staging: each is named, scoped and bound
/// to the resources its variables name, and decided for a staging credential
/// holding every scope an agent may hold. Everyday work passes; what removes
/// or rewrites needs a human; production's ids are a mismatch.
#[test]
fn the_railway_clis_own_documents_are_named_scoped_and_bound_to_staging() {
    for case in cli_cases() {
        let path = format!("tests/fixtures/railway-cli/{}", case.document);
        let document = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let body = json!({ "query": document, "variables": case.variables }).to_string();
        let (decision, kind) = judge_railway(&Method::POST, "/graphql/v2", None, Some(body.as_bytes()));
        let what = format!("railway {}", case.command);
        let operations: Vec<(&str, Option<&str>)> = decision
            .operations
            .iter()
            .map(|op| (op.name.as_str(), op.scope.as_deref()))
            .collect();
        let expected: Vec<(&str, Option<&str>)> = case.operations.iter().map(|(n, s)| (*n, Some(*s))).collect();
        assert_eq!(operations, expected, "{what}");
        let mut resources: Vec<String> = decision
            .operations
            .iter()
            .flat_map(|op| op.resources.iter().map(|r| format!("{} {}", r.kind, r.id)))
            .collect();
        resources.sort();
        assert_eq!(resources, case.resources, "{what}");
        assert_eq!(kind, case.decision, "{what}: {:?}", decision.refusal);
        if kind == "allow" {
            // Bound to staging: every resource is staging's, an environment
            // named is staging alone.
            for r in decision.operations.iter().flat_map(|op| &op.resources) {
                let owners = r.owners.as_deref().unwrap_or_default();
                assert!(owners.iter().any(|e| e == "staging"), "{what}: {r:?}");
                if r.kind == "environment" {
                    assert_eq!(owners, ["staging"], "{what}");
                }
            }
        }
    }
}

/// `replace: true` makes `variables --set`'s mutation delete every variable
/// the collection leaves out: that needs `variable:delete`, which no agent
/// holds. The CLI never sends it; `false`, null or nothing is the upsert.
#[test]
fn a_variable_collection_that_replaces_needs_a_human() {
    let document = std::fs::read_to_string("tests/fixtures/railway-cli/mutations/VariableCollectionUpsert.graphql")
        .unwrap()
        .replace(
            "skipDeploys: $skipDeploys}",
            "skipDeploys: $skipDeploys, replace: $replace}",
        )
        .replace("$skipDeploys: Boolean)", "$skipDeploys: Boolean, $replace: Boolean)");
    let send = |replace: Value| {
        let variables = json!({ "projectId": "proj_1", "environmentId": "env_stg", "serviceId": "svc_api", "variables": {}, "replace": replace });
        let body = json!({ "query": document, "variables": variables }).to_string();
        let (decision, kind) = judge_railway(&Method::POST, "/graphql/v2", None, Some(body.as_bytes()));
        let op = &decision.operations[0];
        (op.name.clone(), op.scope.clone().unwrap(), kind)
    };
    for safe in [json!(false), Value::Null] {
        assert_eq!(
            send(safe),
            (
                "mutation variableCollectionUpsert".to_owned(),
                "variable:write".to_owned(),
                "allow".to_owned()
            )
        );
    }
    assert_eq!(
        send(json!(true)),
        (
            "mutation variableCollectionUpsert (with `input.replace`)".to_owned(),
            "variable:delete".to_owned(),
            "approval_required".to_owned()
        )
    );
}

/// `railway up` uploads its code to a REST route beside the GraphQL
/// endpoint: a deployment in the environment its path names, bound like the
/// GraphQL deploys. Any other path of Railway's is an unknown operation.
#[test]
fn railway_ups_upload_route_deploys_in_the_environment_it_names() {
    let up = |path: &str, query: Option<&str>| {
        let (decision, kind) = judge_railway(&Method::POST, path, query, None);
        let op = &decision.operations[0];
        (op.name.clone(), op.scope.clone(), kind)
    };
    let name = "POST /project/{project}/environment/{environment}/up".to_owned();
    let deploy = Some("deployment:deploy".to_owned());
    assert_eq!(
        up("/project/proj_1/environment/env_stg/up", Some("serviceId=svc_api")),
        (name.clone(), deploy.clone(), "allow".to_owned())
    );
    assert_eq!(
        up("/project/proj_1/environment/env_prod/up", Some("serviceId=svc_api")),
        (name.clone(), deploy.clone(), "credential_mismatch".to_owned())
    );
    // The service is bound as the GraphQL deploys bind it.
    for (query, refusal) in [
        ("serviceId=svc_prod", "credential_mismatch"),
        ("serviceId=svc_nobody_listed", "unknown_resource"),
        // A new service (none named), or a service a server could read
        // another way than the broker: refused by the pack.
        ("serviceId=", "query parameter"),
        ("message=hi", "query parameter"),
        ("serviceId=svc_api&serviceId=svc_prod", "query parameter"),
        ("serviceId=svc_api&serviceId[]=svc_prod", "query parameter"),
        ("serviceId=svc_api&serviceid=svc_prod", "query parameter"),
        ("serviceId=svc_api&service%49d.x=svc_prod", "query parameter"),
        ("[serviceId]=svc_prod&serviceId=svc_api", "query parameter"),
        ("%5BserviceId%5D=svc_prod&serviceId=svc_api", "query parameter"),
        (&format!("{}serviceId=svc_api", "x&".repeat(100)), "query parameter"),
    ] {
        let (decision, kind) = judge_railway(
            &Method::POST,
            "/project/proj_1/environment/env_stg/up",
            Some(query),
            None,
        );
        let op = &decision.operations[0];
        assert_eq!((&op.name, &op.scope), (&name, &deploy), "{query}");
        let said = decision.refusal.as_ref().map(|r| r.to_string()).unwrap_or_default();
        if refusal == "query parameter" {
            assert_eq!(kind, "unknown_operation", "{query}");
            assert!(said.contains("query parameter"), "{query}: {said}");
        } else {
            assert_eq!(kind, refusal, "{query}: {said}");
        }
    }
    assert_eq!(
        up(
            "/project/proj_1/environment/env_stg/up",
            Some("serviceId=svc_api&message=fix%20it")
        ),
        (name, deploy, "allow".to_owned())
    );
    for other in [
        "/project/proj_1/environment/env_stg/down",
        "/graphql/v1",
        "/project/proj_1/up",
    ] {
        let (_, _, kind) = up(other, None);
        assert_eq!(kind, "unknown_operation", "{other}");
    }
}

/// GitHub's pack, with OWNER/REPO (node id `ID_id`, as the stand-in `gh` was
/// run against answered) staging's, acme/prod (`R_prod`) production's, and
/// a staging credential holding the write scopes but not merging.
struct Github {
    classifier: Classifier,
    rules: Rules,
    scopes: Vec<String>,
}

/// What the broker makes of a request: the operations' names, scopes and
/// resources, then the refusal, if any.
type Judged = (Vec<(String, Option<String>, Vec<String>)>, Option<Refusal>);

impl Github {
    fn new() -> Github {
        let kind = ProviderKind::Github;
        let tiers: BTreeMap<String, Tier> = kind.pack().scopes.iter().map(|(n, s)| (n.clone(), s.tier)).collect();
        let classifier = Classifier::new(kind, &[], &tiers, GraphqlLimits::default()).unwrap();
        let owners = [
            ("repository", "owner/repo", "staging"),
            ("node", "ID_id", "staging"),
            ("repository", "acme/prod", "production"),
            ("node", "R_prod", "production"),
            ("repository", "acme/shared", "staging production"),
            ("node", "R_shared", "staging production"),
        ]
        .into_iter()
        .map(|(kind, id, envs)| {
            let envs = envs.split(' ').map(str::to_owned).collect();
            ((kind.to_owned(), id.to_owned()), envs)
        })
        .collect();
        let mut rules = Rules::default();
        rules.resources.insert(
            "github".into(),
            ProviderResources {
                owners,
                unknown_reads: false,
                case_insensitive: kind.case_insensitive_kinds(),
            },
        );
        let scopes = ["read", "pulls:write", "issues:write", "contents:write"];
        Github {
            classifier,
            rules,
            scopes: scopes.map(String::from).to_vec(),
        }
    }

    fn classify(&self, body: &str) -> Result<Vec<Operation>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let view = RequestView {
            method: &Method::POST,
            path: "/graphql",
            query: None,
            headers: &headers,
            body: Some(body.as_bytes()),
        };
        self.classifier
            .classify(&view)
            .map(|c| c.operations)
            .map_err(|e| e.to_string())
    }

    fn judge(&self, body: &str) -> Judged {
        let operations = self.classify(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        let access = Access {
            env: "staging",
            provider: "github",
            scopes: Some(&self.scopes),
        };
        let decision = policy::decide(&self.rules, &access, &operations);
        let ops = operations
            .iter()
            .map(|op| {
                let resources = op.resources.iter().map(|r| format!("{} {}", r.kind, r.id)).collect();
                (op.name.clone(), op.scope.clone(), resources)
            })
            .collect();
        (ops, decision.refusal)
    }

    /// A query of `document` with gh's variables for OWNER/REPO.
    fn query(&self, document: &str) -> Judged {
        let vars = json!({ "owner": "OWNER", "repo": "REPO", "name": "REPO" });
        self.judge(&json!({ "query": document, "variables": vars }).to_string())
    }
}

/// The refusal a request earned, by its kind (`read_across`), or `allowed`.
fn why(refusal: &Option<Refusal>) -> String {
    refusal.as_ref().map_or("allowed".to_owned(), |r| {
        serde_json::to_value(r).unwrap()["kind"].as_str().unwrap().to_owned()
    })
}

fn gh_fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/gh/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `body` with its `variables` changed by `change`.
fn with_variables(body: &str, change: impl Fn(&mut Map<String, Value>)) -> String {
    let mut value: Value = serde_json::from_str(body).unwrap();
    change(value["variables"].as_object_mut().unwrap());
    value.to_string()
}

fn one(name: &str, scope: &str, resource: &str) -> Vec<(String, Option<String>, Vec<String>)> {
    vec![(name.to_owned(), Some(scope.to_owned()), vec![resource.to_owned()])]
}

#[test]
fn the_documents_gh_sends_are_bound_to_the_repository_they_name() {
    let gh = Github::new();
    let read = one("query repository", "read", "repository OWNER/REPO");
    for (fixture, expected) in [
        ("pr-list", read.clone()),
        ("pr-view-number", read.clone()),
        ("pr-view-branch", read.clone()),
        ("pr-create-existing", read.clone()),
        ("issue-list", read.clone()),
        ("repo-view", read.clone()),
        ("repository-info", read.clone()),
        ("pr-list-author", one("query search", "read", "repository OWNER/REPO")),
        (
            "pr-create",
            one("mutation createPullRequest", "pulls:write", "node ID_id"),
        ),
        (
            "issue-create",
            one("mutation createIssue", "issues:write", "node ID_id"),
        ),
    ] {
        let body = gh_fixture(fixture);
        let (ops, refusal) = gh.judge(&body);
        assert_eq!(ops, expected, "{fixture}");
        assert_eq!(refusal, None, "{fixture}");
        // The same document aimed at production's repository is a mismatch.
        let prod = with_variables(&body, |vars| {
            for (key, value) in [
                ("owner", "acme"),
                ("repo", "prod"),
                ("name", "prod"),
                ("q", "repo:acme/prod is:pr"),
            ] {
                if vars.contains_key(key) {
                    vars.insert(key.into(), json!(value));
                }
            }
            if let Some(input) = vars.get_mut("input") {
                input["repositoryId"] = json!("R_prod");
            }
        });
        assert_eq!(why(&gh.judge(&prod).1), "credential_mismatch", "{fixture}");
    }
}

#[test]
fn a_selection_under_a_repository_does_not_leave_it() {
    let gh = Github::new();
    let repo = |inner: &str| {
        format!("query($owner: String!, $name: String!) {{ repository(owner: $owner, name: $name) {{ {inner} }} }}")
    };
    let allowed = [
        "owner { login }",
        "parent { description hasIssuesEnabled defaultBranchRef { name } owner { login } }",
        "pullRequest(number: 1) { title body headRepository { name nameWithOwner } author { login } }",
        "pullRequest(number: 1) { commits(last: 1) { nodes { commit { oid statusCheckRollup { state } } } } }",
        "pullRequest(number: 1) { reviewRequests(first: 5) { nodes { requestedReviewer { ... on Team { slug organization { login } } } } } }",
        "issues(first: 5) { totalCount nodes { title labels(first: 5) { nodes { name color } } } }",
        "object(expression: \"HEAD:README.md\") { ... on Blob { text } }",
        // What a link to a repository shows, whichever repository it is.
        "issue(number: 1) { repository { description viewerPermission } }",
        "defaultBranchRef { target { ... on Commit { history(first: 5) { nodes { message author { name email } } } } } }",
    ];
    for inner in allowed {
        let (_, refusal) = gh.query(&repo(inner));
        assert_eq!(refusal, None, "{inner}");
    }
    let across = [
        "owner { ... on User { repositories(first: 5) { nodes { name } } } }",
        "owner { ... on Organization { email } }",
        // A repository's reference fields are a repository's alone.
        "owner { ... on Organization { description } }",
        "parent { issues(first: 5) { nodes { title } } }",
        "parent { defaultBranchRef { target { oid } } }",
        "parent { owner { ... on Organization { repositories(first: 5) { nodes { name } } } } }",
        "forks(first: 5) { nodes { name } }",
        "forks(first: 5) { totalCount }",
        "pullRequest(number: 1) { headRepository { object(expression: \"HEAD:.env\") { id } } }",
        "pullRequest(number: 1) { headRef { target { oid } } }",
        "pullRequest(number: 1) { author { ... on User { email } } }",
        "pullRequest(number: 1) { closingIssuesReferences(first: 5) { nodes { body } } }",
        "pullRequest(number: 1) { commits(first: 1) { nodes { commit { associatedPullRequests(first: 5) { nodes { body } } } } } }",
        "pullRequest(number: 1) { reviewRequests(first: 5) { nodes { requestedReviewer { ... on Team { members(first: 5) { nodes { login } } } } } } }",
        "issue(number: 1) { timelineItems(first: 5) { nodes { ... on CrossReferencedEvent { source { ... on Issue { body } } } } } }",
        "issue(number: 1) { repository { issues(first: 1) { nodes { body } } } }",
        "pullRequest(number: 1) { baseRepository { pullRequests(first: 1) { nodes { body } } } }",
    ];
    for inner in across {
        assert_eq!(why(&gh.query(&repo(inner)).1), "read_across", "{inner}");
    }
    for inner in ["tempCloneToken", "pullRequest(number: 1) { secretField }"] {
        assert_eq!(why(&gh.query(&repo(inner)).1), "unknown_field", "{inner}");
    }
    // A search's results are read as what they are: an issue or a pull
    // request of the repository it names, anything else by its identity.
    let search = |inner: &str| {
        format!(
            "{{ search(query: \"repo:OWNER/REPO is:open\", type: ISSUE, first: 5) {{ issueCount nodes {{ {inner} }} }} }}"
        )
    };
    let (_, refusal) = gh.query(&search("... on PullRequest { title body } ... on Issue { body }"));
    assert_eq!(refusal, None);
    for inner in [
        "... on Repository { issues(first: 5) { nodes { body } } }",
        "... on User { email }",
        "... on PullRequest { headRepository { refs(first: 5) { nodes { name } } } }",
    ] {
        assert_eq!(why(&gh.query(&search(inner)).1), "read_across", "{inner}");
    }
}

#[test]
fn who_the_caller_is_is_free_to_read_and_nothing_under_it() {
    let gh = Github::new();
    let (ops, refusal) = gh.query("{ viewer { login } }");
    assert_eq!(refusal, None);
    assert_eq!(ops[0].2, Vec::<String>::new());
    for document in [
        "{ viewer { repositories(first: 5) { nodes { name } } } }",
        "{ viewer { login organizations(first: 5) { nodes { login } } } }",
    ] {
        assert_eq!(why(&gh.query(document).1), "unbound_read", "{document}");
    }
    for document in [
        "{ user(login: \"octo\") { email } }",
        "{ organization(login: \"acme\") { repositories(first: 5) { nodes { name } } } }",
        "{ repositoryOwner(login: \"acme\") { id } }",
    ] {
        assert_eq!(why(&gh.query(document).1), "unknown_operation", "{document}");
    }
}

#[test]
fn a_repository_is_named_by_owner_and_name_together_without_regard_to_case() {
    let gh = Github::new();
    let read = |owner: &str, name: &str| {
        gh.judge(&json!({ "query": "query($o: String!, $n: String!) { repository(owner: $o, name: $n) { id } }", "variables": { "o": owner, "n": name } }).to_string())
    };
    let (ops, refusal) = read("owner", "REPO");
    assert_eq!(ops, one("query repository", "read", "repository owner/REPO"));
    assert_eq!(refusal, None);
    assert_eq!(why(&read("acme", "prod").1), "credential_mismatch");
    // A repository staging shares with production is read whole, as its
    // REST routes are; a change to it waits for a human's approval.
    let (_, refusal) =
        gh.query("{ repository(owner: \"acme\", name: \"shared\") { pullRequests(first: 5) { nodes { title } } } }");
    assert_eq!(refusal, None);
    let (_, refusal) = gh.judge(&json!({ "query": "mutation { createIssue(input: { repositoryId: \"R_shared\", title: \"t\" }) { issue { url } } }" }).to_string());
    assert_eq!(why(&refusal), "shared_resource");
    assert_eq!(why(&read("acme", "other").1), "unknown_resource");
    // Split elsewhere, the same text would name another repository.
    for (owner, name) in [("OWNER/REPO", "x"), ("acme", "prod/x"), ("", "REPO")] {
        assert_eq!(why(&read(owner, name).1), "refused_operation", "{owner} {name}");
    }
    let (_, refusal) = gh.query("{ repository(owner: \"OWNER\") { id } }");
    assert_eq!(why(&refusal), "refused_operation");
}

#[test]
fn a_search_is_bound_to_its_repo_qualifiers_alone() {
    let gh = Github::new();
    let search = |q: &str| {
        gh.judge(&json!({ "query": "query($q: String!) { search(query: $q, type: ISSUE, first: 5) { issueCount } }", "variables": { "q": q } }).to_string())
    };
    assert_eq!(search("repo:owner/repo is:open label:\"bug fix\"").1, None);
    assert_eq!(why(&search("repo:OWNER/REPO repo:acme/prod").1), "credential_mismatch");
    for q in [
        "is:open",
        "\"repo:OWNER/REPO\" is:open",
        "repo:OWNER/REPO org:acme",
        "repo:OWNER/REPO user:acme",
        "repo:OWNER/REPO OR is:open",
        "repo:OWNER/REPO (is:open)",
    ] {
        assert_eq!(why(&search(q).1), "refused_operation", "{q}");
    }
}

#[test]
fn node_ids_bind_only_as_ops_list_them_and_as_written() {
    let gh = Github::new();
    let (ops, refusal) = gh.query("{ node(id: \"ID_id\") { ... on PullRequest { title } } }");
    assert_eq!(ops, one("query node", "read", "node ID_id"));
    assert_eq!(refusal, None);
    for (document, expected) in [
        ("{ node(id: \"id_ID\") { id } }", "unknown_resource"),
        ("{ node(id: \"R_prod\") { id } }", "credential_mismatch"),
        ("{ nodes(ids: [\"ID_id\", \"PR_other\"]) { id } }", "unknown_resource"),
        ("{ nodes(ids: \"R_prod\") { id } }", "credential_mismatch"),
        (
            "{ node(id: \"ID_id\") { ... on Repository { issues(first: 1) { nodes { body } } } } }",
            "read_across",
        ),
    ] {
        assert_eq!(why(&gh.query(document).1), expected, "{document}");
    }
    let (_, refusal) = gh.judge(
        &json!({ "query": "mutation($input: AddCommentInput!) { addComment(input: $input) { clientMutationId } }", "variables": { "input": { "subjectId": "PR_unlisted", "body": "hi" } } }).to_string(),
    );
    assert_eq!(why(&refusal), "unknown_resource");
}

#[test]
fn mutations_need_the_scopes_of_the_rest_routes_that_do_the_same() {
    let gh = Github::new();
    let mutation = |field: &str, input: Value| {
        let document = format!(
            "mutation($input: {}Input!) {{ {field}(input: $input) {{ clientMutationId }} }}",
            {
                let mut t = field.to_owned();
                t[..1].make_ascii_uppercase();
                t
            }
        );
        gh.judge(&json!({ "query": document, "variables": { "input": input } }).to_string())
    };
    let scope = |judged: &Judged| judged.0[0].1.clone().unwrap_or_default();
    for (field, input, expected, allowed) in [
        (
            "updatePullRequest",
            json!({ "pullRequestId": "ID_id", "title": "t" }),
            "pulls:write",
            true,
        ),
        (
            "closePullRequest",
            json!({ "pullRequestId": "ID_id" }),
            "pulls:write",
            true,
        ),
        (
            "addPullRequestReview",
            json!({ "pullRequestId": "ID_id", "event": "COMMENT" }),
            "pulls:write",
            true,
        ),
        (
            "addComment",
            json!({ "subjectId": "ID_id", "body": "b" }),
            "issues:write",
            true,
        ),
        ("closeIssue", json!({ "issueId": "ID_id" }), "issues:write", true),
        ("reopenIssue", json!({ "issueId": "ID_id" }), "issues:write", true),
        (
            "createRef",
            json!({ "repositoryId": "ID_id", "name": "refs/heads/x", "oid": "0" }),
            "contents:write",
            true,
        ),
        (
            "updateRef",
            json!({ "refId": "ID_id", "oid": "0" }),
            "contents:write",
            true,
        ),
        (
            "updateRef",
            json!({ "refId": "ID_id", "oid": "0", "force": false }),
            "contents:write",
            true,
        ),
        (
            "updateRef",
            json!({ "refId": "ID_id", "oid": "0", "force": true }),
            "branch:delete",
            false,
        ),
        ("deleteRef", json!({ "refId": "ID_id" }), "branch:delete", false),
        (
            "mergePullRequest",
            json!({ "pullRequestId": "ID_id" }),
            "pulls:merge",
            false,
        ),
    ] {
        let judged = mutation(field, input.clone());
        assert_eq!(scope(&judged), expected, "{field} {input}");
        assert_eq!(judged.1.is_none(), allowed, "{field} {input}: {:?}", judged.1);
    }
    // `force` written in the document rather than a variable counts the same.
    let (ops, refusal) = gh.judge(&json!({ "query": "mutation { updateRef(input: { refId: \"ID_id\", oid: \"0\", force: true }) { clientMutationId } }" }).to_string());
    assert_eq!(ops[0].0, "mutation updateRef (input.force = true)");
    assert_eq!(why(&refusal), "approval_required");
    for field in [
        "deleteRepository",
        "updateRepository",
        "createCommitOnBranch",
        "deleteIssue",
    ] {
        let (ops, refusal) = mutation(field, json!({ "repositoryId": "ID_id" }));
        assert_eq!(ops[0].1, None, "{field}");
        assert_eq!(why(&refusal), "unknown_operation", "{field}");
    }
}
