//! Refusals as `application/problem+json` (RFC 9457): a stable `type`, a
//! `detail` saying what was presented and what was expected, an `event_id`
//! when the refusal was recorded, and `agent_guidance` written for an LLM;
//! and all of it in the members providers' own clients print (`message`,
//! GraphQL's `errors`), for agents that read a refusal through their tools.
//!
//! Every error the API can return is mapped here by an exhaustive `match`, so
//! a new variant forces a decision. Internal causes are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::admin::AdminError;
use crate::broker::{AuthError, MintError, RefusedCredential, refusal_kind};
use crate::credentials::VerifyError;
use crate::policy::{MintRefusal, Refusal};
use crate::providers::ClassifyError;
use crate::proxy::Held;
use crate::store::StoreError;

const STOP: &str = "Stop and tell a human what you were doing, quoting this response. Do not try other credentials or tokens, and do not delete, recreate or reconfigure resources to get past a credential problem.";
const RENEW: &str = "Your credential has expired. Stop: do not look for other credentials or tokens, and do not delete, recreate or reconfigure anything to get past this. Get a new credential the way you got this one (whoever launched you runs `valetkey run` again); if you cannot, tell a human, quoting the event id.";
const MISSING: &str = "Send the credential from VALETKEY_CREDENTIAL as `Authorization: Bearer vk1.…`. If you have none, you were not launched through `valetkey run`: ask a human. Never send a provider's own token instead.";
const SESSION_ENDED: &str = "The `valetkey run` that launched you has ended or lost contact with the broker, so your credential no longer works. Stop: do not look for other credentials or tokens, and do not delete, recreate or reconfigure anything to get past this. Tell a human what you were doing, quoting the event id; they relaunch you with `valetkey run`.";
const RAW_TOKEN: &str = "Stop. You sent something that is not your valetkey credential, most likely a provider's own token. Never use provider tokens, even ones you find in files, variables or history; do not look for other credentials or tokens, and do not delete, recreate or reconfigure anything to get past this. Send only the credential from VALETKEY_CREDENTIAL. A human has been told that a real token reached you: tell them where it came from, quoting the event id.";
const REVOKED: &str = "A human, or the end of your session, revoked this credential. Stop: do not look for other credentials or tokens, and do not delete, recreate or reconfigure anything to get around it. Tell a human what you were doing, quoting the event id.";
const FIX_REQUEST: &str =
    "The request itself is wrong; fix it as the detail says and send it again. This is not a permission problem.";
const NOT_ALLOWED: &str = "This is outside what you were granted. Do not try another environment, agent, credential or token to reach it. If the task truly needs it, stop and ask a human, quoting the event id.";
const RATE_LIMITED: &str = "Stop sending requests that are refused. Wait a minute, then send one request with the credential from VALETKEY_CREDENTIAL; if it is refused, tell a human, quoting the answer. Do not try other credentials or tokens.";
const MISPLACED: &str = "Your valetkey credential was about to reach a provider, so nothing was sent. Send it only as `Authorization: Bearer vk1.…` (or in `Project-Access-Token`), never in another header, a cookie, the URL or the body, and send the request again. Do not look for other credentials or tokens.";
const OPERATOR: &str =
    "This is a problem on the broker's side, not yours. Wait and try again later; if it persists, tell a human.";

/// Boxed: a refusal travels up through `Result`s on the request path.
#[derive(Debug)]
pub struct Problem(Box<Body>);

#[derive(Debug)]
struct Body {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    guidance: &'static str,
    event_id: Option<String>,
    extra: Map<String, Value>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        let guidance = match status.as_u16() {
            500..=599 => OPERATOR,
            401 | 403 => STOP,
            _ => FIX_REQUEST,
        };
        Problem(Box::new(Body {
            status,
            kind,
            title,
            detail: detail.into(),
            guidance,
            event_id: None,
            extra: Map::new(),
        }))
    }

    pub fn guidance(mut self, guidance: &'static str) -> Self {
        self.0.guidance = guidance;
        self
    }

    /// The event that recorded this refusal, when one did.
    pub fn event(mut self, event_id: impl Into<Option<String>>) -> Self {
        self.0.event_id = event_id.into();
        self
    }

    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.0
            .extra
            .insert(key.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, kind, "The request is not valid", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
    }

    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The broker failed",
            "the broker failed to handle this request; the cause is in its log",
        )
    }

    pub fn store(cause: &StoreError) -> Self {
        tracing::error!(error = %cause, "store unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The broker cannot reach its store",
            "the broker could not read or record this request, so it did nothing",
        )
    }
}

