//! `edgectl reload`: Reload.

use fraiseql_edge_api::v1::ReloadRequest;
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, View},
};

/// `reload --json`.
#[derive(Debug, Serialize)]
pub struct ReloadView {
    /// What changed and was applied, one line each.
    pub applied: Vec<String>,
    /// What changed but needs a restart.
    pub needs_restart: Vec<String>,
}

pub async fn run(session: &Session, out: Output) -> Result<(), Error> {
    let answer = session
        .unary(session.client().reload(ReloadRequest {}))
        .await?;
    out.print(&ReloadView {
        applied: answer.applied,
        needs_restart: answer.needs_restart,
    })
}

impl View for ReloadView {
    fn human(&self) -> String {
        if self.applied.is_empty() && self.needs_restart.is_empty() {
            return "reloaded: nothing changed\n".into();
        }
        let mut text = String::from("reloaded\n");
        for line in &self.applied {
            text += &format!("  applied        {line}\n");
        }
        for line in &self.needs_restart {
            text += &format!("  needs restart  {line}\n");
        }
        text
    }
}
