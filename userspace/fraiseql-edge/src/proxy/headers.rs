//! Header handling of the proxy (RFC 9110 §7.6.1): hop-by-hop headers —
//! the fixed list and any named in `Connection` — are removed in both
//! directions; `Host` is rewritten to the endpoint; the forwarding headers
//! are rebuilt from the resolved client address ([`super::client_addr`]).

use http::{HeaderMap, HeaderName, header};

use super::client_addr::ClientAddr;

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers (and `Upgrade`: the data path does not tunnel).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The headers sent upstream for a client request.
pub fn upstream_headers(mut headers: HeaderMap, client: &ClientAddr) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH); // recomputed from the buffered body
    client.rewrite(&mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::proxy::client_addr::TrustedProxies;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert(header::HOST, HeaderValue::from_static("edge"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.1"));
        let client = TrustedProxies::default().resolve("192.0.2.9".parse().unwrap(), &h);
        let out = upstream_headers(h, &client);
        assert!(out.get("x-secret").is_none() && out.get("keep-alive").is_none());
        assert!(out.get(header::TRANSFER_ENCODING).is_none() && out.get(header::HOST).is_none());
        assert_eq!(out[header::AUTHORIZATION], "Bearer t");
        assert_eq!(
            out["x-forwarded-for"], "192.0.2.9",
            "an untrusted peer's claim is dropped"
        );
    }
}
