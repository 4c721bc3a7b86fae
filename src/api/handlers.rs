//! Handlers: parse, call the broker, shape the answer. No decisions here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Problem;
use super::extract::{Bearer, JsonBody};
use crate::admin::{self, Actor};
use crate::broker::Broker;
use crate::peer::Client;
use crate::policy::{MintRequest, Stripped};
use crate::proxy::ProxyError;
use crate::proxy::check::CheckRequest;
use crate::secrets::ExposeSecret;
use crate::store::{Revocation, RevokeTarget};
use crate::time::rfc3339;

type Shared = State<Arc<Broker>>;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(broker): Shared) -> Response {
    let r = broker.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if r.ready { "ready" } else { "not_ready" },
        "store": match &r.store { Ok(()) => "ok".to_owned(), Err(e) => e.clone() },
        "active_kid": r.active_kid,
        "provider_tokens": r.provider_tokens,
        "token_reach": r.token_reach,
        "alerts_dropped": r.alerts_dropped,
        "refused_unauthenticated": broker.refused_unauthenticated(),
        "database_roles": r.database_roles,
    });
    (status, Json(body)).into_response()
}

pub async fn jwks(State(broker): Shared) -> Json<Value> {
    Json(broker.jwks())
}

pub async fn not_found() -> Problem {
    Problem::not_found("there is nothing at this path; the API is under /v1")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        "this path does not take this method",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// The agent the caller means to launch; must be the launcher key's.
    agent: Option<String>,
    env: String,
    providers: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    ttl: Option<Ttl>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

fn parse_ttl(ttl: Option<Ttl>) -> Result<Option<Duration>, Problem> {
    match ttl {
        None => Ok(None),
        Some(Ttl::Seconds(s)) => Ok(Some(Duration::from_secs(s))),
        Some(Ttl::Text(text)) => humantime::parse_duration(&text).map(Some).map_err(|e| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "The request is not valid",
                format!("ttl `{text}` is not a duration ({e}); write seconds, or text such as \"15m\""),
            )
        }),
    }
}

pub(crate) fn stripped_view(stripped: &[Stripped]) -> Vec<Value> {
    stripped
        .iter()
        .map(|s| {
            json!({
                "provider": s.provider,
                "scope": s.scope,
                "reason": s.reason,
                "why": s.reason.explain(),
            })
        })
        .collect()
}

