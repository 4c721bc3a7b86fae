//! The proxy under load, side by side with going direct and with nginx.
//!
//!   scripts/install-nginx.sh          # once, where nginx is missing
//!   cargo bench --bench proxy_load
//!
//! One run starts a minimal upstream (an axum responder on loopback), the
//! broker's release binary in front of it (GraphQL classification and the
//! audit trail on), and, when nginx is installed, nginx in front of the same
//! upstream with `proxy_pass`, upstream keep-alive and a `proxy_set_header
//! Authorization` line: the plain "inject a header" proxy a broker must be
//! compared with. Both proxies get two workers (this machine's cores).
//!
//! An open-loop generator sends at a fixed rate whatever the answers do:
//! each request has its slot in the schedule and its latency counts from
//! that slot, so a stall shows in the tail instead of slowing the sender
//! (no coordinated omission). Latencies go into an HdrHistogram. The
//! targets take turns at each rate. The broker has the proxy tests'
//! configuration (`tests/common/fixture.rs`). The mix, in turn: a small Railway
//! GraphQL query, an allowed mutation, a mutation the broker refuses, and a
//! GitHub REST GET. The broker's memory is read from /proc.
//!
//! A figure, not a test: it asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

/// Requests per second tried, in turn, for each target.
const RATES: [u64; 4] = [500, 1000, 2000, 4000];
/// How long each target is driven at each rate.
const DURATION: Duration = Duration::from_secs(5);
/// Connections the generator keeps open to each target.
const CONNECTIONS: usize = 64;
/// The real tokens the proxies put in, and the stand-in does not check.
const TOKEN: &str = "real-upstream-token";

#[derive(Clone, Copy)]
struct Request {
    name: &'static str,
    method: &'static str,
    /// The path after the provider's prefix.
    path: &'static str,
    body: Option<&'static str>,
    /// `/p/railway` or `/p/github` in front of the broker.
    provider: &'static str,
}

const MIX: [Request; 4] = [
    Request {
        name: "graphql query",
        method: "POST",
        path: "/graphql/v2",
        body: Some(r#"{"query":"query { project(id: \"proj_1\") { id name } }"}"#),
        provider: "railway",
    },
    Request {
        name: "graphql mutation (allowed)",
        method: "POST",
        path: "/graphql/v2",
        body: Some(
            r#"{"query":"mutation { variableUpsert(input: { projectId: \"proj_1\", environmentId: \"env_stg\", serviceId: \"svc_api\", name: \"LOG_LEVEL\", value: \"debug\" }) }"}"#,
        ),
        provider: "railway",
    },
    Request {
        name: "graphql mutation (refused)",
        method: "POST",
        path: "/graphql/v2",
        body: Some(r#"{"query":"mutation { volumeDelete(volumeId: \"vol_db\") }"}"#),
        provider: "railway",
    },
    Request {
        name: "rest GET",
        method: "GET",
        path: "/repos/acme/api/contents/README.md",
        body: None,
        provider: "github",
    },
];

struct Target {
    name: &'static str,
    base: String,
    /// Whether paths carry the broker's `/p/{provider}` prefix.
    broker: bool,
    authorization: String,
}

/// nginx's master, stopped with SIGQUIT on drop so it takes its workers
/// with it (SIGKILL would leave them running).
struct StopOnDrop(Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The upstream: answers every request with a small JSON body.
async fn upstream() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            r#"{"data":{"project":{"id":"proj_1","name":"api"}}}"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// nginx in front of `upstream`, two workers, keep-alive to the upstream,
/// the token put in with `proxy_set_header`; `None` where it is missing.
fn nginx(dir: &std::path::Path, upstream: &str) -> Option<(StopOnDrop, u16)> {
    let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = free_port();
    let upstream = upstream.trim_start_matches("http://");
    let conf = format!(
        r#"
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  upstream backend {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {TOKEN}";
    }}
  }}
}}
"#,
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(binary)
        .args(["-p"])
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let child = StopOnDrop(child);
    wait_for(port);
    Some((child, port))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Outcome {
    histogram: Histogram<u64>,
    sent: u64,
    errors: u64,
    elapsed: Duration,
}

