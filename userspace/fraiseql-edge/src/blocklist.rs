//! The block list, wherever it is enforced: the kernel's block map while the
//! kernel layer runs, the user-space limiter in degraded mode. The admin API
//! and the daemon's once-a-second expiry sweep go through [`BlockList`], so
//! neither has to know which one is in force, and a block set while the
//! daemon is degraded is enforced the same way.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use crate::{
    clock::monotonic_ns,
    fallback::{BlockListFull, UserLimiter},
    kernel::{BlockInfo, KernelMaps, MapsError, maps},
};

/// The longest TTL a block may be given: a year. A longer verdict is a
/// block without expiry (no TTL), which stays until an operator lifts it.
pub const MAX_TTL_SECS: u64 = 366 * 24 * 3600;

/// Refuses a TTL of 0 (the block would never apply) or above [`MAX_TTL_SECS`].
pub fn check_ttl(ttl_secs: Option<u64>) -> Result<(), BlockError> {
    match ttl_secs {
        Some(t) if t == 0 || t > MAX_TTL_SECS => Err(BlockError::Ttl),
        _ => Ok(()),
    }
}

/// Why a block-list call failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A TTL of 0 (the block would never apply) or above [`MAX_TTL_SECS`].
    #[error("ttl_secs must be between 1 and {MAX_TTL_SECS} (omit it for a block without expiry)")]
    Ttl,
    /// The block list holds as many clients as it can.
    #[error("the block list is full")]
    Full,
    /// The kernel map could not be read or written.
    #[error(transparent)]
    Maps(MapsError),
}

impl From<MapsError> for BlockError {
    fn from(e: MapsError) -> Self {
        match e {
            MapsError::Full(_) => Self::Full,
            other => Self::Maps(other),
        }
    }
}

impl From<BlockListFull> for BlockError {
    fn from(_: BlockListFull) -> Self {
        Self::Full
    }
}

/// Where blocks are enforced.
pub enum BlockList {
    /// The kernel's block map (XDP drops). Boxed: the handles are large.
    Kernel(Box<Mutex<KernelMaps>>),
    /// Degraded mode: the user-space limiter of the daemon's listener.
    UserSpace(Arc<UserLimiter>),
}

impl BlockList {
    /// `kernel` or `user_space`, for logs and answers.
    pub fn enforced_by(&self) -> &'static str {
        match self {
            Self::Kernel(_) => "kernel",
            Self::UserSpace(_) => "user_space",
        }
    }

    fn maps(m: &Mutex<KernelMaps>) -> std::sync::MutexGuard<'_, KernelMaps> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks `addr` for `ttl_secs` seconds (`None`: until unblocked),
    /// replacing an earlier block of the same client. Returns the entry as
    /// stored (an IPv6 client may stand for its /64).
    pub fn block(&self, addr: IpAddr, ttl_secs: Option<u64>) -> Result<BlockInfo, BlockError> {
        check_ttl(ttl_secs)?;
        match self {
            Self::Kernel(m) => Ok(Self::maps(m).block(addr, ttl_secs)?),
            Self::UserSpace(l) => {
                let expiry = maps::block_expiry(ttl_secs, monotonic_ns());
                Ok(l.block_until(addr, expiry)?)
            }
        }
    }

    /// The client `addr` counts as: itself, or for an IPv6 address its
    /// /64 when the kernel configuration keys IPv6 clients by /64.
    pub fn client_of(&self, addr: IpAddr) -> Result<IpAddr, BlockError> {
        match self {
            Self::Kernel(m) => Ok(Self::maps(m).client_of(addr)?),
            Self::UserSpace(l) => Ok(l.client_of(addr)),
        }
    }

    /// Lifts the block of `addr`; returns whether there was one.
    pub fn unblock(&self, addr: IpAddr) -> Result<bool, BlockError> {
        match self {
            Self::Kernel(m) => Ok(Self::maps(m).unblock(addr)?),
            Self::UserSpace(l) => Ok(l.unblock(addr)),
        }
    }

    /// Current blocks by address (expired ones included until the next sweep).
    pub fn list(&self) -> Result<Vec<BlockInfo>, BlockError> {
        let mut blocks = match self {
            Self::Kernel(m) => Self::maps(m).blocks()?,
            Self::UserSpace(l) => l.blocks_at(monotonic_ns()),
        };
        blocks.sort_by_key(|b| b.client);
        Ok(blocks)
    }

    /// Deletes expired blocks; returns the clients unblocked.
    pub fn expire(&self) -> Result<Vec<IpAddr>, BlockError> {
        match self {
            Self::Kernel(m) => Ok(Self::maps(m).expire_blocks()?),
            Self::UserSpace(l) => Ok(l.expire_blocks()),
        }
    }
}
