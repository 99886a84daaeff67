//! Degraded mode: the kernel layer's limits enforced in user space.
//!
//! When BPF is unavailable (no privileges, no bpffs, old kernel) the daemon
//! says so loudly and admits connections and requests on its own listener
//! through this limiter instead: same token-bucket math
//! ([`fraiseql_edge_common::bucket`]), same connection cap, same block list
//! and CIDR overrides, same IPv6 /64 keying. It protects only the daemon's
//! own sockets — traffic to other processes on protected ports is not seen.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use fraiseql_edge_common::{ClientKey, ClientState, Limits, bucket};
use ipnet::IpNet;

use crate::{
    client_key,
    clock::monotonic_ns,
    config::{KernelConfig, OverrideActionConfig},
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
    /// Client blocked.
    #[error("client blocked")]
    Block,
    /// Deny override.
    #[error("client denied")]
    Deny,
}

enum Policy {
    Allow,
    Deny,
    Limit(Limits),
}

#[derive(Default)]
struct State {
    clients: HashMap<ClientKey, ClientState>,
    conns: HashMap<ClientKey, u64>,
    blocks: HashMap<ClientKey, u64>,
}

/// The user-space limiter.
pub struct UserLimiter {
    defaults: Limits,
    mask64: bool,
    /// Sorted longest prefix first, so the first match wins.
    overrides: Vec<(IpNet, Policy)>,
    state: Mutex<State>,
}

/// A live admitted connection; uncounted when dropped.
pub struct ConnGuard {
    limiter: Arc<UserLimiter>,
    key: ClientKey,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
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
    /// A limiter enforcing `cfg` (already validated).
    pub fn new(cfg: &KernelConfig) -> Self {
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
            mask64: cfg.ipv6_prefix == 64,
            overrides,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn policy(&self, addr: IpAddr) -> Option<&Policy> {
        let addr = addr.to_canonical();
        self.overrides
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, p)| p)
    }

    /// Checks one request or packet-equivalent from `addr` at `now` (ns).
    pub fn admit_at(&self, addr: IpAddr, now: u64, new_conn: bool) -> Result<(), Refusal> {
        let key = client_key::from_ip(addr, self.mask64);
        let mut st = self.lock();
        if st.blocks.get(&key).is_some_and(|exp| now < *exp) {
            return Err(Refusal::Block);
        }
        let limits = match self.policy(addr) {
            Some(Policy::Allow) => return Ok(()),
            Some(Policy::Deny) => return Err(Refusal::Deny),
            Some(Policy::Limit(l)) => *l,
            None => self.defaults,
        };
        if new_conn
            && limits.max_conns != 0
            && st.conns.get(&key).copied().unwrap_or(0) >= u64::from(limits.max_conns)
        {
            return Err(Refusal::Conn);
        }
        let state = st
            .clients
            .entry(key)
            .or_insert_with(|| bucket::new_state(now));
        if bucket::take(state, &limits, now) {
            state.passed += 1;
            Ok(())
        } else {
            state.dropped += 1;
            Err(Refusal::Rate)
        }
    }

    /// Admits a new connection from `addr`; the guard holds its slot.
    pub fn admit_connection(self: &Arc<Self>, addr: IpAddr) -> Result<ConnGuard, Refusal> {
        self.admit_at(addr, monotonic_ns(), true)?;
        let key = client_key::from_ip(addr, self.mask64);
        *self.lock().conns.entry(key).or_insert(0) += 1;
        Ok(ConnGuard {
            limiter: Arc::clone(self),
            key,
        })
    }

    /// Admits one request on an existing connection.
    pub fn admit_request(&self, addr: IpAddr) -> Result<(), Refusal> {
        self.admit_at(addr, monotonic_ns(), false)
    }

    /// Blocks `addr` until `expiry` (CLOCK_MONOTONIC ns).
    pub fn block_until(&self, addr: IpAddr, expiry: u64) {
        let key = client_key::from_ip(addr, self.mask64);
        self.lock().blocks.insert(key, expiry);
    }

    /// Live connections of `addr`.
    pub fn conns(&self, addr: IpAddr) -> u64 {
        let key = client_key::from_ip(addr, self.mask64);
        self.lock().conns.get(&key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
