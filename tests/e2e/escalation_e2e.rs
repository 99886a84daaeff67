//! Escalation end to end with the kernel layer: a real `fraiseql-edge` with
//! XDP on the host side of a veth pair and its GraphQL listener on the host
//! address, `[auth]` with an HMAC secret in front of a real `demo-subgraph`
//! that requires authentication, and clients in a network namespace.
//!
//! A client that keeps presenting bad tokens collects strikes; the strike
//! that reaches `[rate_limit.escalation]`'s threshold puts its address on
//! the kernel block list, where XDP drops its packets (its new connections
//! get no SYN-ACK, and the drops count against its address) until the block
//! time is over. Another client of the same namespace never notices.
//!
//! Waits poll with generous deadlines; the only time bound asserted is a
//! lower one (the block lasted at least its block time), which a slow
//! machine can only make easier to meet.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fraiseql_edge::kernel::{BlockInfo, KernelMaps};
use fraiseql_edge_common::Counter;
use fraiseql_edge_tests::{
    daemon::run_cli,
    graphql::{Client, Reply, assert_refused},
    kernel_tests_enabled,
    loopback::LoopbackClient,
    netns::NetNs,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    wait::eventually,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::{
    kernel_e2e::{counter, open_maps, pin_dir},
    proxy_e2e::serial,
};

const QUERY: &str = "{ users(first: 2) { id name } }";
const PATH: &str = "/users/graphql";
const ISSUER: &str = "https://issuer.test";
const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";
const OTHER_SECRET: &[u8] = b"another secret, also of thirty-two bytes";
/// Deadline of one request that must be answered.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a connection attempt that must fail: long enough for the
/// first SYN and its retransmission (after one second) to be dropped.
const BLOCKED_CONNECT: Duration = Duration::from_millis(1500);
/// `[rate_limit.escalation]`: strikes within the window that block an address.
const THRESHOLD: u32 = 5;
const WINDOW_SECS: u64 = 10;
/// Short, yet longer than the checks made while the block is in force.
const BLOCK_SECS: u64 = 6;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn token_signed_with(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).expect("an HMAC key"),
    )
    .expect("signing a token")
}

/// A token the edge accepts.
fn valid_token(sub: &str) -> String {
    token_signed_with(
        SECRET,
        &json!({ "sub": sub, "iss": ISSUER, "exp": now() + 600 }),
    )
}

