//! What a PostgreSQL server lets an agent's role do beyond its grants: the
//! privileges PUBLIC holds (every role has them, and CONNECT cannot be
//! withheld from one role) and the `pg_hba.conf` rules that decide where a
//! role may log in. The queries that read them, and the judgement, as pure
//! functions: each finding comes with the statement or line that closes it.

use serde::Serialize;

use super::postgres::quote_ident;

/// Every role the broker creates is a member: `pg_hba.conf` can confine
/// them all with one `+valetkey_agents` line.
pub const AGENTS_GROUP: &str = "valetkey_agents";

/// Creates the group if it is missing; run before roles join it.
pub const ENSURE_GROUP: &str = "DO $$ BEGIN CREATE ROLE valetkey_agents NOLOGIN; \
     EXCEPTION WHEN duplicate_object THEN NULL; END $$";

/// Other databases any role may connect to.
pub const PUBLIC_CONNECT: &str = "SELECT datname::text FROM pg_database \
     WHERE datallowconn AND has_database_privilege('public', datname, 'CONNECT') \
     AND datname <> current_database() ORDER BY 1";
/// Whether any role may create temporary tables here.
pub const PUBLIC_TEMP: &str = "SELECT has_database_privilege('public', current_database(), 'TEMP')";
/// Schemas here any role may create objects in.
pub const PUBLIC_CREATE: &str = "SELECT nspname::text FROM pg_namespace \
     WHERE has_schema_privilege('public', oid, 'CREATE') \
     AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1";
/// SECURITY DEFINER functions here any role may call: they run with their
/// owner's privileges, which may delete what the agent's role may not.
pub const PUBLIC_DEFINERS: &str = "SELECT p.oid::regprocedure::text FROM pg_proc p \
     JOIN pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.prosecdef AND has_function_privilege('public', p.oid, 'EXECUTE') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1";
/// What the agents' group holds here beyond PUBLIC: before PostgreSQL 16 a
/// member may `SET ROLE` to its group whatever NOINHERIT says, so what the
/// group may do, every agent may; and what it owns outlives every agent.
pub const GROUP_EXTRA: &str = "SELECT 'TEMP on the database' WHERE \
       has_database_privilege('valetkey_agents', current_database(), 'TEMP') \
       AND NOT has_database_privilege('public', current_database(), 'TEMP') \
     UNION ALL SELECT format('CREATE on schema %I', nspname) FROM pg_namespace \
       WHERE has_schema_privilege('valetkey_agents', oid, 'CREATE') AND NOT has_schema_privilege('public', oid, 'CREATE') \
     UNION ALL SELECT format('%s objects it owns', count(*)) FROM pg_shdepend \
       WHERE refobjid = (SELECT oid FROM pg_roles WHERE rolname = 'valetkey_agents') AND deptype = 'o' \
       AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) HAVING count(*) > 0";

/// Whether the agents' group exists: until the first role is made, it does
/// not, and holds nothing (GROUP_EXTRA would fail on its name).
pub const GROUP_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'valetkey_agents')";

/// The server's `pg_hba.conf` as the file reads now (readable by
/// superusers): what the server applies only once it is reloaded, and
/// never while a line has an error.
pub const HBA_RULES: &str = "SELECT line_number, type, coalesce(database, '{}'), coalesce(user_name, '{}'), \
     coalesce(address, ''), coalesce(netmask, ''), coalesce(auth_method, ''), error IS NOT NULL \
     FROM pg_hba_file_rules ORDER BY line_number";

/// One way past the grants, with what closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub what: String,
    pub fix: String,
}

/// What PUBLIC holds on a server, as read by the queries above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicPrivileges {
    /// The database the agents are given.
    pub database: String,
    pub connect_elsewhere: Vec<String>,
    pub temp: bool,
    pub create_in: Vec<String>,
    pub definers: Vec<String>,
    /// What the agents' group holds beyond PUBLIC (`GROUP_EXTRA`).
    pub group_extra: Vec<String>,
}

