//! The forward proxy: the broker as `HTTPS_PROXY`, for tools that cannot be
//! pointed at `/p/{provider}` (gh, git, SDKs with fixed endpoints).
//!
//! A `CONNECT` to a provider's host is answered by the broker itself: TLS
//! with a leaf its own CA issued for that host (`ca`), then every request
//! inside is rewritten to `/p/{provider}/…` and handed to the same router,
//! so it is classified, decided, recorded and forwarded by the one engine.
//! An absolute-form `http://` request to a provider's host goes the same
//! way. A passthrough host is tunnelled uninspected; any other host is
//! refused (`hosts`). Every CONNECT and absolute-form request is
//! authenticated by the agent's credential in `Proxy-Authorization`, which
//! never travels further.

mod ca;
pub mod hosts;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, Uri, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::io::InspectReader;
use tower::ServiceExt;

pub use ca::{Authority, CaError, ca_record_id};
pub use hosts::{Destination, Hosts};

use crate::api::Problem;
use crate::audit::{Event, EventKind};
use crate::broker::{AuthError, Broker, RefusedCredential};
use crate::credentials::Claims;

/// How long a passthrough host may take to accept the tunnel's connection.
const TUNNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a passthrough tunnel's credential is checked again.
const CREDENTIAL_CHECK: Duration = Duration::from_secs(1);
/// The route refusals of the proxy's own authentication are recorded under.
const ROUTE: &str = "forward proxy";

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "the forward proxy needs your valetkey credential in `Proxy-Authorization` (Basic, with the credential as the password, or Bearer); `valetkey run` puts it in HTTPS_PROXY for you"
    )]
    ProxyAuthMissing,
    #[error(transparent)]
    Auth(#[from] RefusedCredential),
    #[error(
        "the forward proxy is off (`[forward_proxy] enabled = false`); reach providers through `/p/{{provider}}/` instead"
    )]
    Disabled,
    #[error("`{target}` is not a host and port the forward proxy can go to")]
    BadTarget { target: String },
    #[error(
        "`{host}` is neither a provider's host ({}) nor listed in `[forward_proxy] passthrough`, so the broker does not go there",
        known.join(", ")
    )]
    Unlisted { host: String, known: Vec<String> },
    #[error("`{host}` is a passthrough host: only HTTPS (CONNECT) is tunnelled to it, never plain HTTP")]
    PlainPassthrough { host: String },
    #[error("your credential holds no grant of the provider served at `{host}` ({})", candidates.join(", "))]
    NotGranted { host: String, candidates: Vec<String> },
    #[error(
        "your credential holds grants of several providers served at `{host}` ({}); use `/p/{{provider}}/` to say which",
        held.join(", ")
    )]
    AmbiguousHost { host: String, held: Vec<String> },
    #[error(
        "this connection was opened to `{tunnel}`, but the request is for `{host}`; open a connection to `{host}` instead"
    )]
    Misdirected { tunnel: String, host: String },
    #[error("`{path}` is outside provider `{provider}`'s API, which lies under `{base}` at this host")]
    OutsideApi {
        provider: String,
        base: String,
        path: String,
    },
    #[error("the broker does not pass on protocol upgrades (WebSocket) to `{host}`")]
    UpgradeRefused { host: String },
    #[error("the credential in the request is not the one the connection was opened with; send one credential")]
    AmbiguousCredential,
    #[error("cannot reach the passthrough host `{host}`: {reason}")]
    TunnelUnreachable { host: String, reason: String },
    /// A refusal of an authenticated agent's request, recorded.
    #[error("{error}")]
    Recorded { error: Box<ForwardError>, event_id: String },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ForwardError {
    /// The refusal's stable type, as its problem+json and its event name it.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardError::ProxyAuthMissing => "proxy_credential_missing",
            ForwardError::Auth(_) => "credential_refused",
            ForwardError::Disabled => "forward_proxy_disabled",
            ForwardError::BadTarget { .. } => "malformed_request",
            ForwardError::Unlisted { .. } | ForwardError::PlainPassthrough { .. } => "host_not_allowed",
            ForwardError::NotGranted { .. } => "host_not_granted",
            ForwardError::AmbiguousHost { .. } => "host_ambiguous",
            ForwardError::Misdirected { .. } => "misdirected_request",
            ForwardError::OutsideApi { .. } => "not_found",
            ForwardError::UpgradeRefused { .. } => "upgrade_refused",
            ForwardError::AmbiguousCredential => "credential_ambiguous",
            ForwardError::TunnelUnreachable { .. } => "upstream_unreachable",
            ForwardError::Recorded { error, .. } => error.kind(),
            ForwardError::Ca(_) => "internal_error",
            ForwardError::Store(_) => "store_unavailable",
        }
    }
}

