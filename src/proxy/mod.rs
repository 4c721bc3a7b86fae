//! The proxy path, `ANY /p/{provider}/{path…}`: the hot path of the broker.
//!
//! authenticate → classify (pure) → decide (pure) → record → forward. A
//! request reaches the upstream only after its decision is durable in the
//! audit trail; a refused request reaches nobody. Only the body of a request
//! that must be parsed (GraphQL) is read, and only up to a bound; every other
//! body, and every response, streams.

pub mod check;
mod forward;
mod git_learn;
pub mod held;
mod misplaced;
pub mod redact;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, header};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

pub use forward::{CREDENTIAL_HEADERS, ForwardError, error_chain};
pub use held::{Held, unusable_kind};

use crate::admin::Actor;
use crate::api::Problem;
use crate::approvals;
use crate::audit::{Event, EventKind};
use crate::broker::{AuthError, Broker, RefusedCredential};
use crate::credentials::Claims;
use crate::peer::Client;
use crate::policy::{self, Access, BoundOperation, Refusal};
use crate::providers::{Classifier, ClassifyError, RequestView};
use crate::store::StoreError;
use crate::time::unix_ms;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("there is no provider `{provider}`; the proxied providers are: {}", known.join(", "))]
    UnknownProvider { provider: String, known: Vec<String> },
    #[error(transparent)]
    Auth(#[from] RefusedCredential),
    #[error("the request carries two different credentials (in `Authorization` and `Project-Access-Token`); send one")]
    AmbiguousCredential,
    /// `event_id` is `None` for `/v1/check`, which records nothing.
    #[error(
        "your valetkey credential is in {place}, where the broker does not read it and a provider would receive it; the request was sent nowhere. Send the credential only in `Authorization` (or `Project-Access-Token`) and remove it from {place}"
    )]
    CredentialMisplaced { place: String, event_id: Option<String> },
    #[error(
        "the request body is over {limit} bytes, the most the broker reads to classify a request (`[proxy] {setting}`)"
    )]
    BodyTooLarge { limit: usize, setting: &'static str },
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    /// `event_id` is `None` for `/v1/check`, which records nothing.
    #[error("{error}")]
    Unclassifiable {
        error: ClassifyError,
        event_id: Option<String>,
    },
    #[error("{refusal}")]
    Refused {
        refusal: Box<Refusal>,
        operations: Vec<BoundOperation>,
        event_id: Option<String>,
        /// Where a human's approval stands for it.
        approval: Option<Box<held::Held>>,
    },
    /// A request resent under an approval it may not use.
    #[error("{}", held::unusable_detail(*why, approval_id))]
    ApprovalUnusable {
        why: crate::approvals::Unusable,
        approval_id: String,
        event_id: String,
    },
    #[error("the broker holds no token for provider `{provider}` in environment `{env}`")]
    NoUpstreamToken {
        provider: String,
        env: String,
        event_id: Option<String>,
    },
    #[error("{error}")]
    Forward { error: ForwardError, event_id: String },
    #[error(
        "provider `{provider}` rejected the broker's own token for `{env}` (HTTP {status}): the broker's configuration is wrong, not your request"
    )]
    UpstreamRejected {
        provider: String,
        env: String,
        status: u16,
        event_id: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The axum handler.
pub async fn handle(State(broker): State<Arc<Broker>>, Client(client): Client, request: Request) -> Response {
    match proxy(&broker, client, request).await {
        Ok(response) => response,
        Err(e) => {
            let mut response = Problem::from(e).into_response();
            // git (curl) sends the credential in its URL only when asked.
            if response.status() == http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Basic realm=\"valetkey\""),
                );
            }
            response
        }
    }
}

