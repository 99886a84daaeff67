//! Who the client is. The peer address, unless the peer is a trusted proxy
//! (`proxy.trusted_proxies`); then the rightmost address of
//! `X-Forwarded-For` (or, without it, of `Forwarded`'s `for=`) that is not
//! itself trusted. Everything left of that address was written by the
//! client and is ignored: a client picks the leftmost entries, never the
//! rightmost ones a trusted proxy appended.
//!
//! The forwarding headers sent upstream are rebuilt from the result:
//! `X-Forwarded-For` lists the client and the hops after it (the peer
//! last), `X-Real-IP` is the client, and client-supplied `Forwarded`,
//! `X-Real-IP` and — from an untrusted peer — `X-Forwarded-Host/Proto/Port`
//! are dropped.
//!
//! Both headers are read as the proxies in front write them: every
//! instance, comma-separated, in order. An entry that is not an address
//! (`unknown`, an obfuscated `_node`, garbage) ends the walk: the client is
//! the hop that sent it, the nearest address that can be vouched for.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// Describe the original request as the trusted proxy saw it; from anyone
/// else they are fiction.
const FROM_TRUSTED_ONLY: [HeaderName; 3] = [
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-port"),
];

/// The trusted proxies (`proxy.trusted_proxies`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// Who sent a request, and the hops it came through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client: the address every later phase uses.
    pub client: IpAddr,
    /// The client, the proxies after it, and the peer last.
    pub chain: Vec<IpAddr>,
    /// Whether the peer is a trusted proxy.
    pub via_trusted_proxy: bool,
}

impl TrustedProxies {
    /// Trusts peers in `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Resolves the client of a request from `peer`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return ClientAddr {
                client: peer,
                chain: vec![peer],
                via_trusted_proxy: false,
            };
        }
        let hops = if headers.contains_key(&XFF) {
            entries(headers, &XFF, |e| Some(e.trim()))
        } else {
            entries(headers, &FORWARDED, forwarded_for)
        };
        let mut chain = vec![peer];
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            chain.push(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        chain.reverse();
        ClientAddr {
            client: chain[0],
            chain,
            via_trusted_proxy: true,
        }
    }
}

impl ClientAddr {
    /// Replaces the forwarding headers of `headers` (a request going upstream).
    pub fn rewrite(&self, headers: &mut HeaderMap) {
        headers.remove(&FORWARDED);
        if !self.via_trusted_proxy {
            for name in &FROM_TRUSTED_ONLY {
                headers.remove(name);
            }
        }
        let Ok(client) = HeaderValue::from_str(&self.client.to_string()) else {
            return;
        };
        if self.chain.len() == 1 {
            // The common case, a direct client: one value for both headers.
            headers.insert(XFF, client.clone());
        } else {
            let xff = self
                .chain
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&xff) {
                headers.insert(XFF, v);
            }
        }
        headers.insert(X_REAL_IP, client);
    }
}

/// Every comma-separated entry of every `name` header, in order, mapped
/// by `pick` (entries it rejects become empty, which ends the walk).
fn entries<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    pick: impl Fn(&'a str) -> Option<&'a str>,
) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').collect::<Vec<_>>(),
            Err(_) => vec![""], // not text: nothing left of it is readable
        })
        .map(|e| pick(e).unwrap_or(""))
        .collect()
}

/// The `for=` value of one `Forwarded` element (RFC 7239 §4), unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:80`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports)
/// as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
