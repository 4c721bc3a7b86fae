//! `/v1/check`: an agent describes a request it is about to send through the
//! proxy and learns what the proxy would do, with nothing sent upstream and
//! nothing recorded. The description becomes the very request the proxy
//! would see, and goes through the same `judge`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::held::{self, Held};
use super::{Judgement, ProxyError, Recorder, Refused, judge};
use crate::approvals;
use crate::broker::Broker;
use crate::credentials::Claims;
use crate::policy::BoundOperation;
use crate::providers::{Classifier, RequestView};
use crate::store::StoreError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub provider: String,
    /// A GraphQL request for a GraphQL provider: sent as the JSON body of a
    /// POST to its endpoint.
    #[serde(default)]
    pub graphql: Option<GraphqlCheck>,
    /// Otherwise the HTTP request itself: method, path under the provider
    /// (query string included), headers and body.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlCheck {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Value>,
    #[serde(default, rename = "operationName", skip_serializing_if = "Option::is_none")]
    pub operation_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("describe the request either as `graphql` or as `method` and `path`, not both and not neither")]
    Shape,
    #[error("provider `{0}` does not speak GraphQL; describe the request with `method` and `path`")]
    NotGraphql(String),
    #[error("`{0}` is not an HTTP method")]
    Method(String),
    #[error("the path must start with `/` (the part after the provider's proxy URL)")]
    Path,
    #[error("header `{0}` is not a valid header")]
    Header(String),
}

/// The request the proxy would receive.
struct Described {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Option<String>,
}

fn describe(classifier: &Classifier, request: CheckRequest) -> Result<Described, CheckError> {
    let (method, target, mut headers, body) = match (request.graphql, request.method, request.path) {
        (Some(graphql), None, None) => {
            let path = classifier
                .graphql_path()
                .ok_or_else(|| CheckError::NotGraphql(request.provider.clone()))?;
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let body = serde_json::to_string(&graphql).expect("a GraphQL request serializes");
            (Method::POST, path, headers, Some(body))
        }
        (None, Some(method), Some(path)) => {
            let method = Method::from_str(&method).map_err(|_| CheckError::Method(method.clone()))?;
            let mut headers = HeaderMap::new();
            for (name, value) in &request.headers {
                let name = HeaderName::from_str(name).map_err(|_| CheckError::Header(name.clone()))?;
                let value = HeaderValue::from_str(value).map_err(|_| CheckError::Header(name.to_string()))?;
                headers.append(name, value);
            }
            (method, path, headers, request.body)
        }
        _ => return Err(CheckError::Shape),
    };
    if !target.starts_with('/') {
        return Err(CheckError::Path);
    }
    if let Some(body) = &body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target, None),
    };
    Ok(Described {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// The request to send once approved, exactly as the approval binds it:
/// what `POST /v1/approvals` answers beside a held request, so that an
/// agent need not guess how the broker wrote the body it described.
#[derive(Debug, Serialize)]
pub struct ToSend {
    pub method: String,
    /// Under the provider's proxy URL, with the query string.
    pub path: String,
    /// `proxy_url` + `path`.
    pub url: String,
    /// The headers the approval covers (every one the request will carry
    /// but the credential, `Valetkey-Approval`, `Host`, `Content-Length`
    /// and `Accept-Encoding`).
    pub headers: BTreeMap<String, String>,
    /// The body's bytes, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl ToSend {
    fn of(broker: &Broker, provider: &str, path: &str, described: &Described) -> ToSend {
        let target = match &described.query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let mut headers = super::forward::agent_headers(&described.headers);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::ACCEPT_ENCODING);
        ToSend {
            method: described.method.to_string(),
            url: format!("{}/p/{provider}{target}", broker.broker_url()),
            path: target,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: described.body.clone(),
        }
    }
}

/// What `/v1/check` answers.
#[derive(Debug, Serialize)]
pub struct CheckAnswer {
    /// `allow` or `refuse`.
    pub decision: &'static str,
    pub provider: String,
    pub env: String,
    /// The path the proxy would forward (canonical), or the one given.
    pub path: String,
    pub operations: Vec<BoundOperation>,
    /// The problem+json the proxy would answer, without an event id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Value>,
    /// Held for approval: the request to send, exactly, once approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_once_approved: Option<ToSend>,
}

/// Who asks, from where: what the checks before judging record a leaked
/// token under.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub claims: &'a Claims,
    /// The route asked (`/v1/check`, `/v1/approvals`, `/mcp`).
    pub route: &'a str,
    pub client: IpAddr,
}

/// What the proxy would do with the request described; `classifier` is the
/// provider's, looked up by the caller as the proxy does. Nothing is sent
/// and nothing recorded, but for a provider's token in the query string,
/// which the proxy's checks before judging record as leaked.
pub async fn check(
    broker: &Broker,
    classifier: &Classifier,
    asker: Asker<'_>,
    request: CheckRequest,
    now: SystemTime,
) -> Result<CheckAnswer, AskError> {
    let provider = request.provider.clone();
    let (_, judgement) = judge_described(broker, classifier, asker, request, now).await?;
    Ok(answer(provider, asker.claims, judgement, None))
}

