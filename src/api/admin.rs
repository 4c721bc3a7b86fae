//! The admin API: the one way ops change the store (admins, agents, secrets,
//! signing keys, revocations) and read the audit trail. Every route takes a
//! live admin key, and every change is recorded as that admin's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Problem;
use super::extract::{Bearer, JsonBody, PathParam};
use crate::admin::{self, Actor};
use crate::broker::Broker;
use crate::secrets::{ExposeSecret, SecretString};
use crate::store::RevokeTarget;
use crate::time::rfc3339;

type Shared = State<Arc<Broker>>;

/// The admin a key belongs to, as the audit trail names them.
pub(super) async fn authenticate(broker: &Broker, key: &str, now: SystemTime) -> Result<Actor, Problem> {
    Ok(Actor::admin(&broker.authenticate_admin(key, now).await?.name))
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(q)| q)
        .map_err(|e| Problem::bad_request("invalid_request", e.body_text()))
}

pub async fn list_admins(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    authenticate(&broker, &key, now).await?;
    let admins = broker.store().list_admin_keys().await.map_err(|e| Problem::store(&e))?;
    let now = crate::time::unix_secs(now);
    let admins: Vec<Value> = admins
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "key_id": a.key_id,
                "created_at": rfc3339(a.created_at),
                "expires_at": rfc3339(a.expires_at),
                "live": now < a.expires_at,
            })
        })
        .collect();
    Ok(Json(json!({ "admins": admins })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddAdminBody {
    name: String,
    /// How long the key lives: `90d`, `12h`.
    ttl: Option<String>,
}

pub async fn add_admin(
    State(broker): Shared,
    Bearer(key): Bearer,
    JsonBody(body): JsonBody<AddAdminBody>,
) -> Result<Response, Problem> {
    let now = SystemTime::now();
    let actor = authenticate(&broker, &key, now).await?;
    let ttl = match &body.ttl {
        None => admin::ADMIN_DEFAULT_TTL,
        Some(text) => parse_duration(text, "ttl")?,
    };
    let issued = admin::add_admin(broker.store(), &body.name, ttl, &actor, now).await?;
    let answer = json!({
        "name": body.name,
        "key_id": issued.key_id,
        "admin_key": issued.key.expose_secret(),
        "expires_at": rfc3339(issued.expires_at),
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

pub async fn remove_admin(
    State(broker): Shared,
    PathParam(name): PathParam<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let actor = authenticate(&broker, &key, now).await?;
    admin::remove_admin(broker.store(), &name, &actor, now).await?;
    Ok(Json(json!({ "removed": name })))
}

fn parse_duration(text: &str, what: &str) -> Result<Duration, Problem> {
    humantime::parse_duration(text).map_err(|e| {
        Problem::bad_request(
            "invalid_request",
            format!("{what} `{text}` is not a duration ({e}); write text such as \"90d\" or \"12h\""),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    value: String,
}

/// Stores a real token; the value is sealed at once and never answered.
pub async fn put_secret(
    State(broker): Shared,
    PathParam(name): PathParam<String>,
    Bearer(key): Bearer,
    JsonBody(body): JsonBody<SecretBody>,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let actor = authenticate(&broker, &key, now).await?;
    let value = SecretString::from(body.value);
    let (users, unreadable) = broker.set_secret(&name, &value, &actor, now).await?;
    // What the new token reaches is asked at once, not at the next hourly
    // run: ops hear of a token that reaches production when they set it.
    if broker.config().introspection.enabled && users.iter().any(|u| !u.database) {
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = broker.introspect(SystemTime::now()).await {
                tracing::warn!(error = %e, "cannot ask what a newly set token reaches");
            }
        });
    }
    let unreadable: Vec<Value> = unreadable
        .iter()
        .map(|u| json!({ "provider": u.provider, "env": u.env, "why": u.why, "kept": "the token read before" }))
        .collect();
    Ok(Json(
        json!({ "name": name, "used_by": secret_users(&users), "unreadable": unreadable }),
    ))
}

/// Who uses a secret, and from when: a proxied provider's token at once, a
/// postgres provider's admin URL from the broker's next start.
fn secret_users(users: &[crate::broker::SecretUser]) -> Vec<Value> {
    users
        .iter()
        .map(|u| {
            json!({
                "provider": u.provider,
                "env": u.env,
                "in_use_from": if u.database { "the next start" } else { "now" },
            })
        })
        .collect()
}

/// The stored secrets' names, when each was last set and who uses it; no
/// value, sealed or not.
pub async fn list_secrets(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    authenticate(&broker, &key, now).await?;
    let secrets = broker.list_secrets().await.map_err(|e| Problem::store(&e))?;
    let secrets: Vec<Value> = secrets
        .iter()
        .map(
            |(name, set_at, users)| json!({ "name": name, "set_at": rfc3339(*set_at), "used_by": secret_users(users) }),
        )
        .collect();
    Ok(Json(json!({ "secrets": secrets })))
}

pub async fn remove_secret(
    State(broker): Shared,
    PathParam(name): PathParam<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let actor = authenticate(&broker, &key, now).await?;
    broker.remove_secret(&name, &actor, now).await?;
    Ok(Json(json!({ "removed": name })))
}

pub async fn rotate_master(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let actor = authenticate(&broker, &key, now).await?;
    let (key_id, resealed) = broker.rotate_master(&actor, now).await?;
    Ok(Json(json!({ "key_id": key_id, "resealed": resealed })))
}

pub async fn verify_audit(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    authenticate(&broker, &key, SystemTime::now()).await?;
    let v = broker.verify_audit().await?;
    Ok(Json(
        json!({ "intact": v.broken.is_none(), "summary": v.summary(), "verification": v }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `30d`, `12h`, or an RFC 3339 time.
    since: Option<String>,
    /// `json` (the default), `md` or `html`.
    format: Option<String>,
}

/// A permission audit, as JSON or rendered.
pub async fn audit_report(
    State(broker): Shared,
    Bearer(key): Bearer,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let now = SystemTime::now();
    authenticate(&broker, &key, now).await?;
    let q = query(q)?;
    let now_ms = crate::time::unix_ms(now);
    let since_ms = crate::audit::parse_since(q.since.as_deref().unwrap_or("30d"), now_ms)
        .map_err(|e| Problem::bad_request("invalid_request", e))?;
    let report = broker.audit_report(since_ms, now).await?;
    Ok(match q.format.as_deref().unwrap_or("json") {
        "json" => Json(serde_json::to_value(&report).map_err(|e| Problem::internal(&e))?).into_response(),
        "md" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            crate::audit::report::markdown(&report),
        )
            .into_response(),
        "html" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::audit::report::html(&report),
        )
            .into_response(),
        other => {
            return Err(Problem::bad_request(
                "invalid_request",
                format!("format `{other}` is not one of json, md, html"),
            ));
        }
    })
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
    /// The newest `limit` events that match (still oldest first), to tail.
    #[serde(default)]
    newest: bool,
}

/// Most events one page of `/v1/audit/events` holds.
const AUDIT_PAGE_MAX: i64 = 1000;

/// The audit trail for tools, oldest first, paged by `after`.
pub async fn audit_events(
    State(broker): Shared,
    Bearer(key): Bearer,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    authenticate(&broker, &key, SystemTime::now()).await?;
    let q = query(q)?;
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
        newest: q.newest,
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
    authenticate(&broker, &key, SystemTime::now()).await?;
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
    let actor = authenticate(&broker, &key, SystemTime::now()).await?;
    let launcher_key = admin::add_agent(broker.store(), broker.config(), &body.name, &actor, SystemTime::now()).await?;
    let body = json!({ "name": body.name, "launcher_key": launcher_key.expose_secret() });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn remove_agent(
    State(broker): Shared,
    PathParam(name): PathParam<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let actor = authenticate(&broker, &key, SystemTime::now()).await?;
    let revoked = broker.remove_agent(&name, &actor, SystemTime::now()).await?;
    Ok(Json(super::handlers::revoked_view(&revoked)))
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
    let actor = authenticate(&broker, &key, SystemTime::now()).await?;
    let target = match body {
        RevokeBody::Lease(id) => RevokeTarget::Lease(id),
        RevokeBody::Session(sid) => RevokeTarget::Session(sid),
        RevokeBody::Agent(name) => RevokeTarget::Agent(name),
    };
    let revoked = broker.revoke(&target, &actor, SystemTime::now()).await?;
    Ok(Json(super::handlers::revoked_view(&revoked)))
}

pub async fn rotate_ca(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let actor = authenticate(&broker, &key, SystemTime::now()).await?;
    let id = broker.rotate_forward_ca(&actor, SystemTime::now()).await?;
    Ok(Json(json!({ "ca": id, "certificate": broker.forward().pem() })))
}

pub async fn rotate_key(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let actor = authenticate(&broker, &key, SystemTime::now()).await?;
    let kid = broker.rotate_signing_key(&actor, SystemTime::now()).await?;
    Ok(Json(json!({ "active_kid": kid })))
}
