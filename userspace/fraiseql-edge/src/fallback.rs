//! Degraded mode: the kernel layer's limits enforced in user space.
//!
//! When BPF is unavailable (no privileges, no bpffs, old kernel) the daemon
//! says so loudly and admits connections and requests on its own listener
//! through this limiter instead: same token-bucket math
//! ([`fraiseql_edge_common::bucket`]), same connection cap, same block list
//! and CIDR overrides, same IPv6 /64 keying. It protects only the daemon's
//! own sockets — traffic to other processes on protected ports is not seen.
//!
//! Its tables are bounded like the kernel maps they stand in for
//! ([`Capacity`]), so a flood from many addresses cannot exhaust memory:
//!
//! * client buckets: the least recently seen client is evicted when a new
//!   one arrives and the table is full (the kernel's `LruHashMap`); an
//!   evicted client comes back with a full bucket, as in the kernel;
//! * live-connection counts: a table of its own that is never evicted (the
//!   kernel keeps counts in a plain hash map for the same reason). When it is
//!   full, a new connection from a client that is not in it yet and is under
//!   a connection cap is refused and counted — never admitted uncounted;
//! * blocks: a block that does not fit is an error for the caller.
//!
//! Expired blocks stop applying at once and are deleted by
//! [`UserLimiter::expire_blocks`], which the daemon runs every second.

mod collector;
mod lru;
mod stats;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

pub use collector::LimiterCollector;
use fraiseql_edge_common::{
    ClientKey, ClientState, Limits, MAX_BLOCKS, MAX_CLIENTS, MAX_CONN_CLIENTS, bucket,
};
use ipnet::IpNet;
pub use stats::LimiterStats;

use self::lru::LruMap;
use crate::{
    client_key,
    clock::monotonic_ns,
    config::{KernelConfig, OverrideActionConfig},
    kernel::BlockInfo,
};

/// Why a client was refused (the kernel's drop reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Token bucket empty.
    #[error("rate limit exceeded")]
    Rate,
    /// Connection cap reached.
    #[error("too many connections")]
    Conn,
    /// The connection-count table is full and the client is not in it.
    #[error("connection table full")]
    ConnTableFull,
    /// Client blocked.
    #[error("client blocked")]
    Block,
    /// Deny override.
    #[error("client denied")]
    Deny,
}

/// A block could not be stored: the block list holds
/// [`Capacity::blocks`] entries already.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the block list is full ({0} entries)")]
pub struct BlockListFull(pub usize);

/// Table sizes. The defaults are the kernel maps' capacities, so degraded
/// mode holds as many clients, counts and blocks as the kernel layer would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Client buckets (least recently seen evicted beyond it).
    pub clients: usize,
    /// Clients holding live connections (never evicted).
    pub conn_clients: usize,
    /// Blocked clients.
    pub blocks: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            clients: MAX_CLIENTS as usize,
            conn_clients: MAX_CONN_CLIENTS as usize,
            blocks: MAX_BLOCKS as usize,
        }
    }
}

enum Policy {
    Allow,
    Deny,
    Limit(Limits),
}

/// How a check passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admitted {
    /// Allow override: no limit applies.
    Bypassed,
    /// Within the limits.
    Passed,
}

/// The limits in force: defaults and CIDR overrides.
struct Rules {
    defaults: Limits,
    /// Sorted longest prefix first, so the first match wins.
    overrides: Vec<(IpNet, Policy)>,
}

impl Rules {
    fn of(cfg: &KernelConfig) -> Self {
        let mut overrides: Vec<(IpNet, Policy)> = cfg
            .overrides
            .iter()
            .map(|o| {
                let policy = match o.action {
                    OverrideActionConfig::Allow => Policy::Allow,
                    OverrideActionConfig::Deny => Policy::Deny,
                    OverrideActionConfig::Limit => Policy::Limit(o.limits()),
                };
                (o.cidr, policy)
            })
            .collect();
        overrides.sort_by_key(|(net, _)| std::cmp::Reverse(client_key::prefix(net).0));
        Self {
            defaults: cfg.default_limits(),
            overrides,
        }
    }

    fn policy(&self, addr: IpAddr) -> Option<&Policy> {
        let addr = addr.to_canonical();
        self.overrides
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, p)| p)
    }
}

