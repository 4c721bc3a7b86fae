//! The SQL of dynamic PostgreSQL roles, run against a real server: a role
//! reads and writes rows per its scopes and can do nothing else; ending it
//! ends its open sessions; odd names cannot break out of the statements.
//!
//! The server's URL comes from VALETKEY_TEST_POSTGRES_URL (`.ci/run` sets
//! it); without it these tests say so and pass nothing off as checked.

use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, Row};
use valetkey::providers::postgres::{RolePlan, drop_role, quote_ident, role_name};

fn server_url() -> Option<String> {
    match std::env::var("VALETKEY_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED: VALETKEY_TEST_POSTGRES_URL is not set; no PostgreSQL to test against");
            None
        }
    }
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

/// A schema with a table of two rows and a sequence, owned by the admin.
async fn schema_with_rows(pool: &PgPool, schema: &str) {
    let s = quote_ident(schema);
    for sql in [
        format!("CREATE SCHEMA {s}"),
        format!("CREATE TABLE {s}.items (id serial PRIMARY KEY, name text NOT NULL)"),
        format!("INSERT INTO {s}.items (name) VALUES ('first'), ('second')"),
    ] {
        pool.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
}

async fn create(pool: &PgPool, plan: &RolePlan) {
    let mut tx = pool.begin().await.unwrap();
    for sql in plan.create() {
        tx.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn end(pool: &PgPool, role: &str) {
    let mut tx = pool.begin().await.unwrap();
    for sql in drop_role(role) {
        tx.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn login(url: &str, role: &str, password: &str) -> Result<PgConnection, sqlx::Error> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .unwrap()
        .username(role)
        .password(password);
    options.connect().await
}

async fn database(pool: &PgPool) -> String {
    sqlx::query("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

fn plan(role: &str, database: String, schema: &str) -> RolePlan {
    RolePlan {
        role: role.to_owned(),
        password: "s3cret-pw".into(),
        valid_until: valetkey::time::rfc3339(valetkey::time::unix_secs(SystemTime::now() + Duration::from_secs(3600))),
        database,
        schemas: vec![schema.to_owned()],
        table_owner: None,
        read: true,
        write: true,
        delete: false,
        connection_limit: 5,
    }
}

#[tokio::test]
async fn a_role_reads_and_writes_rows_and_can_destroy_nothing() {
    let Some(url) = server_url() else { return };
    let pool = admin(&url).await;
    let schema = unique("vk_test_");
    schema_with_rows(&pool, &schema).await;
    let role = role_name("claude", &uuid::Uuid::new_v4().to_string());
    create(&pool, &plan(&role, database(&pool).await, &schema)).await;

    let mut conn = login(&url, &role, "s3cret-pw").await.unwrap();
    let s = quote_ident(&schema);
    let count: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {s}.items")))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    conn.execute(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {s}.items (name) VALUES ('by the agent')"
    )))
    .await
    .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "UPDATE {s}.items SET name = 'renamed' WHERE name = 'first'"
    )))
    .await
    .unwrap();

    for forbidden in [
        format!("DELETE FROM {s}.items"),
        format!("TRUNCATE {s}.items"),
        format!("DROP TABLE {s}.items"),
        format!("ALTER TABLE {s}.items ADD COLUMN x int"),
        format!("CREATE TABLE {s}.mine (x int)"),
        "CREATE ROLE escalated".to_owned(),
        format!("DROP SCHEMA {s} CASCADE"),
    ] {
        let err = conn.execute(sqlx::AssertSqlSafe(forbidden.clone())).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("permission denied") || message.contains("must be owner"),
            "{forbidden}: {message}"
        );
    }

    // A GRANT without grant option is a warning in PostgreSQL, not an error:
    // what matters is that nothing was granted.
    conn.execute(sqlx::AssertSqlSafe(format!("GRANT SELECT ON {s}.items TO PUBLIC")))
        .await
        .ok();
    let granted: bool = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT has_table_privilege('public', '{}.items', 'SELECT')",
        s.replace('\'', "''")
    )))
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert!(!granted, "the role granted a privilege to PUBLIC");

    // Future tables of the schema are covered too.
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE TABLE {s}.later (x int)")))
        .await
        .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("INSERT INTO {s}.later VALUES (1)")))
        .await
        .unwrap();

    let rows: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {s}.items")))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3, "the data is intact");
    conn.close().await.unwrap();
    end(&pool, &role).await;
    pool.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {s} CASCADE")))
        .await
        .unwrap();
}

#[tokio::test]
async fn ending_a_role_ends_its_open_sessions_and_its_logins() {
    let Some(url) = server_url() else { return };
    let pool = admin(&url).await;
    let schema = unique("vk_test_");
    schema_with_rows(&pool, &schema).await;
    let role = role_name("claude", &uuid::Uuid::new_v4().to_string());
    create(&pool, &plan(&role, database(&pool).await, &schema)).await;
    let mut open = login(&url, &role, "s3cret-pw").await.unwrap();
    open.execute("SELECT 1").await.unwrap();

    end(&pool, &role).await;
    assert!(open.execute("SELECT 1").await.is_err(), "the open session survived");
    assert!(
        login(&url, &role, "s3cret-pw").await.is_err(),
        "the role can still log in"
    );
    let left: i64 = sqlx::query("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&role)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    pool.execute(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA {} CASCADE",
        quote_ident(&schema)
    )))
    .await
    .unwrap();
}

#[tokio::test]
async fn odd_names_cannot_break_out_of_the_statements() {
    let Some(url) = server_url() else { return };
    let pool = admin(&url).await;
    let canary = unique("vk_canary_");
    schema_with_rows(&pool, &canary).await;
    let evil = format!("{}\"; DROP SCHEMA {canary} CASCADE; --'", unique("vk_test_"));
    schema_with_rows(&pool, &evil).await;
    let role = role_name("ag\"ent'; DROP ROLE postgres; --", &uuid::Uuid::new_v4().to_string());
    let mut p = plan(&role, database(&pool).await, &evil);
    p.password = "pa'ss\\\"; DROP TABLE x; --".into();
    create(&pool, &p).await;
    let mut conn = login(&url, &role, &p.password).await.unwrap();
    let count: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.items",
        quote_ident(&evil)
    )))
    .fetch_one(&mut conn)
    .await
    .unwrap()
    .get(0);
    assert_eq!(count, 2);
    conn.close().await.unwrap();
    end(&pool, &role).await;
    let canary_rows: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.items",
        quote_ident(&canary)
    )))
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(canary_rows, 2, "the canary schema was touched");
    for schema in [&evil, &canary] {
        pool.execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            quote_ident(schema)
        )))
        .await
        .unwrap();
    }
}