pub fn public_findings(p: &PublicPrivileges) -> Vec<Finding> {
    let mut out = Vec::new();
    for db in &p.connect_elsewhere {
        out.push(Finding {
            what: format!("PUBLIC may connect to database `{db}`: agents' roles can log in there"),
            fix: format!("REVOKE CONNECT ON DATABASE {} FROM PUBLIC;", quote_ident(db)),
        });
    }
    if p.temp {
        out.push(Finding {
            what: format!(
                "PUBLIC may create temporary tables in `{}`: agents' roles can fill the disk",
                p.database
            ),
            fix: format!("REVOKE TEMP ON DATABASE {} FROM PUBLIC;", quote_ident(&p.database)),
        });
    }
    for schema in &p.create_in {
        out.push(Finding {
            what: format!(
                "PUBLIC may create objects in schema `{schema}` of `{}`: agents' roles can make tables, \
                 functions and views there",
                p.database
            ),
            fix: format!("REVOKE CREATE ON SCHEMA {} FROM PUBLIC;", quote_ident(schema)),
        });
    }
    if !p.group_extra.is_empty() {
        out.push(Finding {
            what: format!(
                "the agents' group `{AGENTS_GROUP}` holds {} in `{}`: every agent's role may act as the group \
                 (`SET ROLE`, before PostgreSQL 16), and what the group owns outlives every agent",
                p.group_extra.join(", "),
                p.database
            ),
            fix: format!(
                "REVOKE ALL ON DATABASE {db} FROM {AGENTS_GROUP}; DROP OWNED BY {AGENTS_GROUP}; (and REVOKE \
                 CREATE ON SCHEMA … FROM {AGENTS_GROUP}) — the group needs no privilege of its own",
                db = quote_ident(&p.database)
            ),
        });
    }
    for function in &p.definers {
        out.push(Finding {
            what: format!(
                "PUBLIC may call SECURITY DEFINER function `{function}` in `{}`: it runs with its owner's \
                 privileges, whatever the agent's role may do",
                p.database
            ),
            // `regprocedure` text is already quoted where it must be.
            fix: format!("REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC;"),
        });
    }
    out
}

/// Whether `pg_hba.conf` changed after the server last loaded its
/// configuration (readable by superusers).
pub const HBA_CHANGED_SINCE_LOAD: &str =
    "SELECT (pg_stat_file(current_setting('hba_file'))).modification > pg_conf_load_time()";

/// The file `pg_hba_file_rules` shows is not what the server applies while
/// it changed after the last reload.
pub fn hba_reload_finding(changed_since_load: bool) -> Option<Finding> {
    changed_since_load.then(|| Finding {
        what: "pg_hba.conf changed after the server last loaded it: what the server applies is not what is \
               checked here"
            .into(),
        fix: "SELECT pg_reload_conf();".into(),
    })
}

/// A `pg_hba.conf` line as `pg_hba_file_rules` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    pub line: i32,
    /// `local`, `host`, `hostssl`, `hostnossl`, `hostgssenc`, …
    pub kind: String,
    pub databases: Vec<String>,
    pub users: Vec<String>,
    /// `all`, `samehost`, `samenet`, an IP address or a host name (empty
    /// for `local`).
    pub address: String,
    /// The address's mask, when it is an IP address.
    pub netmask: String,
    pub method: String,
    /// The line does not parse: the server keeps the rules it loaded last.
    pub error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl HbaRule {
    /// Whether the line may match a client of `family` (an agent's address
    /// is unknown here: a host name or `samenet` may be it).
    fn may_match(&self, family: Option<Family>) -> bool {
        match (family, self.address.parse::<std::net::IpAddr>()) {
            (None, _) | (Some(_), Err(_)) => true,
            (Some(family), Ok(ip)) => ip.is_ipv4() == (family == Family::V4),
        }
    }

    /// Whether the line matches every client of `family`.
    fn matches_every(&self, family: Option<Family>) -> bool {
        family.is_none()
            || self.address == "all"
            || (self.may_match(family)
                && self
                    .netmask
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|mask| mask.is_unspecified()))
    }
}