/// A new connection from `src` in `ns` to `dst`.
fn connect(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<LoopbackClient> {
    ns.run(|| LoopbackClient::connect(src, dst, timeout))
}

/// One request on a new connection from `src`, with `bearer` as its token.
fn request(ns: &NetNs, src: IpAddr, dst: SocketAddr, bearer: Option<&str>) -> Reply {
    let mut conn = connect(ns, src, dst, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting from {src} to {dst}: {e}"));
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    conn.query_with(PATH, QUERY, &headers)
        .unwrap_or_else(|e| panic!("a request from {src}: {e}"))
}

/// The kernel's per-client drop count of `addr` (0 while untracked).
fn client_dropped(maps: &KernelMaps, addr: IpAddr) -> u64 {
    maps.client(addr)
        .expect("reading the client map")
        .map_or(0, |c| c.dropped)
}

fn kernel_block(maps: &KernelMaps, addr: IpAddr) -> Option<BlockInfo> {
    maps.blocks()
        .expect("reading the block map")
        .into_iter()
        .find(|b| b.client == addr)
}

/// The issue's acceptance test: a client in a network namespace sending bad
/// tokens is blocked, the kernel's drop count for its address rises and its
/// new connections fail; another client is served; the block expires and a
/// valid token from the same address is served again.
#[test]
fn bad_tokens_escalate_to_a_kernel_block_that_expires() {
    if !kernel_tests_enabled("bad_tokens_escalate_to_a_kernel_block_that_expires") {
        return;
    }
    let _serial = serial();
    const PORT: u16 = 18801;
    let pin = pin_dir("escalation");
    let ns = NetNs::new("escal", 40, 2);
    let (abuser, bystander) = (ns.client(0), ns.client(1));
    let listen = SocketAddr::new(ns.host_v4().into(), PORT);

    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("writing the secret");
    let subgraph = DemoSubgraph::start("users");
    let kernel = format!(
        "interfaces = [{:?}]\nprotected_ports = [{PORT}]\nrate = 0\nmax_conns = 0\n\
         xdp_mode = \"auto\"\npin_path = {:?}\n",
        ns.host_if(),
        pin.0.to_str().expect("UTF-8 pin path"),
    );
    let loopback_listener = "[proxy]\nlisten = \"127.0.0.1:0\"\n";
    let mut toml = ProxySetup::one(
        SubgraphSpec::new("users", [&subgraph])
            .table("health", "interval_ms = 60000, timeout_ms = 5000"),
    )
    .rate_limit(&format!(
        "requests_per_minute = 0\nescalation = {{ threshold = {THRESHOLD}, \
         window_secs = {WINDOW_SECS}, block_secs = {BLOCK_SECS} }}"
    ))
    .to_toml_with_kernel(&kernel);
    assert!(toml.contains(loopback_listener), "{toml}");
    // Clients reach the GraphQL listener through the veth, on the protected port.
    toml = toml.replacen(
        loopback_listener,
        &format!("[proxy]\nlisten = \"{listen}\"\n"),
        1,
    );
    toml += &format!(
        "\n[auth]\nissuers = [{ISSUER:?}]\n\
         keys = [{{ type = \"hmac_secret_file\", path = {:?}, algorithms = [\"HS256\"] }}]\n",
        secret.display().to_string()
    );
    let edge = Edge::start_toml(&toml);
    let log = edge.daemon.log();
    assert!(
        !log.contains("eBPF UNAVAILABLE"),
        "the kernel layer did not start; stderr:\n{log}"
    );
    assert_eq!(edge.graphql, listen);
    let maps = open_maps(&pin);
    let metrics = || Client::default().metrics(&edge.admin_url("/metrics"));
    let escalations = || {
        metrics()
            .get("fraiseql_edge_escalations_total", &[("outcome", "blocked")])
            .unwrap_or(0.0)
    };

    // Both clients are served with a valid token, and the kernel tracks them.
    for (who, sub) in [(abuser, "alice"), (bystander, "bob")] {
        let reply = request(&ns, who, listen, Some(&valid_token(sub)));
        assert!(reply.is_data(), "{who}: {} {}", reply.status, reply.text());
        let tracked = maps.client(who).expect("reading the client map");
        assert!(
            tracked
                .as_ref()
                .is_some_and(|c| c.passed > 0 && c.dropped == 0),
            "{who} in the client map: {tracked:?}"
        );
    }

    // Bad tokens, one per new connection: each is a 401 with its code and a
    // strike against the address. Below the threshold nothing is blocked.
    let claims = |exp: u64, iss: &str| json!({ "sub": "mallory", "iss": iss, "exp": exp });
    let bad: [(&str, Option<String>, &str); THRESHOLD as usize] = [
        (
            "signed with another key",
            Some(token_signed_with(
                OTHER_SECRET,
                &claims(now() + 600, ISSUER),
            )),
            "INVALID_SIGNATURE",
        ),
        (
            "expired",
            Some(token_signed_with(SECRET, &claims(now() - 3600, ISSUER))),
            "EXPIRED",
        ),
        ("garbage", Some("not.a.jwt".to_string()), "MALFORMED_TOKEN"),
        (
            "wrong issuer",
            Some(token_signed_with(
                SECRET,
                &claims(now() + 600, "https://evil.test"),
            )),
            "WRONG_ISSUER",
        ),
        ("no token", None, "MISSING_TOKEN"),
    ];
    let mut last_strike_sent = Instant::now();
    for (i, (what, token, code)) in bad.iter().enumerate() {
        assert_eq!(
            kernel_block(&maps, abuser),
            None,
            "blocked after {i} strikes of {THRESHOLD}"
        );
        last_strike_sent = Instant::now();
        let reply = request(&ns, abuser, listen, token.as_deref());
        assert_refused(&reply, 401, code);
        println!("escalation: strike {} ({what}): 401 {code}", i + 1);
    }

    // The threshold's strike put the address on the kernel block list.
    let block = kernel_block(&maps, abuser);
    assert!(
        block.as_ref().is_some_and(|b| b
            .expires_in_secs
            .is_some_and(|s| (1..=BLOCK_SECS).contains(&s))),
        "the kernel block list after {THRESHOLD} strikes: {:?}",
        maps.blocks()
    );
    let pin_path = pin.0.to_str().expect("UTF-8 pin path");
    let out = run_cli(&["kernel", "blocks", "--pin-path", pin_path, "--json"]);
    assert!(
        out.status.success(),
        "fraiseql-edge kernel blocks: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<BlockInfo> = serde_json::from_slice(&out.stdout).expect("JSON block list");
    assert!(
        listed.iter().any(|b| b.client == abuser),
        "`kernel blocks` lists {listed:?}"
    );

    // Its new connections get no SYN-ACK: XDP drops the SYNs, and the drops
    // count against its address.
    let dropped_before = client_dropped(&maps, abuser);
    let block_drops_before = counter(&maps, Counter::DroppedBlock);
    match connect(&ns, abuser, listen, BLOCKED_CONNECT) {
        Ok(_) => panic!(
            "a blocked client connected, {:?} after its last strike was sent; block: {:?}",
            last_strike_sent.elapsed(),
            kernel_block(&maps, abuser)
        ),
        Err(e) => assert_eq!(
            e.kind(),
            io::ErrorKind::TimedOut,
            "a blocked client's connection attempt: {e}"
        ),
    }
    assert!(
        eventually(Duration::from_secs(3), || client_dropped(&maps, abuser)
            > dropped_before),
        "the drop count of {abuser} stayed at {dropped_before}"
    );
    assert!(counter(&maps, Counter::DroppedBlock) > block_drops_before);
    println!(
        "escalation: blocked {abuser}: kernel drops of the client {dropped_before} -> {}, \
         dropped_block {block_drops_before} -> {}",
        client_dropped(&maps, abuser),
        counter(&maps, Counter::DroppedBlock)
    );

    // The other client of the namespace is served and never dropped.
    let reply = request(&ns, bystander, listen, Some(&valid_token("bob")));
    assert!(reply.is_data(), "{} {}", reply.status, reply.text());
    assert_eq!(client_dropped(&maps, bystander), 0);
    assert_eq!(escalations(), 1.0);
    let log = edge.daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("client blocked: too many refused requests")
                && l.contains(&abuser.to_string())
                && l.contains("kernel")),
        "the escalation is logged with the client and the kernel as enforcer; stderr:\n{log}"
    );

    // After the block time the kernel passes the client again and the
    // daemon's sweep deletes the entry; a valid token is then served.
    assert!(
        eventually(Duration::from_secs(BLOCK_SECS + 15), || kernel_block(
            &maps, abuser
        )
        .is_none()),
        "the block of {abuser} did not expire: {:?}",
        maps.blocks()
    );
    let mut served = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            let Ok(mut conn) = connect(&ns, abuser, listen, BLOCKED_CONNECT) else {
                return false;
            };
            let auth = format!("Bearer {}", valid_token("alice"));
            served = conn
                .query_with(PATH, QUERY, &[("authorization", &auth)])
                .ok();
            served.is_some()
        }),
        "{abuser} cannot connect after its block expired"
    );
    let reply = served.expect("an answer");
    assert!(reply.is_data(), "{} {}", reply.status, reply.text());
    // The block set after the last strike was sent lasted its block time (a
    // lower bound: a slow machine only makes it longer).
    let blocked_for = last_strike_sent.elapsed();
    assert!(
        blocked_for >= Duration::from_secs(BLOCK_SECS),
        "{abuser} was served {blocked_for:?} after its last strike: the block lifted early"
    );
    println!("escalation: {abuser} served again {blocked_for:?} after its last strike");
    assert!(
        eventually(Duration::from_secs(5), || edge.daemon.log().lines().any(
            |l| l.contains("block expired") && l.contains(&abuser.to_string())
        )),
        "the sweep logs the expired block; stderr:\n{}",
        edge.daemon.log()
    );
    let m = metrics();
    assert_eq!(
        m.get("fraiseql_edge_escalations_total", &[("outcome", "blocked")]),
        Some(1.0)
    );
    assert_eq!(
        m.sum("fraiseql_edge_auth_failures_total", &[]),
        f64::from(THRESHOLD)
    );
}
