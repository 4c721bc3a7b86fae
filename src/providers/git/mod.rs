//! git's smart HTTP protocol on GitHub (Documentation/gitprotocol-http.txt):
//! which requests are clones, fetches and pushes, of which repository, and
//! what a push does to its refs and its `.github` directory. Pure: a push's
//! pack is read from the body given; what the pack cannot show (a parent
//! commit the upstream already has) comes in as `KnownCommit`s, learned at
//! the edge, and without them the push is read the strict way.
//!
//! The paths (`/{owner}/{repo}(.git)/info/refs`, `…/git-upload-pack`,
//! `…/git-receive-pack`) are those of the git host, never of GitHub's REST
//! API, so a request recognised here is forwarded to the git upstream.

mod object;
mod pack;
mod pktline;
mod push;
mod request;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use http::{HeaderMap, Method};

pub use object::{Kind, ObjectFormat, Oid};
pub use pack::{Pack, PackLimits, read as read_pack};
pub use pktline::{Pkt, Reader as PktReader, encode as pkt_line};
pub use push::{KnownCommit, Movement, WorkflowDirs, Workflows, workflow_dirs};
pub use request::{PushRequest, RefUpdate};

use super::ClassifyError;
use crate::policy::{Operation, ResourceRef, Tier};

/// What a push's bytes can be refused for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("the git request cannot be read: {0}")]
    Malformed(String),
    #[error("the broker does not read {0}, so cannot tell what the push does")]
    Unsupported(String),
    #[error("the push has more {what} than the broker reads ({found}, over {limit})")]
    TooLarge {
        what: &'static str,
        limit: usize,
        found: usize,
    },
}

impl From<GitError> for ClassifyError {
    fn from(e: GitError) -> Self {
        match e {
            GitError::TooLarge { what, limit, found } => ClassifyError::TooComplex { what, limit, found },
            other => ClassifyError::Malformed(other.to_string()),
        }
    }
}

/// The scopes of GitHub's pack that git requests need.
const READ: &str = "read";
const CONTENTS: &str = "contents:write";
pub const WORKFLOWS: &str = "workflows:write";
const REWRITE: &str = "branch:delete";
const PROTECTED: &str = "branch:protected";
const REPOSITORY: &str = "repository";

/// A git request the classifier recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET …/info/refs?service=git-upload-pack`: the refs a clone or fetch
    /// starts from.
    FetchRefs,
    /// `POST …/git-upload-pack`: a clone's or fetch's objects.
    Fetch,
    /// `GET …/info/refs?service=git-receive-pack`: the refs a push starts
    /// from.
    PushRefs,
    /// `POST …/git-receive-pack`: the push.
    Push,
}

