//! docs/metrics.md against the metric families the daemon registers, both
//! ways: every family is documented with its type and label names, and
//! every documented metric exists.

use std::{collections::BTreeMap, sync::Arc};

use prometheus::{
    Registry,
    proto::{MetricFamily, MetricType},
};

use super::{EnforcedBy, register};
use crate::{
    auth::metrics::JwksMetrics,
    config::KernelConfig,
    fallback::{LimiterCollector, UserLimiter},
    proxy::metrics::{ProxyMetrics, SubgraphMetrics},
};

/// Name → (type, sorted label names).
type Catalogue = BTreeMap<String, (String, Vec<String>)>;

/// Every family the daemon can export, with at least one sample each: the
/// registries a daemon builds (in degraded mode, for the limiter's
/// families), plus the kernel and JWKS families fed a snapshot, since those
/// need a loaded program or a running source. Also the name of every
/// family described, with a sample or not: a family this test gives no
/// sample would otherwise go unchecked.
fn every_family() -> (Vec<MetricFamily>, Vec<String>) {
    let registry = Registry::new();
    register(&registry, EnforcedBy::UserSpace).expect("process metrics");
    super::ReloadMetrics::new(&registry)
        .expect("reload metrics")
        .record(true);
    let limiter = Arc::new(UserLimiter::new(&KernelConfig::default()));
    registry
        .register(Box::new(LimiterCollector::new(limiter).expect("limiter")))
        .expect("register the limiter");
    let m = ProxyMetrics::new(&registry).expect("proxy metrics");
    let ep = "127.0.0.1:4001";
    SubgraphMetrics::new(&m, "users", &[ep]);
    // Families a subgraph's background task or its first answers set.
    m.pool_connections
        .with_label_values(&["users", ep, "idle"])
        .set(0);
    m.pool_max.with_label_values(&["users", ep]).set(1);
    m.slow_queries.with_label_values(&["users"]);
    m.endpoint_healthy.with_label_values(&["users", ep]).set(1);
    m.entities
        .with_label_values(&["users", "User", "resolved"])
        .inc();
    let sagas = crate::saga::metrics::SagaMetrics::new(&registry, &["users".to_string()])
        .expect("saga metrics");
    sagas.started.inc();
    sagas
        .duration
        .with_label_values(&["completed"])
        .observe(0.1);
    sagas
        .step_duration
        .with_label_values(&["users"])
        .observe(0.01);
    crate::cluster::ClusterMetrics::new(&registry).expect("cluster metrics");
    crate::cluster::blocks::BlockSyncMetrics::new(&registry).expect("block sync metrics");
    let jwks = JwksMetrics::new().expect("jwks metrics");
    jwks.set("http://127.0.0.1:8080/jwks.json", 1.0, 0);
    let (kernel, kernel_names) = crate::kernel::collector::catalogue_families();
    let mut described: Vec<String> = m
        .collectors()
        .iter()
        .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
        .chain(kernel_names)
        .chain(jwks.descs().iter().map(|d| d.fq_name.clone()))
        .collect();
    let mut all = registry.gather();
    described.extend(all.iter().map(|f| f.name().to_string()));
    all.extend(kernel);
    all.extend(jwks.families());
    all.retain(|f| !f.get_metric().is_empty());
    (all, described)
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

fn in_code() -> Catalogue {
    let (families, described) = every_family();
    for name in &described {
        assert!(
            families.iter().any(|f| f.name() == name),
            "{name} has no sample in this test: give it one in every_family()"
        );
    }
    families
        .iter()
        .map(|f| {
            let mut labels: Vec<String> = f.get_metric()[0]
                .get_label()
                .iter()
                .map(|l| l.name().to_string())
                .collect();
            labels.sort();
            (
                f.name().to_string(),
                (type_name(f.get_field_type()).to_string(), labels),
            )
        })
        .collect()
}

/// The code spans of `cell` (`` `a`, `b` `` → a, b).
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The table rows of the page: `| name | type | labels | meaning |`, where
/// labels is `—` or `; `-separated parts, each naming its label first.
fn documented(doc: &str) -> Catalogue {
    let mut out = Catalogue::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`fraiseql_edge_") {
            continue;
        }
        let name = code_spans(cells[1])[0].to_string();
        let mut labels: Vec<String> = if cells[3] == "—" {
            Vec::new()
        } else {
            cells[3]
                .split("; ")
                .map(|part| {
                    code_spans(part)
                        .first()
                        .unwrap_or_else(|| panic!("{name}: a label part without a name: {part}"))
                        .to_string()
                })
                .collect()
        };
        labels.sort();
        let previous = out.insert(name.clone(), (cells[2].to_string(), labels));
        assert!(previous.is_none(), "docs/metrics.md lists {name} twice");
    }
    out
}

#[test]
fn the_metrics_page_lists_every_family_with_its_type_and_labels() {
    let doc = include_str!("../../../../docs/metrics.md");
    let listed = documented(doc);
    let registered = in_code();
    let mut wrong = Vec::new();
    for (name, found) in &registered {
        match listed.get(name) {
            None => wrong.push(format!("{name} {found:?}: not in docs/metrics.md")),
            Some(doc) if doc != found => {
                wrong.push(format!(
                    "{name}: documented as {doc:?}, registered as {found:?}"
                ));
            }
            Some(_) => {}
        }
    }
    for name in listed.keys().filter(|n| !registered.contains_key(*n)) {
        wrong.push(format!(
            "{name}: in docs/metrics.md, but the daemon does not export it"
        ));
    }
    assert!(wrong.is_empty(), "docs/metrics.md: {wrong:#?}");
}

#[test]
fn every_family_follows_the_naming_conventions() {
    for (name, (kind, labels)) in in_code() {
        assert!(name.starts_with("fraiseql_edge_"), "{name}: prefix");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: `_total` is for counters, and every counter has it"
        );
        for unit in ["_ms", "_milliseconds", "_us", "_kb", "_kilobytes"] {
            assert!(!name.contains(unit), "{name}: base units only");
        }
        for label in &labels {
            assert!(
                !["client", "ip", "addr", "address", "peer", "user"].contains(&label.as_str()),
                "{name}: label {label} would be unbounded"
            );
        }
    }
}

#[test]
fn latency_buckets_cover_100us_to_10s_at_most_1_5_apart() {
    let b = crate::proxy::metrics::latency_buckets();
    assert!((b[0] - 0.0001).abs() < 1e-12, "{b:?}");
    assert!((b[b.len() - 1] - 10.0).abs() < 1e-9, "{b:?}");
    for pair in b.windows(2) {
        let ratio = pair[1] / pair[0];
        assert!(ratio > 1.0 && ratio <= 1.5 + 1e-9, "{pair:?}");
    }
    for x in &b {
        let le = x.to_string();
        assert!(
            !le.contains("0000000") && !le.contains("9999999"),
            "`le` prints as {le}"
        );
    }
}