/// Sends `rate` requests a second for `DURATION`, each at its slot in the
/// schedule, cycling through the mix; latencies from the slot.
async fn drive(client: &reqwest::Client, target: &Target, rate: u64) -> Outcome {
    let total = rate * DURATION.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let histogram = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let slot = start + interval * i as u32;
        let request = MIX[i as usize % MIX.len()];
        let url = if target.broker {
            format!("{}/p/{}{}", target.base, request.provider, request.path)
        } else {
            format!("{}{}", target.base, request.path)
        };
        let mut builder = client
            .request(request.method.parse().unwrap(), url)
            .header("authorization", &target.authorization);
        if let Some(body) = request.body {
            builder = builder.header("content-type", "application/json").body(body);
        }
        let (histogram, errors) = (histogram.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(slot).await;
            let ok = match builder.send().await {
                // The refused mutation answers 403 from the broker: an
                // answer, not an error.
                Ok(resp) => resp.bytes().await.is_ok(),
                Err(_) => false,
            };
            let took = tokio::time::Instant::now().saturating_duration_since(slot);
            if !ok {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            histogram.lock().unwrap().saturating_record(took.as_micros() as u64);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let histogram = Arc::try_unwrap(histogram).unwrap().into_inner().unwrap();
    Outcome {
        histogram,
        sent: total,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        elapsed,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream().await;

    // The broker: the release binary, as ops run it, with the proxy tests'
    // configuration (resource map, an agent holding every grantable scope)
    // and every provider pointed at the one upstream.
    let config_path = dir.path().join("valetkey.toml");
    let config = common::fixture::CONFIG
        .replace("RAILWAY_URL", &upstream)
        .replace("GITHUB_URL", &upstream)
        .replace("API_URL", &upstream)
        + "\n[introspection]\nenabled = false\n";
    std::fs::write(&config_path, config).unwrap();
    let key = common::add_agent_with_cli(&config_path, &dir.path().join("data"), "claude");
    let tokens = ["RAILWAY_STAGING", "RAILWAY_PRODUCTION", "GITHUB_STAGING", "API_STAGING"];
    let mut env: Vec<(&str, &str)> = tokens.iter().map(|t| (*t, TOKEN)).collect();
    env.push(("RUST_LOG", "warn"));
    let served = common::serve(dir.path(), &config_path, &env);
    let broker_pid = served.child.id();
    let minted = served.mint(&key, json!({ "env": "staging" })).await;
    let credential = minted["credential"].as_str().expect("a credential").to_owned();

    let mut targets = vec![
        Target {
            name: "direct",
            base: upstream.clone(),
            broker: false,
            authorization: format!("Bearer {TOKEN}"),
        },
        Target {
            name: "valetkey",
            base: served.url.clone(),
            broker: true,
            authorization: format!("Bearer {credential}"),
        },
    ];
    let nginx = nginx(dir.path(), &upstream);
    match &nginx {
        Some((_, port)) => targets.push(Target {
            name: "nginx",
            base: format!("http://127.0.0.1:{port}"),
            broker: false,
            authorization: "Bearer from-the-agent".into(),
        }),
        None => println!("nginx is not installed: running without it (scripts/install-nginx.sh installs it)"),
    }

    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "open-loop load, {} s per target and rate, {CONNECTIONS} connections, mix: {}",
        DURATION.as_secs(),
        MIX.map(|r| r.name).join(", ")
    );
    println!(
        "{:>6} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "rate", "target", "achieved", "p50 µs", "p99 µs", "p99.9 µs", "errors"
    );
    let mut p50s = std::collections::BTreeMap::new();
    for rate in RATES {
        for target in &targets {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(CONNECTIONS)
                .no_proxy()
                .build()
                .unwrap();
            let out = drive(&client, target, rate).await;
            let h = &out.histogram;
            println!(
                "{rate:>6} {:>9} {:>10.0} {:>9} {:>9} {:>9} {:>7}",
                target.name,
                out.sent as f64 / out.elapsed.as_secs_f64(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                out.errors
            );
            p50s.insert(
                (rate, target.name),
                (h.value_at_quantile(0.5), h.value_at_quantile(0.99)),
            );
        }
        if let (Some(direct), Some(broker)) = (p50s.get(&(rate, "direct")), p50s.get(&(rate, "valetkey"))) {
            println!(
                "{rate:>6} valetkey adds p50 {} µs, p99 {} µs over direct; broker RSS {} MiB",
                broker.0 as i64 - direct.0 as i64,
                broker.1 as i64 - direct.1 as i64,
                rss_kib(broker_pid) / 1024
            );
        }
    }
    drop(nginx);
    served.stop();
}
