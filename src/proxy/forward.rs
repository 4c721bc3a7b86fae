//! Forwarding an admitted request: the agent's credential and hop-by-hop
//! headers out, the real token in, the body streamed up and the response
//! streamed back with every real token overwritten (`redact`). The upstream
//! is asked for an unencoded answer; one it encodes anyway (any
//! `Content-Encoding` but identity, any `Transfer-Encoding` but chunked,
//! however the headers are spelled or repeated) would hide the token from
//! the scan, so it is not passed on. Nothing here decides anything.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

use super::redact::{Hits, Redactor};
use crate::config::AuthConfig;
use crate::secrets::{ExposeSecret, SecretString};

/// Headers that concern one connection, never the next hop (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers that may carry the agent's credential; none of them goes upstream.
pub const CREDENTIAL_HEADERS: [HeaderName; 2] =
    [header::AUTHORIZATION, HeaderName::from_static("project-access-token")];

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the upstream did not answer within the configured timeout")]
    Timeout,
    #[error("cannot reach the upstream: {0}")]
    Unreachable(String),
    #[error("the real token for this provider cannot be written as an HTTP header value")]
    TokenNotAHeader,
    /// The upstream refused the broker's own token: its answer is not the
    /// agent's to read or act on.
    #[error("the upstream answered {status} to the broker's own token")]
    Rejected { status: u16 },
    #[error(
        "the upstream answered in an encoding the broker cannot read (`{encoding}`), so its answer could not be checked for the real token and was not passed on"
    )]
    Encoded { encoding: String },
}

/// Where the request goes and what it carries.
pub struct Outbound<'a> {
    pub method: Method,
    pub url: reqwest::Url,
    pub headers: &'a HeaderMap,
    pub body: reqwest::Body,
    /// Whether the incoming `Content-Length` still describes `body`.
    pub keep_length: bool,
    pub auth: &'a AuthConfig,
    pub token: &'a SecretString,
    /// Overwrites the real tokens in the answer.
    pub redactor: Arc<Redactor>,
    /// Told, once, when the answer carried a real token.
    pub on_echo: Box<dyn FnOnce(Hits) + Send>,
}

pub async fn send(client: &reqwest::Client, out: Outbound<'_>) -> Result<Response, ForwardError> {
    let headers = upstream_headers(out.headers, out.auth, out.token, out.keep_length)?;
    let upstream = client
        .request(out.method, out.url)
        .headers(headers)
        .body(out.body)
        .send()
        .await
        .map_err(describe)?;
    let status = upstream.status();
    if rejects_token(status, upstream.headers()) {
        return Err(ForwardError::Rejected {
            status: status.as_u16(),
        });
    }
    // Before hop-by-hop headers go: a `Connection` header could name the
    // encoding and have it removed.
    if let Some(encoding) = encoded(upstream.headers()) {
        return Err(ForwardError::Encoded { encoding });
    }
    let mut response_headers = upstream.headers().clone();
    strip_hop_by_hop(&mut response_headers);
    let mut hits = Hits::default();
    out.redactor.headers(&mut response_headers, &mut hits);
    let on_echo = out.on_echo;
    let on_echo: Box<dyn FnOnce(Hits) + Send> = if hits.0.is_empty() {
        on_echo
    } else {
        // Headers and body are one answer: reported once, with both.
        on_echo(hits);
        Box::new(|_| {})
    };
    let body = out.redactor.stream(upstream.bytes_stream(), on_echo);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    Ok(response)
}

/// Whether an upstream answer says the broker's token itself is refused:
/// 401 always; 403 unless it is a rate limit, which is not the token's fault.
fn rejects_token(status: http::StatusCode, headers: &HeaderMap) -> bool {
    let rate_limited = headers
        .get("x-ratelimit-remaining")
        .is_some_and(|v| v.as_bytes() == b"0")
        || headers.contains_key(header::RETRY_AFTER);
    status == http::StatusCode::UNAUTHORIZED || (status == http::StatusCode::FORBIDDEN && !rate_limited)
}

fn describe(e: reqwest::Error) -> ForwardError {
    if e.is_timeout() {
        ForwardError::Timeout
    } else {
        ForwardError::Unreachable(error_chain(e))
    }
}

