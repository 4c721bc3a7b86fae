//! Dynamic PostgreSQL roles against a real server: an agent's DATABASE_URL
//! reads and writes rows per its scopes and can destroy nothing; revoking
//! the credential (an API call, `valetkey run` exiting, `valetkey revoke`)
//! ends its open sessions and its role; odd names cannot break out of the
//! statements; VALID UNTIL binds with the broker stopped, and a restarted
//! broker ends the roles of leases that ended while it was down.
//!
//! The server's URL comes from VALETKEY_TEST_POSTGRES_URL (`scripts/test`
//! sets it); without it these tests fail, saying so.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, Row};
use valetkey::config::DatabaseConfig;
use valetkey::databases::{Databases, Ended, LeaseFacts};
use valetkey::providers::postgres::{quote_ident, role_comment};
use valetkey::secrets::SecretString;

use common::{BIN, TestBroker, audit_lines, eventually};

/// The server's URL; `None` only when the test may be skipped without one
/// (`common::outside`).
fn server_url() -> Option<String> {
    let url = std::env::var("VALETKEY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let missing = url
        .is_none()
        .then(|| "VALETKEY_TEST_POSTGRES_URL is not set; scripts/test sets it to this machine's PostgreSQL".to_owned());
    common::outside::present("postgres", missing).then_some(url).flatten()
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{:x}", n & 0xffff_ffff_ffff)
}

async fn admin(url: &str) -> PgPool {
    PgPoolOptions::new().max_connections(2).connect(url).await.unwrap()
}

async fn run_sql(pool: &PgPool, sql: String) {
    pool.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
}

/// A schema with a table of two rows (and its sequence), owned by the admin.
async fn schema_with_rows(pool: &PgPool, schema: &str) {
    let s = quote_ident(schema);
    run_sql(pool, format!("CREATE SCHEMA {s}")).await;
    run_sql(
        pool,
        format!("CREATE TABLE {s}.items (id serial PRIMARY KEY, name text NOT NULL)"),
    )
    .await;
    run_sql(
        pool,
        format!("INSERT INTO {s}.items (name) VALUES ('first'), ('second')"),
    )
    .await;
}

async fn drop_schema(pool: &PgPool, schema: &str) {
    run_sql(pool, format!("DROP SCHEMA {} CASCADE", quote_ident(schema))).await;
}

async fn count(conn: impl sqlx::PgExecutor<'_>, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn role_exists(pool: &PgPool, role: &str) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_one(pool)
        .await
        .unwrap()
        == 1
}

/// A broker with one postgres provider, `appdb`, whose staging roles reach
/// `schema`; `claude` may read and write, `reader` only read.
fn config(schema: &str) -> String {
    format!(
        r#"
[credentials]
default_ttl = "15m"
max_ttl = "1h"

[environments.staging]
[environments.production]
protected = true

[introspection]
enabled = false

[providers.appdb]
kind = "postgres"
agent_env = {{ DATABASE_URL = "{{database_url}}", PGUSER = "{{pg_user}}" }}
tokens = {{ staging = {{ env = "APPDB_ADMIN_URL" }} }}

[providers.appdb.databases.staging]
schemas = [{schema}]
connection_limit = 3
max_update_rows = 2

[agents.claude]
grants = [{{ provider = "appdb", environments = ["staging"], scopes = ["read", "write"] }}]

[agents.reader]
grants = [{{ provider = "appdb", environments = ["staging"], scopes = ["read"] }}]

[agents.updater]
grants = [{{ provider = "appdb", environments = ["staging"], scopes = ["read", "update:guarded"] }}]
"#,
        schema = serde_json::to_string(schema).unwrap()
    )
}

async fn broker(admin_url: &str, schema: &str) -> TestBroker {
    let env = BTreeMap::from([("APPDB_ADMIN_URL".to_owned(), admin_url.to_owned())]);
    TestBroker::start_with(&config(schema), env).await
}

/// The usual setting: a fresh schema of two rows, and a broker whose
/// staging roles reach it, with `claude` registered (`key`).
struct Staging {
    pool: PgPool,
    schema: String,
    b: TestBroker,
    key: String,
}

async fn staging(url: &str) -> Staging {
    let pool = admin(url).await;
    let schema = unique("vk_test_");
    schema_with_rows(&pool, &schema).await;
    let b = broker(url, &schema).await;
    let key = b.add_agent("claude").await;
    Staging { pool, schema, b, key }
}

/// Stops the broker and drops the schema.
async fn finish(b: TestBroker, pool: &PgPool, schema: &str) {
    b.stop().await;
    drop_schema(pool, schema).await;
}

/// Mints for `agent`; returns the answer (env vars, session id, …).
async fn mint(b: &TestBroker, key: &str, agent: &str) -> Value {
    let (status, answer) = b.mint(key, json!({ "agent": agent, "env": "staging" })).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

fn var<'a>(answer: &'a Value, name: &str) -> &'a str {
    answer["env_vars"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {answer}"))
}

/// The statement fails with SQLSTATE 42501, insufficient_privilege: "permission
/// denied", "must be owner", "must have admin option".
async fn permission_denied(conn: &mut PgConnection, sql: String) {
    let err = conn.execute(sqlx::AssertSqlSafe(sql.clone())).await.unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
}

async fn end_session(b: &TestBroker, key: &str, answer: &Value) {
    let sid = answer["session_id"].as_str().unwrap();
    let (status, body) = b
        .send(b.http.delete(format!("{}/v1/sessions/{sid}", b.url)).bearer_auth(key))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// An agent that turns its own timeouts off and holds a lock, or runs a
/// statement for ever, has its session ended by the broker, and the
/// application's statement that waited goes through.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_past_their_limits_are_ended_whatever_the_role_set() {
    let Some(url) = server_url() else { return };
    let pool = admin(&url).await;
    let schema = unique("vk_test_");
    schema_with_rows(&pool, &schema).await;
    let limits = "connection_limit = 3\nstatement_timeout = \"2s\"\nlock_timeout = \"1s\"\n\
                  idle_in_transaction_timeout = \"2s\"\nidle_session_timeout = \"1h\"";
    let config = config(&schema).replace("connection_limit = 3", limits);
    let env = BTreeMap::from([("APPDB_ADMIN_URL".to_owned(), url.clone())]);
    let b = TestBroker::start_with(&config, env).await;
    let key = b.add_agent("claude").await;
    let answer = mint(&b, &key, "claude").await;
    let role = var(&answer, "PGUSER").to_owned();
    let s = quote_ident(&schema);

    // The limits are the role's own settings.
    let settings: Vec<String> = sqlx::query_scalar("SELECT unnest(rolconfig) FROM pg_roles WHERE rolname = $1")
        .bind(&role)
        .fetch_all(&pool)
        .await
        .unwrap();
    for expected in [
        "statement_timeout=2000",
        "lock_timeout=1000",
        "idle_in_transaction_session_timeout=2000",
        "idle_session_timeout=3600000",
    ] {
        assert!(settings.iter().any(|s| s == expected), "{expected} not in {settings:?}");
    }

    // The agent turns them off, and holds a row lock in an open transaction.
    let mut holder = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();
    let off = "SET statement_timeout = 0; SET lock_timeout = 0; \
               SET idle_in_transaction_session_timeout = 0; SET idle_session_timeout = 0";
    holder.execute(off).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {s}.items (name) VALUES ('held')"
        )))
        .await
        .unwrap();
    // Another of its sessions runs a statement for ever.
    let mut sleeper = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();
    sleeper.execute(off).await.unwrap();
    let started = tokio::time::Instant::now();
    let sleeping = tokio::spawn(async move { sleeper.execute("SELECT pg_sleep(120)").await });

    // The application's migration waits for the agent's lock, then goes through.
    let mut app = pool.begin().await.unwrap();
    app.execute("SET LOCAL lock_timeout = '20s'").await.unwrap();
    app.execute(sqlx::AssertSqlSafe(format!("LOCK TABLE {s}.items IN SHARE MODE")))
        .await
        .expect("the agent's lock outlived its limits");
    app.commit().await.unwrap();
    assert!(
        holder.execute("SELECT 1").await.is_err(),
        "the holder's session is still open"
    );

    let slept = tokio::time::timeout(Duration::from_secs(30), sleeping)
        .await
        .expect("the endless statement was not ended")
        .unwrap();
    assert!(slept.is_err(), "pg_sleep(120) finished: {slept:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    finish(b, &pool, &schema).await;
}

