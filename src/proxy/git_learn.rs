//! What a push's pack does not show, learned from the git host: the root
//! tree of each parent commit the push builds on (the usual case: the new
//! commits sit on the remote's tip, which the pack leaves out). One
//! `git-upload-pack` request (protocol v0, stateless) with the broker's
//! real token asks for those commits with `deepen 1` and `filter tree:1`
//! (each commit and its root tree, nothing below); the pack answered is
//! read by the same reader as a push's. Anything that goes wrong learns
//! nothing, and the push stays read the strict way. Nothing is forwarded
//! to the agent.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use futures_util::StreamExt;

use crate::broker::Broker;
use crate::credentials::Claims;
use crate::policy::{self, Access};
use crate::providers::git::{self, KnownCommit, ObjectFormat, Oid, Pkt, PktReader, pkt_line};
use crate::providers::{Classifier, RequestView};
use crate::secrets::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("the git host could not be asked: {0}")]
    Unreachable(String),
    #[error("the git host answered HTTP {0}")]
    Status(u16),
    #[error("the git host's answer is over {0} bytes")]
    TooLarge(usize),
    #[error("the git host's answer cannot be read: {0}")]
    Unreadable(String),
}

/// The upload-pack request for `commits`: wants, `deepen 1`, a filter
/// keeping root trees only, and `done` (no haves: the broker has nothing).
pub fn request(format: ObjectFormat, commits: &BTreeSet<Oid>) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, commit) in commits.iter().enumerate() {
        let capabilities = match (i, format) {
            (0, ObjectFormat::Sha1) => " no-progress shallow filter",
            (0, ObjectFormat::Sha256) => " no-progress shallow filter object-format=sha256",
            _ => "",
        };
        body.extend(pkt_line(format!("want {commit}{capabilities}\n").as_bytes()));
    }
    body.extend(pkt_line(b"deepen 1\n"));
    body.extend(pkt_line(b"filter tree:1\n"));
    body.extend_from_slice(b"0000");
    body.extend(pkt_line(b"done\n"));
    body
}

/// What the answer says of `commits`: the shallow section, `NAK`, then
/// the pack, with each commit and its root tree.
pub fn read_answer(
    format: ObjectFormat,
    answer: &[u8],
    commits: &BTreeSet<Oid>,
    limits: &git::PackLimits,
) -> Result<HashMap<Oid, KnownCommit>, LearnError> {
    let unreadable = |why: String| LearnError::Unreadable(why);
    let mut lines = PktReader::new(answer);
    loop {
        match lines.next_pkt().map_err(|e| unreadable(e.to_string()))? {
            Pkt::Flush => break,
            Pkt::Data(line) if line.starts_with(b"shallow ") || line.starts_with(b"unshallow ") => {}
            Pkt::Data(line) => return Err(unreadable(String::from_utf8_lossy(line).trim().to_owned())),
            Pkt::Delim | Pkt::ResponseEnd => return Err(unreadable("a special packet".into())),
        }
    }
    match lines.next_pkt().map_err(|e| unreadable(e.to_string()))? {
        Pkt::Data(b"NAK\n") | Pkt::Data(b"NAK") => {}
        other => return Err(unreadable(format!("{other:?} where NAK belongs"))),
    }
    let pack = git::read_pack(format, lines.rest(), limits, &HashMap::new()).map_err(|e| unreadable(e.to_string()))?;
    let mut known = HashMap::new();
    for id in commits {
        let Some(commit) = pack.commits.get(id) else { continue };
        let Some(tree) = pack.trees.get(&commit.tree) else {
            continue;
        };
        let Some(dirs) = git::workflow_dirs(format, tree) else {
            continue;
        };
        known.insert(
            id.clone(),
            KnownCommit {
                tree: commit.tree.clone(),
                dirs,
                tree_data: tree.clone(),
            },
        );
    }
    Ok(known)
}

/// Asks `url` (the repository's `…/git-upload-pack`) and reads at most
/// `limit` bytes of its answer.
pub async fn learn(
    client: &reqwest::Client,
    url: reqwest::Url,
    token: &SecretString,
    format: ObjectFormat,
    commits: &BTreeSet<Oid>,
    limit: usize,
) -> Result<HashMap<Oid, KnownCommit>, LearnError> {
    let mut authorization =
        http::HeaderValue::from_str(&format!("Basic {}", super::forward::git_basic(token).expose_secret()))
            .map_err(|_| LearnError::Unreachable("the token is not a header value".into()))?;
    authorization.set_sensitive(true);
    let response = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/x-git-upload-pack-request")
        .header(http::header::ACCEPT, "application/x-git-upload-pack-result")
        .header(http::header::ACCEPT_ENCODING, "identity")
        .header(http::header::AUTHORIZATION, authorization)
        .body(request(format, commits))
        .send()
        .await
        .map_err(|e| LearnError::Unreachable(super::forward::error_chain(e)))?;
    if !response.status().is_success() {
        return Err(LearnError::Status(response.status().as_u16()));
    }
    let mut answer = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| LearnError::Unreachable(super::forward::error_chain(e)))?;
        if answer.len() + chunk.len() > limit {
            return Err(LearnError::TooLarge(limit));
        }
        answer.extend_from_slice(&chunk);
    }
    read_answer(format, &answer, commits, &git::PackLimits::default())
}

/// The parent commits a push's pack leaves out, learned from the git host
/// with the real token, when knowing them could change the answer: the
/// push is refused for the workflow scope it may not need, and otherwise
/// at most held for a human (who could not lift a scope not granted).
/// Anything that fails learns nothing (the push stays read the strict way).
pub(super) async fn parents(
    broker: &Broker,
    classifier: &Classifier,
    provider: &str,
    claims: &Claims,
    view: &RequestView<'_>,
) -> super::Known {
    let Ok(classified) = super::off_the_runtime(true, || classifier.classify(view)) else {
        return super::Known::default();
    };
    let Some(format) = classified.learn.first().map(crate::providers::git::Oid::format) else {
        return super::Known::default();
    };
    let access = Access {
        env: &claims.env,
        provider,
        scopes: claims.grants.get(provider).map(Vec::as_slice),
    };
    let workflows = crate::providers::git::WORKFLOWS;
    let others: Vec<_> = classified
        .operations
        .iter()
        .filter(|o| o.scope.as_deref() != Some(workflows))
        .cloned()
        .collect();
    let held = access.scopes.is_some_and(|s| s.iter().any(|h| h == workflows));
    let blocked = policy::decide(broker.rules(), &access, &others)
        .refusal
        .is_some_and(|r| r.kind() != "approval_required");
    if held || blocked {
        return super::Known::default();
    }
    let real = broker.real_tokens();
    let Some(token) = real.token(provider, &claims.env) else {
        return super::Known::default();
    };
    let provider_config = broker.config().providers[provider].get_ref();
    let base = provider_config.git_upstream().unwrap_or_default().trim_end_matches('/');
    let repository = classified.path.trim_end_matches("/git-receive-pack");
    let Ok(url) = reqwest::Url::parse(&format!("{base}{repository}/git-upload-pack")) else {
        return super::Known::default();
    };
    let limit = broker.config().proxy.max_inspected_push_bytes;
    match learn(broker.upstream_client(), url, token, format, &classified.learn, limit).await {
        Ok(known) => known,
        Err(error) => {
            tracing::info!(%provider, %error, "could not learn a push's parent commits; it is read as changing .github");
            super::Known::default()
        }
    }
}
