//! PostgreSQL dynamic roles, as SQL: the statements that create a role for
//! one agent's lease with exactly its scopes' privileges, the ones that end
//! it, the password verifier, and the URL the agent gets. Pure: names and
//! values are quoted here, nothing is executed.
//!
//! What a role can never get, whatever the scopes: DDL (no CREATE on any
//! schema, no ownership), TRUNCATE, role changes (NOCREATEROLE, no grant
//! options), superuser, replication, RLS bypass. DELETE is the `delete`
//! scope, destructive, so it is stripped from every agent credential.

/// Every role the broker creates starts with this; it never touches others.
pub const ROLE_PREFIX: &str = "vk_";
/// Taken before any grant or revocation: grants on the same database,
/// schema or table from two transactions at once fail with "tuple
/// concurrently updated", so they are serialised on the server, across
/// every broker that shares it. `CREATE ROLE` comes before it: it conflicts
/// with nothing, and it is the slow part (the server runs the verifier's
/// PBKDF2 rounds), so creations overlap and only the grants queue.
const LOCK: &str = "SELECT pg_advisory_xact_lock(7623451890123)";
/// PostgreSQL truncates identifiers longer than this.
pub const MAX_IDENTIFIER: usize = 63;
/// PBKDF2 rounds of the SCRAM verifier unless ops say otherwise:
/// PostgreSQL's own default, which every client accepts. The password is
/// 256 random bits, so the count guards nothing a guess could reach; it only
/// costs time, on the broker, on the server at `CREATE ROLE`, and on the
/// client at each login.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// `"name"`, with embedded quotes doubled. NUL cannot be quoted and is
/// refused by the caller's validation before it gets here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `E'text'`, with quotes and backslashes escaped: the same string whatever
/// `standard_conforming_strings` says.
pub fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// The role for `agent`'s lease: the prefix, the agent's name reduced to
/// `[a-z0-9_]`, and the lease id's random tail, within 63 bytes.
pub fn role_name(agent: &str, lease_id: &str) -> String {
    let agent: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let hex: String = lease_id.chars().filter(char::is_ascii_hexdigit).collect();
    let tail = &hex[hex.len().saturating_sub(16)..];
    let mut name = format!("{ROLE_PREFIX}{agent}_{tail}");
    name.truncate(MAX_IDENTIFIER);
    name
}

/// The comment every role the broker creates carries, naming its lease. A
/// role is only ever ended when its comment is exactly this: a role of the
/// same name made by someone else is left alone.
pub fn role_comment(agent: &str, env: &str, lease_id: &str) -> String {
    format!("valetkey lease {lease_id} (agent {agent}, environment {env})")
}

/// The SCRAM-SHA-256 verifier of `password` (RFC 5802, 7677), in the form
/// `CREATE ROLE … PASSWORD` takes pre-hashed: the password itself never
/// reaches the server, so it is in none of its logs or catalogs.
pub fn scram_verifier(password: &str, salt: &[u8; 16], iterations: u32) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use ring::{digest, hmac, pbkdf2};
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password.as_bytes(),
        salted.as_mut(),
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, salted.as_ref());
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${rounds}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    )
}

/// What an agent needs to log in as its role, as `DATABASE_URL` and the
/// `PG*` variables carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
}