#[tokio::test]
async fn an_agents_database_url_reads_and_writes_rows_and_can_destroy_nothing() {
    let Some(url) = server_url() else { return };
    let Staging { pool, schema, b, key } = staging(&url).await;
    let answer = mint(&b, &key, "claude").await;
    let role = var(&answer, "PGUSER").to_owned();
    assert!(role.starts_with("vk_claude_"), "{role}");

    let mut conn = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();
    let me: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(me, role);
    let s = quote_ident(&schema);
    assert_eq!(count(&mut conn, format!("SELECT count(*) FROM {s}.items")).await, 2);
    conn.execute(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {s}.items (name) VALUES ('by the agent')"
    )))
    .await
    .unwrap();

    for forbidden in [
        // One UPDATE rewrites every row; it is a scope of its own.
        format!("UPDATE {s}.items SET name = 'renamed' WHERE name = 'first'"),
        format!("UPDATE {s}.items SET name = ''"),
        // setval would exhaust the sequence the insert above drew from.
        format!("SELECT setval('{s}.items_id_seq', 2147483647)"),
        format!("DELETE FROM {s}.items"),
        format!("TRUNCATE {s}.items"),
        format!("DROP TABLE {s}.items"),
        format!("ALTER TABLE {s}.items ADD COLUMN x int"),
        format!("CREATE TABLE {s}.mine (x int)"),
        "CREATE ROLE escalated".to_owned(),
        format!("DROP SCHEMA {s} CASCADE"),
        format!("GRANT pg_read_all_data TO {}", quote_ident(&role)),
        format!("ALTER ROLE {} CREATEROLE", quote_ident(&role)),
        format!("ALTER ROLE {} VALID UNTIL 'infinity'", quote_ident(&role)),
    ] {
        permission_denied(&mut conn, forbidden).await;
    }
    // A GRANT of a privilege the role lacks the grant option of is only a
    // warning in PostgreSQL: what matters is that nothing was granted.
    conn.execute(sqlx::AssertSqlSafe(format!("GRANT SELECT ON {s}.items TO PUBLIC")))
        .await
        .ok();
    let granted: bool = sqlx::query_scalar("SELECT has_table_privilege('public', $1, 'SELECT')")
        .bind(format!("{s}.items"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!granted, "the role granted a privilege to PUBLIC");

    // Tables made later are covered too.
    run_sql(&pool, format!("CREATE TABLE {s}.later (x int)")).await;
    conn.execute(sqlx::AssertSqlSafe(format!("INSERT INTO {s}.later VALUES (1)")))
        .await
        .unwrap();
    assert_eq!(
        count(&pool, format!("SELECT count(*) FROM {s}.items")).await,
        3,
        "the data is intact"
    );

    // What PostgreSQL itself holds the role to, broker or not.
    let row = sqlx::query(
        "SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin,
                rolconnlimit, extract(epoch FROM rolvaliduntil)::bigint AS until
         FROM pg_roles WHERE rolname = $1",
    )
    .bind(&role)
    .fetch_one(&pool)
    .await
    .unwrap();
    for attribute in [
        "rolsuper",
        "rolinherit",
        "rolcreaterole",
        "rolcreatedb",
        "rolreplication",
        "rolbypassrls",
    ] {
        assert!(!row.get::<bool, _>(attribute), "{attribute}");
    }
    assert!(row.get::<bool, _>("rolcanlogin"));
    assert_eq!(row.get::<i32, _>("rolconnlimit"), 3);
    let expires = common::claims(var(&answer, "VALETKEY_CREDENTIAL"))["exp"]
        .as_i64()
        .unwrap();
    assert_eq!(
        row.get::<i64, _>("until"),
        expires,
        "VALID UNTIL is the credential's expiry"
    );

    // A read-only grant gets a role that reads only.
    let reader_key = b.add_agent("reader").await;
    let reader = mint(&b, &reader_key, "reader").await;
    let mut ro = PgConnection::connect(var(&reader, "DATABASE_URL")).await.unwrap();
    assert_eq!(count(&mut ro, format!("SELECT count(*) FROM {s}.items")).await, 3);
    permission_denied(&mut ro, format!("INSERT INTO {s}.items (name) VALUES ('no')")).await;
    permission_denied(&mut ro, format!("UPDATE {s}.items SET name = 'no'")).await;

    // Creation is in the audit trail; the password is nowhere in it.
    let lines = audit_lines(b.broker.store()).await.join("\n");
    assert!(
        lines.contains("database_role_created") && lines.contains(&role),
        "{lines}"
    );
    let password = url::Url::parse(var(&answer, "DATABASE_URL"))
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 40);
    assert!(!lines.contains(&password));

    conn.close().await.unwrap();
    ro.close().await.unwrap();
    end_session(&b, &key, &answer).await;
    end_session(&b, &reader_key, &reader).await;
    assert!(!role_exists(&pool, &role).await);
    finish(b, &pool, &schema).await;
}