/// The route and repository (`owner/repo`, `.git` taken off) of a git
/// request, if `segments` are a git path; `None` for every REST path.
pub fn recognise(
    method: &Method,
    segments: &[String],
    query: Option<&str>,
) -> Option<Result<(Route, String), ClassifyError>> {
    let (owner, repo, tail) = match segments {
        [owner, repo, info, refs] if info == "info" && refs == "refs" => (owner, repo, "info/refs"),
        [owner, repo, service] if service == "git-upload-pack" || service == "git-receive-pack" => {
            (owner, repo, service.as_str())
        }
        _ => return None,
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    if repo.is_empty() {
        return Some(Err(ClassifyError::Malformed("the git path names no repository".into())));
    }
    let repository = format!("{owner}/{repo}");
    let head = *method == Method::GET || *method == Method::HEAD;
    let route = match tail {
        "info/refs" if head => match advertised_service(query) {
            Ok("git-upload-pack") => Route::FetchRefs,
            Ok("git-receive-pack") => Route::PushRefs,
            Ok(other) => {
                return Some(Err(ClassifyError::Malformed(format!(
                    "`{other}` is not a git service the broker knows"
                ))));
            }
            Err(e) => return Some(Err(e)),
        },
        "git-upload-pack" if *method == Method::POST => Route::Fetch,
        "git-receive-pack" if *method == Method::POST => Route::Push,
        // A dumb-protocol read or another method: no rule names it.
        _ => return None,
    };
    Some(Ok((route, repository)))
}

/// `service=…`, the one parameter a smart ref advertisement takes.
fn advertised_service(query: Option<&str>) -> Result<&str, ClassifyError> {
    match query.map(|q| q.split('&').collect::<Vec<_>>()).as_deref() {
        Some([one]) => one.strip_prefix("service=").ok_or_else(|| {
            ClassifyError::Malformed("a git ref advertisement takes `service=` and nothing else".into())
        }),
        _ => Err(ClassifyError::Malformed(
            "a git ref advertisement takes one `service=` parameter (the dumb protocol is not served)".into(),
        )),
    }
}

/// What the github kind knows for git requests: its scopes' tiers and the
/// branches ops protect.
#[derive(Debug, Clone)]
pub struct GitSpec {
    tiers: BTreeMap<String, Tier>,
    protected: Vec<String>,
    pub limits: PackLimits,
}

impl GitSpec {
    pub fn new(tiers: &BTreeMap<String, Tier>) -> GitSpec {
        GitSpec {
            tiers: tiers.clone(),
            protected: Vec::new(),
            limits: PackLimits::default(),
        }
    }

    pub fn protect(&mut self, patterns: &[String]) {
        self.protected = patterns.to_vec();
    }

    fn op(&self, name: String, scope: &str, repository: &str) -> Operation {
        Operation {
            name,
            scope: Some(scope.to_owned()),
            // A scope the provider lost is the strictest.
            tier: self.tiers.get(scope).copied().unwrap_or(Tier::Catastrophic),
            resources: vec![ResourceRef {
                kind: REPOSITORY.to_owned(),
                id: repository.to_owned(),
            }],
            named_by_arguments: 1,
            within_environment: false,
            resource_free: false,
            refused_by_pack: None,
            nested_objects: false,
            beyond: None,
        }
    }

    fn is_protected(&self, branch: &str) -> bool {
        self.protected.iter().any(|p| glob(p, branch))
    }

    /// The operations of a recognised git request. `known` holds what
    /// was learned of commits outside a push's pack; the second value
    /// names the commits that, learned, could settle what is unknown.
    pub fn operations(
        &self,
        route: Route,
        repository: &str,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        known: &HashMap<Oid, KnownCommit>,
    ) -> Result<(Vec<Operation>, BTreeSet<Oid>), ClassifyError> {
        let one = |name: &str, scope| Ok((vec![self.op(name.to_owned(), scope, repository)], BTreeSet::new()));
        match route {
            Route::FetchRefs => one("git fetch: refs (info/refs)", READ),
            Route::Fetch => one("git fetch (git-upload-pack)", READ),
            // Only a push follows; asking for it with no right to push
            // is refused here rather than after the pack is built.
            Route::PushRefs => one("git push: refs (info/refs)", CONTENTS),
            Route::Push => self.push(repository, headers, body.unwrap_or_default(), known),
        }
    }

    fn push(
        &self,
        repository: &str,
        headers: &HeaderMap,
        body: &[u8],
        known: &HashMap<Oid, KnownCommit>,
    ) -> Result<(Vec<Operation>, BTreeSet<Oid>), ClassifyError> {
        super::body::unencoded(headers)?;
        let media = headers.get(http::header::CONTENT_TYPE).map(|v| v.as_bytes());
        if media != Some(b"application/x-git-receive-pack-request") {
            return Err(ClassifyError::UnsupportedMediaType(
                "a push is `Content-Type: application/x-git-receive-pack-request`".into(),
            ));
        }
        let request = request::parse(body)?;
        let external = known.values().map(|k| (k.tree.clone(), k.tree_data.clone())).collect();
        let pack = match request.pack {
            Some(bytes) => pack::read(request.format, bytes, &self.limits, &external)?,
            None => Pack::default(),
        };
        let mut ops = Vec::new();
        if request.updates.is_empty() {
            ops.push(self.op("git push: no ref updates".to_owned(), CONTENTS, repository));
        }
        for update in &request.updates {
            let movement = push::movement(update, &pack);
            let (what, mut scope) = match movement {
                Movement::Create => ("create", CONTENTS),
                Movement::FastForward => ("fast-forward", CONTENTS),
                Movement::Delete => ("delete", REWRITE),
                Movement::Unproven => ("rewrite (not a fast-forward the pack proves)", REWRITE),
            };
            let protected = update.branch().is_some_and(|b| self.is_protected(b));
            if protected && self.tier(PROTECTED) > self.tier(scope) {
                scope = PROTECTED;
            }
            let mark = if protected { ", a protected branch" } else { "" };
            ops.push(self.op(format!("git push: {what} {}{mark}", update.name), scope, repository));
        }
        let workflows = push::workflows(request.format, &request.updates, &pack, known);
        let learn = match workflows {
            Workflows::Untouched => BTreeSet::new(),
            Workflows::Changed => {
                ops.push(self.op("git push: commits changing .github".to_owned(), WORKFLOWS, repository));
                BTreeSet::new()
            }
            Workflows::Unknown { learn } => {
                ops.push(self.op(
                    "git push: commits whose change to .github cannot be told (read as changing it)".to_owned(),
                    WORKFLOWS,
                    repository,
                ));
                learn
            }
        };
        Ok((ops, learn))
    }

    fn tier(&self, scope: &str) -> Tier {
        self.tiers.get(scope).copied().unwrap_or(Tier::Catastrophic)
    }
}

/// `*` matches any run of characters, `/` included (so `release/*`
/// covers `release/1.0/hotfix`); letters match in any case. Both err on
/// the side of protecting.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return p == n;
    };
    let Some(mut rest) = n.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests;
