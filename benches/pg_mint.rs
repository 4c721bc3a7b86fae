//! Mints per second of credentials that carry a PostgreSQL role: over HTTP,
//! with durable leases (SQLite, `synchronous = FULL`), each mint creating
//! its role on a real server, at 1, 8 and 32 concurrent clients; then how
//! fast those roles are ended when their sessions are revoked.
//!
//! Each round mints a fixed number of credentials, all alive at once, then
//! ends them: PostgreSQL keeps an object's grants in one catalog row, so
//! some 500 roles at most can hold grants on one table at the same time.
//!
//!   cargo bench --bench pg_mint
//!
//! The server is VALETKEY_TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres.
//! A figure, not a test: it asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

// The binary's allocator, so that the figures are the broker's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;
use sqlx::Executor;

/// Credentials minted, and alive together, per round.
const MINTS_PER_ROUND: usize = 400;

#[tokio::main]
async fn main() {
    bench().await
}

async fn bench() {
    // PostgreSQL's default rounds, then few: the passwords are random, so
    // rounds only cost time (the server hashes at CREATE ROLE).
    for rounds in [4096, 16] {
        bench_with(rounds).await;
    }
}

async fn bench_with(rounds: u32) {
    let url = std::env::var("VALETKEY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("a PostgreSQL server to mint roles on");
    let schema = format!("vk_bench_{}_{rounds}", std::process::id());
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.items (id serial PRIMARY KEY, name text); \
             CREATE TABLE {schema}.more (id serial PRIMARY KEY, name text)"
        )))
        .await
        .unwrap();
    let config = format!(
        r#"
[credentials]
default_ttl = "15m"
[environments.staging]
[introspection]
enabled = false
[providers.appdb]
kind = "postgres"
tokens = {{ staging = {{ env = "APPDB_ADMIN_URL" }} }}
[providers.appdb.databases.staging]
schemas = ["{schema}"]
scram_iterations = {rounds}
[agents.bench]
grants = [{{ provider = "appdb", environments = ["staging"], scopes = ["read", "write"] }}]
"#
    );
    // Each grant rewrites catalog rows; with autovacuum off (as on the
    // project's test servers) dead rows pile up and every later
    // `GRANT … ON ALL TABLES` scans them. Vacuum, as autovacuum would.
    vacuum(&admin).await;
    let b = common::TestBroker::start_with(&config, BTreeMap::from([("APPDB_ADMIN_URL".into(), url.clone())])).await;
    let key = b.add_agent("bench").await;
    println!(
        "
postgres credential mints over HTTP (one role each, SCRAM rounds {rounds}, {MINTS_PER_ROUND} per round)"
    );
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>14}",
        "clients", "mints", "mints/s", "p50 ms", "roles ended/s"
    );
    for clients in [1usize, 8, 32] {
        vacuum(&admin).await;
        let started = Instant::now();
        let left = Arc::new(AtomicUsize::new(MINTS_PER_ROUND));
        let mut workers = Vec::new();
        for _ in 0..clients {
            let (http, url, key, left) = (b.http.clone(), b.url.clone(), key.clone(), left.clone());
            workers.push(tokio::spawn(async move {
                let mut sessions = Vec::new();
                let mut latencies = Vec::new();
                while left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    let resp = http
                        .post(format!("{url}/v1/credentials"))
                        .bearer_auth(&key)
                        .json(&json!({ "agent": "bench", "env": "staging" }))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status();
                    let answer: serde_json::Value = resp.json().await.unwrap();
                    assert_eq!(status, 201, "{answer}");
                    latencies.push(t.elapsed());
                    sessions.push(answer["session_id"].as_str().unwrap().to_owned());
                }
                (sessions, latencies)
            }));
        }
        let mut sessions = Vec::new();
        let mut latencies = Vec::new();
        for w in workers {
            let (s, l) = w.await.unwrap();
            sessions.extend(s);
            latencies.extend(l);
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let p50 = latencies[latencies.len() / 2];
        let ending = Instant::now();
        for sid in &sessions {
            let resp = b
                .http
                .delete(format!("{}/v1/sessions/{sid}", b.url))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        let ended = sessions.len() as f64 / ending.elapsed().as_secs_f64();
        println!(
            "{clients:>8} {:>10} {:>12.0} {:>12.2} {:>14.0}",
            sessions.len(),
            sessions.len() as f64 / elapsed.as_secs_f64(),
            p50.as_secs_f64() * 1000.0,
            ended
        );
    }
    b.stop().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .await
        .unwrap();
}

async fn vacuum(admin: &sqlx::PgPool) {
    admin
        .execute("VACUUM pg_class, pg_default_acl, pg_authid, pg_shdepend, pg_namespace, pg_database, pg_shdescription")
        .await
        .unwrap();
}
