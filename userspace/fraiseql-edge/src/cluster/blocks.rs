//! Cluster-wide blocks: a block set on any node (by an operator, over gRPC,
//! or by escalation) holds on every node.
//!
//! Redis keeps the blocks in force in one sorted set, `<prefix>blocks`
//! (member: the client address, score: its expiry in the Redis server's
//! clock, `+inf` for none), and every change is published on the channel of
//! the same name, in the same script. Each node:
//!
//! * applies the changes other nodes publish to its own [`BlockList`] (the
//!   kernel's block map, or the degraded-mode list) with the TTL that is
//!   left, so a block expires everywhere at the same time;
//! * on start, after every reconnection and every `resync_secs`, loads the
//!   whole set: blocks set elsewhere are applied, and the blocks it holds
//!   from the cluster that are gone from the set (lifted elsewhere while it
//!   was away) are lifted;
//! * queues its own changes and writes them in order; while Redis is
//!   unreachable they apply on this node alone and wait (with their
//!   expiry: a block that ran out meanwhile is not written), then go out
//!   before the set is loaded again.
//!
//! The subscription comes before the load, so a change made while a node
//! loads is not missed. When two nodes change one client at once, the last
//! write wins. Nothing here sits on the request path: the proxy and the
//! control API only queue a change.

use std::{
    collections::{HashSet, VecDeque},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use super::{ClusterConfig, ClusterError};
use crate::{
    blocklist::{BlockList, MAX_TTL_SECS},
    events::EventBus,
};

/// Changes made while Redis is away that are kept for it; older ones go
/// first when more are made (they are in force on this node regardless).
const MAX_PENDING: usize = 10_000;

/// A block or an unblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Block,
    Unblock,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Unblock => "unblock",
        }
    }
}

/// One of this node's changes, waiting to be written.
#[derive(Clone, Debug)]
struct Change {
    /// Its place in line (a change dropped from a full queue is not
    /// mistaken for the one being written).
    seq: u64,
    op: Op,
    client: IpAddr,
    /// When the block ends (`None`: no expiry; unused for an unblock).
    expires: Option<Instant>,
    by: String,
    reason: String,
}

/// What goes over the channel.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    op: Op,
    client: IpAddr,
    /// What is left of the block, in ms (`None`: no expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    /// The node that made the change.
    node: String,
    /// The process that wrote it (a node ignores its own messages).
    origin: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
}

/// Where the node stands with Redis, for one log line per transition.
const STARTING: u8 = 0;
const SYNCED: u8 = 1;
const LOST: u8 = 2;

/// `fraiseql_edge_cluster_blocks_total` and friends (docs/metrics.md).
#[derive(Clone)]
pub struct BlockSyncMetrics {
    blocks: prometheus::IntCounterVec,
    up: prometheus::IntGauge,
    resyncs: prometheus::IntCounter,
    pending: prometheus::IntGauge,
}

impl BlockSyncMetrics {
    /// Registers the families into `registry`, every label value at 0.
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let m = Self {
            blocks: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "fraiseql_edge_cluster_blocks_total",
                    "Block changes shared through Redis: published by this node, or received from others and applied",
                ),
                &["direction", "op"],
            )?,
            up: prometheus::IntGauge::new(
                "fraiseql_edge_cluster_block_sync_up",
                "1 while the node is subscribed to the shared blocks and has loaded them, else 0",
            )?,
            resyncs: prometheus::IntCounter::new(
                "fraiseql_edge_cluster_block_resyncs_total",
                "Loads of the whole shared block set (at start, after Redis came back, and every resync_secs)",
            )?,
            pending: prometheus::IntGauge::new(
                "fraiseql_edge_cluster_block_pending",
                "Block changes of this node waiting to be written to Redis",
            )?,
        };
        registry.register(Box::new(m.blocks.clone()))?;
        registry.register(Box::new(m.up.clone()))?;
        registry.register(Box::new(m.resyncs.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        for d in ["published", "received"] {
            for op in [Op::Block, Op::Unblock] {
                m.blocks.with_label_values(&[d, op.as_str()]);
            }
        }
        Ok(m)
    }
}

