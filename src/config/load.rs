//! Reading a configuration file: parse once into spanned TOML, then
//! deserialize each section and each named entry on its own, so that one
//! mistake does not hide the next.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::check::{Problem, Severity, validate_except};
use super::types::Config;

/// A configuration file's path and text, to turn spans into line numbers.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Source {
            path: path.to_owned(),
            text,
        })
    }

    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn diagnose(&self, problem: Problem) -> Diagnostic {
        let (line, column) = problem.span.map_or((1, 1), |s| self.position(s.start));
        Diagnostic {
            severity: problem.severity,
            file: self.path.clone(),
            line,
            column,
            message: problem.message,
            help: problem.help,
        }
    }
}

/// A problem placed in its file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.severity,
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n    help: {help}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}{}", path.display(), read_help(source))]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

/// The next step when the file is not there: where the path comes from and
/// how to get a first one.
fn read_help(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::NotFound => {
            "\n  name the file with --config FILE or VALETKEY_CONFIG=FILE; `valetkey init` writes a starter one, \
             and config/valetkey.toml in valetkey's source is the example that documents every setting"
        }
        _ => "",
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let mut out = format!("the configuration has {errors} error(s):");
    for d in diagnostics {
        out.push('\n');
        out.push_str(&d.to_string());
    }
    out
}

/// A configuration with no errors, and the warnings it has.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source: Source,
    pub warnings: Vec<Diagnostic>,
}

/// Loads a configuration for use; any error refuses it.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let source = Source::read(path)?;
    let (config, diagnostics) = parse_and_validate(&source);
    let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics.into_iter().partition(|d| d.severity == Severity::Error);
    if !errors.is_empty() {
        let mut diagnostics = errors;
        diagnostics.extend(warnings);
        return Err(ConfigError::Invalid { diagnostics });
    }
    Ok(Loaded {
        config,
        source,
        warnings,
    })
}

/// Every problem of a configuration file, errors first, in file order.
pub fn check_file(path: &Path) -> Result<Vec<Diagnostic>, ConfigError> {
    let source = Source::read(path)?;
    Ok(parse_and_validate(&source).1)
}

fn parse_and_validate(source: &Source) -> (Config, Vec<Diagnostic>) {
    let Parsed {
        config,
        mut problems,
        unparsed,
        syntax_error,
    } = parse(&source.text);
    if !syntax_error {
        problems.extend(validate_except(&config, &unparsed));
    }
    let mut diagnostics: Vec<Diagnostic> = problems.into_iter().map(|p| source.diagnose(p)).collect();
    diagnostics.sort_by_key(|d| (d.severity != Severity::Error, d.line, d.column));
    (config, diagnostics)
}

pub(crate) struct Parsed {
    pub config: Config,
    pub problems: Vec<Problem>,
    /// `section.NAME` of entries that did not parse: their names exist, so
    /// references to them are not reported as unknown on top.
    pub unparsed: BTreeSet<String>,
    /// The text is not TOML: nothing else can be said of it.
    pub syntax_error: bool,
}

/// Parses the text into a configuration, keeping whatever parts parse.
pub(crate) fn parse(text: &str) -> Parsed {
    let mut config = Config::default();
    let mut problems = Vec::new();
    let mut unparsed = BTreeSet::new();
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            return Parsed {
                config,
                problems: vec![from_toml(&e, None)],
                unparsed,
                syntax_error: true,
            };
        }
    };
    for (key, value) in root.into_inner() {
        let name = key.get_ref().as_ref();
        let section = name.to_owned();
        match name {
            "server" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.server = v;
                }
            }
            "storage" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.storage = v;
                }
            }
            "keys" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.keys = v;
                }
            }
            "proxy" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.proxy = v;
                }
            }
            "alerts" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.alerts = v;
                }
            }
            "introspection" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.introspection = v;
                }
            }
            "audit" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.audit = v;
                }
            }
            "run" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.run = v;
                }
            }
            "approvals" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.approvals = v;
                }
            }
            "console" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.console = v;
                }
            }
            "forward_proxy" => {
                if let Some(v) = one(value, &section, &mut problems) {
                    config.forward_proxy = v;
                }
            }
            "credentials" => {
                let span = value.span();
                if let Some(v) = one(value, &section, &mut problems) {
                    config.credentials = Spanned::new(span, v);
                }
            }
            "environments" => config.environments = named(value, &section, &mut problems, &mut unparsed),
            "providers" => {
                config.providers = named(value, &section, &mut problems, &mut unparsed);
                for provider in config.providers.values_mut() {
                    let span = provider.span();
                    provider.get_mut().fill_defaults(span);
                }
            }
            "agents" => config.agents = named(value, &section, &mut problems, &mut unparsed),
            "approvers" => config.approvers = named(value, &section, &mut problems, &mut unparsed),
            "resources" => config.resources = list(value, &section, &mut problems),
            other => problems.push(Problem::error(
                Some(key.span()),
                format!("unknown section `{other}`"),
                Some(format!("the sections are: {}", SECTIONS.join(", "))),
            )),
        }
    }
    Parsed {
        config,
        problems,
        unparsed,
        syntax_error: false,
    }
}

const SECTIONS: [&str; 17] = [
    "server",
    "storage",
    "keys",
    "proxy",
    "alerts",
    "introspection",
    "audit",
    "run",
    "approvals",
    "console",
    "forward_proxy",
    "credentials",
    "environments",
    "providers",
    "resources",
    "agents",
    "approvers",
];

fn one<T: DeserializeOwned>(value: Spanned<DeValue<'_>>, at: &str, problems: &mut Vec<Problem>) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| problems.push(from_toml(&e, Some(at))))
        .ok()
}

/// `[section.NAME]` tables, each deserialized on its own.
fn named<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    section: &str,
    problems: &mut Vec<Problem>,
    unparsed: &mut BTreeSet<String>,
) -> BTreeMap<String, Spanned<T>> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        problems.push(Problem::error(
            Some(span),
            format!("`{section}` must be a table of named entries"),
            Some(format!("write `[{section}.NAME]` sections")),
        ));
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let name = key.get_ref().to_string();
        let at = format!("{section}.{name}");
        if let Some(v) = one(value, &at, problems) {
            out.insert(name, Spanned::new(key.span(), v));
        } else {
            unparsed.insert(at);
        }
    }
    out
}

/// `[[section]]` arrays, each element deserialized on its own.
fn list<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    section: &str,
    problems: &mut Vec<Problem>,
) -> Vec<Spanned<T>> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        problems.push(Problem::error(
            Some(span),
            format!("`{section}` must be an array of tables"),
            Some(format!("write `[[{section}]]` entries")),
        ));
        return Vec::new();
    };
    items
        .iter()
        .cloned()
        .filter_map(|item| {
            let span = item.span();
            one(item, section, problems).map(|v| Spanned::new(span, v))
        })
        .collect()
}

fn from_toml(e: &toml::de::Error, at: Option<&str>) -> Problem {
    let message = e.message().trim_end().to_owned();
    let message = match at {
        Some(at) => format!("in `{at}`: {message}"),
        None => message,
    };
    Problem::error(e.span(), message, None)
}