struct State {
    rules: Rules,
    clients: LruMap<ClientKey, ClientState>,
    conns: HashMap<ClientKey, u64>,
    blocks: HashMap<ClientKey, u64>,
    stats: LimiterStats,
}

/// The user-space limiter.
pub struct UserLimiter {
    mask64: bool,
    capacity: Capacity,
    state: Mutex<State>,
}

/// A live admitted connection; uncounted when dropped.
pub struct ConnGuard {
    limiter: Arc<UserLimiter>,
    key: ClientKey,
    /// False for a connection admitted without a slot in the count table
    /// (no cap applied to it and the table was full).
    counted: bool,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut st = self.limiter.lock();
        if let Some(n) = st.conns.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                st.conns.remove(&self.key);
            }
        }
    }
}

impl UserLimiter {
    /// A limiter enforcing `cfg` (already validated) with the kernel maps'
    /// capacities.
    pub fn new(cfg: &KernelConfig) -> Self {
        Self::with_capacity(cfg, Capacity::default())
    }

    /// A limiter enforcing `cfg` with tables of `capacity`.
    pub fn with_capacity(cfg: &KernelConfig, capacity: Capacity) -> Self {
        Self {
            mask64: cfg.ipv6_prefix == 64,
            capacity,
            state: Mutex::new(State {
                rules: Rules::of(cfg),
                clients: LruMap::new(capacity.clients),
                conns: HashMap::new(),
                blocks: HashMap::new(),
                stats: LimiterStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, addr: IpAddr) -> ClientKey {
        client_key::from_ip(addr, self.mask64)
    }

    /// The client `addr` counts as (an IPv6 address may stand for its /64).
    pub fn client_of(&self, addr: IpAddr) -> IpAddr {
        client_key::to_ip(&self.key(addr))
    }

    /// The `limit` busiest clients (by requests seen), with live
    /// connections, as the kernel maps would list them.
    pub fn top_clients(&self, limit: usize) -> Vec<crate::kernel::maps::ClientInfo> {
        let st = self.lock();
        let mut out: Vec<_> = st
            .clients
            .iter()
            .map(|(key, s)| crate::kernel::maps::ClientInfo {
                client: client_key::to_ip(key),
                passed: s.passed,
                dropped: s.dropped,
                conns: st.conns.get(key).copied().unwrap_or(0),
            })
            .collect();
        drop(st);
        out.sort_by_key(|c| std::cmp::Reverse((c.passed + c.dropped, c.conns)));
        out.truncate(limit);
        out
    }

    /// Puts the default limits and overrides of `cfg` in force; clients
    /// keep their buckets, connections and blocks (`ipv6_prefix` needs a
    /// restart: it changes the keys).
    pub fn reconfigure(&self, cfg: &KernelConfig) {
        self.lock().rules = Rules::of(cfg);
    }

    /// The checks of one connection (`new_conn`) or request, in the XDP
    /// program's order: block, override, connection cap, token bucket.
    fn check(
        &self,
        st: &mut State,
        addr: IpAddr,
        key: ClientKey,
        now: u64,
        new_conn: bool,
    ) -> Result<Admitted, Refusal> {
        if st.blocks.get(&key).is_some_and(|exp| now < *exp) {
            return Err(Refusal::Block);
        }
        let limits = match st.rules.policy(addr) {
            Some(Policy::Allow) => return Ok(Admitted::Bypassed),
            Some(Policy::Deny) => return Err(Refusal::Deny),
            Some(Policy::Limit(l)) => *l,
            None => st.rules.defaults,
        };
        if new_conn && limits.max_conns != 0 {
            match st.conns.get(&key) {
                Some(n) if *n >= u64::from(limits.max_conns) => return Err(Refusal::Conn),
                // A capped client needs a slot to be counted in.
                None if st.conns.len() >= self.capacity.conn_clients => {
                    return Err(Refusal::ConnTableFull);
                }
                _ => {}
            }
        }
        let (state, evicted) = st
            .clients
            .touch_or_insert_with(key, || bucket::new_state(now));
        if evicted {
            st.stats.evicted += 1;
        }
        if bucket::take(state, &limits, now) {
            state.passed += 1;
            Ok(Admitted::Passed)
        } else {
            state.dropped += 1;
            Err(Refusal::Rate)
        }
    }

    /// Checks one request or packet-equivalent from `addr` at `now` (ns).
    /// With `new_conn` the connection cap is checked too, but no slot is
    /// taken (that is [`Self::admit_connection`]'s job).
    pub fn admit_at(&self, addr: IpAddr, now: u64, new_conn: bool) -> Result<(), Refusal> {
        let key = self.key(addr);
        let mut st = self.lock();
        let verdict = self.check(&mut st, addr, key, now, new_conn);
        st.stats.record(verdict);
        verdict.map(drop)
    }

    /// Admits a new connection from `addr` at `now`; the guard holds its
    /// slot in the count table until it is dropped.
    pub fn admit_connection_at(
        self: &Arc<Self>,
        addr: IpAddr,
        now: u64,
    ) -> Result<ConnGuard, Refusal> {
        let key = self.key(addr);
        let mut st = self.lock();
        let verdict = self.check(&mut st, addr, key, now, true);
        st.stats.record(verdict);
        verdict?;
        // A capped client was given room by `check`; an uncapped one is
        // counted when there is room and admitted regardless (no limit
        // depends on its count).
        let counted = st.conns.contains_key(&key) || st.conns.len() < self.capacity.conn_clients;
        if counted {
            *st.conns.entry(key).or_insert(0) += 1;
        }
        Ok(ConnGuard {
            limiter: Arc::clone(self),
            key,
            counted,
        })
    }

    /// Admits a new connection from `addr`; the guard holds its slot.
    pub fn admit_connection(self: &Arc<Self>, addr: IpAddr) -> Result<ConnGuard, Refusal> {
        self.admit_connection_at(addr, monotonic_ns())
    }

    /// Admits one request on an existing connection.
    pub fn admit_request(&self, addr: IpAddr) -> Result<(), Refusal> {
        self.admit_at(addr, monotonic_ns(), false)
    }

    /// Blocks `addr` until `expiry` (CLOCK_MONOTONIC ns; `u64::MAX`: until
    /// unblocked), replacing an earlier block of the same client.
    pub fn block_until(&self, addr: IpAddr, expiry: u64) -> Result<BlockInfo, BlockListFull> {
        let key = self.key(addr);
        let mut st = self.lock();
        if !st.blocks.contains_key(&key) && st.blocks.len() >= self.capacity.blocks {
            return Err(BlockListFull(self.capacity.blocks));
        }
        st.blocks.insert(key, expiry);
        Ok(BlockInfo::new(&key, expiry, monotonic_ns()))
    }

    /// Lifts the block of `addr`; returns whether there was one.
    pub fn unblock(&self, addr: IpAddr) -> bool {
        let key = self.key(addr);
        self.lock().blocks.remove(&key).is_some()
    }

    /// Current blocks as of `now` (expired ones included until the sweep).
    pub fn blocks_at(&self, now: u64) -> Vec<BlockInfo> {
        let st = self.lock();
        let mut out: Vec<BlockInfo> = st
            .blocks
            .iter()
            .map(|(key, expiry)| BlockInfo::new(key, *expiry, now))
            .collect();
        out.sort_by_key(|b| b.client);
        out
    }

    /// Deletes the blocks expired at `now`; returns the clients unblocked.
    pub fn expire_blocks_at(&self, now: u64) -> Vec<IpAddr> {
        let mut done = Vec::new();
        self.lock().blocks.retain(|key, expiry| {
            let keep = now < *expiry;
            if !keep {
                done.push(client_key::to_ip(key));
            }
            keep
        });
        done
    }

    /// [`Self::expire_blocks_at`] now.
    pub fn expire_blocks(&self) -> Vec<IpAddr> {
        self.expire_blocks_at(monotonic_ns())
    }

    /// Live connections of `addr`.
    pub fn conns(&self, addr: IpAddr) -> u64 {
        let key = self.key(addr);
        self.lock().conns.get(&key).copied().unwrap_or(0)
    }

    /// Whether `addr` has a bucket in the client table.
    pub fn tracks(&self, addr: IpAddr) -> bool {
        let key = self.key(addr);
        self.lock().clients.peek(&key).is_some()
    }

    /// Counters and table sizes.
    pub fn stats(&self) -> LimiterStats {
        let st = self.lock();
        LimiterStats {
            clients: st.clients.len() as u64,
            conn_clients: st.conns.len() as u64,
            blocks: st.blocks.len() as u64,
            ..st.stats
        }
    }
}

#[cfg(test)]
mod tests;
