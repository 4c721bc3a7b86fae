//! The proxy under load, side by side with going direct and with nginx, and
//! the same mix through the broker's forward proxy (`CONNECT` to each
//! provider's host, TLS to the broker with its CA's leaf, plain HTTP to the
//! upstream), as unmodified tools reach it.
//!
//!   scripts/install-nginx.sh          # once, where nginx is missing
//!   cargo bench --bench proxy_load
//!
//! One run starts a minimal upstream (an axum responder on loopback, on its
//! own thread), the broker's release binary in front of it (GraphQL
//! classification and the audit trail on), and, when nginx is installed,
//! nginx in front of the same upstream with `proxy_pass`, upstream keep-alive
//! and a `proxy_set_header Authorization` line: the plain "inject a header"
//! proxy a broker must be compared with. Both proxies get two workers (this
//! machine's cores).
//!
//! Three measurements, the targets taking turns in each:
//! - *Fixed rate, open loop.* A clock thread sends at a fixed rate whatever
//!   the answers do: each request has its slot, and its latency counts from
//!   that slot, so a stall shows in the tail instead of slowing the sender
//!   (no coordinated omission). The clock sleeps with a 1 ns timer slack
//!   rather than on tokio's millisecond timer, and its own lateness is
//!   reported beside the figures. Latencies go into an HdrHistogram.
//! - *Highest throughput, closed loop.* Every connection sends its next
//!   request as soon as the last is answered, for a fixed time.
//! - *Memory.* The broker's RSS with 1,000 keep-alive agent connections
//!   open and carrying the fixed-rate load.
//!
//! The broker has the proxy tests' configuration (`tests/common/fixture.rs`).
//! The mix, in turn: a small Railway GraphQL query, an allowed mutation, a
//! mutation the broker refuses, and a GitHub REST GET. An answer counts as
//! an error unless its status is the one expected (the refused mutation is
//! a 403 from the broker, a 200 elsewhere).
//!
//! A figure, not a test: it asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

/// Requests per second tried, in turn, for each target.
const RATES: [u64; 4] = [500, 1000, 2000, 4000];
/// How long each target is driven at each rate, and at full speed.
const DURATION: Duration = Duration::from_secs(5);
/// Connections the generator keeps open to each target.
const CONNECTIONS: usize = 64;
/// Keep-alive agent connections held open for the memory figure.
const MANY_CONNECTIONS: usize = 1000;
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
    /// Whether the broker refuses it (403).
    refused: bool,
}

const MIX: [Request; 4] = [
    Request {
        name: "graphql query",
        method: "POST",
        path: "/graphql/v2",
        body: Some(r#"{"query":"query { project(id: \"proj_1\") { id name } }"}"#),
        provider: "railway",
        refused: false,
    },
    Request {
        name: "graphql mutation (allowed)",
        method: "POST",
        path: "/graphql/v2",
        body: Some(
            r#"{"query":"mutation { variableUpsert(input: { projectId: \"proj_1\", environmentId: \"env_stg\", serviceId: \"svc_api\", name: \"LOG_LEVEL\", value: \"debug\" }) }"}"#,
        ),
        provider: "railway",
        refused: false,
    },
    Request {
        name: "graphql mutation (refused)",
        method: "POST",
        path: "/graphql/v2",
        body: Some(r#"{"query":"mutation { volumeDelete(volumeId: \"vol_db\") }"}"#),
        provider: "railway",
        refused: true,
    },
    Request {
        name: "rest GET",
        method: "GET",
        path: "/repos/acme/api/contents/README.md",
        body: None,
        provider: "github",
        refused: false,
    },
];

struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// Whether the broker answers (its refusals are expected).
    broker: bool,
    authorization: String,
    /// Through the forward proxy: one tunnel per provider host on each
    /// connection, opened with this credential and trusting this CA.
    forward: Option<Forward>,
    /// The mix, as this target is sent it.
    requests: Vec<Prepared>,
}

struct Forward {
    credential: String,
    tls: tokio_rustls::TlsConnector,
}

/// Each provider of the mix, and the host the forward proxy serves it at.
const HOSTS: [(&str, &str); 2] = [("railway", "backboard.railway.com"), ("github", "api.github.com")];

/// One request of the mix as a target is sent it.
struct Prepared {
    method: Method,
    /// Which of `HOSTS` it goes to, through the forward proxy.
    host: usize,
    uri: String,
    body: Bytes,
    json: bool,
    expect: StatusCode,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr, broker: bool, authorization: String) -> Target {
        Target::with(name, addr, broker, authorization, None)
    }

    fn with(
        name: &'static str,
        addr: SocketAddr,
        broker: bool,
        authorization: String,
        forward: Option<Forward>,
    ) -> Target {
        let requests = MIX
            .iter()
            .map(|r| Prepared {
                method: r.method.parse().unwrap(),
                host: HOSTS.iter().position(|(p, _)| *p == r.provider).unwrap(),
                uri: if broker && forward.is_none() {
                    format!("/p/{}{}", r.provider, r.path)
                } else {
                    r.path.to_owned()
                },
                body: Bytes::from_static(r.body.unwrap_or("").as_bytes()),
                json: r.body.is_some(),
                expect: if broker && r.refused {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::OK
                },
            })
            .collect();
        Target {
            name,
            addr,
            broker,
            authorization,
            forward,
            requests,
        }
    }
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

/// The upstream, on a thread and runtime of its own so that it does not
/// share the generator's: answers every request with a small JSON body.
fn upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"data":{"project":{"id":"proj_1","name":"api"}}}"#,
                )
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap()
        })
    });
    addr
}

