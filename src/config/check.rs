//! Validation: every problem of a parsed configuration, each with the span to
//! point at and what to write instead. Pure: it reads no file, no environment
//! variable and no secret.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::template;
use super::types::{ApproverConfig, Config, GrantConfig, ProviderConfig, Span, TokenSource};
use crate::policy::ANY_UNPROTECTED;
use crate::providers::postgres::MAX_IDENTIFIER;
use crate::providers::{NODE_KIND, ProviderKind};

/// The longest a forward proxy leaf certificate may live.
const MAX_LEAF_TTL: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub span: Option<Span>,
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    pub fn error(span: Option<Span>, message: impl Into<String>, help: Option<String>) -> Self {
        Self {
            severity: Severity::Error,
            span,
            message: message.into(),
            help,
        }
    }

    pub fn warning(span: Option<Span>, message: impl Into<String>, help: Option<String>) -> Self {
        Self {
            severity: Severity::Warning,
            span,
            message: message.into(),
            help,
        }
    }
}

/// Longest credential lifetime that still counts as short-lived.
const TTL_CEILING: Duration = Duration::from_secs(24 * 60 * 60);
/// Past this, a credential copied out of a session outlives its `run` by
/// more than a moment.
const HEARTBEAT_TIMEOUT_CEILING: Duration = Duration::from_secs(60);

/// Validates a configuration. Names in `unparsed` (`providers.NAME`, …) are
/// entries that failed to parse and were reported already: references to
/// them are not reported again.
pub fn validate(config: &Config) -> Vec<Problem> {
    validate_except(config, &BTreeSet::new())
}

pub(crate) fn validate_except(config: &Config, unparsed: &BTreeSet<String>) -> Vec<Problem> {
    let mut c = Checker {
        config,
        unparsed,
        problems: Vec::new(),
    };
    c.server();
    c.run();
    c.credentials();
    c.environments();
    for (name, provider) in &config.providers {
        c.provider(name, provider);
    }
    c.agent_env_collisions();
    c.resources();
    for (name, agent) in &config.agents {
        c.name("agent", name, agent.span());
        if agent.get_ref().grants.is_empty() {
            c.warn(
                agent.span(),
                format!("agent `{name}` has no grants: it can never mint a credential"),
                Some("add `grants = [{ provider = \"…\", environments = [\"…\"], scopes = [\"read\"] }]`".into()),
            );
        }
        for grant in &agent.get_ref().grants {
            c.grant(name, grant);
        }
    }
    c.approvals();
    c.console();
    c.forward_proxy();
    for (name, approver) in &config.approvers {
        c.approver(name, approver);
    }
    c.problems
}