impl Problem {
    /// The problem+json document.
    pub fn body(&self) -> Value {
        let problem = &self.0;
        let mut body = json!({
            "type": problem.kind,
            "title": problem.title,
            "status": problem.status.as_u16(),
            "detail": problem.detail,
        });
        let obj = body.as_object_mut().expect("object");
        if let Some(id) = &problem.event_id {
            obj.insert("event_id".into(), Value::String(id.clone()));
        }
        obj.insert("agent_guidance".into(), Value::String(problem.guidance.into()));
        obj.extend(problem.extra.clone());
        // A refusal quotes what was asked for (its detail, its operations'
        // names), where an agent can have put its credential or a token:
        // never echoed back.
        crate::audit::scrub::json(&body)
    }

    /// The document an answer carries: `body`, and the same for tools.
    pub fn answer(&self) -> Value {
        let mut body = self.body();
        for_tools(&mut body);
        body
    }
}

/// The refusal in the members providers' own clients print, beside the
/// problem's: GitHub's `message` (gh, Octokit) and GraphQL's
/// `errors[].message` (the railway CLI, gh's GraphQL commands). One line,
/// made of the scrubbed members, says it all to an agent reading a tool's
/// output. Only an answer carries it, not a refusal quoted inside another.
fn for_tools(body: &mut Value) {
    let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let event = body
        .get("event_id")
        .and_then(Value::as_str)
        .map(|id| format!(" (event {id})"))
        .unwrap_or_default();
    let message = format!(
        "valetkey: {} ({}): {}{event}. {}",
        text("title"),
        text("type"),
        text("detail").trim_end_matches('.'),
        text("agent_guidance")
    );
    if let Some(obj) = body.as_object_mut() {
        obj.insert("errors".into(), json!([{ "message": message }]));
        obj.insert("message".into(), Value::String(message));
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.answer();
        let mut response = (self.0.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        let unauthorized = |kind, title, detail: String| Problem::new(StatusCode::UNAUTHORIZED, kind, title, detail);
        match e {
            AuthError::Missing => unauthorized(
                "credential_missing",
                "No credential",
                "no credential was presented; send `Authorization: Bearer vk1.…`".into(),
            )
            .guidance(MISSING),
            AuthError::Credential(v) => {
                let detail = v.to_string();
                match v {
                    VerifyError::Malformed { .. } => {
                        unauthorized("credential_malformed", "Not a valetkey credential", detail)
                    }
                    VerifyError::Algorithm { .. } => {
                        unauthorized("credential_algorithm_rejected", "Credential algorithm rejected", detail)
                    }
                    VerifyError::UnknownKey { .. } => {
                        unauthorized("credential_unknown_key", "Credential signed by an unknown key", detail)
                    }
                    VerifyError::Signature => {
                        unauthorized("credential_signature_invalid", "Credential signature invalid", detail)
                    }
                    VerifyError::Claims { .. } => {
                        unauthorized("credential_claims_invalid", "Credential claims invalid", detail)
                    }
                    VerifyError::Issuer { .. } => {
                        unauthorized("credential_wrong_issuer", "Credential from another issuer", detail)
                    }
                    VerifyError::Audience { .. } => {
                        unauthorized("credential_wrong_audience", "Credential for another audience", detail)
                    }
                    VerifyError::Expired { claims } => {
                        unauthorized("credential_expired", "Credential expired", detail)
                            .guidance(RENEW)
                            .with("lease_id", &claims.jti)
                            .with("env", &claims.env)
                            .with("expired_at", crate::time::rfc3339(claims.exp as i64))
                    }
                    VerifyError::NotYetValid { .. } => {
                        unauthorized("credential_not_yet_valid", "Credential not yet valid", detail)
                    }
                }
            }
            AuthError::Revoked { claims } => unauthorized(
                "credential_revoked",
                "Credential revoked",
                format!(
                    "the credential of agent `{}` for `{}` (lease `{}`, session `{}`) was revoked",
                    claims.sub, claims.env, claims.jti, claims.sid
                ),
            )
            .guidance(REVOKED)
            .with("lease_id", &claims.jti)
            .with("env", &claims.env),
            AuthError::SessionEnded { claims } => unauthorized(
                "session_ended",
                "Session ended",
                format!(
                    "the session of agent `{}` for `{}` (session `{}`) has ended: the `valetkey run` that launched it stopped telling the broker it is alive, so its credential no longer works",
                    claims.sub, claims.env, claims.sid
                ),
            )
            .guidance(SESSION_ENDED)
            .with("lease_id", &claims.jti)
            .with("env", &claims.env),
            AuthError::RawProviderToken { looks_like, .. } => unauthorized(
                "raw_provider_token",
                "Not a valetkey credential",
                format!(
                    "the request carries {looks_like} where the valetkey credential belongs; it was not forwarded, and ops were told that a real token reached an agent"
                ),
            )
            .guidance(RAW_TOKEN),
            AuthError::LauncherKey => unauthorized(
                "launcher_key_invalid",
                "Launcher key not valid",
                "the launcher key is not one this broker issued, or its agent was removed".into(),
            ),
            AuthError::AdminKey => unauthorized(
                "admin_key_invalid",
                "Admin key not valid",
                "this operation needs a live admin key (`Authorization: Bearer vka_…`)".into(),
            )
            .guidance(ADMIN_ONLY),
            AuthError::AdminKeyExpired { .. } => unauthorized(
                "admin_key_expired",
                "Admin key expired",
                format!(
                    "{e}; another admin issues a new one (`valetkey admin remove NAME`, then `valetkey admin add NAME`), or, with no live admin key left, the broker writes a new bootstrap key to admin.key in its data dir at its next start"
                ),
            )
            .guidance(ADMIN_ONLY),
            AuthError::RateLimited => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many refused requests",
                "too many requests from this address were refused before they were authenticated; this one was not processed",
            )
            .guidance(RATE_LIMITED),
            AuthError::Store(e) => Problem::store(&e),
        }
    }
}

