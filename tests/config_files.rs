//! Every file shipped under config/ loads, and a configuration full of
//! mistakes reports all of them at once, each on its line.

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
  { method = "POST", path = "/graphql/v2", scope = "read" },
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
    assert!(errors[0].1.contains("rules name a `field`"), "{}", errors[0].1);
    assert_eq!(errors[1].0, 15);
    assert!(errors[1].1.contains("scope `destroy`"), "{}", errors[1].1);
    assert_eq!(errors[2].0, 16);
    assert!(errors[2].1.contains("method `delete`"), "{}", errors[2].1);
    assert_eq!(errors[3].0, 17);
    assert!(errors[3].1.contains("`{name}`"), "{}", errors[3].1);
    assert!(config::load(&path).is_err());
}
