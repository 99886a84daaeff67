//! The daemon's types in their `fraiseql.edge.v1` form.

use fraiseql_edge_api::v1 as pb;
use prometheus::proto::{MetricFamily, MetricType};

use crate::{
    breaker::{Force, State},
    config::{OverrideActionConfig, OverrideConfig},
    events::{Event, Kind},
    kernel::{
        AttachMode,
        maps::{BlockInfo, ClientInfo},
    },
    live::{Limits, Status},
    proxy::subgraph::Subgraph,
};

pub fn status(s: &Status) -> pb::Status {
    let enforcement = match s.enforcement {
        "kernel" => pb::Enforcement::Kernel,
        "user_space" => pb::Enforcement::UserSpace,
        _ => pb::Enforcement::Disabled,
    };
    pb::Status {
        version: s.version.to_string(),
        uptime_seconds: s.uptime_secs,
        enforcement: enforcement as i32,
        interfaces: s
            .interfaces
            .iter()
            .map(|(name, mode)| pb::InterfaceStatus {
                name: name.clone(),
                mode: match mode {
                    Some(AttachMode::Native) => pb::AttachMode::Native,
                    Some(AttachMode::Skb) => pb::AttachMode::Skb,
                    Some(AttachMode::Adopted) => pb::AttachMode::Adopted,
                    None => pb::AttachMode::UserSpace,
                } as i32,
            })
            .collect(),
        ready: s.not_ready.is_empty(),
        not_ready: s.not_ready.clone(),
        config_path: s.config_path.display().to_string(),
        config_loaded_unix: s.config_loaded_unix,
        reloads: s.reloads,
        subgraphs: u32::try_from(s.subgraphs).unwrap_or(u32::MAX),
        cluster: s.cluster.as_ref().map(cluster),
    }
}

fn cluster(c: &crate::live::ClusterStatus) -> pb::ClusterStatus {
    let blocks = c.blocks.unwrap_or_default();
    pb::ClusterStatus {
        node: c.node.clone(),
        redis_reachable: c.redis_reachable,
        failure_mode: match c.failure_mode {
            crate::cluster::FailureMode::Open => "open",
            crate::cluster::FailureMode::Closed => "closed",
        }
        .to_string(),
        global_limits: c.global_limits,
        global_checks_allowed: c.checks[0],
        global_checks_limited: c.checks[1],
        global_checks_unavailable: c.checks[2],
        blocks_shared: c.blocks.is_some(),
        block_sync_up: blocks.synced,
        blocks_published: blocks.published,
        blocks_received: blocks.received,
        blocks_pending: blocks.pending,
        block_resyncs: blocks.resyncs,
    }
}

pub fn limits(l: &Limits) -> pb::Limits {
    pb::Limits {
        kernel: l.kernel.as_ref().map(|k| pb::KernelLimits {
            rate: k.rate,
            burst: k.burst,
            max_conns: k.max_conns,
            protected_ports: k.protected_ports.iter().map(|p| u32::from(*p)).collect(),
        }),
        rate_limit: Some(pb::RateLimit {
            requests_per_minute: l.rate_limit.0,
            burst: l.rate_limit.1,
            cluster_wide: l.rate_limit_cluster_wide,
        }),
        subgraphs: l
            .subgraphs
            .iter()
            .map(|s| pb::SubgraphRateLimit {
                subgraph: s.subgraph.clone(),
                limit: Some(pb::RateLimit {
                    requests_per_minute: s.requests_per_minute,
                    burst: s.burst,
                    cluster_wide: s.cluster_wide,
                }),
                overridden: s.overridden,
            })
            .collect(),
    }
}

pub fn override_(o: &OverrideConfig) -> pb::Override {
    let action = match o.action {
        OverrideActionConfig::Allow => pb::OverrideAction::Allow,
        OverrideActionConfig::Deny => pb::OverrideAction::Deny,
        OverrideActionConfig::Limit => pb::OverrideAction::Limit,
    };
    pb::Override {
        cidr: o.cidr.to_string(),
        action: action as i32,
        rate: o.rate,
        burst: o.burst,
        max_conns: o.max_conns,
    }
}

pub fn block(b: &BlockInfo, enforced_by: &str) -> pb::BlockEntry {
    pb::BlockEntry {
        address: b.client.to_string(),
        expires_in_seconds: b.expires_in_secs,
        enforced_by: enforced_by.to_string(),
    }
}

pub fn client(c: &ClientInfo) -> pb::Client {
    pb::Client {
        address: c.client.to_string(),
        passed: c.passed,
        dropped: c.dropped,
        live_connections: c.conns,
    }
}

