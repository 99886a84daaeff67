use crate::exit::Exit;

use super::{address, cidr, subgraph, tcp_uri, top_limit, ttl};

#[test]
fn cidrs() {
    assert_eq!(cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(
        cidr(" 2001:DB8::/32 ").unwrap().to_string(),
        "2001:db8::/32"
    );
    assert_eq!(cidr("192.0.2.7/32").unwrap().to_string(), "192.0.2.7/32");
    assert_eq!(cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
    assert_eq!(cidr("2001:db8::5").unwrap().to_string(), "2001:db8::5/128");
    for bad in ["10.0.0.0/", "10.0.0.0/33", "nope", "", "10.0.0/8", "::/129"] {
        let e = cidr(bad).unwrap_err();
        assert_eq!(e.exit, Exit::InvalidArgument, "{bad}");
        assert!(e.message.contains("is not a CIDR network"), "{bad}: {e}");
    }
    let e = cidr("10.1.2.3/8").unwrap_err();
    assert_eq!(e.exit, Exit::InvalidArgument);
    assert_eq!(
        e.message,
        "`10.1.2.3/8` has host bits set (did you mean 10.0.0.0/8?)"
    );
}

#[test]
fn addresses() {
    assert_eq!(address("192.0.2.1").unwrap().to_string(), "192.0.2.1");
    assert_eq!(address("2001:db8::1").unwrap().to_string(), "2001:db8::1");
    assert!(address("192.0.2.1:80").is_err());
    assert!(address("example.com").is_err());
    let e = address("10.0.0.0/8").unwrap_err();
    assert_eq!(e.exit, Exit::InvalidArgument);
    assert!(e.message.contains("not a network"), "{e}");
}

#[test]
fn ttls() {
    assert_eq!(ttl(1).unwrap(), 1);
    assert_eq!(ttl(365 * 24 * 3600).unwrap(), 365 * 24 * 3600);
    assert_eq!(ttl(0).unwrap_err().exit, Exit::InvalidArgument);
    assert_eq!(
        ttl(365 * 24 * 3600 + 1).unwrap_err().exit,
        Exit::InvalidArgument
    );
}

#[test]
fn top_limits() {
    assert_eq!(top_limit(1).unwrap(), 1);
    assert_eq!(top_limit(10_000).unwrap(), 10_000);
    assert!(top_limit(0).is_err());
    assert!(top_limit(10_001).is_err());
}

#[test]
fn subgraph_names() {
    assert_eq!(subgraph("users").unwrap(), "users");
    assert_eq!(subgraph(" ").unwrap_err().exit, Exit::InvalidArgument);
}

#[test]
fn tcp_addresses() {
    assert_eq!(
        tcp_uri("127.0.0.1:50051").unwrap(),
        "http://127.0.0.1:50051"
    );
    assert_eq!(
        tcp_uri("localhost:50051").unwrap(),
        "http://localhost:50051"
    );
    assert_eq!(tcp_uri("[::1]:50051").unwrap(), "http://[::1]:50051");
    for bad in [
        "127.0.0.1",
        "http://127.0.0.1:50051",
        ":50051",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "::1:50051",
        "127.0.0.1:x",
    ] {
        let e = tcp_uri(bad).unwrap_err();
        assert_eq!(e.exit, Exit::InvalidArgument, "{bad}");
        assert!(e.message.starts_with(&format!("--addr `{bad}`")), "{e}");
    }
}