impl From<RefusedCredential> for Problem {
    fn from(refused: RefusedCredential) -> Self {
        Problem::from(refused.error).event(refused.event_id)
    }
}

impl From<crate::heartbeat::HeartbeatError> for Problem {
    fn from(e: crate::heartbeat::HeartbeatError) -> Self {
        use crate::heartbeat::HeartbeatError;
        match e {
            HeartbeatError::NotFound { .. } => Problem::not_found(e.to_string()),
            HeartbeatError::Ended {
                why: crate::heartbeat::Ended::FixedExpiry { .. },
                ..
            } => Problem::new(
                StatusCode::CONFLICT,
                "not_a_session",
                "Not a session",
                format!("{e}: only a session `valetkey run` launched takes heartbeats"),
            ),
            HeartbeatError::Ended { .. } => Problem::new(
                StatusCode::GONE,
                "session_ended",
                "Session ended",
                format!("{e}; start the agent again with `valetkey run` for a new session"),
            ),
            HeartbeatError::Store(e) => Problem::store(&e),
        }
    }
}

impl From<MintError> for Problem {
    fn from(e: MintError) -> Self {
        let detail = e.to_string();
        match e {
            MintError::Refused { refusal, event_id } => {
                let kind = refusal_kind(&refusal);
                let detail = refusal.to_string();
                let problem = match &refusal {
                    MintRefusal::UnknownEnvironment { known, .. } => {
                        Problem::bad_request(kind, detail).with("environments", known)
                    }
                    MintRefusal::UnknownProvider { .. } | MintRefusal::TtlTooShort => {
                        Problem::bad_request(kind, detail)
                    }
                    MintRefusal::AgentNotConfigured { .. } => {
                        Problem::new(StatusCode::FORBIDDEN, kind, "Agent not configured", detail)
                    }
                    MintRefusal::ProtectedEnvironment { .. } => {
                        Problem::new(StatusCode::FORBIDDEN, kind, "Protected environment", detail).guidance(NOT_ALLOWED)
                    }
                    MintRefusal::NoGrant { granted, .. } => {
                        Problem::new(StatusCode::FORBIDDEN, kind, "No grant in this environment", detail)
                            .guidance(NOT_ALLOWED)
                            .with("granted_environments", granted)
                    }
                    MintRefusal::ProviderNotGranted { .. } => {
                        Problem::new(StatusCode::FORBIDDEN, kind, "Provider not granted", detail).guidance(NOT_ALLOWED)
                    }
                    MintRefusal::NothingGrantable { stripped, .. } => {
                        Problem::new(StatusCode::FORBIDDEN, kind, "Nothing left to grant", detail)
                            .guidance(NOT_ALLOWED)
                            .with("stripped", crate::api::handlers::stripped_view(stripped))
                    }
                };
                problem.event(event_id)
            }
            MintError::AgentMismatch { event_id, .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "agent_mismatch",
                "Launcher key of another agent",
                detail,
            )
            .event(event_id),
            MintError::Database { event_id, .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "Database role not created",
                detail,
            )
            .guidance(OPERATOR)
            .event(event_id),
            MintError::NoSigningKey | MintError::Token(_) => Problem::internal(&e),
            MintError::Store(e) => Problem::store(&e),
        }
    }
}