/// nginx in front of `upstream`, two workers, keep-alive to the upstream,
/// the token put in with `proxy_set_header`; `None` where it is missing.
fn nginx(dir: &std::path::Path, upstream: SocketAddr) -> Option<(StopOnDrop, u16)> {
    let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = free_port();
    let conf = format!(
        r#"
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
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

/// CPU time a process has used (user and system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, f)| f)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// `VmRSS` and `VmHWM` (the peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection to a target; through the forward
/// proxy, one tunnel per provider host.
struct Connection {
    senders: Vec<Sender>,
}

impl Connection {
    async fn open(target: &Target) -> Connection {
        let Some(forward) = &target.forward else {
            let stream = tokio::net::TcpStream::connect(target.addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            return Connection {
                senders: vec![handshake(stream).await],
            };
        };
        let mut senders = Vec::new();
        for (_, host) in HOSTS {
            senders.push(tunnel(target.addr, host, forward).await);
        }
        Connection { senders }
    }

    /// Sends one request and reads its whole answer; whether it came back
    /// with the expected status.
    async fn exchange(&mut self, target: &Target, request: &Prepared) -> bool {
        let which = if target.forward.is_some() { request.host } else { 0 };
        if self.senders[which].ready().await.is_err() {
            // The target closed the idle connection, as servers may: open
            // another, as any keep-alive client does.
            *self = Connection::open(target).await;
        }
        let host = if target.forward.is_some() {
            HOSTS[which].1
        } else {
            "127.0.0.1"
        };
        let mut builder = http::Request::builder()
            .method(request.method.clone())
            .uri(&request.uri)
            .header(header::HOST, host)
            .header(header::AUTHORIZATION, &target.authorization);
        if request.json {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request_out = builder.body(Full::new(request.body.clone())).unwrap();
        match self.senders[which].send_request(request_out).await {
            Ok(resp) => {
                let status = resp.status();
                resp.into_body().collect().await.is_ok() && status == request.expect
            }
            Err(_) => false,
        }
    }
}

async fn handshake<S>(stream: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A `CONNECT` to `host` through the broker, then TLS to the broker's leaf
/// for it.
async fn tunnel(broker: SocketAddr, host: &'static str, forward: &Forward) -> Sender {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(broker).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("valetkey:{}", forward.credential));
    let head = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nProxy-Authorization: Basic {auth}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        answer.push(stream.read_u8().await.unwrap());
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    handshake(forward.tls.connect(name, stream).await.unwrap()).await
}

async fn open_all(target: &Target, n: usize) -> Vec<Connection> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(Connection::open(target).await);
    }
    connections
}

struct Outcome {
    histogram: Histogram<u64>,
    /// How late the clock sent, from each slot (open loop only).
    lateness: Histogram<u64>,
    answered: u64,
    errors: u64,
    elapsed: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `rate` requests a second for `DURATION` over `connections`, in
/// turn, each at its slot; latencies from the slot. The connections come
/// back open.
fn open_loop(
    runtime: &tokio::runtime::Runtime,
    target: &'static Target,
    connections: Vec<Connection>,
    rate: u64,
) -> (Outcome, Vec<Connection>) {
    let total = rate * DURATION.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut queues = Vec::with_capacity(connections.len());
    let mut tasks = Vec::with_capacity(connections.len());
    for mut connection in connections {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, usize)>();
        queues.push(tx);
        tasks.push(runtime.spawn(async move {
            let (mut histogram, mut errors) = (histogram(), 0u64);
            while let Some((slot, k)) = rx.recv().await {
                let ok = connection.exchange(target, &target.requests[k]).await;
                histogram.saturating_record(slot.elapsed().as_micros() as u64);
                errors += u64::from(!ok);
            }
            (histogram, errors, connection)
        }));
    }
    // The clock: this thread, sleeping to each slot with a timer slack of
    // 1 ns (the default, 50 µs, would blur what is measured).
    let _ = nix::sys::prctl::set_timerslack(1);
    let mut lateness = histogram();
    let start = Instant::now() + Duration::from_millis(20);
    for i in 0..total {
        let slot = start + interval * i as u32;
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        }
        lateness.saturating_record(slot.elapsed().as_micros() as u64);
        let n = i as usize;
        queues[n % queues.len()].send((slot, n % MIX.len())).unwrap();
    }
    drop(queues);
    let mut out = Outcome {
        histogram: histogram(),
        lateness,
        answered: total,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    let mut connections = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (h, errors, connection) = runtime.block_on(task).unwrap();
        out.histogram.add(h).unwrap();
        out.errors += errors;
        connections.push(connection);
    }
    out.elapsed = start.elapsed();
    (out, connections)
}

/// Every connection sends its next request as soon as the last is answered,
/// for `DURATION`.
fn closed_loop(runtime: &tokio::runtime::Runtime, target: &'static Target) -> Outcome {
    let connections = runtime.block_on(open_all(target, CONNECTIONS));
    let start = Instant::now();
    let deadline = start + DURATION;
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(c, mut connection)| {
            runtime.spawn(async move {
                let (mut histogram, mut errors) = (histogram(), 0u64);
                let mut k = c;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let ok = connection.exchange(target, &target.requests[k % MIX.len()]).await;
                    histogram.saturating_record(sent.elapsed().as_micros() as u64);
                    errors += u64::from(!ok);
                    k += 1;
                }
                (histogram, errors)
            })
        })
        .collect();
    let mut out = Outcome {
        histogram: histogram(),
        lateness: histogram(),
        answered: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (h, errors) = runtime.block_on(task).unwrap();
        out.answered += h.len();
        out.histogram.add(h).unwrap();
        out.errors += errors;
    }
    out.elapsed = start.elapsed();
    out
}