/// What `GetStatus` reports of the block sharing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockSyncStatus {
    /// Subscribed and loaded.
    pub synced: bool,
    /// Changes this node wrote.
    pub published: u64,
    /// Changes of other nodes applied here.
    pub received: u64,
    /// Changes waiting for Redis.
    pub pending: u64,
    /// Loads of the whole set.
    pub resyncs: u64,
}

/// The block list of this node, kept in step with every other node's.
pub struct SharedBlocks {
    client: redis::Client,
    /// The sorted set, and the channel.
    key: String,
    /// The set's epoch (see `load.lua`).
    epoch_key: String,
    /// The epoch last seen: a new one means Redis lost the set.
    epoch: Mutex<Option<String>>,
    node: String,
    origin: String,
    timeout: Duration,
    retry: Duration,
    resync_every: Duration,
    write: redis::Script,
    load: redis::Script,
    list: Arc<BlockList>,
    events: EventBus,
    pending: Mutex<VecDeque<Change>>,
    wake: tokio::sync::Notify,
    /// The clients this node holds blocked because of the cluster.
    shared: Mutex<HashSet<IpAddr>>,
    state: AtomicU8,
    published: AtomicU64,
    received: AtomicU64,
    resyncs: AtomicU64,
    next_seq: AtomicU64,
    metrics: Option<BlockSyncMetrics>,
}

/// 16 random hex digits.
fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{:016x}", u64::from_le_bytes(bytes)))
}