impl From<AdminError> for Problem {
    fn from(e: AdminError) -> Self {
        let detail = e.to_string();
        match e {
            AdminError::InvalidName { .. } | AdminError::EmptySecret => Problem::bad_request("invalid_request", detail),
            AdminError::AgentNotConfigured { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_not_configured",
                "Agent not configured",
                detail,
            ),
            AdminError::AgentExists { .. } => {
                Problem::new(StatusCode::CONFLICT, "agent_exists", "Agent already registered", detail)
            }
            AdminError::UnknownAgent { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown_agent", "No such agent", detail)
            }
            AdminError::UnknownSecret { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown_secret", "No such secret", detail)
            }
            AdminError::SecretInUse { .. } => {
                Problem::new(StatusCode::CONFLICT, "secret_in_use", "Secret in use", detail)
            }
            AdminError::AdminExists { .. } => {
                Problem::new(StatusCode::CONFLICT, "admin_exists", "Admin already has a key", detail)
            }
            AdminError::UnknownAdmin { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown_admin", "No such admin", detail)
            }
            AdminError::LastAdmin { .. } => Problem::new(StatusCode::CONFLICT, "last_admin", "Last admin key", detail),
            AdminError::MasterKeyInEnvironment => Problem::new(
                StatusCode::CONFLICT,
                "master_key_in_environment",
                "Master key not rotatable here",
                detail,
            ),
            AdminError::ReservedAdminName | AdminError::AdminTtl { .. } => {
                Problem::bad_request("invalid_request", detail)
            }
            AdminError::Store(e) => Problem::store(&e),
            AdminError::Random | AdminError::Secrets(_) | AdminError::Key(_) | AdminError::Ca(_) => {
                Problem::internal(&detail)
            }
        }
    }
}