async fn proxy(broker: &Arc<Broker>, client: IpAddr, request: Request) -> Result<Response, ProxyError> {
    let now = SystemTime::now();
    let (parts, body) = request.into_parts();
    let (provider, rest) = route(parts.uri.path());
    let Some(classifier) = broker.classifier(&provider) else {
        return Err(ProxyError::UnknownProvider {
            provider,
            known: broker.proxied_providers(),
        });
    };
    // A credential only where it does not belong still says who sent the
    // request, so that its refusal is recorded under the agent's name.
    let misplaced = misplaced::find(&parts.headers, &rest, parts.uri.query(), None);
    let presented = match (presented_credential(&parts.headers)?, &misplaced) {
        (Some(presented), _) => presented,
        (None, Some(m)) => std::borrow::Cow::Borrowed(m.credential.as_str()),
        (None, None) => return Err(unrecorded(AuthError::Missing)),
    };
    let route = format!("/p/{provider}");
    let needs_body = classifier.needs_body(&parts.method, &rest, &parts.headers);
    let git_push = classifier.is_git_push(&parts.method, &rest);
    let declared = declared_length(&parts.headers).filter(|_| needs_body);
    screen(
        broker,
        parts.uri.query(),
        declared.map(|n| (n, git_push)),
        &route,
        now,
        client,
    )
    .await?;
    let claims = broker.authenticate_at(&presented, &route, now, client).await?;

    let (inspected, body) = if needs_body {
        (
            Some(read_bounded(body, &parts.headers, Bound::of(broker, git_push)).await?),
            None,
        )
    } else {
        (None, Some(body))
    };
    let view = RequestView {
        method: &parts.method,
        path: &rest,
        query: parts.uri.query(),
        headers: &parts.headers,
        body: inspected.as_deref(),
    };
    let record = Recorder {
        broker,
        claims: &claims,
        provider: &provider,
        method: &parts.method,
        now,
    };
    let known = match git_push {
        true => git_learn::parents(broker, classifier, &provider, &claims, &view).await,
        false => Default::default(),
    };
    let judgement = off_the_runtime(git_push, || {
        judge_knowing(broker, classifier, &provider, &claims, &view, &known)
    });
    let (mut inspected, mut body) = (inspected, body);
    let settled = match (&judgement.refused, &judgement.approval) {
        (Some(Refused::Policy(_)), Some(need)) => Some(
            held::settle(
                broker,
                &claims,
                &provider,
                &parts,
                &judgement.path,
                need,
                &mut inspected,
                &mut body,
                &record,
                now,
            )
            .await?,
        ),
        _ => None,
    };
    let (spent, settled) = match settled {
        Some(held::Settled::Spent(approval)) => (Some(approval), None),
        other => (None, other),
    };
    if let Some(refused) = judgement.refused.filter(|_| spent.is_none()) {
        let event_id = match &refused {
            Refused::Misplaced(place) => {
                let reason = format!("the agent's credential was in {place}");
                record
                    .refused(&judgement.path, "credential_misplaced", &reason, &[])
                    .await?
            }
            Refused::Unclassifiable(error) => {
                record
                    .refused(&judgement.path, error.kind(), &error.audit_reason(), &[])
                    .await?
            }
            Refused::Policy(refusal) => {
                record
                    .refused_policy(&judgement.path, refusal, &judgement.operations)
                    .await?
            }
            Refused::NoUpstreamToken => {
                let reason = format!("no token for provider `{provider}` in `{}`", claims.env);
                record
                    .refused(
                        &judgement.path,
                        "upstream_token_missing",
                        &reason,
                        &judgement.operations,
                    )
                    .await?
            }
        };
        let held = match (&refused, &judgement.approval, settled) {
            (Refused::Policy(_), Some(need), Some(held::Settled::Unspent { digest })) => {
                let hold = approvals::flow::Hold {
                    claims: &claims,
                    provider: &provider,
                    method: parts.method.as_str(),
                    path: &judgement.path,
                    query: parts.uri.query(),
                    need,
                    operations: &judgement.operations,
                    digest,
                    event_id: &event_id,
                };
                Some(held::hold(broker, hold, now).await?)
            }
            (_, _, Some(held::Settled::Unavailable(why))) => Some(held::Held::Unavailable(why)),
            _ => None,
        };
        let mut error = refused.into_error(judgement.operations, &provider, &claims.env, Some(event_id));
        if let ProxyError::Refused { approval, .. } = &mut error {
            *approval = held.map(Box::new);
        }
        return Err(error);
    }
    // One snapshot of the real tokens gives both the token sent and the
    // redactor of the answer: a `secret set` between them must not send a
    // new token that the redactor does not know yet.
    let real = broker.real_tokens();
    // `judge` refused when there is no token; this only keeps the type honest.
    let Some(token) = real.token(&provider, &claims.env) else {
        return Err(Refused::NoUpstreamToken.into_error(judgement.operations, &provider, &claims.env, None));
    };
    let classified_path = judgement.path;
    let event_id = match &spent {
        // Its event is the decision: recorded before anything is sent.
        Some(approval) => broker.approval_used(approval, now).await?,
        None => record.allowed(&classified_path, &judgement.operations).await?,
    };

    let provider_config = broker.config().providers[&provider].get_ref();
    let git_auth = judgement.git.then(|| (git_basic_auth(), forward::git_basic(token)));
    let (auth, token) = match &git_auth {
        Some((auth, basic)) => (auth, basic),
        None => (&provider_config.auth, token),
    };
    let base = match judgement.git {
        true => provider_config.git_upstream(),
        false => provider_config.upstream(),
    };
    let base = base.unwrap_or_default().trim_end_matches('/');
    let url = format!("{base}{}", path_and_query(&classified_path, parts.uri.query()));
    let url = reqwest::Url::parse(&url).map_err(|e| ProxyError::Forward {
        error: ForwardError::Unreachable(format!("the upstream URL does not parse: {e}")),
        event_id: event_id.clone(),
    })?;
    let (body, keep_length) = match (inspected, body) {
        (Some(bytes), _) => (reqwest::Body::from(bytes), false),
        (None, Some(body)) if has_body(&parts.headers) => (reqwest::Body::wrap_stream(body.into_data_stream()), true),
        (None, _) => (reqwest::Body::from(Bytes::new()), false),
    };
    let outbound = forward::Outbound {
        method: parts.method.clone(),
        url,
        headers: &parts.headers,
        body,
        keep_length,
        auth,
        token,
        redactor: real.redactor(),
        on_echo: record.on_echo(broker.clone(), &classified_path, &event_id),
    };
    match forward::send(broker.upstream_client(), outbound).await {
        Ok(response) => Ok(response),
        Err(ForwardError::Rejected { status }) => {
            let event_id = record.upstream_rejected(&classified_path, status, &event_id).await?;
            Err(ProxyError::UpstreamRejected {
                provider,
                env: claims.env.clone(),
                status,
                event_id,
            })
        }
        Err(error) => {
            tracing::warn!(%provider, event_id, %error, "upstream request failed");
            Err(ProxyError::Forward { error, event_id })
        }
    }
}