#[tokio::test]
async fn revoking_ends_open_sessions_and_logins_however_it_comes() {
    let Some(url) = server_url() else { return };
    let Staging { pool, schema, b, key } = staging(&url).await;

    // Through the API, as `valetkey run` does at exit.
    let answer = mint(&b, &key, "claude").await;
    let role = var(&answer, "PGUSER").to_owned();
    let mut open = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();
    open.execute("SELECT 1").await.unwrap();
    let status = tokio::process::Command::from(common::admin_cli(&b.url, &b.data_dir().join("admin.key")))
        .arg("status")
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(
        listed.contains("database roles:") && listed.contains("  staging:") && listed.contains(&role),
        "{listed}"
    );

    end_session(&b, &key, &answer).await;
    assert!(open.execute("SELECT 1").await.is_err(), "the open session survived");
    assert!(
        PgConnection::connect(var(&answer, "DATABASE_URL")).await.is_err(),
        "a new login worked"
    );
    assert!(!role_exists(&pool, &role).await);
    let dropped = dropped_event(&b, &role).await;
    assert_eq!(dropped["why"], "revoked");
    assert_eq!(dropped["outcome"], "dropped");
    assert_eq!(dropped["sessions_ended"], 1);
    let status = tokio::process::Command::from(common::admin_cli(&b.url, &b.data_dir().join("admin.key")))
        .arg("status")
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&status.stdout).contains(&role));

    // `valetkey run` exiting ends the role of its credential. Confined, the
    // agent reaches its database (the one TCP port besides the broker's)
    // and writes where it may, its working directory.
    let out_file = b.dir.path().join("work/pguser");
    std::fs::create_dir_all(b.dir.path().join("work")).unwrap();
    let run = tokio::process::Command::new(BIN)
        .args([
            "run", "--agent", "claude", "--env", "staging", "--url", &b.url, "--", "sh", "-c",
        ])
        .arg(format!(
            "psql \"$DATABASE_URL\" -Atc 'SELECT current_user' > {}",
            out_file.display()
        ))
        .current_dir(b.dir.path().join("work"))
        .env("VALETKEY_AGENT_KEY", &key)
        .output()
        .await
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run_role = std::fs::read_to_string(&out_file).unwrap().trim().to_owned();
    assert!(run_role.starts_with("vk_claude_"), "{run_role}");
    assert!(!role_exists(&pool, &run_role).await);
    assert_eq!(dropped_event(&b, &run_role).await["outcome"], "dropped");

    // `valetkey revoke`, as ops run it through the admin API.
    let answer = mint(&b, &key, "claude").await;
    let role = var(&answer, "PGUSER").to_owned();
    let mut open = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();
    let revoke = tokio::process::Command::from(common::admin_cli(&b.url, &b.data_dir().join("admin.key")))
        .args(["revoke", "--session", answer["session_id"].as_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    eventually("the broker ends the role of a lease revoked by the CLI", async || {
        !role_exists(&pool, &role).await
    })
    .await;
    assert!(open.execute("SELECT 1").await.is_err(), "the open session survived");

    finish(b, &pool, &schema).await;
}

/// `update:guarded`: the agent updates a few rows; an UPDATE past the
/// bound is rolled back by a trigger inside PostgreSQL, which the agent's
/// role cannot disable, drop or step around; the application's own updates
/// pass; a table made after the mint has no guard, and so no UPDATE.
#[tokio::test]
async fn a_guarded_update_is_held_to_its_bound_inside_postgresql() {
    let Some(url) = server_url() else { return };
    let Staging { pool, schema, b, .. } = staging(&url).await;
    let s = quote_ident(&schema);
    run_sql(&pool, format!("INSERT INTO {s}.items (name) VALUES ('c'), ('d')")).await;
    let key = b.add_agent("updater").await;
    let answer = mint(&b, &key, "updater").await;
    let mut agent = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();

    let updated = agent
        .execute(sqlx::AssertSqlSafe(format!(
            "UPDATE {s}.items SET name = 'x' WHERE id IN (1, 2)"
        )))
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 2);
    let err = agent
        .execute(sqlx::AssertSqlSafe(format!(
            "UPDATE {s}.items SET name = 'blank' WHERE true"
        )))
        .await
        .unwrap_err();
    let db = err.as_database_error().unwrap();
    assert_eq!(db.code().as_deref(), Some("42501"), "{err}");
    assert!(db.message().contains("touches 4 rows"), "{err}");
    assert_eq!(
        count(&pool, format!("SELECT count(*) FROM {s}.items WHERE name = 'blank'")).await,
        0,
        "the UPDATE past the bound was not rolled back"
    );

    // A temporary view named like the catalog the guard reads stands in for
    // nothing: the guard names its catalogs in full.
    agent
        .execute(
            "CREATE TEMP VIEW pg_auth_members AS SELECT 0::oid AS roleid, 0::oid AS member, 0::oid AS grantor, \
             false AS admin_option WHERE false",
        )
        .await
        .unwrap();
    agent
        .execute("CREATE TEMP VIEW pg_roles AS SELECT 'x'::name AS rolname, 0::oid AS oid WHERE false")
        .await
        .unwrap();
    permission_denied(&mut agent, format!("UPDATE {s}.items SET name = 'blank' WHERE true")).await;

    // The agent's role cannot switch the guard off.
    for off in [
        format!("ALTER TABLE {s}.items DISABLE TRIGGER valetkey_guard_update"),
        format!("ALTER TABLE {s}.items DISABLE TRIGGER ALL"),
        format!("DROP TRIGGER valetkey_guard_update ON {s}.items"),
        "SET session_replication_role = replica".to_owned(),
        "CREATE OR REPLACE FUNCTION valetkey.guard_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"
            .to_owned(),
    ] {
        permission_denied(&mut agent, off).await;
    }
    let still: i64 = count(
        &pool,
        format!("SELECT count(*) FROM pg_trigger WHERE tgrelid = '{schema}.items'::regclass AND tgenabled = 'O'"),
    )
    .await;
    assert_eq!(still, 1, "the guard is not in place");

    // The application is not an agent: its updates pass whatever their size.
    run_sql(&pool, format!("UPDATE {s}.items SET name = 'app'")).await;
    // A table made later has no guard yet, so the agent may not update it.
    run_sql(&pool, format!("CREATE TABLE {s}.later (id int)")).await;
    run_sql(&pool, format!("INSERT INTO {s}.later VALUES (1)")).await;
    permission_denied(&mut agent, format!("UPDATE {s}.later SET id = 2")).await;

    agent.close().await.unwrap();
    end_session(&b, &key, &answer).await;
    finish(b, &pool, &schema).await;
}