impl From<ForwardError> for Problem {
    fn from(e: ForwardError) -> Problem {
        let (detail, kind) = (e.to_string(), e.kind());
        let (status, title) = match e {
            ForwardError::Auth(refused) => return refused.into(),
            ForwardError::Recorded { error, event_id } => return Problem::from(*error).event(event_id),
            ForwardError::Ca(cause) => return Problem::internal(&cause),
            ForwardError::Store(cause) => return Problem::store(&cause),
            ForwardError::ProxyAuthMissing => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "No credential for the forward proxy",
            ),
            ForwardError::Disabled => (StatusCode::FORBIDDEN, "The forward proxy is off"),
            ForwardError::BadTarget { .. } => (StatusCode::BAD_REQUEST, "The request is not valid"),
            ForwardError::Unlisted { .. } | ForwardError::PlainPassthrough { .. } => {
                (StatusCode::FORBIDDEN, "The broker does not go to this host")
            }
            ForwardError::NotGranted { .. } => (StatusCode::FORBIDDEN, "No grant for this host's provider"),
            ForwardError::AmbiguousHost { .. } => (StatusCode::CONFLICT, "Several providers at this host"),
            ForwardError::Misdirected { .. } => (StatusCode::MISDIRECTED_REQUEST, "Request for another host"),
            ForwardError::OutsideApi { .. } => (StatusCode::NOT_FOUND, "Not found"),
            ForwardError::UpgradeRefused { .. } => (StatusCode::FORBIDDEN, "Protocol upgrades are not passed on"),
            ForwardError::AmbiguousCredential => (StatusCode::UNAUTHORIZED, "Two credentials"),
            ForwardError::TunnelUnreachable { .. } => {
                (StatusCode::BAD_GATEWAY, "The passthrough host cannot be reached")
            }
        };
        Problem::new(status, kind, title, detail)
    }
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        let missing = matches!(self, ForwardError::ProxyAuthMissing);
        let mut response = Problem::from(self).into_response();
        if missing {
            response.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"valetkey\""),
            );
        }
        response
    }
}

impl Broker {
    /// Replaces the forward proxy's CA under the sealing lock: leaves are
    /// issued by the new one from the next connection. Clients trust it
    /// once they fetch it again (`valetkey run` does at every start).
    pub async fn rotate_forward_ca(
        &self,
        actor: &crate::admin::Actor,
        now: SystemTime,
    ) -> Result<String, crate::admin::AdminError> {
        let (_sealing, master) = self.sealing().await;
        let retired = self.forward().id();
        let id = self.forward().rotate(self.store(), &master, now).await?;
        let detail = serde_json::json!({ "ca": id, "retired": retired });
        crate::admin::audit_event(self.store(), actor, EventKind::CaRotated, None, detail, now).await?;
        Ok(id)
    }
}

/// What a launcher needs to point an agent's tools at the forward proxy
/// (`None` when it is off): where the CA is, every provider host (never
/// to be left out of the proxy), and the token variables the tools of the
/// credential's providers read, which get the credential itself, for the
/// broker to swap.
pub fn launch_settings(config: &crate::config::Config, claims: &Claims) -> Option<serde_json::Value> {
    if !config.forward_proxy.enabled {
        return None;
    }
    let hosts = Hosts::from_config(config);
    let token_variables: std::collections::BTreeSet<&str> = claims
        .grants
        .keys()
        .filter_map(|p| config.providers.get(p))
        .flat_map(|p| token_variables(p.get_ref().kind).iter().copied())
        .collect();
    Some(serde_json::json!({
        "ca_url": "/v1/ca.pem",
        "provider_hosts": hosts.provider_hosts().collect::<Vec<_>>(),
        "token_variables": token_variables,
    }))
}

