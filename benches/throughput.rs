//! Mint and audit throughput: credentials minted per second over HTTP with
//! durable leases (SQLite, `synchronous = FULL`), and audit events appended
//! per second through the hash chain's group commit, each at 1, 8 and 64
//! concurrent clients.
//!
//!   cargo bench --bench throughput
//!
//! A figure, not a test: it asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

// The binary's allocator, so that the figures are the broker's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use serde_json::json;

/// Work done per concurrency level.
const MINTS: usize = 4000;
const APPENDS: usize = 20_000;
const CLIENTS: [usize; 3] = [1, 8, 64];

#[tokio::main]
async fn main() {
    bench().await
}

/// Runs `work` `total` times from `clients` tasks; returns per-second rate
/// and the median latency in milliseconds.
async fn drive<F, Fut>(clients: usize, total: usize, work: F) -> (f64, f64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let left = Arc::new(AtomicUsize::new(total));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (left, work) = (left.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                work().await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies[latencies.len() / 2].as_secs_f64() * 1000.0)
}

async fn bench() {
    let b = common::TestBroker::start().await;
    let key = b.add_agent("claude").await;
    let url = format!("{}/v1/credentials", b.url);

    println!("credentials minted over HTTP (durable lease and mint event each; {MINTS} per row)");
    println!("{:>8} {:>12} {:>10}", "clients", "mints/s", "p50 ms");
    for clients in CLIENTS {
        let (http, url, key) = (b.http.clone(), url.clone(), key.clone());
        let (rate, p50) = drive(clients, MINTS, move || {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            async move {
                let resp = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "agent": "claude", "env": "staging", "providers": ["railway"] }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 201);
                resp.bytes().await.unwrap();
            }
        })
        .await;
        println!("{clients:>8} {rate:>12.0} {p50:>10.2}");
    }

    println!("\naudit events appended (hash chain, group commit; {APPENDS} per row)");
    println!("{:>8} {:>12} {:>10}", "clients", "events/s", "p50 ms");
    for clients in CLIENTS {
        let broker = b.broker.clone();
        let (rate, p50) = drive(clients, APPENDS, move || {
            let broker = broker.clone();
            async move {
                let at = valetkey::time::unix_ms(SystemTime::now());
                broker.store().append_audit(&common::proxy_event(), at).await.unwrap();
            }
        })
        .await;
        println!("{clients:>8} {rate:>12.0} {p50:>10.2}");
    }
    b.stop().await;
}