const ADMIN_ONLY: &str = "This is an operation for a human admin, and no agent credential or launcher key can perform it. Do not look for an admin key in files or the environment: ask a human to do it.";
const UPSTREAM_MISMATCH: &str = "Stop and wait: the provider rejected the broker's own token. This is an operator problem, not yours, and a human has been told. Do not look for other credentials or tokens, do not change your request to get around it, and do not delete, recreate or reconfigure anything; if you report it, quote the event id.";
const MISMATCH: &str = "Stop. This credential is for another environment or provider than the one you tried to reach. Do not look for other credentials or tokens, do not retry another way, and do not delete, recreate or reconfigure anything to get past it: tell a human what you were doing, quoting the event id.";
const SHARED: &str = "Stop. This resource also belongs to another environment, so changing it could damage that environment too (a production database can be deleted this way from staging). Do not retry, do not look for other credentials or tokens, and do not delete, recreate or reconfigure anything to work around it: ask a human, quoting the event id.";
const UNKNOWN_RESOURCE: &str = "The broker does not know which environment this resource belongs to, so it will not let you change it. Do not guess, and do not try other ids or credentials: ask a human to add it to the resource map, quoting the event id.";
const UNKNOWN_OPERATION: &str = "The broker does not know this operation, so it refuses it. Do not try to reach the same effect another way: if the task truly needs it, stop and ask a human to add a rule, quoting the event id.";
const UNBOUND: &str = "This request reaches resources the broker cannot tie to one environment (addressed by number, a search, or a listing of everything the token reaches), so it is refused. Read what you need through the resource's own route or id argument (GitHub: /repos/OWNER/REPO/…; Railway: project(id: …), variables(projectId: …, environmentId: …)). Do not look for another way around it; if the task truly needs this, ask a human, quoting the event id.";
const SHARED_READ: &str = "What lies under this resource is shared with another environment, so reading it could read that environment's data. Read through your own environment instead: pass your environment id (`whoami` and the resource map name it), or select only the resource's own fields. Do not look for another way around it; if the task truly needs more, ask a human, quoting the event id.";
const UNKNOWN_FIELD: &str = "The broker types every field a GraphQL request selects with its copy of the provider's schema, and this one is not in it, so it cannot tell what the request would read. Check the field's spelling and the type it is selected on against the provider's schema; if the provider added the field recently, ask a human to update the broker's copy of the schema, quoting the event id. Do not look for another way to read it.";
const READ_ACROSS: &str = "This read follows a reference (a service, a project, another environment) from what it names to a resource other environments share, and selects more than its id and name there, which could read their data. Select only the reference's id and name, then read what you need through a root field that names your environment (`serviceInstance(serviceId: …, environmentId: …)`, `deployments(input: {serviceId: …, environmentId: …})`). Do not look for another way around it; if the task truly needs more, ask a human, quoting the event id.";
const APPROVAL: &str = "This operation is destructive, and no agent credential can perform it. Do not retry, and do not look for another way, credential or token. Stop and ask a human to do it or approve it, quoting the event id.";

const HELD: &str = "A human must approve exactly this request. Wait: poll `approval_url` with your credential (`GET …?wait=60s`, or `valetkey approval wait ID`) until it answers `approved`, then send the identical request once more, with the header `Valetkey-Approval: ID`. Do not change the request, do not retry it another way, and do not look for other credentials or tokens. If it is denied or expires, stop and tell a human what you were doing, quoting the approval id.";
const APPROVAL_UNKNOWN: &str = "No approval with this id belongs to your session: an approval is seen and used only by the session that asked for it. Use the `approval_id` your held request's answer gave, with the credential of that session; do not guess ids, and do not look for other credentials or tokens. If you have no approval for this request, ask for one (request_approval, or send the request and wait on its `approval_url`); if that fails, tell a human.";
const APPROVAL_UNUSABLE: &str = "An approval covers one exact request, from the session that asked for it, sent once before it expires. Send exactly the approved request, or, if it was denied, used or has expired, stop and tell a human, quoting the event id. Do not change the request to get it through, and do not look for other credentials or tokens.";