/// The password is the agent's to hold, nobody else's: wiped when dropped.
impl Drop for Login {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.url.zeroize();
        self.password.zeroize();
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The login for `role` at `base`: the server's URL with no user, password
/// or path (its query, `sslmode` say, is kept).
pub fn login(base: &url::Url, database: &str, role: &str, password: &str) -> Login {
    let mut url = base.clone();
    // A `postgres://` URL always has a host part, so these cannot fail.
    let _ = url.set_username(role);
    let _ = url.set_password(Some(password));
    url.path_segments_mut()
        .map(|mut p| {
            p.clear().push(database);
        })
        .ok();
    Login {
        url: url.to_string(),
        host: base.host_str().unwrap_or("localhost").to_owned(),
        port: base.port().unwrap_or(5432),
        database: database.to_owned(),
        user: role.to_owned(),
        password: password.to_owned(),
    }
}

/// What a role may do in one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePlan {
    pub role: String,
    /// What `PASSWORD` is given: a `scram_verifier`.
    pub password: String,
    /// `role_comment`: how the broker knows the role is its own.
    pub comment: String,
    /// RFC 3339: PostgreSQL refuses the login from then on, broker or not.
    pub valid_until: String,
    pub database: String,
    pub schemas: Vec<String>,
    /// The role whose future tables the grants extend to (the application's
    /// owner); `None` for tables the admin connection's role creates.
    pub table_owner: Option<String>,
    pub read: bool,
    pub write: bool,
    pub update: bool,
    /// `update:guarded`: UPDATE on each table that carries the guard
    /// trigger, which refuses a statement touching more rows than this.
    pub guarded_update: Option<u32>,
    pub delete: bool,
    pub connection_limit: u32,
    pub limits: SessionLimits,
}

/// How long an agent's session may take over each thing, in milliseconds.
/// They are set on the role (`ALTER ROLE … SET`), which the role can `SET`
/// back to 0 in its own session; so the broker also ends the sessions that
/// outlast them (`OVERDUE_SESSIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub statement_ms: u64,
    pub lock_ms: u64,
    pub idle_in_transaction_ms: u64,
    pub idle_session_ms: u64,
}

impl SessionLimits {
    /// The role settings, by PostgreSQL's names.
    fn settings(&self) -> [(&'static str, u64); 4] {
        [
            ("statement_timeout", self.statement_ms),
            ("lock_timeout", self.lock_ms),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction_ms),
            ("idle_session_timeout", self.idle_session_ms),
        ]
    }

    /// `OVERDUE_SESSIONS`' parameters: each limit with `grace` added, so
    /// that the server's own timeout, which ends only the statement or the
    /// transaction, acts first where the role left it on.
    pub fn overdue_binds(&self, grace_ms: u64) -> [i64; 4] {
        [
            self.statement_ms,
            self.lock_ms,
            self.idle_in_transaction_ms,
            self.idle_session_ms,
        ]
        .map(|ms| i64::try_from(ms.saturating_add(grace_ms)).unwrap_or(i64::MAX))
    }
}

/// Ends the sessions of the broker's roles (named `vk_…` and commented as
/// its own) that outlast their limits (`$1` statement, `$2` lock wait, `$3`
/// idle in a transaction, `$4` idle, in milliseconds), whatever the role set
/// its own timeouts to; returns how many it ended. A lock wait is counted
/// from the statement's start, which can only make it end sooner.
pub const OVERDUE_SESSIONS: &str = r"SELECT count(pg_terminate_backend(a.pid))::bigint
FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
WHERE a.usename LIKE 'vk\_%'
  AND shobj_description(r.oid, 'pg_authid') LIKE 'valetkey lease %'
  AND a.pid <> pg_backend_pid()
  AND ((a.state = 'active' AND now() - a.query_start > $1 * interval '1 millisecond')
    OR (a.state = 'active' AND a.wait_event_type = 'Lock' AND now() - a.query_start > $2 * interval '1 millisecond')
    OR (a.state LIKE 'idle in transaction%' AND now() - a.state_change > $3 * interval '1 millisecond')
    OR (a.state = 'idle' AND now() - a.state_change > $4 * interval '1 millisecond'))";

/// Privileges on tables, and on sequences.
type Privileges = (Vec<&'static str>, Vec<&'static str>);

impl RolePlan {
    /// The statements that create this one role, for one transaction.
    pub fn create(&self) -> Vec<String> {
        create_roles(std::slice::from_ref(self))
    }