/// `url` with another database.
fn with_database(url: &str, database: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// CONNECT comes from PUBLIC, so an agent's role reaches databases it was
/// never given and, where PUBLIC may create (as before PostgreSQL 15),
/// makes objects there. Ending the role drops them in every database, so
/// the role itself can be dropped.
#[tokio::test]
async fn ending_a_role_drops_what_it_made_in_every_database() {
    let Some(url) = server_url() else { return };
    let Staging { pool, schema, b, key } = staging(&url).await;
    let other = unique("vk_other_");
    run_sql(&pool, format!("CREATE DATABASE {}", quote_ident(&other))).await;
    let other_admin = admin(&with_database(&url, &other)).await;
    run_sql(&other_admin, "GRANT CREATE ON SCHEMA public TO PUBLIC".into()).await;

    let answer = mint(&b, &key, "claude").await;
    let role = var(&answer, "PGUSER").to_owned();
    let mut agent = PgConnection::connect(&with_database(var(&answer, "DATABASE_URL"), &other))
        .await
        .unwrap();
    agent.execute("CREATE TABLE public.left_behind (x int)").await.unwrap();
    agent.close().await.unwrap();
    // In its own database too, where PUBLIC may create: a function that
    // would act with the admin's privileges if it were handed to the admin.
    let s = quote_ident(&schema);
    run_sql(&pool, format!("GRANT CREATE ON SCHEMA {s} TO PUBLIC")).await;
    let mut agent = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();
    agent
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE FUNCTION {s}.helper() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'"
        )))
        .await
        .unwrap();
    agent.close().await.unwrap();

    end_session(&b, &key, &answer).await;
    assert_eq!(dropped_event(&b, &role).await["outcome"], "dropped");
    assert!(!role_exists(&pool, &role).await);
    let left = count(
        &other_admin,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'left_behind'".into(),
    )
    .await;
    assert_eq!(left, 0, "what the role made in the other database is still there");
    let helper = count(
        &pool,
        format!("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'helper' AND n.nspname = '{schema}'"),
    )
    .await;
    assert_eq!(
        helper, 0,
        "what the role made in its own database was handed to the admin"
    );
    other_admin.close().await;
    run_sql(&pool, format!("DROP DATABASE {} WITH (FORCE)", quote_ident(&other))).await;
    finish(b, &pool, &schema).await;
}

