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

/// The address a client is counted under, for caps and rate limits: every
/// loopback address is this host (a local process can bind any of
/// 127.0.0.0/8), and an IPv6 client is its /64 (the block one host gets).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => client_key(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
        v4 => v4,
    }
}

/// The client address of a request, for handlers.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub IpAddr);

/// A router's state that holds the broker (whose `trusted_proxies` say
/// whom to believe).
pub trait WithBroker {
    fn broker(&self) -> &crate::broker::Broker;
}

impl WithBroker for std::sync::Arc<crate::broker::Broker> {
    fn broker(&self) -> &crate::broker::Broker {
        self
    }
}

impl<S: WithBroker + Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let broker = state.broker();
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
    fn a_host_is_counted_once_however_it_connects() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        for local in ["127.0.0.1", "127.0.0.2", "127.9.9.9", "::1", "::ffff:127.0.0.3"] {
            assert_eq!(key(local), "127.0.0.1", "{local}");
        }
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::7"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
    }

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