/// A client error and its causes on one line, without the URL: the query
/// string is the agent's, and a webhook's URL carries its secret.
pub fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// The headers sent upstream: the agent's, minus hop-by-hop headers, `Host`
/// (the client sets the upstream's), `Expect` and every credential header,
/// plus the real token the way the provider expects it, and a request for an
/// unencoded answer (so that it can be checked for the token).
pub fn upstream_headers(
    incoming: &HeaderMap,
    auth: &AuthConfig,
    token: &SecretString,
    keep_length: bool,
) -> Result<HeaderMap, ForwardError> {
    let mut headers = agent_headers(incoming);
    if !keep_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    let name = HeaderName::from_bytes(auth.header.as_bytes()).map_err(|_| ForwardError::TokenNotAHeader)?;
    let mut value = HeaderValue::from_str(&format!("{}{}", auth.prefix, token.expose_secret()))
        .map_err(|_| ForwardError::TokenNotAHeader)?;
    value.set_sensitive(true);
    headers.remove(&name);
    headers.insert(name, value);
    Ok(headers)
}

/// The real token as a git host takes it in `Basic` (GitHub's
/// `x-access-token:TOKEN`), base64-encoded, for a `Basic ` prefix.
pub fn git_basic(token: &SecretString) -> SecretString {
    use base64::Engine;
    let plain = zeroize::Zeroizing::new(format!("x-access-token:{}", token.expose_secret()));
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(plain.as_bytes()))
}

/// The agent's headers that reach the upstream, before the real token goes
/// in: what an approval's digest covers.
pub fn agent_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::EXPECT);
    headers.remove(crate::approvals::APPROVAL_HEADER);
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    for name in &CREDENTIAL_HEADERS {
        headers.remove(name);
    }
    headers
}

/// The encoding of an answer the scan could not read through, if any:
/// every `Content-Encoding` value but `identity`, every `Transfer-Encoding`
/// but `chunked` (which the client removes).
fn encoded(headers: &HeaderMap) -> Option<String> {
    let codings = |name| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    };
    let content = codings(header::CONTENT_ENCODING);
    let transfer = codings(header::TRANSFER_ENCODING);
    content
        .into_iter()
        .find(|c| c != "identity")
        .or_else(|| transfer.into_iter().find(|c| c != "chunked"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .chain(headers.get_all("proxy-connection"))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_the_token_itself_are_upstream_credential_mismatches() {
        let none = HeaderMap::new();
        assert!(rejects_token(http::StatusCode::UNAUTHORIZED, &none));
        assert!(rejects_token(http::StatusCode::FORBIDDEN, &none));
        let mut limited = HeaderMap::new();
        limited.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert!(!rejects_token(http::StatusCode::FORBIDDEN, &limited));
        assert!(!rejects_token(http::StatusCode::NOT_FOUND, &none));
        assert!(!rejects_token(http::StatusCode::OK, &none));
    }

    #[test]
    fn an_encoded_answer_is_named_however_its_headers_are_spelled() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, HeaderValue::from_static(v));
            }
            encoded(&h)
        };
        assert_eq!(with(&[]), None);
        assert_eq!(
            with(&[("content-encoding", "identity"), ("transfer-encoding", "chunked")]),
            None
        );
        assert_eq!(with(&[("content-encoding", "gzip")]).as_deref(), Some("gzip"));
        assert_eq!(
            with(&[("content-encoding", "identity"), ("content-encoding", "gzip")]).as_deref(),
            Some("gzip")
        );
        assert_eq!(
            with(&[("content-encoding", "Identity, X-Gzip")]).as_deref(),
            Some("x-gzip")
        );
        assert_eq!(with(&[("transfer-encoding", "gzip, chunked")]).as_deref(), Some("gzip"));
        assert_eq!(
            with(&[("connection", "content-encoding"), ("content-encoding", "br")]).as_deref(),
            Some("br")
        );
    }

    #[test]
    fn the_agents_credential_and_hop_by_hop_headers_never_go_upstream() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer vk1.agent"),
            ("project-access-token", "vk1.agent"),
            ("proxy-authorization", "Basic x"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "127.0.0.1:8700"),
            ("content-length", "12"),
            ("valetkey-approval", "0196"),
            ("accept", "application/json"),
        ] {
            incoming.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let auth = AuthConfig {
            header: "Project-Access-Token".into(),
            prefix: String::new(),
        };
        let out = upstream_headers(&incoming, &auth, &SecretString::from("real-token"), false).unwrap();
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "accept-encoding", "project-access-token"]);
        assert_eq!(out["accept-encoding"], "identity");
        assert_eq!(out["project-access-token"], "real-token");
        assert!(out["project-access-token"].is_sensitive());

        let kept = upstream_headers(&incoming, &AuthConfig::default(), &SecretString::from("t"), true).unwrap();
        assert_eq!(kept["authorization"], "Bearer t");
        assert_eq!(kept["content-length"], "12");
        assert!(!kept.contains_key("project-access-token"));
    }
}