/// What the server lets every role do past its grants (PUBLIC's CONNECT
/// to other databases, SECURITY DEFINER functions it may call, pg_hba.conf
/// lines that trust or do not confine the agents' group) is found at start,
/// recorded and shown by `valetkey status` with the statement that closes
/// each; run, the statement closes it. Every agent role is in the group
/// `pg_hba.conf` confines.
#[tokio::test(flavor = "multi_thread")]
async fn what_public_and_pg_hba_let_agents_do_is_found_with_its_fix() {
    let Some(url) = server_url() else { return };
    let pool = admin(&url).await;
    let schema = unique("vk_test_");
    schema_with_rows(&pool, &schema).await;
    let s = quote_ident(&schema);
    run_sql(
        &pool,
        format!("CREATE FUNCTION {s}.purge() RETURNS void LANGUAGE sql SECURITY DEFINER AS 'DELETE FROM {s}.items'"),
    )
    .await;
    let other = unique("vk_other_");
    run_sql(&pool, format!("CREATE DATABASE {}", quote_ident(&other))).await;
    let b = broker(&url, &schema).await;
    let key = b.add_agent("claude").await;

    let findings = || async {
        b.broker
            .readiness()
            .await
            .database_findings
            .into_iter()
            .map(|f| (f.what, f.fix))
            .collect::<Vec<_>>()
    };
    eventually("the servers were checked", async || !findings().await.is_empty()).await;
    let found = findings().await;
    let fix_of = |needle: &str| {
        found
            .iter()
            .find(|(what, _)| what.contains(needle))
            .map(|(_, fix)| fix.clone())
            .unwrap_or_else(|| panic!("no finding with `{needle}` in {found:#?}"))
    };
    assert_eq!(
        fix_of(&format!("connect to database `{other}`")),
        format!("REVOKE CONNECT ON DATABASE {} FROM PUBLIC;", quote_ident(&other))
    );
    let revoke_purge = fix_of(&format!("{schema}.purge()"));
    assert_eq!(
        revoke_purge,
        format!("REVOKE EXECUTE ON FUNCTION {schema}.purge() FROM PUBLIC;")
    );
    assert!(fix_of("trusts").contains("scram-sha-256"));
    assert!(fix_of("lets agents' roles log in to databases other than").contains("+valetkey_agents"));
    let events = b.broker.store().audit_events().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "database_finding" && e.detail.contains("purge()"))
    );
    let status = tokio::process::Command::from(common::admin_cli(&b.url, &b.data_dir().join("admin.key")))
        .arg("status")
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(3), "{printed}");
    assert!(printed.contains(&format!("fix: {revoke_purge}")), "{printed}");

    // The function deletes what the agent's role may not; the fix closes it.
    let answer = mint(&b, &key, "claude").await;
    let role = var(&answer, "PGUSER").to_owned();
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, 'valetkey_agents', 'MEMBER')")
        .bind(&role)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(member, "{role} is not in the agents' group");
    let mut agent = PgConnection::connect(var(&answer, "DATABASE_URL")).await.unwrap();
    permission_denied(&mut agent, format!("DELETE FROM {s}.items")).await;
    agent
        .execute(sqlx::AssertSqlSafe(format!("SELECT {s}.purge()")))
        .await
        .unwrap();
    assert_eq!(count(&pool, format!("SELECT count(*) FROM {s}.items")).await, 0);
    run_sql(&pool, revoke_purge).await;
    permission_denied(&mut agent, format!("SELECT {s}.purge()")).await;
    // What the agents' group holds beyond PUBLIC, every agent may use
    // (`SET ROLE`, before PostgreSQL 16), and what it owns outlives them.
    run_sql(&pool, format!("GRANT CREATE ON SCHEMA {s} TO valetkey_agents")).await;
    run_sql(&pool, format!("CREATE TABLE {s}.shared_stash (x int)")).await;
    run_sql(&pool, format!("ALTER TABLE {s}.shared_stash OWNER TO valetkey_agents")).await;
    b.broker.check_databases(SystemTime::now()).await.unwrap();
    let found = findings().await;
    assert!(
        !found.iter().any(|(what, _)| what.contains("purge()")),
        "the finding stayed after its fix"
    );
    let group = found
        .iter()
        .find(|(what, _)| what.contains("the agents' group"))
        .unwrap_or_else(|| panic!("no finding about the group in {found:#?}"));
    assert!(group.0.contains(&format!("CREATE on schema {schema}")), "{group:?}");
    assert!(group.0.contains("1 objects it owns"), "{group:?}");
    assert!(group.1.contains("DROP OWNED BY valetkey_agents"), "{group:?}");
    run_sql(&pool, format!("DROP TABLE {s}.shared_stash")).await;
    run_sql(&pool, format!("REVOKE CREATE ON SCHEMA {s} FROM valetkey_agents")).await;
    agent.close().await.unwrap();
    end_session(&b, &key, &answer).await;
    run_sql(&pool, format!("DROP DATABASE {} WITH (FORCE)", quote_ident(&other))).await;
    finish(b, &pool, &schema).await;
}

