//! `/mcp` on the broker: rmcp's streamable HTTP service, stateless (each
//! POST stands alone, so no MCP session outlives or outranks the credential
//! of the request carrying it), behind a layer that authenticates every
//! request's credential as the rest of the agent's API does: refusals are
//! problem+json, recorded as other credential refusals are; so are the
//! transport's own refusals (`problems`). The tools then ask the broker
//! in-process with that request's claims.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::model::Extensions;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;

use super::{Answer, Ask, Server};
use crate::api::Problem;
use crate::api::agent;
use crate::broker::{AuthError, Broker};
use crate::credentials::Claims;
use crate::peer::Client;

/// The `/mcp` route, for `api::router` to merge.
pub fn router(broker: Arc<Broker>) -> Router<Arc<Broker>> {
    let ask: Arc<dyn Ask> = Arc::new(InProcess { broker: broker.clone() });
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(broker.config().server.max_body_bytes)
        // Every request carries the agent's credential, which a page a browser
        // was lured to does not have: the Host is not what protects it. A
        // browser's request (any `Origin`) is refused all the same.
        .disable_allowed_hosts()
        .enforce_origin_validation();
    let service = StreamableHttpService::new(
        move || Ok(Server::new(ask.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .route_layer(middleware::from_fn(problems))
        .route_layer(middleware::from_fn_with_state(broker, authenticate))
}

/// Why rmcp's transport refused a request, before any tool ran: its own
/// answers are plain text, told here as problem+json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportRefusal {
    /// Only POST: the server is stateless, so there is no stream to GET
    /// and no session to DELETE.
    MethodNotAllowed,
    /// The client does not accept both `application/json` and
    /// `text/event-stream`.
    NotAcceptable,
    /// A browser's request (it has an `Origin`).
    OriginRefused,
    /// Over `[server] max_body_bytes`.
    TooLarge,
    /// Not `Content-Type: application/json`.
    UnsupportedMediaType,
    /// JSON, but not one JSON-RPC message (a batch, or not JSON at all).
    Malformed,
    /// Anything else rmcp refused.
    Other,
}

impl TransportRefusal {
    /// What rmcp's answer `status` means for a request whose `Content-Type`
    /// was JSON (`json`) or not (pure).
    pub fn of(status: http::StatusCode, json: bool) -> TransportRefusal {
        match status.as_u16() {
            405 => TransportRefusal::MethodNotAllowed,
            406 => TransportRefusal::NotAcceptable,
            403 => TransportRefusal::OriginRefused,
            413 => TransportRefusal::TooLarge,
            // rmcp answers 415 to a body that does not parse, too.
            415 if json => TransportRefusal::Malformed,
            415 => TransportRefusal::UnsupportedMediaType,
            400 => TransportRefusal::Malformed,
            _ => TransportRefusal::Other,
        }
    }
}

/// rmcp's refusals (non-2xx answers that are not JSON, so not already a
/// problem or a JSON-RPC error) as problem+json, with their headers
/// (`Allow`) kept.
async fn problems(request: Request, next: Next) -> Response {
    let json = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if status.is_success() || status.is_informational() || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let said = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let said = String::from_utf8_lossy(&said);
    let mut problem = Problem::from((TransportRefusal::of(status, json), status, said.trim())).into_response();
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_TYPE && name != http::header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// Lets through only requests with a live credential, its claims attached.
async fn authenticate(
    State(broker): State<Arc<Broker>>,
    Client(client): Client,
    mut request: Request,
    next: Next,
) -> Response {
    let now = SystemTime::now();
    let Some(token) = crate::api::bearer(request.headers()) else {
        return Problem::from(AuthError::Missing).into_response();
    };
    match broker.authenticate_at(&token, "/mcp", now, client).await {
        Ok(claims) => {
            request.extensions_mut().insert(claims);
            request.extensions_mut().insert(Peer(client));
            next.run(request).await
        }
        Err(refused) => Problem::from(refused).into_response(),
    }
}

/// The broker asked in-process, as the credential of the MCP request.
struct InProcess {
    broker: Arc<Broker>,
}

/// Where the HTTP request an MCP request came in was sent from.
#[derive(Debug, Clone, Copy)]
struct Peer(IpAddr);

/// The claims the layer attached to the HTTP request this MCP request came in.
fn claims(context: &Extensions) -> Result<Arc<Claims>, Value> {
    parts(context)
        .and_then(|parts| parts.extensions.get::<Arc<Claims>>())
        .cloned()
        .ok_or_else(|| Problem::from(AuthError::Missing).answer())
}

fn parts(context: &Extensions) -> Option<&http::request::Parts> {
    context.get::<http::request::Parts>()
}

/// Who asks, as the checks before judging record a leaked token.
fn asker<'a>(context: &Extensions, claims: &'a Claims) -> agent::Asker<'a> {
    let client = parts(context)
        .and_then(|p| p.extensions.get::<Peer>())
        .map_or(IpAddr::from([127, 0, 0, 1]), |p| p.0);
    agent::Asker {
        claims,
        route: "/mcp",
        client,
    }
}

fn answered(answer: Result<Value, Problem>) -> Answer {
    answer.map_err(|problem| problem.answer())
}

fn request_body(request: Value) -> Result<crate::proxy::check::CheckRequest, Value> {
    serde_json::from_value(request).map_err(|e| {
        Problem::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "The request is not valid",
            e.to_string(),
        )
        .answer()
    })
}

#[async_trait::async_trait]
impl Ask for InProcess {
    async fn whoami(&self, context: &Extensions) -> Answer {
        let claims = claims(context)?;
        answered(agent::whoami(&self.broker, &claims, SystemTime::now()))
    }

    async fn check(&self, context: &Extensions, request: Value) -> Answer {
        let claims = claims(context)?;
        let asker = asker(context, &claims);
        answered(agent::check(&self.broker, asker, request_body(request)?, SystemTime::now()).await)
    }

    async fn explain(&self, context: &Extensions, event_id: &str) -> Answer {
        let claims = claims(context)?;
        answered(agent::explain(&self.broker, &claims, event_id).await)
    }

    async fn request_approval(&self, context: &Extensions, request: Value) -> Answer {
        let claims = claims(context)?;
        let request = request_body(request)?;
        let asker = asker(context, &claims);
        answered(agent::request_approval(&self.broker, asker, request, SystemTime::now()).await)
    }

    async fn approval(&self, context: &Extensions, id: &str, wait: Duration) -> Answer {
        let claims = claims(context)?;
        answered(agent::approval(&self.broker, &claims, id, wait).await)
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::TransportRefusal as T;

    #[test]
    fn each_of_rmcps_refusals_is_named_by_its_status_and_the_requests_content_type() {
        let of = |status: u16, json: bool| T::of(StatusCode::from_u16(status).unwrap(), json);
        assert_eq!(of(405, true), T::MethodNotAllowed);
        assert_eq!(of(406, true), T::NotAcceptable);
        assert_eq!(of(403, true), T::OriginRefused);
        assert_eq!(of(413, true), T::TooLarge);
        // rmcp answers 415 both to another Content-Type and to a JSON body
        // that is not one JSON-RPC message.
        assert_eq!(of(415, false), T::UnsupportedMediaType);
        assert_eq!(of(415, true), T::Malformed);
        assert_eq!(of(400, true), T::Malformed);
        assert_eq!(of(500, true), T::Other);
    }
}
