//! Every file shipped under config/ loads, and a configuration full of
//! mistakes reports all of them at once, each on its line.

#[path = "common/outside.rs"]
mod outside;

use std::path::Path;

use valetkey::config::{self, Severity};
use valetkey::providers::{ProviderKind, RulePack};

#[test]
fn every_shipped_config_file_loads_without_problems() {
    let mut seen = 0;
    for entry in std::fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let diagnostics = config::check_file(&path).unwrap();
            // The example lists shared resources on purpose, and says so.
            assert!(
                diagnostics
                    .iter()
                    .all(|d| d.severity == Severity::Warning && d.message.contains("is shared by")),
                "{}: {diagnostics:#?}",
                path.display()
            );
            config::load(&path).unwrap();
            seen += 1;
        }
    }
    assert!(seen >= 1, "no config files found");
    for kind in ProviderKind::ALL {
        let path = Path::new("config/providers").join(format!("{kind}.toml"));
        let pack = RulePack::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(pack.kind, kind, "{}", path.display());
    }
}

const BROKEN: &str = r#"
[credentials]
default_ttl = "2h"
max_ttl = "1h"

[environments.staging]

[environments.production]
protected = true

[providers.railway]
kind = "railway"
tokens = { staging = { stored = "railway-staging" }, qa = { env = "QA_TOKEN" } }
agent_env = { RAILWAY_API_TOKEN = "{credentials}", VALETKEY_URL = "{broker_url}" }
scopes = { "volume:delete" = "write" }

[providers.github]
kind = "github"
agent_env = { RAILWAY_API_TOKEN = "{credential}" }

[providers.unknown_kind]
kind = "gitlab"

[[resources]]
provider = "railway"
kind = "volume"
id = "vol_1"
environments = ["staging", "production"]

[[resources]]
provider = "railwy"
kind = "volume"
id = "vol_2"
environments = ["prod"]

[agents.coder]
grants = [
  { provider = "railway", environments = ["stagin"], scopes = ["read"] },
  { provider = "railway", environments = ["staging"], scopes = ["volume:delete", "no:such"] },
  { provider = "railway", environments = ["production"], scopes = ["read"] },
  { provider = "github", environments = ["*"], scopes = ["read"], max_ttl = "2h" },
  { provider = "gitlab", environments = ["staging"], scopes = ["read"] },
]

[agents.typo]
grant = []

[surprise]
"#;

#[test]
fn a_broken_config_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let diagnostics = config::check_file(&path).unwrap();
    let lines: Vec<String> = diagnostics
        .iter()
        .map(|d| {
            assert_eq!(d.file, path);
            format!("{}:{}: {}", d.line, d.severity, d.message)
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
    assert!(
        diagnostics
            .iter()
            .all(|d| d.help.is_some() || d.message.starts_with("in `"))
    );
    let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    match config::load(&path) {
        Err(config::ConfigError::Invalid { diagnostics: d }) => {
            assert_eq!(d.iter().filter(|d| d.severity == Severity::Error).count(), errors)
        }
        other => panic!("a broken config loaded: {other:?}"),
    }
}

#[test]
fn a_syntax_error_points_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syntax.toml");
    std::fs::write(&path, "[environments.staging]\nprotected = yes\n").unwrap();
    let diagnostics = config::check_file(&path).unwrap();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (2, 13));
}

#[test]
fn operation_rules_are_checked_where_they_are_written() {
    let text = r#"[environments.staging]

[providers.railway]
kind = "railway"
operations = [
  { field = "volumeWipe", scope = "volume:delete" },
  { method = "POST", path = "/GraphQL/internal", scope = "read", resource_free = true },
]

[providers.api]
kind = "http"
upstream = "https://api.example.com"
operations = [
  { method = "DELETE", path = "/items/{id}", scope = "delete", resources = [{ kind = "item", id = "{id}" }] },
  { method = "DELETE", path = "/things/{id}", scope = "destroy" },
  { method = "delete", path = "/x", scope = "read" },
  { method = "GET", path = "/items/{id}", scope = "read", resources = [{ kind = "item", id = "{name}" }] },
]
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).unwrap();
    let diagnostics = config::check_file(&path).unwrap();
    let errors: Vec<(usize, &str)> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(errors.len(), 4, "{diagnostics:#?}");
    assert_eq!(errors[0].0, 7);
    assert!(errors[0].1.contains("where the GraphQL endpoint is"), "{}", errors[0].1);
    assert_eq!(errors[1].0, 15);
    assert!(errors[1].1.contains("scope `destroy`"), "{}", errors[1].1);
    assert_eq!(errors[2].0, 16);
    assert!(errors[2].1.contains("method `delete`"), "{}", errors[2].1);
    assert_eq!(errors[3].0, 17);
    assert!(errors[3].1.contains("`{name}`"), "{}", errors[3].1);
    assert!(config::load(&path).is_err());
}