/// The request described, through the proxy's checks before judging
/// (`super::screen`) and its `judge`.
async fn judge_described(
    broker: &Broker,
    classifier: &Classifier,
    asker: Asker<'_>,
    request: CheckRequest,
    now: SystemTime,
) -> Result<(Described, Judgement), AskError> {
    let provider = request.provider.clone();
    let described = describe(classifier, request)?;
    let needs_body = classifier.needs_body(&described.method, &described.path, &described.headers);
    let inspected = described
        .body
        .as_ref()
        .map(|b| {
            (
                b.len() as u64,
                classifier.is_git_push(&described.method, &described.path),
            )
        })
        .filter(|_| needs_body);
    super::screen(
        broker,
        described.query.as_deref(),
        inspected,
        asker.route,
        now,
        asker.client,
    )
    .await
    .map_err(Box::new)?;
    let view = RequestView {
        method: &described.method,
        path: &described.path,
        query: described.query.as_deref(),
        headers: &described.headers,
        // The proxy reads only the bodies it must classify; so does this.
        body: if needs_body {
            Some(described.body.as_deref().unwrap_or_default().as_bytes())
        } else {
            None
        },
    };
    let judgement = judge(broker, classifier, &provider, asker.claims, &view);
    Ok((described, judgement))
}

/// The answer: the refusal as the proxy would give it, with where an
/// approval stands (`held`: the request was held, recorded as `event_id`),
/// or, when nothing was held, whether one could be.
fn answer(provider: String, claims: &Claims, judgement: Judgement, held: Option<(Held, String)>) -> CheckAnswer {
    answer_to_send(provider, claims, judgement, held, None)
}

fn answer_to_send(
    provider: String,
    claims: &Claims,
    judgement: Judgement,
    held: Option<(Held, String)>,
    send_once_approved: Option<ToSend>,
) -> CheckAnswer {
    let Judgement {
        path,
        operations,
        refused,
        approval,
        git: _,
    } = judgement;
    let (held, event_id) = match (held, approval) {
        (Some((held, event_id)), _) => (Some(held), Some(event_id)),
        (None, need) => (need.map(Held::Possible), None),
    };
    let refusal = refused.map(|r: Refused| {
        let mut error = r.into_error(operations.clone(), &provider, &claims.env, event_id);
        if let (ProxyError::Refused { approval, .. }, Some(held)) = (&mut error, held) {
            *approval = Some(Box::new(held));
        }
        crate::api::Problem::from(error).body()
    });
    CheckAnswer {
        decision: if refusal.is_some() { "refuse" } else { "allow" },
        provider,
        env: claims.env.clone(),
        path,
        operations,
        refusal,
        send_once_approved,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Refused by the checks before judging, as the proxy refuses it.
    #[error(transparent)]
    Refused(#[from] Box<ProxyError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Asks for a human's approval of the request described before it is sent:
/// what the proxy does when it refuses a request only for its danger. The
/// refusal is recorded and the request held under the digest of exactly
/// what would be forwarded, so the agent's identical request, sent once
/// approved with `Valetkey-Approval`, spends it. A request the proxy would
/// send, or refuse for what no approval lifts, is answered as `check`
/// answers it, and nothing is recorded. A held request's answer says
/// exactly what to send once approved (`send_once_approved`): a GraphQL
/// request is held as the broker wrote its body.
pub async fn request_approval(
    broker: &Broker,
    classifier: &Classifier,
    asker: Asker<'_>,
    request: CheckRequest,
    now: SystemTime,
) -> Result<CheckAnswer, AskError> {
    let claims = asker.claims;
    let provider = request.provider.clone();
    let (described, judgement) = judge_described(broker, classifier, asker, request, now).await?;
    let (Some(Refused::Policy(refusal)), Some(need)) = (&judgement.refused, &judgement.approval) else {
        return Ok(answer(provider, claims, judgement, None));
    };
    let record = Recorder {
        broker,
        claims,
        provider: &provider,
        method: &described.method,
        now,
    };
    let event_id = record
        .refused_policy(&judgement.path, refusal, &judgement.operations)
        .await?;
    let body = described.body.as_deref().unwrap_or_default().as_bytes();
    let limit = broker.config().proxy.max_inspected_body_bytes;
    let held = if let Some(why) = held::no_token(broker, &provider, &claims.env) {
        Held::Unavailable(why)
    } else if body.len() > limit {
        Held::Unavailable(held::too_large(limit))
    } else {
        let hold = approvals::flow::Hold {
            claims,
            provider: &provider,
            method: described.method.as_str(),
            path: &judgement.path,
            query: described.query.as_deref(),
            need,
            operations: &judgement.operations,
            digest: held::bind(
                claims,
                &provider,
                described.method.as_str(),
                &judgement.path,
                described.query.as_deref(),
                &described.headers,
                body,
            ),
            event_id: &event_id,
        };
        held::hold(broker, hold, now).await?
    };
    let to_send =
        matches!(held, Held::Waiting { .. }).then(|| ToSend::of(broker, &provider, &judgement.path, &described));
    Ok(answer_to_send(
        provider,
        claims,
        judgement,
        Some((held, event_id)),
        to_send,
    ))
}
