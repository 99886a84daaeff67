//! `edgectl top`: TopClients.

use fraiseql_edge_api::v1::TopClientsRequest;
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, Table, View, format},
};

/// `top --json`.
#[derive(Debug, Serialize)]
pub struct TopView {
    pub clients: Vec<ClientView>,
}

#[derive(Debug, Serialize)]
pub struct ClientView {
    pub address: String,
    pub passed: u64,
    pub dropped: u64,
    pub live_connections: u64,
}

pub async fn run(session: &Session, out: Output, limit: u32) -> Result<(), Error> {
    let top = session
        .unary(session.client().top_clients(TopClientsRequest { limit }))
        .await?;
    out.print(&TopView {
        clients: top
            .clients
            .into_iter()
            .map(|c| ClientView {
                address: c.address,
                passed: c.passed,
                dropped: c.dropped,
                live_connections: c.live_connections,
            })
            .collect(),
    })
}

impl View for TopView {
    fn human(&self) -> String {
        if self.clients.is_empty() {
            return "no clients\n".into();
        }
        let mut t = Table::new(&["ADDRESS", "PASSED", "DROPPED", "DROPPED %", "CONNS"])
            .right(&[1, 2, 3, 4]);
        for c in &self.clients {
            t.row(vec![
                c.address.clone(),
                format::count(c.passed),
                format::count(c.dropped),
                percent(c.dropped, c.passed.saturating_add(c.dropped)),
                format::count(c.live_connections),
            ]);
        }
        t.render()
    }
}

/// `part` of `whole` with one decimal, `-` for nothing.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    #[expect(clippy::cast_precision_loss, reason = "a percentage for display")]
    let p = part as f64 * 100.0 / whole as f64;
    format!("{p:.1}")
}
