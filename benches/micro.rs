//! Micro-benchmarks of the hot path's pure steps and its one write:
//! credential verification (cold, and cached as the broker does it),
//! GraphQL classification of a small and a large document, REST
//! classification against GitHub's whole pack, the engine `judge` (the
//! misplaced-credential scan, classification and `decide`), `policy::decide`,
//! the scan of an answer for real tokens, the scrub of what is recorded and
//! told, and one durable audit append.
//!
//!   cargo bench --bench micro
//!
//! The broker is the proxy tests' fixture (stand-ins on loopback, a real
//! SQLite file); nothing here is sent anywhere.

#[path = "../tests/common/mod.rs"]
mod common;

// The binary's allocator, so that the figures are the broker's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use serde_json::json;
use valetkey::credentials::{Expected, KeyRing, verify};
use valetkey::policy::{Access, decide};
use valetkey::providers::RequestView;

/// A document a busy agent might send: 25 aliased root fields through one
/// fragment, eight levels deep, with variables.
fn large_document() -> String {
    let mut query = String::from("query Big($p: String!) {");
    for i in 0..25 {
        query.push_str(&format!(" p{i}: project(id: $p) {{ ...P }}"));
    }
    query.push_str(
        " } fragment P on Project { id name services { edges { node { id name \
         deployments(first: 5) { edges { node { id status createdAt } } } } } } }",
    );
    json!({ "query": query, "variables": { "p": "proj_1" } }).to_string()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fixture = rt.block_on(common::fixture::Fixture::start());
    let broker = fixture.broker.broker.clone();
    let credential = fixture.credential.clone();
    let ring = rt.block_on(async {
        let records = broker.store().signing_keys().await.unwrap();
        KeyRing::open(&records, &fixture.broker.master_key()).unwrap()
    });
    let creds = broker.config().credentials.get_ref();
    let expected = Expected {
        issuer: &creds.issuer,
        audience: &creds.audience,
    };
    let now = valetkey::time::unix_secs(SystemTime::now()) as u64;

    c.bench_function("credential/verify (cold: signature and claims)", |b| {
        b.iter(|| verify(black_box(&credential), &ring, &expected, now).unwrap())
    });
    c.bench_function("credential/authenticate (cached, revocation checked)", |b| {
        b.iter(|| broker.authenticate(black_box(&credential), SystemTime::now()).unwrap())
    });

    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    let railway = broker.classifier("railway").unwrap();
    let graphql = |body: &[u8]| {
        railway
            .classify(&RequestView {
                method: &Method::POST,
                path: "/graphql/v2",
                query: None,
                headers: &headers,
                body: Some(body),
            })
            .unwrap()
    };
    let small = json!({ "query": "query { project(id: \"proj_1\") { id name } }" }).to_string();
    let large = large_document();
    c.bench_function("classify/graphql small (1 field)", |b| {
        b.iter(|| graphql(black_box(small.as_bytes())))
    });
    c.bench_function("classify/graphql large (25 aliases, fragment, depth 8)", |b| {
        b.iter(|| graphql(black_box(large.as_bytes())))
    });

    let github = broker.classifier("github").unwrap();
    let rest = |method: &Method, path: &str| {
        github
            .classify(&RequestView {
                method,
                path,
                query: None,
                headers: &headers,
                body: None,
            })
            .unwrap()
    };
    c.bench_function("classify/rest GET contents", |b| {
        b.iter(|| rest(&Method::GET, black_box("/repos/acme/api/contents/src/main.rs")))
    });
    c.bench_function("classify/rest DELETE ref", |b| {
        b.iter(|| rest(&Method::DELETE, black_box("/repos/acme/api/git/refs/heads/feature")))
    });
    c.bench_function("classify/rest GET a resource-free route", |b| {
        b.iter(|| rest(&Method::GET, black_box("/rate_limit")))
    });

    let claims = broker.authenticate(&credential, SystemTime::now()).unwrap();
    let mut request_headers = headers.clone();
    request_headers.insert("authorization", format!("Bearer {credential}").parse().unwrap());
    request_headers.insert("accept", "application/vnd.github+json".parse().unwrap());
    request_headers.insert("user-agent", "gh/2.63.0".parse().unwrap());
    request_headers.insert("x-github-api-version", "2022-11-28".parse().unwrap());
    c.bench_function("proxy/judge GET contents (scan, classify, decide)", |b| {
        b.iter(|| {
            let view = RequestView {
                method: &Method::GET,
                path: black_box("/repos/acme/api/contents/src/main.rs"),
                query: Some("ref=main"),
                headers: &request_headers,
                body: None,
            };
            valetkey::proxy::judge(&broker, github, "github", &claims, &view)
        })
    });

    // An answer as an API sends it: JSON, 1 MiB in 64 KiB chunks.
    let record = br#"{"id":1296269,"node_id":"MDEwOlJlcG9zaXRvcnkxMjk2MjY5","name":"Hello-World","full_name":"octocat/Hello-World","private":false,"html_url":"https://github.com/octocat/Hello-World","description":"This your first repo!","fork":false,"url":"https://api.github.com/repos/octocat/Hello-World"},"#;
    let body: Vec<u8> = record.iter().copied().cycle().take(1 << 20).collect();
    let chunks: Vec<axum::body::Bytes> = body.chunks(64 * 1024).map(axum::body::Bytes::copy_from_slice).collect();
    let redactor = broker.redactor();
    let mut group = c.benchmark_group("redact");
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    group.bench_function("scan a 1 MiB JSON answer in 64 KiB chunks", |b| {
        b.iter(|| {
            use futures_util::StreamExt;
            let stream = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<_, std::io::Error>));
            let scanned = redactor.clone().stream(stream, Box::new(|_| {}));
            rt.block_on(scanned.fold(0usize, |n, c| async move { n + c.unwrap().len() }))
        })
    });
    group.finish();

    let mutation = json!({ "query": "mutation { variableUpsert(input: { projectId: \"proj_1\", environmentId: \"env_stg\", serviceId: \"svc_api\", name: \"LOG_LEVEL\", value: \"debug\" }) }" }).to_string();
    let operations = graphql(mutation.as_bytes()).operations;
    let scopes: Vec<String> = common::claims(&credential)["grants"]["railway"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let access = Access {
        env: "staging",
        provider: "railway",
        scopes: Some(&scopes),
    };
    assert!(decide(broker.rules(), &access, &operations).refusal.is_none());
    c.bench_function("policy/decide (a mutation on three resources)", |b| {
        b.iter(|| decide(broker.rules(), &access, black_box(&operations)))
    });

    // What every refusal told and every event recorded passes through: a
    // refusal's body, as the proxy answers a shared volume's deletion.
    let refusal = serde_json::json!({
        "type": "shared_resource", "title": "Shared resource", "status": 403,
        "detail": "mutation volumeDelete touches volume `vol_db_8e21`, which is shared by staging and production: anything beyond reading it could reach another environment",
        "event_id": "01a24e80-8b31-74f8-89d6-dbfd9d5a22dc",
        "agent_guidance": "Stop. This resource also belongs to another environment, so changing it could damage that environment too. Do not retry, do not look for other credentials or tokens, and do not delete, recreate or reconfigure anything to work around it: ask a human, quoting the event id.",
        "operations": [{ "name": "mutation volumeDelete", "scope": "volume:delete", "tier": "destructive",
            "resources": [{ "kind": "volume", "id": "vol_db_8e21", "owners": ["staging", "production"] }] }],
    });
    c.bench_function("audit/scrub a refusal's body", |b| {
        b.iter(|| valetkey::audit::scrub::json(black_box(&refusal)))
    });

    let event = common::proxy_event();
    c.bench_function("audit/append one event (durable, alone)", |b| {
        b.iter(|| rt.block_on(broker.store().append_audit(&event, 0)).unwrap())
    });
}

criterion_group!(micro, benches);
criterion_main!(micro);