/// What to do next about a refusal recorded as `refusal` (its stable
/// type), for an agent asking about it later: the guidance its answer
/// carried. `reads_only`: every operation it named was a read.
pub fn next_step(refusal: &str, reads_only: bool) -> &'static str {
    match refusal {
        "credential_mismatch" => MISMATCH,
        "shared_resource" if reads_only => SHARED_READ,
        "shared_resource" => SHARED,
        "unknown_resource" => UNKNOWN_RESOURCE,
        "unknown_operation" => UNKNOWN_OPERATION,
        "approval_required" => APPROVAL,
        "scope_not_granted" => NOT_ALLOWED,
        "credential_misplaced" => MISPLACED,
        "credential_expired" => RENEW,
        "credential_revoked" => REVOKED,
        "raw_provider_token" => RAW_TOKEN,
        "upstream_credential_mismatch" => UPSTREAM_MISMATCH,
        "upstream_token_missing" => OPERATOR,
        "approval_unknown" => APPROVAL_UNKNOWN,
        kind if kind.starts_with("approval_") => APPROVAL_UNUSABLE,
        "malformed_request"
        | "unsupported_media_type"
        | "persisted_query_refused"
        | "subscription_refused"
        | "request_too_complex"
        | "method_override_refused"
        | "method_refused" => FIX_REQUEST,
        _ => STOP,
    }
}

/// `/mcp`'s transport refused the request before any tool ran: its
/// status and what it said.
impl From<(crate::mcp::http::TransportRefusal, StatusCode, &str)> for Problem {
    fn from((refusal, status, said): (crate::mcp::http::TransportRefusal, StatusCode, &str)) -> Self {
        use crate::mcp::http::TransportRefusal as T;
        let (kind, title, detail) = match refusal {
            T::MethodNotAllowed => (
                "method_not_allowed",
                "Method not allowed",
                "the MCP endpoint takes only POST (it keeps no session: no stream to GET, none to DELETE); send each JSON-RPC message as a POST",
            ),
            T::NotAcceptable => (
                "not_acceptable",
                "Not acceptable",
                "send `Accept: application/json, text/event-stream`, as the MCP streamable HTTP transport requires",
            ),
            T::OriginRefused => (
                "origin_refused",
                "Browser requests refused",
                "the request carries an `Origin` header, as a browser's does; the MCP endpoint answers MCP clients only, which send none",
            ),
            T::TooLarge => (
                "request_too_large",
                "Request body too large",
                "the request body is over the broker's `[server] max_body_bytes`; send a smaller request",
            ),
            T::UnsupportedMediaType => (
                "unsupported_media_type",
                "Unsupported media type",
                "send the JSON-RPC message with `Content-Type: application/json`",
            ),
            T::Malformed => (
                "malformed_request",
                "The request is not valid",
                "the body is not one JSON-RPC message (a batch is not taken); send one request, notification or response per POST",
            ),
            T::Other if status.is_server_error() => ("internal_error", "The broker failed", ""),
            T::Other => ("malformed_request", "The request is not valid", ""),
        };
        let detail = match detail {
            "" => format!("the MCP transport refused the request: {said}"),
            detail => format!("{detail} (the MCP transport said: {said})"),
        };
        Problem::new(status, kind, title, detail)
    }
}