/// Why the engine refuses a request.
#[derive(Debug)]
pub enum Refused {
    /// The agent's credential is where a provider would receive it.
    Misplaced(String),
    Unclassifiable(ClassifyError),
    Policy(Refusal),
    /// Allowed, but the broker holds no token to send it with.
    NoUpstreamToken,
}

impl Refused {
    pub fn into_error(
        self,
        operations: Vec<BoundOperation>,
        provider: &str,
        env: &str,
        event_id: Option<String>,
    ) -> ProxyError {
        match self {
            Refused::Misplaced(place) => ProxyError::CredentialMisplaced { place, event_id },
            Refused::Unclassifiable(error) => ProxyError::Unclassifiable { error, event_id },
            Refused::Policy(refusal) => ProxyError::Refused {
                refusal: Box::new(refusal),
                operations,
                event_id,
                approval: None,
            },
            Refused::NoUpstreamToken => ProxyError::NoUpstreamToken {
                provider: provider.to_owned(),
                env: env.to_owned(),
                event_id,
            },
        }
    }
}

/// What the engine made of a request.
#[derive(Debug)]
pub struct Judgement {
    /// The canonical path to forward (the raw one when it could not be read).
    pub path: String,
    pub operations: Vec<BoundOperation>,
    pub refused: Option<Refused>,
    /// What approving the refused request would take, when a human may.
    pub approval: Option<policy::ApprovalNeed>,
    /// git traffic, for the provider's git host.
    pub git: bool,
}

