//! What an agent asks the broker about itself, with its credential: who it
//! is, what the proxy would do with a request, to hold one for a human's
//! approval before sending it, why one of its requests was refused, and
//! where its approvals stand. Each is a function of the authenticated
//! claims, so the HTTP handlers and the MCP server (`crate::mcp`) give the
//! same answers.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Problem;
use crate::broker::Broker;
use crate::credentials::Claims;
use crate::providers::Classifier;
use crate::proxy::ProxyError;
use crate::proxy::check::{CheckRequest, RequestApprovalError};

/// `GET /v1/whoami`.
pub fn whoami(broker: &Broker, claims: &Claims, now: SystemTime) -> Result<Value, Problem> {
    serde_json::to_value(broker.describe(claims, now)).map_err(|e| Problem::internal(&e))
}

fn classifier<'a>(broker: &'a Broker, provider: &str) -> Result<&'a Classifier, Problem> {
    broker.classifier(provider).ok_or_else(|| {
        ProxyError::UnknownProvider {
            provider: provider.to_owned(),
            known: broker.proxied_providers(),
        }
        .into()
    })
}

/// `POST /v1/check`: nothing sent, nothing recorded.
pub fn check(broker: &Broker, claims: &Claims, request: CheckRequest) -> Result<Value, Problem> {
    let classifier = classifier(broker, &request.provider)?;
    let answer = crate::proxy::check::check(broker, classifier, claims, request)
        .map_err(|e| Problem::bad_request("malformed_request", e.to_string()))?;
    serde_json::to_value(answer).map_err(|e| Problem::internal(&e))
}

/// `POST /v1/approvals`: the check's answer, the request held for approval
/// when the proxy would hold it.
pub async fn request_approval(
    broker: &Broker,
    claims: &Claims,
    request: CheckRequest,
    now: SystemTime,
) -> Result<Value, Problem> {
    let classifier = classifier(broker, &request.provider)?;
    let answer = crate::proxy::check::request_approval(broker, classifier, claims, request, now)
        .await
        .map_err(|e| match e {
            RequestApprovalError::Check(e) => Problem::bad_request("malformed_request", e.to_string()),
            RequestApprovalError::Store(e) => Problem::store(&e),
        })?;
    serde_json::to_value(answer).map_err(|e| Problem::internal(&e))
}

/// `GET /v1/events/{id}`: one event of the credential's own session, told
/// as what happened, why, and what to do next. Another session's event is
/// answered as one that does not exist.
pub async fn explain(broker: &Broker, claims: &Claims, id: &str) -> Result<Value, Problem> {
    let record = broker
        .store()
        .session_event(id, &claims.sid)
        .await
        .map_err(|e| Problem::store(&e))?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "event_unknown",
                "No such event",
                format!(
                    "there is no event `{id}` of this credential's session; an agent reads only its own session's events, by the `event_id` of a refusal it was sent"
                ),
            )
        })?;
    let detail: Value = serde_json::from_str(&record.detail).map_err(|e| Problem::internal(&e))?;
    Ok(explanation(&record, &detail))
}

/// An event as its agent needs to hear it (pure).
fn explanation(record: &crate::audit::Record, detail: &Value) -> Value {
    let text = |key: &str| detail.get(key).and_then(Value::as_str);
    let operations = detail.get("operations").cloned().unwrap_or_else(|| json!([]));
    let what = match (text("method"), text("path"), text("provider"), text("route")) {
        (Some(method), Some(path), Some(provider), _) => {
            format!("{method} {path} through the proxy to `{provider}`")
        }
        (_, _, _, Some(route)) => format!("a request to the broker's {route}"),
        _ => format!("a `{}` event", record.kind),
    };
    let env = record.env.as_deref().unwrap_or("-");
    let mut answer = json!({
        "event_id": record.id,
        "at": crate::time::rfc3339_ms(record.at_ms),
        "kind": record.kind,
        "env": env,
        "what": what,
        "operations": operations,
    });
    match text("refusal") {
        Some(refusal) => {
            let reads_only = operations
                .as_array()
                .is_some_and(|ops| !ops.is_empty() && ops.iter().all(|o| o["tier"] == "read"));
            answer["refused"] = json!(true);
            answer["refusal"] = json!(refusal);
            answer["why"] = json!(text("reason").unwrap_or(refusal));
            answer["next_step"] = json!(super::problem::next_step(refusal, reads_only));
        }
        None => {
            answer["refused"] = json!(false);
            answer["next_step"] = json!(
                "Nothing was refused in this event. If a request of yours failed, ask about the `event_id` of the answer it got."
            );
        }
    }
    answer
}

/// `GET /v1/approvals/{id}?wait=`: the credential's own approval, waited on
/// while it is pending, up to `wait` (bounded by `[approvals] max_wait`).
pub async fn approval(broker: &Broker, claims: &Claims, id: &str, wait: Duration) -> Result<Value, Problem> {
    super::approvals::agent_approval(broker, claims, id, wait.min(broker.config().approvals.max_wait)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, detail: &Value) -> crate::audit::Record {
        crate::audit::Record {
            seq: 1,
            id: "ev1".into(),
            at_ms: 0,
            kind: kind.into(),
            actor: "agent:claude".into(),
            agent: Some("claude".into()),
            session_id: Some("s1".into()),
            env: Some("staging".into()),
            detail: detail.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_refusal_is_told_with_its_reason_and_the_next_step_for_its_kind() {
        let detail = json!({
            "decision": "refuse", "refusal": "shared_resource", "reason": "volumeDelete touches volume `vol_db`",
            "provider": "railway", "method": "POST", "path": "/graphql/v2",
            "operations": [{ "name": "mutation volumeDelete", "tier": "destructive" }],
        });
        let told = explanation(&record("proxy_refused", &detail), &detail);
        assert_eq!(told["refused"], true);
        assert_eq!(told["what"], "POST /graphql/v2 through the proxy to `railway`");
        assert_eq!(told["why"], "volumeDelete touches volume `vol_db`");
        assert!(
            told["next_step"]
                .as_str()
                .unwrap()
                .contains("could damage that environment")
        );

        // A read of what a shared resource holds is told to read through
        // its own environment, not that it could damage anything.
        let detail = json!({
            "refusal": "shared_resource", "reason": "r", "operations": [{ "tier": "read" }],
        });
        let told = explanation(&record("proxy_refused", &detail), &detail);
        assert!(
            told["next_step"]
                .as_str()
                .unwrap()
                .contains("Read through your own environment")
        );

        let detail = json!({ "decision": "allow", "provider": "railway", "method": "POST", "path": "/graphql/v2" });
        let told = explanation(&record("proxy_allowed", &detail), &detail);
        assert_eq!(told["refused"], false);
    }
}
