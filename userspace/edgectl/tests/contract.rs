//! The client side of the control API's contract, checked by running the
//! real `edgectl` binary against a stand-in daemon: a gRPC server on a unix
//! socket that answers every RPC with fixed data and follows the status-code
//! rules of `control.proto` (admin and read-only tokens, NOT_FOUND, …).
//! The end-to-end tests (`tests/e2e/edgectl_e2e.rs`) run against the real
//! daemon; these pin down what the CLI sends and prints without one.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use fraiseql_edge_api::v1::{
    self as api, AttachMode, BlockEntry, BreakerState, Enforcement, EventKind, MetricType,
    edge_control_server::{EdgeControl, EdgeControlServer},
};
use serde_json::{Value, json};
use tokio_stream::{Stream, StreamExt, wrappers::UnixListenerStream};
use tonic::{Request, Response, Status};

const ADMIN: &str = "Bearer admin-secret";
const READ: &str = "Bearer read-secret";

/// The stand-in daemon. `requests` records what arrived, for the checks.
#[derive(Clone, Default)]
struct Fake {
    requests: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    /// The token rules of control.proto; records `what`.
    fn auth<T>(&self, req: &Request<T>, mutating: bool, what: String) -> Result<(), Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match token {
            Some(ADMIN) => {}
            Some(READ) if !mutating => {}
            Some(READ) => return Err(Status::permission_denied("the token is read-only")),
            _ => return Err(Status::unauthenticated("unknown token")),
        }
        self.requests.lock().unwrap().push(what);
        Ok(())
    }
}

fn limits(rpm: u32) -> api::Limits {
    api::Limits {
        kernel: Some(api::KernelLimits {
            rate: 1000,
            burst: 200,
            max_conns: 0,
            protected_ports: vec![8080],
        }),
        rate_limit: Some(api::RateLimit {
            requests_per_minute: rpm,
            burst: 100,
            cluster_wide: true,
        }),
        subgraphs: vec![api::SubgraphRateLimit {
            subgraph: "users".into(),
            limit: Some(api::RateLimit {
                requests_per_minute: rpm,
                burst: 100,
                cluster_wide: true,
            }),
            overridden: false,
        }],
    }
}