/// The variables each kind's own tools read their token from.
fn token_variables(kind: crate::providers::ProviderKind) -> &'static [&'static str] {
    use crate::providers::ProviderKind;
    match kind {
        ProviderKind::Github => &["GH_TOKEN", "GITHUB_TOKEN"],
        ProviderKind::Railway => &["RAILWAY_TOKEN", "RAILWAY_API_TOKEN"],
        ProviderKind::Http | ProviderKind::Postgres => &[],
    }
}

/// The broker's router, with proxy-form requests (`CONNECT`, absolute-form
/// URIs) taken aside to the forward proxy. `app` serves everything else,
/// and every request inside a tunnel.
pub fn wrap(app: Router, broker: Arc<Broker>) -> Router {
    let hosts = Arc::new(Hosts::from_config(broker.config()));
    // The listener holds the bodies of the requests it reads to its
    // deadline; those read inside a tunnel are held here.
    let tunnelled = crate::listener::with_body_deadline(app.clone(), broker.config().server.body_read_timeout);
    let service = tower::service_fn(move |request: Request| {
        let (app, tunnelled, broker, hosts) = (app.clone(), tunnelled.clone(), broker.clone(), hosts.clone());
        async move {
            if !is_proxy_form(&request) {
                return app.oneshot(request).await;
            }
            if for_the_broker(&request) {
                return app.oneshot(origin_form(request)).await;
            }
            Ok::<_, Infallible>(match proxy_form(&broker, &hosts, tunnelled, request).await {
                Ok(response) => response,
                Err(e) => e.into_response(),
            })
        }
    });
    Router::new().fallback_service(service)
}

fn is_proxy_form(request: &Request) -> bool {
    request.method() == Method::CONNECT || request.uri().scheme().is_some()
}

/// Whether an absolute-form request is for the broker's own address (a
/// client that sends everything through its proxy, the broker's API
/// included): then it is the broker's, answered as if it came in origin
/// form.
fn for_the_broker(request: &Request) -> bool {
    request.method() != Method::CONNECT
        && request
            .extensions()
            .get::<crate::listener::LocalAddr>()
            .zip(request.uri().authority())
            .is_some_and(|(local, authority)| {
                let port = authority
                    .port_u16()
                    .unwrap_or(if request.uri().scheme_str() == Some("https") {
                        443
                    } else {
                        80
                    });
                let host = hosts::normalize(authority.host());
                let same_host = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip == local.0.ip())
                    || (host == "localhost" && local.0.ip().is_loopback());
                port == local.0.port() && same_host
            })
}

/// The request with its target in origin form (`/path?query`).
fn origin_form(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    let origin = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if let Ok(uri) = origin.parse() {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}

async fn proxy_form(
    broker: &Arc<Broker>,
    hosts: &Hosts,
    app: Router,
    request: Request,
) -> Result<Response, ForwardError> {
    if !broker.config().forward_proxy.enabled {
        return Err(ForwardError::Disabled);
    }
    let now = SystemTime::now();
    let peer = peer_of(&request);
    let client = crate::peer::client_addr(peer.ip(), request.headers(), &broker.config().server.trusted_proxies);
    let credential = proxy_credential(request.headers()).ok_or(ForwardError::ProxyAuthMissing)?;
    let claims = broker.authenticate_at(&credential, ROUTE, now, client).await?;
    let connect = request.method() == Method::CONNECT;
    let (host, port) = target(request.uri(), connect)?;
    let destination = match destination(hosts, &claims, &host, port, connect) {
        Ok(destination) => destination,
        Err(error) => return Err(recorded(broker, &claims, &host, error, now).await),
    };
    let provider = match destination {
        Some(provider) => provider,
        None => return passthrough(broker, &claims, &credential, request, (host, port), now).await,
    };
    let tunnel = Tunnel {
        app,
        broker: broker.clone(),
        claims,
        host: hosts::normalize(&host),
        base: base_path(broker.config(), &provider),
        provider,
        credential,
        peer,
    };
    if !connect {
        return Ok(tunnel.serve(request).await);
    }
    let config = broker.forward().server_config(&tunnel.host, now)?;
    let limit = broker.config().server.header_read_timeout;
    let slot = request.extensions().get::<crate::listener::ConnectionSlot>().cloned();
    tokio::spawn(async move {
        // The tunnel keeps its connection's place among the open ones.
        let hold = slot.as_ref().map(crate::listener::ConnectionSlot::hold);
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "a CONNECT was not upgraded"),
        };
        let tls = tokio_rustls::TlsAcceptor::from(config);
        let stream = match tokio::time::timeout(limit, tls.accept(TokioIo::new(upgraded))).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return tracing::debug!(error = %e, host = %tunnel.host, "TLS handshake in a tunnel failed"),
            Err(_) => return tracing::debug!(host = %tunnel.host, "TLS handshake in a tunnel timed out"),
        };
        let tunnel = Arc::new(tunnel);
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let tunnel = tunnel.clone();
            async move { Ok::<_, Infallible>(tunnel.serve(request.map(Body::new)).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limit);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = closed(hold.as_ref()) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "a tunnel's connection ended with an error");
        }
    });
    Ok(StatusCode::OK.into_response())
}

