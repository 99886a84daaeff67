//! The gRPC control API against the real daemon with a real client: tokens
//! and roles, argument errors, live limit changes with their effect on
//! traffic (per-identity limits through the proxy; kernel limits and
//! overrides on XDP in a network namespace), the event stream, reloads
//! (gRPC and SIGHUP, valid and invalid), standard health and reflection.

use std::{net::SocketAddr, time::Duration};

use fraiseql_edge::kernel::KernelMaps;
use fraiseql_edge_api::v1 as pb;
use fraiseql_edge_tests::{
    PinDir,
    clients::flood_for,
    control::{self, Client as CtlClient, Control},
    daemon::{Daemon, EdgeConfig},
    graphql::{Client, assert_refused},
    kernel_tests_enabled,
    netns::NetNs,
    servers::UdpCounter,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec, logged_addr},
    wait::{eventually, settled},
};
use tonic::Code;

use crate::proxy_e2e::serial;

const QUERY: &str = "{ users(first: 2) { id name } }";

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.expect_err("the call should fail").code()
}

fn limits(ctl: &Control) -> pb::Limits {
    let mut c = ctl.reader();
    ctl.run(c.get_limits(pb::GetLimitsRequest {}))
        .expect("GetLimits")
        .into_inner()
}

/// Every mutating call once, with `c`; the codes they give.
fn mutations(ctl: &Control, c: &mut CtlClient) -> Vec<(&'static str, Code)> {
    vec![
        (
            "SetKernelLimits",
            code(ctl.run(c.set_kernel_limits(pb::SetKernelLimitsRequest {
                rate: Some(1),
                ..Default::default()
            }))),
        ),
        (
            "SetRateLimit",
            code(ctl.run(c.set_rate_limit(pb::SetRateLimitRequest {
                requests_per_minute: Some(1),
                ..Default::default()
            }))),
        ),
        (
            "AddOverride",
            code(ctl.run(c.add_override(pb::AddOverrideRequest {
                r#override: Some(pb::Override {
                    cidr: "10.0.0.0/8".into(),
                    action: pb::OverrideAction::Deny as i32,
                    ..Default::default()
                }),
            }))),
        ),
        (
            "RemoveOverride",
            code(ctl.run(c.remove_override(pb::RemoveOverrideRequest {
                cidr: "10.0.0.0/8".into(),
            }))),
        ),
        (
            "Block",
            code(ctl.run(c.block(pb::BlockRequest {
                address: "192.0.2.1".into(),
                ..Default::default()
            }))),
        ),
        (
            "Unblock",
            code(ctl.run(c.unblock(pb::UnblockRequest {
                address: "192.0.2.1".into(),
            }))),
        ),
        (
            "SetBreaker",
            code(ctl.run(c.set_breaker(pb::SetBreakerRequest {
                subgraph: "users".into(),
                action: pb::BreakerAction::Open as i32,
            }))),
        ),
        ("Reload", code(ctl.run(c.reload(pb::ReloadRequest {})))),
    ]
}

