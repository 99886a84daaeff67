use super::*;

fn trusted(nets: &[&str]) -> TrustedProxies {
    TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_claims() {
    let t = trusted(&["10.0.0.0/8"]);
    let h = headers(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("forwarded", "for=5.6.7.8"),
        ("x-real-ip", "9.9.9.9"),
    ]);
    let c = t.resolve(ip("203.0.113.7"), &h);
    assert_eq!(c.client, ip("203.0.113.7"));
    assert_eq!(c.chain, [ip("203.0.113.7")]);
    let mut up = h.clone();
    up.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    c.rewrite(&mut up);
    assert_eq!(up["x-forwarded-for"], "203.0.113.7");
    assert_eq!(up["x-real-ip"], "203.0.113.7");
    assert!(up.get("forwarded").is_none() && up.get("x-forwarded-proto").is_none());
}

#[test]
fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_wins() {
    let t = trusted(&["10.0.0.0/8", "192.168.0.0/16"]);
    // The client wrote "1.2.3.4, 6.6.6.6"; the load balancer appended the
    // address it saw (198.51.100.9); an inner proxy appended 192.168.1.1.
    let h = headers(&[
        ("x-forwarded-for", "1.2.3.4, 6.6.6.6"),
        ("x-forwarded-for", "198.51.100.9, 192.168.1.1"),
    ]);
    let c = t.resolve(ip("10.1.1.1"), &h);
    assert_eq!(c.client, ip("198.51.100.9"));
    assert_eq!(
        c.chain,
        [ip("198.51.100.9"), ip("192.168.1.1"), ip("10.1.1.1")]
    );
    let mut up = h.clone();
    up.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    c.rewrite(&mut up);
    assert_eq!(up["x-forwarded-for"], "198.51.100.9, 192.168.1.1, 10.1.1.1");
    assert_eq!(up.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(up["x-forwarded-proto"], "https", "a trusted proxy's own");
}

#[test]
fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
    let t = trusted(&["10.0.0.0/8"]);
    let h = headers(&[(
        "forwarded",
        r#"for=1.2.3.4, for="[2001:db8::17]:4711";proto=https, for=10.0.0.2"#,
    )]);
    let c = t.resolve(ip("10.0.0.1"), &h);
    assert_eq!(c.client, ip("2001:db8::17"));
    let mut up = h.clone();
    c.rewrite(&mut up);
    assert!(up.get("forwarded").is_none());
    assert_eq!(up["x-forwarded-for"], "2001:db8::17, 10.0.0.2, 10.0.0.1");
}

#[test]
fn garbage_or_unknown_stops_at_the_hop_that_sent_it() {
    let t = trusted(&["10.0.0.0/8"]);
    for xff in [
        "1.2.3.4, unknown, 10.0.0.5",
        "1.2.3.4, not-an-ip, 10.0.0.5",
        "1.2.3.4,,10.0.0.5",
    ] {
        let c = t.resolve(ip("10.0.0.1"), &headers(&[("x-forwarded-for", xff)]));
        assert_eq!(c.client, ip("10.0.0.5"), "{xff}");
    }
    // No header at all from a trusted peer: the peer is the client.
    let c = t.resolve(ip("10.0.0.1"), &HeaderMap::new());
    assert_eq!((c.client, c.chain.len()), (ip("10.0.0.1"), 1));
    // Every hop trusted: the leftmost.
    let c = t.resolve(
        ip("10.0.0.1"),
        &headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]),
    );
    assert_eq!(c.client, ip("10.9.9.9"));
}

#[test]
fn ports_brackets_and_mapped_addresses() {
    let t = trusted(&["127.0.0.0/8"]);
    let c = t.resolve(
        ip("::ffff:127.0.0.1"),
        &headers(&[("x-forwarded-for", "192.0.2.1:5555")]),
    );
    assert_eq!(c.client, ip("192.0.2.1"));
    let c = t.resolve(
        ip("127.0.0.1"),
        &headers(&[("x-forwarded-for", "[2001:db8::1]:80")]),
    );
    assert_eq!(c.client, ip("2001:db8::1"));
    let c = t.resolve(
        ip("127.0.0.1"),
        &headers(&[("x-forwarded-for", "::ffff:198.51.100.1")]),
    );
    assert_eq!(c.client, ip("198.51.100.1"));
}