/// Runs `work` where it does not hold up the runtime's other tasks when it is
/// `heavy`: a push's pack is parsed whole (up to `[proxy]
/// max_inspected_push_bytes`, about a second of CPU at the most). On a
/// runtime of one thread (tests) there is nowhere else to run it.
fn off_the_runtime<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    let threads = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if heavy && threads {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// The one engine the proxy and `/v1/check` share: classify, decide, and
/// make sure the broker could forward. No I/O: the broker's compiled rules
/// and loaded tokens are read, nothing is written.
pub fn judge(
    broker: &Broker,
    classifier: &Classifier,
    provider: &str,
    claims: &Claims,
    view: &RequestView<'_>,
) -> Judgement {
    judge_knowing(broker, classifier, provider, claims, view, &Default::default())
}

/// `judge`, with what the broker learned of commits outside a git push's
/// pack.
fn judge_knowing(
    broker: &Broker,
    classifier: &Classifier,
    provider: &str,
    claims: &Claims,
    view: &RequestView<'_>,
    known: &Known,
) -> Judgement {
    if let Some(found) = misplaced::find(view.headers, view.path, view.query, view.body) {
        return Judgement {
            path: view.path.to_owned(),
            operations: Vec::new(),
            refused: Some(Refused::Misplaced(found.place)),
            approval: None,
            git: false,
        };
    }
    let classified = match classifier.classify_knowing(view, known) {
        Ok(c) => c,
        Err(error) => {
            return Judgement {
                path: view.path.to_owned(),
                operations: Vec::new(),
                refused: Some(Refused::Unclassifiable(error)),
                approval: None,
                git: false,
            };
        }
    };
    let access = Access {
        env: &claims.env,
        provider,
        scopes: claims.grants.get(provider).map(Vec::as_slice),
    };
    let decision = policy::decide(broker.rules(), &access, &classified.operations);
    let approval = policy::approval_need(broker.rules(), &access, &classified.operations, &decision);
    let refused = match decision.refusal {
        Some(refusal) => Some(Refused::Policy(refusal)),
        None if !broker.has_upstream_token(provider, &claims.env) => Some(Refused::NoUpstreamToken),
        None => None,
    };
    Judgement {
        path: classified.path,
        operations: decision.operations,
        refused,
        approval,
        git: classified.git,
    }
}

type Known = std::collections::HashMap<crate::providers::git::Oid, crate::providers::git::KnownCommit>;

/// How git's host takes the real token: Basic, the token as the password.
fn git_basic_auth() -> crate::config::AuthConfig {
    crate::config::AuthConfig {
        header: header::AUTHORIZATION.to_string(),
        prefix: "Basic ".to_owned(),
    }
}

fn path_and_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// `/p/{provider}{rest}` → (provider, rest), `rest` still raw.
fn route(path: &str) -> (String, String) {
    let after = path.strip_prefix("/p/").unwrap_or_default();
    let (provider, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let provider = percent_encoding::percent_decode_str(provider)
        .decode_utf8_lossy()
        .into_owned();
    (provider, rest.to_owned())
}

/// The credential the agent sent, in whichever header its provider's
/// clients use: `Authorization: Bearer …`, `Authorization: token …`
/// (GitHub), `Authorization: Basic …` (git; the password, or the user when
/// there is none) or `Project-Access-Token: …` (Railway).
pub(crate) fn presented_credential(headers: &HeaderMap) -> Result<Option<std::borrow::Cow<'_, str>>, ProxyError> {
    let not_text = || {
        unrecorded(AuthError::Credential(crate::credentials::VerifyError::Malformed {
            why: "the credential header is not text",
        }))
    };
    let mut found: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    for name in &CREDENTIAL_HEADERS {
        for value in headers.get_all(name) {
            let text = value.to_str().map_err(|_| not_text())?.trim();
            let credential = if *name == header::AUTHORIZATION {
                match text.split_once(' ') {
                    Some((scheme, rest))
                        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") =>
                    {
                        std::borrow::Cow::Borrowed(rest.trim())
                    }
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                        std::borrow::Cow::Owned(basic_secret(rest.trim()).ok_or_else(not_text)?)
                    }
                    _ => std::borrow::Cow::Borrowed(text),
                }
            } else {
                std::borrow::Cow::Borrowed(text)
            };
            if !found.contains(&credential) {
                found.push(credential);
            }
        }
    }
    let mut found = found.into_iter();
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(one), None) => Ok(Some(one)),
        // A provider's own token beside the credential is still a leaked
        // token: it is what gets named (and alerted), not the ambiguity.
        (Some(a), Some(b)) => match [a, b]
            .into_iter()
            .chain(found)
            .find(|c| !c.starts_with(crate::credentials::PREFIX))
        {
            Some(foreign) => Ok(Some(foreign)),
            None => Err(ProxyError::AmbiguousCredential),
        },
    }
}

