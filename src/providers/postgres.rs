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
    pub delete: bool,
    pub connection_limit: u32,
}

impl RolePlan {
    /// The statements that create this one role, for one transaction.
    pub fn create(&self) -> Vec<String> {
        create_roles(std::slice::from_ref(self))
    }

    /// What the role gets on tables and on sequences.
    fn privileges(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let mut tables = Vec::new();
        let mut sequences = Vec::new();
        if self.read {
            tables.push("SELECT");
            sequences.push("SELECT");
        }
        if self.write {
            tables.extend(["INSERT", "UPDATE"]);
            sequences.extend(["USAGE", "UPDATE"]);
            if !self.read {
                sequences.push("SELECT");
            }
        }
        if self.delete {
            tables.push("DELETE");
        }
        (tables, sequences)
    }

    /// Roles whose grants are the same statement but for the grantee.
    fn grant_key(&self) -> (&str, &[String], Option<&str>, bool, bool, bool) {
        (
            &self.database,
            &self.schemas,
            self.table_owner.as_deref(),
            self.read,
            self.write,
            self.delete,
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
    for plan in plans {
        let role = quote_ident(&plan.role);
        sql.push(format!(
            "CREATE ROLE {role} WITH LOGIN PASSWORD {} VALID UNTIL {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}",
            quote_literal(&plan.password),
            quote_literal(&plan.valid_until),
            plan.connection_limit
        ));
        sql.push(format!("COMMENT ON ROLE {role} IS {}", quote_literal(&plan.comment)));
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

/// Ending a role takes three steps, because `pg_terminate_backend` acts at
/// once while `NOLOGIN` only binds new logins once committed: first no new
/// logins (`disable_role`, after `owner_comment` says the role is ours, in
/// one transaction), then its sessions ended (`TERMINATE_SESSIONS`), then
/// its privileges (default ones included) revoked, anything it owns handed
/// to the admin, and the role dropped (`remove_role`, one transaction). All
/// in the role's database.
///
/// The role's comment, bound as `$1` (the role's name); no row when the role
/// does not exist. Run after `LOCK`.
pub const OWNER_COMMENT: &str = "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1";

/// Ends every session of the role named by `$1`, waiting up to 5 seconds for
/// each to go; returns how many there were.
pub const TERMINATE_SESSIONS: &str =
    "SELECT count(pg_terminate_backend(pid, 5000))::bigint FROM pg_stat_activity WHERE usename = $1";

/// The lock every role change takes first, for one transaction.
pub fn lock() -> &'static str {
    LOCK
}

/// No new logins for `role`.
pub fn disable_role(role: &str) -> String {
    format!("ALTER ROLE {} NOLOGIN", quote_ident(role))
}

/// The statements that remove a role whose sessions have ended, for one
/// transaction.
pub fn remove_role(role: &str) -> Vec<String> {
    let ident = quote_ident(role);
    vec![
        LOCK.to_owned(),
        format!("REASSIGN OWNED BY {ident} TO CURRENT_USER"),
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
            delete: false,
            connection_limit: 5,
        }
    }

    #[test]
    fn a_role_gets_exactly_its_scopes_privileges() {
        let sql = plan().create().join(";\n");
        assert!(sql.contains("NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"));
        assert!(sql.contains("VALID UNTIL E'2026-11-24T23:00:00Z'"));
        assert!(sql.contains(r#"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "public" TO "vk_claude_1""#));
        assert!(sql.contains(
            r#"ALTER DEFAULT PRIVILEGES FOR ROLE "app_owner" IN SCHEMA "public" GRANT SELECT, INSERT, UPDATE ON TABLES"#
        ));
        for never in ["DELETE", "TRUNCATE", "CREATE ON", "WITH GRANT OPTION", "ALL PRIVILEGES"] {
            assert!(!sql.contains(never), "{never} in {sql}");
        }
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
            &r#"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "public" TO "vk_claude_1", "vk_w2""#.to_owned()
        ));
        assert!(sql.contains(&r#"GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "vk_r""#.to_owned()));
        assert_eq!(sql.iter().filter(|s| s.contains("ON ALL TABLES")).count(), 2);
        assert!(create_roles(&[]).is_empty());
    }
}
