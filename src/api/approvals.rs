//! Held requests over HTTP. The agent reads (and long-polls) its own with
//! its credential; approvers decide with their factor's code, never with a
//! key: an agent's credential or launcher key presented here is refused
//! and recorded, and an admin key adds nothing. Admins list held requests
//! and issue enrollment codes; approvers redeem them themselves.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Problem;
use super::extract::{Bearer, JsonBody, PathParam, bearer};
use crate::approvals::flow::{ApprovalError, Proof, Verdict};
use crate::approvals::{Approval, Status, status, summary};
use crate::broker::Broker;
use crate::peer::Client;
use crate::secrets::{ExposeSecret, SecretString};
use crate::time::{rfc3339, unix_ms};

type Shared = State<Arc<Broker>>;

/// How often a long poll looks at the store again (another replica may
/// record the decision).
const POLL: Duration = Duration::from_millis(200);

fn view(a: &Approval, now_ms: i64, full: bool) -> Value {
    let st = status(a, now_ms);
    let mut v = json!({
        "id": a.id,
        "status": st,
        "agent": a.agent,
        "env": a.env,
        "provider": a.provider,
        "method": a.method,
        "path": a.path,
        "tier": a.tier,
        "environments": a.environments,
        "approvers_needed": a.approvers_needed,
        "approved_by": a.approved_by,
        "decide_by": rfc3339(a.decide_by_ms / 1000),
        "execute_by": a.execute_by_ms.map(|ms| rfc3339(ms / 1000)),
        "digest": a.digest,
    });
    if st == Status::Denied {
        v["denied_by"] = json!(a.denied_by);
        v["reason"] = json!(a.reason);
    }
    if full {
        v["summary"] = json!(summary(a));
        v["operations"] = json!(a.operations);
        v["session_id"] = json!(a.session_id);
        v["lease_id"] = json!(a.lease_id);
        v["refusal_event_id"] = json!(a.event_id);
    }
    v
}

fn unknown(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "approval_unknown",
        "No such approval",
        format!("there is no approval `{id}` of this credential's session"),
    )
    .guidance(super::problem::next_step("approval_unknown", false))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait while it is pending, up to this long (`60s`).
    wait: Option<String>,
}

/// `GET /v1/approvals/{id}`: the agent's own approval with its credential
/// (waiting up to `?wait=` while it is pending), or any with an admin key.
pub async fn get_approval(
    State(broker): Shared,
    Client(client): Client,
    PathParam(id): PathParam<String>,
    Bearer(key): Bearer,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let q = query
        .map(|Query(q)| q)
        .map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            Problem::bad_request(
                "invalid_request",
                format!("`wait` must be a duration such as `60s`: {e}"),
            )
        })?,
    };
    if key.starts_with("vka_") {
        super::admin::authenticate(&broker, &key, now).await?;
        let found = broker
            .store()
            .approval(&id)
            .await
            .map_err(|e| Problem::store(&e))?
            .ok_or_else(|| unknown(&id))?;
        return Ok(Json(view(&found, unix_ms(now), true)));
    }
    let claims = broker.authenticate_at(&key, "/v1/approvals", now, client).await?;
    Ok(Json(super::agent::approval(&broker, &claims, &id, wait).await?))
}

/// The agent's own approval `id`, waited on while it is pending, up to
/// `wait`.
pub(super) async fn agent_approval(
    broker: &Broker,
    claims: &crate::credentials::Claims,
    id: &str,
    wait: Duration,
) -> Result<Value, Problem> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now_ms = unix_ms(SystemTime::now());
        let found = broker
            .approval_of(claims, id)
            .await
            .map_err(|e| Problem::store(&e))?
            .ok_or_else(|| unknown(id))?;
        if status(&found, now_ms) != Status::Pending || tokio::time::Instant::now() >= deadline {
            return Ok(view(&found, now_ms, false));
        }
        tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
    }
}

/// `POST /v1/approvals`: the agent asks, before sending it, for a human's
/// approval of the request it describes (as to `/v1/check`).
pub async fn request(
    State(broker): Shared,
    Client(client): Client,
    Bearer(token): Bearer,
    JsonBody(request): JsonBody<crate::proxy::check::CheckRequest>,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let route = "/v1/approvals";
    let claims = broker.authenticate_at(&token, route, now, client).await?;
    let asker = super::agent::Asker {
        claims: &claims,
        route,
        client,
    };
    Ok(Json(
        super::agent::request_approval(&broker, asker, request, now).await?,
    ))
}

