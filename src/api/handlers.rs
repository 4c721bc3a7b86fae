//! Handlers: parse, call the broker, shape the answer. No decisions here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Problem;
use super::extract::{Bearer, JsonBody, PathParam};
use crate::admin::Actor;
use crate::broker::Broker;
use crate::peer::Client;
use crate::policy::{MintRequest, Stripped};
use crate::proxy::check::CheckRequest;
use crate::secrets::ExposeSecret;
use crate::store::{Revocation, RevokeTarget};
use crate::time::rfc3339;

type Shared = State<Arc<Broker>>;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the bare status to anyone (for load balancers), the detail
/// (token sources, database roles, store errors) only with an admin key.
pub async fn readyz(State(broker): Shared, headers: axum::http::HeaderMap) -> Result<Response, Problem> {
    let now = SystemTime::now();
    let admin_key = super::extract::bearer(&headers);
    if let Some(key) = &admin_key {
        super::admin::authenticate(&broker, key, now).await?;
    }
    let r = broker.readiness().await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = match (r.ready, r.degraded) {
        (false, _) => "not_ready",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    if admin_key.is_none() {
        return Ok((code, Json(json!({ "status": status }))).into_response());
    }
    let body = json!({
        "status": status,
        "store": match &r.store { Ok(()) => "ok".to_owned(), Err(e) => e.clone() },
        "active_kid": r.active_kid,
        "provider_tokens": r.provider_tokens,
        "token_reach": r.token_reach,
        "database_findings": r.database_findings,
        "alerts_dropped": r.alerts_dropped,
        "refused_unauthenticated": broker.refused_unauthenticated(),
        "database_roles": r.database_roles,
    });
    Ok((code, Json(body)).into_response())
}

/// The forward proxy's CA certificate, for clients' trust stores: public,
/// as a server's certificate is.
pub async fn ca_pem(State(broker): Shared) -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/x-pem-file")],
        broker.forward().pem(),
    )
}

pub async fn jwks(State(broker): Shared) -> Json<Value> {
    Json(broker.jwks())
}

/// Every signing key's public half, retired ones too (`/.well-known/jwks.json`
/// drops a key once what it signed has expired), for checking the audit
/// trail's checkpoints offline: `valetkey audit verify --db COPY --jwks`.
pub async fn audit_keys(State(broker): Shared) -> Result<Json<Value>, Problem> {
    let keys = broker.store().signing_keys().await.map_err(|e| Problem::store(&e))?;
    Ok(Json(crate::credentials::jwks(
        keys.iter().map(|k| (k.kid.as_str(), k.public_key.as_slice())),
    )))
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
    /// A session kept alive by the caller's heartbeat (`valetkey run`);
    /// `ttl` is then its longest length.
    #[serde(default)]
    session: bool,
    /// Real tokens `valetkey scan` found where the agent will work, which
    /// its launcher chose to launch beside (`run --allow-tokens`).
    #[serde(default)]
    tokens_in_reach: Vec<TokenInReach>,
}

/// A token lying in reach, as the launcher's scan names it: never the value.
#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct TokenInReach {
    path: String,
    line: u64,
    kind: String,
    fingerprint: String,
}

/// Most tokens in reach one launch reports.
const MAX_TOKENS_IN_REACH: usize = 1000;