fn users(breaker: BreakerState, forced: &str) -> api::Subgraph {
    api::Subgraph {
        name: "users".into(),
        route: "/users/graphql".into(),
        breaker: breaker as i32,
        breaker_forced: forced.into(),
        panic: false,
        endpoints: vec![api::Endpoint {
            url: "http://127.0.0.1:4001/graphql".into(),
            healthy: true,
            pool: Some(api::Pool {
                idle: 10,
                busy: 2,
                max: 100,
                opened: 12,
            }),
        }],
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<api::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EdgeControl for Fake {
    async fn get_status(
        &self,
        req: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::Status>, Status> {
        self.auth(&req, false, "status".into())?;
        Ok(Response::new(api::Status {
            version: "9.9.9".into(),
            uptime_seconds: 93_784,
            enforcement: Enforcement::Kernel as i32,
            interfaces: vec![api::InterfaceStatus {
                name: "eth0".into(),
                mode: AttachMode::Native as i32,
            }],
            ready: true,
            not_ready: vec![],
            config_path: "/etc/fraiseql-edge/fraiseql-edge.toml".into(),
            config_loaded_unix: 1_796_530_210,
            reloads: 2,
            subgraphs: 1,
            cluster: Some(api::ClusterStatus {
                node: "node-a".into(),
                redis_reachable: false,
                failure_mode: "open".into(),
                global_limits: true,
                global_checks_allowed: 1_200,
                global_checks_limited: 30,
                global_checks_unavailable: 7,
                blocks_shared: true,
                block_sync_up: false,
                blocks_published: 3,
                blocks_received: 5,
                blocks_pending: 2,
                block_resyncs: 4,
            }),
        }))
    }

    async fn get_limits(
        &self,
        req: Request<api::GetLimitsRequest>,
    ) -> Result<Response<api::Limits>, Status> {
        self.auth(&req, false, "get_limits".into())?;
        Ok(Response::new(limits(1000)))
    }

    async fn set_kernel_limits(
        &self,
        req: Request<api::SetKernelLimitsRequest>,
    ) -> Result<Response<api::Limits>, Status> {
        let r = req.get_ref();
        self.auth(
            &req,
            true,
            format!("set_kernel {:?} {:?} {:?}", r.rate, r.burst, r.max_conns),
        )?;
        Err(Status::failed_precondition("the kernel layer is disabled"))
    }

    async fn set_rate_limit(
        &self,
        req: Request<api::SetRateLimitRequest>,
    ) -> Result<Response<api::Limits>, Status> {
        let r = req.get_ref().clone();
        self.auth(&req, true, format!("set_rate {:?}", r))?;
        if r.subgraph == "nope" {
            return Err(Status::not_found("no subgraph `nope`"));
        }
        if r.burst == Some(0) {
            return Err(Status::invalid_argument("burst must be at least 1"));
        }
        Ok(Response::new(limits(r.requests_per_minute.unwrap_or(1000))))
    }

    async fn list_overrides(
        &self,
        req: Request<api::ListOverridesRequest>,
    ) -> Result<Response<api::ListOverridesResponse>, Status> {
        self.auth(&req, false, "list_overrides".into())?;
        Ok(Response::new(api::ListOverridesResponse {
            overrides: vec![api::Override {
                cidr: "10.0.0.0/8".into(),
                action: api::OverrideAction::Limit as i32,
                rate: Some(50),
                burst: None,
                max_conns: Some(4),
            }],
        }))
    }

    async fn add_override(
        &self,
        req: Request<api::AddOverrideRequest>,
    ) -> Result<Response<api::Override>, Status> {
        let o = req.get_ref().r#override.clone().unwrap_or_default();
        self.auth(&req, true, format!("add_override {} {}", o.cidr, o.action))?;
        Ok(Response::new(o))
    }

    async fn remove_override(
        &self,
        req: Request<api::RemoveOverrideRequest>,
    ) -> Result<Response<api::RemoveOverrideResponse>, Status> {
        let cidr = req.get_ref().cidr.clone();
        self.auth(&req, true, format!("remove_override {cidr}"))?;
        Err(Status::not_found(format!("no override for {cidr}")))
    }

    async fn block(&self, req: Request<api::BlockRequest>) -> Result<Response<BlockEntry>, Status> {
        let r = req.get_ref().clone();
        self.auth(
            &req,
            true,
            format!("block {} {:?} {}", r.address, r.ttl_seconds, r.reason),
        )?;
        Ok(Response::new(BlockEntry {
            address: r.address,
            expires_in_seconds: r.ttl_seconds,
            enforced_by: "kernel".into(),
        }))
    }

    async fn unblock(
        &self,
        req: Request<api::UnblockRequest>,
    ) -> Result<Response<api::UnblockResponse>, Status> {
        let address = req.get_ref().address.clone();
        self.auth(&req, true, format!("unblock {address}"))?;
        Ok(Response::new(api::UnblockResponse {
            removed: address == "192.0.2.7",
        }))
    }

    async fn list_blocks(
        &self,
        req: Request<api::ListBlocksRequest>,
    ) -> Result<Response<api::ListBlocksResponse>, Status> {
        self.auth(&req, false, "list_blocks".into())?;
        Ok(Response::new(api::ListBlocksResponse {
            blocks: vec![
                BlockEntry {
                    address: "192.0.2.7".into(),
                    expires_in_seconds: Some(200),
                    enforced_by: "kernel".into(),
                },
                BlockEntry {
                    address: "2001:db8::/64".into(),
                    expires_in_seconds: None,
                    enforced_by: "kernel".into(),
                },
            ],
        }))
    }

    async fn top_clients(
        &self,
        req: Request<api::TopClientsRequest>,
    ) -> Result<Response<api::TopClientsResponse>, Status> {
        let limit = req.get_ref().limit;
        self.auth(&req, false, format!("top {limit}"))?;
        Ok(Response::new(api::TopClientsResponse {
            clients: vec![api::Client {
                address: "192.0.2.9".into(),
                passed: 1_234_567,
                dropped: 89,
                live_connections: 3,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        req: Request<api::GetMetricsRequest>,
    ) -> Result<Response<api::MetricsSnapshot>, Status> {
        let prefix = req.get_ref().prefix.clone();
        self.auth(&req, false, format!("metrics {prefix}"))?;
        Ok(Response::new(api::MetricsSnapshot {
            families: vec![api::MetricFamily {
                name: "fraiseql_edge_reloads_total".into(),
                help: "Reloads.".into(),
                r#type: MetricType::Counter as i32,
                samples: vec![api::Sample {
                    value: 2.0,
                    ..api::Sample::default()
                }],
            }],
        }))
    }

    type WatchEventsStream = Events;

    async fn watch_events(
        &self,
        req: Request<api::WatchEventsRequest>,
    ) -> Result<Response<Events>, Status> {
        let kinds = req.get_ref().kinds.clone();
        self.auth(&req, false, format!("watch {kinds:?}"))?;
        let events = (1..=3).map(|seq| {
            Ok(api::Event {
                seq,
                unix_ms: 1_796_530_210_000 + seq,
                kind: EventKind::Block as i32,
                subject: format!("192.0.2.{seq}"),
                message: "blocked".into(),
                actor: "operator:admin".into(),
                attributes: [("reason".to_string(), "test".to_string())].into(),
            })
        });
        // Three events, then an open stream with nothing more.
        let stream = tokio_stream::iter(events).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_subgraphs(
        &self,
        req: Request<api::ListSubgraphsRequest>,
    ) -> Result<Response<api::ListSubgraphsResponse>, Status> {
        self.auth(&req, false, "list_subgraphs".into())?;
        Ok(Response::new(api::ListSubgraphsResponse {
            subgraphs: vec![users(BreakerState::Closed, "")],
        }))
    }

    async fn set_breaker(
        &self,
        req: Request<api::SetBreakerRequest>,
    ) -> Result<Response<api::Subgraph>, Status> {
        let r = req.get_ref().clone();
        self.auth(&req, true, format!("breaker {} {}", r.subgraph, r.action))?;
        if r.subgraph != "users" {
            return Err(Status::not_found(format!("no subgraph `{}`", r.subgraph)));
        }
        Ok(Response::new(users(BreakerState::Open, "open")))
    }

    async fn list_slow_queries(
        &self,
        req: Request<api::ListSlowQueriesRequest>,
    ) -> Result<Response<api::ListSlowQueriesResponse>, Status> {
        self.auth(&req, false, "slow".into())?;
        Ok(Response::new(api::ListSlowQueriesResponse {
            queries: vec![api::SlowQuery {
                unix_ms: 1_796_530_210_000,
                duration_seconds: 1.5,
                operation_name: "Users".into(),
                operation_type: "query".into(),
                document_hash: "ab".repeat(32),
                subgraph: "users".into(),
                client: "alice".into(),
                status: 200,
                trace_id: "t1".into(),
            }],
            threshold_seconds: 0.5,
        }))
    }

    async fn reload(
        &self,
        req: Request<api::ReloadRequest>,
    ) -> Result<Response<api::ReloadResponse>, Status> {
        self.auth(&req, true, "reload".into())?;
        Err(Status::internal("the configuration file vanished"))
    }

    async fn list_sagas(
        &self,
        req: Request<api::ListSagasRequest>,
    ) -> Result<Response<api::ListSagasResponse>, Status> {
        let r = req.get_ref();
        self.auth(&req, false, format!("list_sagas {} {}", r.state, r.limit))?;
        Ok(Response::new(api::ListSagasResponse {
            sagas: vec![saga(false)],
        }))
    }

    async fn get_saga(
        &self,
        req: Request<api::GetSagaRequest>,
    ) -> Result<Response<api::Saga>, Status> {
        self.auth(&req, false, format!("get_saga {}", req.get_ref().id))?;
        Ok(Response::new(saga(true)))
    }

    async fn cancel_saga(
        &self,
        req: Request<api::CancelSagaRequest>,
    ) -> Result<Response<api::Saga>, Status> {
        self.auth(&req, true, format!("cancel_saga {}", req.get_ref().id))?;
        Err(Status::failed_precondition(
            "saga 0123 is Completed: only a parked saga, or one not started, can be cancelled",
        ))
    }

    async fn retry_saga(
        &self,
        req: Request<api::RetrySagaRequest>,
    ) -> Result<Response<api::Saga>, Status> {
        self.auth(&req, true, format!("retry_saga {}", req.get_ref().id))?;
        Ok(Response::new(saga(true)))
    }
}

/// A parked saga whose rollback gave up on step 0.
fn saga(with_steps: bool) -> api::Saga {
    api::Saga {
        id: SAGA.into(),
        state: "Failed".into(),
        parked: true,
        partially_compensated: true,
        last_error: "step 0 (inventory): compensation failed 16 times".into(),
        created_unix_ms: 1_700_000_000_000,
        updated_unix_ms: 1_700_000_060_000,
        step_count: 2,
        running: false,
        steps: if with_steps {
            vec![api::SagaStep {
                index: 0,
                subgraph: "inventory".into(),
                state: "Completed".into(),
                attempts: 1,
                compensation_attempts: 16,
                idempotency_key: format!("{SAGA}:0"),
                last_error: "HTTP 500".into(),
                result_json: r#"{"reserve":{"remaining":98}}"#.into(),
            }]
        } else {
            Vec::new()
        },
    }
}

const SAGA: &str = "0123456789abcdef0123456789abcdef";

/// The stand-in daemon on a unix socket in a temporary directory.
struct Daemon {
    fake: Fake,
    dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Daemon {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let fake = Fake::default();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .unwrap();
        let service = EdgeControlServer::new(fake.clone());
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        std::fs::write(dir.path().join("admin.token"), "admin-secret\n").unwrap();
        std::fs::write(dir.path().join("read.token"), "read-secret").unwrap();
        Self {
            fake,
            dir,
            _runtime: runtime,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `edgectl --socket … --token-file <token> <args>`: (exit code, stdout, stderr).
    fn run(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        edgectl(&self.path("control.sock"), &self.path(token), args)
    }

    /// Exit 0; stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run("admin.token", args);
        assert_eq!((code, stderr.as_str()), (0, ""), "{args:?}: {stdout}");
        stdout
    }

    /// Exit 0 with --json; the document.
    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{all:?}: {e}: {stdout}"))
    }

    /// Exit `code` and one `edgectl: …` line containing `needle`.
    #[track_caller]
    fn fails(&self, token: &str, args: &[&str], code: i32, needle: &str) {
        let (got, stdout, stderr) = self.run(token, args);
        assert_eq!(got, code, "{args:?}: {stderr}{stdout}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.starts_with("edgectl: ")
                && stderr.lines().count() == 1
                && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }

    fn requests(&self) -> Vec<String> {
        self.fake.requests.lock().unwrap().clone()
    }
}

fn edgectl(socket: &Path, token_file: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgectl"))
        .env_remove("FRAISEQL_EDGE_ADDR")
        .env_remove("FRAISEQL_EDGE_TOKEN")
        .arg("--socket")
        .arg(socket)
        .arg("--token-file")
        .arg(token_file)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_subcommand_prints_text_and_json() {
    let d = Daemon::start();

    let text = d.ok(&["status"]);
    assert!(
        text.contains("uptime:           1d 2h") && text.contains("eth0       native"),
        "{text}"
    );
    // Cluster mode's lines, Redis away: said plainly.
    for line in [
        "redis reachable:  NO",
        "failure mode:     open",
        "global limits:    on (checks: 1,200 allowed, 30 limited, 7 unavailable)",
        "shared blocks:    NOT IN SYNC (published 3, received 5, pending 2, resyncs 4)",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let status = d.json(&["status"]);
    assert_eq!(status["enforcement"], "kernel");
    assert_eq!(
        status["interfaces"],
        json!([{"name": "eth0", "mode": "native"}])
    );
    assert_eq!(status["uptime_seconds"], 93_784);
    assert_eq!(status["cluster"]["node"], "node-a");
    assert_eq!(status["cluster"]["blocks_pending"], 2);
    assert_eq!(status["cluster"]["redis_reachable"], false);

    let limits = d.json(&["limits", "get"]);
    assert_eq!(limits["kernel"]["protected_ports"], json!([8080]));
    assert_eq!(limits["subgraphs"][0]["overridden"], false);
    let set = d.json(&["limits", "set", "rate", "--rpm", "120"]);
    assert_eq!(set["rate_limit"]["requests_per_minute"], 120);
    assert_eq!(limits["rate_limit"]["cluster_wide"], true);
    assert_eq!(limits["subgraphs"][0]["cluster_wide"], true);
    let text = d.ok(&["limits", "get"]);
    assert!(text.contains("1,000 packets/s"), "{text}");
    assert!(text.contains("held:   across nodes"), "{text}");

    let list = d.json(&["overrides", "list"]);
    assert_eq!(
        list["overrides"][0],
        json!({"cidr": "10.0.0.0/8", "action": "limit", "rate": 50, "burst": null, "max_conns": 4})
    );
    let added = d.json(&["overrides", "add", "2001:DB8::/32", "--action", "deny"]);
    assert_eq!(added["added"]["cidr"], "2001:db8::/32");
    assert_eq!(added["added"]["action"], "deny");

    let blocked = d.json(&["block", "192.0.2.7", "--ttl", "90", "--reason", "abuse"]);
    assert_eq!(
        blocked,
        json!({"blocked": {"address": "192.0.2.7", "expires_in_seconds": 90, "enforced_by": "kernel"}})
    );
    assert_eq!(
        d.ok(&["block", "192.0.2.8"]),
        "blocked 192.0.2.8 until unblocked (in kernel)\n"
    );
    assert_eq!(d.json(&["unblock", "192.0.2.7"])["removed"], true);
    let blocks = d.ok(&["blocks"]);
    assert_eq!(
        blocks,
        "ADDRESS        EXPIRES IN  ENFORCED BY\n\
         192.0.2.7          3m 20s  kernel\n\
         2001:db8::/64       never  kernel\n"
    );

    let top = d.ok(&["top", "--limit", "5"]);
    assert!(
        top.contains("192.0.2.9  1,234,567       89") && top.contains("0.0"),
        "{top}"
    );
    assert_eq!(d.json(&["top"])["clients"][0]["passed"], 1_234_567);

    let subgraphs = d.json(&["subgraphs"]);
    assert_eq!(subgraphs["subgraphs"][0]["breaker"], "closed");
    assert_eq!(subgraphs["subgraphs"][0]["breaker_forced"], Value::Null);
    assert_eq!(
        subgraphs["subgraphs"][0]["endpoints"][0]["pool"]["max"],
        100
    );
    let open = d.json(&["breaker", "users", "open"]);
    assert_eq!(
        (&open["breaker"], &open["breaker_forced"]),
        (&json!("open"), &json!("open"))
    );
    let text = d.ok(&["breaker", "users", "open"]);
    assert!(
        text.contains("users     /users/graphql  open (forced open)"),
        "{text}"
    );

    let slow = d.json(&["slow", "--limit", "1"]);
    assert_eq!(slow["threshold_seconds"], 0.5);
    assert_eq!(slow["queries"][0]["operation_name"], "Users");
    assert!(d.ok(&["slow"]).contains("1.50 s"));

    assert_eq!(
        d.ok(&["metrics", "--prefix", "fraiseql_edge_"]),
        "# HELP fraiseql_edge_reloads_total Reloads.\n\
         # TYPE fraiseql_edge_reloads_total counter\n\
         fraiseql_edge_reloads_total 2\n"
    );

    let sagas = d.json(&["sagas", "list", "--state", "failed"]);
    assert_eq!(sagas["sagas"][0]["id"], SAGA);
    assert!(
        d.ok(&["sagas", "list"])
            .contains("Failed (parked, partially compensated)")
    );
    let shown = d.json(&["sagas", "show", SAGA]);
    assert_eq!(shown["steps"][0]["result"]["reserve"]["remaining"], 98);
    let text = d.ok(&["sagas", "retry", SAGA]);
    assert!(
        text.contains(&format!("{SAGA}:0")) && text.contains("inventory"),
        "{text}"
    );

    // What reached the daemon: the checked, canonical values.
    let requests = d.requests();
    for expected in [
        "add_override 2001:db8::/32 2",
        "block 192.0.2.7 Some(90) abuse",
        "block 192.0.2.8 None ",
        "unblock 192.0.2.7",
        "top 5",
        "top 20",
        "breaker users 1",
        "metrics fraiseql_edge_",
        "list_sagas Failed 0",
        &format!("get_saga {SAGA}"),
        &format!("retry_saga {SAGA}"),
    ] {
        assert!(
            requests.iter().any(|r| r == expected),
            "{expected:?} not in {requests:?}"
        );
    }
}

#[test]
fn watch_stops_after_count_events() {
    let d = Daemon::start();
    let stdout = d.ok(&[
        "--json", "watch", "--kind", "block", "--kind", "drop", "--count", "2",
    ]);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{stdout}");
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[1]["subject"], "192.0.2.2");
    assert_eq!(events[0]["kind"], "block");
    assert_eq!(events[0]["attributes"], json!({"reason": "test"}));
    assert!(
        d.requests().contains(&"watch [1, 2]".to_string()),
        "{:?}",
        d.requests()
    );
    let text = d.ok(&["watch", "--count", "1"]);
    assert_eq!(
        text,
        "2026-12-06 04:10:10.001Z  block          192.0.2.1  blocked  [operator:admin]  reason=test\n"
    );
}

#[test]
fn status_codes_become_exit_codes() {
    let d = Daemon::start();
    d.fails(
        "read.token",
        &["block", "192.0.2.7"],
        4,
        "permission denied: the token is read-only",
    );
    std::fs::write(d.path("wrong.token"), "nope").unwrap();
    d.fails(
        "wrong.token",
        &["status"],
        4,
        "authentication failed: unknown token",
    );
    d.fails("missing.token", &["status"], 4, "cannot read token file");
    d.fails(
        "admin.token",
        &["limits", "set", "rate", "--rpm", "1", "--burst", "0"],
        5,
        "burst must be at least 1",
    );
    d.fails(
        "admin.token",
        &["limits", "set", "rate", "--subgraph", "nope", "--rpm", "1"],
        6,
        "no subgraph `nope`",
    );
    d.fails(
        "admin.token",
        &["breaker", "nope", "open"],
        6,
        "no subgraph `nope`",
    );
    d.fails(
        "admin.token",
        &["overrides", "remove", "10.0.0.0/8"],
        6,
        "no override for 10.0.0.0/8",
    );
    d.fails(
        "admin.token",
        &["unblock", "192.0.2.99"],
        6,
        "192.0.2.99 was not blocked",
    );
    d.fails(
        "admin.token",
        &["limits", "set", "kernel", "--rate", "5"],
        7,
        "the kernel layer is disabled",
    );
    d.fails(
        "admin.token",
        &["reload"],
        1,
        "the configuration file vanished",
    );
    // Refused before connecting: nothing reaches the daemon.
    let before = d.requests().len();
    d.fails(
        "admin.token",
        &["block", "10.0.0.0/8"],
        5,
        "not an IP address",
    );
    d.fails(
        "admin.token",
        &["overrides", "add", "10.0.0.1/8", "--action", "deny"],
        5,
        "host bits",
    );
    assert_eq!(d.requests().len(), before);
    // Unreachable: a socket nobody listens on.
    let (code, _, stderr) = edgectl(&d.path("gone.sock"), &d.path("admin.token"), &["status"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(&d.path("gone.sock").display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_daemon_that_does_not_answer_times_out() {
    // A listener that accepts and never speaks HTTP/2.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::write(dir.path().join("t"), "x").unwrap();
    let started = std::time::Instant::now();
    let (code, _, stderr) = edgectl(
        &socket,
        &dir.path().join("t"),
        &["--timeout", "1", "status"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("edgectl: no answer from the daemon") && stderr.contains("within 1 s"),
        "{stderr}"
    );
}

#[test]
fn the_environment_supplies_the_socket_and_the_token() {
    let d = Daemon::start();
    let run = |envs: &[(&str, &Path)], token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgectl"));
        cmd.env_remove("FRAISEQL_EDGE_ADDR")
            .env_remove("FRAISEQL_EDGE_TOKEN_FILE")
            .env("FRAISEQL_EDGE_TOKEN", token.unwrap_or(""));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.args(["--json", "status"]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let socket = d.path("control.sock");
    let admin = d.path("admin.token");
    // The token file; an empty FRAISEQL_EDGE_TOKEN does not hide it.
    let envs = [
        ("FRAISEQL_EDGE_SOCKET", socket.as_path()),
        ("FRAISEQL_EDGE_TOKEN_FILE", admin.as_path()),
    ];
    assert_eq!(run(&envs, None), (Some(0), String::new()));
    // The token itself wins over the file.
    assert_eq!(run(&envs, Some("read-secret")), (Some(0), String::new()));
    let (code, stderr) = run(&envs, Some("wrong"));
    assert_eq!(code, Some(4), "{stderr}");
    let (code, stderr) = run(&envs[..1], None);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("no token"), "{stderr}");
}
