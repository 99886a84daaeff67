//! Typed access to the kernel maps, shared by the running daemon (maps taken
//! from the loaded object) and the local admin commands and tests (maps opened
//! from their bpffs pins while a daemon — or no daemon — runs).

use std::{collections::HashMap as StdHashMap, net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key};
use fraiseql_edge_common::{
    ClientKey, ClientState, ConnCount, Counter, FLAG_BLOCKS, FLAG_DENY, FLAG_OVERRIDES, FlowKey,
    GlobalConfig, Override, OverrideAction, PENDING_TIMEOUT_NS, PendingConn, maps,
};
use serde::{Deserialize, Serialize};

use crate::{
    client_key,
    clock::monotonic_ns,
    config::{KernelConfig, OverrideActionConfig},
};

/// Errors of map access, with the map's name.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// A map is missing from the object or its pin cannot be opened.
    #[error("map {name}: {source}")]
    Open {
        /// Map name.
        name: &'static str,
        /// Cause.
        source: MapError,
    },
    /// A read or write failed.
    #[error("map {name}: {source}")]
    Access {
        /// Map name.
        name: &'static str,
        /// Cause.
        source: MapError,
    },
    /// The map exists but is of another type or layout.
    #[error("map {0} is missing from the object")]
    Missing(&'static str),
    /// An insert found the map full (`E2BIG`).
    #[error("map {0} is full")]
    Full(&'static str),
}

fn access(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Access { name, source }
}

/// One client as seen by the kernel.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client address (IPv6 clients may stand for their /64).
    pub client: IpAddr,
    /// Packets to protected ports passed.
    pub passed: u64,
    /// Packets to protected ports dropped (any reason; block and deny drops
    /// only once the client is tracked).
    pub dropped: u64,
    /// TCP connections on protected ports: live ones plus handshakes in
    /// flight that the connection cap admitted (each holds a slot).
    pub conns: u64,
}

/// One block-list entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockInfo {
    /// Blocked client.
    pub client: IpAddr,
    /// Seconds until the block expires; `None` for a block without expiry.
    pub expires_in_secs: Option<u64>,
}

impl BlockInfo {
    /// The entry `key → expiry` (CLOCK_MONOTONIC ns; `u64::MAX`: no expiry)
    /// as seen at `now`.
    pub fn new(key: &ClientKey, expiry: u64, now: u64) -> Self {
        Self {
            client: client_key::to_ip(key),
            expires_in_secs: (expiry != u64::MAX)
                .then(|| expiry.saturating_sub(now).div_ceil(1_000_000_000)),
        }
    }
}

/// The expiry of a block of `ttl_secs` seconds from `now` (CLOCK_MONOTONIC
/// ns); `None` and TTLs beyond the clock's range give `u64::MAX`, no expiry.
pub fn block_expiry(ttl_secs: Option<u64>, now: u64) -> u64 {
    ttl_secs.map_or(u64::MAX, |ttl| {
        now.saturating_add(ttl.saturating_mul(1_000_000_000))
    })
}

/// Handles on every map the daemon reads or writes.
pub struct KernelMaps {
    config: Array<MapData, GlobalConfig>,
    blocks: HashMap<MapData, ClientKey, u64>,
    overrides: LpmTrie<MapData, ClientKey, Override>,
    clients: HashMap<MapData, ClientKey, ClientState>,
    conn_counts: HashMap<MapData, ClientKey, ConnCount>,
    socks: HashMap<MapData, u64, ClientKey>,
    pending: HashMap<MapData, FlowKey, PendingConn>,
    stats: PerCpuArray<MapData, u64>,
}

/// How full one bounded map is (see [`KernelMaps::fill`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFill {
    /// The map's short name, as in `kernel_map_full_total{map}`.
    pub map: &'static str,
    /// Entries found.
    pub entries: u64,
    /// The map's capacity (`max_entries`).
    pub capacity: u32,
}

impl MapFill {
    /// `entries / capacity`.
    pub fn ratio(&self) -> f64 {
        self.entries as f64 / f64::from(self.capacity.max(1))
    }
}

fn typed<T>(name: &'static str, map: Map) -> Result<T, MapsError>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(map).map_err(|source| MapsError::Open { name, source })
}