/// Completes when the broker asks the tunnel's connection to close; never
/// for a request served without a slot (a test's in-process router).
async fn closed(hold: Option<&crate::listener::TunnelHold>) {
    match hold {
        Some(hold) => hold.closed().await,
        None => std::future::pending().await,
    }
}

/// Which provider an inspected request is for, `None` for a passthrough
/// tunnel, or why the proxy goes nowhere.
fn destination(
    hosts: &Hosts,
    claims: &Claims,
    host: &str,
    port: u16,
    connect: bool,
) -> Result<Option<String>, ForwardError> {
    match hosts.destination(host, port) {
        Destination::Inspect(candidates) => hosts::pick(&candidates, |p| claims.grants.contains_key(p))
            .map(|provider| Some(provider.to_owned()))
            .map_err(|held| {
                if held.is_empty() {
                    ForwardError::NotGranted {
                        host: host.to_owned(),
                        candidates: candidates.clone(),
                    }
                } else {
                    ForwardError::AmbiguousHost {
                        host: host.to_owned(),
                        held: held.into_iter().map(str::to_owned).collect(),
                    }
                }
            }),
        Destination::Tunnel if connect => Ok(None),
        Destination::Tunnel => Err(ForwardError::PlainPassthrough { host: host.to_owned() }),
        Destination::Unlisted => Err(ForwardError::Unlisted {
            host: host.to_owned(),
            known: hosts.provider_hosts().map(str::to_owned).collect(),
        }),
    }
}

/// Records an authenticated agent's refused proxy request (an agent
/// probing for a way out is what auditors must see), and the refusal with
/// its event. A store that cannot record it refuses all the same.
async fn recorded(broker: &Broker, claims: &Claims, host: &str, error: ForwardError, now: SystemTime) -> ForwardError {
    let event = Event {
        kind: EventKind::ForwardRefused,
        actor: format!("agent:{}", claims.sub),
        agent: Some(claims.sub.clone()),
        session_id: Some(claims.sid.clone()),
        env: Some(claims.env.clone()),
        detail: serde_json::json!({ "host": host, "refusal": error.kind(), "reason": error.to_string() }),
    };
    match broker.store().append_audit(&event, crate::time::unix_ms(now)).await {
        Ok(record) => ForwardError::Recorded {
            error: Box::new(error),
            event_id: record.id,
        },
        Err(e) => ForwardError::Store(e),
    }
}

/// Where a provider's API lies at the hosts the proxy serves for it: an
/// `http` provider's upstream path; the root for the kinds whose public
/// hosts are known (their upstream may be moved, its path with it).
fn base_path(config: &crate::config::Config, provider: &str) -> String {
    let Some(p) = config.providers.get(provider).map(|p| p.get_ref()) else {
        return String::new();
    };
    if !p.kind.default_hosts().is_empty() {
        return String::new();
    }
    p.upstream()
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

fn peer_of(request: &Request) -> SocketAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0)
}