/// Rules an agent's scope satisfies name exact operations and what they
/// touch: `config check` says which rule and why, and warns that reading
/// unknown ids reaches other environments.
#[test]
fn lenient_rules_are_errors_and_reading_unknown_ids_is_a_warning() {
    let text = r#"[environments.staging]

[providers.api]
kind = "http"
upstream = "https://api.example.com"
unknown_resources = "allow_reads"
operations = [
  { method = "GET", path = "/**", scope = "read", resource_free = true },
  { method = "*", path = "/items/{id}", scope = "write", resources = [{ kind = "item", id = "{id}" }] },
  { method = "GET", path = "/items", scope = "read" },
  { method = "DELETE", path = "/items/**", scope = "delete" },
  { method = "GET", path = "/status", scope = "read", resource_free = true },
]

[providers.railway]
kind = "railway"
operations = [{ field = "serviceInstanceDeploy*", scope = "deployment:deploy" }]
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).unwrap();
    let diagnostics = config::check_file(&path).unwrap();
    let of = |severity: Severity| -> Vec<(usize, &str)> {
        diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .map(|d| (d.line, d.message.as_str()))
            .collect()
    };
    let errors = of(Severity::Error);
    assert_eq!(errors.len(), 4, "{diagnostics:#?}");
    assert_eq!(errors[0].0, 8);
    assert!(
        errors[0].1.contains("rule `GET /**`") && errors[0].1.contains("wildcard `**`"),
        "{}",
        errors[0].1
    );
    assert_eq!(errors[1].0, 9);
    assert!(errors[1].1.contains("any method"), "{}", errors[1].1);
    assert_eq!(errors[2].0, 10);
    assert!(errors[2].1.contains("names no resource"), "{}", errors[2].1);
    assert_eq!(errors[3].0, 17);
    assert!(errors[3].1.contains("name prefix"), "{}", errors[3].1);
    let warnings = of(Severity::Warning);
    assert!(
        warnings
            .iter()
            .any(|(line, m)| (3..=6).contains(line) && m.contains("read other environments")),
        "{diagnostics:#?}"
    );
}

