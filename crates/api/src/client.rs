//! The client address of a request: the TCP peer, unless the peer is one of the
//! reverse proxies named by `--trusted-proxies`; then the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy.
//!
//! Every proxy appends the address it received the request from to
//! `X-Forwarded-For`, so the list is only as trustworthy as the hops that wrote it:
//! read from the right (the entry the nearest proxy wrote), every trusted proxy's entry
//! vouches for the next one to its left, and the first address that is not a trusted
//! proxy is the client. Whatever a client writes into the header itself stands to the
//! left of that and is never believed. From a peer that is not a trusted proxy the
//! header is ignored altogether.
//!
//! The address is used for failed-login throttling ([`crate::auth`]) and recorded in
//! the audit entries of refused requests ([`crate::audit`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
pub use ipnet::IpNet;

use crate::state::AppState;

/// The header reverse proxies append the client address to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The resolved client address of a request (a request extension, set by
/// [`resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client: the TCP peer, or the address a trusted proxy reported.
    pub ip: IpAddr,
    /// The trusted proxy the request came through, when `ip` was taken from
    /// `X-Forwarded-For`.
    pub via: Option<IpAddr>,
}

/// A `--trusted-proxies` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address
/// (`10.1.2.3`, the same as `/32`; `::1`, the same as `/128`).
pub fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)"))
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The client address of a request from `peer` that carries the `X-Forwarded-For`
/// header values `forwarded` (in the order received), given the trusted `proxies`.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    proxies: &[IpNet],
) -> ClientAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return ClientAddr { ip: peer, via: None };
    }
    // Right to left over every entry of every header line.
    let entries = forwarded
        .rev()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").rsplit(',').map(str::to_string).collect::<Vec<_>>());
    let mut client = peer;
    for entry in entries {
        // An entry that is not an address (e.g. `unknown`) stops the walk: the hop to
        // its right is the last one that can be vouched for.
        let Some(ip) = parse_entry(&entry) else { break };
        client = ip;
        if !trusted(ip, proxies) {
            break;
        }
    }
    ClientAddr { ip: client, via: (client != peer).then_some(peer) }
}

/// Router middleware: records the [`ClientAddr`] of every request that came over TCP.
pub async fn resolve(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let proxies = &state.config().trusted_proxies;
        let client = client_address(peer.ip(), request.headers().get_all(X_FORWARDED_FOR).iter(), proxies);
        request.extensions_mut().insert(client);
    }
    next.run(request).await
}

/// The client address of a request: as [`resolve`] recorded it, else the TCP peer,
/// else `None` (not served over TCP, e.g. in unit tests).
pub fn of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ClientAddr>()
        .map(|c| c.ip)
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_canonical()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_proxy(s).expect("a CIDR")).collect()
    }

    fn resolve_with(peer: &str, headers: &[&str], proxies: &[&str]) -> ClientAddr {
        let values: Vec<HeaderValue> = headers.iter().map(|h| HeaderValue::from_str(h).expect("a header")).collect();
        client_address(ip(peer), values.iter(), &nets(proxies))
    }

    #[test]
    fn proxies_are_parsed_as_cidrs_or_addresses() {
        assert_eq!(parse_proxy(" 10.0.0.0/8 ").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_proxy("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8", "host bits are dropped");
        assert_eq!(parse_proxy("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_proxy("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_proxy("fd00::/8").unwrap().to_string(), "fd00::/8");
        for bad in ["", "10.0.0.0/33", "proxy.example", "10.0.0", "10.0.0.0/"] {
            assert!(parse_proxy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let c = resolve_with("198.51.100.9", &["203.0.113.5"], &[]);
        assert_eq!(c, ClientAddr { ip: ip("198.51.100.9"), via: None });
        let c = resolve_with("198.51.100.9", &["203.0.113.5"], &["10.0.0.0/8"]);
        assert_eq!(c, ClientAddr { ip: ip("198.51.100.9"), via: None });
    }

    #[test]
    fn a_trusted_peer_reports_the_right_most_untrusted_address() {
        let proxies = ["10.0.0.0/8", "192.0.2.1"];
        // One proxy: the entry it appended.
        let c = resolve_with("10.0.0.2", &["203.0.113.5"], &proxies);
        assert_eq!(c, ClientAddr { ip: ip("203.0.113.5"), via: Some(ip("10.0.0.2")) });
        // A client-written (spoofed) entry to the left is not believed.
        let c = resolve_with("10.0.0.2", &["1.1.1.1, 203.0.113.5"], &proxies);
        assert_eq!(c.ip, ip("203.0.113.5"));
        // Chained proxies, over several header lines, with ports and brackets.
        let c = resolve_with("10.0.0.2", &["1.1.1.1, 203.0.113.5:4711", "192.0.2.1, 10.9.9.9"], &proxies);
        assert_eq!(c.ip, ip("203.0.113.5"));
        let c = resolve_with("10.0.0.2", &["[2001:db8::7]:443"], &proxies);
        assert_eq!(c.ip, ip("2001:db8::7"));
        let c = resolve_with("10.0.0.2", &["2001:db8::8"], &proxies);
        assert_eq!(c.ip, ip("2001:db8::8"));
        // No header: the proxy itself.
        assert_eq!(resolve_with("10.0.0.2", &[], &proxies), ClientAddr { ip: ip("10.0.0.2"), via: None });
        // Only trusted hops: the left-most of them.
        assert_eq!(resolve_with("10.0.0.2", &["10.0.0.3, 10.0.0.4"], &proxies).ip, ip("10.0.0.3"));
        // Garbage stops the walk at the last hop that can be vouched for.
        assert_eq!(resolve_with("10.0.0.2", &["203.0.113.5, unknown"], &proxies).ip, ip("10.0.0.2"));
        assert_eq!(resolve_with("10.0.0.2", &["unknown, 10.0.0.7"], &proxies).ip, ip("10.0.0.7"));
        // An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address.
        assert_eq!(resolve_with("::ffff:10.0.0.2", &["203.0.113.5"], &proxies).ip, ip("203.0.113.5"));
        assert_eq!(resolve_with("::ffff:203.0.113.9", &[], &proxies).ip, ip("203.0.113.9"));
    }
}
