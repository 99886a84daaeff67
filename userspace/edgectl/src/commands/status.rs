//! `edgectl status`: GetStatus.

use fraiseql_edge_api::v1::{AttachMode, Enforcement, GetStatusRequest, Status};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, Table, View, format, table::pairs},
};

/// `status --json`.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub version: String,
    pub uptime_seconds: u64,
    /// `kernel`, `user_space`, `disabled` or `unspecified` (the daemon's words).
    pub enforcement: &'static str,
    pub interfaces: Vec<InterfaceView>,
    pub ready: bool,
    pub not_ready: Vec<String>,
    pub config_path: String,
    pub config_loaded_unix: u64,
    pub reloads: u64,
    pub subgraphs: u32,
}

/// One attached interface.
#[derive(Debug, Serialize)]
pub struct InterfaceView {
    pub name: String,
    /// `native`, `skb`, `adopted`, `user_space` or `unspecified`.
    pub mode: &'static str,
}

pub async fn run(session: &Session, out: Output) -> Result<(), Error> {
    let status = session
        .unary(session.client().get_status(GetStatusRequest {}))
        .await?;
    out.print(&StatusView::from(status))
}

impl From<Status> for StatusView {
    fn from(s: Status) -> Self {
        Self {
            enforcement: enforcement(s.enforcement()),
            interfaces: s
                .interfaces
                .iter()
                .map(|i| InterfaceView {
                    name: i.name.clone(),
                    mode: attach_mode(i.mode()),
                })
                .collect(),
            version: s.version,
            uptime_seconds: s.uptime_seconds,
            ready: s.ready,
            not_ready: s.not_ready,
            config_path: s.config_path,
            config_loaded_unix: s.config_loaded_unix,
            reloads: s.reloads,
            subgraphs: s.subgraphs,
        }
    }
}

impl View for StatusView {
    fn human(&self) -> String {
        let ready = if self.ready {
            "yes".to_string()
        } else {
            format!("NO ({})", self.not_ready.join("; "))
        };
        let mut text = pairs(&[
            ("version", self.version.clone()),
            ("uptime", format::duration(self.uptime_seconds)),
            ("ready", ready),
            ("enforcement", self.enforcement.to_string()),
            ("config", self.config_path.clone()),
            ("loaded", format::unix_secs(self.config_loaded_unix)),
            ("reloads", format::count(self.reloads)),
            ("subgraphs", self.subgraphs.to_string()),
        ]);
        if !self.interfaces.is_empty() {
            let mut t = Table::new(&["INTERFACE", "MODE"]);
            for i in &self.interfaces {
                t.row(vec![i.name.clone(), i.mode.to_string()]);
            }
            text.push('\n');
            text += &t.render();
        }
        text
    }
}

fn enforcement(e: Enforcement) -> &'static str {
    match e {
        Enforcement::Kernel => "kernel",
        Enforcement::UserSpace => "user_space",
        Enforcement::Disabled => "disabled",
        Enforcement::Unspecified => "unspecified",
    }
}

fn attach_mode(m: AttachMode) -> &'static str {
    match m {
        AttachMode::Native => "native",
        AttachMode::Skb => "skb",
        AttachMode::Adopted => "adopted",
        AttachMode::UserSpace => "user_space",
        AttachMode::Unspecified => "unspecified",
    }
}
