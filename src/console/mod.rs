//! The web console under `/console`: approvers sign in with a passkey, see
//! held requests with their blast radius and approve or deny each with a
//! fresh passkey assertion bound to it; live sessions with revoke; the
//! audit trail and its verification; the latest permission report.
//!
//! Server-rendered (askama), with one script of its own for WebAuthn. Every
//! answer carries a strict Content-Security-Policy (nothing inline, nothing
//! from elsewhere); the session cookie is `HttpOnly; Secure; SameSite=Strict`;
//! every POST must come from the console's own origin and, once signed in,
//! carry the session's CSRF token. Off unless `[console] enabled`.

mod pages;
mod passkeys;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::Problem;
use crate::broker::Broker;

/// Proof, for `approvals::flow`, that the console verified a passkey
/// assertion for the decision at hand: only `passkeys` makes one.
pub struct PasskeyVerified(());

const COOKIE: &str = "vk_console";
/// How long a WebAuthn ceremony may take between its start and its end.
const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in approver.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub approver: String,
    /// Sent back with every POST (a form field or `X-CSRF-Token`).
    pub csrf: String,
}

pub struct Console {
    broker: Arc<Broker>,
    webauthn: webauthn_rs::Webauthn,
    origin: url::Url,
    sessions: moka::sync::Cache<String, Arc<Session>>,
    ceremonies: moka::sync::Cache<String, Arc<passkeys::Ceremony>>,
    session_ttl: Duration,
}

type State = axum::extract::State<Arc<Console>>;

impl crate::peer::WithBroker for Arc<Console> {
    fn broker(&self) -> &Broker {
        &self.broker
    }
}

/// The console's routes, when enabled; `Err` says why it cannot start.
pub fn router<S: Clone + Send + Sync + 'static>(broker: Arc<Broker>) -> Result<Option<Router<S>>, String> {
    let config = broker.config();
    if !config.console.enabled {
        return Ok(None);
    }
    let origin = config
        .console_origin()
        .ok_or("[console] needs an `origin` (the broker does not listen on loopback)")?;
    let host = origin.host_str().ok_or("[console] origin names no host")?.to_owned();
    let webauthn = webauthn_rs::WebauthnBuilder::new(&host, &origin)
        .map_err(|e| format!("[console] origin `{origin}` cannot carry passkeys: {e}"))?
        .rp_name("valetkey")
        .build()
        .map_err(|e| format!("[console] origin `{origin}` cannot carry passkeys: {e}"))?;
    let session_ttl = config.console.session_ttl;
    let console = Arc::new(Console {
        broker,
        webauthn,
        origin,
        sessions: moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(session_ttl)
            .build(),
        ceremonies: moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(CEREMONY_TTL)
            .build(),
        session_ttl,
    });
    let routes = Router::new()
        .route("/", get(pages::home))
        .route("/signin", get(pages::signin))
        .route("/signin/start", post(passkeys::signin_start))
        .route("/signin/finish", post(passkeys::signin_finish))
        .route("/signout", post(pages::signout))
        .route("/enroll", get(pages::enroll))
        .route("/enroll/start", post(passkeys::enroll_start))
        .route("/enroll/finish", post(passkeys::enroll_finish))
        .route("/approvals", get(pages::queue))
        .route("/approvals/{id}", get(pages::approval))
        .route("/approvals/{id}/start", post(passkeys::decide_start))
        .route("/approvals/{id}/finish", post(passkeys::decide_finish))
        .route("/vouch/{name}/start", post(passkeys::vouch_start))
        .route("/vouch/{name}/finish", post(passkeys::vouch_finish))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/{sid}/revoke", post(pages::revoke))
        .route("/audit", get(pages::audit))
        .route("/report", get(pages::report))
        .route("/static/console.js", get(pages::script))
        .route("/static/console.css", get(pages::style))
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console);
    Ok(Some(routes))
}

/// On the way in: a POST must come from the console's own origin. On the
/// way out: the headers that keep the pages to themselves.
async fn guard(axum::extract::State(console): State, request: Request, next: Next) -> Response {
    if request.method() == http::Method::POST && !same_origin(request.headers(), &console.origin) {
        return secured(forbidden("the request did not come from the console's own page"));
    }
    secured(next.run(request).await)
}

fn same_origin(headers: &HeaderMap, origin: &url::Url) -> bool {
    let expected = origin.origin().ascii_serialization();
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o == expected)
}

fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    response
}

fn forbidden(detail: &str) -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        "console_forbidden",
        "Not from the console",
        detail.to_owned(),
    )
    .into_response()
}

impl Console {
    /// A new sign-in for `approver`: its cookie.
    fn sign_in(&self, approver: &str) -> Result<(Arc<Session>, HeaderValue), Problem> {
        let session = Arc::new(Session {
            id: random_token().ok_or_else(|| Problem::internal(&"the system's random source failed"))?,
            approver: approver.to_owned(),
            csrf: random_token().ok_or_else(|| Problem::internal(&"the system's random source failed"))?,
        });
        self.sessions.insert(session.id.clone(), session.clone());
        let cookie = format!(
            "{COOKIE}={}; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            session.id,
            self.session_ttl.as_secs()
        );
        let cookie = HeaderValue::from_str(&cookie).map_err(|e| Problem::internal(&e))?;
        Ok((session, cookie))
    }

    fn session(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_owned())?;
        self.sessions.get(&id)
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }
}

/// 32 random bytes, base64url.
fn random_token() -> Option<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The signed-in approver of a page; a page without one sends the browser
/// to sign in.
pub struct SignedIn(pub Arc<Session>);

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Self::Rejection> {
        match console.session(&parts.headers) {
            Some(session) => Ok(SignedIn(session)),
            None if parts.method == http::Method::GET => {
                Err(axum::response::Redirect::to("/console/signin").into_response())
            }
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "console_signed_out",
                "Signed out",
                "sign in to the console with your passkey first",
            )
            .into_response()),
        }
    }
}

/// A signed-in approver whose POST carries the session's CSRF token in
/// `X-CSRF-Token` (the console's script sends it).
pub struct Checked(pub Arc<Session>);

impl FromRequestParts<Arc<Console>> for Checked {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Self::Rejection> {
        let SignedIn(session) = SignedIn::from_request_parts(parts, console).await?;
        let sent = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|t| constant_time_eq(t, &session.csrf)) {
            return Err(forbidden("the request carries no valid CSRF token"));
        }
        Ok(Checked(session))
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}