fn check_tokens_in_reach(tokens: &[TokenInReach]) -> Result<(), Problem> {
    let fits = tokens.len() <= MAX_TOKENS_IN_REACH
        && tokens.iter().all(|t| {
            t.path.len() <= 4096
                && t.kind.len() <= 256
                && t.fingerprint.len() == 12
                && t.fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
        });
    if fits {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "The request is not valid",
        format!(
            "tokens_in_reach holds at most {MAX_TOKENS_IN_REACH} entries, each a path, a line, a kind and the 12 hex digits of `valetkey scan`'s fingerprint"
        ),
    ))
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
        Some(Ttl::Text(text)) => crate::policy::parse_lifetime(&text).map(Some).map_err(|why| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "The request is not valid",
                format!("ttl {why}"),
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
    check_tokens_in_reach(&body.tokens_in_reach)?;
    let request = MintRequest {
        env: body.env,
        providers: body.providers,
        scopes: body.scopes,
        ttl: parse_ttl(body.ttl)?,
        session: body.session,
    };
    let minted = broker.mint(&agent, body.agent.as_deref(), &request, now).await?;
    if !body.tokens_in_reach.is_empty() {
        // Recorded before the credential is given out: a store that cannot
        // record it gives out nothing.
        let claims = &minted.claims;
        let event = crate::audit::Event {
            kind: crate::audit::EventKind::TokensInReach,
            actor: Actor::agent(&claims.sub).0,
            agent: Some(claims.sub.clone()),
            session_id: Some(claims.sid.clone()),
            env: Some(claims.env.clone()),
            detail: json!({ "lease_id": claims.jti, "tokens": body.tokens_in_reach }),
        };
        let text = format!(
            "agent `{}` was launched in `{}` with {} real token(s) in its working directory (`run --allow-tokens`); move them into the broker and rotate them",
            claims.sub,
            claims.env,
            body.tokens_in_reach.len()
        );
        broker
            .record_and_alert(
                event,
                "tokens_in_reach",
                text,
                format!("tokens_in_reach:{}", claims.sid),
                now,
            )
            .await
            .map_err(|e| Problem::store(&e))?;
    }
    let env_vars: BTreeMap<&str, &str> = minted
        .env_vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    let creds = broker.config().credentials.get_ref();
    let heartbeat = minted.claims.hb.then(|| {
        json!({
            "url": format!("/v1/sessions/{}/heartbeat", minted.claims.sid),
            "interval_seconds": creds.heartbeat_interval.as_secs(),
            "timeout_seconds": creds.heartbeat_timeout.as_secs(),
        })
    });
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
        "heartbeat": heartbeat,
        "env_vars": env_vars,
        "forward_proxy": crate::forward::launch_settings(broker.config(), &minted.claims),
        "isolation": crate::isolation::Settings::for_credential(broker.config(), &minted.database_ports),
        "event_id": minted.event_id,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// What `run` hides from the agents it launches, asked before minting so
/// that its scan leaves out what the agent will not see.
pub async fn isolation(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    broker.authenticate_launcher(&key).await?;
    Ok(Json(json!(crate::isolation::Settings::for_credential(
        broker.config(),
        &[]
    ))))
}

pub async fn whoami(
    State(broker): Shared,
    Client(client): Client,
    Bearer(token): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let claims = broker.authenticate_at(&token, "/v1/whoami", now, client).await?;
    Ok(Json(super::agent::whoami(&broker, &claims, now)?))
}

/// What the proxy would do with a request the agent describes; nothing is
/// sent, and nothing recorded but a provider's token in it.
pub async fn check(
    State(broker): Shared,
    Client(client): Client,
    Bearer(token): Bearer,
    JsonBody(request): JsonBody<CheckRequest>,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let route = "/v1/check";
    let claims = broker.authenticate_at(&token, route, now, client).await?;
    let asker = super::agent::Asker {
        claims: &claims,
        route,
        client,
    };
    Ok(Json(super::agent::check(&broker, asker, request, now).await?))
}

/// One event of the credential's own session, explained.
pub async fn event(
    State(broker): Shared,
    Client(client): Client,
    PathParam(id): PathParam<String>,
    Bearer(token): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let claims = broker.authenticate_at(&token, "/v1/events", now, client).await?;
    Ok(Json(super::agent::explain(&broker, &claims, &id).await?))
}

pub(super) fn revoked_view(revoked: &[Revocation]) -> Value {
    json!({ "revoked_leases": revoked.iter().map(|r| r.lease_id.as_str()).collect::<Vec<_>>() })
}

/// Ends a launch session: its agent's launcher key, or the admin key.
/// `valetkey run`'s heartbeat for the session it launched, with its
/// launcher key (which the agent never holds): the credential keeps
/// working for `heartbeat_timeout` more.
pub async fn heartbeat(
    State(broker): Shared,
    PathParam(sid): PathParam<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let agent = broker.authenticate_launcher(&key).await?;
    let beat = broker.heartbeat(&agent, &sid, now).await?;
    Ok(Json(json!({
        "session_id": sid,
        "expires_at": rfc3339(beat.deadline),
        "session_ends_at": rfc3339(beat.session_ends_at),
        "interval_seconds": broker.config().credentials.get_ref().heartbeat_interval.as_secs(),
    })))
}

pub async fn end_session(
    State(broker): Shared,
    PathParam(sid): PathParam<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let actor = if key.starts_with("vka_") {
        super::admin::authenticate(&broker, &key, now).await?
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