    /// What the role gets on tables and on sequences.
    fn privileges(&self) -> Privileges {
        let mut tables = Vec::new();
        let mut sequences = Vec::new();
        if self.read {
            tables.push("SELECT");
            sequences.push("SELECT");
        }
        // A sequence's USAGE is what an insert's default needs (nextval);
        // its UPDATE is setval, which can exhaust it.
        if self.write {
            tables.push("INSERT");
            sequences.push("USAGE");
            if !self.read {
                sequences.push("SELECT");
            }
        }
        // One UPDATE can rewrite every row (`WHERE true`): a scope of its
        // own, which the pack makes destructive.
        if self.update {
            tables.push("UPDATE");
        }
        if self.delete {
            tables.push("DELETE");
        }
        (tables, sequences)
    }

    /// Roles whose grants are the same statement but for the grantee.
    fn grant_key(&self) -> (&str, &[String], Option<&str>, Privileges, Option<u32>) {
        (
            &self.database,
            &self.schemas,
            self.table_owner.as_deref(),
            self.privileges(),
            self.guarded_update.filter(|_| !self.update),
        )
    }
}

/// The statements that create every role of `plans` in one transaction:
/// the roles first (they conflict with nothing), then, behind `LOCK`, the
/// grants, one statement for all the roles that get the same privileges on
/// the same objects: `GRANT … ON ALL TABLES IN SCHEMA` reads the whole of
/// `pg_class` each time, so a batch pays for it once.
pub fn create_roles(plans: &[RolePlan]) -> Vec<String> {
    let mut sql = Vec::new();
    if !plans.is_empty() {
        sql.push(super::postgres_findings::ENSURE_GROUP.to_owned());
    }
    for plan in plans {
        let role = quote_ident(&plan.role);
        sql.push(format!(
            "CREATE ROLE {role} WITH LOGIN PASSWORD {} VALID UNTIL {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}",
            quote_literal(&plan.password),
            quote_literal(&plan.valid_until),
            plan.connection_limit
        ));
        sql.push(format!("COMMENT ON ROLE {role} IS {}", quote_literal(&plan.comment)));
        // One `+valetkey_agents` line in pg_hba.conf confines them all. From
        // PostgreSQL 16 the membership can deny `SET ROLE` to the group.
        let group = quote_ident(super::postgres_findings::AGENTS_GROUP);
        sql.push(format!(
            "DO $$ BEGIN IF current_setting('server_version_num')::int >= 160000 THEN EXECUTE {}; \
             ELSE EXECUTE {}; END IF; END $$",
            quote_literal(&format!("GRANT {group} TO {role} WITH INHERIT FALSE, SET FALSE")),
            quote_literal(&format!("GRANT {group} TO {role}"))
        ));
        for (setting, ms) in plan.limits.settings() {
            sql.push(format!("ALTER ROLE {role} SET {setting} = {ms}"));
        }
    }
    if plans.is_empty() {
        return sql;
    }
    sql.push(LOCK.to_owned());
    let mut groups: Vec<(&RolePlan, Vec<String>)> = Vec::new();
    for plan in plans {
        match groups
            .iter_mut()
            .find(|(first, _)| first.grant_key() == plan.grant_key())
        {
            Some((_, roles)) => roles.push(quote_ident(&plan.role)),
            None => groups.push((plan, vec![quote_ident(&plan.role)])),
        }
    }
    for (plan, roles) in groups {
        let roles = roles.join(", ");
        sql.push(format!(
            "GRANT CONNECT ON DATABASE {} TO {roles}",
            quote_ident(&plan.database)
        ));
        let (tables, sequences) = plan.privileges();
        let owner = match &plan.table_owner {
            Some(owner) => format!(" FOR ROLE {}", quote_ident(owner)),
            None => String::new(),
        };
        if let Some(limit) = plan.guarded_update.filter(|_| !plan.update) {
            sql.extend(guard_updates(&plan.schemas, limit, &roles));
        }
        for schema in &plan.schemas {
            let schema = quote_ident(schema);
            sql.push(format!("GRANT USAGE ON SCHEMA {schema} TO {roles}"));
            for (privileges, objects) in [(&tables, "TABLES"), (&sequences, "SEQUENCES")] {
                if privileges.is_empty() {
                    continue;
                }
                let privileges = privileges.join(", ");
                sql.push(format!(
                    "GRANT {privileges} ON ALL {objects} IN SCHEMA {schema} TO {roles}"
                ));
                sql.push(format!(
                    "ALTER DEFAULT PRIVILEGES{owner} IN SCHEMA {schema} GRANT {privileges} ON {objects} TO {roles}"
                ));
            }
        }
    }
    sql
}