pub async fn mint(
    State(broker): Shared,
    Bearer(key): Bearer,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Response, Problem> {
    let now = SystemTime::now();
    let agent = broker.authenticate_launcher(&key).await?;
    let request = MintRequest {
        env: body.env,
        providers: body.providers,
        scopes: body.scopes,
        ttl: parse_ttl(body.ttl)?,
    };
    let minted = broker.mint(&agent, body.agent.as_deref(), &request, now).await?;
    let env_vars: BTreeMap<&str, &str> = minted
        .env_vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    let body = json!({
        "credential": minted.credential.expose_secret(),
        "agent": minted.claims.sub,
        "env": minted.claims.env,
        "lease_id": minted.claims.jti,
        "session_id": minted.claims.sid,
        "expires_at": rfc3339(minted.claims.exp as i64),
        "expires_in": minted.plan.ttl.as_secs(),
        "grants": minted.claims.grants,
        "stripped": stripped_view(&minted.plan.stripped),
        "ttl_limited_by": minted.plan.ttl_limited_by,
        "env_vars": env_vars,
        "event_id": minted.event_id,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn whoami(
    State(broker): Shared,
    Client(client): Client,
    Bearer(token): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let claims = broker.authenticate_at(&token, "/v1/whoami", now, client).await?;
    Ok(Json(
        serde_json::to_value(broker.describe(&claims, now)).map_err(|e| Problem::internal(&e))?,
    ))
}

/// What the proxy would do with a request the agent describes; nothing is
/// sent and nothing recorded.
pub async fn check(
    State(broker): Shared,
    Client(client): Client,
    Bearer(token): Bearer,
    JsonBody(request): JsonBody<CheckRequest>,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let claims = broker.authenticate_at(&token, "/v1/check", now, client).await?;
    let Some(classifier) = broker.classifier(&request.provider) else {
        return Err(ProxyError::UnknownProvider {
            provider: request.provider,
            known: broker.proxied_providers(),
        }
        .into());
    };
    let answer = crate::proxy::check::check(&broker, classifier, &claims, request)
        .map_err(|e| Problem::bad_request("malformed_request", e.to_string()))?;
    Ok(Json(serde_json::to_value(answer).map_err(|e| Problem::internal(&e))?))
}

fn revoked_view(revoked: &[Revocation]) -> Value {
    json!({ "revoked_leases": revoked.iter().map(|r| r.lease_id.as_str()).collect::<Vec<_>>() })
}

/// Ends a launch session: its agent's launcher key, or the admin key.
pub async fn end_session(
    State(broker): Shared,
    Path(sid): Path<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let actor = if key.starts_with("vka_") {
        Actor::admin_key(&broker.authenticate_admin(&key).await?.key_id)
    } else {
        let agent = broker.authenticate_launcher(&key).await?;
        match broker.session_agent(&sid).await.map_err(|e| Problem::store(&e))? {
            Some(owner) if owner == agent.name => Actor::agent(&agent.name),
            _ => {
                return Err(Problem::not_found(format!(
                    "agent `{}` has no session `{sid}`",
                    agent.name
                )));
            }
        }
    };
    let revoked = broker.revoke(&RevokeTarget::Session(sid), &actor, now).await?;
    Ok(Json(revoked_view(&revoked)))
}

async fn admin(broker: &Broker, key: &str) -> Result<Actor, Problem> {
    Ok(Actor::admin_key(&broker.authenticate_admin(key).await?.key_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    agent: Option<String>,
    env: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `30d`, or an RFC 3339 time.
    since: Option<String>,
    /// Events after this position, to page or follow.
    after: Option<i64>,
    limit: Option<i64>,
}

/// Most events one page of `/v1/audit/events` holds.
const AUDIT_PAGE_MAX: i64 = 1000;

/// The audit trail for tools, oldest first, paged by `after`.
pub async fn audit_events(
    State(broker): Shared,
    Bearer(key): Bearer,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    admin(&broker, &key).await?;
    let axum::extract::Query(q) = query.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let now_ms = crate::time::unix_ms(SystemTime::now());
    let since_ms = q
        .since
        .map(|s| crate::audit::parse_since(&s, now_ms))
        .transpose()
        .map_err(|e| Problem::bad_request("invalid_request", e))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=AUDIT_PAGE_MAX).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_request",
            format!("limit must be between 1 and {AUDIT_PAGE_MAX}"),
        ));
    }
    let filter = crate::audit::Filter {
        agent: q.agent,
        env: q.env,
        kind: q.kind,
        since_ms,
        after_seq: q.after,
        limit,
        newest: false,
    };
    let records = broker
        .store()
        .search_audit(&filter)
        .await
        .map_err(|e| Problem::store(&e))?;
    let next_after = records.last().map(|r| r.seq).or(q.after);
    Ok(Json(json!({
        "events": records.iter().map(crate::audit::Record::to_json).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

pub async fn list_agents(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    admin(&broker, &key).await?;
    let agents = broker.store().list_agents().await.map_err(|e| Problem::store(&e))?;
    let agents: Vec<Value> = agents
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "key_id": a.key_id,
                "created_at": rfc3339(a.created_at),
                "configured": broker.config().agents.contains_key(&a.name),
            })
        })
        .collect();
    Ok(Json(json!({ "agents": agents })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddAgentBody {
    name: String,
}

pub async fn add_agent(
    State(broker): Shared,
    Bearer(key): Bearer,
    JsonBody(body): JsonBody<AddAgentBody>,
) -> Result<Response, Problem> {
    let actor = admin(&broker, &key).await?;
    let launcher_key = admin::add_agent(broker.store(), broker.config(), &body.name, &actor, SystemTime::now()).await?;
    let body = json!({ "name": body.name, "launcher_key": launcher_key.expose_secret() });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn remove_agent(
    State(broker): Shared,
    Path(name): Path<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let actor = admin(&broker, &key).await?;
    let revoked = broker.remove_agent(&name, &actor, SystemTime::now()).await?;
    Ok(Json(revoked_view(&revoked)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RevokeBody {
    Lease(String),
    Session(String),
    Agent(String),
}

pub async fn revoke(
    State(broker): Shared,
    Bearer(key): Bearer,
    JsonBody(body): JsonBody<RevokeBody>,
) -> Result<Json<Value>, Problem> {
    let actor = admin(&broker, &key).await?;
    let target = match body {
        RevokeBody::Lease(id) => RevokeTarget::Lease(id),
        RevokeBody::Session(sid) => RevokeTarget::Session(sid),
        RevokeBody::Agent(name) => RevokeTarget::Agent(name),
    };
    let revoked = broker.revoke(&target, &actor, SystemTime::now()).await?;
    Ok(Json(revoked_view(&revoked)))
}

pub async fn rotate_key(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let actor = admin(&broker, &key).await?;
    let kid = broker.rotate_signing_key(&actor, SystemTime::now()).await?;
    Ok(Json(json!({ "active_kid": kid })))
}