/// The credential in `Proxy-Authorization`: Basic (the password, or the
/// user when there is none) or Bearer.
fn proxy_credential(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let credential = if scheme.eq_ignore_ascii_case("basic") {
        crate::proxy::basic_secret(rest.trim())?
    } else if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else {
        return None;
    };
    (!credential.is_empty()).then_some(credential)
}

/// The host and port a CONNECT (`host:port`) or an absolute-form request
/// (`http://host[:port]/…`) is for.
fn target(uri: &Uri, connect: bool) -> Result<(String, u16), ForwardError> {
    let bad = || ForwardError::BadTarget {
        target: uri.to_string(),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.as_str().contains('@') {
        return Err(bad());
    }
    let port = match (authority.port_u16(), connect, uri.scheme_str()) {
        (Some(port), _, _) => port,
        (None, true, _) => return Err(bad()),
        (None, false, Some("http")) => 80,
        (None, false, _) => return Err(bad()),
    };
    let host = authority.host();
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// A passthrough host: the broker connects and copies bytes both ways,
/// seeing none of them. The tunnel is recorded; no credential goes with it.
async fn passthrough(
    broker: &Arc<Broker>,
    claims: &Claims,
    credential: &str,
    request: Request,
    (host, port): (String, u16),
    now: SystemTime,
) -> Result<Response, ForwardError> {
    let unreachable = |reason: String| ForwardError::TunnelUnreachable {
        host: host.clone(),
        reason,
    };
    let upstream = tokio::time::timeout(
        TUNNEL_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| unreachable(format!("no connection within {TUNNEL_CONNECT_TIMEOUT:?}")))?
    .map_err(|e| unreachable(e.to_string()))?;
    let event = |kind, detail| Event {
        kind,
        actor: format!("agent:{}", claims.sub),
        agent: Some(claims.sub.clone()),
        session_id: Some(claims.sid.clone()),
        env: Some(claims.env.clone()),
        detail,
    };
    let opened = event(
        EventKind::TunnelOpened,
        serde_json::json!({ "host": host, "port": port }),
    );
    broker.store().append_audit(&opened, crate::time::unix_ms(now)).await?;
    let closed_event = event(
        EventKind::TunnelClosed,
        serde_json::json!({ "host": host, "port": port }),
    );
    let slot = request.extensions().get::<crate::listener::ConnectionSlot>().cloned();
    let (broker, credential) = (broker.clone(), credential.to_owned());
    tokio::spawn(async move {
        let hold = slot.as_ref().map(crate::listener::ConnectionSlot::hold);
        let started = std::time::Instant::now();
        let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let why = match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let agent = TokioIo::new(upgraded);
                carry(agent, upstream, (&sent, &received), hold.as_ref(), &broker, &credential).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "a CONNECT was not upgraded");
                "not_upgraded"
            }
        };
        let mut ended = closed_event;
        ended.detail["bytes_sent"] = sent.load(Ordering::Relaxed).into();
        ended.detail["bytes_received"] = received.load(Ordering::Relaxed).into();
        ended.detail["seconds"] = started.elapsed().as_secs().into();
        ended.detail["ended_by"] = why.into();
        let at = crate::time::unix_ms(SystemTime::now());
        if let Err(e) = broker.store().append_audit(&ended, at).await {
            tracing::warn!(error = %e, "a tunnel's end could not be recorded");
        }
    });
    Ok(StatusCode::OK.into_response())
}