pub fn subgraph(sg: &Subgraph) -> pb::Subgraph {
    let breaker = match sg.breaker.state() {
        State::Closed => pb::BreakerState::Closed,
        State::Open => pb::BreakerState::Open,
        State::HalfOpen => pb::BreakerState::HalfOpen,
    };
    let forced = match sg.breaker.forced() {
        Force::None => "",
        Force::Open => "open",
        Force::Closed => "closed",
    };
    pb::Subgraph {
        name: sg.name().to_string(),
        route: sg.cfg.route(),
        breaker: breaker as i32,
        breaker_forced: forced.to_string(),
        panic: sg.in_panic(),
        endpoints: sg
            .endpoints
            .iter()
            .map(|e| {
                let p = e.pool.stats();
                pb::Endpoint {
                    url: e.uri.to_string(),
                    healthy: e.is_healthy(),
                    pool: Some(pb::Pool {
                        idle: p.idle as u64,
                        busy: p.busy as u64,
                        max: p.max as u64,
                        opened: p.opened,
                    }),
                }
            })
            .collect(),
    }
}

const KINDS: [(Kind, pb::EventKind); 9] = [
    (Kind::Drop, pb::EventKind::Drop),
    (Kind::Block, pb::EventKind::Block),
    (Kind::Unblock, pb::EventKind::Unblock),
    (Kind::Escalation, pb::EventKind::Escalation),
    (Kind::Breaker, pb::EventKind::Breaker),
    (Kind::Health, pb::EventKind::Health),
    (Kind::Reload, pb::EventKind::Reload),
    (Kind::ConfigChange, pb::EventKind::ConfigChange),
    (Kind::Lost, pb::EventKind::Lost),
];

pub fn kind_from(k: pb::EventKind) -> Option<Kind> {
    KINDS.iter().find(|(_, p)| *p == k).map(|(d, _)| *d)
}

pub fn event(e: &Event) -> pb::Event {
    let kind = KINDS
        .iter()
        .find(|(d, _)| *d == e.kind)
        .map_or(pb::EventKind::Unspecified, |(_, p)| *p);
    pb::Event {
        seq: e.seq,
        unix_ms: e.unix_ms,
        kind: kind as i32,
        subject: e.subject.clone(),
        message: e.message.clone(),
        actor: e.actor.clone(),
        attributes: e.attributes.iter().cloned().collect(),
    }
}

pub fn slow_query(q: &crate::slowlog::SlowQuery) -> pb::SlowQuery {
    pb::SlowQuery {
        unix_ms: q.unix_ms,
        duration_seconds: q.duration.as_secs_f64(),
        operation_name: q.operation_name.clone(),
        operation_type: q.operation_type.clone(),
        document_hash: q.document_hash.clone(),
        subgraph: q.subgraph.clone(),
        client: q.client.clone(),
        status: u32::from(q.status),
        trace_id: q.trace_id.clone(),
    }
}

pub fn family(f: &MetricFamily) -> pb::MetricFamily {
    let kind = match f.get_field_type() {
        MetricType::COUNTER => pb::MetricType::Counter,
        MetricType::GAUGE => pb::MetricType::Gauge,
        MetricType::HISTOGRAM => pb::MetricType::Histogram,
        MetricType::SUMMARY => pb::MetricType::Summary,
        MetricType::UNTYPED => pb::MetricType::Untyped,
    };
    let samples = f
        .get_metric()
        .iter()
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let mut s = pb::Sample {
                labels,
                ..pb::Sample::default()
            };
            match f.get_field_type() {
                MetricType::COUNTER => s.value = m.get_counter().get_value(),
                MetricType::GAUGE => s.value = m.get_gauge().get_value(),
                // The registries hold no untyped metrics.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    s.count = h.get_sample_count();
                    s.sum = h.get_sample_sum();
                    s.buckets = h
                        .get_bucket()
                        .iter()
                        .map(|b| pb::Bucket {
                            upper_bound: b.upper_bound(),
                            cumulative_count: b.cumulative_count(),
                        })
                        .collect();
                }
                MetricType::SUMMARY => {
                    let q = m.get_summary();
                    s.count = q.sample_count();
                    s.sum = q.sample_sum();
                }
            }
            s
        })
        .collect();
    pb::MetricFamily {
        name: f.name().to_string(),
        help: f.help().to_string(),
        r#type: kind as i32,
        samples,
    }
}

/// A saga (with `steps`, or none in a listing).
pub fn saga(
    r: &crate::saga::SagaRecord,
    steps: &[crate::saga::StepRecord],
    running: bool,
) -> pb::Saga {
    pb::Saga {
        id: r.id.to_string(),
        state: r.state.as_str().to_string(),
        parked: r.parked,
        partially_compensated: r.partially_compensated,
        last_error: r.last_error.clone().unwrap_or_default(),
        created_unix_ms: r.created_ms,
        updated_unix_ms: r.updated_ms,
        step_count: r.step_count,
        running,
        steps: steps
            .iter()
            .map(|s| pb::SagaStep {
                index: s.index,
                subgraph: s.subgraph.clone(),
                state: s.state.as_str().to_string(),
                attempts: s.attempt,
                compensation_attempts: s.compensation_attempt,
                idempotency_key: s.idempotency_key(),
                last_error: s.last_error.clone().unwrap_or_default(),
                result_json: s.result.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            })
            .collect(),
    }
}
