use super::*;

fn err(text: &str) -> (String, String) {
    match Config::from_toml(text) {
        Err(ConfigError::Invalid { key, reason }) => (key, reason),
        other => panic!("expected an invalid-config error, got {other:?}"),
    }
}

const BASE: &str = "[kernel]\ninterfaces = [\"eth0\"]\n";

#[test]
fn minimal_config_takes_documented_defaults() {
    let c = Config::from_toml(BASE).unwrap();
    assert_eq!(c.kernel.interfaces, ["eth0"]);
    assert_eq!(c.kernel.protected_ports, [8080]);
    assert_eq!(
        (c.kernel.rate, c.kernel.burst, c.kernel.max_conns),
        (1000, 2000, 256)
    );
    assert_eq!(c.kernel.ipv6_prefix, 64);
    assert_eq!(c.kernel.event_sample_shift(), 6);
    assert_eq!(c.kernel.default_limits().rate_per_sec(), 1000);
}

#[test]
fn unknown_key_is_named() {
    let (key, reason) = err(&format!("{BASE}rate_limit = 5\n"));
    assert_eq!(key, "kernel.rate_limit");
    assert!(reason.contains("unknown field `rate_limit`"), "{reason}");
    let (key, _) = err("[kernal]\n");
    assert_eq!(key, "kernal");
}

#[test]
fn negative_rate_is_named() {
    let (key, reason) = err(&format!("{BASE}rate = -5\n"));
    assert_eq!(key, "kernel.rate");
    assert!(reason.contains("-5"), "{reason}");
}

#[test]
fn bad_cidr_is_named() {
    let (key, _) = err(&format!(
        "{BASE}[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"allow\"\n[[kernel.overrides]]\ncidr = \"10.0.0.300/24\"\naction = \"deny\"\n"
    ));
    assert_eq!(key, "kernel.overrides[1].cidr");
    let (key, reason) = err(&format!(
        "{BASE}[[kernel.overrides]]\ncidr = \"10.1.2.3/8\"\naction = \"deny\"\n"
    ));
    assert_eq!(key, "kernel.overrides[0].cidr");
    assert!(reason.contains("10.0.0.0/8"), "{reason}");
}

#[test]
fn semantic_errors_are_named() {
    for (extra, want) in [
        ("burst = 0\n", "kernel.burst"),
        ("rate = 2000000000\n", "kernel.rate"),
        ("ipv6_prefix = 48\n", "kernel.ipv6_prefix"),
        ("protected_ports = []\n", "kernel.protected_ports"),
        ("protected_ports = [80, 0]\n", "kernel.protected_ports[1]"),
        ("protected_ports = [70000]\n", "kernel.protected_ports[0]"),
        ("drop_event_sampling = 3\n", "kernel.drop_event_sampling"),
        ("pin_path = \"relative\"\n", "kernel.pin_path"),
        ("xdp_mode = \"turbo\"\n", "kernel.xdp_mode"),
    ] {
        let (key, _) = err(&format!("{BASE}{extra}"));
        assert_eq!(key, want, "for {extra:?}");
    }
    let (key, _) = err("[kernel]\ninterfaces = []\n");
    assert_eq!(key, "kernel.interfaces");
}

#[test]
fn override_rules() {
    let ok = Config::from_toml(&format!(
        "{BASE}[[kernel.overrides]]\ncidr = \"2001:db8::/32\"\naction = \"limit\"\nrate = 10\nburst = 5\n"
    ))
    .unwrap();
    assert_eq!(ok.kernel.overrides[0].limits().burst(), 5);
    let (key, _) = err(&format!(
        "{BASE}[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"deny\"\nrate = 5\n"
    ));
    assert_eq!(key, "kernel.overrides[0].action");
    let (key, _) = err(&format!(
        "{BASE}[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"limit\"\n"
    ));
    assert_eq!(key, "kernel.overrides[0].rate");
    let (key, _) = err(&format!(
        "{BASE}[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"allow\"\n[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"deny\"\n"
    ));
    assert_eq!(key, "kernel.overrides[1].cidr");
}

