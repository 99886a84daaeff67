//! `edgectl limits get | set kernel | set rate`: GetLimits,
//! SetKernelLimits, SetRateLimit. All three answer with the limits in force.

use fraiseql_edge_api::v1::{
    GetLimitsRequest, Limits, RateLimit, SetKernelLimitsRequest, SetRateLimitRequest,
};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, Table, View, format, table::pairs},
};

/// `limits … --json`.
#[derive(Debug, Serialize)]
pub struct LimitsView {
    /// `null` when the kernel layer is disabled.
    pub kernel: Option<KernelView>,
    /// The global per-identity limit.
    pub rate_limit: Option<RateView>,
    pub subgraphs: Vec<SubgraphRateView>,
}

#[derive(Debug, Serialize)]
pub struct KernelView {
    pub rate: u64,
    pub burst: u64,
    pub max_conns: u32,
    pub protected_ports: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct RateView {
    pub requests_per_minute: u32,
    pub burst: u32,
    /// Held across every node (cluster mode).
    pub cluster_wide: bool,
}

#[derive(Debug, Serialize)]
pub struct SubgraphRateView {
    pub subgraph: String,
    pub requests_per_minute: Option<u32>,
    pub burst: Option<u32>,
    /// True when the subgraph has its own limit.
    pub overridden: bool,
    /// Held across every node (cluster mode).
    pub cluster_wide: bool,
}

pub async fn get(session: &Session, out: Output) -> Result<(), Error> {
    let limits = session
        .unary(session.client().get_limits(GetLimitsRequest {}))
        .await?;
    out.print(&LimitsView::from(limits))
}

pub async fn set_kernel(
    session: &Session,
    out: Output,
    req: SetKernelLimitsRequest,
) -> Result<(), Error> {
    let limits = session
        .unary(session.client().set_kernel_limits(req))
        .await?;
    out.print(&LimitsView::from(limits))
}

pub async fn set_rate(
    session: &Session,
    out: Output,
    req: SetRateLimitRequest,
) -> Result<(), Error> {
    let limits = session.unary(session.client().set_rate_limit(req)).await?;
    out.print(&LimitsView::from(limits))
}

fn rate(r: RateLimit) -> RateView {
    RateView {
        requests_per_minute: r.requests_per_minute,
        burst: r.burst,
        cluster_wide: r.cluster_wide,
    }
}

impl From<Limits> for LimitsView {
    fn from(l: Limits) -> Self {
        Self {
            kernel: l.kernel.map(|k| KernelView {
                rate: k.rate,
                burst: k.burst,
                max_conns: k.max_conns,
                protected_ports: k.protected_ports,
            }),
            rate_limit: l.rate_limit.map(rate),
            subgraphs: l
                .subgraphs
                .into_iter()
                .map(|s| SubgraphRateView {
                    subgraph: s.subgraph,
                    requests_per_minute: s.limit.map(|l| l.requests_per_minute),
                    burst: s.limit.map(|l| l.burst),
                    overridden: s.overridden,
                    cluster_wide: s.limit.is_some_and(|l| l.cluster_wide),
                })
                .collect(),
        }
    }
}

impl View for LimitsView {
    fn human(&self) -> String {
        let mut text = String::from("kernel (per client address)\n");
        text += &match &self.kernel {
            Some(k) => indent(&pairs(&[
                ("rate", per(k.rate, "packets/s")),
                ("burst", format!("{} packets", format::count(k.burst))),
                ("max conns", format::limit(k.max_conns.into())),
                (
                    "ports",
                    k.protected_ports
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ])),
            None => "  disabled\n".into(),
        };
        text += "\nrequests (per identity)\n";
        text += &match &self.rate_limit {
            Some(r) => indent(&pairs(&[
                ("rate", per(r.requests_per_minute.into(), "requests/min")),
                ("burst", format::count(r.burst.into())),
                ("held", held(r.cluster_wide).into()),
            ])),
            None => "  not configured\n".into(),
        };
        if !self.subgraphs.is_empty() {
            let mut t =
                Table::new(&["SUBGRAPH", "REQUESTS/MIN", "BURST", "LIMIT", "HELD"]).right(&[1, 2]);
            for s in &self.subgraphs {
                t.row(vec![
                    s.subgraph.clone(),
                    s.requests_per_minute
                        .map_or("-".into(), |n| format::limit(n.into())),
                    s.burst.map_or("-".into(), |n| format::count(n.into())),
                    if s.overridden { "own" } else { "global" }.into(),
                    held(s.cluster_wide).into(),
                ]);
            }
            text.push('\n');
            text += &t.render();
        }
        text
    }
}

/// Where a per-identity limit holds: on every node (through Redis), or
/// on this one.
fn held(cluster_wide: bool) -> &'static str {
    if cluster_wide {
        "across nodes"
    } else {
        "this node"
    }
}

/// `1,000 packets/s`, or `off` for 0.
fn per(n: u64, unit: &str) -> String {
    if n == 0 {
        "off".into()
    } else {
        format!("{} {unit}", format::count(n))
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
