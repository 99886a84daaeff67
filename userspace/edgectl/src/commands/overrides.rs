//! `edgectl overrides list | add | remove`: ListOverrides, AddOverride,
//! RemoveOverride.

use fraiseql_edge_api::v1::{
    AddOverrideRequest, ListOverridesRequest, Override, OverrideAction, RemoveOverrideRequest,
};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::{Error, Exit},
    render::{Output, Table, View, format},
};

/// One override in `--json`.
#[derive(Debug, Serialize)]
pub struct OverrideView {
    pub cidr: String,
    /// `allow`, `deny`, `limit` or `unspecified`.
    pub action: &'static str,
    pub rate: Option<u64>,
    pub burst: Option<u64>,
    pub max_conns: Option<u32>,
}

/// `overrides list --json`.
#[derive(Debug, Serialize)]
pub struct OverridesView {
    pub overrides: Vec<OverrideView>,
}

/// `overrides add --json`: the override as the daemon stored it.
#[derive(Debug, Serialize)]
pub struct AddedView {
    pub added: OverrideView,
}

/// `overrides remove --json`.
#[derive(Debug, Serialize)]
pub struct RemovedView {
    pub removed: OverrideView,
}

pub async fn list(session: &Session, out: Output) -> Result<(), Error> {
    let list = session
        .unary(session.client().list_overrides(ListOverridesRequest {}))
        .await?;
    out.print(&OverridesView {
        overrides: list.overrides.into_iter().map(OverrideView::from).collect(),
    })
}

pub async fn add(session: &Session, out: Output, o: Override) -> Result<(), Error> {
    let req = AddOverrideRequest {
        r#override: Some(o),
    };
    let added = session.unary(session.client().add_override(req)).await?;
    out.print(&AddedView {
        added: added.into(),
    })
}

pub async fn remove(session: &Session, out: Output, cidr: String) -> Result<(), Error> {
    let req = RemoveOverrideRequest { cidr: cidr.clone() };
    let answer = session.unary(session.client().remove_override(req)).await?;
    let removed = answer
        .removed
        .ok_or_else(|| Error::new(Exit::NotFound, format!("no override for {cidr}")))?;
    out.print(&RemovedView {
        removed: removed.into(),
    })
}

impl From<Override> for OverrideView {
    fn from(o: Override) -> Self {
        Self {
            action: action(o.action()),
            cidr: o.cidr,
            rate: o.rate,
            burst: o.burst,
            max_conns: o.max_conns,
        }
    }
}

fn action(a: OverrideAction) -> &'static str {
    match a {
        OverrideAction::Allow => "allow",
        OverrideAction::Deny => "deny",
        OverrideAction::Limit => "limit",
        OverrideAction::Unspecified => "unspecified",
    }
}

fn table<'a>(overrides: impl IntoIterator<Item = &'a OverrideView>) -> Table {
    let mut t = Table::new(&["CIDR", "ACTION", "RATE/S", "BURST", "MAX CONNS"]).right(&[2, 3, 4]);
    for o in overrides {
        let limit = |v: Option<u64>| match (o.action, v) {
            ("limit", Some(n)) => format::limit(n),
            ("limit", None) => "off".into(),
            _ => "-".into(),
        };
        t.row(vec![
            o.cidr.clone(),
            o.action.into(),
            limit(o.rate),
            limit(o.burst),
            limit(o.max_conns.map(u64::from)),
        ]);
    }
    t
}

impl View for OverridesView {
    fn human(&self) -> String {
        if self.overrides.is_empty() {
            return "no overrides\n".into();
        }
        table(&self.overrides).render()
    }
}

impl View for AddedView {
    fn human(&self) -> String {
        format!("added\n{}", table([&self.added]).render())
    }
}

impl View for RemovedView {
    fn human(&self) -> String {
        format!("removed\n{}", table([&self.removed]).render())
    }
}