async fn dropped_event(b: &TestBroker, role: &str) -> Value {
    let events = b.broker.store().audit_events().await.unwrap();
    let event = events
        .iter()
        .find(|e| e.kind == "database_role_dropped" && e.detail.contains(role))
        .unwrap_or_else(|| panic!("no database_role_dropped event for {role}"));
    serde_json::from_str(&event.detail).unwrap()
}

#[tokio::test]
async fn odd_names_cannot_break_out_of_the_statements() {
    let Some(url) = server_url() else { return };
    let pool = admin(&url).await;
    let canary = unique("vk_canary_");
    schema_with_rows(&pool, &canary).await;
    let evil = format!("{}\"; DROP SCHEMA {canary} CASCADE; --'\\", unique("vk_test_"));
    schema_with_rows(&pool, &evil).await;

    let settings = DatabaseConfig {
        schemas: vec![evil.clone()],
        ..DatabaseConfig::default()
    };
    let key = ("appdb".to_owned(), "st'ag\"e; DROP ROLE postgres; --".to_owned());
    let (databases, problems) = Databases::open(BTreeMap::from([(
        key.clone(),
        (SecretString::from(url.as_str()), settings),
    )]));
    assert!(problems.is_empty(), "{problems:?}");
    let agent = "ag\"ent'; DROP ROLE postgres; --\\";
    let lease_id = uuid::Uuid::now_v7().to_string();
    let scopes = ["read".to_owned(), "write".to_owned()];
    let lease = LeaseFacts {
        agent,
        env: &key.1,
        lease_id: &lease_id,
        expires_at: valetkey::time::unix_secs(SystemTime::now() + Duration::from_secs(600)),
        scopes: &scopes,
    };
    let (plan, login) = databases.plan(&key.0, &lease).await.unwrap();
    assert!(plan.role.starts_with("vk_ag_ent"), "{}", plan.role);
    databases.create(&key.0, &key.1, &plan).await.unwrap();

    let mut conn = PgConnection::connect(&login.url).await.unwrap();
    assert_eq!(
        count(&mut conn, format!("SELECT count(*) FROM {}.items", quote_ident(&evil))).await,
        2
    );
    let comment: String =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(&plan.role)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        comment,
        role_comment(agent, &key.1, &lease_id),
        "the comment arrived as written"
    );
    conn.close().await.unwrap();

    // A role is ended only with its own comment: another lease's is refused.
    let other = role_comment(agent, &key.1, "another-lease");
    assert_eq!(
        databases.end(&key.0, &key.1, &plan.role, &other).await.unwrap(),
        Ended::NotOurs
    );
    assert!(role_exists(&pool, &plan.role).await);
    assert_eq!(
        databases.end(&key.0, &key.1, &plan.role, &comment).await.unwrap(),
        Ended::Dropped { sessions: 0 }
    );
    assert_eq!(
        databases.end(&key.0, &key.1, &plan.role, &comment).await.unwrap(),
        Ended::AlreadyGone
    );

    assert!(role_exists(&pool, "postgres").await);
    assert_eq!(
        count(&pool, format!("SELECT count(*) FROM {}.items", quote_ident(&canary))).await,
        2,
        "the canary schema was touched"
    );
    drop_schema(&pool, &evil).await;
    drop_schema(&pool, &canary).await;
}

#[tokio::test]
async fn roles_the_broker_did_not_create_are_never_touched() {
    let Some(url) = server_url() else { return };
    let Staging { pool, schema, b, key } = staging(&url).await;
    // Prefixed, but made by someone else.
    let foreign = unique("vk_someone_");
    run_sql(&pool, format!("CREATE ROLE {} LOGIN", quote_ident(&foreign))).await;
    let answer = mint(&b, &key, "claude").await;
    end_session(&b, &key, &answer).await;
    b.broker
        .reap_roles(SystemTime::now() + Duration::from_secs(7200))
        .await
        .unwrap();
    assert!(
        role_exists(&pool, &foreign).await,
        "a role the broker did not create was dropped"
    );
    assert!(!role_exists(&pool, var(&answer, "PGUSER")).await);
    run_sql(&pool, format!("DROP ROLE {}", quote_ident(&foreign))).await;
    finish(b, &pool, &schema).await;
}