/// The secret of a `Basic` credential: the password, or the user name when
/// the password is empty (tools put a token in either).
pub(crate) fn basic_secret(encoded: &str) -> Option<String> {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Some(if password.is_empty() { user } else { password }.to_owned())
}

/// What every entry runs on a request before judging it: the proxy on the
/// request it received, `/v1/check` and `/v1/approvals` (and the MCP tools
/// over them) on the request described, so that none can let through what
/// another refuses. A provider's own token in the query string is a leaked
/// token: refused, recorded and alerted as one presented for a credential.
/// A body the broker must inspect (`inspected`: its length, as declared or
/// as given) is bounded: refused, recorded nowhere.
pub(crate) async fn screen(
    broker: &Broker,
    query: Option<&str>,
    inspected: Option<(u64, bool)>,
    route: &str,
    now: SystemTime,
    client: IpAddr,
) -> Result<(), ProxyError> {
    if let Some(leaked) = token_in_query(query) {
        return Err(broker.refuse_foreign_token(&leaked, route, now, client).await.into());
    }
    if let Some((length, git_push)) = inspected {
        Bound::of(broker, git_push).check(length)?;
    }
    Ok(())
}

/// The most the broker reads of a body it must classify, and the setting
/// that says so: a git push carries its pack, so it has its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub limit: usize,
    pub setting: &'static str,
}

impl Bound {
    pub(crate) fn of(broker: &Broker, git_push: bool) -> Bound {
        let proxy = &broker.config().proxy;
        match git_push {
            true => Bound {
                limit: proxy.max_inspected_push_bytes,
                setting: "max_inspected_push_bytes",
            },
            false => Bound {
                limit: proxy.max_inspected_body_bytes,
                setting: "max_inspected_body_bytes",
            },
        }
    }

    fn check(self, length: u64) -> Result<(), ProxyError> {
        match length > self.limit as u64 {
            true => Err(self.too_large()),
            false => Ok(()),
        }
    }

    fn too_large(self) -> ProxyError {
        ProxyError::BodyTooLarge {
            limit: self.limit,
            setting: self.setting,
        }
    }
}

/// A provider token passed in the query string (`?access_token=ghp_…`, or
/// as a parameter's name), recognised by a shape that alone says it is a
/// token (`credentials::foreign`); percent-encoding is undone first.
fn token_in_query(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .flat_map(|(name, value)| [name, value])
        .find(|text| {
            crate::credentials::is_known_provider_token(text)
                || crate::credentials::foreign::shape(text).is_some_and(|(_, by_shape)| by_shape)
        })
        .map(|text| text.into_owned())
}