/// GitHub's published REST API description, pinned in tests/js (installed by
/// scripts/test); `VALETKEY_GITHUB_OPENAPI` points at another one, to see
/// what a newer description adds.
fn github_description() -> Option<serde_json::Value> {
    let path = std::env::var("VALETKEY_GITHUB_OPENAPI")
        .unwrap_or_else(|_| "tests/js/node_modules/@octokit/openapi/generated/api.github.com.json".to_owned());
    if !outside::present("node", outside::file_missing(std::path::Path::new(&path))) {
        return None;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Some(serde_json::from_str(&text).unwrap())
}

/// A route without its parameter names, as the description and the pack
/// spell the same route differently (`{path}` and `{*path}`, or one
/// parameter for `{base}...{head}`).
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.contains('{') {
                "{}".to_owned()
            } else {
                s.to_ascii_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every GET route GitHub publishes is listed explicitly in the GitHub
/// pack: bound to the resources its path names, resource-free, or refused
/// with a reason. A wildcard does not count, so a newer description shows
/// exactly which routes are new (scripts/github-routes.py lists them).
#[test]
fn every_github_get_route_is_listed_explicitly_in_the_pack() {
    let Some(description) = github_description() else {
        return;
    };
    let pack = ProviderKind::Github.pack();
    let mut listed = std::collections::BTreeMap::new();
    for rule in &pack.operations {
        if rule.method.as_deref() != Some("GET") {
            continue;
        }
        for path in rule.path.iter().chain(&rule.paths) {
            assert!(
                !path.contains('*') || path.contains("{*"),
                "a wildcard GET rule: {path}"
            );
            let how = match (&rule.refuse, rule.resource_free, rule.resources.is_empty()) {
                (Some(_), _, _) => "refused",
                (None, true, true) => "resource_free",
                (None, false, false) => "bound",
                _ => panic!("GET {path} is neither bound, resource-free nor refused"),
            };
            listed.insert(shape(path), how);
        }
    }
    let mut missing = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for (path, item) in description["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        match listed.get(&shape(path)) {
            Some(how) => *counts.entry(*how).or_insert(0) += 1,
            None => missing.push(path.clone()),
        }
    }
    assert!(missing.is_empty(), "GET routes the pack does not list: {missing:#?}");
    // The pinned description's routes fall in all three families.
    assert!(
        counts["bound"] > 400 && counts["resource_free"] > 10 && counts["refused"] > 50,
        "{counts:?}"
    );
}

/// An id binds only as the kind of resource it is listed as, so a kind no
/// rule binds is a resource that never matches: `config check` says so.
#[test]
fn a_resource_of_a_kind_no_rule_binds_is_a_warning() {
    let text = r#"[environments.staging]

[providers.github]
kind = "github"

[[resources]]
provider = "github"
kind = "repo"
id = "acme/api"
environments = ["staging"]

[[resources]]
provider = "github"
kind = "repository"
id = "acme/web"
environments = ["staging"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kinds.toml");
    std::fs::write(&path, text).unwrap();
    let diagnostics = config::check_file(&path).unwrap();
    let never: Vec<&str> = diagnostics
        .iter()
        .filter(|d| d.message.contains("never match"))
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(never.len(), 1, "{diagnostics:#?}");
    assert!(
        never[0].contains("acme/api") && never[0].contains("`repo`"),
        "{}",
        never[0]
    );
    let help = diagnostics.iter().find(|d| d.message.contains("never match")).unwrap();
    assert!(
        help.help.as_deref().unwrap_or_default().contains("repository"),
        "{help:?}"
    );
}

/// Every root field of Railway's pinned schema (railway.schema.json,
/// generated from the CLI's introspection result) is named exactly by a rule
/// of the Railway pack: held by an agent within its binding, needing a human,
/// or refused with a reason. A prefix rule does not count, so a newer schema
/// shows exactly which fields are new.
#[test]
fn every_railway_root_field_is_named_exactly_by_the_pack() {
    use std::collections::BTreeMap;
    use valetkey::providers::OperationType;

    let pack = ProviderKind::Railway.pack();
    let schema = ProviderKind::Railway.schema().unwrap();
    let mut named: BTreeMap<(OperationType, &str), &str> = BTreeMap::new();
    for rule in &pack.operations {
        let operation = rule.operation.unwrap_or(OperationType::Mutation);
        let how = match (&rule.refuse, &rule.scope) {
            (Some(_), _) => "refused",
            (None, Some(scope)) if pack.tier(scope).unwrap().agent_may_hold() => "held",
            (None, Some(_)) => "approved",
            (None, None) => unreachable!("a rule grants or refuses"),
        };
        // A prefix rule (a strict scope's safety net for fields Railway adds
        // later) names no field exactly.
        for field in rule.field.iter().chain(&rule.fields).filter(|f| !f.ends_with('*')) {
            let before = named.insert((operation, field.as_str()), how);
            assert!(before.is_none(), "{operation} {field} is named twice");
        }
    }
    for operation in [OperationType::Query, OperationType::Mutation] {
        let root = schema.root(operation);
        let missing: Vec<&str> = schema
            .fields(root)
            .filter(|f| !named.contains_key(&(operation, *f)))
            .collect();
        assert!(
            missing.is_empty(),
            "{operation} root fields of {} that the Railway pack does not name: {missing:#?}",
            schema.source()
        );
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for field in schema.fields(root) {
            *counts.entry(named[&(operation, field)]).or_default() += 1;
        }
        let total: usize = counts.values().sum();
        match operation {
            // The schema this was written against has 233 mutations and 158
            // query fields, each kind of answer well represented.
            OperationType::Mutation => assert!(
                total >= 233 && counts["held"] > 60 && counts["approved"] > 40 && counts["refused"] > 60,
                "{counts:?}"
            ),
            OperationType::Query => assert!(
                total >= 158 && counts["held"] > 120 && counts["refused"] > 20,
                "{counts:?}"
            ),
        }
    }
}

/// A resource's GraphQL node ids bind as it does, exactly as written (node
/// ids are case-sensitive where `owner/repo` is not); one listed twice is an
/// error, and on a provider whose rules bind no node ids, a warning.
#[test]
fn node_ids_stand_for_their_resource_as_written() {
    let text = r#"[environments.staging]
[environments.production]

[providers.github]
kind = "github"

[providers.railway]
kind = "railway"

[[resources]]
provider = "github"
kind = "repository"
id = "Acme/API"
node_ids = ["R_kgDOAbC"]
environments = ["staging"]

[[resources]]
provider = "github"
kind = "repository"
id = "acme/infra"
node_ids = ["R_kgDOxYz"]
environments = ["production"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = config::load(&path).unwrap();
    let rules = loaded.config.rules();
    let github = &rules.resources["github"];
    let owners = |kind: &str, id: &str| github.owners(kind, id).map(<[String]>::to_vec);
    assert_eq!(owners("repository", "acme/api"), Some(vec!["staging".to_owned()]));
    assert_eq!(owners("node", "R_kgDOAbC"), Some(vec!["staging".to_owned()]));
    assert_eq!(owners("node", "R_kgDOxYz"), Some(vec!["production".to_owned()]));
    assert_eq!(owners("node", "r_kgdoabc"), None);
    assert_eq!(owners("node", "R_KGDOABC"), None);

    let broken = text.replace("R_kgDOxYz", "R_kgDOAbC")
        + "\n[[resources]]\nprovider = \"railway\"\nkind = \"service\"\nid = \"svc\"\nnode_ids = [\"N_1\"]\nenvironments = [\"staging\"]\n";
    std::fs::write(&path, broken).unwrap();
    let diagnostics = config::check_file(&path).unwrap();
    let twice: Vec<_> = diagnostics
        .iter()
        .filter(|d| d.message.contains("listed twice"))
        .collect();
    assert_eq!(twice.len(), 1, "{diagnostics:#?}");
    assert_eq!(twice[0].severity, Severity::Error);
    assert!(
        diagnostics
            .iter()
            .any(|d| d.message.contains("`N_1` will never match") && d.severity == Severity::Warning),
        "{diagnostics:#?}"
    );
}