impl KernelMaps {
    /// Builds the handles from a source of maps by name (the loaded object's
    /// `take_map`, or [`KernelMaps::open_pinned`]).
    pub fn from_source(
        mut take: impl FnMut(&'static str) -> Result<Map, MapsError>,
    ) -> Result<Self, MapsError> {
        Ok(Self {
            config: typed(maps::CONFIG, take(maps::CONFIG)?)?,
            blocks: typed(maps::BLOCKS, take(maps::BLOCKS)?)?,
            overrides: typed(maps::OVERRIDES, take(maps::OVERRIDES)?)?,
            clients: typed(maps::CLIENTS, take(maps::CLIENTS)?)?,
            conn_counts: typed(maps::CONN_COUNTS, take(maps::CONN_COUNTS)?)?,
            socks: typed(maps::CONN_SOCKS, take(maps::CONN_SOCKS)?)?,
            pending: typed(maps::CONN_PENDING, take(maps::CONN_PENDING)?)?,
            stats: typed(maps::STATS, take(maps::STATS)?)?,
        })
    }

    /// Opens the maps pinned under `pin_path` by a daemon.
    pub fn open_pinned(pin_path: &Path) -> Result<Self, MapsError> {
        Self::from_source(|name| open_pin(pin_path, name))
    }

    /// Writes the configuration: global limits, protected ports, overrides.
    /// Overrides no longer configured are removed. The program enforces
    /// nothing until this has run once (`enabled` = 1).
    pub fn apply(&mut self, cfg: &KernelConfig) -> Result<(), MapsError> {
        let wanted: StdHashMap<(u32, ClientKey), Override> = cfg
            .overrides
            .iter()
            .map(|o| {
                let action = match o.action {
                    OverrideActionConfig::Allow => OverrideAction::Allow,
                    OverrideActionConfig::Deny => OverrideAction::Deny,
                    OverrideActionConfig::Limit => OverrideAction::Limit,
                };
                let value = Override {
                    action: action as u32,
                    _pad: 0,
                    limits: o.limits(),
                };
                (client_key::prefix(&o.cidr), value)
            })
            .collect();
        let existing: Vec<Key<ClientKey>> = self
            .overrides
            .keys()
            .collect::<Result<_, _>>()
            .map_err(access(maps::OVERRIDES))?;
        // New overrides go in before the flags announce them; stale ones
        // leave after (below), so the program never skips a live entry.
        for ((len, addr), value) in &wanted {
            self.overrides
                .insert(&Key::new(*len, *addr), *value, 0)
                .map_err(access(maps::OVERRIDES))?;
        }

        let mut global = GlobalConfig {
            default_limits: cfg.default_limits(),
            ipv6_mask64: u32::from(cfg.ipv6_prefix == 64),
            event_sample_shift: cfg.event_sample_shift(),
            enabled: 1,
            flags: self.block_flag()?,
            ..GlobalConfig::default()
        };
        if !wanted.is_empty() {
            global.flags |= FLAG_OVERRIDES;
        }
        if wanted
            .values()
            .any(|o| o.action == OverrideAction::Deny as u32)
        {
            global.flags |= FLAG_DENY;
        }
        for port in &cfg.protected_ports {
            global.protect_port(*port);
        }
        self.config
            .set(0, global, 0)
            .map_err(access(maps::CONFIG))?;

        for key in existing {
            if !wanted.contains_key(&(key.prefix_len(), key.data())) {
                self.overrides
                    .remove(&key)
                    .map_err(access(maps::OVERRIDES))?;
            }
        }
        Ok(())
    }

    /// `FLAG_BLOCKS` when the block list holds an entry.
    fn block_flag(&self) -> Result<u32, MapsError> {
        match self.blocks.keys().next() {
            Some(Ok(_)) => Ok(FLAG_BLOCKS),
            Some(Err(e)) => Err(access(maps::BLOCKS)(e)),
            None => Ok(0),
        }
    }

    /// Sets `FLAG_BLOCKS` to whether the block list holds an entry, so an
    /// empty list costs the packet path no lookup. Called after every
    /// change and by the daemon's once-a-second sweep, which also repairs a
    /// flag lost to two writers racing.
    pub fn refresh_block_flag(&mut self) -> Result<(), MapsError> {
        let mut global = self.global_config()?;
        if global.enabled == 0 {
            return Ok(());
        }
        let flag = self.block_flag()?;
        if global.flags & FLAG_BLOCKS != flag {
            global.flags = (global.flags & !FLAG_BLOCKS) | flag;
            self.config
                .set(0, global, 0)
                .map_err(access(maps::CONFIG))?;
        }
        Ok(())
    }

    /// The configuration currently in the kernel.
    pub fn global_config(&self) -> Result<GlobalConfig, MapsError> {
        self.config.get(&0, 0).map_err(access(maps::CONFIG))
    }

    /// Counters summed over every CPU, by name, in index order.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, MapsError> {
        Counter::ALL
            .iter()
            .map(|(counter, name)| Ok((*name, self.counter(*counter)?)))
            .collect()
    }