/// The trigger behind `update:guarded`: after an UPDATE in a session an
/// agent's role logged in to (a direct member of the agents' group; a
/// superuser counts as a member of every role, so `pg_has_role` would not
/// do), it counts the statement's rows (a transition table) and raises,
/// rolling the statement back, past the bound. It runs as the
/// updater, and only the table's owner or a superuser can disable or drop
/// it (`ALTER TABLE … DISABLE TRIGGER`, `session_replication_role`); a
/// WHERE-clause check could not hold (`WHERE true`). Every name in it is
/// schema-qualified and `pg_temp` comes last: a temporary view named like a
/// catalog would otherwise stand in for it.
pub const GUARD_FUNCTION: &str = "CREATE OR REPLACE FUNCTION valetkey.guard_update() RETURNS trigger \
     LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$ \
     DECLARE n bigint; \
     BEGIN \
       SELECT pg_catalog.count(*) INTO n FROM valetkey_updated; \
       IF n > TG_ARGV[0]::bigint AND EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m \
           JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles r ON r.oid = m.member \
           WHERE g.rolname = 'valetkey_agents' AND r.rolname = session_user) THEN \
         RAISE EXCEPTION 'valetkey: this UPDATE touches % rows of %; an agent may update at most % per statement', \
           n, TG_TABLE_NAME, TG_ARGV[0] \
           USING ERRCODE = 'insufficient_privilege', \
           HINT = 'narrow the WHERE clause, or ask a human to make this change'; \
       END IF; \
       RETURN NULL; \
     END $$";

/// The guard on every table of `schemas` (made or brought to `limit`), and
/// UPDATE to `roles` on exactly those tables: a table made later has no
/// guard, so it gets no UPDATE either until the next mint guards it.
fn guard_updates(schemas: &[String], limit: u32, roles: &str) -> Vec<String> {
    let schemas = schemas.iter().map(|s| quote_literal(s)).collect::<Vec<_>>().join(", ");
    let limit = quote_literal(&limit.to_string());
    let grant = quote_literal(&format!("GRANT UPDATE ON %s TO {roles}"));
    vec![
        "CREATE SCHEMA IF NOT EXISTS valetkey".to_owned(),
        "REVOKE ALL ON SCHEMA valetkey FROM PUBLIC".to_owned(),
        GUARD_FUNCTION.to_owned(),
        format!(
            "DO $$ DECLARE t regclass; BEGIN \
               FOR t IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = ANY (ARRAY[{schemas}]::text[]) AND c.relkind = 'r' LOOP \
                 IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t AND tgname = 'valetkey_guard_update' \
                     AND tgargs = convert_to({limit}, 'UTF8') || '\\x00'::bytea) THEN \
                   EXECUTE format('CREATE OR REPLACE TRIGGER valetkey_guard_update AFTER UPDATE ON %s \
                     REFERENCING NEW TABLE AS valetkey_updated FOR EACH STATEMENT \
                     EXECUTE FUNCTION valetkey.guard_update(%L)', t, {limit}); \
                 END IF; \
                 EXECUTE format({grant}, t); \
               END LOOP; END $$"
        ),
    ]
}

/// Ending a role takes three steps, because `pg_terminate_backend` acts at
/// once while `NOLOGIN` only binds new logins once committed: first no new
/// logins (`disable_role`, after `owner_comment` says the role is ours, in
/// one transaction), then its sessions ended (`TERMINATE_SESSIONS`), then
/// its privileges (default ones included) revoked, anything it owns dropped,
/// and the role dropped (`remove_role`, one transaction), in the role's
/// database after `drop_owned` in every other one where it holds anything.
///
/// The role's comment, bound as `$1` (the role's name); no row when the role
/// does not exist. Run after `LOCK`.
pub const OWNER_COMMENT: &str = "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1";

