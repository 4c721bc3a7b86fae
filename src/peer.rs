//! Who is on the other end of a request: the socket's peer, or, when that
//! peer is a proxy ops trust (`[server] trusted_proxies`), the client it
//! names in `X-Forwarded-For`. Rate limits and per-client caps count this
//! address. Untrusted peers cannot choose it: their headers are ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The client address: the last address in `X-Forwarded-For` that is not a
/// trusted proxy, when the peer itself is trusted; the peer otherwise.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // An unreadable hop: nothing before it can be believed.
            Err(_) => return peer,
        }
    }
    peer
}

/// The client address of a request, for handlers.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub IpAddr);

impl FromRequestParts<std::sync::Arc<crate::broker::Broker>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        broker: &std::sync::Arc<crate::broker::Broker>,
    ) -> Result<Self, Self::Rejection> {
        // Served without connection info (a test's in-process router), the
        // request comes from this host.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        Ok(Client(client_addr(
            peer,
            &parts.headers,
            &broker.config().server.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn forwarded_addresses_count_only_from_a_trusted_peer() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.7"),
        );
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_addr(lb, &h, &trusted), "203.0.113.9".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_addr(stranger, &h, &trusted), stranger);
        assert_eq!(client_addr(lb, &HeaderMap::new(), &trusted), lb);
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, junk"));
        assert_eq!(client_addr(lb, &h, &trusted), lb);
    }
}