struct Checker<'a> {
    config: &'a Config,
    unparsed: &'a BTreeSet<String>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn error(&mut self, span: Span, message: String, help: Option<String>) {
        self.problems.push(Problem::error(Some(span), message, help));
    }

    fn warn(&mut self, span: Span, message: String, help: Option<String>) {
        self.problems.push(Problem::warning(Some(span), message, help));
    }

    /// Landlock opens a TCP port on every address: a web port would open
    /// every provider to the agent, past the broker.
    fn run(&mut self) {
        for port in &self.config.run.allow_connect {
            if *port == 0 {
                self.problems.push(Problem::error(
                    None,
                    "[run] allow_connect holds port 0, which no service listens on",
                    Some("remove it".into()),
                ));
            } else if [80, 443, 8080, 8443].contains(port) {
                self.problems.push(Problem::warning(
                    None,
                    format!(
                        "[run] allow_connect opens port {port} on every address: agents could reach providers on it \
                         directly, past the broker"
                    ),
                    Some("remove it; reach web services through the broker".into()),
                ));
            }
        }
        let relative = self
            .config
            .run
            .hide
            .iter()
            .chain(&self.config.run.read)
            .chain(&self.config.run.write);
        for path in relative.filter(|p| !p.is_absolute() && !p.starts_with("~")) {
            self.problems.push(Problem::error(
                None,
                format!(
                    "[run] path `{}` is relative: `run` resolves paths on the launcher's machine",
                    path.display()
                ),
                Some("write an absolute path, or one under the launcher's home as `~/…`".into()),
            ));
        }
    }

    fn server(&mut self) {
        let server = &self.config.server;
        if let Some(url) = &server.public_url
            && let Err(why) = http_url(url)
        {
            self.problems.push(Problem::error(
                None,
                format!("[server] public_url `{url}` {why}"),
                Some("write the URL agents use to reach the broker, e.g. `https://valetkey.internal:8700`".into()),
            ));
        }
        if server.max_body_bytes < 1024 {
            self.problems.push(Problem::error(
                None,
                format!(
                    "[server] max_body_bytes = {} is too small to hold a request",
                    server.max_body_bytes
                ),
                Some("leave it out (64 KiB) or write at least 1024".into()),
            ));
        }
        if [
            server.header_read_timeout,
            server.idle_timeout,
            server.body_read_timeout,
        ]
        .iter()
        .any(Duration::is_zero)
        {
            self.problems.push(Problem::error(
                None,
                "[server] header_read_timeout, idle_timeout and body_read_timeout must be above 0: a client could hold a connection forever",
                Some("leave them out (10s, 180s and 120s) or write e.g. `header_read_timeout = \"5s\"`".into()),
            ));
        }
        if server.max_connections == 0
            || server.max_connections_per_client == 0
            || server.max_connections_per_local_client == 0
        {
            self.problems.push(Problem::error(
                None,
                "[server] max_connections, max_connections_per_client and max_connections_per_local_client must be above 0",
                Some("leave them out (8192, 256 and 4096)".into()),
            ));
        }
        if !(server.unauthenticated_rate > 0.0 && server.unauthenticated_rate.is_finite())
            || server.unauthenticated_burst == 0
        {
            self.problems.push(Problem::error(
                None,
                "[server] unauthenticated_rate and unauthenticated_burst must be above 0",
                Some("leave them out (2 a second, 20 at once)".into()),
            ));
        }
        if server.idle_timeout <= self.config.proxy.timeout {
            self.problems.push(Problem::warning(
                None,
                format!(
                    "[server] idle_timeout ({:?}) is not above [proxy] timeout ({:?}): an upstream that thinks longer than the first closes the agent's connection before it answers",
                    server.idle_timeout, self.config.proxy.timeout
                ),
                None,
            ));
        }
        let proxy = &self.config.proxy;
        if proxy.connect_timeout.is_zero() || proxy.timeout.is_zero() {
            self.problems.push(Problem::error(
                None,
                "[proxy] connect_timeout and timeout must be above 0",
                Some("leave them out (5s and 120s) or write e.g. `timeout = \"60s\"`".into()),
            ));
        }
        if proxy.max_inspected_push_bytes < proxy.max_inspected_body_bytes {
            self.problems.push(Problem::error(
                None,
                format!(
                    "[proxy] max_inspected_push_bytes = {} is below max_inspected_body_bytes = {}",
                    proxy.max_inspected_push_bytes, proxy.max_inspected_body_bytes
                ),
                Some("leave it out (64 MiB) or raise it: a push carries its pack".into()),
            ));
        }
        if proxy.max_inspected_body_bytes < 1024 {
            self.problems.push(Problem::error(
                None,
                format!(
                    "[proxy] max_inspected_body_bytes = {} is too small to hold a GraphQL request",
                    proxy.max_inspected_body_bytes
                ),
                Some("leave it out (1 MiB) or write at least 1024".into()),
            ));
        }
        let alerts = &self.config.alerts;
        if let Some(url) = &alerts.webhook
            && let Err(why) = http_url(url)
        {
            self.problems.push(Problem::error(
                None,
                format!("[alerts] webhook `{}` {why}", redact_url(url)),
                Some("write the webhook's URL, e.g. `https://hooks.example.com/…`".into()),
            ));
        }
        if self.config.introspection.enabled && self.config.introspection.interval < std::time::Duration::from_secs(60)
        {
            self.problems.push(Problem::error(
                None,
                "[introspection] interval must be at least 1m: every run asks each provider about each token",
                Some("leave it out (1h), or write e.g. `interval = \"15m\"`".into()),
            ));
        }
        if let Some(schedule) = &self.config.audit.schedule {
            if schedule.interval < std::time::Duration::from_secs(1) || schedule.window.is_zero() {
                self.problems.push(Problem::error(
                    None,
                    "[audit.schedule] interval must be at least 1s and window above 0",
                    Some("write e.g. `interval = \"7d\"` and `window = \"30d\"`".into()),
                ));
            }
            if let Some(url) = &schedule.webhook
                && let Err(why) = http_url(url)
            {
                self.problems.push(Problem::error(
                    None,
                    format!("[audit.schedule] webhook `{}` {why}", redact_url(url)),
                    None,
                ));
            }
        }
        if self.config.audit.checkpoint_interval < std::time::Duration::from_secs(1) {
            self.problems.push(Problem::error(
                None,
                "[audit] checkpoint_interval must be at least 1s",
                Some("leave it out (1m)".into()),
            ));
        }
        if alerts.queue_capacity == 0 || alerts.max_attempts == 0 {
            self.problems.push(Problem::error(
                None,
                "[alerts] queue_capacity and max_attempts must be above 0",
                Some("leave them out (1000 and 5)".into()),
            ));
        }
        if let Some(url) = &self.config.storage.url
            && !url.starts_with("sqlite:")
        {
            self.problems.push(Problem::error(
                None,
                format!("[storage] url `{}` is not a SQLite URL", redact_url(url)),
                Some("write `sqlite://PATH`, or leave it out to use valetkey.db in the data dir".into()),
            ));
        }
    }

    fn credentials(&mut self) {
        let span = self.config.credentials.span();
        let creds = self.config.credentials.get_ref();
        if creds.default_ttl < Duration::from_secs(1) || creds.max_ttl < Duration::from_secs(1) {
            self.error(
                span.clone(),
                "[credentials] default_ttl and max_ttl must be at least one second".into(),
                Some("write durations such as `15m` and `1h`".into()),
            );
        }
        if creds.default_ttl > creds.max_ttl {
            self.error(
                span.clone(),
                format!(
                    "[credentials] default_ttl ({}) is longer than max_ttl ({})",
                    humantime::format_duration(creds.default_ttl),
                    humantime::format_duration(creds.max_ttl)
                ),
                Some("lower default_ttl or raise max_ttl".into()),
            );
        }
        if creds.max_ttl > TTL_CEILING {
            self.warn(
                span.clone(),
                format!(
                    "[credentials] max_ttl ({}) is longer than a day: credentials are no longer short-lived",
                    humantime::format_duration(creds.max_ttl)
                ),
                Some("write `max_ttl = \"1h\"` and let `valetkey run` mint again".into()),
            );
        }
        if creds.max_session < Duration::from_secs(1) || creds.heartbeat_interval < Duration::from_secs(1) {
            self.error(
                span.clone(),
                "[credentials] max_session and heartbeat_interval must be at least one second".into(),
                Some("write durations such as `8h` and `5s`".into()),
            );
        }
        // Deadlines are whole seconds: a timeout of exactly two intervals
        // ends a session at its first late heartbeat.
        if creds.heartbeat_timeout <= creds.heartbeat_interval * 2 {
            self.error(
                span.clone(),
                format!(
                    "[credentials] heartbeat_timeout ({}) is not longer than two heartbeat_intervals ({}): one late heartbeat would end a live session",
                    humantime::format_duration(creds.heartbeat_timeout),
                    humantime::format_duration(creds.heartbeat_interval)
                ),
                Some("make heartbeat_timeout at least three times heartbeat_interval, e.g. `5s` and `15s`".into()),
            );
        }
        if creds.heartbeat_timeout > HEARTBEAT_TIMEOUT_CEILING {
            self.warn(
                span.clone(),
                format!(
                    "[credentials] heartbeat_timeout ({}) is longer than a minute: a credential copied out of a session works that long after its `valetkey run` is gone",
                    humantime::format_duration(creds.heartbeat_timeout)
                ),
                Some("write `heartbeat_timeout = \"15s\"`".into()),
            );
        }
        if creds.max_session > TTL_CEILING {
            self.warn(
                span.clone(),
                format!(
                    "[credentials] max_session ({}) is longer than a day: a forgotten `valetkey run` keeps its credential that long",
                    humantime::format_duration(creds.max_session)
                ),
                Some("write `max_session = \"8h\"`".into()),
            );
        }
        if creds.issuer.is_empty() || creds.audience.is_empty() {
            self.error(
                span,
                "[credentials] issuer and audience must not be empty".into(),
                Some("leave them out to use `valetkey`".into()),
            );
        }
    }

    fn environments(&mut self) {
        if self.config.environments.is_empty() && !self.unparsed.iter().any(|u| u.starts_with("environments.")) {
            self.problems.push(Problem::error(
                None,
                "no environment is defined",
                Some("add `[environments.staging]` (and `protected = true` for production)".into()),
            ));
        }
        for (name, env) in &self.config.environments {
            self.name("environment", name, env.span());
            if name == ANY_UNPROTECTED {
                self.error(env.span(), "`*` cannot name an environment".into(), None);
            }
        }
    }

    /// `git_upstream` and `protected_branches`: only the github kind speaks
    /// git.
    fn git(&mut self, name: &str, p: &ProviderConfig) {
        let github = p.kind == ProviderKind::Github;
        if let Some(url) = &p.git_upstream {
            if !github {
                self.error(
                    url.span(),
                    format!(
                        "provider `{name}` is a {} provider: only github providers serve git",
                        p.kind
                    ),
                    Some("remove `git_upstream`".into()),
                );
            } else if let Err(why) = http_url(url.get_ref()) {
                self.error(
                    url.span(),
                    format!("git_upstream `{}` of provider `{name}` {why}", url.get_ref()),
                    Some("write the git host's base URL, e.g. `https://github.example.com`".into()),
                );
            }
        }
        for pattern in &p.protected_branches {
            if !github {
                self.error(
                    pattern.span(),
                    format!(
                        "provider `{name}` is a {} provider: only github providers take pushes",
                        p.kind
                    ),
                    Some("remove `protected_branches`".into()),
                );
                return;
            }
            let text = pattern.get_ref();
            if text.is_empty() || text.starts_with("refs/") || text.chars().any(|c| c.is_control() || c == ' ') {
                self.error(
                    pattern.span(),
                    format!("protected branch `{text}` of provider `{name}` is not a branch name or pattern"),
                    Some("write a branch name as git shows it, e.g. `main` or `release/*`".into()),
                );
            }
        }
    }

    fn provider(&mut self, name: &str, provider: &Spanned<ProviderConfig>) {
        let span = provider.span();
        let p = provider.get_ref();
        self.name("provider", name, span.clone());

        match (&p.upstream, p.kind.default_upstream()) {
            (Some(url), _) => {
                if let Err(why) = http_url(url.get_ref()) {
                    self.error(
                        url.span(),
                        format!("upstream `{}` of provider `{name}` {why}", url.get_ref()),
                        Some("write the API's base URL, e.g. `https://api.example.com`".into()),
                    );
                }
            }
            (None, None) if p.kind != ProviderKind::Postgres => self.error(
                span.clone(),
                format!("provider `{name}` of kind `{}` needs an upstream", p.kind),
                Some("add `upstream = \"https://api.example.com\"`".into()),
            ),
            (None, _) => {}
        }

        self.git(name, p);

        if http::HeaderName::from_bytes(p.auth.header.as_bytes()).is_err() {
            self.error(
                span.clone(),
                format!(
                    "auth.header `{}` of provider `{name}` is not a valid header name",
                    p.auth.header
                ),
                Some("write e.g. `Authorization` or `Project-Access-Token`".into()),
            );
        }

        for (env, source) in &p.tokens {
            if !self.environment_known(env.get_ref()) {
                self.error(
                    env.span(),
                    format!(
                        "provider `{name}` has a token for `{}`, which is not a defined environment",
                        env.get_ref()
                    ),
                    self.suggest_environment(env.get_ref()),
                );
            }
            if let TokenSource::Env(var) | TokenSource::Stored(var) = source.get_ref()
                && var.trim().is_empty()
            {
                self.error(
                    source.span(),
                    format!("the token source of provider `{name}` for `{}` is empty", env.get_ref()),
                    Some("write `{ env = \"VAR\" }`, `{ file = \"/path\" }` or `{ stored = \"name\" }`".into()),
                );
            }
            if let TokenSource::Stored(secret) = source.get_ref()
                && !valid_name(secret)
            {
                self.error(
                    source.span(),
                    format!("stored secret name `{secret}` is not valid"),
                    Some("use lowercase letters, digits, `-` and `_`, as `valetkey secret set` does".into()),
                );
            }
        }

        let pack = p.kind.pack();
        for (scope, tier) in &p.scopes {
            if let Some(built_in) = pack.tier(scope.get_ref())
                && *tier.get_ref() < built_in
            {
                self.error(
                    tier.span(),
                    format!(
                        "provider `{name}` lowers scope `{}` from {built_in} to {}: a rule pack's tier can be raised, never lowered",
                        scope.get_ref(),
                        tier.get_ref()
                    ),
                    Some(format!("remove the line or write `\"{}\" = \"{built_in}\"`", scope.get_ref())),
                );
            }
        }

        if p.unknown_resources == crate::config::UnknownResources::AllowReads {
            self.warn(
                span.clone(),
                format!(
                    "provider `{name}` lets credentials read ids the resource map does not list: a credential of one environment can then read other environments' resources"
                ),
                Some("list the ids each environment owns under [[resources]] and remove `unknown_resources`".into()),
            );
        }
        if let Err(errors) = p.classifier() {
            for e in errors {
                let rule = &p.operations[e.index];
                self.error(
                    rule.span(),
                    format!("operation rule {} of provider `{name}`: {}", e.index + 1, e.message),
                    Some(operation_help(p.kind).into()),
                );
            }
        }
        let limits = &p.graphql;
        if [
            limits.max_document_bytes,
            limits.max_depth,
            limits.max_aliases,
            limits.max_batch,
        ]
        .contains(&0)
        {
            self.error(
                span.clone(),
                format!("the graphql limits of provider `{name}` must all be above 0"),
                Some("remove `[providers.NAME.graphql]` to use the defaults".into()),
            );
        }

        for (var, value) in &p.agent_env {
            let var_name = var.get_ref();
            if !valid_env_var(var_name) {
                self.error(
                    var.span(),
                    format!("agent_env `{var_name}` of provider `{name}` is not a valid environment variable name"),
                    Some("use capital letters, digits and `_`, not starting with a digit".into()),
                );
            } else if var_name.starts_with("VALETKEY_") {
                self.error(
                    var.span(),
                    format!("agent_env `{var_name}` of provider `{name}` uses the reserved prefix VALETKEY_"),
                    Some("valetkey sets VALETKEY_CREDENTIAL and VALETKEY_URL itself; pick another name".into()),
                );
            }
            if let Err(e) = template::check(value.get_ref(), p.kind) {
                self.error(
                    value.span(),
                    format!("agent_env `{var_name}` of provider `{name}`: {e}"),
                    Some(format!(
                        "the placeholders of a {} provider are {}",
                        p.kind,
                        template::placeholders(p.kind)
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
        }
        self.databases(name, p);
    }

    fn databases(&mut self, name: &str, p: &ProviderConfig) {
        if p.kind != ProviderKind::Postgres {
            if let Some((env, _)) = p.databases.iter().next() {
                self.error(
                    env.span(),
                    format!(
                        "provider `{name}` is a {} provider: only postgres providers have databases",
                        p.kind
                    ),
                    Some(format!("remove `[providers.{name}.databases]`")),
                );
            }
            return;
        }
        if let Some(upstream) = &p.upstream {
            self.error(
                upstream.span(),
                format!("provider `{name}` is a postgres provider: it has no upstream, its server is in its tokens"),
                Some("remove `upstream`; each token is the admin connection's `postgres://` URL".into()),
            );
        }
        for (env, db) in &p.databases {
            let env_name = env.get_ref();
            if p.token(env_name).is_none() {
                self.error(
                    env.span(),
                    format!("provider `{name}` has a database for `{env_name}` but no token (admin connection) for it"),
                    Some(format!(
                        "add `{env_name} = {{ stored = \"{name}-{env_name}\" }}` under [providers.{name}.tokens], holding a `postgres://` URL"
                    )),
                );
            }
            let d = db.get_ref();
            if d.schemas.is_empty() {
                self.error(
                    db.span(),
                    format!("the database of provider `{name}` for `{env_name}` lists no schema"),
                    Some("write e.g. `schemas = [\"public\"]`".into()),
                );
            }
            let names = d
                .schemas
                .iter()
                .map(|s| ("schema", s))
                .chain(d.database.iter().map(|s| ("database", s)))
                .chain(d.table_owner.iter().map(|s| ("table_owner", s)));
            for (what, value) in names {
                if value.is_empty() || value.len() > MAX_IDENTIFIER || value.contains('\0') {
                    self.error(
                        db.span(),
                        format!("{what} `{value}` of provider `{name}` for `{env_name}` is not a PostgreSQL name"),
                        Some(format!("a name has 1 to {MAX_IDENTIFIER} bytes and no NUL")),
                    );
                }
            }
            if d.scram_iterations == 0 {
                self.error(
                    db.span(),
                    format!("scram_iterations of provider `{name}` for `{env_name}` is 0"),
                    Some("write at least 1; 4096 (the default) suits every client".into()),
                );
            }
            if d.max_update_rows == Some(0) {
                self.error(
                    db.span(),
                    format!("max_update_rows of provider `{name}` for `{env_name}` is 0: no update could pass"),
                    Some("write at least 1, or leave it out to offer no guarded update".into()),
                );
            }
            if d.connection_limit == 0 {
                self.error(
                    db.span(),
                    format!("connection_limit of provider `{name}` for `{env_name}` is 0: no agent could connect"),
                    Some("write e.g. `connection_limit = 5`".into()),
                );
            }
            // PostgreSQL reads 0 as no limit, and the broker would end every
            // session at once; under a millisecond it cannot express.
            let limits = [
                ("statement_timeout", d.statement_timeout),
                ("lock_timeout", d.lock_timeout),
                ("idle_in_transaction_timeout", d.idle_in_transaction_timeout),
                ("idle_session_timeout", d.idle_session_timeout),
            ];
            for (what, limit) in limits {
                if limit < std::time::Duration::from_millis(1) {
                    self.error(
                        db.span(),
                        format!("{what} of provider `{name}` for `{env_name}` is under a millisecond"),
                        Some(format!("write a duration such as `{what} = \"60s\"`")),
                    );
                }
            }
        }
    }

    fn agent_env_collisions(&mut self) {
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, provider) in &self.config.providers {
            for var in provider.get_ref().agent_env.keys() {
                if let Some(first) = owners.insert(var.get_ref(), name) {
                    self.error(
                        var.span(),
                        format!(
                            "providers `{first}` and `{name}` both set agent_env `{}`; an agent holding both would get one of them",
                            var.get_ref()
                        ),
                        Some("give each provider its own variable names".into()),
                    );
                }
            }
        }
    }

    fn resources(&mut self) {
        let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
        // The kinds each proxied provider's rules bind ids as.
        let kinds: BTreeMap<&str, BTreeSet<String>> = self
            .config
            .providers
            .iter()
            .filter(|(_, p)| p.get_ref().kind != ProviderKind::Postgres)
            .filter_map(|(name, p)| Some((name.as_str(), p.get_ref().classifier().ok()?.resource_kinds())))
            .collect();
        for resource in &self.config.resources {
            let r = resource.get_ref();
            let provider = r.provider.get_ref();
            if let Some(known) = kinds.get(provider.as_str())
                && !known.contains(&r.kind)
            {
                self.warn(
                    resource.span(),
                    format!(
                        "resource `{}` is listed as kind `{}`, which no rule of provider `{provider}` binds ids as: it will never match",
                        r.id.get_ref(),
                        r.kind
                    ),
                    Some(format!(
                        "use one of: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                );
            }
            if !self.provider_known(provider) {
                self.error(
                    r.provider.span(),
                    format!(
                        "resource `{}` names provider `{provider}`, which is not defined",
                        r.id.get_ref()
                    ),
                    self.suggest_provider(provider),
                );
            }
            if r.id.get_ref().trim().is_empty() {
                self.error(r.id.span(), "a resource id must not be empty".into(), None);
            }
            if !seen.insert((provider.as_str(), r.id.get_ref().as_str())) {
                self.error(
                    r.id.span(),
                    format!("resource `{}` of provider `{provider}` is listed twice", r.id.get_ref()),
                    Some("list it once, with every environment that owns it".into()),
                );
            }
            for node in &r.node_ids {
                if let Some(known) = kinds.get(provider.as_str())
                    && !known.contains(NODE_KIND)
                {
                    self.warn(
                        node.span(),
                        format!(
                            "provider `{provider}` binds no GraphQL node ids: node id `{}` will never match",
                            node.get_ref()
                        ),
                        None,
                    );
                }
                if !seen.insert((provider.as_str(), node.get_ref().as_str())) {
                    self.error(
                        node.span(),
                        format!("id `{}` of provider `{provider}` is listed twice", node.get_ref()),
                        Some("a node id stands for one resource; list it once".into()),
                    );
                }
            }
            if r.environments.is_empty() {
                self.error(
                    resource.span(),
                    format!("resource `{}` names no environment", r.id.get_ref()),
                    Some("write `environments = [\"staging\"]`: the environment that owns it".into()),
                );
            }
            for env in &r.environments {
                if !self.environment_known(env.get_ref()) {
                    self.error(
                        env.span(),
                        format!(
                            "resource `{}` names environment `{}`, which is not defined",
                            r.id.get_ref(),
                            env.get_ref()
                        ),
                        self.suggest_environment(env.get_ref()),
                    );
                }
            }
            if r.environments.len() > 1 {
                let envs: Vec<&str> = r.environments.iter().map(|e| e.get_ref().as_str()).collect();
                self.warn(
                    resource.span(),
                    format!(
                        "resource `{}` is shared by {}: it takes the strictest owner's rules and is a finding in every audit",
                        r.id.get_ref(),
                        envs.join(" and ")
                    ),
                    Some("give each environment its own resource where the provider allows it".into()),
                );
            }
        }
    }

    fn grant(&mut self, agent: &str, grant: &Spanned<GrantConfig>) {
        let g = grant.get_ref();
        let provider_name = g.provider.get_ref();
        let provider = self.config.providers.get(provider_name).map(Spanned::get_ref);
        if provider.is_none() && !self.unparsed.contains(&format!("providers.{provider_name}")) {
            self.error(
                g.provider.span(),
                format!("a grant of agent `{agent}` names provider `{provider_name}`, which is not defined"),
                self.suggest_provider(provider_name),
            );
        }

        if g.environments.is_empty() {
            self.error(
                grant.span(),
                format!("a grant of agent `{agent}` names no environment"),
                Some("write `environments = [\"staging\"]`, or `[\"*\"]` for every unprotected one".into()),
            );
        }
        let mut envs: Vec<&str> = Vec::new();
        for env in &g.environments {
            let name = env.get_ref();
            if name == ANY_UNPROTECTED {
                envs.extend(
                    self.config
                        .environments
                        .iter()
                        .filter(|(_, e)| !e.get_ref().protected)
                        .map(|(n, _)| n.as_str()),
                );
            } else if self.environment_known(name) {
                envs.push(name);
            } else {
                self.error(
                    env.span(),
                    format!("a grant of agent `{agent}` names environment `{name}`, which is not defined"),
                    self.suggest_environment(name),
                );
            }
        }

        if g.scopes.is_empty() {
            self.error(
                grant.span(),
                format!("a grant of agent `{agent}` names no scope"),
                Some("write `scopes = [\"read\"]`".into()),
            );
        }
        if let Some(provider) = provider {
            let tiers = provider.scope_tiers();
            for scope in &g.scopes {
                let name = scope.get_ref();
                match tiers.get(name) {
                    None => self.error(
                        scope.span(),
                        format!("provider `{provider_name}` ({}) has no scope `{name}`", provider.kind),
                        Some(suggest(name, tiers.keys().map(String::as_str), "scope")),
                    ),
                    Some(tier) if !tier.agent_may_hold() => self.error(
                        scope.span(),
                        format!(
                            "a grant of agent `{agent}` gives `{name}`, a {tier} scope: agents never hold {tier} scopes"
                        ),
                        Some(format!(
                            "remove `{name}`; a {tier} operation goes through a human's approval, never through a grant"
                        )),
                    ),
                    Some(_) => {}
                }
            }
            for env in envs {
                if provider.token(env).is_none() {
                    self.error(
                        g.provider.span(),
                        format!(
                            "agent `{agent}` is granted provider `{provider_name}` in `{env}`, but the provider has no token for `{env}`"
                        ),
                        Some(format!(
                            "add `{env} = {{ stored = \"{provider_name}-{env}\" }}` under [providers.{provider_name}.tokens]"
                        )),
                    );
                }
                let guarded = g.scopes.iter().any(|s| s.get_ref() == "update:guarded");
                if guarded
                    && provider.kind == ProviderKind::Postgres
                    && provider.database(env).max_update_rows.is_none()
                {
                    self.error(
                        g.provider.span(),
                        format!(
                            "agent `{agent}` is granted `update:guarded` on `{provider_name}` in `{env}`, but its \
                             database sets no max_update_rows: the role would get no UPDATE"
                        ),
                        Some(format!(
                            "add `max_update_rows = 10` (the most rows one UPDATE may touch) under \
                             [providers.{provider_name}.databases.{env}]"
                        )),
                    );
                }
            }
        }

        if let Some(max) = g.max_ttl {
            let server_max = self.config.credentials.get_ref().max_ttl;
            if max < Duration::from_secs(1) {
                self.error(
                    grant.span(),
                    format!("a grant of agent `{agent}` has a max_ttl under one second"),
                    Some("write e.g. `max_ttl = \"15m\"`".into()),
                );
            } else if max > server_max {
                self.warn(
                    grant.span(),
                    format!(
                        "a grant of agent `{agent}` allows {} but [credentials] max_ttl is {}: credentials with a fixed expiry (`valetkey env`) will last {}, sessions (`valetkey run`) up to {}",
                        humantime::format_duration(max),
                        humantime::format_duration(server_max),
                        humantime::format_duration(server_max),
                        humantime::format_duration(max.min(self.config.credentials.get_ref().max_session))
                    ),
                    Some("lower the grant's max_ttl, or leave it out".into()),
                );
            }
        }
    }

    fn approvals(&mut self) {
        let a = &self.config.approvals;
        for (setting, value) in [
            ("decide_within", a.decide_within),
            ("execute_within", a.execute_within),
            ("max_wait", a.max_wait),
            ("enrollment_ttl", a.enrollment_ttl),
        ] {
            if value.is_zero() {
                self.problems.push(Problem::error(
                    None,
                    format!("[approvals] {setting} is zero: nothing could ever be approved in time"),
                    Some(format!(
                        "remove it for the default, or write a duration such as `{setting} = \"10m\"`"
                    )),
                ));
            }
        }
        if a.lock_after_failures == 0 {
            self.problems.push(Problem::error(
                None,
                "[approvals] lock_after_failures is 0: every approver's code would be locked at once",
                Some("remove it for the default (5)".into()),
            ));
        }
    }

    /// Browsers take passkeys only on a secure origin named by a host.
    fn console(&mut self) {
        let console = &self.config.console;
        if !console.enabled {
            return;
        }
        let fix = "write `origin = \"https://HOST:PORT\"`, the address browsers reach the broker at, named by a host (`http://localhost:PORT` on this machine)";
        let Some(origin) = &console.origin else {
            if !self.config.server.listen.ip().is_loopback() {
                self.problems.push(Problem::error(
                    None,
                    "[console] has no `origin`, and the broker does not listen on loopback",
                    Some(fix.into()),
                ));
            }
            return;
        };
        let problem = match url::Url::parse(origin) {
            Err(e) => Some(format!("[console] origin `{origin}` is not a URL: {e}")),
            Ok(url) => match url.host() {
                None => Some(format!("[console] origin `{origin}` names no host")),
                Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Some(format!(
                    "[console] origin `{origin}` is an IP address: browsers take passkeys only for a host name"
                )),
                Some(url::Host::Domain(host)) if url.scheme() != "https" && host != "localhost" => Some(format!(
                    "[console] origin `{origin}` is not https: browsers take passkeys only on a secure origin"
                )),
                Some(_) if url.path() != "/" || url.query().is_some() => Some(format!(
                    "[console] origin `{origin}` must be an origin alone, without a path"
                )),
                Some(_) => None,
            },
        };
        if let Some(message) = problem {
            self.problems.push(Problem::error(None, message, Some(fix.into())));
        }
    }

    /// A leaf's lifetime is bounded; ops' `hosts` are bare host names; a
    /// passthrough entry must be a host, and never a provider's: those
    /// are inspected whatever the list says, and an entry that seems to
    /// tunnel one misleads whoever reads the file.
    fn forward_proxy(&mut self) {
        let proxy = &self.config.forward_proxy;
        if proxy.leaf_ttl < Duration::from_secs(3600) || proxy.leaf_ttl > MAX_LEAF_TTL {
            self.problems.push(Problem::error(
                None,
                format!(
                    "[forward_proxy] leaf_ttl is {}: a leaf certificate lives between an hour and 30 days",
                    humantime::format_duration(proxy.leaf_ttl)
                ),
                Some("write `leaf_ttl = \"24h\"`".into()),
            ));
        }
        for (name, provider) in &self.config.providers {
            for host in provider.get_ref().hosts.iter().flatten() {
                if !crate::forward::hosts::is_host_name(host.get_ref()) {
                    self.error(
                        host.span(),
                        format!("`{}` is not a host name: the forward proxy compares it with the host a client names", host.get_ref()),
                        Some(format!("write the bare name, as `[providers.{name}] hosts = [\"api.example.com\"]`: no scheme, port or path")),
                    );
                }
            }
        }
        // A provider's host is one whatever ops name, and so are its kind's
        // public hosts: a passthrough entry may cover neither.
        let hosts = crate::forward::Hosts::from_config(self.config);
        let kinds: Vec<String> = self
            .config
            .providers
            .values()
            .flat_map(|p| p.get_ref().kind.default_hosts().iter().map(|h| (*h).to_owned()))
            .collect();
        let provider_hosts: Vec<String> = hosts.provider_hosts().map(str::to_owned).chain(kinds).collect();
        for entry in &self.config.forward_proxy.passthrough {
            match crate::forward::hosts::Pattern::parse(entry) {
                Err(why) => self.problems.push(Problem::error(
                    None,
                    format!("[forward_proxy] passthrough: {why}"),
                    Some("write `registry.npmjs.org`, `*.pypi.org` or `mirror.internal:8443`".into()),
                )),
                Ok(pattern) => {
                    if let Some(host) = provider_hosts.iter().find(|h| pattern.covers_host(h)) {
                        self.problems.push(Problem::error(
                            None,
                            format!(
                                "[forward_proxy] passthrough `{entry}` covers `{host}`, a provider's host, which the broker always inspects"
                            ),
                            Some(format!("remove `{entry}`, or list only the other hosts it was meant for")),
                        ));
                    }
                }
            }
        }
    }

    fn approver(&mut self, name: &str, approver: &Spanned<ApproverConfig>) {
        self.name("approver", name, approver.span());
        let a = approver.get_ref();
        for provider in &a.providers {
            if provider != "*" && !self.provider_known(provider) {
                self.error(
                    approver.span(),
                    format!("approver `{name}` names provider `{provider}`, which is not defined"),
                    self.suggest_provider(provider),
                );
            }
        }
        for env in &a.environments {
            if env != "*" && !self.environment_known(env) {
                self.error(
                    approver.span(),
                    format!("approver `{name}` names environment `{env}`, which is not defined"),
                    self.suggest_environment(env),
                );
            }
        }
        if a.providers.is_empty() || a.environments.is_empty() || a.tiers.is_empty() {
            self.warn(
                approver.span(),
                format!("approver `{name}` may approve nothing: a list of providers, environments or tiers is empty"),
                Some("write `[\"*\"]` for every provider or environment".into()),
            );
        }
    }

    fn name(&mut self, what: &str, name: &str, span: Span) {
        if !valid_name(name) {
            self.error(
                span,
                format!("{what} name `{name}` is not valid"),
                Some("use 1 to 63 lowercase letters, digits, `-` and `_`, starting with a letter or digit".into()),
            );
        }
    }

    fn environment_known(&self, name: &str) -> bool {
        self.config.environments.contains_key(name) || self.unparsed.contains(&format!("environments.{name}"))
    }

    fn provider_known(&self, name: &str) -> bool {
        self.config.providers.contains_key(name) || self.unparsed.contains(&format!("providers.{name}"))
    }

    fn suggest_environment(&self, name: &str) -> Option<String> {
        Some(suggest(
            name,
            self.config.environments.keys().map(String::as_str),
            "environment",
        ))
    }

    fn suggest_provider(&self, name: &str) -> Option<String> {
        Some(suggest(
            name,
            self.config.providers.keys().map(String::as_str),
            "provider",
        ))
    }
}

/// "did you mean `x`?" when one name is close, else the list of names.
fn suggest<'a>(wrong: &str, known: impl Iterator<Item = &'a str> + Clone, what: &str) -> String {
    let closest = known
        .clone()
        .map(|k| (strsim::damerau_levenshtein(wrong, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    let names: Vec<String> = known.map(|k| format!("`{k}`")).collect();
    match (closest, names.is_empty()) {
        (Some((_, k)), _) => format!("did you mean `{k}`? defined: {}", names.join(", ")),
        (None, true) => format!("no {what} is defined yet"),
        (None, false) => format!("write one of: {}", names.join(", ")),
    }
}

/// Names used in URLs, env var values and role names: short and plain.
fn operation_help(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Railway => {
            "write `{ field = \"mutationName\", scope = \"SCOPE\" }`, with `id = \"KIND\"` when the field's `id` argument names a resource"
        }
        ProviderKind::Github | ProviderKind::Http => {
            "write `{ method = \"DELETE\", path = \"/items/{id}\", scope = \"SCOPE\", resources = [{ kind = \"item\", id = \"{id}\" }] }`"
        }
        ProviderKind::Postgres => "remove the operations: postgres providers are not proxied",
    }
}

pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

fn valid_env_var(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

fn http_url(text: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(text).map_err(|_| "is not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("is not an http or https URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; tokens go in `tokens`");
    }
    Ok(())
}

/// A storage URL may hold a password; a message shows only its scheme.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => "…".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_providers_are_checked() {
        let text = r#"
[environments.staging]
[environments.production]
[providers.db]
kind = "postgres"
upstream = "https://db.example.com"
tokens = { staging = { env = "DB_ADMIN_URL" } }
agent_env = { DATABASE_URL = "{proxy_url}" }
[providers.db.databases.staging]
schemas = []
connection_limit = 0
scram_iterations = 0
lock_timeout = "0s"
[providers.db.databases.production]
table_owner = ""
[providers.gh]
kind = "github"
tokens = { staging = { env = "GH" } }
[providers.gh.databases.staging]
[agents.a]
grants = [{ provider = "db", environments = ["staging", "production"], scopes = ["read", "update:guarded"] }]
"#;
        let parsed = super::super::load::parse(text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let messages: Vec<String> = validate(&parsed.config).into_iter().map(|p| p.message).collect();
        let all = messages.join("\n");
        for expected in [
            "provider `db` is a postgres provider: it has no upstream",
            "agent_env `DATABASE_URL` of provider `db`: unknown placeholder `{proxy_url}`",
            "the database of provider `db` for `staging` lists no schema",
            "connection_limit of provider `db` for `staging` is 0",
            "scram_iterations of provider `db` for `staging` is 0",
            "lock_timeout of provider `db` for `staging` is under a millisecond",
            "provider `db` has a database for `production` but no token",
            "table_owner `` of provider `db` for `production` is not a PostgreSQL name",
            "agent `a` is granted provider `db` in `production`, but the provider has no token",
            "provider `gh` is a github provider: only postgres providers have databases",
            "agent `a` is granted `update:guarded` on `db` in `staging`, but its database sets no max_update_rows",
        ] {
            assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
        }
        assert_eq!(messages.len(), 12, "{all}");

        // Left empty, a postgres provider's agent_env gives DATABASE_URL.
        let parsed = super::super::load::parse("[providers.db]\nkind = \"postgres\"\n");
        let db = parsed.config.providers["db"].get_ref();
        let vars: Vec<(&str, &str)> = db
            .agent_env
            .iter()
            .map(|(k, v)| (k.get_ref().as_str(), v.get_ref().as_str()))
            .collect();
        assert_eq!(vars, [("DATABASE_URL", "{database_url}")]);
    }

    #[test]
    fn git_settings_are_for_github_providers_and_well_formed() {
        let text = r#"
[environments.staging]
[proxy]
max_inspected_push_bytes = 1000
[providers.api]
kind = "http"
upstream = "https://api.example.com"
git_upstream = "https://git.example.com"
protected_branches = ["main"]
[providers.gh]
kind = "github"
git_upstream = "ftp://git.example.com"
protected_branches = ["main", "refs/heads/x", "", "a b"]
"#;
        let parsed = super::super::load::parse(text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let all = validate(&parsed.config)
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("\n");
        for expected in [
            "max_inspected_push_bytes = 1000 is below max_inspected_body_bytes",
            "provider `api` is a http provider: only github providers serve git",
            "provider `api` is a http provider: only github providers take pushes",
            "git_upstream `ftp://git.example.com` of provider `gh` is not an http or https URL",
            "protected branch `refs/heads/x` of provider `gh` is not a branch name",
            "protected branch `` of provider `gh`",
            "protected branch `a b` of provider `gh`",
        ] {
            assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
        }
        assert!(!all.contains("protected branch `main`"), "{all}");
    }

    #[test]
    fn run_settings_are_checked() {
        let text = r#"
[environments.staging]
[run]
hide = ["~/.config/op", "/srv/secrets", "relative/dir"]
allow_connect = [6379, 443, 0]
unknown = 1
"#;
        let parsed = super::super::load::parse(text);
        assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);
        assert!(parsed.problems[0].message.contains("unknown"), "{:?}", parsed.problems);
        let parsed = super::super::load::parse(&text.replace("unknown = 1\n", ""));
        let problems = validate(&parsed.config);
        let all: Vec<(Severity, &str)> = problems.iter().map(|p| (p.severity, p.message.as_str())).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.contains(&(
            Severity::Error,
            "[run] allow_connect holds port 0, which no service listens on"
        )));
        assert!(
            all.iter()
                .any(|(s, m)| *s == Severity::Warning && m.contains("opens port 443 on every address"))
        );
        assert!(
            all.iter()
                .any(|(s, m)| *s == Severity::Error && m.contains("`relative/dir` is relative"))
        );
    }

    #[test]
    fn names() {
        for good in ["staging", "prod-eu", "a", "ci_bot", "9lives"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Staging", "-x", "with space", "a/b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_env_var("RAILWAY_TOKEN"));
        assert!(!valid_env_var("1X") && !valid_env_var("lower") && !valid_env_var(""));
    }

    #[test]
    fn suggestions() {
        let known = ["staging", "production"];
        assert_eq!(
            suggest("prodution", known.into_iter(), "environment"),
            "did you mean `production`? defined: `staging`, `production`"
        );
        assert_eq!(
            suggest("qa", known.into_iter(), "environment"),
            "write one of: `staging`, `production`"
        );
        assert_eq!(
            suggest("qa", [].into_iter(), "environment"),
            "no environment is defined yet"
        );
    }

    #[test]
    fn urls() {
        assert!(http_url("https://api.github.com").is_ok());
        assert!(http_url("ftp://x").is_err());
        assert!(http_url("https://u:p@x").is_err());
        assert!(http_url("https://x/?a=b").is_err());
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://…");
    }
}