/// A throwaway PostgreSQL cluster that checks passwords (scram-sha-256),
/// which the project's trust-auth server cannot show: stopped on drop.
struct Cluster {
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn bin_dir() -> Option<PathBuf> {
        let from_pg_config = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let candidates = from_pg_config.into_iter().chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin")),
        );
        candidates
            .into_iter()
            .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    }

    /// As root, PostgreSQL's tools run as the `postgres` user.
    fn command(&self, tool: &str) -> std::process::Command {
        Cluster::tool(&self.bin, tool)
    }

    fn tool(bin: &Path, tool: &str) -> std::process::Command {
        if nix::unistd::geteuid().is_root() {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(bin.join(tool));
            cmd
        } else {
            std::process::Command::new(bin.join(tool))
        }
    }

    fn start() -> Cluster {
        let bin = Cluster::bin_dir().expect("initdb and pg_ctl, to make a cluster that checks passwords");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pgdata");
        let password = format!("adm-{}", unique("pw"));
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &password).unwrap();
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a postgres user");
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
            }
        }
        let init = Cluster::tool(&bin, "initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "admin", "--auth=scram-sha-256", "--pwfile"])
            .arg(&pwfile)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster {
            data,
            bin,
            port,
            password,
            _dir: dir,
        };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}",
            cluster._dir.path().display()
        );
        let started = cluster
            .command("pg_ctl")
            .args(["-D"])
            .arg(&cluster.data)
            .args(["-w", "-o", &options, "-l"])
            .arg(cluster._dir.path().join("log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        cluster
    }

    fn admin_url(&self) -> String {
        format!("postgres://admin:{}@127.0.0.1:{}/postgres", self.password, self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test]
async fn valid_until_binds_with_the_broker_stopped_and_a_restart_ends_the_role() {
    if server_url().is_none() {
        return;
    }
    let cluster = Cluster::start();
    let admin_url = cluster.admin_url();
    let pool = admin(&admin_url).await;
    schema_with_rows(&pool, "app").await;

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("valetkey.toml");
    std::fs::write(&config_path, config("app")).unwrap();
    let env = [("APPDB_ADMIN_URL", admin_url.as_str())];
    let served = common::serve(dir.path(), &config_path, &env);
    let key = common::add_agent_with_cli(&served.url, &dir.path().join("data"), "claude");
    let answer = served
        .mint(&key, json!({ "agent": "claude", "env": "staging", "ttl": "3s" }))
        .await;
    let database_url = var(&answer, "DATABASE_URL").to_owned();
    let role = var(&answer, "PGUSER").to_owned();

    // The password is checked: the right one logs in, another does not.
    let mut conn = PgConnection::connect(&database_url).await.unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) FROM app.items".into()).await, 2);
    conn.close().await.unwrap();
    let mut wrong = url::Url::parse(&database_url).unwrap();
    wrong.set_password(Some("not-the-password")).unwrap();
    assert!(PgConnection::connect(wrong.as_str()).await.is_err());

    // The broker dies; the credential expires; PostgreSQL refuses the login.
    served.kill();
    let expires = common::claims(var(&answer, "VALETKEY_CREDENTIAL"))["exp"]
        .as_i64()
        .unwrap();
    let now = valetkey::time::unix_secs(SystemTime::now());
    tokio::time::sleep(Duration::from_secs((expires - now + 1).max(0) as u64)).await;
    let refused = PgConnection::connect(&database_url).await.unwrap_err().to_string();
    assert!(refused.contains("password authentication failed"), "{refused}");
    assert!(
        role_exists(&pool, &role).await,
        "nothing but PostgreSQL acted while the broker was down"
    );

    // Restarted, the broker ends the role of the lease that ended meanwhile.
    let served = common::serve(dir.path(), &config_path, &env);
    eventually("the restarted broker ends the expired lease's role", async || {
        !role_exists(&pool, &role).await
    })
    .await;
    // The log line follows the DROP ROLE: wait for it rather than race it.
    let log_path = dir.path().join("serve.log");
    eventually("the restarted broker logs the role it ended", async || {
        std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("database role ended") && log.contains(&role))
    })
    .await;
    assert_eq!(served.stop(), Some(0));

    // The admin's and the agent's passwords are in no log line and no byte
    // of the store.
    let agent_password = url::Url::parse(&database_url).unwrap().password().unwrap().to_owned();
    let mut haystacks = vec![("serve.log", std::fs::read(dir.path().join("serve.log")).unwrap())];
    for file in ["valetkey.db", "valetkey.db-wal", "valetkey.db-shm"] {
        if let Ok(bytes) = std::fs::read(dir.path().join("data").join(file)) {
            haystacks.push((file, bytes));
        }
    }
    let log = String::from_utf8_lossy(&haystacks[0].1).into_owned();
    assert!(log.contains(&role), "the log should name the role it ended");
    for (name, bytes) in &haystacks {
        for secret in [cluster.password.as_str(), agent_password.as_str()] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a password is in {name}"
            );
        }
    }
    let store = valetkey::store::SqliteStore::open_in(&dir.path().join("data"))
        .await
        .unwrap();
    let lines = audit_lines(&store).await.join("\n");
    assert!(
        lines.contains("database_role_dropped") && lines.contains("\\\"why\\\":\\\"expired\\\""),
        "{lines}"
    );
}