/// `GET /v1/approvals`: what is held and not yet spent (admin key).
pub async fn list_approvals(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    super::admin::authenticate(&broker, &key, now).await?;
    let open = broker.store().open_approvals().await.map_err(|e| Problem::store(&e))?;
    let now_ms = unix_ms(now);
    Ok(Json(json!({
        "approvals": open.iter().map(|a| view(a, now_ms, true)).collect::<Vec<_>>()
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    approver: String,
    /// A code of the approver's factor.
    #[serde(default)]
    code: Option<String>,
    /// Why, for a denial: the agent reads it.
    #[serde(default)]
    reason: Option<String>,
}

pub async fn approve(
    State(broker): Shared,
    Client(client): Client,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DecideBody>,
) -> Result<Json<Value>, Problem> {
    decide(&broker, client, &id, &headers, body, true).await
}

pub async fn deny(
    State(broker): Shared,
    Client(client): Client,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DecideBody>,
) -> Result<Json<Value>, Problem> {
    decide(&broker, client, &id, &headers, body, false).await
}

async fn decide(
    broker: &Broker,
    client: std::net::IpAddr,
    id: &str,
    headers: &HeaderMap,
    body: DecideBody,
    approving: bool,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    if !crate::config::valid_name(&body.approver) {
        return Err(Problem::bad_request(
            "invalid_request",
            "`approver` must be an approver's name, as configured in `[approvers.NAME]`",
        ));
    }
    let presented = bearer(headers).unwrap_or_default();
    let agent_key = presented.starts_with(crate::credentials::PREFIX) || presented.starts_with("vkl_");
    let code = body.code.as_deref().map(str::trim).unwrap_or_default();
    if agent_key || code.is_empty() {
        let why = if agent_key {
            "an agent's credential or launcher key was presented: agents never approve"
        } else {
            "no code of the approver's factor was given"
        };
        let detail = json!({ "approval_id": id, "approver": body.approver, "why": why });
        let event_id = broker
            .record_refused_attempt(&body.approver, detail, client, now)
            .await?;
        let problem = if agent_key {
            Problem::new(
                StatusCode::FORBIDDEN,
                "approval_forbidden",
                "Agents never approve",
                "an agent's credential or launcher key cannot approve or deny; a human approver decides with their own factor",
            )
            .guidance(AGENTS_NEVER_APPROVE)
        } else {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "approval_factor_required",
                "The approver's factor is required",
                "deciding needs a code of the approver's factor (`code`); a key alone, an admin's included, never decides",
            )
        };
        return Err(problem.event(event_id));
    }
    let verdict = if approving {
        Verdict::Approve
    } else {
        Verdict::Deny {
            reason: body.reason.unwrap_or_default(),
        }
    };
    let after = broker
        .decide_approval(id, &body.approver, Proof::Code(code), verdict, client, now)
        .await?;
    Ok(Json(view(&after, unix_ms(now), true)))
}

const AGENTS_NEVER_APPROVE: &str = "Only a human approver decides on a held request, with a factor no agent holds. Do not try to approve it yourself, and do not look for an approver's code: wait for the decision (`valetkey approval wait ID`).";

/// `POST /v1/approvers/{name}/invitations` (admin key): a one-time
/// enrollment code for a configured approver.
pub async fn invite(
    State(broker): Shared,
    PathParam(name): PathParam<String>,
    Bearer(key): Bearer,
) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    let actor = super::admin::authenticate(&broker, &key, now).await?;
    let (code, expires_at) = broker.invite_approver(&name, &actor, now).await?;
    Ok(Json(json!({
        "approver": name,
        "enrollment_code": code.expose_secret(),
        "expires_at": rfc3339(expires_at),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: String,
}

/// `POST /v1/approvers/{name}/enrollment`: the approver redeems their code
/// and is shown their new factor's secret, once.
pub async fn enroll(
    State(broker): Shared,
    Client(client): Client,
    PathParam(name): PathParam<String>,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<Value>, Problem> {
    let code = SecretString::from(body.code.trim());
    let (uri, secret) = broker
        .redeem_enrollment(&name, &code, client, SystemTime::now())
        .await?;
    Ok(Json(json!({
        "approver": name,
        "otpauth_uri": uri.expose_secret(),
        "secret": secret.expose_secret(),
        "next": format!("add it to your authenticator app, then confirm it with the code the app shows: valetkey approver confirm {name} --code CODE"),
    })))
}

/// `POST /v1/approvers/{name}/confirmation`: the first code of the new
/// factor makes it the approver's.
pub async fn confirm(
    State(broker): Shared,
    PathParam(name): PathParam<String>,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<Value>, Problem> {
    let in_use = broker.confirm_enrollment(&name, &body.code, SystemTime::now()).await?;
    Ok(Json(
        json!({ "approver": name, "in_use": in_use, "awaiting_vouch": !in_use }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VouchBody {
    /// Who vouches: an enrolled approver.
    approver: String,
    /// A code of their factor.
    code: String,
    /// Whose factors awaiting a vouch are put in use.
    approvers: Vec<String>,
}

/// `POST /v1/approvers/vouch`: an enrolled approver puts others' new
/// factors in use, with a code of their own.
pub async fn vouch(
    State(broker): Shared,
    Client(client): Client,
    JsonBody(body): JsonBody<VouchBody>,
) -> Result<Json<Value>, Problem> {
    let mut names = std::iter::once(&body.approver).chain(&body.approvers);
    if body.approvers.is_empty() || body.approvers.len() > 16 || names.any(|n| !crate::config::valid_name(n)) {
        return Err(Problem::bad_request(
            "invalid_request",
            "`approver` and each of `approvers` (1 to 16) must be approvers' names",
        ));
    }
    let vouched = broker
        .vouch(
            &body.approver,
            Proof::Code(&body.code),
            &body.approvers,
            client,
            SystemTime::now(),
        )
        .await?;
    Ok(Json(json!({
        "vouched": vouched.iter().map(|(name, factors)| json!({ "approver": name, "factors": factors })).collect::<Vec<_>>()
    })))
}

/// `GET /v1/approvers` (admin key): the configured approvers and whether
/// each has a factor.
pub async fn list_approvers(State(broker): Shared, Bearer(key): Bearer) -> Result<Json<Value>, Problem> {
    let now = SystemTime::now();
    super::admin::authenticate(&broker, &key, now).await?;
    let factors = broker.store().factors().await.map_err(|e| Problem::store(&e))?;
    let awaiting = broker.store().awaiting_vouch().await.map_err(|e| Problem::store(&e))?;
    let approvers: Vec<Value> = broker
        .config()
        .approvers
        .iter()
        .map(|(name, config)| {
            let c = config.get_ref();
            let factor = factors.iter().find(|f| &f.approver == name);
            json!({
                "name": name,
                "providers": c.providers,
                "environments": c.environments,
                "tiers": c.tiers,
                "enrolled_at": factor.map(|f| rfc3339(f.enrolled_at)),
                "locked_until": factor.filter(|f| f.locked_until > crate::time::unix_secs(now)).map(|f| rfc3339(f.locked_until)),
                "awaiting_vouch": awaiting
                    .iter()
                    .filter(|(a, _, _)| a == name)
                    .map(|(_, kind, since)| json!({ "factor": kind, "registered_at": rfc3339(*since) }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "approvers": approvers })))
}

impl From<ApprovalError> for Problem {
    fn from(e: ApprovalError) -> Self {
        let detail = e.to_string();
        match e {
            ApprovalError::Unknown { id } => unknown(&id),
            ApprovalError::NotAllowed(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "approver_not_allowed",
                "Not this approver's to decide",
                detail,
            ),
            ApprovalError::Closed { .. } => Problem::new(
                StatusCode::CONFLICT,
                "approval_closed",
                "The approval is no longer pending",
                detail,
            ),
            ApprovalError::NoFactor { .. } | ApprovalError::NothingToConfirm { .. } => {
                Problem::new(StatusCode::CONFLICT, "approver_not_enrolled", "No factor", detail)
            }
            ApprovalError::Locked { .. } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "approver_locked",
                "Factor locked",
                detail,
            ),
            ApprovalError::Code(_) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "approval_code_invalid",
                "The code was not accepted",
                detail,
            ),
            ApprovalError::UnknownApprover { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown_approver", "No such approver", detail)
            }
            ApprovalError::Enrollment { .. } => Problem::new(
                StatusCode::UNAUTHORIZED,
                "enrollment_code_invalid",
                "Enrollment code not valid",
                detail,
            ),
            ApprovalError::NoReason => Problem::bad_request("invalid_request", detail),
            ApprovalError::AlreadyWaiting { .. } => Problem::new(
                StatusCode::CONFLICT,
                "enrollment_waiting",
                "A factor awaits a vouch",
                detail,
            ),
            ApprovalError::NothingToVouch { .. } => Problem::new(
                StatusCode::CONFLICT,
                "nothing_to_vouch",
                "Nothing awaits a vouch",
                detail,
            ),
            ApprovalError::RateLimited => Problem::from(crate::broker::AuthError::RateLimited),
            ApprovalError::Store(e) => Problem::store(&e),
            ApprovalError::Secrets(_) | ApprovalError::Random => Problem::internal(&detail),
        }
    }
}