/// Ends every session of the role named by `$1`, waiting up to 5 seconds for
/// each to go; returns how many there were.
pub const TERMINATE_SESSIONS: &str =
    "SELECT count(pg_terminate_backend(pid, 5000))::bigint FROM pg_stat_activity WHERE usename = $1";

/// The other databases on the server where the role named by `$1` owns
/// objects or holds privileges: CONNECT comes from PUBLIC, so a role can
/// reach databases it was never given, and what it made there would keep
/// it from being dropped.
pub const OTHER_DATABASES: &str = "SELECT DISTINCT d.datname::text FROM pg_shdepend s \
     JOIN pg_database d ON d.oid = s.dbid \
     WHERE s.refclassid = 'pg_authid'::regclass \
     AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1) \
     AND d.datname <> current_database() AND d.datallowconn";

/// What ends a role's hold on another database: everything it made there
/// dropped, its privileges there revoked.
pub fn drop_owned(role: &str) -> String {
    format!("DROP OWNED BY {}", quote_ident(role))
}

/// The lock every role change takes first, for one transaction.
pub fn lock() -> &'static str {
    LOCK
}

/// No new logins for `role`.
/// Moves a role's `VALID UNTIL` (RFC 3339): a session's role lives as
/// long as its session's heartbeat.
pub fn extend_role(role: &str, valid_until: &str) -> String {
    format!(
        "ALTER ROLE {} VALID UNTIL {}",
        quote_ident(role),
        quote_literal(valid_until)
    )
}

pub fn disable_role(role: &str) -> String {
    format!("ALTER ROLE {} NOLOGIN", quote_ident(role))
}