impl From<crate::proxy::ProxyError> for Problem {
    fn from(e: crate::proxy::ProxyError) -> Self {
        use crate::proxy::{ForwardError, ProxyError};
        let detail = e.to_string();
        match e {
            ProxyError::UnknownProvider { known, .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown_provider", "No such provider", detail)
                    .with("providers", known)
            }
            ProxyError::Auth(refused) => refused.into(),
            ProxyError::AmbiguousCredential => Problem::new(
                StatusCode::UNAUTHORIZED,
                "credential_ambiguous",
                "Two credentials",
                detail,
            ),
            ProxyError::CredentialMisplaced { event_id, .. } => Problem::new(
                StatusCode::BAD_REQUEST,
                "credential_misplaced",
                "Credential in the wrong place",
                detail,
            )
            .guidance(MISPLACED)
            .event(event_id),
            ProxyError::BodyTooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "Request body too large",
                detail,
            ),
            ProxyError::BodyRead(_) => Problem::bad_request("malformed_request", detail),
            ProxyError::Unclassifiable { error, event_id } => {
                let status = match error {
                    ClassifyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::BAD_REQUEST,
                };
                Problem::new(status, error.kind(), "The request cannot be classified", detail).event(event_id)
            }
            ProxyError::Refused {
                refusal,
                operations,
                event_id,
                approval,
            } => {
                let (title, guidance) = match refusal.as_ref() {
                    Refusal::ProviderNotGranted { .. } | Refusal::CredentialMismatch { .. } => {
                        ("Credential mismatch", MISMATCH)
                    }
                    Refusal::SharedResource { .. } => ("Shared resource", SHARED),
                    Refusal::SharedRead { .. } => ("Shared resource", SHARED_READ),
                    Refusal::ReadAcross { .. } => ("Read beyond the named resource", READ_ACROSS),
                    Refusal::UnknownResource { .. } | Refusal::UnboundOperation { .. } => {
                        ("Unknown resource", UNKNOWN_RESOURCE)
                    }
                    Refusal::NoOperation | Refusal::UnknownOperation { .. } => ("Unknown operation", UNKNOWN_OPERATION),
                    Refusal::UnknownField { .. } => ("Field unknown to the broker", UNKNOWN_FIELD),
                    Refusal::RefusedOperation { .. } => ("Operation refused by the rule pack", UNBOUND),
                    Refusal::UnboundRead { .. } => ("Read names no resource", UNBOUND),
                    Refusal::ApprovalRequired { .. } => ("Approval required", APPROVAL),
                    Refusal::ScopeNotGranted { .. } => ("Scope not granted", NOT_ALLOWED),
                };
                let detail = match &approval {
                    Some(held) => format!("{detail}. {}", held.sentence()),
                    None => detail,
                };
                let problem = Problem::new(StatusCode::FORBIDDEN, refusal.kind(), title, detail)
                    .guidance(guidance)
                    .event(event_id)
                    .with("operations", operations);
                match approval.map(|b| *b) {
                    Some(Held::Waiting {
                        id,
                        url,
                        status,
                        approvers_needed,
                        approved_by,
                        decide_by_ms,
                    }) => problem
                        .guidance(HELD)
                        .with("approval_id", id)
                        .with("approval_url", url)
                        .with("approval_status", status)
                        .with("approvers_needed", approvers_needed)
                        .with("approved_by", approved_by)
                        .with("approval_decide_by", crate::time::rfc3339(decide_by_ms / 1000)),
                    Some(Held::Possible(need)) => problem.with("approvable", need),
                    Some(Held::Unavailable(why)) => problem.with("approval_unavailable", why),
                    None => problem,
                }
            }
            ProxyError::ApprovalUnusable {
                why,
                approval_id,
                event_id,
            } => Problem::new(
                StatusCode::FORBIDDEN,
                crate::proxy::unusable_kind(why),
                "Approval does not cover this request",
                detail,
            )
            .guidance(next_step(crate::proxy::unusable_kind(why), false))
            .event(event_id)
            .with("approval_id", approval_id),
            ProxyError::NoUpstreamToken { event_id, .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_token_missing",
                "No upstream token",
                detail,
            )
            .event(event_id),
            ProxyError::Forward { error, event_id } => {
                let problem = match error {
                    ForwardError::Timeout => Problem::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        "The upstream did not answer in time",
                        detail,
                    ),
                    ForwardError::Unreachable(_) => Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        "The upstream cannot be reached",
                        detail,
                    ),
                    ForwardError::Encoded { .. } => Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreadable",
                        "The upstream's answer could not be checked",
                        detail,
                    ),
                    ForwardError::TokenNotAHeader | ForwardError::Rejected { .. } => Problem::internal(&detail),
                };
                problem.event(event_id)
            }
            ProxyError::UpstreamRejected { event_id, .. } => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream_credential_mismatch",
                "The provider rejected the broker's token",
                detail,
            )
            .guidance(UPSTREAM_MISMATCH)
            .event(event_id),
            ProxyError::Store(e) => Problem::store(&e),
        }
    }
}