#[test]
fn missing_interface_is_named() {
    let c = Config::from_toml("[kernel]\ninterfaces = [\"lo\", \"fe-no-such0\"]\n").unwrap();
    match check_interfaces(&c.kernel) {
        Err(ConfigError::Invalid { key, reason }) => {
            assert_eq!(key, "kernel.interfaces[1]");
            assert!(reason.contains("fe-no-such0"));
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let (key, reason) = err("[kernel]\ninterfaces = [\"eth0\"]\nrate = \n");
    assert_eq!(key, "<root>");
    assert!(reason.contains("line 3"), "{reason}");
}

#[test]
fn subgraph_sdl_is_resolved_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("users.graphql", "type Query { me: String }\n");
    write("broken.graphql", "type Query { me: \n");
    let cfg = |sdl: &str| {
        format!(
            "[kernel]\nenabled = false\n[proxy]\n[[subgraphs]]\nname = \"users\"\n\
             endpoints = [\"http://127.0.0.1:4001/graphql\"]\nsdl = \"{sdl}\"\n"
        )
    };
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, cfg("users.graphql")).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(
        c.subgraphs[0].sdl.as_deref(),
        Some(dir.path().join("users.graphql").as_path())
    );
    for (sdl, want) in [
        ("missing.graphql", "cannot read"),
        ("broken.graphql", "not valid GraphQL"),
    ] {
        std::fs::write(&path, cfg(sdl)).unwrap();
        match Config::load(&path) {
            Err(ConfigError::Invalid { key, reason }) => {
                assert_eq!(key, "subgraphs[0].sdl");
                assert!(reason.contains(want), "{reason}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

const PROXY: &str = "[kernel]\nenabled = false\n[proxy]\n";
const SUBGRAPH: &str =
    "[[subgraphs]]\nname = \"users\"\nendpoints = [\"http://127.0.0.1:4001/graphql\"]\n";

#[test]
fn data_path_limits_are_checked_together() {
    let c = Config::from_toml(&format!("{PROXY}{SUBGRAPH}")).unwrap();
    let p = c.proxy.as_ref().unwrap();
    assert!(p.trusted_proxies.is_empty());
    assert_eq!(
        (p.header_read_timeout_ms, p.drain_timeout_ms),
        (10_000, 30_000)
    );
    assert!(c.subgraphs[0].health.panic_mode);

    // Waiting for a slot must be shorter than a try.
    let (key, reason) = err(&format!(
        "{PROXY}{SUBGRAPH}[subgraphs.pool]\nacquire_timeout_ms = 2000\n"
    ));
    assert_eq!(key, "subgraphs[0].pool.acquire_timeout_ms");
    assert!(
        reason.contains("below timeouts.per_try_ms (2000 ms)"),
        "{reason}"
    );
    let (key, _) = err(&format!(
        "{PROXY}{SUBGRAPH}[subgraphs.timeouts]\nper_try_ms = 500\n"
    ));
    assert_eq!(key, "subgraphs[0].pool.acquire_timeout_ms");

    let (key, _) = err(&format!("{PROXY}header_read_timeout_ms = 0\n{SUBGRAPH}"));
    assert_eq!(key, "proxy.header_read_timeout_ms");
    let (key, reason) = err(&format!(
        "{PROXY}trusted_proxies = [\"10.0.0.0/33\"]\n{SUBGRAPH}"
    ));
    assert!(key.starts_with("proxy.trusted_proxies"), "{key}: {reason}");
    let (key, _) = err(&format!(
        "{PROXY}{SUBGRAPH}[subgraphs.retry]\nbudget_percent = 10001\n"
    ));
    assert_eq!(key, "subgraphs[0].retry.budget_percent");
    let (key, _) = err(&format!("{PROXY}{SUBGRAPH}[runtime]\nworker_threads = 0\n"));
    assert_eq!(key, "runtime.worker_threads");
    let c =
        Config::from_toml(&format!("{PROXY}{SUBGRAPH}[runtime]\nworker_threads = 3\n")).unwrap();
    assert_eq!(c.runtime.workers(), 3);
}

#[test]
fn auth_and_rate_limit_settings_are_checked() {
    let (key, reason) = err(&format!(
        "{PROXY}{SUBGRAPH}[auth]\nkeys = [{{ type = \"jwks_file\", path = \"k.json\", algorithms = [\"HS256\"] }}]\n"
    ));
    assert_eq!(key, "auth.keys[0].algorithms", "{reason}");
    let (key, _) = err(&format!("{PROXY}{SUBGRAPH}[auth]\nkeys = []\n"));
    assert_eq!(key, "auth.keys");
    let (key, _) = err(&format!("{PROXY}{SUBGRAPH}[rate_limit]\nburst = 0\n"));
    assert_eq!(key, "rate_limit.burst");
    let (key, _) = err(&format!("{PROXY}{SUBGRAPH}[tracing]\nsample_ratio = 2.0\n"));
    assert_eq!(key, "tracing.sample_ratio");
    let (key, _) = err(&format!("{PROXY}{SUBGRAPH}[tracing]\nexporter = \"x\"\n"));
    assert_eq!(key, "tracing.exporter");
    let (key, _) = err(&format!(
        "{PROXY}{SUBGRAPH}[slow_queries]\nkeep = 1000000\n"
    ));
    assert_eq!(key, "slow_queries.keep");
    let c = Config::from_toml(&format!(
        "{PROXY}{SUBGRAPH}require_authentication = false\n[auth]\nkeys = [{{ type = \"hmac_secret_file\", path = \"s\", algorithms = [\"HS256\"] }}]\n"
    ))
    .unwrap();
    assert!(!c.subgraphs[0].require_authentication);
    assert_eq!(c.rate_limit.requests_per_minute, 1000);
}

#[test]
fn the_reference_page_lists_every_request_path_default() {
    use crate::{
        auth::{AuthConfig, config::JwksUrlConfig},
        authz::AuthorizationConfig,
        graphql::{GraphqlLimits, persisted::PersistedQueriesConfig},
        ratelimit::RateLimitConfig,
    };
    let doc = include_str!("../../../../docs/reference.md");
    let section = doc
        .split("## Limits and defaults of the request path")
        .nth(1)
        .expect("section present");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut documented: Vec<(String, String)> = section
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let key = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((key.to_string(), cells.next()?.to_string()))
        })
        .collect();

    let p = ProxyConfig::default();
    let a = AuthConfig::default();
    let j = JwksUrlConfig::default();
    let r = RateLimitConfig::default();
    let e = &r.escalation;
    let q = PersistedQueriesConfig::default();
    let z = AuthorizationConfig::default();
    let list = |v: &[String]| format!("[{}]", v.join(", "));
    let mut in_code: Vec<(String, String)> = vec![
        ("proxy.max_body_bytes", p.max_body_bytes.to_string()),
        (
            "proxy.header_read_timeout_ms",
            p.header_read_timeout_ms.to_string(),
        ),
        (
            "proxy.body_read_timeout_ms",
            p.body_read_timeout_ms.to_string(),
        ),
        (
            "proxy.client_write_timeout_ms",
            p.client_write_timeout_ms.to_string(),
        ),
        ("proxy.drain_timeout_ms", p.drain_timeout_ms.to_string()),
        (
            "proxy.entities_buffer_bytes",
            p.entities_buffer_bytes.to_string(),
        ),
        (
            "proxy.entities_max_typenames",
            p.entities_max_typenames.to_string(),
        ),
        ("auth.require_exp", a.require_exp.to_string()),
        ("auth.leeway_secs", a.leeway_secs.to_string()),
        ("auth.scope_claim", a.scope_claim.clone()),
        ("auth.cache_size", a.cache_size.to_string()),
        ("auth.max_token_bytes", a.max_token_bytes.to_string()),
        ("auth.keys[].refresh_secs", j.refresh_secs.to_string()),
        (
            "auth.keys[].unknown_kid_refetch_secs",
            j.unknown_kid_refetch_secs.to_string(),
        ),
        (
            "auth.keys[].fetch_timeout_secs",
            j.fetch_timeout_secs.to_string(),
        ),
        ("auth.keys[].max_bytes", j.max_bytes.to_string()),
        (
            "rate_limit.requests_per_minute",
            r.requests_per_minute.to_string(),
        ),
        ("rate_limit.burst", r.burst.to_string()),
        ("rate_limit.max_keys", r.max_keys.to_string()),
        ("rate_limit.escalation.threshold", e.threshold.to_string()),
        (
            "rate_limit.escalation.window_secs",
            e.window_secs.to_string(),
        ),
        ("rate_limit.escalation.block_secs", e.block_secs.to_string()),
        (
            "rate_limit.escalation.max_addresses",
            e.max_addresses.to_string(),
        ),
        ("persisted_queries.apq", q.apq.to_string()),
        (
            "persisted_queries.apq_cache_size",
            q.apq_cache_size.to_string(),
        ),
        (
            "persisted_queries.safelist_mode",
            format!("{:?}", q.safelist_mode).to_lowercase(),
        ),
        ("authorization.mode", format!("{:?}", z.mode).to_lowercase()),
        (
            "authorization.trusted_router.scopes",
            list(&z.trusted_router.scopes),
        ),
        (
            "authorization.trusted_router.cidrs",
            list(
                &z.trusted_router
                    .cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let t = crate::telemetry::TracingConfig::default();
    let s = crate::slowlog::SlowQueriesConfig::default();
    in_code.extend([
        (
            "tracing.trust_client_traceparent".to_string(),
            t.trust_client_traceparent.to_string(),
        ),
        ("tracing.otlp_endpoint".to_string(), "unset".to_string()),
        ("tracing.service_name".to_string(), t.service_name.clone()),
        (
            "tracing.sample_ratio".to_string(),
            format!("{:.1}", t.sample_ratio),
        ),
        (
            "tracing.export_timeout_ms".to_string(),
            t.export_timeout_ms.to_string(),
        ),
        (
            "slow_queries.threshold_ms".to_string(),
            s.threshold_ms.to_string(),
        ),
        ("slow_queries.keep".to_string(), s.keep.to_string()),
    ]);
    assert!(t.otlp_endpoint.is_none(), "export is off by default");
    let graphql = toml::Table::try_from(GraphqlLimits::default()).unwrap();
    for (key, value) in graphql {
        in_code.push((format!("graphql.{key}"), value.to_string()));
    }
    in_code.sort();
    documented.sort();
    assert_eq!(
        documented, in_code,
        "docs/reference.md, Limits and defaults"
    );
}

#[test]
fn control_needs_a_listener_and_a_token_file() {
    let (key, reason) = err(&format!("{BASE}[control]\n"));
    assert_eq!(key, "control.admin_token_file");
    assert!(reason.contains("at least one token file"), "{reason}");
    let (key, _) = err(&format!(
        "{BASE}[control]\nsocket = \"\"\nadmin_token_file = \"a\"\n"
    ));
    assert_eq!(key, "control.socket");
    let (key, reason) = err(&format!(
        "{BASE}[control]\nadmin_token_file = \"t\"\nread_token_file = \"t\"\n"
    ));
    assert_eq!(key, "control.read_token_file");
    assert!(reason.contains("admin token"), "{reason}");
    let (key, _) = err(&format!(
        "{BASE}[control]\nadmin_token_file = \"a\"\nlisten = \"localhost\"\n"
    ));
    assert_eq!(key, "control.listen");
    let cfg = Config::from_toml(&format!(
        "{BASE}[control]\nread_token_file = \"r\"\nlisten = \"127.0.0.1:50051\"\n"
    ))
    .unwrap();
    let control = cfg.control.unwrap();
    assert_eq!(
        control.socket,
        std::path::PathBuf::from("/run/fraiseql-edge/control.sock")
    );
    assert_eq!(control.listen, Some("127.0.0.1:50051".parse().unwrap()));
}

#[test]
fn sagas_section_is_optional_and_checked() {
    const SAGA_BASE: &str = "[kernel]\nenabled = false\n[proxy]\n[[subgraphs]]\nname = \"users\"\nendpoints = [\"http://127.0.0.1:4001/graphql\"]\n";
    assert!(Config::from_toml(SAGA_BASE).unwrap().sagas.is_none());
    let c = Config::from_toml(&format!(
        "{SAGA_BASE}[sagas]\npath = \"/tmp/edge-sagas.db\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.sagas.unwrap().path,
        std::path::PathBuf::from("/tmp/edge-sagas.db")
    );
    let (key, reason) = err(&format!("{SAGA_BASE}[sagas]\npath = \"sagas.db\"\n"));
    assert_eq!(key, "sagas.path");
    assert!(reason.contains("absolute"), "{reason}");
    let (key, _) = err(&format!("{SAGA_BASE}[sagas]\nstep_timeout = 5\n"));
    assert_eq!(key, "sagas.step_timeout");
    // Sagas run through the data path.
    let (key, reason) = err(&format!("{BASE}[sagas]\n"));
    assert_eq!(key, "sagas");
    assert!(reason.contains("[proxy]"), "{reason}");
}

#[test]
fn cluster_section_is_optional_checked_and_needed_by_global_limits() {
    const CLUSTER_BASE: &str = "[kernel]\nenabled = false\n[proxy]\n[[subgraphs]]\nname = \"users\"\nendpoints = [\"http://127.0.0.1:4001/graphql\"]\n";
    assert!(Config::from_toml(CLUSTER_BASE).unwrap().cluster.is_none());
    let c = Config::from_toml(&format!(
        "{CLUSTER_BASE}[rate_limit]\nglobal = true\n[cluster]\nredis_url = \"redis://cache:6379\"\nfailure_mode = \"closed\"\n"
    ))
    .unwrap();
    let cluster = c.cluster.unwrap();
    assert_eq!(cluster.failure_mode, crate::cluster::FailureMode::Closed);
    assert_eq!(cluster.timeout_ms, 50);
    assert!(c.rate_limit.global);
    let (key, reason) = err(&format!(
        "{CLUSTER_BASE}[cluster]\nredis_url = \"http://user:secret@cache:6379\"\n"
    ));
    assert_eq!(key, "cluster.redis_url");
    assert!(!reason.contains("secret"), "{reason}");
    let (key, _) = err(&format!(
        "{CLUSTER_BASE}[cluster]\nredis_url = \"redis://cache\"\nfailure_mode = \"maybe\"\n"
    ));
    assert_eq!(key, "cluster.failure_mode");
    // A global limit is kept in Redis: it needs [cluster].
    let (key, reason) = err(&format!("{CLUSTER_BASE}[rate_limit]\nglobal = true\n"));
    assert_eq!(key, "rate_limit.global");
    assert!(reason.contains("[cluster]"), "{reason}");
    // So does one subgraph's limit marked global.
    let (key, reason) = err(&format!(
        "{CLUSTER_BASE}[subgraphs.rate_limit]\nrequests_per_minute = 60\nburst = 5\nglobal = true\n"
    ));
    assert_eq!(key, "subgraphs[0].rate_limit.global");
    assert!(reason.contains("[cluster]"), "{reason}");
    let c = Config::from_toml(&format!(
        "{CLUSTER_BASE}[subgraphs.rate_limit]\nrequests_per_minute = 60\nburst = 5\nglobal = true\n\
         [cluster]\nredis_url = \"rediss://cache:6380\"\n"
    ))
    .unwrap();
    assert_eq!(c.subgraphs[0].rate_limit.unwrap().global, Some(true));
    assert!(!c.rate_limit.global);
}