#[tokio::test]
async fn a_role_that_cannot_be_made_refuses_the_mint_and_names_no_secret() {
    // Nothing listens on port 1: the server is down. No PostgreSQL needed.
    let admin_url = "postgres://admin:s3cr3t-admin-pw@127.0.0.1:1/app";
    let b = broker(admin_url, "public").await;
    let key = b.add_agent("claude").await;
    let (status, problem) = b.mint(&key, json!({ "agent": "claude", "env": "staging" })).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "database_unavailable");
    assert!(
        problem["detail"].as_str().unwrap().contains("`appdb` for `staging`"),
        "{problem}"
    );
    assert!(problem["event_id"].is_string());
    assert!(problem.get("credential").is_none());

    // The lease it would have had is revoked, its role is not live, and the
    // admin password is in no answer, event or row.
    let lines = audit_lines(b.broker.store()).await.join("\n");
    assert!(
        lines.contains("mint_refused") && lines.contains("database_unavailable"),
        "{lines}"
    );
    assert!(!problem.to_string().contains("s3cr3t-admin-pw"));
    assert!(!lines.contains("s3cr3t-admin-pw"));
    let db = b.db().await;
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM leases WHERE revoked_at IS NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(live, 0, "the failed mint left a live lease");

    // An environment whose admin connection did not load refuses before
    // anything is recorded but the refusal.
    let env = BTreeMap::new();
    let unloaded = TestBroker::start_with(&config("public"), env).await;
    let key = unloaded.add_agent("claude").await;
    let leases_before = unloaded.row_counts().await;
    let (status, problem) = unloaded
        .mint(&key, json!({ "agent": "claude", "env": "staging" }))
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (503, Some("database_unavailable")),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("no admin connection"),
        "{problem}"
    );
    let after = unloaded.row_counts().await;
    assert_eq!(leases_before[4], after[4], "a lease was written");
    b.stop().await;
    unloaded.stop().await;
}

/// `VALID UNTIL` of `role`, as unix seconds.
async fn valid_until(pool: &PgPool, role: &str) -> i64 {
    sqlx::query_scalar("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A session's role lives as long as the session: its `VALID UNTIL` moves
/// forward while the launcher's heartbeat lasts (past several fixed TTLs
/// and past its first `VALID UNTIL`), and the role is ended within seconds
/// of the heartbeat stopping.
#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_role_lives_while_its_heartbeat_lasts() {
    let Some(url) = server_url() else { return };
    let pool = admin(&url).await;
    let schema = unique("vk_test_");
    schema_with_rows(&pool, &schema).await;
    let config = config(&schema).replace(
        "default_ttl = \"15m\"\nmax_ttl = \"1h\"\n",
        "default_ttl = \"2s\"\nmax_ttl = \"2s\"\nmax_session = \"1m\"\nheartbeat_interval = \"1s\"\nheartbeat_timeout = \"3s\"\n",
    );
    let env = BTreeMap::from([("APPDB_ADMIN_URL".to_owned(), url.clone())]);
    let b = TestBroker::start_with(&config, env).await;
    let key = b.add_agent("claude").await;
    let (status, answer) = b
        .mint(&key, json!({ "agent": "claude", "env": "staging", "session": true }))
        .await;
    assert_eq!(status, 201, "{answer}");
    let role = var(&answer, "PGUSER").to_owned();
    let database_url = var(&answer, "DATABASE_URL").to_owned();
    let credential = var(&answer, "VALETKEY_CREDENTIAL").to_owned();
    let first = valid_until(&pool, &role).await;
    let issued = common::claims(&credential)["iat"].as_i64().unwrap();
    assert!(
        first <= issued + 10,
        "a session's role is not valid to the session's end: {first} vs {issued}"
    );

    let session = answer["session_id"].as_str().unwrap();
    let beat = async || {
        let (status, body) = b.heartbeat(&key, session).await;
        assert_eq!(status, 200, "{body}");
    };
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(14) {
        beat().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let now = valetkey::time::unix_secs(SystemTime::now());
    assert!(now > first, "the test outlived the role's first VALID UNTIL");
    assert!(
        valid_until(&pool, &role).await > now,
        "VALID UNTIL moved with the heartbeat"
    );
    let mut conn = PgConnection::connect(&database_url).await.unwrap();
    assert_eq!(
        count(&mut conn, format!("SELECT count(*) FROM {schema}.items")).await,
        2
    );
    assert_eq!(b.whoami(&credential).await.0, 200);

    // The heartbeat stops: within its timeout and the reaper's next
    // second, the session's open connection is ended and the role dropped.
    let stopped = tokio::time::Instant::now();
    eventually("the role of a session whose heartbeat stopped is dropped", async || {
        !role_exists(&pool, &role).await
    })
    .await;
    assert!(
        stopped.elapsed() <= Duration::from_secs(5),
        "dropped {:?} after the last heartbeat",
        stopped.elapsed()
    );
    assert!(conn.execute("SELECT 1").await.is_err(), "its open session was ended");
    assert_eq!(b.whoami(&credential).await.1["type"], "session_ended");
    finish(b, &pool, &schema).await;
}