    /// One counter summed over every CPU.
    pub fn counter(&self, counter: Counter) -> Result<u64, MapsError> {
        let per_cpu = self
            .stats
            .get(&(counter as u32), 0)
            .map_err(access(maps::STATS))?;
        Ok(per_cpu.iter().sum())
    }

    fn key(&self, addr: IpAddr) -> Result<ClientKey, MapsError> {
        let mask64 = self.global_config()?.ipv6_mask64 != 0;
        Ok(client_key::from_ip(addr, mask64))
    }

    /// The client `addr` counts as (an IPv6 address may stand for its /64).
    pub fn client_of(&self, addr: IpAddr) -> Result<IpAddr, MapsError> {
        Ok(client_key::to_ip(&self.key(addr)?))
    }

    /// Blocks `addr` for `ttl_secs` seconds (`None`: until unblocked),
    /// replacing an earlier block of the same client.
    pub fn block(&mut self, addr: IpAddr, ttl_secs: Option<u64>) -> Result<BlockInfo, MapsError> {
        let now = monotonic_ns();
        let expiry = block_expiry(ttl_secs, now);
        let key = self.key(addr)?;
        match self.blocks.insert(key, expiry, 0) {
            Ok(()) => {
                self.refresh_block_flag()?;
                Ok(BlockInfo::new(&key, expiry, now))
            }
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                Err(MapsError::Full(maps::BLOCKS))
            }
            Err(e) => Err(access(maps::BLOCKS)(e)),
        }
    }

    /// Removes a block; returns whether there was one.
    pub fn unblock(&mut self, addr: IpAddr) -> Result<bool, MapsError> {
        let key = self.key(addr)?;
        let found = match self.blocks.remove(&key) {
            Ok(()) => true,
            Err(e) if not_found(&e) => false,
            Err(e) => return Err(access(maps::BLOCKS)(e)),
        };
        self.refresh_block_flag()?;
        Ok(found)
    }

    /// Current blocks (expired ones included until [`Self::expire_blocks`] runs).
    pub fn blocks(&self) -> Result<Vec<BlockInfo>, MapsError> {
        let now = monotonic_ns();
        self.blocks
            .iter()
            .map(|entry| {
                let (key, expiry) = entry.map_err(access(maps::BLOCKS))?;
                Ok(BlockInfo::new(&key, expiry, now))
            })
            .collect()
    }

    /// Deletes expired blocks; returns the clients unblocked.
    pub fn expire_blocks(&mut self) -> Result<Vec<IpAddr>, MapsError> {
        let now = monotonic_ns();
        let expired: Vec<ClientKey> = self
            .blocks
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, expiry)| *expiry <= now)
            .map(|(key, _)| key)
            .collect();
        let mut done = Vec::with_capacity(expired.len());
        for key in expired {
            match self.blocks.remove(&key) {
                Ok(()) => done.push(client_key::to_ip(&key)),
                // Removed meanwhile (an unblock racing the sweep).
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(access(maps::BLOCKS)(e)),
            }
        }
        self.refresh_block_flag()?;
        Ok(done)
    }

    /// Reservations of handshakes older than [`PENDING_TIMEOUT_NS`]: the
    /// daemon releases them through the kernel's sweep program.
    pub fn expired_pending(&self) -> Vec<FlowKey> {
        let now = monotonic_ns();
        self.pending
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, p)| now.saturating_sub(p.since_ns) >= PENDING_TIMEOUT_NS)
            .map(|(key, _)| key)
            .collect()
    }

    /// Handshakes in flight holding a slot.
    pub fn pending_count(&self) -> usize {
        self.pending.keys().filter(Result::is_ok).count()
    }

    /// Entries of the connection-count map (clients holding a slot).
    pub fn conn_clients(&self) -> usize {
        self.conn_counts.keys().filter(Result::is_ok).count()
    }

    /// Connection slots held, summed over clients: live connections on the
    /// protected ports plus admitted handshakes in flight.
    pub fn conn_slots(&self) -> u64 {
        self.conn_counts
            .iter()
            .filter_map(Result::ok)
            .map(|(_, c)| c.slots)
            .sum()
    }

    /// Entries and capacity of every bounded map the programs insert into.
    /// Counted by walking the keys (one syscall per entry): about 0.2 s of
    /// one CPU per 200 000 tracked clients in a debug build, paid by the
    /// scrape rather than by anything on the packet path.
    pub fn fill(&self) -> [MapFill; 6] {
        use fraiseql_edge_common::{
            MAX_BLOCKS, MAX_CLIENTS, MAX_CONN_CLIENTS, MAX_CONN_PENDING, MAX_CONN_SOCKS,
            MAX_OVERRIDES,
        };
        let fill = |map, entries: usize, capacity| MapFill {
            map,
            entries: entries as u64,
            capacity,
        };
        [
            fill(
                "clients",
                self.clients.keys().filter(Result::is_ok).count(),
                MAX_CLIENTS,
            ),
            fill("conn_counts", self.conn_clients(), MAX_CONN_CLIENTS),
            fill(
                "conn_socks",
                self.socks.keys().filter(Result::is_ok).count(),
                MAX_CONN_SOCKS,
            ),
            fill("conn_pending", self.pending_count(), MAX_CONN_PENDING),
            fill(
                "blocks",
                self.blocks.keys().filter(Result::is_ok).count(),
                MAX_BLOCKS,
            ),
            fill(
                "overrides",
                self.overrides.keys().filter(Result::is_ok).count(),
                MAX_OVERRIDES,
            ),
        ]
    }

    /// Connection slots of one client: live connections plus admitted
    /// handshakes in flight.
    pub fn conns(&self, addr: IpAddr) -> Result<u64, MapsError> {
        let key = self.key(addr)?;
        match self.conn_counts.get(&key, 0) {
            Ok(n) => Ok(n.slots),
            Err(MapError::KeyNotFound) => Ok(0),
            Err(e) => Err(access(maps::CONN_COUNTS)(e)),
        }
    }

    /// One client's state, if the kernel tracks it.
    pub fn client(&self, addr: IpAddr) -> Result<Option<ClientInfo>, MapsError> {
        let key = self.key(addr)?;
        let conns = self.conns(addr)?;
        match self.clients.get(&key, 0) {
            Ok(s) => Ok(Some(ClientInfo {
                client: client_key::to_ip(&key),
                passed: s.passed,
                dropped: s.dropped,
                conns,
            })),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(access(maps::CLIENTS)(e)),
        }
    }

    /// The `limit` busiest clients (by packets seen), with live connections.
    /// Clients that only hold connections are listed too.
    pub fn top_clients(&self, limit: usize) -> Result<Vec<ClientInfo>, MapsError> {
        let mut conns: StdHashMap<ClientKey, u64> = self
            .conn_counts
            .iter()
            .map(|entry| entry.map(|(key, count)| (key, count.slots)))
            .collect::<Result<_, _>>()
            .map_err(access(maps::CONN_COUNTS))?;
        let mut out = Vec::new();
        for entry in self.clients.iter() {
            // An LRU entry can vanish while iterating: skip it.
            let Ok((key, s)) = entry else { continue };
            out.push(ClientInfo {
                client: client_key::to_ip(&key),
                passed: s.passed,
                dropped: s.dropped,
                conns: conns.remove(&key).unwrap_or(0),
            });
        }
        out.extend(conns.into_iter().map(|(key, n)| ClientInfo {
            client: client_key::to_ip(&key),
            passed: 0,
            dropped: 0,
            conns: n,
        }));
        out.sort_by(|a, b| {
            (b.passed + b.dropped, b.conns)
                .cmp(&(a.passed + a.dropped, a.conns))
                .then(a.client.cmp(&b.client))
        });
        out.truncate(limit);
        Ok(out)
    }
}

/// A missing key: aya reports a lookup miss as `KeyNotFound` but a delete
/// miss as the syscall's `ENOENT`.
fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Opens one pinned map by name.
pub fn open_pin(pin_path: &Path, name: &'static str) -> Result<Map, MapsError> {
    let data = MapData::from_pin(pin_path.join(name))
        .map_err(|source| MapsError::Open { name, source })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open { name, source })
}