/// Tokens and roles; bad arguments; a per-identity limit set over gRPC
/// changes what the proxy admits; metrics, health and reflection.
#[test]
fn tokens_roles_arguments_and_live_rate_limits() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup::one(SubgraphSpec::new("users", [&sg])));
    let ctl = edge.control();
    let url = edge.route("users");
    let http = Client::default();
    let before = limits(&ctl);

    // No token, a wrong token: UNAUTHENTICATED on every call, reads too.
    for token in [None, Some("not-the-token-0123456789"), Some("")] {
        let mut c = ctl.with_token(token);
        assert_eq!(
            code(ctl.run(c.get_status(pb::GetStatusRequest {}))),
            Code::Unauthenticated,
            "{token:?}"
        );
        for (call, got) in mutations(&ctl, &mut c) {
            assert_eq!(got, Code::Unauthenticated, "{call} with {token:?}");
        }
    }
    // The read-only token reads, and may not change anything.
    let mut reader = ctl.reader();
    for (call, got) in mutations(&ctl, &mut reader) {
        assert_eq!(
            got,
            Code::PermissionDenied,
            "{call} with the read-only token"
        );
    }
    assert_eq!(limits(&ctl), before, "a refused call changed nothing");
    assert!(http.query(&url, QUERY).is_data());
    assert!(
        edge.daemon
            .log()
            .contains("control API call with an unknown token refused")
    );

    let status = ctl
        .run(reader.get_status(pb::GetStatusRequest {}))
        .expect("GetStatus")
        .into_inner();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.enforcement, pb::Enforcement::Disabled as i32);
    assert_eq!(status.subgraphs, 1);
    assert!(status.ready, "{:?}", status.not_ready);

    // Bad arguments: INVALID_ARGUMENT with the reason; unknown names: NOT_FOUND;
    // a layer that does not run: FAILED_PRECONDITION.
    let mut admin = ctl.admin();
    let e = ctl
        .run(admin.set_rate_limit(pb::SetRateLimitRequest::default()))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("nothing to change"), "{e:?}");
    let e = ctl
        .run(admin.set_rate_limit(pb::SetRateLimitRequest {
            requests_per_minute: Some(60),
            burst: Some(0),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("rate_limit.burst"), "{e:?}");
    let e = ctl
        .run(admin.set_rate_limit(pb::SetRateLimitRequest {
            subgraph: "nope".into(),
            requests_per_minute: Some(60),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "no subgraph named `nope`")
    );
    let e = ctl
        .run(admin.add_override(pb::AddOverrideRequest {
            r#override: Some(pb::Override {
                cidr: "10.0.0.0/33".into(),
                action: pb::OverrideAction::Deny as i32,
                ..Default::default()
            }),
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("not a CIDR"), "{e:?}");
    let e = ctl
        .run(admin.top_clients(pb::TopClientsRequest { limit: 1_000_000 }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for (call, got) in [
        (
            "SetKernelLimits",
            code(ctl.run(admin.set_kernel_limits(pb::SetKernelLimitsRequest {
                rate: Some(10),
                ..Default::default()
            }))),
        ),
        (
            "Block",
            code(ctl.run(admin.block(pb::BlockRequest {
                address: "192.0.2.1".into(),
                ..Default::default()
            }))),
        ),
        (
            "TopClients",
            code(ctl.run(admin.top_clients(pb::TopClientsRequest { limit: 5 }))),
        ),
    ] {
        assert_eq!(
            got,
            Code::FailedPrecondition,
            "{call} with the kernel layer disabled"
        );
    }
    assert_eq!(limits(&ctl), before, "refused calls changed nothing");

    // A global limit set live: 2 requests, then 429.
    let set = ctl
        .run(admin.set_rate_limit(pb::SetRateLimitRequest {
            requests_per_minute: Some(60),
            burst: Some(2),
            ..Default::default()
        }))
        .expect("SetRateLimit")
        .into_inner();
    assert_eq!(
        set.rate_limit,
        Some(pb::RateLimit {
            requests_per_minute: 60,
            burst: 2,
            cluster_wide: false,
        })
    );
    assert_eq!(set.subgraphs[0].limit, set.rate_limit);
    let statuses: Vec<u16> = (0..3).map(|_| http.query(&url, QUERY).status).collect();
    assert_eq!(statuses, [200, 200, 429]);
    // The subgraph's own limit, looser: requests pass again.
    let set = ctl
        .run(admin.set_rate_limit(pb::SetRateLimitRequest {
            subgraph: "users".into(),
            requests_per_minute: Some(6000),
            burst: Some(100),
            inherit: false,
        }))
        .expect("SetRateLimit users")
        .into_inner();
    assert!(set.subgraphs[0].overridden);
    assert!(http.query(&url, QUERY).is_data());
    // Back to the global limit (2 at once, then 429).
    let set = ctl
        .run(admin.set_rate_limit(pb::SetRateLimitRequest {
            subgraph: "users".into(),
            inherit: true,
            ..Default::default()
        }))
        .expect("inherit")
        .into_inner();
    assert!(!set.subgraphs[0].overridden);
    assert_eq!(set.subgraphs[0].limit, set.rate_limit);
    let replies: Vec<_> = (0..3).map(|_| http.query(&url, QUERY)).collect();
    assert_refused(&replies[2], 429, "RATE_LIMITED");
    assert!(
        edge.daemon
            .log()
            .contains("configuration changed at runtime")
    );

    // The metrics snapshot is the scrape's, structured.
    let snapshot = ctl
        .run(reader.get_metrics(pb::GetMetricsRequest {
            prefix: "fraiseql_edge_requests_total".into(),
        }))
        .expect("GetMetrics")
        .into_inner();
    assert_eq!(snapshot.families.len(), 1, "{snapshot:?}");
    let requests = &snapshot.families[0];
    assert_eq!(requests.r#type, pb::MetricType::Counter as i32);
    let served: f64 = requests
        .samples
        .iter()
        .filter(|s| s.labels.get("status").map(String::as_str) == Some("200"))
        .map(|s| s.value)
        .sum();
    assert!(served >= 4.0, "{requests:?}");

    // grpc.health.v1 without a token: SERVING (the daemon is ready).
    let addr = edge.control.expect("control address");
    let health = ctl.run(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "fraiseql.edge.v1.EdgeControl".into(),
            })
            .await
    });
    assert_eq!(
        health.expect("Check").into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Reflection, with a token, lists the service.
    let services = reflection_services(&ctl, addr);
    assert!(
        services.contains(&"fraiseql.edge.v1.EdgeControl".to_string()),
        "{services:?}"
    );
}

fn reflection_services(ctl: &Control, addr: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    ctl.run(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ServerReflectionClient::with_interceptor(
            channel,
            control::Bearer::new(control::READ_TOKEN),
        );
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("reflection")
            .into_inner();
        let resp = stream.message().await.expect("a response").expect("one");
        match resp.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    })
}

/// The next event of `stream`, within 10 s.
fn next_event(
    ctl: &Control,
    stream: &mut tonic::Streaming<pb::Event>,
    kind: pb::EventKind,
) -> pb::Event {
    ctl.run(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let e = stream
                    .message()
                    .await
                    .expect("the event stream")
                    .expect("an event");
                if e.kind == kind as i32 {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} event within 10 s"))
    })
}

/// The event stream delivers a breaker transition, a block and reloads; a
/// reload (gRPC or SIGHUP) applies the file's limits, an invalid file is
/// refused with the reason and the running configuration stays.
#[test]
fn events_and_reloads() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let pins = tempfile::tempdir().expect("temp dir");
    // Not bpffs: degraded mode, so there is a block list without XDP.
    let kernel = format!(
        "interfaces = [\"lo\"]\nprotected_ports = [8080]\npin_path = {:?}\n",
        pins.path().join("pins")
    );
    let setup = ProxySetup::one(
        SubgraphSpec::new("users", [&sg]).table("health", "interval_ms = 60000, timeout_ms = 5000"),
    );
    let toml = setup.to_toml_with_kernel(&kernel);
    let mut edge = Edge::start_toml(&toml);
    let ctl = edge.control();
    let mut watcher = ctl.reader();
    let mut events = ctl
        .run(watcher.watch_events(pb::WatchEventsRequest { kinds: vec![] }))
        .expect("WatchEvents")
        .into_inner();
    let http = Client::default();
    let url = edge.route("users");

    // A breaker transition, from real failures.
    sg.faults(&serde_json::json!({"error_rate": 1.0, "error_status": 503}));
    assert!(
        eventually(Duration::from_secs(10), || {
            http.query(&url, QUERY).code().as_deref() == Some("CIRCUIT_OPEN")
        }),
        "the breaker did not open"
    );
    let e = next_event(&ctl, &mut events, pb::EventKind::Breaker);
    assert_eq!(e.subject, "users");
    assert_eq!(e.attributes.get("to").map(String::as_str), Some("open"));
    sg.faults(&serde_json::json!({"error_rate": 0.0}));
    ctl.breaker("users", pb::BreakerAction::Reset)
        .expect("reset");
    let e = next_event(&ctl, &mut events, pb::EventKind::ConfigChange);
    assert_eq!(
        (e.subject.as_str(), e.actor.as_str()),
        ("users", "operator:admin")
    );

    // A block, with who and why.
    ctl.block("192.0.2.9", Some(60)).expect("Block");
    let e = next_event(&ctl, &mut events, pb::EventKind::Block);
    assert_eq!(
        (e.subject.as_str(), e.actor.as_str()),
        ("192.0.2.9", "operator:admin")
    );
    assert_eq!(
        e.attributes.get("ttl_seconds").map(String::as_str),
        Some("60")
    );

    // A reload over gRPC applies the file's per-identity limit.
    let path = edge.daemon.config_path().to_path_buf();
    let edited = toml.replace(
        "[rate_limit]\nrequests_per_minute = 0",
        "[rate_limit]\nrequests_per_minute = 60\nburst = 3",
    );
    assert_ne!(edited, toml);
    std::fs::write(&path, &edited).expect("rewriting the config");
    let mut admin = ctl.admin();
    let report = ctl
        .run(admin.reload(pb::ReloadRequest {}))
        .expect("Reload")
        .into_inner();
    assert_eq!(report.applied, ["per-identity rate limits"], "{report:?}");
    assert!(report.needs_restart.is_empty(), "{report:?}");
    let e = next_event(&ctl, &mut events, pb::EventKind::Reload);
    assert_eq!(e.attributes.get("result").map(String::as_str), Some("ok"));
    assert_eq!(limits(&ctl).rate_limit.map(|r| r.burst), Some(3));

    // An invalid file: refused with the reason, nothing changes.
    std::fs::write(&path, edited.replace("burst = 3", "burst = \"three\"")).expect("rewriting");
    let e = ctl.run(admin.reload(pb::ReloadRequest {})).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("rate_limit.burst"), "{e:?}");
    let ev = next_event(&ctl, &mut events, pb::EventKind::Reload);
    assert_eq!(
        ev.attributes.get("result").map(String::as_str),
        Some("rejected")
    );
    assert_eq!(limits(&ctl).rate_limit.map(|r| r.burst), Some(3));
    assert!(http.query(&url, QUERY).is_data(), "the edge still serves");

    // SIGHUP reloads the same way; what cannot change live is reported.
    std::fs::write(
        &path,
        edited
            .replace("burst = 3", "burst = 5")
            .replace("[proxy]\n", "[proxy]\nmax_body_bytes = 65536\n")
            + "\n[slow_queries]\nthreshold_ms = 250\n",
    )
    .expect("rewriting");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(edge.daemon.pid()).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let e = next_event(&ctl, &mut events, pb::EventKind::Reload);
    assert_eq!(e.actor, "signal:SIGHUP");
    assert_eq!(
        e.attributes.get("needs_restart").map(String::as_str),
        Some("[proxy]; [slow_queries]")
    );
    assert_eq!(limits(&ctl).rate_limit.map(|r| r.burst), Some(5));
    let mut reader = ctl.reader();
    let status = ctl
        .run(reader.get_status(pb::GetStatusRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(status.reloads, 2);
    assert_eq!(status.enforcement, pb::Enforcement::UserSpace as i32);
    let m = http.metrics(&edge.admin_url("/metrics"));
    assert_eq!(
        m.get("fraiseql_edge_config_reloads_total", &[("result", "ok")]),
        Some(2.0)
    );
    assert_eq!(
        m.get(
            "fraiseql_edge_config_reloads_total",
            &[("result", "rejected")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("fraiseql_edge_config_last_reload_successful", &[]),
        Some(1.0)
    );

    // A watcher does not hold the daemon up on SIGTERM: its stream ends.
    assert!(edge.daemon.terminate().success());
    let end =
        ctl.run(async { tokio::time::timeout(Duration::from_secs(5), events.message()).await });
    assert!(
        matches!(end, Ok(Ok(None) | Err(_))),
        "the event stream did not end with the daemon: {end:?}"
    );
}

/// A kernel limit and an override set over gRPC change the pinned maps
/// and what XDP lets through; the top clients come from the maps.
#[test]
fn kernel_limits_and_overrides_over_grpc_change_the_traffic() {
    if !kernel_tests_enabled("kernel_limits_and_overrides_over_grpc_change_the_traffic") {
        return;
    }
    let _serial = serial();
    const PORT: u16 = 18711;
    let pin = PinDir::new("ctlkern");
    let ns = NetNs::new("ctlk", 64, 1);
    let dst = SocketAddr::new(ns.host_v4().into(), PORT);
    let server = UdpCounter::bind(&[dst]);
    let cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    let mut daemon = Daemon::spawn(&format!("{}\n{}", cfg.to_toml(), control::section()), &[]);
    daemon.wait_ready();
    let ctl = Control::connect(logged_addr(&daemon, "control API").expect("control address"));
    let maps = KernelMaps::open_pinned(&pin.0).expect("the daemon's pinned maps");
    let client = ns.client(0);

    let mut reader = ctl.reader();
    let status = ctl
        .run(reader.get_status(pb::GetStatusRequest {}))
        .expect("GetStatus")
        .into_inner();
    assert_eq!(status.enforcement, pb::Enforcement::Kernel as i32);
    assert_eq!(status.interfaces.len(), 1);
    assert_eq!(status.interfaces[0].name, ns.host_if());
    assert!(
        [pb::AttachMode::Native as i32, pb::AttachMode::Skb as i32]
            .contains(&status.interfaces[0].mode),
        "{status:?}"
    );

    // No rate limit yet: a flood passes.
    assert_eq!(maps.global_config().unwrap().default_limits.rate_enabled, 0);
    flood_for(&ns, client, dst, 300, Duration::from_millis(700));
    let unlimited = settled(Duration::from_secs(3), || server.received(client));
    assert!(unlimited >= 100, "received {unlimited}");

    let mut admin = ctl.admin();
    let set = ctl
        .run(admin.set_kernel_limits(pb::SetKernelLimitsRequest {
            rate: Some(10),
            burst: Some(10),
            max_conns: Some(7),
        }))
        .expect("SetKernelLimits")
        .into_inner();
    let k = set.kernel.expect("kernel limits");
    assert_eq!((k.rate, k.burst, k.max_conns), (10, 10, 7));
    let limits = maps.global_config().unwrap().default_limits;
    assert_eq!((limits.rate_enabled, limits.max_conns), (1, 7));
    flood_for(&ns, client, dst, 300, Duration::from_millis(700));
    let limited = settled(Duration::from_secs(3), || server.received(client)) - unlimited;
    // burst + rate·t, with room for the flood's own pacing.
    assert!(
        limited <= 10 + 10 + 10,
        "received {limited} under a 10/s limit"
    );

    // The client shows in the top list with its drops.
    let top = ctl
        .run(reader.top_clients(pb::TopClientsRequest { limit: 5 }))
        .expect("TopClients")
        .into_inner()
        .clients;
    let me = top
        .iter()
        .find(|c| c.address == client.to_string())
        .unwrap_or_else(|| panic!("{client} not in {top:?}"));
    assert!(me.passed >= unlimited && me.dropped > 0, "{me:?}");

    // An allow override lifts the limit for the client's network.
    let added = ctl
        .run(admin.add_override(pb::AddOverrideRequest {
            r#override: Some(pb::Override {
                cidr: format!("{client}/32"),
                action: pb::OverrideAction::Allow as i32,
                ..Default::default()
            }),
        }))
        .expect("AddOverride")
        .into_inner();
    assert_eq!(added.cidr, format!("{client}/32"));
    let listed = ctl
        .run(reader.list_overrides(pb::ListOverridesRequest {}))
        .unwrap()
        .into_inner()
        .overrides;
    assert_eq!(listed, std::slice::from_ref(&added));
    let before = server.received(client);
    flood_for(&ns, client, dst, 300, Duration::from_millis(700));
    let allowed = settled(Duration::from_secs(3), || server.received(client)) - before;
    assert!(allowed >= 100, "received {allowed} with an allow override");

    // Removed: limited again; removing it twice is NOT_FOUND.
    ctl.run(admin.remove_override(pb::RemoveOverrideRequest {
        cidr: added.cidr.clone(),
    }))
    .expect("RemoveOverride");
    let e = ctl
        .run(admin.remove_override(pb::RemoveOverrideRequest { cidr: added.cidr }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    std::thread::sleep(Duration::from_secs(2)); // the bucket refills to its burst
    let before = server.received(client);
    flood_for(&ns, client, dst, 300, Duration::from_millis(700));
    let limited = settled(Duration::from_secs(3), || server.received(client)) - before;
    assert!(
        limited <= 10 + 10 + 10,
        "received {limited} after the override went"
    );
    assert!(daemon.log().contains("configuration changed at runtime"));
}

/// Reload under load: an endpoint added, the first one removed, a subgraph
/// added and the per-identity limit changed, each applied while queries
/// flow — not one fails; an invalid file keeps the running routing.
#[test]
fn reload_under_load_fails_no_request() {
    let _serial = serial();
    let (a, b, orders) = (
        DemoSubgraph::start("a"),
        DemoSubgraph::start("b"),
        DemoSubgraph::start("orders"),
    );
    let health = "interval_ms = 500, timeout_ms = 400";
    let setup = |users: &[&DemoSubgraph], with_orders: bool, rate_limit: &str| {
        let mut subgraphs =
            vec![SubgraphSpec::new("users", users.iter().copied()).table("health", health)];
        if with_orders {
            subgraphs.push(SubgraphSpec::new("orders", [&orders]).table("health", health));
        }
        ProxySetup {
            subgraphs,
            ..ProxySetup::default()
        }
        .rate_limit(rate_limit)
        .to_toml()
    };
    let edge = Edge::start_toml(&setup(&[&a], false, "requests_per_minute = 0"));
    let ctl = edge.control();
    let mut admin = ctl.admin();
    let path = edge.daemon.config_path().to_path_buf();
    let http = Client::default();
    let mut reload = |toml: &str| {
        std::fs::write(&path, toml).expect("rewriting the config");
        ctl.run(admin.reload(pb::ReloadRequest {}))
            .map(tonic::Response::into_inner)
    };
    let load = crate::proxy_e2e::Load::start(&http, &edge.route("users"), 4);
    assert!(
        eventually(Duration::from_secs(10), || a.stats().graphql() > 20),
        "no load reached the first endpoint"
    );

    // A second endpoint: it takes traffic.
    let report = reload(&setup(&[&a, &b], false, "requests_per_minute = 0")).expect("reload");
    assert_eq!(report.applied, ["subgraph users changed"], "{report:?}");
    assert!(
        eventually(Duration::from_secs(10), || b.stats().graphql() > 20),
        "the added endpoint gets no traffic"
    );

    // The first one removed, a subgraph added, the limit changed.
    let report = reload(&setup(
        &[&b],
        true,
        "requests_per_minute = 6000000\nburst = 100000",
    ))
    .expect("reload");
    assert_eq!(
        report.applied,
        [
            "subgraph users changed",
            "subgraph orders added",
            "per-identity rate limits"
        ],
        "{report:?}"
    );
    let a_served = settled(Duration::from_secs(3), || a.stats().graphql());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a.stats().graphql(),
        a_served,
        "the removed endpoint still gets traffic"
    );
    let before_b = b.stats().graphql();
    assert!(
        eventually(Duration::from_secs(5), || b.stats().graphql()
            > before_b + 20),
        "the remaining endpoint stopped getting traffic"
    );
    assert!(
        http.query(&edge.route("orders"), "{ __typename }")
            .is_data()
    );

    // An invalid file: refused, the routing stays.
    let e = reload("[[subgraphs]]\nname = 1\n").unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        http.query(&edge.route("orders"), "{ __typename }")
            .is_data()
    );

    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests went through");
    let listed = ctl.subgraphs().expect("ListSubgraphs");
    let users = listed.iter().find(|s| s.name == "users").expect("users");
    assert_eq!(users.endpoints.len(), 1);
    assert!(
        users.endpoints[0].url.contains(&b.addr.to_string()),
        "{users:?}"
    );
}

/// `POST` of `QUERY` with `token`: the status.
fn with_token(url: &str, token: &str) -> u16 {
    ureq::post(url)
        .header("content-type", "application/json")
        .header("authorization", &format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send(serde_json::json!({ "query": QUERY }).to_string())
        .expect("POST")
        .status()
        .as_u16()
}

/// JWT key rotation and settings by reload: a rewritten JWKS file and a
/// changed audience apply without a restart.
#[test]
fn reload_rotates_jwt_keys_and_settings() {
    use crate::jwt_e2e::keys::{AUDIENCE, claims, jwks, p256, sign_with};
    use jsonwebtoken::Algorithm;
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("jwks.json");
    let (old, new) = (p256("old"), p256("new"));
    std::fs::write(&keys, jwks(&[&old])).expect("JWKS file");
    let base = ProxySetup::one(SubgraphSpec::new("users", [&sg]))
        .rate_limit("requests_per_minute = 0\nescalation = { threshold = 0 }")
        .to_toml();
    let auth = |audience: &str| {
        format!(
            "\n[auth]\nissuers = [{:?}]\naudiences = [{audience:?}]\nkeys = [{{ type = \"jwks_file\", path = {:?}, algorithms = [\"ES256\"] }}]\n",
            crate::jwt_e2e::keys::ISSUER,
            keys.display().to_string()
        )
    };
    let edge = Edge::start_toml(&format!("{base}{}", auth(AUDIENCE)));
    let url = edge.route("users");
    let (old_token, new_token) = (
        sign_with(Algorithm::ES256, &old, &claims("alice")),
        sign_with(Algorithm::ES256, &new, &claims("alice")),
    );
    assert_eq!(with_token(&url, &old_token), 200);
    assert_eq!(with_token(&url, &new_token), 401);

    // The key file rotated: a reload reads it again.
    std::fs::write(&keys, jwks(&[&new])).expect("JWKS file");
    let ctl = edge.control();
    let mut admin = ctl.admin();
    let report = ctl
        .run(admin.reload(pb::ReloadRequest {}))
        .expect("Reload")
        .into_inner();
    assert_eq!(report.applied, ["[auth] and its keys"], "{report:?}");
    assert_eq!(with_token(&url, &new_token), 200);
    assert_eq!(with_token(&url, &old_token), 401);

    // A setting: tokens for the old audience are refused after the reload.
    std::fs::write(
        edge.daemon.config_path(),
        format!("{base}{}", auth("another-audience")),
    )
    .expect("rewriting the config");
    ctl.run(admin.reload(pb::ReloadRequest {})).expect("Reload");
    assert_eq!(with_token(&url, &new_token), 401);

    // A key file that is not a JWKS: refused, the running keys stay.
    std::fs::write(&keys, "not json").expect("JWKS file");
    std::fs::write(
        edge.daemon.config_path(),
        format!("{base}{}", auth(AUDIENCE)),
    )
    .expect("rewriting the config");
    let e = ctl.run(admin.reload(pb::ReloadRequest {})).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("[auth]"), "{e:?}");
    assert_eq!(with_token(&url, &new_token), 401, "the old settings stay");
}

/// `ListSlowQueries`: a request over the threshold is listed with its
/// operation, document hash, subgraph, client and trace id; fast ones not.
#[test]
fn slow_queries_are_listed_over_grpc() {
    let _serial = serial();
    let slow = DemoSubgraph::start_with(
        "slow",
        &fraiseql_edge_tests::subgraphs::DemoOptions {
            latency_ms: 400,
            ..Default::default()
        },
    );
    let fast = DemoSubgraph::start("fast");
    let health = "interval_ms = 60000, timeout_ms = 5000";
    let edge = Edge::start(
        &ProxySetup {
            subgraphs: vec![
                SubgraphSpec::new("slow", [&slow]).table("health", health),
                SubgraphSpec::new("fast", [&fast]).table("health", health),
            ],
            ..ProxySetup::default()
        }
        .section("[slow_queries]\nthreshold_ms = 150\nkeep = 2"),
    );
    let ctl = edge.control();
    let http = Client::default();
    let query = "query Slowly { users(first: 1) { id } }";
    for _ in 0..3 {
        assert!(http.query(&edge.route("fast"), query).is_data());
    }
    for _ in 0..3 {
        assert!(http.query(&edge.route("slow"), query).is_data());
    }
    let mut reader = ctl.reader();
    let listed = ctl
        .run(reader.list_slow_queries(pb::ListSlowQueriesRequest { limit: 0 }))
        .expect("ListSlowQueries")
        .into_inner();
    assert!((listed.threshold_seconds - 0.15).abs() < 1e-9, "{listed:?}");
    // `keep = 2`: the two most recent, newest first, all from `slow`.
    assert_eq!(listed.queries.len(), 2, "{listed:?}");
    assert!(listed.queries[0].unix_ms >= listed.queries[1].unix_ms);
    for q in &listed.queries {
        assert_eq!(
            (
                q.subgraph.as_str(),
                q.operation_name.as_str(),
                q.operation_type.as_str(),
                q.status
            ),
            ("slow", "Slowly", "query", 200),
            "{q:?}"
        );
        assert!(q.duration_seconds >= 0.15, "{q:?}");
        assert_eq!(q.document_hash.len(), 64, "{q:?}");
        assert_eq!(q.client, "127.0.0.1");
        assert_eq!(q.trace_id.len(), 32, "{q:?}");
    }
    let one = ctl
        .run(reader.list_slow_queries(pb::ListSlowQueriesRequest { limit: 1 }))
        .unwrap()
        .into_inner();
    assert_eq!(one.queries, listed.queries[..1]);
}
