//! `edgectl slow`: ListSlowQueries.

use fraiseql_edge_api::v1::ListSlowQueriesRequest;
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, Table, View, format},
};

/// `slow --json`.
#[derive(Debug, Serialize)]
pub struct SlowView {
    /// The threshold in force, in seconds.
    pub threshold_seconds: f64,
    /// Newest first.
    pub queries: Vec<SlowQueryView>,
}

#[derive(Debug, Serialize)]
pub struct SlowQueryView {
    pub unix_ms: u64,
    pub duration_seconds: f64,
    pub operation_name: String,
    pub operation_type: String,
    pub document_hash: String,
    pub subgraph: String,
    pub client: String,
    pub status: u32,
    pub trace_id: String,
}

pub async fn run(session: &Session, out: Output, limit: u32) -> Result<(), Error> {
    let slow = session
        .unary(
            session
                .client()
                .list_slow_queries(ListSlowQueriesRequest { limit }),
        )
        .await?;
    out.print(&SlowView {
        threshold_seconds: slow.threshold_seconds,
        queries: slow
            .queries
            .into_iter()
            .map(|q| SlowQueryView {
                unix_ms: q.unix_ms,
                duration_seconds: q.duration_seconds,
                operation_name: q.operation_name,
                operation_type: q.operation_type,
                document_hash: q.document_hash,
                subgraph: q.subgraph,
                client: q.client,
                status: q.status,
                trace_id: q.trace_id,
            })
            .collect(),
    })
}

impl View for SlowView {
    fn human(&self) -> String {
        let threshold = format::seconds(self.threshold_seconds);
        if self.queries.is_empty() {
            return format!("no queries slower than {threshold}\n");
        }
        let mut t = Table::new(&[
            "TIME",
            "DURATION",
            "STATUS",
            "SUBGRAPH",
            "OPERATION",
            "CLIENT",
            "HASH",
            "TRACE",
        ])
        .right(&[1, 2]);
        for q in &self.queries {
            let operation = match (q.operation_type.as_str(), q.operation_name.as_str()) {
                ("", "") => "-".to_string(),
                (kind, "") => kind.to_string(),
                ("", name) => name.to_string(),
                (kind, name) => format!("{kind} {name}"),
            };
            t.row(vec![
                format::unix_ms(q.unix_ms),
                format::seconds(q.duration_seconds),
                q.status.to_string(),
                q.subgraph.clone(),
                operation,
                q.client.clone(),
                q.document_hash.chars().take(12).collect(),
                q.trace_id.clone(),
            ]);
        }
        format!("slower than {threshold}, newest first\n{}", t.render())
    }
}
