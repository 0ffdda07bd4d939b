//! The address of the client behind a public-port request, for the auth-failure limiter
//! (docs/abuse.md#client-address).
//!
//! The socket peer is the client unless it is one of `TRUSTED_PROXIES`; then the client is the
//! right-most `X-Forwarded-For` entry that is not a trusted proxy (each trusted proxy appends
//! the address it received the request from, so entries left of the last untrusted one may be
//! forged by the client and are never read). On AWS Lambda there is no socket: the API Gateway
//! request context's `sourceIp` is the peer; behind an ALB (no source address in its context)
//! the ALB is the trusted peer and `X-Forwarded-For` is walked the same way.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request},
    http::HeaderMap,
};
use lambda_http::request::RequestContext;

use crate::config::TrustedProxies;

/// The client address of a public-port request (`None`: not known, e.g. a Lambda event
/// without a source address and no trusted `X-Forwarded-For`). Present only on the external
/// port, which is how the failure limiter knows the request came through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

/// Who handed us the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// A socket peer or an API Gateway `sourceIp`.
    Addr(IpAddr),
    /// An ALB invoking Lambda: trusted, and it appended the client to `X-Forwarded-For`.
    Alb,
    /// Nothing known.
    Unknown,
}

/// Tags an external-port request with its [`ClientAddr`] (first step of the port's CORS
/// middleware, `http::cors`, which reads it, as the `ApiTenant` extractor does).
pub fn tag(trusted: &TrustedProxies, req: &mut Request) {
    let client = client_of(req.headers(), peer_of(req), trusted);
    req.extensions_mut().insert(ClientAddr(client));
}

fn peer_of(req: &Request) -> Peer {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        return Peer::Addr(addr.ip());
    }
    let source = match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.as_deref(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.source_ip.as_deref(),
        Some(RequestContext::Alb(_)) => return Peer::Alb,
        _ => None,
    };
    source
        .and_then(parse_entry)
        .map_or(Peer::Unknown, Peer::Addr)
}

/// The client address given the peer and the trusted proxies.
fn client_of(headers: &HeaderMap, peer: Peer, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = match peer {
        Peer::Addr(ip) if !trusted.contains(ip) => return Some(ip.to_canonical()),
        Peer::Addr(ip) => Some(ip.to_canonical()),
        Peer::Alb => None,
        Peer::Unknown => return None,
    };
    walk_forwarded(headers, trusted).or(peer)
}

/// The right-most untrusted `X-Forwarded-For` entry. An unreadable entry ends the walk at the
/// last trusted hop before it; a chain of only trusted hops answers its left-most one.
fn walk_forwarded(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    // Split as bytes: a line that is not ASCII (a client's forged part, with the address a
    // proxy appended after it) must still yield its readable entries; a non-UTF-8 entry
    // reads as unreadable and ends the walk like any other garbage.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|e| std::str::from_utf8(e).unwrap_or("?").trim())
        .collect();
    let mut last = None;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else {
            return last;
        };
        if !trusted.contains(ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    last
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let trusted = TrustedProxies::default();
        let h = xff(&["9.9.9.9"]);
        assert_eq!(
            client_of(&h, Peer::Addr(ip("1.2.3.4")), &trusted),
            Some(ip("1.2.3.4"))
        );
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(
            client_of(&h, Peer::Addr(ip("1.2.3.4")), &trusted),
            Some(ip("1.2.3.4"))
        );
    }

    #[test]
    fn trusted_peer_takes_the_right_most_untrusted_entry() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        let peer = Peer::Addr(ip("10.1.1.1"));
        // The client forged the left entries; the proxies appended 5.5.5.5 and 192.168.1.7.
        let h = xff(&["6.6.6.6, 7.7.7.7", "5.5.5.5, 192.168.1.7"]);
        assert_eq!(client_of(&h, peer, &trusted), Some(ip("5.5.5.5")));
        // Garbage left of a trusted hop: the client is that hop.
        let h = xff(&["not-an-ip, 192.168.1.7"]);
        assert_eq!(client_of(&h, peer, &trusted), Some(ip("192.168.1.7")));
        // No header: the proxy itself.
        assert_eq!(
            client_of(&HeaderMap::new(), peer, &trusted),
            Some(ip("10.1.1.1"))
        );
        // A forged non-ASCII part does not hide the address the proxy appended after it.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"9.9.9.\xff, 5.5.5.5").unwrap(),
        );
        assert_eq!(client_of(&h, peer, &trusted), Some(ip("5.5.5.5")));
        // Ports and IPv4-mapped IPv6 are read.
        let h = xff(&["[::ffff:5.5.5.5]:443"]);
        assert_eq!(client_of(&h, peer, &trusted), Some(ip("5.5.5.5")));
    }

    #[test]
    fn on_lambda_the_gateway_source_ip_is_the_peer() {
        use lambda_http::aws_lambda_events::apigw::{
            ApiGatewayProxyRequestContext, ApiGatewayV2httpRequestContext,
        };
        let mut v2 = ApiGatewayV2httpRequestContext::default();
        v2.http.source_ip = Some("198.51.100.7".into());
        let mut v1 = ApiGatewayProxyRequestContext::default();
        v1.identity.source_ip = Some("198.51.100.8".into());
        let with = |ctx: RequestContext| {
            let mut req = Request::new(axum::body::Body::empty());
            req.extensions_mut().insert(ctx);
            peer_of(&req)
        };
        assert_eq!(
            with(RequestContext::ApiGatewayV2(v2)),
            Peer::Addr(ip("198.51.100.7"))
        );
        assert_eq!(
            with(RequestContext::ApiGatewayV1(v1)),
            Peer::Addr(ip("198.51.100.8"))
        );
        assert_eq!(with(RequestContext::Alb(Default::default())), Peer::Alb);
        assert_eq!(
            peer_of(&Request::new(axum::body::Body::empty())),
            Peer::Unknown
        );
    }

    #[test]
    fn alb_is_a_trusted_hop_and_unknown_stays_unknown() {
        let trusted = TrustedProxies::default();
        let h = xff(&["6.6.6.6, 5.5.5.5"]);
        assert_eq!(client_of(&h, Peer::Alb, &trusted), Some(ip("5.5.5.5")));
        assert_eq!(client_of(&h, Peer::Unknown, &trusted), None);
    }
}