fn main() {
    // The generator's runtime; the upstream has its own thread, the broker
    // and nginx their own processes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream();
    let upstream_url = format!("http://{upstream}");

    // The broker: the release binary, as ops run it, with the proxy tests'
    // configuration (resource map, an agent holding every grantable scope)
    // and every provider pointed at the one upstream.
    let config_path = dir.path().join("valetkey.toml");
    let config = common::fixture::CONFIG
        .replace("RAILWAY_URL", &upstream_url)
        .replace("GITHUB_URL", &upstream_url)
        .replace("API_URL", &upstream_url)
        + "\n[introspection]\nenabled = false\n";
    std::fs::write(&config_path, config).unwrap();
    let tokens = ["RAILWAY_STAGING", "RAILWAY_PRODUCTION", "GITHUB_STAGING", "API_STAGING"];
    let mut env: Vec<(&str, &str)> = tokens.iter().map(|t| (*t, TOKEN)).collect();
    env.push(("RUST_LOG", "warn"));
    let served = common::serve(dir.path(), &config_path, &env);
    let key = common::add_agent_with_cli(&served.url, &dir.path().join("data"), "claude");
    let broker_pid = served.child.id();
    let minted = runtime.block_on(served.mint(&key, json!({ "env": "staging" })));
    let credential = minted["credential"].as_str().expect("a credential").to_owned();
    let broker_addr: SocketAddr = served.url.trim_start_matches("http://").parse().unwrap();

    let forward = Forward {
        credential: credential.clone(),
        tls: broker_ca(&served.url),
    };
    let mut targets = vec![
        Target::new("direct", upstream, false, format!("Bearer {TOKEN}")),
        Target::new("valetkey", broker_addr, true, format!("Bearer {credential}")),
        Target::with(
            "forward",
            broker_addr,
            true,
            format!("Bearer {credential}"),
            Some(forward),
        ),
    ];
    let nginx = nginx(dir.path(), upstream);
    match &nginx {
        Some((_, port)) => targets.push(Target::new(
            "nginx",
            SocketAddr::from(([127, 0, 0, 1], *port)),
            false,
            "Bearer from-the-agent".into(),
        )),
        None => println!("nginx is not installed: running without it (scripts/install-nginx.sh installs it)"),
    }
    let targets: &'static [Target] = targets.leak();
    let find = |name: &str| targets.iter().find(|t| t.name == name);
    // `cargo bench --bench proxy_load -- throughput` runs one section (for
    // profiling); cargo adds `--bench` of its own.
    let sections: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let section = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);

    if section("rates") {
        fixed_rates(&runtime, targets, broker_pid);
    }
    if section("throughput") {
        throughput(&runtime, targets, broker_pid);
    }
    if section("memory") {
        memory(&runtime, find("valetkey").unwrap(), broker_pid);
    }
    drop(nginx);
    served.stop();
}