/// The body's length as its `Content-Length` declares it.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A credential refusal that is bad input only: nothing to record.
fn unrecorded(error: AuthError) -> ProxyError {
    ProxyError::Auth(RefusedCredential { error, event_id: None })
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Reads a body that must be classified, refusing it past `limit` bytes
/// without reading further.
async fn read_bounded(body: Body, headers: &HeaderMap, bound: Bound) -> Result<Bytes, ProxyError> {
    if let Some(length) = declared_length(headers) {
        bound.check(length)?;
    }
    match Limited::new(body, bound.limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(bound.too_large()),
        Err(e) => Err(ProxyError::BodyRead(e.to_string())),
    }
}

/// Writes one request's decision to the audit trail.
struct Recorder<'a> {
    broker: &'a Broker,
    claims: &'a Claims,
    provider: &'a str,
    method: &'a Method,
    now: SystemTime,
}

impl Recorder<'_> {
    async fn allowed(&self, path: &str, operations: &[BoundOperation]) -> Result<String, StoreError> {
        let detail = json!({
            "decision": "allow",
            "provider": self.provider,
            "method": self.method.as_str(),
            "path": path,
            "lease_id": self.claims.jti,
            "operations": operations,
        });
        self.append(EventKind::ProxyAllowed, detail).await
    }

    async fn refused(
        &self,
        path: &str,
        refusal: &str,
        reason: &str,
        operations: &[BoundOperation],
    ) -> Result<String, StoreError> {
        let detail = self.refusal_detail(path, refusal, reason, operations);
        self.append(EventKind::ProxyRefused, detail).await
    }

    fn refusal_detail(
        &self,
        path: &str,
        refusal: &str,
        reason: &str,
        operations: &[BoundOperation],
    ) -> serde_json::Value {
        json!({
            "decision": "refuse",
            "refusal": refusal,
            "reason": reason,
            "provider": self.provider,
            "method": self.method.as_str(),
            "path": path,
            "lease_id": self.claims.jti,
            "operations": operations,
        })
    }

    /// A policy refusal; the ones that show an agent aiming at another
    /// environment's resources are alerted as well.
    async fn refused_policy(
        &self,
        path: &str,
        refusal: &Refusal,
        operations: &[BoundOperation],
    ) -> Result<String, StoreError> {
        let kind = refusal.kind();
        if !matches!(kind, "credential_mismatch" | "shared_resource") {
            return self.refused(path, kind, &refusal.to_string(), operations).await;
        }
        let detail = self.refusal_detail(path, kind, &refusal.to_string(), operations);
        let text = format!(
            "Agent `{}` (credential for `{}`) was refused on `{}`: {refusal}. Nothing was sent; ask it what it was doing.",
            self.claims.sub, self.claims.env, self.provider
        );
        let names: Vec<&str> = operations.iter().map(|o| o.name.as_str()).collect();
        let key = format!("{kind}:{}:{}:{}", self.claims.sid, self.provider, names.join(","));
        self.broker
            .record_and_alert(self.event(EventKind::ProxyRefused, detail), kind, text, key, self.now)
            .await
    }

    /// The upstream refused the broker's own token on a request the policy
    /// had allowed (`allowed_event`).
    async fn upstream_rejected(&self, path: &str, status: u16, allowed_event: &str) -> Result<String, StoreError> {
        let detail = json!({
            "provider": self.provider,
            "method": self.method.as_str(),
            "path": path,
            "upstream_status": status,
            "allowed_event_id": allowed_event,
            "lease_id": self.claims.jti,
        });
        let text = format!(
            "Provider `{}` rejected the broker's real token for `{}` with HTTP {status}: the token configured for that environment is wrong, expired or lacks permissions. Agents are told to wait.",
            self.provider, self.claims.env
        );
        let key = format!(
            "upstream_credential_mismatch:{}:{}:{status}",
            self.provider, self.claims.env
        );
        self.broker
            .record_and_alert(
                self.event(EventKind::UpstreamCredentialMismatch, detail),
                "upstream_credential_mismatch",
                text,
                key,
                self.now,
            )
            .await
    }

    /// What to do when the upstream's answer carried a real token: record
    /// and alert, from a task of its own (the answer is streaming).
    fn on_echo(&self, broker: Arc<Broker>, path: &str, allowed_event: &str) -> Box<dyn FnOnce(redact::Hits) + Send> {
        let event = self.event(
            EventKind::TokenEchoed,
            json!({
                "provider": self.provider,
                "method": self.method.as_str(),
                "path": path,
                "allowed_event_id": allowed_event,
                "lease_id": self.claims.jti,
            }),
        );
        let text = format!(
            "Provider `{}` echoed the broker's real token in its answer to agent `{}` ({} {path}); the token was overwritten before the agent saw it. Find out why the provider reflects credentials, and consider rotating the token.",
            self.provider, self.claims.sub, self.method
        );
        let key = format!("token_echoed:{}:{}", self.provider, self.claims.env);
        let now = self.now;
        Box::new(move |hits: redact::Hits| {
            let mut event = event;
            event.detail["fingerprints"] = json!(hits.0);
            tokio::spawn(async move {
                if let Err(e) = broker.record_and_alert(event, "token_echoed", text, key, now).await {
                    tracing::error!(error = %e, "cannot record that an upstream echoed a real token");
                }
            });
        })
    }

    fn event(&self, kind: EventKind, detail: serde_json::Value) -> Event {
        Event {
            kind,
            actor: Actor::agent(&self.claims.sub).0,
            agent: Some(self.claims.sub.clone()),
            session_id: Some(self.claims.sid.clone()),
            env: Some(self.claims.env.clone()),
            detail,
        }
    }

    async fn append(&self, kind: EventKind, detail: serde_json::Value) -> Result<String, StoreError> {
        let event = self.event(kind, detail);
        Ok(self.broker.store().append_audit(&event, unix_ms(self.now)).await?.id)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn routes_split_into_provider_and_raw_rest() {
        assert_eq!(route("/p/railway/graphql/v2"), ("railway".into(), "/graphql/v2".into()));
        assert_eq!(route("/p/github"), ("github".into(), String::new()));
        assert_eq!(
            route("/p/git%68ub/repos/%2e%2e"),
            ("github".into(), "/repos/%2e%2e".into())
        );
    }

    #[test]
    fn the_credential_is_read_from_each_providers_header_and_two_are_refused() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, HeaderValue::from_static(v));
            }
            h
        };
        let one = |h: &HeaderMap| presented_credential(h).unwrap().map(|c| c.into_owned());
        let h = with(&[("authorization", "Bearer vk1.a")]);
        assert_eq!(one(&h).as_deref(), Some("vk1.a"));
        let h = with(&[("authorization", "token vk1.a")]);
        assert_eq!(one(&h).as_deref(), Some("vk1.a"));
        let h = with(&[("project-access-token", "vk1.a"), ("authorization", "bearer vk1.a")]);
        assert_eq!(one(&h).as_deref(), Some("vk1.a"));
        // base64("x-access-token:vk1.a") and base64("vk1.a:")
        let h = with(&[("authorization", "Basic eC1hY2Nlc3MtdG9rZW46dmsxLmE=")]);
        assert_eq!(one(&h).as_deref(), Some("vk1.a"));
        let h = with(&[("authorization", "Basic dmsxLmE6")]);
        assert_eq!(one(&h).as_deref(), Some("vk1.a"));
        let h = with(&[("project-access-token", "vk1.a"), ("authorization", "Bearer vk1.b")]);
        assert!(matches!(presented_credential(&h), Err(ProxyError::AmbiguousCredential)));
        assert_eq!(one(&HeaderMap::new()), None);
    }
}
