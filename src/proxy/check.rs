//! `/v1/check`: an agent describes a request it is about to send through the
//! proxy and learns what the proxy would do, with nothing sent upstream and
//! nothing recorded. The description becomes the very request the proxy
//! would see, and goes through the same `judge`.

use std::collections::BTreeMap;
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
}

/// What the proxy would do with the request described; `classifier` is the
/// provider's, looked up by the caller as the proxy does.
pub fn check(
    broker: &Broker,
    classifier: &Classifier,
    claims: &Claims,
    request: CheckRequest,
) -> Result<CheckAnswer, CheckError> {
    let provider = request.provider.clone();
    let described = describe(classifier, request)?;
    let judgement = judge_described(broker, classifier, &provider, claims, &described);
    Ok(answer(provider, claims, judgement, None))
}

/// The request described, through the proxy's `judge`.
fn judge_described(
    broker: &Broker,
    classifier: &Classifier,
    provider: &str,
    claims: &Claims,
    described: &Described,
) -> Judgement {
    let needs_body = classifier.needs_body(&described.method, &described.path, &described.headers);
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
    judge(broker, classifier, provider, claims, &view)
}

/// The answer: the refusal as the proxy would give it, with where an
/// approval stands (`held`: the request was held, recorded as `event_id`),
/// or, when nothing was held, whether one could be.
fn answer(provider: String, claims: &Claims, judgement: Judgement, held: Option<(Held, String)>) -> CheckAnswer {
    let Judgement {
        path,
        operations,
        refused,
        approval,
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
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestApprovalError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Asks for a human's approval of the request described before it is sent:
/// what the proxy does when it refuses a request only for its danger. The
/// refusal is recorded and the request held under the digest of exactly
/// what would be forwarded, so the agent's identical request, sent once
/// approved with `Valetkey-Approval`, spends it. A request the proxy would
/// send, or refuse for what no approval lifts, is answered as `check`
/// answers it, and nothing is recorded.
pub async fn request_approval(
    broker: &Broker,
    classifier: &Classifier,
    claims: &Claims,
    request: CheckRequest,
    now: SystemTime,
) -> Result<CheckAnswer, RequestApprovalError> {
    let provider = request.provider.clone();
    let described = describe(classifier, request)?;
    let judgement = judge_described(broker, classifier, &provider, claims, &described);
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
    Ok(answer(provider, claims, judgement, Some((held, event_id))))
}
