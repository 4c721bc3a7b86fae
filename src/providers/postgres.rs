//! PostgreSQL dynamic roles, as SQL: the statements that create a role for
//! one agent's lease with exactly its scopes' privileges, and the ones that
//! end it. Pure: names and values are quoted here, nothing is executed.
//!
//! What a role can never get, whatever the scopes: DDL (no CREATE on any
//! schema, no ownership), TRUNCATE, role changes (NOCREATEROLE, no grant
//! options), superuser, replication, RLS bypass. DELETE is the `delete`
//! scope, destructive, so it is stripped from every agent credential.

/// Every role the broker creates starts with this; it never touches others.
pub const ROLE_PREFIX: &str = "vk_";
/// Taken first in every transaction that creates or ends a role: grants on
/// the same database or schema from two transactions at once fail with
/// "tuple concurrently updated", so role changes are serialised on the
/// server, across every broker that shares it.
const LOCK: &str = "SELECT pg_advisory_xact_lock(7623451890123)";
/// PostgreSQL truncates identifiers longer than this.
const MAX_IDENTIFIER: usize = 63;

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

/// What a role may do in one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePlan {
    pub role: String,
    pub password: String,
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
    /// The statements that create the role, in order, for one transaction.
    pub fn create(&self) -> Vec<String> {
        let role = quote_ident(&self.role);
        let mut sql = vec![
            LOCK.to_owned(),
            format!(
                "CREATE ROLE {role} WITH LOGIN PASSWORD {} VALID UNTIL {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}",
                quote_literal(&self.password),
                quote_literal(&self.valid_until),
                self.connection_limit
            ),
            format!("GRANT CONNECT ON DATABASE {} TO {role}", quote_ident(&self.database)),
        ];
        let mut table_privileges = Vec::new();
        let mut sequence_privileges = Vec::new();
        if self.read {
            table_privileges.push("SELECT");
            sequence_privileges.push("SELECT");
        }
        if self.write {
            table_privileges.extend(["INSERT", "UPDATE"]);
            sequence_privileges.extend(["USAGE", "UPDATE"]);
            if !self.read {
                sequence_privileges.push("SELECT");
            }
        }
        if self.delete {
            table_privileges.push("DELETE");
        }
        let owner = match &self.table_owner {
            Some(owner) => format!(" FOR ROLE {}", quote_ident(owner)),
            None => String::new(),
        };
        for schema in &self.schemas {
            let schema = quote_ident(schema);
            sql.push(format!("GRANT USAGE ON SCHEMA {schema} TO {role}"));
            if !table_privileges.is_empty() {
                let privileges = table_privileges.join(", ");
                sql.push(format!("GRANT {privileges} ON ALL TABLES IN SCHEMA {schema} TO {role}"));
                sql.push(format!(
                    "ALTER DEFAULT PRIVILEGES{owner} IN SCHEMA {schema} GRANT {privileges} ON TABLES TO {role}"
                ));
            }
            if !sequence_privileges.is_empty() {
                let privileges = sequence_privileges.join(", ");
                sql.push(format!(
                    "GRANT {privileges} ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"
                ));
                sql.push(format!(
                    "ALTER DEFAULT PRIVILEGES{owner} IN SCHEMA {schema} GRANT {privileges} ON SEQUENCES TO {role}"
                ));
            }
        }
        sql
    }
}

/// The statements that end a role: no new logins, open sessions ended, its
/// privileges (default ones included) revoked, anything it owns handed to
/// the admin, then the role dropped. Run in the role's database, in one
/// transaction.
pub fn drop_role(role: &str) -> Vec<String> {
    let ident = quote_ident(role);
    vec![
        LOCK.to_owned(),
        format!("ALTER ROLE {ident} NOLOGIN"),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}",
            quote_literal(role)
        ),
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
}
