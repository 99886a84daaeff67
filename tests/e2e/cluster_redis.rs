//! Cluster mode's global limiter against a real Redis (Debian's
//! `redis-server`, one per test): two limiters stand for two nodes sharing
//! one limit, and Redis dies and comes back under them.

use std::time::Duration;

use fraiseql_edge::cluster::{ClusterConfig, GlobalDecision, GlobalLimiter};
use fraiseql_edge_tests::redis::Redis;

fn config(redis: &Redis) -> ClusterConfig {
    ClusterConfig {
        redis_url: redis.url(),
        // Generous: a loaded CI machine must not turn a live Redis into a
        // fallback.
        timeout_ms: 2_000,
        breaker_failures: 2,
        breaker_open_ms: 300,
        ..ClusterConfig::default()
    }
}

/// Whether the check admitted the request (`None`: Redis unavailable).
async fn admitted(limiter: &GlobalLimiter, key: &str) -> Option<bool> {
    match limiter.check(key, 1, 10, 1).await {
        GlobalDecision::Checked(d) => Some(d.allowed),
        GlobalDecision::Unavailable => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_limit_exactly() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (
        GlobalLimiter::new(&config(&redis)).unwrap(),
        GlobalLimiter::new(&config(&redis)).unwrap(),
    );
    // One a minute with a burst of 10: within the test, exactly the burst
    // passes, however the requests are spread over the two nodes.
    let mut passed = 0;
    for i in 0..30 {
        let node = if i % 3 == 0 { &a } else { &b };
        if admitted(node, "identity:alice")
            .await
            .expect("Redis answers")
        {
            passed += 1;
        }
    }
    assert_eq!(passed, 10, "burst 10 across both nodes");
    // Another identity has its own budget.
    assert_eq!(admitted(&a, "identity:bob").await, Some(true));
    // A refusal says when to come back and how much is left.
    match b.check("identity:alice", 1, 10, 1).await {
        GlobalDecision::Checked(d) => {
            assert!(!d.allowed);
            assert_eq!(d.remaining, 0);
            assert_eq!(d.limit, 10);
            assert!(d.retry_after_secs >= 1, "{d:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_is_a_fallback_and_a_restarted_one_is_used_again() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let limiter = GlobalLimiter::new(&config(&redis)).unwrap();
    assert_eq!(admitted(&limiter, "identity:carol").await, Some(true));
    assert!(limiter.is_up());

    redis.kill();
    // Every call now ends as "unavailable", never as an error or a hang,
    // and the node says Redis is down.
    for _ in 0..5 {
        assert_eq!(admitted(&limiter, "identity:carol").await, None);
    }
    assert!(!limiter.is_up());

    redis.restart();
    // Once the breaker lets a probe through, the restarted (empty) Redis
    // is used again: carol has a fresh budget.
    let mut back = None;
    for _ in 0..100 {
        back = admitted(&limiter, "identity:carol").await;
        if back.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(back, Some(true), "the limiter never used Redis again");
    assert!(limiter.is_up());
}

#[test]
fn an_unusable_url_is_a_clear_error_and_a_dead_one_is_not() {
    let err = GlobalLimiter::new(&ClusterConfig {
        redis_url: "memcached://cache:11211".into(),
        ..ClusterConfig::default()
    })
    .err()
    .expect("refused");
    assert!(err.to_string().contains("redis_url"), "{err}");
    assert!(err.to_string().contains("redis://"), "{err}");
    // Nothing listens there: still a limiter (it connects lazily), whose
    // checks fall back.
    let port = fraiseql_edge_tests::free_port().port();
    let limiter = GlobalLimiter::new(&ClusterConfig {
        redis_url: format!("redis://127.0.0.1:{port}"),
        ..ClusterConfig::default()
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(limiter.check("identity:dave", 60, 10, 1)),
        GlobalDecision::Unavailable
    );
    assert!(!limiter.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_shares_the_limit_and_an_untrusted_certificate_is_a_fallback() {
    let Some(redis) = Redis::start_tls() else {
        return;
    };
    let tls = ClusterConfig {
        redis_url: redis.tls_url(),
        tls_ca_file: Some(redis.ca_file()),
        ..config(&redis)
    };
    let (a, b) = (
        GlobalLimiter::new(&tls).unwrap(),
        GlobalLimiter::new(&tls).unwrap(),
    );
    let mut passed = 0;
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        if admitted(node, "identity:tls")
            .await
            .expect("Redis answers over TLS")
        {
            passed += 1;
        }
    }
    assert_eq!(passed, 10, "burst 10 across both nodes, over TLS");
    // The same server, a CA that did not sign its certificate: the
    // handshake fails, so Redis is unavailable (never an error or a hang).
    let untrusted = GlobalLimiter::new(&ClusterConfig {
        tls_ca_file: Some(redis.other_ca_file()),
        ..tls.clone()
    })
    .unwrap();
    assert_eq!(admitted(&untrusted, "identity:tls2").await, None);
    assert!(!untrusted.is_up());
    // A CA file that is not there is a clear error at start.
    let err = GlobalLimiter::new(&ClusterConfig {
        tls_ca_file: Some("/nonexistent/ca.pem".into()),
        ..tls
    })
    .err()
    .expect("a missing CA file is refused");
    assert!(err.to_string().contains("cluster.tls_ca_file"), "{err}");
}

mod daemons {
    //! Two real daemons sharing one limit through the Redis.

    use std::{net::IpAddr, time::Duration};

    use fraiseql_edge_tests::{
        loopback::LoopbackClient,
        redis::Redis,
        subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    };

    const QUERY: &str = "{ users(first: 1) { id } }";

    fn node(users: &DemoSubgraph, redis: &Redis, global: bool) -> Edge {
        let setup = ProxySetup::one(SubgraphSpec::new("users", [users]))
            // A burst of 10, then one a minute: no refill during the test.
            .rate_limit(&format!(
                "requests_per_minute = 1\nburst = 10\nglobal = {global}\nescalation = {{ threshold = 0 }}"
            ))
            .section(&format!(
                "[cluster]\nredis_url = {:?}\ntimeout_ms = 2000\nbreaker_open_ms = 300",
                redis.url()
            ));
        Edge::start(&setup)
    }

    /// Statuses of `n` requests from `src`, alternating between the nodes.
    fn spread(nodes: &[&Edge], src: &str, n: usize) -> Vec<u16> {
        let src: IpAddr = src.parse().unwrap();
        let mut clients: Vec<LoopbackClient> = nodes
            .iter()
            .map(|e| LoopbackClient::connect(src, e.graphql, Duration::from_secs(10)).unwrap())
            .collect();
        (0..n)
            .map(|i| {
                let k = i % clients.len();
                clients[k]
                    .query("/users/graphql", QUERY)
                    .expect("an answer")
                    .status
            })
            .collect()
    }

    fn count(statuses: &[u16], status: u16) -> usize {
        statuses.iter().filter(|s| **s == status).count()
    }

    #[test]
    fn a_global_limit_holds_across_two_daemons_and_falls_back_to_the_local_one() {
        let _serial = crate::proxy_e2e::serial();
        let Some(mut redis) = Redis::start() else {
            return;
        };
        let users = DemoSubgraph::start("users");
        let (a, b) = (node(&users, &redis, true), node(&users, &redis, true));

        // One client spread over both nodes gets the burst once, not twice.
        let statuses = spread(&[&a, &b], "127.0.0.2", 30);
        assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
        assert_eq!(count(&statuses, 429), 20, "{statuses:?}");
        let m = fraiseql_edge_tests::graphql::Client::default()
            .metrics(&format!("http://{}/metrics", a.admin));
        assert!(m.sum("fraiseql_edge_rate_limited_total", &[("layer", "global")]) > 0.0);
        assert_eq!(m.sum("fraiseql_edge_cluster_redis_up", &[]), 1.0);

        // Redis dies: no client sees an error caused by it; each node
        // enforces its own limit (fail-open), and says so.
        redis.kill();
        let statuses = spread(&[&a, &b], "127.0.0.3", 30);
        assert_eq!(
            count(&statuses, 200),
            20,
            "each node's own burst: {statuses:?}"
        );
        assert_eq!(count(&statuses, 429), 10, "{statuses:?}");
        let m = fraiseql_edge_tests::graphql::Client::default()
            .metrics(&format!("http://{}/metrics", a.admin));
        assert_eq!(m.sum("fraiseql_edge_cluster_redis_up", &[]), 0.0);
        assert!(
            m.sum(
                "fraiseql_edge_cluster_checks_total",
                &[("result", "unavailable")]
            ) > 0.0
        );
        assert!(a.daemon.log().contains("Redis unreachable"));

        // Back: the global limit holds again for a new client.
        redis.restart();
        std::thread::sleep(Duration::from_millis(400));
        let statuses = spread(&[&a, &b], "127.0.0.4", 30);
        assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
        assert!(a.daemon.log().contains("Redis is reachable again"));
    }

    #[test]
    fn without_global_each_daemon_admits_its_own_limit() {
        let _serial = crate::proxy_e2e::serial();
        let Some(redis) = Redis::start() else {
            return;
        };
        let users = DemoSubgraph::start("users");
        let (a, b) = (node(&users, &redis, false), node(&users, &redis, false));
        let statuses = spread(&[&a, &b], "127.0.0.5", 30);
        assert_eq!(count(&statuses, 200), 20, "{statuses:?}");
    }

    /// A degraded node (no bpffs: the user-space limiter enforces) in
    /// cluster mode, with a per-identity limit that escalates quickly.
    fn degraded_node(users: &DemoSubgraph, redis: &Redis, pins: &std::path::Path) -> Edge {
        let kernel = format!(
            "interfaces = [\"lo\"]\nprotected_ports = [8080]\npin_path = {:?}\nrate = 0\nmax_conns = 0\n",
            pins.join("pins")
        );
        let setup = ProxySetup::one(
            SubgraphSpec::new("users", [users])
                .table("health", "interval_ms = 60000, timeout_ms = 5000"),
        )
        .rate_limit(
            "requests_per_minute = 60\nburst = 2\nescalation = { threshold = 5, window_secs = 60, block_secs = 120 }",
        )
        .section(&format!(
            "[cluster]\nredis_url = {:?}\ntimeout_ms = 2000\nbreaker_open_ms = 300\nresync_secs = 1",
            redis.url()
        ));
        let edge = Edge::start_toml(&setup.to_toml_with_kernel(&kernel));
        assert!(
            edge.daemon.log().contains("eBPF UNAVAILABLE"),
            "the node should run degraded"
        );
        edge
    }

    #[test]
    fn an_escalation_block_on_one_degraded_node_is_enforced_by_the_other() {
        let _serial = crate::proxy_e2e::serial();
        let Some(redis) = Redis::start() else {
            return;
        };
        let users = DemoSubgraph::start("users");
        let pins = tempfile::tempdir().expect("temp dir");
        let a = degraded_node(&users, &redis, &pins.path().join("a"));
        let b = degraded_node(&users, &redis, &pins.path().join("b"));
        let metrics = |e: &Edge| {
            fraiseql_edge_tests::graphql::Client::default()
                .metrics(&format!("http://{}/metrics", e.admin))
        };
        for e in [&a, &b] {
            assert!(
                fraiseql_edge_tests::wait::eventually(Duration::from_secs(10), || metrics(e)
                    .sum("fraiseql_edge_cluster_block_sync_up", &[])
                    == 1.0),
                "the node did not load the shared blocks:\n{}",
                e.daemon.log()
            );
        }
        // Garbage on the channel and in the set is logged and ignored.
        let garbage: [&[&str]; 2] = [
            &["PUBLISH", "fraiseql-edge:blocks", "{not json"],
            &["ZADD", "fraiseql-edge:blocks", "+inf", "not-an-address"],
        ];
        for garbage in garbage {
            assert!(
                redis.command(garbage).is_ok_and(|r| r.starts_with(':')),
                "{garbage:?}"
            );
        }
        for (e, needle) in [
            (&a, "an unreadable message on the block channel"),
            (&b, "not a client address in the shared blocks"),
        ] {
            assert!(
                fraiseql_edge_tests::wait::eventually(Duration::from_secs(5), || e
                    .daemon
                    .log()
                    .contains(needle)),
                "{needle:?} not logged:\n{}",
                e.daemon.log()
            );
        }
        let abuser: IpAddr = "127.0.0.9".parse().unwrap();
        // B serves the client before anything happens.
        let mut on_b = LoopbackClient::connect(abuser, b.graphql, Duration::from_secs(10)).unwrap();
        assert_eq!(on_b.query("/users/graphql", QUERY).unwrap().status, 200);
        drop(on_b);

        // Five refusals on A escalate to a block there…
        let mut on_a = LoopbackClient::connect(abuser, a.graphql, Duration::from_secs(10)).unwrap();
        let statuses: Vec<u16> = (0..7)
            .map(|_| {
                on_a.query("/users/graphql", QUERY)
                    .expect("an answer")
                    .status
            })
            .collect();
        assert_eq!(statuses, [200, 200, 429, 429, 429, 429, 429]);
        // …and B's user-space limiter refuses the client's connections.
        let refused_on_b = fraiseql_edge_tests::wait::eventually(Duration::from_secs(1), || {
            LoopbackClient::connect(abuser, b.graphql, Duration::from_secs(2))
                .and_then(|mut c| c.query("/users/graphql", QUERY))
                .is_err()
        });
        assert!(
            refused_on_b,
            "B still serves the client A blocked; B's log:\n{}",
            b.daemon.log()
        );
        let listed = b.control().blocks().expect("ListBlocks on B");
        assert!(
            listed.iter().any(|e| e.address == "127.0.0.9"
                && e.expires_in_seconds.is_some_and(|s| s > 100 && s <= 120)),
            "B lists the block with what is left of A's 120 s: {listed:?}"
        );
        assert!(b.daemon.log().contains("client blocked by another node"));
        // Another client is still served by B.
        let mut other = LoopbackClient::connect(
            "127.0.0.10".parse().unwrap(),
            b.graphql,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(other.query("/users/graphql", QUERY).unwrap().status, 200);
        assert_eq!(
            metrics(&a).sum(
                "fraiseql_edge_cluster_blocks_total",
                &[("direction", "published"), ("op", "block")]
            ),
            1.0
        );
        // GetStatus (edgectl status) tells the same story.
        let (sa, sb) = (
            a.control().status().unwrap().cluster.expect("cluster mode"),
            b.control().status().unwrap().cluster.expect("cluster mode"),
        );
        assert!(
            sa.redis_reachable && sa.blocks_shared && sa.block_sync_up,
            "{sa:?}"
        );
        assert_eq!((sa.blocks_published, sb.blocks_received), (1, 1));
        assert_eq!((sb.blocks_published, sb.blocks_pending), (0, 0));
        assert!(!sa.global_limits);
        let limits = a.control().limits().unwrap();
        assert!(
            limits.rate_limit.is_some_and(|r| !r.cluster_wide),
            "{limits:?}"
        );
        assert_eq!(sa.failure_mode, "open");
        assert!(sb.block_resyncs >= 1, "{sb:?}");

        // IPv6 clients are blocked by /64 (ipv6_prefix = 64): a block of
        // one address on A is lifted by an unblock of another address of
        // the same /64 on B, everywhere and for good (the shared set names
        // the /64, so a resync does not bring it back).
        let blocked = a.control().block("fd00:1:2:3::10", Some(600)).unwrap();
        assert_eq!(blocked.address, "fd00:1:2:3::");
        let listed_v6 = |e: &Edge| {
            e.control()
                .blocks()
                .unwrap()
                .iter()
                .any(|b| b.address == "fd00:1:2:3::")
        };
        assert!(fraiseql_edge_tests::wait::eventually(
            Duration::from_secs(2),
            || listed_v6(&b)
        ));
        assert!(b.control().unblock("fd00:1:2:3::20").unwrap());
        assert!(fraiseql_edge_tests::wait::eventually(
            Duration::from_secs(2),
            || !listed_v6(&a)
        ));
        // Several resyncs (every second here) later, still lifted.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            !listed_v6(&a) && !listed_v6(&b),
            "a resync brought the /64 back"
        );
    }
}