/// Copies a passthrough tunnel's bytes both ways, counting them, until
/// either side closes (`closed`, or `error`), the broker closes its
/// connections (`broker_closing`) or the credential that opened it stops
/// authenticating (`credential`, checked every second: no request inside it
/// is seen). Returns which.
async fn carry(
    agent: TokioIo<hyper::upgrade::Upgraded>,
    upstream: tokio::net::TcpStream,
    (sent, received): (&Arc<AtomicU64>, &Arc<AtomicU64>),
    hold: Option<&crate::listener::TunnelHold>,
    broker: &Broker,
    credential: &str,
) -> &'static str {
    let count = |total: &Arc<AtomicU64>| {
        let total = total.clone();
        move |bytes: &[u8]| {
            total.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    };
    let mut agent = InspectReader::new(agent, count(sent));
    let mut upstream = InspectReader::new(upstream, count(received));
    let mut check = tokio::time::interval(CREDENTIAL_CHECK);
    let copy = tokio::io::copy_bidirectional(&mut agent, &mut upstream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            copied = copy.as_mut() => break if copied.is_ok() { "closed" } else { "error" },
            () = closed(hold) => break "broker_closing",
            _ = check.tick() => {
                if broker.authenticate(credential, SystemTime::now()).is_err() {
                    break "credential";
                }
            }
        }
    }
}

/// One inspected connection (or one absolute-form request): its host, the
/// provider it was resolved to, and the credential it was opened with.
struct Tunnel {
    app: Router,
    broker: Arc<Broker>,
    claims: Arc<Claims>,
    host: String,
    /// Where the provider's API lies at its host (an `http` provider's
    /// upstream path): stripped, since `/p/{provider}/` starts there.
    base: String,
    provider: String,
    credential: String,
    peer: SocketAddr,
}

impl Tunnel {
    async fn serve(&self, request: Request) -> Response {
        match self.rewrite(request) {
            Ok(request) => match self.app.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            Err(e) => recorded(&self.broker, &self.claims, &self.host, e, SystemTime::now())
                .await
                .into_response(),
        }
    }

    /// The request as `/p/{provider}/…` would receive it: the path and query
    /// under the provider's route, the tunnel's credential where the client
    /// put none, `Proxy-Authorization` gone.
    fn rewrite(&self, request: Request) -> Result<Request, ForwardError> {
        let (mut parts, body) = request.into_parts();
        if let Some(authority) = parts.uri.authority() {
            self.same_host(authority.host())?;
        }
        if let Some(host) = parts.headers.get(header::HOST) {
            let host = host.to_str().unwrap_or_default();
            let name = host.parse::<http::uri::Authority>().map(|a| a.host().to_owned());
            self.same_host(&name.unwrap_or_else(|_| host.to_owned()))?;
        }
        if parts.headers.contains_key(header::UPGRADE) {
            return Err(ForwardError::UpgradeRefused {
                host: self.host.clone(),
            });
        }
        parts.headers.remove(header::PROXY_AUTHORIZATION);
        // The client inside the tunnel is the one that opened it: what it
        // says of another is not believed.
        parts.headers.remove(header::FORWARDED);
        parts.headers.remove("x-forwarded-for");
        match crate::proxy::presented_credential(&parts.headers) {
            Ok(Some(presented))
                if presented.starts_with(crate::credentials::PREFIX) && presented != self.credential =>
            {
                return Err(ForwardError::AmbiguousCredential);
            }
            // The tunnel's own credential, or what is not one (a provider's
            // token, leaked): `/p/` judges it, records it and alerts.
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => {
                let bearer = HeaderValue::try_from(format!("Bearer {}", self.credential))
                    .map_err(|_| ForwardError::Auth(unrecorded_missing()))?;
                parts.headers.insert(header::AUTHORIZATION, bearer);
            }
        }
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let under_base = path_and_query
            .strip_prefix(self.base.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
            .ok_or_else(|| ForwardError::OutsideApi {
                provider: self.provider.clone(),
                base: self.base.clone(),
                path: parts.uri.path().to_owned(),
            })?;
        let rewritten = format!("/p/{}{}", self.provider, under_base);
        parts.uri = rewritten
            .parse()
            .map_err(|_| ForwardError::BadTarget { target: rewritten })?;
        parts.extensions.insert(ConnectInfo(self.peer));
        Ok(Request::from_parts(parts, body))
    }

    fn same_host(&self, host: &str) -> Result<(), ForwardError> {
        if hosts::normalize(host) == self.host {
            return Ok(());
        }
        Err(ForwardError::Misdirected {
            tunnel: self.host.clone(),
            host: host.to_owned(),
        })
    }
}

fn unrecorded_missing() -> RefusedCredential {
    RefusedCredential {
        error: AuthError::Missing,
        event_id: None,
    }
}
