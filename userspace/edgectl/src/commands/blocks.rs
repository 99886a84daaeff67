//! `edgectl block | unblock | blocks`: Block, Unblock, ListBlocks.

use fraiseql_edge_api::v1::{BlockEntry, BlockRequest, ListBlocksRequest, UnblockRequest};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::{Error, Exit},
    render::{Output, Table, View, format},
};

/// One block in `--json`.
#[derive(Debug, Serialize)]
pub struct BlockView {
    pub address: String,
    /// Seconds left; `null` for a block without expiry.
    pub expires_in_seconds: Option<u64>,
    /// `kernel` or `user_space`.
    pub enforced_by: String,
}

/// `blocks --json`.
#[derive(Debug, Serialize)]
pub struct BlocksView {
    pub blocks: Vec<BlockView>,
}

/// `block --json`.
#[derive(Debug, Serialize)]
pub struct BlockedView {
    pub blocked: BlockView,
}

/// `unblock --json`.
#[derive(Debug, Serialize)]
pub struct UnblockedView {
    pub address: String,
    pub removed: bool,
}

pub async fn block(session: &Session, out: Output, req: BlockRequest) -> Result<(), Error> {
    let entry = session.unary(session.client().block(req)).await?;
    out.print(&BlockedView {
        blocked: entry.into(),
    })
}

/// An address that was not blocked is exit code 6 (as NOT_FOUND would be).
pub async fn unblock(session: &Session, out: Output, address: String) -> Result<(), Error> {
    let req = UnblockRequest {
        address: address.clone(),
    };
    let answer = session.unary(session.client().unblock(req)).await?;
    if !answer.removed {
        return Err(Error::new(
            Exit::NotFound,
            format!("{address} was not blocked"),
        ));
    }
    out.print(&UnblockedView {
        address,
        removed: true,
    })
}

pub async fn list(session: &Session, out: Output) -> Result<(), Error> {
    let list = session
        .unary(session.client().list_blocks(ListBlocksRequest {}))
        .await?;
    out.print(&BlocksView {
        blocks: list.blocks.into_iter().map(BlockView::from).collect(),
    })
}

impl From<BlockEntry> for BlockView {
    fn from(b: BlockEntry) -> Self {
        Self {
            address: b.address,
            expires_in_seconds: b.expires_in_seconds,
            enforced_by: b.enforced_by,
        }
    }
}

fn table<'a>(blocks: impl IntoIterator<Item = &'a BlockView>) -> Table {
    let mut t = Table::new(&["ADDRESS", "EXPIRES IN", "ENFORCED BY"]).right(&[1]);
    for b in blocks {
        t.row(vec![
            b.address.clone(),
            b.expires_in_seconds
                .map_or("never".into(), format::duration),
            b.enforced_by.clone(),
        ]);
    }
    t
}

impl View for BlocksView {
    fn human(&self) -> String {
        if self.blocks.is_empty() {
            return "no blocks\n".into();
        }
        table(&self.blocks).render()
    }
}

impl View for BlockedView {
    fn human(&self) -> String {
        let b = &self.blocked;
        let until = b.expires_in_seconds.map_or("until unblocked".into(), |s| {
            format!("for {}", format::duration(s))
        });
        format!("blocked {} {until} (in {})\n", b.address, b.enforced_by)
    }
}

impl View for UnblockedView {
    fn human(&self) -> String {
        format!("unblocked {}\n", self.address)
    }
}
