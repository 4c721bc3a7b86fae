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
use crate::audit::scrub;
use crate::broker::Broker;
use crate::credentials::Claims;
use crate::providers::Classifier;
use crate::proxy::ProxyError;
pub use crate::proxy::check::Asker;
use crate::proxy::check::{AskError, CheckRequest};

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

/// `POST /v1/check`: nothing sent, nothing recorded (but a leaked token).
pub async fn check(
    broker: &Broker,
    asker: Asker<'_>,
    request: CheckRequest,
    now: SystemTime,
) -> Result<Value, Problem> {
    let classifier = classifier(broker, &request.provider)?;
    let answer = crate::proxy::check::check(broker, classifier, asker, request, now)
        .await
        .map_err(asked)?;
    told(answer)
}

/// `POST /v1/approvals`: the check's answer, the request held for approval
/// when the proxy would hold it.
pub async fn request_approval(
    broker: &Broker,
    asker: Asker<'_>,
    request: CheckRequest,
    now: SystemTime,
) -> Result<Value, Problem> {
    let classifier = classifier(broker, &request.provider)?;
    let answer = crate::proxy::check::request_approval(broker, classifier, asker, request, now)
        .await
        .map_err(asked)?;
    told(answer)
}

fn asked(e: AskError) -> Problem {
    match e {
        AskError::Check(e) => Problem::bad_request("malformed_request", e.to_string()),
        AskError::Refused(e) => Problem::from(*e),
        AskError::Store(e) => Problem::store(&e),
    }
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

/// An event as its agent needs to hear it (pure). What it quotes of the
/// request is scrubbed again: events recorded before the trail scrubbed
/// its details may hold what the agent must not be shown back.
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
    scrub::json(&answer)
}

/// A check's answer as the agent is told it: what it quotes of the request
/// (the path, operations' names, the refusal) scrubbed as a refusal is;
/// the request to send once approved is the agent's own, kept exact.
fn told(mut answer: crate::proxy::check::CheckAnswer) -> Result<Value, Problem> {
    let to_send = answer.send_once_approved.take();
    let mut told = scrub::json(&serde_json::to_value(answer).map_err(|e| Problem::internal(&e))?);
    if let Some(to_send) = to_send {
        told["send_once_approved"] = serde_json::to_value(to_send).map_err(|e| Problem::internal(&e))?;
    }
    Ok(told)
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

        // An event recorded before the trail scrubbed its details is told
        // without what the agent put in its path.
        let token = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
        let detail = json!({
            "refusal": "unknown_operation", "reason": format!("GET /{token} is not in the rule pack"),
            "provider": "github", "method": "GET", "path": format!("/{token}"),
            "operations": [{ "name": format!("GET /{token}"), "tier": "catastrophic" }],
        });
        let told = explanation(&record("proxy_refused", &detail), &detail).to_string();
        assert!(!told.contains(token), "{told}");
        assert!(told.contains("GET /[redacted: a GitHub personal access token] through the proxy"));

        let detail = json!({ "decision": "allow", "provider": "railway", "method": "POST", "path": "/graphql/v2" });
        let told = explanation(&record("proxy_allowed", &detail), &detail);
        assert_eq!(told["refused"], false);
    }
}
