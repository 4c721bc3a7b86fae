//! Responses stream through the broker: a body far larger than any buffer
//! passes without the process's memory growing with it, and the first bytes
//! reach the agent before the upstream has sent the rest.
//!
//! Alone in its own test binary, so the peak memory measured is this test's.

mod common;

use std::collections::BTreeMap;

use common::TestBroker;
use common::upstream::StandIn;
use futures_util::StreamExt;
use serde_json::json;

const TOKEN: &str = "ghs_streamingStandInToken";
const BODY_BYTES: u64 = 256 * 1024 * 1024;

/// The most memory this process has held at once (VmHWM), in bytes.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn large_and_slow_responses_stream_through() {
    let github = StandIn::github(&[TOKEN]).await;
    let config = format!(
        r#"
[environments.staging]

[providers.github]
kind = "github"
upstream = "{}"
tokens = {{ staging = {{ env = "GITHUB_STAGING" }} }}

[[resources]]
provider = "github"
kind = "repository"
id = "acme/api"
environments = ["staging"]

[agents.claude]
grants = [{{ provider = "github", environments = ["staging"], scopes = ["read"] }}]
"#,
        github.url
    );
    let env = BTreeMap::from([("GITHUB_STAGING".to_owned(), TOKEN.to_owned())]);
    let broker = TestBroker::start_with(&config, env).await;
    let key = broker.add_agent("claude").await;
    let (_, minted) = broker.mint(&key, json!({ "env": "staging" })).await;
    let credential = minted["credential"].as_str().unwrap().to_owned();

    let before = peak_memory();
    let response = broker
        .http
        .get(format!("{}/p/github/repos/acme/api/tarball/{BODY_BYTES}", broker.url))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(BODY_BYTES));
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, BODY_BYTES);
    let grown = peak_memory().saturating_sub(before);
    assert!(
        grown < BODY_BYTES / 4,
        "peak memory grew by {} MiB while {} MiB passed through",
        grown >> 20,
        BODY_BYTES >> 20
    );

    // The first chunk arrives while the upstream still holds the rest back:
    // a broker that buffered the response would never deliver it.
    let response = broker
        .http
        .get(format!("{}/p/github/repos/acme/api/zipball/main", broker.url))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    github.assert_slow_answer_streamed(response).await;
}