/// The statements that remove a role whose sessions have ended, for one
/// transaction.
pub fn remove_role(role: &str) -> Vec<String> {
    let ident = quote_ident(role);
    vec![
        LOCK.to_owned(),
        // Dropped, not handed to the admin: an object an agent made (a
        // SECURITY DEFINER function, a view) would act with the admin's
        // privileges once the admin owned it.
        format!("DROP OWNED BY {ident}"),
        format!("DROP ROLE {ident}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_cannot_be_broken_out_of() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_ident("x\"; DROP TABLE t; --"), r#""x""; DROP TABLE t; --""#);
        assert_eq!(quote_literal("it's"), "E'it''s'");
        assert_eq!(quote_literal(r"a\'; DROP ROLE x; --"), r"E'a\\''; DROP ROLE x; --'");
    }

    #[test]
    fn role_names_are_prefixed_plain_and_short() {
        let name = role_name("claude", "01a20f66-26ef-70f3-be47-3aab6b76f636");
        assert_eq!(name, "vk_claude_be473aab6b76f636");
        let odd = role_name("Ag\"ent; DROP-ROLE", "01a20f66-26ef-70f3-be47-3aab6b76f636");
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{odd}"
        );
        assert!(odd.starts_with(ROLE_PREFIX));
        let long = role_name(&"x".repeat(200), "01a20f66-26ef-70f3-be47-3aab6b76f636");
        assert!(long.len() <= 63);
    }

    fn plan() -> RolePlan {
        RolePlan {
            role: "vk_claude_1".into(),
            password: "pw".into(),
            comment: role_comment("claude", "staging", "lease-1"),
            valid_until: "2026-11-24T23:00:00Z".into(),
            database: "app".into(),
            schemas: vec!["public".into()],
            table_owner: Some("app_owner".into()),
            read: true,
            write: true,
            update: false,
            guarded_update: None,
            delete: false,
            connection_limit: 5,
            limits: SessionLimits {
                statement_ms: 60_000,
                lock_ms: 5_000,
                idle_in_transaction_ms: 60_000,
                idle_session_ms: 600_000,
            },
        }
    }

    #[test]
    fn a_role_gets_exactly_its_scopes_privileges() {
        let sql = plan().create().join(";\n");
        assert!(sql.contains("NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"));
        assert!(sql.contains("VALID UNTIL E'2026-11-24T23:00:00Z'"));
        assert!(sql.contains(r#"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "public" TO "vk_claude_1""#));
        assert!(sql.contains(
            r#"ALTER DEFAULT PRIVILEGES FOR ROLE "app_owner" IN SCHEMA "public" GRANT SELECT, INSERT ON TABLES"#
        ));
        assert!(sql.contains(r#"GRANT SELECT, USAGE ON ALL SEQUENCES IN SCHEMA "public" TO "vk_claude_1""#));
        for never in [
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "CREATE ON",
            "WITH GRANT OPTION",
            "ALL PRIVILEGES",
        ] {
            assert!(!sql.contains(never), "{never} in {sql}");
        }
        for setting in [
            "statement_timeout = 60000",
            "lock_timeout = 5000",
            "idle_in_transaction_session_timeout = 60000",
            "idle_session_timeout = 600000",
        ] {
            assert!(
                sql.contains(&format!(r#"ALTER ROLE "vk_claude_1" SET {setting}"#)),
                "{setting} in {sql}"
            );
        }
        assert_eq!(plan().limits.overdue_binds(1000), [61_000, 6_000, 61_000, 601_000]);
        let updating = RolePlan { update: true, ..plan() }.create().join(";\n");
        assert!(
            updating.contains(r#"GRANT SELECT, INSERT, UPDATE ON ALL TABLES"#),
            "{updating}"
        );
        assert!(!updating.contains("UPDATE ON ALL SEQUENCES") && !updating.contains("USAGE, UPDATE"));
        let read_only = RolePlan { write: false, ..plan() }.create().join(";\n");
        assert!(!read_only.contains("INSERT") && !read_only.contains("UPDATE"));
    }

    #[test]
    fn the_verifier_is_scrams() {
        // Computed independently (Python's hashlib and hmac).
        let salt: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            scram_verifier("pencil", &salt, 4096),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y=:dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE="
        );
    }

    #[test]
    fn a_login_is_the_servers_url_with_the_roles_name_and_password() {
        let base = url::Url::parse("postgres://db.internal:6432?sslmode=require").unwrap();
        let login = login(&base, "app data", "vk_claude_1", "p-w_1");
        assert_eq!(
            login.url,
            "postgres://vk_claude_1:p-w_1@db.internal:6432/app%20data?sslmode=require"
        );
        assert_eq!((login.host.as_str(), login.port), ("db.internal", 6432));
        assert!(!format!("{login:?}").contains("p-w_1"));
    }

    #[test]
    fn the_comment_names_the_lease_quoted() {
        let plan = RolePlan {
            comment: role_comment("a'b", "st\\ag'e", "l1"),
            ..plan()
        };
        let sql = plan.create().join(";\n");
        let want = r#"COMMENT ON ROLE "vk_claude_1" IS E'valetkey lease l1 (agent a''b, environment st\\ag''e)'"#;
        assert!(sql.contains(want), "{sql}");
    }

    #[test]
    fn a_batch_creates_every_role_and_grants_once_per_privilege_set() {
        let reader = RolePlan {
            role: "vk_r".into(),
            write: false,
            ..plan()
        };
        let writer2 = RolePlan {
            role: "vk_w2".into(),
            ..plan()
        };
        let sql = create_roles(&[plan(), reader, writer2]);
        let lock = sql.iter().position(|s| s == LOCK).unwrap();
        assert_eq!(
            sql[..lock].iter().filter(|s| s.starts_with("CREATE ROLE")).count(),
            3,
            "every role is created before the lock"
        );
        assert!(sql.contains(
            &r#"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "public" TO "vk_claude_1", "vk_w2""#.to_owned()
        ));
        assert!(sql.contains(&r#"GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "vk_r""#.to_owned()));
        assert_eq!(sql.iter().filter(|s| s.contains("ON ALL TABLES")).count(), 2);
        assert!(create_roles(&[]).is_empty());
    }
}