/// Whether a `pg_hba.conf` user entry matches the roles the broker makes
/// for agents: `all`, their group, one of them by name, or a regular
/// expression (`/…`) that matches such a name (one Rust's regex syntax
/// cannot read counts as matching).
fn names_agents_roles(user: &str) -> bool {
    let sample = super::postgres::role_name("agent", "0123456789abcdef0123456789abcdef");
    match user.strip_prefix('/') {
        Some(pattern) => regex::Regex::new(pattern).map_or(true, |re| re.is_match(&sample)),
        None => user == "all" || user == format!("+{AGENTS_GROUP}") || user.starts_with(super::postgres::ROLE_PREFIX),
    }
}

/// Whether the agents' roles are confined to `database` by `pg_hba.conf`
/// (`None`: the rules could not be read), and whether any line lets a role
/// in without a password.
pub fn hba_findings(rules: Option<&[HbaRule]>, database: &str) -> Vec<Finding> {
    let confine = format!(
        "local {db} +{AGENTS_GROUP} scram-sha-256\n    host {db} +{AGENTS_GROUP} all scram-sha-256\n    \
         local all +{AGENTS_GROUP} reject\n    host all +{AGENTS_GROUP} all reject\n    \
         (before every other line; `host` covers TLS and plain TCP, `hostssl` only TLS)",
        db = database
    );
    let Some(rules) = rules else {
        return vec![Finding {
            what: "cannot read pg_hba_file_rules (the admin connection is not a superuser): whether agents' \
                   roles are confined to their database is unknown"
                .into(),
            fix: format!("check pg_hba.conf holds\n    {confine}"),
        }];
    };
    let mut out = Vec::new();
    let broken: Vec<String> = rules.iter().filter(|r| r.error).map(|r| r.line.to_string()).collect();
    if !broken.is_empty() {
        out.push(Finding {
            what: format!(
                "pg_hba.conf has errors on line(s) {}: the server does not load it, so what it applies may not \
                 be what is checked here",
                broken.join(", ")
            ),
            fix: "fix those lines, then `SELECT pg_reload_conf();`".into(),
        });
    }
    // Lines that name one database compare with it; these never match a
    // database an agent names.
    let special = ["sameuser", "samerole", "samegroup", "replication"];
    // An agent picks how it connects: the local socket, plain TCP or TLS,
    // over IPv4 or IPv6, from an address unknown here; each way meets its
    // own first matching line.
    let mut ways_in: Vec<(&HbaRule, &str)> = Vec::new();
    // TCP comes plain, with TLS or with GSSAPI encryption, each matched by
    // its own line types.
    let tcp: [(&str, &[&str]); 3] = [
        ("TCP without TLS", &["host", "hostnossl", "hostnogssenc"]),
        ("TCP with TLS", &["host", "hostssl", "hostnogssenc"]),
        ("TCP with GSSAPI encryption", &["host", "hostgssenc", "hostnossl"]),
    ];
    let ways = std::iter::once(("the local socket", &["local"][..], None)).chain(
        tcp.into_iter()
            .flat_map(|(over, kinds)| [Family::V4, Family::V6].map(|family| (over, kinds, Some(family)))),
    );
    for (over, kinds, family) in ways {
        for rule in rules.iter().filter(|r| {
            !r.error
                && kinds.contains(&r.kind.as_str())
                && r.users.iter().any(|u| names_agents_roles(u))
                && r.may_match(family)
        }) {
            let every = rule.databases.iter().any(|d| d == "all");
            let others = rule
                .databases
                .iter()
                .any(|d| d.as_str() != database && d.as_str() != "all" && !special.contains(&d.as_str()));
            if rule.method != "reject" && (every || others) && !ways_in.contains(&(rule, over)) {
                ways_in.push((rule, over));
            }
            // The first line for every database and every address decides
            // the rest; one for some addresses leaves the others to the
            // lines after it.
            if every && rule.matches_every(family) {
                break;
            }
        }
    }
    let mut lines: Vec<&HbaRule> = ways_in.iter().map(|(rule, _)| *rule).collect();
    lines.sort_by_key(|r| r.line);
    lines.dedup_by_key(|r| r.line);
    for rule in lines {
        let overs: Vec<&str> = ways_in
            .iter()
            .filter(|(r, _)| r.line == rule.line)
            .map(|(_, o)| *o)
            .collect();
        let which = if rule.databases.iter().any(|d| d == "all") {
            format!("databases other than `{database}`")
        } else {
            rule.databases
                .iter()
                .filter(|d| d.as_str() != database && !special.contains(&d.as_str()))
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(Finding {
            what: format!(
                "pg_hba.conf line {} lets agents' roles log in to {which} over {} ({})",
                rule.line,
                overs.join(" and "),
                rule.method
            ),
            fix: format!("add to pg_hba.conf\n    {confine}\n  and reload the server"),
        });
    }
    // On the local socket, ident is peer (the system user, not an ident
    // server): `run` keeps the socket out of agents' reach.
    for rule in rules
        .iter()
        .filter(|r| !r.error && r.method == "ident" && r.kind != "local")
    {
        out.push(Finding {
            what: format!(
                "pg_hba.conf line {} lets {} log in over TCP as whoever the ident server of the machine they \
                 connect from says they are: an agent on a machine it controls says what it likes",
                rule.line,
                rule.users.join(", ")
            ),
            fix: format!("use scram-sha-256 on line {} (and set passwords)", rule.line),
        });
    }
    for rule in rules.iter().filter(|r| !r.error && r.method == "trust") {
        out.push(Finding {
            what: format!(
                "pg_hba.conf line {} trusts {} on {} connections without a password: an agent that reaches \
                 the server logs in as any of them, superusers included",
                rule.line,
                rule.users.join(", "),
                rule.kind
            ),
            fix: format!(
                "use scram-sha-256 on line {} (and set passwords), or keep it to a role no agent can name",
                rule.line
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(line: i32, kind: &str, db: &str, user: &str, method: &str) -> HbaRule {
        HbaRule {
            line,
            kind: kind.into(),
            databases: vec![db.into()],
            users: vec![user.into()],
            address: if kind == "local" { "" } else { "all" }.into(),
            netmask: String::new(),
            method: method.into(),
            error: false,
        }
    }

    fn from(address: &str, netmask: &str, rule: HbaRule) -> HbaRule {
        HbaRule {
            address: address.into(),
            netmask: netmask.into(),
            ..rule
        }
    }

    #[test]
    fn every_public_privilege_is_a_finding_with_its_revoke() {
        let found = public_findings(&PublicPrivileges {
            database: "app".into(),
            connect_elsewhere: vec!["postgres".into(), "odd\"db".into()],
            temp: true,
            create_in: vec!["public".into()],
            definers: vec!["purge(integer)".into()],
            group_extra: vec![],
        });
        let fixes: Vec<&str> = found.iter().map(|f| f.fix.as_str()).collect();
        assert_eq!(
            fixes,
            [
                "REVOKE CONNECT ON DATABASE \"postgres\" FROM PUBLIC;",
                "REVOKE CONNECT ON DATABASE \"odd\"\"db\" FROM PUBLIC;",
                "REVOKE TEMP ON DATABASE \"app\" FROM PUBLIC;",
                "REVOKE CREATE ON SCHEMA \"public\" FROM PUBLIC;",
                "REVOKE EXECUTE ON FUNCTION purge(integer) FROM PUBLIC;",
            ]
        );
        assert!(public_findings(&PublicPrivileges::default()).is_empty());
    }

    #[test]
    fn the_agents_group_must_be_rejected_elsewhere_before_any_other_line_lets_it_in() {
        let confined = [
            rule(1, "local", "app", "+valetkey_agents", "scram-sha-256"),
            rule(2, "host", "app", "+valetkey_agents", "scram-sha-256"),
            rule(3, "local", "all", "+valetkey_agents", "reject"),
            rule(4, "host", "all", "+valetkey_agents", "reject"),
            rule(5, "local", "all", "all", "peer"),
            rule(6, "host", "all", "all", "scram-sha-256"),
        ];
        assert!(hba_findings(Some(&confined), "app").is_empty());

        let debian_default = [
            rule(1, "local", "all", "postgres", "peer"),
            rule(2, "local", "all", "all", "peer"),
            rule(3, "host", "all", "all", "scram-sha-256"),
        ];
        let found = hba_findings(Some(&debian_default), "app");
        let whats: Vec<&str> = found.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(whats[0].contains("line 2") && whats[0].contains("over the local socket (peer)"));
        assert!(
            whats[1].contains("line 3") && whats[1].contains("over TCP without TLS and TCP with TLS"),
            "{whats:?}"
        );
        assert!(found[1].fix.contains("host all +valetkey_agents all reject"));
    }

    #[test]
    fn a_reject_for_some_addresses_leaves_the_others_to_the_lines_after_it() {
        let loopback_only = [
            rule(1, "local", "all", "+valetkey_agents", "reject"),
            from(
                "127.0.0.1",
                "255.255.255.255",
                rule(2, "host", "all", "+valetkey_agents", "reject"),
            ),
            from("::", "::", rule(3, "host", "all", "+valetkey_agents", "reject")),
            rule(4, "host", "all", "all", "scram-sha-256"),
        ];
        let found = hba_findings(Some(&loopback_only), "app");
        assert_eq!(
            found.len(),
            1,
            "IPv4 from elsewhere than the loopback is open: {found:?}"
        );
        assert!(found[0].what.contains("line 4"), "{found:?}");

        let ipv4_only = [
            rule(1, "local", "all", "+valetkey_agents", "reject"),
            from(
                "0.0.0.0",
                "0.0.0.0",
                rule(2, "host", "all", "+valetkey_agents", "reject"),
            ),
            from(
                "127.0.0.1",
                "255.255.255.255",
                rule(3, "host", "all", "all", "scram-sha-256"),
            ),
            from(
                "::1",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                rule(4, "host", "all", "all", "scram-sha-256"),
            ),
        ];
        let found = hba_findings(Some(&ipv4_only), "app");
        assert_eq!(found.len(), 1, "IPv6 is still open: {found:?}");
        assert!(found[0].what.contains("line 4"), "{found:?}");

        let every_family = [
            rule(1, "local", "all", "+valetkey_agents", "reject"),
            from(
                "0.0.0.0",
                "0.0.0.0",
                rule(2, "host", "all", "+valetkey_agents", "reject"),
            ),
            from("::", "::", rule(3, "host", "all", "+valetkey_agents", "reject")),
            rule(4, "host", "all", "all", "scram-sha-256"),
        ];
        assert!(hba_findings(Some(&every_family), "app").is_empty());
    }

    #[test]
    fn a_file_changed_since_the_last_reload_is_a_finding() {
        assert_eq!(hba_reload_finding(false), None);
        let found = hba_reload_finding(true).unwrap();
        assert!(found.what.contains("changed after the server last loaded it"));
        assert_eq!(found.fix, "SELECT pg_reload_conf();");
    }

    #[test]
    fn a_line_naming_agents_roles_by_name_or_pattern_is_a_way_in() {
        for user in ["/^vk_", "/.*", "vk_claude_be473aab6b76f636", "/(unreadable"] {
            let rules = [
                rule(1, "host", "all", user, "scram-sha-256"),
                rule(2, "local", "all", "+valetkey_agents", "reject"),
                rule(3, "host", "all", "+valetkey_agents", "reject"),
            ];
            let found = hba_findings(Some(&rules), "app");
            assert_eq!(found.len(), 1, "{user}: {found:?}");
            assert!(found[0].what.contains("line 1"), "{user}: {found:?}");
        }
        for user in ["/^app_", "app", "postgres"] {
            let rules = [
                rule(1, "host", "all", user, "scram-sha-256"),
                rule(2, "local", "all", "+valetkey_agents", "reject"),
                rule(3, "host", "all", "+valetkey_agents", "reject"),
            ];
            assert!(hba_findings(Some(&rules), "app").is_empty(), "{user}");
        }
    }

    #[test]
    fn a_gssapi_line_is_a_way_in_too() {
        let rules = [
            rule(1, "local", "all", "+valetkey_agents", "reject"),
            rule(2, "hostnogssenc", "all", "+valetkey_agents", "reject"),
            rule(3, "host", "all", "all", "scram-sha-256"),
        ];
        let found = hba_findings(Some(&rules), "app");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].what.contains("line 3") && found[0].what.contains("over TCP with GSSAPI encryption"),
            "{found:?}"
        );
    }

    #[test]
    fn ident_over_tcp_is_a_finding() {
        let rules = [
            rule(1, "local", "all", "+valetkey_agents", "reject"),
            rule(2, "host", "all", "+valetkey_agents", "reject"),
            rule(3, "host", "app", "all", "ident"),
            rule(4, "local", "all", "all", "ident"),
        ];
        let found = hba_findings(Some(&rules), "app");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].what.contains("line 3") && found[0].what.contains("ident server"));
    }

    #[test]
    fn a_reject_for_tls_only_or_a_line_naming_another_database_leaves_a_way_in() {
        let tls_only = [
            rule(1, "local", "all", "+valetkey_agents", "reject"),
            rule(2, "hostssl", "all", "+valetkey_agents", "reject"),
            rule(3, "host", "all", "all", "scram-sha-256"),
        ];
        let found = hba_findings(Some(&tls_only), "app");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].what.contains("line 3") && found[0].what.contains("without TLS"));

        let named_first = [
            rule(1, "host", "secretdb", "all", "scram-sha-256"),
            rule(2, "local", "all", "+valetkey_agents", "reject"),
            rule(3, "host", "all", "+valetkey_agents", "reject"),
        ];
        let found = hba_findings(Some(&named_first), "app");
        assert_eq!(found.len(), 1, "one finding a line: {found:?}");
        assert!(
            found[0].what.contains("line 1")
                && found[0]
                    .what
                    .contains("`secretdb` over TCP without TLS and TCP with TLS"),
            "{found:?}"
        );
    }

    #[test]
    fn lines_with_errors_are_a_finding_and_judge_nothing() {
        let mut broken = rule(2, "host", "all", "all", "scram-sha-256");
        broken.error = true;
        let rules = [
            rule(1, "local", "all", "+valetkey_agents", "reject"),
            broken,
            rule(3, "host", "all", "+valetkey_agents", "reject"),
        ];
        let found = hba_findings(Some(&rules), "app");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].what.contains("errors on line(s) 2"));
    }

    #[test]
    fn a_line_that_trusts_is_a_finding_and_unreadable_rules_are_named() {
        let this_machine = [
            rule(1, "local", "all", "postgres", "trust"),
            rule(2, "host", "all", "all", "trust"),
        ];
        let found = hba_findings(Some(&this_machine), "app");
        let trusts: Vec<_> = found.iter().filter(|f| f.what.contains("trusts")).collect();
        assert_eq!(trusts.len(), 2, "{found:?}");
        assert!(trusts[1].what.contains("line 2 trusts all on host"), "{found:?}");
        let unknown = hba_findings(None, "app");
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].what.contains("unknown"));
    }
}
