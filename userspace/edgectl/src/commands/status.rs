//! `edgectl status`: GetStatus.

use fraiseql_edge_api::v1::{AttachMode, ClusterStatus, Enforcement, GetStatusRequest, Status};
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
    /// Cluster mode; absent when the node runs alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// Cluster mode: limits and blocks shared through Redis.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node: String,
    pub redis_reachable: bool,
    /// `open` or `closed`.
    pub failure_mode: String,
    pub global_limits: bool,
    pub global_checks_allowed: u64,
    pub global_checks_limited: u64,
    pub global_checks_unavailable: u64,
    pub blocks_shared: bool,
    pub block_sync_up: bool,
    pub blocks_published: u64,
    pub blocks_received: u64,
    pub blocks_pending: u64,
    pub block_resyncs: u64,
}

impl From<ClusterStatus> for ClusterView {
    fn from(c: ClusterStatus) -> Self {
        Self {
            node: c.node,
            redis_reachable: c.redis_reachable,
            failure_mode: c.failure_mode,
            global_limits: c.global_limits,
            global_checks_allowed: c.global_checks_allowed,
            global_checks_limited: c.global_checks_limited,
            global_checks_unavailable: c.global_checks_unavailable,
            blocks_shared: c.blocks_shared,
            block_sync_up: c.block_sync_up,
            blocks_published: c.blocks_published,
            blocks_received: c.blocks_received,
            blocks_pending: c.blocks_pending,
            block_resyncs: c.block_resyncs,
        }
    }
}

impl ClusterView {
    /// The lines `status` adds in cluster mode.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let yes_no = |b: bool| if b { "yes" } else { "NO" }.to_string();
        let mut lines = vec![
            ("cluster node", self.node.clone()),
            ("redis reachable", yes_no(self.redis_reachable)),
            ("failure mode", self.failure_mode.clone()),
            (
                "global limits",
                if self.global_limits {
                    format!(
                        "on (checks: {} allowed, {} limited, {} unavailable)",
                        format::count(self.global_checks_allowed),
                        format::count(self.global_checks_limited),
                        format::count(self.global_checks_unavailable),
                    )
                } else {
                    "off".to_string()
                },
            ),
        ];
        lines.push((
            "shared blocks",
            if self.blocks_shared {
                format!(
                    "{} (published {}, received {}, pending {}, resyncs {})",
                    if self.block_sync_up {
                        "in sync"
                    } else {
                        "NOT IN SYNC"
                    },
                    format::count(self.blocks_published),
                    format::count(self.blocks_received),
                    format::count(self.blocks_pending),
                    format::count(self.block_resyncs),
                )
            } else {
                "off".to_string()
            },
        ));
        lines
    }
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
            cluster: s.cluster.map(ClusterView::from),
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
        let mut lines = vec![
            ("version", self.version.clone()),
            ("uptime", format::duration(self.uptime_seconds)),
            ("ready", ready),
            ("enforcement", self.enforcement.to_string()),
            ("config", self.config_path.clone()),
            ("loaded", format::unix_secs(self.config_loaded_unix)),
            ("reloads", format::count(self.reloads)),
            ("subgraphs", self.subgraphs.to_string()),
        ];
        if let Some(c) = &self.cluster {
            lines.extend(c.pairs());
        }
        let mut text = pairs(&lines);
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