/// The lock's data even if a holder panicked (the sets stay usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedBlocks {
    /// Shares `list` through the Redis of `cfg` (validated first), as
    /// `node`. Nothing connects until [`SharedBlocks::run`].
    pub fn new(
        cfg: &ClusterConfig,
        node: String,
        list: Arc<BlockList>,
        events: EventBus,
        metrics: Option<BlockSyncMetrics>,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = super::client(cfg)?;
        let nonce = random_id().map_err(|e| ClusterError {
            key: "cluster".into(),
            reason: format!("no randomness for the node's origin id: {e}"),
        })?;
        Ok(Arc::new(Self {
            client,
            key: format!("{}blocks", cfg.key_prefix),
            epoch_key: format!("{}blocks:epoch", cfg.key_prefix),
            epoch: Mutex::new(None),
            origin: format!("{node}/{nonce}"),
            node,
            timeout: Duration::from_millis(cfg.timeout_ms.max(500)),
            retry: Duration::from_millis(cfg.breaker_open_ms.clamp(100, 5_000)),
            resync_every: Duration::from_secs(cfg.resync_secs),
            write: redis::Script::new(include_str!("blocks.lua")),
            load: redis::Script::new(include_str!("load.lua")),
            list,
            events,
            pending: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            shared: Mutex::new(HashSet::new()),
            state: AtomicU8::new(STARTING),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            next_seq: AtomicU64::new(0),
            metrics,
        }))
    }

    /// This node blocked `client` for `ttl_secs` (`None`: no expiry): tell
    /// the others. Returns at once.
    pub fn blocked(&self, client: IpAddr, ttl_secs: Option<u64>, by: &str, reason: &str) {
        let expires = ttl_secs.map(|t| Instant::now() + Duration::from_secs(t));
        self.queue(Change {
            seq: 0,
            op: Op::Block,
            client,
            expires,
            by: by.to_string(),
            reason: reason.to_string(),
        });
    }

    /// This node lifted the block of `client`: tell the others.
    pub fn unblocked(&self, client: IpAddr, by: &str) {
        self.queue(Change {
            seq: 0,
            op: Op::Unblock,
            client,
            expires: None,
            by: by.to_string(),
            reason: String::new(),
        });
    }

    fn queue(&self, mut change: Change) {
        change.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING {
            let dropped = pending.pop_front();
            tracing::warn!(
                dropped = ?dropped.map(|c| c.client),
                max = MAX_PENDING,
                "too many block changes waiting for Redis: the oldest is no longer shared (it still holds on this node)"
            );
        }
        pending.push_back(change);
        self.set_pending(pending.len());
        drop(pending);
        self.wake.notify_one();
    }

    fn set_pending(&self, n: usize) {
        if let Some(m) = &self.metrics {
            m.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// What `GetStatus` reports.
    pub fn status(&self) -> BlockSyncStatus {
        BlockSyncStatus {
            synced: self.state.load(Ordering::Relaxed) == SYNCED,
            published: self.published.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            pending: lock(&self.pending).len() as u64,
            resyncs: self.resyncs.load(Ordering::Relaxed),
        }
    }

    /// Keeps the node in step until `stop` turns true (or its sender goes):
    /// subscribe, write what waits, load the set, then apply what comes;
    /// on any failure, start over after `breaker_open_ms`.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let why = match self.session(&mut stop).await {
                Ok(()) => return,
                Err(why) => why,
            };
            if let Some(m) = &self.metrics {
                m.up.set(0);
            }
            if self.state.swap(LOST, Ordering::Relaxed) != LOST {
                tracing::warn!(
                    error = %why,
                    "block sharing through Redis lost: blocks set here hold on this node only, and are shared when Redis is back"
                );
            }
            tokio::select! {
                () = tokio::time::sleep(self.retry) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn deadline<T>(
        &self,
        what: &str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: no answer within {:?}", self.timeout)),
        }
    }

    async fn session(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
        let pubsub = self
            .deadline("subscribing", self.client.get_async_pubsub())
            .await?;
        let (mut sink, mut messages) = pubsub.split();
        self.deadline("subscribing", sink.subscribe(&self.key))
            .await?;
        let mut conn = self
            .deadline("connecting", self.client.get_multiplexed_async_connection())
            .await?;
        self.flush(&mut conn).await?;
        let loaded = self.resync(&mut conn).await?;
        if let Some(m) = &self.metrics {
            m.up.set(1);
        }
        match self.state.swap(SYNCED, Ordering::Relaxed) {
            LOST => tracing::warn!(
                blocks = loaded,
                "block sharing through Redis is back: the shared blocks are loaded again"
            ),
            _ => tracing::info!(
                blocks = loaded,
                key = %self.key,
                "blocks shared through Redis: the blocks in force are loaded"
            ),
        }
        let mut tick = tokio::time::interval(self.resync_every);
        tick.reset();
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(m) => self.receive(&m),
                    None => return Err("the subscription ended (connection closed)".into()),
                },
                () = self.wake.notified() => self.flush(&mut conn).await?,
                _ = tick.tick() => {
                    self.deadline("ping", sink.ping::<String>()).await?;
                    self.flush(&mut conn).await?;
                    self.resync(&mut conn).await?;
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Writes the waiting changes, oldest first; stops at the first failure
    /// (that change stays first in line).
    async fn flush(&self, conn: &mut redis::aio::MultiplexedConnection) -> Result<(), String> {
        loop {
            let Some(change) = lock(&self.pending).front().cloned() else {
                return Ok(());
            };
            let now = Instant::now();
            let ttl_ms = change.expires.map(|at| {
                u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            });
            if change.op == Op::Block && ttl_ms == Some(0) {
                // Ran out while it waited: nothing to share.
                self.pop_written(change.seq);
                continue;
            }
            let ttl_ms = ttl_ms.filter(|_| change.op == Op::Block);
            let message = Message {
                op: change.op,
                client: change.client,
                ttl_ms,
                node: self.node.clone(),
                origin: self.origin.clone(),
                by: change.by.clone(),
                reason: change.reason.clone(),
            };
            let message = serde_json::to_string(&message).map_err(|e| e.to_string())?;
            let mut call = self.write.key(&self.key);
            call.arg(change.op.as_str())
                .arg(change.client.to_string())
                .arg(ttl_ms.map_or_else(String::new, |t| t.to_string()))
                .arg(message);
            self.deadline("writing a block", call.invoke_async::<i64>(conn))
                .await?;
            self.pop_written(change.seq);
            let mut shared = lock(&self.shared);
            match change.op {
                Op::Block => shared.insert(change.client),
                Op::Unblock => shared.remove(&change.client),
            };
            drop(shared);
            self.published.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.blocks
                    .with_label_values(&["published", change.op.as_str()])
                    .inc();
            }
        }
    }

    /// Drops the change `seq` from the front of the line, unless a full
    /// queue dropped it meanwhile.
    fn pop_written(&self, seq: u64) {
        let mut pending = lock(&self.pending);
        if pending.front().is_some_and(|c| c.seq == seq) {
            pending.pop_front();
        }
        self.set_pending(pending.len());
    }

    /// Loads the whole set and brings the local list in line with it;
    /// returns how many blocks are in force. Clients with a change of this
    /// node still waiting are left as they are (that change comes next).
    async fn resync(&self, conn: &mut redis::aio::MultiplexedConnection) -> Result<usize, String> {
        let fresh = random_id().map_err(|e| e.to_string())?;
        let (epoch, entries): (String, Vec<(String, i64)>) = self
            .deadline(
                "loading the blocks",
                self.load
                    .key(&self.key)
                    .key(&self.epoch_key)
                    .arg(fresh)
                    .invoke_async(conn),
            )
            .await?;
        let lost = lock(&self.epoch)
            .replace(epoch.clone())
            .is_some_and(|seen| seen != epoch);
        if lost {
            self.share_again();
        }
        let waiting: HashSet<IpAddr> = lock(&self.pending).iter().map(|c| c.client).collect();
        let mut now_shared = HashSet::with_capacity(entries.len());
        let before = lock(&self.shared).clone();
        for (client, ms) in &entries {
            let Ok(client) = client.parse::<IpAddr>() else {
                tracing::warn!(member = %client, key = %self.key, "not a client address in the shared blocks: ignored");
                continue;
            };
            if waiting.contains(&client) {
                continue;
            }
            let ttl_ms = u64::try_from(*ms).ok();
            let new = !before.contains(&client);
            if self.apply_block(client, ttl_ms, new, "cluster", "") {
                now_shared.insert(client);
            }
        }
        for client in before.difference(&now_shared) {
            if waiting.contains(client) {
                continue;
            }
            self.apply_unblock(*client, "cluster");
        }
        *lock(&self.shared) = now_shared;
        self.resyncs.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.resyncs.inc();
        }
        Ok(entries.len())
    }

    /// Redis lost the set (it restarted without persistence): rather than
    /// lift every shared block, each node writes again those it holds, with
    /// what is left of them.
    fn share_again(&self) {
        let held = lock(&self.shared).clone();
        let blocks = match self.list.list() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the block list to share it again");
                return;
            }
        };
        let mut again = 0;
        for b in blocks.iter().filter(|b| held.contains(&b.client)) {
            self.blocked(
                b.client,
                b.expires_in_secs,
                "cluster",
                "shared again: Redis lost the shared blocks",
            );
            again += 1;
        }
        tracing::warn!(
            blocks = again,
            key = %self.key,
            "Redis lost the shared blocks (restarted without its data): this node shares the ones it holds again"
        );
    }

    /// A message on the channel: another node's change, applied here.
    fn receive(&self, msg: &redis::Msg) {
        let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
        let message: Message = match serde_json::from_slice(&payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, channel = %self.key, "an unreadable message on the block channel: ignored");
                return;
            }
        };
        if message.origin == self.origin {
            return;
        }
        if lock(&self.pending)
            .iter()
            .any(|c| c.client == message.client)
        {
            // This node changed the client too; its change is written next
            // and wins everywhere.
            return;
        }
        let by = format!("cluster:{}", message.node);
        let by = if message.by.is_empty() {
            by
        } else {
            format!("{by}/{}", message.by)
        };
        let applied = match message.op {
            Op::Block => {
                let done =
                    self.apply_block(message.client, message.ttl_ms, true, &by, &message.reason);
                if done {
                    lock(&self.shared).insert(message.client);
                }
                done
            }
            Op::Unblock => {
                lock(&self.shared).remove(&message.client);
                self.apply_unblock(message.client, &by);
                true
            }
        };
        if applied {
            self.received.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.blocks
                    .with_label_values(&["received", message.op.as_str()])
                    .inc();
            }
        }
    }

    /// Blocks `client` here for `ttl_ms` (`None`: no expiry); logs and
    /// publishes an event when `announce`. Returns whether it holds.
    fn apply_block(
        &self,
        client: IpAddr,
        ttl_ms: Option<u64>,
        announce: bool,
        by: &str,
        reason: &str,
    ) -> bool {
        let ttl_secs = ttl_ms.map(|ms| ms.div_ceil(1_000).clamp(1, MAX_TTL_SECS));
        match self.list.block(client, ttl_secs) {
            Ok(_) => {
                if announce {
                    tracing::warn!(client = %client, ttl_secs, by, reason, enforced_by = self.list.enforced_by(), "client blocked by another node");
                    self.events.block(client, ttl_secs, by, reason);
                }
                true
            }
            Err(e) => {
                tracing::error!(client = %client, error = %e, "a shared block could not be applied");
                false
            }
        }
    }

    fn apply_unblock(&self, client: IpAddr, by: &str) {
        match self.list.unblock(client) {
            Ok(true) => {
                tracing::warn!(client = %client, by, "client unblocked by another node");
                self.events.unblock(client, by);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(client = %client, error = %e, "a shared unblock could not be applied");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<SharedBlocks> {
        let cfg = crate::config::Config::from_toml("[kernel]\ninterfaces = [\"lo\"]\n").unwrap();
        let list = Arc::new(BlockList::UserSpace(Arc::new(
            crate::fallback::UserLimiter::new(&cfg.kernel),
        )));
        let cluster = ClusterConfig {
            redis_url: "redis://127.0.0.1:1".into(),
            ..ClusterConfig::default()
        };
        SharedBlocks::new(&cluster, "a".into(), list, EventBus::new(), None).unwrap()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_change_and_never_a_newer_one() {
        let s = shared();
        let client = |i: usize| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        for i in 0..=MAX_PENDING {
            s.blocked(client(i), Some(60), "test", "");
        }
        assert_eq!(s.status().pending, MAX_PENDING as u64);
        let first = lock(&s.pending).front().cloned().unwrap();
        assert_eq!(first.client, client(1), "the oldest went");
        // The writer took change 0 before the queue dropped it: when that
        // write ends, the front (change 1, not written) stays.
        s.pop_written(0);
        assert_eq!(lock(&s.pending).front().unwrap().seq, first.seq);
        s.pop_written(first.seq);
        assert_eq!(s.status().pending, MAX_PENDING as u64 - 1);
        assert_eq!(lock(&s.pending).front().unwrap().client, client(2));
    }

    #[test]
    fn messages_read_back_as_written() {
        let m = Message {
            op: Op::Block,
            client: "2001:db8::7".parse().unwrap(),
            ttl_ms: Some(30_000),
            node: "a".into(),
            origin: "a/00ff".into(),
            by: "escalation".into(),
            reason: "too many refused requests".into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""op":"block""#), "{text}");
        assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), m);
        // A block without expiry carries no ttl_ms; an unblock needs no reason.
        let u: Message = serde_json::from_str(
            r#"{"op":"unblock","client":"10.0.0.1","node":"b","origin":"b/1"}"#,
        )
        .unwrap();
        assert_eq!((u.op, u.ttl_ms, u.by.as_str()), (Op::Unblock, None, ""));
        assert!(serde_json::from_str::<Message>(r#"{"op":"drop","client":"x"}"#).is_err());
    }
}