/// A TLS client that trusts the broker's CA alone.
fn broker_ca(url: &str) -> tokio_rustls::TlsConnector {
    let pem = std::process::Command::new(common::BIN)
        .args(["ca", "--url", url])
        .output()
        .unwrap();
    assert!(pem.status.success(), "{}", String::from_utf8_lossy(&pem.stderr));
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem.stdout) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

fn fixed_rates(runtime: &tokio::runtime::Runtime, targets: &'static [Target], broker_pid: u32) {
    println!(
        "fixed rate, open loop: {} s per target and rate, {CONNECTIONS} connections; mix: {}",
        DURATION.as_secs(),
        MIX.map(|r| r.name).join(", ")
    );
    println!(
        "{:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7} {:>14}",
        "rate/s", "target", "achieved", "p50 µs", "p99 µs", "p99.9 µs", "errors", "clock late µs"
    );
    for rate in RATES {
        let mut row = std::collections::BTreeMap::new();
        for target in targets {
            let connections = runtime.block_on(open_all(target, CONNECTIONS));
            let (out, _) = open_loop(runtime, target, connections, rate);
            let (h, late) = (&out.histogram, &out.lateness);
            println!(
                "{rate:>6} {:>9} {:>9.0} {:>8} {:>8} {:>9} {:>7} {:>14}",
                target.name,
                out.rate(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                out.errors,
                format!("{}/{}", late.value_at_quantile(0.5), late.value_at_quantile(0.99)),
            );
            row.insert(target.name, [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as i64));
        }
        if let (Some(direct), Some(broker)) = (row.get("direct"), row.get("valetkey")) {
            let (rss, _) = memory_kib(broker_pid);
            println!(
                "{rate:>6} valetkey adds {} / {} / {} µs (p50 / p99 / p99.9) over direct; RSS {} MiB",
                broker[0] - direct[0],
                broker[1] - direct[1],
                broker[2] - direct[2],
                rss / 1024
            );
        }
        if let (Some(path), Some(forward)) = (row.get("valetkey"), row.get("forward")) {
            println!(
                "{rate:>6} the forward proxy adds {} / {} / {} µs (p50 / p99 / p99.9) over /p/",
                forward[0] - path[0],
                forward[1] - path[1],
                forward[2] - path[2],
            );
        }
    }
}

fn throughput(runtime: &tokio::runtime::Runtime, targets: &'static [Target], broker_pid: u32) {
    println!(
        "\nhighest throughput, closed loop: {CONNECTIONS} connections, {} s each, two rounds",
        DURATION.as_secs()
    );
    println!(
        "{:>5} {:>9} {:>9} {:>8} {:>8} {:>7} {:>18}",
        "round", "target", "req/s", "p50 µs", "p99 µs", "errors", "broker CPU µs/req"
    );
    let mut best = std::collections::BTreeMap::<&str, f64>::new();
    for round in 1..=2 {
        for target in targets {
            let cpu = cpu_time(broker_pid);
            let out = closed_loop(runtime, target);
            let cpu = if target.broker {
                format!(
                    "{:.0}",
                    (cpu_time(broker_pid) - cpu).as_micros() as f64 / out.answered as f64
                )
            } else {
                String::new()
            };
            println!(
                "{round:>5} {:>9} {:>9.0} {:>8} {:>8} {:>7} {cpu:>18}",
                target.name,
                out.rate(),
                out.histogram.value_at_quantile(0.5),
                out.histogram.value_at_quantile(0.99),
                out.errors
            );
            let b = best.entry(target.name).or_default();
            *b = b.max(out.rate());
        }
    }
    if let (Some(broker), Some(nginx)) = (best.get("valetkey"), best.get("nginx")) {
        println!("valetkey's best is {:.2}× nginx's", broker / nginx);
    }
}

fn memory(runtime: &tokio::runtime::Runtime, broker: &'static Target, broker_pid: u32) {
    let mib = || memory_kib(broker_pid).0 / 1024;
    let before = mib();
    let connections = runtime.block_on(open_all(broker, MANY_CONNECTIONS));
    std::thread::sleep(Duration::from_millis(200));
    let opened = mib();
    let (out, connections) = open_loop(runtime, broker, connections, 2000);
    println!(
        "\n{} keep-alive connections to valetkey at 2,000/s: p50 {} µs, p99 {} µs, {} errors",
        connections.len(),
        out.histogram.value_at_quantile(0.5),
        out.histogram.value_at_quantile(0.99),
        out.errors,
    );
    let descriptors = std::fs::read_dir(format!("/proc/{broker_pid}/fd")).map_or(0, |d| d.count());
    println!(
        "valetkey's RSS: {before} MiB before, {opened} MiB with them open, {} MiB after the load (peak since start {} MiB); {descriptors} descriptors open",
        mib(),
        memory_kib(broker_pid).1 / 1024
    );
}
