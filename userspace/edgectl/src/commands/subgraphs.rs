//! `edgectl subgraphs | breaker`: ListSubgraphs, SetBreaker.

use fraiseql_edge_api::v1::{BreakerState, ListSubgraphsRequest, SetBreakerRequest, Subgraph};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, Table, View, format},
};

/// `subgraphs --json`.
#[derive(Debug, Serialize)]
pub struct SubgraphsView {
    pub subgraphs: Vec<SubgraphView>,
}

/// One subgraph (`breaker … --json` prints one of these).
#[derive(Debug, Serialize)]
pub struct SubgraphView {
    pub name: String,
    pub route: String,
    /// `closed`, `open`, `half_open` or `unspecified`.
    pub breaker: &'static str,
    /// `open` or `closed` while an operator forces the breaker, else `null`.
    pub breaker_forced: Option<String>,
    /// Every endpoint is unhealthy and traffic goes to all of them anyway.
    pub panic: bool,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub url: String,
    pub healthy: bool,
    pub pool: Option<PoolView>,
}

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub idle: u64,
    pub busy: u64,
    pub max: u64,
    pub opened: u64,
}

pub async fn list(session: &Session, out: Output) -> Result<(), Error> {
    let list = session
        .unary(session.client().list_subgraphs(ListSubgraphsRequest {}))
        .await?;
    out.print(&SubgraphsView {
        subgraphs: list.subgraphs.into_iter().map(SubgraphView::from).collect(),
    })
}

pub async fn set_breaker(
    session: &Session,
    out: Output,
    req: SetBreakerRequest,
) -> Result<(), Error> {
    let subgraph = session.unary(session.client().set_breaker(req)).await?;
    out.print(&SubgraphView::from(subgraph))
}

impl From<Subgraph> for SubgraphView {
    fn from(s: Subgraph) -> Self {
        Self {
            breaker: breaker(s.breaker()),
            breaker_forced: Some(s.breaker_forced).filter(|f| !f.is_empty()),
            name: s.name,
            route: s.route,
            panic: s.panic,
            endpoints: s
                .endpoints
                .into_iter()
                .map(|e| EndpointView {
                    url: e.url,
                    healthy: e.healthy,
                    pool: e.pool.map(|p| PoolView {
                        idle: p.idle,
                        busy: p.busy,
                        max: p.max,
                        opened: p.opened,
                    }),
                })
                .collect(),
        }
    }
}

fn breaker(b: BreakerState) -> &'static str {
    match b {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Unspecified => "unspecified",
    }
}

impl SubgraphView {
    /// `open (forced)`, `closed`, …, with `PANIC` when it applies.
    fn state(&self) -> String {
        let mut state = self.breaker.to_string();
        if let Some(forced) = &self.breaker_forced {
            state += &format!(" (forced {forced})");
        }
        if self.panic {
            state += ", PANIC";
        }
        state
    }
}

fn table<'a>(subgraphs: impl IntoIterator<Item = &'a SubgraphView>) -> Table {
    let mut t = Table::new(&[
        "SUBGRAPH", "ROUTE", "BREAKER", "ENDPOINT", "HEALTHY", "IDLE", "BUSY", "MAX", "OPENED",
    ])
    .right(&[5, 6, 7, 8]);
    for s in subgraphs {
        let head = [s.name.clone(), s.route.clone(), s.state()];
        if s.endpoints.is_empty() {
            t.row(head.to_vec());
        }
        for (i, e) in s.endpoints.iter().enumerate() {
            // The subgraph's own columns on its first endpoint's row only.
            let mut row = if i == 0 {
                head.to_vec()
            } else {
                vec![String::new(); 3]
            };
            row.push(e.url.clone());
            row.push(format::yes_no(e.healthy).into());
            match &e.pool {
                Some(p) => row.extend([p.idle, p.busy, p.max, p.opened].map(format::count)),
                None => row.extend(std::iter::repeat_n("-".to_string(), 4)),
            }
            t.row(row);
        }
    }
    t
}

impl View for SubgraphsView {
    fn human(&self) -> String {
        if self.subgraphs.is_empty() {
            return "no subgraphs\n".into();
        }
        table(&self.subgraphs).render()
    }
}

impl View for SubgraphView {
    fn human(&self) -> String {
        table([self]).render()
    }
}
